//! Per-user ranking metrics at several cutoffs, read from one ranked list (spec `eval-protocol.md` §4).
//!
//! Every metric here is higher-is-better ([`Metric::higher_is_better`]).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::keys::Metric;

/// Which NDCG the reports carry. The reference codes disagree (`eval-protocol.md` §4), so a report names its
/// form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NdcgForm {
    /// DCG over the first K positions divided by the ideal DCG of `min(|T_u|, K)` hits, with `log2(r + 1)`
    /// discounts (MMRec `ndcg_`, what a reader of the paper expects).
    #[default]
    Standard,
    /// (A) GRCN and MAML: the ideal DCG uses `h_u(K)` hits instead of `min(|T_u|, K)`; 0 without a hit.
    /// Always ≥ the standard form. `log2` discounts (GRCN's natural log gives the same ratio).
    HitNormalised,
    /// (B) the SGFD fork of BM3 (`ndcg2_`): `h'` = hits in the first `K − 1` positions, ideal DCG over `h'`,
    /// DCG over the first [`BM3_FORK_DCG_DEPTH`] positions whatever K; natural-log discounts. Can exceed 1.
    Bm3Fork,
}

/// Depth of the DCG of [`NdcgForm::Bm3Fork`].
///
/// The fork sums the DCG over every retrieved position, and it retrieves `max(topk) = 20` positions. We keep
/// 20 whatever the cutoffs, so `@10` and `@20` reproduce the fork even when `@50` is also requested; when the
/// largest cutoff is below 20 only `max(ks)` positions are retrieved and the DCG runs over those.
pub const BM3_FORK_DCG_DEPTH: usize = 20;

/// One user's metrics at one cutoff K.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MetricsAtK {
    /// The cutoff.
    pub k: usize,
    /// `h_u(K)`: test items among the first K ranked items.
    pub hits: usize,
    /// `h_u / n_u` (0 when the user has no test item).
    pub recall: f64,
    /// `h_u / K`.
    pub precision: f64,
    /// `1[h_u > 0]`.
    pub hit: f64,
    /// `1 / rank` of the first hit within K, else 0.
    pub mrr: f64,
    /// NDCG in the requested [`NdcgForm`].
    pub ndcg: f64,
}

impl MetricsAtK {
    /// The value of `metric`, or `None` for a metric with no per-user value here ([`Metric::RecallMicro`],
    /// a summary only, and the next-item [`Metric::Hr`]).
    pub fn value(&self, metric: Metric) -> Option<f64> {
        match metric {
            Metric::Recall => Some(self.recall),
            Metric::Ndcg => Some(self.ndcg),
            Metric::Precision => Some(self.precision),
            Metric::Hit => Some(self.hit),
            Metric::Mrr => Some(self.mrr),
            Metric::RecallMicro | Metric::Hr => None,
        }
    }
}

/// One user's metrics at every requested cutoff.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserMetrics {
    /// `n_u = |T_u|`, the user's number of test items.
    pub n_test: usize,
    /// One entry per cutoff, in the order of `ks`.
    pub at: Vec<MetricsAtK>,
}

/// Metrics of one user from their ranked list (best first) and test items.
///
/// `ranked` should hold at least `max(ks)` items; a shorter list (few candidates left after masking) simply
/// has no items at the missing positions. `test_items` should be sorted and duplicate-free (an unsorted list
/// is sorted first). Errors on a cutoff of 0.
pub fn metrics_from_ranking(ranked: &[u32], test_items: &[u32], ks: &[usize], ndcg: NdcgForm) -> Result<UserMetrics> {
    if ks.contains(&0) {
        return Err(Error::ZeroK);
    }
    if test_items.windows(2).all(|w| w[0] < w[1]) {
        Ok(metrics_unchecked(ranked, test_items, ks, ndcg))
    } else {
        let mut sorted = test_items.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        Ok(metrics_unchecked(ranked, &sorted, ks, ndcg))
    }
}

