//! The tables of a run set, computed from the run folders only: the finished runs of each cell, the paper's
//! tables with our mean ± std beside the paper's values, the relative improvements, paired t-tests over
//! users and over seeds with the paper's `*`, which of the paper's claims hold, and their Markdown.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;

use crate::error::Context;
use serde::Serialize;

use super::definition::{display_metric, ClaimSpec, Spec, TableSpec};
use super::stats::{self, format_p, mean_std, relative_improvement, PerUser};
use super::RunSet;

/// One finished run (`result.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub seed: u64,
    pub dir: PathBuf,
    /// Test summary: `recall@20`, `ndcg@20`, … (fractions).
    pub test: BTreeMap<String, f64>,
    pub ndcg_form: Option<String>,
    pub protocol: Option<String>,
    pub selected_on: Option<String>,
    pub criterion: Option<String>,
    pub best_epoch: Option<u64>,
    pub epochs_run: Option<u64>,
    pub secs: Option<f64>,
}

/// The finished runs of one cell, by seed.
#[derive(Debug, Clone, Serialize)]
pub struct CellRuns {
    pub name: String,
    pub model: String,
    pub extractor: Option<String>,
    pub runs: Vec<Run>,
}

impl CellRuns {
    pub(crate) fn values(&self, metric: &str) -> Vec<f64> {
        self.runs.iter().filter_map(|r| r.test.get(metric).copied()).collect()
    }

    pub(crate) fn mean_std(&self, metric: &str) -> Option<(f64, f64)> {
        mean_std(&self.values(metric))
    }

    pub(crate) fn seeds(&self) -> Vec<u64> {
        self.runs.iter().map(|r| r.seed).collect()
    }

    pub(crate) fn ndcg_forms(&self) -> Vec<String> {
        let forms: BTreeSet<String> = self.runs.iter().filter_map(|r| r.ndcg_form.clone()).collect();
        forms.into_iter().collect()
    }
}

/// Reads every finished run (`seed<N>/result.json`) of every cell of `spec` in the run set.
pub fn collect(spec: &Spec, set: &RunSet) -> crate::Result<BTreeMap<String, CellRuns>> {
    let mut out = BTreeMap::new();
    for cell in &spec.cells {
        let mut runs = Vec::new();
        let dir = set.dir.join(&cell.name);
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(seed) = name.strip_prefix("seed").and_then(|s| s.parse::<u64>().ok()) else { continue };
            let path = entry.path().join(crate::execute::RESULT_FILE);
            if !path.exists() {
                continue;
            }
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            let r: serde_json::Value =
                serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
            let test: BTreeMap<String, f64> = serde_json::from_value(r["test"].clone())
                .with_context(|| format!("{}: no `test` summary", path.display()))?;
            let s = |k: &str| r[k].as_str().map(str::to_owned);
            runs.push(Run {
                seed,
                dir: entry.path(),
                test,
                ndcg_form: s("ndcg_form"),
                protocol: s("protocol"),
                selected_on: s("selected_on"),
                criterion: s("criterion"),
                best_epoch: r["best_epoch"].as_u64(),
                epochs_run: r["epochs_run"].as_u64(),
                secs: r["secs"].as_f64(),
            });
        }
        runs.sort_by_key(|r| r.seed);
        out.insert(
            cell.name.clone(),
            CellRuns { name: cell.name.clone(), model: cell.model.clone(), extractor: cell.extractor.clone(), runs },
        );
    }
    Ok(out)
}

/// `a` against `b` on one metric.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub a: String,
    pub b: String,
    pub metric: String,
    pub mean_a: Option<f64>,
    pub mean_b: Option<f64>,
    /// `(mean_a − mean_b) / mean_b` in percent.
    pub improvement_pct: Option<f64>,
    /// The same from the paper's values.
    pub paper_improvement_pct: Option<f64>,
    /// Seeds both cells finished (the pairs of the tests).
    pub seeds: Vec<u64>,
    pub p_users: Option<f64>,
    pub t_users: Option<f64>,
    pub n_users: Option<usize>,
    pub p_seeds: Option<f64>,
    pub t_seeds: Option<f64>,
    /// Why a test is missing.
    pub notes: Vec<String>,
    /// The paper's `*`: p (users) < 0.05 in favour of `a`.
    pub significant: bool,
}

/// Per-user vectors, read once per run.
#[derive(Default)]
struct PerUserCache(BTreeMap<PathBuf, Option<PerUser>>);

