//! Sparse propagation against dense products: values and gradients of `spmm`, `spmm_weighted` and
//! `edge_dot` (dense references built so that candle's autograd gives the reference gradients), the
//! normalised adjacency on a hand graph, GRCN's bidirectional edge order, the gather-scatter fallback, and
//! finite differences in f64.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions unwrap too.

use candle_core::{DType, Device, Tensor, Var};
use mmkd_data::Csr;
use mmkd_nn::graph::{bench_spmm, bidirectional_pattern, bipartite_adjacency, propagate_mean, sym_normalized};
use mmkd_nn::sparse::{
    edge_dot, edge_dot_gather, spmm, spmm_gather_scatter, spmm_weighted, spmm_weighted_gather_scatter, SparseMatrix,
    SparsePattern,
};
use rand::Rng;

const CPU: Device = Device::Cpu;

/// A random COO graph: `nnz` entries in random order, duplicates possible, values in [−1, 1).
struct Coo {
    n_rows: usize,
    n_cols: usize,
    rows: Vec<u32>,
    cols: Vec<u32>,
    values: Vec<f32>,
}

/// Rows `0..n_rows/4` stay empty so that empty rows are always exercised.
fn random_coo(n_rows: usize, n_cols: usize, nnz: usize, seed: u64) -> Coo {
    let mut rng = mmkd_data::stream(seed, "coo");
    let first = (n_rows / 4) as u32;
    let rows = (0..nnz).map(|_| rng.random_range(first..n_rows as u32)).collect();
    let cols = (0..nnz).map(|_| rng.random_range(0..n_cols as u32)).collect();
    let values = (0..nnz).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    Coo { n_rows, n_cols, rows, cols, values }
}

fn random_tensor(shape: (usize, usize), seed: u64, name: &str) -> Tensor {
    let mut rng = mmkd_data::stream(seed, name);
    let data: Vec<f32> = (0..shape.0 * shape.1).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    Tensor::from_vec(data, shape, &CPU).unwrap()
}

/// Dense `(n_rows, n_cols)` matrix with `A[rows[e], cols[e]] += w[e]`, differentiable in `w` (`index_add`).
fn dense_from_weights(coo: &Coo, w: &Tensor) -> Tensor {
    let flat: Vec<u32> = coo.rows.iter().zip(&coo.cols).map(|(&r, &c)| r * coo.n_cols as u32 + c).collect();
    let flat = Tensor::from_vec(flat, coo.rows.len(), &CPU).unwrap();
    Tensor::zeros(coo.n_rows * coo.n_cols, w.dtype(), &CPU)
        .unwrap()
        .index_add(&flat, w, 0)
        .unwrap()
        .reshape((coo.n_rows, coo.n_cols))
        .unwrap()
}

fn to_vec(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_dtype(DType::F32).unwrap().to_vec1().unwrap()
}

/// Elementwise |a − b| ≤ tol · (1 + |b|).
fn assert_close(a: &Tensor, b: &Tensor, tol: f32, what: &str) {
    assert_eq!(a.dims(), b.dims(), "{what}: shapes");
    for (i, (x, y)) in to_vec(a).iter().zip(to_vec(b)).enumerate() {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{what}[{i}]: {x} vs {y}");
    }
}

/// Shapes covering square, wide, tall, sparse, dense-ish and an empty graph.
const SHAPES: [(usize, usize, usize, u64); 5] =
    [(12, 12, 40, 1), (9, 17, 60, 2), (30, 7, 90, 3), (50, 40, 300, 4), (6, 5, 0, 5)];

