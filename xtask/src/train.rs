//! `cargo xtask train --model M --data DIR --out DIR`: the command line of a run. It converts into a
//! [`RunSpec`], which `mmkd_run` resolves ([`mmkd_run::config`]), builds ([`mmkd_run::prepare()`],
//! [`mmkd_run::seq`]), records in the run folder ([`mmkd_run::run_dir`]) and trains ([`mmkd_run::execute`]).

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use mmkd_run::execute::{SelectedOn, TrainOutcome};
use mmkd_run::{ModelKind, Prepared, RunSpec, SeqPrepared};

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Backbone.
    #[arg(long, value_enum)]
    pub model: ModelKind,
    /// Item-feature extractor: `vanilla` (one linear layer per modality, `[projection]`), `none` (ids only),
    /// `sgfd` (`[sgfd]`) or an SGFD preset (sgfd_l, sgfd_f, sgfd_e, sgfd_s, vanilla_deep, …), which becomes
    /// the base of `[sgfd]` under the config files and `--set`. `pop` uses none.
    #[arg(long, default_value = "vanilla")]
    pub extractor: String,
    /// Data folder (SGFD or MMRec layout); its name picks `configs/dataset/<name>.toml`.
    #[arg(long)]
    pub data: PathBuf,
    /// A config file applied after `configs/{base,dataset/<name>,model/<model>}.toml`.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override `KEY=VALUE` with a dotted key, e.g. `--set optim.lr=1e-2 --set train.criterion=ndcg@20`;
    /// the value is read as TOML, else as a string. Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Maximum epochs (`train.epochs`).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Folder of a pretrained SGFD teacher (`cargo xtask teacher`): `sgfd.teacher_mode = "pretrained"`.
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Run seed (top-level `seed`).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Continue the run in `--out` after its last finished epoch.
    #[arg(long)]
    pub resume: bool,
    /// Output folder: config.toml, checkpoints, metrics.jsonl, result.json, test_per_user.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Folder of base.toml, dataset/ and model/.
    #[arg(long, default_value = "configs")]
    pub configs: PathBuf,
    /// Sequential models: add KDSR's correlation distillation (`[kdsr]`) and asynchronous learning rates.
    #[arg(long)]
    pub kdsr: bool,
}

impl TryFrom<&TrainArgs> for RunSpec {
    type Error = mmkd_run::Error;

    fn try_from(a: &TrainArgs) -> mmkd_run::Result<Self> {
        Ok(RunSpec {
            model: a.model,
            extractor: a.extractor.parse()?,
            data: a.data.clone(),
            config: a.config.clone(),
            set: a.set.clone(),
            epochs: a.epochs,
            teacher: a.teacher.clone(),
            seed: a.seed,
            kdsr: a.kdsr,
            device: a.device.clone(),
            configs: a.configs.clone(),
            out: a.out.clone(),
            resume: a.resume,
        })
    }
}

pub fn run(args: &TrainArgs) -> anyhow::Result<()> {
    let spec = RunSpec::try_from(args)?;
    if spec.model.is_sequential() || mmkd_data::sequential::is_sequential(&spec.data) {
        return run_sequential(&spec);
    }
    if spec.kdsr {
        bail!("--kdsr applies to the sequential models (mmsr, sasrec, gru4rec), not to --model {}", spec.model.name());
    }
    let Prepared { cfg, layers, dataset, view, mut model, device } = mmkd_run::prepare(&spec)?;
    mmkd_run::run_dir::write(&spec, &cfg, &layers)?;
    let outcome = mmkd_run::execute::train(model.as_mut(), &view, &cfg, &spec.out, spec.resume, &device)
        .with_context(|| format!("training {} into {}", spec.model.name(), spec.out.display()))?;
    print_outcome(&outcome, &dataset.name, &spec.out);
    Ok(())
}

