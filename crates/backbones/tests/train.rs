#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The trainer on the generated `tiny` preset (200 users, 300 items): learning, determinism, resume, early
//! stopping and the holdout protocol.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarMap;
use mmkd_backbones::cf::mf::{Mf, MfConfig};
use mmkd_backbones::cf::pop::Popularity;
use mmkd_backbones::train::{train, training_view, FullRanking, Protocol, SelectedOn, TrainConfig, TrainOutcome};
use mmkd_backbones::{Backbone, Dims, EpochCtx, Recommender, StepLosses};
use mmkd_data::{Dataset, Labels};
use mmkd_eval::EvalConfig;
use mmkd_features::{
    seeded_var_builder, FeatureExtractor, FeatureMatrix, FeatureStore, Normalization, Projection, ProjectionConfig,
};
use mmkd_nn::optim::{LrSchedule, OptimConfig};
use serde_json::Value;

/// The `tiny` preset (seed 0) as a data set, and its features standardised per column.
fn tiny() -> (Dataset, FeatureStore) {
    let preset = mmkd_synth::Preset::by_name("tiny").unwrap();
    let g = mmkd_synth::generate(&preset, 0).unwrap();
    let (n_users, n_items) = (g.stats.n_users, g.stats.n_items);
    let labels = Labels::from_values(&g.labels);
    let ds = Dataset::from_pairs("tiny", n_users, n_items, &g.train, &[], &g.test, Some(labels)).unwrap();
    let mut store = FeatureStore::new(n_items);
    let visual = FeatureMatrix::new(n_items, preset.visual_dim, g.visual.clone()).unwrap();
    store.insert("visual", visual, Path::new("visual")).unwrap();
    let text = FeatureMatrix::new(n_items, preset.text_dim, g.text.clone()).unwrap();
    store.insert("text", text, Path::new("text")).unwrap();
    store.normalize(Normalization::Standard);
    (ds, store)
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mmkd-train-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// What beats popularity on `tiny` (a sweep over lr, reg_weight and batch size; the defaults overfit).
const MF: MfConfig = MfConfig { embed_dim: 64, reg_weight: 0.2, batch_size: 64 };
const LR: f64 = 3e-3;

/// MF over `view`, with a (L2-normalised) projection of `features` when given, weights from `seed`.
fn mf(view: &Dataset, features: Option<&FeatureStore>, seed: u64) -> Mf {
    let dev = Device::Cpu;
    let vars = VarMap::new();
    let vb = seeded_var_builder(&vars, seed, DType::F32, &dev);
    let extractor = features.map(|f| {
        let pc = ProjectionConfig { out_dim: MF.embed_dim, l2_normalize: true, ..Default::default() };
        Box::new(Projection::new(vb.pp("extractor"), &pc, f, &dev).unwrap()) as Box<dyn FeatureExtractor>
    });
    let dims = Dims { n_users: view.n_users, n_items: view.n_items };
    Mf::new(vb, &vars, &MF, dims, &view.train, extractor).unwrap()
}

/// Trains `model` (built on `training_view(ds, cfg)`) with the full-ranking evaluation of that view.
fn try_run<M: Recommender + ?Sized>(
    model: &mut M,
    ds: &Dataset,
    cfg: &TrainConfig,
    optim: &OptimConfig,
    out: &Path,
    resume: bool,
) -> mmkd_backbones::Result<TrainOutcome> {
    let eval = EvalConfig::default();
    let view = training_view(ds, cfg);
    let evaluator = FullRanking::new(&view, cfg.protocol, &eval)?;
    train(model, &evaluator, cfg, optim, &LrSchedule::Constant, out, resume, &Device::Cpu)
}

fn run<M: Recommender + ?Sized>(
    model: &mut M,
    ds: &Dataset,
    cfg: &TrainConfig,
    out: &Path,
    resume: bool,
) -> TrainOutcome {
    let optim = OptimConfig { lr: LR, ..OptimConfig::default() };
    try_run(model, ds, cfg, &optim, out, resume).unwrap()
}

/// Test Recall@20 of popularity under the holdout split of `cfg`. `tag` keeps the output directories of tests
/// running at once apart.
fn popularity_recall(ds: &Dataset, cfg: &TrainConfig, tag: &str) -> f64 {
    let mut pop = Popularity::new(&training_view(ds, cfg), &Device::Cpu).unwrap();
    let cfg = TrainConfig { epochs: 1, ..cfg.clone() };
    run(&mut pop, ds, &cfg, &temp_dir(&format!("pop-{tag}-{}", cfg.seed)), false).test["recall@20"]
}

/// A JSON file without its wall-clock fields.
fn json_without_secs(path: &Path) -> Value {
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("secs");
    v
}

/// The lines of `metrics.jsonl` without their wall-clock fields (`secs`, `train_secs`, `eval_secs`).
fn metrics_without_secs(dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().retain(|k, _| !k.ends_with("secs"));
            v
        })
        .collect()
}

