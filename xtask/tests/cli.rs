#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The `xtask` binary end to end on the generated `tiny` preset: `train` for BM3 and GRCN, with the
//! vanilla and the SGFD extractor, under both protocols (each protocol's selection rule must reach
//! `result.json`), bad arguments as errors, and `bench train` printing its table.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn xtask(args: &[&str]) -> Output {
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(args).env("RUST_LOG", "warn");
    if matches!(args.first(), Some(&"train") | Some(&"bench")) {
        cmd.arg("--configs").arg(configs);
    }
    cmd.output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = xtask(args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A fresh folder with the `tiny` preset in `<dir>/tiny` (the folder name picks configs/dataset/tiny.toml).
fn tiny(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mmkd-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data = dir.join("tiny");
    ok(&["gen-data", "--preset", "tiny", "--out", data.to_str().unwrap()]);
    dir
}

fn result(out: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("result.json")).unwrap()).unwrap()
}

#[test]
fn train_runs_both_backbones_extractors_and_protocols() {
    let dir = tiny("train");
    let data = dir.join("tiny");
    let cases = [
        ("bm3", "vanilla", "holdout"),
        ("bm3", "sgfd", "reference"),
        ("grcn", "sgfd", "holdout"),
        ("grcn", "vanilla", "reference"),
    ];
    for (model, extractor, protocol) in cases {
        let out = dir.join(format!("{model}-{extractor}-{protocol}"));
        let printed = ok(&[
            "train",
            "--model",
            model,
            "--extractor",
            extractor,
            "--data",
            data.to_str().unwrap(),
            "--epochs",
            "2",
            "--set",
            &format!("train.protocol={protocol}"),
            "--set",
            "bm3.batch_size=256",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(printed.contains("best epoch"), "{printed}");
        let r = result(&out);
        assert_eq!(r["model"], model);
        assert_eq!(r["protocol"], protocol);
        assert_eq!(r["selected_on"], if protocol == "holdout" { "valid" } else { "test" });
        let (criterion, ndcg) = match (model, protocol) {
            (_, "holdout") => ("recall@20", "standard"),
            ("bm3", _) => ("recall_micro@20", "bm3_fork"),
            _ => ("ndcg@20", "hit_normalised"),
        };
        assert_eq!((r["criterion"].as_str().unwrap(), r["ndcg_form"].as_str().unwrap()), (criterion, ndcg));
        let recall = r["test"]["recall@20"].as_f64().unwrap();
        assert!(recall > 0.0 && recall <= 1.0, "{recall}");
        assert!(r["epochs_run"].as_u64().unwrap() == 2);
        // The resolved configuration is written and names the layers it came from.
        let config = std::fs::read_to_string(out.join("config.toml")).unwrap();
        assert!(config.contains(&format!("model/{model}.toml")), "{config}");
        if protocol == "reference" {
            assert!(config.contains(&format!("protocol/reference/{model}.toml")), "{config}");
        }
        assert!(out.join("best.safetensors").exists() && out.join("metrics.jsonl").exists());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn train_runs_maml_and_the_cf_baselines() {
    let dir = tiny("models");
    let data = dir.join("tiny");
    for (model, extractor) in [
        ("maml", "vanilla"),
        ("maml", "sgfd"),
        ("neumf", "vanilla"),
        ("cml", "vanilla"),
        ("ngcf", "none"),
        ("dgcf", "none"),
    ] {
        let out = dir.join(format!("{model}-{extractor}"));
        ok(&[
            "train",
            "--model",
            model,
            "--extractor",
            extractor,
            "--data",
            data.to_str().unwrap(),
            "--epochs",
            "1",
            "--set",
            "maml.batches_per_epoch=5",
            "--out",
            out.to_str().unwrap(),
        ]);
        let r = result(&out);
        assert_eq!(r["model"], model);
        let recall = r["test"]["recall@20"].as_f64().unwrap();
        assert!(recall > 0.0 && recall <= 1.0, "{model}: {recall}");
    }
    // The id-only baselines take no item features.
    let o = xtask(&[
        "train",
        "--model",
        "cml",
        "--extractor",
        "sgfd",
        "--data",
        data.to_str().unwrap(),
        "--out",
        dir.join("x").to_str().unwrap(),
    ]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("no item features"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_train_arguments_are_errors_that_say_what_is_wrong() {
    let dir = tiny("bad");
    let data = dir.join("tiny");
    let out = dir.join("out");
    let base = ["train", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap(), "--epochs", "1"];
    let err = |extra: &[&str]| {
        let o = xtask(&[&base[..], extra].concat());
        assert!(!o.status.success(), "{extra:?} succeeded");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    assert!(err(&["--model", "bm3", "--extractor", "sgfd_x"]).contains("sgfd_l"));
    assert!(err(&["--model", "bm3", "--extractor", "none"]).contains("extractor"));
    assert!(err(&["--model", "grcn", "--set", "grcn.dim_q=3"]).contains("dim_q"));
    assert!(err(&["--model", "bm3", "--set", "train.criterion=loss@20"]).contains("loss@20"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_train_prints_a_row_per_cell() {
    let dir = tiny("bench");
    let data = dir.join("tiny");
    let json = dir.join("bench.jsonl");
    let printed = ok(&[
        "bench",
        "train",
        "--model",
        "bm3",
        "--extractor",
        "vanilla,sgfd",
        "--data",
        data.to_str().unwrap(),
        "--epochs",
        "2",
        "--evals",
        "1",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(printed.contains("vanilla") && printed.contains("sgfd"), "{printed}");
    let cells: Vec<Value> =
        std::fs::read_to_string(&json).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(cells.len(), 2);
    for c in &cells {
        assert!(c["epoch_secs"].as_f64().unwrap() > 0.0 && c["eval_secs"].as_f64().unwrap() > 0.0);
        assert!(c["batches_per_epoch"].as_u64().unwrap() > 0);
        assert!(c["peak_rss_mib"].as_f64().is_none_or(|m| m > 1.0));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fresh folder with the `tiny-seq` preset in `<dir>/tiny-seq`.
fn tiny_seq(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mmkd-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    ok(&["gen-data", "--preset", "tiny-seq", "--out", dir.join("tiny-seq").to_str().unwrap()]);
    dir
}

#[test]
fn train_runs_the_sequential_models_with_and_without_kdsr() {
    let dir = tiny_seq("seq");
    let data = dir.join("tiny-seq");
    let d = data.to_str().unwrap();
    let pop = dir.join("pop");
    ok(&["train", "--model", "pop", "--data", d, "--out", pop.to_str().unwrap()]);
    let pop_hr = result(&pop)["test"]["hr@20"].as_f64().unwrap();
    for (model, kdsr) in [("mmsr", true), ("sasrec", false), ("gru4rec", true)] {
        let out = dir.join(format!("{model}-{kdsr}"));
        let mut args = vec!["train", "--model", model, "--data", d, "--epochs", "2", "--out", out.to_str().unwrap()];
        if kdsr {
            args.push("--kdsr");
        }
        let printed = ok(&args);
        assert!(printed.contains("hr@20") && printed.contains("test instances"), "{printed}");
        let r = result(&out);
        assert_eq!(r["model"], model);
        for key in ["hr@5", "hr@20", "mrr@5", "mrr@20", "ndcg@20"] {
            assert!(r["test"][key].is_f64(), "{model}: {key} missing in {r}");
        }
        let config = std::fs::read_to_string(out.join("config.toml")).unwrap();
        assert_eq!(config.contains("--kdsr"), kdsr);
        let lines = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
        let first: Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
        // KDSR adds its losses and slows the modality tables down (asynchronous training, ρ = 1/4 at epoch 1).
        assert_eq!(first["losses"].get("hol_v").is_some(), kdsr, "{first}");
        if kdsr {
            let (lr, lr_m) = (first["lr"].as_f64().unwrap(), first["lr_modality"].as_f64().unwrap());
            assert!((lr_m - lr / 4.0).abs() < 1e-12, "{first}");
        }
    }
    assert!(pop_hr > 0.0);
    // Next items for one user from the MMSR run, its history excluded.
    let rec = ok(&["recommend", "--run", dir.join("mmsr-true").to_str().unwrap(), "--user", "3", "--k", "5", "--json"]);
    let v: Value = serde_json::from_str(&rec).unwrap();
    assert_eq!(v["items"].as_array().unwrap().len(), 5);
    // A sequential model on the SGFD layout, and --kdsr on a non-sequential model, are errors.
    let tiny = tiny("seq-bad");
    let bad = xtask(&[
        "train",
        "--model",
        "sasrec",
        "--data",
        tiny.join("tiny").to_str().unwrap(),
        "--out",
        dir.join("bad").to_str().unwrap(),
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("sequential layout"));
    let bad = xtask(&["train", "--model", "bm3", "--kdsr", "--data", d, "--out", dir.join("bad2").to_str().unwrap()]);
    assert!(!bad.status.success());
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&tiny);
}

#[test]
fn bench_train_times_kdsr_next_to_the_plain_backbone() {
    let dir = tiny_seq("bench-seq");
    let printed = ok(&[
        "bench",
        "train",
        "--model",
        "sasrec",
        "--kdsr",
        "--data",
        dir.join("tiny-seq").to_str().unwrap(),
        "--epochs",
        "1",
        "--evals",
        "0",
        "--batches",
        "2",
        "--json",
        dir.join("bench.jsonl").to_str().unwrap(),
    ]);
    assert!(printed.contains("sasrec") && printed.contains("kdsr") && printed.contains("vanilla"), "{printed}");
    // `--batches 2` times epochs of two batches in both cells; `--evals 0` leaves the evaluation out.
    let lines = std::fs::read_to_string(dir.join("bench.jsonl")).unwrap();
    let cells: Vec<serde_json::Value> = lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(cells.len(), 2, "{lines}");
    assert!(cells.iter().all(|c| c["batches_per_epoch"] == 2 && c["eval_secs"].is_null()), "{lines}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs the xtask binary in `cwd` without `--configs`.
fn xtask_in(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask")).args(args).current_dir(cwd).env("RUST_LOG", "warn").output().unwrap()
}

#[test]
fn commands_work_from_any_folder_defaults_from_the_root_given_paths_from_here() {
    let dir = std::env::temp_dir().join(format!("mmkd-cli-cwd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let sub = dir.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    let ok_in = |cwd: &Path, args: &[&str]| {
        let out = xtask_in(cwd, args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    // Relative paths on the command line resolve against the current folder ...
    ok_in(&dir, &["gen-data", "--preset", "tiny", "--out", "tiny"]);
    assert!(dir.join("tiny/train.csv").exists());
    assert!(ok_in(&sub, &["inspect", "--data", "../tiny"]).contains("no problems found"));
    // ... while the default `--configs` is the repository's, wherever the command runs.
    ok_in(
        &sub,
        &["train", "--model", "mf", "--extractor", "none", "--data", "../tiny", "--epochs", "1", "--out", "run"],
    );
    let run = sub.join("run");
    assert!(run.join("result.json").exists());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(config.contains(&root.join("configs").join("base.toml").display().to_string()), "{config}");
    // run.toml records the spec with absolute paths, so `recommend` reads it from another folder.
    let record: toml::Table = toml::from_str(&std::fs::read_to_string(run.join("run.toml")).unwrap()).unwrap();
    let spec = record["spec"].as_table().unwrap();
    assert_eq!((spec["model"].as_str(), spec["extractor"].as_str()), (Some("mf"), Some("none")));
    assert_eq!(spec["data"].as_str().map(PathBuf::from), Some(dir.join("sub/../tiny")));
    let top = ok_in(&dir, &["recommend", "--run", "sub/run", "--user", "0", "--k", "3", "--json"]);
    let v: Value = serde_json::from_str(&top).unwrap();
    assert_eq!((v["model"].as_str(), v["items"].as_array().map(Vec::len)), (Some("mf"), Some(3)));
    let _ = std::fs::remove_dir_all(&dir);
}
