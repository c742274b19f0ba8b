//! Generated sequential data with planted order, in the sequential layout (`interactions.csv`,
//! `docs/spec/generated-data.md` point 5, `spec/kdsr-mmsr.md` §2).
//!
//! # Generative model
//! Items, labels, latents, users and features are those of the SGFD generator ([`crate::generate`]), built by
//! the same functions from the same named streams: Zipf category sizes π, `z_i = a·μ_{c_i} + (1−a)·ε_i`,
//! 1–3 favourite categories F_u per user (∝ π) and a taste `u`, popularity `p_i ~ LogNormal(0, pop_sigma)`,
//! and the two modality views. On top of them:
//! 1. **Transitions.** Categories are grouped by size rank into cycles of three (`0→1→2→0`, `3→4→5→3`, …;
//!    a last lone category joins the cycle before it). A category's preferred successor is the next one in
//!    its cycle: after category c, the next category is `succ(c)` with probability `successor_prob`,
//!    otherwise it is drawn ∝ π among the other categories.
//! 2. **Lengths.** `ℓ_u = min_degree + e_u`, `e_u ~ LogNormal(·, degree_sigma)` rescaled so that the
//!    lengths sum to `n_interactions` (the SGFD generator's user degrees).
//! 3. **Sequences.** The first category is a uniform favourite. Each next category follows the transition
//!    from the previous item's category with probability `p_order`, else it is a uniform favourite again.
//!    Within the category, the user picks an item not yet in the sequence with probability
//!    `∝ p_i·exp(β⟨u, z_i⟩ + γ⟨d_prev, d_i⟩)`, with the residual `d_i = z_i − a·μ_{c_i}`: taste, plus
//!    resemblance to the previous item beyond the shared category (γ = `similarity`; the residual keeps the
//!    term from making hubs of the items closest to a centroid). When the user already has every item of the
//!    category, another category with items left is drawn ∝ π.
//! 4. **5-core by construction.** Every user has at least `min_degree` items. Every item with fewer than
//!    `min_degree` interactions gets extra users (the SGFD generator's top-up, ∝ `exp(β⟨u, z_i⟩)` among the
//!    users without it), each inserted right after a uniform one of the positions whose category has the
//!    item's category as preferred successor (a uniform position when there is none). Then the last items of
//!    sequences drawn ∝ length are removed, while user and item both stay above `min_degree`, until the total
//!    is back at `n_interactions`; cutting tails keeps every remaining transition. So the iterated 5-core of
//!    [`mmkd_data::sequential`] removes nothing and the sizes are exactly the preset's.
//! 5. **Timestamps.** Day granularity, in Unix seconds: a user starts on a uniform day of 2000–2009; each
//!    next interaction falls on the same day with probability `same_day_prob`, else `1 + ⌊Exp(mean_gap_days)⌋`
//!    days later. Rows are written user by user in sequence order, so the loader's stable sort restores
//!    the generated order within same-day ties.
//!
//! Streams: those of the SGFD generator (`labels`, `centroids`, `item-latent`, `popularity`, `users`,
//! `degrees`, `top-up`, `trim`, `projection-*`, `nuisance-*`, `noise-text`) plus `sequences`,
//! `top-up-positions` and `timestamps`; all work is sequential. One seed gives byte-identical files.
//!
//! What the tests show on `tiny-seq` (`tests/sequential.rs`, seeds 0–3): a first-order category transition
//! predictor trained on the train parts finds the category of the test targets ≈0.53 of the time, each user's
//! most frequent train category ≈0.31, the transition predictor after shuffling the train parts ≈0.29; an
//! item-bigram model backed off to popularity has HR@20 ≈0.35 against ≈0.17 for popularity.
//!
//! `beauty` (seed 0, ≈7 s in the dev profile): 22,363 users, 12,101 items, 198,502 interactions (average
//! length 8.88, longest 87), sparsity 99.927%, item counts 5–457; 144,388 train and 31,751 test instances.
//!
//! # Files ([`SeqGenerated::write`])
//! `interactions.csv` (`userID,itemID,timestamp`, user by user in sequence order), `FeatureImage_normal.npy`
//! (f32 [items, D_v]), `FeatureText_normal.npy` (f32 [items, D_t]), `MetaData_normal.npy` (i64 \[items\]) and
//! `manifest.json` ([`SeqGenerated::manifest`]).

