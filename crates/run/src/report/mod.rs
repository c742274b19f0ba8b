//! The report of a reproduction's run set, computed from the run folders only, one module per artefact:
//! [`mod@tables`] (the paper's tables, comparisons and claims, as Markdown), [`stats`] (means, improvements and
//! t-tests), [`plot`] (SVG charts), [`features`] and [`tsne`] (the Fig. 4 map of item features),
//! [`epochs`] (the curves' data). [`fn@write`] puts them into `reports/<run set>/`: `report.md`, `results.csv`
//! and `results.json` (every number), `configs/<cell>.toml` (each cell's resolved configuration) and
//! `plots/` (SVG). [`definition`] is the file a reproduction is defined by.

pub mod definition;
pub mod epochs;
pub mod features;
pub mod plot;
pub mod stats;
pub mod tables;
pub mod tsne;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::Context;
use definition::{display_metric, Spec, TsneSpec};
use epochs::read_epochs;
use features::Fig4;
use stats::mean_std;
use tables::{collect, render_table, tables, Run};

/// One run set: where its runs and report go, and how its cells run.
#[derive(Debug, Clone)]
pub struct RunSet {
    /// The data set's name, e.g. `office`.
    pub dataset: String,
    /// `<runs>/<run set>`.
    pub dir: PathBuf,
    /// `<reports>/<run set>`.
    pub reports: PathBuf,
    pub data: PathBuf,
    /// Whether `data` was written by the generator.
    pub generated: bool,
    /// `holdout` or `reference`.
    pub protocol: String,
    pub quick: bool,
    pub seeds: Vec<u64>,
    pub configs: PathBuf,
    pub device: String,
}

/// One line about the data for the report.
fn data_summary(dir: &Path, generated: bool) -> String {
    let manifest = std::fs::read_to_string(dir.join(mmkd_synth::MANIFEST_FILE))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
    let origin = match (&manifest, generated) {
        (Some(m), true) => {
            let preset = m["preset"]["name"].as_str().or_else(|| m["preset"]["base"]["name"].as_str());
            format!("generated preset `{}`, seed {}", preset.unwrap_or("?"), m["seed"])
        }
        (_, true) => "generated".into(),
        (_, false) => "user-supplied".into(),
    };
    if mmkd_data::sequential::is_sequential(dir) {
        // The sequential layout: the generator's statistics when there are some.
        let keys = ["n_users", "n_items", "n_interactions", "n_train_instances", "n_test_instances"];
        let stats = manifest
            .as_ref()
            .and_then(|m| m["stats"].as_object())
            .map(|s| keys.iter().filter_map(|k| s.get(*k).map(|v| format!("{k} {v}"))).collect::<Vec<_>>().join(", "));
        return format!(
            "`{}` ({origin}; sequential layout{})",
            dir.display(),
            stats.map_or(String::new(), |s| format!(": {s}"))
        );
    }
    match mmkd_data::load(dir, &mmkd_data::LoadOptions::default()) {
        Ok(d) => format!(
            "`{}` ({origin}): {} users, {} items, {} train / {} test interactions, {} labels",
            dir.display(),
            d.n_users,
            d.n_items,
            d.train.nnz(),
            d.test.nnz(),
            d.labels.as_ref().map_or(0, |l| l.n_labels)
        ),
        Err(e) => format!("`{}` ({origin}; could not be read: {e})", dir.display()),
    }
}

/// What the report says about the data set, in its first line and its header.
#[derive(Debug, Clone, Serialize)]
pub struct DataInfo {
    pub dir: PathBuf,
    pub generated: bool,
    pub summary: String,
}

/// Everything written, for the caller to print.
#[derive(Debug)]
pub struct Written {
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
    pub notes: Vec<String>,
}

fn write_text(path: &Path, text: &str) -> crate::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    mmkd_features::write_atomically(path, |w| std::io::Write::write_all(w, text.as_bytes()))
        .with_context(|| format!("writing {}", path.display()))
}

fn protocol_text(protocol: &str) -> &'static str {
    if protocol == "reference" {
        "**reference** — each run selects its epoch on the *test* split, as the authors' code does \
         (`train.protocol = \"reference\"`, each model's own selection rule from configs/protocol/reference/): \
         comparable with the paper's numbers, but not held-out estimates"
    } else {
        "**holdout** — each run selects its epoch on a validation split carved out of the training data \
         (`train.protocol = \"holdout\"`) and evaluates the test split once, at that epoch"
    }
}

