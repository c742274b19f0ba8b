//! One SGFD training step, timed and counted ([`sgfd_step`]): the teacher and student forward on a batch of
//! item rows of every modality, the four losses (L_LD, L_FD, L_TCE, L_FCE), the backward pass and an AdamW
//! update, in joint mode with the reference preset `sgfd` (spec `sgfd.md` §11, without the backbone).
//! Its FLOP count is analytic ([`step_flops`]), so a figure in GFLOP/s can be compared across devices.
//! `cargo xtask bench sgfd` runs it; nothing here asserts a timing.

use std::time::Instant;

use candle_core::{DType, Device, DeviceLocation, Tensor};
use candle_nn::{AdamW, Init, Optimizer, ParamsAdamW, VarMap};
use mmkd_data::Labels;
use mmkd_features::init::seeded_values;
use mmkd_features::{seeded_var_builder, FeatureExtractor, FeatureMatrix, FeatureStore, Mode};
use serde::{Deserialize, Serialize};

use crate::config::{SgfdConfig, SgfdPreset};
use crate::error::{Error, Result};
use crate::sgfd::Sgfd;

/// Timings (seconds, median over the timed repetitions) and FLOP count of one SGFD training step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SgfdStepBench {
    /// Item rows B' per step.
    pub rows: usize,
    /// Generic feature width D_m of each modality.
    pub dims: Vec<usize>,
    /// Latent width d.
    pub out_dim: usize,
    /// Number of label classes C.
    pub n_labels: usize,
    /// The device, e.g. `cpu` or `cuda:0`.
    pub device: String,
    /// Teacher and student forward and the four losses.
    pub forward_secs: f64,
    /// `loss.backward()`.
    pub backward_secs: f64,
    /// The whole step: forward, backward and the AdamW update.
    pub step_secs: f64,
    /// Forward FLOPs of the step's linear layers ([`step_flops`]).
    pub flops_forward: f64,
    /// Forward + backward FLOPs, 3 × `flops_forward`.
    pub flops_total: f64,
    /// `flops_total / step_secs`, in GFLOP/s.
    pub gflops: f64,
}

impl std::fmt::Display for SgfdStepBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sgfd step on {}: {} rows, dims {:?} → d {}, {} labels: forward {:.4} s, backward {:.4} s, step {:.4} s; \
             {:.2} GFLOP/step → {:.1} GFLOP/s",
            self.device,
            self.rows,
            self.dims,
            self.out_dim,
            self.n_labels,
            self.forward_secs,
            self.backward_secs,
            self.step_secs,
            self.flops_total / 1e9,
            self.gflops
        )
    }
}

/// Forward FLOPs of one SGFD step on `rows` item rows, counting the matrix products of the linear layers
/// only: a layer a → b on r rows costs 2·r·a·b. Per modality m, with teacher widths
/// `teacher_widths[m] = [D_m, h_1, …, d]`:
/// - the teacher T_m: Σ_i 2·r·w_i·w_{i+1};
/// - the student S_m: 2·r·D_m·d;
/// - the classifier C_m (d → C), applied twice: to the teacher's and to the student's features;
///
/// and, when `fusion`, the fusion layer (M·d → d) and its classifier C_f (d → C), once each.
/// Elementwise work (activations, L2 normalisation, softmax, the losses, AdamW) is O(r·(D + C)) or
/// O(parameters) and left out. The backward pass computes the gradient of every matrix product with respect
/// to both of its operands (candle does so even for the constant input rows), two products of the forward
/// one's size: the step's total is 3 × this.
pub fn step_flops(rows: usize, teacher_widths: &[Vec<usize>], out_dim: usize, n_labels: usize, fusion: bool) -> f64 {
    let linear = |a: usize, b: usize| 2.0 * rows as f64 * a as f64 * b as f64;
    let mut flops = 0.0;
    for widths in teacher_widths {
        flops += widths.windows(2).map(|w| linear(w[0], w[1])).sum::<f64>();
        flops += linear(widths.first().copied().unwrap_or(0), out_dim);
        flops += 2.0 * linear(out_dim, n_labels);
    }
    if fusion {
        flops += linear(teacher_widths.len() * out_dim, out_dim) + linear(out_dim, n_labels);
    }
    flops
}

