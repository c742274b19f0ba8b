//! Optimisers and learning-rate schedules of the reference codes.
//!
//! - [`Adam`]: PyTorch `torch.optim.Adam` (`torch/optim/adam.py`, `_single_tensor_adam`), whose
//!   `weight_decay` is an L2 term added to the gradient *before* the moments. candle-nn has no such
//!   optimiser. This is what MMRec's `learner = adam` (BM3), GRCN, the CF baselines and KDSR/MMSR use.
//! - [`AdamW`]: PyTorch `torch.optim.AdamW`: the parameter is first multiplied by `1 − lr·wd` (decoupled
//!   decay), then the Adam update runs on the raw gradient. `candle_nn::AdamW` computes the same formula
//!   (same bias correction, ε added after the bias-corrected √v̂), but it keeps one step counter for all
//!   variables, so a variable that misses a step (no gradient) is later bias-corrected with the wrong `t`,
//!   and its moments are private, so they cannot be checkpointed. Both are fixed here: each variable has its
//!   own step count, as PyTorch's `state[p]["step"]`, and [`AnyOptimizer::state_tensors`] exposes it.
//! - [`LrSchedule`]: the epoch-wise schedules the references use (constant, MMRec's `LambdaLR`, `StepLR`).
//!
//! Both optimisers skip a variable that has no gradient in a step (PyTorch skips parameters whose `.grad`
//! is `None`): its value, moments and step count stay untouched, and AdamW does not decay it either.
//!
//! The arithmetic follows PyTorch's single-tensor path operation by operation (the bias corrections and the
//! step size in `f64`, `β^t` with `powf` like Python's `**`), but it is not bit-identical with PyTorch:
//! candle rounds scalar factors to the tensor's dtype differently and does not fuse multiply-adds.
//!
//! Nothing here draws random numbers. Variables are processed in the order the caller gives, and that order
//! names the optimiser state (`"{index}.exp_avg"`, …); take them from [`sorted_vars`], because
//! `VarMap::all_vars` returns them in `HashMap` order, which differs from run to run.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use candle_nn::{Optimizer, VarMap};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Hyper-parameters of [`Adam`] and [`AdamW`], named as PyTorch's constructor arguments.
///
/// The default is `torch.optim.Adam`'s. `torch.optim.AdamW` defaults to `weight_decay = 0.01`; here the
/// weight decay is always stated by the caller ([`OptimConfig::weight_decay`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    /// Learning rate (`lr`).
    pub lr: f64,
    /// Decay of the first moment (`betas[0]`).
    pub beta1: f64,
    /// Decay of the second moment (`betas[1]`).
    pub beta2: f64,
    /// Added to the bias-corrected √v̂ (`eps`).
    pub eps: f64,
    /// [`Adam`]: L2 coefficient added to the gradient (`g + wd·θ`); [`AdamW`]: decoupled decay
    /// (`θ·(1 − lr·wd)`).
    pub weight_decay: f64,
    /// Use the running maximum of v in the denominator (`amsgrad`).
    pub amsgrad: bool,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, amsgrad: false }
    }
}

impl AdamConfig {
    /// The ranges PyTorch's constructor accepts: `lr`, `eps`, `weight_decay` ≥ 0 and both betas in [0, 1),
    /// all finite.
    pub fn validate(&self) -> Result<()> {
        let non_negative = [("lr", self.lr), ("eps", self.eps), ("weight_decay", self.weight_decay)];
        for (name, value) in non_negative {
            if !(value.is_finite() && value >= 0.0) {
                return Err(Error::Config(format!("optimiser: {name} must be finite and ≥ 0, got {value}")));
            }
        }
        for (name, value) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&value) {
                return Err(Error::Config(format!("optimiser: {name} must be in [0, 1), got {value}")));
            }
        }
        Ok(())
    }
}

/// Where the weight decay enters the update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decay {
    /// `torch.optim.Adam`: `g ← g + wd·θ`.
    L2,
    /// `torch.optim.AdamW`: `θ ← θ·(1 − lr·wd)`.
    Decoupled,
}

