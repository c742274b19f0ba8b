//! MMSR as the released KDSR code implements it ("KDSR-code variant", spec `kdsr-mmsr.md` §5.1): a
//! relational graph attention over the item-ID session graph, gate-fused node by node with the ID, image and
//! text embeddings, then read out per sequence. This is the backbone behind KDSR's published numbers.
//!
//! Reference: `HoldenHu/KDSR` — `data_utils.py` (`Data.__getitem__`: nodes, adjacency, alias),
//! `aggregator.py` (`RGATLayer`), `model_corvector.py` (`KDSR.forward`, `get_sequence_representation`,
//! `compute_full_scores`), `config/KDSR--4--beauty.yaml` (the flags below).
//! ```text
//! U, A          = session graph of S (nodes: distinct items sorted by id, padded to node_pad_len)  [§5.1]
//! h_u           = W e^id_u
//! ε_uv          = ρ_r · LeakyReLU_α(a_rᵀ(h_u ⊙ h_v)) where r = A_uv ∈ 1..4, −9e15 where A_uv = 0
//! g_u           = Σ_v softmax_v(Dropout(ε_uv)) h_v             (dropout before the mask: the quirk)
//! f_u           = Dropout(gate(e^id_u, g_u, e^v_u, e^t_u)) · node_mask_u
//! h_p           = f_{alias_p} · position_mask_p
//! s             = last_sum: h_n + h_{n−1} (index clamped at 1) | longshort (§5.3) | last: h_n
//! ```
//! # Deviations from the reference
//! - The item tables are the trainer's ([`ItemTables`]): ID row 0 (padding) is whatever the trainer keeps;
//!   the reference's is N(0, 0.02) and frozen. It reaches real nodes only through the dropout quirk.
//! - Nodes are padded to `max(node_pad_len, q)` where q is the batch's largest number of distinct items; the
//!   reference pads every graph to the split's longest input (`Data.max_len`). Only the quirk sees the count.
//! - The relation parameters are stored as `a` `(4, d)` and `amplifier` `(4,)` instead of four `(d, 1)`
//!   tensors and a `(4, 1)` one; the unused `bias` and `feed_forward_layer` of `RGATLayer` are left out, as
//!   are the unused position table, `w_1`, `w_2`, `glu*` and fusion layers of `KDSR.__init__`.
//! - Dropout masks come from the trainer's ChaCha stream, not PyTorch's generator.

use candle_core::{DType, Tensor, D};
use candle_nn::{Init, Linear, VarBuilder};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::seq::model::{gather_positions, ItemTables, SeqBatch, SeqEncoder};
use crate::seq::nn::{apply_linear, check_prob, check_tables, linear_normal, maybe_dropout, ModalityGate};
use crate::{Error, Result};

/// The logit of a non-edge in the relational attention (`aggregator.py`, `RGATLayer.forward`).
pub const NON_EDGE_LOGIT: f64 = -9e15;

/// Number of edge relations: 1 self-loop, 2 out, 3 in, 4 bidirectional.
pub const N_RELATIONS: usize = 4;

/// How the position states are read out into one vector per sequence (`seq_pooling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeqPooling {
    /// `last_sum` (code default): the sum of the last `last_n` position states, indices clamped at the first
    /// position, so a length-1 input gives `last_n · h_1` (`get_sequence_representation`).
    #[default]
    LastSum,
    /// `longshort`: the paper's eq. 6 as reconstructed in spec §5.3 (mean + attention over the last `last_n`).
    #[serde(rename = "longshort")]
    LongShort,
    /// `last`: the state at the last real position (the CIKM'23 MMSR code).
    Last,
}

