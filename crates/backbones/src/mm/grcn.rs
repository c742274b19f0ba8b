//! GRCN: Graph-Refined Convolutional Network for Multimedia Recommendation with Implicit Feedback
//! (Wei et al., ACM MM'20), as run inside the SGFD reference code (spec `grcn.md`).
//!
//! Reference: SGFD repo `GRCN/Model_routing.py` (`EGCN`, `CGCN`, `Net`), `GRCN/GATConv.py`,
//! `GRCN/SAGEConv.py`, `GRCN/main.py` (CLI defaults), `GRCN/Dataset.py` (negatives), `GRCN/Train.py` and
//! `GRCN/Full_vt.py` (evaluation on the cached `self.result`).
//!
//! The model, graph-wide at every step:
//! - per modality m (content graph, `CGCN`): `H = l2n(lrelu₀.₀₁(S_m(F_m)))`, `p = l2n(P_m)`, the routing
//!   loop, then one GAT-like convolution over the bidirectional edge list `Bd` whose per-target softmax
//!   `α_m` is the modality's edge weight; `rep_m = [p; H] + GAT([p; H])`;
//! - edge weights (`confid`): `w_e = max_m α_m[e]·Γ[source of e, m]`;
//! - id graph (`EGCN`): `x0 = l2n(X)`, two SAGE-like layers `x_{k+1} = A(w)·x_k`, `id_rep = x0 + x1 + x2`;
//! - fusion `concat`: `R = [id_rep, rep_1, …, rep_M]`, scores `⟨R_u, R_{U+i}⟩`, BPR + `reg_weight`·L2.
//!
//! Every aggregation is a sparse product over [`graph::bidirectional_pattern`] ([`sparse::spmm_weighted`],
//! [`sparse::edge_dot`]); there is no dense `U × I` matrix.
//!
//! Evaluation protocol of the reference: the evaluator masks train items to `1e-5` rather than removing them
//! (`Model_routing.py::full_accuracy`): the trainer should evaluate GRCN with
//! `EvalConfig { mask: MaskMode::Value(1e-5), ndcg: NdcgForm::HitNormalised, .. }` to reproduce it.
//!
//! Deviations from the reference:
//! - Train edges come in `Csr` order (user, then item) rather than `train.csv` order; only the order of the
//!   floating-point sums changes. Negatives are drawn with [`mmkd_data::NegativeSampler`] (seeded from the
//!   epoch's stream) instead of Python's unseeded `random.sample`.
//! - BPR is `mean softplus(−(s⁺ − s⁻))`, the same value as the reference's `−mean log σ(s⁺ − s⁻)` but without
//!   its `−inf`/NaN when σ underflows (`Model_routing.py:317`).
//! - The SGFD losses are computed by the extractor on the B' rows (`aux_losses_given(rows, features)`, the
//!   rows gathered from the step's features of every item), not inside each `CGCN`; the composition
//!   (`λ2·L_CE + λ1·L_KD`, each averaged over modalities) is the same.
//! - `has_norm = false` runs (the reference raises `NameError`: `preference` is only bound under
//!   `if self.has_norm`, `Model_routing.py:122-124`); `fusion_mode = mean` averages the id representation and
//!   every modality's (the reference hard-codes `(id + v + a + t)/4`, which fails without acoustic features).
//! - `aggr_mode` other than `add`, word-level text features (`is_word`, TikTok) and the unused
//!   `has_entropy_loss`/`has_weight_loss`/`mean(Γ²)` are not ported.
//! - The routing loop can be made to do what the paper intends (`routing_to_users`), and evaluation can use
//!   representations recomputed with the final parameters (`reference_stale_eval = false`).

use std::fmt;

use candle_core::{DType, Device, Tensor};
use candle_nn::{Init, VarBuilder, VarMap};
use mmkd_data::{Csr, NegativeSampler};
use mmkd_features::nn::l2_normalize;
use mmkd_features::{FeatureExtractor, Mode};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use mmkd_nn::graph;
use mmkd_nn::sparse::{self, SparsePattern};

use crate::common::batch_of;
use crate::loss::bpr_loss;
use crate::model::{Backbone, Dims, EpochCtx, Recommender, StepLosses};
use crate::{Error, Result};

