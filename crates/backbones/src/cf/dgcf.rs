//! DGCF: Disentangled Graph Collaborative Filtering (Wang et al., SIGIR'20), spec `cf-baselines.md` §4.
//!
//! References: the official TF1 code (xiangwang1223/disentangled_graph_collaborative_filtering @56dbc30,
//! `DGCF_v1.py`) and RecBole @7b02be5 (`general_recommender/dgcf.py`, `properties/model/DGCF.yaml`).
//!
//! The only parameters are the layer-0 embeddings `E⁰` (`N × d`, users first), split into K intents of width
//! `c = d/K`. Every train pair gives two directed edges `u → U+i` and `U+i → u` (`2|R|` edges, head = the
//! node that aggregates); each edge carries K routing logits `S`, set to 1 at the start of every forward and
//! kept across layers. Per layer, T routing iterations over the layer input `X = [X_1 ‖ … ‖ X_K]`:
//! ```text
//! P = softmax_k(S);  deg_k(n) = max(Σ_{e: head n} P[e,k], 1e-8);  w[e,k] = P[e,k] / √(deg_k(h_e)·deg_k(t_e))
//! Y_k = A(w[:,k]) · X_k                          (graph::spmm_weighted over the head × tail pattern)
//! S  += ⟨l2n(Y_k[h_e]), tanh(l2n(X_k[t_e]))⟩     (graph::edge_dot, all K first, then the update)
//! ```
//! the layer output is `[Y_1 ‖ … ‖ Y_K]` of the last iteration, and `E* = mean(E⁰, …, E^L)` (`sum` with
//! `layer_pooling = "sum"`, the paper's form). Gradients flow through the routing, as in both codes.
//! `ŷ(u, i) = ⟨E*[u], E*[U+i]⟩`. Loss per batch:
//! `mean softplus(−(ŷ⁺ − ŷ⁻)) + reg_weight·reg(E⁰[u], E⁰[i⁺], E⁰[i⁻]) + cor_weight·L_cor`, where `L_cor` is the
//! distance correlation between intent chunks of `E*` on m fresh distinct users and m distinct items
//! ([`cor_loss`], [`distance_correlation`]) with `m = ⌊max(U, I)/(⌊|R|/B⌋ + 1)⌋` clamped to `min(U, I)`.
//!
//! Defaults are the spec's \[PORT\] column: d = 128, K = 4, T = 2, L = 1, reg 1e-3, cor 0.01, batch 1024,
//! S-int sampling, `half_sq` regulariser (official), mean pooling and adjacent intent pairs (both codes);
//! Xavier-normal initialisation (RecBole). The paper's defaults differ only in d = 64.
//!
//! Deviations: the official code's NaN on isolated nodes is avoided by RecBole's degree clamp (spec §0);
//! the test-time `pick` option of the official code is not ported. `cor_pairs = "all"` sums dCor over every
//! pair of intents without dividing (the paper's Eq. as we read it), where `adjacent` divides by `K(K+1)/2`
//! as both codes do. If m < 2 the correlation term is skipped (it needs two rows per side).

use std::fmt;

use candle_core::{Device, Tensor, D};
use candle_nn::{Init, VarBuilder, VarMap};
use mmkd_data::Csr;
use mmkd_features::nn::l2_normalize;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::common::{check_train_shape, into_step, DotScores, EpochBatches, Sampler, TripleBatch};
use crate::loss::{emb_reg, RegForm};
use crate::model::{Backbone, Dims, EpochCtx, Recommender, StepLosses};
use crate::{Error, Result};
use mmkd_nn::sparse::{edge_dot, spmm_weighted, SparsePattern};

/// RecBole's clamp of the intent-wise degrees.
const DEGREE_MIN: f64 = 1e-8;
/// `F.normalize`'s epsilon.
const L2_EPS: f64 = 1e-12;

/// How the layer outputs become `E*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerPooling {
    /// `mean(E⁰, …, E^L)` (both codes).
    #[default]
    Mean,
    /// `Σ_l E^l` (the paper; the same ranking, scores scaled by `(L + 1)²`).
    Sum,
}

/// Which intent pairs the independence loss compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CorPairs {
    /// `Σ_{k=1}^{K−1} dCor(Z_k, Z_{k+1}) / (K(K+1)/2)` (both codes).
    #[default]
    Adjacent,
    /// `Σ_{k<k'} dCor(Z_k, Z_k')` (the paper).
    All,
}

