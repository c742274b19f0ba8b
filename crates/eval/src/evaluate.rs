//! Full-ranking evaluation: score every item for each test user, mask their train items, take the top K
//! once at the largest cutoff, and read every metric from that one ranked list (spec `eval-protocol.md` §3).

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};
use mmkd_data::Csr;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::keys::{Metric, MetricKey};
use crate::metrics::{metrics_unchecked, NdcgForm, UserMetrics};
use crate::topk::{rank_masked, MaskMode};

/// How to evaluate. Presets of the reference codes: GRCN = `{ ndcg: HitNormalised, mask: Value(1e-5) }`,
/// BM3 fork = `{ ndcg: Bm3Fork, mask: NegInf }` (and report `recall_micro@K`), MAML = `{ ndcg: HitNormalised }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)] // A typo in a config file is an error, not a silent default.
pub struct EvalConfig {
    /// Cutoffs K, reported in ascending order without duplicates (`topk` in MMRec).
    pub ks: Vec<usize>,
    /// The NDCG form reported as `ndcg@K`.
    pub ndcg: NdcgForm,
    /// How a user's train items are masked.
    pub mask: MaskMode,
    /// Users scored per call of the score function; host memory is `user_batch × n_items` f32.
    pub user_batch: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self { ks: vec![10, 20, 50], ndcg: NdcgForm::Standard, mask: MaskMode::NegInf, user_batch: 1024 }
    }
}

impl EvalConfig {
    /// The keys of the summary [`evaluate`] produces with this config: every [`Metric::FULL_RANKING`] metric at
    /// every cutoff (ascending, duplicates and zeros dropped), cutoff-major.
    pub fn summary_keys(&self) -> Vec<MetricKey> {
        let mut ks: Vec<usize> = self.ks.iter().copied().filter(|&k| k > 0).collect();
        ks.sort_unstable();
        ks.dedup();
        ks.into_iter().flat_map(|k| Metric::FULL_RANKING.map(|m| m.at(k))).collect()
    }
}

/// Metrics of one evaluation: per user and averaged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    /// Evaluated users (those with at least one test item), ascending.
    pub users: Vec<u32>,
    /// `"recall@K"`, `"ndcg@K"`, `"precision@K"`, `"hit@K"`, `"mrr@K"` → one value per entry of `users`.
    pub per_user: BTreeMap<String, Vec<f64>>,
    /// The macro mean over `users` of each per-user metric, plus `"recall_micro@K"` = `Σ_u h_u / Σ_u n_u`.
    pub summary: BTreeMap<String, f64>,
    /// The form behind `ndcg@K`.
    pub ndcg_form: NdcgForm,
    /// The cutoffs, ascending.
    pub ks: Vec<usize>,
}

impl EvalResult {
    /// The summary value of `key`, e.g. `get(Metric::Recall.at(20))`.
    pub fn get(&self, key: MetricKey) -> Option<f64> {
        self.summary.get(&key.to_string()).copied()
    }
}

