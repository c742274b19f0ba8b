//! KDSR's frozen correlation teacher (Hu et al., *Lightweight Modality Adaptation to Sequential
//! Recommendation via Correlation Supervision*, ECIR'24; spec `kdsr-mmsr.md` §2.7, §3).
//! Reference: HoldenHu/KDSR `model_corvector.py` (teacher scores and codes), `preprocess/*` (autoencoder,
//! codebook). Deviations from it, all marked \[PROPOSED\] in the spec:
//!
//! - [`compress`]: the Linear+Sigmoid autoencoder shuffles its batches and keeps a real copy of the best
//!   weights (the reference iterates in array order and its "best state" is a live reference, §2.7).
//! - [`Codebook::fit`]: mini-batch k-means on a seeded uniform sample of min(N², `sample_pairs`) pairs plus
//!   every diagonal pair, instead of all (N+1)² pairs (§3.4). [`Quantiser::Vq`] is an EMA codebook
//!   (VQ-VAE style), a non-default option that is not the published method (§3.3).
//! - [`KdsrTeacher::targets`]: scores s_ij and codes c_ij are computed per batch from the gathered rows of
//!   z^m; the dense (N+1)×(N+1) matrices of the reference are never built (§3.4).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Optimizer, VarMap};
use mmkd_features::nn::linear;
use mmkd_features::{seeded_var_builder, LinearInit};
use mmkd_nn::optim::{sorted_vars, AdamConfig, AdamW};
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Elements above which the element-wise pair scores (`euc`, `man`) are computed over batch chunks.
const PAIR_CHUNK_ELEMS: usize = 1 << 24;
/// Rows per chunk in [`Codebook::assign`] and in the codebook's pair sampling.
const ROW_CHUNK: usize = 1 << 16;
/// Key of the centroids in a saved codebook.
const CENTROIDS_KEY: &str = "centroids";

// ---------------------------------------------------------------------------------------------------------
// Autoencoder compression (§2.7).

/// Settings of the compression autoencoder z = σ(W_e x + b_e), x̂ = W_d z + b_d (reference
/// `preprocess/*`: Adam, lr 1e-3, batch 256, ≤ 500 epochs, checks every 10 epochs, patience 4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AeConfig {
    /// Width d_m of the compressed feature z (128).
    pub dim: usize,
    /// Adam learning rate (weight decay 0).
    pub lr: f64,
    /// Items per step.
    pub batch: usize,
    /// Upper bound on the number of epochs.
    pub max_epochs: usize,
    /// The epoch loss is compared with the best so far every `check_every` epochs (and after the last one).
    pub check_every: usize,
    /// Training stops after this many consecutive checks without improvement.
    pub patience: usize,
    /// Shuffle the items every epoch (\[PROPOSED\]; the reference takes them in array order).
    pub shuffle: bool,
    /// Return the encoder of the best check (\[PROPOSED\]; the reference's "best state" is a live reference
    /// to the parameters, so it ends with the final weights).
    pub keep_best: bool,
}

impl Default for AeConfig {
    fn default() -> Self {
        Self {
            dim: 128,
            lr: 1e-3,
            batch: 256,
            max_epochs: 500,
            check_every: 10,
            patience: 4,
            shuffle: true,
            keep_best: true,
        }
    }
}

impl AeConfig {
    /// Checks values that serde cannot.
    pub fn validate(&self) -> Result<()> {
        if self.dim == 0 || self.batch == 0 || self.max_epochs == 0 || self.check_every == 0 || self.patience == 0 {
            return Err(Error::Config(format!(
                "autoencoder: dim, batch, max_epochs, check_every and patience must be positive, got {self:?}"
            )));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::Config(format!("autoencoder: lr must be positive, got {}", self.lr)));
        }
        Ok(())
    }
}

/// What [`compress`] did. Losses are the mean squared error per element over one epoch's batches (each
/// batch's mean weighted by its rows), measured while that epoch trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AeReport {
    /// Epochs trained.
    pub epochs: usize,
    /// Loss of the first epoch.
    pub first_loss: f64,
    /// Loss of the last epoch.
    pub final_loss: f64,
    /// Lowest loss seen at a check; the returned z come from those weights when `keep_best`.
    pub best_loss: f64,
}

/// Trains the autoencoder on `x` (n, D) f32 raw features and returns z (n, `cfg.dim`) f32, every entry in
/// (0, 1) (up to f32 saturation of the sigmoid), with its report. Parameters draw from `seed`, the batch
/// order from the stream `kdsr-ae-batches`. The caller prepends the zero padding row and zeroes the rows of
/// items that lack the modality (§2.6).
pub fn compress(x: &Tensor, cfg: &AeConfig, seed: u64, device: &Device) -> Result<(Tensor, AeReport)> {
    cfg.validate()?;
    let (n, in_dim) = x.dims2().map_err(|_| Error::shape("autoencoder input", "(n, D)", x.dims()))?;
    if x.dtype() != DType::F32 {
        return Err(Error::shape("autoencoder input dtype", "f32", x.dtype()));
    }
    if n == 0 || in_dim == 0 {
        return Err(Error::Mismatch(format!("autoencoder: cannot train on an empty matrix {:?}", x.dims())));
    }
    let x = x.to_device(device)?;
    let varmap = VarMap::new();
    let vb = seeded_var_builder(&varmap, seed, DType::F32, device);
    let encoder = linear(vb.pp("encoder"), in_dim, cfg.dim, LinearInit::Torch)?;
    let decoder = linear(vb.pp("decoder"), cfg.dim, in_dim, LinearInit::Torch)?;
    let vars = sorted_vars(&varmap);
    let mut opt = AdamW::new(vars.clone(), AdamConfig { lr: cfg.lr, ..AdamConfig::default() })?;
    let encode = |xb: &Tensor| -> candle_core::Result<Tensor> { candle_nn::ops::sigmoid(&encoder.forward(xb)?) };

    let mut rng = mmkd_data::stream(seed, "kdsr-ae-batches");
    let mut order: Vec<u32> = (0..n as u32).collect();
    let (mut first_loss, mut final_loss, mut best_loss) = (f64::NAN, f64::NAN, f64::INFINITY);
    let mut best: Option<Vec<Tensor>> = None;
    let (mut stale, mut epochs) = (0usize, 0usize);
    tracing::info!(n, in_dim, dim = cfg.dim, "training the compression autoencoder");
    for epoch in 0..cfg.max_epochs {
        if cfg.shuffle {
            order.shuffle(&mut rng);
        }
        let mut sum = 0f64;
        for rows in order.chunks(cfg.batch) {
            let idx = Tensor::from_slice(rows, rows.len(), device)?;
            let xb = x.index_select(&idx, 0)?; // (b, D)
            let x_hat = decoder.forward(&encode(&xb)?)?; // (b, D)
            let loss = (x_hat - &xb)?.sqr()?.mean_all()?;
            opt.backward_step(&loss)?;
            sum += f64::from(loss.to_scalar::<f32>()?) * rows.len() as f64;
        }
        let loss = sum / n as f64;
        epochs = epoch + 1;
        if epoch == 0 {
            first_loss = loss;
        }
        final_loss = loss;
        if epochs % cfg.check_every == 0 || epochs == cfg.max_epochs {
            if loss < best_loss {
                best_loss = loss;
                stale = 0;
                if cfg.keep_best {
                    best = Some(vars.iter().map(|v| v.as_tensor().copy()).collect::<candle_core::Result<_>>()?);
                }
            } else {
                stale += 1;
            }
            tracing::info!(epoch, loss, best_loss, stale, "autoencoder check");
            if stale >= cfg.patience {
                break;
            }
        }
    }
    if let Some(best) = best {
        for (var, value) in vars.iter().zip(&best) {
            var.set(value)?;
        }
    }
    let mut parts = Vec::with_capacity(n.div_ceil(ROW_CHUNK));
    for start in (0..n).step_by(ROW_CHUNK) {
        let len = ROW_CHUNK.min(n - start);
        parts.push(encode(&x.narrow(0, start, len)?)?.detach());
    }
    let z = Tensor::cat(&parts, 0)?; // (n, dim)
    let report = AeReport { epochs, first_loss, final_loss, best_loss };
    tracing::info!(?report, "autoencoder trained");
    Ok((z, report))
}

