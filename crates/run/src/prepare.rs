//! The registry: from a [`RunSpec`] to a built model with its resolved configuration and data. The
//! collaborative-filtering and multimodal models are built here ([`prepare`]); the sequential ones in
//! [`crate::seq`], which shares [`resolve`] with this module.

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use mmkd_backbones::cf::mf::Mf;
use mmkd_backbones::cf::pop::Popularity;
use mmkd_backbones::{Dims, Recommender};
use mmkd_features::{FeatureExtractor, FeatureStore, Projection};
use toml::Value;

use crate::config::{Layers, RunConfig};
use crate::error::{bail, Context, Result};
use crate::execute::training_view;
use crate::spec::{ExtractorKind, ModelKind, RunSpec};

/// A model, its resolved configuration and the data it trains on: what `train`, `bench train` and
/// `recommend` share.
#[allow(missing_debug_implementations)]
pub struct Prepared {
    pub cfg: RunConfig,
    /// The layers applied, in order, for the record.
    pub layers: Vec<String>,
    pub dataset: mmkd_data::Dataset,
    /// The split the model trains on ([`training_view`] of `dataset` under the run's protocol).
    pub view: mmkd_data::Dataset,
    pub model: Box<dyn Recommender>,
    pub device: Device,
}

/// Resolves the layered configuration of `spec` (with `sgfd_base` under the files and `flags` over
/// `--set`), logs the files applied, and returns the configuration and the files, in order.
pub fn resolve(
    spec: &RunSpec,
    sgfd_base: Option<mmkd_student_kd::SgfdConfig>,
    mut flags: Vec<(String, Value)>,
) -> Result<(RunConfig, Vec<String>)> {
    let mut first = Vec::new();
    if let Some(seed) = spec.seed {
        let seed =
            i64::try_from(seed).map_err(|_| crate::Error::Invalid("--seed must fit in an i64 for TOML".into()))?;
        first.push(("seed".to_string(), Value::Integer(seed)));
    }
    if let Some(epochs) = spec.epochs {
        let epochs = i64::try_from(epochs).map_err(|_| crate::Error::Invalid("--epochs is too large".into()))?;
        first.push(("train.epochs".to_string(), Value::Integer(epochs)));
    }
    first.append(&mut flags);
    let layers = Layers {
        configs_dir: spec.configs.clone(),
        dataset: spec.data_name(),
        model: spec.model.name().to_string(),
        generated: crate::config::is_generated(&spec.data),
        sgfd_base,
        file: spec.config.clone(),
        sets: spec.set.clone(),
        flags: first,
    };
    let (cfg, applied) = crate::config::resolve(&layers)?;
    let layers: Vec<String> = applied.iter().map(|p| p.display().to_string()).collect();
    tracing::info!(layers = %layers.join(" → "), "configuration");
    Ok((cfg, layers))
}

/// Loads and validates interactions, labels and features of `dir` (features checked against the item count).
pub fn load_checked(dir: &Path) -> Result<(mmkd_data::Dataset, Option<FeatureStore>)> {
    let dataset = mmkd_data::load(dir, &mmkd_data::LoadOptions::default())
        .with_context(|| format!("invalid data set in {}", dir.display()))?;
    let features = if dataset.feature_files.is_empty() {
        None
    } else {
        Some(
            FeatureStore::load(&dataset.feature_files, Some(dataset.n_items))
                .with_context(|| format!("invalid features in {}", dir.display()))?,
        )
    };
    Ok((dataset, features))
}

