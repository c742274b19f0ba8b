//! Default paths resolve against the repository root, so that `cargo xtask …` works from any folder of the
//! repository; paths given on the command line keep resolving against the current folder.
//!
//! The root is the parent of xtask's manifest folder. Nothing changes the current folder: a default that
//! clap filled in (`--configs configs`, `--runs runs`, …) is rebased onto the root after parsing, and the
//! defaults written in code (`data/<preset>`, `reports/quickstart`) are built with [`repo`].

use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::ArgMatches;

use crate::Command;

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

/// Rebases the path arguments that clap filled from their defaults onto the repository root.
pub fn rebase_defaults(command: &mut Command, matches: &ArgMatches) {
    let Some((_, m)) = matches.subcommand() else { return };
    match command {
        Command::Train(a) => rebase_default(&mut a.configs, m, "configs"),
        Command::Recommend(a) => rebase_default(&mut a.configs, m, "configs"),
        Command::Quickstart(a) => rebase_default(&mut a.data, m, "data"),
        Command::Teacher(a) => {
            rebase_default(&mut a.data, m, "data");
            rebase_default(&mut a.config, m, "config");
        }
        Command::Reproduce(a) => {
            for (path, id) in [(&mut a.runs, "runs"), (&mut a.reports, "reports"), (&mut a.configs, "configs")] {
                rebase_default(path, m, id);
            }
        }
        Command::Bench(a) => crate::bench::rebase_defaults(a, m),
        Command::GenData(_) | Command::Inspect(_) => {}
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

    #[test]
    fn every_subcommand_default_is_rebased_and_given_paths_are_kept() {
        use clap::{CommandFactory, FromArgMatches};
        let parse = |argv: &[&str]| {
            let matches = crate::Args::command().get_matches_from(argv);
            let mut args = crate::Args::from_arg_matches(&matches).unwrap();
            rebase_defaults(&mut args.command, &matches);
            args.command
        };
        let crate::Command::Reproduce(r) = parse(&["xtask", "reproduce", "office", "--reports", "mine"]) else {
            panic!()
        };
        assert_eq!((r.runs, r.configs), (repo("runs"), repo("configs")));
        assert_eq!(r.reports, PathBuf::from("mine"));
        let crate::Command::Bench(b) = parse(&["xtask", "bench", "train", "--model", "mf", "--data", "d"]) else {
            panic!()
        };
        let crate::bench::BenchWhat::Train(t) = b.what else { panic!() };
        assert_eq!((t.configs, t.data), (repo("configs"), PathBuf::from("d")));
        let crate::Command::Teacher(t) = parse(&["xtask", "teacher", "--data", "d"]) else { panic!() };
        assert_eq!((t.data, t.config), (PathBuf::from("d"), repo("configs/teacher.toml")));
        let crate::Command::Train(t) = parse(&["xtask", "train", "--model", "mf", "--data", "d", "--out", "o"]) else {
            panic!()
        };
        assert_eq!((t.configs, t.out), (repo("configs"), PathBuf::from("o")));
    }
}
