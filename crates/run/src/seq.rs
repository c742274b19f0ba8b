//! The sequential models of the registry (`mmsr`, `sasrec`, `gru4rec`, and `pop` on the sequential layout):
//! load the sequences, compress each modality's features with the autoencoder ([`crate::compress`]), and
//! build the encoder (and KDSR's teacher and student).

use candle_core::{DType, Device};
use candle_nn::VarMap;
use mmkd_backbones::seq::kdsr::KdsrAux;
use mmkd_backbones::seq::model::SeqEncoder;
use std::sync::Arc;

use mmkd_data::sequential::{SeqDataset, SeqInstance};

use crate::config::RunConfig;
use crate::error::{bail, Context, Result};
use crate::execute::{SeqAux, SeqRecommender};
use crate::spec::{ExtractorKind, ModelKind, RunSpec};

/// A sequential model with its configuration and data: what `train` and `bench train` share.
#[allow(missing_debug_implementations)]
pub struct SeqPrepared {
    pub cfg: RunConfig,
    pub layers: Vec<String>,
    pub data: Arc<SeqDataset>,
    /// `None` for `--model pop`.
    pub model: Option<SeqRecommender>,
    /// The instances that select the model (validation under holdout, test under reference).
    pub selection: Vec<SeqInstance>,
    pub device: Device,
}

/// Resolves the configuration of a sequential run, loads the data and builds the model.
pub fn prepare(args: &RunSpec) -> Result<SeqPrepared> {
    let device = crate::device::parse(&args.device)?;
    if !args.model.is_sequential() && args.model != ModelKind::Pop {
        bail!(
            "{} holds sequential data (interactions.csv): use --model mmsr, sasrec, gru4rec or pop, not {}",
            args.data.display(),
            args.model.name()
        );
    }
    if !mmkd_data::sequential::is_sequential(&args.data) {
        bail!(
            "--model {} needs the sequential layout ({}/interactions.csv with userID,itemID,timestamp); write one \
             with `cargo xtask gen-data --preset tiny-seq|beauty`",
            args.model.name(),
            args.data.display()
        );
    }
    if args.kdsr && !args.model.is_sequential() {
        bail!("--kdsr needs --model mmsr, sasrec or gru4rec");
    }
    if args.teacher.is_some() || args.extractor != ExtractorKind::Vanilla {
        bail!("--teacher and --extractor belong to the SGFD models; the sequential models take --kdsr");
    }
    let (cfg, layers) = crate::prepare::resolve(args, None, Vec::new())?;
    let data = Arc::new(
        mmkd_data::sequential::load_sequential(&args.data, &cfg.seq_data)
            .with_context(|| format!("loading the sequential data set in {}", args.data.display()))?,
    );
    tracing::info!(stats = %data.stats(), "sequential data");
    let (train, selection) = crate::execute::split_instances(&data, &cfg.train);
    if args.model == ModelKind::Pop {
        return Ok(SeqPrepared { cfg, layers, data, model: None, selection, device });
    }
    let init = crate::compress::compress_features(&args.data, &data, &cfg, &device)?;
    let vars = VarMap::new();
    let vb = mmkd_features::seeded_var_builder(&vars, cfg.seed, DType::F32, &device);
    let d = cfg.seq.embed_dim;
    let aux: Option<Box<dyn SeqAux>> = if args.kdsr {
        let seed = mmkd_data::derive_seed(cfg.seed, "kdsr-teacher");
        Some(Box::new(KdsrAux::new(vb.pp("kdsr"), &cfg.kdsr, &init.visual, &init.text, seed, &device)?))
    } else {
        None
    };
    let kind = args.model;
    let build = |vb: candle_nn::VarBuilder| -> mmkd_backbones::Result<Box<dyn SeqEncoder>> {
        Ok(match kind {
            ModelKind::Mmsr => Box::new(mmkd_backbones::seq::mmsr::Mmsr::new(vb.pp("mmsr"), &cfg.mmsr, d)?),
            ModelKind::Sasrec => Box::new(mmkd_backbones::seq::sasrec::SasRec::new(vb.pp("sasrec"), &cfg.sasrec, d)?),
            _ => Box::new(mmkd_backbones::seq::gru4rec::Gru4Rec::new(vb.pp("gru4rec"), &cfg.gru4rec, d)?),
        })
    };
    let model = SeqRecommender::new(&vb, &vars, &cfg.seq, &init, build, aux, Arc::clone(&data), train)?;
    Ok(SeqPrepared { cfg, layers, data, model: Some(model), selection, device })
}