use std::path::Path;
use std::time::Instant;

use mmkd_data::rng::stream;
use mmkd_data::sequential::{SeqDataset, SeqOptions, SeqStats, SEQ_INTERACTIONS};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::generate::{
    category_probs, draw_categorical, item_latents, modality_features, normal_vec, sample_labels, top_up_pairs,
    transpose, user_degrees, user_latents_with_favourites, Activation,
};
use crate::write::write_atomic;
use crate::{Error, Preset, Result, LABELS_FILE, TEXT_FILE, VISUAL_FILE};

/// Unix time of 2000-01-01 00:00 UTC, the first possible day.
const EPOCH: i64 = 946_684_800;
const DAY: i64 = 86_400;
/// Users start on a uniform day among the first `START_DAYS`.
const START_DAYS: i64 = 3_650;

/// Every parameter of the sequential generator. The whole struct is written to `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)] // A typo in a config file is an error, not a silent default.
pub struct SeqPreset {
    /// Sizes (those after the 5-core: users, items, interactions), labels, feature widths and the taste
    /// model, as in the SGFD generator. `test_frac` is the sequential split's (`⌊test_frac·ℓ⌋` last items).
    pub base: Preset,
    /// p_order: probability that the next category follows the transition from the previous item's category
    /// rather than being a favourite again.
    pub p_order: f64,
    /// Transition probability to a category's preferred successor; the rest is spread ∝ π over the others.
    pub successor_prob: f64,
    /// γ: weight of the resemblance `⟨d_prev, d_i⟩` of the residuals `d = z − a·μ_c` to the previous item.
    pub similarity: f64,
    /// Probability that an interaction falls on the same day as the previous one.
    pub same_day_prob: f64,
    /// Mean of the exponential part of the gap between two days with interactions.
    pub mean_gap_days: f64,
}

/// The model parameters shared by the named presets, with the sizes of `tiny-seq`.
impl Default for SeqPreset {
    fn default() -> Self {
        Self {
            base: Preset {
                name: "tiny-seq".to_string(),
                n_users: 200,
                n_items: 240,
                n_labels: 8,
                n_interactions: 2400,
                visual_dim: 64,
                text_dim: 48,
                ..Preset::default()
            },
            p_order: 0.8,
            successor_prob: 0.7,
            similarity: 2.0,
            same_day_prob: 0.2,
            mean_gap_days: 20.0,
        }
    }
}

const NAMES: &[&str] = &["tiny-seq", "beauty"];

/// Whether `name` is a sequential preset ([`SeqPreset::names`]).
pub fn is_seq_preset(name: &str) -> bool {
    NAMES.contains(&name)
}

impl SeqPreset {
    /// The preset called `name`: `tiny-seq` (tests) or `beauty` (Amazon Beauty after 5-core, KDSR Table 1:
    /// 22,363 users, 12,101 items, 198,502 interactions; ResNet-50 logits (1000) and T5-base (768)).
    pub fn by_name(name: &str) -> Result<SeqPreset> {
        let default = SeqPreset::default();
        match name {
            "tiny-seq" => Ok(default),
            "beauty" => Ok(SeqPreset {
                base: Preset {
                    name: name.to_string(),
                    n_users: 22_363,
                    n_items: 12_101,
                    n_labels: 30,
                    n_interactions: 198_502,
                    visual_dim: 1000,
                    text_dim: 768,
                    ..default.base
                },
                ..default
            }),
            _ => Err(Error::UnknownPreset { name: name.to_string(), valid: NAMES.join(", ") }),
        }
    }