// ---------------------------------------------------------------------------------------------------------
// Scoring functions (§3.1–3.3).

/// The scoring function f of KDSR (reference flag `score_func`-style choice; spec §3.1). Distances are
/// used as is, with no sign flip: teacher and student always share f.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scoring {
    /// ⟨a, b⟩ / (‖a‖‖b‖), and 0 when either norm is 0 (the scikit-learn convention).
    #[default]
    Cos,
    /// ⟨a, b⟩.
    Dot,
    /// ‖a − b‖₂.
    Euc,
    /// ‖a − b‖₁.
    Man,
}

/// √x element-wise with a zero gradient where x = 0 (candle's √ would give ∞·0 = NaN there); x ≥ 0.
pub fn safe_sqrt(x: &Tensor) -> Result<Tensor> {
    let pos = x.gt(0.0)?;
    let ones = x.ones_like()?;
    let root = pos.where_cond(x, &ones)?.sqrt()?;
    Ok(pos.where_cond(&root, &x.zeros_like()?)?)
}

/// Rows divided by their L2 norm over the last dimension; all-zero rows stay zero (with zero gradient).
pub fn normalize_rows(x: &Tensor) -> Result<Tensor> {
    let sq = x.sqr()?.sum_keepdim(D::Minus1)?;
    let pos = sq.gt(0.0)?;
    let norm = pos.where_cond(&sq, &sq.ones_like()?)?.sqrt()?;
    Ok(x.broadcast_div(&norm)?)
}

fn dims3(what: &'static str, t: &Tensor) -> Result<(usize, usize, usize)> {
    t.dims3().map_err(|_| Error::shape(what, "(b, q, d)", t.dims()))
}

/// f between every pair of rows of each sequence: `a` (b, q, d) → (b, q, q), entry [s, i, j] =
/// f(a[s, i], a[s, j]). Differentiable (the student scores g^m(e^m) with it).
pub fn pair_scores(a: &Tensor, f: Scoring) -> Result<Tensor> {
    dims3("pair_scores input", a)?;
    Ok(sub_vector_scores(a, 1, f)?.squeeze(3)?)
}

/// The correlation vectors r_ij (§3.3): each row of `a` (b, q, d) is cut into `n_sub` contiguous chunks of
/// d / n_sub entries, and entry [s, i, j, k] = f(chunk k of a[s, i], chunk k of a[s, j]) → (b, q, q, n_sub).
/// An error unless `n_sub` divides d.
pub fn sub_vector_scores(a: &Tensor, n_sub: usize, f: Scoring) -> Result<Tensor> {
    let (b, q, d) = dims3("sub_vector_scores input", a)?;
    if n_sub == 0 || d % n_sub != 0 {
        return Err(Error::Config(format!("n_sub = {n_sub} must be positive and divide the width d = {d}")));
    }
    let c = d / n_sub;
    match f {
        Scoring::Cos | Scoring::Dot => {
            let x = a.reshape((b, q, n_sub, c))?.transpose(1, 2)?.contiguous()?; // (b, D, q, c)
            let x = if f == Scoring::Cos { normalize_rows(&x)? } else { x };
            let s = x.matmul(&x.transpose(2, 3)?.contiguous()?)?; // (b, D, q, q)
            Ok(s.permute((0, 2, 3, 1))?.contiguous()?) // (b, q, q, D)
        }
        Scoring::Euc | Scoring::Man => {
            let per_seq = (q * q * d).max(1);
            let step = (PAIR_CHUNK_ELEMS / per_seq).max(1);
            let mut parts = Vec::with_capacity(b.div_ceil(step).max(1));
            for start in (0..b).step_by(step) {
                let len = step.min(b - start);
                let x = a.narrow(0, start, len)?;
                let diff = x.unsqueeze(2)?.broadcast_sub(&x.unsqueeze(1)?)?; // (bb, q, q, d)
                let diff = diff.reshape((len, q, q, n_sub, c))?;
                parts.push(match f {
                    Scoring::Euc => safe_sqrt(&diff.sqr()?.sum(4)?)?,
                    _ => diff.abs()?.sum(4)?,
                }); // (bb, q, q, D)
            }
            if parts.is_empty() {
                return Ok(Tensor::zeros((0, q, q, n_sub), a.dtype(), a.device())?);
            }
            Ok(Tensor::cat(&parts, 0)?)
        }
    }
}

