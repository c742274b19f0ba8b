//! The three sequence encoders of KDSR's study (spec `kdsr-mmsr.md` §5): gradients against finite
//! differences (f64, evaluation mode), causality of SASRec and GRU4Rec, invariance to padding, bit-identical
//! outputs from one seed, and the `last_sum` readout of a length-1 input.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions unwrap too.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use mmkd_backbones::seq::gru4rec::{Gru4Rec, Gru4RecConfig};
use mmkd_backbones::seq::mmsr::{Mmsr, MmsrConfig, SeqPooling};
use mmkd_backbones::seq::model::{ItemTables, SeqBatch, SeqEncoder};
use mmkd_backbones::seq::nn::InputFusion;
use mmkd_backbones::seq::sasrec::{SasRec, SasRecConfig};
use mmkd_features::seeded_var_builder;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const CPU: Device = Device::Cpu;
const N_ITEMS: usize = 6;
const D: usize = 4;

fn random(shape: (usize, usize), seed: u64, dtype: DType) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f64> = (0..shape.0 * shape.1).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_vec(v, shape, &CPU).unwrap().to_dtype(dtype).unwrap()
}

fn tables(seed: u64, dtype: DType) -> ItemTables {
    let shape = (N_ITEMS + 1, D);
    ItemTables {
        id: random(shape, seed, dtype),
        visual: random(shape, seed + 1, dtype),
        text: random(shape, seed + 2, dtype),
    }
}

fn batch(inputs: &[&[u32]]) -> SeqBatch {
    SeqBatch::new(inputs, None, &CPU).unwrap()
}

fn flat(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * (1.0 + w.abs()), "{what}, entry {i}: {g} vs {w}");
    }
}

/// The three encoders, built in `dtype` from `seed`, with modality gates on.
fn encoders(seed: u64, dtype: DType) -> Vec<Box<dyn SeqEncoder>> {
    let vm = VarMap::new();
    let vb = seeded_var_builder(&vm, seed, dtype, &CPU);
    let sasrec = SasRecConfig { max_len: 8, inner_size: 6, ..Default::default() };
    let gru4rec = Gru4RecConfig { hidden_size: 3, num_layers: 2, ..Default::default() };
    vec![
        Box::new(Mmsr::new(vb.pp("mmsr"), &MmsrConfig { node_pad_len: 8, ..Default::default() }, D).unwrap()),
        Box::new(SasRec::new(vb.pp("sasrec"), &sasrec, D).unwrap()),
        Box::new(Gru4Rec::new(vb.pp("gru4rec"), &gru4rec, D).unwrap()),
    ]
}

/// Central differences of `Σ_rc out_rc · w_rc` (fixed random weights, so that no direction cancels) against
/// autograd, w.r.t. every entry of `table`; `f` builds the output from the table. The largest gap must be
/// below `1e-6 · max |grad|` and the gradient must not vanish.
fn check_table_gradient(f: &dyn Fn(&Tensor) -> Tensor, table: &Tensor, what: &str) {
    let out = f(table);
    let weights = random((out.dim(0).unwrap(), out.dim(1).unwrap()), 77, DType::F64);
    let loss = |t: &Tensor| (f(t) * &weights).unwrap().sum_all().unwrap();
    let var = Var::from_tensor(table).unwrap();
    let grads = loss(var.as_tensor()).backward().unwrap();
    let auto = flat(grads.get(var.as_tensor()).unwrap());
    let base = flat(table);
    let eps = 1e-6;
    let mut worst = 0f64;
    let mut largest = 0f64;
    for i in 0..base.len() {
        let at = |delta: f64| {
            let mut v = base.clone();
            v[i] += delta;
            let t = Tensor::from_vec(v, table.shape(), &CPU).unwrap();
            loss(&t).to_scalar::<f64>().unwrap()
        };
        let num = (at(eps) - at(-eps)) / (2.0 * eps);
        worst = worst.max((num - auto[i]).abs());
        largest = largest.max(num.abs());
    }
    assert!(largest > 1e-3, "{what}: the gradient vanishes ({largest})");
    assert!(worst < 1e-6 * largest.max(1.0), "{what}: autograd and finite differences differ by {worst} ({largest})");
}

