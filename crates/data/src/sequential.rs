//! Sequential data for KDSR and MMSR (`spec/kdsr-mmsr.md` §2): per-user chronological item sequences,
//! the per-user 80/20 chronological split, and next-item training and test instances.
//!
//! On disk ("sequential layout"): `interactions.csv` with the header `userID,itemID,timestamp` (non-negative
//! integers). `itemID` is the row of the item in `FeatureImage_normal.npy`, `FeatureText_normal.npy` and
//! `MetaData_normal.npy`, which are all optional; when present, every item id must be one of their rows.
//!
//! The protocol ([`SeqDataset::from_interactions`]):
//! 1. **k-core, iterated** (`min_count`, 5): on the current rows, count interactions per user and per item;
//!    drop every row whose user or item has fewer than `min_count` (both from the same counts, applied
//!    together); repeat until nothing changes.
//! 2. **Re-indexing** in ascending order of the raw id: users `0..n_users`, items `1..=n_items` (0 is padding).
//! 3. **Chronological order**: a stable sort of each user's rows by timestamp, so ties keep the file order.
//! 4. **Split**: the train part of a sequence of length ℓ is its first `cut = ℓ − ⌊test_frac·ℓ⌋` items.
//!
//! Duplicates are kept: a row repeating an earlier (user, item) pair, even with the same timestamp, is one
//! more interaction, counted by the k-core and present in the sequence (the Amazon data counts every rating).
//!
//! ```no_run
//! use mmkd_data::sequential::{load_sequential, SeqOptions};
//! let data = load_sequential(std::path::Path::new("data/beauty"), &SeqOptions::default())?;
//! println!("{}", data.stats());
//! # Ok::<(), mmkd_data::Error>(())
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use polars::prelude::{CsvReadOptions, SerReader};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::labels::{npy_rows, read_labels};
use crate::loader::{SGFD_FEATURES, SGFD_LABELS};
use crate::rng::stream;
use crate::table::{column, parse_id};

/// The interaction file of the sequential layout.
pub const SEQ_INTERACTIONS: &str = "interactions.csv";

/// Filtering, truncation and split of sequential data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)] // A typo in a config file is an error, not a silent default.
pub struct SeqOptions {
    /// The k of the iterated k-core: users and items with fewer interactions are removed (5).
    pub min_count: usize,
    /// Inputs are truncated to their last `max_len` items (50).
    pub max_len: usize,
    /// Share of each sequence held out as test: `⌊test_frac·ℓ⌋` last items (0.2).
    pub test_frac: f64,
}

impl Default for SeqOptions {
    fn default() -> Self {
        Self { min_count: 5, max_len: 50, test_frac: 0.2 }
    }
}

/// Whether `dir` holds the sequential layout (`interactions.csv`).
pub fn is_sequential(dir: &Path) -> bool {
    dir.join(SEQ_INTERACTIONS).is_file()
}

/// Reads `dir/interactions.csv`, checks item ids against the feature and label files present, and applies
/// the protocol of [`SeqDataset::from_interactions`].
pub fn load_sequential(dir: &Path, opts: &SeqOptions) -> Result<SeqDataset> {
    let _span = tracing::info_span!("load_sequential", dir = %dir.display()).entered();
    let path = dir.join(SEQ_INTERACTIONS);
    let rows = read_interactions(&path)?;
    check_items(dir, &path, &rows)?;
    let triples: Vec<(u32, u32, i64)> = rows.iter().map(|r| (r.user, r.item, r.time)).collect();
    let data = SeqDataset::build(&triples, opts, &path)?;
    tracing::info!(
        rows = triples.len(),
        users = data.n_users,
        items = data.n_items,
        interactions = data.n_interactions(),
        "loaded sequential data"
    );
    Ok(data)
}

/// Filtered, re-indexed, chronologically ordered sequences with their train/test cut.
#[derive(Debug, Clone, PartialEq)]
pub struct SeqDataset {
    pub n_users: usize,
    /// Items are `1..=n_items`; 0 is padding.
    pub n_items: usize,
    /// `item_raw[i]` is the raw `itemID` (the feature row) of item `i`; `item_raw[0] = u32::MAX`. (n_items + 1,)
    pub item_raw: Vec<u32>,
    /// `user_raw[u]` is the raw `userID` of user `u`. (n_users,)
    pub user_raw: Vec<u32>,
    /// Per user, chronological item ids in `1..=n_items`.
    pub sequences: Vec<Vec<u32>>,
    /// Per user, the length of the train part: `ℓ − ⌊test_frac·ℓ⌋`.
    pub cut: Vec<usize>,
    /// Inputs are truncated to their last `max_len` items.
    pub max_len: usize,
}

