//! The losses and regularisers several models share, one of each: BPR, the feature-alignment cosine, the
//! embedding regularisers of the references (squared-half or plain Frobenius norms), CML's covariance
//! regulariser and unit-ball clipping, and two dropouts: [`dropout`] draws one mask entry per element (the
//! `nn.Dropout` of NGCF and NeuMF), [`dropout_rows`] one mask row per distinct id of a batch (BM3, which
//! indexes a mask drawn over the whole table). They are separate on purpose: they consume the random stream
//! differently, and each reproduces its reference's distribution.
//!
//! Every function checks its shapes first and applies no weight: the caller multiplies by its own.

use candle_core::{Device, Tensor, D};
use rand::{Rng, RngCore};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// PyTorch's `F.cosine_similarity` epsilon.
const COSINE_EPS: f64 = 1e-8;

/// `mean_b softplus(−diff_b)` = `−mean_b log σ(diff_b)`, computed as `relu(−x) + log(1 + e^{−|x|})`;
/// `diff`: `(b,)` score differences `s(u, i) − s(u, j)`.
pub fn bpr_loss(diff: &Tensor) -> Result<Tensor> {
    if diff.rank() != 1 {
        return Err(Error::Shape(format!("bpr_loss: expected (b,), got {:?}", diff.dims())));
    }
    let softplus = (diff.neg()?.relu()? + (diff.abs()?.neg()?.exp()? + 1.0)?.log()?)?; // (b,)
    Ok(softplus.mean_all()?)
}

/// `1 − mean_k cos(a_k, b_k)` over the rows of `a`, `b`: `(n, d)` each, `n ≥ 1`. The cosine is PyTorch's
/// `F.cosine_similarity(a, b, dim=-1, eps=1e-8)`: `⟨a_k / max(‖a_k‖, eps), b_k / max(‖b_k‖, eps)⟩`.
pub fn cosine_alignment_loss(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.rank() != 2 || a.dims() != b.dims() || a.dim(0)? == 0 {
        return Err(Error::Shape(format!(
            "expected two non-empty (n, d) tensors, got {:?} and {:?}",
            a.dims(),
            b.dims()
        )));
    }
    let unit = |x: &Tensor| -> candle_core::Result<Tensor> {
        let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(COSINE_EPS, f64::INFINITY)?; // (n, 1)
        x.broadcast_div(&norm)
    };
    let cos = (unit(a)? * unit(b)?)?.sum(D::Minus1)?; // (n,)
    Ok(cos.mean_all()?.affine(-1.0, 1.0)?)
}

/// Inverted dropout (`F.dropout(x, p)`, training mode) of the rows `x` `(b, d)`, where row `k` belongs to
/// `ids[k]`: each distinct id gets one mask row (drawn from `rng` in ascending id order, each entry kept with
/// probability `1 − p` and scaled by `1/(1 − p)`), shared by all its rows, as when a mask over the full
/// matrix is indexed. `p = 0` returns `x` unchanged and draws nothing.
pub fn dropout_rows(x: &Tensor, ids: &[u32], p: f64, rng: &mut ChaCha8Rng) -> Result<Tensor> {
    let (b, d) = x.dims2()?;
    if ids.len() != b {
        return Err(Error::Shape(format!("dropout_rows: {} ids for {b} rows", ids.len())));
    }
    if !(0.0..1.0).contains(&p) {
        return Err(Error::Config(format!("dropout_rows: p must lie in [0, 1), got {p}")));
    }
    if p == 0.0 {
        return Ok(x.clone());
    }
    let mut distinct = ids.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    let keep = (1.0 / (1.0 - p)) as f32;
    let masks: Vec<f32> = (0..distinct.len() * d).map(|_| if rng.random::<f64>() < p { 0.0 } else { keep }).collect();
    let mut mask = Vec::with_capacity(b * d);
    for id in ids {
        let k = distinct.partition_point(|v| v < id);
        mask.extend_from_slice(&masks[k * d..(k + 1) * d]);
    }
    let mask = Tensor::from_vec(mask, (b, d), x.device())?.to_dtype(x.dtype())?; // (b, d)
    Ok((x * mask)?)
}

/// Inverted dropout (`nn.Dropout` in training mode): each entry is kept with probability `1 − p` and scaled
/// by `1/(1 − p)`. The mask is drawn from `rng` (one `u32` per entry, row-major); `p = 0` returns `x` and
/// draws nothing. Errors if `p` is outside `[0, 1)`.
pub fn dropout(x: &Tensor, p: f64, rng: &mut ChaCha8Rng) -> Result<Tensor> {
    if !(0.0..1.0).contains(&p) {
        return Err(Error::Config(format!("dropout: p must lie in [0, 1), got {p}")));
    }
    if p == 0.0 {
        return Ok(x.clone());
    }
    // An entry is dropped when its draw falls below p·2³², so P(drop) = p up to 2⁻³².
    let threshold = (p * 4_294_967_296.0) as u64;
    let keep = (1.0 / (1.0 - p)) as f32;
    let mask: Vec<f32> =
        (0..x.elem_count()).map(|_| if u64::from(rng.next_u32()) < threshold { 0.0 } else { keep }).collect();
    let mask = Tensor::from_vec(mask, x.shape(), &Device::Cpu)?.to_dtype(x.dtype())?.to_device(x.device())?;
    Ok((x * mask)?)
}

