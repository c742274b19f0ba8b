//! [`Teacher`]: the SGFD teacher of every modality — T_m, C_m — and the fusion classifier over the teacher
//! features of all modalities (spec `sgfd.md` §2, §4–6). Any number of modalities ≥ 1; with one, fusion is off.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use crate::classifier::Classifier;
use crate::config::TeacherConfig;
use crate::error::{Error, Result};
use crate::extractor::DeepExtractor;
use crate::fusion::Fusion;
use crate::losses::{average, fce, tce};

/// Teacher outputs for one set of item rows.
#[derive(Debug, Clone)]
pub struct TeacherOutput {
    /// Teacher features f_m^t, one `(b, d)` per modality in the teacher's modality order.
    pub features: Vec<Tensor>,
    /// Classifier logits C_m(f_m^t), one `(b, C)` per modality.
    pub logits: Vec<Tensor>,
    /// Fusion logits `(b, C)`, when the teacher has a fusion layer.
    pub fused_logits: Option<Tensor>,
}

/// Unweighted label losses of the teacher.
#[derive(Debug, Clone)]
pub struct LabelLosses {
    /// L_TCE: the per-modality terms averaged over modalities (the reference's ÷2 and the paper's Eq. 4).
    pub tce: Tensor,
    /// L_FCE, when the teacher has a fusion layer.
    pub fce: Option<Tensor>,
}

impl LabelLosses {
    /// L_CE = L_TCE + L_FCE (paper Eq. 12).
    pub fn total(&self) -> Result<Tensor> {
        Ok(match &self.fce {
            Some(f) => (&self.tce + f)?,
            None => self.tce.clone(),
        })
    }
}

/// Keys: `{modality}.extractor.layers.{i}.*`, `{modality}.classifier.*` (or `classifier.*` when shared),
/// `fusion.transfer.*`, `fusion.classifier.*`.
#[derive(Debug, Clone)]
pub struct Teacher {
    cfg: TeacherConfig,
    modalities: Vec<String>,
    extractors: Vec<DeepExtractor>,
    classifiers: Vec<Classifier>,
    fusion: Option<Fusion>,
    fusion_order: Vec<usize>,
    n_labels: usize,
}

impl Teacher {
    /// One extractor and classifier per modality (`modalities[i]` has input width `in_dims[i]`), and the
    /// fusion layer when `cfg.use_fusion` and there are at least two modalities. `n_labels` = C.
    pub fn new(
        vb: VarBuilder,
        cfg: &TeacherConfig,
        modalities: &[String],
        in_dims: &[usize],
        n_labels: usize,
    ) -> Result<Self> {
        cfg.validate()?;
        if modalities.is_empty() || modalities.len() != in_dims.len() {
            return Err(Error::Mismatch(format!(
                "a teacher needs at least one modality and one input width per modality, got {modalities:?} and {in_dims:?}"
            )));
        }
        if n_labels == 0 {
            return Err(Error::Mismatch("a teacher needs at least one label class".into()));
        }
        let width = cfg.classifier_width.unwrap_or(n_labels);
        let mut extractors = Vec::with_capacity(modalities.len());
        let mut classifiers = Vec::with_capacity(modalities.len());
        let shared = if cfg.shared_classifier { Some(Classifier::new(vb.pp("classifier"), cfg, width)?) } else { None };
        for (name, &dim) in modalities.iter().zip(in_dims) {
            extractors.push(DeepExtractor::new(vb.pp(name).pp("extractor"), cfg, dim)?);
            classifiers.push(match &shared {
                Some(c) => c.clone(),
                None => Classifier::new(vb.pp(name).pp("classifier"), cfg, width)?,
            });
        }
        // The fusion order is only checked when there is a fusion layer: a one-modality run may keep a
        // backbone's two-modality `fusion_order`.
        let (fusion, fusion_order) = if cfg.use_fusion && modalities.len() >= 2 {
            let order = resolve_order(&cfg.fusion_order, modalities)?;
            (Some(Fusion::new(vb.pp("fusion"), cfg, modalities.len(), n_labels)?), order)
        } else {
            if cfg.use_fusion {
                tracing::warn!(modalities = ?modalities, "use_fusion is set but there is only one modality: fusion is off");
            }
            (None, Vec::new())
        };
        Ok(Self {
            cfg: cfg.clone(),
            modalities: modalities.to_vec(),
            extractors,
            classifiers,
            fusion,
            fusion_order,
            n_labels,
        })
    }

    /// Teacher features f_m^t `(b, d)` of modality index `m` from its generic features `(b, D_m)`.
    pub fn extract(&self, m: usize, x: &Tensor) -> Result<Tensor> {
        self.extractor(m)?.forward(x)
    }

