//! `cargo xtask bench …`: benchmarks that print figures (never asserted).

use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchWhat,
}

#[derive(Debug, Subcommand)]
pub enum BenchWhat {
    /// Training and evaluation of backbones × extractors: seconds per epoch and per evaluation, peak memory.
    Train(crate::bench_train::BenchTrainArgs),
    /// Full-ranking evaluation: scoring matmul (GFLOP/s) and top-K/metrics time, on the office shape by default.
    Eval {
        #[arg(long, default_value_t = 4874)]
        users: usize,
        #[arg(long, default_value_t = 2406)]
        items: usize,
        #[arg(long, default_value_t = 256)]
        dim: usize,
        #[arg(long, default_value_t = 20)]
        k: usize,
        /// cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: String,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// One SGFD training step (teacher + student forward and backward, both modalities, AdamW update).
    Sgfd {
        /// Item rows per step (B').
        #[arg(long, default_value_t = 2048)]
        rows: usize,
        /// Generic feature dims, one per modality.
        #[arg(long, value_delimiter = ',', default_value = "4096,768")]
        dims: Vec<usize>,
        /// Extracted feature width d.
        #[arg(long, default_value_t = 128)]
        out_dim: usize,
        #[arg(long, default_value_t = 54)]
        labels: usize,
        #[arg(long, default_value_t = 5)]
        reps: usize,
        /// cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: String,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

/// Rebases `bench train`'s default `--configs` onto the repository root (see [`crate::paths`]).
pub fn rebase_defaults(args: &mut BenchArgs, matches: &clap::ArgMatches) {
    if let (BenchWhat::Train(a), Some(("train", m))) = (&mut args.what, matches.subcommand()) {
        crate::paths::rebase_default(&mut a.configs, m, "configs");
    }
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    match &args.what {
        BenchWhat::Train(a) => crate::bench_train::run(a)?,
        BenchWhat::Eval { users, items, dim, k, device, seed } => {
            let device = mmkd_run::device::parse(device)?;
            let report = mmkd_eval::bench::full_ranking(*users, *items, *dim, *k, &device, *seed)?;
            println!("{report}");
        }
        BenchWhat::Sgfd { rows, dims, out_dim, labels, reps, device, seed } => {
            let device = mmkd_run::device::parse(device)?;
            let report = mmkd_student_kd::bench::sgfd_step(&device, *rows, dims, *out_dim, *labels, *reps, *seed)?;
            println!("{report}");
        }
    }
    Ok(())
}
