//! [`SgfdConfig`]: every switch of the spec's table (`sgfd.md` §12) with the reference behaviour as default,
//! and the paper's variants as named presets ([`SgfdPreset`]; [`preset`] and [`names`] by name).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use mmkd_features::{Activation, LinearInit};
use mmkd_teacher::{Reduction, TeacherConfig, TeacherDepth};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::losses::{FdForm, LdForm};

/// Where the teacher comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TeacherMode {
    /// The reference: teacher, classifiers and fusion are created from random initialisation inside the
    /// backbone's model and trained by the backbone's optimiser in the same steps; nothing is detached
    /// (unless `detach_teacher_in_kd`).
    #[default]
    Joint,
    /// The paper's "separately trained" teacher: loaded from `teacher_checkpoint` (written by
    /// `mmkd_teacher::pretrain`), frozen (its outputs are constants and its parameters are not in the
    /// backbone's `VarMap`); only the student learns from L_KD, and L_CE trains nothing.
    Pretrained,
}

/// Which extractor's output the backbone consumes (spec switch `backbone_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackboneSource {
    /// The student S_m (SGFD; reference and paper).
    #[default]
    Student,
    /// The teacher T_m (Fig. 3 variants GRCN_m, GRCN_{s/l}, GRCN_{m/l}); there is no student and no L_KD.
    Teacher,
    /// The backbone's original extractor (vanilla): [`crate::build_extractor`] returns a
    /// [`mmkd_features::Projection`] with the extractor settings below, and no SGFD loss.
    None,
}

/// Configuration of the SGFD extractor. Defaults: the PyTorch reference as run by GRCN, with GRCN's CLI
/// defaults for the weights and temperature (`--kd_weight 1 --ce_weight 1 --t_decay 100`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SgfdConfig {
    /// λ1, the weight of L_KD = L_LD + L_FD (reference CLI `--kd_weight`).
    pub kd_weight: f64,
    /// λ2, the weight of L_CE = L_TCE + L_FCE (reference CLI `--ce_weight`).
    pub ce_weight: f64,
    /// τ, the distillation temperature of L_LD (reference CLI `--t_decay`; a constant, not a schedule).
    pub t_decay: f64,
    /// Latent width d of teacher and student (GRCN `--dim_C`, BM3 `embedding_size`, MAML `embed_dim`).
    pub out_dim: usize,
    /// Joint (reference) or pretrained-and-frozen teacher.
    pub teacher_mode: TeacherMode,
    /// Checkpoint folder of a pretrained teacher (`teacher.safetensors` + `teacher.toml`); required when
    /// `teacher_mode = "pretrained"`. The teacher's architecture is then read from the checkpoint.
    pub teacher_checkpoint: Option<PathBuf>,
    /// Teacher layer-width rule (spec switch `teacher_depth`; the reference's `decay_ration = 4`).
    pub teacher_depth: TeacherDepth,
    /// Activation after teacher and student (spec switch `extractor_act`; the reference's `is_pruning`:
    /// GRCN none, BM3 LeakyReLU 0.01, MAML LeakyReLU 0.2).
    pub extractor_act: Activation,
    /// Row-wise L2 normalisation of teacher and student outputs (spec switch `extractor_l2norm`; PyTorch
    /// true, TensorFlow false).
    pub extractor_l2norm: bool,
    /// Parameter initialisation (PyTorch `nn.Linear` or Keras `Dense`).
    pub init: LinearInit,
    /// Whether L_LD is trained (spec switch `use_ld`; false in SGFD_f).
    pub use_ld: bool,
    /// Whether L_FD is trained (spec switch `use_fd`; false in SGFD_l).
    pub use_fd: bool,
    /// Form of L_LD (spec switch `ld_form`).
    pub ld_form: LdForm,
    /// Form of L_FD (spec switch `fd_form`).
    pub fd_form: FdForm,
    /// Whether the fusion layer exists and L_FCE is trained (spec switch `use_fusion`; false in SGFD_e).
    pub use_fusion: bool,
    /// Activation of the fusion layer (spec switch `fusion_act`; reference LeakyReLU 0.01, paper ReLU).
    pub fusion_act: Activation,
    /// Concatenation order of the teacher features for fusion; empty = feature-store order (GRCN and MAML
    /// `[visual ; text]`, BM3 `["text", "visual"]`).
    pub fusion_order: Vec<String>,
    /// L_TCE as cross-entropy on probabilities, a double softmax (spec switch `tce_on_probs`; reference
    /// `GRCN/feature_extractor/FeatureExtractorModel.py:38`); false = paper Eq. 4.
    pub tce_on_probs: bool,
    /// Which extractor feeds the backbone (spec switch `backbone_source`).
    pub backbone_source: BackboneSource,
    /// Whether the label losses L_TCE and L_FCE are trained (spec switch `use_labels`).
    pub use_labels: bool,
    /// Detach the teacher's features and probabilities inside L_LD and L_FD, so distillation moves only
    /// the student (spec switch `detach_teacher_in_kd`; the reference detaches nothing).
    pub detach_teacher_in_kd: bool,
    /// One classifier for every modality (TensorFlow reference `category_classification`, `AUTO_REUSE`).
    pub shared_classifier: bool,
    /// Width of C_m if not the number of labels (TensorFlow reference hard-codes 25).
    pub classifier_width: Option<usize>,
    /// Reduction over the B' rows: `mean` (PyTorch) or `sum` (TensorFlow).
    pub row_reduction: Reduction,
    /// L_LD = the last modality's term only, reproducing the TensorFlow reference's bug in
    /// `MAML/MAML.py` (`embedding_loss`): the textual extractor's LD is unpacked into `visual_kd_loss`, so
    /// `kd_loss = (visual_kd_loss + visual_kd_loss) / 2` is the textual term (spec §7, §15.10).
    pub ld_last_modality_only: bool,
}

