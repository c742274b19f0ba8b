//! KDSR's student side of correlation distillation (Hu et al., *Lightweight Modality Adaptation to
//! Sequential Recommendation via Correlation Supervision*, ECIR'24; spec `kdsr-mmsr.md` §4, §6, §7, §12).
//! Reference: HoldenHu/KDSR `model_corvector.py` (student heads and losses), `config/*.yaml` (weights, AT).
//!
//! - [`KdsrStudent`]: per modality the transformation g^m (holistic scores, eq. 2) and the code classifier
//!   head^m (dissected codes, eq. 4).
//! - Free losses: [`holistic_loss_code`] (the reference's masked Frobenius norm), [`holistic_loss_paper`]
//!   (eq. 3 as reconstructed: row softmax at τ, then squared error), [`dissected_loss`] (eq. 5).
//! - [`KdsrConfig`]: a named switch for every paper-vs-code difference of spec §12, code-faithful defaults;
//!   the loss weights as presets ([`KdsrConfig::preset`]); asynchronous training ([`AtConfig`]).
//!
//! The teacher's targets come from `mmkd_teacher::kdsr::KdsrTeacher::targets`.

use candle_core::{DType, Module, Tensor, D};
use candle_nn::{Init, Linear, VarBuilder};
use mmkd_teacher::kdsr::{normalize_rows, pair_scores, safe_sqrt, CodebookConfig, Quantiser, Scoring, TeacherTargets};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The ε added to every valid squared difference in the code-form holistic loss.
pub const HOL_EPS: f64 = 1e-8;

/// Form of the holistic loss (spec §4.1, switch `hol_loss`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HolForm {
    /// Reference `model_corvector.py`: per sequence the Frobenius norm (not squared) of the masked,
    /// τ-scaled difference, then the mean over sequences; no softmax (the comment mentions one that is
    /// never applied).
    #[default]
    Code,
    /// Paper eq. 3 as reconstructed \[RECON\]: softmax of each row at temperature τ (padding columns masked
    /// out), squared error per row, mean over the real rows of a sequence, mean over sequences.
    Paper,
}

/// Input of the code classifier (spec §4.2, switch `diff`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiffForm {
    /// Reference: |e_i − e_j| element-wise, so p_ij = p_ji like the symmetric teacher codes.
    #[default]
    Abs,
    /// Paper: the signed difference e_i − e_j.
    Signed,
}

/// Learning-rate warm-up of the modality tables e^v, e^t (spec §7, switch `at_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AtMode {
    /// \[PROPOSED\] The paper's linear ramp ρ + (1 − ρ)·min(e/E, 1).
    #[default]
    Linear,
    /// The reference's intent (`gamma`, `schedule`): 1/γ^(#milestones still ahead), i.e. 1/4 for epochs
    /// 0–4, 1/2 for 5–9, 1 from 10.
    Step,
    /// What the reference does: the slow rate 1/γ^|schedule| = 1/4 for every epoch.
    ConstantSlow,
    /// No asynchronous training ("w/o AT"): every parameter uses the base rate.
    Off,
}

/// Asynchronous training: the modality tables e^v, e^t learn at `lr_factor(epoch)` × the base rate; every
/// other parameter (ID table, backbone, KDSR heads) uses the base rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AtConfig {
    /// The form of the warm-up (reference `use_AT`: off in the shipped config, on in the logged run).
    pub mode: AtMode,
    /// ρ, the start fraction of the linear ramp.
    pub rho: f64,
    /// E, the epoch from which the linear ramp is at the base rate ("stop AT").
    pub epochs: usize,
    /// γ, the factor per milestone (reference `gamma`).
    pub gamma: f64,
    /// Milestone epochs (reference `schedule`).
    pub schedule: Vec<usize>,
}

impl Default for AtConfig {
    fn default() -> Self {
        Self { mode: AtMode::Linear, rho: 0.25, epochs: 10, gamma: 2.0, schedule: vec![5, 10] }
    }
}

