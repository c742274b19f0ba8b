//! What several backbones share: the epoch samplers of spec `cf-baselines.md` §0, inverted dropout from a
//! seeded stream, the two embedding-L2 conventions, batches of an epoch, the input checks (the id-only CF
//! baselines), and [`DotScores`], the evaluation cache of every dot-product scorer (BM3, NGCF, DGCF).

use candle_core::{Device, Tensor};
use mmkd_data::{Csr, NegativeSampler};
use rand::seq::SliceRandom;
use rand::{Rng, RngCore};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::model::{Dims, StepLosses};
use crate::{Error, Result};

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


/// A batch's named terms with the total last (as the CF baselines' `batch_losses` return them) as
/// [`StepLosses`].
pub(crate) fn into_step(mut named: Vec<(&'static str, Tensor)>, model: &str) -> Result<StepLosses> {
    let (_, total) = named.pop().ok_or_else(|| Error::Shape(format!("{model}: a batch produced no loss")))?;
    Ok(StepLosses::new(named, total))
}

/// Rows `[step·batch, (step + 1)·batch)` of `rows`, the last batch partial: step `step` of an epoch over
/// `rows` cut into batches of `batch`.
pub(crate) fn batch_of<T>(rows: &[T], batch: usize, step: usize) -> &[T] {
    let start = (step * batch).min(rows.len());
    &rows[start..(start + batch).min(rows.len())]
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

/// Evaluation-mode representations of a dot-product scorer: every user's row and every item's row,
/// transposed once so that a user batch is one matrix product.
#[derive(Debug, Clone)]
pub struct DotScores {
    /// `(n_users, d)`.
    user: Tensor,
    /// `(d, n_items)`, contiguous.
    item_t: Tensor,
}

impl DotScores {
    /// From user rows `(n_users, d)` and item rows `(n_items, d)`, detached.
    pub fn new(user: &Tensor, item: &Tensor) -> Result<Self> {
        Ok(Self { user: user.detach(), item_t: item.detach().t()?.contiguous()? })
    }

    /// From joint representations `(n_users + n_items, d)`, users first.
    pub fn from_joint(e: &Tensor, dims: Dims) -> Result<Self> {
        Self::new(&e.narrow(0, 0, dims.n_users)?, &e.narrow(0, dims.n_users, dims.n_items)?)
    }

    /// `user[users] · itemᵀ`: `(users.len(), n_items)`; an out-of-range user is an error naming `model`.
    pub fn score(&self, model: &str, users: &[u32]) -> Result<Tensor> {
        check_users(model, users, self.user.dim(0)?)?;
        let idx = Tensor::from_slice(users, users.len(), self.user.device())?;
        Ok(self.user.index_select(&idx, 0)?.matmul(&self.item_t)?)
    }
}
