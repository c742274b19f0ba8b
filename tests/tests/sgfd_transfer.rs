//! Knowledge actually transfers — the quantitative form of the paper's Fig. 4. On a generated `tiny`-shaped
//! set, a teacher pretrained on the labels of 80% of the items classifies the held-out 20% far above the
//! majority rate; a student trained by distillation alone (frozen teacher, no recommendation loss) reaches
//! the teacher's held-out accuracy through the shared classifier C_m(S_m(x)) while the same student at its
//! random initialisation does not; and the student's features cluster by label (nearest-centroid accuracy,
//! centroids fitted on the training items) after distillation, not before.
//!
//! The checkpoint round trip (pretrain → save → `load_teacher` → identical logits) is covered by
//! `crates/teacher/tests/pretrain.rs`; here the teacher goes through a checkpoint into `Sgfd`'s `pretrained`
//! mode and must give the held-out accuracies its pretraining report states.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions unwrap too.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};
use mmkd_data::Labels;
use mmkd_features::{seeded_var_builder, FeatureExtractor, FeatureMatrix, FeatureStore, Mode};
use mmkd_student_kd::{Sgfd, SgfdConfig, TeacherMode};
use mmkd_teacher::pretrain::{accuracy, split, FUSED};
use mmkd_teacher::{pretrain, PretrainConfig, TeacherConfig};

const SEED: u64 = 1;
/// Latent width d of teacher and student (the reference's 128 is not needed for 8 labels).
const OUT_DIM: usize = 32;
/// Adam steps of distillation, full batch over the training items.
const KD_STEPS: usize = 100;

/// The `tiny` preset (8 labels, D_v = 256, D_t = 64, nuisance scale 2.0) with 1000 items instead of 300,
/// so that the 20% held out are 200 items (an accuracy's standard error ≈ 0.035 instead of ≈ 0.06).
/// Interactions are raised above the generator's 5-core floor (5 × n_items) and users a little with them;
/// this test reads only the items' labels and features.
fn preset() -> mmkd_synth::Preset {
    let tiny = mmkd_synth::Preset::by_name("tiny").unwrap();
    mmkd_synth::Preset { name: "tiny-1000-items".into(), n_items: 1000, n_users: 300, n_interactions: 6000, ..tiny }
}