/// Hyper-parameters of the KDSR-code MMSR; defaults are `config/KDSR--4--beauty.yaml`'s. In TOML:
/// `[model.mmsr] alpha = 0.1, dropout_atten = 0.2, dropout_output = 0.4, seq_pooling = "last_sum", …`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MmsrConfig {
    /// `alpha`: negative slope of the LeakyReLU in the relational attention.
    pub alpha: f64,
    /// `dropout_atten`: dropout on the relational attention logits.
    pub dropout_atten: f64,
    /// `dropout_output`: dropout on the fused node states.
    pub dropout_output: f64,
    /// `seq_pooling`: the readout.
    pub seq_pooling: SeqPooling,
    /// `last_n`: positions summed by `last_sum` and attended by `longshort` (k of spec §5.3).
    pub last_n: usize,
    /// `Data.max_len` (`data_utils.py`): session graphs are padded to this many nodes (at least the batch's
    /// largest number of distinct items). It changes nothing in evaluation; in training it sets how many
    /// padding nodes the dropout quirk can let the attention reach. 0 pads to the batch only.
    pub node_pad_len: usize,
    /// Apply the attention dropout to the edge logits only and mask afterwards (true, clean), instead of
    /// dropping the masked logits too (false, code-faithful: `aggregator.py` `RGATLayer.forward`, where
    /// `self.dropout_atten(alpha)` runs after the −9e15 fill, so a dropped non-edge gets logit 0).
    pub rgat_mask_after_dropout: bool,
}

impl Default for MmsrConfig {
    fn default() -> Self {
        Self {
            alpha: 0.1,
            dropout_atten: 0.2,
            dropout_output: 0.4,
            seq_pooling: SeqPooling::LastSum,
            last_n: 2,
            node_pad_len: 50,
            rgat_mask_after_dropout: false,
        }
    }
}

/// The session-graph adjacency `(q, q)` row-major (row = centre node, column = neighbour) of one input given
/// by its `alias` (node index of each position) with `n_nodes` real nodes, padded to `q` nodes (spec §5.1,
/// `data_utils.py` `Data.__getitem__`):
/// 1. `A_uu = 1` for every real node;
/// 2. for each consecutive pair `(x, y)` of nodes: skip it if `x = y` or `A_xy = 4`;
/// 3. else if `A_yx = 2`, set `A_xy = A_yx = 4`;
/// 4. else set `A_xy = 2` and `A_yx = 3`.
///
/// Rows and columns of padding nodes stay 0.
pub fn session_adjacency(alias: &[u32], n_nodes: usize, q: usize) -> Result<Vec<u8>> {
    if n_nodes > q {
        return Err(Error::Shape(format!("session graph: {n_nodes} nodes do not fit in {q}")));
    }
    if let Some(&a) = alias.iter().find(|&&a| a as usize >= n_nodes) {
        return Err(Error::Shape(format!("session graph: alias {a} out of range for {n_nodes} nodes")));
    }
    let mut adj = vec![0u8; q * q];
    for u in 0..n_nodes {
        adj[u * q + u] = 1;
    }
    for pair in alias.windows(2) {
        let (x, y) = (pair[0] as usize, pair[1] as usize);
        if x == y || adj[x * q + y] == 4 {
            continue;
        }
        if adj[y * q + x] == 2 {
            adj[x * q + y] = 4;
            adj[y * q + x] = 4;
        } else {
            adj[x * q + y] = 2;
            adj[y * q + x] = 3;
        }
    }
    Ok(adj)
}

/// The adjacencies of a batch, `(b, q, q)` row-major, with `q` at least the batch's node count.
pub fn batch_adjacency(batch: &SeqBatch, q: usize) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(batch.len() * q * q);
    for (alias, nodes) in batch.alias_host.iter().zip(&batch.nodes_host) {
        out.extend(session_adjacency(alias, nodes.len(), q)?);
    }
    Ok(out)
}

/// The relational graph attention layer of KDSR's `RGATLayer` (one layer, spec §5.1). Parameters, all
/// ~ U(−1/√d, 1/√d) (`reset_parameters`): `w` `(d, d)` applied as `h = e · w` (no bias), `a` `(4, d)` (one
/// attention vector per relation) and `amplifier` `(4,)` (the relation amplifiers ρ_r).
#[derive(Debug, Clone)]
pub struct RelationalGat {
    w: Tensor,
    a: Tensor,
    amplifier: Tensor,
    slope: f64,
}

