//! Typed metric names: [`Metric`] (`recall`, `ndcg`, …) and [`MetricKey`] (`recall@20`), the keys of
//! [`crate::EvalResult`]'s `per_user` and `summary` maps.
//!
//! The maps themselves stay keyed by the string form (`MetricKey::to_string()`), so result files keep their
//! exact text; these types are how code builds, parses and checks those strings.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;

/// A ranking metric, without its cutoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Metric {
    /// `h_u(K) / n_u`, macro-averaged over users.
    Recall,
    /// `Σ_u h_u(K) / Σ_u n_u`, which exists only as a summary (no per-user values).
    RecallMicro,
    /// NDCG in the [`crate::NdcgForm`] of the evaluation (next-item: `1[r ≤ K] / log2(r + 1)`).
    Ndcg,
    /// `h_u(K) / K`.
    Precision,
    /// `1[h_u(K) > 0]` of a full-ranking evaluation.
    Hit,
    /// `1 / rank` of the first hit within K, else 0 (full ranking and next item).
    Mrr,
    /// `1[r ≤ K]` of a next-item evaluation's target.
    Hr,
}

impl Metric {
    /// Every metric, in declaration order.
    pub const ALL: [Metric; 7] =
        [Metric::Recall, Metric::RecallMicro, Metric::Ndcg, Metric::Precision, Metric::Hit, Metric::Mrr, Metric::Hr];

    /// The summary metrics of a full-ranking evaluation ([`crate::evaluate`]); all but
    /// [`Metric::RecallMicro`] also have per-user values.
    pub const FULL_RANKING: [Metric; 6] =
        [Metric::Recall, Metric::Ndcg, Metric::Precision, Metric::Hit, Metric::Mrr, Metric::RecallMicro];

    /// The metrics of a next-item evaluation ([`crate::sequential::evaluate_next_item`]), each with per-instance
    /// values.
    pub const NEXT_ITEM: [Metric; 3] = [Metric::Hr, Metric::Mrr, Metric::Ndcg];

    /// The name before `@K` in a result's keys, e.g. `"recall_micro"`.
    pub const fn name(self) -> &'static str {
        match self {
            Metric::Recall => "recall",
            Metric::RecallMicro => "recall_micro",
            Metric::Ndcg => "ndcg",
            Metric::Precision => "precision",
            Metric::Hit => "hit",
            Metric::Mrr => "mrr",
            Metric::Hr => "hr",
        }
    }

    /// Whether a larger value is better, for early stopping and model selection (true for every metric here).
    pub const fn higher_is_better(self) -> bool {
        match self {
            Metric::Recall
            | Metric::RecallMicro
            | Metric::Ndcg
            | Metric::Precision
            | Metric::Hit
            | Metric::Mrr
            | Metric::Hr => true,
        }
    }

    /// This metric at cutoff `k`.
    pub const fn at(self, k: usize) -> MetricKey {
        MetricKey { metric: self, k }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Metric {
    type Err = Error;

    /// Parses a name of [`Metric::name`]; anything else is [`Error::UnknownMetricName`].
    fn from_str(s: &str) -> Result<Self, Error> {
        Metric::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| Error::UnknownMetricName(s.to_owned()))
    }
}

/// The names of [`Metric::ALL`], comma-separated (for error messages).
pub(crate) fn known_metric_names() -> String {
    Metric::ALL.map(Metric::name).join(", ")
}

/// A metric at a cutoff, written `"{metric}@{k}"` (e.g. `"recall@20"`) wherever it is displayed or
/// serialised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MetricKey {
    pub metric: Metric,
    /// The cutoff K (at least 1 in any key that parses).
    pub k: usize,
}

impl MetricKey {
    /// Shorthand for `MetricKey { metric, k }`.
    pub const fn new(metric: Metric, k: usize) -> Self {
        Self { metric, k }
    }

