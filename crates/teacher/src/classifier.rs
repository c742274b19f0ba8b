//! The per-modality classifier C_m (spec `sgfd.md` §4), shared by the teacher and the student of its
//! modality: one Linear(d → C).

use candle_core::{Module, Tensor, D};
use candle_nn::{Linear, VarBuilder};
use mmkd_features::nn::linear;

use crate::config::TeacherConfig;
use crate::error::Result;
use crate::extractor::detach_linear;

/// `C_m(f) = W f + b`, keys `weight` `(C, d)` and `bias` `(C,)`.
#[derive(Debug, Clone)]
pub struct Classifier {
    linear: Linear,
}

impl Classifier {
    /// A classifier from `cfg.out_dim` features to `n_classes` logits.
    pub fn new(vb: VarBuilder, cfg: &TeacherConfig, n_classes: usize) -> Result<Self> {
        Ok(Self { linear: linear(vb, cfg.out_dim, n_classes, cfg.init)? })
    }

    /// Logits `(b, C)` of features `(b, d)`.
    pub fn logits(&self, features: &Tensor) -> Result<Tensor> {
        Ok(self.linear.forward(features)?)
    }

    /// Tempered probabilities `softmax(C_m(f) / τ)` `(b, C)` of features `(b, d)` (paper Eq. 3 and 9).
    pub fn probs(&self, features: &Tensor, tau: f64) -> Result<Tensor> {
        Ok(candle_nn::ops::softmax(&(self.logits(features)? / tau)?, D::Minus1)?)
    }

    /// Number of classes C.
    pub fn n_classes(&self) -> usize {
        self.linear.weight().dims().first().copied().unwrap_or(0)
    }

    /// The same classifier with constant parameters.
    pub fn detached(&self) -> Self {
        Self { linear: detach_linear(&self.linear) }
    }
}
