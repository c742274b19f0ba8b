//! The seam between the sequential trainer and the sequence encoders (MMSR, SASRec, GRU4Rec): a padded
//! batch of input sequences with its session-graph nodes ([`SeqBatch`]), the item tables every encoder reads
//! ([`ItemTables`]), and the [`SeqEncoder`] trait (spec `kdsr-mmsr.md` §1, §5).
//!
//! Item ids run from 1 to `n_items`; **0 is padding**. Every table has `n_items + 1` rows.

use candle_core::{DType, Device, Tensor};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};

/// One padded batch of input sequences (oldest item first), built on the host once and shared by the
/// encoder and the KDSR losses.
#[derive(Debug, Clone)]
pub struct SeqBatch {
    /// `(b, l)` u32 item ids, left-aligned, 0-padded; `l` is the longest input of the batch.
    pub items: Tensor,
    /// Real length of each input (at least 1).
    pub lens: Vec<usize>,
    /// The inputs as given (host copy).
    pub inputs: Vec<Vec<u32>>,
    /// `(b, q)` u32: the distinct items of each input sorted ascending (the session-graph nodes `U(S)`),
    /// 0-padded; `q` is the largest number of distinct items in the batch.
    pub nodes: Tensor,
    /// Host copy of `nodes` without the padding.
    pub nodes_host: Vec<Vec<u32>>,
    /// `(b, q)` f32: 1 for a real node, 0 for padding.
    pub node_mask: Tensor,
    /// `(b, l)` u32: for each position, the index in `nodes` of its item (0 at padding positions).
    pub alias: Tensor,
    /// Host copy of `alias` (each row has `lens[r]` entries).
    pub alias_host: Vec<Vec<u32>>,
    /// `(b,)` u32 next items (1..=n_items), when training.
    pub targets: Option<Tensor>,
}

impl SeqBatch {
    /// Builds the batch from `inputs` (each non-empty, item ids ≥ 1) and optional `targets`.
    pub fn new(inputs: &[&[u32]], targets: Option<&[u32]>, device: &Device) -> Result<Self> {
        let b = inputs.len();
        if b == 0 {
            return Err(Error::Shape("sequence batch: no inputs".into()));
        }
        if let Some(t) = targets {
            if t.len() != b {
                return Err(Error::Shape(format!("sequence batch: {b} inputs but {} targets", t.len())));
            }
        }
        let l = inputs.iter().map(|s| s.len()).max().unwrap_or(0);
        let mut items = vec![0u32; b * l];
        let mut alias = vec![0u32; b * l];
        let mut nodes_host = Vec::with_capacity(b);
        let mut alias_host = Vec::with_capacity(b);
        for (r, seq) in inputs.iter().enumerate() {
            if seq.is_empty() {
                return Err(Error::Shape(format!("sequence batch: input {r} is empty")));
            }
            if seq.contains(&0) {
                return Err(Error::Shape(format!("sequence batch: input {r} contains the padding id 0")));
            }
            items[r * l..r * l + seq.len()].copy_from_slice(seq);
            let mut uniq = seq.to_vec();
            uniq.sort_unstable();
            uniq.dedup();
            let a: Vec<u32> = seq.iter().map(|it| uniq.binary_search(it).map(|p| p as u32).unwrap_or(0)).collect();
            alias[r * l..r * l + seq.len()].copy_from_slice(&a);
            alias_host.push(a);
            nodes_host.push(uniq);
        }
        let q = nodes_host.iter().map(Vec::len).max().unwrap_or(0);
        let mut nodes = vec![0u32; b * q];
        let mut mask = vec![0f32; b * q];
        for (r, u) in nodes_host.iter().enumerate() {
            nodes[r * q..r * q + u.len()].copy_from_slice(u);
            mask[r * q..r * q + u.len()].iter_mut().for_each(|m| *m = 1.0);
        }
        let targets = match targets {
            Some(t) => {
                if t.contains(&0) {
                    return Err(Error::Shape("sequence batch: a target is the padding id 0".into()));
                }
                Some(Tensor::from_slice(t, b, device)?)
            }
            None => None,
        };
        Ok(Self {
            items: Tensor::from_vec(items, (b, l), device)?,
            lens: inputs.iter().map(|s| s.len()).collect(),
            inputs: inputs.iter().map(|s| s.to_vec()).collect(),
            nodes: Tensor::from_vec(nodes, (b, q), device)?,
            nodes_host,
            node_mask: Tensor::from_vec(mask, (b, q), device)?,
            alias: Tensor::from_vec(alias, (b, l), device)?,
            alias_host,
            targets,
        })
    }

    /// Number of sequences.
    pub fn len(&self) -> usize {
        self.lens.len()
    }

