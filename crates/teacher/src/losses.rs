//! Label losses of the teacher (spec `sgfd.md` §5–6): L_TCE per modality in the paper's form (CE on
//! logits) and the reference's form (CE on probabilities, a double softmax), and L_FCE of the fusion
//! classifier. Weights (λ2) and the average over modalities are applied by the caller.

use candle_core::{DType, Tensor, D};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How a per-row loss vector `(b,)` becomes a scalar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reduction {
    /// Mean over rows (PyTorch reference).
    #[default]
    Mean,
    /// Sum over rows (TensorFlow reference).
    Sum,
}

/// Reduces a per-row loss `(b,)` to a scalar.
pub fn reduce_rows(rows: &Tensor, reduction: Reduction) -> Result<Tensor> {
    if rows.rank() != 1 {
        return Err(Error::shape("per-row loss", "(b,)", rows.dims()));
    }
    Ok(match reduction {
        Reduction::Mean => rows.mean(0)?,
        Reduction::Sum => rows.sum(0)?,
    })
}

/// Mean of equally shaped loss terms (e.g. one per modality); an error when `terms` is empty.
pub fn average(terms: &[Tensor]) -> Result<Tensor> {
    if terms.is_empty() {
        return Err(Error::Mismatch("cannot average an empty list of loss terms".into()));
    }
    Ok(Tensor::stack(terms, 0)?.mean(0)?)
}

/// Sum of equally shaped loss terms; an error when `terms` is empty.
pub fn total(terms: &[Tensor]) -> Result<Tensor> {
    if terms.is_empty() {
        return Err(Error::Mismatch("cannot sum an empty list of loss terms".into()));
    }
    Ok(Tensor::stack(terms, 0)?.sum(0)?)
}

/// One-hot rows `(b, n_classes)` of `labels` (u32, `(b,)`) in `dtype`. A label ≥ `n_classes` gives an
/// all-zero row, as TensorFlow's `one_hot` does.
pub fn one_hot(labels: &Tensor, n_classes: usize, dtype: DType) -> Result<Tensor> {
    if labels.rank() != 1 || labels.dtype() != DType::U32 {
        return Err(Error::shape("labels", "u32 (b,)", (labels.dims(), labels.dtype())));
    }
    let classes = Tensor::arange(0u32, n_classes as u32, labels.device())?.unsqueeze(0)?; // (1, C)
    Ok(labels.unsqueeze(1)?.broadcast_eq(&classes)?.to_dtype(dtype)?) // (b, C)
}

fn check_logits(what: &'static str, logits: &Tensor, labels: &Tensor) -> Result<(usize, usize)> {
    let (b, c) = logits.dims2().map_err(|_| Error::shape(what, "(b, C)", logits.dims()))?;
    if labels.dims() != [b] || labels.dtype() != DType::U32 {
        return Err(Error::shape("labels", format!("u32 ({b},)"), (labels.dims(), labels.dtype())));
    }
    Ok((b, c))
}

/// Cross-entropy of each row, `−Σ_c y_c log softmax(z)_c`: logits `(b, C)`, labels u32 `(b,)` → `(b,)`.
pub fn cross_entropy_rows(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let (_, c) = check_logits("logits", logits, labels)?;
    let y = one_hot(labels, c, logits.dtype())?; // (b, C)
    let log_p = candle_nn::ops::log_softmax(logits, D::Minus1)?; // (b, C)
    Ok((y * log_p)?.sum(1)?.neg()?)
}

/// Cross-entropy on logits `(b, C)` with labels u32 `(b,)`, reduced over rows → scalar.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor, reduction: Reduction) -> Result<Tensor> {
    reduce_rows(&cross_entropy_rows(logits, labels)?, reduction)
}

/// L_TCE of one modality from the teacher's logits `(b, C)` (τ = 1) and labels u32 `(b,)` → scalar.
///
/// `on_probs = false` is the paper's Eq. 4, `CE(softmax(z), y) = −log softmax(z)_y`. `on_probs = true` is
/// the reference: the library cross-entropy (which applies log-softmax itself) is fed `p = softmax(z)`, so
/// each row costs `log Σ_c exp(p_c) − p_y`, which lies in `[log(e + C − 1) − 1, log(e + C − 1)]`.
pub fn tce(logits: &Tensor, labels: &Tensor, on_probs: bool, reduction: Reduction) -> Result<Tensor> {
    check_logits("teacher logits", logits, labels)?;
    if on_probs {
        let p = candle_nn::ops::softmax(logits, D::Minus1)?; // (b, C)
        cross_entropy(&p, labels, reduction)
    } else {
        cross_entropy(logits, labels, reduction)
    }
}

