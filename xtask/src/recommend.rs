//! `cargo xtask recommend --run DIR --user ID --k 20`: the top-K items for one user from a trained run's best
//! checkpoint, the user's train items excluded ([`mmkd_run::recommend`] rebuilds the model from the run's
//! `run.toml`); this module prints them.

use std::path::PathBuf;

use clap::Args;
use mmkd_run::recommend::{rebuild_spec, recommend, recommend_next};

#[derive(Debug, Args)]
pub struct RecommendArgs {
    /// A `cargo xtask train` output folder (run.toml, config.toml, best.safetensors).
    #[arg(long)]
    pub run: PathBuf,
    /// User id (0-based, as in the data's train.csv).
    #[arg(long)]
    pub user: u32,
    /// Number of items.
    #[arg(long, default_value_t = 20)]
    pub k: usize,
    /// Data folder, if not the one the run was trained on (read from its run.toml).
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

pub fn run(args: &RecommendArgs) -> anyhow::Result<()> {
    if args.k == 0 {
        anyhow::bail!("--k must be at least 1");
    }
    let spec = rebuild_spec(&args.run, args.data.as_deref(), &args.configs, &args.device)?;
    if spec.model.is_sequential() {
        return run_sequential(args, &spec);
    }
    let list = recommend(&spec, args.user, args.k)?;
    let items = &list.items;
    if args.json {
        let out = serde_json::json!({
            "run": args.run, "model": spec.model.name(), "extractor": spec.extractor.name(), "user": args.user,
            "k": args.k, "train_items_excluded": list.n_train_items, "items": items,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "top {} for user {} from {} ({} with {}); {} train items excluded; * = a test item of the user",
        items.len(),
        args.user,
        args.run.display(),
        spec.model.name(),
        spec.extractor.name(),
        list.n_train_items
    );
    println!("{:>5}{:>8}{:>14}{:>8}", "rank", "item", "score", "label");
    for r in items {
        let label = r.label.map_or_else(|| "-".to_string(), |l| l.to_string());
        println!("{:>5}{:>8}{:>14.5}{:>8}{}", r.rank, r.item, r.score, label, if r.in_test { " *" } else { "" });
    }
    let hits = items.iter().filter(|r| r.in_test).count();
    println!("{hits} of the user's {} test items are in the list", list.n_test_items);
    Ok(())
}

/// A sequential run: `--user` and the printed items are the raw ids of `interactions.csv`.
fn run_sequential(args: &RecommendArgs, spec: &mmkd_run::RunSpec) -> anyhow::Result<()> {
    let list = recommend_next(spec, args.user, args.k)?;
    let flags: Vec<&str> = if spec.kdsr { vec!["--kdsr"] } else { Vec::new() };
    if args.json {
        let out = serde_json::json!({
            "run": args.run, "model": spec.model.name(), "flags": flags, "user": args.user,
            "k": args.k, "history_length": list.history_length, "items": list.items,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "next {} items for user {} after their {} interactions, from {} ({}{}); history excluded",
        list.items.len(),
        args.user,
        list.history_length,
        args.run.display(),
        spec.model.name(),
        if flags.is_empty() { String::new() } else { format!(" {}", flags.join(" ")) }
    );
    println!("{:>5}{:>8}{:>14}", "rank", "item", "score");
    for it in &list.items {
        println!("{:>5}{:>8}{:>14.5}", it.rank, it.item, it.score);
    }
    Ok(())
}
