//! MAML: User Diverse Preference Modeling by Multimodal Attentive Metric Learning (Liu et al., ACM MM'19), as
//! the SGFD repository runs it (spec `maml.md`).
//!
//! Reference: SGFD repo `MAML/MAML.py` (TensorFlow 1; `sampler.py`, `evaluator.py`), diffed against upstream
//! liufancs/MAML `MAML.py`. Defaults are the effective values of the SGFD repository's runs (spec §1): K = 128,
//! batch 256, W = 4 negatives, hidden 256, margin 1, feature_l2_reg 1, clip_norm 1, rank weight on, covariance
//! loss weight 5, 100 mini-batches per "epoch"; Adam 1e-3 is the trainer's `[optim]`.
//!
//! The model, for a user u and an item j (spec §4–5):
//! ```text
//! f[j]      = clip_by_norm(s · MLP(l2n([x_1[j] ; … ; x_M[j]])), clip_norm)   x_m = extractor features, s = scaling
//! MLP       = Dense(M·d → h) relu, l2n, Dense(h → h/2) relu, l2n, Dense(h/2 → h/2) relu, Dense(h/2 → K)
//! a(u, j)   = K · softmax(relu(Dense(5K → K)(l2n(tanh(Dense(3K → 5K)(l2n([E_u[u] ; E_i[j] ; f[j]])))))))
//! d(u, j)   = Σ_k a_k² (E_u[u,k] − E_i[j,k])²                                 score(u, j) = −d(u, j)
//! ```
//! One step on N pairs (u_b, p_b) with W negatives n_bw each (spec §6):
//! ```text
//! emb  = Σ_b max(0, d⁺_b − min_w d⁻_bw + margin) · ln(1 + n_items · mean_w 1[d⁺_b − d⁻_bw + margin > 0])
//! feat = feature_l2_reg · Σ_{j < n_items} ‖E_i[j] − f[j]‖²
//! cov  = cov_loss_weight · Σ_{k≠l} Cov([E_i ; E_u])_kl          (signed sum of the off-diagonal entries)
//! total = emb + feat + cov + Σ aux                               aux = the extractor's weighted losses
//! ```
//! then every row of E_u and E_i is clipped to norm ≤ clip_norm. Before training, E_i is overwritten by f.
//! The extractor's features stand where the reference has the SGFD student outputs `[S_v(F_v) ; S_t(F_t)]`
//! (upstream MAML: the raw features), and its auxiliary losses (SGFD's `("kd", λ1·L_KD)`, `("ce", λ2·L_CE)`)
//! are computed on the step's rows `[p_b, n_b1..n_bW]` flattened, the reference's B' (sgfd.md §9).
//!
//! # Trained variables (`train_all_variables`)
//! The reference optimises only E_u and E_i (`Adam(1e-3).minimize(loss, var_list=[E_u, E_i])`, spec §3):
//! the feature MLP, the attention and every SGFD module keep their random initialisation, so SGFD's losses
//! have no effect on training (spec §6). `train_all_variables = true` (default) trains everything, the
//! paper's evident intent; `false` reproduces the reference. With `false` every variable stays in
//! [`Backbone::vars`] (the checkpoint is complete), but the non-embedding weights enter the step's graph
//! detached, and the auxiliary losses are added to the total as detached values (reported, not trained):
//! those variables never receive a gradient, and the optimiser skips a variable without one, so they stay
//! bit-identical. f is then a constant, computed once per epoch.
//!
//! # Deviations from the reference
//! - **Dropout** (`--dropout 0.2`) is not ported: the reference calls `tf.layers.dropout` without
//!   `training=True`, so it is the identity (spec §1).
//! - **The loss vector.** The reference adds the SGFD per-row vectors to the scalar loss and differentiates the
//!   sum of the resulting vector, `M·(emb + feat + cov) + Σ dis` with M = N(1 + W) (spec §6). With frozen SGFD
//!   modules only the factor M remains, which Adam all but cancels; we differentiate `total` as above (the
//!   auxiliary losses reduced over rows as the extractor's `row_reduction` says).
//! - **Batches.** The reference's five sampler processes each shuffle the train pairs and emit ⌊|E|/N⌋
//!   consecutive slices forever, interleaved through a queue. Here each epoch shuffles the train pairs of
//!   [`mmkd_data::Dataset`] with `ctx.rng` and takes `batches_per_epoch` consecutive slices of N, reshuffling
//!   when a pass is used up (the remainder of a pass is dropped, as in the reference); `batches_per_epoch =
//!   0` makes one pass instead, the last batch partial. Negatives come from [`NegativeSampler`] (uniform over
//!   the items outside the user's train row, as the reference's rejection loop).
//! - **Features of the rows a step needs.** The reference evaluates the student and the MLP on every item
//!   every step. Here the extractor runs on the step's rows (features for the attention, auxiliary losses),
//!   and on every item only for `feat` (when `feature_l2_reg > 0` and the weights are trained; frozen, f is
//!   cached per epoch). The values and gradients are the same.
//! - **Evaluation** scores every item for every user, as the reference (`evaluator.py`), but computes the
//!   first attention layer as `(W_u·E_u[u] + W_i·E_i[j] + W_f·f[j]) / ‖[E_u[u] ; E_i[j] ; f[j]]‖ + b` from
//!   per-user and per-item products (the same value up to rounding) and processes users in chunks that
//!   bound the memory. It stays the expensive part: the second attention layer runs on every (user, item)
//!   pair, 5K·K multiply-adds each (Office: 1.2·10⁷ pairs, about 10¹² multiply-adds per evaluation).
//!   The reference's protocol (selection on the test split, patience 5 evaluations, hit-normalised NDCG)
//!   is the trainer's business (`Protocol::Reference`, `[train]`, `[eval]`); the reference counts a tie as an
//!   improvement, the trainer does not.
//! - **Modalities**: the reference concatenates exactly `[visual ; text]`; here whatever modalities the
//!   extractor hands out, in its order.
//! - **A non-finite loss** ends the epoch before that batch's optimiser step and shows in `"total"`.

