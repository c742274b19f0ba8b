//! Exact t-SNE (van der Maaten & Hinton, JMLR 2008) for the report's Fig. 4-style map of a few hundred item
//! feature vectors, and the k-nearest-neighbour label purity that puts a number on "the categories separate".
//!
//! Written here rather than taken from a crate: the Rust t-SNE crates found are Barnes–Hut implementations
//! without recent releases, and an O(n²) exact t-SNE over ≤ 600 points is about a hundred lines. The
//! optimisation follows the reference `tsne.py` and scikit-learn's exact method: Gaussian affinities
//! calibrated to the perplexity by bisection, symmetrised; Student-t similarities in 2-D; gradient descent
//! with momentum 0.5 → 0.8, per-coordinate gains, early exaggeration 12 for the first 250 iterations, learning
//! rate 200. The initial map is N(0, (1e-4)²) from a seeded ChaCha stream, so a seed gives the same map.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// Settings of [`tsne`].
#[derive(Debug, Clone, PartialEq)]
pub struct TsneConfig {
    /// Effective number of neighbours (capped at (n − 1) / 3).
    pub perplexity: f64,
    pub iterations: usize,
    pub seed: u64,
    pub learning_rate: f64,
    pub early_exaggeration: f64,
    /// Iterations under early exaggeration (and with momentum 0.5).
    pub exaggeration_iterations: usize,
}

impl Default for TsneConfig {
    fn default() -> Self {
        Self {
            perplexity: 30.0,
            iterations: 1000,
            seed: 0,
            learning_rate: 200.0,
            early_exaggeration: 12.0,
            exaggeration_iterations: 250,
        }
    }
}

/// Squared Euclidean distances between the rows of `x` (n × d, row-major): n × n, row-major.
fn squared_distances(x: &[f64], n: usize, d: usize) -> Vec<f64> {
    let mut out = vec![0.0; n * n];
    for i in 0..n {
        for j in i + 1..n {
            let s: f64 = x[i * d..(i + 1) * d].iter().zip(&x[j * d..(j + 1) * d]).map(|(a, b)| (a - b) * (a - b)).sum();
            out[i * n + j] = s;
            out[j * n + i] = s;
        }
    }
    out
}

/// Conditional affinities p(j | i) whose entropy is ln(perplexity), by bisection on the precision β_i.
fn conditional_affinities(dist: &[f64], n: usize, perplexity: f64) -> Vec<f64> {
    let target = perplexity.ln();
    let mut p = vec![0.0; n * n];
    for i in 0..n {
        let row = &dist[i * n..(i + 1) * n];
        // Distances relative to the nearest neighbour keep exp() in range.
        let d_min = (0..n).filter(|&j| j != i).map(|j| row[j]).fold(f64::INFINITY, f64::min);
        let (mut beta, mut lo, mut hi) = (1.0, 0.0, f64::INFINITY);
        for _ in 0..100 {
            let mut sum = 0.0;
            let mut weighted = 0.0;
            for j in (0..n).filter(|&j| j != i) {
                let w = (-(row[j] - d_min) * beta).exp();
                p[i * n + j] = w;
                sum += w;
                weighted += w * (row[j] - d_min);
            }
            let sum = sum.max(1e-300);
            // H = ln Σw + β·Σ w·d / Σw (natural log).
            let entropy = sum.ln() + beta * weighted / sum;
            for j in (0..n).filter(|&j| j != i) {
                p[i * n + j] /= sum;
            }
            let diff = entropy - target;
            if diff.abs() < 1e-5 {
                break;
            }
            if diff > 0.0 {
                lo = beta;
                beta = if hi.is_finite() { (beta + hi) / 2.0 } else { beta * 2.0 };
            } else {
                hi = beta;
                beta = (beta + lo) / 2.0;
            }
        }
    }
    p
}