/// The generated features as a store (`visual`, `text`) and the labels as classes.
fn generated(seed: u64) -> (FeatureStore, Labels) {
    let p = preset();
    let g = mmkd_synth::generate(&p, seed).unwrap();
    let mut store = FeatureStore::new(p.n_items);
    let visual = FeatureMatrix::new(p.n_items, p.visual_dim, g.visual).unwrap();
    store.insert("visual", visual, Path::new("generated/visual")).unwrap();
    let text = FeatureMatrix::new(p.n_items, p.text_dim, g.text).unwrap();
    store.insert("text", text, Path::new("generated/text")).unwrap();
    (store, Labels::from_values(&g.labels))
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mmkd-transfer-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Share of `test` rows `(b, k)` whose nearest (Euclidean) class centroid, fitted on the `train` rows, is
/// their label. Classes absent from `train` get no centroid.
fn nearest_centroid_accuracy(train: &Tensor, y_train: &[u32], test: &Tensor, y_test: &[u32], n_labels: usize) -> f64 {
    let (train, test) = (train.to_vec2::<f32>().unwrap(), test.to_vec2::<f32>().unwrap());
    let k = train[0].len();
    let mut sums = vec![vec![0f64; k]; n_labels];
    let mut counts = vec![0usize; n_labels];
    for (row, &y) in train.iter().zip(y_train) {
        counts[y as usize] += 1;
        for (s, v) in sums[y as usize].iter_mut().zip(row) {
            *s += f64::from(*v);
        }
    }
    let centroids: Vec<(u32, Vec<f64>)> = (0..n_labels)
        .filter(|&c| counts[c] > 0)
        .map(|c| (c as u32, sums[c].iter().map(|s| s / counts[c] as f64).collect()))
        .collect();
    let hits = test
        .iter()
        .zip(y_test)
        .filter(|(row, &y)| {
            let dist = |m: &[f64]| m.iter().zip(row.iter()).map(|(a, b)| (a - f64::from(*b)).powi(2)).sum::<f64>();
            let nearest = centroids.iter().min_by(|a, b| dist(&a.1).total_cmp(&dist(&b.1))).unwrap();
            nearest.0 == y
        })
        .count();
    hits as f64 / y_test.len() as f64
}

/// What is measured of a student on the held-out items.
#[derive(Debug)]
struct StudentEval {
    /// Accuracy of C_m(S_m(x)) per modality (`visual`, `text`).
    accuracy: Vec<f64>,
    /// Nearest-centroid accuracy of `[S_v(x) ; S_t(x)]`.
    nearest_centroid: f64,
}

struct Split {
    train: Tensor,
    heldout: Tensor,
    y_train: Vec<u32>,
    y_heldout: Vec<u32>,
    n_labels: usize,
}

impl Split {
    fn new(labels: &Labels, n_items: usize, heldout_fraction: f64, seed: u64, dev: &Device) -> Self {
        // The split `pretrain` makes, so the teacher never saw the held-out labels.
        let (train, heldout) = split(n_items, heldout_fraction, seed).unwrap();
        let classes = |rows: &[u32]| rows.iter().map(|&i| labels.per_item[i as usize]).collect::<Vec<u32>>();
        Self {
            y_train: classes(&train),
            y_heldout: classes(&heldout),
            train: Tensor::from_slice(&train, train.len(), dev).unwrap(),
            heldout: Tensor::from_slice(&heldout, heldout.len(), dev).unwrap(),
            n_labels: labels.n_labels,
        }
    }

    fn nearest_centroid(&self, train: &Tensor, heldout: &Tensor) -> f64 {
        nearest_centroid_accuracy(train, &self.y_train, heldout, &self.y_heldout, self.n_labels)
    }
}

fn evaluate_student(sgfd: &Sgfd, s: &Split) -> StudentEval {
    let teacher = sgfd.teacher().unwrap();
    let y = Tensor::from_slice(&s.y_heldout, s.y_heldout.len(), s.heldout.device()).unwrap();
    let heldout = sgfd.extract(Some(&s.heldout), Mode::Eval).unwrap().features; // (b, d) per modality
    let train = sgfd.extract(Some(&s.train), Mode::Eval).unwrap().features;
    let accuracy = heldout
        .iter()
        .enumerate()
        .map(|(m, f)| accuracy(&teacher.classifier(m).unwrap().logits(f).unwrap(), &y).unwrap())
        .collect();
    let nearest_centroid = s.nearest_centroid(&Tensor::cat(&train, 1).unwrap(), &Tensor::cat(&heldout, 1).unwrap());
    StudentEval { accuracy, nearest_centroid }
}

/// Measured with this file's settings on the 200 held-out items (8 labels, chance 0.125; v = visual,
/// t = text; NC = nearest-centroid accuracy of the concatenated features), seed by seed:
///
/// | seed | majority | teacher v / t / fused | KD student v / t | random v / t | NC raw v / t | NC before → after (teacher) |
/// |---|---|---|---|---|---|---|
/// | 1 | 0.365 | 0.750 / 0.580 / 0.865 | 0.745 / 0.570 | 0.185 / 0.245 | 0.515 / 0.405 | 0.335 → 0.880 (0.880) |
/// | 2 | 0.385 | 0.750 / 0.645 / 0.885 | 0.760 / 0.645 | 0.170 / 0.175 | 0.550 / 0.425 | 0.280 → 0.905 (0.900) |
/// | 3 | 0.385 | 0.775 / 0.690 / 0.895 | 0.795 / 0.690 | 0.340 / 0.175 | 0.580 / 0.350 | 0.345 → 0.895 (0.885) |
/// | 4 | 0.355 | 0.800 / 0.575 / 0.870 | 0.805 / 0.575 | 0.185 / 0.150 | 0.545 / 0.365 | 0.355 → 0.900 (0.890) |
/// | 5 | 0.355 | 0.840 / 0.680 / 0.905 | 0.835 / 0.675 | 0.305 / 0.225 | 0.530 / 0.440 | 0.385 → 0.915 (0.915) |
/// | 6 | 0.370 | 0.695 / 0.595 / 0.790 | 0.685 / 0.595 | 0.145 / 0.205 | 0.340 / 0.385 | 0.330 → 0.780 (0.780) |
/// | 7 | 0.370 | 0.755 / 0.570 / 0.850 | 0.760 / 0.580 | 0.220 / 0.265 | 0.460 / 0.395 | 0.260 → 0.850 (0.840) |
/// | 8 | 0.365 | 0.755 / 0.630 / 0.800 | 0.770 / 0.630 | 0.150 / 0.235 | 0.505 / 0.345 | 0.300 → 0.850 (0.845) |
/// | 9 | 0.385 | 0.720 / 0.610 / 0.825 | 0.735 / 0.605 | 0.140 / 0.205 | 0.430 / 0.330 | 0.295 → 0.870 (0.835) |
/// | 10 | 0.370 | 0.735 / 0.625 / 0.840 | 0.740 / 0.620 | 0.150 / 0.220 | 0.460 / 0.375 | 0.320 → 0.835 (0.835) |
/// | 11 | 0.330 | 0.705 / 0.615 / 0.825 | 0.705 / 0.610 | 0.150 / 0.200 | 0.545 / 0.350 | 0.325 → 0.835 (0.850) |
/// | 12 | 0.390 | 0.825 / 0.650 / 0.845 | 0.820 / 0.650 | 0.195 / 0.210 | 0.550 / 0.345 | 0.340 → 0.875 (0.855) |
///
/// L_KD falls from ≈0.065 to ≈0.0003 in the 100 steps. The student matches the teacher this closely
/// (KD student / teacher ≥ 0.98 per modality) because the reference teacher in its GRCN setting (no
/// activation) is a product of affine maps followed by an L2 normalisation, which the student's one Linear
/// layer and L2 normalisation represent exactly. The margins asserted below hold for every seed of the table with
/// room to spare; the test runs seed 1 (≈4 s).
#[test]
fn kd_alone_transfers_the_teachers_label_knowledge_to_the_student() {
    let dev = Device::Cpu;
    let (store, labels) = generated(SEED);
    let n_items = store.n_items();

    // 1. Teacher pretrained on the labels of the training items (reference loss forms, full batch).
    let pcfg = PretrainConfig {
        seed: SEED,
        epochs: 100,
        lr: 1e-2,
        batch_size: 0,
        heldout_fraction: 0.2,
        teacher: TeacherConfig { out_dim: OUT_DIM, ..Default::default() },
    };
    let outcome = pretrain(&store, &labels, &pcfg, &dev).unwrap();
    let report = outcome.report.clone();
    let dir = temp_dir("teacher");
    outcome.save(&dir).unwrap();
    let s = Split::new(&labels, n_items, pcfg.heldout_fraction, SEED, &dev);
    assert_eq!((s.y_train.len(), s.y_heldout.len()), (report.n_train, report.n_heldout));

    // 2. The student around the frozen checkpoint, at its random initialisation.
    let cfg = SgfdConfig {
        out_dim: OUT_DIM,
        teacher_mode: TeacherMode::Pretrained,
        teacher_checkpoint: Some(dir.clone()),
        ..Default::default()
    };
    let vm = VarMap::new();
    let sgfd = Sgfd::new(seeded_var_builder(&vm, SEED, DType::F32, &dev), &cfg, &store, &labels, &dev).unwrap();
    let mut vars: Vec<(String, Var)> = vm.data().lock().unwrap().clone().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(vars.iter().all(|(k, _)| k.starts_with("student.")), "only the student trains");

    // The loaded teacher's held-out accuracies are the ones its pretraining reported.
    let teacher = sgfd.teacher().unwrap();
    let xs: Vec<Tensor> = sgfd.inputs().iter().map(|x| x.index_select(&s.heldout, 0).unwrap()).collect();
    let y = Tensor::from_slice(&s.y_heldout, s.y_heldout.len(), &dev).unwrap();
    let out = teacher.forward(&xs).unwrap();
    let teacher_acc: Vec<f64> = out.logits.iter().map(|z| accuracy(z, &y).unwrap()).collect();
    let fused_acc = accuracy(out.fused_logits.as_ref().unwrap(), &y).unwrap();
    assert_eq!(teacher_acc, [report.heldout_accuracy["visual"], report.heldout_accuracy["text"]]);
    assert_eq!(fused_acc, report.heldout_accuracy[FUSED]);
    let xs_train: Vec<Tensor> = sgfd.inputs().iter().map(|x| x.index_select(&s.train, 0).unwrap()).collect();
    let nc_teacher = s.nearest_centroid(
        &Tensor::cat(&teacher.forward(&xs_train).unwrap().features, 1).unwrap(),
        &Tensor::cat(&out.features, 1).unwrap(),
    );
    let nc_raw: Vec<f64> = xs_train.iter().zip(&xs).map(|(tr, he)| s.nearest_centroid(tr, he)).collect();
    let random = evaluate_student(&sgfd, &s);

    // 3. Distillation alone: the step's auxiliary losses λ1·L_KD + λ2·L_CE on the training items, where
    // L_CE depends only on the frozen teacher (a constant); no recommendation loss.
    let mut opt = AdamW::new(
        vars.into_iter().map(|(_, v)| v).collect(),
        ParamsAdamW { lr: 1e-2, weight_decay: 0.0, ..Default::default() },
    )
    .unwrap();
    let kd_of = || sgfd.losses(&s.train).unwrap().kd().unwrap().unwrap().to_scalar::<f32>().unwrap();
    let kd_first = kd_of();
    for _ in 0..KD_STEPS {
        let aux = sgfd.extract(Some(&s.train), Mode::Train).unwrap();
        opt.backward_step(&aux.aux_total().unwrap().unwrap()).unwrap();
    }
    let kd_last = kd_of();
    let kd = evaluate_student(&sgfd, &s);

    let majority = report.majority_rate;
    eprintln!(
        "held-out ({} items, {} labels, chance {:.3}, majority {majority:.3}):\n  \
         teacher v/t/fused {:.3}/{:.3}/{:.3}\n  \
         KD student v/t {:.3}/{:.3}   random student v/t {:.3}/{:.3}\n  \
         nearest centroid: raw v/t {:.3}/{:.3}, student before {:.3} → after {:.3}, teacher {nc_teacher:.3}\n  \
         L_KD {kd_first:.5} → {kd_last:.5} in {KD_STEPS} steps",
        s.y_heldout.len(),
        s.n_labels,
        1.0 / s.n_labels as f64,
        teacher_acc[0],
        teacher_acc[1],
        fused_acc,
        kd.accuracy[0],
        kd.accuracy[1],
        random.accuracy[0],
        random.accuracy[1],
        nc_raw[0],
        nc_raw[1],
        random.nearest_centroid,
        kd.nearest_centroid,
    );

    // The teacher is far above the majority rate (chance is 1/8), the fused classifier more so.
    assert!(majority < 0.45, "majority {majority}");
    for (m, &a) in teacher_acc.iter().enumerate() {
        assert!(a > majority + 0.15, "teacher modality {m}: {a} vs majority {majority}");
    }
    assert!(fused_acc > majority + 0.35, "fused {fused_acc} vs majority {majority}");
    assert!(kd_last < 0.1 * kd_first, "L_KD {kd_first} → {kd_last}");
    for m in 0..2 {
        let (t, k, r) = (teacher_acc[m], kd.accuracy[m], random.accuracy[m]);
        // KD alone reaches most of the teacher's accuracy through the shared classifier …
        assert!(k >= 0.9 * t, "modality {m}: KD student {k} vs teacher {t}");
        // … which the random student does not: it is no better than predicting the majority class.
        assert!(r < 0.6 * t && r < majority + 0.05, "modality {m}: random student {r} vs teacher {t}");
    }
    // The student's features cluster by label after distillation: far better than before, and better than
    // the raw generic features, whose label signal is drowned by the nuisance directions.
    assert!(kd.nearest_centroid > random.nearest_centroid + 0.3, "{random:?} → {kd:?}");
    let best_raw = nc_raw.iter().copied().fold(0.0, f64::max);
    assert!(kd.nearest_centroid > best_raw + 0.15, "{kd:?} vs raw {nc_raw:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