    /// Names accepted by [`SeqPreset::by_name`].
    pub fn names() -> &'static [&'static str] {
        NAMES
    }

    /// Checks that the generator can satisfy every invariant with these parameters.
    pub fn validate(&self) -> Result<()> {
        self.base.validate()?;
        let fail = |reason: String| Err(Error::InvalidPreset { preset: self.base.name.clone(), reason });
        for (field, value) in
            [("p_order", self.p_order), ("successor_prob", self.successor_prob), ("same_day_prob", self.same_day_prob)]
        {
            if !(0.0..=1.0).contains(&value) {
                return fail(format!("{field} ({value}) must be in [0, 1]"));
            }
        }
        for (field, value) in [("similarity", self.similarity), ("mean_gap_days", self.mean_gap_days)] {
            if !(value.is_finite() && value >= 0.0) {
                return fail(format!("{field} ({value}) must be finite and non-negative"));
            }
        }
        Ok(())
    }

    /// The options under which [`mmkd_data::sequential`] reads the result: k-core at `min_degree`, the
    /// preset's `test_frac`, inputs truncated to 50.
    pub fn seq_options(&self) -> SeqOptions {
        SeqOptions { min_count: self.base.min_degree, test_frac: self.base.test_frac, ..SeqOptions::default() }
    }
}

/// A generated sequential data set.
#[derive(Debug, Clone, PartialEq)]
pub struct SeqGenerated {
    /// The parameters it was generated with.
    pub preset: SeqPreset,
    /// The run seed; every random stream is derived from it by name.
    pub seed: u64,
    /// `(userID, itemID, timestamp)` rows in file order: user by user, each in sequence order (timestamps
    /// non-decreasing). Users are `0..n_users`, items `0..n_items` (rows of the feature files).
    pub rows: Vec<(u32, u32, i64)>,
    /// Category of each item, in `0..n_labels`; (n_items,).
    pub labels: Vec<i64>,
    /// Visual features, row-major (n_items, visual_dim).
    pub visual: Vec<f32>,
    /// Text features, row-major (n_items, text_dim).
    pub text: Vec<f32>,
    /// Preferred successor of each category; (n_labels,).
    pub successor: Vec<usize>,
    /// Interactions added to bring items up to `min_degree`.
    pub n_topped_up: usize,
    /// Interactions removed afterwards to land on the target.
    pub n_trimmed: usize,
    /// Statistics after the iterated 5-core, as [`mmkd_data::sequential`] computes them.
    pub stats: SeqStats,
}

/// Generates the sequential data set of `preset` from the run seed `seed`. The same arguments give the
/// same result, bit for bit.
pub fn generate_sequential(preset: &SeqPreset, seed: u64) -> Result<SeqGenerated> {
    preset.validate()?;
    let p = &preset.base;
    let _span = tracing::info_span!("generate_sequential", preset = %p.name, seed).entered();
    let started = Instant::now();
    let r = p.latent_dim;

    let pi = category_probs(p.n_labels, p.zipf_exponent);
    let labels = sample_labels(p.n_items, &pi, &mut stream(seed, "labels"));
    let centroids = normal_vec(&mut stream(seed, "centroids"), p.n_labels * r, 1.0); // (n_labels, r)
    let item_latent = item_latents(p, &labels, &centroids, &mut stream(seed, "item-latent")); // (n_items, r)
    let log_pop = normal_vec(&mut stream(seed, "popularity"), p.n_items, p.pop_sigma as f32); // (n_items,)
    let (user_latent, favourites) = user_latents_with_favourites(p, &pi, &centroids, &mut stream(seed, "users"));
    let lengths = user_degrees(p, &mut stream(seed, "degrees"));
    let successor = successors(p.n_labels);

    let world = World {
        preset,
        pi: &pi,
        labels: &labels,
        centroids: &centroids,
        item_latent: &item_latent,
        log_pop: &log_pop,
        successor: &successor,
    };
    let mut sequences = world.sequences(&user_latent, &favourites, &lengths, &mut stream(seed, "sequences"));
    let extra = top_up_pairs(p, &user_latent, &item_latent, &sequences, &mut stream(seed, "top-up"));
    insert_top_ups(&mut sequences, &extra, &labels, &successor, &mut stream(seed, "top-up-positions"));
    let n_trimmed = trim_tails(p, &mut sequences, &mut stream(seed, "trim"));
    let rows = timestamps(preset, &sequences, &mut stream(seed, "timestamps"));
    tracing::debug!(secs = started.elapsed().as_secs_f32(), "sequences");

    let half = r / 2;
    let visual = modality_features(p, &item_latent, &labels, 0..half, p.visual_dim, seed, "visual", Activation::Relu);
    let text = modality_features(p, &item_latent, &labels, half..r, p.text_dim, seed, "text", Activation::Tanh);
    let labels: Vec<i64> = labels.iter().map(|&c| c as i64).collect();

    let stats = SeqDataset::from_interactions(&rows, &preset.seq_options())
        .map_err(|e| Error::InvalidPreset { preset: p.name.clone(), reason: e.to_string() })?
        .stats();
    tracing::info!(
        users = stats.n_users,
        items = stats.n_items,
        interactions = stats.n_interactions,
        secs = started.elapsed().as_secs_f32(),
        "generated"
    );
    Ok(SeqGenerated {
        preset: preset.clone(),
        seed,
        rows,
        labels,
        visual,
        text,
        successor,
        n_topped_up: extra.len(),
        n_trimmed,
        stats,
    })
}

