//! The report's Fig. 4: item features from the original extractor of a vanilla run and from the teacher and
//! the student of an SGFD run, mapped to 2-D by t-SNE for three categories, per modality. Each extractor is
//! rebuilt from its run's `config.toml` (its `run.toml` names it) and its weights are read from
//! `best.safetensors` (keys `extractor.…`, as `train` saves them; a pretrained teacher comes from the folder
//! its config names).

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{bail, Context};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use mmkd_features::{FeatureExtractor, Mode, Projection};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::definition::TsneSpec;
use super::tsne::{knn_purity, tsne, TsneConfig};
use crate::config::RunConfig;

/// Neighbours of the purity numbers.
const PURITY_K: usize = 10;

/// The extractor outputs of one run for every item, per modality (`(n_items, d)` each).
struct RunFeatures {
    modalities: Vec<String>,
    /// What the backbone consumed: the vanilla projection's or the SGFD student's output.
    extracted: Vec<Tensor>,
    /// The SGFD teacher's features, when the run has a teacher.
    teacher: Option<Vec<Tensor>>,
}

/// Rebuilds the extractor of `run` on the data in `data` and computes its features of every item.
fn run_features(
    run: &Path,
    data_set: &mmkd_data::Dataset,
    store: &mmkd_features::FeatureStore,
) -> crate::Result<RunFeatures> {
    let device = Device::Cpu;
    let extractor = crate::RunRecord::read(run)?.spec.extractor;
    let path = run.join(crate::run_dir::CONFIG_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let cfg: RunConfig = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let mut store = store.clone();
    store.normalize(cfg.data.normalization);
    let best = run.join(crate::execute::BEST_FILE);
    let tensors =
        candle_core::safetensors::load(&best, &device).with_context(|| format!("reading {}", best.display()))?;
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &device).pp("extractor");
    let modalities: Vec<String> = store.names().into_iter().map(str::to_owned).collect();
    let context = || format!("rebuilding the `{extractor}` extractor of {}", run.display());
    if extractor == crate::ExtractorKind::Vanilla {
        let projection = Projection::new(vb, &cfg.projection, &store, &device).with_context(context)?;
        let extracted = projection.extract(None, Mode::Eval)?.features;
        return Ok(RunFeatures { modalities, extracted, teacher: None });
    }
    let Some(labels) = data_set.labels.as_ref() else { bail!("{}: no item labels", data_set.dir.display()) };
    let sgfd = mmkd_student_kd::Sgfd::new(vb, &cfg.sgfd, &store, labels, &device).with_context(context)?;
    let extracted = sgfd.extract(None, Mode::Eval)?.features;
    let teacher = match sgfd.teacher() {
        Some(t) => Some(
            sgfd.inputs().iter().enumerate().map(|(m, x)| t.extract(m, x)).collect::<mmkd_teacher::Result<Vec<_>>>()?,
        ),
        None => None,
    };
    Ok(RunFeatures { modalities, extracted, teacher })
}

/// One panel of the map.
#[derive(Debug, Clone, Serialize)]
pub struct Panel {
    pub modality: String,
    /// `original`, `teacher` or `student`.
    pub source: String,
    pub points: Vec<[f64; 2]>,
    /// kNN label purity (k = 10) of the L2-normalised features themselves.
    pub purity_features: f64,
    /// kNN label purity of the 2-D map.
    pub purity_map: f64,
}

/// The Fig. 4 map: sampled items, their category (0, 1, 2) and the panels (modality-major).
#[derive(Debug, Clone, Serialize)]
pub struct Fig4 {
    pub items: Vec<u32>,
    pub classes: Vec<usize>,
    /// The category of each class, as `label <value>`.
    pub class_names: Vec<String>,
    pub original_run: String,
    pub distilled_run: String,
    pub panels: Vec<Panel>,
}

/// Rows `items` of `t` as f64, each L2-normalised (the map compares directions, as the backbones do).
fn rows(t: &Tensor, items: &[u32]) -> crate::Result<(Vec<f64>, usize)> {
    let idx = Tensor::from_slice(items, items.len(), t.device())?;
    let x = t.index_select(&idx, 0)?.to_dtype(DType::F64)?;
    let d = x.dim(1)?;
    let mut flat = x.flatten_all()?.to_vec1::<f64>()?;
    for row in flat.chunks_mut(d) {
        let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
        row.iter_mut().for_each(|v| *v /= norm);
    }
    Ok((flat, d))
}

/// Builds the map from the runs `original` (vanilla) and `distilled` (SGFD) trained on `data`.
pub fn fig4(spec: &TsneSpec, original: &Path, distilled: &Path, data: &Path) -> crate::Result<Fig4> {
    let (data_set, store) = crate::load_checked(data)?;
    let Some(store) = store else { bail!("{}: no item features", data.display()) };
    let Some(labels) = data_set.labels.as_ref() else { bail!("{}: no item labels", data.display()) };
    // The three most frequent categories (ties to the lower class), `per_class` items each, seeded.
    let hist = labels.histogram();
    let mut classes: Vec<usize> = (0..hist.len()).collect();
    classes.sort_by(|&a, &b| hist[b].cmp(&hist[a]).then(a.cmp(&b)));
    classes.truncate(3);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut items = Vec::new();
    let mut item_class = BTreeMap::new();
    for (k, &c) in classes.iter().enumerate() {
        let mut members: Vec<u32> =
            labels.per_item.iter().enumerate().filter(|(_, &l)| l as usize == c).map(|(i, _)| i as u32).collect();
        members.shuffle(&mut rng);
        members.truncate(spec.per_class);
        for i in members {
            item_class.insert(i, k);
        }
    }
    items.extend(item_class.keys().copied());
    let item_labels: Vec<usize> = items.iter().map(|i| item_class[i]).collect();
    let class_names = classes.iter().map(|&c| format!("label {}", labels.values[c])).collect();

    let original_features = run_features(original, &data_set, &store)?;
    let distilled_features = run_features(distilled, &data_set, &store)?;
    let Some(teacher) = distilled_features.teacher.as_ref() else {
        bail!("{}: the SGFD run has no teacher to map", distilled.display());
    };
    let cfg = TsneConfig { perplexity: spec.perplexity, iterations: spec.iterations, ..Default::default() };
    let n = items.len();
    let mut panels = Vec::new();
    for (m, modality) in distilled_features.modalities.iter().enumerate() {
        let Some(orig_m) = original_features.modalities.iter().position(|x| x == modality) else {
            bail!("{}: no `{modality}` features", original.display());
        };
        let sources = [
            ("original", &original_features.extracted[orig_m]),
            ("teacher", &teacher[m]),
            ("student", &distilled_features.extracted[m]),
        ];
        for (source, t) in sources {
            let (x, d) = rows(t, &items)?;
            let points = tsne(&x, n, d, &cfg);
            let flat: Vec<f64> = points.iter().flat_map(|p| [p[0], p[1]]).collect();
            panels.push(Panel {
                modality: modality.clone(),
                source: source.to_string(),
                purity_features: knn_purity(&x, n, d, &item_labels, PURITY_K),
                purity_map: knn_purity(&flat, n, 2, &item_labels, PURITY_K),
                points,
            });
        }
    }
    Ok(Fig4 {
        items,
        classes: item_labels,
        class_names,
        original_run: original.display().to_string(),
        distilled_run: distilled.display().to_string(),
        panels,
    })
}
