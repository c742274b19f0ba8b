//! [`TeacherConfig`]: the teacher's architecture and label-loss switches (spec `sgfd.md` §12).

use mmkd_features::{Activation, LinearInit};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::losses::Reduction;
use crate::widths::TeacherDepth;

/// Architecture of T_m, C_m and the fusion layer, and the form of L_TCE / L_FCE.
/// Defaults are the PyTorch reference as run by GRCN (no extractor activation, L2-normalised outputs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TeacherConfig {
    /// Layer-width rule of T_m (spec switch `teacher_depth`; the reference's `decay_ration = 4`,
    /// `BM3/models/feature_extractor/TeacherStudentModel.py:15`).
    pub teacher_depth: TeacherDepth,
    /// Latent width d of every extractor (GRCN `--dim_C`, BM3 `embedding_size`, MAML `embed_dim`).
    pub out_dim: usize,
    /// Activation after the extractor's last layer (spec switch `extractor_act`; the reference's
    /// `is_pruning`: off in GRCN, LeakyReLU 0.01 in BM3, LeakyReLU 0.2 in MAML). The layers themselves are
    /// affine maps with no activation between them, as in the reference.
    pub extractor_act: Activation,
    /// Row-wise L2 normalisation of the extractor's output (spec switch `extractor_l2norm`; PyTorch
    /// `F.normalize`, on in GRCN/BM3, off in MAML).
    pub extractor_l2norm: bool,
    /// Parameter initialisation of every layer (PyTorch `nn.Linear` or Keras `Dense`).
    pub init: LinearInit,
    /// Whether the fusion layer and its classifier C_f exist and L_FCE is trained (spec switch
    /// `use_fusion`). Ignored, with a warning, when there is only one modality.
    pub use_fusion: bool,
    /// Activation of the fusion layer (spec switch `fusion_act`; `GRCN/feature_fusion/FeatureFusionModel.py:19-20`
    /// uses LeakyReLU 0.01 with `has_n=True`, the paper and the TensorFlow code ReLU).
    pub fusion_act: Activation,
    /// Order in which the modalities' teacher features are concatenated for fusion; empty = feature-store
    /// order. GRCN and MAML concatenate `[visual ; text]`, BM3 `[text ; visual]`.
    pub fusion_order: Vec<String>,
    /// L_TCE as the reference computes it: cross-entropy applied to the softmax *probabilities*, i.e. a
    /// double softmax (`GRCN/feature_extractor/FeatureExtractorModel.py:38`: `F.cross_entropy` of
    /// `softmax(logits)`; `MAML/feature_extractor/FeatureExtractorModel.py:43`:
    /// `softmax_cross_entropy_with_logits_v2` on probabilities). `false` = the paper's Eq. 4 (CE on logits).
    pub tce_on_probs: bool,
    /// One classifier for every modality (the TensorFlow reference's `category_classification` layer with
    /// `AUTO_REUSE`, `MAML/feature_extractor/FeatureExtractorModel.py:19`); `false` = one C_m per modality
    /// (PyTorch reference and paper).
    pub shared_classifier: bool,
    /// Width of C_m when it differs from the number of labels (the TensorFlow reference hard-codes 25,
    /// `MAML/feature_extractor/FeatureExtractorModel.py:10`;
    /// items whose label is ≥ the width get an all-zero one-hot row and contribute zero cross-entropy).
    /// `None` = the number of labels. C_f always has one output per label.
    pub classifier_width: Option<usize>,
    /// How per-row loss terms are reduced over the B' rows: `mean` (PyTorch reference) or `sum` (the
    /// TensorFlow reference sums its cross-entropies and leaves per-row vectors for the optimiser to sum,
    /// `MAML/feature_extractor/FeatureExtractorModel.py:23,44`).
    pub row_reduction: Reduction,
}

impl Default for TeacherConfig {
    fn default() -> Self {
        Self {
            teacher_depth: TeacherDepth::default(),
            out_dim: 128,
            extractor_act: Activation::Identity,
            extractor_l2norm: true,
            init: LinearInit::Torch,
            use_fusion: true,
            fusion_act: Activation::LeakyRelu(0.01),
            fusion_order: Vec::new(),
            tce_on_probs: true,
            shared_classifier: false,
            classifier_width: None,
            row_reduction: Reduction::Mean,
        }
    }
}

impl TeacherConfig {
    /// Checks values that serde cannot.
    pub fn validate(&self) -> Result<()> {
        if self.out_dim == 0 {
            return Err(Error::Config("out_dim must be positive".into()));
        }
        if self.classifier_width == Some(0) {
            return Err(Error::Config("classifier_width must be positive when given".into()));
        }
        match self.teacher_depth {
            TeacherDepth::Deep { ratio } if ratio < 2 => {
                Err(Error::Config(format!("teacher_depth: the shrink ratio must be at least 2, got {ratio}")))
            }
            TeacherDepth::Paper { delta } if !(delta.is_finite() && delta > 1.0) => {
                Err(Error::Config(format!("teacher_depth: δ must be a finite number above 1, got {delta}")))
            }
            _ => Ok(()),
        }
    }
}