fn learns(with_features: bool, tag: &str) {
    let (ds, store) = tiny();
    let cfg = TrainConfig { epochs: 30, patience: 10, ..TrainConfig::default() };
    let pop = popularity_recall(&ds, &cfg, tag);
    let dir = temp_dir(tag);
    let mut model = mf(&training_view(&ds, &cfg), with_features.then_some(&store), 0);
    let out = run(&mut model, &ds, &cfg, &dir, false);
    let recall = out.test["recall@20"];
    // Measured: popularity 0.204; MF 0.262 without and 0.244 with the projected features.
    assert!(recall > 1.1 * pop, "MF {recall:.4} does not beat popularity {pop:.4}: {out:?}");
    assert_eq!((out.model.as_str(), out.protocol, out.selected_on), ("mf", Protocol::Holdout, SelectedOn::Valid));
    let metrics = metrics_without_secs(&dir);
    assert_eq!(metrics.len(), out.epochs_run);
    let first = metrics[0]["losses"]["bpr"].as_f64().unwrap();
    let last = metrics[out.epochs_run - 1]["losses"]["bpr"].as_f64().unwrap();
    assert!(last < first, "BPR loss did not fall: {first} → {last}");
    let best = &metrics[out.best_epoch - 1];
    assert_eq!(best["criterion"].as_f64().unwrap(), best["valid"]["recall@20"].as_f64().unwrap());
    // The reported validation numbers are those of the restored best checkpoint.
    assert_eq!(best["valid"]["recall@20"].as_f64().unwrap(), out.valid["recall@20"]);
    // serde_json parses floats to within one ulp, so read-backs are compared with a tolerance.
    let test = out.test_eval(&dir).unwrap();
    assert!(test.summary.iter().all(|(k, v)| (v - out.test[k]).abs() < 1e-12) && test.summary.len() == out.test.len());
    assert_eq!(test.per_user["recall@20"].len(), out.n_test_users);
    let read = TrainOutcome::read(&dir).unwrap();
    assert_eq!((read.best_epoch, read.epochs_run, &read.model), (out.best_epoch, out.epochs_run, &out.model));
    assert!((read.test["ndcg@20"] - out.test["ndcg@20"]).abs() < 1e-12);
}

#[test]
fn mf_beats_popularity() {
    learns(false, "learn-id");
}

#[test]
fn mf_with_projected_features_beats_popularity() {
    learns(true, "learn-features");
}

#[test]
fn one_seed_gives_identical_runs() {
    let (ds, _) = tiny();
    let cfg = TrainConfig { epochs: 3, ..TrainConfig::default() };
    let dirs = [temp_dir("det-a"), temp_dir("det-b"), temp_dir("det-c")];
    for (dir, seed) in dirs.iter().zip([5, 5, 6]) {
        let cfg = TrainConfig { seed, ..cfg.clone() };
        run(&mut mf(&training_view(&ds, &cfg), None, seed), &ds, &cfg, dir, false);
    }
    let [a, b, c] = &dirs;
    assert_eq!(json_without_secs(&a.join("result.json")), json_without_secs(&b.join("result.json")));
    assert_eq!(metrics_without_secs(a), metrics_without_secs(b));
    for file in ["best.safetensors", "checkpoint.safetensors", "test_per_user.json"] {
        assert_eq!(std::fs::read(a.join(file)).unwrap(), std::fs::read(b.join(file)).unwrap(), "{file}");
    }
    // Another seed gives other losses, so the comparison above can fail.
    assert_ne!(metrics_without_secs(a), metrics_without_secs(c));
}