/// One variable and its state, as PyTorch's `state[p]`.
#[derive(Debug)]
struct ParamState {
    var: Var,
    /// First moment m (`exp_avg`), same shape and dtype as the variable.
    exp_avg: Tensor,
    /// Second moment v (`exp_avg_sq`).
    exp_avg_sq: Tensor,
    /// Running maximum of v (`max_exp_avg_sq`), only with `amsgrad`.
    max_exp_avg_sq: Option<Tensor>,
    /// Number of updates this variable received (`step`).
    step: u64,
}

/// The shared body of [`Adam`] and [`AdamW`].
#[derive(Debug)]
struct AdamCore {
    params: Vec<ParamState>,
    cfg: AdamConfig,
}

impl AdamCore {
    fn new(vars: Vec<Var>, cfg: AdamConfig) -> candle_core::Result<Self> {
        cfg.validate().map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let params = vars
            .into_iter()
            .enumerate()
            .map(|(idx, var)| {
                if !var.dtype().is_float() {
                    candle_core::bail!("optimiser: variable {idx} has dtype {:?}, expected a float", var.dtype());
                }
                let exp_avg = var.zeros_like()?;
                let exp_avg_sq = var.zeros_like()?;
                let max_exp_avg_sq = if cfg.amsgrad { Some(var.zeros_like()?) } else { None };
                Ok(ParamState { var, exp_avg, exp_avg_sq, max_exp_avg_sq, step: 0 })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self { params, cfg })
    }

    /// One update of every variable that has a gradient in `grads` (PyTorch `_single_tensor_adam`).
    fn step(&mut self, grads: &GradStore, decay: Decay) -> candle_core::Result<()> {
        let AdamConfig { lr, beta1, beta2, eps, weight_decay, .. } = self.cfg;
        for p in &mut self.params {
            let Some(grad) = grads.get(p.var.as_tensor()) else { continue };
            // Gradients may carry a backprop graph; the state must not keep it alive across steps.
            let mut grad = grad.detach();
            let theta = p.var.as_tensor().detach();
            p.step += 1;
            let theta = match decay {
                // `param.mul_(1 - lr * weight_decay)`
                Decay::Decoupled if weight_decay != 0.0 => theta.affine(1.0 - lr * weight_decay, 0.0)?,
                Decay::Decoupled => theta,
                Decay::L2 => {
                    if weight_decay != 0.0 {
                        // `grad = grad.add(param, alpha=weight_decay)`
                        grad = (&grad + theta.affine(weight_decay, 0.0)?)?;
                    }
                    theta
                }
            };
            // `exp_avg.lerp_(grad, 1 - beta1)`: m + (1 − β1)·(g − m) (PyTorch's lerp form for weights < 0.5).
            let exp_avg = (&p.exp_avg + (&grad - &p.exp_avg)?.affine(1.0 - beta1, 0.0)?)?;
            // `exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)`
            let exp_avg_sq = (p.exp_avg_sq.affine(beta2, 0.0)? + grad.sqr()?.affine(1.0 - beta2, 0.0)?)?;
            let t = p.step as f64;
            let bias_correction1 = 1.0 - beta1.powf(t);
            let bias_correction2 = 1.0 - beta2.powf(t);
            let step_size = lr / bias_correction1;
            let bias_correction2_sqrt = bias_correction2.sqrt();
            let second = match &p.max_exp_avg_sq {
                // `torch.maximum(max_exp_avg_sqs[i], exp_avg_sq, out=max_exp_avg_sqs[i])`
                Some(max_sq) => max_sq.maximum(&exp_avg_sq)?,
                None => exp_avg_sq.clone(),
            };
            // `denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)`
            let denom = second.sqrt()?.affine(1.0 / bias_correction2_sqrt, eps)?;
            // `param.addcdiv_(exp_avg, denom, value=-step_size)`
            let next = (theta - (&exp_avg / &denom)?.affine(step_size, 0.0)?)?;
            p.var.set(&next)?;
            p.exp_avg = exp_avg;
            p.exp_avg_sq = exp_avg_sq;
            if p.max_exp_avg_sq.is_some() {
                p.max_exp_avg_sq = Some(second);
            }
        }
        Ok(())
    }

    fn state_tensors(&self) -> candle_core::Result<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(self.params.len() * 4);
        for (idx, p) in self.params.iter().enumerate() {
            out.push((format!("{idx}.exp_avg"), p.exp_avg.clone()));
            out.push((format!("{idx}.exp_avg_sq"), p.exp_avg_sq.clone()));
            if let Some(max_sq) = &p.max_exp_avg_sq {
                out.push((format!("{idx}.max_exp_avg_sq"), max_sq.clone()));
            }
            let step = i64::try_from(p.step).map_err(|_| candle_core::Error::Msg("step overflows i64".into()))?;
            out.push((format!("{idx}.step"), Tensor::new(step, p.var.device())?));
        }
        Ok(out)
    }

    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let n_params = self.params.len();
        // Reject keys of variables this optimiser does not have; sorted so the error names the same key
        // every time.
        let mut foreign: Vec<&String> = state
            .keys()
            .filter(|key| match key.split_once('.').map(|(idx, _)| idx.parse::<usize>()) {
                Some(Ok(idx)) => idx >= n_params,
                _ => true,
            })
            .collect();
        foreign.sort();
        if let Some(key) = foreign.first() {
            return Err(Error::Config(format!(
                "optimiser state: unexpected key `{key}` for an optimiser of {n_params} variables"
            )));
        }
        if !self.cfg.amsgrad {
            if let Some(idx) = (0..n_params).find(|idx| state.contains_key(&format!("{idx}.max_exp_avg_sq"))) {
                return Err(Error::Config(format!(
                    "optimiser state: `{idx}.max_exp_avg_sq` is present but amsgrad is off"
                )));
            }
        }
        // Check everything before changing anything, so a failed load leaves the optimiser as it was.
        let mut loaded = Vec::with_capacity(n_params);
        for (idx, p) in self.params.iter().enumerate() {
            let moment = |name: &str| -> Result<Tensor> {
                let key = format!("{idx}.{name}");
                let t = state.get(&key).ok_or_else(|| Error::Config(format!("optimiser state: missing `{key}`")))?;
                if t.dims() != p.var.dims() || t.dtype() != p.var.dtype() {
                    return Err(Error::Shape(format!(
                        "optimiser state `{key}`: expected {:?} {:?}, got {:?} {:?}",
                        p.var.dims(),
                        p.var.dtype(),
                        t.dims(),
                        t.dtype()
                    )));
                }
                Ok(t.to_device(p.var.device())?.detach())
            };
            let exp_avg = moment("exp_avg")?;
            let exp_avg_sq = moment("exp_avg_sq")?;
            let max_exp_avg_sq = if self.cfg.amsgrad { Some(moment("max_exp_avg_sq")?) } else { None };
            let key = format!("{idx}.step");
            let step = state.get(&key).ok_or_else(|| Error::Config(format!("optimiser state: missing `{key}`")))?;
            if step.dtype() != DType::I64 || step.rank() != 0 {
                return Err(Error::Shape(format!(
                    "optimiser state `{key}`: expected an i64 scalar, got {:?} {:?}",
                    step.dims(),
                    step.dtype()
                )));
            }
            let step = u64::try_from(step.to_scalar::<i64>()?)
                .map_err(|_| Error::Config(format!("optimiser state `{key}`: negative step count")))?;
            loaded.push((exp_avg, exp_avg_sq, max_exp_avg_sq, step));
        }
        for (p, (exp_avg, exp_avg_sq, max_exp_avg_sq, step)) in self.params.iter_mut().zip(loaded) {
            p.exp_avg = exp_avg;
            p.exp_avg_sq = exp_avg_sq;
            p.max_exp_avg_sq = max_exp_avg_sq;
            p.step = step;
        }
        Ok(())
    }
}

