//! `cargo xtask gen-data --preset NAME --seed N --out DIR`, and with `--interactions DIR`: labels and
//! features of the preset's shape for interactions read from DIR (e.g. the real Office interactions), for
//! benchmarks at the real graph's size. The sequential presets (`tiny-seq`, `beauty`) write the sequential
//! layout (`interactions.csv`, see `mmkd_synth::sequential`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;

#[derive(Debug, Args)]
pub struct GenDataArgs {
    /// Preset: office, clothing, toys or tiny (SGFD layout); tiny-seq or beauty (sequential layout).
    #[arg(long, default_value = "office")]
    pub preset: String,
    /// Generator seed; the same seed writes byte-identical files.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output folder (default `data/<preset>`, or `data/<interactions folder name>` with `--interactions`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Keep the interactions of this folder (train.csv and test.csv, SGFD layout) and generate only labels
    /// and features for its items. The features are unrelated to the interactions: for benchmarks, not for
    /// measuring quality.
    #[arg(long)]
    pub interactions: Option<PathBuf>,
}

pub fn run(args: &GenDataArgs) -> anyhow::Result<()> {
    if let Some(dir) = &args.interactions {
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "given".into());
        let out = args.out.clone().unwrap_or_else(|| crate::paths::repo("data").join(name));
        return features_for(&args.preset, args.seed, dir, &out);
    }
    let out = args.out.clone().unwrap_or_else(|| crate::paths::repo("data").join(&args.preset));
    if mmkd_synth::sequential::is_seq_preset(&args.preset) {
        return generate_sequential(&args.preset, args.seed, &out);
    }
    generate(&args.preset, args.seed, &out)?;
    Ok(())
}

/// Generates the sequential preset `preset` with `seed` into `out`.
fn generate_sequential(preset: &str, seed: u64, out: &std::path::Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let preset = mmkd_synth::sequential::SeqPreset::by_name(preset)?;
    tracing::info!(preset = %preset.base.name, seed, out = %out.display(), "generating");
    let generated = mmkd_synth::sequential::generate_sequential(&preset, seed)?;
    generated.write(out).with_context(|| format!("writing {}", out.display()))?;
    let st = &generated.stats;
    println!(
        "{}: {} users, {} items, {} interactions (avg length {:.2}, {} train / {} test instances), sparsity {:.4}; \
         {:.2}s → {}",
        preset.base.name,
        st.n_users,
        st.n_items,
        st.n_interactions,
        st.avg_len,
        st.n_train_instances,
        st.n_test_instances,
        st.sparsity,
        started.elapsed().as_secs_f64(),
        out.join("manifest.json").display()
    );
    Ok(())
}

/// Copies the interactions of `dir` into `out` with generated labels and features of `preset`'s widths.
fn features_for(preset: &str, seed: u64, dir: &std::path::Path, out: &std::path::Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let preset = mmkd_synth::Preset::by_name(preset)?;
    let dataset = mmkd_data::load_sgfd(dir, &mmkd_data::LoadOptions::default())
        .with_context(|| format!("reading the interactions of {}", dir.display()))?;
    let generated = mmkd_synth::generate_for_interactions(&preset, seed, dataset.train.pairs(), dataset.test.pairs())?;
    generated.write_sgfd(out).with_context(|| format!("writing {}", out.display()))?;
    let st = &generated.stats;
    println!(
        "{}: {} users, {} items, {} interactions from {}; generated {} labels, features {}+{}; {:.2}s → {}",
        generated.preset.name,
        st.n_users,
        st.n_items,
        st.n_interactions,
        dir.display(),
        st.n_labels,
        preset.visual_dim,
        preset.text_dim,
        started.elapsed().as_secs_f64(),
        out.display()
    );
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
