//! The Sgfd extractor on tiny planted problems: what it hands a backbone, how its losses train (joint
//! mode), that a pretrained teacher stays frozen, the presets' extractors, and one modality.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions unwrap too.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};
use mmkd_data::Labels;
use mmkd_features::{seeded_var_builder, FeatureExtractor, FeatureMatrix, FeatureStore, Mode};
use mmkd_student_kd::{build_extractor, FdForm, Sgfd, SgfdConfig, SgfdPreset, TeacherMode};
use mmkd_teacher::{pretrain, PretrainConfig, TeacherDepth};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

/// Items with uniform labels; modality features = 1.5·(label centroid) + `noise`·N(0, 1) per entry.
fn planted(n_items: usize, n_labels: usize, dims: &[(&str, usize)], noise: f32, seed: u64) -> (FeatureStore, Labels) {
    let mut rng = mmkd_data::stream(seed, "labels");
    let raw: Vec<i64> = (0..n_items).map(|_| rng.random_range(0..n_labels as i64)).collect();
    let labels = Labels::from_values(&raw);
    let mut store = FeatureStore::new(n_items);
    for &(name, dim) in dims {
        let mut rng = mmkd_data::stream(seed, name);
        let mut normal = || -> f32 { StandardNormal.sample(&mut rng) };
        let centroids: Vec<Vec<f32>> = (0..n_labels).map(|_| (0..dim).map(|_| 1.5 * normal()).collect()).collect();
        let mut data = Vec::with_capacity(n_items * dim);
        for &y in &labels.per_item {
            for j in 0..dim {
                data.push(centroids[y as usize][j] + noise * normal());
            }
        }
        store.insert(name, FeatureMatrix::new(n_items, dim, data).unwrap(), Path::new(name)).unwrap();
    }
    (store, labels)
}

fn two_modalities() -> (FeatureStore, Labels) {
    planted(120, 4, &[("visual", 32), ("text", 16)], 2.0, 7)
}

fn small(cfg: SgfdConfig) -> SgfdConfig {
    SgfdConfig { out_dim: 8, t_decay: 2.0, ..cfg }
}

fn all_items(n: usize) -> Tensor {
    Tensor::arange(0u32, n as u32, &Device::Cpu).unwrap()
}

fn scalar(t: &Tensor) -> f64 {
    f64::from(t.to_dtype(DType::F32).unwrap().to_scalar::<f32>().unwrap())
}