macro_rules! adam_variant {
    ($name:ident, $decay:expr, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug)]
        pub struct $name(AdamCore);

        impl Optimizer for $name {
            type Config = AdamConfig;

            /// Fails on an out-of-range config or a non-float variable.
            fn new(vars: Vec<Var>, config: AdamConfig) -> candle_core::Result<Self> {
                AdamCore::new(vars, config).map(Self)
            }

            fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
                self.0.step(grads, $decay)
            }

            fn learning_rate(&self) -> f64 {
                self.0.cfg.lr
            }

            fn set_learning_rate(&mut self, lr: f64) {
                self.0.cfg.lr = lr;
            }
        }

        impl $name {
            /// The hyper-parameters, with the current learning rate.
            pub fn config(&self) -> &AdamConfig {
                &self.0.cfg
            }

            /// The optimised variables, in the order given to `new`.
            pub fn vars(&self) -> Vec<Var> {
                self.0.params.iter().map(|p| p.var.clone()).collect()
            }

            /// How many updates each variable has received (PyTorch `state[p]["step"]`), in `vars` order.
            pub fn step_counts(&self) -> Vec<u64> {
                self.0.params.iter().map(|p| p.step).collect()
            }

            /// The optimiser state, for a checkpoint: for the variable at index `i`, `"{i}.exp_avg"` and
            /// `"{i}.exp_avg_sq"` (its shape and dtype), `"{i}.max_exp_avg_sq"` with amsgrad, and
            /// `"{i}.step"` (an i64 scalar). The learning rate is not part of it (the schedule sets it).
            pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
                Ok(self.0.state_tensors()?)
            }

            /// Restores what [`Self::state_tensors`] wrote (e.g. read back with
            /// `candle_core::safetensors::load`). The optimiser must have been built over the same variables
            /// in the same order with the same `amsgrad`; every key must be present and none may be extra.
            /// On error the state is unchanged.
            pub fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
                self.0.load_state(state)
            }
        }
    };
}