    /// Features, logits and fusion logits of the same item rows, `xs[m]` `(b, D_m)` per modality.
    pub fn forward(&self, xs: &[Tensor]) -> Result<TeacherOutput> {
        if xs.len() != self.modalities.len() {
            return Err(Error::shape("teacher inputs", format!("{} modalities", self.modalities.len()), xs.len()));
        }
        let mut features = Vec::with_capacity(xs.len());
        let mut logits = Vec::with_capacity(xs.len());
        for (m, x) in xs.iter().enumerate() {
            let f = self.extract(m, x)?;
            logits.push(self.classifiers[m].logits(&f)?);
            features.push(f);
        }
        let fused_logits = self.fused_logits(&features)?;
        Ok(TeacherOutput { features, logits, fused_logits })
    }

    /// Fusion logits `(b, C)` of teacher features given in the teacher's modality order (they are
    /// concatenated in fusion order), or `None` without a fusion layer.
    pub fn fused_logits(&self, features: &[Tensor]) -> Result<Option<Tensor>> {
        let Some(fusion) = &self.fusion else { return Ok(None) };
        if features.len() != self.modalities.len() {
            return Err(Error::shape("fusion inputs", format!("{} modalities", self.modalities.len()), features.len()));
        }
        let ordered: Vec<Tensor> = self.fusion_order.iter().map(|&m| features[m].clone()).collect();
        Ok(Some(fusion.logits(&ordered)?))
    }

    /// L_TCE (averaged over modalities) and L_FCE of `out` against labels u32 `(b,)`, in the forms and
    /// row reduction of the teacher's config. τ = 1 for both.
    pub fn label_losses(&self, out: &TeacherOutput, labels: &Tensor) -> Result<LabelLosses> {
        let per_modality = out
            .logits
            .iter()
            .map(|z| tce(z, labels, self.cfg.tce_on_probs, self.cfg.row_reduction))
            .collect::<Result<Vec<_>>>()?;
        let fce = match &out.fused_logits {
            Some(z) => Some(fce(z, labels, self.cfg.row_reduction)?),
            None => None,
        };
        Ok(LabelLosses { tce: average(&per_modality)?, fce })
    }

    /// The extractor T_m of modality index `m`.
    pub fn extractor(&self, m: usize) -> Result<&DeepExtractor> {
        self.extractors.get(m).ok_or_else(|| self.no_modality(m))
    }

    /// The classifier C_m of modality index `m` (the same one for every m when shared).
    pub fn classifier(&self, m: usize) -> Result<&Classifier> {
        self.classifiers.get(m).ok_or_else(|| self.no_modality(m))
    }

    fn no_modality(&self, m: usize) -> Error {
        Error::Mismatch(format!("modality index {m} out of range for {:?}", self.modalities))
    }

    /// Modality names in the teacher's order.
    pub fn modalities(&self) -> &[String] {
        &self.modalities
    }

    /// Whether the teacher has a fusion layer (and L_FCE).
    pub fn has_fusion(&self) -> bool {
        self.fusion.is_some()
    }

    /// Number of label classes C.
    pub fn n_labels(&self) -> usize {
        self.n_labels
    }

    /// The configuration the teacher was built with.
    pub fn config(&self) -> &TeacherConfig {
        &self.cfg
    }

    /// The same teacher with every parameter detached: its outputs are constants, so no gradient can
    /// reach it (the frozen, pretrained teacher).
    pub fn detached(&self) -> Self {
        Self {
            extractors: self.extractors.iter().map(DeepExtractor::detached).collect(),
            classifiers: self.classifiers.iter().map(Classifier::detached).collect(),
            fusion: self.fusion.as_ref().map(Fusion::detached),
            ..self.clone()
        }
    }
}

