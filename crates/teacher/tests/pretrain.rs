//! Teacher pretraining on a planted problem: every modality's features are the item's label centroid plus
//! isotropic noise plus a large nuisance along one random direction, so each modality alone is informative
//! but imperfect, and the two modalities' noises are independent (fusion can only help).

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions unwrap too.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use mmkd_data::Labels;
use mmkd_features::{FeatureMatrix, FeatureStore};
use mmkd_teacher::{load_teacher, pretrain, PretrainConfig, PretrainReport, TeacherConfig, TeacherDepth};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

/// `n_items` items with labels drawn uniformly from `n_labels` classes; each `(name, D, noise)` modality is
/// `x = μ_y + noise·ε + 6√D·a·u`: centroid entries μ_y ~ N(0, 1.5²), ε ~ N(0, I_D), a ~ N(0, 1) per item
/// and u a fixed random unit direction (a large nuisance: scale 6√D against the centroids' 1.5√D).
fn planted(n_items: usize, n_labels: usize, dims: &[(&str, usize, f64)], seed: u64) -> (FeatureStore, Labels) {
    let mut rng = mmkd_data::stream(seed, "labels");
    let raw: Vec<i64> = (0..n_items).map(|_| rng.random_range(0..n_labels as i64)).collect();
    let labels = Labels::from_values(&raw);
    let mut store = FeatureStore::new(n_items);
    for &(name, dim, noise) in dims {
        let mut rng = mmkd_data::stream(seed, name);
        let mut normal = || -> f32 { StandardNormal.sample(&mut rng) };
        let centroids: Vec<Vec<f32>> = (0..n_labels).map(|_| (0..dim).map(|_| 1.5 * normal()).collect()).collect();
        let u: Vec<f32> = (0..dim).map(|_| normal()).collect();
        let un = u.iter().map(|v| v * v).sum::<f32>().sqrt();
        let mut data = Vec::with_capacity(n_items * dim);
        for &y in &labels.per_item {
            let a = 6.0 * normal() * (dim as f32).sqrt();
            for j in 0..dim {
                data.push(centroids[y as usize][j] + noise as f32 * normal() + a * u[j] / un);
            }
        }
        store.insert(name, FeatureMatrix::new(n_items, dim, data).unwrap(), Path::new(name)).unwrap();
    }
    (store, labels)
}

fn config() -> PretrainConfig {
    PretrainConfig {
        seed: 3,
        epochs: 60,
        lr: 1e-2,
        batch_size: 64,
        heldout_fraction: 0.2,
        teacher: TeacherConfig { out_dim: 8, teacher_depth: TeacherDepth::Deep { ratio: 4 }, ..Default::default() },
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mmkd-teacher-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn pretrained_teacher_beats_the_majority_and_fusion_helps() {
    let dims = [("visual", 64, 5.0), ("text", 32, 4.0)];
    let (store, labels) = planted(300, 6, &dims, 11);
    let dev = Device::Cpu;
    let out = pretrain(&store, &labels, &config(), &dev).unwrap();
    let r = &out.report;
    eprintln!("report: {r:?}");
    assert_eq!((r.n_train, r.n_heldout, r.n_labels), (240, 60, 6));
    let keys: Vec<&str> = r.heldout_accuracy.keys().map(String::as_str).collect();
    assert_eq!(keys, ["fused", "text", "visual"]);
    let (v, t, f) = (r.heldout_accuracy["visual"], r.heldout_accuracy["text"], r.heldout_accuracy["fused"]);
    assert!(r.majority_rate < 0.35, "{r:?}");
    assert!(v > r.majority_rate + 0.25 && t > r.majority_rate + 0.25, "{r:?}");
    assert!(f >= v.max(t) - 0.05, "{r:?}");
    assert!(out.epoch_losses.last().unwrap() < &(0.9 * out.epoch_losses[0]), "{:?}", out.epoch_losses);

    // Same seed, same run, bit for bit.
    let again = pretrain(&store, &labels, &config(), &dev).unwrap();
    assert_eq!(again.epoch_losses, out.epoch_losses);
    assert_eq!(&again.report, r);

    // Save, load back as constants, same logits.
    let dir = temp_dir("ckpt");
    out.save(&dir).unwrap();
    for f in ["teacher.safetensors", "teacher.toml", "report.json"] {
        assert!(dir.join(f).is_file(), "{f}");
        assert!(!dir.join(format!("{f}.tmp")).exists());
    }
    let json: PretrainReport =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    // serde_json parses floats to within one ulp; compare the numbers loosely and the rest exactly.
    assert_eq!((json.n_train, json.n_heldout, json.n_labels), (r.n_train, r.n_heldout, r.n_labels));
    assert!((json.majority_rate - r.majority_rate).abs() < 1e-12);
    for (k, v) in &r.heldout_accuracy {
        assert!((json.heldout_accuracy[k] - v).abs() < 1e-12, "{k}");
    }
    let (loaded, ckpt) = load_teacher(&dir, &dev).unwrap();
    assert_eq!(ckpt, out.checkpoint);
    assert_eq!(ckpt.in_dims, vec![64, 32]);
    let trained = out.teacher(&dev).unwrap();
    let xs: Vec<Tensor> = ["visual", "text"].iter().map(|m| store.tensor(m, &dev).unwrap()).collect();
    let (a, b) = (trained.forward(&xs).unwrap(), loaded.forward(&xs).unwrap());
    for (za, zb) in a.logits.iter().zip(&b.logits) {
        assert_eq!(za.to_vec2::<f32>().unwrap(), zb.to_vec2::<f32>().unwrap());
    }
    assert_eq!(
        a.fused_logits.as_ref().unwrap().to_vec2::<f32>().unwrap(),
        b.fused_logits.as_ref().unwrap().to_vec2::<f32>().unwrap()
    );
    // The loaded teacher is made of constants: no gradient reaches it.
    let y = Tensor::from_slice(&labels.per_item, 300, &dev).unwrap();
    let loss = loaded.label_losses(&b, &y).unwrap().total().unwrap();
    assert!(!loss.track_op());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn one_modality_pretrains_without_fusion() {
    let (store, labels) = planted(200, 4, &[("visual", 32, 3.0)], 5);
    let cfg = PretrainConfig { epochs: 30, batch_size: 0, ..config() };
    let out = pretrain(&store, &labels, &cfg, &Device::Cpu).unwrap();
    let keys: Vec<&str> = out.report.heldout_accuracy.keys().map(String::as_str).collect();
    assert_eq!(keys, ["visual"]);
    assert!(out.report.heldout_accuracy["visual"] > out.report.majority_rate + 0.2, "{:?}", out.report);
    assert!(!out.varmap.data().lock().unwrap().keys().any(|k| k.starts_with("fusion")));
}

#[test]
fn bad_inputs_are_errors() {
    let (store, labels) = planted(50, 3, &[("visual", 8, 1.0)], 1);
    let short = Labels { per_item: labels.per_item[..10].to_vec(), ..labels.clone() };
    assert!(pretrain(&store, &short, &config(), &Device::Cpu).unwrap_err().to_string().contains("10 labels"));
    let bad = PretrainConfig { heldout_fraction: 1.0, ..config() };
    assert!(pretrain(&store, &labels, &bad, &Device::Cpu).is_err());
    assert!(load_teacher(Path::new("/nonexistent/teacher"), &Device::Cpu).is_err());
}