impl Default for SgfdConfig {
    fn default() -> Self {
        let teacher = TeacherConfig::default();
        Self {
            kd_weight: 1.0,
            ce_weight: 1.0,
            t_decay: 100.0,
            out_dim: teacher.out_dim,
            teacher_mode: TeacherMode::Joint,
            teacher_checkpoint: None,
            teacher_depth: teacher.teacher_depth,
            extractor_act: teacher.extractor_act,
            extractor_l2norm: teacher.extractor_l2norm,
            init: teacher.init,
            use_ld: true,
            use_fd: true,
            ld_form: LdForm::L1Mean,
            fd_form: FdForm::MseMean,
            use_fusion: teacher.use_fusion,
            fusion_act: teacher.fusion_act,
            fusion_order: teacher.fusion_order,
            tce_on_probs: teacher.tce_on_probs,
            backbone_source: BackboneSource::Student,
            use_labels: true,
            detach_teacher_in_kd: false,
            shared_classifier: teacher.shared_classifier,
            classifier_width: teacher.classifier_width,
            row_reduction: teacher.row_reduction,
            ld_last_modality_only: false,
        }
    }
}

impl SgfdConfig {
    /// The teacher part of this configuration (used in `joint` mode; a pretrained teacher brings its own).
    pub fn teacher_config(&self) -> TeacherConfig {
        TeacherConfig {
            teacher_depth: self.teacher_depth,
            out_dim: self.out_dim,
            extractor_act: self.extractor_act,
            extractor_l2norm: self.extractor_l2norm,
            init: self.init,
            use_fusion: self.use_fusion,
            fusion_act: self.fusion_act,
            fusion_order: self.fusion_order.clone(),
            tce_on_probs: self.tce_on_probs,
            shared_classifier: self.shared_classifier,
            classifier_width: self.classifier_width,
            row_reduction: self.row_reduction,
        }
    }

    /// Whether any distillation term is on.
    pub fn uses_kd(&self) -> bool {
        self.use_ld || self.use_fd
    }

