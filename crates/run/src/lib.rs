//! Composition of a training run, between the models (`mmkd-backbones`) and the command line (`xtask`):
//! - [`spec`]: the typed [`RunSpec`] and the registry's enums [`ModelKind`] and [`ExtractorKind`];
//! - [`config`]: the layered configuration ([`RunConfig`]);
//! - [`mod@prepare`] and [`seq`]: from a spec to a built model, its configuration and its data;
//! - [`compress`]: the sequential models' autoencoder feature compression and its cache;
//! - [`run_dir`]: what a run folder records about itself (`config.toml`, `run.toml`);
//! - [`execute`]: every call into the trainers, in one place;
//! - [`recommend`]: top-K lists from a trained run;
//! - [`report`]: the math and artefacts of `cargo xtask reproduce`'s report.

pub mod compress;
pub mod config;
pub mod device;
mod error;
pub mod execute;
pub mod prepare;
pub mod recommend;
pub mod report;
pub mod run_dir;
pub mod seq;
pub mod spec;

pub use config::RunConfig;
pub use error::{Context, Error, Result};
pub use prepare::{load_checked, prepare, Prepared};
pub use run_dir::RunRecord;
pub use seq::SeqPrepared;
pub use spec::{ExtractorKind, ModelKind, RunSpec};
