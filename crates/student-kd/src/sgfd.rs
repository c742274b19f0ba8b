//! [`Sgfd`]: the SGFD feature extractor a backbone consumes (spec `sgfd.md` §9–11). It hands out the
//! student's features (or the teacher's, for the Fig. 3 variants) and, for the B' item rows of a training
//! step, the weighted auxiliary losses `("kd", λ1·L_KD)` and `("ce", λ2·L_CE)`.
//!
//! How a backbone uses it in one step (the reference recomputes S_m(F_m) of every item each step):
//! ```text
//! let all = extractor.extract(None, Mode::Train)?;              // features of every item, no aux losses
//! // … backbone forward on all.features, rec_loss on the batch …
//! let aux = extractor.extract(Some(&rows), Mode::Train)?;       // rows = the B' item ids of the step (§9)
//! let loss = (rec_loss + aux.aux_total()?.unwrap_or(zero))?;    // L_REC + λ1·L_KD + λ2·L_CE
//! ```
//! `extract(None, Train)` returns no auxiliary losses (the rows are unknown), so the two calls never count
//! a term twice; [`Sgfd::aux_losses`] is the second call without the features. [`Mode::Eval`] never returns
//! auxiliary losses. Reference file pointers: `*/feature_extractor/*.py` (T_m, S_m, C_m and their losses),
//! `*/feature_fusion/FeatureFusionModel.py` (fusion, L_FCE).

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use mmkd_data::Labels;
use mmkd_features::{select_rows, Extracted, FeatureExtractor, FeatureStore, Mode, Projection, ProjectionConfig};
use mmkd_teacher::losses::{average, fce, tce};
use mmkd_teacher::{load_teacher, Teacher};

use crate::config::{BackboneSource, SgfdConfig, TeacherMode};
use crate::error::{Error, Result};
use crate::losses::{combine, fd, ld};
use crate::student::Student;

/// Unweighted SGFD losses of one set of item rows; a term is `None` when switched off.
#[derive(Debug, Clone)]
pub struct SgfdLosses {
    /// L_LD, combined over modalities as its form says.
    pub ld: Option<Tensor>,
    /// L_FD, combined over modalities as its form says.
    pub fd: Option<Tensor>,
    /// L_TCE, averaged over modalities.
    pub tce: Option<Tensor>,
    /// L_FCE.
    pub fce: Option<Tensor>,
}

fn add(a: Option<&Tensor>, b: Option<&Tensor>) -> Result<Option<Tensor>> {
    Ok(match (a, b) {
        (Some(a), Some(b)) => Some((a + b)?),
        (Some(a), None) | (None, Some(a)) => Some(a.clone()),
        (None, None) => None,
    })
}

impl SgfdLosses {
    /// L_KD = L_LD + L_FD (paper Eq. 13).
    pub fn kd(&self) -> Result<Option<Tensor>> {
        add(self.ld.as_ref(), self.fd.as_ref())
    }

    /// L_CE = L_TCE + L_FCE (paper Eq. 12).
    pub fn ce(&self) -> Result<Option<Tensor>> {
        add(self.tce.as_ref(), self.fce.as_ref())
    }

    /// `[("kd", kd_weight·L_KD), ("ce", ce_weight·L_CE)]`, leaving out absent terms.
    pub fn weighted(&self, cfg: &SgfdConfig) -> Result<Vec<(&'static str, Tensor)>> {
        let mut out = Vec::with_capacity(2);
        if let Some(kd) = self.kd()? {
            out.push(("kd", (kd * cfg.kd_weight)?));
        }
        if let Some(ce) = self.ce()? {
            out.push(("ce", (ce * cfg.ce_weight)?));
        }
        Ok(out)
    }
}

/// The SGFD extractor. Parameter keys under the `vb` it is built with: `student.{modality}.*` and, in
/// `joint` mode, `teacher.…` as [`Teacher`] documents. A pretrained teacher is not in the caller's map.
#[derive(Debug)]
pub struct Sgfd {
    cfg: SgfdConfig,
    names: Vec<String>,
    /// Generic features, one `(n_items, D_m)` per modality, in the vb's dtype.
    inputs: Vec<Tensor>,
    /// Label class of every item, u32 `(n_items,)`.
    labels: Tensor,
    teacher: Option<Teacher>,
    students: Vec<Student>,
    frozen: bool,
    /// A frozen teacher's outputs for every item, computed once (they never change).
    cache: Option<TeacherOutputs>,
}