/// A 2-D embedding of the `n` rows of `x` (n × d, row-major): `n` points.
pub fn tsne(x: &[f64], n: usize, d: usize, cfg: &TsneConfig) -> Vec<[f64; 2]> {
    if n == 0 || d == 0 || x.len() != n * d {
        return Vec::new();
    }
    if n < 4 {
        return (0..n).map(|i| [i as f64, 0.0]).collect();
    }
    let perplexity = cfg.perplexity.min((n - 1) as f64 / 3.0).max(1.0);
    let dist = squared_distances(x, n, d);
    let cond = conditional_affinities(&dist, n, perplexity);
    // Symmetrised joint affinities, normalised to sum 1.
    let mut p = vec![0.0; n * n];
    let mut total = 0.0;
    for i in 0..n {
        for j in 0..n {
            let v = cond[i * n + j] + cond[j * n + i];
            p[i * n + j] = v;
            total += v;
        }
    }
    for v in &mut p {
        *v = (*v / total).max(1e-12);
    }

    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let normal = Normal::new(0.0, 1e-4).unwrap_or_else(|_| unreachable!("σ = 1e-4 is valid"));
    let mut y: Vec<[f64; 2]> = (0..n).map(|_| [normal.sample(&mut rng), normal.sample(&mut rng)]).collect();
    let mut velocity = vec![[0.0f64; 2]; n];
    let mut gains = vec![[1.0f64; 2]; n];
    let mut num = vec![0.0; n * n];
    let mut grad = vec![[0.0f64; 2]; n];
    for iter in 0..cfg.iterations {
        let exaggeration = if iter < cfg.exaggeration_iterations { cfg.early_exaggeration } else { 1.0 };
        let momentum = if iter < cfg.exaggeration_iterations { 0.5 } else { 0.8 };
        // Student-t kernel 1 / (1 + |y_i − y_j|²) and its sum.
        let mut sum = 0.0;
        for i in 0..n {
            for j in i + 1..n {
                let (dx, dy) = (y[i][0] - y[j][0], y[i][1] - y[j][1]);
                let w = 1.0 / (1.0 + dx * dx + dy * dy);
                num[i * n + j] = w;
                num[j * n + i] = w;
                sum += 2.0 * w;
            }
        }
        // ∂C/∂y_i = 4 Σ_j (p_ij − q_ij) w_ij (y_i − y_j).
        for i in 0..n {
            let mut g = [0.0; 2];
            for j in (0..n).filter(|&j| j != i) {
                let w = num[i * n + j];
                let q = (w / sum).max(1e-12);
                let m = 4.0 * (exaggeration * p[i * n + j] - q) * w;
                g[0] += m * (y[i][0] - y[j][0]);
                g[1] += m * (y[i][1] - y[j][1]);
            }
            grad[i] = g;
        }
        for i in 0..n {
            for c in 0..2 {
                let same_sign = (grad[i][c] > 0.0) == (velocity[i][c] > 0.0);
                gains[i][c] = if same_sign { gains[i][c] * 0.8 } else { gains[i][c] + 0.2 }.max(0.01);
                velocity[i][c] = momentum * velocity[i][c] - cfg.learning_rate * gains[i][c] * grad[i][c];
                y[i][c] += velocity[i][c];
            }
        }
        let mean = y.iter().fold([0.0, 0.0], |a, p| [a[0] + p[0], a[1] + p[1]]);
        for p in &mut y {
            p[0] -= mean[0] / n as f64;
            p[1] -= mean[1] / n as f64;
        }
    }
    y
}

/// Share of each point's `k` nearest neighbours (Euclidean, itself excluded) with its label, averaged over
/// points: 1 for perfectly separated classes, about Σ_c share_c² for labels unrelated to position.
pub fn knn_purity(x: &[f64], n: usize, d: usize, labels: &[usize], k: usize) -> f64 {
    if n < 2 || labels.len() != n || x.len() != n * d {
        return f64::NAN;
    }
    let k = k.min(n - 1);
    let dist = squared_distances(x, n, d);
    let mut total = 0.0;
    let mut order: Vec<usize> = Vec::with_capacity(n);
    for i in 0..n {
        order.clear();
        order.extend((0..n).filter(|&j| j != i));
        let row = &dist[i * n..(i + 1) * n];
        order.sort_by(|&a, &b| row[a].total_cmp(&row[b]).then(a.cmp(&b)));
        total += order[..k].iter().filter(|&&j| labels[j] == labels[i]).count() as f64 / k as f64;
    }
    total / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three Gaussian clusters in 20-D (σ = 1, centres 8 apart on three axes), 40 points each.
    fn clusters() -> (Vec<f64>, Vec<usize>, usize, usize) {
        let (per, d) = (40, 20);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let normal = Normal::new(0.0, 1.0).unwrap();
        let mut x = Vec::new();
        let mut labels = Vec::new();
        for c in 0..3 {
            for _ in 0..per {
                for k in 0..d {
                    x.push(normal.sample(&mut rng) + if k == c { 8.0 } else { 0.0 });
                }
                labels.push(c);
            }
        }
        (x, labels, 3 * per, d)
    }

    #[test]
    fn separates_planted_clusters_and_is_deterministic() {
        let (x, labels, n, d) = clusters();
        let cfg = TsneConfig { iterations: 500, ..Default::default() };
        let y = tsne(&x, n, d, &cfg);
        assert_eq!(y.len(), n);
        assert!(y.iter().all(|p| p[0].is_finite() && p[1].is_finite()));
        let flat: Vec<f64> = y.iter().flat_map(|p| [p[0], p[1]]).collect();
        let purity = knn_purity(&flat, n, 2, &labels, 10);
        assert!(purity > 0.9, "kNN purity of the map {purity}");
        // The same seed gives the same map.
        assert_eq!(tsne(&x, n, d, &cfg), y);
        // Labels shuffled against the positions: purity near chance (1/3).
        let shuffled: Vec<usize> = (0..n).map(|i| (i * 7) % 3).collect();
        assert!(knn_purity(&flat, n, 2, &shuffled, 10) < 0.6);
    }

    #[test]
    fn affinities_match_the_perplexity() {
        let (x, _, n, d) = clusters();
        let dist = squared_distances(&x, n, d);
        let p = conditional_affinities(&dist, n, 15.0);
        for i in [0, 50, 119] {
            let row = &p[i * n..(i + 1) * n];
            let sum: f64 = row.iter().sum();
            assert!((sum - 1.0).abs() < 1e-9);
            let entropy: f64 = row.iter().filter(|&&v| v > 0.0).map(|&v| -v * v.ln()).sum();
            assert!((entropy.exp() - 15.0).abs() < 0.01, "perplexity {}", entropy.exp());
        }
        // Hand-checked: purity of 4 points on a line, labels [0, 0, 1, 1], k = 1 → each nearest has its label.
        assert_eq!(knn_purity(&[0.0, 1.0, 10.0, 11.0], 4, 1, &[0, 0, 1, 1], 1), 1.0);
        assert_eq!(knn_purity(&[0.0, 1.0, 10.0, 11.0], 4, 1, &[0, 1, 0, 1], 1), 0.0);
    }
}
