//! The crate's one error type, and the `context` helpers that wrap an error with what was being done.

use std::fmt::Display;
use std::path::PathBuf;

/// Everything that can go wrong while composing, running or reporting a run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A run spec, a command-line value or a configuration that is not valid; the message says why.
    #[error("{0}")]
    Invalid(String),
    /// A file or folder that cannot be read or written.
    #[error("{what} {path}")]
    Io {
        /// What was being done, e.g. `reading`.
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An error below, with what was being done when it happened.
    #[error("{what}")]
    Context {
        what: String,
        #[source]
        source: Box<Error>,
    },
    /// An I/O error whose path the [`Error::Context`] around it names.
    #[error(transparent)]
    Os(#[from] std::io::Error),
    #[error(transparent)]
    TomlRead(#[from] toml::de::Error),
    #[error(transparent)]
    TomlWrite(#[from] toml::ser::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Data(#[from] mmkd_data::Error),
    #[error(transparent)]
    Features(#[from] mmkd_features::Error),
    #[error(transparent)]
    Eval(#[from] mmkd_eval::Error),
    #[error(transparent)]
    Teacher(#[from] mmkd_teacher::Error),
    #[error(transparent)]
    Student(#[from] mmkd_student_kd::Error),
    #[error(transparent)]
    Backbones(#[from] mmkd_backbones::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An [`Error::Io`] of `path`.
    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { what, path: path.into(), source }
    }
}

/// Wraps an error (or a `None`) with what was being done, as `anyhow::Context` does, into an [`Error`].
pub trait Context<T> {
    fn context<D: Display>(self, what: D) -> Result<T>;
    fn with_context<D: Display, F: FnOnce() -> D>(self, what: F) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context<D: Display>(self, what: D) -> Result<T> {
        self.map_err(|e| Error::Context { what: what.to_string(), source: Box::new(e.into()) })
    }
    fn with_context<D: Display, F: FnOnce() -> D>(self, what: F) -> Result<T> {
        self.map_err(|e| Error::Context { what: what().to_string(), source: Box::new(e.into()) })
    }
}

impl<T> Context<T> for Option<T> {
    fn context<D: Display>(self, what: D) -> Result<T> {
        self.ok_or_else(|| Error::Invalid(what.to_string()))
    }
    fn with_context<D: Display, F: FnOnce() -> D>(self, what: F) -> Result<T> {
        self.ok_or_else(|| Error::Invalid(what().to_string()))
    }
}

/// Returns an [`Error::Invalid`] with a formatted message.
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::Error::Invalid(format!($($arg)*)))
    };
}
pub(crate) use bail;

/// Reads `path` to a string; the error names the file.
pub fn read_to_string(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io("reading", path, e))
}

/// Creates `dir` and its parents; the error names the folder.
pub fn create_dir_all(dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_chains_keep_the_source() {
        let inner: std::result::Result<(), Error> = Err(Error::Invalid("bad value".into()));
        let err = inner.context("reading x").unwrap_err();
        assert_eq!(err.to_string(), "reading x");
        let source = std::error::Error::source(&err).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("bad value"));
        assert_eq!(None::<u8>.context("missing").unwrap_err().to_string(), "missing");
    }
}