impl AtConfig {
    /// Checks values that serde cannot.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.rho) {
            return Err(Error::Config(format!("at.rho must lie in [0, 1], got {}", self.rho)));
        }
        if !(self.gamma.is_finite() && self.gamma >= 1.0) {
            return Err(Error::Config(format!("at.gamma must be at least 1, got {}", self.gamma)));
        }
        Ok(())
    }

    /// The multiplier of the base learning rate for e^v and e^t at epoch `epoch` (0-based).
    pub fn lr_factor(&self, epoch: usize) -> f64 {
        match self.mode {
            AtMode::Linear if self.epochs == 0 => 1.0,
            AtMode::Linear => self.rho + (1.0 - self.rho) * (epoch as f64 / self.epochs as f64).min(1.0),
            AtMode::Step => {
                let ahead = self.schedule.iter().filter(|&&m| epoch < m).count();
                self.gamma.powi(-(ahead as i32))
            }
            AtMode::ConstantSlow => self.gamma.powi(-(self.schedule.len() as i32)),
            AtMode::Off => 1.0,
        }
    }

    /// Learning rates at `epoch` for (the modality tables e^v and e^t, every other parameter).
    pub fn learning_rates(&self, base_lr: f64, epoch: usize) -> (f64, f64) {
        (base_lr * self.lr_factor(epoch), base_lr)
    }
}

/// Names accepted by [`KdsrConfig::preset`].
pub const PRESETS: [&str; 3] = ["code_log", "paper", "paper_ml1m"];

/// KDSR's correlation distillation. Defaults are code-faithful (the \[LOG\] run behind Table 2); every
/// paper-vs-code difference of spec §12 is a named switch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KdsrConfig {
    /// The scoring function f of teacher and student (`cos`, `dot`, `euc`, `man`).
    pub scoring: Scoring,
    /// D, the number of sub-vectors of the correlation vectors (8).
    pub n_sub: usize,
    /// K, the number of correlation codes (50).
    pub n_codes: usize,
    /// τ, the soft-match temperature (reference `tau`, 1.5; 1 = the "w/o τ" hard match).
    pub tau: f64,
    /// Form of the holistic loss.
    pub hol_loss: HolForm,
    /// Affine layers d → d (bias, no activation) in g^m: 2 in the reference, 1 in the paper.
    pub g_layers: usize,
    /// Input of the code classifier.
    pub diff: DiffForm,
    /// Weight of the visual holistic loss (reference `v_s`).
    pub w_hol_v: f64,
    /// Weight of the visual dissected loss (reference `t_s`: the code mis-wires it, spec §6).
    pub w_dis_v: f64,
    /// Weight of the text holistic loss (reference `v_c`, mis-wired).
    pub w_hol_t: f64,
    /// Weight of the text dissected loss (reference `t_c`).
    pub w_dis_t: f64,
    /// Train the holistic losses (false = Table 3 "w/o holistic").
    pub use_holistic: bool,
    /// Train the dissected losses (false = Table 3 "w/o dissected").
    pub use_dissected: bool,
    /// How the teacher's codebooks are learned.
    pub quantiser: Quantiser,
    /// Codebook: pairs sampled for training when (n+1)² is larger.
    pub codebook_sample_pairs: usize,
    /// Codebook: vectors per mini-batch step (scikit-learn `batch_size`).
    pub codebook_batch: usize,
    /// Codebook: k-means++ initialisations tried (scikit-learn `n_init`).
    pub codebook_n_init: usize,
    /// Codebook: passes over the sample at most (scikit-learn `max_iter`).
    pub codebook_max_iter: usize,
    /// Codebook: steps without improvement before stopping (scikit-learn `max_no_improvement`).
    pub codebook_patience: usize,
    /// Asynchronous training of e^v, e^t.
    pub at: AtConfig,
}

impl Default for KdsrConfig {
    fn default() -> Self {
        let cb = CodebookConfig::default();
        let [w_hol_v, w_dis_v, w_hol_t, w_dis_t] = weights_of("code_log").unwrap_or([4.0, 4.0, 0.5, 0.5]);
        Self {
            scoring: Scoring::Cos,
            n_sub: 8,
            n_codes: 50,
            tau: 1.5,
            hol_loss: HolForm::Code,
            g_layers: 2,
            diff: DiffForm::Abs,
            w_hol_v,
            w_dis_v,
            w_hol_t,
            w_dis_t,
            use_holistic: true,
            use_dissected: true,
            quantiser: Quantiser::Kmeans,
            codebook_sample_pairs: cb.sample_pairs,
            codebook_batch: cb.batch,
            codebook_n_init: cb.n_init,
            codebook_max_iter: cb.max_iter,
            codebook_patience: cb.patience,
            at: AtConfig::default(),
        }
    }
}