impl RelationalGat {
    /// A layer of width `d` with LeakyReLU slope `slope` (`alpha`).
    pub fn new(vb: VarBuilder, d: usize, slope: f64) -> Result<Self> {
        let bound = 1.0 / (d as f64).sqrt();
        let init = Init::Uniform { lo: -bound, up: bound };
        Ok(Self {
            w: vb.get_with_hints((d, d), "w", init)?,
            a: vb.get_with_hints((N_RELATIONS, d), "a", init)?,
            amplifier: vb.get_with_hints(N_RELATIONS, "amplifier", init)?,
            slope,
        })
    }

    /// Node states `e` `(b, q, d)` and the adjacency `adj` (`(b, q, q)` row-major, values 0..=4) → the
    /// aggregated states `g` `(b, q, d)` and the attention weights `(b, q, q)`. With `rng` the logits get
    /// dropout `p`: over every entry, non-edges included, unless `mask_after_dropout`.
    pub fn forward(
        &self,
        e: &Tensor,
        adj: &[u8],
        p: f64,
        mask_after_dropout: bool,
        rng: Option<&mut ChaCha8Rng>,
    ) -> Result<(Tensor, Tensor)> {
        let (b, q, d) = e.dims3()?;
        if adj.len() != b * q * q {
            return Err(Error::Shape(format!("rgat: adjacency of {} entries for ({b}, {q}, {q})", adj.len())));
        }
        let dev = e.device();
        let mask_of = |keep: &dyn Fn(u8) -> bool| -> Result<Tensor> {
            let m: Vec<u8> = adj.iter().map(|&a| u8::from(keep(a))).collect();
            Ok(Tensor::from_vec(m, (b, q, q), dev)?)
        };
        let h = e.reshape((b * q, d))?.matmul(&self.w)?.reshape((b, q, d))?; // (b, q, d)
        let h_t = h.transpose(1, 2)?.contiguous()?; // (b, d, q)
        let non_edge = Tensor::zeros((b, q, q), e.dtype(), dev)?.affine(1.0, NON_EDGE_LOGIT)?;
        let mut logits = non_edge.clone();
        for r in 0..N_RELATIONS {
            let a_r = self.a.get(r)?; // (d,)
            let scores = h.broadcast_mul(&a_r)?.matmul(&h_t)?; // (b, q, q)
            let scores = candle_nn::ops::leaky_relu(&scores, self.slope)?;
            let scores = scores.broadcast_mul(&self.amplifier.get(r)?)?;
            let rel = (r + 1) as u8;
            logits = mask_of(&|a| a == rel)?.where_cond(&scores, &logits)?;
        }
        let logits = if mask_after_dropout {
            let edges = mask_of(&|a| a != 0)?;
            let on_edges = edges.where_cond(&logits, &non_edge.zeros_like()?)?;
            edges.where_cond(&maybe_dropout(&on_edges, p, rng)?, &non_edge)?
        } else {
            // aggregator.py RGATLayer.forward: dropout after the −9e15 fill (the quirk).
            maybe_dropout(&logits, p, rng)?
        };
        let alpha = candle_nn::ops::softmax(&logits, D::Minus1)?; // (b, q, q)
        Ok((alpha.matmul(&h)?, alpha)) // (b, q, d)
    }
}

/// `last_sum` readout: `Σ_{j<last_n} h[max(n − 1 − j, 0)]` per sequence, for position states `h` `(b, l, d)`
/// and real lengths `lens` (the clamp makes a length-1 input give `last_n · h_1`).
pub fn readout_last_sum(h: &Tensor, lens: &[usize], last_n: usize) -> Result<Tensor> {
    let (b, _, d) = h.dims3()?;
    let mut s = Tensor::zeros((b, d), h.dtype(), h.device())?;
    for j in 0..last_n {
        let idx: Vec<u32> = lens.iter().map(|&n| n.saturating_sub(1 + j) as u32).collect();
        let idx = Tensor::from_vec(idx, b, h.device())?;
        s = (s + gather_positions(h, &idx)?)?;
    }
    Ok(s)
}

/// The paper's readout (eq. 6) as reconstructed in spec §5.3, SR-GNN style \[RECON\]:
/// `h̄ = mean_p h_p`, `α_p = qᵀ σ(W₁ h_p + c + W₂ h̄)` over the last `k` real positions, `h_short = Σ α_p h_p`,
/// `s = W₃ [h̄; h_short] + b₃`. Keys `w1` (with bias c), `w2`, `q`, `w3` (with bias); N(0, 0.02), biases 0.
#[derive(Debug, Clone)]
pub struct LongShortReadout {
    w1: Linear,
    w2: Linear,
    q: Linear,
    w3: Linear,
    k: usize,
}

