#![allow(clippy::unwrap_used, clippy::expect_used)]
//! End-to-end: generate the `tiny` preset, write it in the SGFD layout, read it back through the real
//! loaders, hand the features to the vanilla extractor, and rank with the evaluator.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use mmkd_eval::{evaluate, EvalConfig};
use mmkd_features::{seeded_var_builder, FeatureExtractor, FeatureStore, Mode, Projection, ProjectionConfig};

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mmkd-e2e-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn generated_data_round_trips_through_loaders_extractor_and_evaluator() {
    let preset = mmkd_synth::Preset::by_name("tiny").unwrap();
    let generated = mmkd_synth::generate(&preset, 5).unwrap();
    let dir = temp_dir("tiny");
    generated.write_sgfd(&dir).unwrap();

    let ds = mmkd_data::load(&dir, &mmkd_data::LoadOptions::default()).unwrap();
    assert_eq!(ds.layout, mmkd_data::Layout::Sgfd);
    assert_eq!(ds.n_users, preset.n_users);
    assert_eq!(ds.n_items, preset.n_items);
    assert_eq!(ds.train.nnz(), generated.train.len());
    assert_eq!(ds.test.nnz(), generated.test.len());
    assert!(ds.findings.is_empty(), "{:?}", ds.findings);
    // Every pair the generator wrote is in the loaded graph, and the item→user view is its transpose.
    for &(u, i) in generated.train.iter().take(200) {
        assert!(ds.train.contains(u as usize, i));
        assert!(ds.train_by_item.contains(i as usize, u));
    }
    let labels = ds.labels.as_ref().unwrap();
    assert_eq!(labels.n_labels, preset.n_labels);
    for (i, &l) in generated.labels.iter().enumerate() {
        assert_eq!(labels.values[labels.per_item[i] as usize], l);
    }

    let features = FeatureStore::load(&ds.feature_files, Some(ds.n_items)).unwrap();
    assert_eq!(features.names(), vec!["visual", "text"]);
    assert_eq!(features.dims(), vec![preset.visual_dim, preset.text_dim]);
    assert_eq!(features.matrix("visual").unwrap().data(), generated.visual.as_slice());

    let dev = Device::Cpu;
    let vm = candle_nn::VarMap::new();
    let proj = Projection::new(
        seeded_var_builder(&vm, 0, DType::F32, &dev),
        &ProjectionConfig { out_dim: 16, ..Default::default() },
        &features,
        &dev,
    )
    .unwrap();
    let items = proj.extract(None, Mode::Eval).unwrap();
    assert_eq!(items.features[0].dims(), &[ds.n_items, 16]);

    // Popularity from the loaded train graph beats random scores on Recall@20.
    let cfg = EvalConfig::default();
    let degrees: Vec<f32> = ds.item_degrees().iter().map(|&d| d as f32).collect();
    let pop = Tensor::new(degrees.as_slice(), &dev).unwrap().unsqueeze(0).unwrap();
    let by_pop =
        evaluate(|users: &[u32]| pop.broadcast_as((users.len(), ds.n_items))?.contiguous(), &ds.train, &ds.test, &cfg)
            .unwrap();
    let noise: Vec<f32> = (0..ds.n_items).map(|i| ((i * 7919) % 1009) as f32).collect();
    let fixed = Tensor::new(noise.as_slice(), &dev).unwrap().unsqueeze(0).unwrap();
    let by_noise = evaluate(
        |users: &[u32]| fixed.broadcast_as((users.len(), ds.n_items))?.contiguous(),
        &ds.train,
        &ds.test,
        &cfg,
    )
    .unwrap();
    assert!(
        by_pop.summary["recall@20"] > 1.5 * by_noise.summary["recall@20"],
        "{:?} vs {:?}",
        by_pop.summary,
        by_noise.summary
    );
    assert_eq!(by_pop.users, ds.test_users());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn real_office_interactions_load_when_present() {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/office-interactions"));
    if !dir.exists() {
        eprintln!("skipping: {} not present", dir.display());
        return;
    }
    let ds = mmkd_data::load(&dir, &mmkd_data::LoadOptions::default()).unwrap();
    let s = ds.stats();
    assert_eq!((s.n_users, s.n_items, s.n_train, s.n_test), (4874, 2406, 37027, 15930));
    assert_eq!(ds.test_users().len(), 4512);
    // The full evaluator over the real graph: popularity ranks within the paper's ballpark, far above zero.
    let degrees: Vec<f32> = ds.item_degrees().iter().map(|&d| d as f32).collect();
    let pop = Tensor::new(degrees.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let r = evaluate(
        |u: &[u32]| pop.broadcast_as((u.len(), ds.n_items))?.contiguous(),
        &ds.train,
        &ds.test,
        &EvalConfig::default(),
    )
    .unwrap();
    assert!(r.summary["recall@20"] > 0.01 && r.summary["recall@20"] < 0.5, "{:?}", r.summary);
}
