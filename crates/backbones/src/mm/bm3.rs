//! BM3: Bootstrap Latent Representations for Multi-modal Recommendation (Zhou et al., WWW'23), as the SGFD
//! repository runs it (spec `bm3.md`).
//!
//! Reference: SGFD repo `BM3/models/bm3.py` (an MMRec/BM3 fork; `common/loss.py` `EmbLoss`), diffed against
//! upstream enoche/BM3 and MMRec `src/models/bm3.py`. Line numbers below are those of the SGFD file.
//!
//! One training step on a batch of B (user, positive item) pairs, no negatives:
//! ```text
//! u, i  = LightGCN mean over layers 0..L of [E_u; E_i] with Â = D^{-1/2} A D^{-1/2};  i += E_i   (bm3.py:95-105)
//! f_m   = extractor features of the batch's items, one per modality                 (student S_m(F_m))
//! targets (no gradient, inverted dropout p, always on):  ũ, ĩ, f̃_m                     (bm3.py:119-131)
//! online (predictor g):  g(u[u_b]), g(i[i_b]), g(f_m)                                 (bm3.py:133, 148, 159)
//! loss  = L_ui + L_iu + reg_weight·(‖u‖_F + ‖i‖_F)/I
//!         + cl_weight·Σ_m (L_m + L_mm) + Σ aux                                       (bm3.py:151-181)
//! ```
//! with `L_xy = 1 − mean cos(online_x, target_y)` ([`cosine_alignment_loss`]) and the extractor's weighted
//! auxiliary losses on B' = the batch's positive items (SGFD's `("kd", λ1·L_KD)`, `("ce", λ2·L_CE)`, spec
//! `sgfd.md` §9). Scoring (`full_sort_predict`, bm3.py:185-190) is `g(u)[users] · g(i)ᵀ`, without features.
//!
//! # Deviations from the reference
//! - **Features of the batch rows only.** The reference computes the student features of every item
//!   (bm3.py:112, 115), runs the student again on the batch's items for the SGFD losses (bm3.py:146, 157), and
//!   applies the predictor to all users and items before indexing (bm3.py:133, 148, 159). Every one of those
//!   maps is row-wise, so we call `extractor.extract(Some(i_b), Mode::Train)` once, which returns the
//!   features of the batch's items together with the auxiliary losses on them, and apply `g` to the B
//!   gathered rows. Values and gradients are the same; `g` sees 4·B rows instead of U + 3·I, and the student
//!   runs once on B rows instead of on I + B.
//! - **Dropout masks per batch row id.** The reference draws `F.dropout` masks on the full `(U, d)` and
//!   `(I, d)` matrices and then indexes them (bm3.py:123-139); we draw one mask row per distinct id of the
//!   batch (ids in ascending order) from the trainer's ChaCha stream, and rows of a repeated id share it, as
//!   indexing a full mask would. The distribution is the same; the random numbers are not PyTorch's.
//! - **Batch order.** The reference shuffles the rows of `train.csv` in file order (duplicates kept); we
//!   shuffle the deduplicated train pairs of [`mmkd_data::Dataset`] (user-major order) with `ctx.rng`.
//! - **Cosine.** `F.cosine_similarity(eps = 1e-8)` as PyTorch ≥ 2.0 computes it: each row divided by
//!   `max(‖x‖, 1e-8)`, then the dot product (PyTorch 1.x clamped the product of the norms instead; the two
//!   differ only for rows of norm below 1e-8).
//! - **Modalities.** The reference hard-codes text and visual; here the losses `L_m`, `L_mm` run over
//!   whatever modalities the extractor hands out, in its order (with the SGFD repo's two that is the same sum).
//! - **A non-finite loss** ends the epoch before that batch's optimiser step and is reported in the epoch's
//!   `"total"`; the reference checks `torch.isnan(loss)` and stops training, which is the trainer's call here.
//! - The generic features are constants and the vanilla extractor is whatever [`FeatureExtractor`] the
//!   caller passes (upstream BM3 fine-tunes the raw features and uses Xavier-normal `Linear`s; the SGFD fork
//!   freezes them, as we do).

