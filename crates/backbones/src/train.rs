//! The trainer: epochs, evaluation, early stopping, checkpoints and resume, for any [`Backbone`]
//! (spec `eval-protocol.md` §5).
//!
//! # Protocols
//! - [`Protocol::Holdout`] (default): `dataset.with_holdout(valid_frac, seed)` moves a share of every user's
//!   train items to a validation split. Each evaluation ranks the validation items (train items masked);
//!   early stopping and model selection read the criterion there only. After training, the best checkpoint
//!   is restored and the test split is evaluated once, with train ∪ validation items masked.
//! - [`Protocol::Reference`]: what the authors' code does (GRCN, BM3, MAML select on the test split): the
//!   test split plays the validation split (train masked), with the configured criterion and patience.
//!   The reported test numbers are then selected on the test set, and the result says so: they are the
//!   evaluation of the best epoch as computed during training (as the references report them), not a
//!   second evaluation.
//!
//! After a reload of the best checkpoint the model is told ([`Backbone::checkpoint_loaded`]), so that no
//! cached representation of the last epoch is scored (GRCN's stale evaluation cache).
//!
//! Build models from [`training_view`] (the split the trainer trains on): a graph built from `dataset`
//! itself would contain the validation items.
//!
//! # Epochs
//! Epochs are counted from 1 in logs, `metrics.jsonl`, `state.json` and the result; [`EpochCtx::epoch`]
//! and [`LrSchedule::lr_at`] take the 0-based index. Epoch `e` (0-based) draws from
//! `mmkd_data::stream(seed, "epoch-{e}")`, so a resumed run draws what an uninterrupted one would. An
//! evaluation runs after every `eval_every`-th epoch; the criterion improves only when strictly larger than
//! the best so far, and training stops after `patience` consecutive evaluations without improvement (not
//! before `min_epochs`). A NaN criterion never improves.
//!
//! # Files in `out_dir`
//! - `best.safetensors`: the model's variables at the best evaluation (written when the criterion improves).
//! - `last.safetensors`, `optimizer.safetensors` ([`crate::optim::AnyOptimizer::state_tensors`]) and
//!   `state.json` ([`TrainState`]) after every epoch; both tensor files also hold the scalar
//!   [`EPOCH_KEY`], so a resume notices files from different epochs.
//! - `metrics.jsonl`: one JSON object per epoch: `epoch`, `lr`, `losses`, and when evaluated `valid` (the
//!   summary), `criterion`, `improved`; then `secs`. A resume drops lines after the checkpoint's epoch.
//! - `result.json` ([`TrainOutcome`]) and `test_per_user.json` (the test [`EvalResult`], per-user vectors
//!   for paired t-tests).
//!
//! Every file except `metrics.jsonl` (appended, repaired on resume) is written to `x.tmp` and renamed.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use mmkd_data::{Csr, Dataset};
use mmkd_eval::{EvalConfig, EvalResult, NdcgForm};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{Backbone, EpochCtx};
use crate::optim::{self, sorted_named_vars, AnyOptimizer, LrSchedule, OptimConfig};

/// Model variables at the best evaluation.
pub const BEST_FILE: &str = "best.safetensors";
/// Model variables after the last finished epoch.
pub const LAST_FILE: &str = "last.safetensors";
/// Optimiser state after the last finished epoch.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// [`TrainState`] after the last finished epoch.
pub const STATE_FILE: &str = "state.json";
/// One JSON line per epoch.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// [`TrainOutcome`].
pub const RESULT_FILE: &str = "result.json";
/// The test [`EvalResult`] with per-user vectors.
pub const TEST_PER_USER_FILE: &str = "test_per_user.json";
/// Key of the i64 scalar "epochs done" in `last.safetensors` and `optimizer.safetensors`.
pub const EPOCH_KEY: &str = "trainer.epochs_done";

/// Which split selects the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// Select on a validation split carved out of train; evaluate test once at the end.
    #[default]
    Holdout,
    /// Select on the test split itself, as the authors' code does (GRCN, BM3, MAML).
    Reference,
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
        }
    }
}