/// The vectors r_ij of the pairs (`left[p]`, `right[p]`) of rows of `z` (row-major, width `d`), chunk by
/// chunk, on the host: (p · n_sub) values.
fn pair_vectors(z: &[f32], d: usize, left: &[u32], right: &[u32], n_sub: usize, f: Scoring) -> Vec<f32> {
    let mut out = Vec::with_capacity(left.len() * n_sub);
    pair_vectors_into(&prepared_rows(z, d, n_sub, f), d, left, right, n_sub, f, &mut out);
    out
}

/// The rows the pair loop reads: for `cos` every chunk of d / n_sub entries normalised (all-zero chunks stay
/// zero), else `z` itself.
fn prepared_rows(z: &[f32], d: usize, n_sub: usize, f: Scoring) -> Vec<f32> {
    if f != Scoring::Cos {
        return z.to_vec();
    }
    z.chunks_exact(d / n_sub)
        .flat_map(|chunk| {
            let norm = chunk.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
            chunk.iter().map(move |&v| if norm > 0.0 { (f64::from(v) / norm) as f32 } else { 0.0 })
        })
        .collect()
}

/// Appends r_ij of the pairs (`left[p]`, `right[p]`) of the [`prepared_rows`] `z` to `out`.
fn pair_vectors_into(z: &[f32], d: usize, left: &[u32], right: &[u32], n_sub: usize, f: Scoring, out: &mut Vec<f32>) {
    let c = d / n_sub;
    for (&i, &j) in left.iter().zip(right) {
        let (a, b) = (&z[i as usize * d..(i as usize + 1) * d], &z[j as usize * d..(j as usize + 1) * d]);
        for (x, y) in a.chunks_exact(c).zip(b.chunks_exact(c)) {
            let pairs = x.iter().zip(y);
            out.push(match f {
                Scoring::Cos | Scoring::Dot => pairs.map(|(p, q)| p * q).sum::<f32>(),
                Scoring::Euc => pairs.map(|(p, q)| (p - q) * (p - q)).sum::<f32>().sqrt(),
                Scoring::Man => pairs.map(|(p, q)| (p - q).abs()).sum::<f32>(),
            });
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Codebook (§3.3–3.4).

/// How the codebook is learned (spec §3.3; reference flag `quantizer`-style choice).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quantiser {
    /// Mini-batch k-means with k-means++ initialisation (scikit-learn `MiniBatchKMeans`; the reference
    /// default and the run behind the published numbers).
    #[default]
    Kmeans,
    /// \[PROPOSED\] VQ-VAE-style codebook: codewords start at randomly drawn sample vectors and follow an
    /// exponential moving average of the vectors assigned to them. Not the published method.
    Vq,
}

/// Settings of [`Codebook::fit`]. The k-means defaults are scikit-learn's `MiniBatchKMeans` defaults as the
/// reference runs them (`batch_size=10000`, `n_init=3`, `max_iter=100`, `max_no_improvement=10`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CodebookConfig {
    /// k-means (default) or the EMA codebook.
    pub quantiser: Quantiser,
    /// K, the number of codewords (50).
    pub n_codes: usize,
    /// D, the number of sub-vectors per item, i.e. the codeword width (8).
    pub n_sub: usize,
    /// The scoring function f applied to each pair of chunks.
    pub scoring: Scoring,
    /// Pairs (i, j) drawn uniformly, with replacement, when (n+1)² exceeds it; all pairs otherwise.
    pub sample_pairs: usize,
    /// Vectors per mini-batch step (also sets k-means++'s init sample: 3 · batch).
    pub batch: usize,
    /// k-means++ initialisations tried; the one with the lowest inertia on a validation sample is kept.
    pub n_init: usize,
    /// Upper bound on the passes over the sample (steps = max_iter · samples / batch).
    pub max_iter: usize,
    /// Stop after this many consecutive steps without a new minimum of the smoothed batch inertia
    /// (scikit-learn `max_no_improvement`).
    pub patience: usize,
    /// k-means: codewords whose count falls below this share of the largest count are moved to random
    /// batch vectors (scikit-learn `reassignment_ratio`); 0 = never.
    pub reassignment_ratio: f64,
    /// VQ: the EMA decay γ of counts and sums.
    pub vq_decay: f64,
}

impl Default for CodebookConfig {
    fn default() -> Self {
        Self {
            quantiser: Quantiser::Kmeans,
            n_codes: 50,
            n_sub: 8,
            scoring: Scoring::Cos,
            sample_pairs: 4_000_000,
            batch: 10_000,
            n_init: 3,
            max_iter: 100,
            patience: 10,
            reassignment_ratio: 0.01,
            vq_decay: 0.99,
        }
    }
}

impl CodebookConfig {
    /// Checks values that serde cannot.
    pub fn validate(&self) -> Result<()> {
        if self.n_codes == 0 || self.n_sub == 0 || self.batch == 0 || self.n_init == 0 || self.max_iter == 0 {
            return Err(Error::Config(format!(
                "codebook: n_codes, n_sub, batch, n_init and max_iter must be positive, got {self:?}"
            )));
        }
        if self.sample_pairs == 0 || self.patience == 0 {
            return Err(Error::Config("codebook: sample_pairs and patience must be positive".into()));
        }
        if !(0.0..1.0).contains(&self.reassignment_ratio) {
            return Err(Error::Config(format!(
                "codebook: reassignment_ratio must lie in [0, 1), got {}",
                self.reassignment_ratio
            )));
        }
        if !(self.vq_decay > 0.0 && self.vq_decay < 1.0) {
            return Err(Error::Config(format!("codebook: vq_decay must lie in (0, 1), got {}", self.vq_decay)));
        }
        Ok(())
    }
}

/// The K codewords of one modality, (K, D) f32. Frozen once fitted.
#[derive(Debug, Clone)]
pub struct Codebook {
    /// Codewords, (K, D) f32.
    pub centroids: Tensor,
}

impl Codebook {
    /// A codebook from given centroids (K, D); converted to f32.
    pub fn new(centroids: Tensor) -> Result<Self> {
        let (k, d) = centroids.dims2().map_err(|_| Error::shape("codebook centroids", "(K, D)", centroids.dims()))?;
        if k == 0 || d == 0 {
            return Err(Error::shape("codebook centroids", "(K, D) with K, D > 0", centroids.dims()));
        }
        Ok(Self { centroids: centroids.to_dtype(DType::F32)?.detach() })
    }

    /// K, the number of codewords.
    pub fn n_codes(&self) -> usize {
        self.centroids.dims()[0]
    }

    /// D, the width of a codeword (= the number of sub-vectors).
    pub fn n_sub(&self) -> usize {
        self.centroids.dims()[1]
    }

    /// Learns the codebook of one modality from its compressed features `z` (n+1, d), padding row 0
    /// included (§3.3–3.4). The vectors r_ij are computed for every pair when (n+1)² ≤ `sample_pairs`,
    /// else for `sample_pairs` pairs drawn uniformly (stream `kdsr-codebook-pairs`) plus every diagonal pair
    /// (i, i). The vectors and the fit are computed on the host (z is copied there once), so the codebook is
    /// bit-identical for a fixed seed; the centroids are then put on `device`.
    pub fn fit(z: &Tensor, cfg: &CodebookConfig, seed: u64, device: &Device) -> Result<Self> {
        cfg.validate()?;
        let (n_rows, d) = z.dims2().map_err(|_| Error::shape("codebook features z", "(n+1, d)", z.dims()))?;
        if n_rows == 0 {
            return Err(Error::Mismatch("codebook: z has no rows".into()));
        }
        if d % cfg.n_sub != 0 {
            return Err(Error::Config(format!("codebook: n_sub = {} must divide the width d = {d}", cfg.n_sub)));
        }
        let started = std::time::Instant::now();
        let (left, right) = sample_pairs(n_rows, cfg.sample_pairs, seed);
        let n_samples = left.len();
        if n_samples < cfg.n_codes {
            return Err(Error::Mismatch(format!(
                "codebook: {n_samples} pair vectors cannot make {} codewords",
                cfg.n_codes
            )));
        }
        let z_host: Vec<f32> = z.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let data = pair_vectors(&z_host, d, &left, &right, cfg.n_sub, cfg.scoring);
        let samples = Samples { data, dim: cfg.n_sub };
        tracing::info!(n_rows, n_samples, n_codes = cfg.n_codes, n_sub = cfg.n_sub, quantiser = ?cfg.quantiser, "fitting codebook");
        let centers = match cfg.quantiser {
            Quantiser::Kmeans => minibatch_kmeans(&samples, cfg, seed),
            Quantiser::Vq => ema_vq(&samples, cfg, seed),
        };
        let centroids: Vec<f32> = centers.iter().map(|&v| v as f32).collect();
        let codebook = Self::new(Tensor::from_vec(centroids, (cfg.n_codes, cfg.n_sub), device)?)?;
        tracing::info!(secs = started.elapsed().as_secs_f32(), "codebook fitted");
        Ok(codebook)
    }

    /// The index of the nearest codeword (Euclidean) of every vector of `r` (..., D) → u32 (...).
    /// Computed in chunks of rows as argmin_k ‖c_k‖² − 2⟨r, c_k⟩.
    pub fn assign(&self, r: &Tensor) -> Result<Tensor> {
        let dims = r.dims().to_vec();
        let k_dim = self.n_sub();
        if dims.last() != Some(&k_dim) {
            return Err(Error::shape("codebook input", format!("(..., {k_dim})"), dims));
        }
        let lead = &dims[..dims.len() - 1];
        let n: usize = lead.iter().product();
        let c = self.centroids.to_device(r.device())?; // (K, D)
        let c_sq = c.sqr()?.sum_keepdim(1)?.t()?; // (1, K)
        let c_t = c.t()?.contiguous()?; // (D, K)
        let flat = r.detach().to_dtype(DType::F32)?.reshape((n, k_dim))?;
        let mut parts = Vec::with_capacity(n.div_ceil(ROW_CHUNK).max(1));
        for start in (0..n).step_by(ROW_CHUNK) {
            let len = ROW_CHUNK.min(n - start);
            let dots = flat.narrow(0, start, len)?.matmul(&c_t)?; // (len, K)
            let dist = (dots * -2.0)?.broadcast_add(&c_sq)?; // (len, K)
            parts.push(dist.argmin(1)?);
        }
        let codes = if parts.is_empty() { Tensor::zeros(0, DType::U32, r.device())? } else { Tensor::cat(&parts, 0)? };
        Ok(codes.reshape(lead)?)
    }

    /// Writes the centroids to `path` (safetensors, key `centroids`) through `path.tmp`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = std::path::PathBuf::from(tmp);
        let tensors = HashMap::from([(CENTROIDS_KEY.to_owned(), self.centroids.clone())]);
        candle_core::safetensors::save(&tensors, &tmp)?;
        std::fs::rename(&tmp, path).map_err(|source| Error::Io { path: path.to_owned(), source })
    }

    /// Reads a codebook written by [`Codebook::save`].
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::Io {
                path: path.to_owned(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "codebook not found"),
            });
        }
        let mut tensors = candle_core::safetensors::load(path, device)?;
        let centroids = tensors
            .remove(CENTROIDS_KEY)
            .ok_or_else(|| Error::Parse { path: path.to_owned(), message: format!("no `{CENTROIDS_KEY}` tensor") })?;
        Self::new(centroids).map_err(|e| Error::Parse { path: path.to_owned(), message: e.to_string() })
    }
}