/// (w_hol_v, w_dis_v, w_hol_t, w_dis_t) of a preset.
fn weights_of(name: &str) -> Option<[f64; 4]> {
    match name {
        // The effective weights of the logged run: v_s=4, t_s=4 on the visual terms, v_c=0.5, t_c=0.5 on
        // the text terms (spec §6).
        "code_log" => Some([4.0, 4.0, 0.5, 0.5]),
        // Paper eq. 7 on Amazon: (λ1, λ2) = (1, 0.5), λ1 on both holistic terms, λ2 on both dissected.
        "paper" => Some([1.0, 0.5, 1.0, 0.5]),
        // Paper eq. 7 on ML-1M: (λ1, λ2) = (0.5, 0.1).
        "paper_ml1m" => Some([0.5, 0.1, 0.5, 0.1]),
        _ => None,
    }
}

impl KdsrConfig {
    /// The default configuration with the loss weights of preset `name` (one of [`PRESETS`]):
    /// `code_log` = 4/4/0.5/0.5 (the default), `paper` = 1/0.5/1/0.5, `paper_ml1m` = 0.5/0.1/0.5/0.1,
    /// in the order (w_hol_v, w_dis_v, w_hol_t, w_dis_t).
    pub fn preset(name: &str) -> Result<Self> {
        Self::default().with_weights(name)
    }

    /// This configuration with the loss weights of preset `name`; the other fields are kept.
    pub fn with_weights(self, name: &str) -> Result<Self> {
        let [w_hol_v, w_dis_v, w_hol_t, w_dis_t] = weights_of(name).ok_or_else(|| {
            Error::Config(format!("unknown KDSR weights preset `{name}`, expected one of {PRESETS:?}"))
        })?;
        Ok(Self { w_hol_v, w_dis_v, w_hol_t, w_dis_t, ..self })
    }

    /// (w_hol_v, w_dis_v, w_hol_t, w_dis_t).
    pub fn weights(&self) -> [f64; 4] {
        [self.w_hol_v, self.w_dis_v, self.w_hol_t, self.w_dis_t]
    }

    /// The teacher's codebook settings implied by this configuration.
    pub fn codebook_config(&self) -> CodebookConfig {
        CodebookConfig {
            quantiser: self.quantiser,
            n_codes: self.n_codes,
            n_sub: self.n_sub,
            scoring: self.scoring,
            sample_pairs: self.codebook_sample_pairs,
            batch: self.codebook_batch,
            n_init: self.codebook_n_init,
            max_iter: self.codebook_max_iter,
            patience: self.codebook_patience,
            ..CodebookConfig::default()
        }
    }

    /// Checks values that serde cannot.
    pub fn validate(&self) -> Result<()> {
        if self.n_sub == 0 || self.n_codes == 0 || self.g_layers == 0 {
            return Err(Error::Config(format!(
                "KDSR: n_sub, n_codes and g_layers must be positive, got {}, {}, {}",
                self.n_sub, self.n_codes, self.g_layers
            )));
        }
        if !(self.tau.is_finite() && self.tau > 0.0) {
            return Err(Error::Config(format!("KDSR: tau must be positive, got {}", self.tau)));
        }
        if let Some(w) = self.weights().iter().find(|w| !(w.is_finite() && **w >= 0.0)) {
            return Err(Error::Config(format!("KDSR: loss weights must be finite and non-negative, got {w}")));
        }
        self.at.validate()?;
        self.codebook_config().validate()?;
        Ok(())
    }
}

/// A modality of KDSR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modality {
    /// Image (e^v, z^v).
    Visual,
    /// Text (e^t, z^t).
    Text,
}

/// The per-batch KDSR losses, unweighted, and their weighted sum. A term is `None` when switched off.
#[derive(Debug, Clone)]
pub struct KdsrLosses {
    /// L^v_hol.
    pub hol_v: Option<Tensor>,
    /// L^v_dis.
    pub dis_v: Option<Tensor>,
    /// L^t_hol.
    pub hol_t: Option<Tensor>,
    /// L^t_dis.
    pub dis_t: Option<Tensor>,
    /// w_hol_v·L^v_hol + w_dis_v·L^v_dis + w_hol_t·L^t_hol + w_dis_t·L^t_dis over the present terms
    /// (0 when none is).
    pub total: Tensor,
}

