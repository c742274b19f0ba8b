//! `cargo xtask bench train`: seconds per training epoch and per full-ranking evaluation, set-up time and
//! peak memory of a backbone with one or several extractors, on one data folder.
//!
//! Each (model, extractor) cell runs in a child process of this binary, so that the peak resident memory
//! (`VmHWM` of `/proc/self/status`) is the cell's own; one cell alone runs in this process. A cell builds the
//! model exactly as `cargo xtask train` does (same layered configuration, same `--set`), then times
//! `--epochs` calls of `fit_epoch` and `--evals` rounds of `prepare_eval` + full ranking of the test users.
//! The first epoch is reported apart (allocation, caches); the epoch figure is the median of the others.
//! Nothing is asserted: the figures are printed, and appended as JSON lines to `--json` when given.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use mmkd_run::execute;
use mmkd_run::{ExtractorKind, ModelKind, RunSpec};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Args)]
pub struct BenchTrainArgs {
    /// Backbones, comma-separated (bm3, grcn, mf, pop, …).
    #[arg(long, value_enum, value_delimiter = ',', required = true)]
    pub model: Vec<ModelKind>,
    /// Extractors, comma-separated (vanilla, sgfd, a preset, none). For the sequential models (mmsr, sasrec,
    /// gru4rec) the cells are `vanilla` (the plain backbone) and, with `--kdsr`, `kdsr`.
    #[arg(long, value_delimiter = ',', default_value = "vanilla,sgfd")]
    pub extractor: Vec<String>,
    /// Sequential models: also time the backbone with KDSR (cell `kdsr`), next to the plain one.
    #[arg(long)]
    pub kdsr: bool,
    /// Data folder (SGFD or MMRec layout); its name picks `configs/dataset/<name>.toml`.
    #[arg(long)]
    pub data: PathBuf,
    /// A config file applied after the layered files, as for `train`.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// `KEY=VALUE` overrides, as for `train`. Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// A pretrained teacher folder for the SGFD cells (`sgfd.teacher_mode = "pretrained"`).
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// Timed training epochs per cell (the first is reported apart).
    #[arg(long, default_value_t = 3)]
    pub epochs: usize,
    /// Sequential models: time epochs of this many batches (instances drawn at random from the training
    /// set under `--seed`) instead of full epochs, e.g. `--batches 100` on beauty, where a full MMSR epoch
    /// takes a quarter of an hour on a 2-core CPU.
    #[arg(long)]
    pub batches: Option<usize>,
    /// Timed evaluations per cell.
    #[arg(long, default_value_t = 2)]
    pub evals: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Append one JSON line per cell to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Folder of base.toml, dataset/ and model/.
    #[arg(long, default_value = "configs")]
    pub configs: PathBuf,
    /// Run the single cell in this process and print its JSON line (used for the child processes).
    #[arg(long, hide = true)]
    pub child: bool,
}

/// The figures of one cell.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cell {
    pub model: String,
    pub extractor: String,
    pub data: String,
    pub device: String,
    pub n_users: usize,
    pub n_items: usize,
    pub n_train: usize,
    /// Loading the data and building the model (and, with a pretrained teacher, caching its outputs).
    pub setup_secs: f64,
    pub first_epoch_secs: f64,
    /// Median of the timed epochs after the first (the first when only one was run).
    pub epoch_secs: f64,
    pub batches_per_epoch: usize,
    /// Mean of `prepare_eval` + full ranking of every test user (none with `--evals 0`).
    pub eval_secs: Option<f64>,
    /// Peak resident memory of the process in MiB (`VmHWM`), where the OS reports it.
    pub peak_rss_mib: Option<f64>,
    /// Mean total loss of the last timed epoch and test Recall@20 after it (to show the cell trained).
    pub last_loss: Option<f64>,
    pub recall_at_20: Option<f64>,
}

const CHILD_MARK: &str = "BENCH-CELL ";

