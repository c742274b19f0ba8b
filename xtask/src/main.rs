//! `cargo xtask …`: the toolkit's orchestrator. It parses arguments and calls library code; it holds no math.

mod bench;
mod bench_train;
mod gen_data;
mod inspect;
mod logging;
mod paths;
mod quickstart;
mod recommend;
mod reproduce;
mod teacher;
mod train;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "xtask", about = "Feature distillation for multimodal recommendation: data, training, reproduction.")]
struct Args {
    /// Log as JSON lines (for machines) instead of text; `RUST_LOG` sets the level (default `info`).
    #[arg(long, global = true)]
    json_logs: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a generated data set with planted semantics (SGFD layout) and its manifest.
    GenData(gen_data::GenDataArgs),
    /// Print a data set's statistics and every validation problem; exit non-zero if it is invalid.
    Inspect(inspect::InspectArgs),
    /// Benchmarks that print figures.
    Bench(bench::BenchArgs),
    /// Pretrain SGFD's teacher on the item labels alone and report held-out label accuracy.
    Teacher(teacher::TeacherArgs),
    /// The default job: generate the `office` preset if absent, check it, and rank with the baselines.
    Quickstart(quickstart::QuickstartArgs),
    /// Train a backbone with early stopping on a layered configuration; write checkpoints and result.json.
    Train(train::TrainArgs),
    /// Run every cell of a paper's tables over seeds (resumable) and write the report: tables, p-values, plots.
    Reproduce(reproduce::ReproduceArgs),
    /// Top-K items for a user from a trained run's best checkpoint, the user's train items excluded.
    Recommend(recommend::RecommendArgs),
}

fn main() -> anyhow::Result<()> {
    let matches = Args::command().get_matches();
    let mut args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    paths::rebase_defaults(&mut args.command, &matches);
    logging::init(args.json_logs);
    match args.command {
        Command::GenData(a) => gen_data::run(&a),
        Command::Inspect(a) => inspect::run(&a),
        Command::Bench(a) => bench::run(&a),
        Command::Quickstart(a) => quickstart::run(&a),
        Command::Teacher(a) => teacher::run(&a),
        Command::Train(a) => train::run(&a),
        Command::Reproduce(a) => reproduce::run(&a),
        Command::Recommend(a) => recommend::run(&a),
    }
}
