//! KDSR's student losses (spec `kdsr-mmsr.md` §4, §6, §7, §14 tests 3 and 7): hand-computed holistic
//! (code and paper form) and dissected losses, masking, the valid-pair path against the dense one, the
//! heads' inputs, a finite-difference check of the total loss, weight presets and the AT schedule.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions unwrap too.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarMap;
use mmkd_features::seeded_var_builder;
use mmkd_features::testing::grad_check;
use mmkd_student_kd::kdsr::{
    dissected_loss, holistic_loss_code, holistic_loss_paper, AtConfig, AtMode, DiffForm, HolForm, KdsrConfig,
    KdsrStudent, Modality, PRESETS,
};
use mmkd_teacher::kdsr::{pair_scores, Quantiser, Scoring, TeacherTargets};
use rand::Rng;

fn t3<const B: usize>(v: &[[[f64; 2]; 2]; B]) -> Tensor {
    Tensor::new(v, &Device::Cpu).unwrap()
}

fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

fn close(got: f64, want: f64, what: &str) {
    assert!((got - want).abs() < 1e-12 * want.abs().max(1.0), "{what}: got {got}, want {want}");
}

/// The 1×2×2 case: ŝ = [[1, 0.5], [0.5, 0.8]], s = [[0.9, 0.1], [0.1, 1.0]].
fn case() -> (Tensor, Tensor) {
    (t3(&[[[1.0, 0.5], [0.5, 0.8]]]), t3(&[[[0.9, 0.1], [0.1, 1.0]]]))
}

/// The same pair values inside a 1×3×3 batch whose node 1 is padding, holding garbage values.
fn padded_case() -> (Tensor, Tensor, Tensor) {
    let pred = Tensor::new(&[[[1.0f64, 7.0, 0.5], [-3.0, 2.0, 9.0], [0.5, 4.0, 0.8]]], &Device::Cpu).unwrap();
    let teacher = Tensor::new(&[[[0.9f64, -5.0, 0.1], [6.0, 1.0, 3.0], [0.1, 8.0, 1.0]]], &Device::Cpu).unwrap();
    let m = [1.0, 0.0, 1.0];
    let mask: Vec<f64> = (0..9).map(|k| m[k / 3] * m[k % 3]).collect();
    (pred, teacher, Tensor::from_vec(mask, (1, 3, 3), &Device::Cpu).unwrap())
}

#[test]
fn holistic_code_form_by_hand() {
    let (pred, teacher) = case();
    let ones = pred.ones_like().unwrap();
    // τ = 2: δ = [[0.05, 0.2], [0.2, −0.1]], Σδ² = 0.0025 + 0.04 + 0.04 + 0.01 = 0.0925, plus 4·1e-8.
    close(scalar(&holistic_loss_code(&pred, &teacher, &ones, 2.0).unwrap()), (0.0925f64 + 4e-8).sqrt(), "τ=2");
    // Only pair (0, 0) valid: √(0.0025 + 1e-8).
    let one_pair = t3(&[[[1.0, 0.0], [0.0, 0.0]]]);
    close(scalar(&holistic_loss_code(&pred, &teacher, &one_pair, 2.0).unwrap()), (0.0025f64 + 1e-8).sqrt(), "(0,0)");
    // Padding rows and columns, whatever they hold, change nothing.
    let (p3, t3_, m3) = padded_case();
    close(scalar(&holistic_loss_code(&p3, &t3_, &m3, 2.0).unwrap()), (0.0925f64 + 4e-8).sqrt(), "padded");
}

/// Spec §14 test 3.
#[test]
fn holistic_code_form_is_the_epsilon_floor_on_a_match_and_scales_by_one_over_tau() {
    // Two sequences, with 4 and 1 valid pairs: ŝ = s gives √(4·1e-8) and √(1e-8), mean 1.5e-4.
    let s = t3(&[[[0.3, 0.7], [0.7, 1.0]], [[0.2, 0.0], [0.0, 0.0]]]);
    let mask = t3(&[[[1.0, 1.0], [1.0, 1.0]], [[1.0, 0.0], [0.0, 0.0]]]);
    close(scalar(&holistic_loss_code(&s, &s, &mask, 1.5).unwrap()), 1.5e-4, "match");
    // Far from a match the ε is negligible and the loss scales as 1/τ.
    let (pred, teacher) = case();
    let ones = pred.ones_like().unwrap();
    let at = |tau| scalar(&holistic_loss_code(&pred, &teacher, &ones, tau).unwrap());
    assert!((at(1.0) / at(3.0) - 3.0).abs() < 1e-5, "{} {}", at(1.0), at(3.0));
    assert!((at(1.0) / at(1.5) - 1.5).abs() < 1e-5);
}

