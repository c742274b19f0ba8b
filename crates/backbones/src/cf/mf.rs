//! MF: matrix factorisation trained with BPR (Rendle et al., UAI'09), optionally with an item-feature term.
//! The trainer's test model and a cheap baseline; spec `cf-baselines.md` §0 for the shared conventions.
//!
//! - Score: `s(u, i) = ⟨e_u, v_i⟩` with `v_i = e_i + mean_m f_m(i)`, where `e_u`, `e_i` are id embeddings and
//!   `f_m(i)` the extractor's features of item i for modality m (absent without an extractor).
//! - Sampling: scheme S-int of the spec: each epoch every train pair (u, i) appears once, shuffled, with one
//!   negative drawn uniformly from the items not in u's train row.
//! - Loss per batch of B triples: `bpr = mean_b softplus(−(s(u,i) − s(u,j)))` (= `−mean log σ(·)`, stable),
//!   `reg = reg_weight · Σ ½(‖e_u‖² + ‖v_i‖² + ‖v_j‖²) / B` on the batch's user embeddings and item vectors
//!   (the `reg_half_sq` convention of the spec; on the item vectors, features included,
//!   so the extractor is regularised too), plus the extractor's already-weighted auxiliary losses.
//! - Initialisation: Xavier-normal id embeddings, `N(0, 2/(n + d))`, as MMRec's `xavier_normal_initialization`.

use std::fmt;

use candle_core::{Device, Module, Tensor, D};
use candle_nn::{Embedding, Init, VarBuilder, VarMap};
use mmkd_data::{Csr, NegativeSampler};
use mmkd_features::{FeatureExtractor, Mode};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::common::{batch_of, check_train_shape};
use crate::error::{Error, Result};
use crate::loss::bpr_loss;
use crate::model::{Backbone, Dims, EpochCtx, Recommender, StepLosses};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)] // A typo in a config file is an error, not a silent default.
pub struct MfConfig {
    /// Width d of the id embeddings (MMRec `embedding_size`); an extractor must output the same width.
    pub embed_dim: usize,
    /// Weight of the L2 term on the batch's user embeddings and item vectors (MMRec `reg_weight`).
    pub reg_weight: f64,
    /// Train pairs per step (MMRec `train_batch_size`).
    pub batch_size: usize,
}

impl Default for MfConfig {
    fn default() -> Self {
        Self { embed_dim: 64, reg_weight: 1e-4, batch_size: 1024 }
    }
}

impl MfConfig {
    /// Rejects zero sizes and a negative or non-finite `reg_weight`.
    pub fn validate(&self) -> Result<()> {
        if self.embed_dim == 0 || self.batch_size == 0 {
            return Err(Error::Config(format!(
                "mf: embed_dim and batch_size must be at least 1, got {} and {}",
                self.embed_dim, self.batch_size
            )));
        }
        if !(self.reg_weight.is_finite() && self.reg_weight >= 0.0) {
            return Err(Error::Config(format!("mf: reg_weight must be finite and ≥ 0, got {}", self.reg_weight)));
        }
        Ok(())
    }
}

/// Named, already-weighted auxiliary losses of an extractor.
type AuxLosses = Vec<(&'static str, Tensor)>;

/// BPR matrix factorisation over id embeddings, plus the mean of an extractor's features per item.
pub struct Mf {
    user_emb: Embedding,
    item_emb: Embedding,
    extractor: Option<Box<dyn FeatureExtractor>>,
    cfg: MfConfig,
    dims: Dims,
    vars: VarMap,
    device: Device,
    /// Item vectors `(n_items, d)` in evaluation mode, set by `prepare_eval`, cleared by `begin_epoch`.
    eval_items: Option<Tensor>,
    /// The train matrix the model is fitted on.
    train: Csr,
    /// This epoch's rows `(user, positive, negative)`, in batch order.
    epoch_rows: Vec<(u32, u32, u32)>,
}

impl fmt::Debug for Mf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mf")
            .field("cfg", &self.cfg)
            .field("dims", &self.dims)
            .field("extractor", &self.extractor.as_ref().map(|e| e.modalities().to_vec()))
            .finish_non_exhaustive()
    }
}

