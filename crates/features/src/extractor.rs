//! The seam between feature extraction and recommendation: a backbone asks a [`FeatureExtractor`] for item
//! features and receives, with them, any auxiliary losses the extractor wants trained (SGFD's distillation
//! terms). Vanilla backbones use [`Projection`]; SGFD supplies its own extractor in `student-kd`.

use candle_core::{Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::nn::{l2_normalize, linear, Activation, LinearInit};
use crate::store::FeatureStore;

/// Whether the call is part of a training step (auxiliary losses, dropout) or of evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}

/// What an extractor hands back.
#[derive(Debug, Clone)]
pub struct Extracted {
    /// One tensor per modality, in the extractor's modality order, each `(b, out_dim)`.
    pub features: Vec<Tensor>,
    /// Named auxiliary losses, already weighted (e.g. `("kd", λ1·L_KD)`); empty in [`Mode::Eval`].
    pub aux_losses: Vec<(&'static str, Tensor)>,
}

impl Extracted {
    /// Sum of the auxiliary losses, or `None` when there are none.
    pub fn aux_total(&self) -> candle_core::Result<Option<Tensor>> {
        let mut total: Option<Tensor> = None;
        for (_, l) in &self.aux_losses {
            total = Some(match total {
                Some(t) => (t + l)?,
                None => l.clone(),
            });
        }
        Ok(total)
    }
}

/// Turns generic item features into the features a recommender consumes.
///
/// Every method returns this crate's [`crate::Error`]: candle's errors as [`crate::Error::Candle`], and an
/// implementation's own typed error as the source of [`crate::Error::Extractor`] (see
/// [`crate::Error::extractor`]), so a caller can still tell what went wrong.
pub trait FeatureExtractor {
    /// Features of `items` (u32 tensor `(b,)`; `None` = every item in order) for each modality:
    /// `(b, out_dim)`, plus named, already-weighted auxiliary losses (only in [`Mode::Train`]).
    fn extract(&self, items: Option<&Tensor>, mode: Mode) -> Result<Extracted>;
    /// Width of every modality's output features.
    fn out_dim(&self) -> usize;
    /// Modality names, in the order of [`Extracted::features`].
    fn modalities(&self) -> &[String];
    /// Called by the trainer before each epoch (e.g. for schedules); does nothing by default.
    fn on_epoch_start(&mut self, _epoch: usize) -> Result<()> {
        Ok(())
    }
    /// The auxiliary losses of a training step on the rows `items`, when the backbone already holds this
    /// step's features of *every* item (`all`, what `extract(None, Mode::Train)` returned). The default
    /// recomputes the rows (`extract(Some(items), Mode::Train)`); an extractor whose losses see the features
    /// only through those rows gathers them from `all` instead: the same values and gradients, one forward
    /// pass fewer.
    fn aux_losses_given(&self, items: &Tensor, all: &[Tensor]) -> Result<Vec<(&'static str, Tensor)>> {
        let _ = all;
        Ok(self.extract(Some(items), Mode::Train)?.aux_losses)
    }
}

/// Configuration of the vanilla extractor: one linear layer per modality, as the backbones' original code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProjectionConfig {
    /// Output width d (the backbones' `dim_C` / `embedding_size` / `embed_dim`).
    pub out_dim: usize,
    /// Activation after the layer.
    pub activation: Activation,
    /// Row-wise L2 normalisation of the output (PyTorch epsilon 1e-12).
    pub l2_normalize: bool,
    /// Parameter initialisation.
    pub init: LinearInit,
}

impl Default for ProjectionConfig {
    fn default() -> Self {
        Self { out_dim: 128, activation: Activation::Identity, l2_normalize: false, init: LinearInit::Torch }
    }
}

/// The vanilla extractor: `act(W_m F_m + b_m)`, optionally L2-normalised, per modality.
#[derive(Debug)]
pub struct Projection {
    names: Vec<String>,
    inputs: Vec<Tensor>,
    layers: Vec<Linear>,
    cfg: ProjectionConfig,
}

impl Projection {
    /// Builds one layer per modality of `features` under `vb.pp(<modality>)`; the generic features are moved
    /// to `device` once.
    pub fn new(vb: VarBuilder, cfg: &ProjectionConfig, features: &FeatureStore, device: &Device) -> Result<Self> {
        let mut names = Vec::new();
        let mut inputs = Vec::new();
        let mut layers = Vec::new();
        for (name, dim) in features.names().into_iter().zip(features.dims()) {
            inputs.push(features.tensor(name, device)?);
            layers.push(linear(vb.pp(name), dim, cfg.out_dim, cfg.init)?);
            names.push(name.to_owned());
        }
        Ok(Self { names, inputs, layers, cfg: cfg.clone() })
    }
}

/// Rows `items` of `x`, or all of `x`.
pub fn select_rows(x: &Tensor, items: Option<&Tensor>) -> candle_core::Result<Tensor> {
    match items {
        Some(idx) => x.index_select(idx, 0),
        None => Ok(x.clone()),
    }
}

impl FeatureExtractor for Projection {
    fn extract(&self, items: Option<&Tensor>, _mode: Mode) -> Result<Extracted> {
        let mut features = Vec::with_capacity(self.layers.len());
        for (x, layer) in self.inputs.iter().zip(&self.layers) {
            let h = self.cfg.activation.apply(&layer.forward(&select_rows(x, items)?)?)?; // (b, d)
            features.push(if self.cfg.l2_normalize { l2_normalize(&h, 1e-12)? } else { h });
        }
        Ok(Extracted { features, aux_losses: Vec::new() })
    }

    fn out_dim(&self) -> usize {
        self.cfg.out_dim
    }

    fn modalities(&self) -> &[String] {
        &self.names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::FeatureMatrix;
    use candle_core::DType;
    use candle_nn::VarMap;
    use std::path::Path;

    #[test]
    fn projection_matches_a_hand_computed_layer() {
        let mut store = FeatureStore::new(3);
        store
            .insert("visual", FeatureMatrix::new(3, 2, vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0]).unwrap(), Path::new("v"))
            .unwrap();
        store.insert("text", FeatureMatrix::new(3, 1, vec![1.0, 2.0, 3.0]).unwrap(), Path::new("t")).unwrap();
        let vm = VarMap::new();
        let vb = crate::init::seeded_var_builder(&vm, 3, DType::F32, &Device::Cpu);
        let cfg =
            ProjectionConfig { out_dim: 2, activation: Activation::Relu, l2_normalize: true, ..Default::default() };
        let p = Projection::new(vb, &cfg, &store, &Device::Cpu).unwrap();
        assert_eq!(p.modalities(), &["visual".to_string(), "text".to_string()]);
        let items = Tensor::new(&[2u32, 0], &Device::Cpu).unwrap();
        let out = p.extract(Some(&items), Mode::Train).unwrap();
        assert!(out.aux_losses.is_empty() && out.aux_total().unwrap().is_none());

        let data = vm.data().lock().unwrap();
        let w = data["visual.weight"].as_tensor().to_vec2::<f32>().unwrap();
        let b = data["visual.bias"].as_tensor().to_vec1::<f32>().unwrap();
        let x = [[1.0f32, 1.0], [1.0, 0.0]];
        let got = out.features[0].to_vec2::<f32>().unwrap();
        for (r, xr) in x.iter().enumerate() {
            let h: Vec<f32> = (0..2).map(|j| (w[j][0] * xr[0] + w[j][1] * xr[1] + b[j]).max(0.0)).collect();
            let n = h.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            for j in 0..2 {
                assert!((got[r][j] - h[j] / n).abs() < 1e-6);
            }
        }
        assert_eq!(p.extract(None, Mode::Eval).unwrap().features[1].dims(), &[3, 2]);
        let out_of_range = Tensor::new(&[3u32], &Device::Cpu).unwrap();
        assert!(matches!(p.extract(Some(&out_of_range), Mode::Eval), Err(crate::Error::Candle(_))));
    }

    /// An implementor's own error type, as `mmkd_student_kd::Error` is for `Sgfd`.
    #[derive(Debug, thiserror::Error)]
    #[error("schedule has no epoch {0}")]
    struct ScheduleError(usize);

    /// Fails in `on_epoch_start` with its own typed error.
    #[derive(Debug)]
    struct Failing;

    impl FeatureExtractor for Failing {
        fn extract(&self, _items: Option<&Tensor>, _mode: Mode) -> Result<Extracted> {
            Ok(Extracted { features: Vec::new(), aux_losses: Vec::new() })
        }
        fn out_dim(&self) -> usize {
            1
        }
        fn modalities(&self) -> &[String] {
            &[]
        }
        fn on_epoch_start(&mut self, epoch: usize) -> Result<()> {
            Err(crate::Error::extractor(ScheduleError(epoch)))
        }
    }

    #[test]
    fn an_implementors_error_is_the_typed_source() {
        let mut boxed: Box<dyn FeatureExtractor> = Box::new(Failing);
        let err = boxed.on_epoch_start(7).unwrap_err();
        assert_eq!(err.to_string(), "the feature extractor failed");
        let source = std::error::Error::source(&err).expect("a source");
        assert_eq!(source.downcast_ref::<ScheduleError>().map(|e| e.0), Some(7));
        assert_eq!(source.to_string(), "schedule has no epoch 7");
    }
}
