//! Next-item evaluation for sequential recommendation (spec `kdsr-mmsr.md` §10): each test instance has one
//! target item; every item is ranked (full ranking, no candidate sampling, history items not removed) and
//! the target's rank `r` (1 = best) gives `HR@K = 1[r ≤ K]`, `MRR@K = 1[r ≤ K]/r` and
//! `NDCG@K = 1[r ≤ K]/log2(r + 1)` (one relevant item, so every NDCG form coincides).
//!
//! Results are [`EvalResult`]s whose "users" are the test-instance indices, so the paired t-test and the
//! report code read them as they read user-based evaluations. Values are fractions in `[0, 1]` (the paper
//! prints them ×100).
//!
//! Ties: an item scores above the target when its score is larger, or equal with a lower item index (the
//! order of [`crate::top_k`]). A NaN target score ranks last; NaN scores of other items never rank above.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::evaluate::EvalResult;
use crate::keys::{Metric, MetricKey};
use crate::metrics::NdcgForm;

/// The keys [`evaluate_next_item`] produces for the cutoffs `ks`: every [`Metric::NEXT_ITEM`] metric at every
/// cutoff (ascending, duplicates and zeros dropped), cutoff-major.
pub fn next_item_keys(ks: &[usize]) -> Vec<MetricKey> {
    let mut ks: Vec<usize> = ks.iter().copied().filter(|&k| k > 0).collect();
    ks.sort_unstable();
    ks.dedup();
    ks.into_iter().flat_map(|k| Metric::NEXT_ITEM.map(|m| m.at(k))).collect()
}

/// The 1-based rank of column `target` in `scores` (ties → lower index first; a NaN target ranks last).
pub fn target_rank(scores: &[f32], target: usize) -> usize {
    let st = scores[target];
    if st.is_nan() {
        return scores.len();
    }
    let mut above = 0usize;
    for (j, &s) in scores.iter().enumerate() {
        if s > st || (s == st && j < target) {
            above += 1;
        }
    }
    above + 1
}

/// `(HR@K, MRR@K, NDCG@K)` of a target at 1-based `rank`.
pub fn next_item_metrics(rank: usize, k: usize) -> (f64, f64, f64) {
    if rank == 0 || rank > k {
        return (0.0, 0.0, 0.0);
    }
    let r = rank as f64;
    (1.0, 1.0 / r, 1.0 / (r + 1.0).log2())
}

/// The value of `metric` in the `(HR, MRR, NDCG)` triple of [`next_item_metrics`]; `None` for a metric that
/// is not next-item.
fn next_item_value(metric: Metric, (hr, mrr, ndcg): (f64, f64, f64)) -> Option<f64> {
    match metric {
        Metric::Hr => Some(hr),
        Metric::Mrr => Some(mrr),
        Metric::Ndcg => Some(ndcg),
        Metric::Recall | Metric::RecallMicro | Metric::Precision | Metric::Hit => None,
    }
}