impl LongShortReadout {
    /// A readout of width `d` attending over the last `k` positions.
    pub fn new(vb: VarBuilder, d: usize, k: usize) -> Result<Self> {
        Ok(Self {
            w1: linear_normal(vb.pp("w1"), d, d, true)?,
            w2: linear_normal(vb.pp("w2"), d, d, false)?,
            q: linear_normal(vb.pp("q"), d, 1, false)?,
            w3: linear_normal(vb.pp("w3"), 2 * d, d, true)?,
            k,
        })
    }

    /// Position states `h` `(b, l, d)`, zero after each real length `lens[r]`, → `(b, d)`.
    pub fn forward(&self, h: &Tensor, lens: &[usize]) -> Result<Tensor> {
        let (b, _, _) = h.dims3()?;
        let dev = h.device();
        let n: Vec<f32> = lens.iter().map(|&n| n as f32).collect();
        let n = Tensor::from_vec(n, (b, 1), dev)?.to_dtype(h.dtype())?;
        let mean = h.sum(1)?.broadcast_div(&n)?; // (b, d)
        let mut recent = Vec::with_capacity(self.k);
        let mut valid = Vec::with_capacity(b * self.k);
        for j in 0..self.k {
            let idx: Vec<u32> = lens.iter().map(|&n| n.saturating_sub(1 + j) as u32).collect();
            recent.push(gather_positions(h, &Tensor::from_vec(idx, b, dev)?)?);
        }
        for &len in lens {
            valid.extend((0..self.k).map(|j| if j < len { 1f32 } else { 0.0 }));
        }
        let recent = Tensor::stack(&recent, 1)?; // (b, k, d)
        let valid = Tensor::from_vec(valid, (b, self.k, 1), dev)?.to_dtype(h.dtype())?;
        let pre = apply_linear(&self.w1, &recent)?.broadcast_add(&apply_linear(&self.w2, &mean)?.unsqueeze(1)?)?;
        let alpha = (apply_linear(&self.q, &candle_nn::ops::sigmoid(&pre)?)? * valid)?; // (b, k, 1)
        let short = recent.broadcast_mul(&alpha)?.sum(1)?; // (b, d)
        apply_linear(&self.w3, &Tensor::cat(&[&mean, &short], 1)?) // (b, d)
    }
}

/// The KDSR-code MMSR encoder. Keys: `rgat.{w,a,amplifier}`, `gate.{fc1,fc2}` (KDSR's
/// `modality_projection`) and, with the `longshort` readout, `readout.{w1,w2,q,w3}`.
#[derive(Debug, Clone)]
pub struct Mmsr {
    rgat: RelationalGat,
    gate: ModalityGate,
    readout: Option<LongShortReadout>,
    cfg: MmsrConfig,
    d: usize,
}

impl Mmsr {
    /// `d` is the width of the item tables.
    pub fn new(vb: VarBuilder, cfg: &MmsrConfig, d: usize) -> Result<Self> {
        check_prob("mmsr.dropout_atten", cfg.dropout_atten)?;
        check_prob("mmsr.dropout_output", cfg.dropout_output)?;
        if cfg.last_n == 0 {
            return Err(Error::Config("mmsr.last_n must be at least 1".into()));
        }
        let readout = match cfg.seq_pooling {
            SeqPooling::LongShort => Some(LongShortReadout::new(vb.pp("readout"), d, cfg.last_n)?),
            SeqPooling::LastSum | SeqPooling::Last => None,
        };
        Ok(Self {
            rgat: RelationalGat::new(vb.pp("rgat"), d, cfg.alpha)?,
            gate: ModalityGate::new(vb.pp("gate"), d)?,
            readout,
            cfg: cfg.clone(),
            d,
        })
    }

    /// The configuration the encoder was built with.
    pub fn config(&self) -> &MmsrConfig {
        &self.cfg
    }