use std::fmt;

use candle_core::{Device, Module, Tensor, Var, D};
use candle_nn::{Init, Linear, VarBuilder, VarMap};
use mmkd_data::{Csr, NegativeSampler};
use mmkd_features::nn::{l2_normalize, linear, LinearInit};
use mmkd_features::{FeatureExtractor, Mode};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::common::check_train_shape;
use crate::loss::{clip_rows, covariance_loss, CovForm};
use crate::model::{Backbone, Dims, EpochCtx, Recommender, StepLosses};
use crate::{Error, Result};

/// `tf.nn.l2_normalize` clamps the squared norm at 1e-12, i.e. the norm at 1e-6.
pub const TF_L2_EPS: f64 = 1e-6;
/// Width of the attention's hidden layer in units of K (`units=5*self.embed_dim`).
const ATTENTION_WIDTH_FACTOR: usize = 5;
/// Most elements of one `(users, n_items, 5K)` block in [`Maml::score_users`].
const EVAL_BLOCK_ELEMS: usize = 1 << 24;

/// MAML's hyper-parameters (spec `maml.md` §1; defaults are the SGFD repository's effective values).
/// In TOML: `[maml] embed_dim = 128, batch_size = 256, num_neg = 4, …`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)] // A typo in a config file is an error, not a silent default.
pub struct MamlConfig {
    /// `embed_dim`: width K of the user and item embeddings, of f and of the attention (hard-coded 128 in the
    /// SGFD repository's `main`; upstream 64).
    pub embed_dim: usize,
    /// `--batch_size`: (user, positive item) pairs per step (N).
    pub batch_size: usize,
    /// `--num_neg`: negatives per positive pair (W).
    pub num_neg: usize,
    /// `--hidden_layer_dim`: width h of the feature MLP's first layer (the next two have h/2).
    pub hidden_layer_dim: usize,
    /// `--margin` of the hinge loss (the class default 1.5 is unused).
    pub margin: f64,
    /// `--feature_l2_reg`: weight of `Σ_j ‖E_i[j] − f[j]‖²`.
    pub feature_l2_reg: f64,
    /// `clip_norm` (hard-coded 1.0): the largest row norm of E_u, E_i and f.
    pub clip_norm: f64,
    /// `feature_projection_scaling_factor` (hard-coded 1.0): f's MLP output is multiplied by it before clipping.
    pub feature_projection_scaling_factor: f64,
    /// `use_rank_weight`: multiply each pair's hinge by `ln(1 + estimated rank)`.
    pub use_rank_weight: bool,
    /// `use_cov_loss`: add the covariance term.
    pub use_cov_loss: bool,
    /// `cov_loss_weight`: weight of the covariance term.
    pub cov_loss_weight: f64,
    /// `eva_batches`: mini-batches per epoch (one evaluation per epoch); 0 = one pass over the train pairs.
    pub batches_per_epoch: usize,
    /// Train the feature MLP, the attention and the extractor too (default). `false` reproduces the
    /// reference, whose optimiser has `var_list=[E_u, E_i]` (`MAML/MAML.py`, spec §3).
    pub train_all_variables: bool,
}

impl Default for MamlConfig {
    fn default() -> Self {
        Self {
            embed_dim: 128,
            batch_size: 256,
            num_neg: 4,
            hidden_layer_dim: 256,
            margin: 1.0,
            feature_l2_reg: 1.0,
            clip_norm: 1.0,
            feature_projection_scaling_factor: 1.0,
            use_rank_weight: true,
            use_cov_loss: true,
            cov_loss_weight: 5.0,
            batches_per_epoch: 100,
            train_all_variables: true,
        }
    }
}