adam_variant!(
    Adam,
    Decay::L2,
    "`torch.optim.Adam`: `g ← g + wd·θ`; `m ← β1·m + (1 − β1)·g`; `v ← β2·v + (1 − β2)·g²`; \
     `θ ← θ − lr/(1 − β1^t) · m / (√v / √(1 − β2^t) + ε)`, with t the variable's own step count."
);
adam_variant!(
    AdamW,
    Decay::Decoupled,
    "`torch.optim.AdamW`: `θ ← θ·(1 − lr·wd)`, then the [`Adam`] update on the raw gradient (no L2 term)."
);

/// Which optimiser [`build`] makes (MMRec's `learner`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// [`Adam`] (weight decay as L2 in the gradient); every reference code uses it.
    #[default]
    Adam,
    /// [`AdamW`] (decoupled weight decay).
    AdamW,
}

/// The optimiser section of a config. In TOML:
/// `optim = { kind = "adam", lr = 1e-3, weight_decay = 0.0, betas = [0.9, 0.999], eps = 1e-8 }`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimConfig {
    /// MMRec `learner` (`adam`, `adamw`).
    pub kind: OptimizerKind,
    /// Base learning rate (MMRec `learning_rate`, GRCN `l_r`, CLI `--l_r`); a [`LrSchedule`] scales it.
    pub lr: f64,
    /// PyTorch `weight_decay` (MMRec `weight_decay`). Not GRCN's `weight_decay`, which weighs the embedding
    /// L2 term of its loss (spec `grcn.md` §1).
    pub weight_decay: f64,
    /// PyTorch `betas`.
    pub betas: (f64, f64),
    /// PyTorch `eps`.
    pub eps: f64,
    /// PyTorch `amsgrad`.
    pub amsgrad: bool,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self { kind: OptimizerKind::Adam, lr: 1e-3, weight_decay: 0.0, betas: (0.9, 0.999), eps: 1e-8, amsgrad: false }
    }
}

impl OptimConfig {
    /// The hyper-parameters as [`AdamConfig`].
    pub fn adam_config(&self) -> AdamConfig {
        AdamConfig {
            lr: self.lr,
            beta1: self.betas.0,
            beta2: self.betas.1,
            eps: self.eps,
            weight_decay: self.weight_decay,
            amsgrad: self.amsgrad,
        }
    }
}