/// L_FCE: cross-entropy of the fusion classifier's logits `(b, C)` (τ = 1, as both references; the
/// paper's Eq. 6 writes C_f(·; τ)) with labels u32 `(b,)` → scalar.
pub fn fce(fused_logits: &Tensor, labels: &Tensor, reduction: Reduction) -> Result<Tensor> {
    check_logits("fusion logits", fused_logits, labels)?;
    cross_entropy(fused_logits, labels, reduction)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::Device;

    use mmkd_features::testing::grad_check;

    fn close(got: &Tensor, want: f64) {
        let got = got.to_scalar::<f64>().unwrap();
        assert!((got - want).abs() < 1e-9, "got {got}, want {want}");
    }

    fn fixture() -> (Tensor, Tensor) {
        let z = Tensor::new(&[[1.0f64, 2.0, 0.0], [0.0, 0.0, 0.0]], &Device::Cpu).unwrap();
        let y = Tensor::new(&[1u32, 2], &Device::Cpu).unwrap();
        (z, y)
    }

    #[test]
    fn tce_paper_form_is_ce_on_logits() {
        let (z, y) = fixture();
        // Row 0: log(e¹ + e² + e⁰) − 2 = log(11.107338) − 2 = 0.4076060.
        // Row 1: log(3) − 0 = 1.0986123. Mean 0.7531091.
        close(&tce(&z, &y, false, Reduction::Mean).unwrap(), 0.753109126556245);
        close(&cross_entropy(&z, &y, Reduction::Sum).unwrap(), 0.40760596444438013 + 1.0986122886681098);
        close(&fce(&z, &y, Reduction::Mean).unwrap(), 0.753109126556245);
    }

    #[test]
    fn tce_reference_form_is_a_double_softmax() {
        let (z, y) = fixture();
        // Row 0: p = softmax(1, 2, 0) = (0.2447285, 0.6652410, 0.0900306);
        //   log(e^0.2447285 + e^0.6652410 + e^0.0900306) − 0.6652410 = log(4.316439) − 0.665241 = 0.7971903.
        // Row 1: p = (1/3, 1/3, 1/3): log(3·e^(1/3)) − 1/3 = log 3 = 1.0986123. Mean 0.9479013, sum 1.8958026.
        close(&tce(&z, &y, true, Reduction::Mean).unwrap(), 0.9479013112260489);
        close(&tce(&z, &y, true, Reduction::Sum).unwrap(), 1.8958026224520979);
        // The double softmax is bounded: for C = 54, [log(e + 53) − 1, log(e + 53)] = [3.020, 4.020].
        let wide = Tensor::zeros((1, 54), DType::F64, &Device::Cpu).unwrap();
        let v = tce(&wide, &Tensor::new(&[0u32], &Device::Cpu).unwrap(), true, Reduction::Mean).unwrap();
        assert!((3.020..4.021).contains(&v.to_scalar::<f64>().unwrap()));
    }

    #[test]
    fn labels_beyond_the_classifier_width_cost_nothing() {
        let (z, _) = fixture();
        // The TensorFlow reference one-hots label 25 of a 25-wide classifier to a zero row: CE 0.
        let y = Tensor::new(&[1u32, 7], &Device::Cpu).unwrap();
        close(&cross_entropy(&z, &y, Reduction::Sum).unwrap(), 0.40760596444438013);
        assert_eq!(one_hot(&y, 3, DType::F32).unwrap().to_vec2::<f32>().unwrap(), vec![vec![0., 1., 0.], vec![0.; 3]]);
    }

    #[test]
    fn shapes_are_checked() {
        let (z, y) = fixture();
        assert!(tce(&z.flatten_all().unwrap(), &y, true, Reduction::Mean).is_err());
        assert!(tce(&z, &Tensor::new(&[1u32, 2, 0], &Device::Cpu).unwrap(), true, Reduction::Mean).is_err());
        assert!(fce(&z, &y.to_dtype(DType::F64).unwrap(), Reduction::Mean).is_err());
        assert!(reduce_rows(&z, Reduction::Mean).is_err());
        assert!(average(&[]).is_err());
    }

    #[test]
    fn gradients_match_finite_differences() {
        let (_, y) = fixture();
        let z = Tensor::new(&[[0.3f64, -1.2, 0.7], [1.5, 0.2, -0.4]], &Device::Cpu).unwrap();
        for on_probs in [false, true] {
            for reduction in [Reduction::Mean, Reduction::Sum] {
                let gap = grad_check(|x| tce(x, &y, on_probs, reduction), &z, 1e-5);
                assert!(gap < 1e-7, "tce on_probs={on_probs} {reduction:?}: {gap}");
            }
        }
        assert!(grad_check(|x| fce(x, &y, Reduction::Mean), &z, 1e-5) < 1e-7);
    }
}
