//! The layered run configuration of a training run (`cargo xtask train`), in the order of application:
//! 1. the SGFD preset named by `--extractor` (`sgfd_l`, …) as the base of `[sgfd]`, when one is named;
//! 2. `configs/base.toml`;
//! 3. `configs/dataset/<data folder name>.toml`, if present;
//! 4. `configs/model/<model>.toml`, if present;
//! 5. `configs/dataset/<data folder name>/<model>.toml`, if present: a model's settings on one data set
//!    (the reference README's per-dataset learning rates and SGFD weights);
//! 6. when the data folder was written by the generator, `configs/generated/<model>.toml`: settings that the
//!    generated data need where the authors' differ (e.g. a README learning rate that diverges on them);
//! 7. with `train.protocol = "reference"` (from any layer): `configs/protocol/reference/<model>.toml`, the
//!    selection rule of the model's reference code (criterion, patience, NDCG form, masking);
//! 8. `--config FILE`;
//! 9. `--set key=value` (dotted keys; the value is read as TOML, else taken as a string), then the flags
//!    `--seed`, `--epochs` and `--teacher`.
//!
//! Layers are merged as TOML tables: a table merges key by key, any other value replaces the one below, and
//! a table whose `kind` changes (e.g. `[schedule]`) replaces the one below whole. The result is read into
//! one [`RunConfig`], in which every section denies unknown keys: a typo is an error that names the section
//! and the key. `[train] seed` defaults to the top-level `seed`.

use std::path::{Path, PathBuf};

use mmkd_backbones::cf::mf::MfConfig;
use mmkd_eval::EvalConfig;
use mmkd_features::{Normalization, ProjectionConfig};
use mmkd_nn::optim::{LrSchedule, OptimConfig};
use mmkd_student_kd::SgfdConfig;
use serde::{Deserialize, Serialize};
use toml::{Table, Value};

use crate::error::{bail, Context, Error, Result};
use crate::execute::{SeqConfig, TrainConfig};

/// Everything a training run reads from its configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)] // A typo in a config file is an error, not a silent default.
pub struct RunConfig {
    /// Seed of the weights (and of `[train]` unless it sets its own).
    pub seed: u64,
    /// Name of the data set (set by `configs/dataset/<name>.toml`; informational).
    pub name: Option<String>,
    /// Generator preset of the same shape, used when the authors' files are absent (informational here).
    pub preset: Option<String>,
    pub data: DataConfig,
    pub eval: EvalConfig,
    pub train: TrainConfig,
    pub optim: OptimConfig,
    pub schedule: LrSchedule,
    pub mf: MfConfig,
    pub bm3: mmkd_backbones::mm::bm3::Bm3Config,
    pub grcn: mmkd_backbones::mm::grcn::GrcnConfig,
    pub maml: mmkd_backbones::mm::maml::MamlConfig,
    pub neumf: mmkd_backbones::cf::neumf::NeuMfConfig,
    pub cml: mmkd_backbones::cf::cml::CmlConfig,
    pub ngcf: mmkd_backbones::cf::ngcf::NgcfConfig,
    pub dgcf: mmkd_backbones::cf::dgcf::DgcfConfig,
    pub sgfd: SgfdConfig,
    pub projection: ProjectionConfig,
    /// Sequential data: k-core, maximum input length, test share.
    pub seq_data: mmkd_data::sequential::SeqOptions,
    /// What every sequential model shares (embedding width, batch, cutoffs, modality tables).
    pub seq: SeqConfig,
    pub mmsr: mmkd_backbones::seq::mmsr::MmsrConfig,
    pub sasrec: mmkd_backbones::seq::sasrec::SasRecConfig,
    pub gru4rec: mmkd_backbones::seq::gru4rec::Gru4RecConfig,
    /// The autoencoder that compresses each modality's features for the sequential models.
    pub ae: mmkd_teacher::kdsr::AeConfig,
    /// KDSR's correlation distillation (`train --kdsr`).
    pub kdsr: mmkd_student_kd::kdsr::KdsrConfig,
}

/// `[data]`: preprocessing of the data before training.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Row-wise preprocessing of the generic features: `none`, `l2` or `standard`.
    pub normalization: Normalization,
}