pub fn run(args: &BenchTrainArgs) -> anyhow::Result<()> {
    if args.epochs == 0 {
        bail!("--epochs must be at least 1");
    }
    let seq_cells: Vec<String> = if args.kdsr { vec!["vanilla".into(), "kdsr".into()] } else { vec!["vanilla".into()] };
    let cells: Vec<(ModelKind, String)> = if args.child {
        // A child runs exactly the cell it was given.
        args.model.iter().flat_map(|&m| args.extractor.iter().map(move |e| (m, e.clone()))).collect()
    } else {
        args.model
            .iter()
            .flat_map(|&m| {
                let list = if m.is_sequential() { seq_cells.clone() } else { args.extractor.clone() };
                list.into_iter().map(move |e| (m, e))
            })
            .collect()
    };
    if args.child || cells.len() == 1 {
        let (model, extractor) = cells.first().cloned().context("no cell: give --model and --extractor")?;
        let cell = run_cell(args, model, &extractor)?;
        if args.child {
            println!("{CHILD_MARK}{}", serde_json::to_string(&cell)?);
        } else {
            record(args, &[cell])?;
        }
        return Ok(());
    }
    let exe = std::env::current_exe().context("locating this binary for the child processes")?;
    let mut done = Vec::with_capacity(cells.len());
    for (i, (model, extractor)) in cells.iter().enumerate() {
        tracing::info!(cell = i + 1, of = cells.len(), model = model.name(), extractor = %extractor, "bench cell");
        let mut cmd = Command::new(&exe);
        cmd.args(["bench", "train", "--child", "--model", model.name(), "--extractor", extractor]);
        cmd.arg("--data").arg(&args.data).arg("--configs").arg(&args.configs);
        cmd.args(["--epochs", &args.epochs.to_string(), "--evals", &args.evals.to_string()]);
        cmd.args(["--device", &args.device, "--seed", &args.seed.to_string()]);
        if let Some(c) = &args.config {
            cmd.arg("--config").arg(c);
        }
        if let Some(t) = &args.teacher {
            cmd.arg("--teacher").arg(t);
        }
        if let Some(n) = args.batches {
            cmd.args(["--batches", &n.to_string()]);
        }
        for s in &args.set {
            cmd.args(["--set", s]);
        }
        let out = cmd.stderr(std::process::Stdio::inherit()).output().context("running a bench cell")?;
        if !out.status.success() {
            bail!("bench cell {} / {extractor} failed ({})", model.name(), out.status);
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix(CHILD_MARK))
            .with_context(|| format!("bench cell {} / {extractor} printed no figures", model.name()))?;
        done.push(serde_json::from_str::<Cell>(line)?);
    }
    record(args, &done)
}

fn run_cell(args: &BenchTrainArgs, model_kind: ModelKind, extractor: &str) -> anyhow::Result<Cell> {
    if model_kind.is_sequential() {
        return run_seq_cell(args, model_kind, extractor);
    }
    let started = Instant::now();
    let spec = cell_spec(args, model_kind, extractor.parse()?);
    let mut p = mmkd_run::prepare(&spec)?;
    let setup_secs = started.elapsed().as_secs_f64();
    let view = p.view.clone();
    let mut optimizer = execute::optimizer(p.model.as_ref(), &p.cfg)?;
    let mut epoch_secs = Vec::with_capacity(args.epochs);
    let (mut batches, mut last_loss) = (0, None);
    for epoch in 0..args.epochs {
        let mut rng = mmkd_data::stream(args.seed, &format!("epoch-{epoch}"));
        let t = Instant::now();
        let stats = execute::fit_epoch(p.model.as_mut(), epoch, &mut rng, &p.device, &mut optimizer)?;
        p.device.synchronize()?;
        epoch_secs.push(t.elapsed().as_secs_f64());
        batches = stats.n_batches;
        last_loss = stats.losses.get("total").copied();
        tracing::info!(epoch = epoch + 1, secs = epoch_secs[epoch], loss = ?last_loss, "bench epoch");
    }
    let (mut eval_total, mut recall) = (0.0, None);
    for _ in 0..args.evals {
        let t = Instant::now();
        let r = execute::evaluate(p.model.as_mut(), &view, &p.cfg)?;
        eval_total += t.elapsed().as_secs_f64();
        recall = r.summary.get("recall@20").copied();
    }
    let (first_epoch_secs, median_secs) = epoch_figures(&epoch_secs);
    Ok(Cell {
        model: model_kind.name().to_string(),
        extractor: extractor.to_string(),
        data: args.data.display().to_string(),
        device: args.device.clone(),
        n_users: view.n_users,
        n_items: view.n_items,
        n_train: view.train.nnz(),
        setup_secs,
        first_epoch_secs,
        epoch_secs: median_secs,
        batches_per_epoch: batches,
        eval_secs: (args.evals > 0).then(|| eval_total / args.evals as f64),
        peak_rss_mib: peak_rss_mib(),
        last_loss,
        recall_at_20: recall,
    })
}

