//! Running the plan: each teacher and each (cell, seed) is a child process of this executable (`teacher …`,
//! `train … --out DIR`), so a crash stays in its cell; its output goes to the run folder's `train.log`.
//! Finished runs were skipped by the plan; an interrupted one continues with `--resume`. While a child runs,
//! its `metrics.jsonl` is polled for the progress view: runs done / total, the current run's epoch,
//! elapsed time and the estimate of what remains.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use mmkd_run::report::epochs::{duration, read_epochs};

use super::plan::{JobState, Plan, Timing, CELL_FILE, LOG_FILE};
use super::RunSet;
use mmkd_run::report::definition::Spec;

/// A run that failed: what and why.
#[derive(Debug, Clone)]
pub struct Failure {
    pub what: String,
    pub message: String,
}

/// The progress view on stderr: one rewritten line on a terminal, a line per epoch otherwise.
struct Progress {
    started: Instant,
    tty: bool,
    last_len: usize,
}

impl Progress {
    fn status(&mut self, line: &str) {
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r{line:<width$}", width = self.last_len);
            self.last_len = line.chars().count();
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    /// Ends the status line with a permanent one.
    fn finish(&mut self, line: &str) {
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = writeln!(err, "\r{line:<width$}", width = self.last_len);
            self.last_len = 0;
        } else {
            let _ = writeln!(err, "{line}");
        }
    }
}

/// Runs the teachers and the jobs of `plan` that are not done; returns the failures.
pub fn run(plan: &mut Plan, spec: &Spec, set: &RunSet, timing: &mut Timing) -> anyhow::Result<Vec<Failure>> {
    let exe = std::env::current_exe().context("locating the xtask executable")?;
    let mut progress = Progress { started: Instant::now(), tty: std::io::stderr().is_terminal(), last_len: 0 };
    let mut failures = Vec::new();
    let mut failed_teachers = Vec::new();
    for (t, teacher) in plan.teachers.iter_mut().enumerate() {
        if teacher.done {
            continue;
        }
        std::fs::create_dir_all(&teacher.dir).with_context(|| format!("creating {}", teacher.dir.display()))?;
        let config = teacher.dir.join("pretrain.toml");
        mmkd_features::write_atomically(&config, |w| w.write_all(teacher.pretrain.as_bytes()))?;
        progress.status(&format!("teacher {} for {} …", teacher.dir.display(), teacher.cells.join(", ")));
        let started = Instant::now();
        let mut child = spawn(&exe, &teacher.args, &set.device, &teacher.dir.join(LOG_FILE))?;
        let status = child.wait().context("waiting for the teacher job")?;
        if status.success() {
            teacher.done = true;
            progress.finish(&format!(
                "teacher {} done in {}",
                teacher.dir.display(),
                duration(started.elapsed().as_secs_f64())
            ));
        } else {
            failed_teachers.push(t);
            let message = log_tail(&teacher.dir.join(LOG_FILE));
            progress.finish(&format!("teacher {} FAILED ({status}):\n{message}", teacher.dir.display()));
            failures.push(Failure { what: format!("teacher {}", teacher.dir.display()), message });
        }
    }

    let total = plan.jobs.len();
    let mut done = plan.jobs.iter().filter(|j| j.state == JobState::Done).count();
    for index in 0..plan.jobs.len() {
        let job = plan.jobs[index].clone();
        if job.state == JobState::Done {
            continue;
        }
        let cell = &spec.cells[job.cell];
        let what = format!("{} seed {}", cell.name, job.seed);
        if job.teacher.is_some_and(|t| failed_teachers.contains(&t)) {
            failures.push(Failure { what, message: "its teacher failed".into() });
            continue;
        }
        std::fs::create_dir_all(&job.dir).with_context(|| format!("creating {}", job.dir.display()))?;
        let record = serde_json::json!({ "cell": cell.name, "seed": job.seed, "args": job.args });
        let text = serde_json::to_string_pretty(&record)?;
        mmkd_features::write_atomically(&job.dir.join(CELL_FILE), |w| w.write_all(text.as_bytes()))?;
        let mut args = job.args.clone();
        args.extend(["--out".to_string(), job.dir.display().to_string()]);
        if matches!(job.state, JobState::Partial(_)) {
            args.push("--resume".into());
        }
        let started = Instant::now();
        let mut child = spawn(&exe, &args, &set.device, &job.dir.join(LOG_FILE))?;
        let estimate_this = timing.estimate(spec, set, &job);
        let later: f64 = plan.jobs[index + 1..].iter().map(|j| timing.estimate(spec, set, j)).sum();
        let mut last_epoch = usize::MAX;
        let status = loop {
            if let Some(status) = child.try_wait().context("waiting for a training run")? {
                break status;
            }
            let epochs = read_epochs(&job.dir);
            let epoch = epochs.last().map_or(0, |e| e.epoch);
            if epoch != last_epoch || progress.tty {
                last_epoch = epoch;
                let running = started.elapsed().as_secs_f64();
                let eta = later + (estimate_this - running).max(0.0);
                let best = epochs.iter().filter_map(|e| e.criterion).fold(f64::NAN, f64::max);
                progress.status(&format!(
                    "[{done:>3}/{total}] {what}: epoch {epoch}{}{} | elapsed {} | ETA {}",
                    job.max_epochs.map_or(String::new(), |m| format!("/{m}")),
                    if best.is_nan() { String::new() } else { format!(" (best {best:.4})") },
                    duration(progress.started.elapsed().as_secs_f64()),
                    duration(eta)
                ));
            }
            std::thread::sleep(Duration::from_millis(if progress.tty { 500 } else { 1000 }));
        };
        let secs = started.elapsed().as_secs_f64();
        if status.success() {
            done += 1;
            plan.jobs[index].state = JobState::Done;
            timing.rescan(set, &cell.name);
            progress.finish(&format!("[{done:>3}/{total}] {what} done in {}{}", duration(secs), headline(&job.dir)));
        } else {
            let message = log_tail(&job.dir.join(LOG_FILE));
            progress
                .finish(&format!("[{done:>3}/{total}] {what} FAILED ({status}) after {}:\n{message}", duration(secs)));
            failures.push(Failure { what, message });
        }
    }
    Ok(failures)
}

/// Starts `exe args --device DEVICE` with stdout and stderr appended to `log`.
fn spawn(exe: &Path, args: &[String], device: &str, log: &Path) -> anyhow::Result<Child> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let err = file.try_clone().with_context(|| format!("opening {}", log.display()))?;
    Command::new(exe)
        .args(args)
        .args(["--device", device])
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .spawn()
        .with_context(|| format!("starting {} {}", exe.display(), args.join(" ")))
}

/// ` : recall@20 0.0655 (best epoch 4 of 6)` from a finished run's `result.json`.
fn headline(run: &Path) -> String {
    let Ok(text) = std::fs::read_to_string(run.join(mmkd_run::execute::RESULT_FILE)) else { return String::new() };
    let Ok(r) = serde_json::from_str::<serde_json::Value>(&text) else { return String::new() };
    let criterion = r["criterion"].as_str().unwrap_or("recall@20");
    let value = r["test"][criterion].as_f64().or_else(|| r["test"]["recall@20"].as_f64());
    match value {
        Some(v) => format!(
            ": test {criterion} {v:.4} (best epoch {} of {})",
            r["best_epoch"].as_u64().unwrap_or(0),
            r["epochs_run"].as_u64().unwrap_or(0)
        ),
        None => String::new(),
    }
}

/// The last lines of a log, indented, for a failure message.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(12)..];
    format!("    {}\n    (log: {})", tail.join("\n    "), log.display())
}
