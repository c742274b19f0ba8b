//! The generative model: labels, latents, interactions with a constructive 5-core, the per-user split,
//! and the two modality views. See the crate documentation for the model and its parameters.

use std::ops::Range;
use std::time::Instant;

use mmkd_data::rng::stream;
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::{Preset, Result};

/// A generated data set: interactions split into train and test, item labels and both modalities.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// The parameters it was generated with.
    pub preset: Preset,
    /// The run seed; every random stream is derived from it by name.
    pub seed: u64,
    /// Train interactions `(user, item)`, sorted by user then item.
    pub train: Vec<(u32, u32)>,
    /// Test interactions `(user, item)`, sorted by user then item; disjoint from `train`.
    pub test: Vec<(u32, u32)>,
    /// Category of each item, in `0..n_labels`; (n_items,).
    pub labels: Vec<i64>,
    /// Visual features, row-major (n_items, visual_dim).
    pub visual: Vec<f32>,
    /// Text features, row-major (n_items, text_dim).
    pub text: Vec<f32>,
    /// Statistics of the result, written to the manifest.
    pub stats: GenStats,
}

/// Statistics of a generated data set. Degrees count train + test interactions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenStats {
    pub n_users: usize,
    pub n_items: usize,
    pub n_labels: usize,
    /// Interactions asked for by the preset.
    pub target_interactions: usize,
    /// Interactions generated (train + test).
    pub n_interactions: usize,
    pub n_train: usize,
    pub n_test: usize,
    /// `n_test / n_interactions`.
    pub test_share: f64,
    /// `1 − n_interactions / (n_users · n_items)`.
    pub sparsity: f64,
    /// Number of items of each category; (n_labels,).
    pub label_histogram: Vec<usize>,
    pub min_user_degree: usize,
    pub max_user_degree: usize,
    pub mean_user_degree: f64,
    pub min_item_degree: usize,
    pub max_item_degree: usize,
    pub mean_item_degree: f64,
    /// Items with exactly `min_degree` interactions.
    pub items_at_min_degree: usize,
    /// Share of all interactions that fall on the 10% most popular items.
    pub top_decile_item_share: f64,
    /// Interactions added to bring items up to `min_degree`.
    pub n_topped_up: usize,
    /// Interactions removed afterwards (from users and items above `min_degree`) to land on the target.
    pub n_trimmed: usize,
    /// Users with no test interaction.
    pub users_without_test: usize,
    /// Items with no train interaction (they occur in test only).
    pub items_without_train: usize,
}

/// Generates the data set of `preset` from the run seed `seed`. The same arguments give the same result,
/// bit for bit.
pub fn generate(preset: &Preset, seed: u64) -> Result<Generated> {
    preset.validate()?;
    let _span = tracing::info_span!("generate", preset = %preset.name, seed).entered();
    let started = Instant::now();
    let p = preset;
    let r = p.latent_dim;

    let pi = category_probs(p.n_labels, p.zipf_exponent);
    let labels = sample_labels(p.n_items, &pi, &mut stream(seed, "labels"));
    let centroids = normal_vec(&mut stream(seed, "centroids"), p.n_labels * r, 1.0); // (n_labels, r)
    let item_latent = item_latents(p, &labels, &centroids, &mut stream(seed, "item-latent")); // (n_items, r)
    let log_pop = normal_vec(&mut stream(seed, "popularity"), p.n_items, p.pop_sigma as f32); // (n_items,)
    let user_latent = user_latents(p, &pi, &centroids, &mut stream(seed, "users")); // (n_users, r)
    let degrees = user_degrees(p, &mut stream(seed, "degrees"));

    let mut by_user =
        sample_interactions(p, &user_latent, &item_latent, &log_pop, &degrees, &mut stream(seed, "interactions"));
    let n_topped_up = top_up(p, &user_latent, &item_latent, &mut by_user, &mut stream(seed, "top-up"));
    let n_trimmed = trim(p, &mut by_user, &mut stream(seed, "trim"));
    let (train, test) = split(p, &by_user, &mut stream(seed, "split"));
    tracing::debug!(secs = started.elapsed().as_secs_f32(), "interactions");

    let half = r / 2;
    let visual = modality_features(p, &item_latent, &labels, 0..half, p.visual_dim, seed, "visual", Activation::Relu);
    let text = modality_features(p, &item_latent, &labels, half..r, p.text_dim, seed, "text", Activation::Tanh);

    let labels: Vec<i64> = labels.iter().map(|&c| c as i64).collect();
    let stats = compute_stats(p, &labels, &train, &test, n_topped_up, n_trimmed);
    tracing::info!(
        users = stats.n_users,
        items = stats.n_items,
        interactions = stats.n_interactions,
        secs = started.elapsed().as_secs_f32(),
        "generated"
    );
    Ok(Generated { preset: p.clone(), seed, train, test, labels, visual, text, stats })
}

