//! Sequential recommendation: the model around a [`SeqEncoder`] (item tables, next-item cross-entropy over
//! all items, optional auxiliary losses such as KDSR's) and its trainer (spec `kdsr-mmsr.md` §5, §8, §10).
//!
//! # Model
//! [`SeqRecommender`] owns three `(n_items + 1, d)` tables: the ID embedding (`N(0, 0.02)`), and the image
//! and text embeddings, initialised from the compressed features ([`ModalityInit`]). Row 0 is padding: it
//! enters every forward pass detached, so it never changes (PyTorch's `padding_idx`). The encoder maps a
//! batch to `s (b, d)`; the logits are `s · E_id[1..]ᵀ` and the loss is cross-entropy over all items.
//! [`ModalityMode`] says whether the modality tables are trained, frozen or absent (zeros).
//! An auxiliary loss ([`SeqAux`], KDSR's correlation distillation) adds weighted terms and may slow down the
//! modality tables' learning rate per epoch (asynchronous training).
//!
//! # Protocols ([`train_sequential`])
//! - [`Protocol::Holdout`] (default, spec §10 [PROPOSED] honest number): a seeded `valid_frac` share of the
//!   training instances is held out; the criterion (`hr@20`) on it selects the epoch with the usual patience;
//!   the best checkpoint is then evaluated on the test instances once.
//! - [`Protocol::Reference`] (the KDSR code): the test instances are evaluated after every epoch; an epoch
//!   "improves" when any reported metric beats its best so far; the patience counter rises only when this
//!   epoch and the one before both failed, and training stops when it reaches `patience` (7 failing epochs in
//!   a row for patience 6). `result.json`'s `test` holds, **for each metric separately, its best value over
//!   the epochs** (what the paper reports); `valid` holds the evaluation of the epoch with the best criterion,
//!   whose per-instance vectors are written for t-tests.
//!
//! Files are those of [`crate::train`]: `metrics.jsonl`, `best.safetensors`, `last.safetensors`,
//! `result.json` ([`TrainOutcome`]), `test_per_user.json` (here: per test *instance*). Runs are not resumable
//! mid-way (a killed run starts again).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use mmkd_data::sequential::{SeqDataset, SeqInstance};
use mmkd_eval::{EvalResult, NdcgForm};
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::optim::{self, AnyOptimizer, LrSchedule, OptimConfig};
use crate::seq_model::{ItemTables, SeqBatch, SeqEncoder};
use crate::train::{
    append_line, format_losses, load_vars, save_vars, write_file, write_json, Protocol, TrainConfig, TrainOutcome,
    BEST_FILE, LAST_FILE, METRICS_FILE, RESULT_FILE, TEST_PER_USER_FILE,
};

/// Variable names of the three item tables.
pub const ID_TABLE: &str = "item.id";
pub const VISUAL_TABLE: &str = "item.visual";
pub const TEXT_TABLE: &str = "item.text";

/// How the modality embedding tables take part (KDSR Fig. 3 regimes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModalityMode {
    /// Trainable, initialised from the compressed features (KDSR, MMSR).
    #[default]
    Tuned,
    /// Initialised from the compressed features and never updated.
    Frozen,
    /// All-zero tables: the encoder sees IDs only (SASRec/GRU4Rec as ID-based baselines).
    None,
}

/// `[seq]`: what every sequential model shares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SeqConfig {
    /// Embedding dimension `d` (`embedding_dim`, 128; the compressed features have this width).
    pub embed_dim: usize,
    /// Training batch (`batch_size`: 256 in the KDSR code and log; 512 in the paper).
    pub batch_size: usize,
    /// Instances scored per evaluation call.
    pub eval_batch: usize,
    /// Cutoffs of HR, MRR and NDCG (`[5, 20]`).
    pub ks: Vec<usize>,
    /// Modality tables: `tuned`, `frozen` or `none`.
    pub modality: ModalityMode,
}

impl Default for SeqConfig {
    fn default() -> Self {
        Self { embed_dim: 128, batch_size: 256, eval_batch: 256, ks: vec![5, 20], modality: ModalityMode::Tuned }
    }
}

