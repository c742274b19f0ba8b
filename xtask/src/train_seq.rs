//! `cargo xtask train --model mmsr|sasrec|gru4rec [--kdsr] --data DIR --out DIR` (and `--model pop` on the
//! sequential layout): load the sequences, compress each modality's features with the autoencoder, build the
//! encoder (and KDSR's teacher and student), and run `mmkd_backbones::seq::recommender::train_sequential`.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use mmkd_backbones::seq::kdsr::KdsrAux;
use mmkd_backbones::seq::model::SeqEncoder;
use mmkd_backbones::seq::recommender::{
    popularity_sequential, split_instances, ModalityInit, NextItem, SeqAux, SeqRecommender,
};
use mmkd_data::sequential::SeqDataset;
use mmkd_features::FeatureStore;
use toml::Value;

use crate::config::{Layers, RunConfig};
use crate::train::{resolve_layers, write_config, ModelKind, TrainArgs};

/// A sequential model with its configuration and data: what `train` and `bench train` share.
#[allow(missing_debug_implementations)]
pub struct SeqPrepared {
    pub cfg: RunConfig,
    pub layers: Vec<String>,
    pub data: Arc<SeqDataset>,
    /// `None` for `--model pop`.
    pub model: Option<SeqRecommender>,
    /// The instances that select the model (validation under holdout, test under reference).
    pub selection: Vec<mmkd_data::sequential::SeqInstance>,
    pub device: Device,
}

/// Resolves the configuration of a sequential run, loads the data and builds the model.
pub fn prepare(args: &TrainArgs) -> anyhow::Result<SeqPrepared> {
    let device = crate::device::parse(&args.device)?;
    if !args.model.is_sequential() && args.model != ModelKind::Pop {
        bail!(
            "{} holds sequential data (interactions.csv): use --model mmsr, sasrec, gru4rec or pop, not {}",
            args.data.display(),
            args.model.name()
        );
    }
    if !mmkd_data::sequential::is_sequential(&args.data) {
        bail!(
            "--model {} needs the sequential layout ({}/interactions.csv with userID,itemID,timestamp); write one \
             with `cargo xtask gen-data --preset tiny-seq|beauty`",
            args.model.name(),
            args.data.display()
        );
    }
    if args.kdsr && !args.model.is_sequential() {
        bail!("--kdsr needs --model mmsr, sasrec or gru4rec");
    }
    if args.teacher.is_some() || args.extractor != "vanilla" {
        bail!("--teacher and --extractor belong to the SGFD models; the sequential models take --kdsr");
    }
    let mut flags = Vec::new();
    if let Some(seed) = args.seed {
        flags.push(("seed".to_string(), Value::Integer(i64::try_from(seed).context("--seed must fit in an i64")?)));
    }
    if let Some(epochs) = args.epochs {
        flags.push(("train.epochs".to_string(), Value::Integer(i64::try_from(epochs)?)));
    }
    let layers = Layers {
        configs_dir: args.configs.clone(),
        dataset: args.data.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        model: args.model.name().to_string(),
        generated: crate::config::is_generated(&args.data),
        sgfd_base: None,
        file: args.config.clone(),
        sets: args.set.clone(),
        flags,
    };
    let (cfg, layers) = resolve_layers(layers)?;
    let data = Arc::new(
        mmkd_data::sequential::load_sequential(&args.data, &cfg.seq_data)
            .with_context(|| format!("loading the sequential data set in {}", args.data.display()))?,
    );
    tracing::info!(stats = %data.stats(), "sequential data");
    let (train, selection) = split_instances(&data, &cfg.train);
    if args.model == ModelKind::Pop {
        return Ok(SeqPrepared { cfg, layers, data, model: None, selection, device });
    }
    let init = compress_features(&args.data, &data, &cfg, &device)?;
    let vars = VarMap::new();
    let vb = mmkd_features::seeded_var_builder(&vars, cfg.seed, DType::F32, &device);
    let d = cfg.seq.embed_dim;
    let aux: Option<Box<dyn SeqAux>> = if args.kdsr {
        let seed = mmkd_data::derive_seed(cfg.seed, "kdsr-teacher");
        Some(Box::new(KdsrAux::new(vb.pp("kdsr"), &cfg.kdsr, &init.visual, &init.text, seed, &device)?))
    } else {
        None
    };
    let kind = args.model;
    let build = |vb: candle_nn::VarBuilder| -> mmkd_backbones::Result<Box<dyn SeqEncoder>> {
        Ok(match kind {
            ModelKind::Mmsr => Box::new(mmkd_backbones::seq::mmsr::Mmsr::new(vb.pp("mmsr"), &cfg.mmsr, d)?),
            ModelKind::Sasrec => Box::new(mmkd_backbones::seq::sasrec::SasRec::new(vb.pp("sasrec"), &cfg.sasrec, d)?),
            _ => Box::new(mmkd_backbones::seq::gru4rec::Gru4Rec::new(vb.pp("gru4rec"), &cfg.gru4rec, d)?),
        })
    };
    let model = SeqRecommender::new(&vb, &vars, &cfg.seq, &init, build, aux, Arc::clone(&data), train)?;
    Ok(SeqPrepared { cfg, layers, data, model: Some(model), selection, device })
}

