//! `cargo xtask train --model M --data DIR --out DIR`: resolve the layered configuration ([`crate::config`]),
//! load and check the data, build the model and its feature extractor, and run `mmkd_backbones::train`.

use std::path::PathBuf;

use anyhow::{bail, Context};
use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use clap::{Args, ValueEnum};
use mmkd_backbones::cf::mf::Mf;
use mmkd_backbones::cf::pop::Popularity;
use mmkd_backbones::train::{training_view, FullRanking, TrainOutcome};
use mmkd_backbones::{Dims, Recommender};
use mmkd_features::{FeatureExtractor, FeatureStore, Projection};
use toml::Value;

use crate::config::{Layers, RunConfig};

/// The backbones `train` can build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModelKind {
    /// Item popularity (no training).
    Pop,
    /// BPR matrix factorisation, optionally with item features.
    Mf,
    Bm3,
    Grcn,
    /// Multimodal attentive metric learning (takes an extractor).
    Maml,
    /// Neural matrix factorisation (ids only).
    Neumf,
    /// Collaborative metric learning (ids only).
    Cml,
    /// Neural graph collaborative filtering (ids only).
    Ngcf,
    /// Disentangled graph collaborative filtering (ids only).
    Dgcf,
    /// MMSR as the KDSR code runs it (sequential data; `--kdsr` adds correlation distillation).
    Mmsr,
    /// SASRec with gated ID, image and text inputs (sequential data).
    Sasrec,
    /// GRU4Rec with gated ID, image and text inputs (sequential data).
    Gru4rec,
}

impl ModelKind {
    /// The name of `configs/model/<name>.toml`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pop => "pop",
            Self::Mf => "mf",
            Self::Bm3 => "bm3",
            Self::Grcn => "grcn",
            Self::Maml => "maml",
            Self::Neumf => "neumf",
            Self::Cml => "cml",
            Self::Ngcf => "ngcf",
            Self::Dgcf => "dgcf",
            Self::Mmsr => "mmsr",
            Self::Sasrec => "sasrec",
            Self::Gru4rec => "gru4rec",
        }
    }

    /// Whether the model is a sequential recommender (next-item prediction on the sequential layout).
    pub fn is_sequential(self) -> bool {
        matches!(self, Self::Mmsr | Self::Sasrec | Self::Gru4rec)
    }

    /// Whether the model reads item features (through an extractor) at all.
    pub fn uses_features(self) -> bool {
        matches!(self, Self::Mf | Self::Bm3 | Self::Grcn | Self::Maml)
    }
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Backbone.
    #[arg(long, value_enum)]
    pub model: ModelKind,
    /// Item-feature extractor: `vanilla` (one linear layer per modality, `[projection]`), `none` (ids only),
    /// `sgfd` (`[sgfd]`) or an SGFD preset (sgfd_l, sgfd_f, sgfd_e, sgfd_s, vanilla_deep, …), which becomes
    /// the base of `[sgfd]` under the config files and `--set`. `pop` uses none.
    #[arg(long, default_value = "vanilla")]
    pub extractor: String,
    /// Data folder (SGFD or MMRec layout); its name picks `configs/dataset/<name>.toml`.
    #[arg(long)]
    pub data: PathBuf,
    /// A config file applied after `configs/{base,dataset/<name>,model/<model>}.toml`.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override `KEY=VALUE` with a dotted key, e.g. `--set optim.lr=1e-2 --set train.criterion=ndcg@20`;
    /// the value is read as TOML, else as a string. Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Maximum epochs (`train.epochs`).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Folder of a pretrained SGFD teacher (`cargo xtask teacher`): `sgfd.teacher_mode = "pretrained"`.
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Run seed (top-level `seed`).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Continue the run in `--out` after its last finished epoch.
    #[arg(long)]
    pub resume: bool,
    /// Output folder: config.toml, checkpoints, metrics.jsonl, result.json, test_per_user.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Folder of base.toml, dataset/ and model/.
    #[arg(long, default_value = "configs")]
    pub configs: PathBuf,
    /// Sequential models: add KDSR's correlation distillation (`[kdsr]`) and asynchronous learning rates.
    #[arg(long)]
    pub kdsr: bool,
}

/// What `--extractor` names.
#[derive(Debug, Clone, PartialEq)]
enum ExtractorChoice {
    None,
    Vanilla,
    /// `sgfd` or a preset name.
    Sgfd(String),
}

impl ExtractorChoice {
    fn parse(name: &str) -> anyhow::Result<Self> {
        Ok(match name {
            "none" => Self::None,
            "vanilla" => Self::Vanilla,
            _ if mmkd_student_kd::names().contains(&name) => Self::Sgfd(name.to_string()),
            _ => bail!(
                "unknown --extractor `{name}`: expected none, vanilla or an SGFD preset ({})",
                mmkd_student_kd::names().join(", ")
            ),
        })
    }
}