/// DGCF's hyper-parameters (spec §4, \[PORT\] column). In TOML: `[dgcf] embed_dim = 128, n_factors = 4,
/// n_iterations = 2, n_layers = 1, reg_weight = 1e-3, cor_weight = 0.01`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DgcfConfig {
    /// Width d of `E⁰` (RecBole `embedding_size`, official `--embed_size`); a multiple of `n_factors`.
    pub embed_dim: usize,
    /// Number of intents K (RecBole `n_factors`, official `--n_factors`).
    pub n_factors: usize,
    /// Routing iterations T per layer (RecBole `n_iterations`, official `--n_iterations`).
    pub n_iterations: usize,
    /// Graph layers L (RecBole `n_layers`, official `--n_layers`).
    pub n_layers: usize,
    /// λ of the embedding regulariser on the layer-0 rows (RecBole `reg_weight`, official `--regs`).
    pub reg_weight: f64,
    /// Form of the embedding regulariser: `half_sq` (official) or `norm` (RecBole).
    pub reg_form: RegForm,
    /// λ_cor of the independence loss (RecBole `cor_weight`, official `--corDecay`); 0 switches it off.
    pub cor_weight: f64,
    /// `adjacent` (codes) or `all` (paper) intent pairs in the independence loss.
    pub cor_pairs: CorPairs,
    /// `mean` (codes) or `sum` (paper) over the layers.
    pub layer_pooling: LayerPooling,
    /// Rows per step (RecBole `train_batch_size`, official `--batch_size`).
    pub batch_size: usize,
    /// Batch sampling: `int` (RecBole) or `user` (official).
    pub sampler: Sampler,
}

impl Default for DgcfConfig {
    fn default() -> Self {
        Self {
            embed_dim: 128,
            n_factors: 4,
            n_iterations: 2,
            n_layers: 1,
            reg_weight: 1e-3,
            reg_form: RegForm::HalfSq,
            cor_weight: 0.01,
            cor_pairs: CorPairs::Adjacent,
            layer_pooling: LayerPooling::Mean,
            batch_size: 1024,
            sampler: Sampler::Int,
        }
    }
}

impl DgcfConfig {
    /// Rejects zero sizes, an `embed_dim` that `n_factors` does not divide, and negative or non-finite
    /// weights.
    pub fn validate(&self) -> Result<()> {
        if self.embed_dim == 0 || self.n_factors == 0 || self.n_iterations == 0 || self.batch_size == 0 {
            return Err(Error::Config(format!(
                "dgcf: embed_dim, n_factors, n_iterations and batch_size must be at least 1, got {}, {}, {} and {}",
                self.embed_dim, self.n_factors, self.n_iterations, self.batch_size
            )));
        }
        if self.embed_dim % self.n_factors != 0 {
            return Err(Error::Config(format!(
                "dgcf: embed_dim ({}) must be a multiple of n_factors ({})",
                self.embed_dim, self.n_factors
            )));
        }
        for (name, w) in [("reg_weight", self.reg_weight), ("cor_weight", self.cor_weight)] {
            if !(w.is_finite() && w >= 0.0) {
                return Err(Error::Config(format!("dgcf: {name} must be finite and ≥ 0, got {w}")));
            }
        }
        Ok(())
    }
}

/// The directed edge list of DGCF over `n_users + n_items` nodes: for the train pairs in row-major order,
/// edges `0..|R|` are `u → U+i` (head u), edges `|R|..2|R|` are `U+i → u` (head U+i). The pattern's rows are
/// heads and its columns tails, so `spmm_weighted` aggregates at the head.
#[derive(Debug, Clone)]
pub struct DgcfGraph {
    pattern: SparsePattern,
    /// Head node of every edge, u32 `(2|R|,)`.
    heads: Tensor,
    /// Tail node of every edge, u32 `(2|R|,)`.
    tails: Tensor,
}

