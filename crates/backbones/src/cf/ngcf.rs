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
//! Defaults are the spec's \[PORT\] column: d = 128, layers [128, 128, 128], message dropout 0.1, node (edge)
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

use std::fmt;

use candle_core::{Device, Module, Tensor};
use candle_nn::{Init, Linear, VarBuilder, VarMap};
use mmkd_data::Csr;
use mmkd_features::nn::l2_normalize;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::common::{check_train_shape, into_step, DotScores, EpochBatches, Sampler, TripleBatch};
use crate::loss::{dropout, emb_reg, RegForm};
use crate::model::{Backbone, Dims, EpochCtx, Recommender, StepLosses};
use crate::{Error, Result};
use mmkd_nn::graph::sym_normalized;
use mmkd_nn::sparse::{spmm, SparseMatrix, SparsePattern};

/// LeakyReLU slope of both NGCF codes (`tf.nn.leaky_relu` default, RecBole `negative_slope=0.2`).
const LRELU_SLOPE: f64 = 0.2;
/// `F.normalize`'s epsilon on the norm (RecBole).
const TORCH_L2_EPS: f64 = 1e-12;
/// `tf.math.l2_normalize` clamps the squared norm at 1e-12, i.e. the norm at 1e-6 (official code).
const TF_L2_EPS: f64 = 1e-6;

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

/// NGCF's hyper-parameters (spec §3, \[PORT\] column). In TOML: `[ngcf] embed_dim = 128,
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
    Ok(SparseMatrix::from_pattern(SparsePattern::from_coo(n_nodes, n_nodes, &rows, &cols)?, values)?)
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
    Ok(SparseMatrix::from_coo(a.n_rows(), a.n_cols(), &rows, &cols, values)?)
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
    /// The train matrix the model is fitted on.
    train: Csr,
    /// This epoch's batches ([`Backbone::begin_epoch`]).
    epoch_batches: EpochBatches,
    varmap: VarMap,
    device: Device,
    eval_cache: Option<DotScores>,
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
            train: train.clone(),
            epoch_batches: EpochBatches::default(),
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
        let bpr = crate::loss::bpr_loss(&diff)?;
        let reg = emb_reg(&[&u, &pos, &neg], self.cfg.reg_form, b)?.affine(self.cfg.reg_weight, 0.0)?;
        let total = (&bpr + &reg)?;
        Ok(vec![("bpr", bpr), ("reg", reg), ("total", total)])
    }
}

impl Backbone for Ngcf {
    fn name(&self) -> &'static str {
        "ngcf"
    }

    /// Batches from `cfg.sampler` with one negative per row; per batch one graph-wide training forward and one
    /// optimiser step. Stats: means over batches of `"bpr"`, `"reg"` (weighted) and `"total"`.
    fn begin_epoch(&mut self, ctx: &mut EpochCtx<'_>) -> Result<usize> {
        self.eval_cache = None;
        self.epoch_batches.draw(self.cfg.sampler, &self.train, self.cfg.batch_size, 1, ctx.rng)
    }

    fn step_losses(&mut self, step: usize, rng: &mut ChaCha8Rng) -> Result<StepLosses> {
        let batch = self.epoch_batches.get(step, "ngcf")?;
        let named = self.batch_losses(batch, rng)?;
        into_step(named, "ngcf")
    }

    /// Caches the evaluation-mode `E*` (no dropout).
    fn prepare_eval(&mut self) -> Result<()> {
        self.eval_cache = Some(DotScores::from_joint(&self.forward(None)?, self.dims)?);
        Ok(())
    }

    fn vars(&self) -> &VarMap {
        &self.varmap
    }
}

impl Recommender for Ngcf {
    /// `E*[users] · E*[items]ᵀ`, `(users.len(), n_items)`; needs [`Backbone::prepare_eval`].
    fn score_users(&self, users: &[u32]) -> Result<Tensor> {
        DotScores::score_cached(self.eval_cache.as_ref(), "ngcf", users)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

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
