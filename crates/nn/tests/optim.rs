//! Adam and AdamW against hand-computed PyTorch values, skipped variables, the checkpoint round trip and
//! the difference from `candle_nn::AdamW`.
//!
//! Reference numbers come from PyTorch's `_single_tensor_adam` written out in plain Python floats
//! (torch itself is not installed here):
//! ```python
//! import math
//! def run(theta, grad, lr, wd, decoupled, amsgrad=False, steps=3, b1=0.9, b2=0.999, eps=1e-8):
//!     n = len(theta); m = [0.0]*n; v = [0.0]*n; vmax = [0.0]*n
//!     for t in range(1, steps + 1):
//!         g = grad(t, theta)
//!         if decoupled: theta = [x*(1 - lr*wd) for x in theta]
//!         elif wd: g = [g[i] + wd*theta[i] for i in range(n)]
//!         m = [m[i] + (g[i] - m[i])*(1 - b1) for i in range(n)]
//!         v = [v[i]*b2 + (1 - b2)*g[i]*g[i] for i in range(n)]
//!         vmax = [max(vmax[i], v[i]) for i in range(n)]; vv = vmax if amsgrad else v
//!         bc1 = 1 - b1**t; bc2s = math.sqrt(1 - b2**t)
//!         theta = [theta[i] - (lr/bc1)*m[i]/(math.sqrt(vv[i])/bc2s + eps) for i in range(n)]
//!         print(t, ["%.17g" % x for x in theta])
//! quad = lambda t, th: [2*th[0], th[1]]        # L = ½(2·θ0² + θ1²)
//! run([1.0, -2.0], quad, 0.1, 0.1, False)      # Adam, L2 0.1
//! run([1.0, -2.0], quad, 0.1, 0.1, True)       # AdamW, decay 0.1
//! cs = [[10.0, -1.0], [0.1, -2.0], [0.1, -0.5]]
//! run([1.0, -2.0], lambda t, th: cs[t-1], 0.1, 0.0, False, amsgrad=True)   # L_t = c_t·θ
//! ```

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Init, Optimizer, ParamsAdamW, VarMap};
use mmkd_nn::optim::{
    build, sorted_named_vars, sorted_vars, Adam, AdamConfig, AdamW, AnyOptimizer, LrSchedule, OptimConfig,
    OptimizerKind,
};
use mmkd_nn::{Error, Result};

/// L = ½·Σ a_j·θ_ij², a broadcast over the last dimension.
fn quad_loss(theta: &Var, a: &[f64]) -> Result<Tensor> {
    let a = Tensor::new(a, theta.device())?.to_dtype(theta.dtype())?;
    Ok((theta.as_tensor().sqr()?.broadcast_mul(&a)?.sum_all()? * 0.5)?)
}

/// L = c·θ, so the gradient is c.
fn linear_loss(theta: &Var, c: &[f64]) -> Result<Tensor> {
    let c = Tensor::new(c, theta.device())?.to_dtype(theta.dtype())?;
    Ok(theta.as_tensor().broadcast_mul(&c)?.sum_all()?)
}

fn values(var: &Var) -> Result<Vec<f64>> {
    Ok(var.as_tensor().to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
}

fn assert_close(got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= tol, "got {got:?}, want {want:?}");
    }
}

fn f32_bits(t: &Tensor) -> Result<Vec<u32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?.into_iter().map(f32::to_bits).collect())
}

fn cfg(lr: f64, weight_decay: f64) -> AdamConfig {
    AdamConfig { lr, weight_decay, ..AdamConfig::default() }
}