impl SeqGenerated {
    /// Writes the data set into `dir` (created if missing), every file atomically: `interactions.csv`
    /// (`userID,itemID,timestamp`), `FeatureImage_normal.npy`, `FeatureText_normal.npy`,
    /// `MetaData_normal.npy` and `manifest.json`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
        write_atomic(&dir.join(SEQ_INTERACTIONS), |w| {
            use std::io::Write;
            w.write_all(b"userID,itemID,timestamp\n")?;
            for &(user, item, time) in &self.rows {
                writeln!(w, "{user},{item},{time}")?;
            }
            Ok(())
        })?;
        crate::write::write_item_files(
            dir,
            &self.preset.base,
            &self.visual,
            &self.text,
            &self.labels,
            &self.manifest(),
        )?;
        tracing::info!(dir = %dir.display(), "wrote generated sequential data set");
        Ok(())
    }

    /// The manifest: generator, layout, seed, the preset with every parameter, the files, the planted
    /// transitions, and the statistics after the 5-core. serde_json's map keeps one key order.
    pub fn manifest(&self) -> serde_json::Value {
        json!({
            "generator": "mmkd-synth",
            "version": env!("CARGO_PKG_VERSION"),
            "layout": "sequential",
            "seed": self.seed,
            "preset": self.preset,
            "files": {
                "interactions": SEQ_INTERACTIONS,
                "visual": VISUAL_FILE,
                "text": TEXT_FILE,
                "labels": LABELS_FILE,
            },
            "successor": self.successor,
            "generation": {
                "rows": self.rows.len(),
                "n_topped_up": self.n_topped_up,
                "n_trimmed": self.n_trimmed,
            },
            "protocol": self.preset.seq_options(),
            "stats": self.stats,
        })
    }
}

/// Preferred successors: categories, in size order, form cycles of three (`0→1→2→0`, …); a last lone
/// category joins the cycle before it (a cycle of four). One category is its own successor.
fn successors(n_labels: usize) -> Vec<usize> {
    let mut succ = vec![0; n_labels];
    let mut start = 0;
    while start < n_labels {
        let mut len = 3.min(n_labels - start);
        if n_labels - start == 4 {
            len = 4;
        }
        for k in 0..len {
            succ[start + k] = start + (k + 1) % len;
        }
        start += len;
    }
    succ
}

/// What every user's sequence is drawn from.
struct World<'a> {
    preset: &'a SeqPreset,
    pi: &'a [f64],
    labels: &'a [usize],
    /// (n_labels, r)
    centroids: &'a [f32],
    /// (n_items, r)
    item_latent: &'a [f32],
    log_pop: &'a [f32],
    successor: &'a [usize],
}

