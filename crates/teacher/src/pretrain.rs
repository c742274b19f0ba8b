//! Teacher pretraining on the labels alone (the paper's "separately trained" teacher; the reference code
//! has no such stage): items are split 80/20 with a seeded stream, the teachers and the fusion classifier
//! are trained by L_TCE + L_FCE with Adam, and the held-out label accuracy of every classifier is reported
//! next to the majority-class rate. The checkpoint is `teacher.safetensors` + `teacher.toml` + `report.json`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use mmkd_data::Labels;
use mmkd_features::{seeded_var_builder, write_atomically, FeatureStore};
use mmkd_nn::optim::{sorted_vars, AdamConfig, AdamW};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::config::TeacherConfig;
use crate::error::{Error, Result};
use crate::model::Teacher;

/// File name of the teacher's weights in a checkpoint folder.
pub const WEIGHTS_FILE: &str = "teacher.safetensors";
/// File name of the teacher's [`TeacherCheckpoint`] (TOML) in a checkpoint folder.
pub const CONFIG_FILE: &str = "teacher.toml";
/// File name of the [`PretrainReport`] (JSON) in a checkpoint folder.
pub const REPORT_FILE: &str = "report.json";
/// Key under which the fused classifier's accuracy is reported.
pub const FUSED: &str = "fused";

/// Settings of the pretraining job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PretrainConfig {
    /// Run seed; parameters, the split (`teacher-split`) and the batch order (`teacher-batches`) each draw
    /// from their own stream.
    pub seed: u64,
    /// Number of passes over the training items.
    pub epochs: usize,
    /// Adam learning rate (weight decay 0).
    pub lr: f64,
    /// Items per step; 0 = full batch.
    pub batch_size: usize,
    /// Share of items held out for the label accuracy (0.2 = an 80/20 split).
    pub heldout_fraction: f64,
    /// Architecture and label-loss form of the teacher.
    pub teacher: TeacherConfig,
}

impl Default for PretrainConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            epochs: 100,
            lr: 1e-3,
            batch_size: 256,
            heldout_fraction: 0.2,
            teacher: TeacherConfig::default(),
        }
    }
}

impl PretrainConfig {
    /// Checks values that serde cannot.
    pub fn validate(&self) -> Result<()> {
        self.teacher.validate()?;
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::Config(format!("lr must be positive, got {}", self.lr)));
        }
        if !(self.heldout_fraction > 0.0 && self.heldout_fraction < 1.0) {
            return Err(Error::Config(format!("heldout_fraction must lie in (0, 1), got {}", self.heldout_fraction)));
        }
        Ok(())
    }
}

/// What `teacher.toml` holds: enough to rebuild the [`Teacher`] the weights belong to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeacherCheckpoint {
    /// Modality names, in the teacher's order.
    pub modalities: Vec<String>,
    /// Generic feature width D_m of each modality.
    pub in_dims: Vec<usize>,
    /// Number of label classes C.
    pub n_labels: usize,
    /// The configuration the teacher was pretrained with.
    pub pretrain: PretrainConfig,
}

/// Held-out and training label accuracy of the pretrained teacher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PretrainReport {
    /// Accuracy of each modality's C_m(T_m(·)) (keyed by modality name) and of the fusion classifier
    /// (key `fused`, when present) on the held-out items.
    pub heldout_accuracy: BTreeMap<String, f64>,
    /// The same on the training items.
    pub train_accuracy: BTreeMap<String, f64>,
    /// Accuracy on the held-out items of always predicting the most frequent training label.
    pub majority_rate: f64,
    /// Number of training items.
    pub n_train: usize,
    /// Number of held-out items.
    pub n_heldout: usize,
    /// Number of label classes C.
    pub n_labels: usize,
    /// Mean training loss L_TCE + L_FCE of the last epoch.
    pub final_loss: f64,
}

/// The trained teacher, its losses and its report.
pub struct PretrainOutcome {
    /// Every teacher parameter, keyed as [`Teacher`] documents.
    pub varmap: VarMap,
    /// What `teacher.toml` will hold.
    pub checkpoint: TeacherCheckpoint,
    /// Mean training loss of each epoch.
    pub epoch_losses: Vec<f64>,
    /// Held-out accuracies.
    pub report: PretrainReport,
}

