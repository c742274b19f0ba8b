//! What a reproduction runs and reports: `configs/reproduce/<dataset>.toml` read into a [`Spec`] — the cells
//! (model × extractor, each a `cargo xtask train` run per seed), the paper's tables over those cells with the
//! paper's values, the claims each table's text makes, the t-SNE map and the time priors of the plan.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::error::{bail, Context};
use serde::{Deserialize, Serialize};

/// A reproduction definition.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)] // A typo in a config file is an error, not a silent default.
pub struct Spec {
    /// Heading of the report, e.g. "SGFD (ACM MM'23), Office".
    pub title: String,
    /// The paper the values come from.
    pub paper: String,
    /// Generator preset written to `data/<dataset>` when that folder holds no data set.
    pub preset: String,
    /// Seeds per cell (`--seeds` overrides).
    #[serde(default = "default_seeds")]
    pub seeds: usize,
    /// Maximum epochs of every cell (`train --epochs`) unless the cell sets its own; absent = the configs'.
    #[serde(default)]
    pub epochs: Option<usize>,
    /// `data.normalization` of every cell, and `--normalize` of the pretrained teachers (they must agree,
    /// since a pretrained teacher reads the student's inputs).
    #[serde(default)]
    pub normalization: Option<String>,
    /// `--set KEY=VALUE` of every cell.
    #[serde(default)]
    pub set: Vec<String>,
    /// Where SGFD cells get their teacher.
    #[serde(default)]
    pub teacher_mode: TeacherMode,
    /// Priors of the time estimate, used until cells of the run set have finished.
    #[serde(default)]
    pub prior: Prior,
    /// The short smoke version (`--quick`).
    #[serde(default)]
    pub quick: Quick,
    /// Table whose bar chart the report draws (default: the first table).
    #[serde(default)]
    pub bars: Option<String>,
    /// The Fig. 4-style map of item features; absent = no map.
    #[serde(default)]
    pub tsne: Option<TsneSpec>,
    #[serde(rename = "cell")]
    pub cells: Vec<CellSpec>,
    #[serde(rename = "table")]
    pub tables: Vec<TableSpec>,
}

fn default_seeds() -> usize {
    5
}

/// Where the SGFD cells' teacher comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TeacherMode {
    /// `cargo xtask teacher` once per data set and teacher architecture, then `train --teacher DIR` (frozen;
    /// the paper's "separately trained" teacher).
    #[default]
    Pretrained,
    /// The teacher is trained jointly inside each run (the reference code).
    Joint,
    /// No teacher job: the models bring their own (e.g. KDSR).
    None,
}

/// Time priors: seconds per epoch (training plus its evaluation) per model, on this data set, on 2 CPU cores.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Prior {
    /// Epochs a run is expected to last before early stopping (or its maximum, if lower).
    pub expected_epochs: f64,
    /// `model → seconds per epoch`.
    pub secs_per_epoch: BTreeMap<String, f64>,
    /// For a model without a prior.
    pub default_secs_per_epoch: f64,
    /// Seconds to pretrain one teacher.
    pub teacher_secs: f64,
}

impl Default for Prior {
    fn default() -> Self {
        Self {
            expected_epochs: 50.0,
            secs_per_epoch: BTreeMap::new(),
            default_secs_per_epoch: 30.0,
            teacher_secs: 150.0,
        }
    }
}

/// `--quick`: every cell, a few epochs, on a small generated preset.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Quick {
    /// Generated preset (cached under `<runs>/<run set>/data/<preset>`).
    pub preset: String,
    pub seeds: usize,
    /// Maximum epochs of every cell.
    pub epochs: usize,
    /// Epochs of every pretrained teacher.
    pub teacher_epochs: Option<usize>,
    /// `--set` of every cell, after the cell's own.
    pub set: Vec<String>,
    /// Prior seconds per epoch for the plan's estimate.
    pub secs_per_epoch: f64,
}

impl Default for Quick {
    fn default() -> Self {
        Self {
            preset: "tiny".into(),
            seeds: 1,
            epochs: 2,
            teacher_epochs: Some(3),
            set: Vec::new(),
            secs_per_epoch: 2.0,
        }
    }
}

