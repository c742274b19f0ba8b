//! Every call into the trainers of `mmkd-backbones` (`train`, `seq_train`) and into the models' training and
//! scoring hooks, in one module: when the trainer's API changes, this is the one place to adapt.

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::VarMap;
use mmkd_backbones::seq::recommender::NextItem;
use mmkd_backbones::{fit_epoch as fit, EpochCtx, EpochStats, FullRanking, Optimizers, Recommender};
use mmkd_data::sequential::{SeqDataset, SeqInstance};
use mmkd_data::Dataset;
use mmkd_eval::EvalResult;
use rand_chacha::ChaCha8Rng;

pub use mmkd_backbones::seq::recommender::{split_instances, ModalityInit, SeqAux, SeqConfig, SeqRecommender};
pub use mmkd_backbones::train::{
    training_view, SelectedOn, TrainConfig, TrainOutcome, TrainState, BEST_FILE, CHECKPOINT_FILE, METRICS_FILE,
    RESULT_FILE, TEST_PER_USER_FILE,
};

use crate::config::RunConfig;
use crate::error::{Context, Result};

/// Trains `model` (built on `view`, the training view of the data) per `cfg` into `out` (checkpoints,
/// metrics, `result.json`), from the last finished epoch when `resume`.
pub fn train(
    model: &mut dyn Recommender,
    view: &Dataset,
    cfg: &RunConfig,
    out: &Path,
    resume: bool,
    device: &Device,
) -> Result<TrainOutcome> {
    let evaluator = FullRanking::new(view, cfg.train.protocol, &cfg.eval)?;
    Ok(mmkd_backbones::train(model, &evaluator, &cfg.train, &cfg.optim, &cfg.schedule, out, resume, device)?)
}

/// Trains the sequential `model` per `cfg` into `out`, selecting on `selection` (from
/// [`split_instances`]), from the last finished epoch when `resume`.
pub fn train_sequential(
    model: &mut SeqRecommender,
    data: &SeqDataset,
    selection: Vec<SeqInstance>,
    cfg: &RunConfig,
    out: &Path,
    resume: bool,
    device: &Device,
) -> Result<TrainOutcome> {
    let evaluator = NextItem::new(data, cfg.train.protocol, selection, &cfg.seq.ks)?;
    Ok(mmkd_backbones::train(model, &evaluator, &cfg.train, &cfg.optim, &cfg.schedule, out, resume, device)?)
}

/// The popularity baseline on sequential data, evaluated at `cfg.seq.ks` and written into `out`.
pub fn popularity_sequential(data: &SeqDataset, cfg: &RunConfig, out: &Path, device: &Device) -> Result<TrainOutcome> {
    Ok(mmkd_backbones::seq::recommender::popularity_sequential(data, &cfg.seq.ks, out, device)?)
}

/// Loads the best checkpoint of the run folder `run` into `vars`.
pub fn load_best(vars: &VarMap, run: &Path) -> Result<()> {
    let best = run.join(BEST_FILE);
    let mut vars = vars.clone();
    vars.load(&best).with_context(|| format!("loading {}", best.display()))
}

/// The optimisers of `model`'s parameter groups per `cfg.optim`.
pub fn optimizer<M: mmkd_backbones::Backbone + ?Sized>(model: &M, cfg: &RunConfig) -> Result<Optimizers> {
    Ok(Optimizers::new(model, &cfg.optim)?)
}

/// One training epoch of `model` (0-based `epoch`) through the step loop.
pub fn fit_epoch<M: mmkd_backbones::Backbone + ?Sized>(
    model: &mut M,
    epoch: usize,
    rng: &mut ChaCha8Rng,
    device: &Device,
    optimizer: &mut Optimizers,
) -> Result<EpochStats> {
    let mut ctx = EpochCtx { epoch, rng, device };
    Ok(fit(model, &mut ctx, optimizer)?)
}

/// `prepare_eval`, then the full-ranking evaluation of `model` on `view`'s test split.
pub fn evaluate(model: &mut dyn Recommender, view: &Dataset, cfg: &RunConfig) -> Result<EvalResult> {
    model.prepare_eval()?;
    Ok(mmkd_backbones::train::evaluate_model(model, &view.train, &view.test, &cfg.eval)?)
}

/// The scores of `user` against every item (one per item) from a model whose checkpoint was just loaded.
pub fn user_scores(model: &mut dyn Recommender, user: u32) -> Result<Vec<f32>> {
    model.checkpoint_loaded()?;
    model.prepare_eval()?;
    let scores = model.score_users(&[user])?; // (1, n_items)
    Ok(scores.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

/// The next-item evaluation of a sequential model on `instances`.
pub fn seq_evaluate(model: &SeqRecommender, data: &SeqDataset, instances: &[SeqInstance]) -> Result<EvalResult> {
    Ok(model.evaluate(data, instances)?)
}

/// The next-item scores after the sequence `input` (item ids, 1-based): item `j + 1` at index `j`.
pub fn seq_scores(model: &SeqRecommender, input: &[u32], device: &Device) -> Result<Vec<f32>> {
    let batch = mmkd_backbones::seq::model::SeqBatch::new(&[input], None, device)?;
    let tables = model.tables()?;
    Ok(model.logits(&batch, &tables, None)?.flatten_all()?.to_vec1::<f32>()?)
}