/// Labels and both modality views, generated as [`generate`] does, for interactions that come from
/// elsewhere (e.g. the real Office interactions): the preset's sizes are replaced by those of the
/// interactions (ids `0..=max`), its feature widths, label count and model parameters are kept. The features
/// are unrelated to the interactions: the result is for benchmarks and loaders, not for measuring quality.
/// Pairs are sorted; a pair in both `train` and `test` is kept in both, as given.
pub fn generate_for_interactions(
    preset: &Preset,
    seed: u64,
    mut train: Vec<(u32, u32)>,
    mut test: Vec<(u32, u32)>,
) -> Result<Generated> {
    let max = |pick: fn(&(u32, u32)) -> u32| train.iter().chain(&test).map(pick).max().map_or(0, |m| m as usize + 1);
    let (n_users, n_items) = (max(|p| p.0), max(|p| p.1));
    let n_labels = preset.n_labels.min(n_items.max(1));
    let p = Preset {
        name: format!("{}-features-for-given-interactions", preset.name),
        n_users,
        n_items,
        n_labels,
        n_interactions: train.len() + test.len(),
        fav_categories: [preset.fav_categories[0].min(n_labels), preset.fav_categories[1].min(n_labels)],
        ..preset.clone()
    };
    if n_items == 0 || p.latent_dim < 2 || p.visual_dim == 0 || p.text_dim == 0 {
        return Err(crate::Error::InvalidPreset {
            preset: p.name,
            reason: "needs at least one interaction, latent_dim ≥ 2 and positive feature widths".into(),
        });
    }
    train.sort_unstable();
    test.sort_unstable();
    let r = p.latent_dim;
    let pi = category_probs(p.n_labels, p.zipf_exponent);
    let labels = sample_labels(p.n_items, &pi, &mut stream(seed, "labels"));
    let centroids = normal_vec(&mut stream(seed, "centroids"), p.n_labels * r, 1.0);
    let item_latent = item_latents(&p, &labels, &centroids, &mut stream(seed, "item-latent"));
    let half = r / 2;
    let visual = modality_features(&p, &item_latent, &labels, 0..half, p.visual_dim, seed, "visual", Activation::Relu);
    let text = modality_features(&p, &item_latent, &labels, half..r, p.text_dim, seed, "text", Activation::Tanh);
    let labels: Vec<i64> = labels.iter().map(|&c| c as i64).collect();
    let stats = compute_stats(&p, &labels, &train, &test, 0, 0);
    Ok(Generated { preset: p, seed, train, test, labels, visual, text, stats })
}

/// Category sizes `π_c ∝ (c + 1)^(−exponent)`, normalised; (n_labels,).
pub(crate) fn category_probs(n_labels: usize, exponent: f64) -> Vec<f64> {
    let raw: Vec<f64> = (0..n_labels).map(|c| ((c + 1) as f64).powf(-exponent)).collect();
    let sum: f64 = raw.iter().sum();
    raw.iter().map(|w| w / sum).collect()
}

