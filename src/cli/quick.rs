//! A parser for the plain `petri run` line, tried before clap.
//!
//! `petri run` is on the path of every container start, and clap spends a quarter of a
//! millisecond and more on one: it builds the command's arguments (help text and all),
//! matches, then converts the matches, touching a few hundred kilobytes of its code for
//! the first time in a fresh process (bench/RESULTS.md). This parser takes the common
//! shapes of the line (the global options, then `run` with its options, the image and
//! the command) and refuses everything else: another subcommand, `--help`, a value
//! that does not parse, an option given twice, `--opt=` with nothing after it, a
//! value that starts with `-`, a token it does not know. What it refuses goes to clap,
//! so every error, help text and corner of clap's grammar stays clap's, and what it
//! accepts it must parse exactly as clap does: unit tests check [`OPTIONS`] against
//! clap's definition of the same arguments, and compare the two parsers on random lines.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use clap::ValueEnum;

use super::run::{parse_cpu, parse_memory, RunArgs};
use super::{Cli, Command, GlobalArgs, OutputFormat};

/// Every option of the global arguments and of `run`: its long name, its short one,
/// and whether it takes a value. Clap's definitions are in [`GlobalArgs`] and
/// [`RunArgs`]; `the_table_is_clap_s` keeps the two in step.
const OPTIONS: &[(&str, Option<char>, bool)] = &[
    ("root", None, true),
    ("json", None, false),
    ("format", None, true),
    ("quiet", Some('q'), false),
    ("verbose", Some('v'), false),
    ("image", None, true),
    ("env", Some('e'), true),
    ("entrypoint", None, true),
    ("cpu", None, true),
    ("memory", None, true),
    ("pids-limit", None, true),
    ("shm-size", None, true),
    ("mount", None, true),
    ("name", None, true),
    ("user", Some('u'), true),
    ("workdir", Some('w'), true),
    ("network", None, true),
    ("rm", None, false),
    ("interactive", Some('i'), false),
    ("tty", Some('t'), false),
    ("platform", None, true),
];

/// The options that are petri's global arguments, accepted before `run` as well.
const GLOBAL: &[&str] = &["root", "json", "format", "quiet", "verbose"];
/// The options that may be given more than once (clap's `Vec` arguments).
const REPEATABLE: &[&str] = &["env", "mount"];

/// `args` (argv, program name first) as clap would parse it, when it is a `petri run`
/// line of the shapes this parser takes; `None` for anything else. `env_root` is the
/// PETRI_ROOT environment variable, `--root`'s default.
pub(super) fn parse(args: &[OsString], env_root: Option<&OsStr>) -> Option<Cli> {
    let words: Vec<&str> = args.iter().skip(1).map(|a| a.to_str()).collect::<Option<_>>()?;
    let mut line = Line::default();
    let mut words = words.into_iter();
    // The global options, then `run`.
    loop {
        let word = words.next()?;
        if word == "run" {
            break;
        }
        line.option(word, &mut words, true)?;
    }
    // `run`'s options (the global ones too), then the image and the command: from the
    // first positional word on, every word is the command's (clap's trailing_var_arg).
    let mut positional = Vec::new();
    while let Some(word) = words.next() {
        if word == "--" {
            positional.extend(words.by_ref().map(str::to_string));
        } else if word.starts_with('-') {
            line.option(word, &mut words, false)?;
        } else {
            positional.push(word.to_string());
            for rest in words.by_ref() {
                // What clap makes of a `--` after the image is clap's to say.
                if rest == "--" {
                    return None;
                }
                positional.push(rest.to_string());
            }
        }
    }
    line.build(positional, env_root)
}

/// The options seen so far, as the words that gave them.
#[derive(Default)]
struct Line<'a> {
    values: Vec<(&'static str, Option<&'a str>)>,
}

