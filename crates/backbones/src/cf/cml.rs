//! CML: Collaborative Metric Learning (Hsieh et al., WWW'17), spec `cf-baselines.md` §2.
//!
//! Reference: the official TF1 code (changun/CollMetric @d9026cf, `CML.py`); RecBole has no CML.
//!
//! Users and items are points `Eu[u]`, `Ei[i]` (`N(0, 1/d)` at init, not clipped); `δ(u, i) = ‖Eu[u] − Ei[i]‖²`
//! and the ranking score is `−δ`. Loss per batch of B pairs (u_b, j_b) with W sampled negatives each:
//! ```text
//! official: L_m = Σ_b ln(1 + I·M_b/W) · max(0, m + δ⁺_b − min_w δ⁻_{b,w})     (hinge on the closest negative)
//! paper:    L_m = Σ_b Σ_w ln(⌊I·M_b/W⌋ + 1) · max(0, m + δ⁺_b − δ⁻_{b,w})   (every sampled triplet)
//! ```
//! with `M_b` the number of impostors among the W samples (`m + δ⁺_b − δ⁻_{b,w} > 0`), the rank weight a
//! constant for autodiff and a SUM over the batch ([`metric_loss`]); optionally plus `λ_c·L_c`, the
//! covariance regulariser over all rows of `[Ei; Eu]` ([`covariance_loss`]). After every optimiser step every
//! row of both tables is scaled back into the ball of radius `clip_norm` ([`clip_rows`], `Var::set`).
//!
//! Defaults are the spec's \[PORT\] column: d = 128, margin 1.9, clip 1.0, rank weight on, covariance off
//! (λ_c = 0.1, official signed off-diagonal sum when on), W = 20 negatives, batch 1024, S-pair sampling.
//! The spec leaves the hinge form open; the default is the paper's (every sampled triplet). On the `tiny`
//! preset the official closest-negative form fits the train pairs almost perfectly (train Recall@20 ≈ 0.97)
//! and stays below popularity on the test split (≈ 0.15–0.20 against 0.23, with Adam or AdaGrad, margins
//! 0.1–1.9, d 8–128), while the paper's form reaches ≈ 0.29–0.31; `loss_form = "official"` restores it.
//!
//! Deviations: the reference trains with AdaGrad (lr 0.1, accumulator starting at 0.1) in endless rounds
//! of 30 batches; the project has no AdaGrad, so CML steps whatever optimiser the trainer hands it
//! (`[optim]` in `configs/model/cml.toml`), and an epoch is `⌊|R|/B⌋` S-pair batches. The item-feature
//! projector of the paper is not part of the CF baseline.

use std::fmt;

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{Init, VarBuilder, VarMap};
use mmkd_data::Csr;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::common::{check_train_shape, check_users, into_step, EpochBatches, Sampler};
use crate::loss::{clip_rows, covariance_loss, CovForm};
use crate::model::{Backbone, Dims, EpochCtx, Recommender, StepLosses};
use crate::{Error, Result};

/// Which hinge loss CML minimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricLossForm {
    /// Official code: hinge on the closest of the W negatives, weight `ln(1 + I·M/W)`.
    Official,
    /// Paper: hinge on every sampled triplet, weight `ln(⌊I·M/W⌋ + 1)`.
    #[default]
    Paper,
}