/// [`metrics_from_ranking`] for validated `ks` (all ≥ 1) and sorted `test_items`.
pub(crate) fn metrics_unchecked(ranked: &[u32], test_items: &[u32], ks: &[usize], ndcg: NdcgForm) -> UserMetrics {
    let max_k = ks.iter().copied().max().unwrap_or(0);
    let depth = max_k.min(ranked.len());
    let is_hit: Vec<bool> = ranked[..depth].iter().map(|item| test_items.binary_search(item).is_ok()).collect();
    let first_hit = is_hit.iter().position(|&h| h);
    let n_test = test_items.len();
    let fork_depth = BM3_FORK_DCG_DEPTH.min(max_k).min(depth);
    let at = ks
        .iter()
        .map(|&k| {
            let top = &is_hit[..k.min(depth)];
            let hits = top.iter().filter(|&&h| h).count();
            let ndcg = match ndcg {
                NdcgForm::Standard => ratio(dcg(top, log2_discount), ideal_dcg(n_test.min(k), log2_discount)),
                NdcgForm::HitNormalised => ratio(dcg(top, log2_discount), ideal_dcg(hits, log2_discount)),
                NdcgForm::Bm3Fork => {
                    let h_prime = is_hit[..(k - 1).min(depth)].iter().filter(|&&h| h).count();
                    ratio(dcg(&is_hit[..fork_depth], ln_discount), ideal_dcg(h_prime, ln_discount))
                }
            };
            MetricsAtK {
                k,
                hits,
                recall: if n_test == 0 { 0.0 } else { hits as f64 / n_test as f64 },
                precision: hits as f64 / k as f64,
                hit: if hits > 0 { 1.0 } else { 0.0 },
                mrr: first_hit.filter(|&r| r < k).map_or(0.0, |r| 1.0 / (r + 1) as f64),
                ndcg,
            }
        })
        .collect();
    UserMetrics { n_test, at }
}

/// Discount of the 0-based position `r`: `1 / log2(r + 2)`, i.e. `1 / log2(rank + 1)`.
fn log2_discount(r: usize) -> f64 {
    1.0 / ((r + 2) as f64).log2()
}

/// Discount of the 0-based position `r`: `1 / ln(r + 2)`.
fn ln_discount(r: usize) -> f64 {
    1.0 / ((r + 2) as f64).ln()
}

fn dcg(is_hit: &[bool], discount: fn(usize) -> f64) -> f64 {
    is_hit.iter().enumerate().filter(|(_, &h)| h).map(|(r, _)| discount(r)).sum()
}

fn ideal_dcg(n_hits: usize, discount: fn(usize) -> f64) -> f64 {
    (0..n_hits).map(discount).sum()
}

