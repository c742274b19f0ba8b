//! The four CF baselines (spec `cf-baselines.md`): the spec's test vectors T1–T7, NGCF's and DGCF's
//! propagation against dense-matrix references (values and gradients), the loss functions against hand and
//! brute-force numbers, CML's clipping, training on the `tiny` planted preset that beats popularity, and
//! determinism.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// The spec's test vectors are printed to five decimals (0.70711 is 1/√2, 0.693147 is ln 2): kept as printed.
#![allow(clippy::approx_constant)]

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use mmkd_backbones::cf::cml::{metric_loss, Cml, CmlConfig, MetricLossForm};
use mmkd_backbones::cf::dgcf::{
    cor_loss, distance_correlation, route, CorPairs, Dgcf, DgcfConfig, DgcfGraph, LayerPooling,
};
use mmkd_backbones::cf::neumf::{bce_with_logits, NeuMf, NeuMfConfig};
use mmkd_backbones::cf::ngcf::{
    edge_dropout, ngcf_layer, row_normalized_with_self_loops, Ngcf, NgcfConfig, NgcfLayer, NgcfVariant,
};
use mmkd_backbones::common::{sample_epoch, Sampler};
use mmkd_backbones::loss::{clip_rows, covariance_loss, emb_reg, CovForm, RegForm};
use mmkd_backbones::{fit_epoch, Backbone, Dims, EpochCtx, EpochStats, Optimizers, Recommender};
use mmkd_data::{Csr, Dataset};
use mmkd_eval::{evaluate, EvalConfig};
use mmkd_features::seeded_var_builder;
use mmkd_features::testing::grad_check;
use mmkd_nn::graph::{propagate_mean, sym_normalized};
use mmkd_nn::optim::{self, OptimConfig};
use rand::Rng;

const CPU: Device = Device::Cpu;
/// The spec's tolerance for its test vectors.
const TOL: f64 = 1e-4;

// ---------------------------------------------------------------------------------------------------------
// Helpers.

fn tensor(rows: &[&[f64]]) -> Tensor {
    let d = rows[0].len();
    let flat: Vec<f64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_vec(flat, (rows.len(), d), &CPU).unwrap()
}

fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

fn rows(t: &Tensor) -> Vec<Vec<f64>> {
    t.to_dtype(DType::F64).unwrap().to_vec2().unwrap()
}

fn assert_close(got: &[Vec<f64>], want: &[&[f64]], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: row count");
    for (r, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "{what}: width of row {r}");
        for (a, b) in g.iter().zip(w.iter()) {
            assert!((a - b).abs() < tol, "{what}, row {r}: got {g:?}, want {w:?}");
        }
    }
}

/// Largest absolute entry-wise difference.
fn max_gap(a: &Tensor, b: &Tensor) -> f64 {
    let diff: Vec<f64> = (a - b).unwrap().to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    diff.iter().fold(0.0, |m, d| if d.is_nan() { f64::NAN } else { m.max(d.abs()) })
}

/// Overwrites the variable `name` of `varmap` (keeps its dtype).
fn set(varmap: &VarMap, name: &str, value: &[&[f64]]) {
    let data = varmap.data().lock().unwrap();
    let var = data.get(name).unwrap_or_else(|| panic!("no variable {name}"));
    var.set(&tensor(value).reshape(var.shape()).unwrap().to_dtype(var.dtype()).unwrap()).unwrap();
}

fn var(varmap: &VarMap, name: &str) -> Var {
    varmap.data().lock().unwrap().get(name).unwrap_or_else(|| panic!("no variable {name}")).clone()
}

/// Every variable of `varmap` redrawn from U(−scale, scale) (f64 stream `seed`).
fn randomize(varmap: &VarMap, seed: u64, scale: f64) {
    let mut rng = mmkd_data::stream(seed, "randomize");
    for (_, v) in optim::sorted_named_vars(varmap) {
        let values: Vec<f64> = (0..v.elem_count()).map(|_| scale * (2.0 * rng.random::<f64>() - 1.0)).collect();
        v.set(&Tensor::from_vec(values, v.shape(), &CPU).unwrap().to_dtype(v.dtype()).unwrap()).unwrap();
    }
}

/// The spec's toy graph: U = 2, I = 3, R = [[1,1,0],[0,1,1]].
/// A 2 × 4 train matrix for CML's hand-computed cases.
fn toy_cml_train() -> Csr {
    Csr::from_pairs(2, 4, &[(0, 0), (1, 1)]).0
}

fn toy_train() -> Csr {
    Csr::from_pairs(2, 3, &[(0, 0), (0, 1), (1, 1), (1, 2)]).0
}

/// A random graph of `n_users × n_items` in which the last user and the last item have no edge.
fn random_train(n_users: usize, n_items: usize, n_draws: usize, seed: u64) -> Csr {
    let mut rng = mmkd_data::stream(seed, "graph");
    let pairs: Vec<(u32, u32)> = (0..n_draws)
        .map(|_| (rng.random_range(0..n_users as u32 - 1), rng.random_range(0..n_items as u32 - 1)))
        .collect();
    Csr::from_pairs(n_users, n_items, &pairs).0
}

/// Dense `(N, N)` bipartite adjacency (users first) of `train`, f64.
fn dense_adjacency(train: &Csr) -> Vec<Vec<f64>> {
    let (u_n, n) = (train.n_rows(), train.n_rows() + train.n_cols());
    let mut a = vec![vec![0.0; n]; n];
    for (u, i) in train.pairs() {
        a[u as usize][u_n + i as usize] = 1.0;
        a[u_n + i as usize][u as usize] = 1.0;
    }
    a
}

fn dense_tensor(a: &[Vec<f64>]) -> Tensor {
    let refs: Vec<&[f64]> = a.iter().map(Vec::as_slice).collect();
    tensor(&refs)
}

/// `D^{-1/2} A D^{-1/2}` with RecBole's `deg + 1e-7`, by hand.
fn dense_sym(train: &Csr) -> Tensor {
    let a = dense_adjacency(train);
    let deg: Vec<f64> = a.iter().map(|r| r.iter().sum::<f64>() + 1e-7).collect();
    let l: Vec<Vec<f64>> = a
        .iter()
        .enumerate()
        .map(|(k, r)| r.iter().enumerate().map(|(j, &v)| v / (deg[k] * deg[j]).sqrt()).collect())
        .collect();
    dense_tensor(&l)
}

/// `D̃^{-1}(A + I)`, D̃ = deg + 1, by hand.
fn dense_row_self(train: &Csr) -> Tensor {
    let mut a = dense_adjacency(train);
    for (k, r) in a.iter_mut().enumerate() {
        r[k] += 1.0;
        let s: f64 = r.iter().sum();
        r.iter_mut().for_each(|v| *v /= s);
    }
    dense_tensor(&a)
}

fn f64_builder(varmap: &VarMap, seed: u64) -> candle_nn::VarBuilder<'static> {
    seeded_var_builder(varmap, seed, DType::F64, &CPU)
}

/// The generated `tiny` preset (200 users, 300 items, ≈2,400 train pairs) and popularity's Recall@20 on it.
fn tiny() -> (Dataset, f64) {
    let p = mmkd_synth::Preset::by_name("tiny").unwrap();
    let g = mmkd_synth::generate(&p, 11).unwrap();
    let (n_users, n_items) = (g.stats.n_users, g.stats.n_items);
    let ds = Dataset::from_pairs("tiny", n_users, n_items, &g.train, &[], &g.test, None).unwrap();
    let pop = mmkd_eval::baselines::popularity(&ds.train, &ds.test, &EvalConfig::default(), &CPU)
        .unwrap()
        .get(mmkd_eval::Metric::Recall.at(20))
        .unwrap();
    (ds, pop)
}