/// The teacher's outputs for a set of item rows: features and classifier logits per modality, and the
/// fusion logits when the teacher has a fusion layer.
#[derive(Debug, Clone)]
struct TeacherOutputs {
    features: Vec<Tensor>,
    logits: Vec<Tensor>,
    fused: Option<Tensor>,
}

impl TeacherOutputs {
    fn compute(teacher: &Teacher, xs: &[Tensor]) -> Result<Self> {
        let features =
            xs.iter().enumerate().map(|(m, x)| teacher.extract(m, x)).collect::<mmkd_teacher::Result<Vec<_>>>()?;
        let logits = features
            .iter()
            .enumerate()
            .map(|(m, f)| teacher.classifier(m)?.logits(f))
            .collect::<mmkd_teacher::Result<Vec<_>>>()?;
        let fused = teacher.fused_logits(&features)?;
        Ok(Self { features, logits, fused })
    }

    fn rows(&self, idx: &Tensor) -> Result<Self> {
        let pick = |t: &Tensor| t.index_select(idx, 0);
        Ok(Self {
            features: self.features.iter().map(pick).collect::<candle_core::Result<Vec<_>>>()?,
            logits: self.logits.iter().map(pick).collect::<candle_core::Result<Vec<_>>>()?,
            fused: self.fused.as_ref().map(pick).transpose()?,
        })
    }

    fn detach(self) -> Self {
        Self {
            features: self.features.iter().map(Tensor::detach).collect(),
            logits: self.logits.iter().map(Tensor::detach).collect(),
            fused: self.fused.as_ref().map(Tensor::detach),
        }
    }
}

/// Rows of a frozen teacher's outputs computed per chunk, so the deep layers never hold every item at once.
const CACHE_CHUNK: usize = 4096;

/// The distinct values of the u32 index vector `items`, in order of first appearance, and for every position
/// the index of its value among them: `items = unique[inverse]`.
fn unique_with_inverse(items: &Tensor) -> Result<(Tensor, Tensor)> {
    let ids = items.to_vec1::<u32>()?;
    let mut first: std::collections::HashMap<u32, u32> = std::collections::HashMap::with_capacity(ids.len());
    let mut unique = Vec::with_capacity(ids.len());
    let inverse: Vec<u32> = ids
        .iter()
        .map(|&id| {
            *first.entry(id).or_insert_with(|| {
                unique.push(id);
                (unique.len() - 1) as u32
            })
        })
        .collect();
    let n = unique.len();
    Ok((Tensor::from_vec(unique, n, items.device())?, Tensor::from_vec(inverse, ids.len(), items.device())?))
}

impl Sgfd {
    /// Builds the extractor over every modality of `features`. In `joint` mode the teacher is created
    /// under `vb.pp("teacher")` from `cfg`; in `pretrained` mode it is loaded from `cfg.teacher_checkpoint`
    /// and frozen. `backbone_source = none` is not an `Sgfd`: use [`build_extractor`].
    pub fn new(
        vb: VarBuilder,
        cfg: &SgfdConfig,
        features: &FeatureStore,
        labels: &Labels,
        device: &Device,
    ) -> Result<Self> {
        match cfg.teacher_mode {
            TeacherMode::Joint => Self::build(vb, cfg, features, labels, device, None),
            TeacherMode::Pretrained => {
                let dir = cfg.teacher_checkpoint.as_ref().ok_or_else(|| {
                    Error::Config(
                        "teacher_mode = \"pretrained\" needs teacher_checkpoint (a folder written by the teacher job)"
                            .into(),
                    )
                })?;
                let (teacher, _) = load_teacher(dir, device)?;
                Self::with_frozen_teacher(vb, cfg, features, labels, &teacher, device)
            }
        }
    }

    /// Builds the extractor around an already trained `teacher`, which is frozen: its parameters are
    /// detached, so no loss reaches them whatever map they came from. `cfg.teacher_mode` is not consulted;
    /// the teacher's architecture is its own (`cfg`'s teacher fields are not used), the loss forms are `cfg`'s.
    pub fn with_frozen_teacher(
        vb: VarBuilder,
        cfg: &SgfdConfig,
        features: &FeatureStore,
        labels: &Labels,
        teacher: &Teacher,
        device: &Device,
    ) -> Result<Self> {
        Self::build(vb, cfg, features, labels, device, Some(teacher.detached()))
    }

