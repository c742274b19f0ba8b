//! Feature compression of the sequential models: each modality's raw item features through the autoencoder
//! of `[ae]`, cached on disk next to the data.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use mmkd_data::sequential::SeqDataset;
use mmkd_features::FeatureStore;

use crate::config::RunConfig;
use crate::error::{bail, Context, Error, Result};
use crate::execute::ModalityInit;

/// The compressed features of every item (`(n_items + 1, d)` per modality, row 0 zero): the raw rows of the
/// kept items, normalised per `[data]`, through the autoencoder of `[ae]` trained on them (spec §2.7).
///
/// The autoencoder is data preprocessing, trained once and frozen: its seed is fixed (not the run seed), and
/// its output is cached in `DIR/.mmkd-cache/ae-<key>.safetensors`, keyed by the `[ae]` settings, the
/// Version of the autoencoder's training, part of the cache key.
const AE_VERSION: &str = "ae-v2";

/// normalisation, the feature files' sizes and the kept items, so every run on the same data reuses it.
pub fn compress_features(
    dir: &std::path::Path,
    data: &SeqDataset,
    cfg: &RunConfig,
    device: &Device,
) -> Result<ModalityInit> {
    let files: Vec<(String, std::path::PathBuf)> =
        mmkd_data::SGFD_FEATURES.iter().map(|(name, file)| (name.to_string(), dir.join(file))).collect();
    for (_, path) in &files {
        if !path.is_file() {
            bail!("the sequential models need both modality feature files; {} is missing", path.display());
        }
    }
    // `AE_VERSION` changes when the autoencoder's training changes (v2: the PyTorch-faithful AdamW of
    // `mmkd-nn` instead of candle's), so that no cache of another version is read.
    let mut key = format!("{AE_VERSION}|{:?}|{:?}|{:?}", cfg.ae, cfg.data.normalization, data.item_raw);
    for (_, path) in &files {
        let len = std::fs::metadata(path).map_err(|e| Error::io("reading", path, e))?.len();
        key.push_str(&format!("|{len}"));
    }
    let cache = dir.join(".mmkd-cache").join(format!("ae-{:016x}.safetensors", fnv1a(key.as_bytes())));
    if cache.is_file() {
        if let Ok(mut t) = candle_core::safetensors::load(&cache, device) {
            if let (Some(visual), Some(text)) = (t.remove("visual"), t.remove("text")) {
                if visual.dims2()? == (data.n_items + 1, cfg.ae.dim) && text.dims2()? == (data.n_items + 1, cfg.ae.dim)
                {
                    tracing::info!(cache = %cache.display(), "compressed features from the cache");
                    return Ok(ModalityInit { visual, text });
                }
            }
        }
        tracing::warn!(cache = %cache.display(), "ignoring an unreadable or mismatched cache file");
    }
    let mut store =
        FeatureStore::load(&files, None).with_context(|| format!("loading the features of {}", dir.display()))?;
    store.normalize(cfg.data.normalization);
    let rows = &data.item_raw[1..];
    let mut out = std::collections::HashMap::new();
    for (name, _) in &files {
        let started = Instant::now();
        let x = store.gather(name, rows, device)?;
        let seed = mmkd_data::derive_seed(0, &format!("ae-{name}"));
        let (z, report) = mmkd_teacher::kdsr::compress(&x, &cfg.ae, seed, device)
            .with_context(|| format!("compressing the `{name}` features"))?;
        tracing::info!(
            modality = %name,
            epochs = report.epochs,
            loss = report.final_loss,
            secs = started.elapsed().as_secs_f64(),
            "autoencoder trained"
        );
        let zero = Tensor::zeros((1, z.dim(1)?), DType::F32, device)?;
        out.insert(name.clone(), Tensor::cat(&[zero, z.to_dtype(DType::F32)?], 0)?);
    }
    if let Some(parent) = cache.parent() {
        crate::error::create_dir_all(parent)?;
    }
    let tmp = cache.with_extension("safetensors.tmp");
    candle_core::safetensors::save(&out, &tmp).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &cache).map_err(|e| Error::io("writing", &cache, e))?;
    let text = out.remove("text").context("text features")?;
    let visual = out.remove("visual").context("visual features")?;
    Ok(ModalityInit { visual, text })
}

/// 64-bit FNV-1a, a stable hash for cache keys.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    #[test]
    fn fnv1a_matches_the_reference_values() {
        // The FNV test vectors: the offset basis for "", and FNV-1a 64 of "a" and "foobar".
        assert_eq!(super::fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(super::fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(super::fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