#[test]
fn gradients_match_finite_differences() {
    let inputs: [&[u32]; 3] = [&[1, 2, 1, 3], &[4, 5], &[6]];
    let b = batch(&inputs);
    let t = tables(3, DType::F64);
    for (k, enc) in encoders(5, DType::F64).iter().enumerate() {
        // One table per encoder, so that each path is exercised: MMSR through the RGAT and the gate, SASRec
        // through the gate, the blocks and the layer norms, GRU4Rec through the gate and the GRU.
        let (name, table) = match k {
            0 => ("id", &t.id),
            1 => ("visual", &t.visual),
            _ => ("text", &t.text),
        };
        let f = |x: &Tensor| {
            let mut tt = t.clone();
            match name {
                "id" => tt.id = x.clone(),
                "visual" => tt.visual = x.clone(),
                _ => tt.text = x.clone(),
            }
            enc.encode(&b, &tt, None).unwrap()
        };
        check_table_gradient(&f, table, &format!("{} w.r.t. the {name} table", enc.name()));
    }
    // The other MMSR readouts, and SASRec through the ID path of the gate.
    let vm = VarMap::new();
    let vb = seeded_var_builder(&vm, 9, DType::F64, &CPU);
    for pooling in [SeqPooling::LongShort, SeqPooling::Last] {
        let cfg = MmsrConfig { seq_pooling: pooling, node_pad_len: 0, ..Default::default() };
        let mmsr = Mmsr::new(vb.pp(format!("{pooling:?}")), &cfg, D).unwrap();
        let f = |x: &Tensor| mmsr.encode(&b, &ItemTables { visual: x.clone(), ..t.clone() }, None).unwrap();
        check_table_gradient(&f, &t.visual, &format!("mmsr {pooling:?} w.r.t. the visual table"));
    }
    let sasrec =
        SasRec::new(vb.pp("sasrec"), &SasRecConfig { max_len: 4, fusion: InputFusion::Id, ..Default::default() }, D)
            .unwrap();
    let f = |x: &Tensor| sasrec.encode(&b, &ItemTables { id: x.clone(), ..t.clone() }, None).unwrap();
    check_table_gradient(&f, &t.id, "sasrec (id fusion) w.r.t. the id table");
}

/// A closure running one encoder's `forward_all`.
type Forward<'a> = dyn Fn(&SeqBatch) -> Tensor + 'a;