/// CML's hyper-parameters (spec §2, \[PORT\] column). In TOML: `[cml] embed_dim = 128, margin = 1.9,
/// clip_norm = 1.0, use_rank_weight = true, use_cov_loss = false, n_negatives = 20`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CmlConfig {
    /// Width d of the user and item points (official `embed_dim`).
    pub embed_dim: usize,
    /// Hinge margin m (official `margin`).
    pub margin: f64,
    /// Radius of the ball every row is clipped into after each step (official `clip_norm`).
    pub clip_norm: f64,
    /// Weight each pair's hinge by its approximate rank (official `use_rank_weight`).
    pub use_rank_weight: bool,
    /// Add the covariance regulariser (official `use_cov_loss`).
    pub use_cov_loss: bool,
    /// λ_c of the covariance regulariser (official `cov_loss_weight`).
    pub cov_loss_weight: f64,
    /// `offdiag_sum` (official) or `paper`.
    pub cov_form: CovForm,
    /// `paper` (every sampled triplet, the default) or `official` (closest negative only) hinge.
    pub loss_form: MetricLossForm,
    /// Sampled negatives W per pair (official `n_negative`).
    pub n_negatives: usize,
    /// Train pairs per step (official `batch_size`).
    pub batch_size: usize,
    /// Batch sampling: `pair` (official; the remainder of an epoch is dropped), `int` or `user` (spec §0).
    pub sampler: Sampler,
}

impl Default for CmlConfig {
    fn default() -> Self {
        Self {
            embed_dim: 128,
            margin: 1.9,
            clip_norm: 1.0,
            use_rank_weight: true,
            use_cov_loss: false,
            cov_loss_weight: 0.1,
            cov_form: CovForm::OffdiagSum,
            loss_form: MetricLossForm::Paper,
            n_negatives: 20,
            batch_size: 1024,
            sampler: Sampler::Pair,
        }
    }
}

impl CmlConfig {
    /// Rejects zero sizes, a non-positive margin or clip radius and a negative covariance weight.
    pub fn validate(&self) -> Result<()> {
        if self.embed_dim == 0 || self.n_negatives == 0 || self.batch_size == 0 {
            return Err(Error::Config(format!(
                "cml: embed_dim, n_negatives and batch_size must be at least 1, got {}, {} and {}",
                self.embed_dim, self.n_negatives, self.batch_size
            )));
        }
        for (name, v) in [("margin", self.margin), ("clip_norm", self.clip_norm)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(Error::Config(format!("cml: {name} must be finite and > 0, got {v}")));
            }
        }
        if !(self.cov_loss_weight.is_finite() && self.cov_loss_weight >= 0.0) {
            return Err(Error::Config(format!(
                "cml: cov_loss_weight must be finite and ≥ 0, got {}",
                self.cov_loss_weight
            )));
        }
        Ok(())
    }
}

/// CML's metric loss, summed over the batch: `users`, `positives` `(B, d)`, `negatives` `(B, W, d)`,
/// `n_items` the catalogue size I of the rank estimate. Without `rank_weight` every weight is 1.
pub fn metric_loss(
    users: &Tensor,
    positives: &Tensor,
    negatives: &Tensor,
    margin: f64,
    n_items: usize,
    rank_weight: bool,
    form: MetricLossForm,
) -> Result<Tensor> {
    let (b, d) = users.dims2()?;
    let (bn, w, dn) = negatives.dims3()?;
    if positives.dims() != [b, d] || bn != b || dn != d || w == 0 {
        return Err(Error::Shape(format!(
            "metric_loss: expected (B, d), (B, d), (B, W, d), got {:?}, {:?}, {:?}",
            users.dims(),
            positives.dims(),
            negatives.dims()
        )));
    }
    let pos_dist = (users - positives)?.sqr()?.sum(1)?; // (B,)
    let neg_dist = negatives.broadcast_sub(&users.unsqueeze(1)?)?.sqr()?.sum(D::Minus1)?; // (B, W)
    let margins = neg_dist.neg()?.broadcast_add(&(&pos_dist + margin)?.unsqueeze(1)?)?; // (B, W): m + δ⁺ − δ⁻
                                                                                        // Impostor counts and rank weights are constants for autodiff.
    let impostors = margins.detach().gt(0.0)?.to_dtype(DType::F64)?.sum(1)?; // (B,)
    let rank = impostors.affine(n_items as f64 / w as f64, 0.0)?; // (B,)
    let weights = match (rank_weight, form) {
        (false, _) => rank.ones_like()?,
        (true, MetricLossForm::Official) => (rank + 1.0)?.log()?,
        (true, MetricLossForm::Paper) => (rank.floor()? + 1.0)?.log()?,
    }
    .to_dtype(users.dtype())?; // (B,)
    let hinge = match form {
        MetricLossForm::Official => (neg_dist.min(1)?.neg()? + (pos_dist + margin)?)?.relu()?, // (B,)
        MetricLossForm::Paper => margins.relu()?.sum(1)?,                                      // (B,)
    };
    Ok((hinge * weights)?.sum_all()?)
}

