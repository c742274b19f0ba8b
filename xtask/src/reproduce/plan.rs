//! The plan of a reproduction: every (cell, seed) as a `cargo xtask train` argument list with its run folder
//! and state (done, interrupted, pending), the pretrained teachers the SGFD cells share, and the time
//! estimate — from the measured epochs of finished runs where there are some, else from the spec's priors.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use mmkd_run::config::Layers;
use mmkd_run::execute::{TrainState, RESULT_FILE};
use mmkd_run::report::definition::{CellSpec, Spec, TeacherMode};
use mmkd_run::report::epochs::{duration, read_epochs};
use mmkd_run::report::RunSet;
use toml::{Table, Value};

/// Written into every run folder before the run starts: the arguments it was started with.
pub const CELL_FILE: &str = "cell.json";
/// The log of a child process (its stdout and stderr).
pub const LOG_FILE: &str = "train.log";

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// `result.json` exists: skipped.
    Done,
    /// Interrupted after this many finished epochs (`state.json`): continued with `--resume`.
    Partial(usize),
    Pending,
}

/// One `train` run: a cell at a seed.
#[derive(Debug, Clone)]
pub struct Job {
    /// Index into `Spec::cells`.
    pub cell: usize,
    pub seed: u64,
    /// `<runs>/<run set>/<cell>/seed<N>`.
    pub dir: PathBuf,
    /// The `train` arguments without `--out`, `--device` and `--resume` (what `cell.json` records).
    pub args: Vec<String>,
    /// Index into `Plan::teachers`.
    pub teacher: Option<usize>,
    pub state: JobState,
    /// Maximum epochs, when the arguments fix it.
    pub max_epochs: Option<usize>,
}

/// A pretrained teacher shared by the SGFD cells of one teacher architecture.
#[derive(Debug, Clone)]
pub struct TeacherJob {
    /// `<runs>/<run set>/teachers/<hash of its pretraining config, normalisation and data>`.
    pub dir: PathBuf,
    /// The `mmkd_teacher::PretrainConfig` it is trained with (`pretrain.toml`).
    pub pretrain: String,
    /// `teacher` arguments.
    pub args: Vec<String>,
    /// Cells that use it.
    pub cells: Vec<String>,
    pub done: bool,
}

#[derive(Debug, Clone)]
pub struct Plan {
    /// Seed-major: every cell at seed 0 first, so that a partial table has every row early.
    pub jobs: Vec<Job>,
    pub teachers: Vec<TeacherJob>,
}

impl Plan {
    /// Plans the `selected` cells over `set.seeds`.
    pub fn build(spec: &Spec, set: &RunSet, selected: &[usize]) -> anyhow::Result<Self> {
        let mut teachers: Vec<TeacherJob> = Vec::new();
        let mut teacher_of: BTreeMap<usize, usize> = BTreeMap::new();
        if spec.teacher_mode == TeacherMode::Pretrained {
            for &c in selected {
                let cell = &spec.cells[c];
                if let Some((pretrain, normalization)) = teacher_for(spec, set, cell)? {
                    let dir = set
                        .dir
                        .join("teachers")
                        .join(fnv_hex(&format!("{pretrain}\n{normalization}\n{}", set.data.display())));
                    let index = match teachers.iter().position(|t| t.dir == dir) {
                        Some(i) => i,
                        None => {
                            let args = vec![
                                "teacher".to_string(),
                                "--data".into(),
                                set.data.display().to_string(),
                                "--config".into(),
                                dir.join("pretrain.toml").display().to_string(),
                                "--normalize".into(),
                                normalization,
                                "--out".into(),
                                dir.display().to_string(),
                            ];
                            let done = dir.join(mmkd_teacher::pretrain::WEIGHTS_FILE).exists();
                            teachers.push(TeacherJob { dir, pretrain, args, cells: Vec::new(), done });
                            teachers.len() - 1
                        }
                    };
                    teachers[index].cells.push(cell.name.clone());
                    teacher_of.insert(c, index);
                }
            }
        }
        let mut jobs = Vec::new();
        let mut conflicts = Vec::new();
        for &seed in &set.seeds {
            for &c in selected {
                let cell = &spec.cells[c];
                let teacher = teacher_of.get(&c).copied();
                let max_epochs = if set.quick { Some(spec.quick.epochs) } else { cell.epochs.or(spec.epochs) };
                let args = train_args(spec, set, cell, seed, max_epochs, teacher.map(|t| teachers[t].dir.as_path()));
                let dir = set.dir.join(&cell.name).join(format!("seed{seed}"));
                if let Some(recorded) = recorded_args(&dir)? {
                    if recorded != args {
                        conflicts.push(format!(
                            "{} was run with other arguments:\n    recorded: {}\n    planned:  {}",
                            dir.display(),
                            recorded.join(" "),
                            args.join(" ")
                        ));
                    }
                }
                let state = job_state(&dir)?;
                jobs.push(Job { cell: c, seed, dir, args, teacher, state, max_epochs });
            }
        }
        if !conflicts.is_empty() {
            bail!(
                "{} run folder(s) belong to another configuration; remove them, or write this one elsewhere \
                 with --runs DIR:\n  {}",
                conflicts.len(),
                conflicts.join("\n  ")
            );
        }
        Ok(Self { jobs, teachers })
    }

