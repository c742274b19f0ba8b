//! Sequential models learn on the planted `tiny-seq` preset: each backbone (MMSR, SASRec, GRU4Rec), with
//! and without KDSR, beats popularity and the same backbone trained on shuffled sequences (which cannot
//! learn order) on test HR@20; the trainer writes its files and is deterministic; KDSR keeps the modality
//! embeddings' correlations closer to the teacher's.

use std::collections::BTreeMap;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use mmkd_backbones::seq::gru4rec::{Gru4Rec, Gru4RecConfig};
use mmkd_backbones::seq::kdsr::KdsrAux;
use mmkd_backbones::seq::mmsr::{Mmsr, MmsrConfig};
use mmkd_backbones::seq::model::SeqEncoder;
use mmkd_backbones::seq::recommender::{
    popularity_sequential, split_instances, ModalityInit, NextItem, SeqAux, SeqConfig, SeqRecommender,
};
use mmkd_backbones::seq::sasrec::{SasRec, SasRecConfig};
use mmkd_backbones::{fit_epoch, train, EpochCtx, Optimizers, Protocol, Selection, TrainConfig};
use mmkd_data::sequential::{SeqDataset, SeqOptions};
use mmkd_nn::optim::{LrSchedule, OptimConfig};
use mmkd_student_kd::kdsr::KdsrConfig;
use mmkd_synth::sequential::{generate_sequential, SeqPreset};
use mmkd_teacher::kdsr::AeConfig;

type R<T> = Result<T, Box<dyn std::error::Error>>;

const D: usize = 32;

#[derive(Clone, Copy, Debug)]
enum Kind {
    Mmsr,
    Sasrec,
    Gru4rec,
}

struct Fixture {
    data: SeqDataset,
    init: ModalityInit,
}

fn fixture(seed: u64) -> R<Fixture> {
    let preset = SeqPreset::by_name("tiny-seq")?;
    let g = generate_sequential(&preset, seed)?;
    // Inputs truncated to 20 keep the tests quick; the planted order is first-order.
    let opts = SeqOptions { max_len: 20, ..SeqOptions::default() };
    let data = SeqDataset::from_interactions(&g.rows, &opts)?;
    let dev = Device::Cpu;
    let n_raw = g.labels.len();
    let ae = AeConfig { dim: D, max_epochs: 200, ..AeConfig::default() };
    let mut tables = Vec::new();
    for (name, values) in [("visual", &g.visual), ("text", &g.text)] {
        let width = values.len() / n_raw;
        let rows: Vec<f32> = data.item_raw[1..]
            .iter()
            .flat_map(|&r| values[r as usize * width..(r as usize + 1) * width].to_vec())
            .collect();
        let x = Tensor::from_vec(rows, (data.n_items, width), &dev)?;
        // Standardise columns, as `[data] normalization = "standard"` does for the generated presets.
        let mean = x.mean_keepdim(0)?;
        let std = (x.broadcast_sub(&mean)?.sqr()?.mean_keepdim(0)? + 1e-6)?.sqrt()?;
        let x = x.broadcast_sub(&mean)?.broadcast_div(&std)?;
        let (z, _) = mmkd_teacher::kdsr::compress(&x, &ae, mmkd_data::derive_seed(seed, name), &dev)?;
        tables.push(Tensor::cat(&[Tensor::zeros((1, D), DType::F32, &dev)?, z], 0)?);
    }
    let text = tables.pop().ok_or("text")?;
    let visual = tables.pop().ok_or("visual")?;
    Ok(Fixture { data, init: ModalityInit { visual, text } })
}

/// The model of `kind` on the training instances of `data` (its own, or a shuffled copy of the fixture's).
fn build(kind: Kind, fx: &Fixture, kdsr: bool, seed: u64, data: &SeqDataset) -> R<SeqRecommender> {
    build_on(kind, fx, kdsr, seed, data, data.train_instances())
}

