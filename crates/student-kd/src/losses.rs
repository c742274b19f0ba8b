//! Distillation losses of SGFD (spec `sgfd.md` §7–8): L_LD between the teacher's and the student's tempered
//! class probabilities and L_FD between their features, each in the paper's form and the references' forms.
//! Every function handles one modality; [`combine`] joins the modalities the way each form does, and the
//! weight λ1 is applied by the caller.

use candle_core::Tensor;
use mmkd_teacher::losses::{average, reduce_rows, total, Reduction};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Form of L_LD (spec switch `ld_form`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LdForm {
    /// PyTorch reference: `mean |P_t − P_s|` over the b·C elements (`F.l1_loss`,
    /// `GRCN/feature_extractor/FeatureExtractorModel.py:41`), averaged over modalities.
    #[default]
    L1Mean,
    /// Paper Eq. 10: `‖P_t − P_s‖₂²` per row (summed over classes), rows reduced, **summed** over modalities.
    SqL2Sum,
    /// TensorFlow reference: per-row mean over the classifier's width of `(P_t − P_s)²`, rows reduced,
    /// averaged over modalities (`MAML/feature_extractor/FeatureExtractorModel.py:21-23,47`).
    MsePerRow,
}

/// Form of L_FD (spec switch `fd_form`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FdForm {
    /// PyTorch reference (`F.mse_loss`, `GRCN/feature_extractor/FeatureExtractorModel.py:42`) and TensorFlow
    /// (per-row mean over d, `MAML/feature_extractor/FeatureExtractorModel.py:48`): `mean (f_s − f_t)²` over
    /// the d columns of each row, rows reduced, averaged over modalities.
    #[default]
    MseMean,
    /// Paper Eq. 11: `‖f_t − f_s‖₂²` per row, rows reduced, **summed** over modalities.
    SqL2Sum,
}

impl LdForm {
    /// Whether the per-modality terms are summed (paper) rather than averaged (references).
    pub fn sums_modalities(self) -> bool {
        matches!(self, Self::SqL2Sum)
    }
}

impl FdForm {
    /// Whether the per-modality terms are summed (paper) rather than averaged (references).
    pub fn sums_modalities(self) -> bool {
        matches!(self, Self::SqL2Sum)
    }
}

fn check_pair(what: &'static str, teacher: &Tensor, student: &Tensor) -> Result<()> {
    if teacher.rank() != 2 || teacher.dims() != student.dims() {
        return Err(Error::shape(
            what,
            format!("two (b, k) tensors of one shape, teacher {:?}", teacher.dims()),
            student.dims(),
        ));
    }
    Ok(())
}

/// Per-row L_LD `(b,)` of tempered probabilities `p_teacher`, `p_student` `(b, C)`.
pub fn ld_rows(p_teacher: &Tensor, p_student: &Tensor, form: LdForm) -> Result<Tensor> {
    check_pair("L_LD probabilities", p_teacher, p_student)?;
    let diff = (p_teacher - p_student)?; // (b, C)
    Ok(match form {
        LdForm::L1Mean => diff.abs()?.mean(1)?,
        LdForm::SqL2Sum => diff.sqr()?.sum(1)?,
        LdForm::MsePerRow => diff.sqr()?.mean(1)?,
    })
}

/// L_LD of one modality: `p_teacher`, `p_student` `(b, C)` (softmax at temperature τ) → scalar.
pub fn ld(p_teacher: &Tensor, p_student: &Tensor, form: LdForm, reduction: Reduction) -> Result<Tensor> {
    Ok(reduce_rows(&ld_rows(p_teacher, p_student, form)?, reduction)?)
}

/// Per-row L_FD `(b,)` of features `f_teacher`, `f_student` `(b, d)`.
pub fn fd_rows(f_teacher: &Tensor, f_student: &Tensor, form: FdForm) -> Result<Tensor> {
    check_pair("L_FD features", f_teacher, f_student)?;
    let sq = (f_student - f_teacher)?.sqr()?; // (b, d)
    Ok(match form {
        FdForm::MseMean => sq.mean(1)?,
        FdForm::SqL2Sum => sq.sum(1)?,
    })
}

/// L_FD of one modality: `f_teacher`, `f_student` `(b, d)` → scalar.
pub fn fd(f_teacher: &Tensor, f_student: &Tensor, form: FdForm, reduction: Reduction) -> Result<Tensor> {
    Ok(reduce_rows(&fd_rows(f_teacher, f_student, form)?, reduction)?)
}