impl std::fmt::Debug for PretrainOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PretrainOutcome")
            .field("n_vars", &self.varmap.all_vars().len())
            .field("checkpoint", &self.checkpoint)
            .field("epoch_losses", &self.epoch_losses)
            .field("report", &self.report)
            .finish()
    }
}

impl PretrainOutcome {
    /// The trained teacher, built over the outcome's variables.
    pub fn teacher(&self, device: &Device) -> Result<Teacher> {
        let vb = VarBuilder::from_varmap(&self.varmap, DType::F32, device);
        build(vb, &self.checkpoint)
    }

    /// Writes `teacher.safetensors`, `teacher.toml` and `report.json` into `dir` (created if missing), each
    /// through a `.tmp` file renamed into place.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_owned(), source })?;
        let weights = dir.join(WEIGHTS_FILE);
        let tmp = dir.join(format!("{WEIGHTS_FILE}.tmp"));
        self.varmap.save(&tmp)?;
        std::fs::rename(&tmp, &weights).map_err(|source| Error::Io { path: weights.clone(), source })?;
        let toml = toml::to_string(&self.checkpoint)
            .map_err(|e| Error::Parse { path: dir.join(CONFIG_FILE), message: e.to_string() })?;
        write_atomically(&dir.join(CONFIG_FILE), |w| std::io::Write::write_all(w, toml.as_bytes()))?;
        let json = serde_json::to_string_pretty(&self.report)
            .map_err(|e| Error::Parse { path: dir.join(REPORT_FILE), message: e.to_string() })?;
        write_atomically(&dir.join(REPORT_FILE), |w| std::io::Write::write_all(w, json.as_bytes()))?;
        tracing::info!(dir = %dir.display(), "saved teacher checkpoint");
        Ok(())
    }
}

fn build(vb: VarBuilder, ckpt: &TeacherCheckpoint) -> Result<Teacher> {
    Teacher::new(vb, &ckpt.pretrain.teacher, &ckpt.modalities, &ckpt.in_dims, ckpt.n_labels)
}

/// Loads a checkpoint folder written by [`PretrainOutcome::save`]. The teacher's parameters are plain
/// tensors on `device`, not variables: nothing can train them.
pub fn load_teacher(dir: &Path, device: &Device) -> Result<(Teacher, TeacherCheckpoint)> {
    let cfg_path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&cfg_path).map_err(|source| Error::Io { path: cfg_path.clone(), source })?;
    let ckpt: TeacherCheckpoint =
        toml::from_str(&text).map_err(|e| Error::Parse { path: cfg_path.clone(), message: e.to_string() })?;
    let weights: PathBuf = dir.join(WEIGHTS_FILE);
    if !weights.is_file() {
        return Err(Error::Io {
            path: weights,
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "teacher weights not found"),
        });
    }
    let tensors: HashMap<String, Tensor> = candle_core::safetensors::load(&weights, device)?;
    let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
    let teacher = build(vb, &ckpt).map_err(|e| Error::Mismatch(format!("{}: {e}", weights.display())))?;
    tracing::info!(dir = %dir.display(), modalities = ?ckpt.modalities, "loaded teacher checkpoint");
    Ok((teacher, ckpt))
}

/// Checks that `features` hold at least one modality and that `labels` give one in-range class per item;
/// returns the item count.
pub fn check_items(features: &FeatureStore, labels: &Labels) -> Result<usize> {
    let n_items = features.n_items();
    if features.n_modalities() == 0 {
        return Err(Error::Mismatch("the feature store holds no modality".into()));
    }
    if labels.len() != n_items {
        return Err(Error::Mismatch(format!(
            "{} labels for {n_items} items: expected one label per item",
            labels.len()
        )));
    }
    if let Some(bad) = labels.per_item.iter().find(|&&c| c as usize >= labels.n_labels) {
        return Err(Error::Mismatch(format!("label class {bad} out of range for {} classes", labels.n_labels)));
    }
    Ok(n_items)
}

