//! KDSR's correlation teacher (spec `kdsr-mmsr.md` §2.7, §3, §14 tests 1–2): scoring functions against hand
//! values, on-the-fly codes against a dense (n+1)² matrix built by a plain loop, codebooks on planted pair
//! types, determinism and save/load, and the compression autoencoder.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions unwrap too.

use candle_core::{DType, Device, Tensor};
use mmkd_teacher::kdsr::{
    compress, pair_scores, sub_vector_scores, AeConfig, Codebook, CodebookConfig, KdsrTeacher, Quantiser, Scoring,
};
use rand::Rng;

const ALL: [Scoring; 4] = [Scoring::Cos, Scoring::Dot, Scoring::Euc, Scoring::Man];

/// f of two vectors by the spec's definitions (cos = 0 when a norm is 0), in f64.
fn score(a: &[f64], b: &[f64], f: Scoring) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    match f {
        Scoring::Cos => {
            let (na, nb) = (a.iter().map(|x| x * x).sum::<f64>().sqrt(), b.iter().map(|x| x * x).sum::<f64>().sqrt());
            if na == 0.0 || nb == 0.0 {
                0.0
            } else {
                dot / (na * nb)
            }
        }
        Scoring::Dot => dot,
        Scoring::Euc => a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>().sqrt(),
        Scoring::Man => a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum(),
    }
}

/// r_ij by a plain loop: f of each pair of contiguous chunks.
fn r_loop(a: &[f64], b: &[f64], n_sub: usize, f: Scoring) -> Vec<f64> {
    let c = a.len() / n_sub;
    (0..n_sub).map(|k| score(&a[k * c..(k + 1) * c], &b[k * c..(k + 1) * c], f)).collect()
}

/// The nearest codeword by a plain loop (first on ties).
fn nearest_loop(r: &[f64], centroids: &[Vec<f64>]) -> u32 {
    let mut best = (0, f64::INFINITY);
    for (k, c) in centroids.iter().enumerate() {
        let d: f64 = r.iter().zip(c).map(|(x, y)| (x - y).powi(2)).sum();
        if d < best.1 {
            best = (k, d);
        }
    }
    best.0 as u32
}

fn rows_f64(t: &Tensor) -> Vec<Vec<f64>> {
    t.to_dtype(DType::F64).unwrap().to_vec2().unwrap()
}

/// z (n+1, d) f32 in [0, 1): row 0 is padding (zero), row `zero_row` is an item without the modality, and
/// row 3 has its second chunk (of `d / n_sub` entries) zeroed.
fn features(n_items: usize, d: usize, n_sub: usize, zero_row: usize, seed: u64) -> Tensor {
    let mut rng = mmkd_data::stream(seed, "z");
    let c = d / n_sub;
    let mut data = vec![0f32; (n_items + 1) * d];
    for i in 1..=n_items {
        if i == zero_row {
            continue;
        }
        for j in 0..d {
            data[i * d + j] = if i == 3 && (c..2 * c).contains(&j) { 0.0 } else { rng.random_range(0.0..1.0) };
        }
    }
    Tensor::from_vec(data, (n_items + 1, d), &Device::Cpu).unwrap()
}

fn small_config(scoring: Scoring, n_codes: usize, n_sub: usize) -> CodebookConfig {
    CodebookConfig { scoring, n_codes, n_sub, batch: 200, ..Default::default() }
}