/// g^m and head^m of one modality.
#[derive(Debug, Clone)]
struct ModalityStudent {
    g: Vec<Linear>,
    fc1: Linear,
    fc2: Linear,
}

/// Linear(in → out) with the reference's initialisation (spec §5.1): W ~ N(0, 0.02), b = 0.
fn normal_linear(vb: VarBuilder, in_dim: usize, out_dim: usize) -> Result<Linear> {
    let weight = vb.get_with_hints((out_dim, in_dim), "weight", Init::Randn { mean: 0.0, stdev: 0.02 })?;
    let bias = vb.get_with_hints(out_dim, "bias", Init::Const(0.0))?;
    Ok(Linear::new(weight, Some(bias)))
}

impl ModalityStudent {
    fn new(vb: VarBuilder, cfg: &KdsrConfig, d: usize) -> Result<Self> {
        let g = (0..cfg.g_layers).map(|l| normal_linear(vb.pp("g").pp(l), d, d)).collect::<Result<Vec<_>>>()?;
        let fc1 = normal_linear(vb.pp("head").pp(0), d, d)?;
        let fc2 = normal_linear(vb.pp("head").pp(1), d, cfg.n_codes)?;
        Ok(Self { g, fc1, fc2 })
    }

    fn transform(&self, e: &Tensor) -> Result<Tensor> {
        let mut h = e.clone();
        for layer in &self.g {
            h = layer.forward(&h)?;
        }
        Ok(h)
    }

    fn head(&self, delta: &Tensor) -> Result<Tensor> {
        Ok(self.fc2.forward(&self.fc1.forward(delta)?.relu()?)?)
    }
}

/// KDSR's student heads for both modalities. Parameter keys (under the given `vb`):
/// `{visual,text}.g.{0,1}.{weight,bias}` (d, d) and `{visual,text}.head.0.*` (d, d), `.head.1.*` (K, d).
#[derive(Debug, Clone)]
pub struct KdsrStudent {
    visual: ModalityStudent,
    text: ModalityStudent,
    cfg: KdsrConfig,
    d: usize,
}

impl KdsrStudent {
    /// Heads for modality embeddings of width `d` (128), which must be a multiple of `cfg.n_sub`.
    pub fn new(vb: VarBuilder, cfg: &KdsrConfig, d: usize) -> Result<Self> {
        cfg.validate()?;
        if d == 0 || d % cfg.n_sub != 0 {
            return Err(Error::Config(format!("KDSR: n_sub = {} must divide the embedding width {d}", cfg.n_sub)));
        }
        let visual = ModalityStudent::new(vb.pp("visual"), cfg, d)?;
        let text = ModalityStudent::new(vb.pp("text"), cfg, d)?;
        Ok(Self { visual, text, cfg: cfg.clone(), d })
    }

    /// The configuration the heads were built with.
    pub fn config(&self) -> &KdsrConfig {
        &self.cfg
    }

    fn part(&self, m: Modality) -> &ModalityStudent {
        match m {
            Modality::Visual => &self.visual,
            Modality::Text => &self.text,
        }
    }

    fn check_rows(&self, what: &'static str, e: &Tensor) -> Result<(usize, usize)> {
        match e.dims() {
            &[b, q, d] if d == self.d => Ok((b, q)),
            other => Err(Error::shape(what, format!("(b, q, {})", self.d), other)),
        }
    }

    /// g^m(e) for rows `e` (..., d).
    pub fn transform(&self, m: Modality, e: &Tensor) -> Result<Tensor> {
        self.part(m).transform(e)
    }

    /// The student's holistic scores ŝ_ij = f(g^m(e_i), g^m(e_j)) of `e` (b, q, d) → (b, q, q) (eq. 2).
    pub fn pred_scores(&self, m: Modality, e: &Tensor) -> Result<Tensor> {
        self.check_rows("KDSR student rows", e)?;
        Ok(pair_scores(&self.part(m).transform(e)?, self.cfg.scoring)?)
    }