/// A model, its resolved configuration and the data it trains on: what `train` and `bench train` share.
pub struct Prepared {
    pub cfg: RunConfig,
    /// The layers applied, in order, for the record.
    pub layers: Vec<String>,
    pub dataset: mmkd_data::Dataset,
    /// The split the model trains on ([`training_view`] of `dataset`).
    pub view: mmkd_data::Dataset,
    pub model: Box<dyn Recommender>,
    pub device: Device,
}

impl TrainArgs {
    /// Resolves the configuration, loads and checks the data, and builds the model with its extractor.
    pub fn prepare(&self) -> anyhow::Result<Prepared> {
        let device = crate::device::parse(&self.device)?;
        let mut extractor = ExtractorChoice::parse(&self.extractor)?;
        if !self.model.uses_features() && extractor != ExtractorChoice::None {
            if extractor != ExtractorChoice::Vanilla {
                bail!(
                    "--model {} uses no item features: --extractor {} does not apply",
                    self.model.name(),
                    self.extractor
                );
            }
            extractor = ExtractorChoice::None; // the default `vanilla` means nothing here
        }
        let data_name = self.data.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut flags = Vec::new();
        if let Some(seed) = self.seed {
            let seed = i64::try_from(seed).context("--seed must fit in an i64 for TOML")?;
            flags.push(("seed".to_string(), Value::Integer(seed)));
        }
        if let Some(epochs) = self.epochs {
            flags.push(("train.epochs".to_string(), Value::Integer(i64::try_from(epochs)?)));
        }
        if let Some(teacher) = &self.teacher {
            if !matches!(extractor, ExtractorChoice::Sgfd(_)) {
                bail!("--teacher needs --extractor sgfd or an SGFD preset, not `{}`", self.extractor);
            }
            flags.push(("sgfd.teacher_mode".to_string(), Value::String("pretrained".into())));
            flags.push(("sgfd.teacher_checkpoint".to_string(), Value::String(teacher.display().to_string())));
        }
        let sgfd_base = match &extractor {
            ExtractorChoice::Sgfd(name) => Some(mmkd_student_kd::preset(name)?),
            _ => None,
        };
        let layers = Layers {
            configs_dir: self.configs.clone(),
            dataset: data_name,
            model: self.model.name().to_string(),
            generated: crate::config::is_generated(&self.data),
            sgfd_base,
            file: self.config.clone(),
            sets: self.set.clone(),
            flags,
        };
        let (cfg, layers) = resolve_layers(layers)?;

        let (dataset, features) = crate::inspect::load_checked(&self.data)?;
        // Models are built from the split the trainer trains on, so no validation item enters their graph.
        let view = training_view(&dataset, &cfg.train);
        let dims = Dims { n_users: view.n_users, n_items: view.n_items };
        let vars = VarMap::new();
        let vb = mmkd_features::seeded_var_builder(&vars, cfg.seed, DType::F32, &device);
        let needs = |what: &str| {
            format!(
                "--model {what} takes its item features from an extractor: use --extractor vanilla, sgfd or a preset"
            )
        };
        let build = |features| build_extractor(&extractor, vb.pp("extractor"), &cfg, features, &dataset, &device);
        let model: Box<dyn Recommender> = match self.model {
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
            ModelKind::Neumf => {
                Box::new(mmkd_backbones::cf::neumf::NeuMf::new(vb, &vars, &cfg.neumf, dims, &view.train)?)
            }
            ModelKind::Cml => Box::new(mmkd_backbones::cf::cml::Cml::new(vb, &vars, &cfg.cml, dims, &view.train)?),
            ModelKind::Ngcf => {
                Box::new(mmkd_backbones::cf::ngcf::Ngcf::new(vb, &vars, &cfg.ngcf, dims, &view.train, &device)?)
            }
            ModelKind::Dgcf => {
                Box::new(mmkd_backbones::cf::dgcf::Dgcf::new(vb, &vars, &cfg.dgcf, dims, &view.train, &device)?)
            }
            ModelKind::Mmsr | ModelKind::Sasrec | ModelKind::Gru4rec => {
                bail!("--model {} is sequential: it trains on the sequential layout", self.model.name())
            }
        };
        Ok(Prepared { cfg, layers, dataset, view, model, device })
    }
}

