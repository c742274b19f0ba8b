//! Popularity: every user gets the same ranking, items by their number of train interactions. It learns
//! nothing and has no variables; it is the floor every backbone must beat, and the trainer's simplest client.

use std::fmt;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use mmkd_data::{Csr, Dataset};

use crate::error::Result;
use crate::model::{Backbone, EpochCtx, EpochStats};

/// Scores every item by its train degree, for every user alike.
pub struct Popularity {
    /// Train degree of every item, `(1, n_items)` f32.
    scores: Tensor,
    device: Device,
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
    /// ([`crate::train::training_view`]); [`Backbone::fit_epoch`] recounts from that split in any case.
    pub fn new(dataset: &Dataset, device: &Device) -> Result<Self> {
        Ok(Self { scores: degree_row(&dataset.train, device)?, device: device.clone(), vars: VarMap::new() })
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

    /// Recounts the degrees from `ctx.dataset.train` (so the validation items of the holdout protocol never
    /// count) and reports no loss.
    fn fit_epoch(&mut self, ctx: &mut EpochCtx<'_>) -> Result<EpochStats> {
        self.scores = degree_row(&ctx.dataset.train, &self.device)?;
        Ok(EpochStats::default())
    }

    fn score_users(&self, users: &[u32]) -> Result<Tensor> {
        let n_items = self.scores.dim(1)?;
        Ok(self.scores.broadcast_as((users.len(), n_items))?.contiguous()?) // (b, n_items)
    }

    fn vars(&self) -> &VarMap {
        &self.vars
    }
}
