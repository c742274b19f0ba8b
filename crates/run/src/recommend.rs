//! Top-K items for one user from a trained run's best checkpoint. The model is rebuilt from the run's
//! `run.toml` as `train` built it, with the run's resolved `config.toml` as the last configuration layer, and
//! `best.safetensors` is loaded into it.

use mmkd_backbones::Backbone;
use std::path::Path;

use serde::Serialize;

use crate::error::{bail, Context, Result};
use crate::run_dir::{RunRecord, CONFIG_FILE};
use crate::spec::RunSpec;

/// The spec that rebuilds the model of `run`: its recorded spec with the resolved `config.toml` as the only
/// layer over the shipped files (so no `--set`, seed, epochs or teacher flag is applied twice), on `data`
/// when given, with the configs folder `configs` and the device `device`.
pub fn rebuild_spec(run: &Path, data: Option<&Path>, configs: &Path, device: &str) -> Result<RunSpec> {
    let recorded = RunRecord::read(run)?.spec;
    Ok(RunSpec {
        data: data.map_or(recorded.data.clone(), Path::to_path_buf),
        config: Some(run.join(CONFIG_FILE)),
        set: Vec::new(),
        epochs: None,
        teacher: None,
        seed: None,
        device: device.to_string(),
        configs: configs.to_path_buf(),
        out: run.to_path_buf(),
        resume: false,
        ..recorded
    })
}

/// One recommended item of a collaborative-filtering or multimodal run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendation {
    pub rank: usize,
    pub item: u32,
    pub score: f32,
    /// The item's label value, when the data have labels.
    pub label: Option<i64>,
    /// Whether the item is among the user's test items.
    pub in_test: bool,
}

/// The list of [`recommend`], with what was excluded.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendations {
    pub items: Vec<Recommendation>,
    /// The user's train items, excluded from the list.
    pub n_train_items: usize,
    pub n_test_items: usize,
}

/// The `k` best items `(item, score)` of `scores` outside `exclude`, best first (the evaluation's order).
fn ranked(scores: &[f32], exclude: &[u32], k: usize) -> Vec<(u32, f32)> {
    mmkd_eval::top_k_excluding(scores, exclude, k).into_iter().map(|i| (i, scores[i as usize])).collect()
}

/// The top `k` items for `user` (0-based) of a non-sequential run rebuilt by `spec`, the user's train items
/// excluded.
pub fn recommend(spec: &RunSpec, user: u32, k: usize) -> Result<Recommendations> {
    if k == 0 {
        bail!("--k must be at least 1");
    }
    let mut prepared =
        crate::prepare::prepare(spec).with_context(|| format!("rebuilding the model of {}", spec.out.display()))?;
    crate::execute::load_best(prepared.model.vars(), &spec.out)?;
    let dataset = &prepared.dataset;
    let user_idx = user as usize;
    if user_idx >= dataset.n_users {
        bail!("--user {user}: the data have users 0..{}", dataset.n_users);
    }
    let scores = crate::execute::user_scores(prepared.model.as_mut(), user)?;
    let dataset = &prepared.dataset;
    let train = dataset.train.row(user_idx);
    let test = dataset.test.row(user_idx);
    let labels = dataset.labels.as_ref();
    let items = ranked(&scores, train, k)
        .into_iter()
        .enumerate()
        .map(|(r, (item, score))| Recommendation {
            rank: r + 1,
            item,
            score,
            label: labels.and_then(|l| l.per_item.get(item as usize).and_then(|&c| l.values.get(c as usize)).copied()),
            in_test: test.contains(&item),
        })
        .collect();
    Ok(Recommendations { items, n_train_items: train.len(), n_test_items: test.len() })
}

/// One next item of a sequential run, by the raw ids of `interactions.csv`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NextItem {
    pub rank: usize,
    pub item: u32,
    pub score: f32,
}

/// The list of [`recommend_next`].
#[derive(Debug, Clone, PartialEq)]
pub struct NextItems {
    pub items: Vec<NextItem>,
    /// The length of the user's whole sequence (excluded from the list).
    pub history_length: usize,
}

/// The next `k` items for the user with raw id `user` of a sequential run rebuilt by `spec`, after their whole
/// sequence (its last `max_len` items), the items of the sequence excluded.
pub fn recommend_next(spec: &RunSpec, user: u32, k: usize) -> Result<NextItems> {
    if k == 0 {
        bail!("--k must be at least 1");
    }
    let p = crate::seq::prepare(spec).with_context(|| format!("rebuilding the model of {}", spec.out.display()))?;
    let model = p.model.context("a popularity run has no checkpoint to recommend from")?;
    crate::execute::load_best(model.vars(), &spec.out)?;
    let Some(user_idx) = p.data.user_raw.iter().position(|&u| u == user) else {
        bail!("--user {user}: no such userID after the k-core filter of {}", spec.data.display());
    };
    let seq = &p.data.sequences[user_idx];
    let input = &seq[seq.len().saturating_sub(p.data.max_len)..];
    let scores = crate::execute::seq_scores(&model, input, &p.device)?; // Item j + 1 at j.
    let history: Vec<u32> = seq.iter().map(|&i| i - 1).collect();
    let items = ranked(&scores, &history, k)
        .into_iter()
        .enumerate()
        .map(|(r, (col, score))| NextItem { rank: r + 1, item: p.data.item_raw[col as usize + 1], score })
        .collect();
    Ok(NextItems { items, history_length: seq.len() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{ExtractorKind, ModelKind};

    #[test]
    fn the_rebuilt_spec_layers_the_resolved_config_and_drops_the_flags() {
        let dir = std::env::temp_dir().join(format!("mmkd-rebuild-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut spec =
            RunSpec::new(ModelKind::Grcn, ExtractorKind::Sgfd(mmkd_student_kd::SgfdPreset::SgfdL), "/data/office");
        spec.set = vec!["optim.lr=1e-2".into()];
        spec.seed = Some(4);
        spec.epochs = Some(3);
        spec.teacher = Some("/teachers/t".into());
        spec.resume = true;
        spec.out = dir.clone();
        crate::run_dir::write(&spec, &crate::RunConfig::default(), &[]).unwrap();

        let rebuilt = rebuild_spec(&dir, None, Path::new("cfgs"), "cuda:1").unwrap();
        assert_eq!((rebuilt.model, &rebuilt.extractor), (ModelKind::Grcn, &spec.extractor));
        assert_eq!(rebuilt.data, Path::new("/data/office"));
        assert_eq!(rebuilt.config, Some(dir.join(CONFIG_FILE)));
        assert!(rebuilt.set.is_empty() && rebuilt.seed.is_none() && rebuilt.epochs.is_none());
        assert!(rebuilt.teacher.is_none() && !rebuilt.resume);
        assert_eq!((rebuilt.configs.as_path(), rebuilt.device.as_str()), (Path::new("cfgs"), "cuda:1"));
        let other = rebuild_spec(&dir, Some(Path::new("/elsewhere/office")), Path::new("cfgs"), "cpu").unwrap();
        assert_eq!(other.data, Path::new("/elsewhere/office"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