/// Stratified draw of the labels: one item per category, the rest in proportion to `pi` (cumulative
/// rounding, so the counts sum exactly), then shuffled over the items. Every category occurs.
pub(crate) fn sample_labels(n_items: usize, pi: &[f64], rng: &mut ChaCha8Rng) -> Vec<usize> {
    let rest = (n_items - pi.len()) as f64;
    let mut labels = Vec::with_capacity(n_items);
    let mut cum = 0.0;
    let mut prev = 0usize;
    for (c, &share) in pi.iter().enumerate() {
        cum += share;
        let upto = if c + 1 == pi.len() { n_items - pi.len() } else { (rest * cum).round() as usize };
        let count = 1 + upto.saturating_sub(prev);
        prev = prev.max(upto);
        labels.extend(std::iter::repeat_n(c, count));
    }
    labels.shuffle(rng);
    labels
}

pub(crate) fn normal_vec(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let x: f32 = StandardNormal.sample(rng);
            x * scale
        })
        .collect()
}

/// `z_i = a·μ_{c_i} + (1−a)·ε_i`, ε_i ~ N(0, I_r); (n_items, r).
pub(crate) fn item_latents(p: &Preset, labels: &[usize], centroids: &[f32], rng: &mut ChaCha8Rng) -> Vec<f32> {
    let r = p.latent_dim;
    let a = p.label_share as f32;
    let mut z = normal_vec(rng, p.n_items * r, 1.0 - a);
    for (row, &c) in z.chunks_exact_mut(r).zip(labels) {
        for (x, &m) in row.iter_mut().zip(&centroids[c * r..(c + 1) * r]) {
            *x += a * m;
        }
    }
    z
}

/// Each user picks 1–3 distinct favourite categories (∝ π) and has the mean of their centroids plus
/// N(0, user_noise²·I_r) as latent; (n_users, r).
fn user_latents(p: &Preset, pi: &[f64], centroids: &[f32], rng: &mut ChaCha8Rng) -> Vec<f32> {
    user_latents_with_favourites(p, pi, centroids, rng).0
}

/// [`user_latents`] and each user's favourite categories, in the order drawn.
pub(crate) fn user_latents_with_favourites(
    p: &Preset,
    pi: &[f64],
    centroids: &[f32],
    rng: &mut ChaCha8Rng,
) -> (Vec<f32>, Vec<Vec<usize>>) {
    let r = p.latent_dim;
    let [fav_min, fav_max] = p.fav_categories;
    let noise = p.user_noise as f32;
    let mut users = vec![0f32; p.n_users * r];
    let mut favourites = Vec::with_capacity(p.n_users);
    let mut weights = vec![0f64; pi.len()];
    for row in users.chunks_exact_mut(r) {
        let k = rng.random_range(fav_min..=fav_max);
        weights.copy_from_slice(pi);
        let mut fav = Vec::with_capacity(k);
        for _ in 0..k {
            let c = draw_categorical(&weights, rng);
            weights[c] = 0.0;
            fav.push(c);
            for (x, &m) in row.iter_mut().zip(&centroids[c * r..(c + 1) * r]) {
                *x += m / k as f32;
            }
        }
        for x in row.iter_mut() {
            let e: f32 = StandardNormal.sample(rng);
            *x += noise * e;
        }
        favourites.push(fav);
    }
    (users, favourites)
}

/// Index drawn with probability ∝ `weights` (at least one positive).
pub(crate) fn draw_categorical(weights: &[f64], rng: &mut ChaCha8Rng) -> usize {
    let total: f64 = weights.iter().sum();
    let mut x = rng.random::<f64>() * total;
    for (i, &w) in weights.iter().enumerate() {
        if x < w {
            return i;
        }
        x -= w;
    }
    // Rounding left x past the end: return the last category with weight.
    weights.iter().rposition(|&w| w > 0.0).unwrap_or(0)
}

/// `degree_u = min_degree + e_u`, with `e_u ~ LogNormal(·, degree_sigma)` rescaled so that the degrees
/// sum to the target (cumulative rounding), capped at `n_items / 2`.
pub(crate) fn user_degrees(p: &Preset, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let k = p.min_degree;
    let extra_total = (p.n_interactions - k * p.n_users) as f64;
    let raw: Vec<f64> = (0..p.n_users)
        .map(|_| {
            let x: f64 = StandardNormal.sample(rng);
            (p.degree_sigma * x).exp()
        })
        .collect();
    let sum: f64 = raw.iter().sum();
    let cap = (p.n_items / 2).max(k);
    let mut cum = 0.0;
    let mut prev = 0usize;
    raw.iter()
        .map(|&x| {
            cum += x / sum * extra_total;
            let upto = cum.round() as usize;
            let extra = upto - prev;
            prev = upto;
            (k + extra).min(cap)
        })
        .collect()
}