#[test]
fn scoring_functions_match_hand_values() {
    // Rows (3, 4), (0, 0), (4, 3).
    let a = Tensor::new(&[[[3f32, 4.], [0., 0.], [4., 3.]]], &Device::Cpu).unwrap();
    let get = |f| pair_scores(&a, f).unwrap().squeeze(0).unwrap().to_vec2::<f32>().unwrap();
    let close = |got: Vec<Vec<f32>>, want: [[f32; 3]; 3], f: Scoring| {
        for i in 0..3 {
            for j in 0..3 {
                assert!((got[i][j] - want[i][j]).abs() < 1e-6, "{f:?} [{i},{j}]: {} vs {}", got[i][j], want[i][j]);
            }
        }
    };
    // cos((3,4),(4,3)) = 24/25; the zero row scores 0 with everything, itself included.
    close(get(Scoring::Cos), [[1., 0., 0.96], [0., 0., 0.], [0.96, 0., 1.]], Scoring::Cos);
    close(get(Scoring::Dot), [[25., 0., 24.], [0., 0., 0.], [24., 0., 25.]], Scoring::Dot);
    let s2 = 2f32.sqrt();
    close(get(Scoring::Euc), [[0., 5., s2], [5., 0., 5.], [s2, 5., 0.]], Scoring::Euc);
    close(get(Scoring::Man), [[0., 7., 2.], [7., 0., 7.], [2., 7., 0.]], Scoring::Man);

    // Two chunks of one entry: cos of scalars is their sign product (0 for a zero), euc/man |x − y|.
    let r = sub_vector_scores(&a, 2, Scoring::Cos).unwrap();
    assert_eq!(r.dims(), &[1, 3, 3, 2]);
    let r: Vec<f32> = r.flatten_all().unwrap().to_vec1().unwrap();
    // Entry [0, i, j, k] sits at (i·3 + j)·2 + k.
    assert_eq!(&r[(2 * 3) * 2..(2 * 3) * 2 + 2], &[1.0, 1.0]); // (4,3) vs (3,4).
    assert_eq!(&r[(3 + 1) * 2..(3 + 1) * 2 + 2], &[0.0, 0.0]); // zero row vs itself.
    let m: Vec<f32> = sub_vector_scores(&a, 2, Scoring::Man).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(&m[2 * 2..2 * 2 + 2], &[1.0, 1.0]); // |3 − 4|, |4 − 3|.
    assert_eq!(&m[2..4], &[3.0, 4.0]); // (3,4) vs (0,0).
    let e: Vec<f32> = sub_vector_scores(&a, 2, Scoring::Euc).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(e, m); // With one entry per chunk, ‖·‖₂ = ‖·‖₁.
    let dt: Vec<f32> = sub_vector_scores(&a, 2, Scoring::Dot).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(&dt[2 * 2..2 * 2 + 2], &[12.0, 12.0]);

    // n_sub must divide d; the input must be (b, q, d).
    assert!(sub_vector_scores(&a, 3, Scoring::Cos).is_err());
    assert!(sub_vector_scores(&a, 0, Scoring::Cos).is_err());
    assert!(pair_scores(&a.squeeze(0).unwrap(), Scoring::Cos).is_err());
}

#[test]
fn scores_of_random_batches_match_a_loop() {
    let z = features(9, 12, 3, 5, 1);
    let nodes = Tensor::new(&[[1u32, 2, 3, 0], [4, 5, 9, 8]], &Device::Cpu).unwrap();
    let rows = z.index_select(&nodes.flatten_all().unwrap(), 0).unwrap().reshape((2, 4, 12)).unwrap();
    let zz = rows_f64(&z);
    let ids = nodes.to_vec2::<u32>().unwrap();
    for f in ALL {
        let s: Vec<Vec<Vec<f32>>> = pair_scores(&rows, f).unwrap().to_vec3().unwrap();
        let r: Vec<f32> = sub_vector_scores(&rows, 3, f).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        for b in 0..2 {
            for i in 0..4 {
                for j in 0..4 {
                    let (x, y) = (&zz[ids[b][i] as usize], &zz[ids[b][j] as usize]);
                    assert!((f64::from(s[b][i][j]) - score(x, y, f)).abs() < 1e-5, "{f:?}");
                    let want = r_loop(x, y, 3, f);
                    for k in 0..3 {
                        let got = f64::from(r[((b * 4 + i) * 4 + j) * 3 + k]);
                        assert!((got - want[k]).abs() < 1e-5, "{f:?} r[{b},{i},{j},{k}]: {got} vs {}", want[k]);
                    }
                }
            }
        }
    }
}