/// Indices of `order` in `modalities`; an empty `order` is the modalities' own order.
fn resolve_order(order: &[String], modalities: &[String]) -> Result<Vec<usize>> {
    if order.is_empty() {
        return Ok((0..modalities.len()).collect());
    }
    let mut idx = Vec::with_capacity(order.len());
    for name in order {
        match modalities.iter().position(|m| m == name) {
            Some(i) if !idx.contains(&i) => idx.push(i),
            _ => {
                return Err(Error::Config(format!(
                    "fusion_order {order:?} must name each of the modalities {modalities:?} exactly once"
                )))
            }
        }
    }
    if idx.len() != modalities.len() {
        return Err(Error::Config(format!(
            "fusion_order {order:?} must name each of the modalities {modalities:?} exactly once"
        )));
    }
    Ok(idx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::widths::TeacherDepth;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn keys_read_like_the_struct_and_fusion_follows_the_modality_count() {
        let vm = VarMap::new();
        let vb = mmkd_features::seeded_var_builder(&vm, 1, DType::F32, &Device::Cpu);
        let cfg = TeacherConfig { out_dim: 4, teacher_depth: TeacherDepth::Deep { ratio: 4 }, ..Default::default() };
        let t = Teacher::new(vb.clone(), &cfg, &names(&["visual", "text"]), &[64, 16], 3).unwrap();
        assert!(t.has_fusion());
        let mut keys: Vec<String> = vm.data().lock().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "fusion.classifier.bias",
                "fusion.classifier.weight",
                "fusion.transfer.bias",
                "fusion.transfer.weight",
                "text.classifier.bias",
                "text.classifier.weight",
                "text.extractor.layers.0.bias",
                "text.extractor.layers.0.weight",
                "visual.classifier.bias",
                "visual.classifier.weight",
                "visual.extractor.layers.0.bias",
                "visual.extractor.layers.0.weight",
                "visual.extractor.layers.1.bias",
                "visual.extractor.layers.1.weight",
            ]
        );
        assert_eq!(vm.data().lock().unwrap()["fusion.transfer.weight"].as_tensor().dims(), &[4, 8]);
        assert_eq!(t.extractor(0).unwrap().widths(), &[64, 16, 4]);

        // One modality: fusion is off even though use_fusion is set (and a two-modality order is ignored).
        let vm1 = VarMap::new();
        let vb1 = mmkd_features::seeded_var_builder(&vm1, 1, DType::F32, &Device::Cpu);
        let cfg1 = TeacherConfig { fusion_order: names(&["text", "visual"]), ..cfg.clone() };
        let one = Teacher::new(vb1, &cfg1, &names(&["visual"]), &[64], 3).unwrap();
        assert!(!one.has_fusion());
        let x = Tensor::ones((5, 64), DType::F32, &Device::Cpu).unwrap();
        let out = one.forward(&[x]).unwrap();
        assert!(out.fused_logits.is_none() && out.logits[0].dims() == [5, 3]);
        let y = Tensor::new(&[0u32, 1, 2, 0, 1], &Device::Cpu).unwrap();
        let l = one.label_losses(&out, &y).unwrap();
        assert!(l.fce.is_none());
        assert_eq!(l.total().unwrap().to_scalar::<f32>().unwrap(), l.tce.to_scalar::<f32>().unwrap());
    }

    #[test]
    fn fusion_order_and_shared_classifier() {
        let dev = Device::Cpu;
        let cfg = TeacherConfig { out_dim: 2, teacher_depth: TeacherDepth::Shallow, ..Default::default() };
        let build = |order: &[&str]| {
            let vm = VarMap::new();
            let vb = mmkd_features::seeded_var_builder(&vm, 9, DType::F64, &dev);
            let cfg = TeacherConfig { fusion_order: names(order), ..cfg.clone() };
            Teacher::new(vb, &cfg, &names(&["visual", "text"]), &[3, 3], 2)
        };
        let a = build(&[]).unwrap();
        let b = build(&["visual", "text"]).unwrap();
        let c = build(&["text", "visual"]).unwrap();
        let f = [Tensor::new(&[[1.0f64, 0.0]], &dev).unwrap(), Tensor::new(&[[0.0f64, 1.0]], &dev).unwrap()];
        let za = a.fused_logits(&f).unwrap().unwrap().to_vec2::<f64>().unwrap();
        let zb = b.fused_logits(&f).unwrap().unwrap().to_vec2::<f64>().unwrap();
        let zc = c.fused_logits(&f).unwrap().unwrap().to_vec2::<f64>().unwrap();
        // Same parameters (same seed and keys): only the concatenation order differs.
        assert_eq!(za, zb);
        let swapped = [f[1].clone(), f[0].clone()];
        assert_eq!(zc, a.fused_logits(&swapped).unwrap().unwrap().to_vec2::<f64>().unwrap());
        assert!(build(&["visual"]).is_err());
        assert!(build(&["visual", "visual"]).is_err());
        assert!(build(&["audio", "text"]).is_err());

        let vm = VarMap::new();
        let vb = mmkd_features::seeded_var_builder(&vm, 9, DType::F64, &dev);
        let shared = TeacherConfig { shared_classifier: true, classifier_width: Some(25), ..cfg.clone() };
        let s = Teacher::new(vb, &shared, &names(&["visual", "text"]), &[3, 3], 4).unwrap();
        assert!(vm.data().lock().unwrap().contains_key("classifier.weight"));
        assert_eq!(s.classifier(1).unwrap().n_classes(), 25);
        assert_eq!(vm.data().lock().unwrap()["fusion.classifier.weight"].as_tensor().dims(), &[4, 2]);
    }

    #[test]
    fn detached_teacher_gets_no_gradient() {
        let vm = VarMap::new();
        let vb = mmkd_features::seeded_var_builder(&vm, 2, DType::F32, &Device::Cpu);
        let cfg = TeacherConfig { out_dim: 2, ..Default::default() };
        let t = Teacher::new(vb, &cfg, &names(&["visual", "text"]), &[8, 8], 3).unwrap().detached();
        let x = Tensor::ones((2, 8), DType::F32, &Device::Cpu).unwrap();
        let out = t.forward(&[x.clone(), x]).unwrap();
        let y = Tensor::new(&[0u32, 2], &Device::Cpu).unwrap();
        let loss = t.label_losses(&out, &y).unwrap().total().unwrap();
        let grads = loss.backward().unwrap();
        for var in vm.all_vars() {
            assert!(grads.get(var.as_tensor()).is_none());
        }
    }
}