    /// Jobs still to run.
    pub fn remaining(&self) -> usize {
        self.jobs.iter().filter(|j| j.state != JobState::Done).count()
    }

    /// The plan as printed before running: cells, seeds done, teachers and the time estimate.
    pub fn render(&self, spec: &Spec, set: &RunSet, timing: &Timing) -> String {
        let mut out = String::new();
        let cells: Vec<usize> = {
            let mut seen = Vec::new();
            for j in &self.jobs {
                if !seen.contains(&j.cell) {
                    seen.push(j.cell);
                }
            }
            seen
        };
        let _ = writeln!(
            out,
            "reproduce {}: {} cell(s) × {} seed(s) = {} runs, {} protocol{}",
            set.dataset,
            cells.len(),
            set.seeds.len(),
            self.jobs.len(),
            set.protocol,
            if set.quick { ", quick smoke version" } else { "" }
        );
        let _ = writeln!(
            out,
            "data: {} ({}); runs: {}; report: {}",
            set.data.display(),
            if set.generated { "generated preset" } else { "user-supplied data" },
            set.dir.display(),
            set.reports.display()
        );
        for t in &self.teachers {
            let _ = writeln!(
                out,
                "teacher {} [{}]: pretrained once, frozen, for {}",
                t.dir.display(),
                if t.done { "done" } else { "to train" },
                t.cells.join(", ")
            );
        }
        let _ = writeln!(out, "{:<30}{:<9}{:<24}{:>8}{:>12}", "cell", "model", "extractor", "done", "estimate");
        let mut total = self.teachers.iter().filter(|t| !t.done).count() as f64 * timing.teacher_estimate(spec, set);
        for &c in &cells {
            let cell = &spec.cells[c];
            let jobs: Vec<&Job> = self.jobs.iter().filter(|j| j.cell == c).collect();
            let done = jobs.iter().filter(|j| j.state == JobState::Done).count();
            let secs: f64 = jobs.iter().map(|j| timing.estimate(spec, set, j)).sum();
            total += secs;
            let _ = writeln!(
                out,
                "{:<30}{:<9}{:<24}{:>8}{:>12}",
                cell.name,
                cell.model,
                cell.extractor.as_deref().unwrap_or("-"),
                format!("{done}/{}", jobs.len()),
                if done == jobs.len() { "-".to_string() } else { duration(secs) }
            );
        }
        let _ = writeln!(
            out,
            "{} of {} runs to do; estimated {} on this machine ({})",
            self.remaining(),
            self.jobs.len(),
            duration(total),
            if timing.measured_cells() == 0 {
                "from the priors of the spec; measured times replace them as cells finish".to_string()
            } else {
                format!("from {} measured cell(s) and the spec's priors", timing.measured_cells())
            }
        );
        out
    }
}

/// The `train` arguments of `cell` at `seed`, without `--out`, `--device` and `--resume`.
fn train_args(
    spec: &Spec,
    set: &RunSet,
    cell: &CellSpec,
    seed: u64,
    epochs: Option<usize>,
    teacher: Option<&Path>,
) -> Vec<String> {
    let mut a: Vec<String> = vec!["train".into(), "--model".into(), cell.model.clone()];
    if let Some(e) = &cell.extractor {
        a.extend(["--extractor".into(), e.clone()]);
    }
    a.extend([
        "--data".into(),
        set.data.display().to_string(),
        "--configs".into(),
        set.configs.display().to_string(),
        "--seed".into(),
        seed.to_string(),
    ]);
    if let Some(n) = epochs {
        a.extend(["--epochs".into(), n.to_string()]);
    }
    if let Some(t) = teacher {
        a.extend(["--teacher".into(), t.display().to_string()]);
    }
    for s in cell_sets(spec, set, cell) {
        a.extend(["--set".into(), s]);
    }
    a.extend(cell.args.iter().cloned());
    a
}

