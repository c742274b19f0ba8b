//! The deep teacher extractor T_m (spec `sgfd.md` §2): a stack of affine layers with no activation between
//! them (as in the reference), then an optional activation and an optional row-wise L2 normalisation.

use candle_core::{Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use mmkd_features::nn::{l2_normalize, linear};
use mmkd_features::Activation;

use crate::config::TeacherConfig;
use crate::error::{Error, Result};
use crate::widths::layer_widths;

/// `T(x) = l2n(act(L_k(… L_1(x))))`, keys `layers.{i}.weight` `(w[i+1], w[i])` and `layers.{i}.bias`.
#[derive(Debug, Clone)]
pub struct DeepExtractor {
    layers: Vec<Linear>,
    widths: Vec<usize>,
    activation: Activation,
    l2_normalize: bool,
}

impl DeepExtractor {
    /// Builds the layers for input width `in_dim` under `cfg.teacher_depth`, output width `cfg.out_dim`.
    pub fn new(vb: VarBuilder, cfg: &TeacherConfig, in_dim: usize) -> Result<Self> {
        let widths = layer_widths(cfg.teacher_depth, in_dim, cfg.out_dim)?;
        let vb = vb.pp("layers");
        let layers = widths
            .windows(2)
            .enumerate()
            .map(|(i, w)| linear(vb.pp(i.to_string()), w[0], w[1], cfg.init))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self { layers, widths, activation: cfg.extractor_act, l2_normalize: cfg.extractor_l2norm })
    }

    /// Teacher features of `x` `(b, D)` → `(b, d)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let d_in = self.widths.first().copied().unwrap_or(0);
        if x.rank() != 2 || x.dim(1)? != d_in {
            return Err(Error::shape("teacher extractor input", format!("(b, {d_in})"), x.dims()));
        }
        let mut h = x.clone();
        for layer in &self.layers {
            h = layer.forward(&h)?; // (b, w[i+1])
        }
        let h = self.activation.apply(&h)?;
        Ok(if self.l2_normalize { l2_normalize(&h, 1e-12)? } else { h })
    }

    /// Widths `[D, …, d]`.
    pub fn widths(&self) -> &[usize] {
        &self.widths
    }

    /// The same extractor with every parameter detached from the autograd graph (a frozen teacher).
    pub fn detached(&self) -> Self {
        Self { layers: self.layers.iter().map(detach_linear).collect(), ..self.clone() }
    }
}

/// A copy of `layer` whose weight and bias are constants.
pub fn detach_linear(layer: &Linear) -> Linear {
    Linear::new(layer.weight().detach(), layer.bias().map(Tensor::detach))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::widths::TeacherDepth;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn forward_is_the_product_of_affine_maps_then_act_then_l2() {
        let vm = VarMap::new();
        let vb = mmkd_features::seeded_var_builder(&vm, 5, DType::F64, &Device::Cpu);
        let cfg = TeacherConfig {
            out_dim: 2,
            teacher_depth: TeacherDepth::Deep { ratio: 2 },
            extractor_act: Activation::LeakyRelu(0.2),
            ..Default::default()
        };
        let t = DeepExtractor::new(vb.pp("visual"), &cfg, 8).unwrap();
        assert_eq!(t.widths(), &[8, 4, 2]);
        let mut keys: Vec<String> = vm.data().lock().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            ["visual.layers.0.bias", "visual.layers.0.weight", "visual.layers.1.bias", "visual.layers.1.weight"]
        );

        let x: Vec<f64> = (0..16).map(|i| (i as f64 * 0.37).sin()).collect();
        let xt = Tensor::from_vec(x.clone(), (2, 8), &Device::Cpu).unwrap();
        let got = t.forward(&xt).unwrap().to_vec2::<f64>().unwrap();
        let data = vm.data().lock().unwrap();
        let get2 = |k: &str| data[k].as_tensor().to_vec2::<f64>().unwrap();
        let get1 = |k: &str| data[k].as_tensor().to_vec1::<f64>().unwrap();
        let (w0, b0, w1, b1) = (
            get2("visual.layers.0.weight"),
            get1("visual.layers.0.bias"),
            get2("visual.layers.1.weight"),
            get1("visual.layers.1.bias"),
        );
        for r in 0..2 {
            let h0: Vec<f64> = (0..4).map(|j| (0..8).map(|k| w0[j][k] * x[r * 8 + k]).sum::<f64>() + b0[j]).collect();
            let h1: Vec<f64> = (0..2).map(|j| (0..4).map(|k| w1[j][k] * h0[k]).sum::<f64>() + b1[j]).collect();
            let a: Vec<f64> = h1.iter().map(|v| if *v >= 0.0 { *v } else { 0.2 * v }).collect();
            let n = a.iter().map(|v| v * v).sum::<f64>().sqrt();
            for j in 0..2 {
                assert!((got[r][j] - a[j] / n).abs() < 1e-12);
            }
        }
        assert!(t.forward(&Tensor::zeros((2, 7), DType::F64, &Device::Cpu).unwrap()).is_err());
    }
}
