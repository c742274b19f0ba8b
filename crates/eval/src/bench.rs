//! Full-ranking throughput on random data of a given shape (Office: 4,874 users × 2,406 items).
//!
//! Returns numbers for the caller to print (`cargo xtask bench eval`, whose defaults are the Office shape);
//! nothing here asserts on time.

use std::fmt;
use std::time::Instant;

use candle_core::{Device, Tensor};
use mmkd_data::{stream, Csr};
use rand::Rng;
use serde::Serialize;

use crate::error::Result;
use crate::evaluate::{evaluate, EvalConfig};
use crate::keys::Metric;

/// Timed scoring matmul runs (after one warm-up run).
const MATMUL_REPEATS: usize = 5;

/// Timings of one full-ranking evaluation. Seconds are wall-clock, with the device synchronised.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FullRankingBench {
    pub n_users: usize,
    pub n_items: usize,
    /// Embedding width d.
    pub dim: usize,
    /// The cutoff K.
    pub k: usize,
    /// Users with a test item, i.e. the rows actually ranked.
    pub n_eval_users: usize,
    /// The device, as candle names its location.
    pub device: String,
    /// Best of the timed runs of the scoring matmul alone, `(n_users, d) · (d, n_items)`.
    pub matmul_secs: f64,
    /// Median of the same runs.
    pub matmul_median_secs: f64,
    /// `2 · n_users · n_items · d / matmul_secs / 1e9`.
    pub gflops: f64,
    /// Time spent inside the score closure during `evaluate` (gather + matmul per batch).
    pub score_secs: f64,
    /// The rest of `evaluate`: host copy, masking, top-K and metrics.
    pub topk_secs: f64,
    /// The whole `evaluate` call.
    pub total_secs: f64,
    /// `recall@K` of the random scores, a sanity value (≈ K / n_items).
    pub recall: f64,
}

impl fmt::Display for FullRankingBench {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |s: f64| s * 1e3;
        write!(
            f,
            "full ranking {} users ({} evaluated) × {} items, d = {}, K = {} on {}: matmul {:.2} ms best / {:.2} ms \
             median ({:.1} GFLOP/s); evaluate {:.1} ms = scoring {:.1} ms + copy/top-K/metrics {:.1} ms",
            self.n_users,
            self.n_eval_users,
            self.n_items,
            self.dim,
            self.k,
            self.device,
            ms(self.matmul_secs),
            ms(self.matmul_median_secs),
            self.gflops,
            ms(self.total_secs),
            ms(self.score_secs),
            ms(self.topk_secs),
        )
    }
}

/// Times full-ranking evaluation of random embeddings, `(n_users, dim)` and `(n_items, dim)` uniform in
/// `[-1, 1)`, against random train/test lists shaped like Office: 5–16 interactions per user, each in test with
/// probability 0.3, the first always in train. The scoring matmul is timed alone (one warm-up, then
/// 5 runs: best and median), then one [`evaluate`] at cutoff `k` with the default batch size.
pub fn full_ranking(
    n_users: usize,
    n_items: usize,
    dim: usize,
    k: usize,
    device: &Device,
    seed: u64,
) -> Result<FullRankingBench> {
    let (user_emb, item_emb) = random_embeddings(n_users, n_items, dim, device, seed)?;
    let (train, test) = office_like_lists(n_users, n_items, seed);

    let item_emb_t = item_emb.t()?; // (dim, n_items)
    let mut runs = Vec::with_capacity(MATMUL_REPEATS);
    for run in 0..=MATMUL_REPEATS {
        device.synchronize()?;
        let started = Instant::now();
        let scores = user_emb.matmul(&item_emb_t)?; // (n_users, n_items)
        device.synchronize()?;
        let secs = started.elapsed().as_secs_f64();
        drop(scores);
        if run > 0 {
            runs.push(secs);
        }
    }
    runs.sort_by(f64::total_cmp);
    let matmul_secs = runs[0];
    let matmul_median_secs = runs[runs.len() / 2];

    let cfg = EvalConfig { ks: vec![k], ..EvalConfig::default() };
    let mut score_secs = 0.0;
    let started = Instant::now();
    let result = evaluate(
        |users| {
            let scoring = Instant::now();
            let idx = Tensor::from_slice(users, users.len(), device)?;
            let scores = user_emb.index_select(&idx, 0)?.matmul(&item_emb_t)?; // (b, n_items)
            device.synchronize()?;
            score_secs += scoring.elapsed().as_secs_f64();
            Ok::<_, candle_core::Error>(scores)
        },
        &train,
        &test,
        &cfg,
    )?;
    let total_secs = started.elapsed().as_secs_f64();
    let bench = FullRankingBench {
        n_users,
        n_items,
        dim,
        k,
        n_eval_users: result.users.len(),
        device: format!("{:?}", device.location()),
        matmul_secs,
        matmul_median_secs,
        gflops: 2.0 * n_users as f64 * n_items as f64 * dim as f64 / matmul_secs / 1e9,
        score_secs,
        topk_secs: total_secs - score_secs,
        total_secs,
        recall: result.get(Metric::Recall.at(k)).unwrap_or(f64::NAN),
    };
    tracing::info!(
        matmul_secs = bench.matmul_secs,
        gflops = bench.gflops,
        total_secs = bench.total_secs,
        "full-ranking bench"
    );
    Ok(bench)
}