/// `dcg / idcg`, 0 when there is nothing to normalise by.
fn ratio(dcg: f64, idcg: f64) -> f64 {
    if idcg > 0.0 {
        dcg / idcg
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ranked list of 20 items in which the 1-based `hit_ranks` hold test items; test items are
    /// `1000 + i`, and the test set has `n_test` items (hits first, the rest never ranked).
    fn fixture(hit_ranks: &[usize], n_test: usize) -> (Vec<u32>, Vec<u32>) {
        let test: Vec<u32> = (0..n_test as u32).map(|i| 1000 + i).collect();
        let mut ranked: Vec<u32> = (0..20).collect();
        for (i, &r) in hit_ranks.iter().enumerate() {
            ranked[r - 1] = test[i];
        }
        (ranked, test)
    }

    /// Spec `eval-protocol.md` §4 test vectors: hit ranks, n_u, then standard@20, (A)@20, (B)@20, (B)@10,
    /// standard@10.
    #[test]
    fn spec_ndcg_test_vectors() {
        #[rustfmt::skip]
        let rows: [(&[usize], usize, [f64; 5]); 6] = [
            (&[1, 20], 3, [0.576120, 0.752743, 1.227670, 1.227670, 0.469279]),
            (&[3], 1, [0.500000, 0.500000, 0.500000, 0.500000, 0.500000]),
            (&[2, 5], 4, [0.397322, 0.624051, 0.624051, 0.624051, 0.397322]),
            (&[20], 2, [0.139595, 0.227670, 0.0, 0.0, 0.0]),
            (&[1, 2, 3], 3, [1.0, 1.0, 1.0, 1.0, 1.0]),
            (&[12], 1, [0.270238, 0.270238, 0.270238, 0.0, 0.0]),
        ];
        let ks = [10, 20];
        for (hit_ranks, n_test, want) in rows {
            let (ranked, test) = fixture(hit_ranks, n_test);
            let ndcg = |form| metrics_from_ranking(&ranked, &test, &ks, form).unwrap();
            let (std, a, b) = (ndcg(NdcgForm::Standard), ndcg(NdcgForm::HitNormalised), ndcg(NdcgForm::Bm3Fork));
            let got = [std.at[1].ndcg, a.at[1].ndcg, b.at[1].ndcg, b.at[0].ndcg, std.at[0].ndcg];
            for (col, (g, w)) in got.iter().zip(want).enumerate() {
                assert!((g - w).abs() < 1e-6, "hits {hit_ranks:?}, column {col}: got {g}, want {w}");
            }
        }
    }

    #[test]
    fn counts_recall_precision_hit_mrr() {
        let (ranked, test) = fixture(&[2, 5], 4);
        let m = metrics_from_ranking(&ranked, &test, &[1, 2, 5, 20], NdcgForm::Standard).unwrap();
        assert_eq!(m.n_test, 4);
        let hits: Vec<usize> = m.at.iter().map(|a| a.hits).collect();
        assert_eq!(hits, vec![0, 1, 2, 2]);
        assert_eq!(m.at[0], MetricsAtK { k: 1, hits: 0, recall: 0.0, precision: 0.0, hit: 0.0, mrr: 0.0, ndcg: 0.0 });
        assert_eq!((m.at[1].recall, m.at[1].precision, m.at[1].hit, m.at[1].mrr), (0.25, 0.5, 1.0, 0.5));
        assert_eq!((m.at[3].recall, m.at[3].precision, m.at[3].mrr), (0.5, 0.1, 0.5));
    }

    #[test]
    fn short_rankings_unsorted_tests_and_zero_k() {
        // Only 3 candidates were left; K = 10 still divides precision by 10.
        let m = metrics_from_ranking(&[7, 3, 9], &[9, 3], &[10], NdcgForm::Standard).unwrap();
        assert_eq!((m.at[0].hits, m.at[0].precision, m.at[0].mrr), (2, 0.2, 0.5));
        let ideal = 1.0 + 1.0 / 3f64.log2();
        assert!((m.at[0].ndcg - (1.0 / 3f64.log2() + 0.5) / ideal).abs() < 1e-12);
        assert!(matches!(metrics_from_ranking(&[1], &[1], &[5, 0], NdcgForm::Standard), Err(Error::ZeroK)));
    }

    #[test]
    fn value_reads_each_field() {
        let at = MetricsAtK { k: 5, hits: 1, recall: 0.1, precision: 0.2, hit: 1.0, mrr: 0.5, ndcg: 0.3 };
        let got: Vec<Option<f64>> = Metric::ALL.iter().map(|&m| at.value(m)).collect();
        assert_eq!(got, vec![Some(0.1), None, Some(0.3), Some(0.2), Some(1.0), Some(0.5), None]);
    }

    #[test]
    fn forms_serialise_snake_case() {
        let json = serde_json::to_string(&[NdcgForm::Standard, NdcgForm::HitNormalised, NdcgForm::Bm3Fork]).unwrap();
        assert_eq!(json, r#"["standard","hit_normalised","bm3_fork"]"#);
    }
}