/// Joins per-modality scalar terms: their sum when `sum`, else their mean; an error when `terms` is empty.
pub fn combine(terms: &[Tensor], sum: bool) -> Result<Tensor> {
    Ok(if sum { total(terms)? } else { average(terms)? })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, D};

    use mmkd_features::testing::grad_check;

    fn t2(v: &[[f64; 3]; 2]) -> Tensor {
        Tensor::new(v, &Device::Cpu).unwrap()
    }

    fn close(got: &Tensor, want: f64) {
        let got = got.to_scalar::<f64>().unwrap();
        assert!((got - want).abs() < 1e-12, "got {got}, want {want}");
    }

    fn probs() -> (Tensor, Tensor) {
        (t2(&[[0.7, 0.2, 0.1], [0.3, 0.3, 0.4]]), t2(&[[0.5, 0.3, 0.2], [0.25, 0.45, 0.3]]))
    }

    #[test]
    fn ld_forms_by_hand() {
        let (pt, ps) = probs();
        // P_t − P_s = [[0.2, −0.1, −0.1], [0.05, −0.15, 0.1]].
        // l1_mean: (0.2 + 0.1 + 0.1 + 0.05 + 0.15 + 0.1) / 6 = 0.7 / 6.
        close(&ld(&pt, &ps, LdForm::L1Mean, Reduction::Mean).unwrap(), 0.7 / 6.0);
        // sq_l2_sum: rows 0.04 + 0.01 + 0.01 = 0.06 and 0.0025 + 0.0225 + 0.01 = 0.035; mean 0.0475, sum 0.095.
        close(&ld(&pt, &ps, LdForm::SqL2Sum, Reduction::Mean).unwrap(), 0.0475);
        close(&ld(&pt, &ps, LdForm::SqL2Sum, Reduction::Sum).unwrap(), 0.095);
        // mse_per_row: rows 0.06 / 3 = 0.02 and 0.035 / 3 = 0.011667; mean 0.095 / 6 = 0.0158333.
        let rows = ld_rows(&pt, &ps, LdForm::MsePerRow).unwrap().to_vec1::<f64>().unwrap();
        assert!((rows[0] - 0.02).abs() < 1e-12 && (rows[1] - 0.035 / 3.0).abs() < 1e-12);
        close(&ld(&pt, &ps, LdForm::MsePerRow, Reduction::Mean).unwrap(), 0.095 / 6.0);
        // Symmetric in its arguments, zero on equal inputs.
        close(&ld(&ps, &pt, LdForm::L1Mean, Reduction::Mean).unwrap(), 0.7 / 6.0);
        close(&ld(&pt, &pt, LdForm::SqL2Sum, Reduction::Mean).unwrap(), 0.0);
    }

    #[test]
    fn fd_forms_by_hand() {
        let ft = Tensor::new(&[[0.6f64, 0.8], [1.0, 0.0]], &Device::Cpu).unwrap();
        let fs = Tensor::new(&[[0.8f64, 0.6], [0.6, 0.8]], &Device::Cpu).unwrap();
        // f_s − f_t = [[0.2, −0.2], [−0.4, 0.8]]; squared rows 0.08 and 0.16 + 0.64 = 0.8.
        // mse_mean: (0.08 + 0.8) / 4 = 0.22; sq_l2_sum: (0.08 + 0.8) / 2 = 0.44 per row, 0.88 summed.
        close(&fd(&ft, &fs, FdForm::MseMean, Reduction::Mean).unwrap(), 0.22);
        close(&fd(&ft, &fs, FdForm::SqL2Sum, Reduction::Mean).unwrap(), 0.44);
        close(&fd(&ft, &fs, FdForm::SqL2Sum, Reduction::Sum).unwrap(), 0.88);
        close(&fd(&ft, &fs, FdForm::MseMean, Reduction::Sum).unwrap(), 0.44);
    }

    #[test]
    fn modalities_are_averaged_or_summed() {
        let a = Tensor::new(0.3f64, &Device::Cpu).unwrap();
        let b = Tensor::new(0.5f64, &Device::Cpu).unwrap();
        close(&combine(&[a.clone(), b.clone()], LdForm::L1Mean.sums_modalities()).unwrap(), 0.4);
        close(&combine(&[a.clone(), b.clone()], LdForm::SqL2Sum.sums_modalities()).unwrap(), 0.8);
        close(&combine(&[a, b], FdForm::SqL2Sum.sums_modalities()).unwrap(), 0.8);
        assert!(combine(&[], false).is_err());
    }

    #[test]
    fn shapes_are_checked() {
        let (pt, ps) = probs();
        assert!(ld(&pt, &ps.narrow(1, 0, 2).unwrap(), LdForm::L1Mean, Reduction::Mean).is_err());
        assert!(fd(&pt.flatten_all().unwrap(), &ps.flatten_all().unwrap(), FdForm::MseMean, Reduction::Mean).is_err());
    }

    #[test]
    fn gradients_match_finite_differences() {
        let (pt, ps) = probs();
        for form in [LdForm::L1Mean, LdForm::SqL2Sum, LdForm::MsePerRow] {
            // With respect to either argument (the reference back-propagates into both).
            let gap_s = grad_check(|x| ld(&pt, x, form, Reduction::Mean), &ps, 1e-6);
            let gap_t = grad_check(|x| ld(x, &ps, form, Reduction::Sum), &pt, 1e-6);
            assert!(gap_s < 1e-7 && gap_t < 1e-7, "{form:?}: {gap_s} {gap_t}");
            // Through the tempered softmax of the student's logits, τ = 2.
            let zt = t2(&[[1.0, -0.5, 0.3], [0.2, 0.9, -1.1]]);
            let zs = t2(&[[0.4, 0.1, -0.2], [-0.3, 0.6, 0.5]]);
            let p_t = candle_nn::ops::softmax(&(&zt / 2.0).unwrap(), D::Minus1).unwrap();
            let through = |z: &Tensor| {
                let p_s = candle_nn::ops::softmax(&(z / 2.0)?, D::Minus1)?;
                ld(&p_t, &p_s, form, Reduction::Mean)
            };
            assert!(grad_check(through, &zs, 1e-6) < 1e-7, "{form:?} through softmax");
        }
        let ft = t2(&[[0.6, -0.8, 0.1], [0.2, 0.3, -0.9]]);
        let fs = t2(&[[0.1, 0.4, -0.5], [0.7, -0.2, 0.05]]);
        for form in [FdForm::MseMean, FdForm::SqL2Sum] {
            let gap_s = grad_check(|x| fd(&ft, x, form, Reduction::Mean), &fs, 1e-6);
            let gap_t = grad_check(|x| fd(x, &fs, form, Reduction::Sum), &ft, 1e-6);
            assert!(gap_s < 1e-7 && gap_t < 1e-7, "{form:?}: {gap_s} {gap_t}");
        }
    }
}