/// Trains the teachers of every modality in `features` (and the fusion classifier) on `labels` alone and
/// reports their held-out accuracy. One modality is enough; fusion then is off.
pub fn pretrain(
    features: &FeatureStore,
    labels: &Labels,
    cfg: &PretrainConfig,
    device: &Device,
) -> Result<PretrainOutcome> {
    cfg.validate()?;
    let n_items = check_items(features, labels)?;
    let (train, heldout) = split(n_items, cfg.heldout_fraction, cfg.seed)?;
    let modalities: Vec<String> = features.names().into_iter().map(str::to_owned).collect();
    let in_dims = features.dims();
    let inputs = modalities.iter().map(|m| features.tensor(m, device)).collect::<mmkd_features::Result<Vec<_>>>()?;
    let y_all = Tensor::from_slice(&labels.per_item, n_items, device)?;

    let varmap = VarMap::new();
    let vb = seeded_var_builder(&varmap, cfg.seed, DType::F32, device);
    let teacher = Teacher::new(vb, &cfg.teacher, &modalities, &in_dims, labels.n_labels)?;
    let mut opt = AdamW::new(sorted_vars(&varmap), AdamConfig { lr: cfg.lr, ..AdamConfig::default() })?;

    let batch = if cfg.batch_size == 0 { train.len() } else { cfg.batch_size };
    let mut rng = mmkd_data::stream(cfg.seed, "teacher-batches");
    let mut order = train.clone();
    let mut epoch_losses = Vec::with_capacity(cfg.epochs);
    tracing::info!(n_train = train.len(), n_heldout = heldout.len(), n_labels = labels.n_labels, modalities = ?modalities, "pretraining teacher");
    for epoch in 0..cfg.epochs {
        let _span = tracing::info_span!("teacher_epoch", epoch).entered();
        order.shuffle(&mut rng);
        let mut sum = 0f64;
        for rows in order.chunks(batch) {
            let idx = Tensor::from_slice(rows, rows.len(), device)?;
            let xs = inputs.iter().map(|x| x.index_select(&idx, 0)).collect::<candle_core::Result<Vec<_>>>()?;
            let out = teacher.forward(&xs)?;
            let loss = teacher.label_losses(&out, &y_all.index_select(&idx, 0)?)?.total()?;
            opt.backward_step(&loss)?;
            sum += f64::from(loss.to_dtype(DType::F32)?.to_scalar::<f32>()?) * rows.len() as f64;
        }
        let mean = sum / train.len() as f64;
        tracing::info!(epoch, loss = mean, "trained teacher");
        epoch_losses.push(mean);
    }

    let heldout_accuracy = accuracies(&teacher, &inputs, &y_all, &heldout, device)?;
    let train_accuracy = accuracies(&teacher, &inputs, &y_all, &train, device)?;
    let majority_rate = majority_rate(labels, &train, &heldout);
    tracing::info!(?heldout_accuracy, majority_rate, "teacher held-out accuracy");
    let report = PretrainReport {
        heldout_accuracy,
        train_accuracy,
        majority_rate,
        n_train: train.len(),
        n_heldout: heldout.len(),
        n_labels: labels.n_labels,
        final_loss: epoch_losses.last().copied().unwrap_or(f64::NAN),
    };
    let checkpoint = TeacherCheckpoint { modalities, in_dims, n_labels: labels.n_labels, pretrain: cfg.clone() };
    Ok(PretrainOutcome { varmap, checkpoint, epoch_losses, report })
}

/// Seeded split of `0..n_items` into (train, held-out), each sorted; at least one item on each side.
pub fn split(n_items: usize, heldout_fraction: f64, seed: u64) -> Result<(Vec<u32>, Vec<u32>)> {
    if n_items < 2 {
        return Err(Error::Mismatch(format!("cannot split {n_items} items into train and held-out parts")));
    }
    let mut all: Vec<u32> = (0..n_items as u32).collect();
    all.shuffle(&mut mmkd_data::stream(seed, "teacher-split"));
    let n_heldout = ((n_items as f64 * heldout_fraction).round() as usize).clamp(1, n_items - 1);
    let mut heldout = all.split_off(n_items - n_heldout);
    all.sort_unstable();
    heldout.sort_unstable();
    Ok((all, heldout))
}