    /// Checks values and combinations that serde cannot.
    pub fn validate(&self) -> Result<()> {
        self.teacher_config().validate()?;
        if !(self.t_decay.is_finite() && self.t_decay > 0.0) {
            return Err(Error::Config(format!("t_decay (τ) must be positive, got {}", self.t_decay)));
        }
        for (name, w) in [("kd_weight", self.kd_weight), ("ce_weight", self.ce_weight)] {
            if !(w.is_finite() && w >= 0.0) {
                return Err(Error::Config(format!("{name} must be a finite number ≥ 0, got {w}")));
            }
        }
        if self.backbone_source != BackboneSource::Student && self.uses_kd() {
            return Err(Error::Config(format!(
                "backbone_source = {:?} has no student to distil into: set use_ld = false and use_fd = false",
                self.backbone_source
            )));
        }
        if self.backbone_source == BackboneSource::None && self.use_labels {
            return Err(Error::Config(
                "backbone_source = none is the vanilla extractor: set use_labels = false (or use preset `vanilla_shallow`)".into(),
            ));
        }
        Ok(())
    }
}

/// The paper's variants (spec §12, ablations and Fig. 3), each a [`SgfdConfig`] on top of the reference
/// defaults ([`SgfdPreset::config`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SgfdPreset {
    /// `sgfd`: everything on (Table 2).
    Sgfd,
    /// `sgfd_l`: only logits distillation (`use_fd = false`).
    SgfdL,
    /// `sgfd_f`: only feature distillation (`use_ld = false`).
    SgfdF,
    /// `sgfd_e`: no complementary information (`use_fusion = false`, L_CE = L_TCE).
    SgfdE,
    /// `sgfd_s`: shallow teacher.
    SgfdS,
    /// `vanilla_shallow` (GRCN_1): the backbone's original one-layer extractor, no SGFD at all.
    VanillaShallow,
    /// `vanilla_deep` (GRCN_m): the deep teacher architecture as the backbone's extractor, trained by L_REC
    /// only (no labels, no fusion, no KD).
    VanillaDeep,
    /// `teacher_shallow_labels` (GRCN_{s/l}): the shallow teacher as extractor, trained jointly by L_REC and
    /// L_TCE (no fusion, our reading of "semantic information only").
    TeacherShallowLabels,
    /// `teacher_deep_labels` (GRCN_{m/l}): the deep teacher as extractor, trained by L_REC, L_TCE and L_FCE.
    TeacherDeepLabels,
}

impl SgfdPreset {
    /// Every preset, in the order of the paper (Table 2, Table 3, Fig. 3).
    pub const ALL: [SgfdPreset; 9] = [
        SgfdPreset::Sgfd,
        SgfdPreset::SgfdL,
        SgfdPreset::SgfdF,
        SgfdPreset::SgfdE,
        SgfdPreset::SgfdS,
        SgfdPreset::VanillaShallow,
        SgfdPreset::VanillaDeep,
        SgfdPreset::TeacherShallowLabels,
        SgfdPreset::TeacherDeepLabels,
    ];

    /// The names of [`SgfdPreset::ALL`], in that order.
    pub const NAMES: [&'static str; 9] = {
        let mut names = [""; 9];
        let mut i = 0;
        while i < names.len() {
            names[i] = Self::ALL[i].name();
            i += 1;
        }
        names
    };

