//! Neural blocks shared by the sequence encoders (spec `kdsr-mmsr.md` §5), written here because candle has
//! none of them ready in the form the references use:
//! - [`LayerNorm`] with a configurable epsilon (SASRec: 1e-12) and [`gelu`] (erf form);
//! - [`MultiHeadSelfAttention`] and the post-LN [`TransformerBlock`] of RecBole's SASRec, with the additive
//!   −10000 mask of [`attention_mask`];
//! - [`Gru`], a multi-layer GRU in PyTorch's gate order (r, z, n), over left-aligned padded sequences;
//! - [`ModalityGate`], the softmax gate over candidate embeddings of KDSR's `modality_projection`
//!   (`model_corvector.py`, spec §5.1 "Modality gate fusion"), and [`fuse_item_inputs`], its use on the
//!   (ID, image, text) rows of each position for SASRec and GRU4Rec (§5.6).
//!
//! Every block is dtype-generic (f32 in training, f64 in the gradient checks). Dropout is on only when a
//! `&mut ChaCha8Rng` is passed, and draws from it with [`crate::loss::dropout`].

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{Init, Linear, VarBuilder};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::loss::dropout;
use crate::seq::model::ItemTables;
use crate::{Error, Result};

/// Standard deviation of the `N(0, 0.02)` initialisation of RecBole's and KDSR's `_init_weights`.
pub const INIT_STD: f64 = 0.02;

/// The value added to masked attention scores (RecBole `get_attention_mask`).
pub const ATTENTION_MASK_VALUE: f64 = -10000.0;

/// `dropout(x, p)` when `rng` is given (training), `x` otherwise.
pub fn maybe_dropout(x: &Tensor, p: f64, rng: Option<&mut ChaCha8Rng>) -> Result<Tensor> {
    match rng {
        Some(rng) => dropout(x, p, rng),
        None => Ok(x.clone()),
    }
}

/// Errors unless `p` is a dropout probability in `[0, 1)`; `what` names the config field.
pub fn check_prob(what: &str, p: f64) -> Result<()> {
    if (0.0..1.0).contains(&p) {
        Ok(())
    } else {
        Err(Error::Config(format!("{what} must lie in [0, 1), got {p}")))
    }
}

/// A linear layer `in_dim → out_dim` initialised as `_init_weights` does: W ~ N(0, 0.02), b = 0. Keys
/// `weight` (out, in) and, when `bias`, `bias` (out,).
pub fn linear_normal(vb: VarBuilder, in_dim: usize, out_dim: usize, bias: bool) -> Result<Linear> {
    let weight = vb.get_with_hints((out_dim, in_dim), "weight", Init::Randn { mean: 0.0, stdev: INIT_STD })?;
    let bias = if bias { Some(vb.get_with_hints(out_dim, "bias", Init::Const(0.0))?) } else { None };
    Ok(Linear::new(weight, bias))
}

/// `x · Wᵀ + b` for `x` of any rank ≥ 2 (rows are flattened, so no broadcast matmul is needed).
pub fn apply_linear(layer: &Linear, x: &Tensor) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let Some((&d_in, lead)) = dims.split_last() else {
        return Err(Error::Shape("linear: a scalar input".into()));
    };
    let rows: usize = lead.iter().product();
    let flat = x.reshape((rows, d_in))?; // (rows, d_in)
    let mut out = flat.matmul(&layer.weight().t()?)?; // (rows, d_out)
    if let Some(b) = layer.bias() {
        out = out.broadcast_add(b)?;
    }
    let mut shape = lead.to_vec();
    shape.push(out.dim(1)?);
    Ok(out.reshape(shape)?)
}

/// Layer normalisation over the last dimension: `(x − mean) / sqrt(var + eps) · weight + bias`, with the
/// biased variance (PyTorch `nn.LayerNorm`). Keys `weight` (init 1) and `bias` (init 0).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// A layer norm over `d` features with epsilon `eps` (SASRec: 1e-12; PyTorch default 1e-5).
    pub fn new(vb: VarBuilder, d: usize, eps: f64) -> Result<Self> {
        let weight = vb.get_with_hints(d, "weight", Init::Const(1.0))?;
        let bias = vb.get_with_hints(d, "bias", Init::Const(0.0))?;
        Ok(Self { weight, bias, eps })
    }

    /// `x` `(…, d)` → `(…, d)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?; // (…, 1)
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?; // (…, 1)
        let normed = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        Ok(normed.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)?)
    }
}

/// GELU, erf form: `x · ½ · (1 + erf(x/√2))` (RecBole's `gelu`, PyTorch `F.gelu` default).
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    Ok(x.gelu_erf()?)
}