/// Share of rows whose arg-max logit is the label: logits `(b, C)`, labels u32 `(b,)`.
pub fn accuracy(logits: &Tensor, labels: &Tensor) -> Result<f64> {
    let b = logits.dim(0)?;
    if b == 0 {
        return Ok(0.0);
    }
    let hits = logits.argmax(D::Minus1)?.eq(labels)?.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()?;
    Ok(f64::from(hits) / b as f64)
}

fn accuracies(
    teacher: &Teacher,
    inputs: &[Tensor],
    y_all: &Tensor,
    rows: &[u32],
    device: &Device,
) -> Result<BTreeMap<String, f64>> {
    let idx = Tensor::from_slice(rows, rows.len(), device)?;
    let xs = inputs.iter().map(|x| x.index_select(&idx, 0)).collect::<candle_core::Result<Vec<_>>>()?;
    let y = y_all.index_select(&idx, 0)?;
    let out = teacher.forward(&xs)?;
    let mut acc = BTreeMap::new();
    for (name, z) in teacher.modalities().iter().zip(&out.logits) {
        acc.insert(name.clone(), accuracy(z, &y)?);
    }
    if let Some(z) = &out.fused_logits {
        acc.insert(FUSED.to_owned(), accuracy(z, &y)?);
    }
    Ok(acc)
}

/// Held-out accuracy of predicting the most frequent training label (the smallest class on ties).
fn majority_rate(labels: &Labels, train: &[u32], heldout: &[u32]) -> f64 {
    let mut counts = vec![0usize; labels.n_labels];
    for &i in train {
        counts[labels.per_item[i as usize] as usize] += 1;
    }
    let best = counts.iter().enumerate().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(&a.0))).map_or(0, |(c, _)| c);
    let hits = heldout.iter().filter(|&&i| labels.per_item[i as usize] as usize == best).count();
    hits as f64 / heldout.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_seeded_disjoint_and_80_20() {
        let (tr, he) = split(300, 0.2, 7).unwrap();
        assert_eq!((tr.len(), he.len()), (240, 60));
        let mut all: Vec<u32> = tr.iter().chain(&he).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..300).collect::<Vec<u32>>());
        assert_eq!(split(300, 0.2, 7).unwrap(), (tr.clone(), he.clone()));
        assert_ne!(split(300, 0.2, 8).unwrap().1, he);
        assert!(split(1, 0.2, 0).is_err());
    }

    #[test]
    fn majority_and_accuracy() {
        let labels = Labels { per_item: vec![0, 1, 1, 2, 1, 0], n_labels: 3, values: vec![0, 1, 2] };
        // Train items 0..4 have labels 0, 1, 1, 2: majority 1; held-out labels 1, 0: one hit in two.
        assert_eq!(majority_rate(&labels, &[0, 1, 2, 3], &[4, 5]), 0.5);
        let z = Tensor::new(&[[0.1f32, 0.9], [0.8, 0.2], [0.3, 0.7]], &Device::Cpu).unwrap();
        let y = Tensor::new(&[1u32, 1, 1], &Device::Cpu).unwrap();
        assert!((accuracy(&z, &y).unwrap() - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn config_round_trips_through_toml_and_rejects_typos() {
        let cfg = PretrainConfig {
            teacher: TeacherConfig {
                extractor_act: mmkd_features::Activation::LeakyRelu(0.2),
                teacher_depth: crate::TeacherDepth::Paper { delta: 2.0 },
                classifier_width: Some(25),
                fusion_order: vec!["text".into(), "visual".into()],
                ..Default::default()
            },
            ..Default::default()
        };
        let ckpt = TeacherCheckpoint {
            modalities: vec!["visual".into(), "text".into()],
            in_dims: vec![4096, 768],
            n_labels: 54,
            pretrain: cfg,
        };
        let text = toml::to_string(&ckpt).unwrap();
        assert_eq!(toml::from_str::<TeacherCheckpoint>(&text).unwrap(), ckpt);
        assert!(toml::from_str::<PretrainConfig>("epochs = 3\nlearning_rate = 0.1").is_err());
        let partial: PretrainConfig = toml::from_str("epochs = 3\n[teacher]\nout_dim = 64").unwrap();
        assert_eq!((partial.epochs, partial.teacher.out_dim, partial.teacher.tce_on_probs), (3, 64, true));
    }
}
