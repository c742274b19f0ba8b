//! Item category labels (`MetaData_normal.npy`) and npy header inspection.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use npyz::{DType, NpyFile, TypeChar};

use crate::error::{Error, Result};

/// One category label per item, remapped to dense classes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels {
    /// Class of item j, in `0..n_labels`.
    pub per_item: Vec<u32>,
    /// Number of distinct classes.
    pub n_labels: usize,
    /// `values[c]` is the original label value of class `c`, ascending.
    pub values: Vec<i64>,
}

impl Labels {
    /// Remaps raw label values to classes `0..C-1`, in ascending order of value.
    pub fn from_values(raw: &[i64]) -> Self {
        let mut values = raw.to_vec();
        values.sort_unstable();
        values.dedup();
        // Every raw value is in `values`, so the search always succeeds; the fallback is unreachable.
        let per_item = raw.iter().map(|v| values.binary_search(v).unwrap_or(0) as u32).collect();
        Self { per_item, n_labels: values.len(), values }
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.per_item.len()
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.per_item.is_empty()
    }

    /// Number of items in each class, length `n_labels`.
    pub fn histogram(&self) -> Vec<usize> {
        let mut hist = vec![0usize; self.n_labels];
        for &c in &self.per_item {
            if let Some(h) = hist.get_mut(c as usize) {
                *h += 1;
            }
        }
        hist
    }
}

fn open_npy(path: &Path) -> Result<NpyFile<BufReader<File>>> {
    let file = File::open(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    NpyFile::new(BufReader::new(file))
        .map_err(|e| Error::Npy { path: path.to_path_buf(), message: format!("not a valid .npy file: {e}") })
}

/// Shape `(rows, cols)` of a 2-D npy array, read from the header only.
pub fn npy_rows(path: &Path) -> Result<(usize, usize)> {
    let npy = open_npy(path)?;
    match npy.shape() {
        &[rows, cols] => Ok((to_usize(path, rows)?, to_usize(path, cols)?)),
        other => Err(Error::NpyShape { path: path.to_path_buf(), expected: "a 2-D array", found: other.to_vec() }),
    }
}

fn to_usize(path: &Path, n: u64) -> Result<usize> {
    usize::try_from(n).map_err(|_| Error::Npy { path: path.to_path_buf(), message: format!("dimension {n} too large") })
}

/// Reads integer labels (any of i1..i8, u1..u8; shape `(n,)` or `(n, 1)`) and remaps them with
/// [`Labels::from_values`].
pub fn read_labels(path: &Path) -> Result<Labels> {
    let npy = open_npy(path)?;
    let shape = npy.shape().to_vec();
    if !matches!(shape.as_slice(), [_] | [_, 1]) {
        return Err(Error::NpyShape {
            path: path.to_path_buf(),
            expected: "a 1-D array or a 2-D array with one column",
            found: shape,
        });
    }
    let dtype = npy.dtype();
    let type_str = match &dtype {
        DType::Plain(t) => t.clone(),
        other => return Err(Error::LabelsDtype { path: path.to_path_buf(), dtype: other.descr() }),
    };
    let bad_dtype = || Error::LabelsDtype { path: path.to_path_buf(), dtype: type_str.to_string() };
    let read_err =
        |e: std::io::Error| Error::Npy { path: path.to_path_buf(), message: format!("cannot read data: {e}") };
    let raw: Vec<i64> = match (type_str.type_char(), type_str.size_field()) {
        (TypeChar::Int, 1) => widen(npy.into_vec::<i8>().map_err(read_err)?),
        (TypeChar::Int, 2) => widen(npy.into_vec::<i16>().map_err(read_err)?),
        (TypeChar::Int, 4) => widen(npy.into_vec::<i32>().map_err(read_err)?),
        (TypeChar::Int, 8) => npy.into_vec::<i64>().map_err(read_err)?,
        (TypeChar::Uint, 1) => widen(npy.into_vec::<u8>().map_err(read_err)?),
        (TypeChar::Uint, 2) => widen(npy.into_vec::<u16>().map_err(read_err)?),
        (TypeChar::Uint, 4) => widen(npy.into_vec::<u32>().map_err(read_err)?),
        (TypeChar::Uint, 8) => {
            let data = npy.into_vec::<u64>().map_err(read_err)?;
            let mut out = Vec::with_capacity(data.len());
            for (i, v) in data.into_iter().enumerate() {
                let v = i64::try_from(v).map_err(|_| Error::Npy {
                    path: path.to_path_buf(),
                    message: format!("label #{i} = {v} does not fit in i64"),
                })?;
                out.push(v);
            }
            out
        }
        _ => return Err(bad_dtype()),
    };
    Ok(Labels::from_values(&raw))
}

fn widen<T: Into<i64>>(data: Vec<T>) -> Vec<i64> {
    data.into_iter().map(Into::into).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remap_is_ascending_and_dense() {
        let labels = Labels::from_values(&[7, 3, 7, 100]);
        assert_eq!(labels.per_item, vec![1, 0, 1, 2]);
        assert_eq!(labels.values, vec![3, 7, 100]);
        assert_eq!(labels.n_labels, 3);
        assert_eq!(labels.histogram(), vec![1, 2, 1]);
    }

    #[test]
    fn remap_handles_negative_values_and_empty_input() {
        let labels = Labels::from_values(&[-5, 0, -5]);
        assert_eq!(labels.per_item, vec![0, 1, 0]);
        assert_eq!(labels.values, vec![-5, 0]);
        let empty = Labels::from_values(&[]);
        assert_eq!(empty.n_labels, 0);
        assert!(empty.is_empty());
    }
}