impl PerUserCache {
    fn get(&mut self, run: &Run) -> Option<&PerUser> {
        self.0
            .entry(run.dir.clone())
            .or_insert_with(|| {
                let path = run.dir.join(crate::execute::TEST_PER_USER_FILE);
                let text = std::fs::read_to_string(path).ok()?;
                serde_json::from_str(&text).ok()
            })
            .as_ref()
    }
}

fn compare(
    cells: &BTreeMap<String, CellRuns>,
    cache: &mut PerUserCache,
    paper: &BTreeMap<(String, String), f64>,
    a: &str,
    b: &str,
    metric: &str,
) -> Comparison {
    let (ca, cb) = (&cells[a], &cells[b]);
    let mean_a = ca.mean_std(metric).map(|x| x.0);
    let mean_b = cb.mean_std(metric).map(|x| x.0);
    let seeds: Vec<u64> = ca.seeds().into_iter().filter(|s| cb.seeds().contains(s)).collect();
    let pick = |c: &CellRuns| -> Vec<Run> { c.runs.iter().filter(|r| seeds.contains(&r.seed)).cloned().collect() };
    let (runs_a, runs_b) = (pick(ca), pick(cb));
    let mut notes = Vec::new();
    let mut users = None;
    if seeds.is_empty() {
        notes.push("no seed finished by both".to_string());
    } else {
        let per_a: Option<Vec<PerUser>> = runs_a.iter().map(|r| cache.get(r).cloned()).collect();
        let per_b: Option<Vec<PerUser>> = runs_b.iter().map(|r| cache.get(r).cloned()).collect();
        match (per_a, per_b) {
            (Some(pa), Some(pb)) => {
                match stats::p_over_users(&pa.iter().collect::<Vec<_>>(), &pb.iter().collect::<Vec<_>>(), metric) {
                    Ok(t) => users = Some(t),
                    Err(e) => notes.push(format!("p (users): {e}")),
                }
            }
            _ => notes.push("p (users): a run has no readable test_per_user.json".into()),
        }
    }
    let va: Vec<f64> = runs_a.iter().filter_map(|r| r.test.get(metric).copied()).collect();
    let vb: Vec<f64> = runs_b.iter().filter_map(|r| r.test.get(metric).copied()).collect();
    let seeds_test = if seeds.len() < 2 {
        notes.push("p (seeds) needs 2 or more common seeds".into());
        None
    } else {
        match stats::p_over_seeds(&va, &vb) {
            Ok(t) => Some(t),
            Err(e) => {
                notes.push(format!("p (seeds): {e}"));
                None
            }
        }
    };
    let paper_of = |c: &str| paper.get(&(c.to_string(), metric.to_string())).copied();
    Comparison {
        a: a.to_string(),
        b: b.to_string(),
        metric: metric.to_string(),
        mean_a,
        mean_b,
        improvement_pct: mean_a.zip(mean_b).and_then(|(x, y)| relative_improvement(x, y)),
        paper_improvement_pct: paper_of(a).zip(paper_of(b)).and_then(|(x, y)| relative_improvement(x, y)),
        seeds,
        p_users: users.map(|t| t.p_value),
        t_users: users.map(|t| t.t),
        n_users: users.map(|t| t.n),
        p_seeds: seeds_test.map(|t| t.p_value),
        t_seeds: seeds_test.map(|t| t.t),
        notes,
        significant: stats::star(users.as_ref()),
    }
}

/// A row of a table with our numbers.
#[derive(Debug, Clone, Serialize)]
pub struct RowOut {
    pub cell: String,
    pub label: String,
    /// Per metric: the paper's value (fraction), ours mean and std (fractions).
    pub paper: Vec<Option<f64>>,
    pub paper_star: bool,
    pub mean: Vec<Option<f64>>,
    pub std: Vec<Option<f64>>,
    pub seeds: Vec<u64>,
    pub ndcg_forms: Vec<String>,
    pub vs: Option<String>,
}