/// The two embedding-L2 conventions of the references (spec §0), both on a batch's gathered rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegForm {
    /// `Σ_X ½‖X‖_F² / B` (TensorFlow `l2_loss`, the official NGCF and DGCF codes).
    #[default]
    HalfSq,
    /// `Σ_X ‖X‖_F / B`, Frobenius norms not squared (RecBole `EmbLoss` with `require_pow=False`).
    Norm,
}

/// The embedding regulariser of `rows` (each `(B, ·)`) in `form`, divided by `batch` = B. Unweighted.
pub fn emb_reg(rows: &[&Tensor], form: RegForm, batch: usize) -> Result<Tensor> {
    let Some(first) = rows.first() else {
        return Err(Error::Shape("emb_reg: no tensor given".into()));
    };
    if batch == 0 {
        return Err(Error::Shape("emb_reg: the batch size must be at least 1".into()));
    }
    let mut sum = Tensor::zeros((), first.dtype(), first.device())?;
    for x in rows {
        let sq = x.sqr()?.sum_all()?;
        let term = match form {
            RegForm::HalfSq => sq.affine(0.5, 0.0)?,
            RegForm::Norm => sq.sqrt()?,
        };
        sum = (sum + term)?;
    }
    Ok(sum.affine(1.0 / batch as f64, 0.0)?)
}

/// Which covariance regulariser CML adds (when `use_cov_loss`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CovForm {
    /// Official code: `Σ_{a≠b} C_ab`, the signed sum of the off-diagonal covariances.
    #[default]
    OffdiagSum,
    /// Paper: `(‖C‖_F − ‖diag C‖₂²) / N`.
    Paper,
}

/// The covariance regulariser of the rows of `y` `(N, d)` (all users and items), unweighted:
/// `C = Ycᵀ·Yc / N` with column-centred `Yc`, then `Σ_{a≠b} C_ab` or `(‖C‖_F − ‖diag C‖²)/N`.
pub fn covariance_loss(y: &Tensor, form: CovForm) -> Result<Tensor> {
    let (n, d) = y.dims2()?;
    if n == 0 {
        return Err(Error::Shape("covariance_loss: no rows".into()));
    }
    let yc = y.broadcast_sub(&y.mean_keepdim(0)?)?; // (N, d)
    let cov = yc.t()?.matmul(&yc)?.affine(1.0 / n as f64, 0.0)?; // (d, d)
    let eye = Tensor::eye(d, y.dtype(), y.device())?;
    let diag = (&cov * eye)?.sum(1)?; // (d,)
    Ok(match form {
        CovForm::OffdiagSum => (cov.sum_all()? - diag.sum_all()?)?,
        CovForm::Paper => (cov.sqr()?.sum_all()?.sqrt()? - diag.sqr()?.sum_all()?)?.affine(1.0 / n as f64, 0.0)?,
    })
}

/// Every row x of `x` `(n, d)` scaled by `min(1, c/‖x‖)` (TensorFlow `clip_by_norm` per row), so that no row
/// is longer than `c`; rows inside the ball are unchanged.
pub fn clip_rows(x: &Tensor, c: f64) -> Result<Tensor> {
    if x.rank() != 2 {
        return Err(Error::Shape(format!("clip_rows: expected (n, d), got {:?}", x.dims())));
    }
    if !(c.is_finite() && c > 0.0) {
        return Err(Error::Config(format!("clip_rows: the bound must be finite and > 0, got {c}")));
    }
    let norm = x.sqr()?.sum_keepdim(1)?.sqrt()?; // (n, 1)
                                                 // c / max(‖x‖, c) = min(1, c/‖x‖), and 1 for a zero row.
    let factor = norm.clamp(c, f64::INFINITY)?.recip()?.affine(c, 0.0)?; // (n, 1)
    Ok(x.broadcast_mul(&factor)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpr_matches_hand_values() {
        let pos = Tensor::new(&[2.0f64, 0.0, -1.0], &Device::Cpu).unwrap();
        let neg = Tensor::new(&[1.0f64, 0.0, 500.0], &Device::Cpu).unwrap();
        // −log σ(1) = 0.31326168751822286, −log σ(0) = ln 2, −log σ(−501) = 501 (+ e^−501).
        let want = (0.313_261_687_518_222_86 + std::f64::consts::LN_2 + 501.0) / 3.0;
        let got = bpr_loss(&(pos - neg).unwrap()).unwrap().to_scalar::<f64>().unwrap();
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        assert!(bpr_loss(&Tensor::zeros((2, 2), candle_core::DType::F64, &Device::Cpu).unwrap()).is_err());
    }
}
