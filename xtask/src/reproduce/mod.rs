//! `cargo xtask reproduce <dataset>`: every cell of a paper's tables, each a `cargo xtask train` run per seed,
//! then a report that puts our numbers next to the paper's.
//!
//! The definition is `configs/reproduce/<dataset>.toml` ([`mmkd_run::report::definition`]). Data: `data/<dataset>/` when it holds a
//! data set (the authors' files), else the generated preset of the same name is written there once. The plan
//! ([`plan`]) lists (cell, seed) runs under `runs/<run set>/<cell>/seed<N>/` — the run set is the data set's
//! name, with `-reference` under the reference protocol, `-joint` when the teacher mode is overridden to joint,
//! and `-quick` for the smoke version — and skips finished ones, so a table can be built over several
//! invocations. [`exec`] runs them as child processes with a progress view, and [`mmkd_run::report`]
//! writes `reports/<run set>/` (tables, t-tests, claims, CSV/JSON, SVG plots, the t-SNE map).

mod exec;
mod plan;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use mmkd_run::report::definition::{Spec, TeacherMode};
use mmkd_run::report::RunSet;

use plan::{Plan, Timing};

#[derive(Debug, Args)]
pub struct ReproduceArgs {
    /// Data set: `office` (SGFD: Table 2, Table 3, Fig. 3, Fig. 4) or `beauty` (KDSR: Table 2); the
    /// definition is `<configs>/reproduce/<dataset>.toml`.
    pub dataset: String,
    /// Data folder (default `data/<dataset>`, written from the preset of the same name when it holds no data
    /// set; with --quick, a small preset cached under `<runs>/quick-data/`).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Only these cells: names, table ids (their cells) or globs such as `grcn-*`, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Seeds per cell, 0..N (default: the definition's, 5 for office).
    #[arg(long)]
    pub seeds: Option<usize>,
    /// The short smoke version: every cell for a few epochs on a small generated preset, one seed.
    #[arg(long)]
    pub quick: bool,
    /// `holdout` (default), `reference`, or both comma-separated (each into its own run set and report).
    #[arg(long, value_delimiter = ',', default_value = "holdout")]
    pub protocol: Vec<String>,
    /// Override the definition's teacher mode: `pretrained` (one frozen teacher per data set and teacher
    /// architecture) or `joint` (trained inside every run, as the reference code does).
    #[arg(long)]
    pub teacher_mode: Option<String>,
    /// Print the plan (cells, seeds done, time estimate) and exit.
    #[arg(long)]
    pub plan: bool,
    /// Write the report from the finished runs without running anything.
    #[arg(long)]
    pub report_only: bool,
    /// Root of the run folders.
    #[arg(long, default_value = "runs")]
    pub runs: PathBuf,
    /// Root of the reports.
    #[arg(long, default_value = "reports")]
    pub reports: PathBuf,
    /// Folder of base.toml, dataset/, model/ and reproduce/.
    #[arg(long, default_value = "configs")]
    pub configs: PathBuf,
    /// A definition file instead of `<configs>/reproduce/<dataset>.toml`.
    #[arg(long)]
    pub spec: Option<PathBuf>,
    /// cpu, cuda or cuda:N (passed to every run).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Whether `dir` is absent or an empty folder.
fn is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(true)
}

/// The data folder of the run: `--data`, else the default folder, generated from `preset` when empty by a
/// `gen-data` child process (which knows every preset, of either layout), into a temporary sibling first so
/// that an interrupted generation leaves nothing half-written.
fn prepare_data(args: &ReproduceArgs, spec: &Spec) -> anyhow::Result<PathBuf> {
    if let Some(dir) = &args.data {
        if is_empty(dir) {
            bail!("--data {}: no data set there", dir.display());
        }
        return Ok(dir.clone());
    }
    let (dir, preset) = if args.quick {
        (args.runs.join("quick-data").join(&spec.quick.preset), &spec.quick.preset)
    } else {
        (crate::paths::repo("data").join(&args.dataset), &spec.preset)
    };
    if is_empty(&dir) {
        println!("{} holds no data set: writing the generated preset `{preset}` there (once)", dir.display());
        let tmp = dir.with_extension("generating");
        let _ = std::fs::remove_dir_all(&tmp);
        if let Some(parent) = tmp.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        let exe = std::env::current_exe().context("locating the xtask executable")?;
        let status = std::process::Command::new(exe)
            .args(["gen-data", "--preset", preset, "--seed", "0", "--out"])
            .arg(&tmp)
            .status()
            .context("starting gen-data")?;
        if !status.success() {
            bail!("generating the preset `{preset}` into {} failed ({status})", tmp.display());
        }
        if dir.exists() {
            std::fs::remove_dir(&dir).with_context(|| format!("replacing the empty {}", dir.display()))?;
        }
        std::fs::rename(&tmp, &dir).with_context(|| format!("moving {} to {}", tmp.display(), dir.display()))?;
    }
    Ok(dir)
}

