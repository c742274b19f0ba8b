//! Generator presets: the sizes of the real data sets plus every parameter of the generative model.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Every parameter of the generator. The sizes of the named presets are those of the real data sets
/// (`docs/spec/generated-data.md`); the model parameters are the ones with which the SGFD mechanism
/// was shown on generated data. The whole struct is written to `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)] // A typo in a config file is an error, not a silent default.
pub struct Preset {
    /// Name of the preset, written to the manifest.
    pub name: String,
    /// Number of users; every id in `0..n_users` occurs.
    pub n_users: usize,
    /// Number of items; every id in `0..n_items` occurs.
    pub n_items: usize,
    /// Number of item categories C (labels `0..C`).
    pub n_labels: usize,
    /// Target number of interactions (train + test). The result lands on it unless the 5-core top-up
    /// needs more than the trimming can give back.
    pub n_interactions: usize,
    /// Width D_v of `FeatureImage_normal.npy`.
    pub visual_dim: usize,
    /// Width D_t of `FeatureText_normal.npy`.
    pub text_dim: usize,
    /// Latent dimension r of users, items and category centroids. Visual sees `z[..r/2]`, text `z[r/2..]`.
    pub latent_dim: usize,
    /// Label share a in `z_i = a·μ_c + (1−a)·ε_i`.
    pub label_share: f64,
    /// Preference sharpness β in `P(i | u) ∝ p_i·exp(β⟨u, z_i⟩)`.
    pub beta: f64,
    /// Standard deviation of the noise added to a user's mean favourite centroid.
    pub user_noise: f64,
    /// Label strength s: weight of the one-hot label in each modality's input.
    pub label_strength: f64,
    /// Dimension of each modality's nuisance vector.
    pub nuisance_dim: usize,
    /// Standard deviation of the nuisance vectors' entries.
    pub nuisance_scale: f64,
    /// Standard deviation of the Gaussian noise added to the text features.
    pub feature_noise: f64,
    /// σ of the item popularity `p_i ~ LogNormal(0, σ)`.
    pub pop_sigma: f64,
    /// σ of the LogNormal part of a user's degree (`degree = min_degree + LogNormal`, scaled to the target).
    pub degree_sigma: f64,
    /// Exponent of the category sizes `π_c ∝ (c + 1)^(−exponent)`.
    pub zipf_exponent: f64,
    /// Share of each user's interactions held out as test (`round(test_frac·n)`, at least one train item).
    pub test_frac: f64,
    /// Minimum number of interactions of every user and every item (the k of the k-core).
    pub min_degree: usize,
    /// Inclusive range `[min, max]` of a user's number of favourite categories.
    pub fav_categories: [usize; 2],
}

/// The model parameters shared by every named preset, with the sizes of `tiny`.
impl Default for Preset {
    fn default() -> Self {
        Self {
            name: "tiny".to_string(),
            n_users: 200,
            n_items: 300,
            n_labels: 8,
            n_interactions: 3000,
            visual_dim: 256,
            text_dim: 64,
            latent_dim: 32,
            label_share: 0.6,
            beta: 0.2,
            user_noise: 0.5,
            label_strength: 1.0,
            nuisance_dim: 64,
            nuisance_scale: 2.0,
            feature_noise: 0.1,
            pop_sigma: 1.0,
            degree_sigma: 1.0,
            zipf_exponent: 1.0,
            test_frac: 0.2,
            min_degree: 5,
            fav_categories: [1, 3],
        }
    }
}

const NAMES: &[&str] = &["office", "clothing", "toys", "tiny"];

impl Preset {
    /// The preset called `name` (one of [`Preset::names`]).
    pub fn by_name(name: &str) -> Result<Preset> {
        // (users, items, labels, interactions, visual dim, text dim)
        let sizes = match name {
            "office" => (4874, 2406, 54, 52_957, 4096, 768),
            "clothing" => (18_209, 17_318, 26, 150_889, 4096, 768),
            "toys" => (18_748, 11_672, 19, 161_653, 4096, 768),
            "tiny" => (200, 300, 8, 3000, 256, 64),
            _ => return Err(Error::UnknownPreset { name: name.to_string(), valid: NAMES.join(", ") }),
        };
        let (n_users, n_items, n_labels, n_interactions, visual_dim, text_dim) = sizes;
        Ok(Preset {
            name: name.to_string(),
            n_users,
            n_items,
            n_labels,
            n_interactions,
            visual_dim,
            text_dim,
            ..Preset::default()
        })
    }