#[test]
fn resume_ends_where_an_uninterrupted_run_ends() {
    let (ds, store) = tiny();
    let cfg = TrainConfig { epochs: 6, patience: 3, ..TrainConfig::default() };
    let view = training_view(&ds, &cfg);
    let whole = temp_dir("resume-whole");
    run(&mut mf(&view, Some(&store), 0), &ds, &cfg, &whole, false);

    let parts = temp_dir("resume-parts");
    let first = TrainConfig { epochs: 2, ..cfg.clone() };
    run(&mut mf(&view, Some(&store), 0), &ds, &first, &parts, false);
    // A torn line after the checkpoint, as a crash while logging would leave, is dropped on resume.
    let metrics = parts.join("metrics.jsonl");
    std::fs::write(&metrics, std::fs::read_to_string(&metrics).unwrap() + "{\"epoch\": 3, \"lo").unwrap();
    // Another initialisation: the resumed run must take every weight from the checkpoint.
    let out = run(&mut mf(&view, Some(&store), 99), &ds, &cfg, &parts, true);
    assert_eq!(out.epochs_run, TrainOutcome::read(&whole).unwrap().epochs_run);
    assert_eq!(json_without_secs(&whole.join("result.json")), json_without_secs(&parts.join("result.json")));
    assert_eq!(metrics_without_secs(&whole), metrics_without_secs(&parts));
    for file in ["best.safetensors", "checkpoint.safetensors"] {
        assert_eq!(std::fs::read(whole.join(file)).unwrap(), std::fs::read(parts.join(file)).unwrap(), "{file}");
    }

    // A resume under another seed, or for another model, is refused.
    let other_seed = TrainConfig { seed: 1, ..cfg.clone() };
    let optim = OptimConfig::default();
    let err = try_run(&mut mf(&view, None, 0), &ds, &other_seed, &optim, &parts, true);
    assert!(err.unwrap_err().to_string().contains("seed"));
    let mut pop = Popularity::new(&view, &Device::Cpu).unwrap();
    let err = try_run(&mut pop, &ds, &cfg, &optim, &parts, true);
    assert!(err.unwrap_err().to_string().contains("model"));
}

#[test]
fn early_stopping_stops_after_patience_evaluations_without_improvement() {
    let (ds, _) = tiny();
    let cfg = TrainConfig { epochs: 10, patience: 2, ..TrainConfig::default() };
    let mut pop = Popularity::new(&training_view(&ds, &cfg), &Device::Cpu).unwrap();
    let dir = temp_dir("early");
    // Popularity never changes: epoch 1 sets the best, epochs 2 and 3 do not improve on it.
    let out = run(&mut pop, &ds, &cfg, &dir, false);
    assert_eq!((out.best_epoch, out.epochs_run, out.stopped_early), (1, 3, true));
    let improved: Vec<bool> = metrics_without_secs(&dir).iter().map(|m| m["improved"].as_bool().unwrap()).collect();
    assert_eq!(improved, [true, false, false]);
    // Not before min_epochs; and every third epoch evaluated, patience counts evaluations.
    let late = TrainConfig { min_epochs: 5, ..cfg.clone() };
    assert_eq!(run(&mut pop, &ds, &late, &dir, false).epochs_run, 5);
    let sparse = TrainConfig { eval_every: 3, ..cfg };
    let out = run(&mut pop, &ds, &sparse, &dir, false);
    assert_eq!((out.best_epoch, out.epochs_run), (3, 9));
}

#[test]
fn holdout_selection_never_sees_the_test_split() {
    let (ds, _) = tiny();
    // The same train split with every user's test items handed to the next user.
    let n = ds.n_users as u32;
    let shifted: Vec<(u32, u32)> = ds.test.pairs().into_iter().map(|(u, i)| ((u + 1) % n, i)).collect();
    let other = Dataset::from_pairs("tiny", ds.n_users, ds.n_items, &ds.train.pairs(), &[], &shifted, None).unwrap();
    for protocol in [Protocol::Holdout, Protocol::Reference] {
        let cfg = TrainConfig { epochs: 6, patience: 2, protocol, ..TrainConfig::default() };
        let (a, b) = (temp_dir("holdout-a"), temp_dir("holdout-b"));
        let out_a = run(&mut mf(&training_view(&ds, &cfg), None, 0), &ds, &cfg, &a, false);
        let out_b = run(&mut mf(&training_view(&other, &cfg), None, 0), &other, &cfg, &b, false);
        assert_ne!(out_a.test, out_b.test);
        if protocol == Protocol::Holdout {
            // Every number that selects the model is the same, whatever the test split holds.
            assert_eq!(metrics_without_secs(&a), metrics_without_secs(&b));
            assert_eq!(
                (out_a.best_epoch, out_a.epochs_run, &out_a.valid),
                (out_b.best_epoch, out_b.epochs_run, &out_b.valid)
            );
        } else {
            // The reference protocol selects on the test split, so the same check fails there.
            assert_eq!(out_a.selected_on, SelectedOn::Test);
            assert_eq!(out_a.valid, out_a.test);
            assert_ne!(metrics_without_secs(&a), metrics_without_secs(&b));
        }
    }
}

