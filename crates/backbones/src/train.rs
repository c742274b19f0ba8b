//! The trainer: epochs, evaluation, early stopping, checkpoints and resume, for any [`Backbone`] with an
//! [`Evaluator`] (spec `eval-protocol.md` §5): the user–item models with [`FullRanking`], the sequential
//! ones with [`crate::seq::recommender::NextItem`].
//!
//! # Protocols
//! - [`Protocol::Holdout`] (default): the model trains on a view with a validation split carved out of
//!   train ([`training_view`] for user–item data; a seeded share of the training instances for sequential
//!   data). Each evaluation ranks the validation split; early stopping and model selection read the
//!   criterion there only. After training, the best checkpoint is restored and the test split is evaluated
//!   once.
//! - [`Protocol::Reference`]: what the authors' code does (GRCN, BM3, MAML, KDSR select on the test split):
//!   the test split plays the validation split, with the configured criterion and patience. The reported
//!   test numbers are then selected on the test set, and the result says so: they are the evaluation of the
//!   best epoch as computed during training (as the references report them), not a second evaluation.
//!
//! # Selection rules ([`Selection`])
//! - `criterion` (default): an evaluation improves when the criterion is strictly larger than the best so
//!   far; training stops after `patience` consecutive evaluations without improvement.
//! - `any_metric` (the KDSR code): an evaluation "improves" when any reported metric beats its own best so
//!   far; the counter rises only when this evaluation and the one before both failed, and training stops
//!   when it reaches `patience`. The best checkpoint is still the one with the best criterion. When the
//!   selection split is the test split, `result.json`'s `test` holds **each metric's best value over the
//!   evaluations** (what the KDSR paper reports).
//!
//! After a reload of the best checkpoint the model is told ([`Backbone::checkpoint_loaded`]), so that no
//! cached representation of the last epoch is scored (GRCN's stale evaluation cache).
//!
//! # Epochs
//! Epochs are counted from 1 in logs, `metrics.jsonl`, the trainer state and the result; [`EpochCtx::epoch`]
//! and [`LrSchedule::lr_at`] take the 0-based index. Epoch `e` (0-based) draws from
//! `mmkd_data::stream(seed, "epoch-{e}")`, so a resumed run draws what an uninterrupted one would. An
//! evaluation runs after every `eval_every`-th epoch. A NaN criterion never improves. A non-finite epoch loss
//! (see [`crate::step`]) ends the run; the best epoch before it is reported as `diverged_at`.
//!
//! # Files in `out_dir` ([`crate::checkpoint`])
//! `best.safetensors` (written when the criterion improves), `checkpoint.safetensors` (weights, optimiser
//! and trainer state after every epoch, one atomic file), `metrics.jsonl` (one JSON object per epoch:
//! `epoch`, `lr` (and `lr_<group>` for further parameter groups), `losses`, and when evaluated `valid`
//! (the summary), `criterion`, `improved`; then `train_secs` (the step loop), `eval_secs` (the evaluation and
//! the best checkpoint's write) and `secs`, their sum), `result.json` ([`TrainOutcome`]) and
//! `test_per_user.json` (the test [`EvalResult`], per-user vectors for paired t-tests).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use mmkd_data::{Csr, Dataset};
use mmkd_eval::{EvalConfig, EvalResult, MetricKey, NdcgForm};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{
    append_line, assign_vars, load_checkpoint, load_vars, read_json, remove_stale_temporaries, save_checkpoint,
    save_vars, trim_metrics, write_file, write_json,
};
pub use crate::checkpoint::{BEST_FILE, CHECKPOINT_FILE, METRICS_FILE, RESULT_FILE, TEST_PER_USER_FILE};
use crate::error::{Error, Result};
use crate::model::{Backbone, EpochCtx, Recommender};
use crate::step::{fit_epoch, Optimizers};
use mmkd_nn::optim::{LrSchedule, OptimConfig};

/// Which split selects the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// Select on a validation split carved out of train; evaluate test once at the end.
    #[default]
    Holdout,
    /// Select on the test split itself, as the authors' code does (GRCN, BM3, MAML, KDSR).
    Reference,
}

