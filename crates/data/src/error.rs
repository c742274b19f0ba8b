//! The crate's one error type. Messages name the file and, for a bad cell, its 1-based line (header = line 1).

use std::path::PathBuf;

/// Everything that can go wrong while loading or using a data set.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or folder could not be opened or read.
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The folder holds neither layout.
    #[error("{dir}: expected `train.csv` (SGFD layout) or exactly one `*.inter` file (MMRec layout), found {found}")]
    Layout { dir: PathBuf, found: String },
    /// The CSV parser rejected the file.
    #[error("{path}: cannot parse as a delimited table: {message}")]
    Csv { path: PathBuf, message: String },
    /// A required column is absent from the header.
    #[error("{path}:1: missing column `{column}`; the header has {found}")]
    MissingColumn { path: PathBuf, column: &'static str, found: String },
    /// The file has no data rows.
    #[error("{path}: no data rows")]
    Empty { path: PathBuf },
    /// No user and no item keeps `min_count` interactions after the iterated k-core filter.
    #[error("{path}: nothing survives the iterated {min_count}-core filter ({rows} rows read)")]
    NothingSurvives { path: PathBuf, min_count: usize, rows: usize },
    /// A loading option out of its range.
    #[error("invalid option: {0}")]
    Options(String),
    /// An id cell is not an integer (or does not fit in 32 bits).
    #[error("{path}:{line}: column `{column}` must be a non-negative integer, found `{found}`")]
    BadId { path: PathBuf, line: usize, column: &'static str, found: String },
    /// An id cell is a negative integer.
    #[error("{path}:{line}: column `{column}` must be a non-negative integer, found negative `{found}`")]
    NegativeId { path: PathBuf, line: usize, column: &'static str, found: String },
    /// An item id is not below the item count.
    #[error("{path}:{line}: item id {item} is out of range: there are {n_items} items, as implied by {implied_by}")]
    ItemOutOfRange { path: PathBuf, line: usize, item: u32, n_items: usize, implied_by: String },
    /// An MMRec `x_label` cell is not 0, 1 or 2.
    #[error("{path}:{line}: column `x_label` must be 0 (train), 1 (valid) or 2 (test), found `{found}`")]
    BadSplitLabel { path: PathBuf, line: usize, found: String },
    /// The labels file does not have one entry per item.
    #[error("{path}: {found} labels, but there are {n_items} items, as implied by {implied_by}")]
    LabelsLength { path: PathBuf, found: usize, n_items: usize, implied_by: String },
    /// The labels file does not hold integers.
    #[error("{path}: labels must have an integer dtype (i1..i8, u1..u8), found `{dtype}`")]
    LabelsDtype { path: PathBuf, dtype: String },
    /// An npy array has the wrong number of dimensions.
    #[error("{path}: expected {expected}, found shape {found:?}")]
    NpyShape { path: PathBuf, expected: &'static str, found: Vec<u64> },
    /// An npy file is malformed or holds a value we cannot represent.
    #[error("{path}: {message}")]
    Npy { path: PathBuf, message: String },
    /// Two feature files disagree on the number of items.
    #[error("feature files disagree on the item count: {first} has {first_rows} rows, {other} has {other_rows}")]
    FeatureRows { first: PathBuf, first_rows: usize, other: PathBuf, other_rows: usize },
    /// An in-memory pair lies outside the declared matrix.
    #[error("{split} pair #{index} ({user}, {item}) is out of range for {n_users} users × {n_items} items")]
    PairOutOfRange { split: &'static str, index: usize, user: u32, item: u32, n_users: usize, n_items: usize },
    /// A user id is not a row of the matrix.
    #[error("user {user} is out of range: there are {n_users} users")]
    UserOutOfRange { user: u32, n_users: usize },
    /// Negative sampling is impossible: the user has interacted with every item.
    #[error("user {user} has all {n_items} items in train: there is no negative item to sample")]
    NoNegatives { user: u32, n_items: usize },
}

/// Result with the crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