impl SeqConfig {
    /// Rejects zero sizes and empty or zero cutoffs.
    pub fn validate(&self) -> Result<()> {
        if self.embed_dim == 0 || self.batch_size == 0 || self.eval_batch == 0 {
            return Err(Error::Config("seq: embed_dim, batch_size and eval_batch must be at least 1".into()));
        }
        if self.ks.is_empty() || self.ks.contains(&0) {
            return Err(Error::Config(format!("seq: ks must be non-empty cutoffs ≥ 1, got {:?}", self.ks)));
        }
        Ok(())
    }
}

/// The compressed modality features that initialise the image and text tables: `(n_items + 1, d)` each,
/// row 0 (padding) all zero.
#[derive(Debug, Clone)]
pub struct ModalityInit {
    pub visual: Tensor,
    pub text: Tensor,
}

/// An auxiliary objective over a batch (KDSR's correlation distillation), added to the cross-entropy.
pub trait SeqAux {
    /// The weighted auxiliary loss of `batch` given the current tables (added to the cross-entropy), and named
    /// terms that are only logged in the epoch statistics.
    fn losses(&self, batch: &SeqBatch, tables: &ItemTables) -> Result<(Tensor, Vec<(String, Tensor)>)>;
    /// Multiplier of the learning rate of the modality tables at 0-based `epoch` (asynchronous training);
    /// 1 by default.
    fn modality_lr_factor(&self, _epoch: usize) -> f64 {
        1.0
    }
}

/// A sequential recommender: item tables, an encoder and an optional auxiliary objective.
#[allow(missing_debug_implementations)]
pub struct SeqRecommender {
    varmap: VarMap,
    id: Var,
    visual: Option<Var>,
    text: Option<Var>,
    visual_fixed: Tensor,
    text_fixed: Tensor,
    encoder: Box<dyn SeqEncoder>,
    aux: Option<Box<dyn SeqAux>>,
    cfg: SeqConfig,
    n_items: usize,
}

impl SeqRecommender {
    /// Builds the tables in `varmap` (through `vb`, whose seeded backend draws the ID table) and the encoder
    /// with `build_encoder(vb.pp(<model name>))`. `init` gives the modality tables' values and `n_items`.
    pub fn new(
        vb: &VarBuilder,
        varmap: &VarMap,
        cfg: &SeqConfig,
        init: &ModalityInit,
        build_encoder: impl FnOnce(VarBuilder) -> Result<Box<dyn SeqEncoder>>,
        aux: Option<Box<dyn SeqAux>>,
    ) -> Result<Self> {
        cfg.validate()?;
        let (rows, d) = init.visual.dims2()?;
        if init.text.dims2()? != (rows, d) || rows < 2 {
            return Err(Error::Shape(format!(
                "modality init: visual {:?} and text {:?} must both be (n_items + 1, d) with n_items ≥ 1",
                init.visual.dims(),
                init.text.dims()
            )));
        }
        if d != cfg.embed_dim {
            return Err(Error::Config(format!(
                "seq: embed_dim = {} but the compressed features are {d} wide",
                cfg.embed_dim
            )));
        }
        let n_items = rows - 1;
        let id_t = vb.get_with_hints((rows, d), ID_TABLE, candle_nn::Init::Randn { mean: 0.0, stdev: 0.02 })?;
        let id = find_var(varmap, ID_TABLE, &id_t)?;
        let device = vb.device().clone();
        let (visual, text) = match cfg.modality {
            ModalityMode::Tuned => {
                let v = vb.get_with_hints((rows, d), VISUAL_TABLE, candle_nn::Init::Const(0.0))?;
                let t = vb.get_with_hints((rows, d), TEXT_TABLE, candle_nn::Init::Const(0.0))?;
                let v = find_var(varmap, VISUAL_TABLE, &v)?;
                let t = find_var(varmap, TEXT_TABLE, &t)?;
                v.set(&init.visual.to_device(&device)?.to_dtype(DType::F32)?)?;
                t.set(&init.text.to_device(&device)?.to_dtype(DType::F32)?)?;
                (Some(v), Some(t))
            }
            ModalityMode::Frozen | ModalityMode::None => (None, None),
        };
        let (visual_fixed, text_fixed) = match cfg.modality {
            ModalityMode::None => {
                (Tensor::zeros((rows, d), DType::F32, &device)?, Tensor::zeros((rows, d), DType::F32, &device)?)
            }
            _ => (
                init.visual.to_device(&device)?.to_dtype(DType::F32)?,
                init.text.to_device(&device)?.to_dtype(DType::F32)?,
            ),
        };
        let encoder = build_encoder(vb.clone())?;
        Ok(Self {
            varmap: varmap.clone(),
            id,
            visual,
            text,
            visual_fixed,
            text_fixed,
            encoder,
            aux,
            cfg: cfg.clone(),
            n_items,
        })
    }