pub fn run(args: &TrainArgs) -> anyhow::Result<()> {
    if args.model.is_sequential() || mmkd_data::sequential::is_sequential(&args.data) {
        return crate::train_seq::run(args);
    }
    if args.kdsr {
        bail!("--kdsr applies to the sequential models (mmsr, sasrec, gru4rec), not to --model {}", args.model.name());
    }
    let Prepared { cfg, layers, dataset, view, mut model, device } = args.prepare()?;
    write_config(args, &cfg, &layers)?;
    let evaluator = FullRanking::new(&view, cfg.train.protocol, &cfg.eval)?;
    let outcome = mmkd_backbones::train(
        model.as_mut(),
        &evaluator,
        &cfg.train,
        &cfg.optim,
        &cfg.schedule,
        &args.out,
        args.resume,
        &device,
    )
    .with_context(|| format!("training {} into {}", args.model.name(), args.out.display()))?;
    print_outcome(&outcome, &dataset.name, &args.out);
    Ok(())
}

/// Resolves `layers` and logs the files applied; returns the configuration and the files, in order.
pub fn resolve_layers(layers: Layers) -> anyhow::Result<(RunConfig, Vec<String>)> {
    let (cfg, applied) = crate::config::resolve(&layers)?;
    let layers: Vec<String> = applied.iter().map(|p| p.display().to_string()).collect();
    tracing::info!(layers = %layers.join(" → "), "configuration");
    Ok((cfg, layers))
}

/// Writes the resolved configuration `cfg` of `args` with its layers to `args.out/config.toml` (atomically).
pub fn write_config(args: &TrainArgs, cfg: &RunConfig, layers: &[String]) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let text = format!(
        "# Resolved configuration of `cargo xtask train --model {} --extractor {}{}` on {}.\n# Layers: {}.\n\n{}",
        args.model.name(),
        args.extractor,
        if args.kdsr { " --kdsr" } else { "" },
        args.data.display(),
        if layers.is_empty() { "built-in defaults".to_string() } else { layers.join(" → ") },
        toml::to_string(cfg).context("serialising the configuration")?
    );
    let path = args.out.join("config.toml");
    mmkd_features::write_atomically(&path, |w| std::io::Write::write_all(w, text.as_bytes()))?;
    Ok(())
}

/// The extractor `choice` asks for, over the features normalised per `[data]`, under `vb`.
fn build_extractor(
    choice: &ExtractorChoice,
    vb: VarBuilder,
    cfg: &RunConfig,
    features: Option<FeatureStore>,
    dataset: &mmkd_data::Dataset,
    device: &Device,
) -> anyhow::Result<Option<Box<dyn FeatureExtractor>>> {
    if *choice == ExtractorChoice::None {
        return Ok(None);
    }
    let Some(mut features) = features else {
        bail!("--extractor {choice:?} needs item features, but {} has none", dataset.dir.display());
    };
    features.normalize(cfg.data.normalization);
    Ok(Some(match choice {
        ExtractorChoice::Vanilla => Box::new(Projection::new(vb, &cfg.projection, &features, device)?),
        _ => {
            let Some(labels) = dataset.labels.as_ref() else {
                bail!("SGFD needs item labels (MetaData_normal.npy), none found in {}", dataset.dir.display());
            };
            mmkd_student_kd::build_extractor(vb, &cfg.sgfd, &features, labels, device)?
        }
    }))
}

fn print_outcome(o: &TrainOutcome, data: &str, out: &std::path::Path) {
    println!(
        "{} on {} ({:?} protocol, selected on {} by {}): best epoch {} of {} run{}, {:.1}s",
        o.model,
        data,
        o.protocol,
        o.selected_on,
        o.criterion,
        o.best_epoch,
        o.epochs_run,
        if o.stopped_early { " (early stop)" } else { "" },
        o.secs
    );
    let columns = ["recall@20", "ndcg@20", "precision@20", "hit@20", "mrr@20", "recall@50", "ndcg@50"];
    println!("{:<8}{}", "split", columns.iter().map(|c| format!("{c:>14}")).collect::<String>());
    let rows: &[(&str, &std::collections::BTreeMap<String, f64>)] =
        if o.selected_on == "test" { &[("test", &o.test)] } else { &[("valid", &o.valid), ("test", &o.test)] };
    for (name, summary) in rows {
        let values: String =
            columns.iter().map(|c| format!("{:>14.4}", summary.get(*c).copied().unwrap_or(f64::NAN))).collect();
        println!("{name:<8}{values}");
    }
    println!(
        "ndcg form {:?}; {} test users; result: {}",
        o.ndcg_form,
        o.n_test_users,
        out.join("result.json").display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extractor_names() {
        assert_eq!(ExtractorChoice::parse("vanilla").unwrap(), ExtractorChoice::Vanilla);
        assert_eq!(ExtractorChoice::parse("sgfd_l").unwrap(), ExtractorChoice::Sgfd("sgfd_l".into()));
        assert!(ExtractorChoice::parse("sgfd_x").unwrap_err().to_string().contains("sgfd_l"));
        assert_eq!(ModelKind::from_str("mf", false).unwrap(), ModelKind::Mf);
    }
}