fn tiny_dims(ds: &Dataset) -> Dims {
    Dims { n_users: ds.n_users, n_items: ds.n_items }
}

/// `epochs` epochs of Adam at `lr` with the batch stream of `seed`.
fn train(model: &mut dyn Recommender, _ds: &Dataset, lr: f64, seed: u64, epochs: usize) -> Vec<EpochStats> {
    let mut opt = Optimizers::new(&*model, &OptimConfig { lr, ..Default::default() }).unwrap();
    let mut rng = mmkd_data::stream(seed, "batches");
    (0..epochs)
        .map(|epoch| {
            let mut ctx = EpochCtx { epoch, rng: &mut rng, device: &CPU };
            let started = std::time::Instant::now();
            let stats = fit_epoch(model, &mut ctx, &mut opt).unwrap();
            eprintln!("{} epoch {epoch}: {:.3} s, {:?}", model.name(), started.elapsed().as_secs_f64(), stats.losses);
            stats
        })
        .collect()
}

fn recall_at_20(model: &mut dyn Recommender, ds: &Dataset) -> f64 {
    model.prepare_eval().unwrap();
    let score = |users: &[u32]| model.score_users(users).map_err(|e| candle_core::Error::Msg(e.to_string()));
    evaluate(score, &ds.train, &ds.test, &EvalConfig::default()).unwrap().get(mmkd_eval::Metric::Recall.at(20)).unwrap()
}

/// Trains `model` and asserts that the loss falls and Recall@20 beats popularity by a margin.
fn assert_beats_popularity(model: &mut dyn Recommender, ds: &Dataset, pop: f64, lr: f64, epochs: usize) -> f64 {
    let started = std::time::Instant::now();
    let before = recall_at_20(model, ds);
    let stats = train(model, ds, lr, 3, epochs);
    let after = recall_at_20(model, ds);
    let name = model.name();
    eprintln!(
        "{name}: Recall@20 {before:.4} → {after:.4}, popularity {pop:.4} ({:.2} s)",
        started.elapsed().as_secs_f64()
    );
    let (first, last) = (stats[0].losses["total"], stats[epochs - 1].losses["total"]);
    assert!(last < first, "{name}: the loss did not fall ({first} → {last})");
    assert!(after > pop + 0.02, "{name}: Recall@20 {after:.4} does not beat popularity {pop:.4}");
    after
}

// ---------------------------------------------------------------------------------------------------------
// Sampling and shared losses.

#[test]
fn samplers_follow_the_spec_schemes() {
    let train = random_train(20, 30, 150, 1);
    let nnz = train.nnz();
    let mut rng = mmkd_data::stream(2, "sampling");
    let check_negatives = |b: &mmkd_backbones::common::TripleBatch, n_neg: usize| {
        assert_eq!(b.negatives.len(), b.len() * n_neg);
        for (k, &u) in b.users.iter().enumerate() {
            assert!(train.contains(u as usize, b.positives[k]));
            for &j in &b.negatives[k * n_neg..(k + 1) * n_neg] {
                assert!(!train.contains(u as usize, j), "negative {j} is a positive of {u}");
            }
        }
    };
    // S-int: every pair exactly once, the last batch partial.
    let batches = sample_epoch(Sampler::Int, &train, 16, 2, &mut rng).unwrap();
    assert_eq!(batches.len(), nnz.div_ceil(16));
    let mut seen: Vec<(u32, u32)> =
        batches.iter().flat_map(|b| b.users.iter().copied().zip(b.positives.iter().copied())).collect();
    seen.sort_unstable();
    assert_eq!(seen, train.pairs());
    batches.iter().for_each(|b| check_negatives(b, 2));
    // S-pair: full batches only.
    let batches = sample_epoch(Sampler::Pair, &train, 16, 3, &mut rng).unwrap();
    assert_eq!(batches.len(), nnz / 16);
    assert!(batches.iter().all(|b| b.len() == 16));
    batches.iter().for_each(|b| check_negatives(b, 3));
    assert!(sample_epoch(Sampler::Pair, &train, nnz + 1, 1, &mut rng).is_err());
    // S-user: ⌊|R|/B⌋ + 1 batches of B distinct users, each with a train item.
    let batches = sample_epoch(Sampler::User, &train, 8, 1, &mut rng).unwrap();
    assert_eq!(batches.len(), nnz / 8 + 1);
    for b in &batches {
        let mut users = b.users.clone();
        users.sort_unstable();
        users.dedup();
        assert_eq!(users.len(), 8);
        check_negatives(b, 1);
    }
    // More users asked than exist: drawn with replacement.
    let batches = sample_epoch(Sampler::User, &train, 64, 1, &mut rng).unwrap();
    assert!(batches.iter().all(|b| b.len() == 64));
}

#[test]
fn bpr_and_regularisers_match_hand_values() {
    // T7: softplus(−0) = ln 2, softplus(−2) = 0.126928.
    let diff = Tensor::new(&[0.0f64, 2.0], &CPU).unwrap();
    let bpr = scalar(&mmkd_backbones::loss::bpr_loss(&diff).unwrap());
    assert!((bpr - (0.693147 + 0.126928) / 2.0).abs() < 1e-6, "{bpr}");
    // ½(9 + 16 + 1) / 2 and (5 + 1) / 2.
    let a = tensor(&[&[3.0, 4.0], &[0.0, 0.0]]);
    let b = tensor(&[&[1.0, 0.0], &[0.0, 0.0]]);
    assert!((scalar(&emb_reg(&[&a, &b], RegForm::HalfSq, 2).unwrap()) - 6.5).abs() < 1e-12);
    assert!((scalar(&emb_reg(&[&a, &b], RegForm::Norm, 2).unwrap()) - 3.0).abs() < 1e-12);
}

// ---------------------------------------------------------------------------------------------------------
// NeuMF.

/// T6's model: one user, one item, d_g = d_m = 2, tower 4 → 2, no dropout.
fn neumf_t6() -> NeuMf {
    let cfg =
        NeuMfConfig { mf_embed_dim: 2, mlp_embed_dim: 2, mlp_hidden: vec![2], dropout: 0.0, ..Default::default() };
    let varmap = VarMap::new();
    let one = Csr::from_pairs(1, 1, &[(0, 0)]).0;
    let model = NeuMf::new(f64_builder(&varmap, 1), &varmap, &cfg, Dims { n_users: 1, n_items: 1 }, &one).unwrap();
    set(&varmap, "user_mf_emb.weight", &[&[0.1, -0.2]]);
    set(&varmap, "item_mf_emb.weight", &[&[0.3, 0.4]]);
    set(&varmap, "user_mlp_emb.weight", &[&[0.5, 0.1]]);
    set(&varmap, "item_mlp_emb.weight", &[&[-0.2, 0.3]]);
    // The spec's W_1 is in × out with rows (0.1, 0.2), (−0.3, 0.1), (0.2, 0), (0.1, −0.4); candle stores out × in.
    set(&varmap, "mlp.0.weight", &[&[0.1, -0.3, 0.2, 0.1], &[0.2, 0.1, 0.0, -0.4]]);
    set(&varmap, "mlp.0.bias", &[&[0.05, -0.05]]);
    set(&varmap, "predict.weight", &[&[1.0, -1.0, 0.5, 2.0]]);
    set(&varmap, "predict.bias", &[&[0.1]]);
    model
}

