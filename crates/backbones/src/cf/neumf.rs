//! NeuMF: Neural Collaborative Filtering (He et al., WWW'17), GMF ⊕ MLP trained with a pointwise log loss,
//! spec `cf-baselines.md` §1.
//!
//! References: the official Keras code (hexiangnan/neural_collaborative_filtering @4aab159, `NeuMF.py`) and
//! RecBole @7b02be5 (`general_recommender/neumf.py`, `model/layers.py` `MLPLayers`,
//! `properties/model/NeuMF.yaml`).
//!
//! For a pair (u, i), with four embedding tables and a ReLU tower of T layers:
//! ```text
//! φ_g   = Pg[u] ⊙ Qg[i]
//! z_0   = [Pm[u] ; Qm[i]];   z_l = relu(W_l · dropout(z_{l−1}) + b_l),  l = 1..T
//! logit = h · [φ_g ; z_T] + b_o
//! ```
//! Loss per batch of B train pairs with `n_neg` sampled negatives each: the mean binary cross-entropy of the
//! logits over the `B·(1 + n_neg)` rows (label 1 for positives, 0 for negatives), [`bce_with_logits`].
//! Full ranking uses the exact rewrite of the spec (σ is monotone, so scores are logits): the GMF part is one
//! matmul, the first tower layer splits into a per-user and a per-item term, and the rest of the tower runs
//! on `(users × items)` rows in tiles.
//!
//! Defaults are the spec's \[PORT\] choice (RecBole's shape scaled to d = 128): `d_g = d_m = 128`, hidden
//! `[256, 128]`, dropout 0.1, one negative per positive (official: 4), S-int sampling, batch 1024.
//! Initialisation as RecBole: embeddings `N(0, 0.01²)`, every `Linear` PyTorch's default `U(±1/√fan_in)`.
//!
//! Not ported: GMF/MLP pre-training (off in the spec's port) and the official optional L2 on whole
//! embedding matrices and tower weights (default 0 there; use the optimiser's weight decay). Dropout masks
//! come from the run's ChaCha stream.

use std::fmt;

use candle_core::{Device, Module, Tensor};
use candle_nn::{Init, Linear, VarBuilder, VarMap};
use mmkd_data::Csr;
use mmkd_features::nn::{linear, LinearInit};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::common::{check_train_shape, check_users, EpochBatches, Sampler};
use crate::loss::dropout;
use crate::model::{Backbone, Dims, EpochCtx, Recommender, StepLosses};
use crate::{Error, Result};

/// Std of the embedding initialisation (both codes).
const EMB_STD: f64 = 0.01;
/// Elements of the `(users·items, h_1)` activations per scoring tile.
const SCORE_TILE: usize = 1 << 22;

/// NeuMF's hyper-parameters (spec §1, \[PORT\]). In TOML: `[neumf] mf_embed_dim = 128, mlp_embed_dim = 128,
/// mlp_hidden = [256, 128], dropout = 0.1, n_neg = 1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NeuMfConfig {
    /// Width d_g of the GMF tables (RecBole `mf_embedding_size`, official `--num_factors`).
    pub mf_embed_dim: usize,
    /// Width d_m of the MLP tables (RecBole `mlp_embedding_size`; official `layers[0]/2`).
    pub mlp_embed_dim: usize,
    /// Output widths of the tower's layers, at least one (RecBole `mlp_hidden_size`, official `--layers[1:]`).
    pub mlp_hidden: Vec<usize>,
    /// Dropout before every tower layer, training only (RecBole `dropout_prob`; the official code has none).
    pub dropout: f64,
    /// Sampled negatives per train pair (RecBole `train_neg_sample_args.sample_num`, official `--num_neg`).
    pub n_neg: usize,
    /// Train pairs per step; a step sees `batch_size·(1 + n_neg)` rows (RecBole `train_batch_size`).
    pub batch_size: usize,
    /// Batch sampling: `int` (default), `user` or `pair` (spec §0).
    pub sampler: Sampler,
}

impl Default for NeuMfConfig {
    fn default() -> Self {
        Self {
            mf_embed_dim: 128,
            mlp_embed_dim: 128,
            mlp_hidden: vec![256, 128],
            dropout: 0.1,
            n_neg: 1,
            batch_size: 1024,
            sampler: Sampler::Int,
        }
    }
}

