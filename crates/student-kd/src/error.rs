/// Everything that can go wrong when building or running the SGFD student and its distillation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is out of range or contradicts another one.
    #[error("invalid SGFD configuration: {0}")]
    Config(String),
    /// A tensor handed to a loss or a layer has the wrong shape.
    #[error("{what}: expected {expected}, got {found}")]
    Shape { what: &'static str, expected: String, found: String },
    /// The features, labels and teacher do not fit together.
    #[error("{0}")]
    Mismatch(String),
    #[error(transparent)]
    Teacher(#[from] mmkd_teacher::Error),
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

/// How an SGFD error leaves through the [`mmkd_features::FeatureExtractor`] seam: features and candle errors
/// pass through unchanged (the seam's error has variants for both), and SGFD's own errors become the typed
/// source of [`mmkd_features::Error::Extractor`].
impl From<Error> for mmkd_features::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Features(e) => e,
            Error::Candle(e) | Error::Teacher(mmkd_teacher::Error::Candle(e)) => Self::Candle(e),
            other => Self::extractor(other),
        }
    }
}
