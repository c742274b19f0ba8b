//! Writing a generated data set in the SGFD layout, every file atomically (`name.tmp`, then rename).

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use npyz::WriterBuilder;
use serde_json::json;

use crate::{Error, Generated, Result};

/// Interaction files, `itemID,userID` (item first, as in the real files).
pub const TRAIN_FILE: &str = "train.csv";
pub const TEST_FILE: &str = "test.csv";
/// f32 (n_items, visual_dim), C order.
pub const VISUAL_FILE: &str = "FeatureImage_normal.npy";
/// f32 (n_items, text_dim), C order.
pub const TEXT_FILE: &str = "FeatureText_normal.npy";
/// i64 (n_items,): the category of each item.
pub const LABELS_FILE: &str = "MetaData_normal.npy";
/// Preset, seed, every generator parameter and the statistics of the result.
pub const MANIFEST_FILE: &str = "manifest.json";

impl Generated {
    /// Writes the data set into `dir` (created if missing): `train.csv`, `test.csv`,
    /// `FeatureImage_normal.npy`, `FeatureText_normal.npy`, `MetaData_normal.npy` and `manifest.json`.
    pub fn write_sgfd(&self, dir: &Path) -> Result<()> {
        fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
        write_atomic(&dir.join(TRAIN_FILE), |w| write_interactions(w, &self.train))?;
        write_atomic(&dir.join(TEST_FILE), |w| write_interactions(w, &self.test))?;
        write_item_files(dir, &self.preset, &self.visual, &self.text, &self.labels, &self.manifest())?;
        tracing::info!(dir = %dir.display(), "wrote generated data set");
        Ok(())
    }

    /// The manifest: generator, seed, the preset with every parameter, the file names and the statistics.
    /// serde_json's map keeps the keys in one order from run to run.
    pub fn manifest(&self) -> serde_json::Value {
        json!({
            "generator": "mmkd-synth",
            "version": env!("CARGO_PKG_VERSION"),
            "seed": self.seed,
            "preset": self.preset,
            "files": {
                "train": TRAIN_FILE,
                "test": TEST_FILE,
                "visual": VISUAL_FILE,
                "text": TEXT_FILE,
                "labels": LABELS_FILE,
            },
            "stats": self.stats,
        })
    }
}

/// Writes `path` through `path.tmp` and a rename, so a reader never sees a partial file.
pub(crate) fn write_atomic(path: &Path, body: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>) -> Result<()> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let file = File::create(&tmp).map_err(io_err(&tmp))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    body(&mut w).map_err(io_err(&tmp))?;
    let file = w.into_inner().map_err(|e| Error::Io { path: tmp.clone(), source: e.into_error() })?;
    file.sync_all().map_err(io_err(&tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_err(path))
}

fn write_interactions(w: &mut impl Write, pairs: &[(u32, u32)]) -> std::io::Result<()> {
    w.write_all(b"itemID,userID\n")?;
    for &(user, item) in pairs {
        writeln!(w, "{item},{user}")?;
    }
    Ok(())
}

pub(crate) fn write_npy<T: npyz::AutoSerialize + Copy>(
    w: &mut impl Write,
    shape: &[u64],
    data: &[T],
) -> std::io::Result<()> {
    let mut writer = npyz::WriteOptions::new().default_dtype().shape(shape).writer(w).begin_nd()?;
    writer.extend(data.iter().copied())?;
    writer.finish()
}

/// Writes the per-item files every layout shares — the two feature matrices, the labels — and
/// `manifest.json`, each atomically.
pub(crate) fn write_item_files(
    dir: &Path,
    preset: &crate::Preset,
    visual: &[f32],
    text: &[f32],
    labels: &[i64],
    manifest: &serde_json::Value,
) -> Result<()> {
    let n_items = preset.n_items as u64;
    write_atomic(&dir.join(VISUAL_FILE), |w| write_npy(w, &[n_items, preset.visual_dim as u64], visual))?;
    write_atomic(&dir.join(TEXT_FILE), |w| write_npy(w, &[n_items, preset.text_dim as u64], text))?;
    write_atomic(&dir.join(LABELS_FILE), |w| write_npy(w, &[n_items], labels))?;
    let manifest = serde_json::to_vec_pretty(manifest)?;
    write_atomic(&dir.join(MANIFEST_FILE), |w| {
        w.write_all(&manifest)?;
        w.write_all(b"\n")
    })
}