/// Evaluates next-item predictions.
///
/// `score(start, end)` returns the `(end − start, n_items)` scores of test instances `start..end`, column `j`
/// scoring item `j + 1` (padding excluded). `targets[i]` is instance `i`'s target item id (1..=n_items). It is
/// called with consecutive ranges of at most `batch` instances. The result's `users` are the instance indices
/// `0..targets.len()`, `per_user` holds `hr@K`, `mrr@K`, `ndcg@K` per instance, `summary` their means.
pub fn evaluate_next_item<F, E>(
    mut score: F,
    targets: &[u32],
    n_items: usize,
    ks: &[usize],
    batch: usize,
) -> Result<EvalResult>
where
    F: FnMut(usize, usize) -> std::result::Result<Tensor, E>,
    E: std::error::Error + Send + Sync + 'static,
{
    let mut ks = ks.to_vec();
    ks.sort_unstable();
    ks.dedup();
    if ks.is_empty() {
        return Err(Error::NoCutoffs);
    }
    if ks[0] == 0 {
        return Err(Error::ZeroK);
    }
    if batch == 0 {
        return Err(Error::ZeroUserBatch);
    }
    if targets.is_empty() {
        return Err(Error::NoTestUsers);
    }
    if let Some((i, &t)) = targets.iter().enumerate().find(|(_, &t)| t == 0 || t as usize > n_items) {
        return Err(Error::ItemOutOfRange { which: "target", user: i, item: t, n_items });
    }
    let mut ranks = Vec::with_capacity(targets.len());
    let mut start = 0;
    while start < targets.len() {
        let end = (start + batch).min(targets.len());
        let s = score(start, end).map_err(|e| Error::Scorer(Box::new(e)))?;
        let dims = s.dims().to_vec();
        if dims != [end - start, n_items] {
            return Err(Error::ScoreShape { expected: (end - start, n_items), found: dims });
        }
        let rows = s.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let batch_ranks: Vec<usize> =
            rows.par_iter().zip(&targets[start..end]).map(|(row, &t)| target_rank(row, t as usize - 1)).collect();
        ranks.extend(batch_ranks);
        start = end;
    }
    let mut per_user = BTreeMap::new();
    let mut summary = BTreeMap::new();
    for &k in &ks {
        let m: Vec<(f64, f64, f64)> = ranks.iter().map(|&r| next_item_metrics(r, k)).collect();
        for metric in Metric::NEXT_ITEM {
            let Some(v) = m.iter().map(|&t| next_item_value(metric, t)).collect::<Option<Vec<f64>>>() else {
                continue;
            };
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            let key = metric.at(k).to_string();
            summary.insert(key.clone(), mean);
            per_user.insert(key, v);
        }
    }
    Ok(EvalResult { users: (0..targets.len() as u32).collect(), per_user, summary, ndcg_form: NdcgForm::Standard, ks })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn spec_metric_examples() {
        // Spec §14 test 6: rank 3 and rank 6.
        assert_eq!(next_item_metrics(3, 5), (1.0, 1.0 / 3.0, 0.5));
        assert_eq!(next_item_metrics(3, 20).1, 1.0 / 3.0);
        assert_eq!(next_item_metrics(6, 5), (0.0, 0.0, 0.0));
        let (hr, mrr, _) = next_item_metrics(6, 20);
        assert_eq!((hr, mrr), (1.0, 1.0 / 6.0));
    }

    #[test]
    fn rank_with_ties_and_nan() {
        let s = [0.5f32, 0.9, 0.5, f32::NAN, 0.1];
        assert_eq!(target_rank(&s, 1), 1);
        assert_eq!(target_rank(&s, 0), 2); // the tie at index 2 comes after
        assert_eq!(target_rank(&s, 2), 3);
        assert_eq!(target_rank(&s, 4), 4); // the NaN never ranks above
        assert_eq!(target_rank(&s, 3), 5);
    }

    #[test]
    fn evaluation_matches_brute_force() -> Result<()> {
        // 7 instances, 30 items, random scores: compare with sorting each row.
        let dev = Device::Cpu;
        let n_items = 30;
        let mut state = 12345u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 33) % 1000) as f32 / 1000.0
        };
        let scores: Vec<f32> = (0..7 * n_items).map(|_| next()).collect();
        let targets: Vec<u32> = (0..7).map(|i| (i * 4 + 1) as u32).collect();
        let scores_t = Tensor::from_vec(scores.clone(), (7, n_items), &dev)?;
        let res = evaluate_next_item(|a, b| scores_t.narrow(0, a, b - a), &targets, n_items, &[20, 5], 3)?;
        assert_eq!(res.ks, vec![5, 20]);
        for (i, &t) in targets.iter().enumerate() {
            let row = &scores[i * n_items..(i + 1) * n_items];
            let mut order: Vec<usize> = (0..n_items).collect();
            order.sort_by(|&a, &b| row[b].partial_cmp(&row[a]).unwrap_or(std::cmp::Ordering::Equal).then(a.cmp(&b)));
            let rank = order.iter().position(|&j| j == t as usize - 1).map(|p| p + 1).unwrap_or(0);
            let hr5 = if rank <= 5 { 1.0 } else { 0.0 };
            assert_eq!(res.per_user["hr@5"][i], hr5);
            let mrr20 = if rank <= 20 { 1.0 / rank as f64 } else { 0.0 };
            assert!((res.per_user["mrr@20"][i] - mrr20).abs() < 1e-12);
            let ndcg5 = if rank <= 5 { 1.0 / ((rank + 1) as f64).log2() } else { 0.0 };
            assert!((res.per_user["ndcg@5"][i] - ndcg5).abs() < 1e-12);
        }
        let mut keys: Vec<String> = next_item_keys(&[20, 5, 20]).iter().map(MetricKey::to_string).collect();
        keys.sort();
        assert_eq!(keys, ["hr@20", "hr@5", "mrr@20", "mrr@5", "ndcg@20", "ndcg@5"]);
        assert_eq!(res.summary.keys().cloned().collect::<Vec<_>>(), keys);
        assert_eq!(res.per_user.keys().cloned().collect::<Vec<_>>(), keys);
        assert_eq!(res.get(Metric::Hr.at(20)), Some(res.summary["hr@20"]));
        let mean: f64 = res.per_user["hr@20"].iter().sum::<f64>() / 7.0;
        assert!((res.summary["hr@20"] - mean).abs() < 1e-12);
        assert!(evaluate_next_item(|a, b| scores_t.narrow(0, a, b - a), &[0], n_items, &[5], 3).is_err());
        assert!(evaluate_next_item(|a, b| scores_t.narrow(0, a, b - a), &[31], n_items, &[5], 3).is_err());
        Ok(())
    }
}