#[test]
fn neumf_forward_and_log_loss_match_t6() {
    let model = neumf_t6();
    let logit = scalar(&model.logits(&[0], &[0], None).unwrap().squeeze(0).unwrap());
    assert!((logit - 0.24).abs() < TOL, "{logit}");
    let score = rows(&model.score_users(&[0]).unwrap());
    assert!((score[0][0] - 0.24).abs() < TOL);
    let l = Tensor::new(&[0.24f64], &CPU).unwrap();
    let bce = |y: f64| scalar(&bce_with_logits(&l, &Tensor::new(&[y], &CPU).unwrap()).unwrap());
    assert!((bce(1.0) - 0.580330).abs() < TOL, "{}", bce(1.0));
    assert!((bce(0.0) - 0.820330).abs() < TOL, "{}", bce(0.0));
    // One positive and its negative (the same item here) give the mean of both terms.
    let mut rng = mmkd_data::stream(0, "t6");
    let batch = scalar(&model.batch_loss(&[0], &[0], &[0], &mut rng).unwrap());
    assert!((batch - (0.580330 + 0.820330) / 2.0).abs() < TOL, "{batch}");
    // Large logits stay finite; shapes are checked; the gradient matches finite differences.
    let big = Tensor::new(&[80.0f64, -80.0], &CPU).unwrap();
    let labels = Tensor::new(&[0.0f64, 1.0], &CPU).unwrap();
    assert!((scalar(&bce_with_logits(&big, &labels).unwrap()) - 80.0).abs() < 1e-9);
    assert!(bce_with_logits(&big, &Tensor::new(&[1.0f64], &CPU).unwrap()).is_err());
    let x = Tensor::new(&[0.3f64, -1.2, 2.5, 0.0], &CPU).unwrap();
    let y = Tensor::new(&[1.0f64, 0.0, 0.0, 1.0], &CPU).unwrap();
    assert!(grad_check(|l| bce_with_logits(l, &y), &x, 1e-6) < 1e-7);
}

#[test]
fn neumf_full_ranking_equals_pairwise_logits() {
    let cfg = NeuMfConfig { mf_embed_dim: 3, mlp_embed_dim: 4, mlp_hidden: vec![6, 5, 3], ..Default::default() };
    let varmap = VarMap::new();
    let dims = Dims { n_users: 5, n_items: 7 };
    let model = NeuMf::new(f64_builder(&varmap, 2), &varmap, &cfg, dims, &random_train(5, 7, 12, 3)).unwrap();
    randomize(&varmap, 3, 1.0);
    let users = [4u32, 0, 2];
    let scores = rows(&model.score_users(&users).unwrap());
    for (r, &u) in users.iter().enumerate() {
        let items: Vec<u32> = (0..7).collect();
        let logits: Vec<f64> = model.logits(&[u; 7], &items, None).unwrap().to_vec1().unwrap();
        for (a, b) in scores[r].iter().zip(&logits) {
            assert!((a - b).abs() < 1e-5, "user {u}: {:?} vs {logits:?}", scores[r]);
        }
    }
    // Training-mode logits use dropout, so they differ; evaluation-mode ones do not.
    let mut rng = mmkd_data::stream(4, "dropout");
    let train_mode: Vec<f64> =
        model.logits(&[0; 7], &[0, 1, 2, 3, 4, 5, 6], Some(&mut rng)).unwrap().to_vec1().unwrap();
    let eval_mode: Vec<f64> = model.logits(&[0; 7], &[0, 1, 2, 3, 4, 5, 6], None).unwrap().to_vec1().unwrap();
    assert_ne!(train_mode, eval_mode);
    assert!(model.score_users(&[5]).is_err());
}

// ---------------------------------------------------------------------------------------------------------
// CML.

/// T4's user, positive and three negatives.
fn cml_t4() -> (Tensor, Tensor, Tensor) {
    let u = tensor(&[&[0.6, 0.0]]);
    let p = tensor(&[&[0.0, 0.8]]);
    let n = tensor(&[&[0.6, 0.5], &[-0.6, 0.0], &[0.6, -0.8]]).reshape((1, 3, 2)).unwrap();
    (u, p, n)
}

#[test]
fn cml_metric_loss_matches_t4() {
    let (u, p, n) = cml_t4();
    let loss = |rank: bool, form| scalar(&metric_loss(&u, &p, &n, 0.5, 10, rank, form).unwrap());
    // Closest negative: max(0, 0.5 + 1.0 − 0.25) = 1.25; M = 3, rank = 10, weight ln 11.
    assert!((loss(true, MetricLossForm::Official) - 2.997369).abs() < TOL);
    assert!((loss(true, MetricLossForm::Paper) - 5.203432).abs() < TOL);
    assert!((loss(false, MetricLossForm::Official) - 1.25).abs() < TOL);
    assert!((loss(false, MetricLossForm::Paper) - (1.25 + 0.06 + 0.86)).abs() < TOL);
    // A second row with no impostor adds nothing; the batch is summed, not averaged.
    let u2 = tensor(&[&[0.6, 0.0], &[0.0, 0.0]]);
    let p2 = tensor(&[&[0.0, 0.8], &[0.0, 0.0]]);
    let n2 = tensor(&[&[0.6, 0.5], &[-0.6, 0.0], &[0.6, -0.8], &[3.0, 0.0], &[0.0, 3.0], &[-3.0, 0.0]])
        .reshape((2, 3, 2))
        .unwrap();
    let twice = scalar(&metric_loss(&u2, &p2, &n2, 0.5, 10, true, MetricLossForm::Official).unwrap());
    assert!((twice - 2.997369).abs() < TOL, "{twice}");
    let u3 = tensor(&[&[0.6, 0.0], &[0.6, 0.0]]);
    let p3 = tensor(&[&[0.0, 0.8], &[0.0, 0.8]]);
    let n3 = Tensor::cat(&[&n, &n], 0).unwrap();
    let sum = scalar(&metric_loss(&u3, &p3, &n3, 0.5, 10, true, MetricLossForm::Official).unwrap());
    assert!((sum - 2.0 * 2.997369).abs() < TOL, "{sum}");
    // Gradients (the rank weight is a constant) against finite differences, away from the kinks.
    for form in [MetricLossForm::Official, MetricLossForm::Paper] {
        assert!(grad_check(|x| metric_loss(x, &p, &n, 0.5, 10, true, form), &u, 1e-6) < 1e-6);
        assert!(grad_check(|x| metric_loss(&u, x, &n, 0.5, 10, true, form), &p, 1e-6) < 1e-6);
        assert!(grad_check(|x| metric_loss(&u, &p, x, 0.5, 10, true, form), &n, 1e-6) < 1e-6);
    }
    let wrong_batch = n.reshape((3, 1, 2)).unwrap();
    assert!(metric_loss(&u, &p, &wrong_batch, 0.5, 10, true, MetricLossForm::Official).is_err());
}

#[test]
fn cml_covariance_matches_t5() {
    let y = tensor(&[&[0.6, 0.0], &[0.0, 0.8], &[0.6, 0.5], &[-0.6, 0.0]]);
    // C = [[0.2475, 0.02625], [0.02625, 0.116875]].
    assert!((scalar(&covariance_loss(&y, CovForm::OffdiagSum).unwrap()) - 0.0525).abs() < 1e-9);
    assert!((scalar(&covariance_loss(&y, CovForm::Paper).unwrap()) - 0.050324).abs() < 1e-6);
    for form in [CovForm::OffdiagSum, CovForm::Paper] {
        assert!(grad_check(|x| covariance_loss(x, form), &y, 1e-6) < 1e-6);
    }
}

