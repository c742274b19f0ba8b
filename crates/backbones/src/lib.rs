//! Recommenders that take their item features from a [`mmkd_features::FeatureExtractor`], and what they share:
//! sparse graph propagation ([`graph`]) and the optimisers of the reference codes ([`optim`]).
//! Models with item features: [`bm3`], [`grcn`], [`maml`]; id-only baselines: [`neumf`], [`cml`], [`ngcf`],
//! [`dgcf`] (sharing [`common`]), [`mf`] (BPR matrix factorisation) and [`pop`] (popularity); the trainer is
//! [`train`]. The sequential models come with the next issue.

pub mod bm3;
pub mod checkpoint;
pub mod cml;
pub mod common;
pub mod dgcf;
pub mod error;
pub mod graph;
pub mod grcn;
pub mod gru4rec;
pub mod maml;
pub mod mf;
pub mod mmsr_sequential;
pub mod model;
pub mod neumf;
pub mod ngcf;
pub mod optim;
pub mod pop;
pub mod sasrec;
pub mod seq_kdsr;
pub mod seq_model;
pub mod seq_train;
pub mod seqnn;
pub mod step;
pub mod train;

pub use error::{Error, Result};
pub use model::{Backbone, Dims, EpochCtx, EpochStats, ParamGroup, Recommender, StepLosses};
pub use step::{fit_epoch, Optimizers};
pub use train::{train, Evaluator, FullRanking, Protocol, Selection, TrainConfig, TrainOutcome};