#[test]
fn holistic_paper_form_by_hand() {
    let (pred, teacher) = case();
    let ones = pred.ones_like().unwrap();
    // τ = 2. A two-way softmax is (σ(x₀ − x₁), σ(x₁ − x₀)), so each row's squared error is 2·(σ_t − σ_s)².
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    let row0 = 2.0 * (sig((0.9 - 0.1) / 2.0) - sig((1.0 - 0.5) / 2.0)).powi(2);
    let row1 = 2.0 * (sig((1.0 - 0.1) / 2.0) - sig((0.8 - 0.5) / 2.0)).powi(2);
    let want = (row0 + row1) / 2.0;
    close(scalar(&holistic_loss_paper(&pred, &teacher, &ones, 2.0).unwrap()), want, "paper τ=2");
    // The padding column is out of the softmax and the padding row out of the mean.
    let (p3, t3_, m3) = padded_case();
    close(scalar(&holistic_loss_paper(&p3, &t3_, &m3, 2.0).unwrap()), want, "paper padded");
    // A lone real node: its one-column softmax is 1 for both, so the loss is 0.
    let lone = t3(&[[[1.0, 0.0], [0.0, 0.0]]]);
    close(scalar(&holistic_loss_paper(&pred, &teacher, &lone, 2.0).unwrap()), 0.0, "lone");
    // Identical inputs: 0.
    close(scalar(&holistic_loss_paper(&pred, &pred, &ones, 1.5).unwrap()), 0.0, "match");
}

#[test]
fn dissected_loss_by_hand_and_over_all_valid_pairs() {
    let (l2, l3, l5) = (2f64.ln(), 3f64.ln(), 6f64.ln());
    // K = 3. Pair (0,0): uniform, code 1 → ln 3. (0,1): [ln 2, 0, 0], code 0 → −ln(2/4) = ln 2.
    // (1,0): [0, ln 3, 0], code 2 → −ln(1/5) = ln 5. (1,1): [0, 0, ln 6], code 2 → −ln(6/8) = ln(4/3).
    let logits =
        Tensor::new(&[[[[0.0f64, 0.0, 0.0], [l2, 0.0, 0.0]], [[0.0, l3, 0.0], [0.0, 0.0, l5]]]], &Device::Cpu).unwrap();
    let codes = Tensor::new(&[[[1u32, 0], [2, 2]]], &Device::Cpu).unwrap();
    let ones = t3(&[[[1.0, 1.0], [1.0, 1.0]]]);
    close(scalar(&dissected_loss(&logits, &codes, &ones).unwrap()), 40f64.ln() / 4.0, "all pairs");
    // Node 1 padding: only (0,0).
    let first = t3(&[[[1.0, 0.0], [0.0, 0.0]]]);
    close(scalar(&dissected_loss(&logits, &codes, &first).unwrap()), 3f64.ln(), "one pair");
    // Two sequences with 4 and 1 valid pairs: the mean is over the 5 pairs, not of the two sequence means.
    let logits2 = Tensor::cat(&[&logits, &logits], 0).unwrap();
    let codes2 = Tensor::cat(&[&codes, &codes], 0).unwrap();
    let mask2 = Tensor::cat(&[&ones, &first], 0).unwrap();
    let want = (40f64.ln() + 3f64.ln()) / 5.0;
    close(scalar(&dissected_loss(&logits2, &codes2, &mask2).unwrap()), want, "flattened");
    // No valid pair: 0. Out-of-range codes and bad shapes: errors.
    close(scalar(&dissected_loss(&logits, &codes, &ones.zeros_like().unwrap()).unwrap()), 0.0, "none");
    let bad = Tensor::new(&[[[1u32, 0], [3, 2]]], &Device::Cpu).unwrap();
    assert!(dissected_loss(&logits, &bad, &ones).is_err());
    assert!(dissected_loss(&logits, &codes.to_dtype(DType::F64).unwrap(), &ones).is_err());
    assert!(dissected_loss(&logits.squeeze(0).unwrap(), &codes, &ones).is_err());
}