fn build_on(
    kind: Kind,
    fx: &Fixture,
    kdsr: bool,
    seed: u64,
    data: &SeqDataset,
    train: Vec<mmkd_data::sequential::SeqInstance>,
) -> R<SeqRecommender> {
    let dev = Device::Cpu;
    let vars = VarMap::new();
    let vb = mmkd_features::seeded_var_builder(&vars, seed, DType::F32, &dev);
    let cfg = SeqConfig { embed_dim: D, batch_size: 64, ..SeqConfig::default() };
    let aux: Option<Box<dyn SeqAux>> = if kdsr {
        let k = KdsrConfig { n_sub: 4, n_codes: 10, codebook_sample_pairs: 20_000, ..KdsrConfig::default() };
        Some(Box::new(KdsrAux::new(vb.pp("kdsr"), &k, &fx.init.visual, &fx.init.text, seed, &dev)?))
    } else {
        None
    };
    let build = move |vb: VarBuilder| -> mmkd_backbones::Result<Box<dyn SeqEncoder>> {
        Ok(match kind {
            Kind::Mmsr => {
                Box::new(Mmsr::new(vb.pp("mmsr"), &MmsrConfig { node_pad_len: 0, ..MmsrConfig::default() }, D)?)
            }
            Kind::Sasrec => Box::new(SasRec::new(
                vb.pp("sasrec"),
                &SasRecConfig {
                    max_len: 20,
                    hidden_dropout_prob: 0.2,
                    attn_dropout_prob: 0.2,
                    inner_size: 64,
                    ..SasRecConfig::default()
                },
                D,
            )?),
            Kind::Gru4rec => Box::new(Gru4Rec::new(
                vb.pp("gru4rec"),
                &Gru4RecConfig { hidden_size: D, dropout_prob: 0.1, ..Gru4RecConfig::default() },
                D,
            )?),
        })
    };
    Ok(SeqRecommender::new(&vb, &vars, &cfg, &fx.init, build, aux, Arc::new(data.clone()), train)?)
}

/// Trains `epochs` epochs on the model's training instances and returns test HR@20 on `eval_data`.
fn fit_and_score(model: &mut SeqRecommender, eval_data: &SeqDataset, epochs: usize, lr: f64) -> R<f64> {
    let optim = OptimConfig { lr, ..OptimConfig::default() };
    let mut opt = Optimizers::new(&*model, &optim)?;
    for epoch in 0..epochs {
        let mut rng = mmkd_data::stream(7, &format!("epoch-{epoch}"));
        let mut ctx = EpochCtx { epoch, rng: &mut rng, device: &Device::Cpu };
        let stats = fit_epoch(model, &mut ctx, &mut opt)?;
        assert!(stats.losses["total"].is_finite());
    }
    let r = model.evaluate(eval_data, &eval_data.test_instances())?;
    Ok(r.summary["hr@20"])
}

/// Test HR@20 of popularity. `tag` keeps the output directories of tests running at once apart.
fn popularity_hr20(data: &SeqDataset, tag: &str) -> R<f64> {
    let dir = std::env::temp_dir().join(format!("mmkd-seq-pop-{tag}-{}", std::process::id()));
    let o = popularity_sequential(data, &[5, 20], &dir, &Device::Cpu)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(o.test["hr@20"])
}

fn learns_order(kind: Kind, kdsr: bool, epochs: usize, lr: f64) -> R<()> {
    let fx = fixture(0)?;
    let pop = popularity_hr20(&fx.data, &format!("{kind:?}-{kdsr}"))?;
    let ordered = fit_and_score(&mut build(kind, &fx, kdsr, 1, &fx.data)?, &fx.data, epochs, lr)?;
    let shuffled_data = fx.data.shuffled(3);
    let shuffled = fit_and_score(&mut build(kind, &fx, kdsr, 1, &shuffled_data)?, &fx.data, epochs, lr)?;
    eprintln!("{kind:?} kdsr={kdsr}: HR@20 ordered {ordered:.4}, shuffled {shuffled:.4}, popularity {pop:.4}");
    assert!(ordered > pop + 0.05, "{kind:?}: HR@20 {ordered:.4} does not beat popularity {pop:.4}");
    assert!(
        ordered > shuffled + 0.03,
        "{kind:?}: HR@20 {ordered:.4} does not beat the shuffled-order model {shuffled:.4}"
    );
    Ok(())
}