/// Name of the i-th modality of the benchmark's feature store.
fn modality_name(i: usize) -> String {
    match i {
        0 => "visual".to_owned(),
        1 => "text".to_owned(),
        _ => format!("modality{i}"),
    }
}

fn device_name(device: &Device) -> String {
    match device.location() {
        DeviceLocation::Cpu => "cpu".to_owned(),
        DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => xs[n / 2],
        _ => 0.5 * (xs[n / 2 - 1] + xs[n / 2]),
    }
}

/// Times one SGFD training step. The data are `rows` items whose features are N(0, 1) of widths `dims`
/// (modalities `visual`, `text`, then `modality2`, …) and whose labels are uniform over `n_labels` classes
/// (each class occurs); every item row is in the step. The extractor is [`Sgfd`] in joint mode with the
/// preset `sgfd` and latent width `out_dim`, its parameters drawn from `seed`, trained by AdamW (lr 1e-3).
/// One untimed step warms up; then `reps` steps are timed, the device synchronised before every clock
/// reading, and the median of each phase reported.
pub fn sgfd_step(
    device: &Device,
    rows: usize,
    dims: &[usize],
    out_dim: usize,
    n_labels: usize,
    reps: usize,
    seed: u64,
) -> Result<SgfdStepBench> {
    if dims.is_empty() || dims.contains(&0) {
        return Err(Error::Config(format!("benchmark dims must be non-empty and positive, got {dims:?}")));
    }
    if n_labels == 0 || rows < n_labels || reps == 0 {
        return Err(Error::Config(format!(
            "benchmark needs rows ≥ n_labels ≥ 1 and reps ≥ 1, got rows {rows}, n_labels {n_labels}, reps {reps}"
        )));
    }
    let cfg = SgfdConfig { out_dim, ..SgfdPreset::Sgfd.config() };

    let mut store = FeatureStore::new(rows);
    for (m, &dim) in dims.iter().enumerate() {
        let name = modality_name(m);
        let shape = (rows, dim).into();
        let values =
            seeded_values(seed, &format!("bench.features.{name}"), &shape, Init::Randn { mean: 0.0, stdev: 1.0 });
        store.insert(&name, FeatureMatrix::new(rows, dim, values)?, std::path::Path::new(&name))?;
    }
    let uniform = Init::Uniform { lo: 0.0, up: n_labels as f64 };
    let draws = seeded_values(seed, "bench.labels", &rows.into(), uniform);
    // The first C items take the classes 0..C, so every class occurs and C stays `n_labels`.
    let raw: Vec<i64> = draws
        .iter()
        .enumerate()
        .map(|(i, &u)| if i < n_labels { i as i64 } else { (u as i64).min(n_labels as i64 - 1) })
        .collect();
    let labels = Labels::from_values(&raw);

    let varmap = VarMap::new();
    let sgfd = Sgfd::new(seeded_var_builder(&varmap, seed, DType::F32, device), &cfg, &store, &labels, device)?;
    let mut named: Vec<(String, candle_core::Var)> =
        varmap.data().lock().map_err(|_| Error::Mismatch("poisoned VarMap lock".into()))?.clone().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let mut opt =
        AdamW::new(named.into_iter().map(|(_, v)| v).collect(), ParamsAdamW { lr: 1e-3, ..Default::default() })?;
    let items = Tensor::arange(0u32, rows as u32, device)?;

    let teacher =
        sgfd.teacher().ok_or_else(|| Error::Mismatch("expected the `sgfd` preset to build a teacher".into()))?;
    let widths = (0..dims.len()).map(|m| Ok(teacher.extractor(m)?.widths().to_vec())).collect::<Result<Vec<_>>>()?;
    let flops_forward = step_flops(rows, &widths, out_dim, n_labels, teacher.has_fusion());
    let flops_total = 3.0 * flops_forward;

    let step = |opt: &mut AdamW| -> Result<(f64, f64, f64)> {
        device.synchronize()?;
        let start = Instant::now();
        let out = sgfd.extract(Some(&items), Mode::Train)?;
        let loss = out
            .aux_total()?
            .ok_or_else(|| Error::Mismatch("expected the `sgfd` preset to give auxiliary losses".into()))?;
        device.synchronize()?;
        let forward = start.elapsed().as_secs_f64();
        let grads = loss.backward()?;
        device.synchronize()?;
        let backward = start.elapsed().as_secs_f64() - forward;
        opt.step(&grads)?;
        device.synchronize()?;
        Ok((forward, backward, start.elapsed().as_secs_f64()))
    };
    step(&mut opt)?;
    let (mut fwd, mut bwd, mut total) = (Vec::with_capacity(reps), Vec::with_capacity(reps), Vec::with_capacity(reps));
    for _ in 0..reps {
        let (f, b, t) = step(&mut opt)?;
        fwd.push(f);
        bwd.push(b);
        total.push(t);
    }
    let step_secs = median(total);
    let bench = SgfdStepBench {
        rows,
        dims: dims.to_vec(),
        out_dim,
        n_labels,
        device: device_name(device),
        forward_secs: median(fwd),
        backward_secs: median(bwd),
        step_secs,
        flops_forward,
        flops_total,
        gflops: flops_total / step_secs / 1e9,
    };
    tracing::info!(%bench, "benchmarked one SGFD step");
    Ok(bench)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_step_runs_and_counts_flops_by_hand() {
        let b = sgfd_step(&Device::Cpu, 64, &[64, 32], 8, 4, 2, 3).unwrap();
        // Teacher widths (r = 4, d = 8): visual 64 → 16 → 8, text 32 → 8. On 64 rows, 2·64·a·b per layer:
        //   teacher visual 128·(64·16 + 16·8) = 147 456, teacher text 128·32·8 = 32 768,
        //   student visual 128·64·8 = 65 536,            student text 128·32·8 = 32 768,
        //   C_v, C_t on teacher and student features 4 · 128·8·4 = 16 384,
        //   fusion 128·16·8 = 16 384 and C_f 128·8·4 = 4 096.
        // Forward 315 392; with the backward pass 3 × 315 392 = 946 176.
        assert_eq!(b.flops_forward, 315_392.0);
        assert_eq!(b.flops_total, 946_176.0);
        assert_eq!(
            (b.rows, b.dims.as_slice(), b.out_dim, b.n_labels, b.device.as_str()),
            (64, &[64, 32][..], 8, 4, "cpu")
        );
        assert!(b.forward_secs > 0.0 && b.backward_secs > 0.0 && b.step_secs >= b.forward_secs);
        assert!(b.gflops.is_finite() && b.gflops > 0.0);
        let line = b.to_string();
        assert!(line.contains("64 rows") && line.contains("GFLOP/s") && !line.contains('\n'), "{line}");

        // One modality: no fusion.
        assert_eq!(
            step_flops(10, &[vec![16, 4]], 4, 3, false),
            2.0 * 10.0 * (16.0 * 4.0 + 16.0 * 4.0 + 2.0 * 4.0 * 3.0)
        );
        assert!(sgfd_step(&Device::Cpu, 3, &[8], 4, 5, 1, 0).is_err(), "fewer rows than labels");
        assert!(sgfd_step(&Device::Cpu, 8, &[], 4, 2, 1, 0).is_err());
    }

    /// The reference shape (Office: 54 labels, 4096-d visual, 768-d text, d = 128, 2048 rows):
    /// `cargo test -p mmkd-student-kd bench::tests::reference_shape -- --ignored --nocapture` (candle and gemm
    /// are built at opt-level 3 in the test profile too).
    #[test]
    #[ignore = "a benchmark, not a test: seconds per step on a CPU"]
    fn reference_shape() {
        let b = sgfd_step(&Device::Cpu, 2048, &[4096, 768], 128, 54, 3, 0).unwrap();
        eprintln!("{b}");
    }
}