#[test]
fn adam_l2_matches_hand_computed_pytorch_values() -> Result<()> {
    // θ = [1, −2], L = ½(2·θ0² + θ1²) so g = [2·θ0, θ1]; lr 0.1, L2 0.1, β = (0.9, 0.999), ε = 1e-8.
    let theta = Var::new(&[1.0f64, -2.0], &Device::Cpu)?;
    let mut opt = Adam::new(vec![theta.clone()], cfg(0.1, 0.1))?;
    // Step 1: g = [2, −2], g + 0.1·θ = [2.1, −2.2]; m = 0.1·g = [0.21, −0.22]; v = 0.001·g² = [0.00441, 0.00484];
    // bias corrections 0.1 and 0.001 give m̂ = [2.1, −2.2] and √v̂ = [2.1, 2.2], so
    // θ = [1 − 0.1·2.1/(2.1 + 1e-8), −2 + 0.1·2.2/(2.2 + 1e-8)] = [0.900000000476190, −1.900000000454545].
    opt.backward_step(&quad_loss(&theta, &[2.0, 1.0])?)?;
    assert_close(&values(&theta)?, &[0.900_000_000_476_190_4, -1.900_000_000_454_545_4], 1e-13);
    // Step 2: g + 0.1·θ = [2.1·0.900000000476, −1.1·1.900000000455] = [1.890000001, −2.0900000005];
    // m = 0.9·[0.21, −0.22] + 0.1·g = [0.3780000001, −0.40700000005];
    // v = 0.999·[0.00441, 0.00484] + 0.001·g² = [0.00797769000378, 0.00920326000209];
    // 1 − 0.9² = 0.19, 1 − 0.999² = 0.001999: m̂ = [1.98947368474, −2.14210526342], √v̂ = [1.99770879312, 2.14567750770];
    // θ = θ − 0.1·m̂/(√v̂ + 1e-8) = [0.800412228643195, −1.800166486529203].
    opt.backward_step(&quad_loss(&theta, &[2.0, 1.0])?)?;
    assert_close(&values(&theta)?, &[0.800_412_228_643_195_4, -1.800_166_486_529_203_5], 1e-13);
    // Step 3 (the Python snippet above).
    opt.backward_step(&quad_loss(&theta, &[2.0, 1.0])?)?;
    assert_close(&values(&theta)?, &[0.701_586_272_871_821_4, -1.700_623_392_672_905], 1e-13);
    assert_eq!(opt.step_counts(), vec![3]);
    Ok(())
}

#[test]
fn adamw_decays_the_parameter_not_the_gradient() -> Result<()> {
    // Same problem, decoupled decay 0.1. Step 1: the gradient is taken at θ = [1, −2] (g = [2, −2]); then
    // θ ← θ·(1 − 0.1·0.1) = [0.99, −1.98] and θ ← θ − 0.1·g/(|g| + 1e-8) = [0.8900000005, −1.8800000005].
    // Adam with L2 0.1 reached [0.9000000005, −1.9000000005] instead: its first step has magnitude lr
    // whatever the L2 term, while AdamW's decay moves θ by an extra lr·wd·θ = [0.01, −0.02].
    let theta = Var::new(&[1.0f64, -2.0], &Device::Cpu)?;
    let mut opt = AdamW::new(vec![theta.clone()], cfg(0.1, 0.1))?;
    opt.backward_step(&quad_loss(&theta, &[2.0, 1.0])?)?;
    assert_close(&values(&theta)?, &[0.890_000_000_499_999_9, -1.880_000_000_5], 1e-13);
    // Steps 2 and 3 (the Python snippet above).
    opt.backward_step(&quad_loss(&theta, &[2.0, 1.0])?)?;
    assert_close(&values(&theta)?, &[0.781_571_855_936_504_8, -1.761_408_951_088_582_6], 1e-13);
    opt.backward_step(&quad_loss(&theta, &[2.0, 1.0])?)?;
    assert_close(&values(&theta)?, &[0.675_101_221_640_069_8, -1.644_368_684_322_008_9], 1e-13);
    Ok(())
}

