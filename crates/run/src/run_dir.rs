//! A run folder's record of itself: `config.toml`, the resolved configuration (with a comment header for
//! humans), and `run.toml`, the [`RunSpec`] that ran and the configuration layers it applied. Tools that
//! rebuild a run's model (`recommend`, the report's Fig. 4) read `run.toml`; nothing parses the header.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::RunConfig;
use crate::error::{Context, Error, Result};
use crate::spec::RunSpec;

/// The resolved configuration of a run.
pub const CONFIG_FILE: &str = "config.toml";
/// The [`RunRecord`] of a run.
pub const RUN_FILE: &str = "run.toml";

/// What `run.toml` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRecord {
    /// The configuration files applied, in order (empty: the built-in defaults).
    pub layers: Vec<String>,
    /// The spec that ran, its paths made absolute so that the record reads the same from any folder.
    pub spec: RunSpec,
}

/// `path` made absolute against the current folder (unchanged when it already is, or when the current
/// folder is unknown).
fn absolute(path: &Path) -> std::path::PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

impl RunRecord {
    /// The record of `spec` with its paths made absolute.
    pub fn new(spec: &RunSpec, layers: &[String]) -> Self {
        let mut spec = spec.clone();
        spec.data = absolute(&spec.data);
        spec.configs = absolute(&spec.configs);
        spec.out = absolute(&spec.out);
        spec.config = spec.config.as_deref().map(absolute);
        spec.teacher = spec.teacher.as_deref().map(absolute);
        Self { layers: layers.to_vec(), spec }
    }

    /// Reads `run/run.toml`.
    pub fn read(run: &Path) -> Result<Self> {
        let path = run.join(RUN_FILE);
        if !path.exists() {
            return Err(Error::Invalid(format!(
                "{}: no such file (not a `cargo xtask train` output folder, or written before runs recorded \
                 their spec: train it again)",
                path.display()
            )));
        }
        let text = crate::error::read_to_string(&path)?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

/// Writes `config.toml` (the resolved `cfg` under a comment naming the command and the layers) and
/// `run.toml` into `spec.out`, each atomically.
pub fn write(spec: &RunSpec, cfg: &RunConfig, layers: &[String]) -> Result<()> {
    crate::error::create_dir_all(&spec.out)?;
    let text = format!(
        "# Resolved configuration of `cargo xtask train --model {} --extractor {}{}` on {}.\n# Layers: {}.\n\n{}",
        spec.model.name(),
        spec.extractor,
        if spec.kdsr { " --kdsr" } else { "" },
        spec.data.display(),
        if layers.is_empty() { "built-in defaults".to_string() } else { layers.join(" → ") },
        toml::to_string(cfg).context("serialising the configuration")?
    );
    write_text(&spec.out.join(CONFIG_FILE), &text)?;
    let record = toml::to_string(&RunRecord::new(spec, layers)).context("serialising the run spec")?;
    write_text(&spec.out.join(RUN_FILE), &record)
}

/// Writes `text` to `path` atomically.
fn write_text(path: &Path, text: &str) -> Result<()> {
    mmkd_features::write_atomically(path, |w| std::io::Write::write_all(w, text.as_bytes()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{ExtractorKind, ModelKind};

    #[test]
    fn the_record_reads_back_with_absolute_paths() {
        let dir = std::env::temp_dir().join(format!("mmkd-run-dir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut spec = RunSpec::new(ModelKind::Mmsr, ExtractorKind::Vanilla, "data/tiny-seq");
        spec.kdsr = true;
        spec.set = vec!["train.criterion=hr@20".into()];
        spec.out = dir.clone();
        let cfg = RunConfig { seed: 7, ..Default::default() };
        write(&spec, &cfg, &["configs/base.toml".into()]).unwrap();

        let record = RunRecord::read(&dir).unwrap();
        assert_eq!(record.layers, vec!["configs/base.toml".to_string()]);
        assert!(record.spec.data.is_absolute() && record.spec.data.ends_with("data/tiny-seq"));
        assert_eq!(record.spec, RunRecord::new(&spec, &[]).spec);
        assert!(record.spec.kdsr && record.spec.set == spec.set);
        // The resolved configuration stays readable as a configuration, its header only a comment.
        let text = std::fs::read_to_string(dir.join(CONFIG_FILE)).unwrap();
        assert!(
            text.starts_with("# Resolved configuration of `cargo xtask train --model mmsr --extractor vanilla --kdsr`")
        );
        assert_eq!(toml::from_str::<RunConfig>(&text).unwrap(), cfg);

        let missing = RunRecord::read(&dir.join("nowhere")).unwrap_err().to_string();
        assert!(missing.contains("run.toml"), "{missing}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
