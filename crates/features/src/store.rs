//! [`FeatureStore`]: one dense matrix per modality, one row per item, checked and normalised, handed out
//! as candle tensors on the caller's device.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::matrix::{read_safetensors, write_safetensors, FeatureMatrix};

/// Row-wise preprocessing applied to every modality.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalization {
    /// Features as stored (the SGFD reference code feeds them raw).
    #[default]
    None,
    /// Each row divided by its L2 norm (rows of norm 0 are left at 0).
    L2,
    /// Each column shifted to mean 0 and scaled to standard deviation 1 (constant columns become 0).
    Standard,
}

#[derive(Debug, Clone)]
struct Modality {
    name: String,
    source: PathBuf,
    matrix: FeatureMatrix,
}

/// Generic item features of every modality, in a fixed order (e.g. `visual`, then `text`).
#[derive(Debug, Clone)]
pub struct FeatureStore {
    n_items: usize,
    modalities: Vec<Modality>,
}

impl FeatureStore {
    /// An empty store for `n_items` items.
    pub fn new(n_items: usize) -> Self {
        Self { n_items, modalities: Vec::new() }
    }

    /// Adds a modality after checking that it has one row per item and only finite values.
    /// `source` names the file in error messages.
    pub fn insert(&mut self, name: &str, matrix: FeatureMatrix, source: &Path) -> Result<()> {
        if self.modalities.iter().any(|m| m.name == name) {
            return Err(Error::DuplicateModality(name.to_owned()));
        }
        if matrix.n_rows() != self.n_items {
            return Err(Error::RowCount {
                path: source.to_owned(),
                modality: name.to_owned(),
                expected: self.n_items,
                found: matrix.n_rows(),
            });
        }
        if let Some((row, col)) = matrix.first_non_finite() {
            let bad = matrix.non_finite_rows();
            tracing::error!(path = %source.display(), modality = name, rows = ?&bad[..bad.len().min(20)], n_bad = bad.len(), "non-finite feature rows");
            return Err(Error::NonFinite { path: source.to_owned(), row, col });
        }
        tracing::debug!(modality = name, rows = matrix.n_rows(), dim = matrix.n_cols(), "features added");
        self.modalities.push(Modality { name: name.to_owned(), source: source.to_owned(), matrix });
        Ok(())
    }

    /// Loads `(modality, file)` pairs, each `.npy` or `.safetensors` (a safetensors file must hold exactly
    /// one tensor here; use [`FeatureStore::load_safetensors`] for a multi-modality file). With `n_items`
    /// `None`, the first file's row count defines the item count and the others must agree.
    pub fn load(files: &[(String, PathBuf)], n_items: Option<usize>) -> Result<Self> {
        let mut store: Option<Self> = n_items.map(Self::new);
        for (name, path) in files {
            let matrix = match path.extension().and_then(|e| e.to_str()) {
                Some("npy") => FeatureMatrix::read_npy(path)?,
                Some("safetensors") => {
                    let mut all = read_safetensors(path)?;
                    if all.len() != 1 {
                        return Err(Error::format(path, "exactly one tensor", format!("{} tensors", all.len())));
                    }
                    all.remove(0).1
                }
                _ => return Err(Error::Extension { path: path.clone() }),
            };
            tracing::info!(modality = %name, path = %path.display(), rows = matrix.n_rows(), dim = matrix.n_cols(), "loaded features");
            let store = store.get_or_insert_with(|| Self::new(matrix.n_rows()));
            store.insert(name, matrix, path)?;
        }
        Ok(store.unwrap_or_else(|| Self::new(n_items.unwrap_or(0))))
    }

    /// Loads every tensor of one safetensors file as a modality (as written by [`FeatureStore::save_safetensors`]).
    pub fn load_safetensors(path: &Path, n_items: Option<usize>) -> Result<Self> {
        let all = read_safetensors(path)?;
        let n = n_items.or_else(|| all.first().map(|(_, m)| m.n_rows())).unwrap_or(0);
        let mut store = Self::new(n);
        for (name, matrix) in all {
            store.insert(&name, matrix, path)?;
        }
        Ok(store)
    }