impl MamlConfig {
    /// Rejects zero sizes, a hidden width below 2, a non-positive clip norm or scaling factor, and negative or
    /// non-finite weights and margin.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [("embed_dim", self.embed_dim), ("batch_size", self.batch_size), ("num_neg", self.num_neg)] {
            if v == 0 {
                return Err(Error::Config(format!("maml: {name} must be at least 1, got 0")));
            }
        }
        if self.hidden_layer_dim < 2 {
            return Err(Error::Config(format!(
                "maml: hidden_layer_dim must be at least 2 (the MLP's next layers have hidden_layer_dim / 2), got {}",
                self.hidden_layer_dim
            )));
        }
        for (name, v) in [
            ("margin", self.margin),
            ("feature_l2_reg", self.feature_l2_reg),
            ("cov_loss_weight", self.cov_loss_weight),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::Config(format!("maml: {name} must be finite and ≥ 0, got {v}")));
            }
        }
        for (name, v) in [
            ("clip_norm", self.clip_norm),
            ("feature_projection_scaling_factor", self.feature_projection_scaling_factor),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(Error::Config(format!("maml: {name} must be finite and > 0, got {v}")));
            }
        }
        Ok(())
    }
}

/// The terms of one batch's loss, each as it enters `total` (weights applied), all scalars.
#[derive(Debug, Clone)]
pub struct MamlLosses {
    /// The rank-weighted hinge loss, summed over the batch.
    pub emb: Tensor,
    /// `feature_l2_reg · Σ_j ‖E_i[j] − f[j]‖²` (zero when the weight is 0).
    pub feat: Tensor,
    /// `cov_loss_weight · Σ_{k≠l} Cov_kl` (zero without `use_cov_loss`).
    pub cov: Tensor,
    /// The extractor's weighted auxiliary losses on the step's rows (detached with `train_all_variables =
    /// false`).
    pub aux: Vec<(&'static str, Tensor)>,
    /// The sum of all the above.
    pub total: Tensor,
}

impl MamlLosses {
    /// `(name, term)` for every term, `"total"` last: the keys of [`crate::EpochStats::losses`].
    pub fn named(&self) -> Vec<(&'static str, &Tensor)> {
        let mut out = vec![("emb", &self.emb), ("feat", &self.feat), ("cov", &self.cov)];
        out.extend(self.aux.iter().map(|(name, t)| (*name, t)));
        out.push(("total", &self.total));
        out
    }
}

/// Evaluation-mode quantities: the embeddings and the per-user / per-item parts of the first attention layer.
struct EvalCache {
    /// E_u `(n_users, K)`.
    user: Tensor,
    /// E_i `(n_items, K)`.
    item: Tensor,
    /// `E_u W_uᵀ` `(n_users, 5K)`.
    user_proj: Tensor,
    /// `E_i W_iᵀ + f W_fᵀ` `(n_items, 5K)`.
    item_proj: Tensor,
    /// `‖E_u[u]‖²` `(n_users, 1)`.
    user_sq: Tensor,
    /// `‖E_i[j]‖² + ‖f[j]‖²` `(1, n_items)`.
    item_sq: Tensor,
}

/// The MAML model. Parameter keys under the `vb` it is built with: `user_emb.weight` `(n_users, K)`,
/// `item_emb.weight` `(n_items, K)`, `mlp.layer_1` … `mlp.layer_4` (`.weight` `(out, in)`, `.bias`),
/// `attention.hidden` (3K → 5K) and `attention.output` (5K → K), and the extractor's, which the caller builds
/// under `vb.pp("extractor")`.
pub struct Maml {
    cfg: MamlConfig,
    dims: Dims,
    user_emb: Var,
    item_emb: Var,
    mlp: [Linear; 4],
    attention_hidden: Linear,
    attention_output: Linear,
    extractor: Box<dyn FeatureExtractor>,
    varmap: VarMap,
    device: Device,
    /// f of every item, detached: the constant f of an epoch with `train_all_variables = false`.
    frozen_features: Option<Tensor>,
    eval_cache: Option<EvalCache>,
    /// The train matrix the model is fitted on.
    train: Csr,
    /// This epoch's batches: users, positives and `num_neg` negatives per row ([`Backbone::begin_epoch`]).
    epoch_batches: Vec<(Vec<u32>, Vec<u32>, Vec<u32>)>,
}

impl fmt::Debug for Maml {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Maml")
            .field("cfg", &self.cfg)
            .field("dims", &self.dims)
            .field("modalities", &self.extractor.modalities())
            .field("eval_cached", &self.eval_cache.is_some())
            .finish_non_exhaustive()
    }
}

