//! Helpers for the toolkit's tests (every crate's losses are checked with them). They panic on failure,
//! as test code does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use candle_core::{Tensor, Var};

/// Largest relative gap between candle's gradient of the scalar `f` at `x` and central finite differences
/// with step `eps`: `|num − auto| / max(1, |num|)` over every element of `x`. Use f64 tensors.
pub fn grad_check<E: std::fmt::Debug>(f: impl Fn(&Tensor) -> Result<Tensor, E>, x: &Tensor, eps: f64) -> f64 {
    let var = Var::from_tensor(x).unwrap();
    let grads = f(var.as_tensor()).unwrap().backward().unwrap();
    let auto: Vec<f64> = grads.get(var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let base: Vec<f64> = x.flatten_all().unwrap().to_vec1().unwrap();
    let eval = |v: Vec<f64>| -> f64 {
        let t = Tensor::from_vec(v, x.shape(), x.device()).unwrap();
        f(&t).unwrap().to_scalar::<f64>().unwrap()
    };
    let mut worst = 0f64;
    for i in 0..base.len() {
        let (mut up, mut down) = (base.clone(), base.clone());
        up[i] += eps;
        down[i] -= eps;
        let num = (eval(up) - eval(down)) / (2.0 * eps);
        worst = worst.max((num - auto[i]).abs() / num.abs().max(1.0));
    }
    worst
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn catches_a_wrong_gradient() {
        let x = Tensor::new(&[0.5f64, -1.5, 2.0], &Device::Cpu).unwrap();
        // d/dx Σ x³ = 3x²: candle is right, so the gap is tiny.
        assert!(grad_check(|t| t.powf(3.0)?.sum_all(), &x, 1e-5) < 1e-6);
        // Part of the value is detached from the graph, so its gradient is missing: the check must notice.
        let bad = |t: &Tensor| -> candle_core::Result<Tensor> { t.sqr()?.sum_all()? + t.detach().sum_all()? };
        assert!(grad_check(bad, &x, 1e-5) > 0.1);
    }
}
