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
    /// Training produced a non-finite loss before any checkpoint could be selected.
    #[error("training diverged: {0}")]
    Diverged(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Nn(#[from] mmkd_nn::Error),
    #[error(transparent)]
    Features(#[from] mmkd_features::Error),
    #[error(transparent)]
    Data(#[from] mmkd_data::Error),
    #[error(transparent)]
    Eval(#[from] mmkd_eval::Error),
    #[error(transparent)]
    Teacher(#[from] mmkd_teacher::Error),
    #[error(transparent)]
    Student(#[from] mmkd_student_kd::Error),
    /// A checkpoint, state or result file that cannot be read or written.
    #[error("cannot access {path}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint or training state that does not fit the model, the optimiser or each other.
    #[error("{path}: {message}")]
    Checkpoint { path: std::path::PathBuf, message: String },
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
