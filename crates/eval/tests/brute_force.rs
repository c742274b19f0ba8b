//! `evaluate` and `top_k` against a slow, obviously correct implementation: rank every candidate with a full
//! sort (descending score, ties → lower index, NaN as −∞), then count hits position by position.

// Helpers outside `#[test]` functions are test code too.
#![allow(clippy::unwrap_used)]

use candle_core::{DType, Device, Tensor};
use mmkd_data::Csr;
use mmkd_eval::{evaluate, evaluate_embeddings, top_k, EvalConfig, EvalResult, MaskMode, NdcgForm};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const KS: [usize; 5] = [1, 3, 10, 20, 50];
const FORMS: [NdcgForm; 3] = [NdcgForm::Standard, NdcgForm::HitNormalised, NdcgForm::Bm3Fork];
const MASKS: [MaskMode; 3] = [MaskMode::NegInf, MaskMode::Value(1e-5), MaskMode::Value(0.5)];

/// Full ranking of one user: every item except masked ones (NegInf) or with the mask value (Value).
fn brute_rank(scores: &[f32], train: &[u32], mask: MaskMode) -> Vec<u32> {
    let mut cands: Vec<(f32, u32)> = Vec::new();
    for (item, &s) in scores.iter().enumerate() {
        let item = item as u32;
        let s = match (train.contains(&item), mask) {
            (true, MaskMode::NegInf) => continue,
            (true, MaskMode::Value(v)) => v,
            (false, _) => s,
        };
        cands.push((if s.is_nan() { f32::NEG_INFINITY } else { s }, item));
    }
    cands.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap().then(a.1.cmp(&b.1)));
    cands.into_iter().map(|(_, item)| item).collect()
}

/// The per-user metrics at `k`, by loops over positions: (hits, recall, precision, hit, mrr, ndcg).
fn brute_metrics(ranked: &[u32], test: &[u32], k: usize, max_k: usize, form: NdcgForm) -> [f64; 6] {
    let is_hit = |pos: usize| pos < ranked.len() && test.contains(&ranked[pos]);
    let (mut hits, mut mrr, mut dcg2, mut hits_before_k) = (0usize, 0.0, 0.0, 0usize);
    for pos in 0..k {
        if is_hit(pos) {
            hits += 1;
            if mrr == 0.0 {
                mrr = 1.0 / (pos as f64 + 1.0);
            }
            dcg2 += 1.0 / (pos as f64 + 2.0).log2();
            if pos + 1 < k {
                hits_before_k += 1;
            }
        }
    }
    let n = test.len();
    let ideal2 = |m: usize| (0..m).map(|r| 1.0 / (r as f64 + 2.0).log2()).sum::<f64>();
    let ndcg = match form {
        NdcgForm::Standard => dcg2 / ideal2(n.min(k)),
        NdcgForm::HitNormalised => {
            if hits == 0 {
                0.0
            } else {
                dcg2 / ideal2(hits)
            }
        }
        NdcgForm::Bm3Fork => {
            let depth = 20.min(max_k);
            let dcg_e: f64 = (0..depth).filter(|&p| is_hit(p)).map(|p| 1.0 / (p as f64 + 2.0).ln()).sum();
            let ideal_e: f64 = (0..hits_before_k).map(|r| 1.0 / (r as f64 + 2.0).ln()).sum();
            if hits_before_k == 0 {
                0.0
            } else {
                dcg_e / ideal_e
            }
        }
    };
    let hit = if hits > 0 { 1.0 } else { 0.0 };
    [hits as f64, hits as f64 / n as f64, hits as f64 / k as f64, hit, mrr, ndcg]
}

struct Case {
    n_items: usize,
    scores: Vec<Vec<f32>>, // (n_users, n_items)
    train: Csr,
    test: Csr,
}

/// Random users of several kinds: many train items (fewer than K candidates left), train items scored on top,
/// no test items, fewer test items than K, and a few train ∩ test overlaps (so a `Value` mask can still hit).
fn random_case(rng: &mut ChaCha8Rng, n_users: usize, n_items: usize, tied: bool) -> Case {
    let mut scores = Vec::new();
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for u in 0..n_users {
        let mut row: Vec<f32> = (0..n_items)
            .map(|_| if tied { [0.0, 0.5, 1.0][rng.random_range(0..3)] } else { rng.random_range(-1.0..1.0) })
            .collect();
        if rng.random_bool(0.05) {
            row[rng.random_range(0..n_items)] = f32::NAN;
        }
        let mut items: Vec<u32> = (0..n_items as u32).collect();
        items.shuffle(rng);
        let n_train = if u % 7 == 0 { n_items - 3 } else { rng.random_range(0..n_items / 2) };
        let tr: Vec<u32> = items[..n_train].to_vec();
        let n_test = if u % 5 == 0 { 0 } else { rng.random_range(1..=(n_items - n_train).min(8)) };
        let mut te: Vec<u32> = items[n_train..n_train + n_test].to_vec();
        if u % 11 == 3 && n_train > 0 {
            te.push(tr[0]);
        }
        if u % 3 == 1 {
            for &i in &tr {
                row[i as usize] = 10.0;
            }
        }
        scores.push(row);
        train.push(tr);
        test.push(te);
    }
    Case { n_items, scores, train: Csr::from_rows(n_items, &train), test: Csr::from_rows(n_items, &test) }
}