impl DgcfGraph {
    /// The edge list of `train` (users × items), index tensors on `device`.
    pub fn new(train: &Csr, device: &Device) -> Result<Self> {
        let n_users = train.n_rows() as u32;
        let pairs = train.pairs();
        let mut heads: Vec<u32> = pairs.iter().map(|&(u, _)| u).collect();
        heads.extend(pairs.iter().map(|&(_, i)| n_users + i));
        let mut tails: Vec<u32> = pairs.iter().map(|&(_, i)| n_users + i).collect();
        tails.extend(pairs.iter().map(|&(u, _)| u));
        let n_nodes = train.n_rows() + train.n_cols();
        let pattern = SparsePattern::from_coo(n_nodes, n_nodes, &heads, &tails)?;
        let n_edges = heads.len();
        Ok(Self {
            pattern,
            heads: Tensor::from_vec(heads, n_edges, device)?,
            tails: Tensor::from_vec(tails, n_edges, device)?,
        })
    }

    /// Number of nodes `n_users + n_items`.
    pub fn n_nodes(&self) -> usize {
        self.pattern.n_rows()
    }

    /// Number of directed edges `2|R|`.
    pub fn n_edges(&self) -> usize {
        self.pattern.nnz()
    }

    /// The head × tail pattern, edges in the order of [`DgcfGraph::new`].
    pub fn pattern(&self) -> &SparsePattern {
        &self.pattern
    }
}

/// What [`route`] returns.
#[derive(Debug, Clone)]
pub struct Routed {
    /// `E*`, `(N, d)`.
    pub emb: Tensor,
    /// The routing logits `S` after the last iteration of the last layer, `(2|R|, K)` in edge order.
    pub logits: Tensor,
}

/// DGCF's propagation of `e0` `(N, d)` over `graph` with `cfg`'s K, T, L and pooling (module docs).
/// Differentiable in `e0`, through the routing.
pub fn route(graph: &DgcfGraph, e0: &Tensor, cfg: &DgcfConfig) -> Result<Routed> {
    let (n, d) = e0.dims2()?;
    let k_n = cfg.n_factors;
    if n != graph.n_nodes() || k_n == 0 || d % k_n != 0 {
        return Err(Error::Shape(format!(
            "dgcf: expected ({}, d) embeddings with d a multiple of {k_n}, got {:?}",
            graph.n_nodes(),
            e0.dims()
        )));
    }
    let c = d / k_n;
    let (dtype, device) = (e0.dtype(), e0.device());
    let mut s = Tensor::ones((graph.n_edges(), k_n), dtype, device)?; // (E, K)
    let mut layers = vec![e0.clone()];
    let mut x = e0.clone();
    for _ in 0..cfg.n_layers {
        let chunks: Vec<Tensor> = (0..k_n).map(|k| x.narrow(1, k * c, c)).collect::<candle_core::Result<_>>()?;
        // The tail side of the routing update depends on the layer input only.
        let tail_keys: Vec<Tensor> =
            chunks.iter().map(|xk| l2_normalize(xk, L2_EPS)?.tanh()).collect::<candle_core::Result<_>>()?;
        let mut ys = Vec::new();
        for _ in 0..cfg.n_iterations {
            let p = candle_nn::ops::softmax(&s, D::Minus1)?; // (E, K)
            let deg = Tensor::zeros((n, k_n), dtype, device)?.index_add(&graph.heads, &p, 0)?; // (N, K)
            let inv_sqrt = deg.clamp(DEGREE_MIN, f64::INFINITY)?.sqrt()?.recip()?; // (N, K)
            let w = ((p * inv_sqrt.index_select(&graph.heads, 0)?)? * inv_sqrt.index_select(&graph.tails, 0)?)?; // (E, K)
            ys = (0..k_n)
                .map(|k| spmm_weighted(&graph.pattern, &w.narrow(1, k, 1)?, &chunks[k])) // (N, c)
                .collect::<candle_core::Result<Vec<_>>>()?;
            let a = (0..k_n)
                .map(|k| edge_dot(&graph.pattern, &l2_normalize(&ys[k], L2_EPS)?, &tail_keys[k])) // (E,)
                .collect::<candle_core::Result<Vec<_>>>()?;
            s = (s + Tensor::stack(&a, 1)?)?; // (E, K)
        }
        x = Tensor::cat(&ys, 1)?; // (N, d)
        layers.push(x.clone());
    }
    let sum = layers.iter().skip(1).try_fold(layers[0].clone(), |acc, l| acc + l)?;
    let emb = match cfg.layer_pooling {
        LayerPooling::Mean => sum.affine(1.0 / layers.len() as f64, 0.0)?,
        LayerPooling::Sum => sum,
    };
    Ok(Routed { emb, logits: s })
}