/// The `--set` values of `cell`, in order: normalisation, protocol, the spec's, the cell's, then (quick) the
/// quick ones.
fn cell_sets(spec: &Spec, set: &RunSet, cell: &CellSpec) -> Vec<String> {
    let mut sets = Vec::new();
    if let Some(n) = &spec.normalization {
        sets.push(format!("data.normalization={n}"));
    }
    if set.protocol != "holdout" {
        sets.push(format!("train.protocol={}", set.protocol));
    }
    sets.extend(spec.set.iter().cloned());
    sets.extend(cell.set.iter().cloned());
    if set.quick {
        sets.extend(spec.quick.set.iter().cloned());
        sets.extend(cell.quick_set.iter().cloned());
    }
    sets
}

/// For an SGFD cell that distils from a teacher: the teacher's pretraining config (TOML) and the
/// normalisation of the features it must be trained on. The architecture comes from the cell's resolved
/// `[sgfd]`; the training recipe (and any `[teacher]` key it sets) from `<configs>/teacher.toml`.
fn teacher_for(spec: &Spec, set: &RunSet, cell: &CellSpec) -> anyhow::Result<Option<(String, String)>> {
    let Some(extractor) = cell.extractor.as_deref().filter(|_| cell.is_sgfd()) else { return Ok(None) };
    let layers = Layers {
        configs_dir: set.configs.clone(),
        dataset: set.data.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        model: cell.model.clone(),
        generated: set.generated,
        sgfd_base: Some(mmkd_student_kd::preset(extractor)?),
        file: None,
        sets: cell_sets(spec, set, cell),
        flags: Vec::new(),
    };
    let (cfg, _) =
        mmkd_run::config::resolve(&layers).with_context(|| format!("resolving the config of cell `{}`", cell.name))?;
    if cfg.sgfd.backbone_source != mmkd_student_kd::BackboneSource::Student || !cfg.sgfd.uses_kd() {
        return Ok(None); // The extractor is itself a teacher trained with the backbone (Fig. 3), or no KD.
    }
    let recipe_path = set.configs.join("teacher.toml");
    let mut recipe = if recipe_path.exists() { mmkd_run::config::read_table(&recipe_path)? } else { Table::new() };
    let mut teacher = match Value::try_from(cfg.sgfd.teacher_config()).context("serialising the teacher config")? {
        Value::Table(t) => t,
        _ => bail!("the teacher config is not a table"),
    };
    if let Some(Value::Table(overrides)) = recipe.remove("teacher") {
        mmkd_run::config::merge(&mut teacher, overrides);
    }
    recipe.insert("teacher".into(), Value::Table(teacher));
    if set.quick {
        if let Some(e) = spec.quick.teacher_epochs {
            recipe.insert("epochs".into(), Value::Integer(i64::try_from(e)?));
        }
    }
    let text = toml::to_string(&recipe).context("serialising the teacher's pretraining config")?;
    toml::from_str::<mmkd_teacher::PretrainConfig>(&text)
        .with_context(|| format!("the teacher of cell `{}` from {}", cell.name, recipe_path.display()))?;
    let normalization = match Value::try_from(cfg.data.normalization)? {
        Value::String(s) => s,
        other => bail!("unexpected normalisation {other}"),
    };
    Ok(Some((text, normalization)))
}