#[test]
fn adam_and_adamw_agree_without_weight_decay() -> Result<()> {
    let a = Var::new(&[[0.3f32, -1.2], [2.0, 0.7]], &Device::Cpu)?;
    let b = Var::new(&[[0.3f32, -1.2], [2.0, 0.7]], &Device::Cpu)?;
    let mut adam = Adam::new(vec![a.clone()], cfg(0.05, 0.0))?;
    let mut adamw = AdamW::new(vec![b.clone()], cfg(0.05, 0.0))?;
    for _ in 0..4 {
        adam.backward_step(&quad_loss(&a, &[1.0, 3.0])?)?;
        adamw.backward_step(&quad_loss(&b, &[1.0, 3.0])?)?;
    }
    assert_eq!(f32_bits(a.as_tensor())?, f32_bits(b.as_tensor())?);
    Ok(())
}

#[test]
fn amsgrad_keeps_the_largest_second_moment() -> Result<()> {
    // L_t = c_t·θ with c = [10, −1], [0.1, −2], [0.1, −0.5]; lr 0.1, no decay. Coordinate 0's v falls after
    // step 1 (0.1 → 0.09991 → 0.09982009), so amsgrad divides by √(0.1/bc2) instead and moves further;
    // coordinate 1's v rises (0.001 → 0.004999 → 0.005244001), so both variants agree there.
    let steps = [[10.0, -1.0], [0.1, -2.0], [0.1, -0.5]];
    let theta = Var::new(&[1.0f64, -2.0], &Device::Cpu)?;
    let mut opt = Adam::new(vec![theta.clone()], AdamConfig { amsgrad: true, ..cfg(0.1, 0.0) })?;
    let plain_theta = Var::new(&[1.0f64, -2.0], &Device::Cpu)?;
    let mut plain = Adam::new(vec![plain_theta.clone()], cfg(0.1, 0.0))?;
    for c in &steps {
        opt.backward_step(&linear_loss(&theta, c)?)?;
        plain.backward_step(&linear_loss(&plain_theta, c)?)?;
    }
    assert_close(&values(&theta)?, &[0.779_325_901_952_688_8, -1.716_725_072_727_284_7], 1e-13);
    assert_close(&values(&plain_theta)?, &[0.779_247_706_538_257_9, -1.716_725_072_727_284_7], 1e-13);
    Ok(())
}

#[test]
fn variables_without_gradient_are_skipped() -> Result<()> {
    for kind in [OptimizerKind::Adam, OptimizerKind::AdamW] {
        let config = OptimConfig { kind, lr: 0.1, weight_decay: 0.1, ..OptimConfig::default() };
        let a = Var::new(&[1.0f64, -2.0], &Device::Cpu)?;
        let b = Var::new(&[0.5f64, 3.0], &Device::Cpu)?;
        let mut opt = build(vec![a.clone(), b.clone()], &config)?;
        // Step 1 sees only `a`: `b` keeps its value (no decay either), its moments stay zero, its count 0.
        opt.backward_step(&quad_loss(&a, &[2.0, 1.0])?)?;
        assert_eq!(values(&b)?, vec![0.5, 3.0]);
        assert_eq!(opt.step_counts(), vec![1, 0]);
        let state: HashMap<String, Tensor> = opt.state_tensors()?.into_iter().collect();
        for key in ["1.exp_avg", "1.exp_avg_sq"] {
            assert_eq!(state[key].to_vec1::<f64>()?, vec![0.0, 0.0], "{key}");
        }
        // Step 2 sees both: `b` gets its first update (t = 1), exactly what a fresh optimiser gives it.
        let loss = (quad_loss(&a, &[2.0, 1.0])? + quad_loss(&b, &[1.0, 4.0])?)?;
        opt.backward_step(&loss)?;
        assert_eq!(opt.step_counts(), vec![2, 1]);
        let fresh_b = Var::new(&[0.5f64, 3.0], &Device::Cpu)?;
        let mut fresh = build(vec![fresh_b.clone()], &config)?;
        fresh.backward_step(&quad_loss(&fresh_b, &[1.0, 4.0])?)?;
        assert_eq!(values(&b)?, values(&fresh_b)?, "{kind:?}");
    }
    Ok(())
}

