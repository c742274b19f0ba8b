#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `cargo xtask reproduce` and `cargo xtask recommend` end to end, each in a fresh working folder: the quick
//! smoke version of a few cells (plan, run folders, report with both tables, p-values and SVG plots), a
//! second invocation that skips the finished runs, an interrupted run that resumes, `--only`, a run folder of
//! another configuration as an error, and top-K recommendations from a trained cell.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// A fresh working folder for one test.
fn workdir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mmkd-reproduce-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn configs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs").canonicalize().unwrap()
}

/// Runs the xtask binary in `dir` with the repository's configs; `reproduce` writes its runs and reports into
/// `dir` (given as relative paths, which resolve against the current folder; the defaults would resolve
/// against the repository root).
fn xtask(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(args);
    if args.first() == Some(&"reproduce") {
        cmd.args(["--runs", "runs", "--reports", "reports"]);
    }
    cmd.arg("--configs").arg(configs()).current_dir(dir).env("RUST_LOG", "warn").output().unwrap()
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = xtask(dir, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{args:?}:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn is_svg(path: &Path) -> bool {
    let text = read(path);
    text.trim_start().starts_with("<svg") && text.trim_end().ends_with("</svg>")
}

const CELLS: &str = "neumf,grcn-vanilla,grcn-sgfd";

#[test]
fn quick_reproduce_writes_the_report_and_resumes() {
    let dir = workdir("quick");
    let printed = ok(&dir, &["reproduce", "office", "--quick", "--only", CELLS]);
    // The plan comes first: the cells, the seeds and an estimate.
    assert!(printed.contains("3 cell(s) × 1 seed(s) = 3 runs, holdout protocol"), "{printed}");
    assert!(printed.contains("grcn-sgfd") && printed.contains("estimated"), "{printed}");
    assert!(printed.contains("pretrained once, frozen, for grcn-sgfd"), "{printed}");

    // Only the selected cells ran, each into runs/office-quick/<cell>/seed0.
    let runs = dir.join("runs/office-quick");
    let cells: BTreeSet<String> = std::fs::read_dir(&runs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "teachers")
        .collect();
    assert_eq!(cells, CELLS.split(',').map(str::to_owned).collect());
    for cell in CELLS.split(',') {
        let seed = runs.join(cell).join("seed0");
        for file in ["result.json", "test_per_user.json", "metrics.jsonl", "config.toml", "cell.json", "train.log"] {
            assert!(seed.join(file).exists(), "{}", seed.join(file).display());
        }
    }
    // The SGFD cell distilled from the shared pretrained teacher.
    let config = read(&runs.join("grcn-sgfd/seed0/config.toml"));
    assert!(config.contains("teacher_mode = \"pretrained\"") && config.contains("teachers/"), "{config}");

    // The report: generated data said in the first line, both tables, the paper's values, p-values, plots.
    let reports = dir.join("reports/office-quick");
    let md = read(&reports.join("report.md"));
    assert!(md.lines().next().unwrap().contains("Generated data"), "{md}");
    for needle in ["## Table 2", "## Table 3", "## Fig. 3", "## Fig. 4", "13.88*", "p (users)", "SGFD_GRCN vs GRCN"] {
        assert!(md.contains(needle), "missing `{needle}` in\n{md}");
    }
    // The SGFD_GRCN-vs-GRCN comparison has a p-value over users (a number, not n/a).
    let row = md.lines().find(|l| l.starts_with("| SGFD_GRCN vs GRCN | Recall@20")).unwrap();
    let p_users = row.split('|').nth(5).unwrap().trim().trim_end_matches('*');
    assert!(p_users.parse::<f64>().is_ok() || p_users.contains('e'), "{row}");
    assert!(md.contains("not run"), "cells outside --only are reported as not run");
    for svg in ["plots/table2.svg", "plots/tsne.svg", "plots/curves/grcn-sgfd.svg", "plots/curves/neumf.svg"] {
        assert!(is_svg(&reports.join(svg)), "{svg}");
    }
    assert!(read(&reports.join("configs/grcn-sgfd.toml")).contains("[sgfd]"));
    let json: Value = serde_json::from_str(&read(&reports.join("results.json"))).unwrap();
    assert_eq!(json["protocol"], "holdout");
    let recall = json["cells"]["grcn-sgfd"]["runs"][0]["test"]["recall@20"].as_f64().unwrap();
    assert!(recall > 0.0 && recall <= 1.0);
    let table2 = &json["tables"][0];
    assert_eq!(table2["id"], "table2");
    assert!(table2["comparisons"][0]["p_users"].is_f64() || table2["comparisons"][0]["p_users"].is_null());
    let csv = read(&reports.join("results.csv"));
    assert!(csv.starts_with("kind,table,cell,label,seed,metric,value"));
    assert!(csv.lines().any(|l| l.starts_with("run,,grcn-sgfd,SGFD_GRCN,0,recall@20,")), "{csv}");
    assert!(csv.lines().any(|l| l.starts_with("p_users,table2,")), "{csv}");

    // A second invocation skips the finished runs: nothing is trained, result files are untouched.
    let result = runs.join("grcn-sgfd/seed0/result.json");
    let before = std::fs::metadata(&result).unwrap().modified().unwrap();
    let out = xtask(&dir, &["reproduce", "office", "--quick", "--only", CELLS]);
    assert!(out.status.success());
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("0 of 3 runs to do"), "{printed}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("done in"), "a finished run was run again");
    assert_eq!(std::fs::metadata(&result).unwrap().modified().unwrap(), before);

    // An interrupted run (no result.json, its state.json left) is continued with --resume.
    std::fs::remove_file(runs.join("neumf/seed0/result.json")).unwrap();
    let printed = ok(&dir, &["reproduce", "office", "--quick", "--only", CELLS]);
    assert!(printed.contains("1 of 3 runs to do"), "{printed}");
    assert!(runs.join("neumf/seed0/result.json").exists());
    let log = read(&runs.join("neumf/seed0/train.log"));
    assert!(!log.contains("Error:"), "{log}");

    // Top-K from the trained SGFD cell: k distinct items, by descending score, none of the user's train items.
    let user = 3;
    let out = ok(
        &dir,
        &[
            "recommend",
            "--run",
            "runs/office-quick/grcn-sgfd/seed0",
            "--user",
            &user.to_string(),
            "--k",
            "20",
            "--json",
        ],
    );
    let rec: Value = serde_json::from_str(&out).unwrap();
    let items: Vec<(u64, f64)> = rec["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["item"].as_u64().unwrap(), r["score"].as_f64().unwrap()))
        .collect();
    assert_eq!(items.len(), 20);
    assert_eq!(items.iter().map(|x| x.0).collect::<BTreeSet<_>>().len(), 20, "distinct");
    assert!(items.windows(2).all(|w| w[0].1 >= w[1].1), "sorted by score: {items:?}");
    let train = read(&dir.join("runs/quick-data/tiny/train.csv"));
    let header: Vec<&str> = train.lines().next().unwrap().split(',').collect();
    let (ci, cu) =
        (header.iter().position(|c| *c == "itemID").unwrap(), header.iter().position(|c| *c == "userID").unwrap());
    let seen: BTreeSet<u64> = train
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f[cu].parse::<u64>().unwrap() == user)
        .map(|f| f[ci].parse().unwrap())
        .collect();
    assert!(!seen.is_empty());
    assert!(items.iter().all(|(i, _)| !seen.contains(i)), "a train item was recommended");
    assert_eq!(rec["train_items_excluded"].as_u64().unwrap() as usize, seen.len());
    let table = ok(&dir, &["recommend", "--run", "runs/office-quick/neumf/seed0", "--user", "0", "--k", "5"]);
    assert!(table.contains("top 5 for user 0"), "{table}");
    let bad = xtask(&dir, &["recommend", "--run", "runs/office-quick/neumf/seed0", "--user", "100000"]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("--user 100000"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn plan_filters_cells_and_refuses_runs_of_another_configuration() {
    let dir = workdir("plan");
    // Every cell of the definition, 2 seeds: 17 × 2 runs, and nothing runs with --plan.
    let printed = ok(&dir, &["reproduce", "office", "--quick", "--seeds", "2", "--plan"]);
    assert!(printed.contains("17 cell(s) × 2 seed(s) = 34 runs"), "{printed}");
    for cell in ["maml-sgfd", "bm3-vanilla", "grcn-sgfd_s", "grcn-teacher_deep_labels", "dgcf"] {
        assert!(printed.lines().any(|l| l.starts_with(cell)), "{cell} missing from\n{printed}");
    }
    assert!(!dir.join("runs/office-quick/neumf").exists());
    // --only takes table ids and globs; both protocols get their own run set.
    let printed = ok(&dir, &["reproduce", "office", "--quick", "--only", "table3", "--plan"]);
    assert!(printed.contains("5 cell(s) × 1 seed(s)"), "{printed}");
    let printed =
        ok(&dir, &["reproduce", "office", "--quick", "--only", "bm3-*", "--protocol", "holdout,reference", "--plan"]);
    assert!(printed.contains("runs/office-reference-quick") && printed.contains("reference protocol"), "{printed}");
    let bad = xtask(&dir, &["reproduce", "office", "--quick", "--only", "nope", "--plan"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("matches no cell"));
    let bad = xtask(&dir, &["reproduce", "nowhere", "--plan"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("office"));

    // A run folder started with other arguments is not silently mixed in.
    let seed = dir.join("runs/office-quick/neumf/seed0");
    std::fs::create_dir_all(&seed).unwrap();
    std::fs::write(seed.join("cell.json"), r#"{"cell": "neumf", "seed": 0, "args": ["train", "--epochs", "99"]}"#)
        .unwrap();
    let bad = xtask(&dir, &["reproduce", "office", "--quick", "--only", "neumf", "--plan"]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && err.contains("another configuration") && err.contains("--epochs 99"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