#[test]
fn mmsr_learns_order() -> R<()> {
    learns_order(Kind::Mmsr, false, 10, 1e-2)
}

#[test]
fn sasrec_learns_order() -> R<()> {
    learns_order(Kind::Sasrec, false, 10, 1e-2)
}

#[test]
fn gru4rec_learns_order() -> R<()> {
    learns_order(Kind::Gru4rec, false, 10, 1e-2)
}

#[test]
fn kdsr_backbones_learn() -> R<()> {
    // MMSR is KDSR's default backbone: the full check. SASRec and GRU4Rec with KDSR must beat popularity.
    learns_order(Kind::Mmsr, true, 10, 1e-2)?;
    let fx = fixture(0)?;
    let pop = popularity_hr20(&fx.data, "kdsr-backbones")?;
    for kind in [Kind::Sasrec, Kind::Gru4rec] {
        let hr = fit_and_score(&mut build(kind, &fx, true, 1, &fx.data)?, &fx.data, 10, 1e-2)?;
        eprintln!("{kind:?} kdsr=true: HR@20 {hr:.4}, popularity {pop:.4}");
        assert!(hr > pop + 0.05, "{kind:?} with KDSR: HR@20 {hr:.4} vs popularity {pop:.4}");
    }
    Ok(())
}