#[test]
fn candle_adamw_has_one_step_count_for_all_variables() -> Result<()> {
    // Same formula as candle_nn::AdamW while every variable gets a gradient every step ...
    let init = [[0.3f32, -1.2, 0.05], [2.0, 0.7, -0.4]];
    let ours_theta = Var::new(&init, &Device::Cpu)?;
    let theirs_theta = Var::new(&init, &Device::Cpu)?;
    let mut ours = AdamW::new(vec![ours_theta.clone()], cfg(0.01, 0.05))?;
    let params = ParamsAdamW { lr: 0.01, weight_decay: 0.05, ..ParamsAdamW::default() };
    let mut theirs = candle_nn::AdamW::new(vec![theirs_theta.clone()], params.clone())?;
    for _ in 0..5 {
        ours.backward_step(&quad_loss(&ours_theta, &[1.0, 2.0, 3.0])?)?;
        theirs.backward_step(&quad_loss(&theirs_theta, &[1.0, 2.0, 3.0])?)?;
    }
    assert_close(&values(&ours_theta)?, &values(&theirs_theta)?, 1e-6);

    // ... but candle counts steps globally: a variable whose first gradient arrives at step 2 is corrected
    // with t = 2 (m̂ = 0.1·g/0.19, √v̂ = |g|·√(0.001/0.001999)), a move of ≈ 0.744·lr instead of lr.
    let a = Var::new(&[1.0f32], &Device::Cpu)?;
    let b = Var::new(&[1.0f32], &Device::Cpu)?;
    let mut theirs = candle_nn::AdamW::new(vec![a.clone(), b.clone()], ParamsAdamW { weight_decay: 0.0, ..params })?;
    let ours_b = Var::new(&[1.0f32], &Device::Cpu)?;
    let mut ours = AdamW::new(vec![ours_b.clone()], cfg(0.01, 0.0))?;
    theirs.backward_step(&quad_loss(&a, &[1.0])?)?;
    theirs.backward_step(&quad_loss(&b, &[1.0])?)?;
    ours.backward_step(&quad_loss(&ours_b, &[1.0])?)?;
    let ours_move = 1.0 - values(&ours_b)?[0];
    let theirs_move = 1.0 - values(&b)?[0];
    assert!((ours_move - 0.01).abs() < 1e-6, "{ours_move}");
    assert!((theirs_move - 0.01 * 0.1 / 0.19 / (0.001f64 / 0.001999).sqrt()).abs() < 1e-6, "{theirs_move}");
    Ok(())
}

/// A small least-squares problem over three f32 variables; `c` only enters on odd steps, so the variables'
/// step counts differ.
struct Problem {
    w: Var,
    b: Var,
    c: Var,
}

impl Problem {
    fn new(w: &Tensor, b: &Tensor, c: &Tensor) -> Result<Self> {
        Ok(Self { w: Var::from_tensor(w)?, b: Var::from_tensor(b)?, c: Var::from_tensor(c)? })
    }

    fn initial() -> Result<Self> {
        let dev = Device::Cpu;
        Self::new(
            &Tensor::new(&[[0.1f32, -0.2], [0.3, 0.05], [-0.4, 0.25]], &dev)?,
            &Tensor::new(&[0.01f32, -0.02], &dev)?,
            &Tensor::new(&[0.5f32, -0.5], &dev)?,
        )
    }

    fn vars(&self) -> Vec<Var> {
        vec![self.w.clone(), self.b.clone(), self.c.clone()]
    }

