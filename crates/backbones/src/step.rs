//! The one step loop every model trains through ([`fit_epoch`]), and the optimisers of a model's parameter
//! groups ([`Optimizers`]).
//!
//! # The loop
//! [`Backbone::begin_epoch`] plans the epoch (its draws come first from the epoch's stream); then for each
//! step the model hands over its [`StepLosses`](crate::StepLosses), the loop reads the named terms and the total (one transfer
//! per step), differentiates the total, steps every group's optimiser on the same gradients, and calls
//! [`Backbone::after_step`]. [`EpochStats`] holds the mean of every term and of `"total"` over the steps
//! taken.
//!
//! # The non-finite policy (one for every model)
//! A step whose total loss is NaN or infinite is counted in the statistics (so the epoch's `"total"` is not
//! finite) but **not** stepped on, and it ends the epoch: non-finite gradients would leave non-finite
//! weights. The trainer then sees a non-finite epoch loss, stops, and reports the best epoch before it
//! (`diverged_at`).

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::model::{Backbone, EpochCtx, EpochStats};
use mmkd_nn::optim::{self, AnyOptimizer, OptimConfig};

/// Seconds between two progress lines of a long epoch.
const PROGRESS_SECS: f64 = 10.0;

/// One optimiser per parameter group of a model, in [`Backbone::param_groups`] order.
#[derive(Debug)]
pub struct Optimizers {
    groups: Vec<(&'static str, AnyOptimizer)>,
}

impl Optimizers {
    /// An optimiser of `cfg` for each of `model`'s parameter groups.
    pub fn new<M: Backbone + ?Sized>(model: &M, cfg: &OptimConfig) -> Result<Self> {
        let groups = model
            .param_groups()
            .into_iter()
            .map(|g| Ok((g.name, optim::build(g.vars, cfg)?)))
            .collect::<Result<Vec<_>>>()?;
        if groups.is_empty() {
            return Err(Error::Config(format!("{}: no parameter group to optimise", model.name())));
        }
        Ok(Self { groups })
    }

    /// Sets group `g`'s learning rate to `lr · factors[g]`; returns `(name, rate)` of every group.
    pub fn set_learning_rates(&mut self, lr: f64, factors: &[f64]) -> Result<Vec<(&'static str, f64)>> {
        if factors.len() != self.groups.len() {
            return Err(Error::Config(format!(
                "{} learning-rate factors for {} parameter groups",
                factors.len(),
                self.groups.len()
            )));
        }
        Ok(self
            .groups
            .iter_mut()
            .zip(factors)
            .map(|((name, opt), f)| {
                opt.set_learning_rate(lr * f);
                (*name, lr * f)
            })
            .collect())
    }

    /// Differentiates `loss` once and steps every group on the gradients.
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        for (_, opt) in &mut self.groups {
            opt.step(&grads)?;
        }
        Ok(())
    }

    /// The optimisers' state (moments and step counts) by name: group `g`'s keys are prefixed `g{g}.`.
    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        for (g, (_, opt)) in self.groups.iter().enumerate() {
            out.extend(opt.state_tensors()?.into_iter().map(|(k, t)| (format!("g{g}.{k}"), t)));
        }
        Ok(out)
    }

    /// Restores what [`Optimizers::state_tensors`] wrote.
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let mut per_group: Vec<HashMap<String, Tensor>> = vec![HashMap::new(); self.groups.len()];
        for (key, t) in state {
            let parsed = key
                .strip_prefix('g')
                .and_then(|rest| rest.split_once('.'))
                .and_then(|(g, k)| g.parse::<usize>().ok().map(|g| (g, k)));
            match parsed {
                Some((g, k)) if g < per_group.len() => {
                    per_group[g].insert(k.to_string(), t.clone());
                }
                _ => return Err(Error::Config(format!("optimiser state: unexpected tensor `{key}`"))),
            }
        }
        for ((_, opt), state) in self.groups.iter_mut().zip(&per_group) {
            opt.load_state(state)?;
        }
        Ok(())
    }

    /// How many updates each variable of each group has received.
    pub fn step_counts(&self) -> Vec<Vec<u64>> {
        self.groups.iter().map(|(_, o)| o.step_counts()).collect()
    }
}

/// One epoch of `model`: [`Backbone::begin_epoch`], then every step through the loop (module docs).
pub fn fit_epoch<M: Backbone + ?Sized>(
    model: &mut M,
    ctx: &mut EpochCtx<'_>,
    optimizers: &mut Optimizers,
) -> Result<EpochStats> {
    let started = Instant::now();
    let n_steps = model.begin_epoch(ctx)?;
    let mut sums: BTreeMap<String, f64> = BTreeMap::new();
    let mut n_batches = 0;
    let mut last_report = 0.0;
    for step in 0..n_steps {
        let losses = model.step_losses(step, &mut *ctx.rng)?;
        let mut scalars: Vec<Tensor> = Vec::with_capacity(losses.terms.len() + 1);
        for (_, t) in &losses.terms {
            scalars.push(t.to_dtype(DType::F64)?.reshape(())?);
        }
        scalars.push(losses.total.to_dtype(DType::F64)?.reshape(())?);
        let values = Tensor::stack(&scalars, 0)?.to_vec1::<f64>()?; // one transfer per step
        for ((name, _), v) in losses.terms.iter().zip(&values) {
            *sums.entry(name.to_string()).or_insert(0.0) += v;
        }
        let total = values.last().copied().unwrap_or(f64::NAN);
        *sums.entry("total".into()).or_insert(0.0) += total;
        n_batches += 1;
        if !total.is_finite() {
            tracing::warn!(
                model = model.name(),
                epoch = ctx.epoch,
                step,
                total,
                "non-finite loss: not stepped, epoch ended"
            );
            break;
        }
        optimizers.backward_step(&losses.total)?;
        model.after_step()?;
        let secs = started.elapsed().as_secs_f64();
        if secs - last_report >= PROGRESS_SECS && step + 1 < n_steps {
            last_report = secs;
            tracing::info!(
                model = model.name(),
                steps = step + 1,
                of = n_steps,
                loss = sums["total"] / n_batches as f64,
                secs,
                eta_secs = secs / (step + 1) as f64 * (n_steps - step - 1) as f64,
                "training"
            );
        }
    }
    tracing::debug!(
        model = model.name(),
        epoch = ctx.epoch,
        steps = n_batches,
        secs = started.elapsed().as_secs_f64(),
        "epoch trained"
    );
    let losses = sums.into_iter().map(|(k, v)| (k, v / n_batches.max(1) as f64)).collect();
    Ok(EpochStats { losses, n_batches })
}
