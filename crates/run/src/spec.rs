//! The typed run spec: which model, which extractor, on which data, with which configuration layers. A
//! command line (`cargo xtask train`) converts into a [`RunSpec`]; `bench train` and `recommend` build them
//! directly, and every run folder records the one it ran in `run.toml` ([`crate::run_dir`]).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The backbones a run can build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Item popularity (no training).
    Pop,
    /// BPR matrix factorisation, optionally with item features.
    Mf,
    Bm3,
    Grcn,
    /// Multimodal attentive metric learning (takes an extractor).
    Maml,
    /// Neural matrix factorisation (ids only).
    Neumf,
    /// Collaborative metric learning (ids only).
    Cml,
    /// Neural graph collaborative filtering (ids only).
    Ngcf,
    /// Disentangled graph collaborative filtering (ids only).
    Dgcf,
    /// MMSR as the KDSR code runs it (sequential data; `--kdsr` adds correlation distillation).
    Mmsr,
    /// SASRec with gated ID, image and text inputs (sequential data).
    Sasrec,
    /// GRU4Rec with gated ID, image and text inputs (sequential data).
    Gru4rec,
}

impl ModelKind {
    /// Every model, in the order of the command line's help.
    pub const ALL: [Self; 12] = [
        Self::Pop,
        Self::Mf,
        Self::Bm3,
        Self::Grcn,
        Self::Maml,
        Self::Neumf,
        Self::Cml,
        Self::Ngcf,
        Self::Dgcf,
        Self::Mmsr,
        Self::Sasrec,
        Self::Gru4rec,
    ];

    /// The name of `configs/model/<name>.toml`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pop => "pop",
            Self::Mf => "mf",
            Self::Bm3 => "bm3",
            Self::Grcn => "grcn",
            Self::Maml => "maml",
            Self::Neumf => "neumf",
            Self::Cml => "cml",
            Self::Ngcf => "ngcf",
            Self::Dgcf => "dgcf",
            Self::Mmsr => "mmsr",
            Self::Sasrec => "sasrec",
            Self::Gru4rec => "gru4rec",
        }
    }

    /// Whether the model is a sequential recommender (next-item prediction on the sequential layout).
    pub fn is_sequential(self) -> bool {
        matches!(self, Self::Mmsr | Self::Sasrec | Self::Gru4rec)
    }

    /// Whether the model reads item features (through an extractor) at all.
    pub fn uses_features(self) -> bool {
        matches!(self, Self::Mf | Self::Bm3 | Self::Grcn | Self::Maml)
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ModelKind {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|m| m.name()).collect();
            Error::Invalid(format!("unknown model `{name}`: expected one of {}", names.join(", ")))
        })
    }
}

/// The item-feature extractor of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ExtractorKind {
    /// Ids only.
    None,
    /// One linear layer per modality (`[projection]`).
    Vanilla,
    /// SGFD with a preset (`sgfd`, `sgfd_l`, …), which becomes the base of `[sgfd]` under the config files
    /// and `--set`.
    Sgfd(mmkd_student_kd::SgfdPreset),
}

impl ExtractorKind {
    /// The name on the command line: `none`, `vanilla` or the preset's.
    pub fn name(&self) -> &str {
        match self {
            Self::None => "none",
            Self::Vanilla => "vanilla",
            Self::Sgfd(preset) => preset.name(),
        }
    }

    /// The `[sgfd]` base of an SGFD preset, `None` for the other extractors.
    pub fn sgfd_base(&self) -> Result<Option<mmkd_student_kd::SgfdConfig>> {
        match self {
            Self::Sgfd(preset) => Ok(Some(preset.config())),
            _ => Ok(None),
        }
    }
}

impl fmt::Display for ExtractorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ExtractorKind {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        Ok(match name {
            "none" => Self::None,
            "vanilla" => Self::Vanilla,
            _ => match name.parse::<mmkd_student_kd::SgfdPreset>() {
                Ok(preset) => Self::Sgfd(preset),
                Err(_) => {
                    return Err(Error::Invalid(format!(
                        "unknown --extractor `{name}`: expected none, vanilla or an SGFD preset ({})",
                        mmkd_student_kd::SgfdPreset::NAMES.join(", ")
                    )))
                }
            },
        })
    }
}

impl TryFrom<String> for ExtractorKind {
    type Error = Error;