/// One next-item instance: the input is `sequences[user][start..end]` with
/// `start = end.saturating_sub(max_len)`, the target `sequences[user][end]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeqInstance {
    pub user: u32,
    pub end: u32,
}

impl SeqDataset {
    /// Applies the protocol (k-core, re-indexing, stable chronological sort, split) to in-memory
    /// `(user, item, timestamp)` rows, given in file order.
    pub fn from_interactions(rows: &[(u32, u32, i64)], opts: &SeqOptions) -> Result<Self> {
        Self::build(rows, opts, Path::new("in-memory interactions"))
    }

    /// [`Self::from_interactions`]; errors name `source`.
    fn build(rows: &[(u32, u32, i64)], opts: &SeqOptions, source: &Path) -> Result<Self> {
        check_options(opts)?;
        if rows.is_empty() {
            return Err(Error::Empty { path: source.to_path_buf() });
        }
        // Dense ids in ascending order of the raw ids, before filtering.
        let sorted_ids = |pick: fn(&(u32, u32, i64)) -> u32| {
            let mut ids: Vec<u32> = rows.iter().map(pick).collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        };
        let (users, items) = (sorted_ids(|r| r.0), sorted_ids(|r| r.1));
        // Each raw id is in its list, so the search always succeeds; the fallback is unreachable.
        let dense = |ids: &[u32], raw: u32| ids.binary_search(&raw).unwrap_or(0);
        let user_of: Vec<usize> = rows.iter().map(|r| dense(&users, r.0)).collect();
        let item_of: Vec<usize> = rows.iter().map(|r| dense(&items, r.1)).collect();
        let alive = k_core(&user_of, &item_of, users.len(), items.len(), opts.min_count);
        if !alive.iter().any(|&a| a) {
            return Err(Error::NothingSurvives {
                path: source.to_path_buf(),
                min_count: opts.min_count,
                rows: rows.len(),
            });
        }

        // Survivors, re-indexed in ascending raw order: users from 0, items from 1 (0 is padding).
        let (mut user_kept, mut item_kept) = (vec![false; users.len()], vec![false; items.len()]);
        for (r, _) in alive.iter().enumerate().filter(|(_, &a)| a) {
            user_kept[user_of[r]] = true;
            item_kept[item_of[r]] = true;
        }
        let (new_user, user_raw) = renumber(&users, &user_kept, Vec::new());
        let (new_item, item_raw) = renumber(&items, &item_kept, vec![u32::MAX]);

        // Stable sort by (user, timestamp): ties keep the file order.
        let mut order: Vec<usize> = (0..rows.len()).filter(|&r| alive[r]).collect();
        order.sort_by_key(|&r| (new_user[user_of[r]], rows[r].2));
        let mut sequences = vec![Vec::new(); user_raw.len()];
        for &r in &order {
            sequences[new_user[user_of[r]] as usize].push(new_item[item_of[r]]);
        }
        let cut = sequences.iter().map(|s| cut_of(s.len(), opts.test_frac)).collect();
        Ok(Self {
            n_users: user_raw.len(),
            n_items: item_raw.len() - 1,
            item_raw,
            user_raw,
            sequences,
            cut,
            max_len: opts.max_len,
        })
    }

    /// Every prefix of every train part predicts its next item: `end` in `1..cut`, users in order.
    pub fn train_instances(&self) -> Vec<SeqInstance> {
        self.instances(|_, cut| 1..cut)
    }

    /// Every test position: `end` in `cut..len`. The input includes the earlier test items.
    pub fn test_instances(&self) -> Vec<SeqInstance> {
        self.instances(|len, cut| cut..len)
    }

    fn instances(&self, ends: impl Fn(usize, usize) -> std::ops::Range<usize>) -> Vec<SeqInstance> {
        let mut out = Vec::new();
        for (u, (seq, &cut)) in self.sequences.iter().zip(&self.cut).enumerate() {
            out.extend(ends(seq.len(), cut).map(|end| SeqInstance { user: u as u32, end: end as u32 }));
        }
        out
    }