/// User and item embeddings, `(n_users, dim)` and `(n_items, dim)`, uniform in `[-1, 1)`.
fn random_embeddings(
    n_users: usize,
    n_items: usize,
    dim: usize,
    device: &Device,
    seed: u64,
) -> Result<(Tensor, Tensor)> {
    let mut rng = stream(seed, "bench-embeddings");
    let mut uniform = |n: usize| (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect::<Vec<_>>();
    let user_emb = Tensor::from_vec(uniform(n_users * dim), (n_users, dim), device)?;
    let item_emb = Tensor::from_vec(uniform(n_items * dim), (n_items, dim), device)?;
    Ok((user_emb, item_emb))
}

/// Random user → items train and test lists: 5–16 distinct items per user (capped at `n_items`), each in
/// test with probability 0.3 except the first, which is always in train.
fn office_like_lists(n_users: usize, n_items: usize, seed: u64) -> (Csr, Csr) {
    let mut rng = stream(seed, "bench-interactions");
    let (mut train, mut test) = (Vec::with_capacity(n_users), Vec::with_capacity(n_users));
    for _ in 0..n_users {
        let n = rng.random_range(5..=16usize).min(n_items);
        let mut items: Vec<u32> = Vec::with_capacity(n);
        while items.len() < n {
            let item = rng.random_range(0..n_items as u32);
            if !items.contains(&item) {
                items.push(item);
            }
        }
        let (mut tr, mut te) = (vec![items[0]], Vec::new());
        for &item in &items[1..] {
            if rng.random_bool(0.3) {
                te.push(item);
            } else {
                tr.push(item);
            }
        }
        train.push(tr);
        test.push(te);
    }
    (Csr::from_rows(n_items, &train), Csr::from_rows(n_items, &test))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reported numbers are those of the data: recall@K equals a brute-force ranking of the same
    /// embeddings and lists, and every timing is finite and positive.
    #[test]
    fn small_bench_reports_the_brute_force_recall() {
        let (n_users, n_items, dim, k, seed) = (300, 200, 16, 20, 0);
        let b = full_ranking(n_users, n_items, dim, k, &Device::Cpu, seed).unwrap();
        assert_eq!((b.n_users, b.n_items, b.dim, b.k), (300, 200, 16, 20));
        for secs in [b.matmul_secs, b.matmul_median_secs, b.score_secs, b.total_secs] {
            assert!(secs.is_finite() && secs > 0.0, "{b:?}");
        }
        assert!(b.matmul_secs <= b.matmul_median_secs && b.gflops.is_finite() && b.gflops > 0.0);
        assert!(b.total_secs >= b.score_secs && b.topk_secs >= 0.0);

        let (user_emb, item_emb) = random_embeddings(n_users, n_items, dim, &Device::Cpu, seed).unwrap();
        let (train, test) = office_like_lists(n_users, n_items, seed);
        let scores = user_emb.matmul(&item_emb.t().unwrap()).unwrap().to_vec2::<f32>().unwrap(); // (n_users, n_items)
        let mut recalls = Vec::new();
        for (u, row) in scores.iter().enumerate().filter(|&(u, _)| test.degree(u) > 0) {
            let mut order: Vec<u32> = (0..n_items as u32).filter(|&i| !train.contains(u, i)).collect();
            order.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
            let hits = order.iter().take(k).filter(|&&i| test.contains(u, i)).count();
            recalls.push(hits as f64 / test.degree(u) as f64);
        }
        assert_eq!(b.n_eval_users, recalls.len());
        let want = recalls.iter().sum::<f64>() / recalls.len() as f64;
        assert!((b.recall - want).abs() < 1e-12, "reported {}, brute force {want}", b.recall);
        assert!(b.recall > 0.0, "{}", b.recall);
        let line = b.to_string();
        assert!(line.contains("300 users") && line.contains("GFLOP/s"), "{line}");
    }

    #[test]
    fn lists_are_disjoint_with_a_train_item_each() {
        let (train, test) = office_like_lists(100, 50, 3);
        for u in 0..100 {
            assert!(train.degree(u) >= 1);
            assert!((5..=16).contains(&(train.degree(u) + test.degree(u))));
            assert!(test.row(u).iter().all(|&i| !train.contains(u, i)));
        }
    }
}