    /// Model name (the encoder's).
    pub fn name(&self) -> &'static str {
        self.encoder.name()
    }

    /// Number of items (without padding).
    pub fn n_items(&self) -> usize {
        self.n_items
    }

    /// The configuration.
    pub fn config(&self) -> &SeqConfig {
        &self.cfg
    }

    /// All trainable variables.
    pub fn vars(&self) -> &VarMap {
        &self.varmap
    }

    /// The current tables, padding row detached (and the modality tables detached unless tuned).
    pub fn tables(&self) -> Result<ItemTables> {
        let detach_row0 = |t: &Tensor| -> Result<Tensor> {
            let rows = t.dim(0)?;
            Ok(Tensor::cat(&[t.narrow(0, 0, 1)?.detach(), t.narrow(0, 1, rows - 1)?], 0)?)
        };
        let id = detach_row0(self.id.as_tensor())?;
        let visual = match &self.visual {
            Some(v) => detach_row0(v.as_tensor())?,
            None => self.visual_fixed.clone(),
        };
        let text = match &self.text {
            Some(t) => detach_row0(t.as_tensor())?,
            None => self.text_fixed.clone(),
        };
        Ok(ItemTables { id, visual, text })
    }

    /// Scores `(b, n_items)` of every item for the batch (column `j` = item `j + 1`).
    pub fn logits(&self, batch: &SeqBatch, tables: &ItemTables, train: Option<&mut ChaCha8Rng>) -> Result<Tensor> {
        let s = self.encoder.encode(batch, tables, train)?; // (b, d)
        let items = tables.id.narrow(0, 1, self.n_items)?; // (n_items, d)
        Ok(s.matmul(&items.t()?)?) // (b, n_items)
    }

    /// The training loss of `batch` (which must carry targets): the named terms and their sum.
    pub fn loss(&self, batch: &SeqBatch, rng: &mut ChaCha8Rng) -> Result<(Tensor, Vec<(String, Tensor)>)> {
        let targets = batch.targets.as_ref().ok_or_else(|| Error::Shape("training batch without targets".into()))?;
        let tables = self.tables()?;
        let logits = self.logits(batch, &tables, Some(rng))?;
        let labels = (targets.to_dtype(DType::I64)? - 1.0)?;
        let ce = candle_nn::loss::cross_entropy(&logits, &labels)?;
        let mut terms = vec![("ce".to_string(), ce.clone())];
        let mut total = ce;
        if let Some(aux) = &self.aux {
            let (aux_total, logged) = aux.losses(batch, &tables)?;
            total = (total + &aux_total)?;
            terms.push(("aux".to_string(), aux_total));
            terms.extend(logged);
        }
        Ok((total, terms))
    }

    /// Scores of the `instances` of `data` (evaluation mode).
    pub fn score_instances(&self, data: &SeqDataset, instances: &[SeqInstance]) -> Result<Tensor> {
        let inputs: Vec<&[u32]> = instances.iter().map(|&i| data.input(i)).collect();
        let batch = SeqBatch::new(&inputs, None, self.id.device())?;
        let tables = self.tables()?;
        self.logits(&batch, &tables, None)
    }

    /// The optimisers of a run: one over every variable but the modality tables, and one over the tuned
    /// modality tables (stepped at their own, asynchronous rate), if any.
    pub fn optimizers(&self, cfg: &OptimConfig) -> Result<(AnyOptimizer, Option<AnyOptimizer>)> {
        let (slow, rest) = self.var_groups();
        let rest = optim::build(rest, cfg)?;
        let slow = if slow.is_empty() { None } else { Some(optim::build(slow, cfg)?) };
        Ok((rest, slow))
    }

    /// The variables of the modality tables (stepped at their own rate) and all the others.
    fn var_groups(&self) -> (Vec<Var>, Vec<Var>) {
        let mut slow = Vec::new();
        let mut rest = Vec::new();
        for (name, var) in optim::sorted_named_vars(&self.varmap) {
            if name == VISUAL_TABLE || name == TEXT_TABLE {
                slow.push(var);
            } else {
                rest.push(var);
            }
        }
        (slow, rest)
    }

    /// One epoch over `instances` (shuffled with `rng`) at learning rates `lr` and `lr_modality`.
    pub fn fit_epoch(
        &self,
        data: &SeqDataset,
        instances: &[SeqInstance],
        rng: &mut ChaCha8Rng,
        opt_rest: &mut AnyOptimizer,
        opt_modality: Option<&mut AnyOptimizer>,
    ) -> Result<BTreeMap<String, f64>> {
        let mut order: Vec<SeqInstance> = instances.to_vec();
        order.shuffle(rng);
        let mut sums: BTreeMap<String, f64> = BTreeMap::new();
        let mut n_batches = 0usize;
        let device = self.id.device().clone();
        let mut opt_modality = opt_modality;
        let n_total = order.len().div_ceil(self.cfg.batch_size);
        let started = Instant::now();
        for chunk in order.chunks(self.cfg.batch_size) {
            let inputs: Vec<&[u32]> = chunk.iter().map(|&i| data.input(i)).collect();
            let targets: Vec<u32> = chunk.iter().map(|&i| data.target(i)).collect();
            let batch = SeqBatch::new(&inputs, Some(&targets), &device)?;
            let (total, terms) = self.loss(&batch, rng)?;
            let grads = total.backward()?;
            opt_rest.step(&grads)?;
            if let Some(opt) = opt_modality.as_deref_mut() {
                opt.step(&grads)?;
            }
            for (name, t) in &terms {
                *sums.entry(name.clone()).or_default() += f64::from(t.to_dtype(DType::F32)?.to_scalar::<f32>()?);
            }
            *sums.entry("total".into()).or_default() += f64::from(total.to_dtype(DType::F32)?.to_scalar::<f32>()?);
            n_batches += 1;
            if n_batches % 100 == 0 {
                let secs = started.elapsed().as_secs_f64();
                tracing::info!(
                    batches = n_batches,
                    of = n_total,
                    loss = sums["total"] / n_batches as f64,
                    secs,
                    eta_secs = secs / n_batches as f64 * (n_total - n_batches) as f64,
                    "training"
                );
            }
        }
        Ok(sums.into_iter().map(|(k, v)| (k, v / n_batches.max(1) as f64)).collect())
    }

    /// Next-item metrics on `instances` (full ranking over all items).
    pub fn evaluate(&self, data: &SeqDataset, instances: &[SeqInstance]) -> Result<EvalResult> {
        let targets: Vec<u32> = instances.iter().map(|&i| data.target(i)).collect();
        let score = |a: usize, b: usize| {
            self.score_instances(data, &instances[a..b]).map_err(|e| match e {
                Error::Candle(e) => e,
                other => candle_core::Error::Msg(other.to_string()),
            })
        };
        Ok(mmkd_eval::sequential::evaluate_next_item(score, &targets, self.n_items, &self.cfg.ks, self.cfg.eval_batch)?)
    }
}