#[test]
fn loss_shapes_and_temperatures_are_checked() {
    let (pred, teacher) = case();
    let ones = pred.ones_like().unwrap();
    assert!(holistic_loss_code(&pred, &teacher, &ones, 0.0).is_err());
    assert!(holistic_loss_paper(&pred, &teacher, &ones, -1.0).is_err());
    let wide = Tensor::zeros((1, 2, 3), DType::F64, &Device::Cpu).unwrap();
    assert!(holistic_loss_code(&wide, &wide, &wide, 1.0).is_err());
    assert!(holistic_loss_code(&pred, &teacher.squeeze(0).unwrap(), &ones, 1.0).is_err());
    assert!(holistic_loss_paper(&pred, &teacher, &ones.squeeze(0).unwrap(), 1.0).is_err());
}

const D: usize = 8;
const K: usize = 5;

fn config() -> KdsrConfig {
    KdsrConfig { n_sub: 4, n_codes: K, ..KdsrConfig::default() }
}

/// A student in f64 (for the finite-difference check) and its variables.
fn student(cfg: &KdsrConfig, seed: u64) -> (KdsrStudent, VarMap) {
    let vm = VarMap::new();
    let vb = seeded_var_builder(&vm, seed, DType::F64, &Device::Cpu);
    (KdsrStudent::new(vb.pp("kdsr"), cfg, D).unwrap(), vm)
}

/// Random rows e (b, q, D) with entries ~ U(−1, 1), f64.
fn rows(b: usize, q: usize, name: &str) -> Tensor {
    let mut rng = mmkd_data::stream(5, name);
    let v: Vec<f64> = (0..b * q * D).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_vec(v, (b, q, D), &Device::Cpu).unwrap()
}

/// Two sequences of 4 nodes, the second with 2 padding nodes; random teacher scores and codes.
fn batch() -> (Tensor, Tensor, Tensor, TeacherTargets) {
    let (b, q) = (2, 4);
    let mask = Tensor::new(&[[1f32, 1., 1., 1.], [1., 1., 0., 0.]], &Device::Cpu).unwrap();
    let mut rng = mmkd_data::stream(6, "targets");
    let mut scores = || {
        let v: Vec<f32> = (0..b * q * q).map(|_| rng.random_range(0.0..1.0)).collect();
        Tensor::from_vec(v, (b, q, q), &Device::Cpu).unwrap()
    };
    let (scores_v, scores_t) = (scores(), scores());
    let mut codes = || {
        let v: Vec<u32> = (0..b * q * q).map(|_| rng.random_range(0..K as u32)).collect();
        Tensor::from_vec(v, (b, q, q), &Device::Cpu).unwrap()
    };
    let (codes_v, codes_t) = (codes(), codes());
    (rows(b, q, "e_v"), rows(b, q, "e_t"), mask, TeacherTargets { scores_v, scores_t, codes_v, codes_t })
}

fn pair_mask(mask: &Tensor) -> Tensor {
    let m = mask.to_dtype(DType::F64).unwrap();
    m.unsqueeze(2).unwrap().broadcast_mul(&m.unsqueeze(1).unwrap()).unwrap()
}

