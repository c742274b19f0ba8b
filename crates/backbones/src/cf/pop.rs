//! Popularity: every user gets the same ranking, items by their number of train interactions. It learns
//! nothing and has no variables; it is the floor every backbone must beat, and the trainer's simplest client.

use std::fmt;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use mmkd_data::{Csr, Dataset};

use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::model::{Backbone, EpochCtx, Recommender, StepLosses};

/// Scores every item by its train degree, for every user alike.
pub struct Popularity {
    /// Train degree of every item, `(1, n_items)` f32.
    scores: Tensor,
    /// Always empty.
    vars: VarMap,
}

impl fmt::Debug for Popularity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Popularity").field("scores", &self.scores.dims()).finish_non_exhaustive()
    }
}

impl Popularity {
    /// Popularity over `dataset.train`. Build it from the split the trainer trains on
    /// ([`crate::train::training_view`]), so that no validation item counts.
    pub fn new(dataset: &Dataset, device: &Device) -> Result<Self> {
        Ok(Self { scores: degree_row(&dataset.train, device)?, vars: VarMap::new() })
    }
}

/// Train degree of every item as a `(1, n_items)` f32 row.
fn degree_row(train: &Csr, device: &Device) -> Result<Tensor> {
    Ok(Tensor::new(mmkd_eval::baselines::popularity_scores(train).as_slice(), device)?.unsqueeze(0)?)
}

impl Backbone for Popularity {
    fn name(&self) -> &'static str {
        "pop"
    }

    /// Nothing to train: no step.
    fn begin_epoch(&mut self, _ctx: &mut EpochCtx<'_>) -> Result<usize> {
        Ok(0)
    }

    fn step_losses(&mut self, _step: usize, _rng: &mut ChaCha8Rng) -> Result<StepLosses> {
        Err(Error::Config("pop: popularity has no training step".into()))
    }

    fn vars(&self) -> &VarMap {
        &self.vars
    }
}

impl Recommender for Popularity {
    fn score_users(&self, users: &[u32]) -> Result<Tensor> {
        let n_items = self.scores.dim(1)?;
        Ok(self.scores.broadcast_as((users.len(), n_items))?.contiguous()?) // (b, n_items)
    }
}