impl TrainConfig {
    /// Checks ranges, and that `criterion` is a summary key `eval` produces (`{metric}@{K}`, K in `eval.ks`).
    pub fn validate(&self, eval: &EvalConfig) -> Result<()> {
        if self.eval_every == 0 {
            return Err(Error::Config("train: eval_every must be at least 1".into()));
        }
        if !(0.0..1.0).contains(&self.valid_frac) {
            return Err(Error::Config(format!("train: valid_frac must be in [0, 1), got {}", self.valid_frac)));
        }
        let known: Vec<String> = eval.summary_keys().iter().map(ToString::to_string).collect();
        if !known.contains(&self.criterion) {
            return Err(Error::Config(format!(
                "train: criterion `{}` is not a metric of the evaluation; known: {}",
                self.criterion,
                known.join(", ")
            )));
        }
        if !self.criterion.parse::<mmkd_eval::MetricKey>().is_ok_and(|key| key.higher_is_better()) {
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

/// Progress after the last finished epoch (`state.json`).
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
    pub selected_on: String,
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

/// Trains `model` on `dataset` as `cfg` says, writing checkpoints and results into `out_dir`.
///
/// `optim` builds the optimiser over the model's variables (sorted by name); `schedule` sets its rate
/// before each epoch. With `resume`, `out_dir` must hold the files of an earlier call with the same model,
/// seed, protocol and criterion: training continues after its last finished epoch and ends where an
/// uninterrupted run with the new `cfg.epochs` would.
pub fn train(
    model: &mut dyn Backbone,
    dataset: &Dataset,
    cfg: &TrainConfig,
    optim: &OptimConfig,
    schedule: &LrSchedule,
    eval: &EvalConfig,
    out_dir: &Path,
    resume: bool,
    device: &Device,
) -> Result<TrainOutcome> {
    let started = Instant::now();
    cfg.validate(eval)?;
    schedule.validate()?;
    let view = training_view(dataset, cfg);
    let (selection, selected_on) = match cfg.protocol {
        Protocol::Holdout => (&view.valid, "valid"),
        Protocol::Reference => (&view.test, "test"),
    };
    if selection.nnz() == 0 {
        return Err(Error::Config(format!(
            "train: the {selected_on} split is empty, nothing to select on (valid_frac = {})",
            cfg.valid_frac
        )));
    }
    std::fs::create_dir_all(out_dir).map_err(|source| Error::Io { path: out_dir.to_path_buf(), source })?;
    let mut optimizer = optim::build(optim::sorted_vars(model.vars()), optim)?;
    let mut state = if resume {
        resume_from(out_dir, model, &mut optimizer, cfg, device)?
    } else {
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
        optimizer.set_learning_rate(lr);
        let mut rng = mmkd_data::stream(cfg.seed, &format!("epoch-{epoch}"));
        let stats = {
            let mut ctx = EpochCtx { epoch, dataset: &view, rng: &mut rng, device, optimizer: &mut optimizer };
            model.fit_epoch(&mut ctx)?
        };
        let mut line = serde_json::json!({ "epoch": n, "lr": lr, "losses": stats.losses });
        let mut value = None;
        // A non-finite loss leaves non-finite weights: stop, and report the best epoch before it.
        if let Some((name, v)) = stats.losses.iter().find(|(_, v)| !v.is_finite()) {
            tracing::error!(epoch = n, loss = %name, value = v, lr, "the loss is not finite: training stops here");
            state.diverged_at = Some(n);
            state.stopped_early = true;
            line["diverged"] = serde_json::json!(true);
        } else if n % cfg.eval_every == 0 {
            model.prepare_eval()?;
            let r = evaluate_model(&*model, &view.train, selection, eval)?;
            let v = r.summary.get(&cfg.criterion).copied().unwrap_or(f64::NAN);
            let improved = !v.is_nan() && state.best().is_none_or(|best| v > best);
            if improved {
                best_eval = Some(r.clone());
                save_vars(model.vars(), &out_dir.join(BEST_FILE), None)?;
                state.best_epoch = Some(n);
                state.best_value = Some(v);
                state.best_value_bits = Some(v.to_bits());
                state.bad_evals = 0;
            } else {
                state.bad_evals += 1;
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
        save_checkpoint(out_dir, model.vars(), &optimizer, &state)?;
        if state.stopped_early {
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
    let (valid, test) = match (cfg.protocol, best_eval) {
        // The reference protocol reports the test evaluation of the best epoch as it was computed then.
        (Protocol::Reference, Some(test)) => (test.clone(), test),
        (protocol, best_eval) => {
            load_vars(model.vars(), &out_dir.join(BEST_FILE), device)?;
            model.checkpoint_loaded()?;
            model.prepare_eval()?;
            let selection = match best_eval {
                Some(r) => r,
                None => evaluate_model(&*model, &view.train, selection, eval)?,
            };
            match protocol {
                Protocol::Holdout => {
                    let seen = union(&view.train, &view.valid);
                    (selection, evaluate_model(&*model, &seen, &view.test, eval)?)
                }
                Protocol::Reference => (selection.clone(), selection),
            }
        }
    };
    write_json(&out_dir.join(TEST_PER_USER_FILE), &test)?;
    let outcome = TrainOutcome {
        model: model.name().to_string(),
        protocol: cfg.protocol,
        selected_on: selected_on.to_string(),
        criterion: cfg.criterion.clone(),
        best_epoch,
        epochs_run: state.epochs_done,
        stopped_early: state.stopped_early,
        diverged_at: state.diverged_at,
        valid: valid.summary,
        test: test.summary,
        ndcg_form: test.ndcg_form,
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
pub fn evaluate_model(model: &dyn Backbone, seen: &Csr, truth: &Csr, eval: &EvalConfig) -> Result<EvalResult> {
    let score = |users: &[u32]| {
        model.score_users(users).map_err(|e| match e {
            Error::Candle(e) => e,
            other => candle_core::Error::Msg(other.to_string()),
        })
    };
    Ok(mmkd_eval::evaluate(score, seen, truth, eval)?)
}

/// The pairs of `a` and `b` as one user → items list.
fn union(a: &Csr, b: &Csr) -> Csr {
    let mut pairs = a.pairs();
    pairs.extend(b.pairs());
    Csr::from_pairs(a.n_rows(), a.n_cols(), &pairs).0
}

/// `name=value` pairs, for the epoch log line.
pub(crate) fn format_losses(losses: &BTreeMap<String, f64>) -> String {
    let parts: Vec<String> = losses.iter().map(|(k, v)| format!("{k}={v:.5}")).collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(" ")
    }
}

/// Writes the last-epoch files: variables, then optimiser state, then `state.json` (read last on resume).
fn save_checkpoint(out_dir: &Path, vars: &VarMap, optimizer: &AnyOptimizer, state: &TrainState) -> Result<()> {
    save_vars(vars, &out_dir.join(LAST_FILE), Some(state.epochs_done))?;
    let mut tensors: HashMap<String, Tensor> = optimizer.state_tensors()?.into_iter().collect();
    tensors.insert(EPOCH_KEY.into(), epoch_marker(state.epochs_done)?);
    save_tensors(&tensors, &out_dir.join(OPTIMIZER_FILE))?;
    write_json(&out_dir.join(STATE_FILE), state)
}

fn epoch_marker(epochs_done: usize) -> Result<Tensor> {
    let n = i64::try_from(epochs_done).map_err(|_| Error::Config("epoch count overflows i64".into()))?;
    Ok(Tensor::new(n, &Device::Cpu)?)
}

/// Saves the variables of `vars` by name, plus [`EPOCH_KEY`] when `epochs_done` is given.
pub(crate) fn save_vars(vars: &VarMap, path: &Path, epochs_done: Option<usize>) -> Result<()> {
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (name, var) in sorted_named_vars(vars) {
        if name == EPOCH_KEY {
            return Err(Error::Config(format!("a model variable is named `{EPOCH_KEY}`, which the trainer reserves")));
        }
        tensors.insert(name, var.as_tensor().detach());
    }
    if let Some(n) = epochs_done {
        tensors.insert(EPOCH_KEY.into(), epoch_marker(n)?);
    }
    save_tensors(&tensors, path)
}

/// `candle_core::safetensors::save` to `path.tmp`, then rename.
fn save_tensors(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    let tmp = tmp_path(path);
    candle_core::safetensors::save(tensors, &tmp)
        .map_err(|e| Error::Checkpoint { path: tmp.clone(), message: e.to_string() })?;
    std::fs::rename(&tmp, path).map_err(|source| Error::Io { path: path.to_path_buf(), source })
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    PathBuf::from(tmp)
}

/// Reads a safetensors file onto `device`; returns its tensors and its [`EPOCH_KEY`] value, if any.
fn read_tensors(path: &Path, device: &Device) -> Result<(HashMap<String, Tensor>, Option<usize>)> {
    let mut tensors = candle_core::safetensors::load(path, device)
        .map_err(|e| Error::Checkpoint { path: path.to_path_buf(), message: e.to_string() })?;
    let marker = match tensors.remove(EPOCH_KEY) {
        Some(t) => Some(
            usize::try_from(t.to_dtype(DType::I64)?.to_scalar::<i64>()?)
                .map_err(|_| Error::Checkpoint { path: path.to_path_buf(), message: "negative epoch count".into() })?,
        ),
        None => None,
    };
    Ok((tensors, marker))
}

/// Sets every variable of `vars` from the file at `path`, which must hold exactly those names with the
/// same shapes and dtypes; nothing changes on error.
pub(crate) fn load_vars(vars: &VarMap, path: &Path, device: &Device) -> Result<()> {
    let (tensors, _) = read_tensors(path, device)?;
    set_vars(vars, tensors, path)
}

fn set_vars(vars: &VarMap, mut tensors: HashMap<String, Tensor>, path: &Path) -> Result<()> {
    let bad = |message: String| Error::Checkpoint { path: path.to_path_buf(), message };
    let named = sorted_named_vars(vars);
    let mut values = Vec::with_capacity(named.len());
    for (name, var) in &named {
        let t = tensors.remove(name).ok_or_else(|| bad(format!("no tensor `{name}` for the model's variable")))?;
        if t.dims() != var.dims() || t.dtype() != var.dtype() {
            return Err(bad(format!(
                "`{name}` is {:?} {:?}, the model's variable {:?} {:?}",
                t.dims(),
                t.dtype(),
                var.dims(),
                var.dtype()
            )));
        }
        values.push(t);
    }
    let mut extra: Vec<&String> = tensors.keys().collect();
    extra.sort();
    if let Some(name) = extra.first() {
        return Err(bad(format!("tensor `{name}` is not a variable of the model")));
    }
    for ((_, var), t) in named.iter().zip(values) {
        var.set(&t)?;
    }
    Ok(())
}

/// Loads `state.json`, `last.safetensors` and `optimizer.safetensors`, checks that they belong together and
/// to this run, restores the model and the optimiser, and trims `metrics.jsonl` to the restored epochs.
fn resume_from(
    out_dir: &Path,
    model: &mut dyn Backbone,
    optimizer: &mut AnyOptimizer,
    cfg: &TrainConfig,
    device: &Device,
) -> Result<TrainState> {
    let state_path = out_dir.join(STATE_FILE);
    let state: TrainState = read_json(&state_path)?;
    let mismatch = |what: &str, found: String, expected: String| Error::Checkpoint {
        path: state_path.clone(),
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
    let last_path = out_dir.join(LAST_FILE);
    let opt_path = out_dir.join(OPTIMIZER_FILE);
    let (vars, vars_epoch) = read_tensors(&last_path, device)?;
    let (opt_state, opt_epoch) = read_tensors(&opt_path, device)?;
    for (path, marker) in [(&last_path, vars_epoch), (&opt_path, opt_epoch)] {
        if marker != Some(state.epochs_done) {
            return Err(Error::Checkpoint {
                path: path.clone(),
                message: format!(
                    "holds epoch {marker:?}, but {} says {} epochs are done (interrupted while saving?)",
                    STATE_FILE, state.epochs_done
                ),
            });
        }
    }
    optimizer.load_state(&opt_state).map_err(|e| Error::Checkpoint { path: opt_path, message: e.to_string() })?;
    set_vars(model.vars(), vars, &last_path)?;
    model.checkpoint_loaded()?;
    trim_metrics(&out_dir.join(METRICS_FILE), state.epochs_done)?;
    tracing::info!(epochs_done = state.epochs_done, dir = %out_dir.display(), "resumed");
    Ok(state)
}

/// Keeps the lines of `metrics.jsonl` whose `epoch` is at most `epochs_done`.
fn trim_metrics(path: &Path, epochs_done: usize) -> Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => return Err(Error::Io { path: path.to_path_buf(), source }),
    };
    let mut kept = String::with_capacity(text.len());
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let epoch = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get("epoch").and_then(serde_json::Value::as_u64));
        // A torn last line (no parsable epoch) is dropped with the lines after the checkpoint.
        if epoch.is_some_and(|e| e as usize <= epochs_done) {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    write_file(path, kept.as_bytes())
}

pub(crate) fn append_line(path: &Path, value: &serde_json::Value) -> Result<()> {
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(io)?;
    let mut line = value.to_string();
    line.push('\n');
    file.write_all(line.as_bytes()).map_err(io)
}

/// `bytes` into `path`, atomically.
pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    mmkd_features::write_atomically(path, |w| w.write_all(bytes)).map_err(|e| match e {
        mmkd_features::Error::Io { path, source } => Error::Io { path, source },
        other => other.into(),
    })
}

pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Checkpoint { path: path.to_path_buf(), message: e.to_string() })?;
    text.push('\n');
    write_file(path, text.as_bytes())
}

pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    serde_json::from_str(&text).map_err(|e| Error::Checkpoint { path: path.to_path_buf(), message: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_serde_and_validation() {
        let cfg: TrainConfig = serde_json::from_str(r#"{"protocol": "reference", "patience": 40}"#).unwrap();
        assert_eq!((cfg.protocol, cfg.patience, cfg.epochs), (Protocol::Reference, 40, 200));
        assert!(serde_json::from_str::<TrainConfig>(r#"{"patients": 3}"#).is_err());
        let eval = EvalConfig::default();
        assert!(cfg.validate(&eval).is_ok());
        let with = |criterion: &str| TrainConfig { criterion: criterion.into(), ..TrainConfig::default() };
        assert!(with("recall_micro@50").validate(&eval).is_ok());
        let err = with("recall@30").validate(&eval).unwrap_err().to_string();
        assert!(err.contains("recall@30") && err.contains("ndcg@20"), "{err}");
        assert!(with("auc").validate(&eval).is_err());
        assert!(TrainConfig { eval_every: 0, ..TrainConfig::default() }.validate(&eval).is_err());
        assert!(TrainConfig { valid_frac: 1.0, ..TrainConfig::default() }.validate(&eval).is_err());
    }

    #[test]
    fn union_and_trim() {
        let a = Csr::from_rows(4, &[vec![0, 2], vec![]]);
        let b = Csr::from_rows(4, &[vec![2, 3], vec![1]]);
        let u = union(&a, &b);
        assert_eq!((u.row(0), u.row(1)), (&[0u32, 2, 3][..], &[1u32][..]));

        let dir = std::env::temp_dir().join(format!("mmkd-trim-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(METRICS_FILE);
        std::fs::write(&path, "{\"epoch\":1}\n{\"epoch\":2}\n{\"epoch\":3}\n{\"epo").unwrap();
        trim_metrics(&path, 2).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"epoch\":1}\n{\"epoch\":2}\n");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