    /// Writes all modalities into one safetensors file (keys = modality names), atomically.
    pub fn save_safetensors(&self, path: &Path) -> Result<()> {
        let mats: Vec<(&str, &FeatureMatrix)> = self.modalities.iter().map(|m| (m.name.as_str(), &m.matrix)).collect();
        write_safetensors(path, &mats)
    }

    /// Writes modality `name` as a `.npy` file, atomically.
    pub fn save_npy(&self, name: &str, path: &Path) -> Result<()> {
        self.matrix(name)?.write_npy(path)
    }

    /// Number of items (rows of every modality).
    pub fn n_items(&self) -> usize {
        self.n_items
    }

    /// Number of modalities.
    pub fn n_modalities(&self) -> usize {
        self.modalities.len()
    }

    /// Modality names in store order.
    pub fn names(&self) -> Vec<&str> {
        self.modalities.iter().map(|m| m.name.as_str()).collect()
    }

    /// Feature dimension of each modality, in store order.
    pub fn dims(&self) -> Vec<usize> {
        self.modalities.iter().map(|m| m.matrix.n_cols()).collect()
    }

    /// The file modality `name` came from.
    pub fn source(&self, name: &str) -> Result<&Path> {
        Ok(&self.modality(name)?.source)
    }

    /// The matrix of modality `name`.
    pub fn matrix(&self, name: &str) -> Result<&FeatureMatrix> {
        Ok(&self.modality(name)?.matrix)
    }

    fn modality(&self, name: &str) -> Result<&Modality> {
        self.modalities.iter().find(|m| m.name == name).ok_or_else(|| Error::UnknownModality {
            name: name.to_owned(),
            available: self.modalities.iter().map(|m| m.name.clone()).collect(),
        })
    }

    /// Applies `norm` to every modality in place.
    pub fn normalize(&mut self, norm: Normalization) {
        for m in &mut self.modalities {
            normalize_matrix(&mut m.matrix, norm);
        }
    }

    /// The whole matrix of modality `name` as an f32 tensor `(n_items, dim)` on `device`.
    pub fn tensor(&self, name: &str, device: &Device) -> Result<Tensor> {
        let m = self.matrix(name)?;
        Ok(Tensor::from_slice(m.data(), (m.n_rows(), m.n_cols()), device)?)
    }

    /// Rows `items` of modality `name` as an f32 tensor `(items.len(), dim)` on `device`.
    pub fn gather(&self, name: &str, items: &[u32], device: &Device) -> Result<Tensor> {
        let m = self.matrix(name)?;
        let mut out = Vec::with_capacity(items.len() * m.n_cols());
        for &i in items {
            if i as usize >= self.n_items {
                return Err(Error::ItemOutOfRange { item: i, n_items: self.n_items });
            }
            out.extend_from_slice(m.row(i as usize));
        }
        Ok(Tensor::from_vec(out, (items.len(), m.n_cols()), device)?)
    }
}