fn run(case: &Case, cfg: &EvalConfig) -> EvalResult {
    let score = |users: &[u32]| {
        let rows: Vec<f32> = users.iter().flat_map(|&u| case.scores[u as usize].clone()).collect();
        Tensor::from_vec(rows, (users.len(), case.n_items), &Device::Cpu)
    };
    evaluate(score, &case.train, &case.test, cfg).unwrap()
}

fn check_against_brute_force(case: &Case, cfg: &EvalConfig) {
    let r = run(case, cfg);
    let expected_users: Vec<u32> =
        (0..case.test.n_rows()).filter(|&u| case.test.degree(u) > 0).map(|u| u as u32).collect();
    assert_eq!(r.users, expected_users);
    assert_eq!(r.ks, KS.to_vec());
    assert_eq!(r.ndcg_form, cfg.ndcg);
    let max_k = *KS.iter().max().unwrap();
    for &k in &KS {
        let (mut sums, mut total_hits, mut total_test) = ([0.0; 5], 0.0, 0.0);
        for (i, &u) in r.users.iter().enumerate() {
            let ranked = brute_rank(&case.scores[u as usize], case.train.row(u as usize), cfg.mask);
            let test = case.test.row(u as usize);
            let want = brute_metrics(&ranked, test, k, max_k, cfg.ndcg);
            total_hits += want[0];
            total_test += test.len() as f64;
            for (j, name) in ["recall", "precision", "hit", "mrr", "ndcg"].iter().enumerate() {
                let got = r.per_user[&format!("{name}@{k}")][i];
                assert!(
                    (got - want[j + 1]).abs() < 1e-12,
                    "user {u} {name}@{k} {:?} {:?}: got {got}, want {}",
                    cfg.ndcg,
                    cfg.mask,
                    want[j + 1]
                );
                sums[j] += want[j + 1];
            }
        }
        let n = r.users.len() as f64;
        for (j, name) in ["recall", "precision", "hit", "mrr", "ndcg"].iter().enumerate() {
            assert!((r.summary[&format!("{name}@{k}")] - sums[j] / n).abs() < 1e-12, "{name}@{k}");
        }
        assert!((r.summary[&format!("recall_micro@{k}")] - total_hits / total_test).abs() < 1e-12);
    }
    assert_eq!(r.summary.len(), KS.len() * 6);
    assert_eq!(r.per_user.len(), KS.len() * 5);
}

#[test]
fn top_k_matches_full_sort() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut out = Vec::new();
    for trial in 0..200 {
        let n = rng.random_range(1..300);
        let tied = trial % 2 == 0;
        let scores: Vec<f32> = (0..n)
            .map(|_| match rng.random_range(0..20) {
                0 => f32::NAN,
                1 => -0.0,
                _ if tied => [0.0, 0.5, 1.0][rng.random_range(0..3)],
                _ => rng.random_range(-5.0..5.0),
            })
            .collect();
        let full = brute_rank(&scores, &[], MaskMode::NegInf);
        for k in [1, 2, 10, 50, n, n + 5] {
            top_k(&scores, n, k, &mut out);
            assert_eq!(out, full[..k.min(n)], "n {n} k {k}");
        }
    }
}

#[test]
fn metrics_match_brute_force_on_random_scores() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for tied in [false, true] {
        // 30 items: K = 50 exceeds the catalogue and users with many train items leave fewer than K candidates.
        let case = random_case(&mut rng, 60, 30, tied);
        for ndcg in FORMS {
            for mask in MASKS {
                let cfg = EvalConfig { ks: KS.to_vec(), ndcg, mask, user_batch: 16 };
                check_against_brute_force(&case, &cfg);
            }
        }
    }
    let big = random_case(&mut rng, 40, 400, false);
    for ndcg in FORMS {
        check_against_brute_force(&big, &EvalConfig { ks: KS.to_vec(), ndcg, ..EvalConfig::default() });
    }
}