#[test]
fn student_heads_have_the_spec_shapes_and_inputs() {
    let cfg = config();
    let (s, vm) = student(&cfg, 1);
    let mut keys: Vec<String> = vm.data().lock().unwrap().keys().cloned().collect();
    keys.sort();
    let want: Vec<String> = ["text", "visual"]
        .iter()
        .flat_map(|m| {
            ["g.0", "g.1", "head.0", "head.1"]
                .iter()
                .flat_map(move |l| ["bias", "weight"].map(|p| format!("kdsr.{m}.{l}.{p}")))
        })
        .collect();
    assert_eq!(keys, want);
    let data = vm.data().lock().unwrap();
    let get = |k: &str| data[k].as_tensor().clone();
    assert_eq!(get("kdsr.visual.head.1.weight").dims(), &[K, D]);
    assert_eq!(get("kdsr.visual.g.1.weight").dims(), &[D, D]);
    assert_eq!(get("kdsr.text.g.0.bias").to_vec1::<f64>().unwrap(), vec![0.0; D]);

    // Holistic input: g(e) = two affine maps, no activation; dissected input: |e_i − e_j| of the raw e.
    let e = rows(1, 3, "heads");
    let affine = |x: &Tensor, l: &str| {
        candle_nn::Linear::new(get(&format!("kdsr.visual.{l}.weight")), Some(get(&format!("kdsr.visual.{l}.bias"))))
            .forward(x)
            .unwrap()
    };
    let g = affine(&affine(&e, "g.0"), "g.1");
    let want_s = pair_scores(&g, Scoring::Cos).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let got_s = s.pred_scores(Modality::Visual, &e).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    assert_eq!(got_s, want_s);
    let delta = (e.get(0).unwrap().get(0).unwrap() - e.get(0).unwrap().get(2).unwrap()).unwrap().abs().unwrap();
    let want_l = affine(&affine(&delta.unsqueeze(0).unwrap(), "head.0").relu().unwrap(), "head.1");
    let logits = s.pair_logits(Modality::Visual, &e).unwrap();
    assert_eq!(logits.dims(), &[1, 3, 3, K]);
    let got_l = logits.get(0).unwrap().get(0).unwrap().get(2).unwrap().to_vec1::<f64>().unwrap();
    let want_l = want_l.squeeze(0).unwrap().to_vec1::<f64>().unwrap();
    for (a, b) in got_l.iter().zip(&want_l) {
        assert!((a - b).abs() < 1e-12, "{got_l:?} vs {want_l:?}");
    }
    // Abs makes the logits symmetric; the signed difference does not.
    let sym = |s: &KdsrStudent| {
        let l = s.pair_logits(Modality::Text, &e).unwrap();
        let lt = l.transpose(1, 2).unwrap();
        scalar(&(l - lt).unwrap().abs().unwrap().max_keepdim(3).unwrap().flatten_all().unwrap().max(0).unwrap())
    };
    assert_eq!(sym(&s), 0.0);
    assert!(sym(&student(&KdsrConfig { diff: DiffForm::Signed, ..cfg.clone() }, 1).0) > 0.0);
    // One g layer (the paper) has one affine map.
    let (_, vm1) = student(&KdsrConfig { g_layers: 1, ..cfg.clone() }, 1);
    assert!(!vm1.data().lock().unwrap().contains_key("kdsr.visual.g.1.weight"));
    assert!(KdsrStudent::new(seeded_var_builder(&VarMap::new(), 0, DType::F64, &Device::Cpu), &cfg, 6).is_err());
}