/// The arguments a run folder records, if it has been started.
fn recorded_args(dir: &Path) -> anyhow::Result<Option<Vec<String>>> {
    let path = dir.join(CELL_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let args =
        serde_json::from_value(value["args"].clone()).with_context(|| format!("{}: no `args` list", path.display()))?;
    Ok(Some(args))
}

/// Done (`result.json`), interrupted (`state.json`) or pending.
pub fn job_state(dir: &Path) -> anyhow::Result<JobState> {
    if dir.join(RESULT_FILE).exists() {
        return Ok(JobState::Done);
    }
    match TrainState::read(dir)? {
        Some(state) => Ok(JobState::Partial(state.epochs_done)),
        None => Ok(JobState::Pending),
    }
}

/// Measured seconds per epoch and epochs run of the finished runs of each cell.
#[derive(Debug, Clone, Default)]
pub struct Timing {
    /// `cell → [(seconds per epoch, epochs run)]`, one entry per finished run.
    per_cell: BTreeMap<String, Vec<(f64, f64)>>,
    /// `cell → model`.
    models: BTreeMap<String, String>,
}

impl Timing {
    /// Reads the finished runs of every cell of `spec` in the run set.
    pub fn scan(spec: &Spec, set: &RunSet) -> Self {
        let mut t = Self::default();
        for cell in &spec.cells {
            t.models.insert(cell.name.clone(), cell.model.clone());
            t.rescan(set, &cell.name);
        }
        t
    }

    /// Re-reads the finished runs of `cell` (after one finished).
    pub fn rescan(&mut self, set: &RunSet, cell: &str) {
        let mut runs = Vec::new();
        let dir = set.dir.join(cell);
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let run = entry.path();
            if !run.join(RESULT_FILE).exists() {
                continue;
            }
            let secs: Vec<f64> = read_epochs(&run).iter().filter_map(|e| e.secs).collect();
            if !secs.is_empty() {
                runs.push((secs.iter().sum::<f64>() / secs.len() as f64, secs.len() as f64));
            }
        }
        self.per_cell.insert(cell.to_string(), runs);
    }

    fn measured_cells(&self) -> usize {
        self.per_cell.values().filter(|v| !v.is_empty()).count()
    }

    /// Seconds per epoch and expected epochs of `cell`: measured on the cell, else the model's measured
    /// speed, else the spec's priors.
    fn rates(&self, spec: &Spec, set: &RunSet, cell: &CellSpec, max_epochs: Option<usize>) -> (f64, f64) {
        let mean = |v: &[(f64, f64)]| {
            let n = v.len() as f64;
            (v.iter().map(|x| x.0).sum::<f64>() / n, v.iter().map(|x| x.1).sum::<f64>() / n)
        };
        let cap = |e: f64| max_epochs.map_or(e, |m| e.min(m as f64));
        let expected = cap(if set.quick { spec.quick.epochs as f64 } else { spec.prior.expected_epochs });
        if let Some(v) = self.per_cell.get(&cell.name).filter(|v| !v.is_empty()) {
            return mean(v);
        }
        let same_model: Vec<(f64, f64)> = self
            .per_cell
            .iter()
            .filter(|(c, _)| self.models.get(*c) == Some(&cell.model))
            .flat_map(|(_, v)| v.iter().copied())
            .collect();
        if !same_model.is_empty() {
            return (mean(&same_model).0, expected);
        }
        let prior = if set.quick {
            spec.quick.secs_per_epoch
        } else {
            spec.prior.secs_per_epoch.get(&cell.model).copied().unwrap_or(spec.prior.default_secs_per_epoch)
        };
        (prior, expected)
    }

    /// Seconds `job` still needs.
    pub fn estimate(&self, spec: &Spec, set: &RunSet, job: &Job) -> f64 {
        let (per_epoch, epochs) = self.rates(spec, set, &spec.cells[job.cell], job.max_epochs);
        match job.state {
            JobState::Done => 0.0,
            JobState::Partial(done) => (epochs - done as f64).max(1.0) * per_epoch,
            JobState::Pending => epochs.max(1.0) * per_epoch,
        }
    }

    /// Seconds a pending teacher needs.
    pub fn teacher_estimate(&self, spec: &Spec, set: &RunSet) -> f64 {
        if set.quick {
            spec.quick.secs_per_epoch * 2.0
        } else {
            spec.prior.teacher_secs
        }
    }
}

/// FNV-1a (64-bit) of `text` as 16 hex digits: a stable folder name (std's hasher may change between
/// releases).
pub fn fnv_hex(text: &str) -> String {
    format!("{:016x}", mmkd_run::compress::fnv1a(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_and_job_states() {
        // FNV-1a test vectors: "" → cbf29ce484222325, "a" → af63dc4c8601ec8c.
        assert_eq!(fnv_hex(""), "cbf29ce484222325");
        assert_eq!(fnv_hex("a"), "af63dc4c8601ec8c");
        let dir = std::env::temp_dir().join(format!("mmkd-plan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(job_state(&dir).unwrap(), JobState::Pending);
        // An interrupted run: a checkpoint whose trainer state (the safetensors metadata) says 2 epochs.
        let state = r#"{"model":"mf","seed":0,"protocol":"holdout","criterion":"recall@20","epochs_done":2,"best_epoch":1,"best_value":0.1,"best_value_bits":0,"bad_evals":1,"lr":0.001,"stopped_early":false}"#;
        let header = serde_json::json!({ "__metadata__": { "state": state } }).to_string();
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        std::fs::write(dir.join(mmkd_run::execute::CHECKPOINT_FILE), bytes).unwrap();
        assert_eq!(job_state(&dir).unwrap(), JobState::Partial(2));
        std::fs::write(dir.join("result.json"), "{}").unwrap();
        assert_eq!(job_state(&dir).unwrap(), JobState::Done);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