    fn build(
        vb: VarBuilder,
        cfg: &SgfdConfig,
        features: &FeatureStore,
        labels: &Labels,
        device: &Device,
        frozen: Option<Teacher>,
    ) -> Result<Self> {
        cfg.validate()?;
        if cfg.backbone_source == BackboneSource::None {
            return Err(Error::Config("backbone_source = none is the vanilla extractor: use build_extractor".into()));
        }
        let n_items = mmkd_teacher::check_items(features, labels)?;
        let names: Vec<String> = features.names().into_iter().map(str::to_owned).collect();
        let dims = features.dims();
        let inputs =
            names.iter().map(|m| Ok(features.tensor(m, device)?.to_dtype(vb.dtype())?)).collect::<Result<Vec<_>>>()?;
        let label_tensor = Tensor::from_slice(&labels.per_item, n_items, device)?;

        let is_frozen = frozen.is_some();
        let needs_teacher = cfg.uses_kd() || cfg.use_labels || cfg.backbone_source == BackboneSource::Teacher;
        let teacher = match frozen {
            Some(t) => {
                if t.modalities() != names.as_slice() || t.n_labels() != labels.n_labels {
                    return Err(Error::Mismatch(format!(
                        "the pretrained teacher has modalities {:?} and {} labels; the data has {names:?} and {} labels",
                        t.modalities(),
                        t.n_labels(),
                        labels.n_labels
                    )));
                }
                for (m, &dim) in dims.iter().enumerate() {
                    let want = t.extractor(m)?.widths().first().copied().unwrap_or(0);
                    if want != dim || t.config().out_dim != cfg.out_dim {
                        return Err(Error::Mismatch(format!(
                            "the pretrained teacher maps {} features of width {want} to {}; the data has width {dim} and out_dim is {}",
                            names[m],
                            t.config().out_dim,
                            cfg.out_dim
                        )));
                    }
                }
                if cfg.use_fusion && cfg.use_labels && !t.has_fusion() && names.len() > 1 {
                    tracing::warn!("use_fusion is set but the pretrained teacher has no fusion layer: no L_FCE");
                }
                Some(t)
            }
            None if needs_teacher => {
                Some(Teacher::new(vb.pp("teacher"), &cfg.teacher_config(), &names, &dims, labels.n_labels)?)
            }
            None => None,
        };
        let students = if cfg.backbone_source == BackboneSource::Student {
            names
                .iter()
                .zip(&dims)
                .map(|(m, &dim)| Student::new(vb.pp("student").pp(m), cfg, dim))
                .collect::<Result<Vec<_>>>()?
        } else {
            Vec::new()
        };
        tracing::info!(
            modalities = ?names,
            source = ?cfg.backbone_source,
            frozen_teacher = is_frozen,
            fusion = teacher.as_ref().is_some_and(Teacher::has_fusion),
            "built SGFD extractor"
        );
        let cache = match &teacher {
            Some(t) if is_frozen => Some(Self::cache_outputs(t, &inputs, n_items)?),
            _ => None,
        };
        Ok(Self { cfg: cfg.clone(), names, inputs, labels: label_tensor, teacher, students, frozen: is_frozen, cache })
    }

    /// A frozen teacher's outputs for all `n_items` rows, chunk by chunk, detached.
    fn cache_outputs(teacher: &Teacher, inputs: &[Tensor], n_items: usize) -> Result<TeacherOutputs> {
        let mut parts = Vec::new();
        for start in (0..n_items).step_by(CACHE_CHUNK) {
            let len = CACHE_CHUNK.min(n_items - start);
            let xs = inputs.iter().map(|x| x.narrow(0, start, len)).collect::<candle_core::Result<Vec<_>>>()?;
            parts.push(TeacherOutputs::compute(teacher, &xs)?.detach());
        }
        let cat = |pick: &dyn Fn(&TeacherOutputs) -> Tensor| -> Result<Tensor> {
            Ok(Tensor::cat(&parts.iter().map(pick).collect::<Vec<_>>(), 0)?)
        };
        let n_mod = inputs.len();
        Ok(TeacherOutputs {
            features: (0..n_mod).map(|m| cat(&|p| p.features[m].clone())).collect::<Result<Vec<_>>>()?,
            logits: (0..n_mod).map(|m| cat(&|p| p.logits[m].clone())).collect::<Result<Vec<_>>>()?,
            fused: match parts.iter().map(|p| p.fused.clone()).collect::<Option<Vec<_>>>() {
                Some(fused) => Some(Tensor::cat(&fused, 0)?),
                None => None,
            },
        })
    }