impl Maml {
    /// Builds the parameters with the reference's initialisations (spec §3), drawn through `vb` (use
    /// [`mmkd_features::seeded_var_builder`] for reproducible draws): E_u, E_i ~ N(0, 1/K), every dense layer
    /// Glorot-uniform with zero bias. Then E_i is overwritten by f (spec §7, `E_i ← f`).
    ///
    /// `varmap` is the map behind `vb`; it is kept (a cheap shared handle) and returned by
    /// [`Backbone::vars`], so it must also hold the extractor's variables: build the extractor from the same
    /// map with `vb.pp("extractor")`. `dims` comes from the data. The MLP's input width is the extractor's
    /// number of modalities times its `out_dim`.
    pub fn new(
        vb: VarBuilder,
        varmap: &VarMap,
        cfg: &MamlConfig,
        dims: Dims,
        train: &Csr,
        extractor: Box<dyn FeatureExtractor>,
        device: &Device,
    ) -> Result<Self> {
        cfg.validate()?;
        check_train_shape("maml", dims, train)?;
        if dims.n_users == 0 || dims.n_items == 0 {
            return Err(Error::Shape(format!("maml: need users and items, got {} × {}", dims.n_users, dims.n_items)));
        }
        let n_modalities = extractor.modalities().len();
        if n_modalities == 0 || extractor.out_dim() == 0 {
            return Err(Error::Config("maml: the extractor hands out no features (no modality or out_dim 0)".into()));
        }
        let k = cfg.embed_dim;
        let h = cfg.hidden_layer_dim;
        let init = Init::Randn { mean: 0.0, stdev: (1.0 / k as f64).sqrt() };
        let user_w = vb.pp("user_emb").get_with_hints((dims.n_users, k), "weight", init)?;
        let item_w = vb.pp("item_emb").get_with_hints((dims.n_items, k), "weight", init)?;
        let as_var = |t: &Tensor, name: &str| -> Result<Var> {
            if !t.is_variable() {
                return Err(Error::Config(format!(
                    "maml: `{name}` is not a trainable variable; build MAML from a VarMap-backed VarBuilder"
                )));
            }
            Ok(Var::from_tensor(t)?)
        };
        let user_emb = as_var(&user_w, "user_emb.weight")?;
        let item_emb = as_var(&item_w, "item_emb.weight")?;
        let glorot = LinearInit::Glorot;
        let mlp_vb = vb.pp("mlp");
        let mlp = [
            linear(mlp_vb.pp("layer_1"), n_modalities * extractor.out_dim(), h, glorot)?,
            linear(mlp_vb.pp("layer_2"), h, h / 2, glorot)?,
            linear(mlp_vb.pp("layer_3"), h / 2, h / 2, glorot)?,
            linear(mlp_vb.pp("layer_4"), h / 2, k, glorot)?,
        ];
        let att_vb = vb.pp("attention");
        let wide = ATTENTION_WIDTH_FACTOR * k;
        let attention_hidden = linear(att_vb.pp("hidden"), 3 * k, wide, glorot)?;
        let attention_output = linear(att_vb.pp("output"), wide, k, glorot)?;
        let model = Self {
            cfg: cfg.clone(),
            dims,
            user_emb,
            item_emb,
            mlp,
            attention_hidden,
            attention_output,
            extractor,
            varmap: varmap.clone(),
            device: device.clone(),
            frozen_features: None,
            eval_cache: None,
            train: train.clone(),
            epoch_batches: Vec::new(),
        };
        let f = model.item_features(None)?;
        if f.dims() != [dims.n_items, k] {
            return Err(Error::Shape(format!(
                "maml: the extractor gave features of {:?} for {} items",
                f.dims(),
                dims.n_items
            )));
        }
        model.item_emb.set(&f.to_dtype(model.item_emb.dtype())?)?;
        Ok(model)
    }

    /// The configuration.
    pub fn config(&self) -> &MamlConfig {
        &self.cfg
    }

    /// The feature extractor.
    pub fn extractor(&self) -> &dyn FeatureExtractor {
        self.extractor.as_ref()
    }

    /// The embedding tables E_u `(n_users, K)` and E_i `(n_items, K)` (the variables themselves).
    pub fn embeddings(&self) -> (&Tensor, &Tensor) {
        (self.user_emb.as_tensor(), self.item_emb.as_tensor())
    }

    /// f of `items` (u32 `(b,)`; `None` = every item), evaluation mode, detached: `(b, K)`.
    pub fn item_features(&self, items: Option<&Tensor>) -> Result<Tensor> {
        let out = self.extractor.extract(items, Mode::Eval)?;
        Ok(self.project(&out.features)?.detach())
    }

    /// f from the extractor's per-modality features (spec §4): the MLP on their normalised concatenation,
    /// scaled, rows clipped to `clip_norm`. `(b, K)`.
    fn project(&self, features: &[Tensor]) -> Result<Tensor> {
        let x = Tensor::cat(features, 1)?; // (b, M·d)
        let mut h = l2_normalize(&x, TF_L2_EPS)?;
        for (idx, layer) in self.mlp.iter().enumerate() {
            if idx > 0 && idx < 3 {
                h = l2_normalize(&h, TF_L2_EPS)?;
            }
            h = self.layer(layer).forward(&h)?;
            if idx < 3 {
                h = h.relu()?;
            }
        }
        let o = h.affine(self.cfg.feature_projection_scaling_factor, 0.0)?; // (b, K)
        clip_rows(&o, self.cfg.clip_norm)
    }