/// One cell: a `cargo xtask train` run per seed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CellSpec {
    /// Folder name under the run set, e.g. `grcn-sgfd` (lower case letters, digits, `-` and `_`).
    pub name: String,
    /// `train --model`.
    pub model: String,
    /// `train --extractor`; absent = the command's default.
    #[serde(default)]
    pub extractor: Option<String>,
    /// `train --epochs`, over the spec's.
    #[serde(default)]
    pub epochs: Option<usize>,
    /// `--set` of this cell, after the spec's.
    #[serde(default)]
    pub set: Vec<String>,
    /// Further `train` arguments, e.g. `["--kdsr"]`.
    #[serde(default)]
    pub args: Vec<String>,
    /// `--set` of this cell under `--quick`, after the quick ones.
    #[serde(default)]
    pub quick_set: Vec<String>,
}

impl CellSpec {
    /// Whether the extractor is SGFD or one of its presets (a teacher may be involved).
    pub fn is_sgfd(&self) -> bool {
        self.extractor.as_deref().is_some_and(|e| mmkd_student_kd::names().contains(&e) && e != "vanilla_shallow")
    }
}

/// A table of the paper over the cells.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    /// Short id, e.g. `table2` (file names, `--only`).
    pub id: String,
    pub title: String,
    /// Where the paper's values come from, e.g. "SGFD paper, Table 2, Office columns".
    pub source: String,
    /// Summary keys of `result.json`'s `test`, e.g. `["recall@20", "ndcg@20"]`; the paper's values follow
    /// this order.
    pub metrics: Vec<String>,
    /// A note printed under the table (e.g. that the paper's values are not readable).
    #[serde(default)]
    pub note: Option<String>,
    pub rows: Vec<RowSpec>,
    /// Further comparisons `[a, b]` (a against b) with p-values, beyond the rows' `vs`.
    #[serde(default)]
    pub comparisons: Vec<[String; 2]>,
    /// What the paper's text says about this table, checked on our numbers.
    #[serde(default)]
    pub claims: Vec<ClaimSpec>,
}

impl TableSpec {
    /// Every comparison of the table: the rows' `vs` first, then `comparisons`, without repeats.
    pub fn all_comparisons(&self) -> Vec<[String; 2]> {
        let mut out: Vec<[String; 2]> = Vec::new();
        let from_rows = self.rows.iter().filter_map(|r| r.vs.as_ref().map(|b| [r.cell.clone(), b.clone()]));
        for pair in from_rows.chain(self.comparisons.iter().cloned()) {
            if !out.contains(&pair) {
                out.push(pair);
            }
        }
        out
    }
}

/// A row of a table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowSpec {
    pub cell: String,
    /// The paper's name of the row, e.g. `SGFD_GRCN`.
    pub label: String,
    /// The paper's values in percent, one per metric; absent when the paper has none (or none readable).
    #[serde(default)]
    pub paper: Option<Vec<f64>>,
    /// Whether the paper marks the row with `*` (significant improvement over `vs`).
    #[serde(default)]
    pub paper_star: bool,
    /// The vanilla backbone this row improves on: an "Improv." row follows, as in the paper.
    #[serde(default)]
    pub vs: Option<String>,
}

/// A claim of the paper: every `a` beats its `b` on every metric (and significantly, if asked).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimSpec {
    pub text: String,
    /// Pairs `[a, b]`: the claim holds when `mean(a) > mean(b)` on each metric for every pair.
    pub better: Vec<[String; 2]>,
    /// Metrics checked; absent = the table's.
    #[serde(default)]
    pub metrics: Option<Vec<String>>,
    /// Also require p (users) < 0.05.
    #[serde(default)]
    pub significant: bool,
}

/// The t-SNE map of item features (the paper's Fig. 4).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TsneSpec {
    /// Cell of the backbone with its original extractor (vanilla).
    pub original: String,
    /// Cell of the backbone with SGFD (its teacher and student are mapped).
    pub distilled: String,
    /// Items sampled per category (three categories: the most frequent labels).
    #[serde(default = "default_per_class")]
    pub per_class: usize,
    #[serde(default = "default_perplexity")]
    pub perplexity: f64,
    #[serde(default = "default_iterations")]
    pub iterations: usize,
}