    /// Whether the batch is empty (never, for a batch built by [`SeqBatch::new`]).
    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// `(b, l)` f32: 1 at real positions, 0 at padding.
    pub fn position_mask(&self) -> Result<Tensor> {
        let (b, l) = self.items.dims2()?;
        let mut m = vec![0f32; b * l];
        for (r, &n) in self.lens.iter().enumerate() {
            m[r * l..r * l + n].iter_mut().for_each(|x| *x = 1.0);
        }
        Ok(Tensor::from_vec(m, (b, l), self.items.device())?)
    }

    /// `(b,)` u32 index of each input's last real position (`lens[r] − 1`).
    pub fn last_positions(&self) -> Result<Tensor> {
        let last: Vec<u32> = self.lens.iter().map(|&n| (n - 1) as u32).collect();
        Ok(Tensor::from_vec(last, self.lens.len(), self.items.device())?)
    }
}

/// The item tables an encoder reads, each `(n_items + 1, d)` with row 0 the padding row: the trainable ID
/// embedding, and the trainable image and text embeddings (initialised from the compressed features; detached
/// when the run freezes them).
#[derive(Debug, Clone)]
pub struct ItemTables {
    pub id: Tensor,
    pub visual: Tensor,
    pub text: Tensor,
}

impl ItemTables {
    /// Embedding dimension `d`.
    pub fn dim(&self) -> Result<usize> {
        Ok(self.id.dim(1)?)
    }

    /// Rows of `table` for `idx` of any shape (u32): `idx.shape() + (d,)`.
    pub fn gather(table: &Tensor, idx: &Tensor) -> Result<Tensor> {
        let d = table.dim(1)?;
        let mut shape = idx.dims().to_vec();
        let flat = idx.flatten_all()?;
        let rows = table.index_select(&flat, 0)?;
        shape.push(d);
        Ok(rows.reshape(shape)?)
    }
}

/// A sequence encoder: input sequences → one representation per sequence, scored against the ID table by
/// the trainer (`y_i = sᵀ e^id_i`, spec §5).
pub trait SeqEncoder {
    /// Short model name, e.g. `"sasrec"`.
    fn name(&self) -> &'static str;
    /// Sequence representations `(b, d)`. `train` carries the dropout stream in training mode; `None` means
    /// evaluation (no dropout).
    fn encode(&self, batch: &SeqBatch, tables: &ItemTables, train: Option<&mut ChaCha8Rng>) -> Result<Tensor>;
}

/// `(b, l, d)` rows of `x` at `positions` `(b,)` u32 → `(b, d)`.
pub fn gather_positions(x: &Tensor, positions: &Tensor) -> Result<Tensor> {
    let (b, _l, d) = x.dims3()?;
    let idx = positions.reshape((b, 1, 1))?.broadcast_as((b, 1, d))?.contiguous()?;
    Ok(x.gather(&idx, 1)?.squeeze(1)?)
}

/// Converts a host f32 vector to a tensor of `dtype` on `device` (small helper for masks).
pub fn host_tensor(values: Vec<f32>, shape: (usize, usize), dtype: DType, device: &Device) -> Result<Tensor> {
    Ok(Tensor::from_vec(values, shape, device)?.to_dtype(dtype)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_nodes_alias_and_padding() -> Result<()> {
        let dev = Device::Cpu;
        let a: &[u32] = &[5, 3, 5];
        let b: &[u32] = &[7];
        let batch = SeqBatch::new(&[a, b], Some(&[2, 9]), &dev)?;
        assert_eq!(batch.items.to_vec2::<u32>()?, vec![vec![5, 3, 5], vec![7, 0, 0]]);
        assert_eq!(batch.nodes.to_vec2::<u32>()?, vec![vec![3, 5], vec![7, 0]]);
        assert_eq!(batch.node_mask.to_vec2::<f32>()?, vec![vec![1.0, 1.0], vec![1.0, 0.0]]);
        assert_eq!(batch.alias.to_vec2::<u32>()?, vec![vec![1, 0, 1], vec![0, 0, 0]]);
        assert_eq!(batch.last_positions()?.to_vec1::<u32>()?, vec![2, 0]);
        assert_eq!(batch.position_mask()?.to_vec2::<f32>()?, vec![vec![1.0, 1.0, 1.0], vec![1.0, 0.0, 0.0]]);
        assert!(SeqBatch::new(&[&[0u32, 1][..]], None, &dev).is_err());
        assert!(SeqBatch::new(&[&[][..]], None, &dev).is_err());
        Ok(())
    }

    #[test]
    fn gather_positions_picks_rows() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::arange(0f32, 12.0, &dev)?.reshape((2, 3, 2))?;
        let p = Tensor::new(&[2u32, 0], &dev)?;
        assert_eq!(gather_positions(&x, &p)?.to_vec2::<f32>()?, vec![vec![4.0, 5.0], vec![6.0, 7.0]]);
        Ok(())
    }
}
