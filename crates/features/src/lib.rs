//! Generic item features for multimodal recommendation.
//!
//! - [`FeatureStore`]: one matrix per modality (e.g. `visual` 4096-d VGG16, `text` BERT), loaded from `.npy`
//!   (f32/f64, C order) or `.safetensors`, checked (one row per item, no NaN/Inf), optionally normalised,
//!   handed out as candle tensors on the caller's device.
//! - [`FeatureExtractor`]: the seam every backbone takes; [`Projection`] is the vanilla extractor.
//! - [`seeded_var_builder`]: reproducible parameter initialisation (candle's CPU RNG cannot be seeded).
//! - [`nn`]: reference-faithful linear initialisations, activations and L2 normalisation.

pub mod error;
pub mod extractor;
pub mod init;
pub mod matrix;
pub mod nn;
pub mod store;
pub mod testing;

pub use error::{Error, Result};
pub use extractor::{select_rows, Extracted, FeatureExtractor, Mode, Projection, ProjectionConfig};
pub use init::seeded_var_builder;
pub use matrix::{write_atomically, FeatureMatrix};
pub use nn::{Activation, LinearInit};
pub use store::{FeatureStore, Normalization};