/// Additive attention mask `(b, 1, l, l)`: 0 where query `i` may attend to key `j`, −10000 where key `j` is
/// padding (`j ≥ lens[r]`) or, when `causal`, in the future (`j > i`) (RecBole `get_attention_mask`).
pub fn attention_mask(lens: &[usize], l: usize, causal: bool, dtype: DType, device: &Device) -> Result<Tensor> {
    let b = lens.len();
    let mut m = vec![0f32; b * l * l];
    for (r, &n) in lens.iter().enumerate() {
        for i in 0..l {
            for j in 0..l {
                if j >= n || (causal && j > i) {
                    m[(r * l + i) * l + j] = ATTENTION_MASK_VALUE as f32;
                }
            }
        }
    }
    Ok(Tensor::from_vec(m, (b, 1, l, l), device)?.to_dtype(dtype)?)
}

/// Multi-head self-attention of RecBole's `MultiHeadAttention` up to the output projection: Q, K, V are
/// `Linear(d, d)` with bias, scores are scaled by `1/sqrt(d/h)`, the additive mask is added, then softmax,
/// attention dropout, the weighted sum of V, and the output projection `dense`. The residual, its dropout
/// and the layer norm are the caller's ([`TransformerBlock`]). Keys `query`, `key`, `value`, `dense`.
#[derive(Debug, Clone)]
pub struct MultiHeadSelfAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    dense: Linear,
    n_heads: usize,
    head_dim: usize,
    attn_dropout: f64,
}

impl MultiHeadSelfAttention {
    /// `d` must be a multiple of `n_heads`; `attn_dropout` is the probability applied to the attention
    /// weights in training.
    pub fn new(vb: VarBuilder, d: usize, n_heads: usize, attn_dropout: f64) -> Result<Self> {
        if n_heads == 0 || d % n_heads != 0 {
            return Err(Error::Config(format!("attention: d = {d} is not a multiple of n_heads = {n_heads}")));
        }
        check_prob("attn_dropout_prob", attn_dropout)?;
        Ok(Self {
            query: linear_normal(vb.pp("query"), d, d, true)?,
            key: linear_normal(vb.pp("key"), d, d, true)?,
            value: linear_normal(vb.pp("value"), d, d, true)?,
            dense: linear_normal(vb.pp("dense"), d, d, true)?,
            n_heads,
            head_dim: d / n_heads,
            attn_dropout,
        })
    }

    /// `x` `(b, l, d)` and the additive `mask` `(b, 1, l, l)` → `(b, l, d)`.
    pub fn forward(&self, x: &Tensor, mask: &Tensor, rng: Option<&mut ChaCha8Rng>) -> Result<Tensor> {
        Ok(self.forward_with_probs(x, mask, rng)?.0)
    }

    /// As [`forward`](Self::forward), also returning the attention weights `(b, h, l, l)` (before dropout).
    pub fn forward_with_probs(
        &self,
        x: &Tensor,
        mask: &Tensor,
        rng: Option<&mut ChaCha8Rng>,
    ) -> Result<(Tensor, Tensor)> {
        let (b, l, d) = x.dims3()?;
        let heads = |layer: &Linear| -> Result<Tensor> {
            let y = apply_linear(layer, x)?.reshape((b, l, self.n_heads, self.head_dim))?; // (b, l, h, d/h)
            Ok(y.transpose(1, 2)?.contiguous()?) // (b, h, l, d/h)
        };
        let (q, k, v) = (heads(&self.query)?, heads(&self.key)?, heads(&self.value)?);
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?; // (b, h, l, l)
        let scores = scores.broadcast_add(mask)?;
        let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let dropped = maybe_dropout(&probs, self.attn_dropout, rng)?;
        let context = dropped.matmul(&v)?; // (b, h, l, d/h)
        let context = context.transpose(1, 2)?.reshape((b, l, d))?; // (b, l, d)
        Ok((apply_linear(&self.dense, &context)?, probs))
    }
}

/// A post-LN Transformer block (RecBole `TransformerLayer`): `y = LN(x + Dropout(MHSA(x)))`, then
/// `LN(y + Dropout(W₂ GELU(W₁ y + b₁) + b₂))`. Keys `attn`, `attn_ln`, `ffn_in`, `ffn_out`, `ffn_ln`.
#[derive(Debug, Clone)]
pub struct TransformerBlock {
    attn: MultiHeadSelfAttention,
    attn_ln: LayerNorm,
    ffn_in: Linear,
    ffn_out: Linear,
    ffn_ln: LayerNorm,
    hidden_dropout: f64,
}

impl TransformerBlock {
    /// A block of width `d` with `n_heads` heads, feed-forward width `d_ff`, hidden and attention dropout
    /// probabilities, and layer-norm epsilon `eps`.
    pub fn new(
        vb: VarBuilder,
        d: usize,
        n_heads: usize,
        d_ff: usize,
        hidden_dropout: f64,
        attn_dropout: f64,
        eps: f64,
    ) -> Result<Self> {
        check_prob("hidden_dropout_prob", hidden_dropout)?;
        Ok(Self {
            attn: MultiHeadSelfAttention::new(vb.pp("attn"), d, n_heads, attn_dropout)?,
            attn_ln: LayerNorm::new(vb.pp("attn_ln"), d, eps)?,
            ffn_in: linear_normal(vb.pp("ffn_in"), d, d_ff, true)?,
            ffn_out: linear_normal(vb.pp("ffn_out"), d_ff, d, true)?,
            ffn_ln: LayerNorm::new(vb.pp("ffn_ln"), d, eps)?,
            hidden_dropout,
        })
    }