    fn try_from(name: String) -> Result<Self> {
        name.parse()
    }
}

impl From<ExtractorKind> for String {
    fn from(kind: ExtractorKind) -> Self {
        kind.name().to_string()
    }
}

/// One training run: what `cargo xtask train` is asked to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    pub model: ModelKind,
    pub extractor: ExtractorKind,
    /// Data folder (SGFD, MMRec or sequential layout); its name picks `configs/dataset/<name>.toml`.
    pub data: PathBuf,
    /// A config file applied after the layered files (`--config`).
    pub config: Option<PathBuf>,
    /// `KEY=VALUE` overrides with dotted keys, in order (`--set`).
    #[serde(default)]
    pub set: Vec<String>,
    /// Maximum epochs (`train.epochs`).
    pub epochs: Option<usize>,
    /// Folder of a pretrained SGFD teacher: `sgfd.teacher_mode = "pretrained"`.
    pub teacher: Option<PathBuf>,
    /// Run seed (top-level `seed`).
    pub seed: Option<u64>,
    /// Sequential models: add KDSR's correlation distillation.
    #[serde(default)]
    pub kdsr: bool,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// Folder of `base.toml`, `dataset/` and `model/`.
    pub configs: PathBuf,
    /// Output folder of the run.
    pub out: PathBuf,
    /// Continue the run in `out` after its last finished epoch.
    #[serde(default)]
    pub resume: bool,
}

impl RunSpec {
    /// A spec of `model` with `extractor` on `data` with the defaults of the command line: no config file,
    /// no overrides, the configuration's seed and epochs, on the CPU, `configs` as the configs folder and
    /// no output folder.
    pub fn new(model: ModelKind, extractor: ExtractorKind, data: impl Into<PathBuf>) -> Self {
        Self {
            model,
            extractor,
            data: data.into(),
            config: None,
            set: Vec::new(),
            epochs: None,
            teacher: None,
            seed: None,
            kdsr: false,
            device: "cpu".into(),
            configs: PathBuf::from("configs"),
            out: PathBuf::new(),
            resume: false,
        }
    }

    /// The name of the data folder (its last path component), which picks `configs/dataset/<name>.toml`.
    pub fn data_name(&self) -> String {
        self.data.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extractor_names() {
        assert_eq!("vanilla".parse::<ExtractorKind>().unwrap(), ExtractorKind::Vanilla);
        assert_eq!("none".parse::<ExtractorKind>().unwrap(), ExtractorKind::None);
        assert_eq!("sgfd_l".parse::<ExtractorKind>().unwrap(), ExtractorKind::Sgfd(mmkd_student_kd::SgfdPreset::SgfdL));
        assert!("sgfd_x".parse::<ExtractorKind>().unwrap_err().to_string().contains("sgfd_l"));
        for name in mmkd_student_kd::names() {
            assert_eq!(name.parse::<ExtractorKind>().unwrap().name(), *name);
        }
    }

    #[test]
    fn model_names_round_trip() {
        for m in ModelKind::ALL {
            assert_eq!(m.name().parse::<ModelKind>().unwrap(), m);
            let text = serde_json::to_string(&m).unwrap();
            assert_eq!(text, format!("\"{}\"", m.name()));
        }
        assert!("mmf".parse::<ModelKind>().unwrap_err().to_string().contains("gru4rec"));
        assert!(ModelKind::Sasrec.is_sequential() && !ModelKind::Bm3.is_sequential());
        assert!(ModelKind::Maml.uses_features() && !ModelKind::Neumf.uses_features());
    }

    #[test]
    fn specs_round_trip_through_toml_and_check_the_extractor() {
        let mut spec =
            RunSpec::new(ModelKind::Grcn, ExtractorKind::Sgfd(mmkd_student_kd::SgfdPreset::SgfdF), "data/my office");
        spec.set = vec!["optim.lr=1e-2".into()];
        spec.seed = Some(3);
        let text = toml::to_string(&spec).unwrap();
        assert!(text.contains("extractor = \"sgfd_f\"") && text.contains("model = \"grcn\""), "{text}");
        assert_eq!(toml::from_str::<RunSpec>(&text).unwrap(), spec);
        let bad = text.replace("sgfd_f", "sgfd_x");
        assert!(toml::from_str::<RunSpec>(&bad).is_err());
    }
}