#[test]
fn losses_match_the_free_functions_and_weights_are_applied() {
    let (e_v, e_t, mask, targets) = batch();
    let pm = pair_mask(&mask);
    let f64_of = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
    // The valid-pair paths (holistic over unordered pairs, the code head once per unordered pair) equal the
    // dense (b, q, q) and (b, q, q, K) forms under the pair mask, for every scoring function and both
    // differences; the random teacher scores and codes are not symmetric.
    for (scoring, diff) in [
        (Scoring::Cos, DiffForm::Abs),
        (Scoring::Dot, DiffForm::Abs),
        (Scoring::Euc, DiffForm::Signed),
        (Scoring::Man, DiffForm::Abs),
    ] {
        let cfg = KdsrConfig { w_hol_v: 0.3, w_dis_v: 0.7, w_hol_t: 1.1, w_dis_t: 1.9, scoring, diff, ..config() };
        let (s, _) = student(&cfg, 2);
        let out = s.losses(&e_v, &e_t, &mask, &targets).unwrap();
        let hol = |m, e: &Tensor, t: &Tensor| {
            holistic_loss_code(&s.pred_scores(m, e).unwrap(), &f64_of(t), &pm, 1.5).unwrap()
        };
        let hol_v = hol(Modality::Visual, &e_v, &targets.scores_v);
        let hol_t = hol(Modality::Text, &e_t, &targets.scores_t);
        let dis_v = dissected_loss(&s.pair_logits(Modality::Visual, &e_v).unwrap(), &targets.codes_v, &pm).unwrap();
        let dis_t = dissected_loss(&s.pair_logits(Modality::Text, &e_t).unwrap(), &targets.codes_t, &pm).unwrap();
        let terms = [&out.hol_v, &out.dis_v, &out.hol_t, &out.dis_t].map(|t| scalar(t.as_ref().unwrap()));
        let want = [hol_v, dis_v, hol_t, dis_t].map(|t| scalar(&t));
        for k in 0..4 {
            assert!((terms[k] - want[k]).abs() < 1e-12, "{scoring:?} {diff:?} term {k}: {} vs {}", terms[k], want[k]);
        }
        let total = 0.3 * want[0] + 0.7 * want[1] + 1.1 * want[2] + 1.9 * want[3];
        assert!((scalar(&out.total) - total).abs() < 1e-12);
    }
    let cfg = KdsrConfig { w_hol_v: 0.3, w_dis_v: 0.7, w_hol_t: 1.1, w_dis_t: 1.9, ..config() };
    let (s, _) = student(&cfg, 2);

    // The paper form is used when asked for; switched-off terms are None and leave the total.
    let (sp, _) = student(&KdsrConfig { hol_loss: HolForm::Paper, use_dissected: false, ..cfg.clone() }, 2);
    let out = sp.losses(&e_v, &e_t, &mask, &targets).unwrap();
    assert!(out.dis_v.is_none() && out.dis_t.is_none());
    let hol_v =
        holistic_loss_paper(&sp.pred_scores(Modality::Visual, &e_v).unwrap(), &f64_of(&targets.scores_v), &pm, 1.5)
            .unwrap();
    assert!((scalar(out.hol_v.as_ref().unwrap()) - scalar(&hol_v)).abs() < 1e-12);
    let (sn, _) = student(&KdsrConfig { use_holistic: false, use_dissected: false, ..cfg.clone() }, 2);
    let none = sn.losses(&e_v, &e_t, &mask, &targets).unwrap();
    assert!(none.hol_v.is_none() && none.hol_t.is_none() && scalar(&none.total) == 0.0);

    // Shapes, mask values and code ranges are checked.
    assert!(s.losses(&e_v, &e_t.narrow(1, 0, 3).unwrap(), &mask, &targets).is_err());
    assert!(s.losses(&e_v, &e_t, &mask.narrow(1, 0, 3).unwrap(), &targets).is_err());
    assert!(s.losses(&e_v, &e_t, &(&mask * 0.5).unwrap(), &targets).is_err());
    let bad = TeacherTargets { codes_v: Tensor::full(K as u32, (2, 4, 4), &Device::Cpu).unwrap(), ..targets.clone() };
    assert!(s.losses(&e_v, &e_t, &mask, &bad).is_err());
    let short = TeacherTargets { scores_t: targets.scores_t.narrow(2, 0, 3).unwrap(), ..targets.clone() };
    assert!(s.losses(&e_v, &e_t, &mask, &short).is_err());
}

#[test]
fn total_loss_gradient_matches_finite_differences() {
    let (e_v, e_t, mask, targets) = batch();
    for (hol_loss, diff, g_layers) in
        [(HolForm::Code, DiffForm::Abs, 2), (HolForm::Paper, DiffForm::Signed, 1), (HolForm::Code, DiffForm::Signed, 2)]
    {
        let cfg = KdsrConfig { hol_loss, diff, g_layers, ..config() };
        let (s, _) = student(&cfg, 3);
        let gap =
            grad_check(|x| Ok::<_, mmkd_student_kd::Error>(s.losses(x, &e_t, &mask, &targets)?.total), &e_v, 1e-6);
        assert!(gap < 1e-6, "{hol_loss:?} {diff:?} g_layers {g_layers}: {gap}");
        // Padding rows get no gradient.
        let var = candle_core::Var::from_tensor(&e_v).unwrap();
        let grads = s.losses(var.as_tensor(), &e_t, &mask, &targets).unwrap().total.backward().unwrap();
        let g = grads.get(var.as_tensor()).unwrap().to_vec3::<f64>().unwrap();
        assert!(g[1][2].iter().chain(&g[1][3]).all(|&v| v == 0.0));
        assert!(g[0][0].iter().any(|&v| v != 0.0));
    }
    // Euclidean scoring is differentiable on the diagonal too (zero distance).
    let (s, _) = student(&KdsrConfig { scoring: Scoring::Euc, ..config() }, 4);
    let gap = grad_check(|x| Ok::<_, mmkd_student_kd::Error>(s.losses(x, &e_t, &mask, &targets)?.total), &e_v, 1e-6);
    assert!(gap < 1e-6, "euc: {gap}");
}