    /// `layer` as the step uses it: detached when only the embeddings are trained.
    fn layer(&self, layer: &Linear) -> Linear {
        if self.cfg.train_all_variables {
            layer.clone()
        } else {
            Linear::new(layer.weight().detach(), layer.bias().map(Tensor::detach))
        }
    }

    /// f of every item for the step: trained (with a graph) or the frozen constant.
    fn all_features_for_step(&self) -> Result<Tensor> {
        if self.cfg.train_all_variables {
            let out = self.extractor.extract(None, Mode::Train)?;
            return self.project(&out.features);
        }
        match &self.frozen_features {
            Some(f) => Ok(f.clone()),
            None => self.item_features(None),
        }
    }

    fn check_ids(&self, users: &[u32], items: &[u32]) -> Result<()> {
        let (n_users, n_items) = (self.dims.n_users, self.dims.n_items);
        if let Some(&u) = users.iter().find(|&&u| u as usize >= n_users) {
            return Err(Error::Shape(format!("maml: user {u} out of range for {n_users} users")));
        }
        if let Some(&i) = items.iter().find(|&&i| i as usize >= n_items) {
            return Err(Error::Shape(format!("maml: item {i} out of range for {n_items} items")));
        }
        Ok(())
    }

    /// `d(u_k, j_k)` of the pairs `(users[k], items[k])` with the current parameters, through the training
    /// path (attention per pair), no gradient: `(n,)`.
    pub fn distances(&self, users: &[u32], items: &[u32]) -> Result<Tensor> {
        if users.len() != items.len() || users.is_empty() {
            return Err(Error::Shape(format!(
                "maml: distances need as many users as items, at least one, got {} and {}",
                users.len(),
                items.len()
            )));
        }
        self.check_ids(users, items)?;
        let n = users.len();
        let u_idx = Tensor::from_slice(users, n, &self.device)?;
        let i_idx = Tensor::from_slice(items, n, &self.device)?;
        let e_u = self.user_emb.as_tensor().detach().index_select(&u_idx, 0)?; // (n, K)
        let e_i = self.item_emb.as_tensor().detach().index_select(&i_idx, 0)?; // (n, K)
        let f = self.item_features(Some(&i_idx))?; // (n, K)
        let (hidden, output) = (self.attention_hidden.clone(), self.attention_output.clone());
        let a = attention_weights(&hidden, &output, &e_u, &e_i, &f)?;
        Ok(weighted_distance(&a, &e_u, &e_i)?.detach())
    }

    /// The loss of one batch (spec §6): `users[b]` with positive `pos[b]` and negatives
    /// `neg[b·W .. (b+1)·W]`, W = `num_neg`.
    pub fn batch_losses(&self, users: &[u32], pos: &[u32], neg: &[u32]) -> Result<MamlLosses> {
        let b = users.len();
        let w = self.cfg.num_neg;
        if b == 0 || pos.len() != b || neg.len() != b * w {
            return Err(Error::Shape(format!(
                "maml: a batch needs N ≥ 1 users, N positives and N·{w} negatives, got {b}, {} and {}",
                pos.len(),
                neg.len()
            )));
        }
        self.check_ids(users, pos)?;
        self.check_ids(&[], neg)?;
        // Rows [p_b, n_b1..n_bW] per pair, flattened (the reference's B'), and their users.
        let cols = 1 + w;
        let m = b * cols;
        let mut rows = Vec::with_capacity(m);
        let mut row_users = Vec::with_capacity(m);
        for (k, (&u, &p)) in users.iter().zip(pos).enumerate() {
            rows.push(p);
            rows.extend_from_slice(&neg[k * w..(k + 1) * w]);
            row_users.extend(std::iter::repeat_n(u, cols));
        }
        let rows = Tensor::from_vec(rows, m, &self.device)?;
        let row_users = Tensor::from_vec(row_users, m, &self.device)?;

        let extracted = self.extractor.extract(Some(&rows), Mode::Train)?;
        let train_all = self.cfg.train_all_variables;
        let (f_rows, f_all) = if train_all {
            let f_rows = self.project(&extracted.features)?; // (m, K)
            let f_all = if self.cfg.feature_l2_reg > 0.0 { Some(self.all_features_for_step()?) } else { None };
            (f_rows, f_all)
        } else {
            let f_all = self.all_features_for_step()?; // (n_items, K), constant
            (f_all.index_select(&rows, 0)?, Some(f_all))
        };

        let e_user = self.user_emb.as_tensor();
        let e_item = self.item_emb.as_tensor();
        let e_u = e_user.index_select(&row_users, 0)?; // (m, K)
        let e_i = e_item.index_select(&rows, 0)?; // (m, K)
        let hidden = self.layer(&self.attention_hidden);
        let output = self.layer(&self.attention_output);
        let a = attention_weights(&hidden, &output, &e_u, &e_i, &f_rows)?; // (m, K)
        let d = weighted_distance(&a, &e_u, &e_i)?.reshape((b, cols))?; // (b, 1 + W)
        let d_pos = d.narrow(1, 0, 1)?.squeeze(1)?; // (b,)
        let d_neg = d.narrow(1, 1, w)?; // (b, W)
        let rank_items = self.cfg.use_rank_weight.then_some(self.dims.n_items);
        let emb = hinge_rank_loss(&d_pos, &d_neg, self.cfg.margin, rank_items)?;

        let zero = Tensor::zeros((), e_item.dtype(), &self.device)?;
        let feat = match f_all {
            Some(f) if self.cfg.feature_l2_reg > 0.0 => {
                feature_loss(e_item, &f.to_dtype(e_item.dtype())?)?.affine(self.cfg.feature_l2_reg, 0.0)?
            }
            _ => zero.clone(),
        };
        let cov = if self.cfg.use_cov_loss {
            let x = Tensor::cat(&[e_item, e_user], 0)?; // (n_items + n_users, K)
            covariance_loss(&x, CovForm::OffdiagSum)?.affine(self.cfg.cov_loss_weight, 0.0)?
        } else {
            zero
        };
        let mut total = ((&emb + &feat)? + &cov)?;
        let mut aux = Vec::with_capacity(extracted.aux_losses.len());
        for (name, t) in extracted.aux_losses {
            let t = t.to_dtype(e_item.dtype())?;
            // Frozen SGFD modules: the reference's `dis` term has no gradient (spec §6); keep its value only.
            let t = if train_all { t } else { t.detach() };
            total = (total + &t)?;
            aux.push((name, t));
        }
        Ok(MamlLosses { emb, feat, cov, aux, total })
    }