/// The pairs (i, j) whose vectors train the codebook: every pair in row-major order when n_rows² ≤ `max`,
/// else `max` uniform draws followed by every diagonal pair.
fn sample_pairs(n_rows: usize, max: usize, seed: u64) -> (Vec<u32>, Vec<u32>) {
    let total = (n_rows as u128) * (n_rows as u128);
    if total <= max as u128 {
        let left = (0..n_rows as u32).flat_map(|i| std::iter::repeat_n(i, n_rows)).collect();
        let right = (0..n_rows).flat_map(|_| 0..n_rows as u32).collect();
        return (left, right);
    }
    let mut rng = mmkd_data::stream(seed, "kdsr-codebook-pairs");
    let (mut left, mut right) = (Vec::with_capacity(max + n_rows), Vec::with_capacity(max + n_rows));
    for _ in 0..max {
        left.push(rng.random_range(0..n_rows as u32));
        right.push(rng.random_range(0..n_rows as u32));
    }
    left.extend(0..n_rows as u32);
    right.extend(0..n_rows as u32);
    (left, right)
}

/// Sample vectors, row-major, `dim` entries each.
struct Samples {
    data: Vec<f32>,
    dim: usize,
}

impl Samples {
    fn len(&self) -> usize {
        self.data.len() / self.dim
    }

    fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

fn sq_dist(x: &[f32], c: &[f64]) -> f64 {
    x.iter().zip(c).map(|(&a, &b)| (f64::from(a) - b).powi(2)).sum()
}

/// Index of the nearest center of `x` (first on ties) and its squared distance.
fn nearest(x: &[f32], centers: &[f64], dim: usize) -> (usize, f64) {
    let mut best = (0, f64::INFINITY);
    for (k, c) in centers.chunks_exact(dim).enumerate() {
        let dist = sq_dist(x, c);
        if dist < best.1 {
            best = (k, dist);
        }
    }
    best
}

/// scikit-learn's greedy k-means++ over the rows `idx` of `s`: 2 + ⌊ln K⌋ candidates per new center, the
/// one that lowers the potential most is kept.
fn kmeans_pp(s: &Samples, idx: &[usize], k: usize, rng: &mut impl Rng) -> Vec<f64> {
    let dim = s.dim;
    let n = idx.len();
    let trials = 2 + (k as f64).ln() as usize;
    // The init sample, contiguous in f64 (the distance loops below dominate the fit's set-up time).
    let sub: Vec<f64> = idx.iter().flat_map(|&i| s.row(i).iter().map(|&v| f64::from(v))).collect();
    let row = |i: usize| &sub[i * dim..(i + 1) * dim];
    let dist = |x: &[f64], c: &[f64]| x.iter().zip(c).map(|(a, b)| (a - b) * (a - b)).sum::<f64>();
    let mut centers = row(rng.random_range(0..n)).to_vec();
    let mut closest: Vec<f64> = sub.chunks_exact(dim).map(|x| dist(x, &centers)).collect();
    let mut pot: f64 = closest.iter().sum();
    let mut cum = vec![0f64; n];
    for _ in 1..k {
        let mut acc = 0f64;
        for (c, &v) in cum.iter_mut().zip(&closest) {
            acc += v;
            *c = acc;
        }
        let mut best: Option<(usize, f64, Vec<f64>)> = None;
        for _ in 0..trials {
            let target = rng.random::<f64>() * pot;
            let cand = cum.partition_point(|&c| c < target).min(n - 1);
            let c = row(cand);
            let dists: Vec<f64> = sub.chunks_exact(dim).zip(&closest).map(|(x, &cl)| dist(x, c).min(cl)).collect();
            let cand_pot: f64 = dists.iter().sum();
            if best.as_ref().is_none_or(|b| cand_pot < b.1) {
                best = Some((cand, cand_pot, dists));
            }
        }
        if let Some((cand, cand_pot, dists)) = best {
            centers.extend_from_slice(row(cand));
            pot = cand_pot;
            closest = dists;
        }
    }
    centers
}

/// scikit-learn's early stop of mini-batch k-means: an exponentially weighted average of the per-vector
/// batch inertia (the first step ignored), stopped after `patience` steps without a new minimum.
struct Convergence {
    alpha: f64,
    patience: usize,
    ewa: Option<f64>,
    ewa_min: Option<f64>,
    stale: usize,
}

impl Convergence {
    fn new(batch: usize, n_samples: usize, patience: usize) -> Self {
        let alpha = (batch as f64 * 2.0 / (n_samples as f64 + 1.0)).min(1.0);
        Self { alpha, patience, ewa: None, ewa_min: None, stale: 0 }
    }