    /// `x` `(b, l, d)` and the additive `mask` `(b, 1, l, l)` → `(b, l, d)`.
    pub fn forward(&self, x: &Tensor, mask: &Tensor, mut rng: Option<&mut ChaCha8Rng>) -> Result<Tensor> {
        let a = self.attn.forward(x, mask, rng.as_deref_mut())?;
        let a = maybe_dropout(&a, self.hidden_dropout, rng.as_deref_mut())?;
        let y = self.attn_ln.forward(&(a + x)?)?;
        let f = gelu(&apply_linear(&self.ffn_in, &y)?)?; // (b, l, d_ff)
        let f = apply_linear(&self.ffn_out, &f)?; // (b, l, d)
        let f = maybe_dropout(&f, self.hidden_dropout, rng)?;
        self.ffn_ln.forward(&(f + y)?)
    }
}

/// How the GRU's weights are initialised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GruInit {
    /// PyTorch `nn.GRU`: every weight and bias ~ U(−1/√H, 1/√H).
    #[default]
    Torch,
    /// RecBole GRU4Rec `_init_weights`: `weight_ih_l0` and `weight_hh_l0` Xavier-uniform, the rest as `Torch`.
    XavierFirstLayer,
}

#[derive(Debug, Clone)]
struct GruLayer {
    /// `(3H, in)`, rows in gate order r, z, n.
    w_ih: Tensor,
    /// `(3H, H)`.
    w_hh: Tensor,
    b_ih: Option<Tensor>,
    b_hh: Option<Tensor>,
}

/// A multi-layer GRU (PyTorch `nn.GRU`, `batch_first`, no inter-layer dropout), gate order r, z, n:
/// `r = σ(W_ir x + b_ir + W_hr h + b_hr)`, `z = σ(W_iz x + b_iz + W_hz h + b_hz)`,
/// `n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))`, `h' = (1 − z) ⊙ n + z ⊙ h`, from `h₀ = 0`.
/// Keys `weight_ih_l{k}`, `weight_hh_l{k}` and, with biases, `bias_ih_l{k}`, `bias_hh_l{k}`.
///
/// Sequences are left-aligned, so the output at a real position never depends on the padding after it;
/// like RecBole (no packing), the recurrence also runs over the padding.
#[derive(Debug, Clone)]
pub struct Gru {
    layers: Vec<GruLayer>,
    hidden: usize,
}

impl Gru {
    /// A GRU `input_size → hidden_size` with `num_layers` layers, with or without biases.
    pub fn new(
        vb: VarBuilder,
        input_size: usize,
        hidden_size: usize,
        num_layers: usize,
        bias: bool,
        init: GruInit,
    ) -> Result<Self> {
        if num_layers == 0 || hidden_size == 0 {
            return Err(Error::Config("gru: num_layers and hidden_size must be at least 1".into()));
        }
        let bound = 1.0 / (hidden_size as f64).sqrt();
        let torch = Init::Uniform { lo: -bound, up: bound };
        let xavier = |fan_in: usize| {
            let b = (6.0 / (fan_in + 3 * hidden_size) as f64).sqrt();
            Init::Uniform { lo: -b, up: b }
        };
        let mut layers = Vec::with_capacity(num_layers);
        for k in 0..num_layers {
            let in_k = if k == 0 { input_size } else { hidden_size };
            let (ih_init, hh_init) = match (init, k) {
                (GruInit::XavierFirstLayer, 0) => (xavier(in_k), xavier(hidden_size)),
                _ => (torch, torch),
            };
            let w_ih = vb.get_with_hints((3 * hidden_size, in_k), &format!("weight_ih_l{k}"), ih_init)?;
            let w_hh = vb.get_with_hints((3 * hidden_size, hidden_size), &format!("weight_hh_l{k}"), hh_init)?;
            let (b_ih, b_hh) = if bias {
                (
                    Some(vb.get_with_hints(3 * hidden_size, &format!("bias_ih_l{k}"), torch)?),
                    Some(vb.get_with_hints(3 * hidden_size, &format!("bias_hh_l{k}"), torch)?),
                )
            } else {
                (None, None)
            };
            layers.push(GruLayer { w_ih, w_hh, b_ih, b_hh });
        }
        Ok(Self { layers, hidden: hidden_size })
    }