/// Spec §14 test 1.
#[test]
fn sub_vector_cosine_is_one_on_the_diagonal_and_symmetric() {
    let (n_sub, d) = (4, 16);
    let z = features(12, d, n_sub, 7, 2);
    let rows = z.unsqueeze(0).unwrap(); // (1, 13, 16): every item and the padding row.
    let r: Vec<f32> = sub_vector_scores(&rows, n_sub, Scoring::Cos).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let zz = rows_f64(&z);
    let q = 13;
    let at = |i: usize, j: usize, k: usize| r[(i * q + j) * n_sub + k];
    for i in 0..q {
        for k in 0..n_sub {
            let chunk_is_zero = zz[i][k * 4..(k + 1) * 4].iter().all(|&v| v == 0.0);
            let want = if chunk_is_zero { 0.0 } else { 1.0 };
            assert!((at(i, i, k) - want).abs() < 1e-6, "r[{i},{i}][{k}] = {}", at(i, i, k));
        }
        for j in 0..q {
            for k in 0..n_sub {
                assert_eq!(at(i, j, k), at(j, i, k), "r[{i},{j}][{k}]");
            }
        }
    }
    // The fixture has the zero cases the test is about: padding, an item without the modality, a zero chunk.
    assert_eq!((at(0, 0, 0), at(7, 7, 2), at(3, 3, 1), at(3, 3, 0)), (0.0, 0.0, 0.0, at(3, 3, 0)));
    assert!((at(3, 3, 0) - 1.0).abs() < 1e-6);
}

/// A teacher over one modality's `z` used for both modalities, fitted on every pair.
fn teacher(z: &Tensor, cfg: &CodebookConfig, seed: u64) -> KdsrTeacher {
    let cb = Codebook::fit(z, cfg, seed, &Device::Cpu).unwrap();
    KdsrTeacher::new(z, z, cb.clone(), cb, cfg.scoring, cfg.n_sub).unwrap()
}

/// Spec §14 test 2 (third part), for every scoring function.
#[test]
fn on_the_fly_codes_equal_the_full_matrix_codes() {
    let (n_items, d, n_sub) = (24, 16, 4);
    let z = features(n_items, d, n_sub, 11, 3);
    let zz = rows_f64(&z);
    let n = n_items + 1;
    for f in ALL {
        let t = teacher(&z, &small_config(f, 6, n_sub), 4);
        let centroids = rows_f64(&t.codebook_v().centroids);
        // The dense (n+1)² matrices the reference materialises, by a plain loop.
        let full_codes: Vec<Vec<u32>> = (0..n)
            .map(|i| (0..n).map(|j| nearest_loop(&r_loop(&zz[i], &zz[j], n_sub, f), &centroids)).collect())
            .collect();
        let all: Vec<u32> = (0..n as u32).collect();
        let mut shuffled = all.clone();
        shuffled.reverse();
        shuffled.swap(3, 17);
        let mut padded = vec![0u32; n];
        padded[..5].copy_from_slice(&[2, 9, 11, 3, 20]);
        let nodes = Tensor::new(vec![all, shuffled, padded], &Device::Cpu).unwrap();
        let ids = nodes.to_vec2::<u32>().unwrap();
        let out = t.targets(&nodes).unwrap();
        assert_eq!(out.codes_v.dims(), &[3, n, n]);
        assert_eq!((out.codes_v.dtype(), out.scores_v.dtype()), (DType::U32, DType::F32));
        let codes = out.codes_t.to_vec3::<u32>().unwrap();
        let scores = out.scores_v.to_vec3::<f32>().unwrap();
        for b in 0..3 {
            for i in 0..n {
                for j in 0..n {
                    let (u, v) = (ids[b][i] as usize, ids[b][j] as usize);
                    assert_eq!(codes[b][i][j], full_codes[u][v], "{f:?}: seq {b}, pair ({u}, {v})");
                    assert!((f64::from(scores[b][i][j]) - score(&zz[u], &zz[v], f)).abs() < 1e-5, "{f:?}");
                }
            }
        }
        // The codebook is used: more than one code occurs.
        let mut seen: Vec<u32> = full_codes.iter().flatten().copied().collect();
        seen.sort_unstable();
        seen.dedup();
        assert!(seen.len() > 1, "{f:?}: {seen:?}");
    }
}

