//! `cargo xtask inspect --data DIR`: statistics and validation problems of a data set.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Data folder in the SGFD layout (train.csv, test.csv, …), the MMRec layout (`<name>.inter`, …) or the
    /// sequential layout (interactions.csv, …).
    #[arg(long)]
    pub data: PathBuf,
}

pub fn run(args: &InspectArgs) -> anyhow::Result<()> {
    if mmkd_data::sequential::is_sequential(&args.data) {
        return inspect_sequential(&args.data);
    }
    let (dataset, features) = mmkd_run::load_checked(&args.data)?;
    println!("{}", dataset.stats());
    if let Some(features) = &features {
        for (name, dim) in features.names().iter().zip(features.dims()) {
            println!(
                "{:<28}{} × {}  ({})",
                format!("features `{name}`"),
                features.n_items(),
                dim,
                features.source(name)?.display()
            );
        }
    } else {
        println!("features                    none found");
    }
    if dataset.findings.is_empty() {
        println!("validation                  no problems found");
    } else {
        println!("validation                  {} finding(s):", dataset.findings.len());
        for f in &dataset.findings {
            println!("  - {f}");
        }
    }
    Ok(())
}

/// A sequential folder: loaded with the default protocol (5-core, 80/20 chronological split), which checks
/// every cell and the item ids against the feature and label files present.
fn inspect_sequential(dir: &std::path::Path) -> anyhow::Result<()> {
    let opts = mmkd_data::sequential::SeqOptions::default();
    let data = mmkd_data::sequential::load_sequential(dir, &opts)
        .with_context(|| format!("invalid sequential data set in {}", dir.display()))?;
    println!("{}", data.stats());
    for (name, file) in mmkd_data::SGFD_FEATURES {
        let path = dir.join(file);
        if path.is_file() {
            let (rows, dim) = mmkd_data::npy_rows(&path)?;
            println!("{:<28}{rows} × {dim}  ({})", format!("features `{name}`"), path.display());
        }
    }
    println!("validation                  no problems found");
    Ok(())
}