impl NeuMfConfig {
    /// Rejects zero sizes, an empty tower and a dropout outside `[0, 1)`.
    pub fn validate(&self) -> Result<()> {
        if self.mf_embed_dim == 0
            || self.mlp_embed_dim == 0
            || self.n_neg == 0
            || self.batch_size == 0
            || self.mlp_hidden.contains(&0)
        {
            return Err(Error::Config(format!(
                "neumf: mf_embed_dim, mlp_embed_dim, n_neg, batch_size and every mlp_hidden width must be at least \
                 1, got {}, {}, {}, {} and {:?}",
                self.mf_embed_dim, self.mlp_embed_dim, self.n_neg, self.batch_size, self.mlp_hidden
            )));
        }
        if self.mlp_hidden.is_empty() {
            return Err(Error::Config("neumf: mlp_hidden needs at least one layer".into()));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::Config(format!("neumf: dropout must lie in [0, 1), got {}", self.dropout)));
        }
        Ok(())
    }
}

/// `mean_r [softplus(logit_r) − y_r·logit_r]`: binary cross-entropy from logits (`softplus(−l)` for y = 1,
/// `softplus(l)` for y = 0), computed stably. `logits`, `labels`: `(n,)` with labels in {0, 1}.
pub fn bce_with_logits(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    if logits.rank() != 1 || logits.dims() != labels.dims() {
        return Err(Error::Shape(format!(
            "bce_with_logits: expected (n,) logits and labels, got {:?} and {:?}",
            logits.dims(),
            labels.dims()
        )));
    }
    // softplus(l) = max(l, 0) + log(1 + e^{−|l|}).
    let softplus = (logits.relu()? + (logits.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
    Ok((softplus - (labels * logits)?)?.mean_all()?)
}

/// The NeuMF model. Keys under its `vb`: `user_mf_emb.weight` `(U, d_g)`, `item_mf_emb.weight` `(I, d_g)`,
/// `user_mlp_emb.weight` `(U, d_m)`, `item_mlp_emb.weight` `(I, d_m)`, `mlp.{l}.{weight,bias}` (weights
/// `(h_l, h_{l−1})`, `h_0 = 2·d_m`) and `predict.{weight,bias}` (`(1, d_g + h_T)`, `(1,)`).
pub struct NeuMf {
    cfg: NeuMfConfig,
    dims: Dims,
    user_mf: Tensor,
    item_mf: Tensor,
    user_mlp: Tensor,
    item_mlp: Tensor,
    mlp: Vec<Linear>,
    predict: Linear,
    /// The train matrix the model is fitted on.
    train: Csr,
    /// This epoch's batches ([`Backbone::begin_epoch`]).
    epoch_batches: EpochBatches,
    varmap: VarMap,
    device: Device,
}

impl fmt::Debug for NeuMf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NeuMf").field("cfg", &self.cfg).field("dims", &self.dims).finish_non_exhaustive()
    }
}