/// MF whose epoch `at` (from 1) has a NaN loss at its second step, as a diverging model does.
struct NanAt {
    inner: Mf,
    at: usize,
    epoch: usize,
}

impl Backbone for NanAt {
    fn name(&self) -> &'static str {
        "mf"
    }
    fn begin_epoch(&mut self, ctx: &mut EpochCtx<'_>) -> mmkd_backbones::Result<usize> {
        self.epoch = ctx.epoch;
        self.inner.begin_epoch(ctx)
    }
    fn step_losses(&mut self, step: usize, rng: &mut rand_chacha::ChaCha8Rng) -> mmkd_backbones::Result<StepLosses> {
        let mut losses = self.inner.step_losses(step, rng)?;
        if self.epoch + 1 == self.at && step == 1 {
            losses.total = (losses.total * f64::NAN)?;
        }
        Ok(losses)
    }
    fn prepare_eval(&mut self) -> mmkd_backbones::Result<()> {
        self.inner.prepare_eval()
    }
    fn vars(&self) -> &VarMap {
        self.inner.vars()
    }
}

impl Recommender for NanAt {
    fn score_users(&self, users: &[u32]) -> mmkd_backbones::Result<candle_core::Tensor> {
        self.inner.score_users(users)
    }
}

#[test]
fn a_non_finite_loss_stops_training_and_reports_the_best_epoch_before_it() {
    let (ds, _) = tiny();
    let cfg = TrainConfig { epochs: 10, ..TrainConfig::default() };
    let view = training_view(&ds, &cfg);
    let dir = temp_dir("diverged");
    let mut model = NanAt { inner: mf(&view, None, 0), at: 3, epoch: 0 };
    let out = run(&mut model, &ds, &cfg, &dir, false);
    assert_eq!((out.diverged_at, out.epochs_run, out.stopped_early), (Some(3), 3, true));
    assert!(out.best_epoch < 3, "{}", out.best_epoch);
    assert!(out.test["recall@20"].is_finite());
    let lines = metrics_without_secs(&dir);
    assert_eq!(lines[2]["diverged"], Value::Bool(true));
    assert!(lines[2]["losses"]["total"].is_null(), "{}", lines[2]); // NaN is written as null
                                                                    // Diverging before any evaluation is an error that says so.
    let mut model = NanAt { inner: mf(&view, None, 0), at: 1, epoch: 0 };
    let optim = OptimConfig { lr: LR, ..OptimConfig::default() };
    let err = try_run(&mut model, &ds, &cfg, &optim, &dir, false).unwrap_err();
    assert!(err.to_string().contains("epoch 1"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn reference_protocol_reports_the_best_epochs_evaluation_as_logged() {
    let (ds, _) = tiny();
    let cfg = TrainConfig { epochs: 4, protocol: Protocol::Reference, ..TrainConfig::default() };
    let view = training_view(&ds, &cfg);
    let dir = temp_dir("reference");
    let mut model = mf(&view, None, 0);
    let out = run(&mut model, &ds, &cfg, &dir, false);
    assert_eq!(out.selected_on, SelectedOn::Test);
    let lines = metrics_without_secs(&dir);
    let logged = &lines[out.best_epoch - 1]["valid"];
    for (k, v) in &out.test {
        let want = logged[k].as_f64().unwrap();
        assert!((v - want).abs() <= 1e-12 * want.abs().max(1.0), "{k}: {v} vs {want}");
    }
    assert_eq!(out.valid, out.test);
    let _ = std::fs::remove_dir_all(&dir);
}