#[test]
fn spmm_equals_dense_product_and_its_gradient() {
    for (n_rows, n_cols, nnz, seed) in SHAPES {
        let coo = random_coo(n_rows, n_cols, nnz, seed);
        let a = SparseMatrix::from_coo(n_rows, n_cols, &coo.rows, &coo.cols, coo.values.clone()).unwrap();
        let dense = a.to_dense(&CPU).unwrap();
        for d in [1, 7, 33] {
            let x = Var::from_tensor(&random_tensor((n_cols, d), seed, "x")).unwrap();
            let r = random_tensor((n_rows, d), seed, "r");
            let out = spmm(&a, x.as_tensor()).unwrap();
            let reference = dense.matmul(x.as_tensor()).unwrap();
            assert_close(&out, &reference, 1e-5, "spmm");

            let grad = (out * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let reference_grad = (reference * &r).unwrap().sum_all().unwrap().backward().unwrap();
            assert_close(grad.get(&x).unwrap(), reference_grad.get(&x).unwrap(), 1e-5, "spmm grad x");
        }
    }
}

#[test]
fn spmm_weighted_gradients_match_dense_construction() {
    for (n_rows, n_cols, nnz, seed) in SHAPES {
        let coo = random_coo(n_rows, n_cols, nnz, seed);
        let pattern = SparsePattern::from_coo(n_rows, n_cols, &coo.rows, &coo.cols).unwrap();
        let w = Var::from_tensor(&Tensor::from_slice(&coo.values, nnz, &CPU).unwrap()).unwrap();
        let x = Var::from_tensor(&random_tensor((n_cols, 9), seed, "x")).unwrap();
        let r = random_tensor((n_rows, 9), seed, "r");

        let out = spmm_weighted(&pattern, w.as_tensor(), x.as_tensor()).unwrap();
        let reference = dense_from_weights(&coo, w.as_tensor()).matmul(x.as_tensor()).unwrap();
        assert_close(&out, &reference, 1e-5, "spmm_weighted");

        let grads = (out * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let reference_grads = (reference * &r).unwrap().sum_all().unwrap().backward().unwrap();
        assert_close(grads.get(&x).unwrap(), reference_grads.get(&x).unwrap(), 1e-5, "grad x");
        assert_close(grads.get(&w).unwrap(), reference_grads.get(&w).unwrap(), 1e-5, "grad w");

        // GRCN hands weights as a column (nnz, 1); the gradient keeps that shape.
        let w_col = Var::from_tensor(&w.as_tensor().unsqueeze(1).unwrap()).unwrap();
        let out_col = spmm_weighted(&pattern, w_col.as_tensor(), x.as_tensor()).unwrap();
        let grads_col = (out_col * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let grad_col = grads_col.get(&w_col).unwrap();
        assert_eq!(grad_col.dims(), &[nnz, 1]);
        assert_close(&grad_col.squeeze(1).unwrap(), reference_grads.get(&w).unwrap(), 1e-5, "grad w column");
    }
}

#[test]
fn edge_dot_matches_dense_scores_and_gradients() {
    for (n_rows, n_cols, nnz, seed) in SHAPES {
        let coo = random_coo(n_rows, n_cols, nnz, seed);
        let pattern = SparsePattern::from_coo(n_rows, n_cols, &coo.rows, &coo.cols).unwrap();
        let p = Var::from_tensor(&random_tensor((n_rows, 11), seed, "p")).unwrap();
        let q = Var::from_tensor(&random_tensor((n_cols, 11), seed, "q")).unwrap();
        let r = random_tensor((nnz, 1), seed, "r").flatten_all().unwrap();

        let scores = edge_dot(&pattern, p.as_tensor(), q.as_tensor()).unwrap();
        let flat: Vec<u32> = coo.rows.iter().zip(&coo.cols).map(|(&i, &j)| i * n_cols as u32 + j).collect();
        let flat = Tensor::from_vec(flat, nnz, &CPU).unwrap();
        let all = p.as_tensor().matmul(&q.as_tensor().t().unwrap()).unwrap(); // (n_rows, n_cols)
        let reference = all.flatten_all().unwrap().index_select(&flat, 0).unwrap();
        assert_close(&scores, &reference, 1e-5, "edge_dot");

        let grads = (scores * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let reference_grads = (reference * &r).unwrap().sum_all().unwrap().backward().unwrap();
        assert_close(grads.get(&p).unwrap(), reference_grads.get(&p).unwrap(), 1e-5, "grad p");
        assert_close(grads.get(&q).unwrap(), reference_grads.get(&q).unwrap(), 1e-5, "grad q");
    }
}

/// Central differences of `f` (f64) w.r.t. every entry of `x`, against the autograd gradient.
fn grad_check(f: &dyn Fn(&Tensor) -> Tensor, x: &Tensor, eps: f64) {
    let var = Var::from_tensor(x).unwrap();
    let grads = f(var.as_tensor()).backward().unwrap();
    let analytic: Vec<f64> = grads.get(&var).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let base: Vec<f64> = x.flatten_all().unwrap().to_vec1().unwrap();
    for i in 0..base.len() {
        let at = |delta: f64| {
            let mut v = base.clone();
            v[i] += delta;
            let t = Tensor::from_vec(v, x.shape(), &CPU).unwrap();
            f(&t).to_scalar::<f64>().unwrap()
        };
        let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
        assert!(
            (numeric - analytic[i]).abs() < 1e-6 * (1.0 + numeric.abs()),
            "entry {i}: {numeric} vs {}",
            analytic[i]
        );
    }
}

#[test]
fn f64_gradients_match_finite_differences() {
    let coo = random_coo(8, 6, 20, 11);
    let pattern = SparsePattern::from_coo(8, 6, &coo.rows, &coo.cols).unwrap();
    let a = SparseMatrix::from_coo(8, 6, &coo.rows, &coo.cols, coo.values.clone()).unwrap();
    let f64_of = |t: Tensor| t.to_dtype(DType::F64).unwrap();
    let w = f64_of(Tensor::from_slice(&coo.values, 20, &CPU).unwrap());
    let x = f64_of(random_tensor((6, 3), 11, "x"));
    let p = f64_of(random_tensor((8, 3), 11, "p"));
    let r = f64_of(random_tensor((8, 3), 11, "r"));
    let r_edges = f64_of(random_tensor((20, 1), 11, "r-edges").flatten_all().unwrap());
    // A nonlinear head, so that the checks see more than a linear map.
    let head = |out: Tensor, r: &Tensor| (out * r).unwrap().tanh().unwrap().sum_all().unwrap();

    grad_check(&|x| head(spmm(&a, x).unwrap(), &r), &x, 1e-6);
    grad_check(&|x| head(spmm_weighted(&pattern, &w, x).unwrap(), &r), &x, 1e-6);
    grad_check(&|w| head(spmm_weighted(&pattern, w, &x).unwrap(), &r), &w, 1e-6);
    grad_check(&|p| head(edge_dot(&pattern, p, &x).unwrap(), &r_edges), &p, 1e-6);
    grad_check(&|x| head(edge_dot(&pattern, &p, x).unwrap(), &r_edges), &x, 1e-6);
}

#[test]
fn lightgcn_three_layer_mean_matches_dense_path() {
    // 7 users, 5 items; user 6 and item 4 have no interactions.
    let pairs = [(0, 0), (0, 1), (1, 1), (2, 2), (2, 3), (3, 0), (3, 3), (4, 1), (5, 2), (5, 0)];
    let (train, _) = Csr::from_pairs(7, 5, &pairs);
    let a = sym_normalized(&train);
    let dense = a.to_dense(&CPU).unwrap();
    let e0 = Var::from_tensor(&random_tensor((12, 6), 21, "e0")).unwrap();
    let r = random_tensor((12, 6), 21, "r");

    let out = propagate_mean(&a, e0.as_tensor(), 3).unwrap();
    let mut layer = e0.as_tensor().clone();
    let mut sum = layer.clone();
    for _ in 0..3 {
        layer = dense.matmul(&layer).unwrap();
        sum = (sum + &layer).unwrap();
    }
    let reference = (sum / 4.0).unwrap();
    assert_close(&out, &reference, 1e-5, "propagate_mean");

    let grads = (out * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let reference_grads = (reference * &r).unwrap().sum_all().unwrap().backward().unwrap();
    assert_close(grads.get(&e0).unwrap(), reference_grads.get(&e0).unwrap(), 1e-5, "propagate_mean grad");
    // Zero layers is the identity.
    assert_close(&propagate_mean(&a, e0.as_tensor(), 0).unwrap(), e0.as_tensor(), 0.0, "0 layers");
}

#[test]
fn sym_normalized_hand_graph() {
    // 2 users, 4 items: u0 – {i0, i1}, u1 – {i1, i2}, i3 isolated. A duplicate pair collapses.
    let (train, duplicates) = Csr::from_pairs(2, 4, &[(0, 0), (0, 1), (1, 1), (1, 2), (0, 1)]);
    assert_eq!(duplicates, 1);
    let (indptr, indices) = bipartite_adjacency(&train);
    // Nodes: u0 = 0, u1 = 1, i0 = 2, i1 = 3, i2 = 4, i3 = 5.
    assert_eq!(indptr, vec![0, 2, 4, 5, 7, 8, 8]);
    assert_eq!(indices, vec![2, 3, 3, 4, 0, 0, 1, 1]);

    let a = sym_normalized(&train);
    assert_eq!((a.n_rows(), a.n_cols(), a.nnz()), (6, 6, 8));
    // Degrees: u0 2, u1 2, i0 1, i1 2, i2 1, i3 0.
    let s = |x: f64, y: f64| (1.0 / (x * y).sqrt()) as f32;
    let mut expected = [[0f32; 6]; 6];
    for (k, l, value) in [(0, 2, s(2.0, 1.0)), (0, 3, s(2.0, 2.0)), (1, 3, s(2.0, 2.0)), (1, 4, s(2.0, 1.0))] {
        expected[k][l] = value;
        expected[l][k] = value;
    }
    let dense: Vec<Vec<f32>> = a.to_dense(&CPU).unwrap().to_vec2().unwrap();
    for k in 0..6 {
        for l in 0..6 {
            assert!((dense[k][l] - expected[k][l]).abs() < 1e-6, "Â[{k}, {l}] = {} vs {}", dense[k][l], expected[k][l]);
        }
    }
    // The isolated item propagates zeros and receives nothing.
    let x = Tensor::ones((6, 2), DType::F32, &CPU).unwrap();
    let out: Vec<Vec<f32>> = spmm(&a, &x).unwrap().to_vec2().unwrap();
    assert_eq!(out[5], vec![0.0, 0.0]);
    assert!((out[2][0] - s(2.0, 1.0)).abs() < 1e-6);
}

#[test]
fn transpose_and_csr_constructors_agree() {
    let coo = random_coo(10, 13, 45, 31);
    let a = SparseMatrix::from_coo(10, 13, &coo.rows, &coo.cols, coo.values.clone()).unwrap();
    let dense = a.to_dense(&CPU).unwrap();
    assert_close(&a.t().to_dense(&CPU).unwrap(), &dense.t().unwrap(), 0.0, "transpose");
    let x = random_tensor((10, 4), 31, "x");
    assert_close(&spmm(&a.t(), &x).unwrap(), &dense.t().unwrap().matmul(&x).unwrap(), 1e-5, "spmm Aᵀ");

    // Same entries through CSR arrays with unsorted rows.
    let indptr = [0, 2, 2, 3];
    let a = SparseMatrix::from_csr_values(4, &indptr, &[3, 1, 0], vec![1.0, 2.0, 3.0]).unwrap();
    let expected = [[0.0, 2.0, 0.0, 1.0], [0.0; 4], [3.0, 0.0, 0.0, 0.0]];
    assert_eq!(a.to_dense(&CPU).unwrap().to_vec2::<f32>().unwrap(), expected.map(|r| r.to_vec()).to_vec());
}

#[test]
fn non_contiguous_input_is_handled() {
    let coo = random_coo(8, 9, 30, 41);
    let a = SparseMatrix::from_coo(8, 9, &coo.rows, &coo.cols, coo.values.clone()).unwrap();
    let xt = random_tensor((5, 9), 41, "xt").t().unwrap(); // (9, 5), strided.
    assert!(!xt.is_contiguous());
    let reference = a.to_dense(&CPU).unwrap().matmul(&xt.contiguous().unwrap()).unwrap();
    assert_close(&spmm(&a, &xt).unwrap(), &reference, 1e-5, "strided x");
    let w = Tensor::from_slice(&coo.values, 30, &CPU).unwrap();
    assert_close(&spmm_weighted(a.pattern(), &w, &xt).unwrap(), &reference, 1e-5, "strided x, weighted");
}

#[test]
fn gather_scatter_fallback_equals_custom_ops() {
    for (n_rows, n_cols, nnz, seed) in SHAPES {
        let coo = random_coo(n_rows, n_cols, nnz, seed);
        let a = SparseMatrix::from_coo(n_rows, n_cols, &coo.rows, &coo.cols, coo.values.clone()).unwrap();
        let w = Var::from_tensor(&Tensor::from_slice(&coo.values, nnz, &CPU).unwrap()).unwrap();
        let x = Var::from_tensor(&random_tensor((n_cols, 5), seed, "x")).unwrap();
        let p = random_tensor((n_rows, 5), seed, "p");
        let r = random_tensor((n_rows, 5), seed, "r");

        let fast = spmm(&a, x.as_tensor()).unwrap();
        let slow = spmm_gather_scatter(&a, x.as_tensor()).unwrap();
        assert_close(&fast, &slow, 1e-5, "spmm vs gather-scatter");
        let g_fast = (fast * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let g_slow = (slow * &r).unwrap().sum_all().unwrap().backward().unwrap();
        assert_close(g_fast.get(&x).unwrap(), g_slow.get(&x).unwrap(), 1e-5, "grad x");

        let fast = spmm_weighted(a.pattern(), w.as_tensor(), x.as_tensor()).unwrap();
        let slow = spmm_weighted_gather_scatter(a.pattern(), w.as_tensor(), x.as_tensor()).unwrap();
        assert_close(&fast, &slow, 1e-5, "weighted vs gather-scatter");
        let g_fast = (fast * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let g_slow = (slow * &r).unwrap().sum_all().unwrap().backward().unwrap();
        if nnz > 0 {
            assert_close(g_fast.get(&w).unwrap(), g_slow.get(&w).unwrap(), 1e-5, "weighted grad w");
        } else {
            // candle's own ops drop empty tensors from the graph, so the fallback leaves `w` without a gradient.
            assert_eq!(g_fast.get(&w).unwrap().elem_count(), 0);
        }
        assert_close(g_fast.get(&x).unwrap(), g_slow.get(&x).unwrap(), 1e-5, "weighted grad x");

        let fast = edge_dot(a.pattern(), &p, x.as_tensor()).unwrap();
        let slow = edge_dot_gather(a.pattern(), &p, x.as_tensor()).unwrap();
        assert_close(&fast, &slow, 1e-5, "edge_dot vs gather");
    }
    // Dtypes the CPU kernels do not cover take the fallback through the same entry point.
    let coo = random_coo(6, 6, 15, 51);
    let a = SparseMatrix::from_coo(6, 6, &coo.rows, &coo.cols, coo.values.clone()).unwrap();
    let x = random_tensor((6, 4), 51, "x");
    let half = spmm(&a, &x.to_dtype(DType::BF16).unwrap()).unwrap();
    assert_eq!(half.dtype(), DType::BF16);
    assert_close(&half, &spmm(&a, &x).unwrap(), 2e-2, "bf16 fallback");
}

#[test]
fn grcn_bidirectional_edges_follow_file_order() {
    // 2 users, 3 items; pairs in file order.
    let pairs = [(1, 2), (0, 0), (1, 0)];
    let pattern = bidirectional_pattern(2, 3, &pairs).unwrap();
    assert_eq!((pattern.n_rows(), pattern.n_cols(), pattern.nnz()), (5, 5, 6));
    // Edge e < E: user → item (row = item node, col = user); E + e: item → user.
    assert_eq!(pattern.edge_rows(), &[4, 2, 2, 1, 0, 1]);
    assert_eq!(pattern.edge_cols(), &[1, 0, 1, 4, 2, 2]);

    // SAGE with aggr = add: out_t = Σ_{e = (s → t)} w_e · x_s, checked by a loop over the edges.
    let w: Vec<f32> = vec![0.5, -1.0, 2.0, 0.25, 3.0, -0.5];
    let x = random_tensor((5, 3), 61, "x");
    let out: Vec<Vec<f32>> =
        spmm_weighted(&pattern, &Tensor::new(w.as_slice(), &CPU).unwrap(), &x).unwrap().to_vec2().unwrap();
    let xs: Vec<Vec<f32>> = x.to_vec2().unwrap();
    let mut expected = vec![vec![0f32; 3]; 5];
    for e in 0..6 {
        let (t, s) = (pattern.edge_rows()[e] as usize, pattern.edge_cols()[e] as usize);
        for j in 0..3 {
            expected[t][j] += w[e] * xs[s][j];
        }
    }
    for t in 0..5 {
        for j in 0..3 {
            assert!((out[t][j] - expected[t][j]).abs() < 1e-6, "out[{t}][{j}]");
        }
    }
    assert!(bidirectional_pattern(2, 3, &[(2, 0)]).is_err());
}

#[test]
fn bad_inputs_are_errors() {
    assert!(SparsePattern::from_coo(3, 3, &[0, 3], &[0, 0]).is_err());
    assert!(SparsePattern::from_coo(3, 3, &[0, 1], &[0, 3]).is_err());
    assert!(SparsePattern::from_coo(3, 3, &[0, 1], &[0]).is_err());
    assert!(SparseMatrix::from_coo(3, 3, &[0, 1], &[0, 1], vec![1.0]).is_err());
    assert!(SparseMatrix::from_csr_values(3, &[0, 2, 1], &[0, 1], vec![1.0, 1.0]).is_err());
    assert!(SparseMatrix::from_csr_values(3, &[0, 1], &[0, 1], vec![1.0, 1.0]).is_err());
    let a = SparseMatrix::from_coo(3, 4, &[0, 2], &[3, 1], vec![1.0, 2.0]).unwrap();
    assert!(spmm(&a, &Tensor::zeros((3, 2), DType::F32, &CPU).unwrap()).is_err());
    assert!(spmm(&a, &Tensor::zeros(4, DType::F32, &CPU).unwrap()).is_err());
    let x = Tensor::zeros((4, 2), DType::F32, &CPU).unwrap();
    assert!(spmm_weighted(a.pattern(), &Tensor::zeros(3, DType::F32, &CPU).unwrap(), &x).is_err());
    assert!(spmm_weighted(a.pattern(), &Tensor::zeros(2, DType::F64, &CPU).unwrap(), &x).is_err());
    assert!(edge_dot(a.pattern(), &Tensor::zeros((3, 3), DType::F32, &CPU).unwrap(), &x).is_err());
}

/// Office-sized timings (4,874 users, 2,406 items, ~37k interactions → ~74k directed edges, d = 128):
/// `cargo test -p mmkd-backbones --release --test graph -- --ignored --nocapture office_sized_bench`.
#[test]
#[ignore]
fn office_sized_bench() {
    let timings = bench_spmm(4874, 2406, 37_100, 128, 3, 10, 0).unwrap();
    println!("{timings}");
}