    /// The teacher's outputs on `items` (all items for `None`): from the cache when the teacher is frozen,
    /// else one forward over the distinct items, spread back to `items`' order (duplicates in a step's B'
    /// cost nothing, and the gradient is the same: index_select's backward sums over repeats).
    fn teacher_outputs(&self, teacher: &Teacher, items: Option<&Tensor>) -> Result<TeacherOutputs> {
        if let Some(cache) = &self.cache {
            return match items {
                Some(idx) => cache.rows(idx),
                None => Ok(cache.clone()),
            };
        }
        let Some(items) = items else { return TeacherOutputs::compute(teacher, &self.inputs) };
        let (unique, inverse) = unique_with_inverse(items)?;
        let xs = self.inputs.iter().map(|x| x.index_select(&unique, 0)).collect::<candle_core::Result<Vec<_>>>()?;
        TeacherOutputs::compute(teacher, &xs)?.rows(&inverse)
    }

    /// Teacher features of every modality for `items` (or all items), detached when the teacher is frozen.
    fn teacher_features(&self, teacher: &Teacher, items: Option<&Tensor>) -> Result<Vec<Tensor>> {
        Ok(self.teacher_outputs(teacher, items)?.features)
    }

    fn student_features(&self, items: Option<&Tensor>) -> Result<Vec<Tensor>> {
        self.inputs.iter().zip(&self.students).map(|(x, s)| s.forward(&select_rows(x, items)?)).collect()
    }

    /// Unweighted SGFD losses on the item rows `items` (u32 `(b,)`, duplicates allowed), as in one reference
    /// step (spec §11).
    pub fn losses(&self, items: &Tensor) -> Result<SgfdLosses> {
        let fs = if self.students.is_empty() { None } else { Some(self.student_features(Some(items))?) };
        self.losses_with(items, fs.as_deref())
    }

    fn losses_with(&self, items: &Tensor, student: Option<&[Tensor]>) -> Result<SgfdLosses> {
        let cfg = &self.cfg;
        let none = SgfdLosses { ld: None, fd: None, tce: None, fce: None };
        let Some(teacher) = &self.teacher else { return Ok(none) };
        let kd_on = cfg.uses_kd() && student.is_some();
        if !kd_on && !cfg.use_labels {
            return Ok(none);
        }
        let y = self.labels.index_select(items, 0)?; // (b,)
        let outs = self.teacher_outputs(teacher, Some(items))?;
        let detach_kd = self.frozen || cfg.detach_teacher_in_kd;
        let (mut lds, mut fds, mut tces) = (Vec::new(), Vec::new(), Vec::new());
        for (m, (f_t, z_t)) in outs.features.iter().zip(&outs.logits).enumerate() {
            let classifier = teacher.classifier(m)?;
            if cfg.use_labels {
                tces.push(tce(z_t, &y, cfg.tce_on_probs, cfg.row_reduction)?);
            }
            let Some(fs) = student.filter(|_| kd_on) else { continue };
            let f_t_kd = if detach_kd { f_t.detach() } else { f_t.clone() };
            if cfg.use_ld {
                let z_t_kd = if detach_kd { z_t.detach() } else { z_t.clone() };
                let p_t = candle_nn::ops::softmax(&(z_t_kd / cfg.t_decay)?, candle_core::D::Minus1)?; // (b, C)
                let p_s = classifier.probs(&fs[m], cfg.t_decay)?; // (b, C)
                lds.push(ld(&p_t, &p_s, cfg.ld_form, cfg.row_reduction)?);
            }
            if cfg.use_fd {
                fds.push(fd(&f_t_kd, &fs[m], cfg.fd_form, cfg.row_reduction)?);
            }
        }
        let ld_total = match lds.last() {
            None => None,
            Some(last) if cfg.ld_last_modality_only => Some(last.clone()),
            Some(_) => Some(combine(&lds, cfg.ld_form.sums_modalities())?),
        };
        let fd_total = if fds.is_empty() { None } else { Some(combine(&fds, cfg.fd_form.sums_modalities())?) };
        let tce_total = if tces.is_empty() { None } else { Some(average(&tces)?) };
        let fce_total = if cfg.use_labels && cfg.use_fusion {
            match &outs.fused {
                Some(z) => Some(fce(z, &y, cfg.row_reduction)?),
                None => None,
            }
        } else {
            None
        };
        Ok(SgfdLosses { ld: ld_total, fd: fd_total, tce: tce_total, fce: fce_total })
    }

