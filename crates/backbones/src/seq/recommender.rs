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
//! # Training and evaluation
//! [`SeqRecommender`] is a [`Backbone`]: it trains through the one step loop and the one trainer
//! ([`crate::train::train`]), with [`NextItem`] as its evaluator, so sequential runs resume mid-run like the
//! others. [`split_instances`] gives the training and selection instances of a protocol:
//! - [`Protocol::Holdout`] (default, spec §10 \[PROPOSED\] honest number): a seeded `valid_frac` share of the
//!   training instances is held out; the criterion (`hr@20`) on it selects the epoch with the usual patience;
//!   the best checkpoint is then evaluated on the test instances once.
//! - [`Protocol::Reference`] (the KDSR code): the test instances are evaluated after every epoch. With
//!   `train.selection = "any_metric"` (what `configs/protocol/reference/<model>.toml` sets for the sequential
//!   models) an epoch "improves" when any reported metric beats its best so far, and `result.json`'s `test`
//!   holds each metric's best value over the epochs (what the paper reports); `valid` holds the evaluation of
//!   the epoch with the best criterion, whose per-instance vectors are written for t-tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use mmkd_data::sequential::{SeqDataset, SeqInstance};
use mmkd_eval::{EvalResult, MetricKey, NdcgForm};
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{write_json, RESULT_FILE, TEST_PER_USER_FILE};
use crate::error::{Error, Result};
use crate::model::{Backbone, EpochCtx, ParamGroup, StepLosses};
use crate::seq::model::{ItemTables, SeqBatch, SeqEncoder};
use crate::train::{Evaluator, Protocol, SelectedOn, TrainConfig, TrainOutcome};
use mmkd_nn::optim;

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
    /// The data and the instances the model trains on.
    data: Arc<SeqDataset>,
    train: Vec<SeqInstance>,
    /// This epoch's training instances, shuffled ([`Backbone::begin_epoch`]).
    epoch_order: Vec<SeqInstance>,
}