/// Evaluates the scores of `score` against `test`, masking `train`.
///
/// `score(users)` returns a `(users.len(), n_items)` tensor of any float dtype on any device; it is called
/// with the evaluated users (those with a test item) in ascending order, `cfg.user_batch` at a time. Each
/// batch is copied to the host as f32, the users' train items are masked per `cfg.mask`, and each row's top
/// `max(ks)` items are taken once with [`crate::top_k`]'s order (ties → lower item index), in parallel over rows;
/// every metric is read from that ranked list. Ranking runs on the host because candle has no top-K kernel and
/// its CUDA `arg_sort` keeps a whole row in one block's shared memory, which fails beyond a few thousand items. `train` and `test` are user → items lists of the
/// same shape. The result does not depend on `user_batch` or on the number of threads.
pub fn evaluate<F, E>(mut score: F, train: &Csr, test: &Csr, cfg: &EvalConfig) -> Result<EvalResult>
where
    F: FnMut(&[u32]) -> std::result::Result<Tensor, E>,
    E: std::error::Error + Send + Sync + 'static,
{
    let ks = validate_cutoffs(cfg)?;
    validate_lists(train, test)?;
    let n_items = train.n_cols();
    let max_k = ks.last().copied().unwrap_or(0);
    let users: Vec<u32> = (0..test.n_rows()).filter(|&u| test.degree(u) > 0).map(|u| u as u32).collect();
    if users.is_empty() {
        return Err(Error::NoTestUsers);
    }
    let _span = tracing::debug_span!("evaluate", n_users = users.len(), n_items, max_k).entered();

    let mut per_user_metrics: Vec<UserMetrics> = Vec::with_capacity(users.len());
    for batch in users.chunks(cfg.user_batch) {
        let scores = score(batch).map_err(|e| Error::Scorer(Box::new(e)))?;
        if scores.dims() != [batch.len(), n_items] {
            return Err(Error::ScoreShape { expected: (batch.len(), n_items), found: scores.dims().to_vec() });
        }
        let scores = scores.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?; // (b * n_items,)
        let batch_metrics: Vec<UserMetrics> = scores
            .par_chunks(n_items)
            .zip(batch.par_iter())
            .map_init(
                || (Vec::with_capacity(n_items), Vec::with_capacity(max_k)),
                |(scratch, ranked), (row, &user)| {
                    rank_masked(row, train.row(user as usize), cfg.mask, max_k, scratch, ranked);
                    metrics_unchecked(ranked, test.row(user as usize), &ks, cfg.ndcg)
                },
            )
            .collect();
        per_user_metrics.extend(batch_metrics);
        tracing::trace!(users = batch.len(), "ranked batch");
    }

    let n_eval = users.len();
    let mut per_user: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut summary = BTreeMap::new();
    let total_test: usize = per_user_metrics.iter().map(|m| m.n_test).sum();
    for (i, &k) in ks.iter().enumerate() {
        for metric in Metric::FULL_RANKING {
            let key = metric.at(k).to_string();
            if metric == Metric::RecallMicro {
                // A ratio of sums over users, not a mean of per-user values.
                let total_hits: usize = per_user_metrics.iter().map(|m| m.at[i].hits).sum();
                summary.insert(key, total_hits as f64 / total_test as f64);
            } else if let Some(values) =
                per_user_metrics.iter().map(|m| m.at[i].value(metric)).collect::<Option<Vec<f64>>>()
            {
                summary.insert(key.clone(), values.iter().sum::<f64>() / n_eval as f64);
                per_user.insert(key, values);
            }
        }
    }
    Ok(EvalResult { users, per_user, summary, ndcg_form: cfg.ndcg, ks })
}

/// [`evaluate`] with `score = user_emb[users] · item_embᵀ`, a candle matmul on the tensors' device.
///
/// `user_emb`: (n_users, d), `item_emb`: (n_items, d), with `n_users`, `n_items` those of `train`/`test`.
pub fn evaluate_embeddings(
    user_emb: &Tensor,
    item_emb: &Tensor,
    train: &Csr,
    test: &Csr,
    cfg: &EvalConfig,
) -> Result<EvalResult> {
    let (n_users, n_items) = (train.n_rows(), train.n_cols());
    let shapes_ok = match (user_emb.dims(), item_emb.dims()) {
        (&[u, d_u], &[i, d_i]) => u == n_users && i == n_items && d_u == d_i,
        _ => false,
    };
    if !shapes_ok {
        return Err(Error::EmbeddingShape {
            n_users,
            n_items,
            user_emb: user_emb.dims().to_vec(),
            item_emb: item_emb.dims().to_vec(),
        });
    }
    let item_emb_t = item_emb.t()?; // (d, n_items)
    let device = user_emb.device().clone();
    evaluate(
        |users| {
            let idx = Tensor::from_slice(users, users.len(), &device)?;
            user_emb.index_select(&idx, 0)?.matmul(&item_emb_t) // (b, n_items)
        },
        train,
        test,
        cfg,
    )
}