use std::fmt;

use candle_core::{Device, Module, Tensor};
use candle_nn::{Embedding, Init, Linear, VarBuilder, VarMap};
use mmkd_data::Csr;
use mmkd_features::{FeatureExtractor, Mode};
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::common::{batch_of, DotScores};
use mmkd_nn::graph::{propagate_mean, sym_normalized};
use mmkd_nn::sparse::SparseMatrix;

use crate::loss::{cosine_alignment_loss, dropout_rows, emb_reg, RegForm};
use crate::model::{Backbone, Dims, EpochCtx, Recommender, StepLosses};
use crate::{Error, Result};

/// BM3's hyper-parameters (spec `bm3.md` §1; defaults are the shipped effective values, first grid point).
/// In TOML: `[model] embed_dim = 128, n_layers = 1, dropout = 0.5, reg_weight = 0.1, cl_weight = 2.0`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Bm3Config {
    /// `embedding_size`: width d of the ID embeddings, of the predictor and of the item features (the
    /// reference also uses it as `feat_embed_dim`, bm3.py:27); the extractor's `out_dim` must equal it.
    pub embed_dim: usize,
    /// `n_layers`: LightGCN layers L (grid [1, 2]).
    pub n_layers: usize,
    /// `dropout`: probability p of the inverted dropout that makes the target views (grid [0.5]).
    pub dropout: f64,
    /// `reg_weight`: weight of `EmbLoss(u, i) = (‖u‖_F + ‖i‖_F) / n_items` (grid [0.1, 0.01]).
    pub reg_weight: f64,
    /// `cl_weight`: weight of the four feature-alignment losses `L_t + L_v + L_tv + L_vt`.
    pub cl_weight: f64,
    /// `train_batch_size`: (user, item) pairs per optimiser step.
    pub batch_size: usize,
}

impl Default for Bm3Config {
    fn default() -> Self {
        Self { embed_dim: 128, n_layers: 1, dropout: 0.5, reg_weight: 0.1, cl_weight: 2.0, batch_size: 2048 }
    }
}

impl Bm3Config {
    /// Rejects a zero width or batch, a dropout outside `[0, 1)` and negative or non-finite weights.
    pub fn validate(&self) -> Result<()> {
        if self.embed_dim == 0 || self.batch_size == 0 {
            return Err(Error::Config(format!(
                "bm3: embed_dim and batch_size must be at least 1, got {} and {}",
                self.embed_dim, self.batch_size
            )));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::Config(format!("bm3: dropout must lie in [0, 1), got {}", self.dropout)));
        }
        for (name, w) in [("reg_weight", self.reg_weight), ("cl_weight", self.cl_weight)] {
            if !(w.is_finite() && w >= 0.0) {
                return Err(Error::Config(format!("bm3: {name} must be finite and ≥ 0, got {w}")));
            }
        }
        Ok(())
    }
}