#[test]
fn cml_model_scores_clips_and_weighs_by_its_catalogue() {
    let cfg = CmlConfig {
        embed_dim: 2,
        margin: 0.5,
        n_negatives: 3,
        loss_form: MetricLossForm::Official,
        ..Default::default()
    };
    let varmap = VarMap::new();
    let model =
        Cml::new(f64_builder(&varmap, 1), &varmap, &cfg, Dims { n_users: 2, n_items: 4 }, &toy_cml_train()).unwrap();
    set(&varmap, "user_emb.weight", &[&[0.6, 0.0], &[3.0, 4.0]]);
    set(&varmap, "item_emb.weight", &[&[0.0, 0.8], &[0.6, 0.5], &[-0.6, 0.0], &[0.6, -0.8]]);
    // Scores are −δ: T4's distances for user 0; (3, 4) to (0, 0.8) is 9 + 10.24 away.
    let s = rows(&model.score_users(&[0, 1]).unwrap());
    assert_close(&s[..1], &[&[-1.0, -0.25, -1.44, -0.64]], 1e-9, "scores");
    assert!((s[1][0] + 19.24).abs() < 1e-9);
    // The model's loss uses its own catalogue (I = 4): weight ln(1 + 4·3/3) = ln 5.
    let named = model.batch_losses(&[0], &[0], &[1, 2, 3]).unwrap();
    let names: Vec<&str> = named.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["metric", "total"]);
    assert!((scalar(&named[1].1) - 5f64.ln() * 1.25).abs() < TOL);
    let paper = Cml::new(
        f64_builder(&varmap, 1),
        &varmap,
        &CmlConfig { loss_form: MetricLossForm::Paper, ..cfg.clone() },
        Dims { n_users: 2, n_items: 4 },
        &toy_cml_train(),
    )
    .unwrap();
    let named = paper.batch_losses(&[0], &[0], &[1, 2, 3]).unwrap();
    assert!((scalar(&named[1].1) - 5f64.ln() * (1.25 + 0.06 + 0.86)).abs() < TOL);
    // Clipping: (3, 4) → (0.6, 0.8), rows inside the ball unchanged; written into the variables themselves.
    model.clip_embeddings().unwrap();
    assert_close(&rows(var(&varmap, "user_emb.weight").as_tensor()), &[&[0.6, 0.0], &[0.6, 0.8]], 1e-12, "users");
    assert_close(
        &rows(var(&varmap, "item_emb.weight").as_tensor()),
        &[&[0.0, 0.8], &[0.6, 0.5], &[-0.6, 0.0], &[0.6, -0.8]],
        1e-12,
        "items",
    );
    let c = rows(&clip_rows(&tensor(&[&[3.0, 4.0], &[0.3, 0.4], &[0.0, 0.0]]), 1.0).unwrap());
    assert_close(&c, &[&[0.6, 0.8], &[0.3, 0.4], &[0.0, 0.0]], 1e-12, "clip_rows");
    // With the covariance term on, it is reported and added.
    let cfg = CmlConfig { use_cov_loss: true, cov_loss_weight: 2.0, ..cfg };
    let varmap2 = VarMap::new();
    let model2 =
        Cml::new(f64_builder(&varmap2, 1), &varmap2, &cfg, Dims { n_users: 2, n_items: 4 }, &toy_cml_train()).unwrap();
    let named = model2.batch_losses(&[0], &[0], &[1, 2, 3]).unwrap();
    let (eu, ei) = model2.embeddings();
    let cov = 2.0 * scalar(&covariance_loss(&Tensor::cat(&[ei, eu], 0).unwrap(), CovForm::OffdiagSum).unwrap());
    assert_eq!(named[1].0, "cov");
    assert!((scalar(&named[1].1) - cov).abs() < 1e-12);
    assert!((scalar(&named[2].1) - scalar(&named[0].1) - cov).abs() < 1e-12);
}

// ---------------------------------------------------------------------------------------------------------
// NGCF.

/// T1's model on the toy graph: d = 2, one layer of width 2, no dropout, biases 0.
fn ngcf_t1(variant: NgcfVariant) -> Ngcf {
    let cfg = NgcfConfig { embed_dim: 2, hidden_sizes: vec![2], message_dropout: 0.0, variant, ..Default::default() };
    let varmap = VarMap::new();
    let model =
        Ngcf::new(f64_builder(&varmap, 1), &varmap, &cfg, Dims { n_users: 2, n_items: 3 }, &toy_train(), &CPU).unwrap();
    set(&varmap, "user_emb.weight", &[&[1.0, 0.0], &[0.0, 1.0]]);
    set(&varmap, "item_emb.weight", &[&[0.5, 0.5], &[1.0, -1.0], &[0.0, 2.0]]);
    // W1 = [[1, 0.5], [0, 1]], W2 = [[0.5, 0], [0, −3]] (in × out); candle stores the transposes.
    set(&varmap, "layers.0.w1.weight", &[&[1.0, 0.0], &[0.5, 1.0]]);
    set(&varmap, "layers.0.w2.weight", &[&[0.5, 0.0], &[0.0, -3.0]]);
    set(&varmap, "layers.0.w1.bias", &[&[0.0, 0.0]]);
    set(&varmap, "layers.0.w2.bias", &[&[0.0, 0.0]]);
    model
}

#[test]
fn ngcf_matches_t1_both_variants() {
    let mut model = ngcf_t1(NgcfVariant::Recbole);
    let side = rows(
        &mmkd_nn::sparse::spmm(model.adjacency(), &model.forward(None).unwrap().narrow(1, 0, 2).unwrap()).unwrap(),
    );
    assert_close(
        &side,
        &[&[0.85355, -0.14645], &[0.5, 0.91421], &[0.70711, 0.0], &[0.5, 0.5], &[0.0, 0.70711]],
        TOL,
        "L̂·E⁰",
    );
    let e = model.forward(None).unwrap();
    assert_eq!(e.dims(), &[5, 4]);
    assert_close(
        &rows(&e.narrow(1, 2, 2).unwrap()),
        &[&[0.94614, 0.32377], &[0.97426, -0.22542], &[0.78185, 0.62347], &[0.70711, 0.70711], &[0.0, -1.0]],
        TOL,
        "recbole l2n(E¹)",
    );
    model.prepare_eval().unwrap();
    assert_close(
        &rows(&model.score_users(&[0, 1]).unwrap()),
        &[&[1.44159, 1.89796, -0.32377], &[1.12118, -0.47049, 2.22542]],
        TOL,
        "recbole scores",
    );

    let mut model = ngcf_t1(NgcfVariant::Official);
    // The un-normalised layer output of the official variant.
    let e = model.forward(None).unwrap();
    let vars = optim::sorted_named_vars(model.vars());
    let get = |n: &str| vars.iter().find(|(k, _)| k == n).unwrap().1.as_tensor().clone();
    let lin = |n: &str| candle_nn::Linear::new(get(&format!("{n}.weight")), Some(get(&format!("{n}.bias"))));
    let layer = NgcfLayer { w1: lin("layers.0.w1"), w2: lin("layers.0.w2") };
    let raw = ngcf_layer(model.adjacency(), &e.narrow(1, 0, 2).unwrap(), &layer, NgcfVariant::Official).unwrap();
    assert_close(
        &rows(&raw),
        &[&[1.25, 0.25], &[0.33333, 0.43333], &[0.9375, 0.55], &[1.0, 0.33333], &[0.0, -0.3]],
        TOL,
        "official E¹",
    );
    model.prepare_eval().unwrap();
    assert_close(
        &rows(&model.score_users(&[0, 1]).unwrap()),
        &[&[1.44501, 1.99228, -0.19612], &[1.42697, -0.17093, 1.20738]],
        TOL,
        "official scores",
    );
    // Every stored layer row has unit norm.
    for r in rows(&e.narrow(1, 2, 2).unwrap()) {
        assert!((r[0].hypot(r[1]) - 1.0).abs() < 1e-9);
    }
}

