//! Graphs of the user–item interactions as [`SparseMatrix`] / [`SparsePattern`] (the bipartite adjacency, its
//! symmetric normalisation, GRCN's bidirectional edge list), LightGCN's layer mean over them, and a
//! benchmark of the propagation paths. The products themselves are the custom ops of [`crate::sparse`].

use std::fmt;
use std::time::Instant;

use candle_core::{bail, Device, Tensor, Var};
use mmkd_data::Csr;
use rand::Rng;

use crate::sparse::{
    spmm, spmm_gather_scatter, spmm_weighted, spmm_weighted_gather_scatter, SparseMatrix, SparsePattern,
};
use crate::{Error, Result};

/// The symmetric user–item graph of `train` (users × items) as CSR arrays over `n_users + n_items` nodes:
/// users first, item `j` at node `n_users + j`, an entry both ways for every train pair, no self loops.
/// Every row is sorted. Returns `(indptr, indices)`.
pub fn bipartite_adjacency(train: &Csr) -> (Vec<usize>, Vec<u32>) {
    let n_users = train.n_rows();
    let by_item = train.transpose();
    let mut indptr = Vec::with_capacity(n_users + train.n_cols() + 1);
    let mut indices = Vec::with_capacity(2 * train.nnz());
    indptr.push(0);
    for u in 0..n_users {
        indices.extend(train.row(u).iter().map(|&j| n_users as u32 + j));
        indptr.push(indices.len());
    }
    for j in 0..by_item.n_rows() {
        indices.extend_from_slice(by_item.row(j));
        indptr.push(indices.len());
    }
    (indptr, indices)
}

/// `D^{-1/2} A D^{-1/2}` of [`bipartite_adjacency`] (LightGCN, BM3): entry `(k, l)` is
/// `(deg_k + 1e-7)^{-1/2} · (deg_l + 1e-7)^{-1/2}`, with MMRec's `1e-7`. Zero-degree nodes have empty rows
/// and columns, so they propagate 0.
pub fn sym_normalized(train: &Csr) -> SparseMatrix {
    let (indptr, indices) = bipartite_adjacency(train);
    let inv_sqrt: Vec<f64> = indptr.windows(2).map(|w| ((w[1] - w[0]) as f64 + 1e-7).powf(-0.5)).collect();
    let mut values = Vec::with_capacity(indices.len());
    for (k, w) in indptr.windows(2).enumerate() {
        values.extend(indices[w[0]..w[1]].iter().map(|&l| (inv_sqrt[k] * inv_sqrt[l as usize]) as f32));
    }
    // The arrays are valid by construction: every index is a node id and indptr runs from 0 to nnz.
    let n_nodes = indptr.len() - 1;
    let rows = crate::sparse::csr_rows_unchecked(&indptr);
    SparseMatrix::from_valid(SparsePattern::from_valid_coo(n_nodes, n_nodes, rows, indices), values)
}

/// GRCN's bidirectional edge list `Bd` over `n_users + n_items` nodes (grcn.md §2) as a pattern: for the
/// `E = pairs.len()` train pairs `(user, item)` in file order, edge `e < E` is `user → n_users + item` and
/// edge `E + e` is `n_users + item → user`. Rows are targets, so [`spmm_weighted`] with GRCN's per-column
/// weights computes `out_t = Σ_{e = (s → t)} w_e · x_s`, the SAGE-like convolution with `aggr = add`.
///
/// GRCN needs no row normalisation: its weights come from GAT softmaxes, which [`crate::sparse::edge_dot`] feeds.
pub fn bidirectional_pattern(n_users: usize, n_items: usize, pairs: &[(u32, u32)]) -> Result<SparsePattern> {
    if let Some(&(u, j)) = pairs.iter().find(|&&(u, j)| u as usize >= n_users || j as usize >= n_items) {
        return Err(Error::Shape(format!("pair ({u}, {j}) out of range for {n_users} users and {n_items} items")));
    }
    let n_nodes = n_users + n_items;
    if n_nodes > u32::MAX as usize {
        return Err(Error::Shape(format!("{n_nodes} nodes exceed u32 indexing")));
    }
    let item_node = |j: u32| n_users as u32 + j;
    let mut targets: Vec<u32> = pairs.iter().map(|&(_, j)| item_node(j)).collect();
    targets.extend(pairs.iter().map(|&(u, _)| u));
    let mut sources: Vec<u32> = pairs.iter().map(|&(u, _)| u).collect();
    sources.extend(pairs.iter().map(|&(_, j)| item_node(j)));
    SparsePattern::from_coo(n_nodes, n_nodes, &targets, &sources)
}