    /// The code logits of every pair, head^m(Δ_ij) with Δ_ij = |e_i − e_j| (or e_i − e_j), for `e`
    /// (b, q, d) → (b, q, q, K) (eq. 4 before the softmax). Materialises (b, q, q, d); [`Self::losses`]
    /// evaluates only the valid pairs.
    pub fn pair_logits(&self, m: Modality, e: &Tensor) -> Result<Tensor> {
        self.check_rows("KDSR student rows", e)?;
        let delta = e.unsqueeze(2)?.broadcast_sub(&e.unsqueeze(1)?)?; // (b, q, q, d)
        let delta = match self.cfg.diff {
            DiffForm::Abs => delta.abs()?,
            DiffForm::Signed => delta,
        };
        self.part(m).head(&delta)
    }

    /// The KDSR losses of one batch: `e_v`, `e_t` (b, q, d) are the modality-embedding rows of the
    /// session-graph nodes, `node_mask` (b, q) is 1 for a real node and 0 for padding, `targets` are the
    /// teacher's for the same nodes. The pair mask is node_mask_i·node_mask_j. The holistic terms use
    /// g^m(e^m), the dissected terms the raw e^m, computed on the valid pairs only.
    pub fn losses(
        &self,
        e_v: &Tensor,
        e_t: &Tensor,
        node_mask: &Tensor,
        targets: &TeacherTargets,
    ) -> Result<KdsrLosses> {
        let _span = tracing::debug_span!("kdsr_losses").entered();
        let (b, q) = self.check_rows("KDSR visual rows e_v", e_v)?;
        if e_t.dims() != e_v.dims() {
            return Err(Error::shape("KDSR text rows e_t", format!("{:?} like e_v", e_v.dims()), e_t.dims()));
        }
        if node_mask.dims() != [b, q] {
            return Err(Error::shape("KDSR node mask", format!("({b}, {q})"), node_mask.dims()));
        }
        for (what, t) in [
            ("teacher scores_v", &targets.scores_v),
            ("teacher scores_t", &targets.scores_t),
            ("teacher codes_v", &targets.codes_v),
            ("teacher codes_t", &targets.codes_t),
        ] {
            if t.dims() != [b, q, q] {
                return Err(Error::shape(what, format!("({b}, {q}, {q})"), t.dims()));
            }
        }
        let mask_host = node_mask.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        if mask_host.iter().flatten().any(|&v| v != 0.0 && v != 1.0) {
            return Err(Error::Mismatch("KDSR node mask: every entry must be 0 or 1".into()));
        }
        let mask = node_mask.to_dtype(e_v.dtype())?.to_device(e_v.device())?;
        let pairs = ValidPairs::new(&mask_host, e_v.device())?;

        let mut terms = [None, None, None, None];
        for (slot, m, e, scores, codes) in [
            (0, Modality::Visual, e_v, &targets.scores_v, &targets.codes_v),
            (2, Modality::Text, e_t, &targets.scores_t, &targets.codes_t),
        ] {
            if self.cfg.use_holistic {
                let teacher = scores.to_dtype(e.dtype())?.to_device(e.device())?;
                terms[slot] = Some(match self.cfg.hol_loss {
                    HolForm::Code => self.holistic_code_on_pairs(m, e, &teacher, &pairs)?,
                    HolForm::Paper => {
                        let pair_mask = mask.unsqueeze(2)?.broadcast_mul(&mask.unsqueeze(1)?)?; // (b, q, q)
                        holistic_loss_paper(&self.pred_scores(m, e)?, &teacher, &pair_mask, self.cfg.tau)?
                    }
                });
            }
            if self.cfg.use_dissected {
                terms[slot + 1] = Some(self.dissected_on_pairs(m, e, codes, &pairs)?);
            }
        }
        let mut total = Tensor::zeros((), e_v.dtype(), e_v.device())?;
        for (term, w) in terms.iter().zip(self.cfg.weights()) {
            if let Some(t) = term {
                total = (total + (t * w)?)?;
            }
        }
        let [hol_v, dis_v, hol_t, dis_t] = terms;
        Ok(KdsrLosses { hol_v, dis_v, hol_t, dis_t, total })
    }

