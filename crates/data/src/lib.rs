//! Interaction and label loading for multimodal recommendation: the SGFD layout (`train.csv`, `test.csv`,
//! `MetaData_normal.npy`) and the MMRec layout (`<name>.inter`), validated, into one [`Dataset`].
//! polars lives in this crate and only here; everything it hands out is plain data.
//!
//! - [`load`] detects the layout of a folder ([`detect_layout`]) and reads it. Bad cells are errors that
//!   name the file and line; duplicates, train/test overlap and users without train items are
//!   [`Finding`]s, also logged with `tracing::warn!`.
//! - [`Dataset`] holds user → item [`Csr`] lists per split and the item → user train graph;
//!   [`Dataset::with_holdout`] carves a seeded validation split out of train.
//! - [`NegativeSampler`] draws uniform negatives; [`rng`] gives every consumer its own seeded stream.
//!
//! ```no_run
//! let data = mmkd_data::load(std::path::Path::new("data/office"), &Default::default())?;
//! println!("{}", data.stats());
//! # Ok::<(), mmkd_data::Error>(())
//! ```

pub mod csr;
mod dataset;
mod error;
mod labels;
mod loader;
pub mod rng;
mod sampler;
pub mod sequential;
mod stats;
mod table;

pub use csr::Csr;
pub use dataset::{Dataset, Finding, Layout, LoadOptions};
pub use error::{Error, Result};
pub use labels::{npy_rows, read_labels, Labels};
pub use loader::{detect_layout, load, load_mmrec, load_sgfd, MMREC_FEATURES, SGFD_FEATURES, SGFD_LABELS};
pub use rng::{derive_seed, stream};
pub use sampler::NegativeSampler;
pub use stats::Stats;