    /// Clips every row of E_u and E_i to norm ≤ `clip_norm` in place (`tf.clip_by_norm(·, axes=[1])`).
    pub fn clip_embeddings(&self) -> Result<()> {
        for var in [&self.user_emb, &self.item_emb] {
            let clipped = clip_rows(&var.as_tensor().detach(), self.cfg.clip_norm)?;
            var.set(&clipped)?;
        }
        Ok(())
    }

    fn eval_quantities(&self) -> Result<EvalCache> {
        let k = self.cfg.embed_dim;
        let user = self.user_emb.as_tensor().detach();
        let item = self.item_emb.as_tensor().detach();
        let f = self.item_features(None)?.to_dtype(item.dtype())?; // (n_items, K)
        let w = self.attention_hidden.weight().detach(); // (5K, 3K)
        let part = |idx: usize| w.narrow(1, idx * k, k)?.t()?.contiguous(); // (K, 5K)
        let user_proj = user.matmul(&part(0)?)?; // (n_users, 5K)
        let item_proj = (item.matmul(&part(1)?)? + f.matmul(&part(2)?)?)?; // (n_items, 5K)
        let user_sq = user.sqr()?.sum_keepdim(1)?; // (n_users, 1)
        let item_sq = (item.sqr()?.sum(1)? + f.sqr()?.sum(1)?)?.unsqueeze(0)?; // (1, n_items)
        Ok(EvalCache { user, item, user_proj, item_proj, user_sq, item_sq })
    }

    /// `−d(u, j)` of `users` against every item from `cache`: `(users.len(), n_items)`.
    fn scores_from(&self, cache: &EvalCache, users: &[u32]) -> Result<Tensor> {
        let k = self.cfg.embed_dim;
        let n_items = self.dims.n_items;
        let wide = ATTENTION_WIDTH_FACTOR * k;
        let chunk = (EVAL_BLOCK_ELEMS / (n_items * wide)).max(1);
        let bias = match self.attention_hidden.bias() {
            Some(b) => b.detach(),
            None => Tensor::zeros(wide, cache.user.dtype(), &self.device)?,
        };
        let output = self.attention_output.clone();
        let mut blocks = Vec::with_capacity(users.len().div_ceil(chunk));
        for part in users.chunks(chunk) {
            let c = part.len();
            let idx = Tensor::from_slice(part, c, &self.device)?;
            let pu = cache.user_proj.index_select(&idx, 0)?.unsqueeze(1)?; // (c, 1, 5K)
            let norm = cache
                .user_sq
                .index_select(&idx, 0)?
                .broadcast_add(&cache.item_sq)?
                .sqrt()?
                .clamp(TF_L2_EPS, f64::INFINITY)?
                .unsqueeze(2)?; // (c, n_items, 1)
            let pre = pu.broadcast_add(&cache.item_proj.unsqueeze(0)?)?.broadcast_div(&norm)?.broadcast_add(&bias)?; // (c, n_items, 5K)
            let a1 = l2_normalize(&pre.tanh()?, TF_L2_EPS)?.reshape((c * n_items, wide))?;
            let a2 = output.forward(&a1)?.relu()?; // (c·n_items, K)
            let a = (candle_nn::ops::softmax(&a2, D::Minus1)? * k as f64)?.reshape((c, n_items, k))?;
            let e_u = cache.user.index_select(&idx, 0)?.unsqueeze(1)?; // (c, 1, K)
            let diff = e_u.broadcast_sub(&cache.item.unsqueeze(0)?)?; // (c, n_items, K)
            let dist = (a.sqr()? * diff.sqr()?)?.sum(2)?; // (c, n_items)
            blocks.push(dist.neg()?);
        }
        Ok(Tensor::cat(&blocks, 0)?) // (users, n_items)
    }