/// Spec §14 test 2 (first two parts).
#[test]
fn codes_are_symmetric_and_the_diagonal_code_is_nearest_all_ones() {
    let (n_items, d, n_sub) = (30, 32, 8);
    let z = features(n_items, d, n_sub, 13, 5);
    let t = teacher(&z, &small_config(Scoring::Cos, 10, n_sub), 6);
    let centroids = rows_f64(&t.codebook_v().centroids);
    let ones_code = nearest_loop(&[1.0; 8], &centroids);
    let zero_code = nearest_loop(&[0.0; 8], &centroids);
    let nodes = Tensor::new(&[[5u32, 1, 13, 30, 0, 22, 3, 0], [2, 4, 6, 8, 10, 12, 14, 16]], &Device::Cpu).unwrap();
    let ids = nodes.to_vec2::<u32>().unwrap();
    let out = t.targets(&nodes).unwrap();
    for codes in [&out.codes_v, &out.codes_t] {
        let c = codes.to_vec3::<u32>().unwrap();
        for b in 0..2 {
            for i in 0..8 {
                for j in 0..8 {
                    assert_eq!(c[b][i][j], c[b][j][i], "seq {b} ({i}, {j})");
                }
                // Padding and the item without the modality have r_ii = 0; item 3 has a zero chunk.
                let want = match ids[b][i] {
                    0 | 13 => zero_code,
                    3 => nearest_loop(&[1., 0., 1., 1., 1., 1., 1., 1.], &centroids),
                    _ => ones_code,
                };
                assert_eq!(c[b][i][i], want, "seq {b}, node {}", ids[b][i]);
            }
        }
    }
    let scores = out.scores_v.to_vec3::<f32>().unwrap();
    assert!((scores[0][0][0] - 1.0).abs() < 1e-6 && scores[0][4][4] == 0.0 && scores[0][4][1] == 0.0);
}

/// z of `per_group` items in each of three groups around the prototypes below (noise 0.01), plus padding.
/// With dot scoring and one entry per chunk, r_ij = z_i ⊙ z_j takes seven well-separated values: the six
/// unordered group pairs and 0 for pairs with padding.
fn planted_groups(per_group: usize) -> (Tensor, Vec<usize>) {
    let protos = [[1.0f32, 0.5, 0.5, 0.5], [0.5, 1.0, 0.5, 0.5], [0.5, 0.5, 1.0, 0.5]];
    let mut rng = mmkd_data::stream(8, "groups");
    let mut data = vec![0f32; 4];
    let mut group = vec![usize::MAX];
    for g in 0..3 {
        for _ in 0..per_group {
            data.extend(protos[g].iter().map(|&p| p + rng.random_range(-0.01..0.01)));
            group.push(g);
        }
    }
    let n = group.len();
    (Tensor::from_vec(data, (n, 4), &Device::Cpu).unwrap(), group)
}

#[test]
fn codebook_recovers_planted_pair_types() {
    let (z, group) = planted_groups(20);
    let n = group.len();
    for quantiser in [Quantiser::Kmeans] {
        let cfg = CodebookConfig { quantiser, ..small_config(Scoring::Dot, 7, 4) };
        let t = teacher(&z, &cfg, 1);
        let nodes = Tensor::new(vec![(0..n as u32).collect::<Vec<_>>()], &Device::Cpu).unwrap();
        let codes = t.targets(&nodes).unwrap().codes_v.to_vec3::<u32>().unwrap().remove(0);
        // Pair type: 0 for padding, else 1 + index of the unordered group pair.
        let kind = |i: usize, j: usize| {
            if group[i] == usize::MAX || group[j] == usize::MAX {
                0
            } else {
                let (a, b) = (group[i].min(group[j]), group[i].max(group[j]));
                1 + a * 3 + b
            }
        };
        let mut code_of = std::collections::BTreeMap::new();
        for i in 0..n {
            for j in 0..n {
                let c = *code_of.entry(kind(i, j)).or_insert(codes[i][j]);
                assert_eq!(codes[i][j], c, "{quantiser:?}: pair ({i}, {j}) of type {}", kind(i, j));
            }
        }
        let mut distinct: Vec<u32> = code_of.values().copied().collect();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!((code_of.len(), distinct.len()), (7, 7), "{quantiser:?}: {code_of:?}");
    }
}