/// The split whose evaluation selected the reported epoch (`selected_on` in `result.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectedOn {
    /// The validation split (holdout protocol): the test numbers are a held-out estimate.
    Valid,
    /// The test split itself (reference protocol): the test numbers are selected on the test set.
    Test,
    /// Nothing was selected (popularity, which does not train).
    None,
}

impl SelectedOn {
    /// `"valid"`, `"test"` or `"none"`, as in `result.json`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::Test => "test",
            Self::None => "none",
        }
    }
}

impl std::fmt::Display for SelectedOn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// When an evaluation counts as an improvement for early stopping (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    /// The criterion strictly improves.
    #[default]
    Criterion,
    /// Any reported metric improves on its own best (the KDSR code's rule).
    AnyMetric,
}

/// Configuration of [`train`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)] // A typo in a config file is an error, not a silent default.
pub struct TrainConfig {
    /// Maximum number of epochs (MMRec `epochs`, GRCN `--num_epoch`).
    pub epochs: usize,
    /// Which split selects the model: `holdout` or `reference`.
    pub protocol: Protocol,
    /// Share of each user's train items moved to validation under `holdout` (at least one train item stays).
    /// 0 keeps only a validation split the data set brings (MMRec layout).
    pub valid_frac: f64,
    /// Early-stopping and selection metric, a summary key of the evaluation: `recall@20` (SGFD paper, BM3),
    /// `ndcg@20` (GRCN code), `recall_micro@20` (the BM3 fork), …; its K must be in `eval.ks`.
    pub criterion: String,
    /// Stop after this many consecutive evaluations without a strict improvement (MMRec `stopping_step`;
    /// the SGFD paper: 20 epochs).
    pub patience: usize,
    /// Early stopping never stops before this many epochs.
    pub min_epochs: usize,
    /// Evaluate after every `eval_every`-th epoch (MMRec `eval_step`).
    pub eval_every: usize,
    /// Seed of the holdout split and of every epoch's stream (xtask copies the run's top-level `seed`
    /// unless `[train] seed` is set).
    pub seed: u64,
    /// What counts as an improvement for early stopping: `criterion` or `any_metric` (module docs).
    pub selection: Selection,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 200,
            protocol: Protocol::Holdout,
            valid_frac: 0.1,
            criterion: "recall@20".into(),
            patience: 20,
            min_epochs: 0,
            eval_every: 1,
            seed: 0,
            selection: Selection::Criterion,
        }
    }
}

impl TrainConfig {
    /// Checks ranges, and that `criterion` is one of `known`, the metrics the evaluation produces
    /// ([`Evaluator::metrics`]), and higher-is-better.
    pub fn validate(&self, known: &[MetricKey]) -> Result<()> {
        if self.epochs == 0 {
            return Err(Error::Config("train: epochs must be at least 1".into()));
        }
        if self.eval_every == 0 {
            return Err(Error::Config("train: eval_every must be at least 1".into()));
        }
        if !(0.0..1.0).contains(&self.valid_frac) {
            return Err(Error::Config(format!("train: valid_frac must be in [0, 1), got {}", self.valid_frac)));
        }
        let key: MetricKey = self.criterion.parse().map_err(|e| Error::Config(format!("train: criterion: {e}")))?;
        if !known.contains(&key) {
            let known: Vec<String> = known.iter().map(ToString::to_string).collect();
            return Err(Error::Config(format!(
                "train: criterion `{}` is not a metric of the evaluation; known: {}",
                self.criterion,
                known.join(", ")
            )));
        }
        if !key.higher_is_better() {
            return Err(Error::Config(format!("train: criterion `{}` is not higher-is-better", self.criterion)));
        }
        Ok(())
    }
}

/// The data set the model trains on: under `holdout`, `dataset.with_holdout(valid_frac, seed)`; under
/// `reference`, `dataset` itself. [`train`] calls it too, so a model built from it sees the same split.
pub fn training_view(dataset: &Dataset, cfg: &TrainConfig) -> Dataset {
    match cfg.protocol {
        Protocol::Holdout => dataset.with_holdout(cfg.valid_frac, cfg.seed),
        Protocol::Reference => dataset.clone(),
    }
}