    /// One step's batch of `n` consecutive pairs from `pairs` at `*pos`, reshuffling when a pass is used up.
    fn next_batch<'p>(
        pairs: &'p mut [(u32, u32)],
        pos: &mut usize,
        n: usize,
        fixed_count: bool,
        rng: &mut rand_chacha::ChaCha8Rng,
    ) -> &'p [(u32, u32)] {
        if fixed_count && *pos + n > pairs.len() {
            pairs.shuffle(rng);
            *pos = 0;
        }
        let start = *pos;
        let end = (start + n).min(pairs.len());
        *pos = end;
        &pairs[start..end]
    }
}

impl Backbone for Maml {
    fn name(&self) -> &'static str {
        "maml"
    }

    /// `batches_per_epoch` steps (or one pass with 0) on shuffled train pairs with `num_neg` negatives each,
    /// drawn here; every step is followed by clipping E_u and E_i ([`Backbone::after_step`]). Terms: `"emb"`,
    /// `"feat"`, `"cov"` and the extractor's auxiliary terms (`"kd"`, `"ce"` with SGFD).
    fn begin_epoch(&mut self, ctx: &mut EpochCtx<'_>) -> Result<usize> {
        self.eval_cache = None;
        self.extractor.on_epoch_start(ctx.epoch)?;
        self.frozen_features = None;
        if !self.cfg.train_all_variables {
            self.frozen_features = Some(self.item_features(None)?);
        }
        let mut pairs = self.train.pairs();
        if pairs.is_empty() {
            return Err(Error::Config("maml: the train split has no pairs".into()));
        }
        pairs.shuffle(&mut *ctx.rng);
        let mut sampler = NegativeSampler::new(&self.train, ctx.rng.random());
        let fixed_count = self.cfg.batches_per_epoch > 0;
        let n = self.cfg.batch_size.min(pairs.len());
        let steps = if fixed_count { self.cfg.batches_per_epoch } else { pairs.len().div_ceil(n) };
        let w = self.cfg.num_neg;
        let mut pos = 0;
        let mut draws = Vec::with_capacity(w);
        self.epoch_batches.clear();
        for _ in 0..steps {
            let batch = Self::next_batch(&mut pairs, &mut pos, n, fixed_count, &mut *ctx.rng);
            let (users, positives): (Vec<u32>, Vec<u32>) = batch.iter().copied().unzip();
            let mut negatives = Vec::with_capacity(users.len() * w);
            for &u in &users {
                sampler.sample_n(u, w, &mut draws)?;
                negatives.extend_from_slice(&draws);
            }
            self.epoch_batches.push((users, positives, negatives));
        }
        Ok(steps)
    }

    fn step_losses(&mut self, step: usize, _rng: &mut ChaCha8Rng) -> Result<StepLosses> {
        let (users, positives, negatives) = self
            .epoch_batches
            .get(step)
            .ok_or_else(|| Error::Config(format!("maml: step {step} beyond the epoch's batches")))?;
        let l = self.batch_losses(users, positives, negatives)?;
        let mut terms = vec![("emb", l.emb), ("feat", l.feat), ("cov", l.cov)];
        terms.extend(l.aux);
        Ok(StepLosses::new(terms, l.total))
    }

    /// Clips E_u and E_i to the unit ball (the reference's `clip_by_norm` after every update).
    fn after_step(&mut self) -> Result<()> {
        self.clip_embeddings()
    }

    /// Caches E_u, E_i, f and the per-user / per-item parts of the first attention layer.
    fn prepare_eval(&mut self) -> Result<()> {
        self.eval_cache = Some(self.eval_quantities()?);
        Ok(())
    }

    fn vars(&self) -> &VarMap {
        &self.varmap
    }
}

impl Recommender for Maml {
    /// `−d(u, j)` for every item j, attention recomputed per pair (spec §7): `(users.len(), n_items)`.
    /// Without [`Backbone::prepare_eval`] the cached quantities are computed for this call.
    fn score_users(&self, users: &[u32]) -> Result<Tensor> {
        self.check_ids(users, &[])?;
        if users.is_empty() {
            return Ok(Tensor::zeros((0, self.dims.n_items), self.user_emb.dtype(), &self.device)?);
        }
        match &self.eval_cache {
            Some(cache) => self.scores_from(cache, users),
            None => self.scores_from(&self.eval_quantities()?, users),
        }
    }
}