/// PyTorch `F.normalize`'s epsilon.
const L2_EPS: f64 = 1e-12;
/// PyTorch's default LeakyReLU slope (`F.leaky_relu`, `F.leaky_relu_`).
const LRELU_SLOPE: f64 = 0.01;
/// PyG `softmax`'s epsilon in the denominator (`torch_geometric/utils/softmax.py`).
const SOFTMAX_EPS: f64 = 1e-16;

/// How the per-modality attention weights become one weight per edge (reference `--weight_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightMode {
    /// `w = mean_m α_m`.
    Mean,
    /// `w = max_m α_m`.
    Max,
    /// `w_e = max_m α_m[e]·Γ[source of e, m]` with the learned confidences Γ (`N × M`); the reference default.
    #[default]
    Confid,
}

/// How the id and content representations are fused (reference `--fusion_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FusionMode {
    /// `R = [id_rep, rep_1, …, rep_M]`, width `dim_e + M·dim_c`; the reference default.
    #[default]
    Concat,
    /// `R = id_rep`.
    Id,
    /// `R = (id_rep + Σ_m rep_m) / (1 + M)`; needs `dim_e = dim_c`.
    Mean,
}

/// GRCN hyper-parameters. Defaults: the CLI of `GRCN/main.py` (spec `grcn.md` §1). The learning rate and
/// the optimiser belong to the trainer (`optim::OptimConfig`; reference `--l_r 1e-4`, Adam without weight
/// decay; README Office: `--l_r 1e-3 --weight_decay 1e-3`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)] // A typo in a config file is an error, not a silent default.
pub struct GrcnConfig {
    /// Width of the id embeddings X (reference `--dim_E`, 128; upstream GRCN 64).
    #[serde(alias = "dim_E")]
    pub dim_e: usize,
    /// Width of the content representations and of the extractor's output (reference `--dim_C`, 128).
    #[serde(alias = "dim_C")]
    pub dim_c: usize,
    /// Routing iterations of every content graph (reference `--num_routing`, 3).
    pub num_routing: usize,
    /// L2-normalise X, P_m and the content features (reference `--has_norm`, true).
    pub has_norm: bool,
    /// LeakyReLU after every convolution (reference `--has_act`, false). The reference also passes it to the
    /// SGFD extractor as its `is_pruning` (activation) switch: that is the extractor config's business.
    pub has_act: bool,
    /// ReLU on the edge weights before the id graph (reference `--is_pruning`, false; upstream GRCN true).
    pub is_pruning: bool,
    /// Edge-weight mode (reference `--weight_mode`, `confid`).
    pub weight_mode: WeightMode,
    /// Fusion mode (reference `--fusion_mode`, `concat`).
    pub fusion_mode: FusionMode,
    /// Edge dropout probability: each train pair is dropped, both directions, with this probability at
    /// every step (reference `--dropout`, 0, through `dropout_adj`). Masks come from the epoch's stream.
    pub dropout: f64,
    /// BPR batch size in train edges; the last partial batch is kept (reference `--batch_size`, 1024).
    pub batch_size: usize,
    /// Weight of the embedding L2 term `mean(X[u]² + X[i]²) + Σ_m mean(P_m[u]²)` (reference
    /// `--weight_decay`, 1e-5; it is not an optimiser weight decay).
    pub reg_weight: f64,
    /// Let the routing loop do what the paper describes: users aggregate their items' content,
    /// `p_u ← l2n(p_u + Σ_{j∈N(u)} α_{u,j} H_j)`. false = the reference: its routing edges are user → item
    /// columns, which under PyG's source-to-target flow only deliver to item nodes, so the user rows of the
    /// update are zero and the loop only re-normalises `p` (`Model_routing.py:126-132`, spec §5).
    pub routing_to_users: bool,
    /// Score with the representations cached by the last training forward of the epoch, computed before
    /// that batch's optimiser step and with its edge dropout (the reference: `self.result` is set in
    /// `Net.forward`, `Model_routing.py:296`, and read by `full_accuracy`, called from `Full_vt.py`).
    /// false = recompute them in evaluation mode (no dropout, final parameters) in `prepare_eval`.
    pub reference_stale_eval: bool,
}

