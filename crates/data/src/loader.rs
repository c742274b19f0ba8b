//! The two on-disk layouts: detection, reading and validation.
//!
//! Item count: `LoadOptions::n_items` if given; else the row count of the feature files (they must agree);
//! else `max(labels length, max item id + 1)`. User count: `max user id + 1` over all files.

use std::path::{Path, PathBuf};

use crate::dataset::{Dataset, Finding, Layout, LoadOptions, Parts, SplitInput};
use crate::error::{Error, Result};
use crate::labels::{npy_rows, read_labels, Labels};
use crate::table::{read_rows, Table};

/// SGFD feature files, in modality order.
pub const SGFD_FEATURES: [(&str, &str); 2] =
    [("visual", "FeatureImage_normal.npy"), ("text", "FeatureText_normal.npy")];
/// SGFD label file.
pub const SGFD_LABELS: &str = "MetaData_normal.npy";
/// MMRec feature files, in modality order.
pub const MMREC_FEATURES: [(&str, &str); 2] = [("visual", "image_feat.npy"), ("text", "text_feat.npy")];

/// Which layout `dir` holds: SGFD if `train.csv` exists, else MMRec if it holds exactly one `*.inter` file.
pub fn detect_layout(dir: &Path) -> Result<Layout> {
    if dir.join("train.csv").is_file() {
        return Ok(Layout::Sgfd);
    }
    let entries = std::fs::read_dir(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
    let mut inter = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
        let path = entry.path();
        if path.is_file() && path.extension().is_some_and(|e| e == "inter") {
            if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                inter.push(stem.to_string());
            }
        }
    }
    inter.sort();
    match inter.as_slice() {
        [name] => Ok(Layout::MmRec { name: name.clone() }),
        [] => Err(Error::Layout { dir: dir.to_path_buf(), found: "neither".to_string() }),
        many => Err(Error::Layout {
            dir: dir.to_path_buf(),
            found: format!(
                "{} `*.inter` files ({})",
                many.len(),
                many.iter().map(|n| format!("{n}.inter")).collect::<Vec<_>>().join(", ")
            ),
        }),
    }
}

/// Detects the layout of `dir` and loads it.
pub fn load(dir: &Path, opts: &LoadOptions) -> Result<Dataset> {
    match detect_layout(dir)? {
        Layout::Sgfd => load_sgfd(dir, opts),
        Layout::MmRec { name } => load_mmrec(dir, &name, opts),
    }
}

/// Loads the SGFD layout: `train.csv`, `test.csv`, optional `valid.csv` (columns `userID`, `itemID` by name,
/// comma-separated), features `Feature{Image,Text}_normal.npy` and labels `MetaData_normal.npy` when present.
pub fn load_sgfd(dir: &Path, opts: &LoadOptions) -> Result<Dataset> {
    let _span = tracing::info_span!("load_sgfd", dir = %dir.display()).entered();
    let mut files = Vec::new();
    for (split, file) in [(0u8, "train.csv"), (1, "valid.csv"), (2, "test.csv")] {
        let path = dir.join(file);
        if split == 1 && !path.exists() {
            continue;
        }
        let mut table = read_rows(&path, b',', false)?;
        table.rows.iter_mut().for_each(|r| r.split = split);
        files.push((path, table));
    }
    let labels_path = dir.join(SGFD_LABELS);
    let labels = if labels_path.exists() { Some((read_labels(&labels_path)?, labels_path)) } else { None };
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    finish(name, dir, Layout::Sgfd, opts, files, feature_files(dir, &SGFD_FEATURES), labels)
}

/// Loads the MMRec layout: `<name>.inter` (tab-separated; columns `userID`, `itemID`, `x_label` by name,
/// `x_label` 0 train, 1 valid, 2 test) and features `image_feat.npy`, `text_feat.npy` when present.
pub fn load_mmrec(dir: &Path, name: &str, opts: &LoadOptions) -> Result<Dataset> {
    let _span = tracing::info_span!("load_mmrec", dir = %dir.display(), name).entered();
    let path = dir.join(format!("{name}.inter"));
    let table = read_rows(&path, b'\t', true)?;
    let layout = Layout::MmRec { name: name.to_string() };
    finish(name.to_string(), dir, layout, opts, vec![(path, table)], feature_files(dir, &MMREC_FEATURES), None)
}

fn feature_files(dir: &Path, names: &[(&str, &str)]) -> Vec<(String, PathBuf)> {
    names
        .iter()
        .map(|&(modality, file)| (modality.to_string(), dir.join(file)))
        .filter(|(_, path)| path.is_file())
        .collect()
}

