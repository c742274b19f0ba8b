//! Deterministic top-K of one score row, on the host.
//!
//! Order: descending score; equal scores rank the lower item index first; NaN ranks as −∞; `-0.0` equals
//! `0.0`. The order is total, so the result does not depend on the selection algorithm or on threads.
//!
//! Top-K runs on the host rather than on the tensors' device: candle has no `topk` kernel, and its CUDA
//! `arg_sort_last_dim` bitonic-sorts each row inside one thread block, holding the row padded to a power of
//! two in shared memory (`candle-core/src/sort.rs`), so it fails for rows beyond a few thousand columns
//! (Clothing has 17,318 items → 32,768 × 4 bytes > 48 KiB) and would sort whole rows for K ≤ 50 anyway.
//! The score batch is copied to the host once, and its rows are masked and ranked in parallel with rayon.

use std::cmp::Ordering;

/// How a user's train items are treated before ranking.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskMode {
    /// Train items get score −∞ and are removed from the candidates: they never appear in the ranking, even
    /// when fewer than K other items remain (BM3 scores them −1e10, MAML removes them).
    #[default]
    NegInf,
    /// Train items get this score and stay candidates, so they can still be ranked (and count as misses).
    /// GRCN's legacy `full_accuracy` uses `1e-5` (`GRCN/Model_routing.py::full_accuracy`).
    Value(f32),
}

/// A sort key under which `total_cmp` gives the ranking order: NaN → −∞, `-0.0` → `0.0`.
#[inline]
fn key(score: f32) -> f32 {
    if score.is_nan() {
        f32::NEG_INFINITY
    } else if score == 0.0 {
        0.0
    } else {
        score
    }
}

/// `Less` when `a` ranks before `b`.
#[inline]
fn rank_cmp(a: &(f32, u32), b: &(f32, u32)) -> Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// The `k` best items of one score row, best first, written to `out` (cleared first).
///
/// Only `scores[..n_items]` is ranked (`n_items` is clamped to `scores.len()`); `out` receives
/// `min(k, n_items)` item indices. Descending score, ties → lower item index first, NaN treated as −∞.
pub fn top_k(scores: &[f32], n_items: usize, k: usize, out: &mut Vec<u32>) {
    let n_items = n_items.min(scores.len());
    let mut scratch = Vec::with_capacity(n_items);
    rank_masked(&scores[..n_items], &[], MaskMode::NegInf, k, &mut scratch, out);
}

/// The `k` best items of `scores` (one per item) that are not in `exclude`, best first, in the order of
/// [`top_k`]. `exclude` may be unsorted and hold duplicates or items beyond the row (those are ignored).
pub fn top_k_excluding(scores: &[f32], exclude: &[u32], k: usize) -> Vec<u32> {
    let mut masked: Vec<u32> = exclude.iter().copied().filter(|&i| (i as usize) < scores.len()).collect();
    masked.sort_unstable();
    masked.dedup();
    let (mut scratch, mut out) = (Vec::with_capacity(scores.len()), Vec::new());
    rank_masked(scores, &masked, MaskMode::NegInf, k, &mut scratch, &mut out);
    out
}