/// The (double-centred) distance matrix of the rows of `x` `(n, c)`, as both codes compute it:
/// `Dist_ab = √(max(‖x_a‖² − 2x_a·x_b + ‖x_b‖², 0) + 1e-8)`, then minus row and column means plus the grand
/// mean. `(n, n)`.
fn centered_distance(x: &Tensor) -> Result<Tensor> {
    let r = x.sqr()?.sum_keepdim(1)?; // (n, 1)
    let gram = x.matmul(&x.t()?)?; // (n, n)
    let sq = (gram.affine(-2.0, 0.0)?.broadcast_add(&r)?.broadcast_add(&r.t()?))?.relu()?; // (n, n)
    let dist = (sq + 1e-8)?.sqrt()?;
    let col_mean = dist.mean_keepdim(0)?; // (1, n)
    let row_mean = dist.mean_keepdim(1)?; // (n, 1)
    let grand = dist.mean_all()?;
    Ok(dist.broadcast_sub(&col_mean)?.broadcast_sub(&row_mean)?.broadcast_add(&grand)?)
}

/// `√(max(Σ_ab P_ab Q_ab / n², 0) + 1e-8)` for centred distance matrices `(n, n)`.
fn distance_covariance(p: &Tensor, q: &Tensor) -> Result<Tensor> {
    let n = p.dim(0)? as f64;
    Ok(((p * q)?.sum_all()?.affine(1.0 / (n * n), 0.0)?.relu()? + 1e-8)?.sqrt()?)
}

/// Distance correlation of the rows of `x` and `y` (both `(n, ·)`, n ≥ 2) exactly as both codes compute it
/// (spec §4): `dcov(Cx, Cy) / (√max(dcov(Cx, Cx)·dcov(Cy, Cy), 0) + 1e-10)`. A scalar in [0, 1].
pub fn distance_correlation(x: &Tensor, y: &Tensor) -> Result<Tensor> {
    if x.rank() != 2 || y.rank() != 2 || x.dim(0)? != y.dim(0)? || x.dim(0)? < 2 {
        return Err(Error::Shape(format!(
            "distance_correlation: expected (n, ·) and (n, ·) with n ≥ 2, got {:?} and {:?}",
            x.dims(),
            y.dims()
        )));
    }
    let (cx, cy) = (centered_distance(x)?, centered_distance(y)?);
    let xy = distance_covariance(&cx, &cy)?;
    let xx = distance_covariance(&cx, &cx)?;
    let yy = distance_covariance(&cy, &cy)?;
    Ok(xy.div(&((xx * yy)?.relu()?.sqrt()? + 1e-10)?)?)
}

/// The independence loss of `z` `(n, d)` split into `n_factors` column chunks: adjacent pairs over
/// `K(K+1)/2` (codes) or all pairs summed (paper). Unweighted; errors if K < 2 or K does not divide d.
pub fn cor_loss(z: &Tensor, n_factors: usize, pairs: CorPairs) -> Result<Tensor> {
    let (_, d) = z.dims2()?;
    if n_factors < 2 || d % n_factors != 0 {
        return Err(Error::Shape(format!("cor_loss: {n_factors} intents cannot split width {d} (need K ≥ 2)")));
    }
    let c = d / n_factors;
    let chunk = |k: usize| z.narrow(1, k * c, c);
    let mut sum = Tensor::zeros((), z.dtype(), z.device())?;
    match pairs {
        CorPairs::Adjacent => {
            for k in 0..n_factors - 1 {
                sum = (sum + distance_correlation(&chunk(k)?, &chunk(k + 1)?)?)?;
            }
            let k = n_factors as f64;
            Ok(sum.affine(2.0 / (k * (k + 1.0)), 0.0)?)
        }
        CorPairs::All => {
            for k in 0..n_factors {
                for k2 in k + 1..n_factors {
                    sum = (sum + distance_correlation(&chunk(k)?, &chunk(k2)?)?)?;
                }
            }
            Ok(sum)
        }
    }
}