    /// The name used in configs and on the command line (`--extractor sgfd_l`).
    pub const fn name(self) -> &'static str {
        match self {
            SgfdPreset::Sgfd => "sgfd",
            SgfdPreset::SgfdL => "sgfd_l",
            SgfdPreset::SgfdF => "sgfd_f",
            SgfdPreset::SgfdE => "sgfd_e",
            SgfdPreset::SgfdS => "sgfd_s",
            SgfdPreset::VanillaShallow => "vanilla_shallow",
            SgfdPreset::VanillaDeep => "vanilla_deep",
            SgfdPreset::TeacherShallowLabels => "teacher_shallow_labels",
            SgfdPreset::TeacherDeepLabels => "teacher_deep_labels",
        }
    }

    /// The preset's configuration.
    pub fn config(self) -> SgfdConfig {
        let base = SgfdConfig::default();
        let no_kd = SgfdConfig { use_ld: false, use_fd: false, ..base.clone() };
        match self {
            SgfdPreset::Sgfd => base,
            SgfdPreset::SgfdL => SgfdConfig { use_fd: false, ..base },
            SgfdPreset::SgfdF => SgfdConfig { use_ld: false, ..base },
            SgfdPreset::SgfdE => SgfdConfig { use_fusion: false, ..base },
            SgfdPreset::SgfdS => SgfdConfig { teacher_depth: TeacherDepth::Shallow, ..base },
            SgfdPreset::VanillaShallow => {
                SgfdConfig { backbone_source: BackboneSource::None, use_labels: false, use_fusion: false, ..no_kd }
            }
            SgfdPreset::VanillaDeep => {
                SgfdConfig { backbone_source: BackboneSource::Teacher, use_labels: false, use_fusion: false, ..no_kd }
            }
            SgfdPreset::TeacherShallowLabels => SgfdConfig {
                backbone_source: BackboneSource::Teacher,
                teacher_depth: TeacherDepth::Shallow,
                use_labels: true,
                use_fusion: false,
                ..no_kd
            },
            SgfdPreset::TeacherDeepLabels => SgfdConfig {
                backbone_source: BackboneSource::Teacher,
                teacher_depth: TeacherDepth::default(),
                use_labels: true,
                use_fusion: true,
                ..no_kd
            },
        }
    }
}

impl fmt::Display for SgfdPreset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SgfdPreset {
    type Err = Error;

    /// Parses a [`SgfdPreset::name`]; the error lists the known names.
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| Error::Config(format!("unknown SGFD preset `{s}`; known: {}", Self::NAMES.join(", "))))
    }
}

/// Names accepted by [`preset`]: [`SgfdPreset::NAMES`].
pub fn names() -> &'static [&'static str] {
    &SgfdPreset::NAMES
}