/// `out[k·rows + j] = m[j·cols + k]`: (rows, cols) → (cols, rows).
pub(crate) fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; m.len()];
    for (j, row) in m.chunks_exact(cols).enumerate() {
        for (k, &x) in row.iter().enumerate() {
            out[k * rows + j] = x;
        }
    }
    out
}

/// `logits[j] += β·⟨v, m_j⟩` for every row j of m, given `m_t` = mᵀ (r, n) so the loop runs over
/// contiguous slices.
pub(crate) fn add_affinities(logits: &mut [f32], v: &[f32], m_t: &[f32], beta: f32) {
    let n = logits.len();
    for (k, &vk) in v.iter().enumerate() {
        let c = beta * vk;
        for (l, &z) in logits.iter_mut().zip(&m_t[k * n..(k + 1) * n]) {
            *l += c * z;
        }
    }
}

/// Reusable buffers of [`sample_without_replacement`].
struct Sampler {
    cum: Vec<f64>,
    taken: Vec<bool>,
}

impl Sampler {
    fn new(n: usize) -> Self {
        Self { cum: vec![0.0; n], taken: vec![false; n] }
    }

    /// Cumulative weights `exp(logit − max)` of the entries not taken; returns the total.
    fn fill(&mut self, logits: &[f32], max: f32) -> f64 {
        let mut total = 0f64;
        for ((c, &l), &t) in self.cum.iter_mut().zip(logits).zip(&self.taken) {
            if !t {
                total += f64::from((l - max).exp());
            }
            *c = total;
        }
        total
    }

    /// Draws `k` distinct indices with probability ∝ `exp(logits)` by successive sampling, skipping the
    /// entries already marked in `taken`. Leaves the drawn ones marked; the caller clears the marks.
    /// Needs at least `k` unmarked entries.
    fn sample(&mut self, logits: &[f32], k: usize, rng: &mut ChaCha8Rng) -> Vec<u32> {
        let n = logits.len();
        let max = logits.iter().fold(f32::NEG_INFINITY, |m, &l| m.max(l));
        let mut total = self.fill(logits, max);
        let mut chosen = Vec::with_capacity(k);
        let mut rejects = 0usize;
        while chosen.len() < k {
            let idx = if total > 0.0 && total.is_finite() {
                let x = rng.random::<f64>() * total;
                self.cum.partition_point(|&c| c <= x).min(n - 1)
            } else {
                // Every remaining weight underflowed: fall back to uniform draws.
                rng.random_range(0..n)
            };
            if self.taken[idx] {
                rejects += 1;
                if rejects > 16 + 2 * k {
                    // Taken entries hold too much mass: drop them from the cumulative weights.
                    total = self.fill(logits, max);
                    rejects = 0;
                }
                continue;
            }
            self.taken[idx] = true;
            chosen.push(idx as u32);
        }
        chosen
    }
}

/// Each user draws `degree_u` distinct items with probability ∝ `p_i·exp(β⟨u, z_i⟩)`; items per user.
fn sample_interactions(
    p: &Preset,
    user_latent: &[f32],
    item_latent: &[f32],
    log_pop: &[f32],
    degrees: &[usize],
    rng: &mut ChaCha8Rng,
) -> Vec<Vec<u32>> {
    let r = p.latent_dim;
    let z_t = transpose(item_latent, p.n_items, r); // (r, n_items)
    let mut logits = vec![0f32; p.n_items];
    let mut sampler = Sampler::new(p.n_items);
    user_latent
        .chunks_exact(r)
        .zip(degrees)
        .map(|(u, &degree)| {
            logits.copy_from_slice(log_pop);
            add_affinities(&mut logits, u, &z_t, p.beta as f32);
            let mut items = sampler.sample(&logits, degree, rng);
            for &i in &items {
                sampler.taken[i as usize] = false;
            }
            items.sort_unstable();
            items
        })
        .collect()
}

