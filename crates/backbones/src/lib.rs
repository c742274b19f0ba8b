//! Recommenders that take their item features from a [`mmkd_features::FeatureExtractor`], and what they share:
//! sparse graph propagation ([`graph`]) and the optimisers of the reference codes ([`optim`]).
//! The backbones themselves (GRCN, BM3, MAML, the CF baselines, the sequential models) and the trainer come
//! with the next issues.

pub mod error;
pub mod graph;
pub mod model;
pub mod optim;

pub use error::{Error, Result};
pub use model::{Backbone, Dims, EpochCtx, EpochStats};