    /// The weighted auxiliary losses `[("kd", λ1·L_KD), ("ce", λ2·L_CE)]` on the B' item rows `items`
    /// (u32 `(b,)`); absent terms are left out. The same as `extract(Some(items), Mode::Train).aux_losses`.
    pub fn aux_losses(&self, items: &Tensor) -> Result<Vec<(&'static str, Tensor)>> {
        self.losses(items)?.weighted(&self.cfg)
    }

    fn aux_losses_from(&self, items: &Tensor, all: &[Tensor]) -> Result<Vec<(&'static str, Tensor)>> {
        if self.students.is_empty() {
            // The backbone sees the teacher's features; the losses need no student.
            return self.losses_with(items, None)?.weighted(&self.cfg);
        }
        if all.len() != self.students.len() {
            return Err(Error::Mismatch(format!(
                "aux_losses_given: {} feature matrices for {} modalities",
                all.len(),
                self.students.len()
            )));
        }
        let rows = all.iter().map(|f| f.index_select(items, 0)).collect::<candle_core::Result<Vec<_>>>()?;
        self.losses_with(items, Some(&rows))?.weighted(&self.cfg)
    }

    fn extract_checked(&self, items: Option<&Tensor>, mode: Mode) -> Result<Extracted> {
        let features = match (self.cfg.backbone_source, &self.teacher) {
            (BackboneSource::Teacher, Some(teacher)) => self.teacher_features(teacher, items)?,
            _ => self.student_features(items)?,
        };
        let aux_losses = match (mode, items) {
            (Mode::Train, Some(items)) => {
                let student = (!self.students.is_empty()).then_some(features.as_slice());
                self.losses_with(items, student)?.weighted(&self.cfg)?
            }
            _ => Vec::new(),
        };
        Ok(Extracted { features, aux_losses })
    }

    /// The teacher, when one exists (none for a student without KD or label losses).
    pub fn teacher(&self) -> Option<&Teacher> {
        self.teacher.as_ref()
    }

    /// Whether the teacher is frozen (pretrained mode).
    pub fn is_frozen(&self) -> bool {
        self.frozen
    }

    /// Generic features of every modality, `(n_items, D_m)`.
    pub fn inputs(&self) -> &[Tensor] {
        &self.inputs
    }

    /// Label class of every item, u32 `(n_items,)`.
    pub fn labels(&self) -> &Tensor {
        &self.labels
    }

    /// The configuration.
    pub fn config(&self) -> &SgfdConfig {
        &self.cfg
    }
}

impl FeatureExtractor for Sgfd {
    /// Features `(b, d)` per modality of `items` (all items for `None`) from the student (or the teacher,
    /// `backbone_source = teacher`); in [`Mode::Train`] with `Some(items)`, the weighted SGFD losses on
    /// those rows. See the module documentation for the two calls a training step makes.
    fn extract(&self, items: Option<&Tensor>, mode: Mode) -> mmkd_features::Result<Extracted> {
        Ok(self.extract_checked(items, mode)?)
    }

    /// The weighted SGFD losses on `items` with the student features gathered from `all` (this step's
    /// features of every item) rather than recomputed.
    fn aux_losses_given(&self, items: &Tensor, all: &[Tensor]) -> mmkd_features::Result<Vec<(&'static str, Tensor)>> {
        Ok(self.aux_losses_from(items, all)?)
    }

    fn out_dim(&self) -> usize {
        self.cfg.out_dim
    }

    fn modalities(&self) -> &[String] {
        &self.names
    }
}

/// The extractor `cfg` asks for: [`Sgfd`], or for `backbone_source = none` (preset `vanilla_shallow`) the
/// vanilla [`Projection`] built under `vb` with `cfg`'s `out_dim`, `extractor_act`, `extractor_l2norm` and
/// `init` (keys `{modality}.weight`, `{modality}.bias`).
pub fn build_extractor(
    vb: VarBuilder,
    cfg: &SgfdConfig,
    features: &FeatureStore,
    labels: &Labels,
    device: &Device,
) -> Result<Box<dyn FeatureExtractor>> {
    if cfg.backbone_source == BackboneSource::None {
        cfg.validate()?;
        let pc = ProjectionConfig {
            out_dim: cfg.out_dim,
            activation: cfg.extractor_act,
            l2_normalize: cfg.extractor_l2norm,
            init: cfg.init,
        };
        return Ok(Box::new(Projection::new(vb, &pc, features, device)?));
    }
    Ok(Box::new(Sgfd::new(vb, cfg, features, labels, device)?))
}
