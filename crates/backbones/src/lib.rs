//! Recommenders and how they train. By family:
//! - [`mm`]: the multimodal recommenders SGFD plugs into (BM3, GRCN, MAML), each taking its item features from
//!   a [`mmkd_features::FeatureExtractor`];
//! - [`cf`]: the id-only baselines (NeuMF, CML, NGCF, DGCF), BPR matrix factorisation and popularity;
//! - [`seq`]: the sequential recommenders (MMSR, SASRec, GRU4Rec) and KDSR as their auxiliary objective.
//!
//! What they share: the seams ([`model`]: [`Backbone`], [`Recommender`]), the one step loop ([`step`]), the
//! one trainer ([`mod@train`]: protocols, selection, early stopping, resume) with its files ([`checkpoint`]), the
//! losses ([`loss`]) and the epoch samplers ([`common`]). Sparse propagation and the optimisers live one
//! crate lower, in `mmkd-nn`.

pub mod cf;
pub mod checkpoint;
pub mod common;
pub mod error;
pub mod loss;
pub mod mm;
pub mod model;
pub mod seq;
pub mod step;
pub mod train;

pub use error::{Error, Result};
pub use model::{Backbone, Dims, EpochCtx, EpochStats, ParamGroup, Recommender, StepLosses};
pub use step::{fit_epoch, Optimizers};
pub use train::{train, Evaluator, FullRanking, Protocol, SelectedOn, Selection, TrainConfig, TrainOutcome};
