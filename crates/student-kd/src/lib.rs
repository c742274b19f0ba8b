//! SGFD students and distillation (Semantic-Guided Feature Distillation, Liu et al., ACM MM'23; spec
//! `sgfd.md`). Reference: HuilinChenJN/SGFD `*/feature_extractor/*.py`, `*/feature_fusion/FeatureFusionModel.py`.
//!
//! - [`Student`] S_m: the shallow extractor that replaces the backbone's own; it shares C_m with the teacher.
//! - [`losses`]: L_LD (reference L1 mean, paper squared L2, TensorFlow per-row MSE) and L_FD (reference
//!   MSE, paper squared L2).
//! - [`SgfdConfig`]: every switch of the spec's table, reference defaults, the paper's variants as
//!   [`SgfdPreset`]s (`sgfd`, `sgfd_l`, `sgfd_f`, `sgfd_e`, `sgfd_s`, and the Fig. 3 extractors; [`preset`]
//!   by name).
//! - [`Sgfd`]: the [`mmkd_features::FeatureExtractor`] backbones take; `extract(None, Train)` gives every
//!   item's features, `extract(Some(rows), Train)` (or [`Sgfd::aux_losses`]) the weighted losses
//!   `("kd", λ1·L_KD)` and `("ce", λ2·L_CE)` on the step's B' rows. [`build_extractor`] also covers the
//!   vanilla extractor (`backbone_source = none`).
//! - [`kdsr`]: KDSR's correlation distillation for sequential models ([`kdsr::KdsrConfig`],
//!   [`kdsr::KdsrStudent`], the holistic and dissected losses), against `mmkd_teacher::kdsr`'s targets.
//! - [`bench`](mod@bench) ([`sgfd_step`]): one SGFD training step, timed and counted in FLOPs
//!   (`cargo xtask bench sgfd`).
//!
//! The teacher trains jointly (`teacher_mode = "joint"`, the reference) or is loaded pretrained and frozen
//! (`"pretrained"`, from `mmkd_teacher::pretrain`).

pub mod bench;
pub mod config;
pub mod error;
pub mod kdsr;
pub mod losses;
pub mod sgfd;
pub mod student;

pub use bench::{sgfd_step, SgfdStepBench};
pub use config::{names, preset, BackboneSource, SgfdConfig, SgfdPreset, TeacherMode};
pub use error::{Error, Result};
pub use losses::{FdForm, LdForm};
pub use sgfd::{build_extractor, Sgfd, SgfdLosses};
pub use student::Student;