    /// Names accepted by [`Preset::by_name`].
    pub fn names() -> &'static [&'static str] {
        NAMES
    }

    /// Checks that the generator can satisfy every invariant with these parameters.
    pub fn validate(&self) -> Result<()> {
        let fail = |reason: String| Err(Error::InvalidPreset { preset: self.name.clone(), reason });
        let k = self.min_degree;
        if k == 0 {
            return fail("min_degree must be at least 1".into());
        }
        if self.n_items < k || self.n_users < k {
            return fail(format!(
                "n_users ({}) and n_items ({}) must both be at least min_degree ({k})",
                self.n_users, self.n_items
            ));
        }
        if self.n_users > u32::MAX as usize || self.n_items > u32::MAX as usize {
            return fail("n_users and n_items must fit in u32".into());
        }
        if self.n_labels == 0 || self.n_labels > self.n_items {
            return fail(format!("n_labels ({}) must be in 1..=n_items ({})", self.n_labels, self.n_items));
        }
        let floor = k * self.n_users.max(self.n_items);
        if self.n_interactions < floor {
            return fail(format!(
                "n_interactions ({}) must be at least min_degree × max(n_users, n_items) = {floor}",
                self.n_interactions
            ));
        }
        if self.n_interactions > self.n_users * (self.n_items / 2) {
            return fail(format!(
                "n_interactions ({}) must be at most n_users × n_items / 2 = {}",
                self.n_interactions,
                self.n_users * (self.n_items / 2)
            ));
        }
        if self.visual_dim == 0 || self.text_dim == 0 {
            return fail("visual_dim and text_dim must be positive".into());
        }
        if self.latent_dim < 2 {
            return fail(format!("latent_dim ({}) must be at least 2", self.latent_dim));
        }
        let [fav_min, fav_max] = self.fav_categories;
        if fav_min == 0 || fav_min > fav_max || fav_max > self.n_labels {
            return fail(format!(
                "fav_categories [{fav_min}, {fav_max}] must satisfy 1 <= min <= max <= n_labels ({})",
                self.n_labels
            ));
        }
        if !(0.0..=1.0).contains(&self.label_share) {
            return fail(format!("label_share ({}) must be in [0, 1]", self.label_share));
        }
        if !(0.0..1.0).contains(&self.test_frac) {
            return fail(format!("test_frac ({}) must be in [0, 1)", self.test_frac));
        }
        let non_negative = [
            ("beta", self.beta),
            ("user_noise", self.user_noise),
            ("label_strength", self.label_strength),
            ("nuisance_scale", self.nuisance_scale),
            ("feature_noise", self.feature_noise),
            ("pop_sigma", self.pop_sigma),
            ("degree_sigma", self.degree_sigma),
            ("zipf_exponent", self.zipf_exponent),
        ];
        for (field, value) in non_negative {
            if !(value.is_finite() && value >= 0.0) {
                return fail(format!("{field} ({value}) must be finite and non-negative"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_presets_are_valid_and_have_the_real_sizes() {
        for name in Preset::names() {
            let p = Preset::by_name(name).unwrap();
            p.validate().unwrap();
            assert_eq!(&p.name, name);
        }
        let office = Preset::by_name("office").unwrap();
        assert_eq!((office.n_users, office.n_items, office.n_labels, office.n_interactions), (4874, 2406, 54, 52_957));
        let toys = Preset::by_name("toys").unwrap();
        assert_eq!((toys.n_users, toys.n_items, toys.n_labels, toys.n_interactions), (18_748, 11_672, 19, 161_653));
    }

    #[test]
    fn unknown_preset_names_the_valid_ones() {
        let err = Preset::by_name("offfice").unwrap_err().to_string();
        assert!(err.contains("offfice") && err.contains("office, clothing, toys, tiny"), "{err}");
    }

    #[test]
    fn invalid_parameters_are_rejected() {
        let p = Preset { n_items: 4, ..Preset::default() };
        assert!(matches!(p.validate(), Err(Error::InvalidPreset { .. })));
        let p = Preset { n_interactions: 100, ..Preset::default() };
        assert!(p.validate().unwrap_err().to_string().contains("n_interactions"));
        let p = Preset { fav_categories: [2, 1], ..Preset::default() };
        assert!(p.validate().is_err());
        let p = Preset { test_frac: 1.0, ..Preset::default() };
        assert!(p.validate().is_err());
        let p = Preset { beta: f64::NAN, ..Preset::default() };
        assert!(p.validate().is_err());
    }

    #[test]
    fn presets_round_trip_through_json_and_reject_unknown_fields() {
        let p = Preset::by_name("office").unwrap();
        let s = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Preset>(&s).unwrap(), p);
        assert!(serde_json::from_str::<Preset>(r#"{"n_user": 3}"#).is_err());
        let partial: Preset = serde_json::from_str(r#"{"beta": 0.5}"#).unwrap();
        assert_eq!(partial, Preset { beta: 0.5, ..Preset::default() });
    }
}
