//! Layer widths of the teacher extractor T_m (spec `sgfd.md` §2): the reference code's geometric rule
//! (fixed shrink ratio, last layer jumps to d), the paper's rule k = log_δ(D/d), and the shallow teacher.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How the teacher's layer widths are chosen (spec switch `teacher_depth`).
///
/// In TOML: `teacher_depth = { rule = "deep", ratio = 4 }`, `{ rule = "paper", delta = 4.0 }` or
/// `{ rule = "shallow" }`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "rule")]
pub enum TeacherDepth {
    /// The reference code's loop: divide the width by `ratio` per layer until the next width would fall
    /// below d, then jump to d. PyTorch `decay_ration = 4` (GRCN, BM3; not a CLI flag); TensorFlow 2 (MAML).
    Deep { ratio: usize },
    /// The paper's footnote 3: k = ⌈log_δ(D/d)⌉ layers (at least one) with geometrically shrinking widths,
    /// each rounded to the nearest integer, the last one exactly d. δ is tuned from {2, 4, 6, 8} in §4.1.4.
    Paper { delta: f64 },
    /// One Linear(D → d), the same architecture as the student (ablation SGFD_s).
    Shallow,
}

impl Default for TeacherDepth {
    fn default() -> Self {
        Self::Deep { ratio: 4 }
    }
}

/// Widths `[D, h_1, …, d]` of the teacher's layers under `depth`; layer i maps `w[i] → w[i + 1]`.
pub fn layer_widths(depth: TeacherDepth, in_dim: usize, out_dim: usize) -> Result<Vec<usize>> {
    match depth {
        TeacherDepth::Deep { ratio } => reference_widths(in_dim, out_dim, ratio),
        TeacherDepth::Paper { delta } => paper_widths(in_dim, out_dim, delta),
        TeacherDepth::Shallow => {
            check_dims(in_dim, out_dim)?;
            Ok(vec![in_dim, out_dim])
        }
    }
}

/// The reference code's rule (spec §2): `c = ⌊h / ratio⌋`; if `c < d` the last layer maps `h → d`, else a
/// layer `h → c` is added and the loop stops when `c == d`. The reference writes the input width as
/// `c · ratio`, which equals `h` only for divisible widths (it crashes otherwise); this uses `h`.
pub fn reference_widths(in_dim: usize, out_dim: usize, ratio: usize) -> Result<Vec<usize>> {
    check_dims(in_dim, out_dim)?;
    if ratio < 2 {
        return Err(Error::Config(format!("teacher_depth: the shrink ratio must be at least 2, got {ratio}")));
    }
    let mut widths = vec![in_dim];
    let mut h = in_dim;
    loop {
        let c = h / ratio;
        if c < out_dim {
            widths.push(out_dim);
            break;
        }
        widths.push(c);
        if c == out_dim {
            break;
        }
        h = c;
    }
    Ok(widths)
}

/// The paper's rule: k = ⌈log_δ(D/d)⌉ layers (at least one); hidden width i is `round(D · (d/D)^(i/k))`,
/// the last one d. For D = 4096, d = 128: δ = 2 gives 5 layers of ratio 2, δ = 4 gives log₄ 32 = 2.5 → 3
/// layers (the reference code also has 3), δ = 8 gives 5/3 → 2 layers.
pub fn paper_widths(in_dim: usize, out_dim: usize, delta: f64) -> Result<Vec<usize>> {
    check_dims(in_dim, out_dim)?;
    if !(delta.is_finite() && delta > 1.0) {
        return Err(Error::Config(format!("teacher_depth: δ must be a finite number above 1, got {delta}")));
    }
    let ratio = in_dim as f64 / out_dim as f64;
    // A small tolerance keeps exact powers (log₂ 32 = 5) from rounding up to the next integer.
    let k = ((ratio.ln() / delta.ln()) - 1e-9).ceil().max(1.0) as usize;
    let mut widths = Vec::with_capacity(k + 1);
    widths.push(in_dim);
    for i in 1..k {
        let w = (in_dim as f64 * (1.0 / ratio).powf(i as f64 / k as f64)).round() as usize;
        widths.push(w.max(1));
    }
    widths.push(out_dim);
    Ok(widths)
}

