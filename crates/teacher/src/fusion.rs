//! The fusion layer and its classifier C_f (spec `sgfd.md` §6, reference `feature_fusion/FeatureFusionModel.py`):
//! `logits = C_f(act(W_u [f_1^t ; … ; f_M^t] + b_u))`.

use candle_core::{Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use mmkd_features::nn::linear;
use mmkd_features::Activation;

use crate::config::TeacherConfig;
use crate::error::{Error, Result};
use crate::extractor::detach_linear;

/// Keys `transfer.{weight,bias}` (M·d → d) and `classifier.{weight,bias}` (d → C).
#[derive(Debug, Clone)]
pub struct Fusion {
    transfer: Linear,
    classifier: Linear,
    activation: Activation,
    n_inputs: usize,
    dim: usize,
}

impl Fusion {
    /// Fuses `n_inputs` teacher features of width `cfg.out_dim` into `n_classes` logits.
    pub fn new(vb: VarBuilder, cfg: &TeacherConfig, n_inputs: usize, n_classes: usize) -> Result<Self> {
        let d = cfg.out_dim;
        let transfer = linear(vb.pp("transfer"), n_inputs * d, d, cfg.init)?;
        let classifier = linear(vb.pp("classifier"), d, n_classes, cfg.init)?;
        Ok(Self { transfer, classifier, activation: cfg.fusion_act, n_inputs, dim: d })
    }

    /// Fusion logits `(b, C)` of teacher features, one `(b, d)` per modality in fusion order.
    pub fn logits(&self, features: &[Tensor]) -> Result<Tensor> {
        if features.len() != self.n_inputs {
            return Err(Error::shape("fusion inputs", format!("{} modalities", self.n_inputs), features.len()));
        }
        for f in features {
            if f.rank() != 2 || f.dim(1)? != self.dim {
                return Err(Error::shape("fusion input", format!("(b, {})", self.dim), f.dims()));
            }
        }
        let cat = Tensor::cat(features, 1)?; // (b, M·d)
        let g = self.activation.apply(&self.transfer.forward(&cat)?)?; // (b, d)
        Ok(self.classifier.forward(&g)?) // (b, C)
    }

    /// The same fusion with constant parameters.
    pub fn detached(&self) -> Self {
        Self { transfer: detach_linear(&self.transfer), classifier: detach_linear(&self.classifier), ..self.clone() }
    }
}