#[test]
fn weights_presets() {
    assert_eq!(KdsrConfig::default().weights(), [4.0, 4.0, 0.5, 0.5]);
    assert_eq!(KdsrConfig::preset("code_log").unwrap(), KdsrConfig::default());
    assert_eq!(KdsrConfig::preset("paper").unwrap().weights(), [1.0, 0.5, 1.0, 0.5]);
    assert_eq!(KdsrConfig::preset("paper_ml1m").unwrap().weights(), [0.5, 0.1, 0.5, 0.1]);
    let kept = KdsrConfig { tau: 1.0, ..KdsrConfig::default() }.with_weights("paper").unwrap();
    assert_eq!((kept.tau, kept.w_dis_t), (1.0, 0.5));
    assert!(KdsrConfig::preset("Paper").is_err());
    for name in PRESETS {
        KdsrConfig::preset(name).unwrap().validate().unwrap();
    }
}

/// Spec §14 test 7, and every mode's factors.
#[test]
fn at_schedule_factors() {
    let at = AtConfig::default();
    assert_eq!(at.mode, AtMode::Linear);
    // Linear: η/4 at epoch 0, η from epoch 10, for e^v and e^t only.
    assert_eq!(at.learning_rates(1e-3, 0), (2.5e-4, 1e-3));
    assert_eq!(at.learning_rates(1e-3, 10), (1e-3, 1e-3));
    assert_eq!(at.learning_rates(1e-3, 25), (1e-3, 1e-3));
    assert!((at.lr_factor(5) - 0.625).abs() < 1e-15 && (at.lr_factor(1) - 0.325).abs() < 1e-15);
    let step = AtConfig { mode: AtMode::Step, ..at.clone() };
    let factors: Vec<f64> = (0..12).map(|e| step.lr_factor(e)).collect();
    assert_eq!(factors, [[0.25; 5].as_slice(), &[0.5; 5], &[1.0; 2]].concat());
    let slow = AtConfig { mode: AtMode::ConstantSlow, ..at.clone() };
    assert!((0..50).all(|e| slow.lr_factor(e) == 0.25));
    let off = AtConfig { mode: AtMode::Off, ..at.clone() };
    assert!((0..50).all(|e| off.lr_factor(e) == 1.0));
    assert_eq!(AtConfig { epochs: 0, ..at.clone() }.lr_factor(0), 1.0);
    assert!(AtConfig { rho: 1.5, ..at.clone() }.validate().is_err());
    assert!(AtConfig { gamma: 0.5, ..at }.validate().is_err());
}

#[test]
fn config_defaults_parse_and_reject_typos() {
    let cfg = KdsrConfig::default();
    assert_eq!((cfg.scoring, cfg.n_sub, cfg.n_codes, cfg.tau), (Scoring::Cos, 8, 50, 1.5));
    assert_eq!(
        (cfg.hol_loss, cfg.g_layers, cfg.diff, cfg.quantiser),
        (HolForm::Code, 2, DiffForm::Abs, Quantiser::Kmeans)
    );
    assert!(cfg.use_holistic && cfg.use_dissected);
    let cb = cfg.codebook_config();
    assert_eq!((cb.n_codes, cb.n_sub, cb.scoring, cb.sample_pairs, cb.batch), (50, 8, Scoring::Cos, 4_000_000, 10_000));
    let parsed: KdsrConfig = toml::from_str(
        "scoring = \"euc\"\nhol_loss = \"paper\"\ndiff = \"signed\"\nquantiser = \"vq\"\n[at]\nmode = \"constant_slow\"",
    )
    .unwrap();
    assert_eq!((parsed.scoring, parsed.hol_loss, parsed.diff), (Scoring::Euc, HolForm::Paper, DiffForm::Signed));
    assert_eq!(
        (parsed.quantiser, parsed.at.mode, parsed.at.schedule.clone()),
        (Quantiser::Vq, AtMode::ConstantSlow, vec![5, 10])
    );
    let text = toml::to_string(&parsed).unwrap();
    assert_eq!(toml::from_str::<KdsrConfig>(&text).unwrap(), parsed);
    assert!(toml::from_str::<KdsrConfig>("temperature = 2.0").is_err());
    assert!(toml::from_str::<KdsrConfig>("[at]\nstart = 0.1").is_err());
    assert!(toml::from_str::<KdsrConfig>("[at]\nmode = \"cosine\"").is_err());
    assert!(KdsrConfig { g_layers: 0, ..KdsrConfig::default() }.validate().is_err());
    assert!(KdsrConfig { w_dis_t: -1.0, ..KdsrConfig::default() }.validate().is_err());
}