#[test]
fn codebook_is_bit_identical_under_a_seed_and_round_trips_through_safetensors() {
    let z = features(99, 16, 8, 50, 9);
    // (n+1)² = 10,000 > 3,000: the sampled path.
    for quantiser in [Quantiser::Kmeans, Quantiser::Vq] {
        let cfg = CodebookConfig { sample_pairs: 3000, batch: 500, quantiser, ..small_config(Scoring::Cos, 10, 8) };
        let fit = |seed| Codebook::fit(&z, &cfg, seed, &Device::Cpu).unwrap();
        let (a, b, c) = (fit(21), fit(21), fit(22));
        assert_eq!(a.centroids.dims(), &[10, 8]);
        let flat = |cb: &Codebook| cb.centroids.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(flat(&a), flat(&b), "{quantiser:?}");
        assert_ne!(flat(&a), flat(&c), "{quantiser:?}");

        let path =
            std::env::temp_dir().join(format!("mmkd-kdsr-codebook-{quantiser:?}-{}.safetensors", std::process::id()));
        a.save(&path).unwrap();
        assert!(!path.with_extension("safetensors.tmp").exists());
        let loaded = Codebook::load(&path, &Device::Cpu).unwrap();
        assert_eq!(flat(&loaded), flat(&a));
        assert_eq!((loaded.n_codes(), loaded.n_sub()), (10, 8));
        let r = sub_vector_scores(&z.unsqueeze(0).unwrap(), 8, Scoring::Cos).unwrap();
        assert_eq!(
            loaded.assign(&r).unwrap().flatten_all().unwrap().to_vec1::<u32>().unwrap(),
            a.assign(&r).unwrap().flatten_all().unwrap().to_vec1::<u32>().unwrap()
        );
        std::fs::remove_file(&path).unwrap();
    }
    assert!(Codebook::load(std::path::Path::new("/nonexistent/codebook.safetensors"), &Device::Cpu).is_err());
}

#[test]
fn teacher_and_codebook_reject_bad_shapes_and_configs() {
    let z = features(9, 12, 3, 5, 1);
    let cfg = small_config(Scoring::Cos, 4, 3);
    assert!(Codebook::fit(&z, &CodebookConfig { n_sub: 5, ..cfg.clone() }, 0, &Device::Cpu).is_err());
    assert!(Codebook::fit(&z, &CodebookConfig { n_codes: 0, ..cfg.clone() }, 0, &Device::Cpu).is_err());
    assert!(Codebook::fit(&z.unsqueeze(0).unwrap(), &cfg, 0, &Device::Cpu).is_err());
    let cb = Codebook::fit(&z, &cfg, 0, &Device::Cpu).unwrap();
    assert!(cb.assign(&Tensor::zeros((2, 4), DType::F32, &Device::Cpu).unwrap()).is_err());
    assert_eq!(cb.assign(&Tensor::zeros((2, 5, 3), DType::F32, &Device::Cpu).unwrap()).unwrap().dims(), &[2, 5]);
    assert!(KdsrTeacher::new(&z, &z, cb.clone(), cb.clone(), Scoring::Cos, 4).is_err());
    assert!(KdsrTeacher::new(&z, &z.narrow(0, 0, 5).unwrap(), cb.clone(), cb.clone(), Scoring::Cos, 3).is_err());
    let t = KdsrTeacher::new(&z, &z, cb.clone(), cb, Scoring::Cos, 3).unwrap();
    assert!(t.targets(&Tensor::new(&[1f32, 2.], &Device::Cpu).unwrap()).is_err());
    assert!(t.targets(&Tensor::new(&[[1u32, 2, 3]], &Device::Cpu).unwrap().to_dtype(DType::F32).unwrap()).is_err());
    assert!(t.targets(&Tensor::new(&[[1u32, 99]], &Device::Cpu).unwrap()).is_err());
}