    /// Hidden size H.
    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    /// `x` `(b, l, in)` → the last layer's hidden state at every position, `(b, l, H)`.
    ///
    /// The input projections of all steps are computed at once, per gate, in time-major layout `(l, b, H)`,
    /// so a step reads contiguous rows; the recurrent projections are one matmul per gate and step.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, l, _) = x.dims3()?;
        let h_dim = self.hidden;
        let mut input = x.transpose(0, 1)?.contiguous()?; // (l, b, in)
        for layer in &self.layers {
            let gate_w =
                |w: &Tensor, k: usize| -> Result<Tensor> { Ok(w.narrow(0, k * h_dim, h_dim)?.t()?.contiguous()?) };
            let gate_b = |bias: &Option<Tensor>, k: usize| -> Result<Option<Tensor>> {
                Ok(match bias {
                    Some(bias) => Some(bias.narrow(0, k * h_dim, h_dim)?),
                    None => None,
                })
            };
            let in_dim = input.dim(2)?;
            let flat = input.reshape((l * b, in_dim))?;
            // Input projections per gate, (l, b, H) each, sliced per step by halving (see [`split_steps`]).
            let mut gi = Vec::with_capacity(3);
            let mut w_h = Vec::with_capacity(3);
            let mut b_h = Vec::with_capacity(3);
            for k in 0..3 {
                let mut g = flat.matmul(&gate_w(&layer.w_ih, k)?)?; // (l·b, H)
                if let Some(bias) = gate_b(&layer.b_ih, k)? {
                    g = g.broadcast_add(&bias)?;
                }
                gi.push(split_steps(&g.reshape((l, b, h_dim))?, 0)?);
                w_h.push(gate_w(&layer.w_hh, k)?); // (H, H)
                b_h.push(gate_b(&layer.b_hh, k)?);
            }
            let rec = |k: usize, h: &Tensor| -> Result<Tensor> {
                let mut g = h.matmul(&w_h[k])?; // (b, H)
                if let Some(bias) = &b_h[k] {
                    g = g.broadcast_add(bias)?;
                }
                Ok(g)
            };
            let mut h = Tensor::zeros((b, h_dim), x.dtype(), x.device())?;
            let mut outputs = Vec::with_capacity(l);
            for t in 0..l {
                let step = |k: usize| -> Result<Tensor> { Ok(gi[k][t].squeeze(0)?) };
                let r = candle_nn::ops::sigmoid(&(step(0)? + rec(0, &h)?)?)?;
                let z = candle_nn::ops::sigmoid(&(step(1)? + rec(1, &h)?)?)?;
                let n = (step(2)? + (r * rec(2, &h)?)?)?.tanh()?;
                // h' = (1 − z)·n + z·h = n + z·(h − n).
                h = (&n + (z * (h - &n)?)?)?;
                outputs.push(h.clone());
            }
            input = Tensor::stack(&outputs, 0)?; // (l, b, H)
        }
        Ok(input.transpose(0, 1)?.contiguous()?) // (b, l, H)
    }
}

/// The length-1 slices of `x` along `dim`, in order, cut by recursive halving (see [`Gru::forward`]).
pub fn split_steps(x: &Tensor, dim: usize) -> Result<Vec<Tensor>> {
    let n = x.dim(dim)?;
    if n <= 1 {
        return Ok(vec![x.clone()]);
    }
    let half = n / 2;
    let mut out = split_steps(&x.narrow(dim, 0, half)?, dim)?;
    out.extend(split_steps(&x.narrow(dim, half, n - half)?, dim)?);
    Ok(out)
}

/// The softmax gate over K candidate embeddings of KDSR's `modality_projection` (spec §5.1): a score
/// `w_bᵀ ReLU(W_a x_k + b_a) + b_b` per candidate from one MLP `d → d → 1` shared by all candidates,
/// softmax over the candidates, and the weighted sum. Keys `fc1`, `fc2` (N(0, 0.02), biases 0).
#[derive(Debug, Clone)]
pub struct ModalityGate {
    fc1: Linear,
    fc2: Linear,
}

impl ModalityGate {
    /// A gate over candidates of width `d` (hidden width `d`, as the reference's `Linear(dim, dim)`).
    pub fn new(vb: VarBuilder, d: usize) -> Result<Self> {
        Ok(Self { fc1: linear_normal(vb.pp("fc1"), d, d, true)?, fc2: linear_normal(vb.pp("fc2"), d, 1, true)? })
    }

    /// Fuses `candidates`, each `(…, d)` of one shape: the weighted sum `(…, d)` and the weights `(…, K)`.
    pub fn forward(&self, candidates: &[&Tensor]) -> Result<(Tensor, Tensor)> {
        let Some(first) = candidates.first() else {
            return Err(Error::Shape("modality gate: no candidate".into()));
        };
        if let Some(c) = candidates.iter().find(|c| c.dims() != first.dims()) {
            return Err(Error::Shape(format!(
                "modality gate: candidates of shapes {:?} and {:?}",
                first.dims(),
                c.dims()
            )));
        }
        let axis = first.rank().saturating_sub(1);
        let stacked = Tensor::stack(candidates, axis)?; // (…, K, d)
        let hidden = apply_linear(&self.fc1, &stacked)?.relu()?; // (…, K, d)
        let energy = apply_linear(&self.fc2, &hidden)?.squeeze(D::Minus1)?; // (…, K)
        let weights = candle_nn::ops::softmax(&energy, D::Minus1)?; // (…, K)
        let fused = stacked.broadcast_mul(&weights.unsqueeze(D::Minus1)?)?.sum(axis)?; // (…, d)
        Ok((fused, weights))
    }
}