/// Progress after the last finished epoch (the checkpoint's metadata).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainState {
    /// [`Backbone::name`] of the model that wrote it.
    pub model: String,
    /// Seed, protocol and criterion of the run; a resume must use the same.
    pub seed: u64,
    pub protocol: Protocol,
    pub criterion: String,
    /// Epochs finished (the last one, counted from 1).
    pub epochs_done: usize,
    /// The epoch (from 1) of the best evaluation so far.
    pub best_epoch: Option<usize>,
    /// Its criterion value, for reading.
    pub best_value: Option<f64>,
    /// The same value's bits, what a resume uses (serde_json may parse a float one ulp off).
    pub best_value_bits: Option<u64>,
    /// Consecutive evaluations without improvement.
    pub bad_evals: usize,
    /// Learning rate of the last epoch.
    pub lr: f64,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// The epoch (from 1) whose mean loss was not finite, which ended the run.
    #[serde(default)]
    pub diverged_at: Option<usize>,
    /// [`Selection::AnyMetric`]: each metric's best value so far, as bits (exact on resume).
    #[serde(default)]
    pub best_per_metric: BTreeMap<String, u64>,
    /// [`Selection::AnyMetric`]: whether the last evaluation failed to improve any metric.
    #[serde(default)]
    pub last_failed: bool,
}

impl TrainState {
    fn best(&self) -> Option<f64> {
        self.best_value_bits.map(f64::from_bits)
    }
}

/// What [`train`] reports (`result.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOutcome {
    /// [`Backbone::name`].
    pub model: String,
    pub protocol: Protocol,
    /// The split that selected the model: `"valid"` (holdout) or `"test"` (reference protocol: the test
    /// numbers are selected on the test set, as in the authors' code, and are no held-out estimate).
    pub selected_on: SelectedOn,
    pub criterion: String,
    /// The epoch (from 1) whose checkpoint is reported.
    pub best_epoch: usize,
    /// Epochs trained in total (over resumes).
    pub epochs_run: usize,
    pub stopped_early: bool,
    /// The epoch (from 1) whose mean loss was NaN or infinite: training stopped there and the best epoch
    /// before it is reported.
    #[serde(default)]
    pub diverged_at: Option<usize>,
    /// Summary on the selection split at the best epoch (the test split under `reference`).
    pub valid: BTreeMap<String, f64>,
    /// Summary on the test split at the best epoch: `recall@20`, `ndcg@20`, … (the [`EvalResult`] keys).
    pub test: BTreeMap<String, f64>,
    /// The NDCG form behind `ndcg@K`.
    pub ndcg_form: NdcgForm,
    /// Users in the test evaluation.
    pub n_test_users: usize,
    /// File (relative to the output folder) with the test [`EvalResult`] and its per-user vectors.
    pub test_per_user: PathBuf,
    /// Wall-clock seconds of this call (not of earlier, resumed parts).
    pub secs: f64,
}

/// How the trainer evaluates a model of type `M`: the selection split after every `eval_every`-th epoch,
/// the test split once at the end (holdout), and which metrics exist (to check the criterion).
pub trait Evaluator<M: ?Sized> {
    /// The split that selects the model: the validation split (holdout) or the test split (reference).
    fn selected_on(&self) -> SelectedOn;
    /// The metrics an evaluation produces, e.g. `recall@20` or `hr@20`.
    fn metrics(&self) -> Vec<MetricKey>;
    /// The NDCG form behind `ndcg@K`.
    fn ndcg_form(&self) -> NdcgForm;
    /// Metrics on the selection split.
    fn selection(&self, model: &M) -> Result<EvalResult>;
    /// Metrics on the test split (called once, after the best checkpoint is restored, under holdout).
    fn test(&self, model: &M) -> Result<EvalResult>;
}