/// An optimiser chosen at run time from an [`OptimConfig`].
#[derive(Debug)]
pub enum AnyOptimizer {
    Adam(Adam),
    AdamW(AdamW),
}

/// Builds the optimiser `cfg` names over `vars`, which must come in a deterministic order (see
/// [`sorted_vars`]): it names the optimiser state.
pub fn build(vars: Vec<Var>, cfg: &OptimConfig) -> Result<AnyOptimizer> {
    let adam = cfg.adam_config();
    adam.validate()?;
    Ok(match cfg.kind {
        OptimizerKind::Adam => AnyOptimizer::Adam(Adam::new(vars, adam)?),
        OptimizerKind::AdamW => AnyOptimizer::AdamW(AdamW::new(vars, adam)?),
    })
}

impl AnyOptimizer {
    /// Which optimiser this is.
    pub fn kind(&self) -> OptimizerKind {
        match self {
            Self::Adam(_) => OptimizerKind::Adam,
            Self::AdamW(_) => OptimizerKind::AdamW,
        }
    }

    /// One update from `grads`; variables without a gradient are skipped.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        match self {
            Self::Adam(o) => o.step(grads)?,
            Self::AdamW(o) => o.step(grads)?,
        }
        Ok(())
    }

    /// `loss.backward()` then [`Self::step`].
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        self.step(&grads)
    }

    /// The learning rate of the next step.
    pub fn learning_rate(&self) -> f64 {
        match self {
            Self::Adam(o) => o.learning_rate(),
            Self::AdamW(o) => o.learning_rate(),
        }
    }

    /// Sets the learning rate, e.g. to `schedule.lr_at(epoch, cfg.lr)` at the start of an epoch.
    pub fn set_learning_rate(&mut self, lr: f64) {
        match self {
            Self::Adam(o) => o.set_learning_rate(lr),
            Self::AdamW(o) => o.set_learning_rate(lr),
        }
    }

    /// How many updates each variable has received, in the order given to [`build`].
    pub fn step_counts(&self) -> Vec<u64> {
        match self {
            Self::Adam(o) => o.step_counts(),
            Self::AdamW(o) => o.step_counts(),
        }
    }

    /// See [`Adam::state_tensors`]; Adam and AdamW share the layout.
    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        match self {
            Self::Adam(o) => o.state_tensors(),
            Self::AdamW(o) => o.state_tensors(),
        }
    }

    /// See [`Adam::load_state`].
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        match self {
            Self::Adam(o) => o.load_state(state),
            Self::AdamW(o) => o.load_state(state),
        }
    }
}

/// The variables of `varmap`, sorted by name: the deterministic order to give an optimiser
/// (`VarMap::all_vars` iterates a `HashMap`).
pub fn sorted_vars(varmap: &VarMap) -> Vec<Var> {
    sorted_named_vars(varmap).into_iter().map(|(_, var)| var).collect()
}

