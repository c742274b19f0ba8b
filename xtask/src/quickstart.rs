//! `cargo xtask quickstart`: the default job on the embedded default data. It generates the `office` preset
//! into `data/office` if no data are there, validates it, ranks all items for every test user with the
//! popularity and random baselines, and writes `reports/quickstart/<name>.json`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

#[derive(Debug, Args)]
pub struct QuickstartArgs {
    /// Data folder; generated from the preset of the same name when it holds no data set.
    #[arg(long, default_value = "data/office")]
    pub data: PathBuf,
    /// Preset used when the folder must be generated.
    #[arg(long, default_value = "office")]
    pub preset: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn run(args: &QuickstartArgs) -> anyhow::Result<()> {
    let device = mmkd_run::device::parse(&args.device)?;
    let generated = !args.data.join("train.csv").exists()
        && std::fs::read_dir(&args.data).map(|mut d| d.next().is_none()).unwrap_or(true);
    if generated {
        crate::gen_data::generate(&args.preset, args.seed, &args.data)?;
    }
    let (dataset, features) = mmkd_run::load_checked(&args.data)?;
    println!("{}", dataset.stats());
    if let Some(f) = &features {
        println!("features: {:?} with dims {:?}", f.names(), f.dims());
    }
    let cfg = eval_config(&crate::paths::repo("configs/base.toml"))?;
    let pop = mmkd_eval::baselines::popularity(&dataset.train, &dataset.test, &cfg, &device)?;
    let random = mmkd_eval::baselines::random(&dataset.train, &dataset.test, &cfg, &device, args.seed)?;
    let test = mmkd_eval::paired_t_test(&pop.per_user["recall@20"], &random.per_user["recall@20"])?;
    println!("\n{:<12}{:>12}{:>12}{:>12}{:>12}", "model", "recall@20", "ndcg@20", "hit@20", "mrr@20");
    for (name, r) in [("popularity", &pop), ("random", &random)] {
        let m = |k: &str| r.summary.get(k).copied().unwrap_or(f64::NAN);
        println!(
            "{:<12}{:>12.4}{:>12.4}{:>12.4}{:>12.4}",
            name,
            m("recall@20"),
            m("ndcg@20"),
            m("hit@20"),
            m("mrr@20")
        );
    }
    println!("popularity vs random, recall@20 over {} users: t = {:.2}, p = {:.2e}", test.n, test.t, test.p_value);

    let name = args.data.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "data".into());
    let out_dir = crate::paths::repo("reports/quickstart");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let report = serde_json::json!({
        "data": args.data, "generated_now": generated, "ndcg_form": cfg.ndcg, "stats": dataset.stats(),
        "popularity": pop.summary, "random": random.summary,
        "t_test_recall@20": { "t": test.t, "df": test.df, "p_value": test.p_value },
    });
    let path = out_dir.join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(&report)?;
    mmkd_features::write_atomically(&path, |w| std::io::Write::write_all(w, text.as_bytes()))?;
    println!("report: {}", path.display());
    Ok(())
}

/// The `[eval]` table of the base configuration, or the defaults when the file is absent.
fn eval_config(path: &std::path::Path) -> anyhow::Result<mmkd_eval::EvalConfig> {
    if !path.exists() {
        return Ok(mmkd_eval::EvalConfig::default());
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let table: toml::Table = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    match table.get("eval") {
        Some(eval) => eval.clone().try_into().with_context(|| format!("{}: invalid [eval] table", path.display())),
        None => Ok(mmkd_eval::EvalConfig::default()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_shipped_base_config_parses() {
        let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/base.toml"));
        let cfg = super::eval_config(path).unwrap();
        assert_eq!(cfg.ks, vec![10, 20, 50]);
        assert_eq!(cfg.ndcg, mmkd_eval::NdcgForm::Standard);
    }
}