impl Default for GrcnConfig {
    fn default() -> Self {
        Self {
            dim_e: 128,
            dim_c: 128,
            num_routing: 3,
            has_norm: true,
            has_act: false,
            is_pruning: false,
            weight_mode: WeightMode::Confid,
            fusion_mode: FusionMode::Concat,
            dropout: 0.0,
            batch_size: 1024,
            reg_weight: 1e-5,
            routing_to_users: false,
            reference_stale_eval: true,
        }
    }
}

impl GrcnConfig {
    /// Checks values that serde cannot.
    pub fn validate(&self) -> Result<()> {
        if self.dim_e == 0 || self.dim_c == 0 {
            return Err(Error::Config(format!(
                "GRCN widths must be positive, got dim_e = {}, dim_c = {}",
                self.dim_e, self.dim_c
            )));
        }
        if self.batch_size == 0 {
            return Err(Error::Config("GRCN batch_size must be at least 1".into()));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::Config(format!("GRCN dropout must lie in [0, 1), got {}", self.dropout)));
        }
        if !(self.reg_weight.is_finite() && self.reg_weight >= 0.0) {
            return Err(Error::Config(format!("GRCN reg_weight must be finite and ≥ 0, got {}", self.reg_weight)));
        }
        if self.fusion_mode == FusionMode::Mean && self.dim_e != self.dim_c {
            return Err(Error::Config(format!(
                "fusion_mode = mean adds id and content representations: dim_e ({}) must equal dim_c ({})",
                self.dim_e, self.dim_c
            )));
        }
        Ok(())
    }

    /// Width of the fused representation R.
    pub fn rep_dim(&self, n_modalities: usize) -> usize {
        match self.fusion_mode {
            FusionMode::Concat => self.dim_e + n_modalities * self.dim_c,
            FusionMode::Id | FusionMode::Mean => self.dim_e,
        }
    }
}

/// The edges one forward pass runs on: all train pairs, or those that survived edge dropout.
struct Graph {
    /// `Bd` over the `n_users + n_items` nodes: edge `e < E` is user → item, `E + e` the reverse.
    bd: SparsePattern,
    /// Source node of every `Bd` edge, u32 `(2E,)`: the rows of Γ the `confid` weights read.
    sources: Tensor,
    /// Users × items, one edge per pair: the intended routing (only with `routing_to_users`).
    user_items: Option<SparsePattern>,
}

impl Graph {
    fn new(dims: Dims, pairs: &[(u32, u32)], routing_to_users: bool, device: &Device) -> Result<Self> {
        let bd = graph::bidirectional_pattern(dims.n_users, dims.n_items, pairs)?;
        let sources = Tensor::from_slice(bd.edge_cols(), bd.nnz(), device)?;
        let user_items = if routing_to_users {
            let users: Vec<u32> = pairs.iter().map(|&(u, _)| u).collect();
            let items: Vec<u32> = pairs.iter().map(|&(_, j)| j).collect();
            Some(SparsePattern::from_coo(dims.n_users, dims.n_items, &users, &items)?)
        } else {
            None
        };
        Ok(Self { bd, sources, user_items })
    }
}