impl World<'_> {
    /// Every user's item sequence (item ids, no repeats); see the module documentation, step 3.
    fn sequences(
        &self,
        user_latent: &[f32],
        favourites: &[Vec<usize>],
        lengths: &[usize],
        rng: &mut ChaCha8Rng,
    ) -> Vec<Vec<u32>> {
        let p = &self.preset.base;
        let (r, n, n_labels) = (p.latent_dim, p.n_items, p.n_labels);
        // Items grouped by category (ascending ids within one): category c owns positions start[c]..start[c+1].
        let mut perm: Vec<u32> = (0..n as u32).collect();
        perm.sort_by_key(|&i| (self.labels[i as usize], i));
        let mut start = vec![0usize; n_labels + 1];
        for &c in self.labels {
            start[c + 1] += 1;
        }
        for c in 0..n_labels {
            start[c + 1] += start[c];
        }
        let latent_perm: Vec<f32> =
            perm.iter().flat_map(|&i| self.item_latent[i as usize * r..(i as usize + 1) * r].iter().copied()).collect();
        let z_t = transpose(&latent_perm, n, r); // (r, n), columns in category order
                                                 // Residuals `z_i − a·μ_{c_i} = (1−a)·ε_i`: what makes an item resemble another beyond their categories.
        let a = p.label_share as f32;
        let mut residual = latent_perm.clone(); // (n, r), category order
        for (row, &i) in residual.chunks_exact_mut(r).zip(&perm) {
            let c = self.labels[i as usize];
            row.iter_mut().zip(&self.centroids[c * r..(c + 1) * r]).for_each(|(x, &m)| *x -= a * m);
        }
        let residual_t = transpose(&residual, n, r); // (r, n)
        let (beta, gamma) = (p.beta as f32, self.preset.similarity as f32);

        // Per-user buffers: taste logits per position (filled per category on first use), picks, items left.
        let mut taste = vec![0f32; n];
        let mut logits = vec![0f32; n];
        let mut cum = vec![0f64; n];
        let mut taken = vec![false; n];
        let mut ready = vec![false; n_labels];
        let mut left = vec![0usize; n_labels];
        let mut weights = vec![0f64; n_labels];
        let mut out = Vec::with_capacity(lengths.len());
        for ((u, fav), &len) in user_latent.chunks_exact(r).zip(favourites).zip(lengths) {
            ready.fill(false);
            for c in 0..n_labels {
                left[c] = start[c + 1] - start[c];
            }
            let mut seq: Vec<u32> = Vec::with_capacity(len);
            let mut picks: Vec<usize> = Vec::with_capacity(len);
            let mut prev: Option<(usize, usize)> = None; // (position, category)
            for _ in 0..len {
                let mut c = match prev {
                    Some((_, pc)) if rng.random::<f64>() < self.preset.p_order => self.transition(pc, rng),
                    _ => fav[rng.random_range(0..fav.len())],
                };
                if left[c] == 0 {
                    for (w, (&pi, &l)) in weights.iter_mut().zip(self.pi.iter().zip(&left)) {
                        *w = if l > 0 { pi } else { 0.0 };
                    }
                    c = draw_categorical(&weights, rng);
                }
                let range = start[c]..start[c + 1];
                if !ready[c] {
                    taste[range.clone()]
                        .iter_mut()
                        .zip(&perm[range.clone()])
                        .for_each(|(t, &i)| *t = self.log_pop[i as usize]);
                    add_affinities_range(&mut taste, u, &z_t, n, range.clone(), beta);
                    ready[c] = true;
                }
                logits[range.clone()].copy_from_slice(&taste[range.clone()]);
                if let (Some((pj, _)), true) = (prev, gamma > 0.0) {
                    add_affinities_range(
                        &mut logits,
                        &residual[pj * r..(pj + 1) * r],
                        &residual_t,
                        n,
                        range.clone(),
                        gamma,
                    );
                }
                let j = draw_untaken(&logits, &taken, &mut cum, range, rng);
                taken[j] = true;
                left[c] -= 1;
                picks.push(j);
                seq.push(perm[j]);
                prev = Some((j, c));
            }
            for &j in &picks {
                taken[j] = false;
            }
            out.push(seq);
        }
        out
    }

    /// The next category after category `c`: its successor with probability `successor_prob`, else one
    /// of the others ∝ π.
    fn transition(&self, c: usize, rng: &mut ChaCha8Rng) -> usize {
        let succ = self.successor[c];
        if rng.random::<f64>() < self.preset.successor_prob || self.pi.len() == 1 {
            return succ;
        }
        let total: f64 = self.pi.iter().enumerate().filter(|&(k, _)| k != succ).map(|(_, &w)| w).sum();
        let mut x = rng.random::<f64>() * total;
        for (k, &w) in self.pi.iter().enumerate().filter(|&(k, _)| k != succ) {
            if x < w {
                return k;
            }
            x -= w;
        }
        // Rounding left x past the end: the last category other than the successor.
        if succ + 1 == self.pi.len() {
            self.pi.len() - 2
        } else {
            self.pi.len() - 1
        }
    }
}