impl<'a> Line<'a> {
    /// Takes one option word (and its value, from `rest` when it is not attached).
    fn option(&mut self, word: &'a str, rest: &mut impl Iterator<Item = &'a str>, before_run: bool) -> Option<()> {
        if let Some(long) = word.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (long, None),
            };
            let &(name, _, takes_value) = OPTIONS.iter().find(|(l, _, _)| *l == name)?;
            let value = match (takes_value, inline) {
                (false, None) => None,
                (false, Some(_)) => return None,
                (true, Some(v)) => Some(v),
                (true, None) => Some(rest.next()?),
            };
            return self.add(name, value, before_run);
        }
        // Short options: one that takes a value, alone, with the value as the next word;
        // or a cluster of flags (`-it`).
        let shorts = word.strip_prefix('-').filter(|s| !s.is_empty())?;
        let short = |c: char| OPTIONS.iter().find(|(_, s, _)| *s == Some(c));
        let mut chars = shorts.chars();
        if let (Some(c), None) = (chars.next(), chars.next()) {
            let &(name, _, takes_value) = short(c)?;
            let value = if takes_value { Some(rest.next()?) } else { None };
            return self.add(name, value, before_run);
        }
        for c in shorts.chars() {
            let &(name, _, takes_value) = short(c)?;
            if takes_value {
                return None;
            }
            self.add(name, None, before_run)?;
        }
        Some(())
    }

    fn add(&mut self, name: &'static str, value: Option<&'a str>, before_run: bool) -> Option<()> {
        if before_run && !GLOBAL.contains(&name) {
            return None;
        }
        if value.is_some_and(|v| v.is_empty() || v.starts_with('-')) {
            return None;
        }
        if !REPEATABLE.contains(&name) && self.values.iter().any(|(n, _)| *n == name) {
            return None;
        }
        self.values.push((name, value));
        Some(())
    }

    fn flag(&self, name: &str) -> bool {
        self.values.iter().any(|(n, _)| *n == name)
    }

    fn value(&self, name: &str) -> Option<&'a str> {
        self.values.iter().find(|(n, _)| *n == name).and_then(|(_, v)| *v)
    }

    fn all(&self, name: &str) -> Vec<String> {
        let given = self.values.iter().filter(|(n, _)| *n == name);
        given.filter_map(|(_, v)| v.map(str::to_string)).collect()
    }

    /// The parsed line; `None` where a value does not parse (clap's error to give).
    fn build(self, args: Vec<String>, env_root: Option<&OsStr>) -> Option<Cli> {
        let root = match (self.value("root"), env_root) {
            (Some(root), _) => PathBuf::from(root),
            (None, Some(env)) if !env.is_empty() => PathBuf::from(env),
            (None, Some(_)) => return None,
            (None, None) => PathBuf::from("/var/lib/petri"),
        };
        let format = match self.value("format") {
            Some(f) => Some(OutputFormat::from_str(f, false).ok()?),
            None => None,
        };
        let global = GlobalArgs {
            root,
            json: self.flag("json"),
            format,
            quiet: self.flag("quiet"),
            verbose: self.flag("verbose"),
        };
        let network = self.value("network").unwrap_or("none");
        if !["none", "host"].contains(&network) {
            return None;
        }
        let run = RunArgs {
            image: self.value("image").map(str::to_string),
            env: self.all("env"),
            entrypoint: self.value("entrypoint").map(str::to_string),
            cpu: self.value("cpu").map(parse_cpu).transpose().ok()?,
            memory: self.value("memory").map(parse_memory).transpose().ok()?,
            pids_limit: self.value("pids-limit").map_or(Ok(4096), str::parse).ok()?,
            shm_size: parse_memory(self.value("shm-size").unwrap_or("64Mi")).ok()?,
            mounts: self.all("mount"),
            name: self.value("name").map(str::to_string),
            user: self.value("user").map(str::to_string),
            workdir: self.value("workdir").map(str::to_string),
            network: network.to_string(),
            rm: self.flag("rm"),
            interactive: self.flag("interactive"),
            tty: self.flag("tty"),
            platform: self.value("platform").map(str::parse).transpose().ok()?,
            args,
        };
        Some(Cli {
            global,
            command: Command::Run(Box::new(run)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};
    use proptest::prelude::*;

    fn line(words: &[&str]) -> Vec<OsString> {
        std::iter::once("petri")
            .chain(words.iter().copied())
            .map(OsString::from)
            .collect()
    }

    fn env_root() -> Option<OsString> {
        std::env::var_os("PETRI_ROOT")
    }

    /// The quick parser's result, checked against clap's when it gives one.
    fn quick(words: &[&str]) -> Option<Cli> {
        let args = line(words);
        let fast = parse(&args, env_root().as_deref())?;
        let full = Cli::try_parse_from(&args).unwrap_or_else(|e| panic!("clap refuses {words:?}: {e}"));
        assert_eq!(format!("{fast:?}"), format!("{full:?}"), "{words:?}");
        Some(fast)
    }

    #[test]
    fn the_table_is_clap_s() {
        let cli = Cli::command();
        let run = cli.find_subcommand("run").expect("a run subcommand");
        let mut from_clap: Vec<(String, Option<char>, bool)> = run
            .get_arguments()
            .chain(cli.get_arguments())
            .filter(|a| !a.is_positional() && !["help", "version"].contains(&a.get_id().as_str()))
            .map(|a| {
                let takes_value = a.get_action().takes_values();
                (
                    a.get_long().expect("a long name").to_string(),
                    a.get_short(),
                    takes_value,
                )
            })
            .collect();
        from_clap.sort();
        from_clap.dedup();
        let mut ours: Vec<(String, Option<char>, bool)> =
            OPTIONS.iter().map(|(l, s, v)| (l.to_string(), *s, *v)).collect();
        ours.sort();
        assert_eq!(ours, from_clap);
        let globals: Vec<&str> = cli.get_arguments().filter_map(|a| a.get_long()).collect();
        let mut expected = GLOBAL.to_vec();
        expected.sort();
        let mut globals = globals
            .into_iter()
            .filter(|l| *l != "help" && *l != "version")
            .collect::<Vec<_>>();
        globals.sort();
        assert_eq!(globals, expected);
    }

    #[test]
    fn common_lines_agree_with_clap() {
        for words in [
            "run --rm busybox true",
            "--root /tmp/r -q run -e A=1 --env B --cpu 0.5 --memory 1Gi -v --rm -it busybox sh -c x",
            "run --network host --mount /a:/b:rw --mount /c:/d --name web -u 1000:1000 -w /srv img ls -l",
            "--format json run --image img --entrypoint echo hi",
            "run --rm --cpu=500m --memory=512Mi --pids-limit 64 --shm-size 1Gi busybox",
            "run -ti --platform linux/arm64/v8 --root /r --json img --root x y",
            "run --rm -- img cmd",
            "run --image img -- -x --y",
            "--verbose run -q --format table img",
        ] {
            let words: Vec<&str> = words.split(' ').collect();
            assert!(quick(&words).is_some(), "not taken by the quick parser: {words:?}");
        }
    }

    #[test]
    fn the_rest_is_left_to_clap() {
        for words in [
            "image ls",
            "--version",
            "run --help",
            "run -h",
            "help run",
            "run --cpu lots busybox",
            "run --cpu 0.5 --cpu 1 busybox",
            "run --rm --rm busybox",
            "--bogus run busybox",
            "run --bogus busybox",
            "--rm run busybox",
            "run --name= busybox",
            "run --name -x busybox",
            "run -eA=1 busybox",
            "run -ie A busybox",
            "run --rm=yes busybox",
            "run --network bridge busybox",
            "run --format yaml busybox",
            "run busybox sh -- x",
            "run --memory",
            "run - busybox",
        ] {
            let words: Vec<&str> = words.split(' ').collect();
            assert!(parse(&line(&words), None).is_none(), "{words:?}");
        }
    }

    #[test]
    fn petri_root_from_the_environment() {
        let args = line(&["run", "img"]);
        let Some(Cli { global, .. }) = parse(&args, Some(OsStr::new("/srv/petri"))) else {
            panic!("refused")
        };
        assert_eq!(global.root, PathBuf::from("/srv/petri"));
        let given = parse(&line(&["--root", "/r", "run", "img"]), Some(OsStr::new("/srv/petri")));
        assert_eq!(given.map(|c| c.global.root), Some(PathBuf::from("/r")));
        assert!(
            parse(&args, Some(OsStr::new(""))).is_none(),
            "an empty PETRI_ROOT is clap's to judge"
        );
    }

    /// Words a `petri run` line is made of, the odd ones included.
    const VOCABULARY: &[&str] = &[
        "run",
        "run",
        "--rm",
        "-i",
        "-t",
        "-it",
        "-ti",
        "-q",
        "-v",
        "-qv",
        "--json",
        "--root",
        "/r",
        "--root=/s",
        "--format",
        "json",
        "--format=text",
        "table",
        "-e",
        "A=1",
        "--env",
        "B",
        "--env=C=3",
        "--cpu",
        "0.5",
        "500m",
        "--cpu=2",
        "lots",
        "--memory",
        "512Mi",
        "1GB",
        "--memory=64",
        "--pids-limit",
        "100",
        "--pids-limit=+7",
        "-1",
        "--shm-size",
        "1Gi",
        "--mount",
        "/a:/b",
        "/c:/d:rw",
        "--name",
        "web",
        "--name=",
        "-u",
        "1000:1000",
        "-w",
        "/srv",
        "--workdir=/x",
        "--network",
        "host",
        "none",
        "--network=bridge",
        "--platform",
        "linux/amd64",
        "linux",
        "--image",
        "img",
        "--entrypoint",
        "echo hi",
        "busybox",
        "sh",
        "-c",
        "--",
        "-x",
        "--help",
        "-h",
        "--bogus",
        "=",
        "--rm=1",
        "-e=A",
        "-eA",
        "image",
        "ls",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Whatever line the quick parser takes, clap takes and parses the same way.
        #[test]
        fn random_lines_parse_as_clap_parses_them(picks in prop::collection::vec(0..VOCABULARY.len(), 1..9)) {
            let words: Vec<&str> = picks.iter().map(|&i| VOCABULARY[i]).collect();
            quick(&words);
            quick(&[&["run"], &words[..]].concat());
        }
    }

    #[test]
    fn random_lines_are_often_taken() {
        // The property above only means something if many random lines get through.
        let mut taken = 0;
        let mut seed = 0x2545_f491_u64;
        for _ in 0..2000 {
            let mut words = vec!["run"];
            for _ in 0..6 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                words.push(VOCABULARY[(seed % VOCABULARY.len() as u64) as usize]);
            }
            taken += usize::from(quick(&words).is_some());
        }
        eprintln!("{taken} of 2000 random lines taken");
        assert!(taken > 100, "only {taken} of 2000 random lines taken");
    }
}