/// The terms of one batch's loss, each as it enters `total` (weights applied), all scalars.
#[derive(Debug, Clone)]
pub struct Bm3Losses {
    /// `L_ui = 1 − mean cos(g(u)[u_b], ĩ[i_b])`.
    pub ui: Tensor,
    /// `L_iu = 1 − mean cos(g(i)[i_b], ũ[u_b])`.
    pub iu: Tensor,
    /// `cl_weight · Σ_m (L_m + L_mm)`: each modality's online features against the item target and against
    /// its own target.
    pub align: Tensor,
    /// `reg_weight · (‖u‖_F + ‖i‖_F) / n_items`.
    pub reg: Tensor,
    /// The extractor's auxiliary losses on the batch's items, already weighted (e.g. `"kd"`, `"ce"`).
    pub aux: Vec<(&'static str, Tensor)>,
    /// The sum of all the above.
    pub total: Tensor,
}

impl Bm3Losses {
    /// `(name, term)` for every term, `"total"` last: the keys of [`crate::EpochStats::losses`].
    pub fn named(&self) -> Vec<(&'static str, &Tensor)> {
        let mut out = vec![("ui", &self.ui), ("iu", &self.iu), ("align", &self.align), ("reg", &self.reg)];
        out.extend(self.aux.iter().map(|(name, t)| (*name, t)));
        out.push(("total", &self.total));
        out
    }
}

impl From<Bm3Losses> for StepLosses {
    fn from(l: Bm3Losses) -> Self {
        let mut terms = vec![("ui", l.ui), ("iu", l.iu), ("align", l.align), ("reg", l.reg)];
        terms.extend(l.aux);
        StepLosses::new(terms, l.total)
    }
}

/// The BM3 model. Parameter keys under the `vb` it is built with: `user_emb.weight` `(n_users, d)`,
/// `item_emb.weight` `(n_items, d)`, `predictor.weight` `(d, d)`, `predictor.bias` `(d,)`, and the
/// extractor's, which the caller builds under `vb.pp("extractor")` (e.g. `extractor.student.visual.weight`).
pub struct Bm3 {
    cfg: Bm3Config,
    dims: Dims,
    user_emb: Embedding,
    item_emb: Embedding,
    predictor: Linear,
    /// `Â` over `n_users + n_items` nodes, users first.
    adj: SparseMatrix,
    /// Train pairs `Â` was built from (user-major order).
    pairs: Vec<(u32, u32)>,
    /// This epoch's pairs, shuffled ([`Backbone::begin_epoch`]).
    epoch_pairs: Vec<(u32, u32)>,
    extractor: Box<dyn FeatureExtractor>,
    varmap: VarMap,
    device: Device,
    eval_cache: Option<DotScores>,
}

impl fmt::Debug for Bm3 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bm3")
            .field("cfg", &self.cfg)
            .field("dims", &self.dims)
            .field("adj", &self.adj)
            .field("modalities", &self.extractor.modalities())
            .field("eval_cached", &self.eval_cache.is_some())
            .finish()
    }
}