fn find_var(varmap: &VarMap, name: &str, t: &Tensor) -> Result<Var> {
    let data = varmap.data().lock().map_err(|_| Error::Config("poisoned VarMap lock".into()))?;
    match data.get(name) {
        Some(v) => Ok(v.clone()),
        None => Var::from_tensor(t).map_err(Error::from),
    }
}

/// Checks a sequential criterion: `{hr,mrr,ndcg}@K` with K in `ks`.
fn check_criterion(criterion: &str, ks: &[usize]) -> Result<()> {
    let known: Vec<String> = mmkd_eval::sequential::next_item_keys(ks).iter().map(ToString::to_string).collect();
    if known.iter().any(|k| k == criterion) {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "train: criterion `{criterion}` is not a next-item metric; known: {}",
            known.join(", ")
        )))
    }
}

/// Trains `model` on `data` as `cfg` says (see the module documentation), writing into `out_dir`.
pub fn train_sequential(
    model: &SeqRecommender,
    data: &SeqDataset,
    cfg: &TrainConfig,
    optim_cfg: &OptimConfig,
    schedule: &LrSchedule,
    out_dir: &Path,
) -> Result<TrainOutcome> {
    let started = Instant::now();
    check_criterion(&cfg.criterion, &model.cfg.ks)?;
    schedule.validate()?;
    if cfg.eval_every == 0 {
        return Err(Error::Config("train: eval_every must be at least 1".into()));
    }
    let test = data.test_instances();
    let (train_inst, selection, selected_on) = match cfg.protocol {
        Protocol::Holdout => {
            let (t, v) = data.split_validation(cfg.valid_frac, cfg.seed);
            (t, v, "valid")
        }
        Protocol::Reference => (data.train_instances(), test.clone(), "test"),
    };
    if train_inst.is_empty() || selection.is_empty() || test.is_empty() {
        return Err(Error::Config(format!(
            "train: {} train, {} {selected_on} and {} test instances; every split needs at least one (valid_frac = {})",
            train_inst.len(),
            selection.len(),
            test.len(),
            cfg.valid_frac
        )));
    }
    std::fs::create_dir_all(out_dir).map_err(|source| Error::Io { path: out_dir.to_path_buf(), source })?;
    write_file(&out_dir.join(METRICS_FILE), b"")?;
    let (mut opt_rest, mut opt_modality) = model.optimizers(optim_cfg)?;
    tracing::info!(
        model = model.name(),
        protocol = ?cfg.protocol,
        criterion = %cfg.criterion,
        train_instances = train_inst.len(),
        selection_instances = selection.len(),
        test_instances = test.len(),
        max_epochs = cfg.epochs,
        "training"
    );

    let mut best: Option<(usize, f64, EvalResult)> = None;
    let mut best_per_metric: BTreeMap<String, f64> = BTreeMap::new();
    let mut bad = 0usize;
    let mut prev_failed = false;
    let mut stopped_early = false;
    let mut diverged_at = None;
    let mut epochs_run = 0;
    for epoch in 0..cfg.epochs {
        let n = epoch + 1;
        let _span = tracing::info_span!("epoch", epoch = n, model = model.name()).entered();
        let epoch_started = Instant::now();
        let lr = schedule.lr_at(epoch, optim_cfg.lr);
        let lr_modality = lr * model.aux.as_ref().map_or(1.0, |a| a.modality_lr_factor(epoch));
        opt_rest.set_learning_rate(lr);
        if let Some(o) = opt_modality.as_mut() {
            o.set_learning_rate(lr_modality);
        }
        let mut rng = mmkd_data::stream(cfg.seed, &format!("epoch-{epoch}"));
        let losses = model.fit_epoch(data, &train_inst, &mut rng, &mut opt_rest, opt_modality.as_mut())?;
        epochs_run = n;
        let mut line = serde_json::json!({ "epoch": n, "lr": lr, "lr_modality": lr_modality, "losses": losses });
        let mut value = None;
        if let Some((name, v)) = losses.iter().find(|(_, v)| !v.is_finite()) {
            tracing::error!(epoch = n, loss = %name, value = v, "the loss is not finite: training stops here");
            diverged_at = Some(n);
            line["diverged"] = serde_json::json!(true);
        } else if n % cfg.eval_every == 0 {
            let r = model.evaluate(data, &selection)?;
            let v = r.summary.get(&cfg.criterion).copied().unwrap_or(f64::NAN);
            let improved = !v.is_nan() && best.as_ref().is_none_or(|(_, b, _)| v > *b);
            if improved {
                save_vars(model.vars(), &out_dir.join(BEST_FILE), None)?;
                best = Some((n, v, r.clone()));
            }
            match cfg.protocol {
                Protocol::Holdout => {
                    bad = if improved { 0 } else { bad + 1 };
                }
                Protocol::Reference => {
                    // The KDSR code: any metric improving counts; the counter rises only on two failing
                    // epochs in a row.
                    let mut any = false;
                    for (k, &val) in &r.summary {
                        let e = best_per_metric.entry(k.clone()).or_insert(f64::NEG_INFINITY);
                        if val > *e {
                            *e = val;
                            any = true;
                        }
                    }
                    if any {
                        bad = 0;
                    } else if prev_failed {
                        bad += 1;
                    }
                    prev_failed = !any;
                }
            }
            if bad >= cfg.patience && n >= cfg.min_epochs && best.is_some() {
                stopped_early = true;
            }
            line["valid"] = serde_json::json!(r.summary);
            line["criterion"] = serde_json::json!(v);
            line["improved"] = serde_json::json!(improved);
            value = Some(v);
        }
        let secs = epoch_started.elapsed().as_secs_f64();
        line["secs"] = serde_json::json!(secs);
        tracing::info!(
            losses = %format_losses(&losses),
            criterion = %cfg.criterion,
            value = value.map_or_else(|| "-".to_string(), |v| format!("{v:.5}")),
            best_epoch = best.as_ref().map_or(0, |b| b.0),
            secs,
            "epoch done"
        );
        append_line(&out_dir.join(METRICS_FILE), &line)?;
        save_vars(model.vars(), &out_dir.join(LAST_FILE), Some(n))?;
        if diverged_at.is_some() {
            break;
        }
        if stopped_early {
            tracing::info!(patience = cfg.patience, "early stop");
            break;
        }
    }
    let (best_epoch, _, best_eval) = best.ok_or_else(|| match diverged_at {
        Some(e) => Error::Diverged(format!(
            "train: the loss became NaN or infinite at epoch {e}, before any evaluation; lower optim.lr = {}",
            optim_cfg.lr
        )),
        None => Error::Config(format!(
            "train: no evaluation ran (epochs = {}, eval_every = {})",
            cfg.epochs, cfg.eval_every
        )),
    })?;
    let (valid, test_eval, test_summary) = match cfg.protocol {
        Protocol::Reference => (best_eval.summary.clone(), best_eval.clone(), best_per_metric),
        Protocol::Holdout => {
            load_vars(model.vars(), &out_dir.join(BEST_FILE), model.id.device())?;
            let t = model.evaluate(data, &test)?;
            let s = t.summary.clone();
            (best_eval.summary, t, s)
        }
    };
    write_json(&out_dir.join(TEST_PER_USER_FILE), &test_eval)?;
    let outcome = TrainOutcome {
        model: model.name().to_string(),
        protocol: cfg.protocol,
        selected_on: selected_on.to_string(),
        criterion: cfg.criterion.clone(),
        best_epoch,
        epochs_run,
        stopped_early,
        diverged_at,
        valid,
        test: test_summary,
        ndcg_form: NdcgForm::Standard,
        n_test_users: test_eval.users.len(),
        test_per_user: PathBuf::from(TEST_PER_USER_FILE),
        secs: started.elapsed().as_secs_f64(),
    };
    write_json(&out_dir.join(RESULT_FILE), &outcome)?;
    tracing::info!(
        best_epoch,
        test = outcome.test.get(&cfg.criterion).copied().unwrap_or(f64::NAN),
        secs = outcome.secs,
        "trained"
    );
    Ok(outcome)
}

