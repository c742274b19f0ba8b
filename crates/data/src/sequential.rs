//! Placeholder (filled by the sequential issue).