/// NGCF by hand with dense matrices: `E*` of the model's current variables, for `variant`.
fn ngcf_dense(varmap: &VarMap, a: &Tensor, n_layers: usize, variant: NgcfVariant) -> Tensor {
    let get = |n: &str| var(varmap, n).as_tensor().clone();
    let lrelu = |x: &Tensor| (x.relu().unwrap() - x.neg().unwrap().relu().unwrap().affine(0.2, 0.0).unwrap()).unwrap();
    let l2n = |x: &Tensor| x.broadcast_div(&x.sqr().unwrap().sum_keepdim(1).unwrap().sqrt().unwrap()).unwrap();
    let lin = |x: &Tensor, name: &str| {
        x.matmul(&get(&format!("{name}.weight")).t().unwrap())
            .unwrap()
            .broadcast_add(&get(&format!("{name}.bias")))
            .unwrap()
    };
    let mut e = Tensor::cat(&[get("user_emb.weight"), get("item_emb.weight")], 0).unwrap();
    let mut stored = vec![e.clone()];
    for l in 0..n_layers {
        let (w1, w2) = (format!("layers.{l}.w1"), format!("layers.{l}.w2"));
        let s = a.matmul(&e).unwrap();
        let bi = (&s * &e).unwrap();
        match variant {
            NgcfVariant::Recbole => {
                let h = lrelu(&(lin(&(&e + &s).unwrap(), &w1) + lin(&bi, &w2)).unwrap());
                e = l2n(&h);
                stored.push(e.clone());
            }
            NgcfVariant::Official => {
                let h = (lrelu(&lin(&s, &w1)) + lrelu(&lin(&bi, &w2))).unwrap();
                stored.push(l2n(&h));
                e = h;
            }
        }
    }
    Tensor::cat(&stored, 1).unwrap()
}

#[test]
fn ngcf_propagation_matches_dense_reference_values_and_gradients() {
    let train = random_train(6, 8, 20, 5);
    let dims = Dims { n_users: 6, n_items: 8 };
    for variant in [NgcfVariant::Recbole, NgcfVariant::Official] {
        let cfg = NgcfConfig { embed_dim: 3, hidden_sizes: vec![4, 2], variant, ..Default::default() };
        let varmap = VarMap::new();
        let model = Ngcf::new(f64_builder(&varmap, 6), &varmap, &cfg, dims, &train, &CPU).unwrap();
        randomize(&varmap, 7, 1.0);
        let a = match variant {
            NgcfVariant::Recbole => dense_sym(&train),
            NgcfVariant::Official => dense_row_self(&train),
        };
        assert!(max_gap(&model.adjacency().to_dense(&CPU).unwrap().to_dtype(DType::F64).unwrap(), &a) < 1e-7);
        let got = model.forward(None).unwrap();
        let want = ngcf_dense(&varmap, &a, 2, variant);
        assert_eq!(got.dims(), &[14, 9]);
        assert!(max_gap(&got, &want) < 1e-6, "{variant:?}: {}", max_gap(&got, &want));
        // Gradients of Σ R ⊙ E* with respect to every variable.
        let r =
            Tensor::from_vec((0..14 * 9).map(|k| ((k * 37 % 11) as f64 - 5.0) / 5.0).collect(), (14, 9), &CPU).unwrap();
        let g1 = (got * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (want * &r).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, v) in optim::sorted_named_vars(&varmap) {
            let (a, b) = (g1.get(v.as_tensor()).unwrap(), g2.get(v.as_tensor()).unwrap());
            assert!(max_gap(a, b) < 1e-6, "{variant:?} {name}: {}", max_gap(a, b));
        }
        // The isolated nodes (user 5, item 7) get finite embeddings.
        assert!(rows(&model.forward(None).unwrap()).iter().flatten().all(|v| v.is_finite()));
    }
}

#[test]
fn ngcf_layer_gradient_matches_finite_differences() {
    let train = random_train(4, 5, 9, 8);
    let varmap = VarMap::new();
    let vb = f64_builder(&varmap, 9);
    let lin = |name: &str| mmkd_features::nn::linear(vb.pp(name), 3, 2, mmkd_features::LinearInit::Torch).unwrap();
    let layer = NgcfLayer { w1: lin("w1"), w2: lin("w2") };
    let e = Tensor::from_vec((0..27).map(|k| ((k * 7 % 13) as f64 - 6.0) / 4.0).collect(), (9, 3), &CPU).unwrap();
    for (variant, a) in [
        (NgcfVariant::Recbole, sym_normalized(&train)),
        (NgcfVariant::Official, row_normalized_with_self_loops(&train).unwrap()),
    ] {
        let f = |x: &Tensor| -> candle_core::Result<Tensor> {
            let out = ngcf_layer(&a, x, &layer, variant).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            (out.sqr()? * 0.5)?.sum_all()
        };
        assert!(grad_check(f, &e, 1e-6) < 1e-6);
    }
}

#[test]
fn ngcf_dropouts_only_in_training_mode() {
    let train = random_train(6, 8, 20, 5);
    let cfg = NgcfConfig {
        embed_dim: 3,
        hidden_sizes: vec![4],
        message_dropout: 0.3,
        node_dropout: 0.3,
        ..Default::default()
    };
    let varmap = VarMap::new();
    let model =
        Ngcf::new(f64_builder(&varmap, 6), &varmap, &cfg, Dims { n_users: 6, n_items: 8 }, &train, &CPU).unwrap();
    let eval1 = model.forward(None).unwrap();
    let eval2 = model.forward(None).unwrap();
    assert_eq!(max_gap(&eval1, &eval2), 0.0);
    let mut rng = mmkd_data::stream(1, "dropout");
    assert!(max_gap(&model.forward(Some(&mut rng)).unwrap(), &eval1) > 1e-3);
    // Edge dropout keeps about 1 − p of the entries, scaled by 1/(1 − p).
    let a = sym_normalized(&random_train(60, 80, 2000, 3));
    let dropped = edge_dropout(&a, 0.25, &mut rng).unwrap();
    let share = dropped.nnz() as f64 / a.nnz() as f64;
    assert!((share - 0.75).abs() < 0.05, "{share}");
    let sum = |m: &mmkd_nn::sparse::SparseMatrix| m.values().iter().map(|&v| f64::from(v)).sum::<f64>();
    assert!((sum(&dropped) / sum(&a) - 1.0).abs() < 0.1);
}

// ---------------------------------------------------------------------------------------------------------
// DGCF.

fn dgcf_t2_cfg(n_iterations: usize) -> DgcfConfig {
    DgcfConfig { embed_dim: 4, n_factors: 2, n_iterations, n_layers: 1, ..Default::default() }
}