    /// `(train, valid)`: a seeded random `round(frac·n)` of the train instances is held out for validation
    /// (spec §10, the honest protocol). Both lists are in (user, end) order; `frac` is clamped to `[0, 1]`.
    pub fn split_validation(&self, frac: f64, seed: u64) -> (Vec<SeqInstance>, Vec<SeqInstance>) {
        let mut all = self.train_instances();
        let frac = if frac.is_nan() { 0.0 } else { frac.clamp(0.0, 1.0) };
        let n_valid = (frac * all.len() as f64).round() as usize;
        all.shuffle(&mut stream(seed, "seq-valid"));
        let mut train = all.split_off(n_valid);
        let mut valid = all;
        train.sort_unstable();
        valid.sort_unstable();
        (train, valid)
    }

    /// The input items of `inst`, oldest first, at most `max_len` of them.
    pub fn input(&self, inst: SeqInstance) -> &[u32] {
        let end = inst.end as usize;
        &self.sequences[inst.user as usize][end.saturating_sub(self.max_len)..end]
    }

    /// The target item of `inst`.
    pub fn target(&self, inst: SeqInstance) -> u32 {
        self.sequences[inst.user as usize][inst.end as usize]
    }

    /// Occurrences of each item in the train parts; (n_items + 1,), row 0 (padding) is 0. The popularity
    /// baseline.
    pub fn train_item_counts(&self) -> Vec<f32> {
        let mut counts = vec![0f32; self.n_items + 1];
        for (seq, &cut) in self.sequences.iter().zip(&self.cut) {
            for &i in &seq[..cut] {
                counts[i as usize] += 1.0;
            }
        }
        counts
    }

    /// Total number of interactions (sum of the sequence lengths).
    pub fn n_interactions(&self) -> usize {
        self.sequences.iter().map(Vec::len).sum()
    }

    /// Summary statistics.
    pub fn stats(&self) -> SeqStats {
        let n = self.n_interactions();
        let lens: Vec<usize> = self.sequences.iter().map(Vec::len).collect();
        let n_train: usize = self.cut.iter().sum();
        let mut item_counts = vec![0usize; self.n_items + 1];
        self.sequences.iter().flatten().for_each(|&i| item_counts[i as usize] += 1);
        let cells = self.n_users as f64 * self.n_items as f64;
        SeqStats {
            n_users: self.n_users,
            n_items: self.n_items,
            n_interactions: n,
            avg_len: if self.n_users == 0 { 0.0 } else { n as f64 / self.n_users as f64 },
            min_seq_len: lens.iter().copied().min().unwrap_or(0),
            max_seq_len: lens.iter().copied().max().unwrap_or(0),
            sparsity: if cells > 0.0 { 1.0 - n as f64 / cells } else { 1.0 },
            min_item_count: item_counts[1..].iter().copied().min().unwrap_or(0),
            max_item_count: item_counts[1..].iter().copied().max().unwrap_or(0),
            n_train_interactions: n_train,
            n_test_interactions: n - n_train,
            n_train_instances: self.cut.iter().map(|&c| c.saturating_sub(1)).sum(),
            n_test_instances: n - n_train,
            max_len: self.max_len,
        }
    }

    /// A copy in which every user's train part is randomly permuted (seeded); the test parts are untouched.
    /// For the "ignores order" baseline.
    pub fn shuffled(&self, seed: u64) -> SeqDataset {
        let mut rng = stream(seed, "seq-shuffle");
        let mut out = self.clone();
        for (seq, &cut) in out.sequences.iter_mut().zip(&self.cut) {
            seq[..cut].shuffle(&mut rng);
        }
        out
    }
}

/// Counts of a [`SeqDataset`], for `xtask inspect`, logs and the generator's manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeqStats {
    pub n_users: usize,
    pub n_items: usize,
    pub n_interactions: usize,
    /// `n_interactions / n_users`.
    pub avg_len: f64,
    pub min_seq_len: usize,
    pub max_seq_len: usize,
    /// `1 − n_interactions / (n_users · n_items)`.
    pub sparsity: f64,
    /// Interactions of the least and the most frequent item.
    pub min_item_count: usize,
    pub max_item_count: usize,
    /// Items in the train parts (`Σ cut`) and in the test parts.
    pub n_train_interactions: usize,
    pub n_test_interactions: usize,
    /// `Σ (cut − 1)`.
    pub n_train_instances: usize,
    /// One per test item.
    pub n_test_instances: usize,
    /// Truncation length of the inputs.
    pub max_len: usize,
}

