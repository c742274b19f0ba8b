//! A dense row-major f32 matrix and its `.npy` / `.safetensors` input and output.
//!
//! Loading streams the file into one `Vec<f32>`: an f64 file is converted element by element, so a
//! 17,318 × 4,096 matrix never exists twice in memory while it loads.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use npyz::WriterBuilder;

use crate::error::{Error, Result};

/// Row-major `(n_rows, n_cols)` f32 matrix: row `i` is item `i`.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureMatrix {
    n_rows: usize,
    n_cols: usize,
    data: Vec<f32>,
}

impl FeatureMatrix {
    /// Wraps row-major data; `data.len()` must equal `n_rows * n_cols`.
    pub fn new(n_rows: usize, n_cols: usize, data: Vec<f32>) -> Result<Self> {
        if data.len() != n_rows * n_cols {
            return Err(Error::Invalid(format!(
                "feature matrix of shape ({n_rows}, {n_cols}) needs {} values, got {}",
                n_rows * n_cols,
                data.len()
            )));
        }
        Ok(Self { n_rows, n_cols, data })
    }

    /// Number of rows (items).
    pub fn n_rows(&self) -> usize {
        self.n_rows
    }

    /// Number of columns (feature dimension).
    pub fn n_cols(&self) -> usize {
        self.n_cols
    }

    /// All values, row-major.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// Mutable values, row-major.
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.n_cols..(i + 1) * self.n_cols]
    }

    /// Gives up the buffer.
    pub fn into_data(self) -> Vec<f32> {
        self.data
    }

    /// First `(row, col)` holding NaN or ±Inf, if any.
    pub fn first_non_finite(&self) -> Option<(usize, usize)> {
        let pos = self.data.iter().position(|v| !v.is_finite())?;
        Some((pos / self.n_cols.max(1), pos % self.n_cols.max(1)))
    }

    /// Every row index that holds a NaN or ±Inf.
    pub fn non_finite_rows(&self) -> Vec<usize> {
        if self.n_cols == 0 {
            return Vec::new();
        }
        self.data
            .chunks(self.n_cols)
            .enumerate()
            .filter(|(_, r)| r.iter().any(|v| !v.is_finite()))
            .map(|(i, _)| i)
            .collect()
    }

    /// Reads a 2-D `.npy` of f32 or f64 in C order. A 1-D array is read as one column.
    pub fn read_npy(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let npy = npyz::NpyFile::new(BufReader::new(file)).map_err(|e| Error::io(path, e))?;
        let shape = npy.shape().to_vec();
        let (n_rows, n_cols) = match shape.as_slice() {
            [r] => (*r as usize, 1),
            [r, c] => (*r as usize, *c as usize),
            _ => return Err(Error::format(path, "a 2-D array (items, dim)", format!("shape {shape:?}"))),
        };
        if npy.order() != npyz::Order::C {
            return Err(Error::format(
                path,
                "a C-order (row-major) array",
                "a Fortran-order array (save it with numpy.ascontiguousarray first)",
            ));
        }
        let size = match npy.dtype() {
            npyz::DType::Plain(ts) if ts.type_char() == npyz::TypeChar::Float => ts.size_field(),
            other => {
                return Err(Error::format(path, "a float32 or float64 array", format!("dtype {}", other.descr())));
            }
        };
        let n = n_rows * n_cols;
        let mut data = Vec::with_capacity(n);
        match size {
            4 => {
                let reader = npy.data::<f32>().map_err(|e| Error::format(path, "float32 data", e.to_string()))?;
                for v in reader {
                    data.push(v.map_err(|e| Error::io(path, e))?);
                }
            }
            8 => {
                let reader = npy.data::<f64>().map_err(|e| Error::format(path, "float64 data", e.to_string()))?;
                for v in reader {
                    data.push(v.map_err(|e| Error::io(path, e))? as f32);
                }
            }
            other => return Err(Error::format(path, "a float32 or float64 array", format!("float{}", other * 8))),
        }
        if data.len() != n {
            return Err(Error::format(path, format!("{n} values for shape {shape:?}"), format!("{}", data.len())));
        }
        Ok(Self { n_rows, n_cols, data })
    }

    /// Writes a 2-D little-endian f32 `.npy` atomically (`path.tmp`, then rename).
    pub fn write_npy(&self, path: &Path) -> Result<()> {
        write_atomically(path, |w| {
            let mut writer = npyz::WriteOptions::<f32>::new()
                .default_dtype()
                .shape(&[self.n_rows as u64, self.n_cols as u64])
                .writer(w)
                .begin_nd()?;
            writer.extend(self.data.iter().copied())?;
            writer.finish()
        })
    }
}

