use std::path::PathBuf;

/// Everything that can go wrong when building, training, saving or loading an SGFD teacher.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is out of range or contradicts another one.
    #[error("invalid teacher configuration: {0}")]
    Config(String),
    /// A tensor handed to a loss or a layer has the wrong shape or dtype.
    #[error("{what}: expected {expected}, got {found}")]
    Shape { what: &'static str, expected: String, found: String },
    /// The features, labels or checkpoint do not fit together.
    #[error("{0}")]
    Mismatch(String),
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Features(#[from] mmkd_features::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn shape(what: &'static str, expected: impl Into<String>, found: impl std::fmt::Debug) -> Self {
        Self::Shape { what, expected: expected.into(), found: format!("{found:?}") }
    }
}
