//! Every call into the trainers of `mmkd-backbones` (`train`, `seq_train`) and into the models' training and
//! scoring hooks, in one module: when the trainer's API changes, this is the one place to adapt.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::VarMap;
use mmkd_backbones::optim::AnyOptimizer;
use mmkd_backbones::{Backbone, EpochCtx, EpochStats};
use mmkd_data::sequential::{SeqDataset, SeqInstance};
use mmkd_data::Dataset;
use mmkd_eval::EvalResult;
use rand_chacha::ChaCha8Rng;

pub use mmkd_backbones::seq_train::{ModalityInit, SeqAux, SeqConfig, SeqRecommender};
pub use mmkd_backbones::train::{
    training_view, TrainConfig, TrainOutcome, BEST_FILE, METRICS_FILE, RESULT_FILE, STATE_FILE, TEST_PER_USER_FILE,
};

use crate::config::RunConfig;
use crate::error::{Context, Result};

/// Trains `model` on `dataset` per `cfg` into `out` (checkpoints, metrics, `result.json`), from the last
/// finished epoch when `resume`.
pub fn train(
    model: &mut dyn Backbone,
    dataset: &Dataset,
    cfg: &RunConfig,
    out: &Path,
    resume: bool,
    device: &Device,
) -> Result<TrainOutcome> {
    Ok(mmkd_backbones::train(model, dataset, &cfg.train, &cfg.optim, &cfg.schedule, &cfg.eval, out, resume, device)?)
}

/// Trains the sequential `model` on `data` per `cfg` into `out`.
pub fn train_sequential(
    model: &SeqRecommender,
    data: &SeqDataset,
    cfg: &RunConfig,
    out: &Path,
) -> Result<TrainOutcome> {
    Ok(mmkd_backbones::seq_train::train_sequential(model, data, &cfg.train, &cfg.optim, &cfg.schedule, out)?)
}

/// The popularity baseline on sequential data, evaluated at `cfg.seq.ks` and written into `out`.
pub fn popularity_sequential(data: &SeqDataset, cfg: &RunConfig, out: &Path, device: &Device) -> Result<TrainOutcome> {
    Ok(mmkd_backbones::seq_train::popularity_sequential(data, &cfg.seq.ks, out, device)?)
}

/// Loads the best checkpoint of the run folder `run` into `vars`.
pub fn load_best(vars: &VarMap, run: &Path) -> Result<()> {
    let best = run.join(BEST_FILE);
    let mut vars = vars.clone();
    vars.load(&best).with_context(|| format!("loading {}", best.display()))
}

/// The optimiser of `model` per `cfg.optim`, over its variables in name order.
pub fn optimizer(model: &dyn Backbone, cfg: &RunConfig) -> Result<AnyOptimizer> {
    let vars = mmkd_backbones::optim::sorted_vars(model.vars());
    Ok(mmkd_backbones::optim::build(vars, &cfg.optim)?)
}

/// One training epoch of `model` (0-based `epoch`) on the training view `view`.
pub fn fit_epoch(
    model: &mut dyn Backbone,
    view: &Dataset,
    epoch: usize,
    rng: &mut ChaCha8Rng,
    device: &Device,
    optimizer: &mut AnyOptimizer,
) -> Result<EpochStats> {
    let mut ctx = EpochCtx { epoch, dataset: view, rng, device, optimizer };
    Ok(model.fit_epoch(&mut ctx)?)
}

/// `prepare_eval`, then the full-ranking evaluation of `model` on `view`'s test split.
pub fn evaluate(model: &mut dyn Backbone, view: &Dataset, cfg: &RunConfig) -> Result<EvalResult> {
    model.prepare_eval()?;
    Ok(mmkd_backbones::train::evaluate_model(model, &view.train, &view.test, &cfg.eval)?)
}

/// The scores of `user` against every item (one per item) from a model whose checkpoint was just loaded.
pub fn user_scores(model: &mut dyn Backbone, user: u32) -> Result<Vec<f32>> {
    model.checkpoint_loaded()?;
    model.prepare_eval()?;
    let scores = model.score_users(&[user])?; // (1, n_items)
    Ok(scores.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

/// The optimisers of a sequential model: the rest, and the modality tables' when they learn at their own
/// rate.
pub fn seq_optimizers(model: &SeqRecommender, cfg: &RunConfig) -> Result<(AnyOptimizer, Option<AnyOptimizer>)> {
    Ok(model.optimizers(&cfg.optim)?)
}

/// One training epoch of a sequential model over `instances`; returns the mean of each named loss.
pub fn seq_fit_epoch(
    model: &SeqRecommender,
    data: &SeqDataset,
    instances: &[SeqInstance],
    rng: &mut ChaCha8Rng,
    opt_rest: &mut AnyOptimizer,
    opt_modality: Option<&mut AnyOptimizer>,
) -> Result<BTreeMap<String, f64>> {
    Ok(model.fit_epoch(data, instances, rng, opt_rest, opt_modality)?)
}

/// The next-item evaluation of a sequential model on `instances`.
pub fn seq_evaluate(model: &SeqRecommender, data: &SeqDataset, instances: &[SeqInstance]) -> Result<EvalResult> {
    Ok(model.evaluate(data, instances)?)
}

/// The next-item scores after the sequence `input` (item ids, 1-based): item `j + 1` at index `j`.
pub fn seq_scores(model: &SeqRecommender, input: &[u32], device: &Device) -> Result<Vec<f32>> {
    let batch = mmkd_backbones::seq_model::SeqBatch::new(&[input], None, device)?;
    let tables = model.tables()?;
    Ok(model.logits(&batch, &tables, None)?.flatten_all()?.to_vec1::<f32>()?)
}