/// A sequential run (and `--model pop` on the sequential layout).
fn run_sequential(spec: &RunSpec) -> anyhow::Result<()> {
    let SeqPrepared { cfg, layers, data, model, selection, device } = mmkd_run::seq::prepare(spec)?;
    mmkd_run::run_dir::write(spec, &cfg, &layers)?;
    let outcome = match model {
        None => mmkd_run::execute::popularity_sequential(&data, &cfg, &spec.out, &device)?,
        Some(mut model) => {
            mmkd_run::execute::train_sequential(&mut model, &data, selection, &cfg, &spec.out, spec.resume, &device)
                .with_context(|| format!("training {} into {}", spec.model.name(), spec.out.display()))?
        }
    };
    let name = if spec.kdsr { format!("{}+kdsr", outcome.model) } else { outcome.model.clone() };
    println!(
        "{name} on {} ({:?} protocol, selected on {} by {}): best epoch {} of {} run{}, {:.1}s",
        spec.data.display(),
        outcome.protocol,
        outcome.selected_on,
        outcome.criterion,
        outcome.best_epoch,
        outcome.epochs_run,
        if outcome.stopped_early { " (early stop)" } else { "" },
        outcome.secs
    );
    let columns = ["hr@5", "mrr@5", "hr@20", "mrr@20", "ndcg@20"];
    println!("{:<8}{}", "split", columns.iter().map(|c| format!("{c:>10}")).collect::<String>());
    let mut rows = vec![("test", &outcome.test)];
    if outcome.selected_on == SelectedOn::Valid {
        rows.insert(0, ("valid", &outcome.valid));
    }
    for (split, summary) in rows {
        let values: String =
            columns.iter().map(|c| format!("{:>10.4}", summary.get(*c).copied().unwrap_or(f64::NAN))).collect();
        println!("{split:<8}{values}");
    }
    println!("{} test instances; result: {}", outcome.n_test_users, spec.out.join("result.json").display());
    Ok(())
}

fn print_outcome(o: &TrainOutcome, data: &str, out: &std::path::Path) {
    println!(
        "{} on {} ({:?} protocol, selected on {} by {}): best epoch {} of {} run{}, {:.1}s",
        o.model,
        data,
        o.protocol,
        o.selected_on,
        o.criterion,
        o.best_epoch,
        o.epochs_run,
        if o.stopped_early { " (early stop)" } else { "" },
        o.secs
    );
    let columns = ["recall@20", "ndcg@20", "precision@20", "hit@20", "mrr@20", "recall@50", "ndcg@50"];
    println!("{:<8}{}", "split", columns.iter().map(|c| format!("{c:>14}")).collect::<String>());
    let rows: &[(&str, &std::collections::BTreeMap<String, f64>)] = if o.selected_on == SelectedOn::Test {
        &[("test", &o.test)]
    } else {
        &[("valid", &o.valid), ("test", &o.test)]
    };
    for (name, summary) in rows {
        let values: String =
            columns.iter().map(|c| format!("{:>14.4}", summary.get(*c).copied().unwrap_or(f64::NAN))).collect();
        println!("{name:<8}{values}");
    }
    println!(
        "ndcg form {:?}; {} test users; result: {}",
        o.ndcg_form,
        o.n_test_users,
        out.join("result.json").display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: TrainArgs,
    }

    #[test]
    fn the_command_line_converts_into_a_spec() {
        let cli = Cli::try_parse_from([
            "train",
            "--model",
            "grcn",
            "--extractor",
            "sgfd_l",
            "--data",
            "d/office",
            "--out",
            "o",
            "--set",
            "a.b=1",
            "--seed",
            "4",
        ])
        .unwrap();
        let spec = RunSpec::try_from(&cli.args).unwrap();
        assert_eq!((spec.model, spec.extractor.name()), (ModelKind::Grcn, "sgfd_l"));
        assert_eq!(
            (spec.seed, spec.set.as_slice(), spec.data_name().as_str()),
            (Some(4), &["a.b=1".to_string()][..], "office")
        );
        assert_eq!(spec.configs, PathBuf::from("configs"));
        let cli = Cli::try_parse_from(["train", "--model", "mf", "--extractor", "sgfd_x", "--data", "d", "--out", "o"])
            .unwrap();
        assert!(RunSpec::try_from(&cli.args).unwrap_err().to_string().contains("sgfd_l"));
    }
}
