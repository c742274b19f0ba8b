//! Structural invariants of generated data: exact counts, 5-core, a clean per-user split, skewed labels,
//! and files in the SGFD formats.
#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions unwrap too.

use std::collections::BTreeSet;
use std::fs;

use mmkd_synth::{generate, Generated, Preset};

/// Checks every invariant of `data` and returns the degrees (users, items) over train + test.
fn check_invariants(data: &Generated) -> (Vec<usize>, Vec<usize>) {
    let p = &data.preset;
    let mut user_deg = vec![0usize; p.n_users];
    let mut user_train = vec![0usize; p.n_users];
    let mut item_deg = vec![0usize; p.n_items];
    for &(u, i) in &data.train {
        user_deg[u as usize] += 1;
        user_train[u as usize] += 1;
        item_deg[i as usize] += 1;
    }
    for &(u, i) in &data.test {
        user_deg[u as usize] += 1;
        item_deg[i as usize] += 1;
    }
    // Every user and item id occurs, with at least min_degree interactions.
    assert!(user_deg.iter().all(|&d| d >= p.min_degree), "user below min degree");
    assert!(item_deg.iter().all(|&d| d >= p.min_degree), "item below min degree");
    assert!(user_train.iter().all(|&d| d >= 1), "user without train items");
    // Sorted by user then item, hence no duplicates within a split; and the splits are disjoint.
    assert!(data.train.windows(2).all(|w| w[0] < w[1]), "train not strictly sorted");
    assert!(data.test.windows(2).all(|w| w[0] < w[1]), "test not strictly sorted");
    let train: BTreeSet<_> = data.train.iter().collect();
    assert!(data.test.iter().all(|pair| !train.contains(pair)), "train and test overlap");
    // Each user's test count is round(test_frac·n) capped at n − 1.
    let mut user_test = vec![0usize; p.n_users];
    data.test.iter().for_each(|&(u, _)| user_test[u as usize] += 1);
    for (u, (&n, &t)) in user_deg.iter().zip(&user_test).enumerate() {
        let expected = ((p.test_frac * n as f64).round() as usize).min(n - 1);
        assert_eq!(t, expected, "user {u}: {t} test of {n}");
    }
    // Shapes.
    assert_eq!(data.labels.len(), p.n_items);
    assert_eq!(data.visual.len(), p.n_items * p.visual_dim);
    assert_eq!(data.text.len(), p.n_items * p.text_dim);
    assert!(data.visual.iter().all(|x| x.is_finite() && *x >= 0.0), "visual is ReLU output");
    assert!(data.text.iter().all(|x| x.is_finite() && x.abs() < 2.0), "text is tanh plus small noise");
    // Stats agree with the data.
    let n = data.train.len() + data.test.len();
    let s = &data.stats;
    assert_eq!((s.n_users, s.n_items, s.n_interactions), (p.n_users, p.n_items, n));
    assert_eq!((s.n_train, s.n_test), (data.train.len(), data.test.len()));
    assert_eq!(s.min_user_degree, *user_deg.iter().min().unwrap());
    assert_eq!(s.min_item_degree, *item_deg.iter().min().unwrap());
    let sparsity = 1.0 - n as f64 / (p.n_users * p.n_items) as f64;
    assert!((s.sparsity - sparsity).abs() < 1e-12);
    (user_deg, item_deg)
}

fn check_labels(data: &Generated) {
    let c = data.preset.n_labels;
    let mut hist = vec![0usize; c];
    for &l in &data.labels {
        assert!((0..c as i64).contains(&l), "label {l} out of range");
        hist[l as usize] += 1;
    }
    assert!(hist.iter().all(|&h| h >= 1), "a category has no item: {hist:?}");
    assert_eq!(hist, data.stats.label_histogram);
    // Zipf-like: the largest category is several times the smallest, and sizes mostly decrease.
    let (max, min) = (*hist.iter().max().unwrap(), *hist.iter().min().unwrap());
    assert!(max >= 4 * min, "label sizes are not skewed: {hist:?}");
    assert_eq!(max, hist[0]);
}

#[test]
fn tiny_satisfies_every_invariant() {
    let preset = Preset::by_name("tiny").unwrap();
    for seed in 0..4 {
        let data = generate(&preset, seed).unwrap();
        let (user_deg, item_deg) = check_invariants(&data);
        check_labels(&data);
        let n = data.stats.n_interactions as f64;
        assert!((n / preset.n_interactions as f64 - 1.0).abs() < 0.05, "{n} interactions");
        assert!((data.stats.test_share - preset.test_frac).abs() < 0.03, "test share {}", data.stats.test_share);
        assert!((0.9..0.97).contains(&data.stats.sparsity), "sparsity {}", data.stats.sparsity);
        // Long tails: the most active user and the most popular item are far above the mean.
        assert!(*user_deg.iter().max().unwrap() as f64 > 2.5 * n / preset.n_users as f64);
        assert!(*item_deg.iter().max().unwrap() as f64 > 2.5 * n / preset.n_items as f64);
    }
}