/// Where the layers come from.
#[derive(Debug, Clone, Default)]
pub struct Layers {
    /// Folder holding `base.toml`, `dataset/` and `model/`.
    pub configs_dir: PathBuf,
    /// Name of the data folder (its last path component).
    pub dataset: String,
    /// Model name, as in `model/<model>.toml`.
    pub model: String,
    /// Whether the data folder was written by the generator (`manifest.json` of `mmkd-synth`): then
    /// `generated/<model>.toml` applies.
    pub generated: bool,
    /// `[sgfd]` base from a preset, applied below every file.
    pub sgfd_base: Option<SgfdConfig>,
    /// `--config FILE`.
    pub file: Option<PathBuf>,
    /// `--set key=value` arguments, in order.
    pub sets: Vec<String>,
    /// Overrides from dedicated flags, applied last: dotted key → value.
    pub flags: Vec<(String, Value)>,
}

/// Whether `dir` holds a data set written by the generator (its `manifest.json` says `mmkd-synth`).
pub fn is_generated(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join(mmkd_synth::MANIFEST_FILE))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .is_some_and(|m| m["generator"] == "mmkd-synth")
}

/// Merges the layers and reads the result; also returns the files that were applied, in order.
pub fn resolve(layers: &Layers) -> Result<(RunConfig, Vec<PathBuf>)> {
    let (table, applied) = merged(layers, false)?;
    // The reference protocol brings each model's own selection rule; it is known only once every layer
    // (and `--set train.protocol=…`) is read, so the layers are merged again with its file among them.
    let reference = table.get("train").and_then(|t| t.get("protocol")).and_then(Value::as_str) == Some("reference");
    let (table, applied) = if reference { merged(layers, true)? } else { (table, applied) };
    Ok((from_table(&table)?, applied))
}

/// The configuration files of `layers` below `--config`, in order of application, that exist.
fn files(layers: &Layers, reference: bool) -> Vec<PathBuf> {
    let dir = &layers.configs_dir;
    let mut files = vec![
        dir.join("base.toml"),
        dir.join("dataset").join(format!("{}.toml", layers.dataset)),
        dir.join("model").join(format!("{}.toml", layers.model)),
        dir.join("dataset").join(&layers.dataset).join(format!("{}.toml", layers.model)),
    ];
    if layers.generated {
        files.push(dir.join("generated").join(format!("{}.toml", layers.model)));
    }
    if reference {
        files.push(dir.join("protocol").join("reference").join(format!("{}.toml", layers.model)));
    }
    files.into_iter().filter(|p| p.exists()).collect()
}

fn merged(layers: &Layers, reference: bool) -> Result<(Table, Vec<PathBuf>)> {
    let mut table = Table::new();
    if let Some(sgfd) = &layers.sgfd_base {
        table.insert("sgfd".into(), Value::try_from(sgfd).context("serialising the SGFD preset")?);
    }
    if !layers.configs_dir.is_dir() {
        tracing::warn!(dir = %layers.configs_dir.display(), "no configuration folder; using the built-in defaults");
    }
    let mut applied = Vec::new();
    for path in files(layers, reference).into_iter().chain(layers.file.clone()) {
        merge(&mut table, read_table(&path)?);
        applied.push(path);
    }
    for arg in &layers.sets {
        let (key, value) = parse_set(arg)?;
        set_dotted(&mut table, &key, value).with_context(|| format!("--set {arg}"))?;
    }
    for (key, value) in &layers.flags {
        set_dotted(&mut table, key, value.clone())?;
    }
    let seed = table.get("seed").cloned().unwrap_or(Value::Integer(0));
    if let Some(Value::Table(train)) = table.get_mut("train") {
        train.entry("seed").or_insert(seed);
    } else if !table.contains_key("train") {
        table.insert("train".into(), Value::Table(Table::from_iter([("seed".to_string(), seed)])));
    }
    Ok((table, applied))
}

/// Reads the merged table into a [`RunConfig`]; an error names the section and the key.
pub fn from_table(table: &Table) -> Result<RunConfig> {
    // Through text, so that the error carries a position and we can name the section it lies in.
    let text = toml::to_string(table).context("serialising the merged configuration")?;
    toml::from_str(&text).map_err(|e| {
        let section = e
            .span()
            .and_then(|span| text[..span.start].lines().rev().find(|l| l.trim_start().starts_with('[')))
            .map_or_else(|| "top level".to_string(), |l| l.trim().to_string());
        Error::Invalid(format!("invalid configuration in {section}: {}", e.message()))
    })
}