fn default_per_class() -> usize {
    100
}
fn default_perplexity() -> f64 {
    30.0
}
fn default_iterations() -> usize {
    1000
}

impl Spec {
    /// Reads and checks `path`.
    pub fn read(path: &Path) -> crate::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let spec: Spec = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        spec.validate().with_context(|| format!("checking {}", path.display()))?;
        Ok(spec)
    }

    /// Names unique and safe as folder names; every referenced cell exists; one paper value per metric.
    pub fn validate(&self) -> crate::Result<()> {
        let mut names = BTreeSet::new();
        for c in &self.cells {
            let safe = !c.name.is_empty()
                && c.name.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-' || ch == '_');
            if !safe {
                bail!("cell name `{}`: use lower-case letters, digits, `-` and `_`", c.name);
            }
            if !names.insert(c.name.as_str()) {
                bail!("cell `{}` is defined twice", c.name);
            }
        }
        if self.seeds == 0 || self.quick.seeds == 0 {
            bail!("seeds must be at least 1");
        }
        let known = |name: &str, what: &str| -> crate::Result<()> {
            if names.contains(name) {
                Ok(())
            } else {
                bail!("{what} names cell `{name}`, which is not defined (cells: {})", self.cell_names().join(", "))
            }
        };
        let mut ids = BTreeSet::new();
        for t in &self.tables {
            if !ids.insert(t.id.as_str()) || names.contains(t.id.as_str()) {
                bail!("table id `{}` is used twice (or is also a cell name)", t.id);
            }
            if t.metrics.is_empty() {
                bail!("table `{}` has no metrics", t.id);
            }
            for r in &t.rows {
                known(&r.cell, &format!("table `{}`", t.id))?;
                if let Some(b) = &r.vs {
                    known(b, &format!("table `{}`, row `{}`, vs", t.id, r.label))?;
                }
                if let Some(p) = &r.paper {
                    if p.len() != t.metrics.len() {
                        bail!(
                            "table `{}`, row `{}`: {} paper values for {} metrics",
                            t.id,
                            r.label,
                            p.len(),
                            t.metrics.len()
                        );
                    }
                }
            }
            for [a, b] in t.comparisons.iter().chain(t.claims.iter().flat_map(|c| c.better.iter())) {
                known(a, &format!("table `{}`", t.id))?;
                known(b, &format!("table `{}`", t.id))?;
            }
        }
        if let Some(id) = &self.bars {
            if !ids.contains(id.as_str()) {
                bail!("bars = `{id}` is not a table id");
            }
        }
        if let Some(t) = &self.tsne {
            known(&t.original, "tsne.original")?;
            known(&t.distilled, "tsne.distilled")?;
            if t.per_class < 5 {
                bail!("tsne.per_class must be at least 5");
            }
        }
        Ok(())
    }

    pub fn cell_names(&self) -> Vec<&str> {
        self.cells.iter().map(|c| c.name.as_str()).collect()
    }

    /// The label a table gives `cell` (its first row naming it), else the cell name.
    pub fn label<'a>(&'a self, cell: &'a str) -> &'a str {
        self.tables.iter().flat_map(|t| &t.rows).find(|r| r.cell == cell).map_or(cell, |r| r.label.as_str())
    }

    /// Indices of the cells `--only` selects: comma-separated patterns, each a cell name, a table id (its
    /// cells) or a glob with `*` (e.g. `grcn-*`). No patterns = every cell. A pattern that selects nothing is
    /// an error.
    pub fn select(&self, only: &[String]) -> crate::Result<Vec<usize>> {
        if only.is_empty() {
            return Ok((0..self.cells.len()).collect());
        }
        let mut chosen = BTreeSet::new();
        for pattern in only.iter().flat_map(|p| p.split(',')).map(str::trim).filter(|p| !p.is_empty()) {
            let before = chosen.len();
            let mut matched = false;
            if let Some(t) = self.tables.iter().find(|t| t.id == pattern) {
                matched = true;
                for r in &t.rows {
                    chosen.extend(self.cells.iter().position(|c| c.name == r.cell));
                }
            }
            for (i, c) in self.cells.iter().enumerate() {
                if glob(pattern, &c.name) {
                    matched = true;
                    chosen.insert(i);
                }
            }
            if !matched && chosen.len() == before {
                bail!(
                    "--only `{pattern}` matches no cell or table (cells: {}; tables: {})",
                    self.cell_names().join(", "),
                    self.tables.iter().map(|t| t.id.as_str()).collect::<Vec<_>>().join(", ")
                );
            }
        }
        Ok(chosen.into_iter().collect())
    }
}