/// square `a` and `e0` of shape `(a.n_rows(), d)`. `n_layers = 0` returns `e0`.
pub fn propagate_mean(a: &SparseMatrix, e0: &Tensor, n_layers: usize) -> candle_core::Result<Tensor> {
    if a.n_rows() != a.n_cols() {
        bail!("propagate_mean: the graph must be square, got {} × {}", a.n_rows(), a.n_cols());
    }
    let mut layer = e0.clone();
    let mut sum = e0.clone();
    for _ in 0..n_layers {
        layer = spmm(a, &layer)?; // (n_nodes, d)
        sum = (sum + &layer)?;
    }
    sum.affine(1.0 / (n_layers + 1) as f64, 0.0)
}

// ---------------------------------------------------------------------------------------------------------
// Benchmark.

/// Milliseconds per call of the propagation paths on one random graph, from [`bench_spmm`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpmmTimings {
    /// Nodes (`n_users + n_items`) and directed edges of the graph.
    pub n_nodes: usize,
    pub nnz: usize,
    pub dim: usize,
    pub n_layers: usize,
    /// One [`spmm`] forward.
    pub spmm_fwd_ms: f64,
    /// `backward()` of `Σ r ⊙ propagate_mean(Â, E, n_layers)` (the forward not included).
    pub spmm_bwd_ms: f64,
    /// One [`spmm_gather_scatter`] forward.
    pub gather_fwd_ms: f64,
    /// The same backward as `spmm_bwd_ms` with [`spmm_gather_scatter`] layers.
    pub gather_bwd_ms: f64,
    /// One [`spmm_weighted`] forward (weights = `Â`'s values as a variable).
    pub weighted_fwd_ms: f64,
    /// `backward()` of `n_layers` [`spmm_weighted`] layers, gradients to the weights and to `E`.
    pub weighted_bwd_ms: f64,
    /// The same with [`spmm_weighted_gather_scatter`].
    pub weighted_gather_fwd_ms: f64,
    pub weighted_gather_bwd_ms: f64,
    /// The same backward with every layer replaced by a copy (`affine(1, 0)`): candle's own cost of the
    /// elementwise ops and gradient sums around the products, included in every `*_bwd_ms` above.
    pub baseline_bwd_ms: f64,
}

impl fmt::Display for SpmmTimings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} nodes, {} directed edges, d = {}, {} layers (ms)",
            self.n_nodes, self.nnz, self.dim, self.n_layers
        )?;
        writeln!(f, "{:<26}{:>10}{:>14}", "path", "forward", "backward")?;
        writeln!(f, "{:<26}{:>10.2}{:>14.2}", "spmm", self.spmm_fwd_ms, self.spmm_bwd_ms)?;
        writeln!(f, "{:<26}{:>10.2}{:>14.2}", "gather-scatter", self.gather_fwd_ms, self.gather_bwd_ms)?;
        writeln!(f, "{:<26}{:>10.2}{:>14.2}", "spmm_weighted", self.weighted_fwd_ms, self.weighted_bwd_ms)?;
        write!(
            f,
            "{:<26}{:>10.2}{:>14.2}",
            "weighted gather-scatter", self.weighted_gather_fwd_ms, self.weighted_gather_bwd_ms
        )?;
        write!(f, "\n{:<26}{:>10}{:>14.2}", "copy layers (baseline)", "", self.baseline_bwd_ms)
    }
}