/// A sequential cell: `extractor` is `vanilla` (the plain backbone) or `kdsr`. The figures are those of the
/// other cells; `recall_at_20` holds HR@20 on the test instances, and `n_users`/`n_items`/`n_train` are the
/// users, items and training instances.
fn run_seq_cell(args: &BenchTrainArgs, model_kind: ModelKind, extractor: &str) -> anyhow::Result<Cell> {
    let kdsr = match extractor {
        "vanilla" => false,
        "kdsr" => true,
        other => bail!("a sequential cell is `vanilla` or `kdsr`, not `{other}`"),
    };
    let started = Instant::now();
    let spec = RunSpec { kdsr, ..cell_spec(args, model_kind, ExtractorKind::Vanilla) };
    let p = mmkd_run::seq::prepare(&spec)?;
    let mut model = p.model.context("a sequential bench cell needs a trained model, not pop")?;
    let setup_secs = started.elapsed().as_secs_f64();
    let mut train = p.data.train_instances();
    if let Some(n) = args.batches {
        if n == 0 {
            bail!("--batches must be at least 1");
        }
        let mut rng = mmkd_data::stream(args.seed, "bench-batches");
        train.shuffle(&mut rng);
        train.truncate(n * p.cfg.seq.batch_size);
    }
    let n_train = train.len();
    model.set_training_instances(train)?;
    let test = p.data.test_instances();
    let mut optimizer = execute::optimizer(&model, &p.cfg)?;
    let mut epoch_secs = Vec::with_capacity(args.epochs);
    let mut last_loss = None;
    for epoch in 0..args.epochs {
        let mut rng = mmkd_data::stream(args.seed, &format!("epoch-{epoch}"));
        let t = Instant::now();
        let stats = execute::fit_epoch(&mut model, epoch, &mut rng, &p.device, &mut optimizer)?;
        p.device.synchronize()?;
        epoch_secs.push(t.elapsed().as_secs_f64());
        last_loss = stats.losses.get("total").copied();
        tracing::info!(epoch = epoch + 1, secs = epoch_secs[epoch], loss = ?last_loss, "bench epoch");
    }
    let (mut eval_total, mut hr) = (0.0, None);
    for _ in 0..args.evals {
        let t = Instant::now();
        let r = execute::seq_evaluate(&model, &p.data, &test)?;
        eval_total += t.elapsed().as_secs_f64();
        hr = r.summary.get("hr@20").copied();
    }
    let (first_epoch_secs, median_secs) = epoch_figures(&epoch_secs);
    Ok(Cell {
        model: model_kind.name().to_string(),
        extractor: extractor.to_string(),
        data: args.data.display().to_string(),
        device: args.device.clone(),
        n_users: p.data.n_users,
        n_items: p.data.n_items,
        n_train,
        setup_secs,
        first_epoch_secs,
        epoch_secs: median_secs,
        batches_per_epoch: n_train.div_ceil(p.cfg.seq.batch_size),
        eval_secs: (args.evals > 0).then(|| eval_total / args.evals as f64),
        peak_rss_mib: peak_rss_mib(),
        last_loss,
        recall_at_20: hr,
    })
}

/// The spec of one cell: `model` with `extractor` as `train` would build it, under the bench's data,
/// configuration, overrides and seed; a teacher only for the SGFD extractors.
fn cell_spec(args: &BenchTrainArgs, model: ModelKind, extractor: ExtractorKind) -> RunSpec {
    let teacher = args.teacher.clone().filter(|_| matches!(extractor, ExtractorKind::Sgfd(_)));
    RunSpec {
        config: args.config.clone(),
        set: args.set.clone(),
        teacher,
        seed: Some(args.seed),
        device: args.device.clone(),
        configs: args.configs.clone(),
        ..RunSpec::new(model, extractor, args.data.clone())
    }
}

/// The first epoch's seconds and the median of the others (of the first when only one was timed).
fn epoch_figures(epoch_secs: &[f64]) -> (f64, f64) {
    let mut rest = if epoch_secs.len() > 1 { epoch_secs[1..].to_vec() } else { epoch_secs.to_vec() };
    rest.sort_by(f64::total_cmp);
    (epoch_secs[0], rest[rest.len() / 2])
}

/// `VmHWM` of this process in MiB, on Linux.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Prints the table (with each extractor's epoch time relative to the model's vanilla cell) and appends
/// the JSON lines.
fn record(args: &BenchTrainArgs, cells: &[Cell]) -> anyhow::Result<()> {
    println!(
        "{:<6} {:<16} {:>9} {:>9} {:>9} {:>8} {:>9} {:>9} {:>10} {:>9}",
        "model", "extractor", "setup s", "epoch 1", "epoch s", "vs van.", "batches", "eval s", "peak MiB", "R@20"
    );
    for c in cells {
        let vanilla = cells.iter().find(|v| v.model == c.model && v.extractor == "vanilla").map(|v| v.epoch_secs);
        let rel = vanilla.map_or_else(|| "—".to_string(), |v| format!("{:+.0}%", 100.0 * (c.epoch_secs / v - 1.0)));
        println!(
            "{:<6} {:<16} {:>9.2} {:>9.2} {:>9.2} {:>8} {:>9} {:>9} {:>10} {:>9}",
            c.model,
            c.extractor,
            c.setup_secs,
            c.first_epoch_secs,
            c.epoch_secs,
            rel,
            c.batches_per_epoch,
            c.eval_secs.map_or_else(|| "—".into(), |e| format!("{e:.2}")),
            c.peak_rss_mib.map_or_else(|| "n/a".into(), |m| format!("{m:.0}")),
            c.recall_at_20.map_or_else(|| "—".into(), |r| format!("{r:.4}")),
        );
    }
    println!("data {} on {}; epoch s = median of epochs 2..{}", args.data.display(), args.device, args.epochs);
    if let Some(path) = &args.json {
        let mut text = std::fs::read_to_string(path).unwrap_or_default();
        for c in cells {
            text.push_str(&serde_json::to_string(c)?);
            text.push('\n');
        }
        mmkd_features::write_atomically(path, |w| std::io::Write::write_all(w, text.as_bytes()))?;
    }
    Ok(())
}