#[test]
fn masked_train_items_never_ranked_under_neg_inf_but_ranked_under_value() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let case = random_case(&mut rng, 30, 40, false);
    // Users with u % 3 == 1 have every train item scored 10, above all others.
    let neg = run(&case, &EvalConfig { ks: vec![50], ..EvalConfig::default() });
    let low = run(&case, &EvalConfig { ks: vec![50], mask: MaskMode::Value(-100.0), ..EvalConfig::default() });
    let high = run(&case, &EvalConfig { ks: vec![50], mask: MaskMode::Value(100.0), ..EvalConfig::default() });
    for (i, &u) in neg.users.iter().enumerate() {
        let (n_train, n_test) = (case.train.degree(u as usize), case.test.degree(u as usize));
        let overlap = case.test.row(u as usize).iter().filter(|&&t| case.train.contains(u as usize, t)).count();
        // K = 50 ≥ 40 items: every candidate is ranked, so recall counts the test items that are candidates.
        let want_neg = (n_test - overlap) as f64 / n_test as f64;
        assert!((neg.per_user["recall@50"][i] - want_neg).abs() < 1e-12, "user {u}");
        assert!((low.per_user["recall@50"][i] - 1.0).abs() < 1e-12, "user {u}");
        // With a huge mask value the train items fill the first ranks, so a non-overlapping test item's first
        // possible rank is n_train + 1.
        if overlap == 0 {
            assert!(high.per_user["mrr@50"][i] <= 1.0 / (n_train as f64 + 1.0) + 1e-12, "user {u}");
        }
    }
}

#[test]
fn user_batch_threads_and_dtype_do_not_change_results() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let case = random_case(&mut rng, 50, 64, true);
    let cfg = |user_batch| EvalConfig { user_batch, ndcg: NdcgForm::Bm3Fork, ..EvalConfig::default() };
    let reference = run(&case, &cfg(1024));
    for user_batch in [1, 2, 7, 39, 40, 41] {
        assert_eq!(run(&case, &cfg(user_batch)), reference, "user_batch {user_batch}");
    }
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    assert_eq!(pool.install(|| run(&case, &cfg(16))), reference);
    // f64 scores handed back as a transposed (non-contiguous) view give the same ranking.
    let score = |users: &[u32]| {
        let rows: Vec<f64> =
            users.iter().flat_map(|&u| case.scores[u as usize].iter().map(|&s| f64::from(s))).collect();
        Tensor::from_vec(rows, (users.len(), case.n_items), &Device::Cpu)?.t()?.contiguous()?.t()
    };
    assert_eq!(evaluate(score, &case.train, &case.test, &cfg(13)).unwrap(), reference);
}

#[test]
fn evaluate_embeddings_equals_evaluate_with_a_closure() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let (n_users, n_items, dim) = (45, 70, 6);
    // Small integers: every dot product is exact in f32, so the host loop and candle's matmul agree bit for
    // bit, and ties are common.
    let mut ints = |n: usize| (0..n).map(|_| rng.random_range(-2..=2) as f32).collect::<Vec<f32>>();
    let (user_vals, item_vals) = (ints(n_users * dim), ints(n_items * dim));
    let mut rows = |n: usize, max_len: usize| -> Vec<Vec<u32>> {
        (0..n)
            .map(|_| {
                let len = rng.random_range(0..max_len);
                (0..len).map(|_| rng.random_range(0..n_items as u32)).collect()
            })
            .collect()
    };
    let train = Csr::from_rows(n_items, &rows(n_users, 20));
    let test = Csr::from_rows(n_items, &rows(n_users, 6));
    let user_emb = Tensor::from_vec(user_vals.clone(), (n_users, dim), &Device::Cpu).unwrap();
    let item_emb = Tensor::from_vec(item_vals.clone(), (n_items, dim), &Device::Cpu).unwrap();
    for ndcg in FORMS {
        let cfg = EvalConfig { ks: vec![5, 20], ndcg, user_batch: 8, ..EvalConfig::default() };
        let from_emb = evaluate_embeddings(&user_emb, &item_emb, &train, &test, &cfg).unwrap();
        let score = |users: &[u32]| {
            let mut out = Vec::with_capacity(users.len() * n_items);
            for &u in users {
                for i in 0..n_items {
                    let (a, b) = (&user_vals[u as usize * dim..][..dim], &item_vals[i * dim..][..dim]);
                    out.push(a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>());
                }
            }
            Tensor::from_vec(out, (users.len(), n_items), &Device::Cpu)
        };
        assert_eq!(from_emb, evaluate(score, &train, &test, &cfg).unwrap());
    }
    // bf16 embeddings are scored in bf16 and copied as f32.
    let half = evaluate_embeddings(
        &user_emb.to_dtype(DType::BF16).unwrap(),
        &item_emb.to_dtype(DType::BF16).unwrap(),
        &train,
        &test,
        &EvalConfig::default(),
    )
    .unwrap();
    assert_eq!(half.users.len(), (0..n_users).filter(|&u| test.degree(u) > 0).count());
}