/// Writes the report of the run set: its tables from the finished runs, the Fig. 4 map when the definition
/// asks for one, and a line about the data.
pub fn write(spec: &Spec, set: &RunSet) -> crate::Result<Written> {
    let fig4 = match &spec.tsne {
        Some(t) => fig4(t, set),
        None => Err("no map asked for".into()),
    };
    let data =
        &DataInfo { dir: set.data.clone(), generated: set.generated, summary: data_summary(&set.data, set.generated) };
    let cells = collect(spec, set)?;
    let tables = tables(spec, &cells);
    let dir = set.reports.clone();
    let mut files = Vec::new();
    let mut notes = Vec::new();

    // Resolved configuration of each cell (its first finished seed's; seeds differ only in `seed`).
    let mut configs = BTreeMap::new();
    for c in spec.cells.iter().map(|cell| &cells[&cell.name]) {
        if let Some(run) = c.runs.first() {
            let src = run.dir.join("config.toml");
            if let Ok(text) = std::fs::read_to_string(&src) {
                let path = dir.join("configs").join(format!("{}.toml", c.name));
                write_text(&path, &text)?;
                configs.insert(c.name.clone(), format!("configs/{}.toml", c.name));
                files.push(path);
            }
        }
    }

    // Plots.
    let mut curves = BTreeMap::new();
    for c in spec.cells.iter().map(|cell| &cells[&cell.name]).filter(|c| !c.runs.is_empty()) {
        let runs: Vec<(u64, Vec<epochs::EpochLine>)> = c.runs.iter().map(|r| (r.seed, read_epochs(&r.dir))).collect();
        let criterion = c.runs[0].criterion.clone().unwrap_or_else(|| "criterion".into());
        let svg = plot::curves_svg(&format!("{} ({})", spec.label(&c.name), c.name), &runs, &criterion)?;
        let rel = format!("plots/curves/{}.svg", c.name);
        write_text(&dir.join(&rel), &svg)?;
        curves.insert(c.name.clone(), rel);
    }
    let bars_id = spec.bars.clone().or_else(|| spec.tables.first().map(|t| t.id.clone()));
    let mut bars = None;
    if let Some(t) = tables.iter().find(|t| Some(&t.id) == bars_id.as_ref()) {
        let rows: Vec<plot::BarRow> = t
            .rows
            .iter()
            .map(|r| plot::BarRow {
                label: r.label.clone(),
                ours: r.mean.iter().zip(&r.std).map(|(m, s)| m.zip(*s).map(|(m, s)| (m * 100.0, s * 100.0))).collect(),
                paper: r.paper.iter().map(|p| p.map(|p| p * 100.0)).collect(),
            })
            .collect();
        let metrics: Vec<String> = t.metrics.iter().map(|m| display_metric(m)).collect();
        let svg = plot::bars_svg(&t.title, &metrics, &rows)?;
        let rel = format!("plots/{}.svg", t.id);
        write_text(&dir.join(&rel), &svg)?;
        bars = Some((t.id.clone(), rel));
    }
    let fig4_rel = match &fig4 {
        Ok(fig) => {
            let svg = plot::tsne_svg("t-SNE of item features: original extractor, SGFD teacher, SGFD student", fig)?;
            write_text(&dir.join("plots/tsne.svg"), &svg)?;
            Some("plots/tsne.svg".to_string())
        }
        Err(e) => {
            notes.push(format!("t-SNE map not drawn: {e}"));
            None
        }
    };

    // report.md
    let mut md = String::new();
    if data.generated {
        let _ = writeln!(
            md,
            "> **Generated data.** These numbers come from a data set written by the generator (`{}`, see its \
             manifest.json), not from the authors' files: the paper's column is for orientation only.\n",
            data.dir.display()
        );
    } else {
        let _ = writeln!(
            md,
            "> Data: `{}` (supplied by the user, not generated): the paper's column is the paper's own numbers.\n",
            data.dir.display()
        );
    }
    let _ = writeln!(md, "# {}: reproduction report\n", spec.title);
    let _ = writeln!(md, "- Paper: {}.", spec.paper);
    let _ = writeln!(md, "- Data: {}.", data.summary);
    let _ = writeln!(md, "- Protocol: {}.", protocol_text(&set.protocol));
    if set.quick {
        let _ = writeln!(md, "- **Quick smoke version** (`--quick`): a few epochs per cell on a small preset; the numbers only show that every cell runs.");
    }
    let _ = writeln!(
        md,
        "- Numbers: test metrics in percent, mean ± sample standard deviation over the seeds each cell finished \
         (column *seeds*); the NDCG form of each row is named (`standard`: ideal DCG over min(#test items, K); \
         `hit_normalised`: the GRCN/MAML reference codes' form; `bm3_fork`: the SGFD fork of BM3's)."
    );
    let _ = writeln!(
        md,
        "- Significance: *p (users)* is a two-tailed paired t-test over the test users of each user's metric, \
         averaged over the seeds both cells finished; *p (seeds)* a two-tailed paired t-test over the per-seed \
         means, paired by seed (2 seeds or more). `*` marks p (users) < 0.05 in favour of the first model, the \
         paper's convention. *Improv.* is (ours − vanilla) / vanilla, beside the same ratio of the paper's values.\n"
    );
    for t in &tables {
        render_table(spec, t, &mut md);
        if let Some((id, rel)) = &bars {
            if id == &t.id {
                let _ = writeln!(md, "![{}]({rel})\n", t.title);
            }
        }
    }
    if let Some(ts) = &spec.tsne {
        let _ = writeln!(md, "## Fig. 4: item features of the original extractor, the teacher and the student\n");
        match (&fig4, &fig4_rel) {
            (Ok(fig), Some(rel)) => {
                let _ = writeln!(
                    md,
                    "t-SNE (exact, perplexity {}, {} iterations) of the L2-normalised features of {} items from the \
                     three most frequent categories ({}), from `{}` (original extractor) and `{}` (teacher, student). \
                     kNN purity: the share of each item's 10 nearest neighbours in its category, in the features \
                     (and in the 2-D map).\n\n![Fig. 4]({rel})\n",
                    ts.perplexity,
                    ts.iterations,
                    fig.items.len(),
                    fig.class_names.join(", "),
                    fig.original_run,
                    fig.distilled_run
                );
                let _ = writeln!(md, "| modality | original | teacher | student |\n|---|---:|---:|---:|");
                let mut modalities: Vec<&str> = Vec::new();
                for p in &fig.panels {
                    if !modalities.contains(&p.modality.as_str()) {
                        modalities.push(&p.modality);
                    }
                }
                let (mut teacher_wins, mut student_wins) = (0, 0);
                for m in &modalities {
                    let get = |s: &str| fig.panels.iter().find(|p| &p.modality == m && p.source == s);
                    let cell = |s: &str| {
                        get(s).map_or("–".into(), |p| format!("{:.3} ({:.3})", p.purity_features, p.purity_map))
                    };
                    let _ = writeln!(md, "| {m} | {} | {} | {} |", cell("original"), cell("teacher"), cell("student"));
                    let purity = |s: &str| get(s).map_or(f64::NAN, |p| p.purity_features);
                    teacher_wins += usize::from(purity("teacher") > purity("original"));
                    student_wins += usize::from(purity("student") > purity("original"));
                }
                let n = modalities.len();
                let holds = teacher_wins == n && student_wins == n;
                let _ = writeln!(
                    md,
                    "\nThe paper's reading of Fig. 4 — items of a category lie closer together in the teacher's \
                     features than in the original extractor's, and the student inherits it — {} on these data: \
                     the teacher's kNN purity is above the original's in {teacher_wins} of {n} modalities, the \
                     student's in {student_wins} of {n}.\n",
                    if holds { "holds" } else { "does not hold" }
                );
            }
            _ => {
                let _ = writeln!(md, "Not drawn: {}.\n", fig4.as_ref().err().map_or("", String::as_str));
            }
        }
    }
    let _ = writeln!(md, "## Runs\n\n| cell | model | extractor | seeds | best epoch | epochs run | time per run | curves | config |\n|---|---|---|---|---:|---:|---:|---|---|");
    for c in spec.cells.iter().map(|cell| &cells[&cell.name]) {
        let mean_of =
            |f: fn(&Run) -> Option<f64>| mean_std(&c.runs.iter().filter_map(f).collect::<Vec<_>>()).map(|x| x.0);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            c.name,
            c.model,
            c.extractor.as_deref().unwrap_or("–"),
            if c.runs.is_empty() {
                "none".to_string()
            } else {
                c.seeds().iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
            },
            mean_of(|r| r.best_epoch.map(|e| e as f64)).map_or("–".into(), |v| format!("{v:.1}")),
            mean_of(|r| r.epochs_run.map(|e| e as f64)).map_or("–".into(), |v| format!("{v:.1}")),
            mean_of(|r| r.secs).map_or("–".into(), epochs::duration),
            curves.get(&c.name).map_or("–".into(), |p| format!("[svg]({p})")),
            configs.get(&c.name).map_or("–".into(), |p| format!("[toml]({p})")),
        );
    }
    let _ = writeln!(
        md,
        "\nEvery number above is computed from the run folders under `{}` (`result.json`, `test_per_user.json`, \
         `metrics.jsonl`); `results.csv` and `results.json` hold them all, as fractions.",
        set.dir.display()
    );
    if !notes.is_empty() {
        let _ = writeln!(md, "\nNotes: {}.", notes.join("; "));
    }
    let md_path = dir.join("report.md");
    write_text(&md_path, &md)?;
    files.push(md_path);

    // results.csv: one line per number.
    let mut csv = String::from("kind,table,cell,label,seed,metric,value,ndcg_form,protocol\n");
    let q = |s: &str| {
        if s.contains(',') || s.contains('"') {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    for c in spec.cells.iter().map(|cell| &cells[&cell.name]) {
        for r in &c.runs {
            for (m, v) in &r.test {
                let _ = writeln!(
                    csv,
                    "run,,{},{},{},{},{v},{},{}",
                    c.name,
                    q(spec.label(&c.name)),
                    r.seed,
                    m,
                    r.ndcg_form.as_deref().unwrap_or(""),
                    r.protocol.as_deref().unwrap_or("")
                );
            }
        }
    }
    for t in &tables {
        for r in &t.rows {
            for (i, m) in t.metrics.iter().enumerate() {
                for (kind, v) in [("mean", r.mean[i]), ("std", r.std[i]), ("paper", r.paper[i])] {
                    if let Some(v) = v {
                        let _ = writeln!(csv, "{kind},{},{},{},,{m},{v},,{}", t.id, r.cell, q(&r.label), set.protocol);
                    }
                }
            }
        }
        for c in &t.comparisons {
            let pair = format!("{} vs {}", c.a, c.b);
            for (kind, v) in [
                ("improvement_pct", c.improvement_pct),
                ("paper_improvement_pct", c.paper_improvement_pct),
                ("p_users", c.p_users),
                ("p_seeds", c.p_seeds),
            ] {
                if let Some(v) = v {
                    let _ =
                        writeln!(csv, "{kind},{},{},{},,{},{v},,{}", t.id, q(&pair), q(&pair), c.metric, set.protocol);
                }
            }
        }
    }
    let csv_path = dir.join("results.csv");
    write_text(&csv_path, &csv)?;
    files.push(csv_path);

    // results.json: the same, structured.
    let json = serde_json::json!({
        "title": spec.title,
        "paper": spec.paper,
        "dataset": set.dataset,
        "run_set": set.dir,
        "data": data,
        "protocol": set.protocol,
        "quick": set.quick,
        "cells": cells.values().map(|c| {
            let metrics: BTreeSet<&String> = c.runs.iter().flat_map(|r| r.test.keys()).collect();
            let summary: BTreeMap<&String, serde_json::Value> = metrics.into_iter().map(|m| {
                let s = c.mean_std(m);
                (m, serde_json::json!({ "mean": s.map(|x| x.0), "std": s.map(|x| x.1), "n": c.values(m).len() }))
            }).collect();
            (c.name.clone(), serde_json::json!({
                "model": c.model, "extractor": c.extractor, "config": configs.get(&c.name),
                "runs": c.runs, "summary": summary,
            }))
        }).collect::<BTreeMap<_, _>>(),
        "tables": tables,
        "fig4": fig4.as_ref().ok().map(|f| serde_json::json!({
            "items": f.items.len(), "classes": f.class_names, "original_run": f.original_run,
            "distilled_run": f.distilled_run,
            "panels": f.panels.iter().map(|p| serde_json::json!({
                "modality": p.modality, "source": p.source,
                "purity_features": p.purity_features, "purity_map": p.purity_map,
            })).collect::<Vec<_>>(),
        })),
        "notes": notes,
    });
    let json_path = dir.join("results.json");
    write_text(&json_path, &serde_json::to_string_pretty(&json)?)?;
    files.push(json_path);
    files.extend(curves.values().map(|p| dir.join(p)));
    if let Some((_, rel)) = &bars {
        files.push(dir.join(rel));
    }
    if let Some(rel) = fig4_rel {
        files.push(dir.join(rel));
    }
    Ok(Written { dir, files, notes })
}

/// The Fig. 4 map from the lowest seed both cells finished.
fn fig4(t: &TsneSpec, set: &RunSet) -> Result<Fig4, String> {
    let seed = set
        .seeds
        .iter()
        .chain(&[0u64])
        .copied()
        .find(|s| {
            [&t.original, &t.distilled]
                .iter()
                .all(|c| set.dir.join(c).join(format!("seed{s}")).join(crate::execute::RESULT_FILE).exists())
        })
        .ok_or_else(|| format!("`{}` and `{}` have no finished run of a common seed", t.original, t.distilled))?;
    let run = |c: &str| set.dir.join(c).join(format!("seed{seed}"));
    features::fig4(t, &run(&t.original), &run(&t.distilled), &set.data).map_err(|e| format!("{e:#}"))
}