/// Pearson correlation between the pairwise cosines of the tuned image embeddings and those of the frozen
/// compressed features, on a fixed sample of pairs (the paper's Fig. 1 "modality forgetting" measure).
fn modality_correlation(model: &SeqRecommender, z: &Tensor) -> R<f64> {
    let e = model.tables()?.visual;
    let n = z.dim(0)? - 1;
    let mut rng_state = 99u64;
    let mut pairs = Vec::new();
    for _ in 0..2000 {
        rng_state = rng_state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let i = 1 + (rng_state >> 33) as usize % n;
        rng_state = rng_state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let j = 1 + (rng_state >> 33) as usize % n;
        pairs.push((i, j));
    }
    let cos = |t: &Tensor| -> R<Vec<f64>> {
        let rows = t.to_vec2::<f32>()?;
        Ok(pairs
            .iter()
            .map(|&(i, j)| {
                let (a, b) = (&rows[i], &rows[j]);
                let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
                let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
                let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
                f64::from(dot / (na * nb).max(1e-12))
            })
            .collect())
    };
    let (a, b) = (cos(&e)?, cos(z)?);
    let ma = a.iter().sum::<f64>() / a.len() as f64;
    let mb = b.iter().sum::<f64>() / b.len() as f64;
    let cov: f64 = a.iter().zip(&b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    Ok(cov / (va * vb).sqrt())
}

#[test]
fn kdsr_keeps_modality_correlations() -> R<()> {
    // With a large learning rate the tuned image embeddings drift from the features they started from;
    // KDSR's correlation losses hold their pairwise structure closer to the teacher's.
    let fx = fixture(1)?;
    let mut plain = build(Kind::Sasrec, &fx, false, 2, &fx.data)?;
    let mut kdsr = build(Kind::Sasrec, &fx, true, 2, &fx.data)?;
    fit_and_score(&mut plain, &fx.data, 8, 3e-2)?;
    fit_and_score(&mut kdsr, &fx.data, 8, 3e-2)?;
    let c_plain = modality_correlation(&plain, &fx.init.visual)?;
    let c_kdsr = modality_correlation(&kdsr, &fx.init.visual)?;
    eprintln!("correlation with the compressed features: plain {c_plain:.3}, KDSR {c_kdsr:.3}");
    assert!(c_kdsr > c_plain + 0.05, "KDSR {c_kdsr:.3} vs plain {c_plain:.3}");
    Ok(())
}

/// Trains GRU4Rec with KDSR through the trainer into `dir`.
fn train_run(fx: &Fixture, cfg: &TrainConfig, dir: &std::path::Path, resume: bool) -> R<mmkd_backbones::TrainOutcome> {
    let (train_inst, selection) = split_instances(&fx.data, cfg);
    let mut model = build_on(Kind::Gru4rec, fx, true, 5, &fx.data, train_inst)?;
    let evaluator = NextItem::new(&fx.data, cfg.protocol, selection, &model.config().ks)?;
    let optim = OptimConfig { lr: 1e-2, ..OptimConfig::default() };
    Ok(train(&mut model, &evaluator, cfg, &optim, &LrSchedule::Constant, dir, resume, &Device::Cpu)?)
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mmkd-seq-train-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn trainer_writes_results_and_is_deterministic() -> R<()> {
    let fx = fixture(2)?;
    let mut results: Vec<BTreeMap<String, f64>> = Vec::new();
    for protocol in [Protocol::Holdout, Protocol::Holdout, Protocol::Reference] {
        let dir = temp_dir(&format!("{protocol:?}-{}", results.len()));
        let selection = if protocol == Protocol::Reference { Selection::AnyMetric } else { Selection::Criterion };
        let cfg = TrainConfig {
            epochs: 2,
            protocol,
            criterion: "hr@20".into(),
            patience: 5,
            seed: 3,
            selection,
            ..TrainConfig::default()
        };
        let o = train_run(&fx, &cfg, &dir, false)?;
        assert_eq!(o.epochs_run, 2);
        for f in ["result.json", "test_per_user.json", "metrics.jsonl", "best.safetensors", "checkpoint.safetensors"] {
            assert!(dir.join(f).is_file(), "{f} missing");
        }
        let lines = std::fs::read_to_string(dir.join("metrics.jsonl"))?;
        assert_eq!(lines.lines().count(), 2);
        // KDSR's asynchronous rate: the modality tables start at a quarter of the learning rate.
        let first: serde_json::Value = serde_json::from_str(lines.lines().next().ok_or("line")?)?;
        assert_eq!(first["lr_modality"].as_f64(), Some(1e-2 / 4.0));
        let per = o.test_eval(&dir)?;
        assert_eq!(per.users.len(), fx.data.test_instances().len());
        for key in ["hr@5", "hr@20", "mrr@5", "mrr@20", "ndcg@20"] {
            assert!(o.test.contains_key(key), "{key}");
        }
        assert!(o.test["hr@20"] >= o.test["hr@5"] && o.test["hr@5"] >= o.test["mrr@5"]);
        if protocol == Protocol::Reference {
            // The reported test value of each metric is its best over the epochs.
            let mut best = f64::NEG_INFINITY;
            for line in lines.lines() {
                let v: serde_json::Value = serde_json::from_str(line)?;
                best = best.max(v["valid"]["mrr@20"].as_f64().ok_or("mrr@20")?);
            }
            assert_eq!(o.test["mrr@20"], best);
            assert_eq!(o.selected_on, mmkd_backbones::SelectedOn::Test);
        }
        results.push(o.test.clone());
        let _ = std::fs::remove_dir_all(&dir);
    }
    assert_eq!(results[0], results[1], "the same seed must give the same metrics");
    Ok(())
}

#[test]
fn a_sequential_run_resumes_to_the_uninterrupted_result() -> R<()> {
    let fx = fixture(2)?;
    for selection in [Selection::Criterion, Selection::AnyMetric] {
        let protocol = if selection == Selection::AnyMetric { Protocol::Reference } else { Protocol::Holdout };
        let cfg = TrainConfig {
            epochs: 4,
            protocol,
            criterion: "hr@20".into(),
            seed: 3,
            selection,
            ..TrainConfig::default()
        };
        let whole = temp_dir(&format!("whole-{selection:?}"));
        let parts = temp_dir(&format!("parts-{selection:?}"));
        let a = train_run(&fx, &cfg, &whole, false)?;
        train_run(&fx, &TrainConfig { epochs: 2, ..cfg.clone() }, &parts, false)?;
        let b = train_run(&fx, &cfg, &parts, true)?;
        assert_eq!((a.test.clone(), a.valid.clone(), a.best_epoch), (b.test.clone(), b.valid.clone(), b.best_epoch));
        for f in ["best.safetensors", "checkpoint.safetensors", "test_per_user.json"] {
            assert_eq!(std::fs::read(whole.join(f))?, std::fs::read(parts.join(f))?, "{f}");
        }
        let _ = std::fs::remove_dir_all(&whole);
        let _ = std::fs::remove_dir_all(&parts);
    }
    Ok(())
}