fn dgcf_t2_e0() -> Tensor {
    tensor(&[
        &[1.0, 0.0, 0.5, -0.5],
        &[0.0, 1.0, 1.0, 0.0],
        &[0.5, 0.5, 0.0, 1.0],
        &[1.0, -1.0, 0.5, 0.5],
        &[0.0, 2.0, -1.0, 0.0],
    ])
}

#[test]
fn dgcf_routing_matches_t2() {
    let graph = DgcfGraph::new(&toy_train(), &CPU).unwrap();
    let e0 = dgcf_t2_e0();
    // Iteration 1: S = 1, so the weights are 1/√(deg_h·deg_t) and E¹ = L̂·E⁰ per chunk.
    let one = route(&graph, &e0, &dgcf_t2_cfg(1)).unwrap();
    let e1 = (one.emb.affine(2.0, 0.0).unwrap() - &e0).unwrap();
    assert_close(
        &rows(&e1),
        &[
            &[0.85355, -0.14645, 0.25, 0.95711],
            &[0.5, 0.91421, -0.45711, 0.25],
            &[0.70711, 0.0, 0.35355, -0.35355],
            &[0.5, 0.5, 0.75, -0.25],
            &[0.0, 0.70711, 0.70711, 0.0],
        ],
        TOL,
        "Y after iteration 1",
    );
    assert_close(
        &rows(&one.logits),
        &[
            &[1.49713, 1.73687],
            &[1.70305, 1.74297],
            &[0.75797, 0.75797],
            &[1.66819, 1.66819],
            &[1.76159, 1.86106],
            &[1.53853, 1.77015],
            &[1.53853, 1.72251],
            &[1.76159, 1.76159],
        ],
        TOL,
        "S after iteration 1",
    );
    let two = route(&graph, &e0, &dgcf_t2_cfg(2)).unwrap();
    let e1 = (two.emb.affine(2.0, 0.0).unwrap() - &e0).unwrap();
    assert_close(
        &rows(&e1),
        &[
            &[0.86770, -0.20541, 0.23470, 0.98164],
            &[0.52808, 0.88614, -0.46912, 0.23799],
            &[0.71464, 0.0, 0.35024, -0.35024],
            &[0.48436, 0.47964, 0.77627, -0.25664],
            &[0.0, 0.70711, 0.70711, 0.0],
        ],
        TOL,
        "E¹ after iteration 2",
    );
    assert_close(
        &rows(&two.logits),
        &[
            &[1.94936, 2.47759],
            &[2.43579, 2.47672],
            &[0.54663, 0.49044],
            &[2.32242, 2.34738],
            &[2.52319, 2.72211],
            &[2.07969, 2.53936],
            &[2.07441, 2.44561],
            &[2.52319, 2.52319],
        ],
        TOL,
        "S after iteration 2",
    );
    // The model scores E*[u]·E*[U+i].
    let varmap = VarMap::new();
    let mut model = Dgcf::new(
        f64_builder(&varmap, 1),
        &varmap,
        &dgcf_t2_cfg(2),
        Dims { n_users: 2, n_items: 3 },
        &toy_train(),
        &CPU,
    )
    .unwrap();
    set(&varmap, "user_emb.weight", &[&[1.0, 0.0, 0.5, -0.5], &[0.0, 1.0, 1.0, 0.0]]);
    set(&varmap, "item_emb.weight", &[&[0.5, 0.5, 0.0, 1.0], &[1.0, -1.0, 0.5, 0.5], &[0.0, 2.0, -1.0, 0.0]]);
    model.prepare_eval().unwrap();
    assert_close(
        &rows(&model.score_users(&[0, 1]).unwrap()),
        &[&[0.68404, 0.98353, -0.19281], &[0.48127, 0.13446, 1.23762]],
        TOL,
        "scores",
    );
    // Sum pooling scales E* by L + 1 = 2.
    let summed = route(&graph, &e0, &DgcfConfig { layer_pooling: LayerPooling::Sum, ..dgcf_t2_cfg(2) }).unwrap();
    assert!(max_gap(&summed.emb, &two.emb.affine(2.0, 0.0).unwrap()) < 1e-12);
}

/// DGCF's routing by hand with dense `(N, N)` matrices, one per intent: `(E*, [S_k])`.
fn dgcf_dense(train: &Csr, e0: &Tensor, cfg: &DgcfConfig) -> (Tensor, Vec<Tensor>) {
    let mask = dense_tensor(&dense_adjacency(train)); // (N, N), 1 on every directed edge
    let (k_n, c) = (cfg.n_factors, cfg.embed_dim / cfg.n_factors);
    // The 1e-300 keeps the gradient of an all-zero row (an isolated node) finite in the dense products.
    let l2n = |x: &Tensor| {
        let sq = (x.sqr().unwrap().sum_keepdim(1).unwrap() + 1e-300).unwrap();
        let norm = sq.sqrt().unwrap().clamp(1e-12, f64::INFINITY).unwrap();
        x.broadcast_div(&norm).unwrap()
    };
    let mut s: Vec<Tensor> = (0..k_n).map(|_| mask.clone()).collect();
    let mut x = e0.clone();
    let mut layers = vec![e0.clone()];
    for _ in 0..cfg.n_layers {
        let chunks: Vec<Tensor> = (0..k_n).map(|k| x.narrow(1, k * c, c).unwrap()).collect();
        let mut ys = Vec::new();
        for _ in 0..cfg.n_iterations {
            let exps: Vec<Tensor> = s.iter().map(|sk| sk.exp().unwrap()).collect();
            let denom = exps.iter().skip(1).fold(exps[0].clone(), |acc, e| (acc + e).unwrap());
            ys = Vec::new();
            let mut updates = Vec::new();
            for k in 0..k_n {
                let p = ((&exps[k] / &denom).unwrap() * &mask).unwrap(); // (N, N)
                let deg = p.sum_keepdim(1).unwrap().clamp(1e-8, f64::INFINITY).unwrap(); // (N, 1)
                let inv = deg.sqrt().unwrap().recip().unwrap();
                let w = p.broadcast_mul(&inv).unwrap().broadcast_mul(&inv.t().unwrap()).unwrap();
                let y = w.matmul(&chunks[k]).unwrap(); // (N, c)
                let a = l2n(&y).matmul(&l2n(&chunks[k]).tanh().unwrap().t().unwrap()).unwrap(); // (N, N)
                updates.push((a * &mask).unwrap());
                ys.push(y);
            }
            s = s.iter().zip(&updates).map(|(sk, a)| (sk + a).unwrap()).collect();
        }
        x = Tensor::cat(&ys, 1).unwrap();
        layers.push(x.clone());
    }
    let sum = layers.iter().skip(1).fold(layers[0].clone(), |acc, l| (acc + l).unwrap());
    (sum.affine(1.0 / layers.len() as f64, 0.0).unwrap(), s)
}

