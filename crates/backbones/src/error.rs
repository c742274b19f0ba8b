//! The crate's one error type.

/// Everything that can go wrong in a backbone, its graph or its optimiser.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value out of its range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A tensor or graph of the wrong shape.
    #[error("shape mismatch: {0}")]
    Shape(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Features(#[from] mmkd_features::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