    /// The fused node states `f` `(b, Q, d)` (zero at padding nodes, `Q = max(q, node_pad_len)`) and the
    /// position states `h` `(b, l, d)` (`h_p = f_{alias_p}`, zero at padding positions).
    pub fn states(
        &self,
        batch: &SeqBatch,
        tables: &ItemTables,
        mut train: Option<&mut ChaCha8Rng>,
    ) -> Result<(Tensor, Tensor)> {
        check_tables("mmsr", tables, self.d)?;
        let dtype = tables.id.dtype();
        let (b, q) = batch.nodes.dims2()?;
        let n_pad = q.max(self.cfg.node_pad_len);
        let dev = batch.nodes.device();
        let (nodes, node_mask) = if n_pad > q {
            let extra = n_pad - q;
            (
                Tensor::cat(&[&batch.nodes, &Tensor::zeros((b, extra), DType::U32, dev)?], 1)?,
                Tensor::cat(&[&batch.node_mask, &Tensor::zeros((b, extra), DType::F32, dev)?], 1)?,
            )
        } else {
            (batch.nodes.clone(), batch.node_mask.clone())
        };
        let adj = batch_adjacency(batch, n_pad)?;
        let e_id = ItemTables::gather(&tables.id, &nodes)?; // (b, Q, d)
        let e_v = ItemTables::gather(&tables.visual, &nodes)?;
        let e_t = ItemTables::gather(&tables.text, &nodes)?;
        let (g, _) = self.rgat.forward(
            &e_id,
            &adj,
            self.cfg.dropout_atten,
            self.cfg.rgat_mask_after_dropout,
            train.as_deref_mut(),
        )?;
        let (f, _) = self.gate.forward(&[&e_id, &g, &e_v, &e_t])?; // (b, Q, d)
        let f = maybe_dropout(&f, self.cfg.dropout_output, train)?;
        let f = f.broadcast_mul(&node_mask.to_dtype(dtype)?.unsqueeze(2)?)?;
        let (_, l) = batch.alias.dims2()?;
        let idx = batch.alias.unsqueeze(2)?.broadcast_as((b, l, self.d))?.contiguous()?;
        let h = f.gather(&idx, 1)?; // (b, l, d)
        let h = h.broadcast_mul(&batch.position_mask()?.to_dtype(dtype)?.unsqueeze(2)?)?;
        Ok((f, h))
    }
}