/// The CML model. Keys under its `vb`: `user_emb.weight` `(n_users, d)`, `item_emb.weight` `(n_items, d)`.
pub struct Cml {
    cfg: CmlConfig,
    dims: Dims,
    user_emb: Var,
    item_emb: Var,
    /// The train matrix the model is fitted on.
    train: Csr,
    /// This epoch's batches ([`Backbone::begin_epoch`]).
    epoch_batches: EpochBatches,
    varmap: VarMap,
    device: Device,
}

impl fmt::Debug for Cml {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cml").field("cfg", &self.cfg).field("dims", &self.dims).finish_non_exhaustive()
    }
}

impl Cml {
    /// Builds both tables through `vb` with the official `N(0, 1/d)` initialisation (not clipped). `varmap` is
    /// the map behind `vb`; `dims` comes from the data.
    pub fn new(vb: VarBuilder, varmap: &VarMap, cfg: &CmlConfig, dims: Dims, train: &Csr) -> Result<Self> {
        cfg.validate()?;
        check_train_shape("cml", dims, train)?;
        let d = cfg.embed_dim;
        let init = Init::Randn { mean: 0.0, stdev: 1.0 / (d as f64).sqrt() };
        let user = vb.pp("user_emb").get_with_hints((dims.n_users, d), "weight", init)?;
        let item = vb.pp("item_emb").get_with_hints((dims.n_items, d), "weight", init)?;
        if !user.is_variable() || !item.is_variable() {
            return Err(Error::Config(
                "cml: the VarBuilder must be backed by a VarMap (variables, not constants)".into(),
            ));
        }
        // The builder hands out the variables' own tensors; `Var::from_tensor` wraps them without a copy, so
        // `set` writes into the storage the optimiser steps.
        let (user_emb, item_emb) = (Var::from_tensor(&user)?, Var::from_tensor(&item)?);
        Ok(Self {
            cfg: cfg.clone(),
            dims,
            user_emb,
            item_emb,
            varmap: varmap.clone(),
            device: vb.device().clone(),
            train: train.clone(),
            epoch_batches: EpochBatches::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &CmlConfig {
        &self.cfg
    }

    /// User points `(n_users, d)` and item points `(n_items, d)`.
    pub fn embeddings(&self) -> (&Tensor, &Tensor) {
        (self.user_emb.as_tensor(), self.item_emb.as_tensor())
    }

    /// Scales every row of both tables back into the ball of radius `clip_norm` (after an optimiser step).
    pub fn clip_embeddings(&self) -> Result<()> {
        for var in [&self.user_emb, &self.item_emb] {
            let clipped = clip_rows(&var.as_tensor().detach(), self.cfg.clip_norm)?;
            var.set(&clipped)?;
        }
        Ok(())
    }

    /// The named losses of one batch (`negatives[b·W ..]` per pair): `"metric"`, `"cov"` (weighted, only with
    /// `use_cov_loss`) and `"total"`.
    pub fn batch_losses(
        &self,
        users: &[u32],
        positives: &[u32],
        negatives: &[u32],
    ) -> Result<Vec<(&'static str, Tensor)>> {
        let (b, w) = (users.len(), self.cfg.n_negatives);
        if b == 0 || positives.len() != b || negatives.len() != b * w {
            return Err(Error::Shape(format!(
                "cml: a batch of {b} users needs {b} positives and {} negatives, got {} and {}",
                b * w,
                positives.len(),
                negatives.len()
            )));
        }
        let (eu, ei) = self.embeddings();
        let u = eu.index_select(&Tensor::from_slice(users, b, &self.device)?, 0)?; // (B, d)
        let p = ei.index_select(&Tensor::from_slice(positives, b, &self.device)?, 0)?; // (B, d)
        let n = ei.index_select(&Tensor::from_slice(negatives, b * w, &self.device)?, 0)?.reshape((b, w, ()))?; // (B, W, d)
        let metric =
            metric_loss(&u, &p, &n, self.cfg.margin, self.dims.n_items, self.cfg.use_rank_weight, self.cfg.loss_form)?;
        let mut out = vec![("metric", metric.clone())];
        let mut total = metric;
        if self.cfg.use_cov_loss {
            let y = Tensor::cat(&[ei, eu], 0)?; // (I + U, d)
            let cov = covariance_loss(&y, self.cfg.cov_form)?.affine(self.cfg.cov_loss_weight, 0.0)?;
            total = (total + &cov)?;
            out.push(("cov", cov));
        }
        out.push(("total", total));
        Ok(out)
    }
}

impl Backbone for Cml {
    fn name(&self) -> &'static str {
        "cml"
    }

    /// Batches from `cfg.sampler` with W negatives per pair; per batch one optimiser step followed by the
    /// unit-ball clipping of every row. Stats: means over batches of `"metric"`, `"cov"` (with
    /// `use_cov_loss`) and `"total"`. A non-finite loss ends the epoch before its step.
    fn begin_epoch(&mut self, ctx: &mut EpochCtx<'_>) -> Result<usize> {
        self.epoch_batches.draw(self.cfg.sampler, &self.train, self.cfg.batch_size, self.cfg.n_negatives, ctx.rng)
    }

    fn step_losses(&mut self, step: usize, _rng: &mut ChaCha8Rng) -> Result<StepLosses> {
        let batch = self.epoch_batches.get(step, "cml")?;
        let named = self.batch_losses(&batch.users, &batch.positives, &batch.negatives)?;
        into_step(named, "cml")
    }

    /// Clips both tables back into the ball of radius `clip_norm` (the official code's `clip_by_norm`).
    fn after_step(&mut self) -> Result<()> {
        self.clip_embeddings()
    }

    fn vars(&self) -> &VarMap {
        &self.varmap
    }
}

impl Recommender for Cml {
    /// `−δ(u, i) = 2⟨u, i⟩ − ‖i‖² − ‖u‖²`, `(users.len(), n_items)`: one matmul plus the norms.
    fn score_users(&self, users: &[u32]) -> Result<Tensor> {
        check_users("cml", users, self.dims.n_users)?;
        let (eu, ei) = self.embeddings();
        let u = eu.detach().index_select(&Tensor::from_slice(users, users.len(), &self.device)?, 0)?; // (b, d)
        let ei = ei.detach();
        let item_sq = ei.sqr()?.sum(1)?.unsqueeze(0)?; // (1, I)
        let user_sq = u.sqr()?.sum_keepdim(1)?; // (b, 1)
        let dot = u.matmul(&ei.t()?)?; // (b, I)
        Ok(dot.affine(2.0, 0.0)?.broadcast_sub(&item_sq)?.broadcast_sub(&user_sq)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_typos_and_ranges() {
        let cfg: CmlConfig = serde_json::from_str(r#"{"use_cov_loss": true, "cov_form": "paper"}"#).unwrap();
        assert_eq!(cfg, CmlConfig { use_cov_loss: true, cov_form: CovForm::Paper, ..Default::default() });
        assert_eq!(CmlConfig::default().sampler, Sampler::Pair);
        assert!(serde_json::from_str::<CmlConfig>(r#"{"n_negative": 20}"#).is_err());
        assert!(CmlConfig { margin: 0.0, ..Default::default() }.validate().is_err());
        assert!(CmlConfig { n_negatives: 0, ..Default::default() }.validate().is_err());
        assert!(CmlConfig::default().validate().is_ok());
    }
}