    fn loss(&self, step: usize) -> Result<Tensor> {
        let dev = Device::Cpu;
        let x = Tensor::new(&[[1.0f32, 2.0, -1.0], [0.5, -1.0, 2.0], [-1.5, 0.3, 0.7], [2.0, 1.0, 1.0]], &dev)?;
        let y = Tensor::new(&[[1.0f32, 0.0], [0.0, 1.0], [-1.0, 0.5], [0.3, -0.2]], &dev)?;
        let pred = x.matmul(self.w.as_tensor())?.broadcast_add(self.b.as_tensor())?; // (4, 2)
        let mut loss = (pred - y)?.sqr()?.mean_all()?;
        if step % 2 == 1 {
            loss = (loss + self.c.as_tensor().sqr()?.sum_all()?)?;
        }
        Ok(loss)
    }

    fn train(&self, opt: &mut AnyOptimizer, steps: std::ops::Range<usize>, base_lr: f64) -> Result<()> {
        let schedule = LrSchedule::Exponential { factor: 0.5, every: 2 };
        for step in steps {
            opt.set_learning_rate(schedule.lr_at(step, base_lr));
            opt.backward_step(&self.loss(step)?)?;
        }
        Ok(())
    }
}

#[test]
fn saved_and_reloaded_state_continues_bit_for_bit() -> Result<()> {
    let configs = [
        OptimConfig { kind: OptimizerKind::Adam, lr: 0.05, weight_decay: 0.01, amsgrad: true, ..Default::default() },
        OptimConfig { kind: OptimizerKind::AdamW, lr: 0.05, weight_decay: 0.1, ..Default::default() },
    ];
    for (run, config) in configs.iter().enumerate() {
        let (k, n) = (3, 7);
        // Uninterrupted.
        let straight = Problem::initial()?;
        let mut opt = build(straight.vars(), config)?;
        straight.train(&mut opt, 0..n, config.lr)?;
        let final_state = opt.state_tensors()?;

        // k steps, checkpoint the variables and the optimiser through safetensors files, continue fresh.
        let first = Problem::initial()?;
        let mut opt = build(first.vars(), config)?;
        first.train(&mut opt, 0..k, config.lr)?;
        assert_eq!(opt.step_counts(), vec![3, 3, 1]);
        let dir = std::env::temp_dir();
        let state_path = dir.join(format!("mmkd-optim-{}-{run}-state.safetensors", std::process::id()));
        let vars_path = dir.join(format!("mmkd-optim-{}-{run}-vars.safetensors", std::process::id()));
        let state: HashMap<String, Tensor> = opt.state_tensors()?.into_iter().collect();
        candle_core::safetensors::save(&state, &state_path)?;
        let vars: HashMap<String, Tensor> = [("w", &first.w), ("b", &first.b), ("c", &first.c)]
            .into_iter()
            .map(|(name, var)| (name.to_string(), var.as_tensor().clone()))
            .collect();
        candle_core::safetensors::save(&vars, &vars_path)?;
        drop((first, opt));

        let vars = candle_core::safetensors::load(&vars_path, &Device::Cpu)?;
        let state = candle_core::safetensors::load(&state_path, &Device::Cpu)?;
        std::fs::remove_file(&state_path).ok();
        std::fs::remove_file(&vars_path).ok();
        let resumed = Problem::new(&vars["w"], &vars["b"], &vars["c"])?;
        let mut opt = build(resumed.vars(), config)?;
        opt.load_state(&state)?;
        assert_eq!(opt.step_counts(), vec![3, 3, 1]);
        resumed.train(&mut opt, k..n, config.lr)?;

        for (a, b) in straight.vars().iter().zip(resumed.vars()) {
            assert_eq!(f32_bits(a.as_tensor())?, f32_bits(b.as_tensor())?, "{config:?}");
        }
        for ((name_a, a), (name_b, b)) in final_state.iter().zip(opt.state_tensors()?) {
            assert_eq!(name_a, &name_b);
            if a.dtype() == DType::I64 {
                assert_eq!(a.to_scalar::<i64>()?, b.to_scalar::<i64>()?, "{name_a}");
            } else {
                assert_eq!(f32_bits(a)?, f32_bits(&b)?, "{name_a}");
            }
        }
    }
    Ok(())
}