impl SeqEncoder for Mmsr {
    fn name(&self) -> &'static str {
        "mmsr"
    }

    fn encode(&self, batch: &SeqBatch, tables: &ItemTables, train: Option<&mut ChaCha8Rng>) -> Result<Tensor> {
        let (_, h) = self.states(batch, tables, train)?;
        match (&self.cfg.seq_pooling, &self.readout) {
            (SeqPooling::LastSum, _) => readout_last_sum(&h, &batch.lens, self.cfg.last_n),
            (SeqPooling::Last, _) => gather_positions(&h, &batch.last_positions()?),
            (SeqPooling::LongShort, Some(readout)) => readout.forward(&h, &batch.lens),
            (SeqPooling::LongShort, None) => Err(Error::Config("mmsr: longshort readout without parameters".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use candle_core::Device;
    use candle_nn::VarMap;
    use mmkd_features::seeded_var_builder;
    use rand::{Rng, SeedableRng};

    const CPU: Device = Device::Cpu;

    fn flat(t: &Tensor) -> Vec<f64> {
        t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap()
    }

    fn values(vm: &VarMap, name: &str) -> Vec<f64> {
        flat(vm.data().lock().unwrap()[name].as_tensor())
    }

    fn random(shape: &[usize], seed: u64, scale: f64) -> Tensor {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0) * scale).collect();
        Tensor::from_vec(v, shape, &CPU).unwrap()
    }

    #[test]
    fn session_graph_follows_the_four_rules() {
        // Spec §14 test 4. (a, b, a): a = node 0, b = node 1.
        let adj = session_adjacency(&[0, 1, 0], 2, 2).unwrap();
        assert_eq!(adj, vec![1, 4, 4, 1]);
        // (a, b): out from a, in to b.
        assert_eq!(session_adjacency(&[0, 1], 2, 2).unwrap(), vec![1, 2, 3, 1]);
        // A repeated transition stays out/in, a self-transition adds nothing, and a bidirectional edge is
        // not downgraded by a later repeat: (a, a, b, c, b, c).
        let adj = session_adjacency(&[0, 0, 1, 2, 1, 2], 3, 4).unwrap();
        #[rustfmt::skip]
        let want = vec![
            1, 2, 0, 0,
            3, 1, 4, 0,
            0, 4, 1, 0,
            0, 0, 0, 0,
        ];
        assert_eq!(adj, want);
        assert!(session_adjacency(&[0, 2], 2, 3).is_err());
        assert!(session_adjacency(&[0], 3, 2).is_err());
    }

    #[test]
    fn batch_graph_pads_with_all_zero_rows() {
        let (a, b) = (7u32, 3u32);
        let batch = SeqBatch::new(&[&[a, b, a][..], &[a, b][..], &[b][..]], None, &CPU).unwrap();
        let q = 4;
        let adj = batch_adjacency(&batch, q).unwrap();
        // Nodes are sorted by id: b = 3 is node 0 and a = 7 is node 1.
        let at = |r: usize, u: usize, v: usize| adj[(r * q + u) * q + v];
        assert_eq!((at(0, 1, 0), at(0, 0, 1), at(0, 0, 0), at(0, 1, 1)), (4, 4, 1, 1));
        assert_eq!((at(1, 1, 0), at(1, 0, 1)), (2, 3)); // a → b: A_ab = 2, A_ba = 3.
        assert_eq!(at(2, 0, 0), 1);
        for (r, n_real) in [(0, 2), (1, 2), (2, 1)] {
            for u in n_real..q {
                assert!((0..q).all(|v| at(r, u, v) == 0 && at(r, v, u) == 0), "row {r}, node {u}");
            }
        }
    }

    /// The RGAT on host rows of one graph: returns (g, alpha) with `logit_mask` multiplying the full logits
    /// (the dropout mask; all ones in eval mode).
    fn rgat_loop(vm: &VarMap, e: &[f64], adj: &[u8], q: usize, d: usize, logit_mask: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let (w, a, amp) = (values(vm, "rgat.w"), values(vm, "rgat.a"), values(vm, "rgat.amplifier"));
        // h = e · w (w is (d, d), applied on the right).
        let h: Vec<Vec<f64>> =
            (0..q).map(|u| (0..d).map(|c| (0..d).map(|k| e[u * d + k] * w[k * d + c]).sum()).collect()).collect();
        let mut g = vec![0.0; q * d];
        let mut alpha = vec![0.0; q * q];
        for u in 0..q {
            let logits: Vec<f64> = (0..q)
                .map(|v| {
                    let rel = adj[u * q + v] as usize;
                    let x = if rel == 0 {
                        -9e15
                    } else {
                        let s: f64 = (0..d).map(|c| a[(rel - 1) * d + c] * h[u][c] * h[v][c]).sum();
                        amp[rel - 1] * if s >= 0.0 { s } else { 0.1 * s }
                    };
                    x * logit_mask[u * q + v]
                })
                .collect();
            let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let ex: Vec<f64> = logits.iter().map(|x| (x - m).exp()).collect();
            let z: f64 = ex.iter().sum();
            for v in 0..q {
                alpha[u * q + v] = ex[v] / z;
                for c in 0..d {
                    g[u * d + c] += alpha[u * q + v] * h[v][c];
                }
            }
        }
        (g, alpha)
    }

    fn assert_close(got: &[f64], want: &[f64], tol: f64) {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= tol * (1.0 + w.abs()), "entry {i}: {g} vs {w}");
        }
    }

    /// One graph with all four relations and two padding nodes: nodes 0..4 real, 4..6 padding.
    fn rgat_fixture() -> (VarMap, RelationalGat, Tensor, Vec<u8>, usize, usize) {
        let (q, d) = (6, 3);
        let vm = VarMap::new();
        let rgat = RelationalGat::new(seeded_var_builder(&vm, 3, DType::F64, &CPU).pp("rgat"), d, 0.1).unwrap();
        let adj = session_adjacency(&[0, 1, 0, 2, 3, 2], 4, q).unwrap();
        assert!((1..=4).all(|r| adj.contains(&r)));
        // Embeddings of order 1 so that the logits are far from 0 and every relation matters.
        let e = random(&[1, q, d], 5, 2.0);
        (vm, rgat, e, adj, q, d)
    }

    #[test]
    fn rgat_matches_a_loop_and_masks_non_edges_in_eval() {
        let (vm, rgat, e, adj, q, d) = rgat_fixture();
        let (g, alpha) = rgat.forward(&e, &adj, 0.2, false, None).unwrap();
        let (want_g, want_alpha) = rgat_loop(&vm, &flat(&e), &adj, q, d, &vec![1.0; q * q]);
        let (g, alpha) = (flat(&g), flat(&alpha));
        assert_close(&g, &want_g, 1e-10);
        assert_close(&alpha, &want_alpha, 1e-10);
        for (k, &a) in adj.iter().enumerate() {
            if a == 0 && k / q < 4 {
                assert_eq!(alpha[k], 0.0, "non-edge {k} of a real node");
            }
        }
        // The relation parameters matter: swapping out/in labels changes the output.
        let swapped: Vec<u8> = adj.iter().map(|&a| [0, 1, 3, 2, 4][a as usize]).collect();
        let (g2, _) = rgat.forward(&e, &swapped, 0.2, false, None).unwrap();
        assert!(flat(&g2).iter().zip(&g).any(|(x, y)| (x - y).abs() > 1e-6));
    }

    /// The quirk, tested by replaying the dropout: `common::dropout` draws one u32 per entry, row-major, so
    /// dropping a tensor of ones with a clone of the stream gives the very mask the layer used (entries 0 or
    /// 1/(1 − p)). Code-faithful mode must equal the loop with that mask applied to the full logits
    /// (non-edges included, so a dropped non-edge gets logit 0 and real weight); the clean mode must give
    /// non-edges exactly zero weight under the same mask.
    #[test]
    fn rgat_dropout_before_mask_quirk_is_reproduced() {
        let (vm, rgat, e, adj, q, d) = rgat_fixture();
        let p = 0.4;
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mask = flat(
            &crate::loss::dropout(&Tensor::ones((1, q, q), DType::F64, &CPU).unwrap(), p, &mut rng.clone()).unwrap(),
        );
        let (g, alpha) = rgat.forward(&e, &adj, p, false, Some(&mut rng)).unwrap();
        let (want_g, want_alpha) = rgat_loop(&vm, &flat(&e), &adj, q, d, &mask);
        let alpha = flat(&alpha);
        assert_close(&flat(&g), &want_g, 1e-10);
        assert_close(&alpha, &want_alpha, 1e-10);
        let leaked: Vec<usize> = (0..q * q).filter(|&k| adj[k] == 0 && k / q < 4 && alpha[k] > 1e-3).collect();
        assert!(!leaked.is_empty(), "no non-edge got weight: the quirk is not reproduced");
        // Some leak goes to a padding node.
        assert!(leaked.iter().any(|k| k % q >= 4));

        // Clean mode: the same draws, but non-edges keep −9e15.
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let (g, alpha) = rgat.forward(&e, &adj, p, true, Some(&mut rng)).unwrap();
        let clean_mask: Vec<f64> = (0..q * q).map(|k| if adj[k] == 0 { 1.0 } else { mask[k] }).collect();
        let (want_g, want_alpha) = rgat_loop(&vm, &flat(&e), &adj, q, d, &clean_mask);
        let alpha = flat(&alpha);
        assert_close(&flat(&g), &want_g, 1e-10);
        assert_close(&alpha, &want_alpha, 1e-10);
        assert!((0..q * q).filter(|&k| adj[k] == 0 && k / q < 4).all(|k| alpha[k] == 0.0));
    }

    #[test]
    fn last_sum_clamps_and_sums() {
        let h = random(&[2, 3, 2], 1, 1.0);
        let s = flat(&readout_last_sum(&h, &[1, 3], 2).unwrap());
        let hs = flat(&h);
        // Length 1: 2·h_1.
        assert_close(&s[..2], &[2.0 * hs[0], 2.0 * hs[1]], 1e-15);
        // Length 3: h_3 + h_2.
        assert_close(&s[2..], &[hs[6 + 4] + hs[6 + 2], hs[6 + 5] + hs[6 + 3]], 1e-15);
        let s3 = flat(&readout_last_sum(&h, &[1, 3], 3).unwrap());
        assert_close(&s3[..2], &[3.0 * hs[0], 3.0 * hs[1]], 1e-15);
    }

    #[test]
    fn longshort_matches_a_loop() {
        let (d, k) = (2, 2);
        let mut vm = VarMap::new();
        let ro = LongShortReadout::new(seeded_var_builder(&vm, 4, DType::F64, &CPU).pp("ro"), d, k).unwrap();
        let mut names: Vec<String> = vm.data().lock().unwrap().keys().cloned().collect();
        names.sort();
        for (i, name) in names.iter().enumerate() {
            let dims = vm.data().lock().unwrap()[name].dims().to_vec();
            vm.set_one(name, random(&dims, 100 + i as u64, 0.9)).unwrap();
        }
        let lens = [1usize, 3];
        let mut h = flat(&random(&[2, 3, d], 2, 1.0));
        h[2..6].iter_mut().for_each(|v| *v = 0.0); // Row 0 has one real position.
        let got = flat(&ro.forward(&Tensor::from_vec(h.clone(), (2, 3, d), &CPU).unwrap(), &lens).unwrap());
        let p = |n: &str| values(&vm, &format!("ro.{n}"));
        let (w1, c, w2, q, w3, b3) =
            (p("w1.weight"), p("w1.bias"), p("w2.weight"), p("q.weight"), p("w3.weight"), p("w3.bias"));
        let mv = |w: &[f64], x: &[f64], out: usize| -> Vec<f64> {
            (0..out).map(|o| (0..x.len()).map(|i| w[o * x.len() + i] * x[i]).sum()).collect()
        };
        for (r, &n) in lens.iter().enumerate() {
            let row = |p: usize| &h[(r * 3 + p) * d..(r * 3 + p + 1) * d];
            let mean: Vec<f64> = (0..d).map(|c| (0..n).map(|p| row(p)[c]).sum::<f64>() / n as f64).collect();
            let w2m = mv(&w2, &mean, d);
            let mut short = vec![0.0; d];
            for p in n.saturating_sub(k)..n {
                let pre: Vec<f64> = mv(&w1, row(p), d).iter().zip(&c).zip(&w2m).map(|((a, b), e)| a + b + e).collect();
                let sig: Vec<f64> = pre.iter().map(|x| 1.0 / (1.0 + (-x).exp())).collect();
                let alpha = mv(&q, &sig, 1)[0];
                (0..d).for_each(|c| short[c] += alpha * row(p)[c]);
            }
            let cat: Vec<f64> = mean.iter().chain(&short).cloned().collect();
            let want: Vec<f64> = mv(&w3, &cat, d).iter().zip(&b3).map(|(a, b)| a + b).collect();
            assert_close(&got[r * d..(r + 1) * d], &want, 1e-12);
        }
    }

    #[test]
    fn config_defaults_are_the_code_log_values() {
        let cfg: MmsrConfig = serde_json::from_str(r#"{"seq_pooling": "longshort"}"#).unwrap();
        assert_eq!(cfg, MmsrConfig { seq_pooling: SeqPooling::LongShort, ..Default::default() });
        let cfg = MmsrConfig::default();
        assert_eq!((cfg.alpha, cfg.dropout_atten, cfg.dropout_output, cfg.last_n), (0.1, 0.2, 0.4, 2));
        assert!(!cfg.rgat_mask_after_dropout);
        assert!(serde_json::from_str::<MmsrConfig>(r#"{"readout": "last"}"#).is_err());
        let vm = VarMap::new();
        let vb = seeded_var_builder(&vm, 1, DType::F32, &CPU);
        assert!(Mmsr::new(vb.pp("a"), &MmsrConfig { last_n: 0, ..Default::default() }, 4).is_err());
        assert!(Mmsr::new(vb.pp("b"), &MmsrConfig { dropout_output: 1.5, ..Default::default() }, 4).is_err());
    }
}