impl SeqRecommender {
    /// Builds the tables in `varmap` (through `vb`, whose seeded backend draws the ID table) and the encoder
    /// with `build_encoder(vb.pp(<model name>))`. `init` gives the modality tables' values and `n_items`.
    /// The model trains on the instances `train` of `data` ([`split_instances`]).
    pub fn new(
        vb: &VarBuilder,
        varmap: &VarMap,
        cfg: &SeqConfig,
        init: &ModalityInit,
        build_encoder: impl FnOnce(VarBuilder) -> Result<Box<dyn SeqEncoder>>,
        aux: Option<Box<dyn SeqAux>>,
        data: Arc<SeqDataset>,
        train: Vec<SeqInstance>,
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
        if data.n_items != n_items {
            return Err(Error::Shape(format!(
                "seq: the data hold {} items but the modality tables {n_items}",
                data.n_items
            )));
        }
        if train.is_empty() {
            return Err(Error::Config("seq: no training instance".into()));
        }
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
            data,
            train,
            epoch_order: Vec::new(),
        })
    }

    /// Number of items (without padding).
    pub fn n_items(&self) -> usize {
        self.n_items
    }

    /// The configuration.
    pub fn config(&self) -> &SeqConfig {
        &self.cfg
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

    /// Replaces the instances the model trains on (e.g. a sample of them, for a benchmark).
    pub fn set_training_instances(&mut self, train: Vec<SeqInstance>) -> Result<()> {
        if train.is_empty() {
            return Err(Error::Config("seq: no training instance".into()));
        }
        self.train = train;
        Ok(())
    }

    /// Next-item metrics on `instances` (full ranking over all items).
    pub fn evaluate(&self, data: &SeqDataset, instances: &[SeqInstance]) -> Result<EvalResult> {
        let targets: Vec<u32> = instances.iter().map(|&i| data.target(i)).collect();
        let score = |a: usize, b: usize| self.score_instances(data, &instances[a..b]);
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

impl Backbone for SeqRecommender {
    /// The encoder's name.
    fn name(&self) -> &'static str {
        self.encoder.name()
    }

    /// Shuffles the training instances with `ctx.rng`; one step per `batch_size` of them (the last partial).
    /// Terms: `"ce"`, and with an auxiliary objective `"aux"` (its weighted sum) and its logged terms.
    fn begin_epoch(&mut self, ctx: &mut EpochCtx<'_>) -> Result<usize> {
        self.epoch_order.clone_from(&self.train);
        self.epoch_order.shuffle(&mut *ctx.rng);
        Ok(self.epoch_order.len().div_ceil(self.cfg.batch_size))
    }

    fn step_losses(&mut self, step: usize, rng: &mut ChaCha8Rng) -> Result<StepLosses> {
        let chunk = crate::common::batch_of(&self.epoch_order, self.cfg.batch_size, step);
        let inputs: Vec<&[u32]> = chunk.iter().map(|&i| self.data.input(i)).collect();
        let targets: Vec<u32> = chunk.iter().map(|&i| self.data.target(i)).collect();
        let batch = SeqBatch::new(&inputs, Some(&targets), self.id.device())?;
        let (total, terms) = self.loss(&batch, rng)?;
        Ok(StepLosses::new(terms, total))
    }

    fn vars(&self) -> &VarMap {
        &self.varmap
    }

    /// Every variable but the modality tables (`"rest"`), then the tuned modality tables (`"modality"`,
    /// stepped at their own, asynchronous rate), if any.
    fn param_groups(&self) -> Vec<ParamGroup> {
        let (slow, rest) = self.var_groups();
        let mut groups = vec![ParamGroup { name: "rest", vars: rest }];
        if !slow.is_empty() {
            groups.push(ParamGroup { name: "modality", vars: slow });
        }
        groups
    }

    /// The auxiliary objective's factor for the modality tables (KDSR's asynchronous training).
    fn lr_factors(&self, epoch: usize) -> Vec<f64> {
        let slow = self.aux.as_ref().map_or(1.0, |a| a.modality_lr_factor(epoch));
        if self.visual.is_some() || self.text.is_some() {
            vec![1.0, slow]
        } else {
            vec![1.0]
        }
    }
}

/// The training instances and the selection instances of `data` under `cfg.protocol`: under holdout, a
/// seeded `valid_frac` share of the training instances is held out for selection; under reference, every
/// training instance trains and the test instances select.
pub fn split_instances(data: &SeqDataset, cfg: &TrainConfig) -> (Vec<SeqInstance>, Vec<SeqInstance>) {
    match cfg.protocol {
        Protocol::Holdout => data.split_validation(cfg.valid_frac, cfg.seed),
        Protocol::Reference => (data.train_instances(), data.test_instances()),
    }
}

/// Next-item evaluation with every item ranked (HR, MRR, NDCG at `ks`): the selection instances after every
/// evaluated epoch, the test instances once.
#[derive(Debug)]
pub struct NextItem<'a> {
    data: &'a SeqDataset,
    protocol: Protocol,
    selection: Vec<SeqInstance>,
    test: Vec<SeqInstance>,
    /// The cutoffs the model's evaluation reports ([`SeqConfig::ks`]).
    ks: Vec<usize>,
}

impl<'a> NextItem<'a> {
    /// Evaluates on `selection` (from [`split_instances`] under `protocol`) and on `data`'s test instances,
    /// at the model's cutoffs `ks`. Errors if either instance list is empty.
    pub fn new(data: &'a SeqDataset, protocol: Protocol, selection: Vec<SeqInstance>, ks: &[usize]) -> Result<Self> {
        let test = data.test_instances();
        if selection.is_empty() || test.is_empty() {
            return Err(Error::Config(format!(
                "train: {} selection and {} test instances; both need at least one (train.valid_frac too small?)",
                selection.len(),
                test.len()
            )));
        }
        Ok(Self { data, protocol, selection, test, ks: ks.to_vec() })
    }
}

impl Evaluator<SeqRecommender> for NextItem<'_> {
    fn selected_on(&self) -> SelectedOn {
        match self.protocol {
            Protocol::Holdout => SelectedOn::Valid,
            Protocol::Reference => SelectedOn::Test,
        }
    }

    fn metrics(&self) -> Vec<MetricKey> {
        mmkd_eval::sequential::next_item_keys(&self.ks)
    }

    fn ndcg_form(&self) -> NdcgForm {
        NdcgForm::Standard
    }

    fn selection(&self, model: &SeqRecommender) -> Result<EvalResult> {
        model.evaluate(self.data, &self.selection)
    }

    fn test(&self, model: &SeqRecommender) -> Result<EvalResult> {
        model.evaluate(self.data, &self.test)
    }
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
        selected_on: SelectedOn::None,
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