/// A claim checked on our numbers.
#[derive(Debug, Clone, Serialize)]
pub struct ClaimOut {
    pub text: String,
    /// `None` when some cell has no finished run.
    pub holds: Option<bool>,
    pub checked: usize,
    pub passed: usize,
    pub failures: Vec<String>,
    pub missing: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TableOut {
    pub id: String,
    pub title: String,
    pub source: String,
    pub metrics: Vec<String>,
    pub note: Option<String>,
    pub rows: Vec<RowOut>,
    pub comparisons: Vec<Comparison>,
    pub claims: Vec<ClaimOut>,
}

fn check_claim(
    spec: &Spec,
    claim: &ClaimSpec,
    table: &TableSpec,
    cells: &BTreeMap<String, CellRuns>,
    comparisons: &[Comparison],
    cache: &mut PerUserCache,
    paper: &BTreeMap<(String, String), f64>,
) -> ClaimOut {
    let metrics = claim.metrics.clone().unwrap_or_else(|| table.metrics.clone());
    let lab = |cell: &str| -> String {
        table.rows.iter().find(|r| r.cell == cell).map_or_else(|| spec.label(cell).to_string(), |r| r.label.clone())
    };
    let (mut checked, mut passed, mut failures, mut missing) = (0, 0, Vec::new(), BTreeSet::new());
    for [a, b] in &claim.better {
        for m in &metrics {
            let existing = comparisons.iter().position(|c| &c.a == a && &c.b == b && &c.metric == m);
            let c = match existing {
                Some(i) => comparisons[i].clone(),
                None => compare(cells, cache, paper, a, b, m),
            };
            let (Some(x), Some(y)) = (c.mean_a, c.mean_b) else {
                for (cell, mean) in [(a, c.mean_a), (b, c.mean_b)] {
                    if mean.is_none() {
                        missing.insert(cell.clone());
                    }
                }
                continue;
            };
            checked += 1;
            let better = x > y;
            let ok = better && (!claim.significant || c.significant);
            if ok {
                passed += 1;
            } else {
                let why = if !better {
                    format!("{} ≤ {} on {} ({:.2} vs {:.2})", lab(a), lab(b), display_metric(m), x * 100.0, y * 100.0)
                } else {
                    format!(
                        "{} > {} on {} but p (users) = {}",
                        lab(a),
                        lab(b),
                        display_metric(m),
                        c.p_users.map_or_else(|| "n/a".to_string(), format_p)
                    )
                };
                failures.push(why);
            }
        }
    }
    let holds = if !missing.is_empty() { None } else { Some(failures.is_empty() && checked > 0) };
    ClaimOut { text: claim.text.clone(), holds, checked, passed, failures, missing: missing.into_iter().collect() }
}

/// Builds every table of `spec` from `cells`.
pub fn tables(spec: &Spec, cells: &BTreeMap<String, CellRuns>) -> Vec<TableOut> {
    let mut cache = PerUserCache::default();
    let mut out = Vec::new();
    for t in &spec.tables {
        // The paper's values of this table, as fractions, by (cell, metric).
        let mut paper = BTreeMap::new();
        for r in &t.rows {
            for (m, v) in t.metrics.iter().zip(r.paper.iter().flatten()) {
                paper.insert((r.cell.clone(), m.clone()), v / 100.0);
            }
        }
        let mut comparisons = Vec::new();
        for [a, b] in t.all_comparisons() {
            for m in &t.metrics {
                comparisons.push(compare(cells, &mut cache, &paper, &a, &b, m));
            }
        }
        let rows = t
            .rows
            .iter()
            .map(|r| {
                let c = &cells[&r.cell];
                let stats: Vec<Option<(f64, f64)>> = t.metrics.iter().map(|m| c.mean_std(m)).collect();
                RowOut {
                    cell: r.cell.clone(),
                    label: r.label.clone(),
                    paper: t.metrics.iter().map(|m| paper.get(&(r.cell.clone(), m.clone())).copied()).collect(),
                    paper_star: r.paper_star,
                    mean: stats.iter().map(|s| s.map(|x| x.0)).collect(),
                    std: stats.iter().map(|s| s.map(|x| x.1).filter(|_| c.runs.len() > 1)).collect(),
                    seeds: c.seeds(),
                    ndcg_forms: c.ndcg_forms(),
                    vs: r.vs.clone(),
                }
            })
            .collect();
        let claims =
            t.claims.iter().map(|claim| check_claim(spec, claim, t, cells, &comparisons, &mut cache, &paper)).collect();
        out.push(TableOut {
            id: t.id.clone(),
            title: t.title.clone(),
            source: t.source.clone(),
            metrics: t.metrics.clone(),
            note: t.note.clone(),
            rows,
            comparisons,
            claims,
        });
    }
    out
}

fn signed_pct(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_string(), |x| format!("{x:+.2} %"))
}

/// The name a table gives `cell`: its own row's label, else the first table's.
fn label_in<'a>(spec: &'a Spec, t: &'a TableOut, cell: &'a str) -> &'a str {
    t.rows.iter().find(|r| r.cell == cell).map_or_else(|| spec.label(cell), |r| r.label.as_str())
}