/// The DGCF model. Keys under its `vb`: `user_emb.weight` `(n_users, d)` and `item_emb.weight`
/// `(n_items, d)`.
pub struct Dgcf {
    cfg: DgcfConfig,
    dims: Dims,
    user_emb: Tensor,
    item_emb: Tensor,
    graph: DgcfGraph,
    n_train: usize,
    /// The train matrix the model is fitted on.
    train: Csr,
    /// This epoch's batches ([`Backbone::begin_epoch`]).
    epoch_batches: EpochBatches,
    varmap: VarMap,
    device: Device,
    eval_cache: Option<DotScores>,
}

impl fmt::Debug for Dgcf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dgcf")
            .field("cfg", &self.cfg)
            .field("dims", &self.dims)
            .field("n_edges", &self.graph.n_edges())
            .field("eval_cached", &self.eval_cache.is_some())
            .finish_non_exhaustive()
    }
}

impl Dgcf {
    /// Builds `E⁰` through `vb` (Xavier-normal per table, `N(0, 2/(rows + d))`, RecBole) and the edge list from
    /// `train` (users × items, train split only). `varmap` is the map behind `vb`; `dims` must match `train`.
    pub fn new(
        vb: VarBuilder,
        varmap: &VarMap,
        cfg: &DgcfConfig,
        dims: Dims,
        train: &Csr,
        device: &Device,
    ) -> Result<Self> {
        cfg.validate()?;
        check_train_shape("dgcf", dims, train)?;
        let d = cfg.embed_dim;
        let init = |rows: usize| Init::Randn { mean: 0.0, stdev: (2.0 / (rows + d) as f64).sqrt() };
        let user_emb = vb.pp("user_emb").get_with_hints((dims.n_users, d), "weight", init(dims.n_users))?;
        let item_emb = vb.pp("item_emb").get_with_hints((dims.n_items, d), "weight", init(dims.n_items))?;
        Ok(Self {
            cfg: cfg.clone(),
            dims,
            user_emb,
            item_emb,
            graph: DgcfGraph::new(train, device)?,
            n_train: train.nnz(),
            train: train.clone(),
            epoch_batches: EpochBatches::default(),
            varmap: varmap.clone(),
            device: device.clone(),
            eval_cache: None,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &DgcfConfig {
        &self.cfg
    }

    /// The edge list.
    pub fn graph(&self) -> &DgcfGraph {
        &self.graph
    }

    /// `E⁰ = [E_u; E_i]`, `(N, d)`.
    pub fn ego_embeddings(&self) -> Result<Tensor> {
        Ok(Tensor::cat(&[&self.user_emb, &self.item_emb], 0)?)
    }

    /// The routed `E*` and logits of the current parameters (differentiable).
    pub fn forward(&self) -> Result<Routed> {
        route(&self.graph, &self.ego_embeddings()?, &self.cfg)
    }

    /// Users and items per side of the independence loss: `⌊max(U, I)/(⌊n_train/B⌋ + 1)⌋`, at most
    /// `min(U, I)`.
    pub fn cor_sample_size(&self) -> usize {
        let n_batch = self.n_train / self.cfg.batch_size + 1;
        (self.dims.n_users.max(self.dims.n_items) / n_batch).min(self.dims.n_users.min(self.dims.n_items))
    }

    /// The named losses of one batch: `"bpr"`, `"reg"`, `"cor"` (both weighted; `cor` only when K > 1,
    /// `cor_weight > 1e-9` and the sample holds at least two rows per side) and `"total"`. The correlation
    /// sample is drawn from `rng`.
    pub fn batch_losses(&self, batch: &TripleBatch, rng: &mut ChaCha8Rng) -> Result<Vec<(&'static str, Tensor)>> {
        let b = batch.len();
        if b == 0 || batch.positives.len() != b || batch.negatives.len() != b {
            return Err(Error::Shape(format!(
                "dgcf: a batch needs as many users, positives and negatives, at least one, got {}, {} and {}",
                b,
                batch.positives.len(),
                batch.negatives.len()
            )));
        }
        let n_users = self.dims.n_users as u32;
        let nodes = |ids: &[u32], offset: u32| -> Result<Tensor> {
            let v: Vec<u32> = ids.iter().map(|&i| offset + i).collect();
            Ok(Tensor::from_vec(v, ids.len(), &self.device)?)
        };
        let e0 = self.ego_embeddings()?;
        let e = route(&self.graph, &e0, &self.cfg)?.emb; // (N, d)
        let (u_idx, pos_idx, neg_idx) =
            (nodes(&batch.users, 0)?, nodes(&batch.positives, n_users)?, nodes(&batch.negatives, n_users)?);
        let u = e.index_select(&u_idx, 0)?; // (b, d)
        let diff = (&u * (e.index_select(&pos_idx, 0)? - e.index_select(&neg_idx, 0)?)?)?.sum(1)?; // (b,)
        let bpr = crate::loss::bpr_loss(&diff)?;
        let ego = [e0.index_select(&u_idx, 0)?, e0.index_select(&pos_idx, 0)?, e0.index_select(&neg_idx, 0)?];
        let reg = emb_reg(&[&ego[0], &ego[1], &ego[2]], self.cfg.reg_form, b)?.affine(self.cfg.reg_weight, 0.0)?;
        let mut total = (&bpr + &reg)?;
        let mut out = vec![("bpr", bpr), ("reg", reg)];
        let m = self.cor_sample_size();
        if self.cfg.n_factors > 1 && self.cfg.cor_weight > 1e-9 && m >= 2 {
            let users: Vec<u32> =
                rand::seq::index::sample(rng, self.dims.n_users, m).iter().map(|k| k as u32).collect();
            let items: Vec<u32> =
                rand::seq::index::sample(rng, self.dims.n_items, m).iter().map(|k| n_users + k as u32).collect();
            let rows = Tensor::from_vec([users, items].concat(), 2 * m, &self.device)?;
            let z = e.index_select(&rows, 0)?; // (2m, d)
            let cor = cor_loss(&z, self.cfg.n_factors, self.cfg.cor_pairs)?.affine(self.cfg.cor_weight, 0.0)?;
            total = (total + &cor)?;
            out.push(("cor", cor));
        }
        out.push(("total", total));
        Ok(out)
    }
}

impl Backbone for Dgcf {
    fn name(&self) -> &'static str {
        "dgcf"
    }

    /// Batches from `cfg.sampler` with one negative per row; per batch one routed forward over the whole
    /// graph and one optimiser step. Stats: means over batches of `"bpr"`, `"reg"`, `"cor"` (weighted) and
    /// `"total"`.
    fn begin_epoch(&mut self, ctx: &mut EpochCtx<'_>) -> Result<usize> {
        self.eval_cache = None;
        self.epoch_batches.draw(self.cfg.sampler, &self.train, self.cfg.batch_size, 1, ctx.rng)
    }

    fn step_losses(&mut self, step: usize, rng: &mut ChaCha8Rng) -> Result<StepLosses> {
        let batch = self.epoch_batches.get(step, "dgcf")?;
        let named = self.batch_losses(batch, rng)?;
        into_step(named, "dgcf")
    }

    /// Caches `E*` routed without gradient tracking.
    fn prepare_eval(&mut self) -> Result<()> {
        let e0 = self.ego_embeddings()?.detach();
        self.eval_cache = Some(DotScores::from_joint(&route(&self.graph, &e0, &self.cfg)?.emb, self.dims)?);
        Ok(())
    }

    fn vars(&self) -> &VarMap {
        &self.varmap
    }
}

impl Recommender for Dgcf {
    /// `E*[users] · E*[items]ᵀ`, `(users.len(), n_items)`; needs [`Backbone::prepare_eval`].
    fn score_users(&self, users: &[u32]) -> Result<Tensor> {
        DotScores::score_cached(self.eval_cache.as_ref(), "dgcf", users)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_typos_and_ranges() {
        let cfg: DgcfConfig = serde_json::from_str(r#"{"layer_pooling": "sum", "cor_pairs": "all"}"#).unwrap();
        assert_eq!(
            cfg,
            DgcfConfig { layer_pooling: LayerPooling::Sum, cor_pairs: CorPairs::All, ..Default::default() }
        );
        assert!(serde_json::from_str::<DgcfConfig>(r#"{"n_factor": 4}"#).is_err());
        assert!(DgcfConfig { embed_dim: 130, ..Default::default() }.validate().is_err());
        assert!(DgcfConfig { n_iterations: 0, ..Default::default() }.validate().is_err());
        assert!(DgcfConfig { cor_weight: f64::NAN, ..Default::default() }.validate().is_err());
        assert!(DgcfConfig::default().validate().is_ok());
    }
}