/// Softmax of `scores` `(nnz,)` within each segment: `α_e = exp(s_e − m_g) / (Σ_{e' ∈ g} exp(s_e' − m_g) + 1e-16)`
/// where `g = segment[e]` and `m_g` is the segment's maximum (PyG `utils.softmax`, whose maximum is detached
/// too; the shift cancels, so the gradient is the softmax's). Segments without entries produce nothing.
/// Differentiable in `scores` (gather with `index_select`, segment sums with `index_add`).
pub fn segment_softmax(scores: &Tensor, segment: &[u32], n_segments: usize) -> Result<Tensor> {
    let nnz = segment.len();
    if scores.dims() != [nnz] {
        return Err(Error::Shape(format!("segment_softmax: expected ({nnz},) scores, got {:?}", scores.dims())));
    }
    if let Some(&g) = segment.iter().find(|&&g| g as usize >= n_segments) {
        return Err(Error::Shape(format!("segment_softmax: segment {g} out of range for {n_segments} segments")));
    }
    if nnz == 0 {
        return Ok(scores.clone());
    }
    let device = scores.device();
    let host: Vec<f64> = scores.detach().to_dtype(DType::F64)?.to_vec1()?;
    let mut max = vec![f64::NEG_INFINITY; n_segments];
    for (&g, &s) in segment.iter().zip(&host) {
        if s > max[g as usize] {
            max[g as usize] = s;
        }
    }
    // Every maximum is one of the scores, so the round trip through f64 is exact.
    let shift: Vec<f64> = segment.iter().map(|&g| max[g as usize]).collect();
    let shift = Tensor::from_vec(shift, nnz, device)?.to_dtype(scores.dtype())?;
    let index = Tensor::from_slice(segment, nnz, device)?;
    let exp = scores.sub(&shift)?.exp()?; // (nnz,)
    let sums = Tensor::zeros(n_segments, scores.dtype(), device)?.index_add(&index, &exp, 0)?; // (n_segments,)
    let denom = (sums.index_select(&index, 0)? + SOFTMAX_EPS)?; // (nnz,)
    Ok(exp.div(&denom)?)
}

/// GRCN's parameter-free GAT-like convolution (`GATConv.py`) over `pattern` (rows = targets,
/// cols = sources): `α = softmax over each target's edges of ⟨x_t, x_s⟩`, `out_t = Σ_{e=(s→t)} α_e·x_s`.
/// `targets`: `(n_rows, d)`, `sources`: `(n_cols, d)` (the same tensor for a square node graph).
/// Returns `out` `(n_rows, d)` and `α` `(nnz,)` in the pattern's edge order; targets without edges get 0.
pub fn gat_conv(pattern: &SparsePattern, targets: &Tensor, sources: &Tensor) -> Result<(Tensor, Tensor)> {
    let scores = sparse::edge_dot(pattern, targets, sources)?; // (nnz,)
    let alpha = segment_softmax(&scores, pattern.edge_rows(), pattern.n_rows())?;
    let out = sparse::spmm_weighted(pattern, &alpha, sources)?; // (n_rows, d)
    Ok((out, alpha))
}

/// Xavier-normal initialisation of a `(rows, cols)` parameter: `N(0, 2 / (rows + cols))`
/// (`nn.init.xavier_normal_`).
fn xavier_normal(rows: usize, cols: usize) -> Init {
    Init::Randn { mean: 0.0, stdev: (2.0 / (rows + cols) as f64).sqrt() }
}

/// LeakyReLU with PyTorch's default slope.
fn lrelu(x: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::ops::leaky_relu(x, LRELU_SLOPE)?)
}

/// The GRCN backbone. Parameter keys under its `vb`: `id_embedding` `(N, dim_e)`, `preference.{modality}`
/// `(n_users, dim_c)`, `model_specific_conf` `(N, M)` (with `confid`); the extractor's own under
/// `extractor.…` when the caller builds it with `vb.pp("extractor")`.
pub struct Grcn {
    cfg: GrcnConfig,
    dims: Dims,
    varmap: VarMap,
    extractor: Box<dyn FeatureExtractor>,
    /// X, `(n_users + n_items, dim_e)`.
    id_embedding: Tensor,
    /// P_m, `(n_users, dim_c)` per modality, in the extractor's modality order.
    preference: Vec<Tensor>,
    /// Γ, `(n_users + n_items, M)`; only with `weight_mode = confid`.
    model_specific_conf: Option<Tensor>,
    /// Train pairs `(user, item)`, in `Csr` order.
    pairs: Vec<(u32, u32)>,
    /// The train matrix (negatives are drawn outside each user's row).
    train: Csr,
    /// This epoch's rows `(user, positive, negative)`, in batch order ([`Backbone::begin_epoch`]).
    epoch_rows: Vec<(u32, u32, u32)>,
    /// The graph of all train pairs.
    full: Graph,
    device: Device,
    /// Representations R `(N, rep_dim)` the next `score_users` reads (detached).
    cache: Option<Tensor>,
}

