//! SASRec: Self-Attentive Sequential Recommendation (Kang & McAuley, ICDM'18), as RecBole implements it and
//! as KDSR's compatibility study plugs modalities into it (spec `kdsr-mmsr.md` §5.4, §5.6).
//!
//! Reference: RecBole `recbole/model/sequential_recommender/sasrec.py` and `recbole/model/layers.py`
//! (`TransformerEncoder`, `MultiHeadAttention`, `FeedForward`), which KDSR's `base_model.py` follows.
//! ```text
//! x_p = Dropout(LN(e_p + P_p))            e_p = gate(e^id, e^v, e^t) of item i_p (§5.6), or e^id alone
//! H   = L post-LN Transformer blocks      causal + key-padding mask (−10000), see seqnn::TransformerBlock
//! s   = H[n]                              the output at the last real position
//! ```
//! # Deviations from the reference
//! - The item tables are the trainer's ([`ItemTables`]); this module owns the position table, the blocks and
//!   the gate. RecBole's item table has row 0 zero (`padding_idx`); here row 0 is whatever the trainer keeps.
//!   Padding positions are masked as keys, so row 0 never reaches a real position's output.
//! - Dropout masks come from the trainer's ChaCha stream, not PyTorch's generator.

use candle_core::Tensor;
use candle_nn::{Init, VarBuilder};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::seq::model::{gather_positions, ItemTables, SeqBatch, SeqEncoder};
use crate::seq::nn::{
    attention_mask, check_prob, check_tables, fuse_item_inputs, maybe_dropout, InputFusion, LayerNorm, ModalityGate,
    TransformerBlock, INIT_STD,
};
use crate::{Error, Result};

/// SASRec's hyper-parameters; defaults are RecBole's (spec §5.4 \[PROPOSED\]). In TOML:
/// `[model.sasrec] n_layers = 2, n_heads = 2, inner_size = 256, hidden_dropout_prob = 0.5, …`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SasRecConfig {
    /// `n_layers`: number of Transformer blocks L.
    pub n_layers: usize,
    /// `n_heads`: attention heads h (d must be a multiple of h).
    pub n_heads: usize,
    /// `inner_size`: width of the feed-forward layer d_ff.
    pub inner_size: usize,
    /// `hidden_dropout_prob`: dropout on the input and after the attention and feed-forward outputs.
    pub hidden_dropout_prob: f64,
    /// `attn_dropout_prob`: dropout on the attention weights.
    pub attn_dropout_prob: f64,
    /// `layer_norm_eps`: epsilon of every layer norm.
    pub layer_norm_eps: f64,
    /// `MAX_ITEM_LIST_LENGTH`: rows of the position table; longer inputs are an error.
    pub max_len: usize,
    /// How a position's input is built from the item tables (§5.6; no reference flag).
    pub fusion: InputFusion,
}

impl Default for SasRecConfig {
    fn default() -> Self {
        Self {
            n_layers: 2,
            n_heads: 2,
            inner_size: 256,
            hidden_dropout_prob: 0.5,
            attn_dropout_prob: 0.5,
            layer_norm_eps: 1e-12,
            max_len: 50,
            fusion: InputFusion::Gate,
        }
    }
}

/// The SASRec encoder. Keys: `position_emb.weight` (max_len, d), `input_ln`, `blocks.{k}`, `gate`.
#[derive(Debug, Clone)]
pub struct SasRec {
    position_emb: Tensor,
    input_ln: LayerNorm,
    blocks: Vec<TransformerBlock>,
    gate: Option<ModalityGate>,
    cfg: SasRecConfig,
    d: usize,
}