fn normalize_matrix(m: &mut FeatureMatrix, norm: Normalization) {
    let n_cols = m.n_cols();
    if n_cols == 0 {
        return;
    }
    match norm {
        Normalization::None => {}
        Normalization::L2 => {
            for row in m.data_mut().chunks_mut(n_cols) {
                let norm = row.iter().map(|v| f64::from(*v) * f64::from(*v)).sum::<f64>().sqrt();
                if norm > 0.0 {
                    row.iter_mut().for_each(|v| *v = (f64::from(*v) / norm) as f32);
                }
            }
        }
        Normalization::Standard => {
            let n_rows = m.n_rows() as f64;
            let mut mean = vec![0f64; n_cols];
            let mut sq = vec![0f64; n_cols];
            for row in m.data().chunks(n_cols) {
                for (j, v) in row.iter().enumerate() {
                    mean[j] += f64::from(*v);
                    sq[j] += f64::from(*v) * f64::from(*v);
                }
            }
            let std: Vec<f64> = (0..n_cols)
                .map(|j| {
                    mean[j] /= n_rows.max(1.0);
                    (sq[j] / n_rows.max(1.0) - mean[j] * mean[j]).max(0.0).sqrt()
                })
                .collect();
            for row in m.data_mut().chunks_mut(n_cols) {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = if std[j] > 1e-12 { ((f64::from(*v) - mean[j]) / std[j]) as f32 } else { 0.0 };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mmkd-store-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn store() -> FeatureStore {
        let mut s = FeatureStore::new(3);
        s.insert("visual", FeatureMatrix::new(3, 2, vec![3.0, 4.0, 0.0, 0.0, 1.0, 1.0]).unwrap(), Path::new("v"))
            .unwrap();
        s.insert("text", FeatureMatrix::new(3, 1, vec![1.0, 2.0, 3.0]).unwrap(), Path::new("t")).unwrap();
        s
    }

    #[test]
    fn checks_rows_and_finiteness_naming_the_row() {
        let mut s = FeatureStore::new(3);
        let err = s.insert("v", FeatureMatrix::new(2, 1, vec![1.0, 2.0]).unwrap(), Path::new("x.npy")).unwrap_err();
        assert!(err.to_string().contains("x.npy") && err.to_string().contains("2 rows"), "{err}");
        let err = s
            .insert("v", FeatureMatrix::new(3, 2, vec![1.0, 2.0, 3.0, f32::NAN, 0.0, 0.0]).unwrap(), Path::new("y.npy"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("y.npy") && err.contains("row 1") && err.contains("column 1"), "{err}");
        let err = s
            .insert("v", FeatureMatrix::new(3, 1, vec![1.0, 2.0, f32::INFINITY]).unwrap(), Path::new("z.npy"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("row 2"), "{err}");
        assert_eq!(s.n_modalities(), 0);
    }

    #[test]
    fn normalisations() {
        let mut s = store();
        s.normalize(Normalization::L2);
        assert_eq!(s.matrix("visual").unwrap().data(), &[0.6, 0.8, 0.0, 0.0, 0.70710677, 0.70710677]);
        let mut s = store();
        s.normalize(Normalization::Standard);
        let t = s.matrix("text").unwrap().data();
        // mean 2, population std sqrt(2/3)
        let sd = (2.0f64 / 3.0).sqrt();
        for (got, want) in t.iter().zip([-1.0 / sd, 0.0, 1.0 / sd]) {
            assert!((f64::from(*got) - want).abs() < 1e-6);
        }
    }

    #[test]
    fn tensors_gather_and_round_trips() {
        let s = store();
        let dev = Device::Cpu;
        assert_eq!(
            s.tensor("visual", &dev).unwrap().to_vec2::<f32>().unwrap(),
            vec![vec![3.0, 4.0], vec![0.0, 0.0], vec![1.0, 1.0]]
        );
        assert_eq!(
            s.gather("visual", &[2, 0], &dev).unwrap().to_vec2::<f32>().unwrap(),
            vec![vec![1.0, 1.0], vec![3.0, 4.0]]
        );
        assert!(s.gather("visual", &[3], &dev).is_err());
        let err = s.tensor("audio", &dev).unwrap_err().to_string();
        assert!(err.contains("audio") && err.contains("visual"), "{err}");
        assert_eq!(s.names(), vec!["visual", "text"]);
        assert_eq!(s.dims(), vec![2, 1]);

        let dir = temp_dir("rt");
        let p = dir.join("all.safetensors");
        s.save_safetensors(&p).unwrap();
        let back = FeatureStore::load_safetensors(&p, None).unwrap();
        assert_eq!(back.names(), vec!["visual", "text"]);
        assert_eq!(back.matrix("text").unwrap(), s.matrix("text").unwrap());

        s.save_npy("visual", &dir.join("v.npy")).unwrap();
        s.save_npy("text", &dir.join("t.npy")).unwrap();
        let files = vec![("visual".to_string(), dir.join("v.npy")), ("text".to_string(), dir.join("t.npy"))];
        let back = FeatureStore::load(&files, None).unwrap();
        assert_eq!(back.matrix("visual").unwrap(), s.matrix("visual").unwrap());
        let err = FeatureStore::load(&files, Some(4)).unwrap_err().to_string();
        assert!(err.contains("v.npy") && err.contains("4 items"), "{err}");
    }
}