/// `logits[j] += β·⟨v, m_j⟩` for `j` in `range`, given `m_t` = mᵀ (r, n).
fn add_affinities_range(
    logits: &mut [f32],
    v: &[f32],
    m_t: &[f32],
    n: usize,
    range: std::ops::Range<usize>,
    beta: f32,
) {
    for (k, &vk) in v.iter().enumerate() {
        let c = beta * vk;
        let row = &m_t[k * n + range.start..k * n + range.end];
        for (l, &z) in logits[range.clone()].iter_mut().zip(row) {
            *l += c * z;
        }
    }
}

/// A position of `range` not `taken`, drawn ∝ `exp(logits)`. The range has at least one untaken position.
fn draw_untaken(
    logits: &[f32],
    taken: &[bool],
    cum: &mut [f64],
    range: std::ops::Range<usize>,
    rng: &mut ChaCha8Rng,
) -> usize {
    let max = range.clone().filter(|&j| !taken[j]).map(|j| logits[j]).fold(f32::NEG_INFINITY, f32::max);
    let mut total = 0f64;
    for j in range.clone() {
        if !taken[j] {
            total += f64::from((logits[j] - max).exp());
        }
        cum[j] = total;
    }
    let x = rng.random::<f64>() * total;
    let cum = &cum[range.clone()];
    let mut j = range.start + cum.partition_point(|&c| c <= x).min(cum.len() - 1);
    // A zero-weight (taken) position can only be hit by rounding at the end: step back to an untaken one.
    while taken[j] && j > range.start {
        j -= 1;
    }
    while taken[j] {
        j += 1;
    }
    j
}

/// Inserts each top-up `(user, item)` into the user's sequence where the transitions expect it: right after
/// a uniform one of the positions whose category has the item's category as preferred successor, or at a
/// uniform position when there is none.
fn insert_top_ups(
    sequences: &mut [Vec<u32>],
    extra: &[(u32, u32)],
    labels: &[usize],
    successor: &[usize],
    rng: &mut ChaCha8Rng,
) {
    let mut after = Vec::new();
    for &(u, i) in extra {
        let seq = &mut sequences[u as usize];
        let c = labels[i as usize];
        after.clear();
        after.extend((0..seq.len()).filter(|&q| successor[labels[seq[q] as usize]] == c));
        let at = if after.is_empty() {
            rng.random_range(0..=seq.len())
        } else {
            after[rng.random_range(0..after.len())] + 1
        };
        seq.insert(at, i);
    }
}