/// Full ranking of every item for the users of a [`Recommender`] (spec `eval-protocol.md`): the selection
/// split (validation under holdout, test under reference) with the train items masked; the test split with
/// train ∪ validation items masked.
#[derive(Debug)]
pub struct FullRanking<'a> {
    view: &'a Dataset,
    protocol: Protocol,
    eval: &'a EvalConfig,
    /// Train ∪ validation: what the final test evaluation masks under holdout.
    seen: Csr,
}

impl<'a> FullRanking<'a> {
    /// Over `view`, the data set the model trains on ([`training_view`] under `protocol`). Errors if the
    /// selection split is empty.
    pub fn new(view: &'a Dataset, protocol: Protocol, eval: &'a EvalConfig) -> Result<Self> {
        let selection = match protocol {
            Protocol::Holdout => &view.valid,
            Protocol::Reference => &view.test,
        };
        if selection.nnz() == 0 {
            return Err(Error::Config(format!(
                "train: the {} split is empty, nothing to select on",
                if protocol == Protocol::Holdout { "validation" } else { "test" }
            )));
        }
        Ok(Self { view, protocol, eval, seen: union(&view.train, &view.valid) })
    }
}

impl<M: Recommender + ?Sized> Evaluator<M> for FullRanking<'_> {
    fn selected_on(&self) -> SelectedOn {
        match self.protocol {
            Protocol::Holdout => SelectedOn::Valid,
            Protocol::Reference => SelectedOn::Test,
        }
    }

    fn metrics(&self) -> Vec<MetricKey> {
        self.eval.summary_keys()
    }

    fn ndcg_form(&self) -> NdcgForm {
        self.eval.ndcg
    }

    fn selection(&self, model: &M) -> Result<EvalResult> {
        let truth = match self.protocol {
            Protocol::Holdout => &self.view.valid,
            Protocol::Reference => &self.view.test,
        };
        evaluate_model(model, &self.view.train, truth, self.eval)
    }

    fn test(&self, model: &M) -> Result<EvalResult> {
        evaluate_model(model, &self.seen, &self.view.test, self.eval)
    }
}