    /// Records step `step`'s batch inertia (already per vector); true when training should stop.
    fn done(&mut self, step: usize, batch_inertia: f64) -> bool {
        if step == 0 {
            return false;
        }
        let ewa = self.ewa.map_or(batch_inertia, |e| e * (1.0 - self.alpha) + batch_inertia * self.alpha);
        self.ewa = Some(ewa);
        if self.ewa_min.is_none_or(|m| ewa < m) {
            self.ewa_min = Some(ewa);
            self.stale = 0;
        } else {
            self.stale += 1;
        }
        self.stale >= self.patience
    }
}

fn minibatch_kmeans(s: &Samples, cfg: &CodebookConfig, seed: u64) -> Vec<f64> {
    let (n, dim, k) = (s.len(), s.dim, cfg.n_codes);
    let batch = cfg.batch.min(n);
    let mut init_size = (3 * batch).min(n);
    if init_size < k {
        init_size = (3 * k).min(n);
    }
    let mut rng = mmkd_data::stream(seed, "kdsr-codebook-kmeans");
    let valid: Vec<usize> = (0..init_size).map(|_| rng.random_range(0..n)).collect();
    let mut best: Option<(f64, Vec<f64>)> = None;
    for init in 0..cfg.n_init {
        let idx: Vec<usize> = (0..init_size).map(|_| rng.random_range(0..n)).collect();
        let centers = kmeans_pp(s, &idx, k, &mut rng);
        let inertia: f64 = valid.iter().map(|&i| nearest(s.row(i), &centers, dim).1).sum();
        tracing::debug!(init, inertia, "k-means++ initialisation");
        if best.as_ref().is_none_or(|b| inertia < b.0) {
            best = Some((inertia, centers));
        }
    }
    let mut centers = best.map(|b| b.1).unwrap_or_default();
    let mut counts = vec![0f64; k];
    let n_steps = (cfg.max_iter as u128 * n as u128 / batch as u128).max(1) as usize;
    let mut conv = Convergence::new(batch, n, cfg.patience);
    let mut since_reassign = 0usize;
    let mut rows = vec![0usize; batch];
    let mut steps = 0;
    for step in 0..n_steps {
        steps = step + 1;
        rows.iter_mut().for_each(|r| *r = rng.random_range(0..n));
        since_reassign += batch;
        let reassign = counts.contains(&0.0) || since_reassign >= 10 * k;
        if reassign {
            since_reassign = 0;
        }
        let mut inertia = 0f64;
        let mut sums = vec![0f64; k * dim];
        let mut batch_counts = vec![0f64; k];
        for &r in &rows {
            let (label, dist) = nearest(s.row(r), &centers, dim);
            inertia += dist;
            batch_counts[label] += 1.0;
            for (acc, &v) in sums[label * dim..(label + 1) * dim].iter_mut().zip(s.row(r)) {
                *acc += f64::from(v);
            }
        }
        for c in 0..k {
            if batch_counts[c] > 0.0 {
                let total = counts[c] + batch_counts[c];
                for j in 0..dim {
                    centers[c * dim + j] = (centers[c * dim + j] * counts[c] + sums[c * dim + j]) / total;
                }
                counts[c] = total;
            }
        }
        if reassign && cfg.reassignment_ratio > 0.0 {
            reassign_small(&mut centers, &mut counts, s, &rows, cfg.reassignment_ratio, &mut rng);
        }
        if conv.done(step, inertia / batch as f64) {
            break;
        }
    }
    tracing::info!(steps, n_steps, ewa_inertia = conv.ewa, "mini-batch k-means done");
    centers
}

/// scikit-learn's `_mini_batch_step` reassignment: centers whose count is below `ratio` × the largest
/// count (at most half the batch of them) move to distinct random batch vectors, and their counts are set
/// to the smallest count of the others.
fn reassign_small(
    centers: &mut [f64],
    counts: &mut [f64],
    s: &Samples,
    rows: &[usize],
    ratio: f64,
    rng: &mut impl Rng,
) {
    let dim = s.dim;
    let max = counts.iter().copied().fold(0f64, f64::max);
    let mut small: Vec<usize> = (0..counts.len()).filter(|&c| counts[c] < ratio * max).collect();
    let cap = rows.len() / 2;
    if small.len() > cap {
        small.sort_by(|&a, &b| counts[a].total_cmp(&counts[b]).then(a.cmp(&b)));
        small.truncate(cap);
    }
    if small.is_empty() || small.len() == counts.len() {
        return;
    }
    let picks = rand::seq::index::sample(rng, rows.len(), small.len());
    let floor = (0..counts.len()).filter(|c| !small.contains(c)).map(|c| counts[c]).fold(f64::INFINITY, f64::min);
    for (c, pick) in small.iter().zip(picks.iter()) {
        for (dst, &v) in centers[c * dim..(c + 1) * dim].iter_mut().zip(s.row(rows[pick])) {
            *dst = f64::from(v);
        }
        counts[*c] = floor;
    }
    tracing::debug!(n = small.len(), "reassigned small clusters");
}

/// \[PROPOSED\] EMA codebook: K distinct random sample vectors as the start, then per mini-batch
/// N_k ← γN_k + (1−γ)n_k, M_k ← γM_k + (1−γ)Σ_{r→k} r, c_k = M_k / N_k (each codeword starts with a
/// pseudo-count of one vector at itself). Stops like k-means.
fn ema_vq(s: &Samples, cfg: &CodebookConfig, seed: u64) -> Vec<f64> {
    let (n, dim, k) = (s.len(), s.dim, cfg.n_codes);
    let gamma = cfg.vq_decay;
    let batch = cfg.batch.min(n);
    let mut rng = mmkd_data::stream(seed, "kdsr-codebook-vq");
    let start = rand::seq::index::sample(&mut rng, n, k);
    let mut centers: Vec<f64> = start.iter().flat_map(|i| s.row(i).iter().map(|&v| f64::from(v))).collect();
    let mut ema_counts = vec![1f64; k];
    let mut ema_sums = centers.clone();
    let n_steps = (cfg.max_iter as u128 * n as u128 / batch as u128).max(1) as usize;
    let mut conv = Convergence::new(batch, n, cfg.patience);
    let mut steps = 0;
    for step in 0..n_steps {
        steps = step + 1;
        let mut inertia = 0f64;
        let mut sums = vec![0f64; k * dim];
        let mut batch_counts = vec![0f64; k];
        for _ in 0..batch {
            let r = rng.random_range(0..n);
            let (label, dist) = nearest(s.row(r), &centers, dim);
            inertia += dist;
            batch_counts[label] += 1.0;
            for (acc, &v) in sums[label * dim..(label + 1) * dim].iter_mut().zip(s.row(r)) {
                *acc += f64::from(v);
            }
        }
        for c in 0..k {
            ema_counts[c] = gamma * ema_counts[c] + (1.0 - gamma) * batch_counts[c];
            for j in 0..dim {
                let m = &mut ema_sums[c * dim + j];
                *m = gamma * *m + (1.0 - gamma) * sums[c * dim + j];
                if ema_counts[c] > 1e-12 {
                    centers[c * dim + j] = *m / ema_counts[c];
                }
            }
        }
        if conv.done(step, inertia / batch as f64) {
            break;
        }
    }
    tracing::info!(steps, n_steps, ewa_inertia = conv.ewa, "EMA codebook done");
    centers
}

// ---------------------------------------------------------------------------------------------------------
// The frozen teacher (§3.2–3.4).

/// The teacher's targets for one batch of session-graph nodes.
#[derive(Debug, Clone)]
pub struct TeacherTargets {
    /// s^v_ij = f(z^v_i, z^v_j), (b, q, q) f32.
    pub scores_v: Tensor,
    /// s^t_ij, (b, q, q) f32.
    pub scores_t: Tensor,
    /// c^v_ij, the nearest visual codeword of r^v_ij, (b, q, q) u32.
    pub codes_v: Tensor,
    /// c^t_ij, (b, q, q) u32.
    pub codes_t: Tensor,
}

/// KDSR's frozen correlation teacher: the compressed features of both modalities and their codebooks.
/// Host copies of both are kept: the codes of a batch are computed on the host from the rows it needs.
#[derive(Debug, Clone)]
pub struct KdsrTeacher {
    z_v: Tensor,
    z_t: Tensor,
    codebook_v: Codebook,
    codebook_t: Codebook,
    scoring: Scoring,
    n_sub: usize,
    host_v: HostModality,
    host_t: HostModality,
}

/// One modality's teacher on the host: the [`prepared_rows`] of z and the codewords in f64.
#[derive(Debug, Clone)]
struct HostModality {
    rows: Vec<f32>,
    d: usize,
    n_rows: usize,
    centroids: Vec<f64>,
}

impl HostModality {
    fn new(z: &Tensor, cb: &Codebook, n_sub: usize, f: Scoring) -> Result<Self> {
        let (n_rows, d) = z.dims2()?;
        let z_host: Vec<f32> = z.flatten_all()?.to_vec1()?;
        let centroids = cb.centroids.flatten_all()?.to_vec1::<f32>()?.into_iter().map(f64::from).collect();
        Ok(Self { rows: prepared_rows(&z_host, d, n_sub, f), d, n_rows, centroids })
    }
}

impl KdsrTeacher {
    /// Checks that the parts fit together; z are detached and converted to f32.
    pub fn new(
        z_v: &Tensor,
        z_t: &Tensor,
        codebook_v: Codebook,
        codebook_t: Codebook,
        scoring: Scoring,
        n_sub: usize,
    ) -> Result<Self> {
        let (rows_v, d_v) = z_v.dims2().map_err(|_| Error::shape("teacher z_v", "(n+1, d)", z_v.dims()))?;
        let (rows_t, d_t) = z_t.dims2().map_err(|_| Error::shape("teacher z_t", "(n+1, d)", z_t.dims()))?;
        if rows_v != rows_t {
            return Err(Error::Mismatch(format!("teacher: z_v has {rows_v} rows, z_t {rows_t}")));
        }
        for (name, d, cb) in [("visual", d_v, &codebook_v), ("text", d_t, &codebook_t)] {
            if n_sub == 0 || d % n_sub != 0 {
                return Err(Error::Config(format!("teacher: n_sub = {n_sub} must divide the {name} width {d}")));
            }
            if cb.n_sub() != n_sub {
                return Err(Error::Mismatch(format!(
                    "teacher: the {name} codebook has codewords of width {}, expected n_sub = {n_sub}",
                    cb.n_sub()
                )));
            }
        }
        let z_v = z_v.to_dtype(DType::F32)?.detach();
        let z_t = z_t.to_dtype(DType::F32)?.detach();
        let host_v = HostModality::new(&z_v, &codebook_v, n_sub, scoring)?;
        let host_t = HostModality::new(&z_t, &codebook_t, n_sub, scoring)?;
        Ok(Self { z_v, z_t, codebook_v, codebook_t, scoring, n_sub, host_v, host_t })
    }