/// Positions `0..=p` of `forward_all` do not move when the item at `p + 1` changes; the last one does.
#[test]
fn sasrec_and_gru4rec_are_causal() {
    let vm = VarMap::new();
    let vb = seeded_var_builder(&vm, 2, DType::F32, &CPU);
    let sasrec =
        SasRec::new(vb.pp("sasrec"), &SasRecConfig { max_len: 6, inner_size: 8, ..Default::default() }, D).unwrap();
    let gru4rec = Gru4Rec::new(vb.pp("gru4rec"), &Gru4RecConfig { hidden_size: 5, ..Default::default() }, D).unwrap();
    let t = tables(1, DType::F32);
    let before = batch(&[&[1, 2, 3, 4, 5]]);
    let after = batch(&[&[1, 2, 3, 6, 5]]);
    let p = 2;
    let runs: [(&str, Box<Forward<'_>>); 2] = [
        ("sasrec", Box::new(|b: &SeqBatch| sasrec.forward_all(b, &t, None).unwrap())),
        ("gru4rec", Box::new(|b: &SeqBatch| gru4rec.forward_all(b, &t, None).unwrap())),
    ];
    for (name, run) in runs {
        let (x, y) = (run(&before), run(&after));
        let prefix = |t: &Tensor| flat(&t.narrow(1, 0, p + 1).unwrap());
        assert_close(&prefix(&x), &prefix(&y), 1e-6, name);
        // The changed position and the ones after it do move.
        for q in [p + 1, 4] {
            let at = |t: &Tensor| flat(&t.narrow(1, q, 1).unwrap());
            assert!(at(&x).iter().zip(at(&y)).any(|(a, b)| (a - b).abs() > 1e-4), "{name}: position {q} unchanged");
        }
    }
}

/// A sequence's output is the same alone and in a batch where it is padded, in evaluation mode.
#[test]
fn padding_does_not_change_the_output() {
    let t = tables(4, DType::F32);
    let short: &[u32] = &[3, 1, 3];
    let alone = batch(&[short]);
    let padded = batch(&[short, &[1, 2, 4, 5, 6, 2, 3]]);
    for enc in encoders(6, DType::F32) {
        let x = flat(&enc.encode(&alone, &t, None).unwrap());
        let y = flat(&enc.encode(&padded, &t, None).unwrap());
        assert_close(&x, &y[..D], 1e-6, enc.name());
        assert!(x.iter().zip(&y[D..]).any(|(a, b)| (a - b).abs() > 1e-4), "{}: rows are not distinct", enc.name());
    }
    // MMSR: the number of padding nodes changes nothing in evaluation (only the training quirk sees it).
    let vm = VarMap::new();
    let vb = seeded_var_builder(&vm, 1, DType::F32, &CPU);
    let a = Mmsr::new(vb.pp("m"), &MmsrConfig { node_pad_len: 0, ..Default::default() }, D).unwrap();
    let b = Mmsr::new(vb.pp("m"), &MmsrConfig { node_pad_len: 50, ..Default::default() }, D).unwrap();
    assert_close(
        &flat(&a.encode(&padded, &t, None).unwrap()),
        &flat(&b.encode(&padded, &t, None).unwrap()),
        1e-6,
        "mmsr",
    );
}

/// One seed gives bit-identical outputs in training mode (dropout on); another dropout stream does not.
#[test]
fn same_seed_gives_bit_identical_outputs() {
    let t = tables(8, DType::F32);
    let b = batch(&[&[1, 2, 3, 2], &[5, 6], &[4]]);
    let run = |model_seed: u64, stream: u64| -> Vec<Vec<f32>> {
        encoders(model_seed, DType::F32)
            .iter()
            .map(|enc| {
                let mut rng = ChaCha8Rng::seed_from_u64(stream);
                enc.encode(&b, &t, Some(&mut rng)).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
            })
            .collect()
    };
    let first = run(3, 10);
    assert_eq!(first, run(3, 10));
    let other_stream = run(3, 11);
    let other_model = run(4, 10);
    for k in 0..3 {
        assert_ne!(first[k], other_stream[k], "encoder {k}: dropout is not drawn from the stream");
        assert_ne!(first[k], other_model[k], "encoder {k}: weights do not depend on the seed");
    }
    // Evaluation mode is deterministic and differs from training mode.
    for enc in encoders(3, DType::F32) {
        let e1 = flat(&enc.encode(&b, &t, None).unwrap());
        assert_eq!(e1, flat(&enc.encode(&b, &t, None).unwrap()));
        let mut rng = ChaCha8Rng::seed_from_u64(10);
        assert_ne!(e1, flat(&enc.encode(&b, &t, Some(&mut rng)).unwrap()));
    }
}

/// `last_sum` of a length-1 input is twice its only state (the clamp quirk), i.e. twice the `last` readout;
/// for a longer input it is `h_n + h_{n−1}`.
#[test]
fn mmsr_last_sum_of_one_item_is_twice_its_state() {
    let t = tables(2, DType::F32);
    let vm = VarMap::new();
    let vb = seeded_var_builder(&vm, 7, DType::F32, &CPU);
    let sum = Mmsr::new(vb.pp("m"), &MmsrConfig::default(), D).unwrap();
    let last = Mmsr::new(vb.pp("m"), &MmsrConfig { seq_pooling: SeqPooling::Last, ..Default::default() }, D).unwrap();
    let b = batch(&[&[5], &[2, 3, 4]]);
    let s = flat(&sum.encode(&b, &t, None).unwrap());
    let l = flat(&last.encode(&b, &t, None).unwrap());
    let twice: Vec<f64> = l[..D].iter().map(|v| 2.0 * v).collect();
    assert_close(&s[..D], &twice, 1e-6, "n = 1");
    let (_, h) = sum.states(&b, &t, None).unwrap();
    let h = flat(&h); // (2, 3, D)
    let want: Vec<f64> = (0..D).map(|c| h[(3 + 2) * D + c] + h[(3 + 1) * D + c]).collect();
    assert_close(&s[D..], &want, 1e-6, "n = 3");
    // Padding positions and padding nodes are zero.
    assert!(h[D..3 * D].iter().all(|&v| v == 0.0));
    let (f, _) = sum.states(&b, &t, None).unwrap();
    assert_eq!(f.dims(), &[2, 50, D]);
    assert!(flat(&f.narrow(1, 1, 49).unwrap().narrow(0, 0, 1).unwrap()).iter().all(|&v| v == 0.0));
}

#[test]
fn encoders_reject_tables_of_another_width() {
    let t = ItemTables {
        id: random((4, 3), 1, DType::F32),
        visual: random((4, 3), 2, DType::F32),
        text: random((4, 3), 3, DType::F32),
    };
    let b = batch(&[&[1, 2]]);
    for enc in encoders(1, DType::F32) {
        assert!(enc.encode(&b, &t, None).is_err(), "{}", enc.name());
    }
}
