//! Small building blocks shared by every extractor: the two reference initialisations of a linear layer,
//! activations, and row-wise L2 normalisation with the reference libraries' epsilons.

use candle_core::{Result, Tensor, D};
use candle_nn::{Init, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

/// Element-wise activation applied after a layer.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "slope")]
pub enum Activation {
    /// No activation.
    #[default]
    Identity,
    /// max(x, 0).
    Relu,
    /// x if x ≥ 0 else slope·x (PyTorch default slope 0.01, TensorFlow 0.2).
    LeakyRelu(f64),
    /// tanh(x).
    Tanh,
}

impl Activation {
    /// Applies the activation.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Identity => Ok(x.clone()),
            Self::Relu => x.relu(),
            Self::LeakyRelu(slope) => candle_nn::ops::leaky_relu(x, *slope),
            Self::Tanh => x.tanh(),
        }
    }
}

/// How a linear layer's parameters are initialised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinearInit {
    /// PyTorch `nn.Linear`: W, b ~ U(−1/√fan_in, 1/√fan_in).
    #[default]
    Torch,
    /// Keras `Dense`: W ~ Glorot-uniform U(±√(6/(fan_in + fan_out))), b = 0.
    Glorot,
}

/// A linear layer `in_dim → out_dim` with keys `weight` (out, in) and `bias` (out,).
pub fn linear(vb: VarBuilder, in_dim: usize, out_dim: usize, init: LinearInit) -> Result<Linear> {
    let (w_init, b_init) = match init {
        LinearInit::Torch => {
            let bound = 1.0 / (in_dim as f64).sqrt();
            (Init::Uniform { lo: -bound, up: bound }, Init::Uniform { lo: -bound, up: bound })
        }
        LinearInit::Glorot => {
            let bound = (6.0 / (in_dim + out_dim) as f64).sqrt();
            (Init::Uniform { lo: -bound, up: bound }, Init::Const(0.0))
        }
    };
    let weight = vb.get_with_hints((out_dim, in_dim), "weight", w_init)?;
    let bias = vb.get_with_hints(out_dim, "bias", b_init)?;
    Ok(Linear::new(weight, Some(bias)))
}

/// Row-wise `x / max(‖x‖₂, eps)` over the last dimension (PyTorch `F.normalize`: eps = 1e-12).
pub fn l2_normalize(x: &Tensor, eps: f64) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(eps, f64::INFINITY)?;
    x.broadcast_div(&norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Module};
    use candle_nn::VarMap;

    #[test]
    fn activations_and_normalisation() {
        let x = Tensor::new(&[[-2.0f32, 3.0], [0.0, 0.0]], &Device::Cpu).unwrap();
        assert_eq!(Activation::LeakyRelu(0.2).apply(&x).unwrap().to_vec2::<f32>().unwrap()[0], vec![-0.4, 3.0]);
        assert_eq!(Activation::Relu.apply(&x).unwrap().to_vec2::<f32>().unwrap()[0], vec![0.0, 3.0]);
        let n = l2_normalize(&Tensor::new(&[[3.0f32, -4.0], [0.0, 0.0]], &Device::Cpu).unwrap(), 1e-12).unwrap();
        assert_eq!(n.to_vec2::<f32>().unwrap(), vec![vec![0.6, -0.8], vec![0.0, 0.0]]);
    }

    #[test]
    fn linear_inits_respect_their_bounds() {
        let vm = VarMap::new();
        let vb = crate::init::seeded_var_builder(&vm, 1, DType::F32, &Device::Cpu);
        let l = linear(vb.pp("torch"), 16, 4, LinearInit::Torch).unwrap();
        let w: Vec<f32> = l.weight().flatten_all().unwrap().to_vec1().unwrap();
        assert!(w.iter().all(|v| v.abs() <= 0.25) && w.iter().any(|v| v.abs() > 0.15));
        let g = linear(vb.pp("glorot"), 16, 4, LinearInit::Glorot).unwrap();
        let b: Vec<f32> = g.bias().unwrap().to_vec1().unwrap();
        assert_eq!(b, vec![0.0; 4]);
        let y = g.forward(&Tensor::ones((2, 16), DType::F32, &Device::Cpu).unwrap()).unwrap();
        assert_eq!(y.dims(), &[2, 4]);
    }
}
