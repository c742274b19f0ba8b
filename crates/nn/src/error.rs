//! The crate's one error type.

/// What can go wrong in a sparse product, a graph builder or an optimiser.
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
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
