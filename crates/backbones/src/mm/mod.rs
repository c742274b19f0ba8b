//! The multimodal recommenders SGFD plugs into: each takes its item features from a
//! [`mmkd_features::FeatureExtractor`] (the vanilla projection or SGFD's student).

pub mod bm3;
pub mod grcn;
pub mod maml;