pub fn run(args: &ReproduceArgs) -> anyhow::Result<()> {
    let spec_path =
        args.spec.clone().unwrap_or_else(|| args.configs.join("reproduce").join(format!("{}.toml", args.dataset)));
    if !spec_path.exists() {
        let known: Vec<String> = std::fs::read_dir(args.configs.join("reproduce"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_string_lossy().strip_suffix(".toml").map(str::to_owned))
            .collect();
        bail!("no definition {} for data set `{}` (known: {})", spec_path.display(), args.dataset, known.join(", "));
    }
    let mut spec = Spec::read(&spec_path)?;
    let mut suffix = String::new();
    if let Some(mode) = &args.teacher_mode {
        let mode: TeacherMode = serde_json::from_value(serde_json::Value::String(mode.clone()))
            .map_err(|_| anyhow::anyhow!("--teacher-mode {mode}: expected pretrained or joint"))?;
        if mode != spec.teacher_mode {
            suffix = format!("-{}", args.teacher_mode.as_deref().unwrap_or_default());
        }
        spec.teacher_mode = mode;
    }
    for model in spec.cells.iter().map(|c| c.model.as_str()) {
        if model.parse::<mmkd_run::ModelKind>().is_err() {
            bail!(
                "{}: model `{model}` is not a model of `cargo xtask train` in this build (the definition may be \
                 waiting for models that are not wired in yet)",
                spec_path.display()
            );
        }
    }
    let selected = spec.select(&args.only)?;
    let n_seeds = args.seeds.unwrap_or(if args.quick { spec.quick.seeds } else { spec.seeds });
    if n_seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    let data = prepare_data(args, &spec)?;
    let generated = mmkd_run::config::is_generated(&data);
    let mut failed = Vec::new();
    for protocol in &args.protocol {
        if protocol != "holdout" && protocol != "reference" {
            bail!("--protocol {protocol}: expected holdout or reference");
        }
        let mut name = args.dataset.clone();
        if protocol == "reference" {
            name.push_str("-reference");
        }
        name.push_str(&suffix);
        if args.quick {
            name.push_str("-quick");
        }
        let set = RunSet {
            dataset: args.dataset.clone(),
            dir: args.runs.join(&name),
            reports: args.reports.join(&name),
            data: data.clone(),
            generated,
            protocol: protocol.clone(),
            quick: args.quick,
            seeds: (0..n_seeds as u64).collect(),
            configs: args.configs.clone(),
            device: args.device.clone(),
        };
        failed.extend(run_set(args, &spec, &set, &selected)?);
    }
    if !failed.is_empty() {
        for f in &failed {
            eprintln!("failed: {}\n{}", f.what, f.message);
        }
        let names: Vec<&str> = failed.iter().map(|f| f.what.as_str()).collect();
        bail!("{} run(s) failed: {} (their logs are in the run folders)", failed.len(), names.join(", "));
    }
    Ok(())
}

/// Plans, runs and reports one run set; returns the runs that failed.
fn run_set(args: &ReproduceArgs, spec: &Spec, set: &RunSet, selected: &[usize]) -> anyhow::Result<Vec<exec::Failure>> {
    let mut plan = Plan::build(spec, set, selected)?;
    let mut timing = Timing::scan(spec, set);
    print!("{}", plan.render(spec, set, &timing));
    if args.plan {
        return Ok(Vec::new());
    }
    let failures = if args.report_only { Vec::new() } else { exec::run(&mut plan, spec, set, &mut timing)? };
    let written = mmkd_run::report::write(spec, set)?;
    println!("report: {} ({} files)", written.dir.join("report.md").display(), written.files.len());
    for note in &written.notes {
        println!("note: {note}");
    }
    Ok(failures)
}