/// The Markdown of one table, its comparisons and its claims.
pub(crate) fn render_table(spec: &Spec, t: &TableOut, out: &mut String) {
    let _ = writeln!(out, "## {}\n\nPaper values: {}.\n", t.title, t.source);
    let mut header = "| Model |".to_string();
    let mut rule = "|---|".to_string();
    for m in &t.metrics {
        let _ = write!(header, " {} (ours) | {} (paper) |", display_metric(m), display_metric(m));
        rule.push_str("---:|---:|");
    }
    header.push_str(" NDCG form | seeds |");
    rule.push_str("---|---:|");
    let _ = writeln!(out, "{header}\n{rule}");
    let find = |a: &str, b: &str, m: &str| t.comparisons.iter().find(|c| c.a == a && c.b == b && c.metric == m);
    for r in &t.rows {
        let mut line = format!("| {} |", r.label);
        for (i, m) in t.metrics.iter().enumerate() {
            let star = r.vs.as_ref().and_then(|b| find(&r.cell, b, m)).is_some_and(|c| c.significant);
            let star = if star { "*" } else { "" };
            let ours = match (r.mean[i], r.std[i]) {
                (Some(mean), Some(std)) => format!("{:.2} ± {:.2}{star}", mean * 100.0, std * 100.0),
                (Some(mean), None) => format!("{:.2}{star}", mean * 100.0),
                _ => "not run".to_string(),
            };
            let paper = r.paper[i].map_or_else(
                || "n/a".to_string(),
                |p| format!("{:.2}{}", p * 100.0, if r.paper_star { "*" } else { "" }),
            );
            let _ = write!(line, " {ours} | {paper} |");
        }
        let forms = if r.ndcg_forms.is_empty() { "–".to_string() } else { r.ndcg_forms.join(", ") };
        let _ = writeln!(line, " {forms} | {} |", r.seeds.len());
        out.push_str(&line);
        if let Some(b) = &r.vs {
            let mut improv = "| *Improv.* |".to_string();
            for m in &t.metrics {
                let c = find(&r.cell, b, m);
                let _ = write!(
                    improv,
                    " {} | {} |",
                    signed_pct(c.and_then(|c| c.improvement_pct)),
                    signed_pct(c.and_then(|c| c.paper_improvement_pct))
                );
            }
            let _ = writeln!(out, "{improv} | |");
        }
    }
    if let Some(note) = &t.note {
        let _ = writeln!(out, "\n{note}");
    }
    if !t.comparisons.is_empty() {
        let _ = writeln!(
            out,
            "\n| comparison | metric | ours Δ | paper Δ | p (users) | p (seeds) | seeds |\n|---|---|---:|---:|---:|---:|---:|"
        );
        for c in &t.comparisons {
            let p_users = c.p_users.map_or_else(
                || "n/a".to_string(),
                |p| format!("{}{}", format_p(p), if c.significant { "*" } else { "" }),
            );
            let _ = writeln!(
                out,
                "| {} vs {} | {} | {} | {} | {} | {} | {} |",
                label_in(spec, t, &c.a),
                label_in(spec, t, &c.b),
                display_metric(&c.metric),
                signed_pct(c.improvement_pct),
                signed_pct(c.paper_improvement_pct),
                p_users,
                c.p_seeds.map_or_else(|| "n/a".to_string(), format_p),
                c.seeds.len()
            );
        }
    }
    if !t.claims.is_empty() {
        let holding = t.claims.iter().filter(|c| c.holds == Some(true)).count();
        let checkable = t.claims.iter().filter(|c| c.holds.is_some()).count();
        let _ = writeln!(
            out,
            "\n**The paper's claims on these data.** {holding} of the {} claims of this table hold{}:\n",
            t.claims.len(),
            if checkable < t.claims.len() {
                format!(" ({} cannot be checked yet: cells without finished runs)", t.claims.len() - checkable)
            } else {
                String::new()
            }
        );
        for c in &t.claims {
            let line = match c.holds {
                Some(true) => format!("- ✔ {} — holds ({} of {} comparisons).", c.text, c.passed, c.checked),
                Some(false) => format!("- ✘ {} — does not hold: {}.", c.text, c.failures.join("; ")),
                None => format!("- … {} — not checked: no finished runs of {}.", c.text, c.missing.join(", ")),
            };
            let _ = writeln!(out, "{line}");
        }
    }
    out.push('\n');
}