#[test]
fn office_has_the_real_counts() {
    let preset = Preset::by_name("office").unwrap();
    let data = generate(&preset, 0).unwrap();
    check_invariants(&data);
    check_labels(&data);
    let s = &data.stats;
    assert!((s.n_interactions as f64 / 52_957.0 - 1.0).abs() < 0.05, "{} interactions", s.n_interactions);
    // The real Office sparsity is 1 − 52957 / (4874·2406) ≈ 0.99548.
    assert!((s.sparsity - 0.99548).abs() < 0.0003, "sparsity {}", s.sparsity);
    assert!((s.test_share - 0.2).abs() < 0.02, "test share {}", s.test_share);
    assert!(s.top_decile_item_share > 0.25, "popularity is not long-tailed: {}", s.top_decile_item_share);
}

/// All presets at full size.
#[test]
#[ignore = "slow: generates the full clothing and toys presets, about 15 s in a debug build on 2 cores; run with `cargo test -p mmkd-synth --test invariants -- --ignored`"]
fn large_presets_have_the_real_counts() {
    for name in ["clothing", "toys"] {
        let preset = Preset::by_name(name).unwrap();
        let data = generate(&preset, 0).unwrap();
        check_invariants(&data);
        check_labels(&data);
        let ratio = data.stats.n_interactions as f64 / preset.n_interactions as f64;
        assert!((ratio - 1.0).abs() < 0.05, "{name}: {} interactions", data.stats.n_interactions);
    }
}

#[test]
fn files_have_the_sgfd_formats() {
    let preset = Preset::by_name("tiny").unwrap();
    let data = generate(&preset, 3).unwrap();
    let dir = std::env::temp_dir().join(format!("mmkd-synth-test-{}-formats", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    data.write_sgfd(&dir).unwrap();

    for (name, pairs) in [("train.csv", &data.train), ("test.csv", &data.test)] {
        let text = fs::read_to_string(dir.join(name)).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("itemID,userID"));
        let rows: Vec<(u32, u32)> = lines
            .map(|l| {
                let (item, user) = l.split_once(',').unwrap();
                (user.parse().unwrap(), item.parse().unwrap())
            })
            .collect();
        assert_eq!(&rows, pairs, "{name}");
    }

    let read = |name: &str| npyz::NpyFile::new(fs::File::open(dir.join(name)).unwrap()).unwrap();
    let visual = read("FeatureImage_normal.npy");
    assert_eq!(visual.shape(), &[preset.n_items as u64, preset.visual_dim as u64]);
    assert_eq!(visual.order(), npyz::Order::C);
    assert_eq!(visual.into_vec::<f32>().unwrap(), data.visual);
    let text = read("FeatureText_normal.npy");
    assert_eq!(text.shape(), &[preset.n_items as u64, preset.text_dim as u64]);
    assert_eq!(text.into_vec::<f32>().unwrap(), data.text);
    let labels = read("MetaData_normal.npy");
    assert_eq!(labels.shape(), &[preset.n_items as u64]);
    assert_eq!(labels.dtype(), npyz::DType::new_scalar("<i8".parse().unwrap()));
    assert_eq!(labels.into_vec::<i64>().unwrap(), data.labels);

    let written = fs::read_to_string(dir.join("manifest.json")).unwrap();
    assert_eq!(written, serde_json::to_string_pretty(&data.manifest()).unwrap() + "\n");
    let manifest: serde_json::Value = serde_json::from_str(&written).unwrap();
    assert_eq!(manifest["seed"], 3);
    assert_eq!(manifest["preset"]["nuisance_scale"], 2.0);
    assert_eq!(manifest["preset"]["label_share"], 0.6);
    assert_eq!(manifest["stats"]["n_interactions"], data.stats.n_interactions);
    let back: Preset = serde_json::from_value(manifest["preset"].clone()).unwrap();
    assert_eq!(back, preset);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn write_errors_name_the_path() {
    let data = generate(&Preset::by_name("tiny").unwrap(), 0).unwrap();
    // A directory below a regular file cannot be created.
    let file = std::env::temp_dir().join(format!("mmkd-synth-test-{}-file", std::process::id()));
    fs::write(&file, b"x").unwrap();
    let err = data.write_sgfd(&file.join("sub")).unwrap_err();
    assert!(err.to_string().contains(&file.display().to_string()), "{err}");
    fs::remove_file(&file).unwrap();
}