    /// [`holistic_loss_code`] evaluated on the valid pairs only. g^m runs on the real rows, ŝ on the
    /// unordered pairs (it is symmetric); an off-diagonal pair adds the terms of both orders, (i, j) and
    /// (j, i), each against its own teacher score, so the value equals the dense form's.
    fn holistic_code_on_pairs(&self, m: Modality, e: &Tensor, teacher: &Tensor, pairs: &ValidPairs) -> Result<Tensor> {
        let (b, q) = (e.dim(0)?, e.dim(1)?);
        if pairs.n_upper == 0 {
            return Ok(Tensor::zeros((), e.dtype(), e.device())?);
        }
        let rows = e.reshape((b * q, self.d))?.index_select(&pairs.real, 0)?; // (R, d)
        let h = self.part(m).transform(&rows)?;
        let pred = listed_pair_scores(&h, &pairs.upper_left_real, &pairs.upper_right_real, self.cfg.scoring)?; // (P')
        let teacher = teacher.flatten_all()?;
        let inv_tau = 1.0 / self.cfg.tau;
        let term = |flat: &Tensor| -> Result<Tensor> {
            let delta = ((&pred - teacher.index_select(flat, 0)?)? * inv_tau)?;
            Ok((delta.sqr()? + HOL_EPS)?)
        };
        let per_pair =
            (term(&pairs.upper_flat)? + (term(&pairs.upper_flat_t)? * &pairs.off_diagonal.to_dtype(e.dtype())?)?)?; // (P')
        let per_seq = Tensor::zeros(b, e.dtype(), e.device())?.index_add(&pairs.upper_seq, &per_pair, 0)?; // (b,)
        Ok(safe_sqrt(&per_seq)?.mean_all()?)
    }

    fn dissected_on_pairs(&self, m: Modality, e: &Tensor, codes: &Tensor, pairs: &ValidPairs) -> Result<Tensor> {
        if pairs.count == 0 {
            return Ok(Tensor::zeros((), e.dtype(), e.device())?);
        }
        let codes = codes.to_device(e.device())?.flatten_all()?;
        check_codes(&codes, self.cfg.n_codes)?;
        let flat = e.reshape((e.dim(0)? * e.dim(1)?, self.d))?; // (b·q, d)
        let nll_sum = match self.cfg.diff {
            // |e_i − e_j| is symmetric: the head runs once per unordered pair (i ≤ j); an off-diagonal pair's
            // log-probabilities are read at both orders' codes, c_ij and c_ji. Same value and gradient as
            // the head over every ordered pair, at half the cost.
            DiffForm::Abs => {
                let rows = flat.index_select(&pairs.real, 0)?; // (R, d)
                let delta = (rows.index_select(&pairs.upper_left_real, 0)?
                    - rows.index_select(&pairs.upper_right_real, 0)?)?
                .abs()?; // (P', d)
                let logits = self.part(m).head(&delta)?; // (P', K)
                let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
                let pick = |flat_idx: &Tensor| -> Result<Tensor> {
                    let c = codes.index_select(flat_idx, 0)?.unsqueeze(1)?.contiguous()?;
                    Ok(logp.gather(&c, 1)?.squeeze(1)?)
                };
                let off = pairs.off_diagonal.to_dtype(e.dtype())?;
                (pick(&pairs.upper_flat)?.sum_all()? + (pick(&pairs.upper_flat_t)? * off)?.sum_all()?)?
            }
            DiffForm::Signed => {
                let delta = (flat.index_select(&pairs.left, 0)? - flat.index_select(&pairs.right, 0)?)?; // (P, d)
                let logits = self.part(m).head(&delta)?; // (P, K)
                picked_log_probs(&logits, &codes.index_select(&pairs.flat, 0)?)?.sum_all()?
            }
        };
        Ok((nll_sum.neg()? / pairs.count as f64)?)
    }
}

/// The valid (both real) pairs of a batch. Ordered pairs: row indices into (b·q, d) and flat indices into
/// (b·q·q). Unordered pairs (i ≤ j): row indices into the real rows, the flat indices
/// of (i, j) and (j, i), the sequence, and 1 where i ≠ j.
struct ValidPairs {
    left: Tensor,
    right: Tensor,
    flat: Tensor,
    /// P, the number of ordered pairs.
    count: usize,
    /// Row indices (into (b·q, d)) of the real nodes. (R,)
    real: Tensor,
    upper_left_real: Tensor,
    upper_right_real: Tensor,
    upper_flat: Tensor,
    upper_flat_t: Tensor,
    upper_seq: Tensor,
    off_diagonal: Tensor,
    /// P', the number of unordered pairs.
    n_upper: usize,
}