impl SasRec {
    /// `d` is the width of the item tables.
    pub fn new(vb: VarBuilder, cfg: &SasRecConfig, d: usize) -> Result<Self> {
        if cfg.max_len == 0 || cfg.n_layers == 0 || cfg.inner_size == 0 {
            return Err(Error::Config("sasrec: max_len, n_layers and inner_size must be at least 1".into()));
        }
        check_prob("sasrec.hidden_dropout_prob", cfg.hidden_dropout_prob)?;
        check_prob("sasrec.attn_dropout_prob", cfg.attn_dropout_prob)?;
        let position_emb = vb.pp("position_emb").get_with_hints(
            (cfg.max_len, d),
            "weight",
            Init::Randn { mean: 0.0, stdev: INIT_STD },
        )?;
        let input_ln = LayerNorm::new(vb.pp("input_ln"), d, cfg.layer_norm_eps)?;
        let blocks = (0..cfg.n_layers)
            .map(|k| {
                TransformerBlock::new(
                    vb.pp("blocks").pp(k.to_string()),
                    d,
                    cfg.n_heads,
                    cfg.inner_size,
                    cfg.hidden_dropout_prob,
                    cfg.attn_dropout_prob,
                    cfg.layer_norm_eps,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let gate = match cfg.fusion {
            InputFusion::Id => None,
            InputFusion::Gate => Some(ModalityGate::new(vb.pp("gate"), d)?),
        };
        Ok(Self { position_emb, input_ln, blocks, gate, cfg: cfg.clone(), d })
    }

    /// The configuration the encoder was built with.
    pub fn config(&self) -> &SasRecConfig {
        &self.cfg
    }

    /// The last block's output at every position, `(b, l, d)`. The output at a position depends only on the
    /// items up to it (causal mask); positions at or after `lens[r]` are padding.
    pub fn forward_all(
        &self,
        batch: &SeqBatch,
        tables: &ItemTables,
        mut train: Option<&mut ChaCha8Rng>,
    ) -> Result<Tensor> {
        check_tables("sasrec", tables, self.d)?;
        let l = batch.items.dim(1)?;
        if l > self.cfg.max_len {
            return Err(Error::Shape(format!(
                "sasrec: inputs of length {l} exceed max_len = {} (the position table)",
                self.cfg.max_len
            )));
        }
        let e = fuse_item_inputs(tables, &batch.items, self.gate.as_ref())?; // (b, l, d)
        let pos = self.position_emb.narrow(0, 0, l)?.unsqueeze(0)?; // (1, l, d)
        let x = self.input_ln.forward(&e.broadcast_add(&pos)?)?;
        let mut x = maybe_dropout(&x, self.cfg.hidden_dropout_prob, train.as_deref_mut())?;
        let mask = attention_mask(&batch.lens, l, true, x.dtype(), x.device())?; // (b, 1, l, l)
        for block in &self.blocks {
            x = block.forward(&x, &mask, train.as_deref_mut())?;
        }
        Ok(x)
    }
}

impl SeqEncoder for SasRec {
    fn name(&self) -> &'static str {
        "sasrec"
    }

    fn encode(&self, batch: &SeqBatch, tables: &ItemTables, train: Option<&mut ChaCha8Rng>) -> Result<Tensor> {
        let h = self.forward_all(batch, tables, train)?; // (b, l, d)
        gather_positions(&h, &batch.last_positions()?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;
    use mmkd_features::seeded_var_builder;

    #[test]
    fn config_round_trips_and_rejects_typos() {
        let cfg: SasRecConfig = serde_json::from_str(r#"{"n_heads": 4, "fusion": "id"}"#).unwrap();
        assert_eq!(cfg.n_heads, 4);
        assert_eq!(cfg.fusion, InputFusion::Id);
        assert_eq!(cfg.max_len, 50);
        assert!(serde_json::from_str::<SasRecConfig>(r#"{"n_head": 4}"#).is_err());
    }

    #[test]
    fn rejects_bad_configs_and_long_inputs() {
        let vm = VarMap::new();
        let vb = seeded_var_builder(&vm, 1, DType::F32, &Device::Cpu);
        let bad = SasRecConfig { n_heads: 3, ..Default::default() };
        assert!(SasRec::new(vb.pp("a"), &bad, 8).is_err());
        let bad = SasRecConfig { hidden_dropout_prob: 1.0, ..Default::default() };
        assert!(SasRec::new(vb.pp("b"), &bad, 8).is_err());
        let cfg = SasRecConfig { max_len: 2, n_layers: 1, inner_size: 4, ..Default::default() };
        let model = SasRec::new(vb.pp("c"), &cfg, 4).unwrap();
        let table = Tensor::zeros((5, 4), DType::F32, &Device::Cpu).unwrap();
        let tables = ItemTables { id: table.clone(), visual: table.clone(), text: table };
        let batch = SeqBatch::new(&[&[1u32, 2, 3][..]], None, &Device::Cpu).unwrap();
        assert!(model.encode(&batch, &tables, None).is_err());
        let batch = SeqBatch::new(&[&[1u32, 2][..]], None, &Device::Cpu).unwrap();
        assert_eq!(model.encode(&batch, &tables, None).unwrap().dims(), &[1, 4]);
    }
}