/// The popularity baseline on sequential data: every test instance ranks items by their train-part counts
/// (ties → lower item id). Writes `result.json` and `test_per_user.json` into `out_dir` like a trained run.
pub fn popularity_sequential(data: &SeqDataset, ks: &[usize], out_dir: &Path, device: &Device) -> Result<TrainOutcome> {
    let started = Instant::now();
    let counts = data.train_item_counts();
    let scores = Tensor::from_slice(&counts[1..], (1, data.n_items), device)?;
    let test = data.test_instances();
    let targets: Vec<u32> = test.iter().map(|&i| data.target(i)).collect();
    let r = mmkd_eval::sequential::evaluate_next_item(
        |a, b| scores.broadcast_as((b - a, data.n_items))?.contiguous(),
        &targets,
        data.n_items,
        ks,
        1024,
    )?;
    std::fs::create_dir_all(out_dir).map_err(|source| Error::Io { path: out_dir.to_path_buf(), source })?;
    write_json(&out_dir.join(TEST_PER_USER_FILE), &r)?;
    let outcome = TrainOutcome {
        model: "pop".into(),
        protocol: Protocol::Holdout,
        selected_on: "none".into(),
        criterion: "hr@20".into(),
        best_epoch: 0,
        epochs_run: 0,
        stopped_early: false,
        diverged_at: None,
        valid: BTreeMap::new(),
        test: r.summary.clone(),
        ndcg_form: NdcgForm::Standard,
        n_test_users: r.users.len(),
        test_per_user: PathBuf::from(TEST_PER_USER_FILE),
        secs: started.elapsed().as_secs_f64(),
    };
    write_json(&out_dir.join(RESULT_FILE), &outcome)?;
    Ok(outcome)
}