impl ValidPairs {
    fn new(mask: &[Vec<f32>], device: &candle_core::Device) -> Result<Self> {
        let (mut left, mut right, mut flat) = (Vec::new(), Vec::new(), Vec::new());
        let mut real_rows: Vec<u32> = Vec::new();
        let (mut ulr, mut urr) = (Vec::new(), Vec::new());
        let (mut uf, mut uft, mut useq, mut off) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (s, row) in mask.iter().enumerate() {
            let q = row.len();
            let real: Vec<usize> = (0..q).filter(|&i| row[i] > 0.0).collect();
            let first = real_rows.len();
            real_rows.extend(real.iter().map(|&i| (s * q + i) as u32));
            for (a, &i) in real.iter().enumerate() {
                for (c, &j) in real.iter().enumerate().skip(a) {
                    ulr.push((first + a) as u32);
                    urr.push((first + c) as u32);
                    uf.push(((s * q + i) * q + j) as u32);
                    uft.push(((s * q + j) * q + i) as u32);
                    useq.push(s as u32);
                    off.push(if a == c { 0f32 } else { 1.0 });
                }
                for &j in &real {
                    left.push((s * q + i) as u32);
                    right.push((s * q + j) as u32);
                    flat.push(((s * q + i) * q + j) as u32);
                }
            }
        }
        let (count, n_upper, n_real) = (left.len(), ulr.len(), real_rows.len());
        let t = |v: Vec<u32>, n: usize| Tensor::from_vec(v, n, device);
        Ok(Self {
            left: t(left, count)?,
            right: t(right, count)?,
            flat: t(flat, count)?,
            count,
            real: t(real_rows, n_real)?,
            upper_left_real: t(ulr, n_upper)?,
            upper_right_real: t(urr, n_upper)?,
            upper_flat: t(uf, n_upper)?,
            upper_flat_t: t(uft, n_upper)?,
            upper_seq: t(useq, n_upper)?,
            off_diagonal: Tensor::from_vec(off, n_upper, device)?,
            n_upper,
        })
    }
}

/// f between the rows `left[p]` and `right[p]` of `a` (R, d) → (P,): the listed entries of
/// [`pair_scores`] (a zero row gives cos 0). Differentiable.
fn listed_pair_scores(a: &Tensor, left: &Tensor, right: &Tensor, f: Scoring) -> Result<Tensor> {
    let a = if f == Scoring::Cos { normalize_rows(a)? } else { a.clone() };
    let (x, y) = (a.index_select(left, 0)?, a.index_select(right, 0)?);
    Ok(match f {
        Scoring::Cos | Scoring::Dot => (x * y)?.sum(D::Minus1)?,
        Scoring::Euc => safe_sqrt(&(x - y)?.sqr()?.sum(D::Minus1)?)?,
        Scoring::Man => (x - y)?.abs()?.sum(D::Minus1)?,
    })
}

fn check_codes(codes: &Tensor, n_codes: usize) -> Result<()> {
    if codes.dtype() != DType::U32 {
        return Err(Error::shape("teacher codes dtype", "u32", codes.dtype()));
    }
    if codes.elem_count() > 0 {
        let max = codes.flatten_all()?.max(0)?.to_scalar::<u32>()?;
        if max as usize >= n_codes {
            return Err(Error::Mismatch(format!("teacher code {max} out of range for K = {n_codes} codes")));
        }
    }
    Ok(())
}

/// log softmax(logits)[code] along the last axis: logits (..., K), codes u32 (...) → (...).
fn picked_log_probs(logits: &Tensor, codes: &Tensor) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    Ok(logp.gather(&codes.unsqueeze(D::Minus1)?.contiguous()?, D::Minus1)?.squeeze(D::Minus1)?)
}

fn check_pairs(what: &'static str, pred: &Tensor, teacher: &Tensor, pair_mask: &Tensor) -> Result<(usize, usize)> {
    let (b, q, q2) = pred.dims3().map_err(|_| Error::shape(what, "pred (b, q, q)", pred.dims()))?;
    if q != q2 {
        return Err(Error::shape(what, "pred (b, q, q)", pred.dims()));
    }
    if teacher.dims() != pred.dims() || pair_mask.dims() != pred.dims() {
        return Err(Error::shape(
            what,
            format!("teacher and pair mask shaped like pred {:?}", pred.dims()),
            (teacher.dims(), pair_mask.dims()),
        ));
    }
    Ok((b, q))
}