/// `(name, variable)` pairs of `varmap`, sorted by name.
pub fn sorted_named_vars(varmap: &VarMap) -> Vec<(String, Var)> {
    // A poisoned lock only means another thread panicked while holding it; the map itself is intact.
    let data = varmap.data().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut named: Vec<(String, Var)> = data.iter().map(|(name, var)| (name.clone(), var.clone())).collect();
    drop(data);
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

/// Learning rate per epoch, set by the trainer before each epoch (`opt.set_learning_rate(lr_at(..))`).
///
/// `epoch` is 0-based and counts the scheduler steps taken so far: the references call
/// `lr_scheduler.step()` once after each training epoch, so epoch 0 trains at `base_lr · λ(0)`. In TOML:
/// `schedule = { kind = "constant" }`, `{ kind = "exponential", factor = 1.0, every = 50 }` or
/// `{ kind = "step", gamma = 1e-4, step_size = 40 }`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum LrSchedule {
    /// No scheduler: GRCN (`GRCN/main.py` steps Adam at a fixed `l_r`), MAML (`Adam(1e-3)` in TF), the CF
    /// baselines.
    #[default]
    Constant,
    /// MMRec `src/common/trainer.py` `_build_lr_scheduler`: `LambdaLR` with
    /// `fac = lambda epoch: learning_rate_scheduler[0] ** (epoch / learning_rate_scheduler[1])`, i.e.
    /// `base_lr · factor^(epoch / every)` with a real exponent (Python 3 division). BM3 ships
    /// `learning_rate_scheduler = [1.0, 50]`, which is constant.
    Exponential {
        /// `learning_rate_scheduler[0]`.
        factor: f64,
        /// `learning_rate_scheduler[1]`, in epochs.
        every: usize,
    },
    /// PyTorch `StepLR(step_size, gamma)`: the rate is multiplied by `gamma` at every multiple of
    /// `step_size` (KDSR/MMSR: ×1e-4 every 40 epochs, spec `kdsr-mmsr.md` §8). Computed as repeated
    /// multiplication, as `StepLR.step()` does, not as `gamma^k`.
    Step {
        /// Multiplier (`gamma`).
        gamma: f64,
        /// Epochs between multiplications (`step_size`).
        step_size: usize,
    },
}