/// Writes through `write` into `path.tmp`, flushes and syncs it, then renames it to `path`.
pub fn write_atomically(path: &Path, write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let result = (|| {
        let file = File::create(&tmp)?;
        let mut w = BufWriter::new(file);
        write(&mut w)?;
        w.flush()?;
        w.get_ref().sync_all()?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// The tensors of a safetensors file, in the order of its `__metadata__["order"]` entry when present,
/// else sorted by name. Only F32 and F64 2-D (or 1-D) tensors are accepted.
pub fn read_safetensors(path: &Path) -> Result<Vec<(String, FeatureMatrix)>> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut len_bytes = [0u8; 8];
    file.read_exact(&mut len_bytes).map_err(|_| Error::format(path, "a safetensors file", "fewer than 8 bytes"))?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > 100_000_000 || header_len + 8 > file_len {
        return Err(Error::format(path, "a safetensors header length", format!("{header_len}")));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(|e| Error::io(path, e))?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| Error::format(path, "a JSON safetensors header", e.to_string()))?;
    let data_start = 8 + header_len;

    let mut entries: Vec<(String, String, Vec<usize>, u64, u64)> = Vec::new();
    let mut order: Option<Vec<String>> = None;
    for (name, value) in &header {
        if name == "__metadata__" {
            order = value.get("order").and_then(|v| v.as_str()).map(|s| s.split(',').map(str::to_owned).collect());
            continue;
        }
        let bad =
            || Error::format(path, format!("dtype, shape and data_offsets for tensor `{name}`"), value.to_string());
        let dtype = value.get("dtype").and_then(|v| v.as_str()).ok_or_else(bad)?.to_owned();
        let shape: Vec<usize> = value
            .get("shape")
            .and_then(|v| v.as_array())
            .ok_or_else(bad)?
            .iter()
            .map(|d| d.as_u64().map(|d| d as usize))
            .collect::<Option<_>>()
            .ok_or_else(bad)?;
        let offsets = value.get("data_offsets").and_then(|v| v.as_array()).ok_or_else(bad)?;
        let (begin, end) = match offsets.as_slice() {
            [b, e] => (b.as_u64().ok_or_else(bad)?, e.as_u64().ok_or_else(bad)?),
            _ => return Err(bad()),
        };
        entries.push((name.clone(), dtype, shape, begin, end));
    }
    match order {
        Some(order) => {
            let mut sorted = Vec::with_capacity(entries.len());
            for name in &order {
                if let Some(pos) = entries.iter().position(|e| &e.0 == name) {
                    sorted.push(entries.remove(pos));
                }
            }
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            sorted.extend(entries);
            entries = sorted;
        }
        None => entries.sort_by(|a, b| a.0.cmp(&b.0)),
    }

    let mut out = Vec::with_capacity(entries.len());
    for (name, dtype, shape, begin, end) in entries {
        let (n_rows, n_cols) = match shape.as_slice() {
            [r] => (*r, 1),
            [r, c] => (*r, *c),
            _ => return Err(Error::format(path, format!("a 2-D tensor `{name}`"), format!("shape {shape:?}"))),
        };
        let elem = match dtype.as_str() {
            "F32" => 4u64,
            "F64" => 8,
            other => return Err(Error::format(path, format!("F32 or F64 tensor `{name}`"), format!("dtype {other}"))),
        };
        let n = (n_rows * n_cols) as u64;
        if end < begin || end - begin != n * elem || data_start + end > file_len {
            return Err(Error::format(
                path,
                format!("{} bytes for tensor `{name}` of shape {shape:?}", n * elem),
                format!("offsets [{begin}, {end}] in a file of {file_len} bytes"),
            ));
        }
        file.seek(SeekFrom::Start(data_start + begin)).map_err(|e| Error::io(path, e))?;
        let mut reader = BufReader::with_capacity(1 << 20, (&mut file).take(end - begin));
        let mut data = Vec::with_capacity(n as usize);
        let mut buf = [0u8; 8];
        for _ in 0..n {
            let b = &mut buf[..elem as usize];
            reader.read_exact(b).map_err(|e| Error::io(path, e))?;
            data.push(if elem == 4 {
                f32::from_le_bytes([b[0], b[1], b[2], b[3]])
            } else {
                f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
            });
        }
        out.push((name, FeatureMatrix { n_rows, n_cols, data }));
    }
    Ok(out)
}

/// Writes named matrices as F32 tensors into one safetensors file, atomically; the order of `mats` is
/// kept in `__metadata__["order"]`.
pub fn write_safetensors(path: &Path, mats: &[(&str, &FeatureMatrix)]) -> Result<()> {
    struct View<'a>(&'a FeatureMatrix, [usize; 2]);
    impl safetensors::View for View<'_> {
        fn dtype(&self) -> safetensors::Dtype {
            safetensors::Dtype::F32
        }
        fn shape(&self) -> &[usize] {
            &self.1
        }
        fn data(&self) -> std::borrow::Cow<'_, [u8]> {
            std::borrow::Cow::Owned(self.0.data.iter().flat_map(|v| v.to_le_bytes()).collect())
        }
        fn data_len(&self) -> usize {
            self.0.data.len() * 4
        }
    }
    let order = mats.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(",");
    let info = std::collections::HashMap::from([("order".to_string(), order)]);
    let views = mats.iter().map(|(n, m)| (n.to_string(), View(m, [m.n_rows, m.n_cols])));
    let bytes = safetensors::serialize(views, Some(info))
        .map_err(|e| Error::format(path, "tensors safetensors can serialise", e.to_string()))?;
    write_atomically(path, |w| w.write_all(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn temp_dir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("mmkd-features-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn npy_round_trip_and_f64_input() {
        let dir = temp_dir("npy");
        let m = FeatureMatrix::new(3, 2, vec![1.0, -2.0, 0.5, 4.0, 1e-3, 7.0]).unwrap();
        let p = dir.join("a.npy");
        m.write_npy(&p).unwrap();
        assert_eq!(FeatureMatrix::read_npy(&p).unwrap(), m);
        assert!(!dir.join("a.npy.tmp").exists());

        let p64 = dir.join("b.npy");
        let mut w = npyz::WriteOptions::<f64>::new()
            .default_dtype()
            .shape(&[2, 2])
            .writer(BufWriter::new(File::create(&p64).unwrap()))
            .begin_nd()
            .unwrap();
        w.extend([0.25f64, 1.5, -3.0, 8.0]).unwrap();
        w.finish().unwrap();
        let m64 = FeatureMatrix::read_npy(&p64).unwrap();
        assert_eq!(m64.data(), &[0.25, 1.5, -3.0, 8.0]);
    }

    #[test]
    fn npy_rejects_integer_fortran_and_3d_arrays() {
        let dir = temp_dir("npybad");
        let p = dir.join("int.npy");
        let mut w = npyz::WriteOptions::<i32>::new()
            .default_dtype()
            .shape(&[2, 2])
            .writer(BufWriter::new(File::create(&p).unwrap()))
            .begin_nd()
            .unwrap();
        w.extend([1, 2, 3, 4]).unwrap();
        w.finish().unwrap();
        let err = FeatureMatrix::read_npy(&p).unwrap_err().to_string();
        assert!(err.contains("int.npy") && err.contains("float32 or float64") && err.contains("<i4"), "{err}");

        let p = dir.join("fortran.npy");
        let mut w = npyz::WriteOptions::<f32>::new()
            .default_dtype()
            .order(npyz::Order::Fortran)
            .shape(&[2, 2])
            .writer(BufWriter::new(File::create(&p).unwrap()))
            .begin_nd()
            .unwrap();
        w.extend([1.0, 2.0, 3.0, 4.0]).unwrap();
        w.finish().unwrap();
        let err = FeatureMatrix::read_npy(&p).unwrap_err().to_string();
        assert!(err.contains("fortran.npy") && err.contains("Fortran-order"), "{err}");

        let p = dir.join("cube.npy");
        let mut w = npyz::WriteOptions::<f32>::new()
            .default_dtype()
            .shape(&[1, 2, 2])
            .writer(BufWriter::new(File::create(&p).unwrap()))
            .begin_nd()
            .unwrap();
        w.extend([1.0, 2.0, 3.0, 4.0]).unwrap();
        w.finish().unwrap();
        let err = FeatureMatrix::read_npy(&p).unwrap_err().to_string();
        assert!(err.contains("cube.npy") && err.contains("2-D"), "{err}");

        let err = FeatureMatrix::read_npy(&dir.join("missing.npy")).unwrap_err().to_string();
        assert!(err.contains("missing.npy"), "{err}");
    }

    #[test]
    fn safetensors_round_trip_keeps_order_and_reads_foreign_files() {
        let dir = temp_dir("st");
        let v = FeatureMatrix::new(2, 3, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let t = FeatureMatrix::new(2, 1, vec![-1.0, 0.5]).unwrap();
        let p = dir.join("f.safetensors");
        write_safetensors(&p, &[("visual", &v), ("text", &t)]).unwrap();
        let back = read_safetensors(&p).unwrap();
        assert_eq!(back[0].0, "visual");
        assert_eq!(back[1].0, "text");
        assert_eq!(back[0].1, v);
        assert_eq!(back[1].1, t);
        // What we write, the reference implementation reads.
        let bytes = std::fs::read(&p).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("visual").unwrap().shape(), &[2, 3]);

        // An f64 file written by the safetensors crate itself (no order metadata → sorted by name).
        let data: Vec<u8> = [1.5f64, -2.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F64, vec![2, 1], &data).unwrap();
        let p2 = dir.join("g.safetensors");
        safetensors::serialize_to_file([("z", view.clone()), ("a", view)], None, &p2).unwrap();
        let back = read_safetensors(&p2).unwrap();
        assert_eq!(back.iter().map(|b| b.0.as_str()).collect::<Vec<_>>(), vec!["a", "z"]);
        assert_eq!(back[0].1.data(), &[1.5, -2.0]);

        std::fs::write(dir.join("bad.safetensors"), b"abc").unwrap();
        let err = read_safetensors(&dir.join("bad.safetensors")).unwrap_err().to_string();
        assert!(err.contains("bad.safetensors"), "{err}");
    }
}