/// Gives every item with fewer than `min_degree` users extra users, drawn ∝ `exp(β⟨u, z_i⟩)` among
/// those who do not have it yet. Returns the number of interactions added.
fn top_up(
    p: &Preset,
    user_latent: &[f32],
    item_latent: &[f32],
    by_user: &mut [Vec<u32>],
    rng: &mut ChaCha8Rng,
) -> usize {
    let extra = top_up_pairs(p, user_latent, item_latent, by_user, rng);
    for &(u, i) in &extra {
        by_user[u as usize].push(i);
    }
    for items in by_user.iter_mut() {
        items.sort_unstable();
    }
    extra.len()
}

/// The `(user, item)` interactions [`top_up`] adds, in item order, without adding them.
pub(crate) fn top_up_pairs(
    p: &Preset,
    user_latent: &[f32],
    item_latent: &[f32],
    by_user: &[Vec<u32>],
    rng: &mut ChaCha8Rng,
) -> Vec<(u32, u32)> {
    let r = p.latent_dim;
    let mut item_users: Vec<Vec<u32>> = vec![Vec::new(); p.n_items];
    for (u, items) in by_user.iter().enumerate() {
        for &i in items {
            item_users[i as usize].push(u as u32);
        }
    }
    let u_t = transpose(user_latent, p.n_users, r); // (r, n_users)
    let mut logits = vec![0f32; p.n_users];
    let mut sampler = Sampler::new(p.n_users);
    let mut added = Vec::new();
    for (i, users) in item_users.iter_mut().enumerate() {
        let need = p.min_degree.saturating_sub(users.len());
        if need == 0 {
            continue;
        }
        logits.fill(0.0);
        add_affinities(&mut logits, &item_latent[i * r..(i + 1) * r], &u_t, p.beta as f32);
        for &u in users.iter() {
            sampler.taken[u as usize] = true;
        }
        let extra = sampler.sample(&logits, need, rng);
        for &u in users.iter().chain(&extra) {
            sampler.taken[u as usize] = false;
        }
        added.extend(extra.iter().map(|&u| (u, i as u32)));
        users.extend(&extra);
    }
    added
}

/// Removes random interactions whose user and item both stay at or above `min_degree`, until the total
/// is back at the target or no such interaction is left. Returns the number removed.
pub(crate) fn trim(p: &Preset, by_user: &mut [Vec<u32>], rng: &mut ChaCha8Rng) -> usize {
    let total: usize = by_user.iter().map(Vec::len).sum();
    let excess = total.saturating_sub(p.n_interactions);
    if excess == 0 {
        return 0;
    }
    let k = p.min_degree;
    let mut user_deg: Vec<usize> = by_user.iter().map(Vec::len).collect();
    let mut item_deg = vec![0usize; p.n_items];
    let mut pairs = Vec::with_capacity(total);
    for (u, items) in by_user.iter().enumerate() {
        for &i in items {
            item_deg[i as usize] += 1;
            pairs.push((u as u32, i));
        }
    }
    pairs.shuffle(rng);
    let mut removed = Vec::with_capacity(excess);
    for &(u, i) in &pairs {
        if removed.len() == excess {
            break;
        }
        if user_deg[u as usize] > k && item_deg[i as usize] > k {
            user_deg[u as usize] -= 1;
            item_deg[i as usize] -= 1;
            removed.push((u, i));
        }
    }
    removed.sort_unstable();
    for chunk in removed.chunk_by(|a, b| a.0 == b.0) {
        let items = &mut by_user[chunk[0].0 as usize];
        items.retain(|i| chunk.binary_search(&(chunk[0].0, *i)).is_err());
    }
    removed.len()
}

/// `(user, item)` interactions.
type Pairs = Vec<(u32, u32)>;