/// Trains `model` as `cfg` says, evaluating with `evaluator`, writing checkpoints and results into `out_dir`.
///
/// `optim` builds one optimiser per parameter group of the model; `schedule` sets their rates before each
/// epoch (times [`Backbone::lr_factors`]). With `resume`, `out_dir` must hold the checkpoint of an earlier
/// call with the same model, seed, protocol and criterion: training continues after its last finished
/// epoch and ends where an uninterrupted run with the new `cfg.epochs` would.
pub fn train<M: Backbone + ?Sized>(
    model: &mut M,
    evaluator: &dyn Evaluator<M>,
    cfg: &TrainConfig,
    optim: &OptimConfig,
    schedule: &LrSchedule,
    out_dir: &Path,
    resume: bool,
    device: &Device,
) -> Result<TrainOutcome> {
    let started = Instant::now();
    cfg.validate(&evaluator.metrics())?;
    schedule.validate()?;
    let selected_on = evaluator.selected_on();
    std::fs::create_dir_all(out_dir).map_err(|source| Error::Io { path: out_dir.to_path_buf(), source })?;
    remove_stale_temporaries(out_dir)?;
    let mut optimizers = Optimizers::new(&*model, optim)?;
    let mut state = if resume {
        resume_from(out_dir, model, &mut optimizers, cfg, device)?
    } else {
        // A fresh run: no checkpoint of an earlier run in this folder may be resumed later.
        remove_if_present(&out_dir.join(CHECKPOINT_FILE))?;
        write_file(&out_dir.join(METRICS_FILE), b"")?;
        TrainState {
            model: model.name().to_string(),
            seed: cfg.seed,
            protocol: cfg.protocol,
            criterion: cfg.criterion.clone(),
            epochs_done: 0,
            best_epoch: None,
            best_value: None,
            best_value_bits: None,
            bad_evals: 0,
            lr: optim.lr,
            stopped_early: false,
            diverged_at: None,
            best_per_metric: BTreeMap::new(),
            last_failed: false,
        }
    };
    tracing::info!(
        model = model.name(),
        protocol = ?cfg.protocol,
        criterion = %cfg.criterion,
        from_epoch = state.epochs_done + 1,
        max_epochs = cfg.epochs,
        "training"
    );

    // The selection split's evaluation at the best epoch of this call (none after a resume until one
    // improves): reported as is, rather than evaluated again after the best checkpoint is reloaded.
    let mut best_eval: Option<EvalResult> = None;
    for epoch in state.epochs_done..cfg.epochs {
        if state.stopped_early {
            break;
        }
        let n = epoch + 1;
        let _span = tracing::info_span!("epoch", epoch = n, model = model.name()).entered();
        let epoch_started = Instant::now();
        let lr = schedule.lr_at(epoch, optim.lr);
        let rates = optimizers.set_learning_rates(lr, &model.lr_factors(epoch))?;
        let mut rng = mmkd_data::stream(cfg.seed, &format!("epoch-{epoch}"));
        let stats = {
            let mut ctx = EpochCtx { epoch, rng: &mut rng, device };
            fit_epoch(model, &mut ctx, &mut optimizers)?
        };
        let train_secs = epoch_started.elapsed().as_secs_f64();
        let mut line = serde_json::json!({ "epoch": n, "lr": lr });
        for (name, rate) in rates.iter().skip(1) {
            line[format!("lr_{name}")] = serde_json::json!(rate);
        }
        line["losses"] = serde_json::json!(stats.losses);
        let mut value = None;
        // A non-finite loss leaves non-finite weights: stop, and report the best epoch before it.
        if let Some((name, v)) = stats.losses.iter().find(|(_, v)| !v.is_finite()) {
            tracing::error!(epoch = n, loss = %name, value = v, lr, "the loss is not finite: training stops here");
            state.diverged_at = Some(n);
            state.stopped_early = true;
            line["diverged"] = serde_json::json!(true);
        } else if n % cfg.eval_every == 0 {
            model.prepare_eval()?;
            let r = evaluator.selection(&*model)?;
            let v = r.summary.get(&cfg.criterion).copied().unwrap_or(f64::NAN);
            let improved = !v.is_nan() && state.best().is_none_or(|best| v > best);
            if improved {
                best_eval = Some(r.clone());
                save_vars(model.vars(), &out_dir.join(BEST_FILE))?;
                state.best_epoch = Some(n);
                state.best_value = Some(v);
                state.best_value_bits = Some(v.to_bits());
            }
            match cfg.selection {
                Selection::Criterion => state.bad_evals = if improved { 0 } else { state.bad_evals + 1 },
                Selection::AnyMetric => {
                    let mut any = false;
                    for (k, &val) in &r.summary {
                        let best = state.best_per_metric.get(k).map_or(f64::NEG_INFINITY, |b| f64::from_bits(*b));
                        if val > best {
                            state.best_per_metric.insert(k.clone(), val.to_bits());
                            any = true;
                        }
                    }
                    if any {
                        state.bad_evals = 0;
                    } else if state.last_failed {
                        state.bad_evals += 1;
                    }
                    state.last_failed = !any;
                }
            }
            if state.bad_evals >= cfg.patience && n >= cfg.min_epochs && state.best_epoch.is_some() {
                state.stopped_early = true;
            }
            line["valid"] = serde_json::json!(r.summary);
            line["criterion"] = serde_json::json!(v);
            line["improved"] = serde_json::json!(improved);
            value = Some(v);
        }
        state.epochs_done = n;
        state.lr = lr;
        let secs = epoch_started.elapsed().as_secs_f64();
        line["train_secs"] = serde_json::json!(train_secs);
        line["eval_secs"] = serde_json::json!(secs - train_secs);
        line["secs"] = serde_json::json!(secs);
        tracing::info!(
            losses = %format_losses(&stats.losses),
            criterion = %cfg.criterion,
            value = value.map_or_else(|| "-".to_string(), |v| format!("{v:.5}")),
            best_epoch = state.best_epoch.unwrap_or(0),
            secs,
            "epoch done"
        );
        append_line(&out_dir.join(METRICS_FILE), &line)?;
        save_checkpoint(out_dir, model.vars(), optimizers.state_tensors()?, &state)?;
        if state.stopped_early && state.diverged_at.is_none() {
            tracing::info!(patience = cfg.patience, best_epoch = state.best_epoch.unwrap_or(0), "early stop");
        }
    }

    let best_epoch = state.best_epoch.ok_or_else(|| {
        if let Some(epoch) = state.diverged_at {
            return Error::Diverged(format!(
                "train: the loss became NaN or infinite at epoch {epoch}, before any evaluation improved; lower \
                 the learning rate (optim.lr = {}) or evaluate more often (train.eval_every)",
                optim.lr
            ));
        }
        Error::Config(format!(
            "train: no evaluation gave a criterion value (epochs = {}, eval_every = {}, or the criterion was NaN)",
            cfg.epochs, cfg.eval_every
        ))
    })?;
    let (selection, test) = match (cfg.protocol, best_eval) {
        // The reference protocol reports the test evaluation of the best epoch as it was computed then.
        (Protocol::Reference, Some(test)) => (test.clone(), test),
        (protocol, best_eval) => {
            load_vars(model.vars(), &out_dir.join(BEST_FILE), device)?;
            model.checkpoint_loaded()?;
            model.prepare_eval()?;
            let selection = match best_eval {
                Some(r) => r,
                None => evaluator.selection(&*model)?,
            };
            match protocol {
                Protocol::Holdout => {
                    let test = evaluator.test(&*model)?;
                    (selection, test)
                }
                Protocol::Reference => (selection.clone(), selection),
            }
        }
    };
    write_json(&out_dir.join(TEST_PER_USER_FILE), &test)?;
    let mut test_summary = test.summary.clone();
    if cfg.selection == Selection::AnyMetric && cfg.protocol == Protocol::Reference {
        test_summary = state.best_per_metric.iter().map(|(k, b)| (k.clone(), f64::from_bits(*b))).collect();
    }
    let outcome = TrainOutcome {
        model: model.name().to_string(),
        protocol: cfg.protocol,
        selected_on,
        criterion: cfg.criterion.clone(),
        best_epoch,
        epochs_run: state.epochs_done,
        stopped_early: state.stopped_early,
        diverged_at: state.diverged_at,
        valid: selection.summary,
        test: test_summary,
        ndcg_form: evaluator.ndcg_form(),
        n_test_users: test.users.len(),
        test_per_user: PathBuf::from(TEST_PER_USER_FILE),
        secs: started.elapsed().as_secs_f64(),
    };
    write_json(&out_dir.join(RESULT_FILE), &outcome)?;
    tracing::info!(
        best_epoch,
        criterion = %cfg.criterion,
        test = outcome.test.get(&cfg.criterion).copied().unwrap_or(f64::NAN),
        secs = outcome.secs,
        "trained"
    );
    Ok(outcome)
}