fn check_dims(in_dim: usize, out_dim: usize) -> Result<()> {
    if in_dim == 0 || out_dim == 0 {
        return Err(Error::Config(format!("extractor widths must be positive, got D = {in_dim}, d = {out_dim}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_rule_matches_the_spec_table() {
        // Spec sgfd.md §2, d = 128: PyTorch (r = 4) and TensorFlow (r = 2) columns, verbatim.
        let table: [(usize, &[usize], &[usize]); 5] = [
            (4096, &[4096, 1024, 256, 128], &[4096, 2048, 1024, 512, 256, 128]),
            (1024, &[1024, 256, 128], &[1024, 512, 256, 128]),
            (768, &[768, 192, 128], &[768, 384, 192, 128]),
            (512, &[512, 128], &[512, 256, 128]),
            (384, &[384, 128], &[384, 192, 128]),
        ];
        for (d_in, pt, tf) in table {
            assert_eq!(layer_widths(TeacherDepth::Deep { ratio: 4 }, d_in, 128).unwrap(), pt, "PT, D = {d_in}");
            assert_eq!(layer_widths(TeacherDepth::Deep { ratio: 2 }, d_in, 128).unwrap(), tf, "TF, D = {d_in}");
            // Number of layers = ⌈log_r(D/d)⌉ for these dims.
            let ratio = d_in as f64 / 128.0;
            assert_eq!(pt.len() - 1, (ratio.log(4.0) - 1e-9).ceil() as usize);
            assert_eq!(tf.len() - 1, (ratio.log2() - 1e-9).ceil() as usize);
        }
        // 384 with r = 4 is one layer, the same architecture as the student.
        assert_eq!(layer_widths(TeacherDepth::Shallow, 384, 128).unwrap(), vec![384, 128]);
        // Inputs narrower than d: one layer up to d. A width not divisible by r uses h (the reference crashes).
        assert_eq!(reference_widths(64, 128, 4).unwrap(), vec![64, 128]);
        assert_eq!(reference_widths(1000, 10, 4).unwrap(), vec![1000, 250, 62, 15, 10]);
        assert!(reference_widths(4096, 128, 1).is_err());
        assert!(reference_widths(0, 128, 4).is_err());
    }

    #[test]
    fn paper_rule_values() {
        // k = ⌈log_δ 32⌉: δ = 2 → 5 layers, widths 4096·2^-i.
        assert_eq!(paper_widths(4096, 128, 2.0).unwrap(), vec![4096, 2048, 1024, 512, 256, 128]);
        // δ = 4: log₄ 32 = 2.5 → 3 layers; 32^(1/3) = 3.1748, 4096 / 3.1748 = 1290.16, 4096 / 3.1748² = 406.37.
        assert_eq!(paper_widths(4096, 128, 4.0).unwrap(), vec![4096, 1290, 406, 128]);
        // δ = 8: log₈ 32 = 1.667 → 2 layers; 4096 / √32 = 724.08.
        assert_eq!(paper_widths(4096, 128, 8.0).unwrap(), vec![4096, 724, 128]);
        // δ = 6: log₆ 32 = 1.934 → 2 layers.
        assert_eq!(paper_widths(4096, 128, 6.0).unwrap().len(), 3);
        // D = 384, δ = 4: log₄ 3 = 0.79 → 1 layer; D ≤ d still gets one layer.
        assert_eq!(paper_widths(384, 128, 4.0).unwrap(), vec![384, 128]);
        assert_eq!(paper_widths(128, 128, 4.0).unwrap(), vec![128, 128]);
        assert_eq!(layer_widths(TeacherDepth::Paper { delta: 2.0 }, 1024, 128).unwrap(), vec![1024, 512, 256, 128]);
        assert!(paper_widths(4096, 128, 1.0).is_err());
        assert!(paper_widths(4096, 128, f64::NAN).is_err());
    }
}
