//! What several backbones share: the epoch samplers of spec `cf-baselines.md` §0, inverted dropout from a
//! seeded stream, the two embedding-L2 conventions, batches of an epoch, the input checks (the id-only CF
//! baselines), and [`DotScores`], the evaluation cache of every dot-product scorer (BM3, NGCF, DGCF).

use candle_core::Tensor;
use mmkd_data::{Csr, NegativeSampler};
use rand::seq::SliceRandom;
use rand::Rng;
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

/// An epoch's batches, drawn by [`sample_epoch`] when the epoch begins and read step by step.
#[derive(Debug, Clone, Default)]
pub(crate) struct EpochBatches(Vec<TripleBatch>);

impl EpochBatches {
    /// Draws the epoch's batches (see [`sample_epoch`]); returns their number, the epoch's steps.
    pub(crate) fn draw(
        &mut self,
        sampler: Sampler,
        train: &Csr,
        batch_size: usize,
        n_neg: usize,
        rng: &mut ChaCha8Rng,
    ) -> Result<usize> {
        self.0 = sample_epoch(sampler, train, batch_size, n_neg, rng)?;
        Ok(self.0.len())
    }

    /// Batch `step` of the epoch; an error naming `model` past the last one.
    pub(crate) fn get(&self, step: usize, model: &str) -> Result<&TripleBatch> {
        self.0.get(step).ok_or_else(|| Error::Config(format!("{model}: step {step} beyond the epoch's batches")))
    }
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

    /// [`DotScores::score`] of the cache `prepare_eval` filled; an error naming `model` when it is empty.
    pub fn score_cached(cache: Option<&Self>, model: &str, users: &[u32]) -> Result<Tensor> {
        cache
            .ok_or_else(|| Error::Config(format!("{model}: call prepare_eval before score_users")))?
            .score(model, users)
    }

    /// `user[users] · itemᵀ`: `(users.len(), n_items)`; an out-of-range user is an error naming `model`.
    pub fn score(&self, model: &str, users: &[u32]) -> Result<Tensor> {
        check_users(model, users, self.user.dim(0)?)?;
        let idx = Tensor::from_slice(users, users.len(), self.user.device())?;
        Ok(self.user.index_select(&idx, 0)?.matmul(&self.item_t)?)
    }
}