impl NeuMf {
    /// Builds the parameters through `vb` with RecBole's initialisation (module docs). `varmap` is the map
    /// behind `vb`, returned by [`Backbone::vars`]; `dims` comes from the data.
    pub fn new(vb: VarBuilder, varmap: &VarMap, cfg: &NeuMfConfig, dims: Dims, train: &Csr) -> Result<Self> {
        cfg.validate()?;
        check_train_shape("neumf", dims, train)?;
        let (d_g, d_m) = (cfg.mf_embed_dim, cfg.mlp_embed_dim);
        let emb = |name: &str, rows: usize, d: usize| {
            vb.pp(name).get_with_hints((rows, d), "weight", Init::Randn { mean: 0.0, stdev: EMB_STD })
        };
        let user_mf = emb("user_mf_emb", dims.n_users, d_g)?;
        let item_mf = emb("item_mf_emb", dims.n_items, d_g)?;
        let user_mlp = emb("user_mlp_emb", dims.n_users, d_m)?;
        let item_mlp = emb("item_mlp_emb", dims.n_items, d_m)?;
        let mut mlp = Vec::with_capacity(cfg.mlp_hidden.len());
        let mut d_in = 2 * d_m;
        for (l, &d_out) in cfg.mlp_hidden.iter().enumerate() {
            mlp.push(linear(vb.pp("mlp").pp(l), d_in, d_out, LinearInit::Torch)?);
            d_in = d_out;
        }
        let predict = linear(vb.pp("predict"), d_g + d_in, 1, LinearInit::Torch)?;
        Ok(Self {
            cfg: cfg.clone(),
            dims,
            user_mf,
            item_mf,
            user_mlp,
            item_mlp,
            mlp,
            predict,
            varmap: varmap.clone(),
            device: vb.device().clone(),
            train: train.clone(),
            epoch_batches: EpochBatches::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &NeuMfConfig {
        &self.cfg
    }

    /// Logits of the pairs `(users[r], items[r])`, `(n,)`. With `rng` (training mode) the tower's dropout
    /// masks are drawn from it; without, there is no dropout.
    pub fn logits(&self, users: &[u32], items: &[u32], mut rng: Option<&mut ChaCha8Rng>) -> Result<Tensor> {
        let n = users.len();
        if items.len() != n {
            return Err(Error::Shape(format!("neumf: {n} users but {} items", items.len())));
        }
        check_users("neumf", users, self.dims.n_users)?;
        if let Some(&i) = items.iter().find(|&&i| i as usize >= self.dims.n_items) {
            return Err(Error::Shape(format!("neumf: item {i} out of range for {} items", self.dims.n_items)));
        }
        let u = Tensor::from_slice(users, n, &self.device)?;
        let i = Tensor::from_slice(items, n, &self.device)?;
        let gmf = (self.user_mf.index_select(&u, 0)? * self.item_mf.index_select(&i, 0)?)?; // (n, d_g)
        let mut z = Tensor::cat(&[self.user_mlp.index_select(&u, 0)?, self.item_mlp.index_select(&i, 0)?], 1)?; // (n, 2·d_m)
        for layer in &self.mlp {
            if let Some(rng) = rng.as_deref_mut() {
                z = dropout(&z, self.cfg.dropout, rng)?;
            }
            z = layer.forward(&z)?.relu()?; // (n, h_l)
        }
        Ok(self.predict.forward(&Tensor::cat(&[gmf, z], 1)?)?.squeeze(1)?) // (n,)
    }

    /// The named losses of one batch of train pairs with `negatives[b·n_neg ..]` per pair (training-mode
    /// dropout from `rng`): `"bce"` (= `"total"`).
    pub fn batch_loss(
        &self,
        users: &[u32],
        positives: &[u32],
        negatives: &[u32],
        rng: &mut ChaCha8Rng,
    ) -> Result<Tensor> {
        let b = users.len();
        let n_neg = self.cfg.n_neg;
        if b == 0 || positives.len() != b || negatives.len() != b * n_neg {
            return Err(Error::Shape(format!(
                "neumf: a batch of {b} users needs {b} positives and {} negatives, got {} and {}",
                b * n_neg,
                positives.len(),
                negatives.len()
            )));
        }
        let mut all_users = users.to_vec();
        all_users.extend(users.iter().flat_map(|&u| std::iter::repeat_n(u, n_neg)));
        let items = [positives, negatives].concat();
        let logits = self.logits(&all_users, &items, Some(rng))?; // (b·(1 + n_neg),)
        let mut labels = vec![1f32; b];
        labels.resize(b * (1 + n_neg), 0.0);
        let labels = Tensor::from_vec(labels, b * (1 + n_neg), &self.device)?.to_dtype(logits.dtype())?;
        bce_with_logits(&logits, &labels)
    }
}

impl Backbone for NeuMf {
    fn name(&self) -> &'static str {
        "neumf"
    }

    /// Batches from `cfg.sampler` with `n_neg` negatives per pair; one optimiser step per batch. Stats: the
    /// mean over batches of `"bce"` and `"total"` (equal). A non-finite loss ends the epoch before its step.
    fn begin_epoch(&mut self, ctx: &mut EpochCtx<'_>) -> Result<usize> {
        self.epoch_batches.draw(self.cfg.sampler, &self.train, self.cfg.batch_size, self.cfg.n_neg, ctx.rng)
    }

    fn step_losses(&mut self, step: usize, rng: &mut ChaCha8Rng) -> Result<StepLosses> {
        let batch = self.epoch_batches.get(step, "neumf")?;
        let bce = self.batch_loss(&batch.users, &batch.positives, &batch.negatives, rng)?;
        Ok(StepLosses::new([("bce", bce.clone())], bce))
    }

    fn vars(&self) -> &VarMap {
        &self.varmap
    }
}

impl Recommender for NeuMf {
    /// Logits of `users` against every item, `(users.len(), n_items)`, by the decomposed rewrite (module docs),
    /// no dropout. Needs no `prepare_eval`: the per-item terms are two matmuls.
    fn score_users(&self, users: &[u32]) -> Result<Tensor> {
        check_users("neumf", users, self.dims.n_users)?;
        let (d_g, d_m) = (self.cfg.mf_embed_dim, self.cfg.mlp_embed_dim);
        let n_items = self.dims.n_items;
        let Some((first, rest)) = self.mlp.split_first() else {
            return Err(Error::Config("neumf: the tower has no layer".into()));
        };
        let h = self.predict.weight().detach(); // (1, d_g + h_T)
        let h_g = h.narrow(1, 0, d_g)?; // (1, d_g)
        let h_m = h.narrow(1, d_g, h.dim(1)? - d_g)?.t()?; // (h_T, 1)
        let b_o = self.predict.bias().map(Tensor::detach);
        let w1 = first.weight().detach(); // (h_1, 2·d_m)
        let h1 = w1.dim(0)?;
        let w1_u = w1.narrow(1, 0, d_m)?.t()?; // (d_m, h_1)
        let w1_i = w1.narrow(1, d_m, d_m)?.t()?; // (d_m, h_1)
        let a_items = self.item_mlp.detach().matmul(&w1_i)?; // (I, h_1)
        let item_mf_t = self.item_mf.detach().t()?; // (d_g, I)
        let tile = (SCORE_TILE / (n_items * h1).max(1)).max(1);
        let mut out = Vec::with_capacity(users.len().div_ceil(tile));
        for chunk in users.chunks(tile) {
            let bu = chunk.len();
            let idx = Tensor::from_slice(chunk, bu, &self.device)?;
            let gmf = self.user_mf.detach().index_select(&idx, 0)?.broadcast_mul(&h_g)?.matmul(&item_mf_t)?; // (bu, I)
            let mut a_users = self.user_mlp.detach().index_select(&idx, 0)?.matmul(&w1_u)?; // (bu, h_1)
            if let Some(b1) = first.bias() {
                a_users = a_users.broadcast_add(&b1.detach())?;
            }
            let mut z = a_users.unsqueeze(1)?.broadcast_add(&a_items.unsqueeze(0)?)?.relu()?; // (bu, I, h_1)
            z = z.reshape((bu * n_items, h1))?; // (bu·I, h_1)
            for layer in rest {
                let detached = Linear::new(layer.weight().detach(), layer.bias().map(Tensor::detach));
                z = detached.forward(&z)?.relu()?; // (bu·I, h_l)
            }
            let mut logits = (gmf + z.matmul(&h_m)?.reshape((bu, n_items))?)?; // (bu, I)
            if let Some(b_o) = &b_o {
                logits = logits.broadcast_add(b_o)?;
            }
            out.push(logits);
        }
        Ok(Tensor::cat(&out, 0)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_typos_and_ranges() {
        let cfg: NeuMfConfig = serde_json::from_str(r#"{"n_neg": 4, "dropout": 0.0}"#).unwrap();
        assert_eq!(cfg, NeuMfConfig { n_neg: 4, dropout: 0.0, ..Default::default() });
        assert!(serde_json::from_str::<NeuMfConfig>(r#"{"num_neg": 4}"#).is_err());
        assert!(NeuMfConfig { mlp_hidden: vec![], ..Default::default() }.validate().is_err());
        assert!(NeuMfConfig { dropout: -0.1, ..Default::default() }.validate().is_err());
        assert!(NeuMfConfig { n_neg: 0, ..Default::default() }.validate().is_err());
        assert!(NeuMfConfig::default().validate().is_ok());
    }
}