impl Mf {
    /// Keys `user_emb.weight` (n_users, d) and `item_emb.weight` (n_items, d) under `vb`. `varmap` is the map
    /// `vb` writes into (e.g. `seeded_var_builder(&varmap, …)`): the checkpoint and the optimiser take the
    /// model's variables from it, the extractor's included when it was built under the same map.
    pub fn new(
        vb: VarBuilder,
        varmap: &VarMap,
        cfg: &MfConfig,
        dims: Dims,
        train: &Csr,
        extractor: Option<Box<dyn FeatureExtractor>>,
    ) -> Result<Self> {
        cfg.validate()?;
        check_train_shape("mf", dims, train)?;
        if let Some(ex) = &extractor {
            if ex.out_dim() != cfg.embed_dim {
                return Err(Error::Config(format!(
                    "mf: the extractor outputs {} features per item but embed_dim is {}; set the extractor's \
                     out_dim (projection.out_dim or sgfd.out_dim) to mf.embed_dim",
                    ex.out_dim(),
                    cfg.embed_dim
                )));
            }
        }
        let device = vb.device().clone();
        let user_emb = xavier_embedding(vb.pp("user_emb"), dims.n_users, cfg.embed_dim)?;
        let item_emb = xavier_embedding(vb.pp("item_emb"), dims.n_items, cfg.embed_dim)?;
        let vars = varmap.clone();
        Ok(Self {
            user_emb,
            item_emb,
            extractor,
            cfg: cfg.clone(),
            dims,
            vars,
            device,
            eval_items: None,
            train: train.clone(),
            epoch_rows: Vec::new(),
        })
    }

    /// Mean over modalities of the extractor's features of `items` (all items for `None`), `(b, d)`, and its
    /// auxiliary losses; `None` without an extractor.
    fn features(&self, items: Option<&Tensor>, mode: Mode) -> Result<Option<(Tensor, AuxLosses)>> {
        let Some(ex) = &self.extractor else { return Ok(None) };
        let out = ex.extract(items, mode)?;
        let n_modalities = out.features.len();
        if n_modalities == 0 {
            return Err(Error::Config("mf: the extractor returned no modality".into()));
        }
        let sum = out.features.iter().skip(1).try_fold(out.features[0].clone(), |acc, f| acc + f)?;
        Ok(Some(((sum / n_modalities as f64)?, out.aux_losses)))
    }

    /// Item vectors `v_i` of every item in evaluation mode, `(n_items, d)`.
    fn item_vectors_eval(&self) -> Result<Tensor> {
        let ids = self.item_emb.embeddings().clone(); // (n_items, d)
        Ok(match self.features(None, Mode::Eval)? {
            Some((f, _)) => (ids + f)?,
            None => ids,
        }
        .detach())
    }

    /// The BPR loss of `rows` (user, positive item, negative item).
    fn batch_losses(&self, rows: &[(u32, u32, u32)]) -> Result<StepLosses> {
        let b = rows.len();
        let users: Vec<u32> = rows.iter().map(|&(u, _, _)| u).collect();
        let items: Vec<u32> = rows.iter().map(|&(_, i, _)| i).chain(rows.iter().map(|&(_, _, j)| j)).collect();
        let users = Tensor::from_vec(users, b, &self.device)?;
        let items = Tensor::from_vec(items, 2 * b, &self.device)?; // positives, then negatives
        let e_u = self.user_emb.forward(&users)?; // (b, d)
        let e_i = self.item_emb.forward(&items)?; // (2b, d)
        let (v, aux) = match self.features(Some(&items), Mode::Train)? {
            Some((f, aux)) => ((&e_i + f)?, aux),
            None => (e_i.clone(), Vec::new()),
        };
        let diff = (&e_u * (v.narrow(0, 0, b)? - v.narrow(0, b, b)?)?)?.sum(D::Minus1)?; // (b,)
        let bpr = bpr_loss(&diff)?;
        let sq = (e_u.sqr()?.sum_all()? + v.sqr()?.sum_all()?)?;
        let reg = (sq * (0.5 * self.cfg.reg_weight / b as f64))?;
        let mut total = (&bpr + &reg)?;
        for (_, l) in &aux {
            total = (total + l)?;
        }
        let mut terms = vec![("bpr", bpr), ("reg", reg)];
        terms.extend(aux);
        Ok(StepLosses::new(terms, total))
    }
}