/// Times the propagation paths on CPU on a random bipartite graph of `n_interactions` uniform user–item draws
/// (duplicates dropped), normalised with [`sym_normalized`], with `dim`-wide f32 embeddings: forward per layer,
/// and the backward of an `n_layers` propagation. Each figure is the mean over `reps` runs after one warm-up.
pub fn bench_spmm(
    n_users: usize,
    n_items: usize,
    n_interactions: usize,
    dim: usize,
    n_layers: usize,
    reps: usize,
    seed: u64,
) -> Result<SpmmTimings> {
    if n_users == 0 || n_items == 0 || reps == 0 {
        return Err(Error::Config("bench_spmm needs users, items and at least one repetition".into()));
    }
    let mut rng = mmkd_data::stream(seed, "bench-spmm");
    let pairs: Vec<(u32, u32)> = (0..n_interactions)
        .map(|_| (rng.random_range(0..n_users as u32), rng.random_range(0..n_items as u32)))
        .collect();
    let (train, _duplicates) = Csr::from_pairs(n_users, n_items, &pairs);
    let a = sym_normalized(&train);
    let n_nodes = a.n_rows();
    let device = Device::Cpu;
    let random = |rng: &mut rand_chacha::ChaCha8Rng, n: usize| -> Vec<f32> {
        (0..n).map(|_| rng.random::<f32>() - 0.5).collect()
    };
    let e0 = Var::from_tensor(&Tensor::from_vec(random(&mut rng, n_nodes * dim), (n_nodes, dim), &device)?)?;
    let r = Tensor::from_vec(random(&mut rng, n_nodes * dim), (n_nodes, dim), &device)?;
    let w = Var::from_tensor(&Tensor::from_slice(a.values(), a.nnz(), &device)?)?;
    let pattern = a.pattern().clone();

    let time_ms = |f: &mut dyn FnMut() -> candle_core::Result<()>| -> candle_core::Result<f64> {
        f()?;
        let started = Instant::now();
        for _ in 0..reps {
            f()?;
        }
        Ok(started.elapsed().as_secs_f64() * 1e3 / reps as f64)
    };
    // Times only the backward of the loss that `forward` builds.
    let time_bwd_ms = |forward: &dyn Fn() -> candle_core::Result<Tensor>| -> candle_core::Result<f64> {
        let mut total = 0.0;
        for rep in 0..=reps {
            let loss = (forward()? * &r)?.sum_all()?;
            let started = Instant::now();
            let grads = loss.backward()?;
            let elapsed = started.elapsed().as_secs_f64() * 1e3;
            drop(grads);
            if rep > 0 {
                total += elapsed;
            }
        }
        Ok(total / reps as f64)
    };
    let layers = |step: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>| -> candle_core::Result<Tensor> {
        let mut layer = e0.as_tensor().clone();
        let mut sum = layer.clone();
        for _ in 0..n_layers {
            layer = step(&layer)?;
            sum = (sum + &layer)?;
        }
        Ok(sum)
    };

    let x = e0.as_tensor().detach();
    let timings = SpmmTimings {
        n_nodes,
        nnz: a.nnz(),
        dim,
        n_layers,
        spmm_fwd_ms: time_ms(&mut || spmm(&a, &x).map(drop))?,
        spmm_bwd_ms: time_bwd_ms(&|| layers(&|t| spmm(&a, t)))?,
        gather_fwd_ms: time_ms(&mut || spmm_gather_scatter(&a, &x).map(drop))?,
        gather_bwd_ms: time_bwd_ms(&|| layers(&|t| spmm_gather_scatter(&a, t)))?,
        weighted_fwd_ms: time_ms(&mut || spmm_weighted(&pattern, w.as_tensor(), &x).map(drop))?,
        weighted_bwd_ms: time_bwd_ms(&|| layers(&|t| spmm_weighted(&pattern, w.as_tensor(), t)))?,
        weighted_gather_fwd_ms: time_ms(&mut || spmm_weighted_gather_scatter(&pattern, w.as_tensor(), &x).map(drop))?,
        weighted_gather_bwd_ms: time_bwd_ms(&|| layers(&|t| spmm_weighted_gather_scatter(&pattern, w.as_tensor(), t)))?,
        baseline_bwd_ms: time_bwd_ms(&|| layers(&|t| t.affine(1.0, 0.0)))?,
    };
    tracing::debug!(?timings, "bench_spmm");
    Ok(timings)
}