fn check_tau(tau: f64) -> Result<()> {
    if tau.is_finite() && tau > 0.0 {
        Ok(())
    } else {
        Err(Error::Config(format!("tau must be positive, got {tau}")))
    }
}

/// Code-form holistic loss (reference `model_corvector.py`): with δ = (M⊙ŝ − M⊙s)/τ,
/// (1/b) Σ_sequences √(Σ_ij M_ij (δ_ij² + 10⁻⁸)). `pred` ŝ, `teacher` s, `pair_mask` M: (b, q, q).
/// A sequence without a valid pair contributes 0 (with zero gradient).
pub fn holistic_loss_code(pred: &Tensor, teacher: &Tensor, pair_mask: &Tensor, tau: f64) -> Result<Tensor> {
    check_pairs("holistic loss (code form)", pred, teacher, pair_mask)?;
    check_tau(tau)?;
    let m = pair_mask.to_dtype(pred.dtype())?;
    let teacher = teacher.to_dtype(pred.dtype())?;
    let delta = ((pred * &m)? - (teacher * &m)?)?.affine(1.0 / tau, 0.0)?; // (b, q, q)
    let sq = (m * (delta.sqr()? + HOL_EPS)?)?.sum(2)?.sum(1)?; // (b,)
    Ok(safe_sqrt(&sq)?.mean_all()?)
}

/// Paper-form holistic loss (eq. 3, \[RECON\]): per real row i, ‖softmax_j(s_ij/τ) − softmax_j(ŝ_ij/τ)‖²
/// with the softmax over the real columns j only; mean over the real rows of each sequence, then over the
/// b sequences. `pred` ŝ, `teacher` s, `pair_mask` M: (b, q, q); a row is real when any M_ij > 0.
pub fn holistic_loss_paper(pred: &Tensor, teacher: &Tensor, pair_mask: &Tensor, tau: f64) -> Result<Tensor> {
    check_pairs("holistic loss (paper form)", pred, teacher, pair_mask)?;
    check_tau(tau)?;
    let valid = pair_mask.gt(0.0)?; // (b, q, q) u8
    let floor = Tensor::full(-1e30f64, pred.shape(), pred.device())?.to_dtype(pred.dtype())?;
    let masked_softmax = |x: &Tensor| -> Result<Tensor> {
        let logits = valid.where_cond(&x.affine(1.0 / tau, 0.0)?, &floor)?;
        Ok(candle_nn::ops::softmax(&logits, D::Minus1)?)
    };
    let p_s = masked_softmax(pred)?;
    let p_t = masked_softmax(&teacher.to_dtype(pred.dtype())?)?;
    let row_err = (p_t - p_s)?.sqr()?.sum(D::Minus1)?; // (b, q)
    let rows = valid.to_dtype(pred.dtype())?.max(D::Minus1)?; // (b, q): 1 for a real row.
    let per_seq = (row_err * &rows)?.sum(1)?.broadcast_div(&rows.sum(1)?.clamp(1.0, f64::INFINITY)?)?; // (b,)
    Ok(per_seq.mean_all()?)
}

/// Dissected loss (eq. 5): cross-entropy of the code logits `logits` (b, q, q, K) against the teacher's
/// codes `codes` u32 (b, q, q), averaged over all valid pairs of the batch (flattened, not per sequence);
/// `pair_mask` (b, q, q). 0 when no pair is valid.
pub fn dissected_loss(logits: &Tensor, codes: &Tensor, pair_mask: &Tensor) -> Result<Tensor> {
    let (b, q, q2, k) = logits.dims4().map_err(|_| Error::shape("dissected logits", "(b, q, q, K)", logits.dims()))?;
    if q != q2 || codes.dims() != [b, q, q] || pair_mask.dims() != [b, q, q] {
        return Err(Error::shape(
            "dissected codes and pair mask",
            format!("({b}, {q}, {q}) for logits {:?}", logits.dims()),
            (codes.dims(), pair_mask.dims()),
        ));
    }
    check_codes(codes, k)?;
    let m = pair_mask.to_dtype(logits.dtype())?;
    let count = m.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    if count == 0.0 {
        return Ok(Tensor::zeros((), logits.dtype(), logits.device())?);
    }
    let nll = picked_log_probs(logits, codes)?.neg()?; // (b, q, q)
    Ok(((nll * m)?.sum_all()? / count)?)
}