/// The cutoffs, ascending and deduplicated, after checking the config.
fn validate_cutoffs(cfg: &EvalConfig) -> Result<Vec<usize>> {
    if cfg.ks.is_empty() {
        return Err(Error::NoCutoffs);
    }
    if cfg.ks.contains(&0) {
        return Err(Error::ZeroK);
    }
    if cfg.user_batch == 0 {
        return Err(Error::ZeroUserBatch);
    }
    let mut ks = cfg.ks.clone();
    ks.sort_unstable();
    ks.dedup();
    Ok(ks)
}

/// Train and test must have the same shape, and every item must be in range (rows are sorted, so the last
/// entry of each row is its largest).
fn validate_lists(train: &Csr, test: &Csr) -> Result<()> {
    if train.n_rows() != test.n_rows() || train.n_cols() != test.n_cols() {
        return Err(Error::CsrMismatch {
            train_users: train.n_rows(),
            train_items: train.n_cols(),
            test_users: test.n_rows(),
            test_items: test.n_cols(),
        });
    }
    let n_items = train.n_cols();
    for (which, list) in [("train", train), ("test", test)] {
        for user in 0..list.n_rows() {
            if let Some(&item) = list.row(user).last() {
                if item as usize >= n_items {
                    return Err(Error::ItemOutOfRange { which, user, item, n_items });
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Spec `eval-protocol.md` §4: user A (|T| = 4, 2 hits), user B (|T| = 1, 0 hits) → macro 0.25, micro 0.4.
    #[test]
    fn spec_recall_macro_and_micro() {
        // 10 items; scores descend with the item index, so the ranking is 0, 1, 2, ….
        let train = Csr::empty(2, 10);
        let test = Csr::from_rows(10, &[vec![0, 1, 7, 8], vec![9]]);
        let scores: Vec<f32> = (0..10).map(|i| 10.0 - i as f32).collect();
        let score = |users: &[u32]| Tensor::new(scores.as_slice(), &Device::Cpu)?.repeat((users.len(), 1));
        let cfg = EvalConfig { ks: vec![2], ..EvalConfig::default() };
        let r = evaluate(score, &train, &test, &cfg).unwrap();
        assert_eq!(r.users, vec![0, 1]);
        assert_eq!(r.per_user["recall@2"], vec![0.5, 0.0]);
        assert!((r.summary["recall@2"] - 0.25).abs() < 1e-12);
        assert!((r.summary["recall_micro@2"] - 0.4).abs() < 1e-12);
        assert_eq!(r.get(Metric::Recall.at(2)), Some(r.summary["recall@2"]));
        assert_eq!(r.get(Metric::RecallMicro.at(2)), Some(r.summary["recall_micro@2"]));
        assert_eq!(r.get(Metric::Recall.at(3)), None);
    }

    #[test]
    fn config_defaults_and_strict_serde() {
        let cfg: EvalConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(cfg, EvalConfig::default());
        assert_eq!(cfg.ks, vec![10, 20, 50]);
        let grcn: EvalConfig =
            serde_json::from_str(r#"{"ks": [20], "ndcg": "hit_normalised", "mask": {"value": 1e-5}}"#).unwrap();
        assert_eq!(grcn.mask, MaskMode::Value(1e-5));
        assert_eq!(grcn.ndcg, NdcgForm::HitNormalised);
        let neg: EvalConfig = serde_json::from_str(r#"{"mask": "neg_inf", "ndcg": "bm3_fork"}"#).unwrap();
        assert_eq!((neg.mask, neg.ndcg), (MaskMode::NegInf, NdcgForm::Bm3Fork));
        assert!(serde_json::from_str::<EvalConfig>(r#"{"k": [20]}"#).is_err());
    }

    #[test]
    fn rejects_bad_input() {
        let train = Csr::empty(2, 3);
        let test = Csr::from_rows(3, &[vec![1], vec![]]);
        let zeros = |users: &[u32]| Tensor::zeros((users.len(), 3), DType::F32, &Device::Cpu);
        let cfg = EvalConfig::default();
        let wrong = |users: &[u32]| Tensor::zeros((users.len(), 4), DType::F32, &Device::Cpu);
        let err = evaluate(wrong, &train, &test, &cfg).unwrap_err();
        assert!(matches!(err, Error::ScoreShape { expected: (1, 3), ref found } if found == &[1, 4]), "{err}");
        assert!(err.to_string().contains("(1, 3)"));
        let bad = |ks: Vec<usize>, user_batch| EvalConfig { ks, user_batch, ..EvalConfig::default() };
        assert!(matches!(evaluate(zeros, &train, &test, &bad(vec![], 8)), Err(Error::NoCutoffs)));
        assert!(matches!(evaluate(zeros, &train, &test, &bad(vec![5, 0], 8)), Err(Error::ZeroK)));
        assert!(matches!(evaluate(zeros, &train, &test, &bad(vec![5], 0)), Err(Error::ZeroUserBatch)));
        let small = Csr::empty(2, 2);
        assert!(matches!(evaluate(zeros, &small, &test, &cfg), Err(Error::CsrMismatch { .. })));
        let out_of_range = Csr::from_rows(3, &[vec![], vec![5]]);
        assert!(matches!(
            evaluate(zeros, &train, &out_of_range, &cfg),
            Err(Error::ItemOutOfRange { which: "test", user: 1, item: 5, n_items: 3 })
        ));
        assert!(matches!(evaluate(zeros, &train, &Csr::empty(2, 3), &cfg), Err(Error::NoTestUsers)));
        let failing = |_: &[u32]| -> candle_core::Result<Tensor> { candle_core::bail!("model exploded") };
        // The scorer's own error is kept as the source, typed.
        match evaluate(failing, &train, &test, &cfg) {
            Err(Error::Scorer(e)) => {
                let inner = e.downcast_ref::<candle_core::Error>().expect("the scorer's candle error");
                assert!(inner.to_string().contains("model exploded"), "{inner}");
            }
            other => panic!("expected Error::Scorer, got {other:?}"),
        }
        let emb = Tensor::zeros((2, 4), DType::F32, &Device::Cpu).unwrap();
        let items = Tensor::zeros((3, 5), DType::F32, &Device::Cpu).unwrap();
        assert!(matches!(evaluate_embeddings(&emb, &items, &train, &test, &cfg), Err(Error::EmbeddingShape { .. })));
    }

    #[test]
    fn duplicate_and_unsorted_cutoffs_are_normalised() {
        let train = Csr::empty(1, 4);
        let test = Csr::from_rows(4, &[vec![2]]);
        let score = |users: &[u32]| Tensor::new(&[[0f32, 1.0, 2.0, 3.0]], &Device::Cpu)?.repeat((users.len(), 1));
        let cfg = EvalConfig { ks: vec![3, 1, 3], ..EvalConfig::default() };
        let r = evaluate(score, &train, &test, &cfg).unwrap();
        assert_eq!(r.ks, vec![1, 3]);
        assert_eq!(r.per_user.len(), 10);
        assert_eq!(r.summary.len(), 12);
        let mut keys: Vec<String> = cfg.summary_keys().iter().map(MetricKey::to_string).collect();
        keys.sort();
        assert_eq!(r.summary.keys().cloned().collect::<Vec<_>>(), keys);
        for name in r.per_user.keys() {
            assert!(r.summary.contains_key(name), "{name}");
        }
        assert_eq!((r.summary["hit@1"], r.summary["hit@3"], r.summary["mrr@3"]), (0.0, 1.0, 0.5));
    }
}