impl fmt::Display for SeqStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows: [(&str, String); 14] = [
            ("users", self.n_users.to_string()),
            ("items", self.n_items.to_string()),
            ("interactions", self.n_interactions.to_string()),
            ("avg length", format!("{:.2}", self.avg_len)),
            ("min length", self.min_seq_len.to_string()),
            ("max length", self.max_seq_len.to_string()),
            ("sparsity", format!("{:.4}%", self.sparsity * 100.0)),
            ("min item count", self.min_item_count.to_string()),
            ("max item count", self.max_item_count.to_string()),
            ("train interactions", self.n_train_interactions.to_string()),
            ("test interactions", self.n_test_interactions.to_string()),
            ("train instances", self.n_train_instances.to_string()),
            ("test instances", self.n_test_instances.to_string()),
            ("input truncated to", self.max_len.to_string()),
        ];
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let value_width = rows.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
        for (key, value) in rows {
            writeln!(f, "{key:<width$}  {value:>value_width$}")?;
        }
        Ok(())
    }
}

/// New ids of the kept entries of `ids` (ascending), numbered after the entries already in `raw`; returns
/// them (`u32::MAX` where not kept) and `raw` extended by the kept raw ids.
fn renumber(ids: &[u32], kept: &[bool], mut raw: Vec<u32>) -> (Vec<u32>, Vec<u32>) {
    let new = ids
        .iter()
        .zip(kept)
        .map(|(&id, &k)| {
            if !k {
                return u32::MAX;
            }
            raw.push(id);
            (raw.len() - 1) as u32
        })
        .collect();
    (new, raw)
}

/// `ℓ − ⌊test_frac·ℓ⌋`, as the reference code computes it.
fn cut_of(len: usize, test_frac: f64) -> usize {
    len - ((test_frac * len as f64).floor() as usize).min(len)
}

/// Rows that survive the iterated k-core: per pass, users and items are counted over the surviving rows,
/// and every row whose user or item is below `k` is dropped; until a pass drops nothing.
fn k_core(user_of: &[usize], item_of: &[usize], n_users: usize, n_items: usize, k: usize) -> Vec<bool> {
    let mut alive = vec![true; user_of.len()];
    let (mut user_count, mut item_count) = (vec![0usize; n_users], vec![0usize; n_items]);
    for pass in 1.. {
        user_count.fill(0);
        item_count.fill(0);
        for (r, _) in alive.iter().enumerate().filter(|(_, &a)| a) {
            user_count[user_of[r]] += 1;
            item_count[item_of[r]] += 1;
        }
        let mut dropped = 0usize;
        for (r, a) in alive.iter_mut().enumerate() {
            if *a && (user_count[user_of[r]] < k || item_count[item_of[r]] < k) {
                *a = false;
                dropped += 1;
            }
        }
        tracing::debug!(pass, dropped, "k-core pass");
        if dropped == 0 {
            break;
        }
    }
    alive
}

fn check_options(opts: &SeqOptions) -> Result<()> {
    let problem = if opts.max_len == 0 {
        Some(format!("max_len must be at least 1, found {}", opts.max_len))
    } else if !(0.0..1.0).contains(&opts.test_frac) {
        Some(format!("test_frac must be in [0, 1), found {}", opts.test_frac))
    } else {
        None
    };
    problem.map_or(Ok(()), |message| Err(Error::Options(format!("seq_data: {message}"))))
}

/// One row of `interactions.csv` and its 1-based line (header = line 1).
#[derive(Debug, Clone, Copy)]
struct SeqRow {
    user: u32,
    item: u32,
    time: i64,
    line: usize,
}

