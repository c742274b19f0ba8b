//! `cargo xtask gen-data --preset NAME --seed N --out DIR`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;

#[derive(Debug, Args)]
pub struct GenDataArgs {
    /// Preset: office, clothing, toys or tiny.
    #[arg(long, default_value = "office")]
    pub preset: String,
    /// Generator seed; the same seed writes byte-identical files.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output folder (default `data/<preset>`).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(args: &GenDataArgs) -> anyhow::Result<()> {
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from("data").join(&args.preset));
    generate(&args.preset, args.seed, &out)?;
    Ok(())
}

/// Generates `preset` with `seed` into `out` and returns the elapsed seconds.
pub fn generate(preset: &str, seed: u64, out: &std::path::Path) -> anyhow::Result<f64> {
    let started = Instant::now();
    let preset = mmkd_synth::Preset::by_name(preset)?;
    tracing::info!(preset = %preset.name, seed, out = %out.display(), "generating");
    let generated = mmkd_synth::generate(&preset, seed)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    generated.write_sgfd(out).with_context(|| format!("writing {}", out.display()))?;
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(secs, out = %out.display(), "written");
    let st = &generated.stats;
    println!(
        "{}: {} users, {} items, {} labels, {} interactions ({} train / {} test), sparsity {:.4}, min degree user {} item {}; {:.2}s → {}",
        preset.name,
        st.n_users,
        st.n_items,
        st.n_labels,
        st.n_interactions,
        st.n_train,
        st.n_test,
        st.sparsity,
        st.min_user_degree,
        st.min_item_degree,
        secs,
        out.join("manifest.json").display()
    );
    Ok(secs)
}
