//! The loaded data set: train/valid/test user→item lists, the item→user train graph, labels, feature files.

use std::fmt;
use std::path::{Path, PathBuf};

use rand::Rng;

use crate::csr::Csr;
use crate::error::{Error, Result};
use crate::labels::Labels;
use crate::rng;

/// Which on-disk layout a data folder uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// `train.csv`, `test.csv` (optional `valid.csv`), `Feature{Image,Text}_normal.npy`, `MetaData_normal.npy`.
    /// In-memory data sets ([`Dataset::from_pairs`]) report this layout too, with an empty `dir`.
    Sgfd,
    /// `<name>.inter` (tab-separated, `x_label` split column), `image_feat.npy`, `text_feat.npy`.
    MmRec { name: String },
}

/// Options for [`crate::load`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Item count implied by the features; overrides detection from the files when given.
    pub n_items: Option<usize>,
}

/// A non-fatal problem found while loading; each one is also logged with `tracing::warn!`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The file concerned, if any.
    pub path: Option<PathBuf>,
    pub message: String,
}

impl Finding {
    /// Records and logs a finding.
    pub(crate) fn warn(path: Option<&Path>, message: String) -> Self {
        match path {
            Some(p) => tracing::warn!(path = %p.display(), "{message}"),
            None => tracing::warn!("{message}"),
        }
        Self { path: path.map(Path::to_path_buf), message }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(p) => write!(f, "{}: {}", p.display(), self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// A validated interaction data set. Ids are dense: users `0..n_users`, items `0..n_items`.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub name: String,
    /// The folder it was loaded from (empty for in-memory data sets).
    pub dir: PathBuf,
    pub layout: Layout,
    pub n_users: usize,
    pub n_items: usize,
    /// User → train items: `n_users` rows, `n_items` columns.
    pub train: Csr,
    /// User → validation items (empty when the layout has no validation split).
    pub valid: Csr,
    /// User → test items.
    pub test: Csr,
    /// Item → users of the train graph (the transpose of `train`).
    pub train_by_item: Csr,
    pub labels: Option<Labels>,
    /// Modality name → feature file, in order (visual, then text); only files that exist.
    pub feature_files: Vec<(String, PathBuf)>,
    /// Non-fatal problems found while building it.
    pub findings: Vec<Finding>,
}

/// The pairs of one split and the file they came from.
#[derive(Debug, Clone, Default)]
pub(crate) struct SplitInput {
    pub path: Option<PathBuf>,
    pub pairs: Vec<(u32, u32)>,
}

/// Everything [`Dataset::assemble`] needs; ranges are already validated.
#[derive(Debug)]
pub(crate) struct Parts {
    pub name: String,
    pub dir: PathBuf,
    pub layout: Layout,
    pub n_users: usize,
    pub n_items: usize,
    pub train: SplitInput,
    pub valid: SplitInput,
    pub test: SplitInput,
    pub labels: Option<Labels>,
    pub feature_files: Vec<(String, PathBuf)>,
    pub findings: Vec<Finding>,
}

impl Dataset {
    /// Builds a data set from in-memory `(user, item)` pairs, e.g. generated data or test fixtures.
    ///
    /// Every pair must lie in `n_users × n_items`; `labels`, when given, must have `n_items` entries.
    /// Duplicates are dropped and reported as findings.
    pub fn from_pairs(
        name: &str,
        n_users: usize,
        n_items: usize,
        train: &[(u32, u32)],
        valid: &[(u32, u32)],
        test: &[(u32, u32)],
        labels: Option<Labels>,
    ) -> Result<Self> {
        for (split, pairs) in [("train", train), ("valid", valid), ("test", test)] {
            if let Some((index, &(user, item))) =
                pairs.iter().enumerate().find(|(_, &(u, i))| u as usize >= n_users || i as usize >= n_items)
            {
                return Err(Error::PairOutOfRange { split, index, user, item, n_users, n_items });
            }
        }
        if let Some(l) = &labels {
            if l.len() != n_items {
                return Err(Error::LabelsLength {
                    path: PathBuf::from("<in-memory labels>"),
                    found: l.len(),
                    n_items,
                    implied_by: "the `n_items` argument".to_string(),
                });
            }
        }
        let input = |pairs: &[(u32, u32)]| SplitInput { path: None, pairs: pairs.to_vec() };
        Ok(Self::assemble(Parts {
            name: name.to_string(),
            dir: PathBuf::new(),
            layout: Layout::Sgfd,
            n_users,
            n_items,
            train: input(train),
            valid: input(valid),
            test: input(test),
            labels,
            feature_files: Vec::new(),
            findings: Vec::new(),
        }))
    }

    /// Builds the CSR matrices and records duplicate, overlap and cold-user findings.
    pub(crate) fn assemble(parts: Parts) -> Self {
        let Parts { name, dir, layout, n_users, n_items, train, valid, test, labels, feature_files, mut findings } =
            parts;
        let mut build = |split: &str, input: &SplitInput| {
            let (csr, duplicates) = Csr::from_pairs(n_users, n_items, &input.pairs);
            if duplicates > 0 {
                findings.push(Finding::warn(
                    input.path.as_deref(),
                    format!("{duplicates} duplicate (user, item) pairs in {split} dropped"),
                ));
            }
            csr
        };
        let train_csr = build("train", &train);
        let valid_csr = build("valid", &valid);
        let test_csr = build("test", &test);
        for (a, a_csr, b, b_csr) in [
            ("train", &train_csr, "test", &test_csr),
            ("train", &train_csr, "valid", &valid_csr),
            ("valid", &valid_csr, "test", &test_csr),
        ] {
            let n = overlap(a_csr, b_csr);
            if n > 0 {
                findings.push(Finding::warn(
                    None,
                    format!("{n} (user, item) pairs are in both {a} and {b}; kept in both (reported only)"),
                ));
            }
        }
        let cold: Vec<usize> = (0..n_users).filter(|&u| train_csr.degree(u) == 0).collect();
        if !cold.is_empty() {
            let first: Vec<String> = cold.iter().take(10).map(|u| u.to_string()).collect();
            findings.push(Finding::warn(
                train.path.as_deref(),
                format!(
                    "{} of {n_users} users have no train interaction (first: {}{})",
                    cold.len(),
                    first.join(", "),
                    if cold.len() > first.len() { ", …" } else { "" }
                ),
            ));
        }
        let train_by_item = train_csr.transpose();
        Self {
            name,
            dir,
            layout,
            n_users,
            n_items,
            train: train_csr,
            valid: valid_csr,
            test: test_csr,
            train_by_item,
            labels,
            feature_files,
            findings,
        }
    }

    /// Train degree of every user.
    pub fn user_degrees(&self) -> Vec<usize> {
        self.train.degrees()
    }

    /// Train degree of every item.
    pub fn item_degrees(&self) -> Vec<usize> {
        self.train_by_item.degrees()
    }

    /// Users with at least one test item, ascending: the users a ranking evaluation covers.
    pub fn test_users(&self) -> Vec<u32> {
        (0..self.n_users).filter(|&u| self.test.degree(u) > 0).map(|u| u as u32).collect()
    }

    /// The `holdout` protocol: per user, moves `round(frac · n_train_u)` random train items to `valid`,
    /// always keeping at least one train item. `frac` is clamped to `[0, 1]` (NaN counts as 0).
    ///
    /// Draws come from `rng::stream(seed, "holdout")`, users in ascending order, so the result is
    /// deterministic. Existing validation pairs are kept; `train_by_item` is rebuilt.
    pub fn with_holdout(&self, frac: f64, seed: u64) -> Dataset {
        let frac = if frac.is_nan() { 0.0 } else { frac.clamp(0.0, 1.0) };
        let mut rng = rng::stream(seed, "holdout");
        let mut train_pairs = Vec::with_capacity(self.train.nnz());
        let mut valid_pairs = self.valid.pairs();
        for u in 0..self.n_users {
            let mut items = self.train.row(u).to_vec();
            let n = items.len();
            let n_move = ((frac * n as f64).round() as usize).min(n.saturating_sub(1));
            // Partial Fisher–Yates: the first `n_move` slots become a uniform random subset.
            for i in 0..n_move {
                let j = rng.random_range(i..n);
                items.swap(i, j);
            }
            valid_pairs.extend(items[..n_move].iter().map(|&i| (u as u32, i)));
            train_pairs.extend(items[n_move..].iter().map(|&i| (u as u32, i)));
        }
        let (train, _) = Csr::from_pairs(self.n_users, self.n_items, &train_pairs);
        let (valid, _) = Csr::from_pairs(self.n_users, self.n_items, &valid_pairs);
        let train_by_item = train.transpose();
        Dataset { train, valid, train_by_item, ..self.clone() }
    }
}

/// Number of pairs stored in both matrices (same shape, sorted rows).
fn overlap(a: &Csr, b: &Csr) -> usize {
    let mut n = 0;
    for r in 0..a.n_rows().min(b.n_rows()) {
        let (x, y) = (a.row(r), b.row(r));
        let (mut i, mut j) = (0, 0);
        while i < x.len() && j < y.len() {
            match x[i].cmp(&y[j]) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    n += 1;
                    i += 1;
                    j += 1;
                }
            }
        }
    }
    n
}