/// The attention weights `a = K · softmax(relu(output(l2n(tanh(hidden(l2n([e_u ; e_i ; f])))))))` of each row
/// (spec §5): `e_u`, `e_i`, `f` `(n, K)`; `hidden` 3K → 5K (any width), `output` → K. Returns `(n, K)`, each
/// row summing to K. `l2n` is TensorFlow's (norm clamped at 1e-6).
pub fn attention_weights(hidden: &Linear, output: &Linear, e_u: &Tensor, e_i: &Tensor, f: &Tensor) -> Result<Tensor> {
    let (n, k) = e_u.dims2()?;
    if e_i.dims() != [n, k] || f.dims() != [n, k] {
        return Err(Error::Shape(format!(
            "attention_weights: expected three (n, K) tensors, got {:?}, {:?} and {:?}",
            e_u.dims(),
            e_i.dims(),
            f.dims()
        )));
    }
    let (wide, in_dim) = hidden.weight().dims2()?;
    let (out_dim, out_in) = output.weight().dims2()?;
    if in_dim != 3 * k || out_in != wide || out_dim != k {
        return Err(Error::Shape(format!(
            "attention_weights: layers {in_dim} → {wide} and {out_in} → {out_dim} do not fit K = {k} (3K → H → K)"
        )));
    }
    let q = l2_normalize(&Tensor::cat(&[e_u, e_i, f], 1)?, TF_L2_EPS)?; // (n, 3K)
    let a1 = hidden.forward(&q)?.tanh()?; // (n, H)
    let a2 = output.forward(&l2_normalize(&a1, TF_L2_EPS)?)?.relu()?; // (n, K)
    Ok((candle_nn::ops::softmax(&a2, D::Minus1)? * k as f64)?)
}

/// `d_n = Σ_k (a_nk e_u,nk − a_nk e_i,nk)² = Σ_k a_nk² (e_u,nk − e_i,nk)²`: `a`, `e_u`, `e_i` `(n, K)` → `(n,)`.
pub fn weighted_distance(a: &Tensor, e_u: &Tensor, e_i: &Tensor) -> Result<Tensor> {
    if a.rank() != 2 || e_u.dims() != a.dims() || e_i.dims() != a.dims() {
        return Err(Error::Shape(format!(
            "weighted_distance: expected three (n, K) tensors, got {:?}, {:?} and {:?}",
            a.dims(),
            e_u.dims(),
            e_i.dims()
        )));
    }
    Ok((a.sqr()? * (e_u - e_i)?.sqr()?)?.sum(1)?)
}

/// The rank-weighted hinge loss summed over the batch (spec §6): `d_pos` `(b,)`, `d_neg` `(b, W)`;
/// `ℓ_b = max(0, d_pos_b − min_w d_neg_bw + margin)`, and with `rank_items = Some(n_items)` each `ℓ_b` is
/// multiplied by `ln(1 + n_items · mean_w 1[d_pos_b − d_neg_bw + margin > 0])`, a constant (no gradient).
pub fn hinge_rank_loss(d_pos: &Tensor, d_neg: &Tensor, margin: f64, rank_items: Option<usize>) -> Result<Tensor> {
    let (b, w) = d_neg.dims2()?;
    if d_pos.dims() != [b] || w == 0 {
        return Err(Error::Shape(format!(
            "hinge_rank_loss: expected d_pos (b,) and d_neg (b, W ≥ 1), got {:?} and {:?}",
            d_pos.dims(),
            d_neg.dims()
        )));
    }
    let closest = d_neg.min(1)?; // (b,)
    let hinge = (d_pos - closest)?.affine(1.0, margin)?.relu()?; // (b,)
    let per_pair = match rank_items {
        None => hinge,
        Some(n_items) => {
            let gap = d_pos.unsqueeze(1)?.broadcast_sub(d_neg)?.affine(1.0, margin)?.detach(); // (b, W)
            let impostors = gap.gt(&gap.zeros_like()?)?.to_dtype(d_pos.dtype())?; // (b, W)
            let rank = impostors.mean(1)?.affine(n_items as f64, 0.0)?; // (b,)
            (hinge * rank.affine(1.0, 1.0)?.log()?)?
        }
    };
    Ok(per_pair.sum_all()?)
}

/// `Σ_j ‖e_i[j] − f[j]‖²`: `e_i`, `f` `(n, K)`.
pub fn feature_loss(e_i: &Tensor, f: &Tensor) -> Result<Tensor> {
    if e_i.rank() != 2 || e_i.dims() != f.dims() {
        return Err(Error::Shape(format!(
            "feature_loss: expected two (n, K) tensors, got {:?} and {:?}",
            e_i.dims(),
            f.dims()
        )));
    }
    Ok((e_i - f)?.sqr()?.sum_all()?)
}