/// Reads `userID`, `itemID` and `timestamp` by name (other columns are ignored), every column as text so
/// that a bad cell becomes an error naming its line. Mirrors `table::read_rows`, with a third column.
fn read_interactions(path: &Path) -> Result<Vec<SeqRow>> {
    // Open it ourselves first so that a missing file is an `Io` error carrying the OS reason.
    std::fs::File::open(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    let csv_err = |e: polars::error::PolarsError| Error::Csv { path: path.to_path_buf(), message: e.to_string() };
    let df = CsvReadOptions::default()
        .with_has_header(true)
        .with_infer_schema_length(Some(0)) // Some(0): every column is read as String.
        .with_raise_if_empty(false)
        .try_into_reader_with_file_path(Some(path.to_path_buf()))
        .map_err(csv_err)?
        .finish()
        .map_err(csv_err)?;
    if df.width() == 0 {
        return Err(Error::Empty { path: path.to_path_buf() });
    }
    let users = column(&df, path, "userID")?;
    let items = column(&df, path, "itemID")?;
    let times = column(&df, path, "timestamp")?;
    let mut rows = Vec::with_capacity(df.height());
    let mut blank_lines = Vec::new();
    for (i, ((u, it), t)) in users.iter().zip(items.iter()).zip(times.iter()).enumerate() {
        let line = i + 2;
        if u.is_none() && it.is_none() && t.is_none() {
            // polars reads a blank line as a row of nulls.
            blank_lines.push(line);
            continue;
        }
        let user = parse_id(path, line, "userID", u)?;
        let item = parse_id(path, line, "itemID", it)?;
        let time = parse_time(path, line, t)?;
        rows.push(SeqRow { user, item, time, line });
    }
    let last_line = rows.last().map_or(0, |r| r.line);
    blank_lines.retain(|&l| l < last_line);
    if let Some(first) = blank_lines.first() {
        tracing::warn!(path = %path.display(), "{} blank lines skipped (first: line {first})", blank_lines.len());
    }
    if rows.is_empty() {
        return Err(Error::Empty { path: path.to_path_buf() });
    }
    Ok(rows)
}

/// A non-negative integer timestamp (any unit; only the order matters).
fn parse_time(path: &Path, line: usize, cell: Option<&str>) -> Result<i64> {
    let column = "timestamp";
    let text = cell.unwrap_or("").trim();
    match text.parse::<i64>() {
        Ok(v) if v < 0 => Err(Error::NegativeId { path: path.to_path_buf(), line, column, found: text.to_string() }),
        Ok(v) => Ok(v),
        Err(_) => Err(Error::BadId { path: path.to_path_buf(), line, column, found: text.to_string() }),
    }
}

/// Item ids must be rows of the feature files present (which must agree), and the labels, when present,
/// must have one entry per feature row (or, without features, cover every item id).
fn check_items(dir: &Path, path: &Path, rows: &[SeqRow]) -> Result<()> {
    let mut n_rows: Option<(usize, PathBuf)> = None;
    for (_, file) in SGFD_FEATURES {
        let feature_path = dir.join(file);
        if !feature_path.is_file() {
            continue;
        }
        let (count, _) = npy_rows(&feature_path)?;
        match &n_rows {
            None => n_rows = Some((count, feature_path)),
            Some((first_rows, first)) if *first_rows != count => {
                return Err(Error::FeatureRows {
                    first: first.clone(),
                    first_rows: *first_rows,
                    other: feature_path,
                    other_rows: count,
                })
            }
            Some(_) => {}
        }
    }
    let max_item = rows.iter().map(|r| r.item).max().map_or(0, |m| m as usize + 1);
    let (n_items, implied_by) = match &n_rows {
        Some((count, file)) => (*count, format!("{} ({count} rows)", file.display())),
        None => (max_item, format!("the largest item id in {} ({})", path.display(), max_item.saturating_sub(1))),
    };
    if n_rows.is_some() {
        if let Some(r) = rows.iter().find(|r| r.item as usize >= n_items) {
            let (path, line, item) = (path.to_path_buf(), r.line, r.item);
            return Err(Error::ItemOutOfRange { path, line, item, n_items, implied_by });
        }
    }
    let labels_path = dir.join(SGFD_LABELS);
    if labels_path.is_file() {
        let labels = read_labels(&labels_path)?;
        let bad = if n_rows.is_some() { labels.len() != n_items } else { labels.len() < n_items };
        if bad {
            return Err(Error::LabelsLength { path: labels_path, found: labels.len(), n_items, implied_by });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Options without filtering (every user and item survives).
    fn keep_all() -> SeqOptions {
        SeqOptions { min_count: 1, ..SeqOptions::default() }
    }

    /// One user with `len` items 100, 101, … at times 0, 1, ….
    fn one_user(len: u32) -> Vec<(u32, u32, i64)> {
        (0..len).map(|t| (7, 100 + t, i64::from(t))).collect()
    }

    /// Spec §14 test 5: ℓ = 10 → cut 8, 7 train instances, 2 test instances; the second test input holds
    /// the first test item.
    #[test]
    fn split_and_instances_of_a_ten_item_user() {
        let d = SeqDataset::from_interactions(&one_user(10), &keep_all()).unwrap();
        assert_eq!((d.n_users, d.n_items), (1, 10));
        assert_eq!(d.user_raw, vec![7]);
        assert_eq!(d.item_raw[0], u32::MAX);
        assert_eq!(d.item_raw[1..], (100..110).collect::<Vec<u32>>()[..]);
        assert_eq!(d.sequences[0], (1..=10).collect::<Vec<u32>>());
        assert_eq!(d.cut, vec![8]);
        let train = d.train_instances();
        let test = d.test_instances();
        assert_eq!(train.len(), 7);
        assert_eq!(test.len(), 2);
        assert_eq!(train[0], SeqInstance { user: 0, end: 1 });
        assert_eq!((d.input(train[0]), d.target(train[0])), (&[1u32][..], 2));
        assert_eq!(d.target(train[6]), 8, "the last train target is the last train item");
        let (first, second) = (test[0], test[1]);
        assert_eq!((d.target(first), d.target(second)), (9, 10));
        assert!(d.input(second).contains(&d.target(first)));
        assert_eq!(d.input(second), &(1..=9).collect::<Vec<u32>>()[..]);
        let s = d.stats();
        assert_eq!((s.n_train_instances, s.n_test_instances, s.n_train_interactions), (7, 2, 8));
    }

    #[test]
    fn cut_follows_the_reference_rule() {
        // ℓ = 5 → 4/1, 9 → 8/1, 10 → 8/2 (spec §2.4).
        assert_eq!([5, 9, 10, 14, 15].map(|l| cut_of(l, 0.2)), [4, 8, 8, 12, 12]);
        assert_eq!(cut_of(1, 0.2), 1);
        assert_eq!(cut_of(10, 0.0), 10);
    }

    /// Truncation keeps the last `max_len` items of the prefix.
    #[test]
    fn inputs_are_truncated_to_max_len() {
        let opts = SeqOptions { max_len: 3, ..keep_all() };
        let d = SeqDataset::from_interactions(&one_user(10), &opts).unwrap();
        let test = d.test_instances();
        assert_eq!(d.input(test[1]), &[7, 8, 9]);
        assert_eq!(d.input(SeqInstance { user: 0, end: 2 }), &[1, 2]);
    }

    /// With k = 2, one pass drops user 3; then item 2 has one row left, then user 2 has one: three passes.
    #[test]
    fn k_core_iterates_until_stable() {
        let rows = [(0, 10, 0), (0, 11, 1), (1, 10, 0), (1, 11, 1), (2, 11, 0), (2, 12, 1), (3, 12, 0)];
        let opts = SeqOptions { min_count: 2, ..SeqOptions::default() };
        let d = SeqDataset::from_interactions(&rows, &opts).unwrap();
        assert_eq!(d.user_raw, vec![0, 1]);
        assert_eq!(d.item_raw, vec![u32::MAX, 10, 11]);
        assert_eq!(d.sequences, vec![vec![1, 2], vec![1, 2]]);
        // A single pass would have kept user 2 and item 12.
        let (users, items) = ([0, 0, 1, 1, 2, 2, 3], [0, 1, 0, 1, 1, 2, 2]);
        let alive = k_core(&users, &items, 4, 3, 2);
        assert_eq!(alive, vec![true, true, true, true, false, false, false]);
    }

    #[test]
    fn nothing_surviving_is_an_error() {
        let err = SeqDataset::from_interactions(&one_user(4), &SeqOptions::default()).unwrap_err();
        assert!(err.to_string().contains("5-core"), "{err}");
        assert!(SeqDataset::from_interactions(&[], &keep_all()).is_err());
        let err = SeqDataset::from_interactions(&one_user(4), &SeqOptions { max_len: 0, ..keep_all() }).unwrap_err();
        assert!(err.to_string().contains("max_len"), "{err}");
    }

    /// Ties keep the file order; ids follow the raw ids, not the order of appearance.
    #[test]
    fn ties_keep_file_order_and_ids_ascend_with_raw_ids() {
        let rows = [(5, 9, 2), (5, 3, 1), (2, 7, 0), (5, 5, 2), (5, 4, 1)];
        let d = SeqDataset::from_interactions(&rows, &keep_all()).unwrap();
        assert_eq!(d.user_raw, vec![2, 5]);
        assert_eq!(d.item_raw, vec![u32::MAX, 3, 4, 5, 7, 9]);
        // User 5 by time: t=1 → raw 3, 4 (file order); t=2 → raw 9, 5 (file order).
        assert_eq!(d.sequences[1], vec![1, 2, 5, 3]);
        assert_eq!(d.sequences[0], vec![4]);
    }

    /// Repeated (user, item, time) rows are separate interactions, and count towards the k-core.
    #[test]
    fn duplicates_are_kept() {
        let rows = [(0, 1, 0), (0, 1, 0), (0, 2, 1)];
        let d = SeqDataset::from_interactions(&rows, &keep_all()).unwrap();
        assert_eq!(d.sequences, vec![vec![1, 1, 2]]);
        assert_eq!(d.train_item_counts(), vec![0.0, 2.0, 1.0]);
        // With k = 2, item 2 (one row) goes and the duplicate pair alone keeps user 0 and item 1.
        let d = SeqDataset::from_interactions(&rows, &SeqOptions { min_count: 2, ..keep_all() }).unwrap();
        assert_eq!((d.sequences.clone(), d.item_raw.clone()), (vec![vec![1, 1]], vec![u32::MAX, 1]));
    }

    #[test]
    fn train_item_counts_cover_train_parts_only() {
        // Two users of length 5 (cut 4): the last item of each is test.
        let rows: Vec<(u32, u32, i64)> =
            (0..5).map(|t| (0, t, i64::from(t))).chain((0..5).map(|t| (1, 4 - t, 0))).collect();
        let d = SeqDataset::from_interactions(&rows, &keep_all()).unwrap();
        // User 0: raw 0..5 → items 1..=5; user 1: raw 4, 3, 2, 1, 0 (all at time 0, file order).
        assert_eq!(d.sequences[1], vec![5, 4, 3, 2, 1]);
        assert_eq!(d.train_item_counts(), vec![0.0, 1.0, 2.0, 2.0, 2.0, 1.0]);
        let s = d.stats();
        assert_eq!((s.n_interactions, s.n_train_interactions, s.n_test_interactions), (10, 8, 2));
        assert!((s.sparsity - 0.0).abs() < 1e-12 && (s.avg_len - 5.0).abs() < 1e-12);
        assert_eq!((s.min_item_count, s.max_item_count), (2, 2));
        assert!(s.to_string().lines().any(|l| l.starts_with("train instances") && l.ends_with(" 6")), "{s}");
    }

    #[test]
    fn shuffled_keeps_multisets_and_test_parts() {
        let rows: Vec<(u32, u32, i64)> =
            (0..6u32).flat_map(|u| (0..20u32).map(move |t| (u, (u * 7 + t * 3) % 40, i64::from(t)))).collect();
        let d = SeqDataset::from_interactions(&rows, &keep_all()).unwrap();
        let s = d.shuffled(3);
        assert_eq!(s.cut, d.cut);
        let mut any_moved = false;
        for ((a, b), &cut) in d.sequences.iter().zip(&s.sequences).zip(&d.cut) {
            assert_eq!(a[cut..], b[cut..], "test part changed");
            let (mut x, mut y) = (a[..cut].to_vec(), b[..cut].to_vec());
            any_moved |= x != y;
            x.sort_unstable();
            y.sort_unstable();
            assert_eq!(x, y, "train multiset changed");
        }
        assert!(any_moved);
        assert_eq!(d.shuffled(3), s, "seeded");
        assert_ne!(d.shuffled(4), s);
    }

    #[test]
    fn validation_is_a_seeded_share_of_the_train_instances() {
        let rows: Vec<(u32, u32, i64)> =
            (0..10u32).flat_map(|u| (0..10u32).map(move |t| (u, t, i64::from(t)))).collect();
        let d = SeqDataset::from_interactions(&rows, &keep_all()).unwrap();
        let all = d.train_instances();
        assert_eq!(all.len(), 70);
        let (train, valid) = d.split_validation(0.1, 5);
        assert_eq!((train.len(), valid.len()), (63, 7));
        let mut merged = [train.clone(), valid.clone()].concat();
        merged.sort_unstable();
        assert_eq!(merged, all);
        assert_eq!(d.split_validation(0.1, 5), (train, valid.clone()));
        assert_ne!(d.split_validation(0.1, 6).1, valid);
        assert_eq!(d.split_validation(0.0, 5).1.len(), 0);
    }
}
