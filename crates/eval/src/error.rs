//! The crate's one error type.

/// Everything that can go wrong while evaluating or comparing rankings.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The score closure failed; its own error (e.g. the model's) is the source.
    #[error("scoring failed")]
    Scorer(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The score closure returned a matrix of the wrong shape.
    #[error("score matrix for a batch of {} users must be ({}, {}), found {found:?}", expected.0, expected.0, expected.1)]
    ScoreShape {
        /// `(batch users, n_items)`.
        expected: (usize, usize),
        /// The dims that came back.
        found: Vec<usize>,
    },
    /// Embeddings that cannot be scored against each other or do not match the interaction lists.
    #[error(
        "embeddings must be user_emb ({n_users}, d) and item_emb ({n_items}, d), found {user_emb:?} and {item_emb:?}"
    )]
    EmbeddingShape { n_users: usize, n_items: usize, user_emb: Vec<usize>, item_emb: Vec<usize> },
    /// The train and test lists disagree on the number of users or items.
    #[error("train is {train_users} users × {train_items} items but test is {test_users} users × {test_items} items")]
    CsrMismatch { train_users: usize, train_items: usize, test_users: usize, test_items: usize },
    /// A train or test list names an item outside `0..n_items`.
    #[error("{which} list of user {user} holds item {item}, but there are only {n_items} items")]
    ItemOutOfRange { which: &'static str, user: usize, item: u32, n_items: usize },
    /// `ks` is empty.
    #[error("at least one cutoff K is required")]
    NoCutoffs,
    /// A cutoff of 0.
    #[error("cutoff K must be at least 1, found 0")]
    ZeroK,
    /// `user_batch = 0`.
    #[error("user_batch must be at least 1, found 0")]
    ZeroUserBatch,
    /// No user has a test item, so there is nothing to average.
    #[error("no user has a test item: nothing to evaluate")]
    NoTestUsers,
    /// Paired samples of different lengths.
    #[error("paired samples must have equal lengths, found {a} and {b}")]
    LengthMismatch { a: usize, b: usize },
    /// A paired t-test on fewer than two pairs.
    #[error("a paired t-test needs at least 2 pairs, found {0}")]
    TooFewPairs(usize),
    /// A NaN or infinite value in a paired sample.
    #[error("sample {sample} holds a non-finite value ({value}) at index {index}")]
    NonFinite { sample: &'static str, index: usize, value: f64 },
    /// Two results to compare were computed on different users.
    #[error("results cover different users ({a} vs {b} users; first difference at position {position})")]
    MismatchedUsers { a: usize, b: usize, position: usize },
    /// A metric name that has no per-user values in the result.
    #[error("no per-user metric `{name}` (available: {available})")]
    UnknownMetric { name: String, available: String },
    /// A metric name that is not one of [`crate::Metric`]'s.
    #[error("unknown metric `{0}` (known: {known})", known = crate::keys::known_metric_names())]
    UnknownMetricName(String),
    /// A metric key that is not `{metric}@{K}` with a known metric and K ≥ 1.
    #[error("metric key `{key}` must be `metric@K` with K ≥ 1: {reason}")]
    BadMetricKey { key: String, reason: String },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