    /// Frozen visual features z^v, (n+1, d) f32, padding row 0 (and items without an image) zero.
    pub fn z_v(&self) -> &Tensor {
        &self.z_v
    }

    /// Frozen text features z^t, (n+1, d) f32.
    pub fn z_t(&self) -> &Tensor {
        &self.z_t
    }

    /// Visual codebook (K_v, n_sub).
    pub fn codebook_v(&self) -> &Codebook {
        &self.codebook_v
    }

    /// Text codebook (K_t, n_sub).
    pub fn codebook_t(&self) -> &Codebook {
        &self.codebook_t
    }

    /// The scoring function f.
    pub fn scoring(&self) -> Scoring {
        self.scoring
    }

    /// D, the number of sub-vectors.
    pub fn n_sub(&self) -> usize {
        self.n_sub
    }

    /// Fits both codebooks with `cfg` (seeds derived as streams `kdsr-codebook-visual` and
    /// `kdsr-codebook-text` of `seed`) and builds the teacher with `cfg.scoring` and `cfg.n_sub`.
    pub fn fit(z_v: &Tensor, z_t: &Tensor, cfg: &CodebookConfig, seed: u64, device: &Device) -> Result<Self> {
        let codebook_v = Codebook::fit(z_v, cfg, mmkd_data::derive_seed(seed, "kdsr-codebook-visual"), device)?;
        let codebook_t = Codebook::fit(z_t, cfg, mmkd_data::derive_seed(seed, "kdsr-codebook-text"), device)?;
        Self::new(z_v, z_t, codebook_v, codebook_t, cfg.scoring, cfg.n_sub)
    }

    /// Scores and codes of every ordered pair of `nodes` (b, q) u32 item ids (0 = padding), computed from
    /// the rows of the batch only. The scores are one batched product on the device. The codes are computed
    /// on the host once per unordered pair of *distinct* ids of a sequence (r_ij is symmetric, and the
    /// padding positions of a sequence share one id), so a batch costs O(Σ n_s²) for sequences of n_s real
    /// nodes, not O(b·q²).
    pub fn targets(&self, nodes: &Tensor) -> Result<TeacherTargets> {
        let _span = tracing::debug_span!("kdsr_teacher_targets").entered();
        let (b, q) = nodes.dims2().map_err(|_| Error::shape("teacher nodes", "(b, q)", nodes.dims()))?;
        if nodes.dtype() != DType::U32 {
            return Err(Error::shape("teacher nodes dtype", "u32", nodes.dtype()));
        }
        let ids: Vec<u32> = nodes.flatten_all()?.to_vec1()?;
        let n_rows = self.host_v.n_rows;
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= n_rows) {
            return Err(Error::Mismatch(format!("teacher: node id {bad} out of range for {n_rows} rows of z")));
        }
        let pairs = DistinctPairs::new(&ids, b, q);
        let scores_v = self.scores(&self.z_v, nodes, b, q)?;
        let scores_t = self.scores(&self.z_t, nodes, b, q)?;
        let codes_v = self.codes(&self.host_v, &pairs, b, q, nodes.device())?;
        let codes_t = self.codes(&self.host_t, &pairs, b, q, nodes.device())?;
        Ok(TeacherTargets { scores_v, scores_t, codes_v, codes_t })
    }

    fn scores(&self, z: &Tensor, nodes: &Tensor, b: usize, q: usize) -> Result<Tensor> {
        let d = z.dim(1)?;
        let flat = nodes.flatten_all()?.to_device(z.device())?;
        let rows = z.index_select(&flat, 0)?.reshape((b, q, d))?; // (b, q, d)
        pair_scores(&rows, self.scoring)
    }

    fn codes(&self, host: &HostModality, pairs: &DistinctPairs, b: usize, q: usize, device: &Device) -> Result<Tensor> {
        let mut r = Vec::with_capacity(pairs.left.len() * self.n_sub);
        pair_vectors_into(&host.rows, host.d, &pairs.left, &pairs.right, self.n_sub, self.scoring, &mut r);
        let unique: Vec<u32> =
            r.chunks_exact(self.n_sub).map(|x| nearest(x, &host.centroids, self.n_sub).0 as u32).collect();
        let codes: Vec<u32> = pairs.of_entry.iter().map(|&p| unique[p as usize]).collect();
        Ok(Tensor::from_vec(codes, (b, q, q), device)?)
    }
}

/// The unordered pairs of distinct ids of each sequence of a (b, q) batch, and for every entry (s, i, j)
/// of the (b, q, q) pair grid the index of its pair.
struct DistinctPairs {
    left: Vec<u32>,
    right: Vec<u32>,
    of_entry: Vec<u32>,
}

