//! The student extractor S_m (spec `sgfd.md` §3), the "shallow NN" that replaces the backbone's original
//! extractor: `S(x) = l2n(act(W x + b))` (PyTorch reference) or `act(W x + b)` (TensorFlow), with the same
//! activation and normalisation switches as the teacher. Teacher and student share no weights.

use candle_core::{Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use mmkd_features::nn::{l2_normalize, linear};
use mmkd_features::Activation;

use crate::config::SgfdConfig;
use crate::error::{Error, Result};

/// One Linear(D → d), keys `weight` `(d, D)` and `bias` `(d,)`.
#[derive(Debug, Clone)]
pub struct Student {
    layer: Linear,
    activation: Activation,
    l2_normalize: bool,
    in_dim: usize,
}

impl Student {
    /// A student for generic features of width `in_dim`, output width `cfg.out_dim`.
    pub fn new(vb: VarBuilder, cfg: &SgfdConfig, in_dim: usize) -> Result<Self> {
        if in_dim == 0 || cfg.out_dim == 0 {
            return Err(Error::Config(format!(
                "student widths must be positive, got D = {in_dim}, d = {}",
                cfg.out_dim
            )));
        }
        let layer = linear(vb, in_dim, cfg.out_dim, cfg.init)?;
        Ok(Self { layer, activation: cfg.extractor_act, l2_normalize: cfg.extractor_l2norm, in_dim })
    }

    /// Student features of `x` `(b, D)` → `(b, d)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.rank() != 2 || x.dim(1)? != self.in_dim {
            return Err(Error::shape("student input", format!("(b, {})", self.in_dim), x.dims()));
        }
        let h = self.activation.apply(&self.layer.forward(x)?)?; // (b, d)
        Ok(if self.l2_normalize { l2_normalize(&h, 1e-12)? } else { h })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn student_is_one_layer_then_act_then_l2() {
        let vm = VarMap::new();
        let vb = mmkd_features::seeded_var_builder(&vm, 3, DType::F64, &Device::Cpu);
        let cfg = SgfdConfig { out_dim: 2, extractor_act: Activation::LeakyRelu(0.01), ..Default::default() };
        let s = Student::new(vb.pp("student").pp("visual"), &cfg, 3).unwrap();
        let x = Tensor::new(&[[1.0f64, -2.0, 0.5]], &Device::Cpu).unwrap();
        let got = s.forward(&x).unwrap().to_vec2::<f64>().unwrap();
        let data = vm.data().lock().unwrap();
        let w = data["student.visual.weight"].as_tensor().to_vec2::<f64>().unwrap();
        let b = data["student.visual.bias"].as_tensor().to_vec1::<f64>().unwrap();
        let h: Vec<f64> = (0..2)
            .map(|j| w[j][0] - 2.0 * w[j][1] + 0.5 * w[j][2] + b[j])
            .map(|v| if v >= 0.0 { v } else { 0.01 * v })
            .collect();
        let n = (h[0] * h[0] + h[1] * h[1]).sqrt();
        assert!((got[0][0] - h[0] / n).abs() < 1e-12 && (got[0][1] - h[1] / n).abs() < 1e-12);
        assert_eq!(data.len(), 2);
        assert!(s.forward(&Tensor::zeros((1, 4), DType::F64, &Device::Cpu).unwrap()).is_err());
    }
}
