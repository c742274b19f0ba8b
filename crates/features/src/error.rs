use std::path::PathBuf;

/// Everything that can go wrong when loading, checking or handing out item features.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: expected {expected}, found {found}")]
    Format { path: PathBuf, expected: String, found: String },
    #[error("{path}: row {row} (item {row}) has a non-finite value (NaN or Inf) in column {col}")]
    NonFinite { path: PathBuf, row: usize, col: usize },
    #[error("{path}: modality `{modality}` has {found} rows, expected one row per item ({expected} items)")]
    RowCount { path: PathBuf, modality: String, expected: usize, found: usize },
    #[error("unknown modality `{name}`; the store holds {available:?}")]
    UnknownModality { name: String, available: Vec<String> },
    #[error("modality `{0}` is already in the store")]
    DuplicateModality(String),
    #[error("item index {item} out of range for {n_items} items")]
    ItemOutOfRange { item: u32, n_items: usize },
    #[error("unsupported feature file extension for {path}: expected .npy or .safetensors")]
    Extension { path: PathBuf },
    #[error("{0}")]
    Invalid(String),
    /// A [`crate::FeatureExtractor`] implementation failed; its own typed error (e.g.
    /// `mmkd_student_kd::Error`) is the source, which a caller can report or downcast.
    #[error("the feature extractor failed")]
    Extractor(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// [`Error::Extractor`] carrying `source`, the typed error of an extractor implementation.
    pub fn extractor(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Extractor(Box::new(source))
    }
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
    pub(crate) fn format(path: impl Into<PathBuf>, expected: impl Into<String>, found: impl Into<String>) -> Self {
        Self::Format { path: path.into(), expected: expected.into(), found: found.into() }
    }
}