impl DistinctPairs {
    fn new(ids: &[u32], b: usize, q: usize) -> Self {
        let (mut left, mut right) = (Vec::new(), Vec::new());
        let mut of_entry = vec![0u32; b * q * q];
        let mut uniq: Vec<u32> = Vec::with_capacity(q);
        let mut slot = vec![0usize; q];
        for s in 0..b {
            let row = &ids[s * q..(s + 1) * q];
            uniq.clear();
            for (i, &id) in row.iter().enumerate() {
                slot[i] = match uniq.iter().position(|&u| u == id) {
                    Some(k) => k,
                    None => {
                        uniq.push(id);
                        uniq.len() - 1
                    }
                };
            }
            // Pair index of the distinct ids (a, c), a ≤ c, in `left`/`right`.
            let n = uniq.len();
            let base = left.len();
            let index = |a: usize, c: usize| {
                let (a, c) = (a.min(c), a.max(c));
                base + a * n - a * (a + 1) / 2 + c
            };
            for a in 0..n {
                for c in a..n {
                    left.push(uniq[a]);
                    right.push(uniq[c]);
                }
            }
            for i in 0..q {
                for j in 0..q {
                    of_entry[(s * q + i) * q + j] = index(slot[i], slot[j]) as u32;
                }
            }
        }
        Self { left, right, of_entry }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_distr::{Distribution, Normal};

    /// `n_per` vectors around each of `centers` (rows of `dim`), Gaussian noise of deviation `noise`.
    fn blobs(centers: &[Vec<f32>], n_per: usize, noise: f32, seed: u64) -> (Samples, Vec<usize>) {
        let mut rng = mmkd_data::stream(seed, "blobs");
        let normal = Normal::new(0f32, noise).unwrap();
        let dim = centers[0].len();
        let (mut data, mut truth) = (Vec::new(), Vec::new());
        for _ in 0..n_per {
            for (g, c) in centers.iter().enumerate() {
                data.extend(c.iter().map(|&v| v + normal.sample(&mut rng)));
                truth.push(g);
            }
        }
        (Samples { data, dim }, truth)
    }

    fn planted_centers() -> Vec<Vec<f32>> {
        // Five well-separated centers in 8 dimensions (pairwise distances ≥ 2).
        (0..5).map(|g| (0..8).map(|j| if j % 5 == g { 2.0 } else { 0.1 * g as f32 }).collect()).collect()
    }

    #[test]
    fn kmeans_recovers_planted_clusters() {
        let centers = planted_centers();
        let (s, truth) = blobs(&centers, 400, 0.1, 1);
        let cfg = CodebookConfig { n_codes: 5, batch: 256, ..Default::default() };
        let fitted = minibatch_kmeans(&s, &cfg, 3);
        // Every planted center has a codeword within 0.05, and the fitted labels are a bijection of the truth.
        for c in &centers {
            let (k, dist) = nearest(c, &fitted, 8);
            assert!(dist.sqrt() < 0.05, "center {c:?}: nearest codeword {k} at {}", dist.sqrt());
        }
        let mut map = [usize::MAX; 5];
        for i in 0..s.len() {
            let (k, _) = nearest(s.row(i), &fitted, 8);
            if map[truth[i]] == usize::MAX {
                map[truth[i]] = k;
            }
            assert_eq!(map[truth[i]], k, "vector {i}");
        }
        let mut used = map.to_vec();
        used.sort_unstable();
        used.dedup();
        assert_eq!(used.len(), 5);
    }

    #[test]
    fn ema_codebook_moves_to_the_data() {
        let centers = planted_centers();
        let (s, _) = blobs(&centers, 400, 0.1, 2);
        let cfg = CodebookConfig { n_codes: 5, batch: 256, quantiser: Quantiser::Vq, ..Default::default() };
        let err = |c: &[f64]| (0..s.len()).map(|i| nearest(s.row(i), c, 8).1).sum::<f64>() / s.len() as f64;
        // The start is the same draw of K sample vectors the fit makes.
        let mut rng = mmkd_data::stream(9, "kdsr-codebook-vq");
        let start: Vec<f64> = rand::seq::index::sample(&mut rng, s.len(), 5)
            .iter()
            .flat_map(|i| s.row(i).iter().map(|&v| f64::from(v)))
            .collect();
        let fitted = ema_vq(&s, &cfg, 9);
        assert_ne!(fitted, start);
        // At convergence each codeword sits at (an EMA of) the mean of the vectors it wins.
        let mut sums = vec![0f64; 5 * 8];
        let mut counts = [0usize; 5];
        for i in 0..s.len() {
            let (k, _) = nearest(s.row(i), &fitted, 8);
            counts[k] += 1;
            for j in 0..8 {
                sums[k * 8 + j] += f64::from(s.row(i)[j]);
            }
        }
        for k in 0..5 {
            let gap: f64 =
                (0..8).map(|j| (sums[k * 8 + j] / counts[k].max(1) as f64 - fitted[k * 8 + j]).powi(2)).sum();
            assert!(counts[k] > 0 && gap.sqrt() < 0.1, "codeword {k}: {} vectors, {} from their mean", counts[k], gap);
        }
        // Random starts can leave two codewords in one blob (no k-means++ here), but the error still drops.
        assert!(err(&fitted) < 0.7 * err(&start), "{} vs {}", err(&fitted), err(&start));
    }

    #[test]
    fn convergence_stops_after_patience_flat_steps() {
        let mut conv = Convergence::new(10, 19, 3); // alpha = 1: the average is the last value.
        assert!(!conv.done(0, 100.0)); // Ignored.
        assert!(!conv.done(1, 5.0));
        assert!(!conv.done(2, 4.0));
        assert!(!conv.done(3, 4.0));
        assert!(!conv.done(4, 6.0));
        assert!(conv.done(5, 4.5));
    }

    #[test]
    fn pairs_are_all_or_sampled_with_the_diagonal() {
        let (l, r) = sample_pairs(3, 9, 0);
        assert_eq!(l, vec![0, 0, 0, 1, 1, 1, 2, 2, 2]);
        assert_eq!(r, vec![0, 1, 2, 0, 1, 2, 0, 1, 2]);
        let (l, r) = sample_pairs(4, 10, 0);
        assert_eq!(l.len(), 14);
        assert_eq!((&l[10..], &r[10..]), (&[0u32, 1, 2, 3][..], &[0u32, 1, 2, 3][..]));
        assert!(l.iter().chain(&r).all(|&i| i < 4));
        assert_eq!(sample_pairs(4, 10, 0), (l, r));
        assert_ne!(sample_pairs(4, 10, 1).0, sample_pairs(4, 10, 0).0);
    }
}
