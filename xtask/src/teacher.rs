//! `cargo xtask teacher --data DIR --out DIR`: SGFD's separately trained teacher, on the labels alone.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;

#[derive(Debug, Args)]
pub struct TeacherArgs {
    /// Data folder with features and labels (SGFD layout).
    #[arg(long, default_value = "data/office")]
    pub data: PathBuf,
    /// Output folder for teacher.safetensors, teacher.toml and report.json (default `runs/<data name>/teacher`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A TOML file with a `PretrainConfig` (fields seed, epochs, lr, batch_size, heldout_fraction, `[teacher]`);
    /// the library defaults apply when the file does not exist.
    #[arg(long, default_value = "configs/teacher.toml")]
    pub config: PathBuf,
    /// Overrides of the config's epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Override of the config's learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Override of the config's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Preprocessing of the generic features before training: none (as the reference feeds them), l2 or
    /// standard (per-column z-score; raw non-negative VGG-like features otherwise keep the visual teacher
    /// near the majority rate).
    #[arg(long, default_value = "standard")]
    pub normalize: String,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn run(args: &TeacherArgs) -> anyhow::Result<()> {
    let device = mmkd_run::device::parse(&args.device)?;
    let path = &args.config;
    let mut cfg = if path.exists() {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str::<mmkd_teacher::PretrainConfig>(&text).with_context(|| format!("parsing {}", path.display()))?
    } else {
        tracing::warn!(path = %path.display(), "no teacher config; using the library defaults");
        mmkd_teacher::PretrainConfig::default()
    };
    if let Some(e) = args.epochs {
        cfg.epochs = e;
    }
    if let Some(lr) = args.lr {
        cfg.lr = lr;
    }
    if let Some(seed) = args.seed {
        cfg.seed = seed;
    }
    let (dataset, features) = mmkd_run::load_checked(&args.data)?;
    let Some(labels) = dataset.labels.as_ref() else {
        bail!("{}: the teacher needs item labels (MetaData_normal.npy), none found", args.data.display());
    };
    let Some(mut features) = features else {
        bail!("{}: the teacher needs item features, none found", args.data.display());
    };
    let norm: mmkd_features::Normalization = toml::Value::String(args.normalize.clone())
        .try_into()
        .with_context(|| format!("--normalize {}: expected none, l2 or standard", args.normalize))?;
    features.normalize(norm);
    let out = args.out.clone().unwrap_or_else(|| crate::paths::repo("runs").join(&dataset.name).join("teacher"));
    let started = std::time::Instant::now();
    let outcome = mmkd_teacher::pretrain(&features, labels, &cfg, &device)?;
    outcome.save(&out).with_context(|| format!("saving the teacher to {}", out.display()))?;
    let r = &outcome.report;
    println!(
        "teacher on {} ({} train / {} held-out items, {} labels), {:.1}s",
        args.data.display(),
        r.n_train,
        r.n_heldout,
        r.n_labels,
        started.elapsed().as_secs_f64()
    );
    println!("{:<12}{:>16}{:>16}", "classifier", "held-out acc", "train acc");
    for (name, acc) in &r.heldout_accuracy {
        println!("{:<12}{:>16.4}{:>16.4}", name, acc, r.train_accuracy.get(name).copied().unwrap_or(f64::NAN));
    }
    println!("{:<12}{:>16.4}", "majority", r.majority_rate);
    println!("saved: {}", out.display());
    Ok(())
}