/// Full-ranking metrics of `model` with the items of `seen` masked, against `truth`.
pub fn evaluate_model<M: Recommender + ?Sized>(
    model: &M,
    seen: &Csr,
    truth: &Csr,
    eval: &EvalConfig,
) -> Result<EvalResult> {
    Ok(mmkd_eval::evaluate(|users: &[u32]| model.score_users(users), seen, truth, eval)?)
}

/// The pairs of `a` and `b` as one user → items list.
fn union(a: &Csr, b: &Csr) -> Csr {
    let mut pairs = a.pairs();
    pairs.extend(b.pairs());
    Csr::from_pairs(a.n_rows(), a.n_cols(), &pairs).0
}

/// Removes `path` if it exists.
fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Io { path: path.to_path_buf(), source: e }),
        _ => Ok(()),
    }
}

/// `name=value` pairs with four significant digits, for the epoch log line.
pub(crate) fn format_losses(losses: &BTreeMap<String, f64>) -> String {
    let parts: Vec<String> = losses.iter().map(|(k, v)| format!("{k}={v:.4e}")).collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(" ")
    }
}

/// Restores the model and the optimisers from the checkpoint in `out_dir`, checks that it belongs to this
/// run, and trims `metrics.jsonl` to the restored epochs.
fn resume_from<M: Backbone + ?Sized>(
    out_dir: &Path,
    model: &mut M,
    optimizers: &mut Optimizers,
    cfg: &TrainConfig,
    device: &Device,
) -> Result<TrainState> {
    let path = out_dir.join(CHECKPOINT_FILE);
    let restored = load_checkpoint::<TrainState>(out_dir, device)?;
    let state = restored.state;
    let mismatch = |what: &str, found: String, expected: String| Error::Checkpoint {
        path: path.clone(),
        message: format!("written with {what} {found}, but this run has {expected}; resume needs the same"),
    };
    if state.model != model.name() {
        return Err(mismatch("model", state.model.clone(), model.name().to_string()));
    }
    if state.seed != cfg.seed {
        return Err(mismatch("seed", state.seed.to_string(), cfg.seed.to_string()));
    }
    if state.protocol != cfg.protocol {
        return Err(mismatch("protocol", format!("{:?}", state.protocol), format!("{:?}", cfg.protocol)));
    }
    if state.criterion != cfg.criterion {
        return Err(mismatch("criterion", state.criterion.clone(), cfg.criterion.clone()));
    }
    assign_vars(model.vars(), restored.model, &path)?;
    optimizers
        .load_state(&restored.optimizer)
        .map_err(|e| Error::Checkpoint { path: path.clone(), message: e.to_string() })?;
    model.checkpoint_loaded()?;
    trim_metrics(&out_dir.join(METRICS_FILE), state.epochs_done)?;
    tracing::info!(epochs_done = state.epochs_done, dir = %out_dir.display(), "resumed");
    Ok(state)
}

