//! SGFD teachers (Semantic-Guided Feature Distillation, Liu et al., ACM MM'23; spec `sgfd.md`).
//! Reference: HuilinChenJN/SGFD `*/feature_extractor/*.py` and `*/feature_fusion/FeatureFusionModel.py`.
//!
//! - [`TeacherDepth`] / [`layer_widths`]: the deep extractor's widths, by the reference code's rule
//!   (shrink ratio r, last layer jumps to d) or the paper's k = log_δ(D/d).
//! - [`DeepExtractor`] T_m, [`Classifier`] C_m, [`Fusion`] (W_u and C_f), assembled per modality by
//!   [`Teacher`] for any number of modalities ≥ 1 (one modality: no fusion).
//! - [`losses`]: L_TCE (paper form and the reference's CE-on-probabilities) and L_FCE.
//! - [`pretrain()`]: the teacher trained on the labels alone, with held-out accuracy, saved as a checkpoint
//!   that [`load_teacher`] reads back as constants (the frozen teacher of `student-kd`'s `pretrained` mode).
//!
//! - [`kdsr`]: KDSR's frozen correlation teacher (ECIR'24): the autoencoder that compresses item features
//!   ([`kdsr::compress`]), the pair scoring functions ([`kdsr::Scoring`]), the codebook ([`kdsr::Codebook`])
//!   and [`kdsr::KdsrTeacher`], which hands its targets to `mmkd-student-kd`'s KDSR losses.
//!
//! Deviations from the reference are switches of [`TeacherConfig`], with the reference behaviour as default.

pub mod classifier;
pub mod config;
pub mod error;
pub mod extractor;
pub mod fusion;
pub mod kdsr;
pub mod losses;
pub mod model;
pub mod pretrain;
pub mod widths;

pub use classifier::Classifier;
pub use config::TeacherConfig;
pub use error::{Error, Result};
pub use extractor::DeepExtractor;
pub use fusion::Fusion;
pub use losses::Reduction;
pub use model::{LabelLosses, Teacher, TeacherOutput};
pub use pretrain::{
    check_items, load_teacher, pretrain, PretrainConfig, PretrainOutcome, PretrainReport, TeacherCheckpoint,
};
pub use widths::{layer_widths, TeacherDepth};