#[test]
fn dgcf_routing_matches_dense_reference_values_and_gradients() {
    let train = random_train(6, 8, 20, 12);
    let cfg = DgcfConfig { embed_dim: 6, n_factors: 3, n_iterations: 2, n_layers: 2, ..Default::default() };
    let graph = DgcfGraph::new(&train, &CPU).unwrap();
    let values: Vec<f64> = {
        let mut rng = mmkd_data::stream(13, "e0");
        (0..14 * 6).map(|_| 2.0 * rng.random::<f64>() - 1.0).collect()
    };
    let e0 = Var::from_tensor(&Tensor::from_vec(values, (14, 6), &CPU).unwrap()).unwrap();
    let routed = route(&graph, e0.as_tensor(), &cfg).unwrap();
    let (emb, s) = dgcf_dense(&train, e0.as_tensor(), &cfg);
    assert!(max_gap(&routed.emb, &emb) < 1e-9, "{}", max_gap(&routed.emb, &emb));
    // The logits of every edge against the dense matrices.
    let logits = rows(&routed.logits);
    let dense_s: Vec<Vec<Vec<f64>>> = s.iter().map(rows).collect();
    let (heads, tails) = (graph.pattern().edge_rows(), graph.pattern().edge_cols());
    for (e, row) in logits.iter().enumerate() {
        for (k, &v) in row.iter().enumerate() {
            assert!((v - dense_s[k][heads[e] as usize][tails[e] as usize]).abs() < 1e-9);
        }
    }
    // Gradients to E⁰ through the routing.
    let r = Tensor::from_vec((0..14 * 6).map(|k| ((k * 29 % 17) as f64 - 8.0) / 8.0).collect(), (14, 6), &CPU).unwrap();
    let g1 = (routed.emb * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let g2 = (emb * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let (a, b) = (g1.get(e0.as_tensor()).unwrap(), g2.get(e0.as_tensor()).unwrap());
    assert!(max_gap(a, b) < 1e-9, "{}", max_gap(a, b));
    // And against finite differences on the toy graph (a smaller problem).
    let toy = DgcfGraph::new(&toy_train(), &CPU).unwrap();
    let w = Tensor::from_vec((0..20).map(|k| ((k * 7 % 9) as f64 - 4.0) / 3.0).collect(), (5, 4), &CPU).unwrap();
    let f = |x: &Tensor| -> candle_core::Result<Tensor> {
        let out = route(&toy, x, &dgcf_t2_cfg(2)).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        (out.emb * &w)?.sum_all()
    };
    assert!(grad_check(f, &dgcf_t2_e0(), 1e-6) < 1e-6);
}

#[test]
fn dgcf_with_one_intent_is_lightgcn() {
    let train = random_train(6, 8, 20, 14);
    let graph = DgcfGraph::new(&train, &CPU).unwrap();
    let e0 =
        Tensor::from_vec((0..14 * 5).map(|k| ((k * 13 % 23) as f64 - 11.0) / 7.0).collect(), (14, 5), &CPU).unwrap();
    let cfg = DgcfConfig { embed_dim: 5, n_factors: 1, n_iterations: 3, n_layers: 2, ..Default::default() };
    let routed = route(&graph, &e0, &cfg).unwrap();
    let light = propagate_mean(&sym_normalized(&train), &e0, 2).unwrap();
    assert!(max_gap(&routed.emb, &light) < 1e-6, "{}", max_gap(&routed.emb, &light));
    assert!(rows(&routed.emb).iter().flatten().all(|v| v.is_finite()));
}

/// Distance correlation by plain loops (n rows), the formulas of the spec.
fn dcor_brute(x: &[Vec<f64>], y: &[Vec<f64>]) -> f64 {
    let n = x.len();
    let centred = |z: &[Vec<f64>]| -> Vec<Vec<f64>> {
        let d: Vec<Vec<f64>> = (0..n)
            .map(|a| {
                (0..n)
                    .map(|b| {
                        let sq: f64 = z[a].iter().zip(&z[b]).map(|(p, q)| (p - q) * (p - q)).sum();
                        (sq.max(0.0) + 1e-8).sqrt()
                    })
                    .collect()
            })
            .collect();
        let row: Vec<f64> = d.iter().map(|r| r.iter().sum::<f64>() / n as f64).collect();
        let col: Vec<f64> = (0..n).map(|b| d.iter().map(|r| r[b]).sum::<f64>() / n as f64).collect();
        let all = row.iter().sum::<f64>() / n as f64;
        (0..n).map(|a| (0..n).map(|b| d[a][b] - row[a] - col[b] + all).collect()).collect()
    };
    let dcov = |p: &[Vec<f64>], q: &[Vec<f64>]| -> f64 {
        let s: f64 = (0..n).flat_map(|a| (0..n).map(move |b| (a, b))).map(|(a, b)| p[a][b] * q[a][b]).sum();
        ((s / (n * n) as f64).max(0.0) + 1e-8).sqrt()
    };
    let (cx, cy) = (centred(x), centred(y));
    dcov(&cx, &cy) / ((dcov(&cx, &cx) * dcov(&cy, &cy)).max(0.0).sqrt() + 1e-10)
}

#[test]
fn distance_correlation_matches_t3_and_brute_force() {
    let x1 = tensor(&[&[0.0, 0.0], &[1.0, 0.0], &[0.0, 1.0], &[1.0, 1.0]]);
    let x2 = tensor(&[&[1.0, 2.0], &[0.0, 1.0], &[2.0, 2.0], &[1.0, 0.0]]);
    let dcor = |a: &Tensor, b: &Tensor| scalar(&distance_correlation(a, b).unwrap());
    assert!((dcor(&x1, &x2) - 0.971185).abs() < 1e-6);
    assert!((dcor(&x1, &x1) - 1.0).abs() < 1e-6);
    assert!((dcor(&x1, &x1.affine(3.0, 1.0).unwrap()) - 1.0).abs() < 1e-6);
    let z = Tensor::cat(&[&x1, &x2], 1).unwrap();
    assert!((scalar(&cor_loss(&z, 2, CorPairs::Adjacent).unwrap()) - 0.323728).abs() < 1e-6);
    assert!((scalar(&cor_loss(&z, 2, CorPairs::All).unwrap()) - 0.971185).abs() < 1e-6);
    assert!(cor_loss(&z, 1, CorPairs::Adjacent).is_err());
    assert!(distance_correlation(&x1, &x2.narrow(0, 0, 3).unwrap()).is_err());

    // Random chunks against the loops; three intents: adjacent (d12 + d23)/6, all d12 + d13 + d23.
    let mut rng = mmkd_data::stream(21, "dcor");
    let z: Vec<Vec<f64>> = (0..7).map(|_| (0..6).map(|_| rng.random::<f64>() * 2.0 - 1.0).collect()).collect();
    let chunk = |k: usize| -> Vec<Vec<f64>> { z.iter().map(|r| r[2 * k..2 * k + 2].to_vec()).collect() };
    let (d12, d13, d23) =
        (dcor_brute(&chunk(0), &chunk(1)), dcor_brute(&chunk(0), &chunk(2)), dcor_brute(&chunk(1), &chunk(2)));
    let zt = dense_tensor(&z);
    assert!((scalar(&cor_loss(&zt, 3, CorPairs::Adjacent).unwrap()) - (d12 + d23) / 6.0).abs() < 1e-9);
    assert!((scalar(&cor_loss(&zt, 3, CorPairs::All).unwrap()) - (d12 + d13 + d23)).abs() < 1e-9);
    assert!(grad_check(|x| cor_loss(x, 3, CorPairs::Adjacent), &zt, 1e-6) < 1e-6);
}

#[test]
fn dgcf_batch_loss_terms() {
    let (ds, _) = tiny();
    let cfg = DgcfConfig { embed_dim: 8, batch_size: 256, ..Default::default() };
    let varmap = VarMap::new();
    let model = Dgcf::new(f64_builder(&varmap, 1), &varmap, &cfg, tiny_dims(&ds), &ds.train, &CPU).unwrap();
    // ⌊max(200, 300)/(⌊|R|/256⌋ + 1)⌋ users and items per correlation sample.
    assert_eq!(model.cor_sample_size(), 300 / (ds.train.nnz() / 256 + 1));
    let mut rng = mmkd_data::stream(1, "batches");
    let batches = sample_epoch(Sampler::Int, &ds.train, 64, 1, &mut rng).unwrap();
    let named = model.batch_losses(&batches[0], &mut rng).unwrap();
    let names: Vec<&str> = named.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["bpr", "reg", "cor", "total"]);
    let v: Vec<f64> = named.iter().map(|(_, t)| scalar(t)).collect();
    assert!((v[0] + v[1] + v[2] - v[3]).abs() < 1e-12);
    // reg = λ·Σ ½‖E⁰ rows‖² / B on the layer-0 rows.
    let e0 = model.ego_embeddings().unwrap();
    let b = &batches[0];
    let idx = |ids: Vec<u32>| Tensor::new(ids.as_slice(), &CPU).unwrap();
    let n_users = ds.n_users as u32;
    let rows0 = [
        e0.index_select(&idx(b.users.clone()), 0).unwrap(),
        e0.index_select(&idx(b.positives.iter().map(|&i| n_users + i).collect()), 0).unwrap(),
        e0.index_select(&idx(b.negatives.iter().map(|&i| n_users + i).collect()), 0).unwrap(),
    ];
    let sq: f64 = rows0.iter().map(|t| scalar(&t.sqr().unwrap().sum_all().unwrap())).sum();
    assert!((v[1] - 1e-3 * 0.5 * sq / 64.0).abs() < 1e-12);
    // λ_cor = 0 drops the term.
    let cfg = DgcfConfig { cor_weight: 0.0, ..cfg };
    let varmap = VarMap::new();
    let model = Dgcf::new(f64_builder(&varmap, 1), &varmap, &cfg, tiny_dims(&ds), &ds.train, &CPU).unwrap();
    let names: Vec<&str> = model.batch_losses(&batches[0], &mut rng).unwrap().iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["bpr", "reg", "total"]);
}