fn sorted_vars(vm: &VarMap) -> Vec<(String, Var)> {
    let mut v: Vec<(String, Var)> = vm.data().lock().unwrap().clone().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// `steps` Adam steps (lr 1e-2, no weight decay) on the aux losses of `items`; the unweighted L_KD per step.
fn train(sgfd: &Sgfd, vm: &VarMap, items: &Tensor, steps: usize) -> Vec<f64> {
    let vars = sorted_vars(vm).into_iter().map(|(_, v)| v).collect();
    let mut opt = AdamW::new(vars, ParamsAdamW { lr: 1e-2, weight_decay: 0.0, ..Default::default() }).unwrap();
    let mut kd = Vec::with_capacity(steps);
    for _ in 0..steps {
        let out = sgfd.extract(Some(items), Mode::Train).unwrap();
        kd.push(sgfd.losses(items).unwrap().kd().unwrap().map_or(f64::NAN, |t| scalar(&t)));
        opt.backward_step(&out.aux_total().unwrap().unwrap()).unwrap();
    }
    kd
}

fn teacher_accuracy(sgfd: &Sgfd) -> Vec<f64> {
    let out = sgfd.teacher().unwrap().forward(sgfd.inputs()).unwrap();
    out.logits.iter().map(|z| mmkd_teacher::pretrain::accuracy(z, sgfd.labels()).unwrap()).collect()
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mmkd-sgfd-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn extract_hands_out_features_and_weighted_losses_only_for_given_training_rows() {
    let (store, labels) = two_modalities();
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let cfg = SgfdConfig { kd_weight: 0.5, ce_weight: 0.25, ..small(SgfdConfig::default()) };
    let sgfd = Sgfd::new(seeded_var_builder(&vm, 1, DType::F32, &dev), &cfg, &store, &labels, &dev).unwrap();
    assert_eq!(sgfd.modalities(), &["visual".to_string(), "text".to_string()]);
    assert_eq!(sgfd.out_dim(), 8);
    assert!(vm.data().lock().unwrap().keys().all(|k| k.starts_with("student.") || k.starts_with("teacher.")));
    assert!(vm.data().lock().unwrap().contains_key("teacher.fusion.transfer.weight"));

    let all = sgfd.extract(None, Mode::Train).unwrap();
    assert_eq!(all.features.len(), 2);
    assert_eq!(all.features[0].dims(), &[120, 8]);
    assert!(all.aux_losses.is_empty(), "no rows given: no aux losses");
    assert!(sgfd.extract(None, Mode::Eval).unwrap().aux_losses.is_empty());

    let rows = Tensor::new(&[3u32, 5, 5, 100, 0], &dev).unwrap();
    assert!(sgfd.extract(Some(&rows), Mode::Eval).unwrap().aux_losses.is_empty());
    let out = sgfd.extract(Some(&rows), Mode::Train).unwrap();
    // The batch features are the rows of the all-item features.
    // (Up to rounding: the matrix product of 5 rows and of 120 rows may sum in different orders.)
    let gap = (&out.features[1] - all.features[1].index_select(&rows, 0).unwrap()).unwrap().abs().unwrap();
    assert!(scalar(&gap.max_keepdim(1).unwrap().max(0).unwrap().squeeze(0).unwrap()) < 1e-6);
    let names: Vec<&str> = out.aux_losses.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["kd", "ce"]);
    let l = sgfd.losses(&rows).unwrap();
    assert!(l.ld.is_some() && l.fd.is_some() && l.tce.is_some() && l.fce.is_some());
    assert!((scalar(&out.aux_losses[0].1) - 0.5 * scalar(&l.kd().unwrap().unwrap())).abs() < 1e-7);
    assert!((scalar(&out.aux_losses[1].1) - 0.25 * scalar(&l.ce().unwrap().unwrap())).abs() < 1e-7);
    let aux = sgfd.aux_losses(&rows).unwrap();
    assert_eq!(scalar(&aux[0].1), scalar(&out.aux_losses[0].1));
    // From the features of every item, gathered instead of recomputed: the same losses.
    let given = sgfd.aux_losses_given(&rows, &all.features).unwrap();
    assert_eq!(given.len(), 2);
    for ((n1, a), (n2, b)) in given.iter().zip(&out.aux_losses) {
        assert_eq!(n1, n2);
        assert!((scalar(a) - scalar(b)).abs() < 1e-6, "{n1}: {} vs {}", scalar(a), scalar(b));
    }
    // SGFD's own error crosses the seam as the typed source of `Extractor`, not as a string.
    let err = sgfd.aux_losses_given(&rows, &all.features[..1]).unwrap_err();
    let source = match &err {
        mmkd_features::Error::Extractor(source) => source.downcast_ref::<mmkd_student_kd::Error>(),
        other => panic!("expected Error::Extractor, got {other:?}"),
    };
    assert!(matches!(source, Some(mmkd_student_kd::Error::Mismatch(m)) if m.contains("1 feature matrices")), "{err:?}");
    // A candle error passes through as the seam's own `Candle`.
    let out_of_range = Tensor::new(&[500u32], &dev).unwrap();
    assert!(matches!(sgfd.extract(Some(&out_of_range), Mode::Eval), Err(mmkd_features::Error::Candle(_))));

    // L_FD (mse_mean) recomputed by hand from both extractors: mean over modalities of mean (f_s − f_t)².
    let teacher = sgfd.teacher().unwrap();
    let mut want = 0.0;
    for m in 0..2 {
        let x = sgfd.inputs()[m].index_select(&rows, 0).unwrap();
        let ft = teacher.extract(m, &x).unwrap().to_vec2::<f32>().unwrap();
        let fs = out.features[m].to_vec2::<f32>().unwrap();
        let sq: f64 = ft.iter().flatten().zip(fs.iter().flatten()).map(|(a, b)| f64::from(a - b).powi(2)).sum();
        want += sq / 40.0 / 2.0;
    }
    assert!((scalar(l.fd.as_ref().unwrap()) - want).abs() < 1e-6, "{} vs {want}", scalar(l.fd.as_ref().unwrap()));
}

#[test]
fn joint_mode_teacher_learns_the_labels_and_kd_decreases() {
    let (store, labels) = two_modalities();
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let cfg = small(SgfdConfig::default());
    let sgfd = Sgfd::new(seeded_var_builder(&vm, 2, DType::F32, &dev), &cfg, &store, &labels, &dev).unwrap();
    let before = teacher_accuracy(&sgfd);
    let kd = train(&sgfd, &vm, &all_items(120), 150);
    let after = teacher_accuracy(&sgfd);
    eprintln!("teacher accuracy {before:?} → {after:?}; L_KD {} → {}", kd[0], kd[kd.len() - 1]);
    // Four balanced-ish classes: chance is about 0.25.
    assert!(after.iter().all(|&a| a > 0.6), "{after:?}");
    assert!(kd[kd.len() - 1] < 0.5 * kd[0], "{} → {}", kd[0], kd[kd.len() - 1]);
}

#[test]
fn kd_reaches_the_teacher_extractor_unless_detached() {
    let (store, labels) = two_modalities();
    let dev = Device::Cpu;
    let rows = all_items(40);
    for detach in [false, true] {
        let vm = VarMap::new();
        let cfg = SgfdConfig { detach_teacher_in_kd: detach, ..small(SgfdConfig::default()) };
        let sgfd = Sgfd::new(seeded_var_builder(&vm, 4, DType::F32, &dev), &cfg, &store, &labels, &dev).unwrap();
        let l = sgfd.losses(&rows).unwrap();
        let kd_grads = l.kd().unwrap().unwrap().backward().unwrap();
        let ce_grads = l.ce().unwrap().unwrap().backward().unwrap();
        for (name, var) in sorted_vars(&vm) {
            let has = |g: &candle_core::backprop::GradStore| g.get(var.as_tensor()).is_some();
            if name.starts_with("teacher.") && name.contains(".extractor.") {
                assert_eq!(has(&kd_grads), !detach, "{name}: L_KD gradient, detach = {detach}");
                assert!(has(&ce_grads), "{name}: L_CE always trains the teacher");
            }
            if name.starts_with("student.") {
                assert!(has(&kd_grads) && !has(&ce_grads), "{name}");
            }
            // C_m is shared: the student's probabilities reach it either way.
            if name.ends_with(".classifier.weight") && !name.contains("fusion") {
                assert!(has(&kd_grads), "{name}");
            }
        }
    }
}

#[test]
fn pretrained_teacher_stays_bit_identical_while_the_student_learns() {
    let (store, labels) = two_modalities();
    let dev = Device::Cpu;
    let pcfg = PretrainConfig {
        epochs: 20,
        lr: 1e-2,
        batch_size: 0,
        teacher: small(SgfdConfig::default()).teacher_config(),
        ..Default::default()
    };
    let dir = temp_dir("pretrained");
    pretrain(&store, &labels, &pcfg, &dev).unwrap().save(&dir).unwrap();

    let cfg = SgfdConfig {
        teacher_mode: TeacherMode::Pretrained,
        teacher_checkpoint: Some(dir.clone()),
        ..small(SgfdConfig::default())
    };
    let vm = VarMap::new();
    let sgfd = Sgfd::new(seeded_var_builder(&vm, 3, DType::F32, &dev), &cfg, &store, &labels, &dev).unwrap();
    assert!(sgfd.is_frozen());
    let keys: Vec<String> = sorted_vars(&vm).into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["student.text.bias", "student.text.weight", "student.visual.bias", "student.visual.weight"]);

    let snapshot = |s: &Sgfd| -> Vec<Vec<Vec<f32>>> {
        let out = s.teacher().unwrap().forward(s.inputs()).unwrap();
        out.features
            .iter()
            .chain(&out.logits)
            .chain(out.fused_logits.as_ref())
            .map(|t| t.to_vec2::<f32>().unwrap())
            .collect()
    };
    let teacher_before = snapshot(&sgfd);
    let student_before: Vec<Vec<f32>> =
        sorted_vars(&vm).iter().map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()).collect();
    let ce_before = scalar(&sgfd.losses(&all_items(120)).unwrap().ce().unwrap().unwrap());
    let kd = train(&sgfd, &vm, &all_items(120), 30);
    assert_eq!(snapshot(&sgfd), teacher_before, "the frozen teacher moved");
    let student_after: Vec<Vec<f32>> =
        sorted_vars(&vm).iter().map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()).collect();
    for (a, b) in student_before.iter().zip(&student_after) {
        assert_ne!(a, b, "a student parameter did not move");
    }
    // L_CE depends on the teacher alone: constant. L_KD falls as the student approaches the teacher.
    assert_eq!(scalar(&sgfd.losses(&all_items(120)).unwrap().ce().unwrap().unwrap()), ce_before);
    assert!(kd[kd.len() - 1] < kd[0], "{kd:?}");

    // A checkpoint whose modalities differ from the data is an error.
    let (one, one_labels) = planted(120, 4, &[("visual", 32)], 2.0, 7);
    assert!(Sgfd::new(seeded_var_builder(&VarMap::new(), 3, DType::F32, &dev), &cfg, &one, &one_labels, &dev).is_err());
    let no_ckpt = SgfdConfig { teacher_checkpoint: None, ..cfg };
    let err = Sgfd::new(seeded_var_builder(&VarMap::new(), 3, DType::F32, &dev), &no_ckpt, &store, &labels, &dev)
        .unwrap_err();
    assert!(err.to_string().contains("teacher_checkpoint"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn frozen_teacher_cache_and_joint_forward_give_the_same_losses_and_student_gradients() {
    // A frozen teacher's outputs are computed once for every item; a joint teacher runs once over a step's
    // distinct items. Both must equal the per-row losses of the same teacher, duplicates included.
    let (store, labels) = two_modalities();
    let dev = Device::Cpu;
    // The paper's L_TCE (plain cross-entropy on logits), so that the hand computation below is short.
    let cfg = SgfdConfig { tce_on_probs: false, ..small(SgfdConfig::default()) };
    let (vm_joint, vm_frozen) = (VarMap::new(), VarMap::new());
    let joint = Sgfd::new(seeded_var_builder(&vm_joint, 5, DType::F32, &dev), &cfg, &store, &labels, &dev).unwrap();
    let frozen = Sgfd::with_frozen_teacher(
        seeded_var_builder(&vm_frozen, 5, DType::F32, &dev),
        &cfg,
        &store,
        &labels,
        joint.teacher().unwrap(),
        &dev,
    )
    .unwrap();
    let rows = Tensor::new(&[7u32, 7, 7, 1, 119, 1, 60], &dev).unwrap();
    let (a, b) = (joint.losses(&rows).unwrap(), frozen.losses(&rows).unwrap());
    for (x, y) in [(&a.ld, &b.ld), (&a.fd, &b.fd), (&a.tce, &b.tce), (&a.fce, &b.fce)] {
        let (x, y) = (scalar(x.as_ref().unwrap()), scalar(y.as_ref().unwrap()));
        assert!((x - y).abs() < 1e-6 * x.abs().max(1.0), "{x} vs {y}");
    }
    // L_TCE by hand from the teacher on the rows as given: mean over modalities of mean CE.
    let teacher = joint.teacher().unwrap();
    let y = labels.per_item.clone();
    let ids = rows.to_vec1::<u32>().unwrap();
    let mut want = 0.0;
    for m in 0..2 {
        let z = teacher
            .classifier(m)
            .unwrap()
            .logits(&teacher.extract(m, joint.inputs()[m].index_select(&rows, 0).as_ref().unwrap()).unwrap())
            .unwrap();
        for (r, z) in z.to_vec2::<f32>().unwrap().iter().enumerate() {
            let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let lse = f64::from(max) + z.iter().map(|v| f64::from(v - max).exp()).sum::<f64>().ln();
            want += (lse - f64::from(z[y[ids[r] as usize] as usize])) / ids.len() as f64 / 2.0;
        }
    }
    assert!((scalar(a.tce.as_ref().unwrap()) - want).abs() < 1e-5, "{} vs {want}", scalar(a.tce.as_ref().unwrap()));
    // The student's gradients from L_KD agree.
    let grads_joint = a.kd().unwrap().unwrap().backward().unwrap();
    let grads_frozen = b.kd().unwrap().unwrap().backward().unwrap();
    let student = |vm: &VarMap| -> Vec<(String, Var)> {
        sorted_vars(vm).into_iter().filter(|(k, _)| k.starts_with("student.")).collect()
    };
    for ((kj, vj), (kf, vf)) in student(&vm_joint).iter().zip(student(&vm_frozen).iter()) {
        assert_eq!(kj, kf);
        let gj = grads_joint.get(vj.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let gf = grads_frozen.get(vf.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let gap = gj.iter().zip(&gf).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        let scale = gj.iter().map(|x| x.abs()).fold(0.0f32, f32::max);
        assert!(gap <= 1e-5 * scale.max(1.0), "{kj}: gradient gap {gap}");
    }
}

#[test]
fn one_modality_works_without_fusion() {
    let (store, labels) = planted(80, 3, &[("visual", 24)], 2.0, 9);
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let sgfd = Sgfd::new(
        seeded_var_builder(&vm, 5, DType::F32, &dev),
        &small(SgfdPreset::Sgfd.config()),
        &store,
        &labels,
        &dev,
    )
    .unwrap();
    assert!(!sgfd.teacher().unwrap().has_fusion());
    assert!(!vm.data().lock().unwrap().keys().any(|k| k.contains("fusion")));
    let rows = all_items(80);
    let l = sgfd.losses(&rows).unwrap();
    assert!(l.fce.is_none() && l.tce.is_some() && l.ld.is_some() && l.fd.is_some());
    let out = sgfd.extract(Some(&rows), Mode::Train).unwrap();
    assert_eq!(out.features.len(), 1);
    let kd = train(&sgfd, &vm, &rows, 60);
    assert!(kd[59] < kd[0]);
}

#[test]
fn last_modality_only_ld_is_the_text_term() {
    // Parameters are drawn per name, so the text-only extractor has the two-modality one's text parameters.
    let (store, labels) = two_modalities();
    let (text_store, _) = planted(120, 4, &[("text", 16)], 2.0, 7);
    let dev = Device::Cpu;
    let cfg = SgfdConfig { use_fd: false, use_fusion: false, ..small(SgfdConfig::default()) };
    let bugged = SgfdConfig { ld_last_modality_only: true, ..cfg.clone() };
    let rows = all_items(50);
    let ld_of = |c: &SgfdConfig, s: &FeatureStore| {
        let sgfd = Sgfd::new(seeded_var_builder(&VarMap::new(), 6, DType::F32, &dev), c, s, &labels, &dev).unwrap();
        scalar(sgfd.losses(&rows).unwrap().ld.as_ref().unwrap())
    };
    let (both, last, text) = (ld_of(&cfg, &store), ld_of(&bugged, &store), ld_of(&cfg, &text_store));
    assert_eq!(last, text);
    assert_ne!(both, last);
}

#[test]
fn fig3_extractors_and_the_vanilla_projection() {
    let (store, labels) = two_modalities();
    let dev = Device::Cpu;
    let rows = Tensor::new(&[1u32, 2, 3], &dev).unwrap();

    // vanilla_deep: the deep teacher feeds the backbone, trained by L_REC only: no aux loss, no student.
    let vm = VarMap::new();
    let deep = Sgfd::new(
        seeded_var_builder(&vm, 1, DType::F32, &dev),
        &small(SgfdPreset::VanillaDeep.config()),
        &store,
        &labels,
        &dev,
    )
    .unwrap();
    assert!(vm.data().lock().unwrap().keys().all(|k| k.starts_with("teacher.") && !k.contains("fusion")));
    let out = deep.extract(Some(&rows), Mode::Train).unwrap();
    assert!(out.aux_losses.is_empty());
    let x = deep.inputs()[0].index_select(&rows, 0).unwrap();
    let ft = deep.teacher().unwrap().extract(0, &x).unwrap();
    assert_eq!(out.features[0].to_vec2::<f32>().unwrap(), ft.to_vec2::<f32>().unwrap());
    assert_eq!(deep.teacher().unwrap().extractor(0).unwrap().widths(), &[32, 8]);
    // The features carry gradient into the teacher (L_REC trains it).
    let g = out.features[0].sum_all().unwrap().backward().unwrap();
    assert!(vm.all_vars().iter().any(|v| g.get(v.as_tensor()).is_some()));

    // teacher_deep_labels: the teacher with labels and fusion; only the "ce" term.
    let cfg =
        SgfdConfig { teacher_depth: TeacherDepth::Deep { ratio: 2 }, ..small(SgfdPreset::TeacherDeepLabels.config()) };
    let tdl = Sgfd::new(seeded_var_builder(&VarMap::new(), 1, DType::F32, &dev), &cfg, &store, &labels, &dev).unwrap();
    let out = tdl.extract(Some(&rows), Mode::Train).unwrap();
    assert_eq!(out.aux_losses.iter().map(|(n, _)| *n).collect::<Vec<_>>(), ["ce"]);
    assert!(tdl.losses(&rows).unwrap().fce.is_some());
    assert_eq!(tdl.teacher().unwrap().extractor(0).unwrap().widths(), &[32, 16, 8]);

    // teacher_shallow_labels: one layer, L_TCE only.
    let tsl = Sgfd::new(
        seeded_var_builder(&VarMap::new(), 1, DType::F32, &dev),
        &small(SgfdPreset::TeacherShallowLabels.config()),
        &store,
        &labels,
        &dev,
    )
    .unwrap();
    let l = tsl.losses(&rows).unwrap();
    assert!(l.tce.is_some() && l.fce.is_none() && l.kd().unwrap().is_none());
    assert_eq!(tsl.teacher().unwrap().extractor(1).unwrap().widths(), &[16, 8]);

    // vanilla_shallow: the Projection of the features crate, not an Sgfd.
    let vm = VarMap::new();
    let cfg = small(SgfdPreset::VanillaShallow.config());
    let vanilla = build_extractor(seeded_var_builder(&vm, 1, DType::F32, &dev), &cfg, &store, &labels, &dev).unwrap();
    assert!(vanilla.extract(Some(&rows), Mode::Train).unwrap().aux_losses.is_empty());
    let mut keys: Vec<String> = vm.data().lock().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["text.bias", "text.weight", "visual.bias", "visual.weight"]);
    assert!(Sgfd::new(seeded_var_builder(&VarMap::new(), 1, DType::F32, &dev), &cfg, &store, &labels, &dev).is_err());
    // build_extractor gives an Sgfd for the other presets.
    let boxed = build_extractor(
        seeded_var_builder(&VarMap::new(), 1, DType::F32, &dev),
        &small(SgfdPreset::SgfdE.config()),
        &store,
        &labels,
        &dev,
    )
    .unwrap();
    assert_eq!(boxed.extract(Some(&rows), Mode::Train).unwrap().aux_losses.len(), 2);
}

#[test]
fn ablation_presets_change_the_loss_terms() {
    let (store, labels) = two_modalities();
    let dev = Device::Cpu;
    let rows = all_items(30);
    let terms = |p: SgfdPreset| {
        let cfg = small(p.config());
        let s =
            Sgfd::new(seeded_var_builder(&VarMap::new(), 1, DType::F32, &dev), &cfg, &store, &labels, &dev).unwrap();
        let l = s.losses(&rows).unwrap();
        (l.ld.is_some(), l.fd.is_some(), l.tce.is_some(), l.fce.is_some())
    };
    assert_eq!(terms(SgfdPreset::Sgfd), (true, true, true, true));
    assert_eq!(terms(SgfdPreset::SgfdL), (true, false, true, true));
    assert_eq!(terms(SgfdPreset::SgfdF), (false, true, true, true));
    assert_eq!(terms(SgfdPreset::SgfdE), (true, true, true, false));
    assert_eq!(terms(SgfdPreset::SgfdS), (true, true, true, true));
    // The paper's forms sum over modalities where the reference averages.
    let fd_of = |form: FdForm| {
        let cfg = SgfdConfig { fd_form: form, ..small(SgfdConfig::default()) };
        let s =
            Sgfd::new(seeded_var_builder(&VarMap::new(), 1, DType::F32, &dev), &cfg, &store, &labels, &dev).unwrap();
        scalar(s.losses(&rows).unwrap().fd.as_ref().unwrap())
    };
    // sq_l2_sum = Σ_m mean_rows Σ_d = 2 · d · (mean over modalities of mse_mean) with d = 8.
    assert!((fd_of(FdForm::SqL2Sum) - 16.0 * fd_of(FdForm::MseMean)).abs() < 1e-5);
}

#[test]
fn same_seed_same_losses() {
    let (store, labels) = two_modalities();
    let dev = Device::Cpu;
    let run = || {
        let vm = VarMap::new();
        let s = Sgfd::new(
            seeded_var_builder(&vm, 8, DType::F32, &dev),
            &small(SgfdConfig::default()),
            &store,
            &labels,
            &dev,
        )
        .unwrap();
        train(&s, &vm, &all_items(60), 3)
    };
    assert_eq!(run(), run());
}