    /// Whether a larger value is better ([`Metric::higher_is_better`]).
    pub const fn higher_is_better(self) -> bool {
        self.metric.higher_is_better()
    }
}

impl fmt::Display for MetricKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.metric.name(), self.k)
    }
}

impl FromStr for MetricKey {
    type Err = Error;

    /// Parses `"{metric}@{k}"` with a known metric and `k ≥ 1`; anything else is [`Error::BadMetricKey`].
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |reason: String| Error::BadMetricKey { key: s.to_owned(), reason };
        let (name, k) = s.split_once('@').ok_or_else(|| bad("no `@` before the cutoff".into()))?;
        let metric = name.parse::<Metric>().map_err(|e| bad(e.to_string()))?;
        match k.parse::<usize>() {
            Ok(0) => Err(bad("the cutoff must be at least 1".into())),
            Ok(k) => Ok(Self { metric, k }),
            Err(_) => Err(bad(format!("the cutoff `{k}` is not a positive integer"))),
        }
    }
}

impl Serialize for MetricKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MetricKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips() {
        let mut names: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
        for m in Metric::ALL {
            assert_eq!(m.name().parse::<Metric>().unwrap(), m);
            assert_eq!(m.to_string(), m.name());
            for k in [1, 5, 20, 50] {
                let key = m.at(k);
                assert_eq!(key.to_string(), format!("{}@{k}", m.name()));
                assert_eq!(key.to_string().parse::<MetricKey>().unwrap(), key);
            }
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Metric::ALL.len(), "two metrics share a name");
        assert_eq!(Metric::RecallMicro.at(20).to_string(), "recall_micro@20");
    }

    #[test]
    fn sets_are_subsets_of_all() {
        for m in Metric::FULL_RANKING.iter().chain(&Metric::NEXT_ITEM) {
            assert!(Metric::ALL.contains(m), "{m}");
        }
        assert!(!Metric::FULL_RANKING.contains(&Metric::Hr) && Metric::NEXT_ITEM.contains(&Metric::Hr));
    }

    #[test]
    fn every_metric_is_higher_is_better() {
        assert!(Metric::ALL.iter().all(|m| m.higher_is_better()));
        assert!("hr@20".parse::<MetricKey>().unwrap().higher_is_better());
        assert!("recall_micro@20".parse::<MetricKey>().unwrap().higher_is_better());
    }

    #[test]
    fn bad_names_and_keys_are_errors_naming_the_text() {
        let err = "bpr".parse::<Metric>().unwrap_err();
        assert!(matches!(err, Error::UnknownMetricName(ref n) if n == "bpr"), "{err}");
        assert!(err.to_string().contains("`bpr`") && err.to_string().contains("recall_micro"), "{err}");
        assert!("Recall".parse::<Metric>().is_err());
        for text in ["recall@0", "recall@x", "recall@", "recall@-1", "bpr@20", "recall", "@20", "recall@20@5"] {
            let err = text.parse::<MetricKey>().unwrap_err();
            assert!(matches!(err, Error::BadMetricKey { ref key, .. } if key == text), "{text}: {err}");
            assert!(err.to_string().contains(&format!("`{text}`")), "{text}: {err}");
        }
        assert!("recall@0".parse::<MetricKey>().unwrap_err().to_string().contains("at least 1"));
        assert!("bpr@20".parse::<MetricKey>().unwrap_err().to_string().contains("unknown metric `bpr`"));
    }

    #[test]
    fn keys_serialise_as_their_text() {
        let keys = vec![Metric::Recall.at(20), Metric::Hr.at(5)];
        let json = serde_json::to_string(&keys).unwrap();
        assert_eq!(json, r#"["recall@20","hr@5"]"#);
        assert_eq!(serde_json::from_str::<Vec<MetricKey>>(&json).unwrap(), keys);
        let err = serde_json::from_str::<MetricKey>(r#""recall@x""#).unwrap_err();
        assert!(err.to_string().contains("recall@x"), "{err}");
    }
}
