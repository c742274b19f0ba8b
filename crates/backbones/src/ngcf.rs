//! NGCF: Neural Graph Collaborative Filtering (Wang et al., SIGIR'19), spec `cf-baselines.md` §3.
//!
//! References: the official TF1 code (xiangwang1223/neural_graph_collaborative_filtering @a718a4f,
//! `NGCF/NGCF.py`, `NGCF/utility/load_data.py`) and RecBole @7b02be5 (`general_recommender/ngcf.py`,
//! `model/layers.py` `BiGNNLayer`, `properties/model/NGCF.yaml`).
//!
//! One layer on the node embeddings `E` (`N × d_{l−1}`, users first), in the default `recbole` variant:
//! ```text
//! S  = L̂·E                                  L̂ = D^{-1/2} A D^{-1/2} (degrees + 1e-7, graph::sym_normalized)
//! E' = lrelu₀.₂((E + S)·W1 + b1 + (S ⊙ E)·W2 + b2)
//! E' = dropout_msg(E');  E' = l2n(E')         stored, and the next layer's input
//! ```
//! and in the `official` variant (`Â = D̃^{-1}(A + I)`, row-normalised with self-loops, D̃ = degree + 1):
//! ```text
//! S  = Â·E;  E' = lrelu₀.₂(S·W1 + b1) + lrelu₀.₂((E ⊙ S)·W2 + b2);  E' = dropout_msg(E')
//! store l2n(E') (TensorFlow's epsilon), feed the un-normalised E' to the next layer
//! ```
//! `E* = [E⁰ ‖ stored_1 ‖ … ‖ stored_L]`, `ŷ(u, i) = ⟨E*[u], E*[U + i]⟩`. Loss per batch of B triples:
//! `mean_b softplus(−(ŷ_ui⁺ − ŷ_ui⁻)) + reg_weight · reg(E*[u], E*[i⁺], E*[i⁻])` with the `half_sq` or `norm`
//! form of [`emb_reg`]; W and b are not regularised (weight decay belongs to the optimiser).
//!
//! Defaults are the spec's [PORT] column: d = 128, layers [128, 128, 128], message dropout 0.1, node (edge)
//! dropout 0, reg 1e-5, batch 1024, sampler S-int, `half_sq` regulariser, `recbole` variant (RecBole's
//! initialisation: Xavier-normal embeddings and weights, zero biases; `official` uses TF's Glorot-uniform for
//! everything, biases included). The paper's defaults differ only in d = 64.
//!
//! Deviations: dropout masks come from the run's ChaCha stream (not PyTorch's or TF's generator), and the
//! message-dropout mask is drawn over the whole `(N, d_l)` output as `nn.Dropout` does. Node dropout is what
//! both codes implement (each non-zero of the normalised adjacency dropped independently and the kept ones
//! scaled by `1/(1 − p)`, once per forward, shared by all layers), not the paper's whole-node dropout.
//!
//! The sampling schemes of the spec (§0: S-int, S-user, S-pair), the inverted [`dropout`] and the embedding
//! regulariser [`emb_reg`] live here and are shared with the other CF baselines (`neumf`, `cml`, `dgcf`).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Instant;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Init, Linear, VarBuilder, VarMap};
use mmkd_data::{Csr, NegativeSampler};
use mmkd_features::nn::l2_normalize;
use rand::seq::SliceRandom;
use rand::{Rng, RngCore};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::graph::{spmm, sym_normalized, SparseMatrix, SparsePattern};
use crate::model::{Backbone, Dims, EpochCtx, EpochStats};
use crate::{Error, Result};

/// LeakyReLU slope of both NGCF codes (`tf.nn.leaky_relu` default, RecBole `negative_slope=0.2`).
const LRELU_SLOPE: f64 = 0.2;
/// `F.normalize`'s epsilon on the norm (RecBole).
const TORCH_L2_EPS: f64 = 1e-12;
/// `tf.math.l2_normalize` clamps the squared norm at 1e-12, i.e. the norm at 1e-6 (official code).
const TF_L2_EPS: f64 = 1e-6;

// ---------------------------------------------------------------------------------------------------------
// Shared by the CF baselines: sampling, dropout, embedding regulariser.