/// The TOML file at `path` as a table.
pub fn read_table(path: &Path) -> Result<Table> {
    let text = crate::error::read_to_string(path)?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Deep merge of `overlay` into `base` (see the module documentation).
pub fn merge(base: &mut Table, overlay: Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(below)), Value::Table(above))
                if below.get("kind").is_none_or(|k| above.get("kind").is_none_or(|a| a == k)) =>
            {
                merge(below, above);
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// `key=value` → the key and the value read as TOML (`1e-2`, `true`, `[10, 20]`, `"x"`), or as a string
/// when it is not valid TOML (`recall@20`, a path).
pub fn parse_set(arg: &str) -> Result<(String, Value)> {
    let Some((key, raw)) = arg.split_once('=') else {
        bail!("--set {arg}: expected KEY=VALUE, e.g. optim.lr=1e-2");
    };
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        bail!("--set {arg}: `{key}` is not a dotted key");
    }
    let raw = raw.trim();
    let value = toml::from_str::<Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(raw.to_string()));
    Ok((key.to_string(), value))
}

/// Sets `a.b.c = value`, creating tables on the way.
pub fn set_dotted(table: &mut Table, key: &str, value: Value) -> Result<()> {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().ok_or_else(|| Error::Invalid("empty key".into()))?;
    let mut current = table;
    for (depth, part) in parts.iter().enumerate() {
        let entry = current.entry(part.to_string()).or_insert_with(|| Value::Table(Table::new()));
        current = match entry {
            Value::Table(t) => t,
            other => bail!("`{}` is a {}, not a table", parts[..=depth].join("."), other.type_str()),
        };
    }
    current.insert(last.to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs")
    }

    #[test]
    fn shipped_configs_resolve_for_every_model_and_data_set() {
        for dataset in ["office", "tiny", "unknown"] {
            for model in ["pop", "mf", "bm3", "grcn", "maml", "neumf", "cml", "ngcf", "dgcf"] {
                let layers = Layers {
                    configs_dir: shipped(),
                    dataset: dataset.into(),
                    model: model.into(),
                    ..Default::default()
                };
                let (cfg, applied) = resolve(&layers).unwrap();
                assert!(applied[0].ends_with("base.toml"), "{applied:?}");
                assert_eq!(cfg.eval.ks, vec![10, 20, 50]);
                // The resolved config, as written to config.toml, reads back to itself.
                let text = toml::to_string(&cfg).unwrap();
                assert_eq!(toml::from_str::<RunConfig>(&text).unwrap(), cfg, "{text}");
            }
        }
        let layers =
            Layers { configs_dir: shipped(), dataset: "tiny".into(), model: "mf".into(), ..Default::default() };
        let cfg = resolve(&layers).unwrap().0;
        assert_eq!((cfg.projection.out_dim, cfg.sgfd.out_dim), (cfg.mf.embed_dim, cfg.mf.embed_dim));
    }

    #[test]
    fn layers_apply_in_order_and_typos_name_their_section() {
        let dir = std::env::temp_dir().join(format!("mmkd-config-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("model")).unwrap();
        std::fs::write(dir.join("base.toml"), "seed = 3\n[optim]\nlr = 0.1\n[schedule]\nkind = \"constant\"\n")
            .unwrap();
        std::fs::write(
            dir.join("model/mf.toml"),
            "[optim]\nweight_decay = 0.5\n[schedule]\nkind = \"step\"\ngamma = 0.1\nstep_size = 4\n",
        )
        .unwrap();
        let extra = dir.join("extra.toml");
        std::fs::write(&extra, "[train]\ncriterion = \"ndcg@20\"\n").unwrap();
        let layers = Layers {
            configs_dir: dir.clone(),
            dataset: "none".into(),
            model: "mf".into(),
            generated: false,
            sgfd_base: Some(mmkd_student_kd::preset("sgfd_l").unwrap()),
            file: Some(extra),
            sets: vec!["optim.lr=2e-3".into(), "eval.ks=[5, 20]".into(), "sgfd.kd_weight=0.5".into()],
            flags: vec![("train.epochs".into(), Value::Integer(7))],
        };
        let (cfg, applied) = resolve(&layers).unwrap();
        assert_eq!(applied.len(), 3);
        assert_eq!((cfg.seed, cfg.train.seed, cfg.train.epochs), (3, 3, 7));
        assert_eq!((cfg.optim.lr, cfg.optim.weight_decay), (2e-3, 0.5));
        assert_eq!(cfg.schedule, LrSchedule::Step { gamma: 0.1, step_size: 4 });
        assert_eq!((cfg.train.criterion.as_str(), cfg.eval.ks.as_slice()), ("ndcg@20", &[5, 20][..]));
        // The preset is the base of [sgfd]; the --set value lies on top of it.
        assert!(!cfg.sgfd.use_fd && cfg.sgfd.use_ld);
        assert_eq!(cfg.sgfd.kd_weight, 0.5);

        let typo = Layers { sets: vec!["optim.lrr=1".into()], ..layers.clone() };
        let err = resolve(&typo).unwrap_err().to_string();
        assert!(err.contains("[optim]") && err.contains("lrr"), "{err}");
        let typo = Layers { sets: vec!["trian.epochs=1".into()], ..layers };
        let err = resolve(&typo).unwrap_err().to_string();
        assert!(err.contains("trian"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn dataset_model_and_reference_protocol_layers() {
        use mmkd_eval::{MaskMode, NdcgForm};
        let layers = |model: &str, sets: &[&str]| Layers {
            configs_dir: shipped(),
            dataset: "office".into(),
            model: model.into(),
            sets: sets.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        // The README's Office settings per model, over the model's defaults.
        let (bm3, applied) = resolve(&layers("bm3", &[])).unwrap();
        assert!(applied.last().unwrap().ends_with("dataset/office/bm3.toml"), "{applied:?}");
        assert_eq!((bm3.optim.lr, bm3.sgfd.kd_weight, bm3.sgfd.t_decay), (1e-1, 1e-2, 50.0));
        assert_eq!((bm3.train.criterion.as_str(), bm3.eval.ndcg), ("recall@20", NdcgForm::Standard));
        let grcn = resolve(&layers("grcn", &[])).unwrap().0;
        assert_eq!((grcn.optim.lr, grcn.grcn.reg_weight, grcn.sgfd.t_decay), (1e-3, 1e-3, 100.0));

        // The reference protocol, asked for on the command line, brings each model's selection rule ...
        let (grcn, applied) = resolve(&layers("grcn", &["train.protocol=reference"])).unwrap();
        assert!(applied.last().unwrap().ends_with("protocol/reference/grcn.toml"), "{applied:?}");
        assert_eq!((grcn.train.criterion.as_str(), grcn.train.patience), ("ndcg@20", 22));
        assert_eq!((grcn.eval.ndcg, grcn.eval.mask), (NdcgForm::HitNormalised, MaskMode::Value(1e-5)));
        let bm3 = resolve(&layers("bm3", &["train.protocol=reference"])).unwrap().0;
        assert_eq!((bm3.train.criterion.as_str(), bm3.train.patience), ("recall_micro@20", 41));
        assert_eq!((bm3.eval.ndcg, bm3.eval.mask), (NdcgForm::Bm3Fork, MaskMode::NegInf));
        bm3.train.validate(&bm3.eval.summary_keys()).unwrap();
        // ... under what the user sets explicitly.
        let bm3 = resolve(&layers("bm3", &["train.protocol=reference", "train.patience=3"])).unwrap().0;
        assert_eq!(bm3.train.patience, 3);
        // Models without a reference file keep the base rule.
        let mf = resolve(&layers("mf", &["train.protocol=reference"])).unwrap().0;
        assert_eq!((mf.train.criterion.as_str(), mf.train.patience), ("recall@20", 20));
        // Generated data bring their own layer, under the protocol and the command line.
        let generated = Layers { generated: true, ..layers("bm3", &["train.protocol=reference"]) };
        let (bm3, applied) = resolve(&generated).unwrap();
        assert!(applied.iter().any(|p| p.ends_with("generated/bm3.toml")), "{applied:?}");
        assert_eq!((bm3.optim.lr, bm3.sgfd.kd_weight, bm3.train.patience), (1e-2, 1e-2, 41));
    }

    #[test]
    fn set_values_are_toml_or_strings() {
        assert_eq!(parse_set("optim.lr=1e-2").unwrap(), ("optim.lr".into(), Value::Float(1e-2)));
        assert_eq!(parse_set("train.criterion=ndcg@20").unwrap().1, Value::String("ndcg@20".into()));
        assert_eq!(parse_set("x=\"a=b\"").unwrap().1, Value::String("a=b".into()));
        assert_eq!(parse_set("x=true").unwrap().1, Value::Boolean(true));
        assert!(parse_set("optim.lr").is_err());
        assert!(parse_set("optim..lr=1").is_err());
        let mut t = Table::new();
        set_dotted(&mut t, "seed", Value::Integer(1)).unwrap();
        assert!(set_dotted(&mut t, "seed.x", Value::Integer(1)).is_err());
    }
}