impl Backbone for Mf {
    fn name(&self) -> &'static str {
        "mf"
    }

    /// Every train pair once, shuffled, one uniform negative each (S-int), in batches of `batch_size`.
    fn begin_epoch(&mut self, ctx: &mut EpochCtx<'_>) -> Result<usize> {
        self.eval_items = None;
        if let Some(ex) = &mut self.extractor {
            ex.on_epoch_start(ctx.epoch)?;
        }
        let mut pairs = self.train.pairs();
        pairs.shuffle(&mut *ctx.rng);
        let mut sampler = NegativeSampler::new(&self.train, ctx.rng.random());
        self.epoch_rows.clear();
        for (u, i) in pairs {
            self.epoch_rows.push((u, i, sampler.sample(u)?));
        }
        Ok(self.epoch_rows.len().div_ceil(self.cfg.batch_size))
    }

    fn step_losses(&mut self, step: usize, _rng: &mut ChaCha8Rng) -> Result<StepLosses> {
        self.batch_losses(batch_of(&self.epoch_rows, self.cfg.batch_size, step))
    }

    fn prepare_eval(&mut self) -> Result<()> {
        self.eval_items = Some(self.item_vectors_eval()?);
        Ok(())
    }

    fn vars(&self) -> &VarMap {
        &self.vars
    }
}

impl Recommender for Mf {
    fn score_users(&self, users: &[u32]) -> Result<Tensor> {
        let items = match &self.eval_items {
            Some(items) => items.clone(),
            None => self.item_vectors_eval()?,
        };
        let idx = Tensor::from_slice(users, users.len(), &self.device)?;
        let e_u = self.user_emb.embeddings().index_select(&idx, 0)?.detach(); // (b, d)
        Ok(e_u.matmul(&items.t()?)?) // (b, n_items)
    }
}

/// An `(n, d)` embedding table drawn from `N(0, 2/(n + d))` (PyTorch `xavier_normal_` on an `Embedding`).
fn xavier_embedding(vb: VarBuilder, n: usize, d: usize) -> Result<Embedding> {
    let stdev = (2.0 / (n + d) as f64).sqrt();
    let weight = vb.get_with_hints((n, d), "weight", Init::Randn { mean: 0.0, stdev })?;
    Ok(Embedding::new(weight, d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpr_loss_matches_hand_computed_values() {
        let d = Tensor::new(&[0f32, 2.0, -1.0, 40.0, -40.0], &Device::Cpu).unwrap();
        // −log σ(x): ln 2, ln(1 + e^−2), ln(1 + e), ≈ 0 and ≈ 40 without overflow.
        let expected = [2f64.ln(), (1.0 + (-2f64).exp()).ln(), (1.0 + 1f64.exp()).ln(), 4.25e-18, 40.0];
        let got = bpr_loss(&d).unwrap().to_scalar::<f32>().unwrap();
        assert!((f64::from(got) - expected.iter().sum::<f64>() / 5.0).abs() < 1e-5, "{got}");
        assert!(bpr_loss(&Tensor::zeros((2, 2), candle_core::DType::F32, &Device::Cpu).unwrap()).is_err());
    }

    #[test]
    fn bpr_loss_gradient_matches_finite_differences() {
        let x = Tensor::new(&[0.3f64, -1.2, 2.5], &Device::Cpu).unwrap();
        let err = mmkd_features::testing::grad_check(bpr_loss, &x, 1e-6);
        assert!(err < 1e-6, "{err}");
    }
}