/// Removes the last item of sequences, drawn ∝ length (a uniform interaction's user), as long as the user
/// and that item both stay at or above `min_degree`, until the total is back at the target or every
/// interaction was tried once. Cutting tails keeps every remaining transition. Returns the number removed.
fn trim_tails(p: &Preset, sequences: &mut [Vec<u32>], rng: &mut ChaCha8Rng) -> usize {
    let total: usize = sequences.iter().map(Vec::len).sum();
    let excess = total.saturating_sub(p.n_interactions);
    if excess == 0 {
        return 0;
    }
    let k = p.min_degree;
    let mut item_count = vec![0usize; p.n_items];
    sequences.iter().flatten().for_each(|&i| item_count[i as usize] += 1);
    let mut tickets: Vec<u32> =
        sequences.iter().enumerate().flat_map(|(u, seq)| std::iter::repeat_n(u as u32, seq.len())).collect();
    tickets.shuffle(rng);
    let mut removed = 0;
    for &u in &tickets {
        if removed == excess {
            break;
        }
        let seq = &mut sequences[u as usize];
        match seq.last() {
            Some(&last) if seq.len() > k && item_count[last as usize] > k => {
                seq.pop();
                item_count[last as usize] -= 1;
                removed += 1;
            }
            _ => {}
        }
    }
    removed
}

/// `(user, item, timestamp)` rows, user by user in sequence order; see the module documentation, step 5.
fn timestamps(preset: &SeqPreset, sequences: &[Vec<u32>], rng: &mut ChaCha8Rng) -> Vec<(u32, u32, i64)> {
    let mut rows = Vec::with_capacity(sequences.iter().map(Vec::len).sum());
    for (u, seq) in sequences.iter().enumerate() {
        let mut day = rng.random_range(0..START_DAYS);
        for (t, &item) in seq.iter().enumerate() {
            if t > 0 && rng.random::<f64>() >= preset.same_day_prob {
                let gap = -(1.0 - rng.random::<f64>()).ln() * preset.mean_gap_days;
                day += 1 + gap.floor() as i64;
            }
            rows.push((u as u32, item, EPOCH + day * DAY));
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successors_form_cycles_of_three() {
        assert_eq!(successors(8), vec![1, 2, 0, 4, 5, 3, 7, 6]);
        assert_eq!(successors(7), vec![1, 2, 0, 4, 5, 6, 3]);
        assert_eq!(successors(1), vec![0]);
        assert_eq!(successors(2), vec![1, 0]);
        // Every category has exactly one predecessor.
        for n in 1..40 {
            let mut seen = successors(n);
            seen.sort_unstable();
            assert_eq!(seen, (0..n).collect::<Vec<_>>());
        }
    }

    #[test]
    fn presets_are_valid_and_named() {
        for name in SeqPreset::names() {
            let p = SeqPreset::by_name(name).unwrap();
            p.validate().unwrap();
            assert_eq!(&p.base.name, name);
            assert!(is_seq_preset(name));
        }
        assert!(!is_seq_preset("tiny"));
        let err = SeqPreset::by_name("beuty").unwrap_err().to_string();
        assert!(err.contains("tiny-seq, beauty"), "{err}");
        let p = SeqPreset { p_order: 1.5, ..SeqPreset::default() };
        assert!(p.validate().is_err());
    }

    #[test]
    fn presets_round_trip_through_json_and_reject_unknown_fields() {
        let p = SeqPreset::by_name("beauty").unwrap();
        let s = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<SeqPreset>(&s).unwrap(), p);
        assert!(serde_json::from_str::<SeqPreset>(r#"{"p_ordr": 0.5}"#).is_err());
    }

    #[test]
    fn draws_skip_taken_positions_and_follow_weights() {
        let logits = [0.0, 2f32.ln(), 0.0, 0.0];
        let taken = [false, false, true, false];
        let mut cum = [0f64; 4];
        let mut rng = stream(0, "t");
        let mut hits = [0usize; 4];
        for _ in 0..4000 {
            hits[draw_untaken(&logits, &taken, &mut cum, 0..4, &mut rng)] += 1;
        }
        assert_eq!(hits[2], 0);
        // Weights 1 : 2 : 0 : 1.
        assert!((hits[1] as f64 / 4000.0 - 0.5).abs() < 0.03, "{hits:?}");
        assert_eq!(draw_untaken(&logits, &[true, true, true, false], &mut cum, 2..4, &mut rng), 3);
    }
}