/// Top-`k` of `scores` after masking the sorted item list `masked` per `mode`. `scratch` is reused between
/// rows to avoid an allocation per user. Items in `masked` must be `< scores.len()` (checked by the caller).
pub(crate) fn rank_masked(
    scores: &[f32],
    masked: &[u32],
    mode: MaskMode,
    k: usize,
    scratch: &mut Vec<(f32, u32)>,
    out: &mut Vec<u32>,
) {
    scratch.clear();
    out.clear();
    // Merge-walk over the sorted mask while scanning items in order.
    let mut next_mask = masked.iter().copied().peekable();
    for (item, &s) in scores.iter().enumerate() {
        let item = item as u32;
        let is_masked = next_mask.peek() == Some(&item);
        if is_masked {
            next_mask.next();
            match mode {
                MaskMode::NegInf => continue,
                MaskMode::Value(v) => scratch.push((key(v), item)),
            }
        } else {
            scratch.push((key(s), item));
        }
    }
    let k = k.min(scratch.len());
    if k == 0 {
        return;
    }
    if k < scratch.len() {
        scratch.select_nth_unstable_by(k - 1, rank_cmp);
    }
    let best = &mut scratch[..k];
    best.sort_unstable_by(rank_cmp);
    out.extend(best.iter().map(|&(_, item)| item));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranked(scores: &[f32], k: usize) -> Vec<u32> {
        let mut out = vec![99];
        top_k(scores, scores.len(), k, &mut out);
        out
    }

    #[test]
    fn descending_with_ties_to_lower_index() {
        let s = [0.5, 1.0, 0.5, 2.0, 1.0, -1.0];
        assert_eq!(ranked(&s, 6), vec![3, 1, 4, 0, 2, 5]);
        assert_eq!(ranked(&s, 3), vec![3, 1, 4]);
        assert_eq!(ranked(&s, 1), vec![3]);
        assert_eq!(ranked(&s, 0), Vec::<u32>::new());
        // k beyond the row returns the whole row.
        assert_eq!(ranked(&s, 100).len(), 6);
    }

    #[test]
    fn nan_is_negative_infinity_and_signed_zero_ties() {
        let s = [f32::NAN, f32::NEG_INFINITY, -0.0, 0.0, f32::INFINITY, -3.0];
        // NaN (0) and −∞ (1) tie at the bottom; −0.0 (2) and 0.0 (3) tie.
        assert_eq!(ranked(&s, 6), vec![4, 2, 3, 5, 0, 1]);
    }

    #[test]
    fn n_items_limits_the_row() {
        let mut out = Vec::new();
        top_k(&[0.0, 1.0, 2.0, 3.0], 2, 5, &mut out);
        assert_eq!(out, vec![1, 0]);
        top_k(&[0.0, 1.0], 10, 5, &mut out);
        assert_eq!(out, vec![1, 0]);
    }

    #[test]
    fn excluding_takes_any_list_and_matches_a_brute_force_ranking() {
        let s = [0.5, 0.9, f32::NAN, 0.9, 0.1, 0.7, -0.0, 0.0];
        // Unsorted, with a duplicate and an item beyond the row.
        assert_eq!(top_k_excluding(&s, &[5, 40, 5], 3), vec![1, 3, 0]);
        assert_eq!(top_k_excluding(&s, &[3, 1], 10), vec![5, 0, 4, 6, 7, 2]);
        assert_eq!(top_k_excluding(&s, &[0, 1, 2, 3, 4, 5, 6, 7], 4), Vec::<u32>::new());
        // Brute force: sort every kept item by (key descending, index ascending).
        let exclude = [7u32, 0];
        let mut brute: Vec<u32> = (0..s.len() as u32).filter(|i| !exclude.contains(i)).collect();
        brute.sort_by(|&a, &b| key(s[b as usize]).total_cmp(&key(s[a as usize])).then(a.cmp(&b)));
        assert_eq!(top_k_excluding(&s, &exclude, 5), brute[..5].to_vec());
    }

    #[test]
    fn masking_removes_or_replaces_train_items() {
        let s = [0.1, 0.9, 0.8, 0.2, 0.0];
        let (mut scratch, mut out) = (Vec::new(), Vec::new());
        rank_masked(&s, &[1, 2], MaskMode::NegInf, 5, &mut scratch, &mut out);
        assert_eq!(out, vec![3, 0, 4]);
        rank_masked(&s, &[1, 2], MaskMode::Value(0.1), 5, &mut scratch, &mut out);
        // Items 0, 1, 2 all score 0.1 now: lower index first.
        assert_eq!(out, vec![3, 0, 1, 2, 4]);
    }
}