#[test]
fn load_state_rejects_mismatches_and_changes_nothing() -> Result<()> {
    let p = Problem::initial()?;
    let config = OptimConfig { lr: 0.05, ..OptimConfig::default() };
    let mut opt = build(p.vars(), &config)?;
    p.train(&mut opt, 0..2, config.lr)?;
    let good: HashMap<String, Tensor> = opt.state_tensors()?.into_iter().collect();
    let mut fresh = build(Problem::initial()?.vars(), &config)?;

    let mut missing = good.clone();
    missing.remove("2.step");
    assert!(matches!(fresh.load_state(&missing), Err(Error::Config(_))));

    let mut extra = good.clone();
    extra.insert("3.exp_avg".into(), Tensor::zeros(2, DType::F32, &Device::Cpu)?);
    assert!(matches!(fresh.load_state(&extra), Err(Error::Config(_))));

    let mut wrong_shape = good.clone();
    wrong_shape.insert("0.exp_avg".into(), Tensor::zeros((2, 3), DType::F32, &Device::Cpu)?);
    assert!(matches!(fresh.load_state(&wrong_shape), Err(Error::Shape(_))));

    let mut wrong_dtype = good.clone();
    wrong_dtype.insert("1.exp_avg_sq".into(), Tensor::zeros(2, DType::F64, &Device::Cpu)?);
    assert!(matches!(fresh.load_state(&wrong_dtype), Err(Error::Shape(_))));

    let mut ams = build(Problem::initial()?.vars(), &OptimConfig { amsgrad: true, ..config })?;
    assert!(matches!(ams.load_state(&good), Err(Error::Config(_))), "amsgrad needs max_exp_avg_sq");
    let ams_state: HashMap<String, Tensor> = ams.state_tensors()?.into_iter().collect();
    assert!(matches!(fresh.load_state(&ams_state), Err(Error::Config(_))), "amsgrad state into plain Adam");

    assert_eq!(fresh.step_counts(), vec![0, 0, 0]);
    fresh.load_state(&good)?;
    assert_eq!(fresh.step_counts(), vec![2, 2, 1]);
    Ok(())
}

#[test]
fn build_validates_and_picks_the_kind() -> Result<()> {
    let theta = Var::new(&[1.0f32], &Device::Cpu)?;
    let adamw = build(vec![theta.clone()], &OptimConfig { kind: OptimizerKind::AdamW, ..Default::default() })?;
    assert_eq!(adamw.kind(), OptimizerKind::AdamW);
    assert_eq!(adamw.learning_rate(), 1e-3);
    let bad = OptimConfig { betas: (0.9, 1.0), ..Default::default() };
    assert!(matches!(build(vec![theta.clone()], &bad), Err(Error::Config(_))));
    let ids = Var::from_tensor(&Tensor::new(&[1u32, 2], &Device::Cpu)?)?;
    assert!(build(vec![ids], &OptimConfig::default()).is_err());
    Ok(())
}

#[test]
fn sorted_vars_orders_by_name() -> Result<()> {
    let varmap = VarMap::new();
    for (name, len) in [("user_emb.weight", 1), ("item_emb.weight", 2), ("predictor.bias", 3), ("a", 4)] {
        varmap.get(len, name, Init::Const(0.0), DType::F32, &Device::Cpu)?;
    }
    let names: Vec<String> = sorted_named_vars(&varmap).into_iter().map(|(name, _)| name).collect();
    assert_eq!(names, ["a", "item_emb.weight", "predictor.bias", "user_emb.weight"]);
    let lens: Vec<usize> = sorted_vars(&varmap).iter().map(|v| v.elem_count()).collect();
    assert_eq!(lens, [4, 2, 3, 1]);
    Ok(())
}
