//! Generated data sets with planted semantics, in the SGFD layout (`docs/spec/generated-data.md`).
//!
//! The real item features are not on our machines, so tests, default runs and benchmarks use data from
//! this generator. It plants exactly what SGFD relies on: labels explain part of the preference signal,
//! each modality sees only part of an item's latent factors plus large nuisance directions without
//! preference signal, and the two modalities complement each other.
//!
//! # Generative model
//! With C categories, latent dimension r and h = r/2:
//! 1. **Labels.** Category sizes follow `π_c ∝ (c+1)^(−zipf_exponent)`. The draw is stratified: each
//!    category gets one item, the other `n_items − C` are shared in proportion to π (cumulative rounding),
//!    and the labels are shuffled over the items. So every category occurs and category 0 is the largest.
//! 2. **Latents.** Centroids `μ_c ~ N(0, I_r)`; item latent `z_i = a·μ_{c_i} + (1−a)·ε_i`, `ε_i ~ N(0, I_r)`.
//!    A user picks `k ~ U{fav_categories}` distinct favourite categories (∝ π) and has latent
//!    `u = mean(μ_fav) + user_noise·η`, `η ~ N(0, I_r)`.
//! 3. **Interactions.** Item popularity `p_i ~ LogNormal(0, pop_sigma)`. User degrees are
//!    `min_degree + e_u` with `e_u ~ LogNormal(·, degree_sigma)` rescaled so they sum to `n_interactions`
//!    (capped at `n_items/2`). Each user draws its items without replacement with probability
//!    `∝ p_i·exp(β⟨u, z_i⟩)` (successive sampling).
//! 4. **5-core by construction.** No row is deleted, so the counts are exact: every user already has at
//!    least `min_degree` items; every item with fewer than `min_degree` users gets extra users drawn
//!    `∝ exp(β⟨u, z_i⟩)` among those without it. Then random interactions whose user and item both stay
//!    above `min_degree` are removed until the total is back at `n_interactions` (when possible).
//! 5. **Split.** Each user's interactions are shuffled; `round(test_frac·n)` go to test, keeping at least
//!    one in train.
//! 6. **Features.** With per-modality nuisance `n_i ~ N(0, nuisance_scale²·I_{nuisance_dim})` and fixed
//!    Gaussian projections `A_v`, `A_t` scaled by `1/√E‖x‖²` so pre-activations have unit variance:
//!    `v_i = ReLU(A_v·[z_i[..h]; s·onehot(c_i); n_i^v])` (D_v) and
//!    `t_i = tanh(A_t·[z_i[h..]; s·onehot(c_i); n_i^t]) + feature_noise·N(0, I)` (D_t).
//!
//! Every random stream is `mmkd_data::rng::stream(seed, name)` with its own name (`labels`, `centroids`,
//! `item-latent`, `popularity`, `users`, `degrees`, `interactions`, `top-up`, `trim`, `split`,
//! `projection-visual`, `nuisance-visual`, `projection-text`, `nuisance-text`, `noise-text`), and all
//! work is sequential, so one seed gives byte-identical files.
//!
//! What the tests show on `tiny` (`tests/planted.rs`): at nuisance scale 1 a nearest-centroid classifier
//! on standardised features finds the labels in each view (≈0.80 visual, ≈0.63 text) and better in both
//! (≈0.89; majority ≈0.33). At the default scale 2 the nuisance drowns that unsupervised metric (≈0.45)
//! while a ridge classifier fitted to the labels still gets ≈0.64: the regime in which label supervision
//! pays. Category-aware ranking beats popularity (Recall@20 ≈0.35 vs ≈0.25), which beats random (≈0.08).
//!
//! Ordered sequences (spec item 5) come from [`sequential`]: presets `tiny-seq` and `beauty` write the
//! sequential layout (`interactions.csv` with timestamps), where categories follow a transition matrix with a
//! preferred successor, so the next item depends on the previous ones and not only on taste.
//!
//! # Parameters ([`Preset`])
//! | field | meaning | default |
//! |---|---|---|
//! | `latent_dim` | r | 32 |
//! | `label_share` | a | 0.6 |
//! | `beta` | preference sharpness β (on the unscaled ⟨u, z⟩) | 0.2 |
//! | `user_noise` | std of the user latent noise | 0.5 |
//! | `label_strength` | s, weight of the one-hot label in each view | 1.0 |
//! | `nuisance_dim` | nuisance dimensions per modality | 64 |
//! | `nuisance_scale` | std of the nuisance entries | 2.0 |
//! | `feature_noise` | std of the additive text noise | 0.1 |
//! | `pop_sigma` | σ of the popularity LogNormal | 1.0 |
//! | `degree_sigma` | σ of the user degree LogNormal | 1.0 |
//! | `zipf_exponent` | exponent of the category sizes | 1.0 |
//! | `test_frac` | per-user test share | 0.2 |
//! | `min_degree` | k of the k-core | 5 |
//! | `fav_categories` | `[min, max]` favourite categories per user | [1, 3] |
//!
//! Sizes of the named presets (the real data sets' statistics):
//!
//! | preset | users | items | labels | interactions | visual dim | text dim |
//! |---|---|---|---|---|---|---|
//! | office | 4,874 | 2,406 | 54 | 52,957 | 4096 | 768 |
//! | clothing | 18,209 | 17,318 | 26 | 150,889 | 4096 | 768 |
//! | toys | 18,748 | 11,672 | 19 | 161,653 | 4096 | 768 |
//! | tiny (tests) | 200 | 300 | 8 | 3,000 | 256 | 64 |
//!
//! # Files ([`Generated::write_sgfd`])
//! `train.csv`, `test.csv` (`itemID,userID`, sorted by user then item), `FeatureImage_normal.npy`
//! (f32 [items, D_v]), `FeatureText_normal.npy` (f32 [items, D_t]), `MetaData_normal.npy` (i64 \[items\])
//! and `manifest.json` ([`Generated::manifest`]).

mod generate;
mod preset;
pub mod sequential;
mod write;

use std::path::PathBuf;

pub use generate::{generate, generate_for_interactions, GenStats, Generated};
pub use preset::Preset;
pub use write::{LABELS_FILE, MANIFEST_FILE, TEST_FILE, TEXT_FILE, TRAIN_FILE, VISUAL_FILE};

/// Errors of the generator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown preset `{name}`; valid presets: {valid}")]
    UnknownPreset { name: String, valid: String },
    #[error("invalid preset `{preset}`: {reason}")]
    InvalidPreset { preset: String, reason: String },
    #[error("cannot write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot serialise the manifest")]
    Json(#[from] serde_json::Error),
}

pub type Result<T> = std::result::Result<T, Error>;