/// Per user: a random `round(test_frac·n)` of the interactions go to test, keeping at least one in train.
/// Both lists come out sorted by user then item.
fn split(p: &Preset, by_user: &[Vec<u32>], rng: &mut ChaCha8Rng) -> (Pairs, Pairs) {
    let mut train = Vec::new();
    let mut test = Vec::new();
    for (u, items) in by_user.iter().enumerate() {
        let n = items.len();
        let n_test = ((p.test_frac * n as f64).round() as usize).min(n.saturating_sub(1));
        let mut shuffled = items.clone();
        shuffled.shuffle(rng);
        let (held, kept) = shuffled.split_at_mut(n_test);
        held.sort_unstable();
        kept.sort_unstable();
        test.extend(held.iter().map(|&i| (u as u32, i)));
        train.extend(kept.iter().map(|&i| (u as u32, i)));
    }
    (train, test)
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Activation {
    Relu,
    Tanh,
}

/// One modality view: `act(A·[z_i[latent]; s·onehot(c_i); n_i])`, with the nuisance `n_i ~ N(0, ns²·I)`
/// and `A` (dim, m) a fixed Gaussian projection scaled so the pre-activations have unit variance;
/// tanh views also get `feature_noise·N(0, 1)`. Returns (n_items, dim), row-major.
pub(crate) fn modality_features(
    p: &Preset,
    item_latent: &[f32],
    labels: &[usize],
    latent: Range<usize>,
    dim: usize,
    seed: u64,
    name: &str,
    activation: Activation,
) -> Vec<f32> {
    let r = p.latent_dim;
    let h = latent.len();
    let n_in = h + p.n_labels + p.nuisance_dim;
    let a = p.label_share;
    let s = p.label_strength as f32;
    // E‖x‖² of the input: each latent entry has variance a² + (1−a)².
    let input_sq = h as f64 * (a * a + (1.0 - a) * (1.0 - a))
        + p.label_strength.powi(2)
        + p.nuisance_dim as f64 * p.nuisance_scale.powi(2);
    let proj_scale = (1.0 / input_sq.max(f64::MIN_POSITIVE)).sqrt() as f32;
    // Column-major (n_in, dim): column k, the weights of input k, is contiguous.
    let proj = normal_vec(&mut stream(seed, &format!("projection-{name}")), n_in * dim, proj_scale);
    let column = |k: usize| &proj[k * dim..(k + 1) * dim];
    let mut nuisance_rng = stream(seed, &format!("nuisance-{name}"));
    let mut noise_rng = stream(seed, &format!("noise-{name}"));
    let mut nuisance = vec![0f32; p.nuisance_dim];
    let mut out = vec![0f32; p.n_items * dim];
    for ((row, z), &c) in out.chunks_exact_mut(dim).zip(item_latent.chunks_exact(r)).zip(labels) {
        for x in nuisance.iter_mut() {
            let e: f32 = StandardNormal.sample(&mut nuisance_rng);
            *x = p.nuisance_scale as f32 * e;
        }
        let inputs = z[latent.clone()]
            .iter()
            .enumerate()
            .map(|(k, &x)| (k, x))
            .chain(std::iter::once((h + c, s)))
            .chain(nuisance.iter().enumerate().map(|(j, &x)| (h + p.n_labels + j, x)));
        for (k, x) in inputs {
            for (o, &w) in row.iter_mut().zip(column(k)) {
                *o += x * w;
            }
        }
        match activation {
            Activation::Relu => row.iter_mut().for_each(|o| *o = o.max(0.0)),
            Activation::Tanh => {
                let noise = p.feature_noise as f32;
                for o in row.iter_mut() {
                    let e: f32 = if noise > 0.0 { StandardNormal.sample(&mut noise_rng) } else { 0.0 };
                    *o = o.tanh() + noise * e;
                }
            }
        }
    }
    out
}

fn compute_stats(
    p: &Preset,
    labels: &[i64],
    train: &[(u32, u32)],
    test: &[(u32, u32)],
    n_topped_up: usize,
    n_trimmed: usize,
) -> GenStats {
    let mut user_deg = vec![0usize; p.n_users];
    let mut item_deg = vec![0usize; p.n_items];
    let mut user_test = vec![0usize; p.n_users];
    let mut item_train = vec![0usize; p.n_items];
    for &(u, i) in train {
        user_deg[u as usize] += 1;
        item_deg[i as usize] += 1;
        item_train[i as usize] += 1;
    }
    for &(u, i) in test {
        user_deg[u as usize] += 1;
        item_deg[i as usize] += 1;
        user_test[u as usize] += 1;
    }
    let mut label_histogram = vec![0usize; p.n_labels];
    for &c in labels {
        label_histogram[c as usize] += 1;
    }
    let n = train.len() + test.len();
    let mut sorted_items = item_deg.clone();
    sorted_items.sort_unstable_by(|a, b| b.cmp(a));
    let top = sorted_items.len().div_ceil(10);
    let top_sum: usize = sorted_items[..top].iter().sum();
    let min_max = |d: &[usize]| (d.iter().copied().min().unwrap_or(0), d.iter().copied().max().unwrap_or(0));
    let (min_user_degree, max_user_degree) = min_max(&user_deg);
    let (min_item_degree, max_item_degree) = min_max(&item_deg);
    GenStats {
        n_users: p.n_users,
        n_items: p.n_items,
        n_labels: p.n_labels,
        target_interactions: p.n_interactions,
        n_interactions: n,
        n_train: train.len(),
        n_test: test.len(),
        test_share: test.len() as f64 / n.max(1) as f64,
        sparsity: 1.0 - n as f64 / (p.n_users as f64 * p.n_items as f64),
        label_histogram,
        min_user_degree,
        max_user_degree,
        mean_user_degree: n as f64 / p.n_users as f64,
        min_item_degree,
        max_item_degree,
        mean_item_degree: n as f64 / p.n_items as f64,
        items_at_min_degree: item_deg.iter().filter(|&&d| d == p.min_degree).count(),
        top_decile_item_share: top_sum as f64 / n.max(1) as f64,
        n_topped_up,
        n_trimmed,
        users_without_test: user_test.iter().filter(|&&t| t == 0).count(),
        items_without_train: item_train.iter().filter(|&&t| t == 0).count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_stratified_and_skewed() {
        let pi = category_probs(8, 1.0);
        let labels = sample_labels(300, &pi, &mut stream(0, "t"));
        let mut hist = [0usize; 8];
        for &c in &labels {
            hist[c] += 1;
        }
        assert_eq!(hist.iter().sum::<usize>(), 300);
        assert!(hist.iter().all(|&h| h >= 1));
        // π_0 / π_7 = 8.
        assert!(hist[0] > 5 * hist[7], "{hist:?}");
        let pi = category_probs(54, 1.0);
        let labels = sample_labels(60, &pi, &mut stream(0, "t"));
        let mut hist = [0usize; 54];
        labels.iter().for_each(|&c| hist[c] += 1);
        assert!(hist.iter().all(|&h| h >= 1) && hist.iter().sum::<usize>() == 60);
    }

    #[test]
    fn degrees_sum_to_target_and_respect_the_minimum() {
        let p = Preset::default();
        let d = user_degrees(&p, &mut stream(1, "d"));
        assert_eq!(d.iter().sum::<usize>(), p.n_interactions);
        assert!(d.iter().all(|&x| x >= p.min_degree));
    }

    #[test]
    fn sampler_draws_distinct_entries_in_proportion_to_weights() {
        // Weights 8:1:1:… over 10 entries; single draws should pick entry 0 about 8/17 of the time.
        let mut logits = vec![0f32; 10];
        logits[0] = 8f32.ln();
        let mut sampler = Sampler::new(10);
        let mut rng = stream(0, "sampler");
        let mut first = 0;
        for _ in 0..4000 {
            let d = sampler.sample(&logits, 1, &mut rng);
            sampler.taken[d[0] as usize] = false;
            first += usize::from(d[0] == 0);
        }
        let share = first as f64 / 4000.0;
        assert!((share - 8.0 / 17.0).abs() < 0.03, "{share}");
        // Drawing every entry terminates and gives a permutation; marked entries are skipped.
        sampler.taken[3] = true;
        let mut all = sampler.sample(&logits, 9, &mut rng);
        all.sort_unstable();
        assert_eq!(all, vec![0, 1, 2, 4, 5, 6, 7, 8, 9]);
    }

    #[test]
    fn transpose_swaps_axes() {
        let m = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // (2, 3)
        assert_eq!(transpose(&m, 2, 3), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    }
}
