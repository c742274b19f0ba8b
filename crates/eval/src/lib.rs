//! Full-ranking top-K evaluation for multimodal recommendation, following `spec/eval-protocol.md`.
//!
//! - [`evaluate`] scores every item for each user with a test item (through a closure, so any model fits;
//!   [`evaluate_embeddings`] for dot-product models), masks the user's train items ([`MaskMode`]), takes the
//!   top `max(ks)` once per user and reads every metric from that list: recall (macro, plus micro
//!   `recall_micro@K` in the summary), NDCG in the [`NdcgForm`] the report names, precision, hit and MRR.
//!   Metrics need only scores and train masks. Result keys are typed as [`MetricKey`] (`recall@20`) over
//!   [`Metric`], and [`EvalConfig::summary_keys`] lists those an evaluation produces.
//! - [`metrics_from_ranking`] is the pure per-user function, [`top_k`] the deterministic row ranking
//!   (ties → lower item index).
//! - [`paired_t_test`] / [`compare`] test per-user differences between two runs; the Student-t tail comes
//!   from our own regularized incomplete beta ([`regularized_incomplete_beta`]).
//! - [`bench::full_ranking`] times scoring and ranking on random data; [`baselines`] ranks by popularity or at random.
//!
//! Every metric is higher-is-better ([`Metric::higher_is_better`]).

pub mod baselines;
pub mod bench;
mod error;
mod evaluate;
mod keys;
mod metrics;
pub mod sequential;
mod topk;
mod ttest;

pub use error::{Error, Result};
pub use evaluate::{evaluate, evaluate_embeddings, EvalConfig, EvalResult};
pub use keys::{Metric, MetricKey};
pub use metrics::{metrics_from_ranking, MetricsAtK, NdcgForm, UserMetrics, BM3_FORK_DCG_DEPTH};
pub use topk::{top_k, top_k_excluding, MaskMode};
pub use ttest::{compare, ln_gamma, paired_t_test, regularized_incomplete_beta, student_t_cdf, student_t_sf, TTest};
