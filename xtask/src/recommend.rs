//! `cargo xtask recommend --run DIR --user ID --k 20`: the top-K items for one user from a trained run's best
//! checkpoint, the user's train items excluded. The model is rebuilt as `train` built it — same model,
//! extractor and data, with the run's resolved `config.toml` as the last configuration layer — and
//! `best.safetensors` is loaded into it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use mmkd_backbones::Backbone;

use crate::train::{Prepared, TrainArgs};

#[derive(Debug, Args)]
pub struct RecommendArgs {
    /// A `cargo xtask train` output folder (config.toml, best.safetensors).
    #[arg(long)]
    pub run: PathBuf,
    /// User id (0-based, as in the data's train.csv).
    #[arg(long)]
    pub user: u32,
    /// Number of items.
    #[arg(long, default_value_t = 20)]
    pub k: usize,
    /// Data folder, if not the one the run was trained on (read from its config.toml).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Folder of base.toml, dataset/ and model/.
    #[arg(long, default_value = "configs")]
    pub configs: PathBuf,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// What the first line of a run's `config.toml` says about the `train` command that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunHeader {
    pub model: String,
    pub extractor: String,
    /// Further flags of the command, e.g. `--kdsr`.
    pub flags: Vec<String>,
    pub data: PathBuf,
}

/// Parses `# Resolved configuration of `cargo xtask train --model M --extractor E [FLAGS]` on DATA.` (the
/// line `train` writes first).
pub fn parse_header(text: &str) -> Option<RunHeader> {
    let line = text.lines().next()?;
    let rest = line.strip_prefix("# Resolved configuration of `cargo xtask train --model ")?;
    let (command, data) = rest.split_once("` on ")?;
    let (model, rest) = command.split_once(" --extractor ")?;
    let mut words = rest.split_whitespace();
    let extractor = words.next()?.to_string();
    let flags = words.map(str::to_owned).collect();
    let data = data.strip_suffix('.')?;
    Some(RunHeader { model: model.to_string(), extractor, flags, data: PathBuf::from(data) })
}

/// The header of `run`'s `config.toml`.
pub fn read_header(run: &Path) -> anyhow::Result<RunHeader> {
    let path = run.join("config.toml");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    parse_header(&text).with_context(|| {
        format!(
            "{}: the first line does not name the `train` command (not written by `cargo xtask train`?)",
            path.display()
        )
    })
}

/// Rebuilds the model of a finished run and loads its best checkpoint.
pub fn load_run(
    run: &Path,
    data: Option<&Path>,
    configs: &Path,
    device: &str,
) -> anyhow::Result<(Prepared, RunHeader)> {
    let (args, header) = run_args(run, data, configs, device)?;
    let prepared = args.prepare().with_context(|| format!("rebuilding the model of {}", run.display()))?;
    let best = run.join(mmkd_backbones::train::BEST_FILE);
    let mut vars = prepared.model.vars().clone();
    vars.load(&best).with_context(|| format!("loading {}", best.display()))?;
    Ok((prepared, header))
}

/// The `train` arguments that rebuild the model of `run` (its resolved `config.toml` as the last layer).
fn run_args(run: &Path, data: Option<&Path>, configs: &Path, device: &str) -> anyhow::Result<(TrainArgs, RunHeader)> {
    let header = read_header(run)?;
    // Through clap, so that `train` flags added later keep their defaults here.
    #[derive(clap::Parser)]
    struct Train {
        #[command(flatten)]
        args: TrainArgs,
    }
    let data = data.map_or_else(|| header.data.clone(), Path::to_path_buf);
    let config = run.join("config.toml");
    let mut argv: Vec<&std::ffi::OsStr> = vec![
        "train".as_ref(),
        "--model".as_ref(),
        header.model.as_ref(),
        "--extractor".as_ref(),
        header.extractor.as_ref(),
        "--data".as_ref(),
        data.as_os_str(),
        "--config".as_ref(),
        config.as_os_str(),
        "--configs".as_ref(),
        configs.as_os_str(),
        "--device".as_ref(),
        device.as_ref(),
        "--out".as_ref(),
        run.as_os_str(),
    ];
    argv.extend(header.flags.iter().map(|f| std::ffi::OsStr::new(f.as_str())));
    let args = <Train as clap::Parser>::try_parse_from(argv)
        .with_context(|| {
            format!("{}: the run's model `{}` or extractor `{}`", run.display(), header.model, header.extractor)
        })?
        .args;
    Ok((args, header))
}