/// The item count and what implied it.
struct ItemCount {
    n_items: usize,
    implied_by: String,
    /// Whether it came from outside the interactions (option or features), so ids must be checked against it.
    external: bool,
}

fn item_count(
    opts: &LoadOptions,
    features: &[(String, PathBuf)],
    labels: Option<&(Labels, PathBuf)>,
    max_item: Option<u32>,
) -> Result<ItemCount> {
    if let Some(n_items) = opts.n_items {
        return Ok(ItemCount { n_items, implied_by: format!("the `n_items` option ({n_items})"), external: true });
    }
    let mut first: Option<(&Path, usize)> = None;
    for (_, path) in features {
        let (rows, _) = npy_rows(path)?;
        match first {
            None => first = Some((path, rows)),
            Some((first_path, first_rows)) if first_rows != rows => {
                return Err(Error::FeatureRows {
                    first: first_path.to_path_buf(),
                    first_rows,
                    other: path.clone(),
                    other_rows: rows,
                })
            }
            Some(_) => {}
        }
    }
    if let Some((path, rows)) = first {
        return Ok(ItemCount {
            n_items: rows,
            implied_by: format!("{} ({rows} rows)", path.display()),
            external: true,
        });
    }
    let from_ids = max_item.map_or(0, |m| m as usize + 1);
    match labels {
        Some((l, path)) if l.len() >= from_ids => Ok(ItemCount {
            n_items: l.len(),
            implied_by: format!("{} ({} labels)", path.display(), l.len()),
            external: true,
        }),
        _ => Ok(ItemCount {
            n_items: from_ids,
            implied_by: format!("the largest item id in the interactions ({})", from_ids.saturating_sub(1)),
            external: false,
        }),
    }
}

fn finish(
    name: String,
    dir: &Path,
    layout: Layout,
    opts: &LoadOptions,
    files: Vec<(PathBuf, Table)>,
    feature_files: Vec<(String, PathBuf)>,
    labels: Option<(Labels, PathBuf)>,
) -> Result<Dataset> {
    let all_rows = || files.iter().flat_map(|(_, table)| table.rows.iter());
    let max_item = all_rows().map(|r| r.item).max();
    let count = item_count(opts, &feature_files, labels.as_ref(), max_item)?;
    let n_items = count.n_items;
    if count.external {
        for (path, table) in &files {
            if let Some(r) = table.rows.iter().find(|r| r.item as usize >= n_items) {
                return Err(Error::ItemOutOfRange {
                    path: path.clone(),
                    line: r.line,
                    item: r.item,
                    n_items,
                    implied_by: count.implied_by,
                });
            }
        }
    }
    let labels = match labels {
        Some((l, path)) if l.len() != n_items => {
            return Err(Error::LabelsLength { path, found: l.len(), n_items, implied_by: count.implied_by })
        }
        Some((l, _)) => Some(l),
        None => None,
    };
    let n_users = all_rows().map(|r| r.user as usize + 1).max().unwrap_or(0);
    let mut splits: [SplitInput; 3] = Default::default();
    for (path, table) in &files {
        for r in &table.rows {
            // `split` is 0, 1 or 2 by construction in `table`.
            if let Some(s) = splits.get_mut(usize::from(r.split)) {
                s.path.get_or_insert_with(|| path.clone());
                s.pairs.push((r.user, r.item));
            }
        }
    }
    let mut findings = Vec::new();
    for (path, table) in &files {
        if let Some(first) = table.blank_lines.first() {
            let n = table.blank_lines.len();
            findings.push(Finding::warn(Some(path), format!("{n} blank lines skipped (first: line {first})")));
        }
    }
    for (split, s) in ["train", "test"].iter().zip([&splits[0], &splits[2]]) {
        if s.pairs.is_empty() {
            let path = files.first().map(|(p, _)| p.as_path());
            findings.push(Finding::warn(path, format!("the {split} split is empty")));
        }
    }
    let [train, valid, test] = splits;
    let dataset = Dataset::assemble(Parts {
        name,
        dir: dir.to_path_buf(),
        layout,
        n_users,
        n_items,
        train,
        valid,
        test,
        labels,
        feature_files,
        findings,
    });
    tracing::info!(
        users = dataset.n_users,
        items = dataset.n_items,
        train = dataset.train.nnz(),
        valid = dataset.valid.nnz(),
        test = dataset.test.nnz(),
        findings = dataset.findings.len(),
        "loaded"
    );
    Ok(dataset)
}