impl TrainState {
    /// The state of the last committed epoch of the run in `out_dir`, if it has a checkpoint.
    pub fn read(out_dir: &Path) -> Result<Option<Self>> {
        crate::checkpoint::read_checkpoint_state(out_dir)
    }
}

impl TrainOutcome {
    /// Reads `result.json` of a run folder.
    pub fn read(out_dir: &Path) -> Result<Self> {
        read_json(&out_dir.join(RESULT_FILE))
    }

    /// The test evaluation with its per-user vectors, from the run folder `out_dir`.
    pub fn test_eval(&self, out_dir: &Path) -> Result<EvalResult> {
        read_json(&out_dir.join(&self.test_per_user))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_serde_and_validation() {
        let cfg: TrainConfig = serde_json::from_str(r#"{"protocol": "reference", "patience": 40}"#).unwrap();
        assert_eq!((cfg.protocol, cfg.patience, cfg.epochs), (Protocol::Reference, 40, 200));
        assert!(serde_json::from_str::<TrainConfig>(r#"{"patients": 3}"#).is_err());
        let known: Vec<MetricKey> =
            ["recall@20", "ndcg@20", "recall_micro@50"].iter().map(|s| s.parse().unwrap()).collect();
        assert!(cfg.validate(&known).is_ok());
        let with = |criterion: &str| TrainConfig { criterion: criterion.into(), ..TrainConfig::default() };
        assert!(with("recall_micro@50").validate(&known).is_ok());
        let err = with("recall@30").validate(&known).unwrap_err().to_string();
        assert!(err.contains("recall@30") && err.contains("ndcg@20"), "{err}");
        assert!(TrainConfig { eval_every: 0, ..TrainConfig::default() }.validate(&known).is_err());
        assert!(TrainConfig { epochs: 0, ..TrainConfig::default() }.validate(&known).is_err());
        assert!(TrainConfig { valid_frac: 1.0, ..TrainConfig::default() }.validate(&known).is_err());
        let any: TrainConfig = serde_json::from_str(r#"{"selection": "any_metric"}"#).unwrap();
        assert_eq!(any.selection, Selection::AnyMetric);
    }

    #[test]
    fn union_of_splits() {
        let a = Csr::from_rows(4, &[vec![0, 2], vec![]]);
        let b = Csr::from_rows(4, &[vec![2, 3], vec![1]]);
        let u = union(&a, &b);
        assert_eq!((u.row(0), u.row(1)), (&[0u32, 2, 3][..], &[1u32][..]));
    }
}