/// A sequential run: the next items for the user's whole sequence (its last `max_len` items), the items of
/// the sequence excluded. `--user` and the printed items are the raw ids of `interactions.csv`.
fn run_sequential(args: &RecommendArgs) -> anyhow::Result<()> {
    let (train_args, header) = run_args(&args.run, args.data.as_deref(), &args.configs, &args.device)?;
    let p = crate::train_seq::prepare(&train_args)
        .with_context(|| format!("rebuilding the model of {}", args.run.display()))?;
    let model = p.model.context("a popularity run has no checkpoint to recommend from")?;
    let best = args.run.join(mmkd_backbones::train::BEST_FILE);
    let mut vars = model.vars().clone();
    vars.load(&best).with_context(|| format!("loading {}", best.display()))?;
    let Some(user) = p.data.user_raw.iter().position(|&u| u == args.user) else {
        bail!("--user {}: no such userID after the k-core filter of {}", args.user, train_args.data.display());
    };
    let seq = &p.data.sequences[user];
    let input = &seq[seq.len().saturating_sub(p.data.max_len)..];
    let batch = mmkd_backbones::seq::model::SeqBatch::new(&[input], None, &p.device)?;
    let tables = model.tables()?;
    let scores = model.logits(&batch, &tables, None)?.flatten_all()?.to_vec1::<f32>()?; // item j + 1 at j
    let history: Vec<u32> = seq.iter().map(|&i| i - 1).collect();
    let top = top_k_excluding(&scores, &history, args.k);
    let items: Vec<serde_json::Value> = top
        .iter()
        .enumerate()
        .map(|(r, &(col, score))| {
            serde_json::json!({ "rank": r + 1, "item": p.data.item_raw[col as usize + 1], "score": score })
        })
        .collect();
    if args.json {
        let out = serde_json::json!({
            "run": args.run, "model": header.model, "flags": header.flags, "user": args.user,
            "k": args.k, "history_length": seq.len(), "items": items,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "next {} items for user {} after their {} interactions, from {} ({}{}); history excluded",
        items.len(),
        args.user,
        seq.len(),
        args.run.display(),
        header.model,
        if header.flags.is_empty() { String::new() } else { format!(" {}", header.flags.join(" ")) }
    );
    println!("{:>5}{:>8}{:>14}", "rank", "item", "score");
    for it in &items {
        let int = |v: &serde_json::Value| v.as_u64().map_or_else(|| "-".to_string(), |x| x.to_string());
        println!("{:>5}{:>8}{:>14.5}", int(&it["rank"]), int(&it["item"]), it["score"].as_f64().unwrap_or(f64::NAN));
    }
    Ok(())
}

/// One recommended item.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Recommendation {
    pub rank: usize,
    pub item: u32,
    pub score: f32,
    /// The item's label value, when the data have labels.
    pub label: Option<i64>,
    /// Whether the item is among the user's test items.
    pub in_test: bool,
}

/// The `k` best items of `scores` (one per item) that are not in `exclude`: descending score, ties to the
/// lower item id, NaN last (the evaluation's order).
pub fn top_k_excluding(scores: &[f32], exclude: &[u32], k: usize) -> Vec<(u32, f32)> {
    let mut masked = vec![false; scores.len()];
    for &i in exclude {
        if let Some(m) = masked.get_mut(i as usize) {
            *m = true;
        }
    }
    let mut candidates: Vec<(u32, f32)> =
        scores.iter().enumerate().filter(|(i, _)| !masked[*i]).map(|(i, &s)| (i as u32, s)).collect();
    let key = |s: f32| if s.is_nan() { f32::NEG_INFINITY } else { s };
    candidates.sort_by(|a, b| key(b.1).total_cmp(&key(a.1)).then(a.0.cmp(&b.0)));
    candidates.truncate(k);
    candidates
}

pub fn run(args: &RecommendArgs) -> anyhow::Result<()> {
    if args.k == 0 {
        bail!("--k must be at least 1");
    }
    if matches!(read_header(&args.run)?.model.as_str(), "mmsr" | "sasrec" | "gru4rec") {
        return run_sequential(args);
    }
    let (mut prepared, header) = load_run(&args.run, args.data.as_deref(), &args.configs, &args.device)?;
    let dataset = &prepared.dataset;
    let user = args.user as usize;
    if user >= dataset.n_users {
        bail!("--user {user}: the data have users 0..{}", dataset.n_users);
    }
    let model = prepared.model.as_mut();
    model.checkpoint_loaded()?;
    model.prepare_eval()?;
    let scores = model.score_users(&[args.user])?; // (1, n_items)
    let scores = scores.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let train = dataset.train.row(user);
    let test = dataset.test.row(user);
    let labels = dataset.labels.as_ref();
    let items: Vec<Recommendation> = top_k_excluding(&scores, train, args.k)
        .into_iter()
        .enumerate()
        .map(|(r, (item, score))| Recommendation {
            rank: r + 1,
            item,
            score,
            label: labels.and_then(|l| l.per_item.get(item as usize).and_then(|&c| l.values.get(c as usize)).copied()),
            in_test: test.contains(&item),
        })
        .collect();
    if args.json {
        let out = serde_json::json!({
            "run": args.run, "model": header.model, "extractor": header.extractor, "user": args.user,
            "k": args.k, "train_items_excluded": train.len(), "items": items,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "top {} for user {} from {} ({} with {}); {} train items excluded; * = a test item of the user",
        items.len(),
        args.user,
        args.run.display(),
        header.model,
        header.extractor,
        train.len()
    );
    println!("{:>5}{:>8}{:>14}{:>8}", "rank", "item", "score", "label");
    for r in &items {
        let label = r.label.map_or_else(|| "-".to_string(), |l| l.to_string());
        println!("{:>5}{:>8}{:>14.5}{:>8}{}", r.rank, r.item, r.score, label, if r.in_test { " *" } else { "" });
    }
    let hits = items.iter().filter(|r| r.in_test).count();
    println!("{hits} of the user's {} test items are in the list", test.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse() {
        let text = "# Resolved configuration of `cargo xtask train --model grcn --extractor sgfd_l` on data/my office.\n# Layers: x.\n";
        let h = parse_header(text).unwrap();
        assert_eq!((h.model.as_str(), h.extractor.as_str()), ("grcn", "sgfd_l"));
        assert_eq!(h.data, PathBuf::from("data/my office"));
        assert!(h.flags.is_empty());
        let h = parse_header(
            "# Resolved configuration of `cargo xtask train --model mmsr --extractor vanilla --kdsr` on d.\n",
        )
        .unwrap();
        assert_eq!(
            (h.extractor.as_str(), h.flags.as_slice(), h.data.to_str()),
            ("vanilla", &["--kdsr".to_string()][..], Some("d"))
        );
        assert_eq!(parse_header("seed = 0\n"), None);
    }

    #[test]
    fn top_k_excludes_and_orders() {
        let scores = [0.5, 0.9, f32::NAN, 0.9, 0.1, 0.7];
        assert_eq!(top_k_excluding(&scores, &[5], 3), vec![(1, 0.9), (3, 0.9), (0, 0.5)]);
        let all = top_k_excluding(&scores, &[1, 3], 10);
        assert_eq!(all.iter().map(|x| x.0).collect::<Vec<_>>(), [5, 0, 4, 2]);
    }
}