impl LrSchedule {
    /// Rejects `every = 0`, `step_size = 0` and non-finite or negative factors.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Self::Constant => Ok(()),
            Self::Exponential { factor, every } => {
                if !(factor.is_finite() && factor > 0.0) {
                    return Err(Error::Config(format!("lr schedule: factor must be finite and > 0, got {factor}")));
                }
                if every == 0 {
                    return Err(Error::Config("lr schedule: every must be at least 1".into()));
                }
                Ok(())
            }
            Self::Step { gamma, step_size } => {
                if !(gamma.is_finite() && gamma >= 0.0) {
                    return Err(Error::Config(format!("lr schedule: gamma must be finite and ≥ 0, got {gamma}")));
                }
                if step_size == 0 {
                    return Err(Error::Config("lr schedule: step_size must be at least 1".into()));
                }
                Ok(())
            }
        }
    }

    /// The learning rate for 0-based `epoch`. A zero `every`/`step_size` (rejected by
    /// [`Self::validate`]) leaves the rate at `base_lr`.
    pub fn lr_at(&self, epoch: usize, base_lr: f64) -> f64 {
        match *self {
            Self::Constant => base_lr,
            // LambdaLR.get_lr: `base_lr * lmbda(self.last_epoch)`.
            Self::Exponential { factor, every } if every > 0 => base_lr * factor.powf(epoch as f64 / every as f64),
            Self::Step { gamma, step_size } if step_size > 0 => {
                (0..epoch / step_size).fold(base_lr, |lr, _| lr * gamma)
            }
            Self::Exponential { .. } | Self::Step { .. } => base_lr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_values() {
        let lr = 0.01;
        assert_eq!(LrSchedule::Constant.lr_at(123, lr), lr);
        // BM3's shipped [1.0, 50]: 1.0^(e/50) = 1.
        let bm3 = LrSchedule::Exponential { factor: 1.0, every: 50 };
        for epoch in [0, 1, 49, 50, 999] {
            assert_eq!(bm3.lr_at(epoch, lr), lr);
        }
        // [0.5, 2]: epoch 0 → 1, epoch 1 → 0.5^0.5 = 0.70710678…, epoch 2 → 0.5, epoch 5 → 0.5^2.5 = 0.1767767…
        let halving = LrSchedule::Exponential { factor: 0.5, every: 2 };
        assert_eq!(halving.lr_at(0, 1.0), 1.0);
        assert!((halving.lr_at(1, 1.0) - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-15);
        assert_eq!(halving.lr_at(2, 1.0), 0.5);
        assert!((halving.lr_at(5, 1.0) - 0.176_776_695_296_636_9).abs() < 1e-15);
        // KDSR/MMSR StepLR(40, 1e-4): 1e-3 up to epoch 39, 1e-7 from 40, (1e-3·1e-4)·1e-4 from 80.
        let step = LrSchedule::Step { gamma: 1e-4, step_size: 40 };
        assert_eq!(step.lr_at(0, 1e-3), 1e-3);
        assert_eq!(step.lr_at(39, 1e-3), 1e-3);
        assert_eq!(step.lr_at(40, 1e-3), 1e-3 * 1e-4);
        assert_eq!(step.lr_at(79, 1e-3), 1e-3 * 1e-4);
        assert_eq!(step.lr_at(80, 1e-3), 1e-3 * 1e-4 * 1e-4);
    }

    #[test]
    fn schedule_validation() {
        assert!(LrSchedule::Constant.validate().is_ok());
        assert!(LrSchedule::Exponential { factor: 0.96, every: 1 }.validate().is_ok());
        assert!(LrSchedule::Exponential { factor: 0.96, every: 0 }.validate().is_err());
        assert!(LrSchedule::Exponential { factor: f64::NAN, every: 1 }.validate().is_err());
        assert!(LrSchedule::Step { gamma: 0.1, step_size: 0 }.validate().is_err());
        assert!(LrSchedule::Step { gamma: -0.1, step_size: 3 }.validate().is_err());
    }

    #[test]
    fn schedule_serde() -> std::result::Result<(), serde_json::Error> {
        let s: LrSchedule = serde_json::from_str(r#"{"kind":"exponential","factor":1.0,"every":50}"#)?;
        assert_eq!(s, LrSchedule::Exponential { factor: 1.0, every: 50 });
        let s: LrSchedule = serde_json::from_str(r#"{"kind":"step","gamma":0.0001,"step_size":40}"#)?;
        assert_eq!(s, LrSchedule::Step { gamma: 1e-4, step_size: 40 });
        let s: LrSchedule = serde_json::from_str(r#"{"kind":"constant"}"#)?;
        assert_eq!(s, LrSchedule::Constant);
        let back: LrSchedule = serde_json::from_str(&serde_json::to_string(&s)?)?;
        assert_eq!(back, s);
        assert!(serde_json::from_str::<LrSchedule>(r#"{"kind":"exponential","factor":1.0,"every":50,"x":1}"#).is_err());
        assert!(serde_json::from_str::<LrSchedule>(r#"{"kind":"cosine"}"#).is_err());
        Ok(())
    }

    #[test]
    fn optim_config_serde() -> std::result::Result<(), serde_json::Error> {
        let cfg: OptimConfig = serde_json::from_str(r#"{"kind":"adamw","lr":0.01,"weight_decay":0.1}"#)?;
        assert_eq!(cfg.kind, OptimizerKind::AdamW);
        assert_eq!((cfg.lr, cfg.weight_decay, cfg.betas, cfg.eps, cfg.amsgrad), (0.01, 0.1, (0.9, 0.999), 1e-8, false));
        let cfg: OptimConfig = serde_json::from_str(r#"{"betas":[0.5,0.9]}"#)?;
        assert_eq!((cfg.kind, cfg.betas), (OptimizerKind::Adam, (0.5, 0.9)));
        assert!(serde_json::from_str::<OptimConfig>(r#"{"learning_rate":0.01}"#).is_err());
        assert!(serde_json::from_str::<OptimConfig>(r#"{"kind":"sgd"}"#).is_err());
        let back: OptimConfig = serde_json::from_str(&serde_json::to_string(&cfg)?)?;
        assert_eq!(back, cfg);
        Ok(())
    }

    #[test]
    fn config_validation() {
        assert!(AdamConfig::default().validate().is_ok());
        for bad in [
            AdamConfig { lr: -1e-3, ..Default::default() },
            AdamConfig { beta1: 1.0, ..Default::default() },
            AdamConfig { beta2: -0.1, ..Default::default() },
            AdamConfig { eps: f64::NAN, ..Default::default() },
            AdamConfig { weight_decay: -0.1, ..Default::default() },
        ] {
            assert!(matches!(bad.validate(), Err(Error::Config(_))), "{bad:?}");
        }
    }
}
