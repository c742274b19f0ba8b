//! GRU4Rec: session-based recommendation with recurrent networks (Hidasi et al., ICLR'16), in RecBole's
//! improved form, with KDSR's compatibility-study input fusion (spec `kdsr-mmsr.md` §5.5, §5.6).
//!
//! Reference: RecBole `recbole/model/sequential_recommender/gru4rec.py`, which KDSR's `base_model.py`
//! follows.
//! ```text
//! x_p = Dropout(e_p)                 e_p = gate(e^id, e^v, e^t) of item i_p (§5.6), or e^id alone
//! g   = GRU(x), no biases            PyTorch gate order r, z, n; h₀ = 0 (seqnn::Gru)
//! o_p = W_o g_p + b_o                Linear(hidden_size, d)
//! s   = o_n                          the output at the last real position
//! ```
//! # Deviations from the reference
//! - The item tables are the trainer's ([`ItemTables`]): RecBole's Xavier-normal item embedding is the
//!   trainer's to initialise. Here the GRU's first-layer weights are Xavier-uniform (RecBole `_init_weights`),
//!   other GRU weights and the output layer keep PyTorch's defaults, and the gate is N(0, 0.02).
//! - Dropout masks come from the trainer's ChaCha stream, not PyTorch's generator.

use candle_core::Tensor;
use candle_nn::{Init, Linear, VarBuilder};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::seq::model::{gather_positions, ItemTables, SeqBatch, SeqEncoder};
use crate::seq::nn::{
    apply_linear, check_prob, check_tables, fuse_item_inputs, maybe_dropout, Gru, GruInit, InputFusion, ModalityGate,
};
use crate::{Error, Result};

/// GRU4Rec's hyper-parameters; defaults are RecBole's (spec §5.5 \[PROPOSED\]). In TOML:
/// `[model.gru4rec] hidden_size = 128, num_layers = 1, dropout_prob = 0.3`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Gru4RecConfig {
    /// `hidden_size`: width of the GRU state.
    pub hidden_size: usize,
    /// `num_layers`: stacked GRU layers L_g.
    pub num_layers: usize,
    /// `dropout_prob`: dropout on the input embeddings.
    pub dropout_prob: f64,
    /// `nn.GRU(bias=…)`: RecBole builds the GRU without biases (false).
    pub bias: bool,
    /// How a position's input is built from the item tables (§5.6; no reference flag).
    pub fusion: InputFusion,
}

impl Default for Gru4RecConfig {
    fn default() -> Self {
        Self { hidden_size: 128, num_layers: 1, dropout_prob: 0.3, bias: false, fusion: InputFusion::Gate }
    }
}

/// The GRU4Rec encoder. Keys: `gru.weight_ih_l{k}`, `gru.weight_hh_l{k}`, `dense.{weight,bias}`, `gate`.
#[derive(Debug, Clone)]
pub struct Gru4Rec {
    gru: Gru,
    dense: Linear,
    gate: Option<ModalityGate>,
    cfg: Gru4RecConfig,
    d: usize,
}

impl Gru4Rec {
    /// `d` is the width of the item tables (the GRU's input and the output width).
    pub fn new(vb: VarBuilder, cfg: &Gru4RecConfig, d: usize) -> Result<Self> {
        check_prob("gru4rec.dropout_prob", cfg.dropout_prob)?;
        let gru = Gru::new(vb.pp("gru"), d, cfg.hidden_size, cfg.num_layers, cfg.bias, GruInit::XavierFirstLayer)?;
        // PyTorch's nn.Linear default: W, b ~ U(−1/√fan_in, 1/√fan_in).
        let bound = 1.0 / (cfg.hidden_size as f64).sqrt();
        let init = Init::Uniform { lo: -bound, up: bound };
        let dense = vb.pp("dense");
        let dense = Linear::new(
            dense.get_with_hints((d, cfg.hidden_size), "weight", init)?,
            Some(dense.get_with_hints(d, "bias", init)?),
        );
        let gate = match cfg.fusion {
            InputFusion::Id => None,
            InputFusion::Gate => Some(ModalityGate::new(vb.pp("gate"), d)?),
        };
        Ok(Self { gru, dense, gate, cfg: cfg.clone(), d })
    }

    /// The configuration the encoder was built with.
    pub fn config(&self) -> &Gru4RecConfig {
        &self.cfg
    }

    /// The output `o_p` at every position, `(b, l, d)`; it depends only on the items up to `p`.
    pub fn forward_all(&self, batch: &SeqBatch, tables: &ItemTables, train: Option<&mut ChaCha8Rng>) -> Result<Tensor> {
        check_tables("gru4rec", tables, self.d)?;
        if batch.items.dim(1)? == 0 {
            return Err(Error::Shape("gru4rec: empty inputs".into()));
        }
        let e = fuse_item_inputs(tables, &batch.items, self.gate.as_ref())?; // (b, l, d)
        let x = maybe_dropout(&e, self.cfg.dropout_prob, train)?;
        let g = self.gru.forward(&x)?; // (b, l, hidden_size)
        apply_linear(&self.dense, &g) // (b, l, d)
    }
}

impl SeqEncoder for Gru4Rec {
    fn name(&self) -> &'static str {
        "gru4rec"
    }

    fn encode(&self, batch: &SeqBatch, tables: &ItemTables, train: Option<&mut ChaCha8Rng>) -> Result<Tensor> {
        let o = self.forward_all(batch, tables, train)?; // (b, l, d)
        gather_positions(&o, &batch.last_positions()?)
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
    fn config_defaults_and_keys() {
        let cfg: Gru4RecConfig = serde_json::from_str(r#"{"dropout_prob": 0.1}"#).unwrap();
        assert_eq!(cfg, Gru4RecConfig { dropout_prob: 0.1, ..Default::default() });
        assert!(serde_json::from_str::<Gru4RecConfig>(r#"{"hidden": 4}"#).is_err());
        let vm = VarMap::new();
        let vb = seeded_var_builder(&vm, 1, DType::F32, &Device::Cpu);
        Gru4Rec::new(vb.pp("gru4rec"), &Gru4RecConfig { hidden_size: 6, ..Default::default() }, 4).unwrap();
        let mut keys: Vec<String> = vm.data().lock().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "gru4rec.dense.bias",
                "gru4rec.dense.weight",
                "gru4rec.gate.fc1.bias",
                "gru4rec.gate.fc1.weight",
                "gru4rec.gate.fc2.bias",
                "gru4rec.gate.fc2.weight",
                "gru4rec.gru.weight_hh_l0",
                "gru4rec.gru.weight_ih_l0",
            ]
        );
        assert!(Gru4Rec::new(vb.pp("x"), &Gru4RecConfig { dropout_prob: -0.1, ..Default::default() }, 4).is_err());
    }
}
