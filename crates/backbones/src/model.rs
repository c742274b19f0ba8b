//! The seam between the trainer and every recommender: what `train` drives.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use mmkd_data::Dataset;
use rand_chacha::ChaCha8Rng;

use crate::error::Result;
use crate::optim::AnyOptimizer;

/// Sizes that come from the data, never from a config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    pub n_users: usize,
    pub n_items: usize,
}

/// What a backbone may use during one training epoch.
#[allow(missing_debug_implementations)]
pub struct EpochCtx<'a> {
    /// 0-based epoch index.
    pub epoch: usize,
    /// The training data: `dataset.train` (user → items) and `dataset.train_by_item`; never the test split.
    pub dataset: &'a Dataset,
    /// The run's batch/negative-sampling stream (seeded by the trainer; the same seed gives the same epochs).
    pub rng: &'a mut ChaCha8Rng,
    /// The device the model lives on.
    pub device: &'a Device,
    /// The optimiser over the backbone's trainable variables (sorted by name); the backbone steps it.
    pub optimizer: &'a mut AnyOptimizer,
}

/// Mean of each named loss over the epoch's batches (e.g. `"bpr"`, `"reg"`, `"kd"`, `"ce"`, `"total"`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EpochStats {
    pub losses: BTreeMap<String, f64>,
    pub n_batches: usize,
}

/// A recommender the trainer can fit and evaluate.
pub trait Backbone {
    /// Short model name, e.g. `"bm3"`.
    fn name(&self) -> &'static str;
    /// One pass over the training data: batches, losses, `ctx.optimizer` steps. Per-epoch work (graph
    /// rebuilds, schedules of the extractor) stays inside.
    fn fit_epoch(&mut self, ctx: &mut EpochCtx<'_>) -> Result<EpochStats>;
    /// Called once before a round of `score_users` calls: compute and cache evaluation-mode representations.
    fn prepare_eval(&mut self) -> Result<()> {
        Ok(())
    }
    /// Called after the trainer has loaded a checkpoint into [`Backbone::vars`] (the best one, before the
    /// final evaluation): drop whatever was computed from the replaced values (e.g. GRCN's cached
    /// representations of the last training step). Does nothing by default.
    fn checkpoint_loaded(&mut self) -> Result<()> {
        Ok(())
    }
    /// Scores of `users` against every item: `(users.len(), n_items)`. The evaluator masks train items itself.
    fn score_users(&self, users: &[u32]) -> Result<Tensor>;
    /// The trainable variables (what the optimiser steps and the checkpoint holds).
    fn vars(&self) -> &VarMap;
}