/// `*` matches any run of characters; everything else matches itself.
pub fn glob(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// `recall@20` → `Recall@20`, `ndcg@20` → `NDCG@20`, `hr@5` → `HR@5`, `mrr@5` → `MRR@5`.
pub fn display_metric(key: &str) -> String {
    let (base, k) = key.split_once('@').unwrap_or((key, ""));
    let base = match base {
        "recall" => "Recall".to_string(),
        "precision" => "Precision".to_string(),
        "hit" => "Hit".to_string(),
        "recall_micro" => "Recall (micro)".to_string(),
        other => other.to_uppercase(),
    };
    if k.is_empty() {
        base
    } else {
        format!("{base}@{k}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped(name: &str) -> Spec {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/reproduce").join(format!("{name}.toml"));
        Spec::read(&path).unwrap()
    }

    #[test]
    fn shipped_specs_read_and_cover_the_papers_tables() {
        let office = shipped("office");
        assert_eq!(office.cells.len(), 17);
        let t2 = &office.tables[0];
        assert_eq!(t2.rows.len(), 10);
        // Table 2's Improv. row of GRCN, recomputed from the paper's own values: 13.88 / 13.20 − 1 = 5.15 %.
        let grcn = t2.rows.iter().find(|r| r.cell == "grcn-sgfd").unwrap();
        assert_eq!(grcn.paper.as_deref(), Some(&[13.88, 16.26][..]));
        assert_eq!(grcn.vs.as_deref(), Some("grcn-vanilla"));
        assert_eq!(office.label("grcn-sgfd_s"), "SGFD_s");
        let beauty = shipped("beauty");
        assert_eq!(beauty.tables[0].metrics, ["hr@5", "mrr@5", "hr@20", "mrr@20"]);
        assert_eq!(beauty.teacher_mode, TeacherMode::None);
    }

    #[test]
    fn only_selects_names_tables_and_globs() {
        let office = shipped("office");
        let names = |only: &[&str]| -> Vec<String> {
            let only: Vec<String> = only.iter().map(|s| s.to_string()).collect();
            office.select(&only).unwrap().into_iter().map(|i| office.cells[i].name.clone()).collect()
        };
        assert_eq!(names(&["neumf,cml"]), ["neumf", "cml"]);
        assert_eq!(names(&["table3"]).len(), 5);
        assert!(names(&["grcn-*"]).iter().all(|n| n.starts_with("grcn-")));
        assert_eq!(names(&[]).len(), office.cells.len());
        assert!(office.select(&["grcn-x".into()]).unwrap_err().to_string().contains("matches no cell"));
        assert!(glob("*-sgfd", "bm3-sgfd") && glob("g*n-*", "grcn-vanilla") && !glob("bm3", "bm3-sgfd"));
    }

    #[test]
    fn bad_specs_are_errors_that_name_the_problem() {
        let mut spec = shipped("office");
        spec.tables[0].rows[0].cell = "nope".into();
        assert!(spec.validate().unwrap_err().to_string().contains("`nope`"));
        let mut spec = shipped("office");
        spec.tables[0].rows[0].paper = Some(vec![1.0]);
        assert!(spec.validate().unwrap_err().to_string().contains("1 paper values for 2 metrics"));
        let mut spec = shipped("office");
        spec.cells[1].name = spec.cells[0].name.clone();
        assert!(spec.validate().unwrap_err().to_string().contains("twice"));
        assert_eq!(display_metric("ndcg@20"), "NDCG@20");
        assert_eq!(display_metric("mrr@5"), "MRR@5");
    }
}