/// The configuration of the preset called `name` ([`SgfdPreset::from_str`], then [`SgfdPreset::config`]).
pub fn preset(name: &str) -> Result<SgfdConfig> {
    Ok(name.parse::<SgfdPreset>()?.config())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names of the fields in which `a` and `b` differ, via their TOML tables.
    fn diff(a: &SgfdConfig, b: &SgfdConfig) -> Vec<String> {
        let ta = toml::Value::try_from(a).unwrap();
        let tb = toml::Value::try_from(b).unwrap();
        let (ta, tb) = (ta.as_table().unwrap(), tb.as_table().unwrap());
        let mut keys: Vec<String> = ta.keys().chain(tb.keys()).filter(|k| ta.get(*k) != tb.get(*k)).cloned().collect();
        keys.sort();
        keys.dedup();
        keys
    }

    #[test]
    fn presets_switch_exactly_their_fields() {
        use SgfdPreset::*;
        let base = SgfdConfig::default();
        let expect: [(SgfdPreset, &[&str]); 9] = [
            (Sgfd, &[]),
            (SgfdL, &["use_fd"]),
            (SgfdF, &["use_ld"]),
            (SgfdE, &["use_fusion"]),
            (SgfdS, &["teacher_depth"]),
            (VanillaShallow, &["backbone_source", "use_fd", "use_fusion", "use_labels", "use_ld"]),
            (VanillaDeep, &["backbone_source", "use_fd", "use_fusion", "use_labels", "use_ld"]),
            (TeacherShallowLabels, &["backbone_source", "teacher_depth", "use_fd", "use_fusion", "use_ld"]),
            (TeacherDeepLabels, &["backbone_source", "use_fd", "use_ld"]),
        ];
        assert_eq!(expect.map(|(p, _)| p), SgfdPreset::ALL);
        for (p, fields) in expect {
            let c = p.config();
            assert_eq!(diff(&base, &c), fields, "preset {p}");
            c.validate().unwrap();
        }
        assert_eq!(SgfdS.config().teacher_depth, TeacherDepth::Shallow);
        assert_eq!(VanillaShallow.config().backbone_source, BackboneSource::None);
        assert_eq!(TeacherDeepLabels.config().backbone_source, BackboneSource::Teacher);
        assert!(!SgfdL.config().use_fd && SgfdL.config().use_ld);
    }

    #[test]
    fn preset_names_round_trip_and_unknown_names_list_the_known() {
        let expected = [
            "sgfd",
            "sgfd_l",
            "sgfd_f",
            "sgfd_e",
            "sgfd_s",
            "vanilla_shallow",
            "vanilla_deep",
            "teacher_shallow_labels",
            "teacher_deep_labels",
        ];
        assert_eq!(names(), expected);
        for p in SgfdPreset::ALL {
            assert_eq!(p.name().parse::<SgfdPreset>().unwrap(), p);
            assert_eq!(p.to_string(), p.name());
            assert_eq!(preset(p.name()).unwrap(), p.config());
        }
        let err = "sgfd_x".parse::<SgfdPreset>().unwrap_err().to_string();
        assert!(err.contains("`sgfd_x`"), "{err}");
        assert!(expected.iter().all(|n| err.contains(n)), "{err}");
        assert!(preset("SGFD").is_err());
    }

    #[test]
    fn defaults_are_the_reference_and_typos_are_errors() {
        let d = SgfdConfig::default();
        assert_eq!((d.kd_weight, d.ce_weight, d.t_decay, d.out_dim), (1.0, 1.0, 100.0, 128));
        assert_eq!(d.teacher_depth, TeacherDepth::Deep { ratio: 4 });
        assert_eq!((d.ld_form, d.fd_form), (LdForm::L1Mean, FdForm::MseMean));
        assert!(d.tce_on_probs && d.use_fusion && d.use_labels && d.extractor_l2norm && !d.detach_teacher_in_kd);
        assert_eq!(d.fusion_act, Activation::LeakyRelu(0.01));
        assert_eq!(d.teacher_mode, TeacherMode::Joint);

        let text = r#"
            kd_weight = 0.01
            t_decay = 50.0
            ld_form = "sq_l2_sum"
            backbone_source = "student"
            teacher_depth = { rule = "paper", delta = 4.0 }
            extractor_act = { kind = "leaky_relu", slope = 0.01 }
            fusion_order = ["text", "visual"]
        "#;
        let c: SgfdConfig = toml::from_str(text).unwrap();
        assert_eq!(c.kd_weight, 0.01);
        assert_eq!(c.ld_form, LdForm::SqL2Sum);
        assert_eq!(c.teacher_depth, TeacherDepth::Paper { delta: 4.0 });
        assert_eq!(c.extractor_act, Activation::LeakyRelu(0.01));
        assert_eq!(c.ce_weight, 1.0);
        assert_eq!(toml::from_str::<SgfdConfig>(&toml::to_string(&c).unwrap()).unwrap(), c);
        assert!(toml::from_str::<SgfdConfig>("kd_wieght = 1.0").is_err());
        assert!(toml::from_str::<SgfdConfig>("ld_form = \"l2\"").is_err());
    }

    #[test]
    fn contradictions_are_rejected() {
        let bad = SgfdConfig { backbone_source: BackboneSource::Teacher, ..Default::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("use_ld"));
        let bad =
            SgfdConfig { backbone_source: BackboneSource::None, use_ld: false, use_fd: false, ..Default::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("use_labels"));
        assert!(SgfdConfig { t_decay: 0.0, ..Default::default() }.validate().is_err());
        assert!(SgfdConfig { kd_weight: -1.0, ..Default::default() }.validate().is_err());
        assert!(SgfdConfig { teacher_depth: TeacherDepth::Deep { ratio: 1 }, ..Default::default() }
            .validate()
            .is_err());
    }
}
