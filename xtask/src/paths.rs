//! Default paths resolve against the repository root, so that `cargo xtask …` works from any folder of the
//! repository; paths given on the command line keep resolving against the current folder.
//!
//! The root is the parent of xtask's manifest folder. Nothing changes the current folder: a default that
//! clap filled in (`--configs configs`, `--runs runs`, …) is rebased onto the root after parsing, and the
//! defaults written in code (`data/<preset>`, `reports/quickstart`) are built with [`repo`].

use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::ArgMatches;

/// The repository root.
pub fn root() -> &'static Path {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest)
}

/// `rel` under the repository root.
pub fn repo(rel: impl AsRef<Path>) -> PathBuf {
    root().join(rel)
}

/// Rebases `path` onto the repository root when clap took it from the argument `id`'s default value.
pub fn rebase_default(path: &mut PathBuf, matches: &ArgMatches, id: &str) {
    if matches.value_source(id) == Some(ValueSource::DefaultValue) {
        *path = repo(&*path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, Command};

    #[test]
    fn only_defaults_are_rebased() {
        assert!(root().join("configs").join("base.toml").is_file(), "{}", root().display());
        let cmd = Command::new("t").arg(Arg::new("configs").long("configs").default_value("configs"));
        let defaulted = cmd.clone().get_matches_from(["t"]);
        let mut path = PathBuf::from("configs");
        rebase_default(&mut path, &defaulted, "configs");
        assert_eq!(path, root().join("configs"));
        let given = cmd.get_matches_from(["t", "--configs", "configs"]);
        let mut path = PathBuf::from("configs");
        rebase_default(&mut path, &given, "configs");
        assert_eq!(path, PathBuf::from("configs"));
    }
}