/// The compressed features of every item (`(n_items + 1, d)` per modality, row 0 zero): the raw rows of the
/// kept items, normalised per `[data]`, through the autoencoder of `[ae]` trained on them (spec §2.7).
///
/// The autoencoder is data preprocessing, trained once and frozen: its seed is fixed (not the run seed), and
/// its output is cached in `DIR/.mmkd-cache/ae-<key>.safetensors`, keyed by the `[ae]` settings, the
/// normalisation, the feature files' sizes and the kept items, so every run on the same data reuses it.
pub fn compress_features(
    dir: &std::path::Path,
    data: &SeqDataset,
    cfg: &RunConfig,
    device: &Device,
) -> anyhow::Result<ModalityInit> {
    let files: Vec<(String, std::path::PathBuf)> =
        mmkd_data::SGFD_FEATURES.iter().map(|(name, file)| (name.to_string(), dir.join(file))).collect();
    for (_, path) in &files {
        if !path.is_file() {
            bail!("the sequential models need both modality feature files; {} is missing", path.display());
        }
    }
    let mut key = format!("{:?}|{:?}|{:?}", cfg.ae, cfg.data.normalization, data.item_raw);
    for (_, path) in &files {
        let len = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.len();
        key.push_str(&format!("|{len}"));
    }
    let cache = dir.join(".mmkd-cache").join(format!("ae-{:016x}.safetensors", fnv1a(key.as_bytes())));
    if cache.is_file() {
        if let Ok(mut t) = candle_core::safetensors::load(&cache, device) {
            if let (Some(visual), Some(text)) = (t.remove("visual"), t.remove("text")) {
                if visual.dims2()? == (data.n_items + 1, cfg.ae.dim) && text.dims2()? == (data.n_items + 1, cfg.ae.dim)
                {
                    tracing::info!(cache = %cache.display(), "compressed features from the cache");
                    return Ok(ModalityInit { visual, text });
                }
            }
        }
        tracing::warn!(cache = %cache.display(), "ignoring an unreadable or mismatched cache file");
    }
    let mut store =
        FeatureStore::load(&files, None).with_context(|| format!("loading the features of {}", dir.display()))?;
    store.normalize(cfg.data.normalization);
    let rows = &data.item_raw[1..];
    let mut out = std::collections::HashMap::new();
    for (name, _) in &files {
        let started = Instant::now();
        let x = store.gather(name, rows, device)?;
        let seed = mmkd_data::derive_seed(0, &format!("ae-{name}"));
        let (z, report) = mmkd_teacher::kdsr::compress(&x, &cfg.ae, seed, device)
            .with_context(|| format!("compressing the `{name}` features"))?;
        tracing::info!(
            modality = %name,
            epochs = report.epochs,
            loss = report.final_loss,
            secs = started.elapsed().as_secs_f64(),
            "autoencoder trained"
        );
        let zero = Tensor::zeros((1, z.dim(1)?), DType::F32, device)?;
        out.insert(name.clone(), Tensor::cat(&[zero, z.to_dtype(DType::F32)?], 0)?);
    }
    if let Some(parent) = cache.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let tmp = cache.with_extension("safetensors.tmp");
    candle_core::safetensors::save(&out, &tmp).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &cache).with_context(|| format!("writing {}", cache.display()))?;
    let text = out.remove("text").context("text features")?;
    let visual = out.remove("visual").context("visual features")?;
    Ok(ModalityInit { visual, text })
}

/// 64-bit FNV-1a, a stable hash for cache keys.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

pub fn run(args: &TrainArgs) -> anyhow::Result<()> {
    let SeqPrepared { cfg, layers, data, model, selection, device } = prepare(args)?;
    write_config(args, &cfg, &layers)?;
    let outcome = match model {
        None => popularity_sequential(&data, &cfg.seq.ks, &args.out, &device)?,
        Some(mut model) => {
            let evaluator = NextItem::new(&data, cfg.train.protocol, selection, &cfg.seq.ks)?;
            mmkd_backbones::train(
                &mut model,
                &evaluator,
                &cfg.train,
                &cfg.optim,
                &cfg.schedule,
                &args.out,
                args.resume,
                &device,
            )
            .with_context(|| format!("training {} into {}", args.model.name(), args.out.display()))?
        }
    };
    let name = if args.kdsr { format!("{}+kdsr", outcome.model) } else { outcome.model.clone() };
    println!(
        "{name} on {} ({:?} protocol, selected on {} by {}): best epoch {} of {} run{}, {:.1}s",
        args.data.display(),
        outcome.protocol,
        outcome.selected_on,
        outcome.criterion,
        outcome.best_epoch,
        outcome.epochs_run,
        if outcome.stopped_early { " (early stop)" } else { "" },
        outcome.secs
    );
    let columns = ["hr@5", "mrr@5", "hr@20", "mrr@20", "ndcg@20"];
    println!("{:<8}{}", "split", columns.iter().map(|c| format!("{c:>10}")).collect::<String>());
    let mut rows = vec![("test", &outcome.test)];
    if outcome.selected_on == "valid" {
        rows.insert(0, ("valid", &outcome.valid));
    }
    for (split, summary) in rows {
        let values: String =
            columns.iter().map(|c| format!("{:>10.4}", summary.get(*c).copied().unwrap_or(f64::NAN))).collect();
        println!("{split:<8}{values}");
    }
    println!("{} test instances; result: {}", outcome.n_test_users, args.out.join("result.json").display());
    Ok(())
}