/// How SASRec and GRU4Rec build a position's input from the item tables (spec §5.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputFusion {
    /// The ID embedding only (plain SASRec / GRU4Rec).
    Id,
    /// [`ModalityGate`] over `(e^id, e^v, e^t)` of the item (\[PROPOSED\] in the spec for KDSR's study).
    #[default]
    Gate,
}

/// The input rows `(b, l, d)` of `items` `(b, l)` u32: the ID rows, or the gate over (ID, image, text) rows.
pub fn fuse_item_inputs(tables: &ItemTables, items: &Tensor, gate: Option<&ModalityGate>) -> Result<Tensor> {
    let id = ItemTables::gather(&tables.id, items)?; // (b, l, d)
    match gate {
        None => Ok(id),
        Some(gate) => {
            let visual = ItemTables::gather(&tables.visual, items)?;
            let text = ItemTables::gather(&tables.text, items)?;
            Ok(gate.forward(&[&id, &visual, &text])?.0)
        }
    }
}

/// Errors unless the three tables have width `d` and the same number of rows.
pub fn check_tables(model: &str, tables: &ItemTables, d: usize) -> Result<()> {
    let (n, d_id) = tables.id.dims2()?;
    for (name, t) in [("visual", &tables.visual), ("text", &tables.text)] {
        if t.dims2()? != (n, d_id) {
            return Err(Error::Shape(format!(
                "{model}: the {name} table is {:?} but the id table is ({n}, {d_id})",
                t.dims()
            )));
        }
    }
    if d_id != d {
        return Err(Error::Shape(format!("{model}: built for d = {d} but the item tables have d = {d_id}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use candle_nn::VarMap;
    use mmkd_features::seeded_var_builder;
    use rand::{Rng, SeedableRng};

    const CPU: Device = Device::Cpu;

    /// Replaces every variable of `vm` by N(0, scale²) draws (names sorted, so it is deterministic), so that
    /// biases and layer-norm parameters are not trivially 0 or 1 in the checks.
    fn randomize(vm: &mut VarMap, seed: u64, scale: f64) {
        let mut named: Vec<(String, Vec<usize>)> =
            vm.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.dims().to_vec())).collect();
        named.sort();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for (name, dims) in named {
            let n: usize = dims.iter().product();
            let vals: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0) * scale).collect();
            let dtype = vm.data().lock().unwrap()[&name].dtype();
            let t = Tensor::from_vec(vals, dims, &CPU).unwrap().to_dtype(dtype).unwrap();
            vm.set_one(&name, t).unwrap();
        }
    }

    fn values(vm: &VarMap, name: &str) -> Vec<f64> {
        let t = vm.data().lock().unwrap()[name].as_tensor().clone();
        t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap()
    }

    fn random(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        Tensor::from_vec(v, shape, &CPU).unwrap()
    }

    fn flat(t: &Tensor) -> Vec<f64> {
        t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap()
    }

    fn assert_close(got: &[f64], want: &[f64], tol: f64) {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= tol * (1.0 + w.abs()), "entry {i}: {g} vs {w}");
        }
    }

    /// `y = x · Wᵀ + b` on host rows; `w` is `(out, in)` row-major.
    fn lin(x: &[f64], w: &[f64], b: Option<&[f64]>, out: usize) -> Vec<f64> {
        let d_in = x.len();
        (0..out).map(|o| (0..d_in).map(|i| w[o * d_in + i] * x[i]).sum::<f64>() + b.map_or(0.0, |b| b[o])).collect()
    }

    fn softmax(x: &[f64]) -> Vec<f64> {
        let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = x.iter().map(|v| (v - m).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|v| v / s).collect()
    }

    fn sigmoid(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    #[test]
    fn layer_norm_matches_a_loop() {
        let mut vm = VarMap::new();
        let ln = LayerNorm::new(seeded_var_builder(&vm, 1, DType::F64, &CPU).pp("ln"), 5, 1e-12).unwrap();
        randomize(&mut vm, 2, 1.0);
        let x = random(&[2, 3, 5], 3);
        let got = flat(&ln.forward(&x).unwrap());
        let (w, b) = (values(&vm, "ln.weight"), values(&vm, "ln.bias"));
        let xs = flat(&x);
        let mut want = Vec::new();
        for row in xs.chunks(5) {
            let mean = row.iter().sum::<f64>() / 5.0;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 5.0;
            want.extend(row.iter().enumerate().map(|(k, v)| (v - mean) / (var + 1e-12).sqrt() * w[k] + b[k]));
        }
        assert_close(&got, &want, 1e-12);
        // The epsilon is honoured: a constant row maps to the bias, a larger eps shrinks the output.
        let ln_big = LayerNorm { eps: 1.0, ..ln.clone() };
        let shrunk = flat(&ln_big.forward(&x).unwrap());
        assert!(shrunk.iter().zip(&want).any(|(s, w)| (s - w).abs() > 1e-3));
    }

    #[test]
    fn gelu_is_the_erf_form() {
        let x = Tensor::new(&[1.0f64, -1.0, 0.5, 2.0, 0.0], &CPU).unwrap();
        // x·Φ(x) with Φ(1) = 0.8413447460685429, Φ(0.5) = 0.6914624612740131, Φ(2) = 0.9772498680518208.
        // The tanh approximation gives 0.841192 at 1, off by 1.5e-4.
        let want = [0.8413447460685429, -0.15865525393145707, 0.34573123063700656, 1.9544997361036416, 0.0];
        assert_close(&flat(&gelu(&x).unwrap()), &want, 1e-7);
    }

    /// Multi-head attention on host rows: x is (l, d) of one sequence of real length `n`.
    fn attention_loop(vm: &VarMap, x: &[f64], l: usize, d: usize, h: usize, n: usize) -> (Vec<f64>, Vec<f64>) {
        let p = |k: &str| values(vm, &format!("mha.{k}"));
        let (wq, bq, wk, bk, wv, bv, wo, bo) = (
            p("query.weight"),
            p("query.bias"),
            p("key.weight"),
            p("key.bias"),
            p("value.weight"),
            p("value.bias"),
            p("dense.weight"),
            p("dense.bias"),
        );
        let rows: Vec<&[f64]> = x.chunks(d).collect();
        let q: Vec<Vec<f64>> = rows.iter().map(|r| lin(r, &wq, Some(&bq), d)).collect();
        let k: Vec<Vec<f64>> = rows.iter().map(|r| lin(r, &wk, Some(&bk), d)).collect();
        let v: Vec<Vec<f64>> = rows.iter().map(|r| lin(r, &wv, Some(&bv), d)).collect();
        let dh = d / h;
        let mut probs = vec![0.0; h * l * l];
        let mut ctx = vec![vec![0.0; d]; l];
        for head in 0..h {
            for i in 0..l {
                let scores: Vec<f64> = (0..l)
                    .map(|j| {
                        let dot: f64 = (0..dh).map(|c| q[i][head * dh + c] * k[j][head * dh + c]).sum();
                        let masked = j > i || j >= n;
                        dot / (dh as f64).sqrt() + if masked { -10000.0 } else { 0.0 }
                    })
                    .collect();
                let pr = softmax(&scores);
                for j in 0..l {
                    probs[(head * l + i) * l + j] = pr[j];
                    for c in 0..dh {
                        ctx[i][head * dh + c] += pr[j] * v[j][head * dh + c];
                    }
                }
            }
        }
        let out: Vec<f64> = ctx.iter().flat_map(|c| lin(c, &wo, Some(&bo), d)).collect();
        (out, probs)
    }

    #[test]
    fn attention_matches_a_loop_with_causal_and_padding_masks() {
        let (l, d) = (3, 4);
        for h in [1, 2] {
            let mut vm = VarMap::new();
            let mha =
                MultiHeadSelfAttention::new(seeded_var_builder(&vm, 5, DType::F64, &CPU).pp("mha"), d, h, 0.5).unwrap();
            randomize(&mut vm, 6 + h as u64, 0.8);
            let x = random(&[2, l, d], 9);
            let lens = [3, 2];
            let mask = attention_mask(&lens, l, true, DType::F64, &CPU).unwrap();
            let (out, probs) = mha.forward_with_probs(&x, &mask, None).unwrap();
            let (out, probs) = (flat(&out), flat(&probs));
            let xs = flat(&x);
            for (r, &n) in lens.iter().enumerate() {
                let (want_out, want_probs) = attention_loop(&vm, &xs[r * l * d..(r + 1) * l * d], l, d, h, n);
                assert_close(&out[r * l * d..(r + 1) * l * d], &want_out, 1e-10);
                assert_close(&probs[r * h * l * l..(r + 1) * h * l * l], &want_probs, 1e-10);
            }
            for head in 0..h {
                let at = |r: usize, i: usize, j: usize| probs[((r * h + head) * l + i) * l + j];
                // Future keys get no weight; a padded key (row 1, key 2) gets none even from position 2.
                assert!(at(0, 0, 1) < 1e-30 && at(0, 0, 2) < 1e-30 && at(0, 1, 2) < 1e-30);
                assert!(at(1, 2, 2) < 1e-30 && at(1, 2, 0) > 1e-3 && at(1, 2, 1) > 1e-3);
                assert!(((0..l).map(|j| at(0, 2, j)).sum::<f64>() - 1.0).abs() < 1e-12);
            }
            // In eval mode the attention dropout is off; in train mode it changes the output.
            let mut rng = ChaCha8Rng::seed_from_u64(1);
            let train = flat(&mha.forward(&x, &mask, Some(&mut rng)).unwrap());
            assert!(train.iter().zip(&out).any(|(a, b)| (a - b).abs() > 1e-6));
        }
        assert!(
            MultiHeadSelfAttention::new(seeded_var_builder(&VarMap::new(), 5, DType::F32, &CPU), 4, 3, 0.0).is_err()
        );
    }

    #[test]
    fn transformer_block_is_post_ln() {
        let (l, d) = (3, 4);
        let mut vm = VarMap::new();
        let block =
            TransformerBlock::new(seeded_var_builder(&vm, 5, DType::F64, &CPU).pp("blk"), d, 2, 6, 0.5, 0.5, 1e-12)
                .unwrap();
        randomize(&mut vm, 8, 0.7);
        let x = random(&[1, l, d], 4);
        let mask = attention_mask(&[3], l, true, DType::F64, &CPU).unwrap();
        let got = flat(&block.forward(&x, &mask, None).unwrap());
        // Recompose on host rows from the loop attention (with the block's parameters).
        let p = |k: &str| values(&vm, &format!("blk.{k}"));
        let attn_vm = VarMap::new();
        {
            let mut data = attn_vm.data().lock().unwrap();
            for (k, v) in vm.data().lock().unwrap().iter() {
                if let Some(rest) = k.strip_prefix("blk.attn.") {
                    data.insert(format!("mha.{rest}"), v.clone());
                }
            }
        }
        let xs = flat(&x);
        let (a, _) = attention_loop(&attn_vm, &xs, l, d, 2, 3);
        let ln = |v: &[f64], w: &[f64], b: &[f64]| -> Vec<f64> {
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
            v.iter().enumerate().map(|(k, x)| (x - mean) / (var + 1e-12).sqrt() * w[k] + b[k]).collect()
        };
        let gelu_host = |x: f64| {
            // erf via the Abramowitz–Stegun 7.1.26 approximation is too coarse; use the series for |x| small.
            let t = x / 2f64.sqrt();
            let mut erf = 0.0;
            let mut term = t;
            for k in 0..60 {
                erf += term / (2 * k + 1) as f64;
                term *= -t * t / (k + 1) as f64;
            }
            0.5 * x * (1.0 + 2.0 / std::f64::consts::PI.sqrt() * erf)
        };
        let mut want = Vec::new();
        for i in 0..l {
            let res: Vec<f64> = (0..d).map(|c| xs[i * d + c] + a[i * d + c]).collect();
            let y = ln(&res, &p("attn_ln.weight"), &p("attn_ln.bias"));
            let f: Vec<f64> =
                lin(&y, &p("ffn_in.weight"), Some(&p("ffn_in.bias")), 6).into_iter().map(gelu_host).collect();
            let f = lin(&f, &p("ffn_out.weight"), Some(&p("ffn_out.bias")), d);
            let res2: Vec<f64> = (0..d).map(|c| y[c] + f[c]).collect();
            want.extend(ln(&res2, &p("ffn_ln.weight"), &p("ffn_ln.bias")));
        }
        assert_close(&got, &want, 1e-9);
    }

    /// One layer of the PyTorch GRU equations on host rows: x is (l, in), returns (l, H).
    fn gru_layer_loop(vm: &VarMap, k: usize, x: &[Vec<f64>], hd: usize, bias: bool) -> Vec<Vec<f64>> {
        let w_ih = values(vm, &format!("gru.weight_ih_l{k}"));
        let w_hh = values(vm, &format!("gru.weight_hh_l{k}"));
        let (b_ih, b_hh) = if bias {
            (values(vm, &format!("gru.bias_ih_l{k}")), values(vm, &format!("gru.bias_hh_l{k}")))
        } else {
            (vec![0.0; 3 * hd], vec![0.0; 3 * hd])
        };
        let d_in = x[0].len();
        let mut h = vec![0.0; hd];
        let mut out = Vec::new();
        for xt in x {
            let mut next = vec![0.0; hd];
            for u in 0..hd {
                let wi =
                    |g: usize| (0..d_in).map(|c| w_ih[(g * hd + u) * d_in + c] * xt[c]).sum::<f64>() + b_ih[g * hd + u];
                let wh = |g: usize| (0..hd).map(|c| w_hh[(g * hd + u) * hd + c] * h[c]).sum::<f64>() + b_hh[g * hd + u];
                let r = sigmoid(wi(0) + wh(0));
                let z = sigmoid(wi(1) + wh(1));
                let n = (wi(2) + r * wh(2)).tanh();
                next[u] = (1.0 - z) * n + z * h[u];
            }
            h = next;
            out.push(h.clone());
        }
        out
    }

    #[test]
    fn gru_matches_the_pytorch_equations() {
        let (b, l, d_in, hd) = (2, 3, 3, 2);
        for (bias, layers) in [(true, 1), (false, 1), (true, 2)] {
            let mut vm = VarMap::new();
            let gru = Gru::new(
                seeded_var_builder(&vm, 3, DType::F64, &CPU).pp("gru"),
                d_in,
                hd,
                layers,
                bias,
                GruInit::Torch,
            )
            .unwrap();
            randomize(&mut vm, 4, 1.0);
            let x = random(&[b, l, d_in], 12);
            let got = flat(&gru.forward(&x).unwrap());
            let xs = flat(&x);
            for r in 0..b {
                let mut seq: Vec<Vec<f64>> =
                    (0..l).map(|t| xs[(r * l + t) * d_in..(r * l + t + 1) * d_in].to_vec()).collect();
                for k in 0..layers {
                    seq = gru_layer_loop(&vm, k, &seq, hd, bias);
                }
                let want: Vec<f64> = seq.concat();
                assert_close(&got[r * l * hd..(r + 1) * l * hd], &want, 1e-12);
            }
            // One step is the cell: the first position's output equals one cell update from h = 0.
            let one = flat(&gru.forward(&x.narrow(1, 0, 1).unwrap()).unwrap());
            assert_close(&one[..hd], &got[..hd], 0.0);
        }
        // Without biases no bias parameter exists; with GRU4Rec's init the first layer is Xavier-uniform.
        let vm = VarMap::new();
        Gru::new(seeded_var_builder(&vm, 3, DType::F32, &CPU).pp("gru"), 64, 16, 2, false, GruInit::XavierFirstLayer)
            .unwrap();
        assert_eq!(vm.all_vars().len(), 4);
        let w0 = values(&vm, "gru.weight_ih_l0");
        let w1 = values(&vm, "gru.weight_ih_l1");
        let (x_bound, t_bound) = ((6.0f64 / (64.0 + 48.0)).sqrt(), 0.25);
        assert!(w0.iter().all(|v| v.abs() <= x_bound) && w0.iter().any(|v| v.abs() > 0.9 * x_bound));
        assert!(w1.iter().all(|v| v.abs() <= t_bound) && w1.iter().any(|v| v.abs() > 0.9 * t_bound));
    }

    #[test]
    fn modality_gate_matches_hand_computation() {
        let d = 2;
        let mut vm = VarMap::new();
        let gate = ModalityGate::new(seeded_var_builder(&vm, 1, DType::F64, &CPU).pp("gate"), d).unwrap();
        randomize(&mut vm, 2, 1.5);
        let cands: Vec<Tensor> = (0..3).map(|k| random(&[2, 2, d], 20 + k)).collect();
        let refs: Vec<&Tensor> = cands.iter().collect();
        let (fused, weights) = gate.forward(&refs).unwrap();
        assert_eq!(fused.dims(), &[2, 2, d]);
        assert_eq!(weights.dims(), &[2, 2, 3]);
        let (fused, weights) = (flat(&fused), flat(&weights));
        let (w1, b1, w2, b2) = (
            values(&vm, "gate.fc1.weight"),
            values(&vm, "gate.fc1.bias"),
            values(&vm, "gate.fc2.weight"),
            values(&vm, "gate.fc2.bias"),
        );
        let cs: Vec<Vec<f64>> = cands.iter().map(flat).collect();
        for row in 0..4 {
            let xs: Vec<&[f64]> = cs.iter().map(|c| &c[row * d..(row + 1) * d]).collect();
            let energy: Vec<f64> = xs
                .iter()
                .map(|x| {
                    let hid: Vec<f64> = lin(x, &w1, Some(&b1), d).into_iter().map(|v| v.max(0.0)).collect();
                    lin(&hid, &w2, Some(&b2), 1)[0]
                })
                .collect();
            let w = softmax(&energy);
            assert!((weights[row * 3..row * 3 + 3].iter().sum::<f64>() - 1.0).abs() < 1e-12);
            assert_close(&weights[row * 3..row * 3 + 3], &w, 1e-12);
            let want: Vec<f64> = (0..d).map(|c| (0..3).map(|k| w[k] * xs[k][c]).sum()).collect();
            assert_close(&fused[row * d..(row + 1) * d], &want, 1e-12);
        }
        assert!(gate.forward(&[]).is_err());
        assert!(gate.forward(&[&cands[0], &random(&[2, d], 1)]).is_err());
    }

    #[test]
    fn attention_mask_values() {
        let m =
            attention_mask(&[2], 3, true, DType::F32, &CPU).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let k = -10000f32;
        assert_eq!(m, vec![0.0, k, k, 0.0, 0.0, k, 0.0, 0.0, k]);
        let m =
            attention_mask(&[2], 3, false, DType::F32, &CPU).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(m, vec![0.0, 0.0, k, 0.0, 0.0, k, 0.0, 0.0, k]);
    }
}