/// How an epoch draws its (user, positive item, negatives) rows (spec §0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sampler {
    /// S-int (RecBole): every train pair once per epoch, shuffled, cut into batches (the last one partial).
    #[default]
    Int,
    /// S-user (official NGCF/DGCF): `⌊|R|/B⌋ + 1` batches of B distinct users drawn uniformly among users
    /// with a train item (with replacement when B exceeds their number), one uniform positive each.
    User,
    /// S-pair (official CML): every train pair once, shuffled, cut into `⌊|R|/B⌋` full batches (the remainder
    /// is dropped).
    Pair,
}

/// One batch of rows: `users[b]`, `positives[b]` and the negatives `negatives[b·n_neg .. (b + 1)·n_neg]`,
/// each drawn uniformly from the items outside `users[b]`'s train row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TripleBatch {
    pub users: Vec<u32>,
    pub positives: Vec<u32>,
    pub negatives: Vec<u32>,
}

impl TripleBatch {
    /// Number of (user, positive) rows.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether the batch has no rows.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// The batches of one epoch under `sampler`, each row with `n_neg` negatives from
/// [`mmkd_data::NegativeSampler`] (seeded from `rng` after the positives are drawn).
///
/// Errors if `batch_size` is 0, if the train matrix is empty, if S-pair would give no full batch, or if a
/// user has every item (no negative exists).
pub fn sample_epoch(
    sampler: Sampler,
    train: &Csr,
    batch_size: usize,
    n_neg: usize,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<TripleBatch>> {
    if batch_size == 0 {
        return Err(Error::Config("sample_epoch: batch_size must be at least 1".into()));
    }
    if train.nnz() == 0 {
        return Err(Error::Config("sample_epoch: the train matrix has no interaction".into()));
    }
    let positive_batches: Vec<Vec<(u32, u32)>> = match sampler {
        Sampler::Int | Sampler::Pair => {
            let mut pairs = train.pairs();
            pairs.shuffle(rng);
            if sampler == Sampler::Pair {
                if pairs.len() < batch_size {
                    return Err(Error::Config(format!(
                        "sample_epoch: S-pair drops the remainder, so batch_size ({batch_size}) must not exceed \
                         the {} train pairs",
                        pairs.len()
                    )));
                }
                pairs.chunks_exact(batch_size).map(<[_]>::to_vec).collect()
            } else {
                pairs.chunks(batch_size).map(<[_]>::to_vec).collect()
            }
        }
        Sampler::User => {
            let active: Vec<u32> = (0..train.n_rows()).filter(|&u| train.degree(u) > 0).map(|u| u as u32).collect();
            let n_batches = train.nnz() / batch_size + 1;
            (0..n_batches)
                .map(|_| {
                    let users: Vec<u32> = if batch_size <= active.len() {
                        rand::seq::index::sample(rng, active.len(), batch_size).iter().map(|k| active[k]).collect()
                    } else {
                        (0..batch_size).map(|_| active[rng.random_range(0..active.len())]).collect()
                    };
                    users
                        .into_iter()
                        .map(|u| {
                            let row = train.row(u as usize);
                            (u, row[rng.random_range(0..row.len())])
                        })
                        .collect()
                })
                .collect()
        }
    };
    let mut negatives = NegativeSampler::new(train, rng.random());
    let mut drawn = Vec::with_capacity(n_neg);
    positive_batches
        .into_iter()
        .map(|batch| {
            let mut out = TripleBatch {
                users: Vec::with_capacity(batch.len()),
                positives: Vec::with_capacity(batch.len()),
                negatives: Vec::with_capacity(batch.len() * n_neg),
            };
            for (u, i) in batch {
                negatives.sample_n(u, n_neg, &mut drawn)?;
                out.users.push(u);
                out.positives.push(i);
                out.negatives.extend_from_slice(&drawn);
            }
            Ok(out)
        })
        .collect()
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

/// Reads a scalar tensor as `f64`.
pub(crate) fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// Divides every running sum by the number of batches.
pub(crate) fn mean_stats(sums: BTreeMap<String, f64>, n_batches: usize) -> EpochStats {
    let losses = sums.into_iter().map(|(k, v)| (k, v / n_batches.max(1) as f64)).collect();
    EpochStats { losses, n_batches }
}

/// Errors unless the epoch's data has the sizes (and, for a graph model, the train pair count) the model was
/// built for.
pub(crate) fn check_epoch_data(
    model: &str,
    dims: Dims,
    n_train: Option<usize>,
    data: &mmkd_data::Dataset,
) -> Result<()> {
    let same_pairs = n_train.is_none_or(|n| n == data.train.nnz());
    if data.n_users != dims.n_users || data.n_items != dims.n_items || !same_pairs {
        return Err(Error::Shape(format!(
            "{model}: the epoch's data set ({} users, {} items, {} train pairs) is not the one the model was built \
             for ({} users, {} items{})",
            data.n_users,
            data.n_items,
            data.train.nnz(),
            dims.n_users,
            dims.n_items,
            n_train.map(|n| format!(", {n} train pairs")).unwrap_or_default()
        )));
    }
    Ok(())
}

/// Errors unless `train` is `dims.n_users × dims.n_items`.
pub(crate) fn check_train_shape(model: &str, dims: Dims, train: &Csr) -> Result<()> {
    if train.n_rows() != dims.n_users || train.n_cols() != dims.n_items {
        return Err(Error::Shape(format!(
            "{model}: dims are {} users × {} items but the train matrix is {} × {}",
            dims.n_users,
            dims.n_items,
            train.n_rows(),
            train.n_cols()
        )));
    }
    Ok(())
}

/// Errors if a user id is out of range.
pub(crate) fn check_users(model: &str, users: &[u32], n_users: usize) -> Result<()> {
    if let Some(&u) = users.iter().find(|&&u| u as usize >= n_users) {
        return Err(Error::Shape(format!("{model}: user {u} out of range for {n_users} users")));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// NGCF.

/// Which reference NGCF follows (spec §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NgcfVariant {
    /// RecBole: symmetric `L̂` without self-loops, one LeakyReLU over the sum, the normalised output feeds the
    /// next layer; Xavier-normal embeddings and weights, zero biases.
    #[default]
    Recbole,
    /// Official TF code: `Â = D̃^{-1}(A + I)`, two LeakyReLUs summed, the raw output feeds the next layer;
    /// Glorot-uniform (TF fans) for embeddings, weights and biases.
    Official,
}

/// NGCF's hyper-parameters (spec §3, [PORT] column). In TOML: `[ngcf] embed_dim = 128,
/// hidden_sizes = [128, 128, 128], message_dropout = 0.1, node_dropout = 0.0, reg_weight = 1e-5`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NgcfConfig {
    /// Width d of the layer-0 embeddings (RecBole `embedding_size`, official `--embed_size`).
    pub embed_dim: usize,
    /// Output width of every layer (RecBole `hidden_size_list`, official `--layer_size`).
    pub hidden_sizes: Vec<usize>,
    /// Message dropout p_msg on every layer's output (RecBole `message_dropout`, official `--mess_dropout`).
    pub message_dropout: f64,
    /// Edge dropout on the normalised adjacency (RecBole `node_dropout`, official `--node_dropout`).
    pub node_dropout: f64,
    /// λ of the embedding regulariser (RecBole `reg_weight`, official `--regs`).
    pub reg_weight: f64,
    /// Form of the embedding regulariser: `half_sq` (official) or `norm` (RecBole).
    pub reg_form: RegForm,
    /// Rows per step (RecBole `train_batch_size`, official `--batch_size`).
    pub batch_size: usize,
    /// Batch sampling: `int` (RecBole) or `user` (official).
    pub sampler: Sampler,
    /// `recbole` or `official` (see [`NgcfVariant`]).
    pub variant: NgcfVariant,
}

impl Default for NgcfConfig {
    fn default() -> Self {
        Self {
            embed_dim: 128,
            hidden_sizes: vec![128, 128, 128],
            message_dropout: 0.1,
            node_dropout: 0.0,
            reg_weight: 1e-5,
            reg_form: RegForm::HalfSq,
            batch_size: 1024,
            sampler: Sampler::Int,
            variant: NgcfVariant::Recbole,
        }
    }
}

impl NgcfConfig {
    /// Rejects zero widths or batch, no layer, dropouts outside `[0, 1)` and a negative or non-finite
    /// `reg_weight`.
    pub fn validate(&self) -> Result<()> {
        if self.embed_dim == 0 || self.batch_size == 0 || self.hidden_sizes.contains(&0) {
            return Err(Error::Config(format!(
                "ngcf: embed_dim, batch_size and every hidden size must be at least 1, got {}, {} and {:?}",
                self.embed_dim, self.batch_size, self.hidden_sizes
            )));
        }
        if self.hidden_sizes.is_empty() {
            return Err(Error::Config("ngcf: hidden_sizes needs at least one layer".into()));
        }
        for (name, p) in [("message_dropout", self.message_dropout), ("node_dropout", self.node_dropout)] {
            if !(0.0..1.0).contains(&p) {
                return Err(Error::Config(format!("ngcf: {name} must lie in [0, 1), got {p}")));
            }
        }
        if !(self.reg_weight.is_finite() && self.reg_weight >= 0.0) {
            return Err(Error::Config(format!("ngcf: reg_weight must be finite and ≥ 0, got {}", self.reg_weight)));
        }
        Ok(())
    }

    /// Width of `E*`: `embed_dim + Σ hidden_sizes`.
    pub fn out_dim(&self) -> usize {
        self.embed_dim + self.hidden_sizes.iter().sum::<usize>()
    }
}

/// The two transforms of one NGCF layer: `w1` on the sum (or side) term, `w2` on the bi-interaction term.
#[derive(Debug, Clone)]
pub struct NgcfLayer {
    pub w1: Linear,
    pub w2: Linear,
}

/// One NGCF layer before message dropout: `E'` of the module docs for `variant`, `(N, d_out)`. `adj` must be
/// the variant's propagation matrix ([`sym_normalized`] for `recbole`, [`row_normalized_with_self_loops`]
/// for `official`), `e` the layer input `(N, d_in)`.
pub fn ngcf_layer(adj: &SparseMatrix, e: &Tensor, layer: &NgcfLayer, variant: NgcfVariant) -> Result<Tensor> {
    let side = spmm(adj, e)?; // (N, d_in)
    let bi = (&side * e)?; // (N, d_in)
    let lrelu = |x: &Tensor| candle_nn::ops::leaky_relu(x, LRELU_SLOPE);
    Ok(match variant {
        NgcfVariant::Recbole => {
            let sum = layer.w1.forward(&(e + &side)?)?; // (N, d_out)
            lrelu(&(sum + layer.w2.forward(&bi)?)?)?
        }
        NgcfVariant::Official => (lrelu(&layer.w1.forward(&side)?)? + lrelu(&layer.w2.forward(&bi)?)?)?,
    })
}

/// The official code's `norm` adjacency `Â = D̃^{-1}(A + I)` over `n_users + n_items` nodes (users first):
/// row k has `1/(deg_k + 1)` on k itself and on each neighbour. Isolated nodes keep only their self-loop.
pub fn row_normalized_with_self_loops(train: &Csr) -> Result<SparseMatrix> {
    let (n_users, n_items) = (train.n_rows(), train.n_cols());
    let n_nodes = n_users + n_items;
    let by_item = train.transpose();
    let mut rows = Vec::with_capacity(n_nodes + 2 * train.nnz());
    let mut cols = Vec::with_capacity(rows.capacity());
    let mut values = Vec::with_capacity(rows.capacity());
    let mut push_row = |node: usize, neighbours: &mut dyn Iterator<Item = u32>, degree: usize| {
        let v = 1.0 / (degree + 1) as f32;
        rows.push(node as u32);
        cols.push(node as u32);
        values.push(v);
        for c in neighbours {
            rows.push(node as u32);
            cols.push(c);
            values.push(v);
        }
    };
    for u in 0..n_users {
        let row = train.row(u);
        push_row(u, &mut row.iter().map(|&i| (n_users as u32) + i), row.len());
    }
    for i in 0..n_items {
        let row = by_item.row(i);
        push_row(n_users + i, &mut row.iter().copied(), row.len());
    }
    SparseMatrix::from_pattern(SparsePattern::from_coo(n_nodes, n_nodes, &rows, &cols)?, values)
}

/// `a` with every entry dropped with probability `p` and the kept ones scaled by `1/(1 − p)` (both codes'
/// `sparse_dropout`), drawn from `rng`. `p = 0` returns a clone and draws nothing.
pub fn edge_dropout(a: &SparseMatrix, p: f64, rng: &mut ChaCha8Rng) -> Result<SparseMatrix> {
    if !(0.0..1.0).contains(&p) {
        return Err(Error::Config(format!("edge_dropout: p must lie in [0, 1), got {p}")));
    }
    if p == 0.0 {
        return Ok(a.clone());
    }
    let scale = 1.0 / (1.0 - p);
    let (mut rows, mut cols, mut values) = (Vec::new(), Vec::new(), Vec::new());
    let pattern = a.pattern();
    for ((&r, &c), &v) in pattern.edge_rows().iter().zip(pattern.edge_cols()).zip(a.values()) {
        if rng.random::<f64>() >= p {
            rows.push(r);
            cols.push(c);
            values.push((f64::from(v) * scale) as f32);
        }
    }
    SparseMatrix::from_coo(a.n_rows(), a.n_cols(), &rows, &cols, values)
}

/// Evaluation-mode `E*` split by side.
struct EvalCache {
    /// `(n_users, out_dim)`.
    user: Tensor,
    /// `(out_dim, n_items)`, contiguous.
    item_t: Tensor,
}

/// The NGCF model. Keys under its `vb`: `user_emb.weight` `(n_users, d)`, `item_emb.weight` `(n_items, d)`,
/// and per layer l `layers.{l}.w1.{weight,bias}`, `layers.{l}.w2.{weight,bias}` (weights `(d_l, d_{l−1})`).
pub struct Ngcf {
    cfg: NgcfConfig,
    dims: Dims,
    user_emb: Tensor,
    item_emb: Tensor,
    layers: Vec<NgcfLayer>,
    /// The variant's propagation matrix over `n_users + n_items` nodes.
    adj: SparseMatrix,
    n_train: usize,
    varmap: VarMap,
    device: Device,
    eval_cache: Option<EvalCache>,
}

impl fmt::Debug for Ngcf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ngcf")
            .field("cfg", &self.cfg)
            .field("dims", &self.dims)
            .field("adj", &self.adj)
            .field("eval_cached", &self.eval_cache.is_some())
            .finish_non_exhaustive()
    }
}

impl Ngcf {
    /// Builds the parameters through `vb` with the variant's initialisation (module docs) and the propagation
    /// matrix from `train` (users × items, train split only). `varmap` is the map behind `vb`, returned by
    /// [`Backbone::vars`]; `dims` comes from the data and must match `train`.
    pub fn new(
        vb: VarBuilder,
        varmap: &VarMap,
        cfg: &NgcfConfig,
        dims: Dims,
        train: &Csr,
        device: &Device,
    ) -> Result<Self> {
        cfg.validate()?;
        check_train_shape("ngcf", dims, train)?;
        let d = cfg.embed_dim;
        let official = cfg.variant == NgcfVariant::Official;
        // TF's Glorot-uniform on an [a, b] variable: U(±√(6/(a + b))); PyTorch's Xavier-normal N(0, 2/(a + b)).
        let init = |a: usize, b: usize| {
            if official {
                let bound = (6.0 / (a + b) as f64).sqrt();
                Init::Uniform { lo: -bound, up: bound }
            } else {
                Init::Randn { mean: 0.0, stdev: (2.0 / (a + b) as f64).sqrt() }
            }
        };
        let user_emb = vb.pp("user_emb").get_with_hints((dims.n_users, d), "weight", init(dims.n_users, d))?;
        let item_emb = vb.pp("item_emb").get_with_hints((dims.n_items, d), "weight", init(dims.n_items, d))?;
        let mut layers = Vec::with_capacity(cfg.hidden_sizes.len());
        let mut d_in = d;
        for (l, &d_out) in cfg.hidden_sizes.iter().enumerate() {
            let vb_l = vb.pp("layers").pp(l);
            let linear = |name: &str| -> Result<Linear> {
                let vb_w = vb_l.pp(name);
                let weight = vb_w.get_with_hints((d_out, d_in), "weight", init(d_in, d_out))?;
                let b_init = if official { init(1, d_out) } else { Init::Const(0.0) };
                let bias = vb_w.get_with_hints(d_out, "bias", b_init)?;
                Ok(Linear::new(weight, Some(bias)))
            };
            layers.push(NgcfLayer { w1: linear("w1")?, w2: linear("w2")? });
            d_in = d_out;
        }
        let adj = match cfg.variant {
            NgcfVariant::Recbole => sym_normalized(train),
            NgcfVariant::Official => row_normalized_with_self_loops(train)?,
        };
        Ok(Self {
            cfg: cfg.clone(),
            dims,
            user_emb,
            item_emb,
            layers,
            adj,
            n_train: train.nnz(),
            varmap: varmap.clone(),
            device: device.clone(),
            eval_cache: None,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &NgcfConfig {
        &self.cfg
    }

    /// The propagation matrix (`L̂` or `Â`).
    pub fn adjacency(&self) -> &SparseMatrix {
        &self.adj
    }

    /// `E* = [E⁰ ‖ stored_1 ‖ … ‖ stored_L]`, `(n_users + n_items, out_dim)`. With `rng` (training mode) the
    /// node and message dropouts are drawn from it; without, there is no dropout.
    pub fn forward(&self, mut rng: Option<&mut ChaCha8Rng>) -> Result<Tensor> {
        let e0 = Tensor::cat(&[&self.user_emb, &self.item_emb], 0)?; // (N, d)
        let adj = match rng.as_deref_mut() {
            Some(rng) => edge_dropout(&self.adj, self.cfg.node_dropout, rng)?,
            None => self.adj.clone(),
        };
        let eps = match self.cfg.variant {
            NgcfVariant::Recbole => TORCH_L2_EPS,
            NgcfVariant::Official => TF_L2_EPS,
        };
        let mut stored = vec![e0.clone()];
        let mut input = e0;
        for layer in &self.layers {
            let mut out = ngcf_layer(&adj, &input, layer, self.cfg.variant)?; // (N, d_l)
            if let Some(rng) = rng.as_deref_mut() {
                out = dropout(&out, self.cfg.message_dropout, rng)?;
            }
            let normalised = l2_normalize(&out, eps)?;
            input = match self.cfg.variant {
                NgcfVariant::Recbole => normalised.clone(),
                NgcfVariant::Official => out,
            };
            stored.push(normalised);
        }
        Ok(Tensor::cat(&stored, 1)?) // (N, out_dim)
    }

    /// The named losses of one batch (training-mode forward with dropouts from `rng`): `"bpr"`, `"reg"`
    /// (weighted) and `"total"`, in that order.
    pub fn batch_losses(&self, batch: &TripleBatch, rng: &mut ChaCha8Rng) -> Result<Vec<(&'static str, Tensor)>> {
        let b = batch.len();
        if b == 0 || batch.positives.len() != b || batch.negatives.len() != b {
            return Err(Error::Shape(format!(
                "ngcf: a batch needs as many users, positives and negatives, at least one, got {}, {} and {}",
                b,
                batch.positives.len(),
                batch.negatives.len()
            )));
        }
        let n_users = self.dims.n_users as u32;
        let node = |items: &[u32]| -> Result<Tensor> {
            let ids: Vec<u32> = items.iter().map(|&i| n_users + i).collect();
            Ok(Tensor::from_vec(ids, b, &self.device)?)
        };
        let e = self.forward(Some(rng))?; // (N, out_dim)
        let u = e.index_select(&Tensor::from_slice(&batch.users, b, &self.device)?, 0)?; // (b, out_dim)
        let pos = e.index_select(&node(&batch.positives)?, 0)?; // (b, out_dim)
        let neg = e.index_select(&node(&batch.negatives)?, 0)?; // (b, out_dim)
        let diff = (&u * (&pos - &neg)?)?.sum(1)?; // (b,): ŷ⁺ − ŷ⁻
        let bpr = crate::mf::bpr_loss(&diff)?;
        let reg = emb_reg(&[&u, &pos, &neg], self.cfg.reg_form, b)?.affine(self.cfg.reg_weight, 0.0)?;
        let total = (&bpr + &reg)?;
        Ok(vec![("bpr", bpr), ("reg", reg), ("total", total)])
    }
}

/// Runs one epoch of BPR steps: `losses` gives a batch's named terms, `"total"` last; a non-finite total
/// ends the epoch before its step. Shared by NGCF and DGCF.
pub(crate) fn bpr_epoch(
    ctx: &mut EpochCtx<'_>,
    batches: &[TripleBatch],
    model: &str,
    mut losses: impl FnMut(&TripleBatch, &mut ChaCha8Rng) -> Result<Vec<(&'static str, Tensor)>>,
) -> Result<EpochStats> {
    let mut sums: BTreeMap<String, f64> = BTreeMap::new();
    let mut n_batches = 0;
    for batch in batches {
        let named = losses(batch, &mut *ctx.rng)?;
        let Some((_, total)) = named.last() else {
            return Err(Error::Shape(format!("{model}: a batch produced no loss")));
        };
        let mut total_value = f64::NAN;
        for (name, t) in &named {
            let v = scalar(t)?;
            *sums.entry((*name).to_owned()).or_insert(0.0) += v;
            total_value = v;
        }
        n_batches += 1;
        if !total_value.is_finite() {
            tracing::warn!(epoch = ctx.epoch, batch = n_batches - 1, model, "non-finite loss, epoch stopped");
            break;
        }
        ctx.optimizer.backward_step(total)?;
    }
    Ok(mean_stats(sums, n_batches))
}

impl Backbone for Ngcf {
    fn name(&self) -> &'static str {
        "ngcf"
    }

    /// Batches from `cfg.sampler` with one negative per row; per batch one graph-wide training forward and one
    /// optimiser step. Stats: means over batches of `"bpr"`, `"reg"` (weighted) and `"total"`.
    fn fit_epoch(&mut self, ctx: &mut EpochCtx<'_>) -> Result<EpochStats> {
        let started = Instant::now();
        check_epoch_data("ngcf", self.dims, Some(self.n_train), ctx.dataset)?;
        self.eval_cache = None;
        let batches = sample_epoch(self.cfg.sampler, &ctx.dataset.train, self.cfg.batch_size, 1, ctx.rng)?;
        let stats = bpr_epoch(ctx, &batches, "ngcf", |batch, rng| self.batch_losses(batch, rng))?;
        tracing::debug!(
            epoch = ctx.epoch,
            batches = stats.n_batches,
            secs = started.elapsed().as_secs_f32(),
            "NGCF epoch"
        );
        Ok(stats)
    }

    /// Caches the evaluation-mode `E*` (no dropout).
    fn prepare_eval(&mut self) -> Result<()> {
        let e = self.forward(None)?.detach();
        let user = e.narrow(0, 0, self.dims.n_users)?;
        let item_t = e.narrow(0, self.dims.n_users, self.dims.n_items)?.t()?.contiguous()?;
        self.eval_cache = Some(EvalCache { user, item_t });
        Ok(())
    }

    /// `E*[users] · E*[items]ᵀ`, `(users.len(), n_items)`; needs [`Backbone::prepare_eval`].
    fn score_users(&self, users: &[u32]) -> Result<Tensor> {
        let cache = self
            .eval_cache
            .as_ref()
            .ok_or_else(|| Error::Config("ngcf: call prepare_eval before score_users".into()))?;
        check_users("ngcf", users, self.dims.n_users)?;
        let idx = Tensor::from_slice(users, users.len(), &self.device)?;
        Ok(cache.user.index_select(&idx, 0)?.matmul(&cache.item_t)?) // (b, n_items)
    }

    fn vars(&self) -> &VarMap {
        &self.varmap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_typos_and_ranges() {
        let cfg: NgcfConfig = serde_json::from_str(r#"{"variant": "official", "sampler": "user"}"#).unwrap();
        assert_eq!(cfg, NgcfConfig { variant: NgcfVariant::Official, sampler: Sampler::User, ..Default::default() });
        assert_eq!(NgcfConfig::default().out_dim(), 512);
        assert!(serde_json::from_str::<NgcfConfig>(r#"{"mess_dropout": 0.1}"#).is_err());
        assert!(NgcfConfig { hidden_sizes: vec![], ..Default::default() }.validate().is_err());
        assert!(NgcfConfig { message_dropout: 1.0, ..Default::default() }.validate().is_err());
        assert!(NgcfConfig { reg_weight: -1.0, ..Default::default() }.validate().is_err());
        assert!(NgcfConfig::default().validate().is_ok());
    }

    #[test]
    fn dropout_keeps_about_one_minus_p_and_rescales() {
        let x = Tensor::ones((50, 40), DType::F32, &Device::Cpu).unwrap();
        let mut rng = mmkd_data::stream(1, "dropout");
        let out: Vec<f32> = dropout(&x, 0.25, &mut rng).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert!(out.iter().all(|&v| v == 0.0 || (v - 4.0 / 3.0).abs() < 1e-6));
        let kept = out.iter().filter(|&&v| v > 0.0).count();
        assert!((1400..1600).contains(&kept), "{kept} of 2000 kept");
        assert!(dropout(&x, 1.0, &mut rng).is_err());
    }
}