impl Bm3 {
    /// Builds the parameters with the reference's initialisations (bm3.py:43-51), drawn through `vb` (use
    /// [`mmkd_features::seeded_var_builder`] for reproducible draws): `E_u`, `E_i` Xavier-uniform
    /// `U(±√(6/(rows + d)))`, the predictor's weight Xavier-normal `N(0, 1/d)` and bias `U(±1/√d)` (PyTorch's
    /// default). `Â` is built once from `train` (users × items, spec §3).
    ///
    /// `varmap` is the map behind `vb`; it is kept (a cheap shared handle) and returned by
    /// [`Backbone::vars`], so it must also hold the extractor's variables: build the extractor from the same
    /// map with `vb.pp("extractor")`. `dims` comes from the data and must match `train`'s shape; the
    /// extractor's `out_dim` must equal `cfg.embed_dim`.
    pub fn new(
        vb: VarBuilder,
        varmap: &VarMap,
        cfg: &Bm3Config,
        dims: Dims,
        train: &Csr,
        extractor: Box<dyn FeatureExtractor>,
        device: &Device,
    ) -> Result<Self> {
        cfg.validate()?;
        if train.n_rows() != dims.n_users || train.n_cols() != dims.n_items {
            return Err(Error::Shape(format!(
                "bm3: dims are {} users × {} items but the train matrix is {} × {}",
                dims.n_users,
                dims.n_items,
                train.n_rows(),
                train.n_cols()
            )));
        }
        if extractor.out_dim() != cfg.embed_dim {
            return Err(Error::Config(format!(
                "bm3: the extractor's out_dim ({}) must equal embed_dim ({}): the predictor maps both",
                extractor.out_dim(),
                cfg.embed_dim
            )));
        }
        let d = cfg.embed_dim;
        let xavier_uniform = |rows: usize| {
            let bound = (6.0 / (rows + d) as f64).sqrt();
            Init::Uniform { lo: -bound, up: bound }
        };
        let user_w = vb.pp("user_emb").get_with_hints((dims.n_users, d), "weight", xavier_uniform(dims.n_users))?;
        let item_w = vb.pp("item_emb").get_with_hints((dims.n_items, d), "weight", xavier_uniform(dims.n_items))?;
        // Xavier-normal on a (d, d) weight: std = √(2 / (d + d)).
        let w_init = Init::Randn { mean: 0.0, stdev: (1.0 / d as f64).sqrt() };
        let b_bound = 1.0 / (d as f64).sqrt();
        let pred = vb.pp("predictor");
        let weight = pred.get_with_hints((d, d), "weight", w_init)?;
        let bias = pred.get_with_hints(d, "bias", Init::Uniform { lo: -b_bound, up: b_bound })?;
        Ok(Self {
            cfg: cfg.clone(),
            dims,
            user_emb: Embedding::new(user_w, d),
            item_emb: Embedding::new(item_w, d),
            predictor: Linear::new(weight, Some(bias)),
            adj: sym_normalized(train),
            pairs: train.pairs(),
            epoch_pairs: Vec::new(),
            extractor,
            varmap: varmap.clone(),
            device: device.clone(),
            eval_cache: None,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Bm3Config {
        &self.cfg
    }

    /// The feature extractor.
    pub fn extractor(&self) -> &dyn FeatureExtractor {
        self.extractor.as_ref()
    }

    /// Propagated embeddings (bm3.py:95-105): users `(n_users, d)` and items `(n_items, d)`, the items with
    /// their ID embedding added once more after the layer mean.
    pub fn forward(&self) -> Result<(Tensor, Tensor)> {
        let item_w = self.item_emb.embeddings();
        let e0 = Tensor::cat(&[self.user_emb.embeddings(), item_w], 0)?; // (U + I, d)
        let mean = propagate_mean(&self.adj, &e0, self.cfg.n_layers)?; // (U + I, d)
        let u = mean.narrow(0, 0, self.dims.n_users)?; // (U, d)
        let i = (mean.narrow(0, self.dims.n_users, self.dims.n_items)? + item_w)?; // (I, d)
        Ok((u, i))
    }

    /// The loss of one batch of pairs `(users[k], items[k])` (spec §4), dropout masks drawn from `rng`.
    pub fn batch_losses(&self, users: &[u32], items: &[u32], rng: &mut ChaCha8Rng) -> Result<Bm3Losses> {
        if users.len() != items.len() || users.is_empty() {
            return Err(Error::Shape(format!(
                "bm3: a batch needs as many users as items, at least one, got {} and {}",
                users.len(),
                items.len()
            )));
        }
        let (n_users, n_items) = (self.dims.n_users, self.dims.n_items);
        if let Some(&u) = users.iter().find(|&&u| u as usize >= n_users) {
            return Err(Error::Shape(format!("bm3: user {u} out of range for {n_users} users")));
        }
        if let Some(&i) = items.iter().find(|&&i| i as usize >= n_items) {
            return Err(Error::Shape(format!("bm3: item {i} out of range for {n_items} items")));
        }
        let b = users.len();
        let user_idx = Tensor::from_slice(users, b, &self.device)?;
        let item_idx = Tensor::from_slice(items, b, &self.device)?;
        let p = self.cfg.dropout;

        let (u, i) = self.forward()?;
        let u_b = u.index_select(&user_idx, 0)?; // (b, d)
        let i_b = i.index_select(&item_idx, 0)?; // (b, d)
                                                 // Targets: detached copies under inverted dropout (bm3.py:119-124).
        let u_target = dropout_rows(&u_b.detach(), users, p, rng)?; // (b, d)
        let i_target = dropout_rows(&i_b.detach(), items, p, rng)?; // (b, d)

        // Student features of the batch's items and the SGFD losses on the same rows (B' = positive items).
        let extracted = self.extractor.extract(Some(&item_idx), Mode::Train)?;
        let mut align_terms = Vec::with_capacity(2 * extracted.features.len());
        for f in &extracted.features {
            let f_target = dropout_rows(&f.detach(), items, p, rng)?; // (b, d)
            let f_online = self.predictor.forward(f)?; // (b, d)
            align_terms.push(cosine_alignment_loss(&f_online, &i_target)?); // L_t, L_v
            align_terms.push(cosine_alignment_loss(&f_online, &f_target)?); // L_tv, L_vt
        }

        let ui = cosine_alignment_loss(&self.predictor.forward(&u_b)?, &i_target)?;
        let iu = cosine_alignment_loss(&self.predictor.forward(&i_b)?, &u_target)?;
        let zero = Tensor::zeros((), u.dtype(), &self.device)?;
        let align = align_terms.iter().try_fold(zero.clone(), |acc, t| acc + t)?.affine(self.cfg.cl_weight, 0.0)?;
        let reg = emb_reg(&[&u, &i], RegForm::Norm, i.dim(0)?)?.affine(self.cfg.reg_weight, 0.0)?;
        let mut total = (((&ui + &iu)? + &align)? + &reg)?;
        for (_, t) in &extracted.aux_losses {
            total = (total + t.to_dtype(u.dtype())?)?;
        }
        Ok(Bm3Losses { ui, iu, align, reg, aux: extracted.aux_losses, total })
    }

    /// `g(u)` of every user and `g(i)ᵀ` of every item, detached.
    fn eval_representations(&self) -> Result<DotScores> {
        let (u, i) = self.forward()?;
        DotScores::new(&self.predictor.forward(&u)?, &self.predictor.forward(&i)?)
        // (U, d), (I, d)
    }
}

impl Backbone for Bm3 {
    fn name(&self) -> &'static str {
        "bm3"
    }

    /// Shuffles the train pairs with `ctx.rng`; one optimiser step per `batch_size` consecutive pairs (the
    /// last batch partial). Reports `"ui"`, `"iu"`, `"align"`, `"reg"` and the extractor's auxiliary terms
    /// (`"kd"`, `"ce"` with SGFD), each as it enters the total.
    fn begin_epoch(&mut self, ctx: &mut EpochCtx<'_>) -> Result<usize> {
        self.eval_cache = None;
        self.extractor.on_epoch_start(ctx.epoch)?;
        self.epoch_pairs.clone_from(&self.pairs);
        self.epoch_pairs.shuffle(&mut *ctx.rng);
        Ok(self.epoch_pairs.len().div_ceil(self.cfg.batch_size))
    }

    fn step_losses(&mut self, step: usize, rng: &mut ChaCha8Rng) -> Result<StepLosses> {
        let (users, items): (Vec<u32>, Vec<u32>) =
            batch_of(&self.epoch_pairs, self.cfg.batch_size, step).iter().copied().unzip();
        Ok(self.batch_losses(&users, &items, rng)?.into())
    }

    /// Caches `g(u)` and `g(i)ᵀ` of the current parameters (bm3.py:185-190: no dropout, no features).
    fn prepare_eval(&mut self) -> Result<()> {
        self.eval_cache = Some(self.eval_representations()?);
        Ok(())
    }

    fn vars(&self) -> &VarMap {
        &self.varmap
    }
}

impl Recommender for Bm3 {
    /// `g(u)[users] · g(i)ᵀ`: `(users.len(), n_items)`. Needs [`Backbone::prepare_eval`] after the last
    /// training epoch.
    fn score_users(&self, users: &[u32]) -> Result<Tensor> {
        DotScores::score_cached(self.eval_cache.as_ref(), "bm3", users)
    }
}
