//! The seams between the trainer and every recommender: what [`crate::step::fit_epoch`] drives
//! ([`Backbone`]) and what the full-ranking evaluation scores ([`Recommender`]).

use std::borrow::Cow;
use std::collections::BTreeMap;

use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;
use rand_chacha::ChaCha8Rng;

use crate::error::Result;
use mmkd_nn::optim::sorted_vars;

/// Sizes that come from the data, never from a config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    pub n_users: usize,
    pub n_items: usize,
}

/// What a backbone may use when an epoch starts.
#[allow(missing_debug_implementations)]
pub struct EpochCtx<'a> {
    /// 0-based epoch index.
    pub epoch: usize,
    /// The run's batch/negative-sampling stream (seeded by the trainer; the same seed gives the same epochs).
    /// The same stream is handed to every [`Backbone::step_losses`] of the epoch, in order.
    pub rng: &'a mut ChaCha8Rng,
    /// The device the model lives on.
    pub device: &'a Device,
}

/// Mean of each named loss over the epoch's batches (e.g. `"bpr"`, `"reg"`, `"kd"`, `"ce"`, `"total"`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EpochStats {
    pub losses: BTreeMap<String, f64>,
    pub n_batches: usize,
}

/// The loss of one optimiser step: the scalar the step loop differentiates, and named scalar terms that are
/// only reported (each as it enters the total, weights applied; they need not add up to it).
#[derive(Debug, Clone)]
pub struct StepLosses {
    /// Named terms, in the order the model lists them (`"total"` is added by the loop).
    pub terms: Vec<(Cow<'static, str>, Tensor)>,
    /// What the optimiser minimises.
    pub total: Tensor,
}

impl StepLosses {
    /// `total` with the named `terms`.
    pub fn new<N: Into<Cow<'static, str>>>(terms: impl IntoIterator<Item = (N, Tensor)>, total: Tensor) -> Self {
        Self { terms: terms.into_iter().map(|(n, t)| (n.into(), t)).collect(), total }
    }
}

/// A set of variables stepped by one optimiser, whose learning rate may follow its own factor of the
/// schedule's ([`Backbone::lr_factors`]).
#[derive(Debug, Clone)]
pub struct ParamGroup {
    /// Name of the group (the metrics line reports `lr_<name>` for every group but the first).
    pub name: &'static str,
    /// Its variables, in a fixed order (the order names the optimiser state).
    pub vars: Vec<Var>,
}

/// A model the step loop can train: per epoch it plans its batches, then hands the loop one step's loss at a
/// time; the loop owns backward, the optimiser step, the non-finite policy, timing and progress.
pub trait Backbone {
    /// Short model name, e.g. `"bm3"`.
    fn name(&self) -> &'static str;
    /// Starts an epoch: per-epoch work (graph rebuilds, schedules of the extractor, evaluation caches
    /// dropped) and the draws of the epoch's batches from `ctx.rng`. Returns the number of optimiser steps.
    fn begin_epoch(&mut self, ctx: &mut EpochCtx<'_>) -> Result<usize>;
    /// The loss of step `step` (0-based, below what [`Backbone::begin_epoch`] returned); per-step draws
    /// (dropout masks, negatives) come from `rng`, the epoch's stream.
    fn step_losses(&mut self, step: usize, rng: &mut ChaCha8Rng) -> Result<StepLosses>;
    /// Runs after every optimiser step (e.g. MAML's and CML's clipping to the unit ball). Nothing by default.
    fn after_step(&mut self) -> Result<()> {
        Ok(())
    }
    /// Called once before a round of evaluation calls: compute and cache evaluation-mode representations.
    fn prepare_eval(&mut self) -> Result<()> {
        Ok(())
    }
    /// Called after the trainer has loaded a checkpoint into [`Backbone::vars`] (the best one, before the
    /// final evaluation, or the last one on resume): drop whatever was computed from the replaced values
    /// (e.g. GRCN's cached representations of the last training step). Does nothing by default.
    fn checkpoint_loaded(&mut self) -> Result<()> {
        Ok(())
    }
    /// The trainable variables (what the optimisers step and the checkpoint holds).
    fn vars(&self) -> &VarMap;
    /// How the variables split into optimiser groups; one group of every variable (sorted by name) by
    /// default.
    fn param_groups(&self) -> Vec<ParamGroup> {
        vec![ParamGroup { name: "all", vars: sorted_vars(self.vars()) }]
    }
    /// Multiplier of the scheduled learning rate for each of [`Backbone::param_groups`] at 0-based `epoch`
    /// (asynchronous training); 1 for every group by default.
    fn lr_factors(&self, _epoch: usize) -> Vec<f64> {
        vec![1.0; self.param_groups().len()]
    }
}

/// A user–item recommender: what the full-ranking evaluation scores.
pub trait Recommender: Backbone {
    /// Scores of `users` against every item: `(users.len(), n_items)`. The evaluator masks train items itself.
    fn score_users(&self, users: &[u32]) -> Result<Tensor>;
}