/// Resolves the configuration of `spec` (a non-sequential model), loads and checks the data, and builds the
/// model with its extractor.
pub fn prepare(spec: &RunSpec) -> Result<Prepared> {
    let device = crate::device::parse(&spec.device)?;
    let mut extractor = spec.extractor.clone();
    if !spec.model.uses_features() && extractor != ExtractorKind::None {
        if extractor != ExtractorKind::Vanilla {
            bail!("--model {} uses no item features: --extractor {} does not apply", spec.model.name(), extractor);
        }
        extractor = ExtractorKind::None; // The default `vanilla` means nothing here.
    }
    let mut flags = Vec::new();
    if let Some(teacher) = &spec.teacher {
        if !matches!(extractor, ExtractorKind::Sgfd(_)) {
            bail!("--teacher needs --extractor sgfd or an SGFD preset, not `{}`", spec.extractor);
        }
        flags.push(("sgfd.teacher_mode".to_string(), Value::String("pretrained".into())));
        flags.push(("sgfd.teacher_checkpoint".to_string(), Value::String(teacher.display().to_string())));
    }
    let (cfg, layers) = resolve(spec, extractor.sgfd_base()?, flags)?;

    let (dataset, features) = load_checked(&spec.data)?;
    // Models are built from the split the trainer trains on, so no validation item enters their graph.
    let view = training_view(&dataset, &cfg.train);
    let dims = Dims { n_users: view.n_users, n_items: view.n_items };
    let vars = VarMap::new();
    let vb = mmkd_features::seeded_var_builder(&vars, cfg.seed, DType::F32, &device);
    let needs = |what: &str| {
        format!("--model {what} takes its item features from an extractor: use --extractor vanilla, sgfd or a preset")
    };
    let build = |features| build_extractor(&extractor, vb.pp("extractor"), &cfg, features, &dataset, &device);
    let model: Box<dyn Recommender> = match spec.model {
        ModelKind::Pop => Box::new(Popularity::new(&view, &device)?),
        ModelKind::Mf => {
            let ex = build(features)?;
            Box::new(Mf::new(vb, &vars, &cfg.mf, dims, &view.train, ex)?)
        }
        ModelKind::Bm3 => {
            let ex = build(features)?.with_context(|| needs("bm3"))?;
            Box::new(mmkd_backbones::mm::bm3::Bm3::new(vb, &vars, &cfg.bm3, dims, &view.train, ex, &device)?)
        }
        ModelKind::Grcn => {
            let ex = build(features)?.with_context(|| needs("grcn"))?;
            Box::new(mmkd_backbones::mm::grcn::Grcn::new(vb, &vars, &cfg.grcn, dims, &view.train, ex, &device)?)
        }
        ModelKind::Maml => {
            let ex = build(features)?.with_context(|| needs("maml"))?;
            Box::new(mmkd_backbones::mm::maml::Maml::new(vb, &vars, &cfg.maml, dims, &view.train, ex, &device)?)
        }
        ModelKind::Neumf => Box::new(mmkd_backbones::cf::neumf::NeuMf::new(vb, &vars, &cfg.neumf, dims, &view.train)?),
        ModelKind::Cml => Box::new(mmkd_backbones::cf::cml::Cml::new(vb, &vars, &cfg.cml, dims, &view.train)?),
        ModelKind::Ngcf => {
            Box::new(mmkd_backbones::cf::ngcf::Ngcf::new(vb, &vars, &cfg.ngcf, dims, &view.train, &device)?)
        }
        ModelKind::Dgcf => {
            Box::new(mmkd_backbones::cf::dgcf::Dgcf::new(vb, &vars, &cfg.dgcf, dims, &view.train, &device)?)
        }
        ModelKind::Mmsr | ModelKind::Sasrec | ModelKind::Gru4rec => {
            bail!("--model {} is sequential: it trains on the sequential layout", spec.model.name())
        }
    };
    Ok(Prepared { cfg, layers, dataset, view, model, device })
}

/// The extractor `kind` asks for, over the features normalised per `[data]`, under `vb`.
fn build_extractor(
    kind: &ExtractorKind,
    vb: VarBuilder,
    cfg: &RunConfig,
    features: Option<FeatureStore>,
    dataset: &mmkd_data::Dataset,
    device: &Device,
) -> Result<Option<Box<dyn FeatureExtractor>>> {
    if *kind == ExtractorKind::None {
        return Ok(None);
    }
    let Some(mut features) = features else {
        bail!("--extractor {kind:?} needs item features, but {} has none", dataset.dir.display());
    };
    features.normalize(cfg.data.normalization);
    Ok(Some(match kind {
        ExtractorKind::Vanilla => Box::new(Projection::new(vb, &cfg.projection, &features, device)?),
        _ => {
            let Some(labels) = dataset.labels.as_ref() else {
                bail!("SGFD needs item labels (MetaData_normal.npy), none found in {}", dataset.dir.display());
            };
            mmkd_student_kd::build_extractor(vb, &cfg.sgfd, &features, labels, device)?
        }
    }))
}