impl fmt::Debug for Grcn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Grcn")
            .field("cfg", &self.cfg)
            .field("dims", &self.dims)
            .field("modalities", &self.extractor.modalities())
            .field("n_train_pairs", &self.pairs.len())
            .finish_non_exhaustive()
    }
}

impl Grcn {
    /// Builds GRCN over the train graph `train` (`n_users × n_items`, equal to `dims`). `extractor` supplies the
    /// content features of every item (`out_dim` must equal `cfg.dim_c`): [`mmkd_features::Projection`] for
    /// vanilla GRCN, `mmkd_student_kd::Sgfd` for SGFD. The caller builds it under `vb.pp("extractor")` with the
    /// same `varmap`, so that [`Backbone::vars`] holds every trainable variable of the model.
    pub fn new(
        vb: VarBuilder,
        varmap: &VarMap,
        cfg: &GrcnConfig,
        dims: Dims,
        train: &Csr,
        extractor: Box<dyn FeatureExtractor>,
        device: &Device,
    ) -> Result<Self> {
        cfg.validate()?;
        if train.n_rows() != dims.n_users || train.n_cols() != dims.n_items {
            return Err(Error::Shape(format!(
                "train graph is {} × {}, but dims say {} users × {} items",
                train.n_rows(),
                train.n_cols(),
                dims.n_users,
                dims.n_items
            )));
        }
        if extractor.out_dim() != cfg.dim_c {
            return Err(Error::Config(format!(
                "the extractor outputs {} features per modality, GRCN's dim_c is {}",
                extractor.out_dim(),
                cfg.dim_c
            )));
        }
        let n_modalities = extractor.modalities().len();
        if n_modalities == 0 {
            return Err(Error::Config("GRCN needs at least one modality".into()));
        }
        let n_nodes = dims.n_users + dims.n_items;
        let id_embedding =
            vb.get_with_hints((n_nodes, cfg.dim_e), "id_embedding", xavier_normal(n_nodes, cfg.dim_e))?;
        let preference = extractor
            .modalities()
            .iter()
            .map(|m| {
                let init = xavier_normal(dims.n_users, cfg.dim_c);
                vb.pp("preference").get_with_hints((dims.n_users, cfg.dim_c), m, init)
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let model_specific_conf = match cfg.weight_mode {
            WeightMode::Confid => Some(vb.get_with_hints(
                (n_nodes, n_modalities),
                "model_specific_conf",
                xavier_normal(n_nodes, n_modalities),
            )?),
            WeightMode::Mean | WeightMode::Max => None,
        };
        let pairs = train.pairs();
        let full = Graph::new(dims, &pairs, cfg.routing_to_users, device)?;
        tracing::info!(
            n_users = dims.n_users,
            n_items = dims.n_items,
            n_edges = pairs.len(),
            modalities = ?extractor.modalities(),
            "built GRCN"
        );
        Ok(Self {
            cfg: cfg.clone(),
            dims,
            varmap: varmap.clone(),
            extractor,
            id_embedding,
            preference,
            model_specific_conf,
            pairs,
            train: train.clone(),
            epoch_rows: Vec::new(),
            full,
            device: device.clone(),
            cache: None,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &GrcnConfig {
        &self.cfg
    }

    /// The extractor.
    pub fn extractor(&self) -> &dyn FeatureExtractor {
        self.extractor.as_ref()
    }

    /// Fused representations R `(n_users + n_items, rep_dim)` on the full train graph (no edge dropout), with
    /// the extractor in `mode`. Differentiable.
    pub fn representations(&self, mode: Mode) -> Result<Tensor> {
        Ok(self.forward(&self.full, mode)?.0)
    }

    /// One content graph (`CGCN.forward`): the modality's representations `(N, dim_c)` and its attention
    /// weights `(2E,)` over `Bd`. `features`: the extractor's output for every item, `(n_items, dim_c)`.
    fn content_graph(&self, graph: &Graph, preference: &Tensor, features: &Tensor) -> Result<(Tensor, Tensor)> {
        // The reference applies LeakyReLU on top of the student's output (`Model_routing.py:120`).
        let mut h = lrelu(features)?; // (n_items, dim_c)
        let mut p = preference.clone(); // (n_users, dim_c)
        if self.cfg.has_norm {
            p = l2_normalize(&p, L2_EPS)?;
            h = l2_normalize(&h, L2_EPS)?;
        }
        match &graph.user_items {
            // The intended routing: users attend over their items' content.
            Some(user_items) => {
                for _ in 0..self.cfg.num_routing {
                    let (delta, _) = gat_conv(user_items, &p, &h)?; // (n_users, dim_c)
                    p = (p + delta)?;
                    if self.cfg.has_norm {
                        p = l2_normalize(&p, L2_EPS)?;
                    }
                }
            }
            // The reference's routing: the user rows of the GAT output are zero, so only the normalisation
            // remains (`Model_routing.py:126-132`).
            None => {
                if self.cfg.has_norm {
                    for _ in 0..self.cfg.num_routing {
                        p = l2_normalize(&p, L2_EPS)?;
                    }
                }
            }
        }
        let x = Tensor::cat(&[&p, &h], 0)?; // (N, dim_c)
        let (mut out, alpha) = gat_conv(&graph.bd, &x, &x)?; // (N, dim_c), (2E,)
        if self.cfg.has_act {
            out = lrelu(&out)?;
        }
        Ok(((x + out)?, alpha))
    }

    /// One weight per `Bd` edge from the modalities' attention weights (`Net.forward`, `weight_mode`).
    fn edge_weights(&self, graph: &Graph, alphas: &[Tensor]) -> Result<Tensor> {
        let stacked = Tensor::stack(alphas, 1)?; // (2E, M)
        let w = match (self.cfg.weight_mode, &self.model_specific_conf) {
            (WeightMode::Mean, _) => stacked.mean(1)?,
            (WeightMode::Max, _) => stacked.max(1)?,
            (WeightMode::Confid, Some(conf)) => {
                // Row e of the confidence is Γ of the edge's source: the user for user → item edges, the item
                // for the reversed ones (`Model_routing.py:278`).
                let conf = conf.index_select(&graph.sources, 0)?; // (2E, M)
                (stacked * conf)?.max(1)?
            }
            (WeightMode::Confid, None) => return Err(Error::Config("confid weights need Γ".into())),
        }; // (2E,)
        Ok(if self.cfg.is_pruning { w.relu()? } else { w })
    }

    /// The id graph (`EGCN.forward`): `x0 + x1 + x2`, `(N, dim_e)`.
    fn id_graph(&self, graph: &Graph, w: &Tensor) -> Result<Tensor> {
        let x0 = if self.cfg.has_norm { l2_normalize(&self.id_embedding, L2_EPS)? } else { self.id_embedding.clone() };
        let mut x1 = sparse::spmm_weighted(&graph.bd, w, &x0)?; // (N, dim_e)
        if self.cfg.has_act {
            x1 = lrelu(&x1)?;
        }
        let mut x2 = sparse::spmm_weighted(&graph.bd, w, &x1)?; // (N, dim_e)
        if self.cfg.has_act {
            x2 = lrelu(&x2)?;
        }
        Ok(((x0 + x1)? + x2)?)
    }

    /// R on `graph`, the extractor in `mode`; also the extractor's features of every item.
    fn forward(&self, graph: &Graph, mode: Mode) -> Result<(Tensor, Vec<Tensor>)> {
        let _span = tracing::debug_span!("grcn_forward", n_edges = graph.bd.nnz()).entered();
        let extracted = self.extractor.extract(None, mode)?;
        if extracted.features.len() != self.preference.len() {
            return Err(Error::Shape(format!(
                "the extractor returned {} modalities, GRCN was built for {}",
                extracted.features.len(),
                self.preference.len()
            )));
        }
        let mut reps = Vec::with_capacity(self.preference.len());
        let mut alphas = Vec::with_capacity(self.preference.len());
        for (features, preference) in extracted.features.iter().zip(&self.preference) {
            if features.dims() != [self.dims.n_items, self.cfg.dim_c] {
                return Err(Error::Shape(format!(
                    "item features must be ({}, {}), got {:?}",
                    self.dims.n_items,
                    self.cfg.dim_c,
                    features.dims()
                )));
            }
            let (rep, alpha) = self.content_graph(graph, preference, features)?;
            reps.push(rep);
            alphas.push(alpha);
        }
        let w = self.edge_weights(graph, &alphas)?;
        let id_rep = self.id_graph(graph, &w)?;
        let r = match self.cfg.fusion_mode {
            FusionMode::Concat => {
                let mut parts = Vec::with_capacity(1 + reps.len());
                parts.push(&id_rep);
                parts.extend(reps.iter());
                Tensor::cat(&parts, 1)? // (N, dim_e + M·dim_c)
            }
            FusionMode::Id => id_rep,
            FusionMode::Mean => {
                let n = (1 + reps.len()) as f64;
                reps.iter().try_fold(id_rep, |acc, r| acc + r)?.affine(1.0 / n, 0.0)?
            }
        };
        Ok((r, extracted.features))
    }

    /// The step's graph: the full one, or a fresh edge-dropout sample from `rng` (`dropout_adj`: each pair
    /// kept when `U[0, 1) ≥ p`).
    fn sample_graph(&self, rng: &mut impl Rng) -> Result<Option<Graph>> {
        if self.cfg.dropout <= 0.0 {
            return Ok(None);
        }
        let kept: Vec<(u32, u32)> =
            self.pairs.iter().copied().filter(|_| rng.random::<f64>() >= self.cfg.dropout).collect();
        Ok(Some(Graph::new(self.dims, &kept, self.cfg.routing_to_users, &self.device)?))
    }
}

impl Backbone for Grcn {
    fn name(&self) -> &'static str {
        "grcn"
    }

    /// One pass over every train pair, shuffled, in batches of `batch_size` (the last partial one kept), one
    /// uniform negative per pair (drawn here, from a sampler seeded by `ctx.rng`, in batch order); per batch
    /// one graph-wide forward and one optimiser step on `bpr + reg_weight·reg + Σ aux` (`Train.py`,
    /// `Net.loss`). Terms: `"bpr"`, `"reg"` (weighted) and the extractor's `"kd"` and `"ce"` (already
    /// weighted).
    fn begin_epoch(&mut self, ctx: &mut EpochCtx<'_>) -> Result<usize> {
        self.extractor.on_epoch_start(ctx.epoch)?;
        let mut sampler = NegativeSampler::new(&self.train, ctx.rng.random());
        let mut order: Vec<usize> = (0..self.pairs.len()).collect();
        order.shuffle(&mut *ctx.rng);
        // Interleaved as the reference's loader yields them: users u1, u1, u2, u2, …; items pos1, neg1, ….
        self.epoch_rows.clear();
        for &e in &order {
            let (u, pos) = self.pairs[e];
            let neg = sampler.sample(u)?;
            self.epoch_rows.push((u, pos, neg));
        }
        Ok(order.len().div_ceil(self.cfg.batch_size))
    }

    fn step_losses(&mut self, step: usize, rng: &mut ChaCha8Rng) -> Result<StepLosses> {
        let rows = batch_of(&self.epoch_rows, self.cfg.batch_size, step);
        let b = rows.len();
        let n_users = self.dims.n_users as u32;
        let users: Vec<u32> = rows.iter().flat_map(|&(u, _, _)| [u, u]).collect();
        let items: Vec<u32> = rows.iter().flat_map(|&(_, pos, neg)| [pos, neg]).collect();
        let item_nodes: Vec<u32> = items.iter().map(|&j| n_users + j).collect();
        let users_t = Tensor::from_vec(users, 2 * b, &self.device)?;
        let items_t = Tensor::from_vec(items, 2 * b, &self.device)?;
        let item_nodes_t = Tensor::from_vec(item_nodes, 2 * b, &self.device)?;

        let dropped = self.sample_graph(rng)?;
        let graph = dropped.as_ref().unwrap_or(&self.full);
        let (r, features) = self.forward(graph, Mode::Train)?; // (N, rep_dim), (n_items, dim_c) per modality
        let user_rep = r.index_select(&users_t, 0)?; // (2b, rep_dim)
        let item_rep = r.index_select(&item_nodes_t, 0)?; // (2b, rep_dim)
        let scores = (user_rep * item_rep)?.sum(1)?.reshape((b, 2))?; // (b, 2): [s⁺, s⁻]
        let bpr = bpr_loss(&(scores.narrow(1, 0, 1)?.squeeze(1)? - scores.narrow(1, 1, 1)?.squeeze(1)?)?)?;

        // `Net.loss`: L2 of the raw parameters at the batch's rows.
        let x = &self.id_embedding;
        let mut reg = (x.index_select(&users_t, 0)?.sqr()? + x.index_select(&item_nodes_t, 0)?.sqr()?)?.mean_all()?;
        for p in &self.preference {
            reg = (reg + p.index_select(&users_t, 0)?.sqr()?.mean_all()?)?;
        }
        let reg = (reg * self.cfg.reg_weight)?;

        // The SGFD losses on B' = the batch's items, from this step's features of every item.
        let aux = self.extractor.aux_losses_given(&items_t, &features)?;
        let mut total = (&bpr + &reg)?;
        for (_, l) in &aux {
            total = (total + l)?;
        }
        // The reference evaluates with the representations of the epoch's last step (before its update).
        self.cache = if self.cfg.reference_stale_eval { Some(r.detach()) } else { None };
        let mut terms = vec![("bpr", bpr), ("reg", reg)];
        terms.extend(aux);
        Ok(StepLosses::new(terms, total))
    }

    /// With `reference_stale_eval`, keeps the representations of the last training step (computed before its
    /// optimiser step); otherwise, or before any training, computes them in evaluation mode on the full graph.
    /// The cached representations belong to the parameters before the load: recompute them (eval mode).
    fn checkpoint_loaded(&mut self) -> Result<()> {
        self.cache = None;
        Ok(())
    }

    fn prepare_eval(&mut self) -> Result<()> {
        if self.cache.is_none() {
            self.cache = Some(self.representations(Mode::Eval)?.detach());
        }
        Ok(())
    }

    fn vars(&self) -> &VarMap {
        &self.varmap
    }
}

impl Recommender for Grcn {
    /// `R[users] · R[items]ᵀ`, `(users.len(), n_items)`, from the representations `prepare_eval` fixed.
    fn score_users(&self, users: &[u32]) -> Result<Tensor> {
        let r =
            self.cache.as_ref().ok_or_else(|| Error::Config("GRCN: call prepare_eval before score_users".into()))?;
        if let Some(&u) = users.iter().find(|&&u| u as usize >= self.dims.n_users) {
            return Err(Error::Shape(format!("user {u} out of range for {} users", self.dims.n_users)));
        }
        let index = Tensor::from_slice(users, users.len(), &self.device)?;
        let user_rep = r.index_select(&index, 0)?; // (b, rep_dim)
        let item_rep = r.narrow(0, self.dims.n_users, self.dims.n_items)?; // (n_items, rep_dim)
        Ok(user_rep.matmul(&item_rep.t()?)?) // (b, n_items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_are_the_reference_and_typos_fail() {
        let d = GrcnConfig::default();
        assert_eq!((d.dim_e, d.dim_c, d.num_routing, d.batch_size), (128, 128, 3, 1024));
        assert!(d.has_norm && !d.has_act && !d.is_pruning && !d.routing_to_users && d.reference_stale_eval);
        assert_eq!(
            (d.weight_mode, d.fusion_mode, d.dropout, d.reg_weight),
            (WeightMode::Confid, FusionMode::Concat, 0.0, 1e-5)
        );
        let c: GrcnConfig =
            serde_json::from_str(r#"{"dim_E": 64, "weight_mode": "max", "fusion_mode": "id"}"#).unwrap();
        assert_eq!((c.dim_e, c.weight_mode, c.fusion_mode), (64, WeightMode::Max, FusionMode::Id));
        assert!(serde_json::from_str::<GrcnConfig>(r#"{"dim_x": 1}"#).is_err());
        assert!(GrcnConfig { dropout: 1.0, ..d.clone() }.validate().is_err());
        assert!(GrcnConfig { fusion_mode: FusionMode::Mean, dim_e: 64, ..d.clone() }.validate().is_err());
        assert!(d.validate().is_ok());
    }
}