#[test]
fn configs_parse_with_defaults_and_reject_typos() {
    let cfg: CodebookConfig = toml::from_str("quantiser = \"vq\"\nscoring = \"man\"\nn_codes = 20").unwrap();
    assert_eq!((cfg.quantiser, cfg.scoring, cfg.n_codes, cfg.n_sub), (Quantiser::Vq, Scoring::Man, 20, 8));
    assert_eq!((cfg.sample_pairs, cfg.batch, cfg.n_init, cfg.max_iter, cfg.patience), (4_000_000, 10_000, 3, 100, 10));
    assert!(toml::from_str::<CodebookConfig>("n_code = 20").is_err());
    for (name, f) in [("cos", Scoring::Cos), ("dot", Scoring::Dot), ("euc", Scoring::Euc), ("man", Scoring::Man)] {
        assert_eq!(toml::from_str::<CodebookConfig>(&format!("scoring = \"{name}\"")).unwrap().scoring, f);
    }
    let ae: AeConfig = toml::from_str("").unwrap();
    assert_eq!(ae, AeConfig::default());
    assert_eq!(
        (ae.dim, ae.lr, ae.batch, ae.max_epochs, ae.check_every, ae.patience, ae.shuffle, ae.keep_best),
        (128, 1e-3, 256, 500, 10, 4, true, true)
    );
    assert!(toml::from_str::<AeConfig>("epochs = 3").is_err());
    assert!(AeConfig { check_every: 0, ..AeConfig::default() }.validate().is_err());
}

#[test]
fn autoencoder_reduces_reconstruction_loss_and_z_lies_in_the_unit_interval() {
    // x = low-rank signal (rank 4) + small noise, 300 items × 40 features.
    let mut rng = mmkd_data::stream(1, "ae-data");
    let basis: Vec<f32> = (0..4 * 40).map(|_| rng.random_range(-1.0..1.0)).collect();
    let mut data = Vec::with_capacity(300 * 40);
    for _ in 0..300 {
        let w: Vec<f32> = (0..4).map(|_| rng.random_range(-2.0..2.0)).collect();
        for j in 0..40 {
            data.push((0..4).map(|k| w[k] * basis[k * 40 + j]).sum::<f32>() + rng.random_range(-0.05..0.05));
        }
    }
    let x = Tensor::from_vec(data, (300, 40), &Device::Cpu).unwrap();
    let cfg = AeConfig { dim: 8, lr: 1e-2, batch: 64, max_epochs: 80, check_every: 5, ..AeConfig::default() };
    let (z, report) = compress(&x, &cfg, 7, &Device::Cpu).unwrap();
    eprintln!("{report:?}");
    assert_eq!(z.dims(), &[300, 8]);
    assert!(report.epochs >= 5 && report.epochs <= 80);
    assert!(report.best_loss < 0.3 * report.first_loss, "{report:?}");
    assert!(report.best_loss <= report.final_loss + 1e-12, "{report:?}");
    let zs: Vec<f32> = z.flatten_all().unwrap().to_vec1().unwrap();
    assert!(zs.iter().all(|&v| v > 0.0 && v < 1.0));
    // Same seed, same z.
    let (again, _) = compress(&x, &cfg, 7, &Device::Cpu).unwrap();
    assert_eq!(again.flatten_all().unwrap().to_vec1::<f32>().unwrap(), zs);
    assert!(compress(&x.to_dtype(DType::F64).unwrap(), &cfg, 7, &Device::Cpu).is_err());
}

/// Fits a codebook at Beauty's scale (12,102 rows, d = 128, D = 8, K = 50, 4,000,000 sampled pairs) and
/// prints the time it took (`--nocapture`); no assertion on the time. It runs with the other tests: about
/// 2 s in a debug build on 2 cores.
#[test]
fn codebook_fit_at_beauty_scale() {
    let z = features(12_101, 128, 8, 0, 12);
    let started = std::time::Instant::now();
    let cb = Codebook::fit(&z, &CodebookConfig::default(), 0, &Device::Cpu).unwrap();
    eprintln!("Codebook::fit on 12,102 × 128 (D = 8, K = 50): {:.1} s", started.elapsed().as_secs_f64());
    assert_eq!(cb.centroids.dims(), &[50, 8]);
    // Every codeword is a finite point, and no two coincide (a collapsed or empty cluster would).
    let rows = rows_f64(&cb.centroids);
    assert!(rows.iter().flatten().all(|v| v.is_finite()));
    for (a, ra) in rows.iter().enumerate() {
        assert!(rows[a + 1..].iter().all(|rb| rb != ra), "codeword {a} is repeated");
    }
}