// ---------------------------------------------------------------------------------------------------------
// Training on tiny.

fn neumf_tiny(ds: &Dataset, seed: u64) -> NeuMf {
    let cfg = NeuMfConfig { batch_size: 256, ..Default::default() };
    let varmap = VarMap::new();
    NeuMf::new(seeded_var_builder(&varmap, seed, DType::F32, &CPU), &varmap, &cfg, tiny_dims(ds), &ds.train).unwrap()
}

fn cml_tiny(ds: &Dataset, seed: u64) -> Cml {
    let cfg = CmlConfig { batch_size: 256, ..Default::default() };
    let varmap = VarMap::new();
    Cml::new(seeded_var_builder(&varmap, seed, DType::F32, &CPU), &varmap, &cfg, tiny_dims(ds), &ds.train).unwrap()
}

fn ngcf_tiny(ds: &Dataset, seed: u64) -> Ngcf {
    let cfg = NgcfConfig { batch_size: 256, ..Default::default() };
    let varmap = VarMap::new();
    let vb = seeded_var_builder(&varmap, seed, DType::F32, &CPU);
    Ngcf::new(vb, &varmap, &cfg, tiny_dims(ds), &ds.train, &CPU).unwrap()
}

fn dgcf_tiny(ds: &Dataset, seed: u64) -> Dgcf {
    let cfg = DgcfConfig { batch_size: 256, ..Default::default() };
    let varmap = VarMap::new();
    let vb = seeded_var_builder(&varmap, seed, DType::F32, &CPU);
    Dgcf::new(vb, &varmap, &cfg, tiny_dims(ds), &ds.train, &CPU).unwrap()
}

#[test]
fn neumf_beats_popularity_on_tiny() {
    let (ds, pop) = tiny();
    assert_beats_popularity(&mut neumf_tiny(&ds, 3), &ds, pop, 3e-3, 8);
}

#[test]
fn cml_beats_popularity_on_tiny_and_stays_in_the_ball() {
    let (ds, pop) = tiny();
    let mut model = cml_tiny(&ds, 3);
    assert_beats_popularity(&mut model, &ds, pop, 1e-2, 8);
    let (eu, ei) = model.embeddings();
    for t in [eu, ei] {
        let max_norm = scalar(&t.sqr().unwrap().sum(1).unwrap().sqrt().unwrap().max(0).unwrap());
        assert!(max_norm <= 1.0 + 1e-5, "{max_norm}");
    }
}

#[test]
fn ngcf_beats_popularity_on_tiny() {
    let (ds, pop) = tiny();
    assert_beats_popularity(&mut ngcf_tiny(&ds, 3), &ds, pop, 1e-2, 10);
}

#[test]
fn dgcf_beats_popularity_on_tiny() {
    let (ds, pop) = tiny();
    assert_beats_popularity(&mut dgcf_tiny(&ds, 3), &ds, pop, 1e-2, 5);
}

#[test]
fn same_seed_same_losses_and_scores() {
    let (ds, _) = tiny();
    // Narrow models with every random part on (dropouts, negatives, the correlation sample) keep it quick.
    let run = |which: usize, seed: u64| -> (Vec<EpochStats>, Vec<Vec<f32>>) {
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, seed, DType::F32, &CPU);
        let dims = tiny_dims(&ds);
        let mut model: Box<dyn Recommender> = match which {
            0 => {
                let cfg = NeuMfConfig {
                    mf_embed_dim: 16,
                    mlp_embed_dim: 16,
                    mlp_hidden: vec![32, 16],
                    batch_size: 256,
                    ..Default::default()
                };
                Box::new(NeuMf::new(vb, &varmap, &cfg, dims, &ds.train).unwrap())
            }
            1 => Box::new(
                Cml::new(
                    vb,
                    &varmap,
                    &CmlConfig { embed_dim: 16, batch_size: 256, ..Default::default() },
                    dims,
                    &ds.train,
                )
                .unwrap(),
            ),
            2 => {
                let cfg = NgcfConfig {
                    embed_dim: 16,
                    hidden_sizes: vec![16, 16],
                    node_dropout: 0.1,
                    batch_size: 256,
                    ..Default::default()
                };
                Box::new(Ngcf::new(vb, &varmap, &cfg, dims, &ds.train, &CPU).unwrap())
            }
            _ => {
                let cfg = DgcfConfig { embed_dim: 16, batch_size: 256, ..Default::default() };
                Box::new(Dgcf::new(vb, &varmap, &cfg, dims, &ds.train, &CPU).unwrap())
            }
        };
        let stats = train(model.as_mut(), &ds, 1e-3, seed, 2);
        model.prepare_eval().unwrap();
        (stats, model.score_users(&[0, 5, 17]).unwrap().to_vec2().unwrap())
    };
    let bits = |s: &[EpochStats]| -> Vec<Vec<(String, u64)>> {
        s.iter().map(|e| e.losses.iter().map(|(k, v)| (k.clone(), v.to_bits())).collect()).collect()
    };
    for which in 0..4 {
        let (s1, p1) = run(which, 9);
        let (s2, p2) = run(which, 9);
        assert_eq!(bits(&s1), bits(&s2), "model {which}");
        assert_eq!(p1, p2, "model {which}");
        let (s3, _) = run(which, 10);
        assert_ne!(bits(&s1), bits(&s3), "model {which}: another seed gives the same losses");
    }
}
