//! The CLI explains itself: every command, option and argument of the
//! whole `certex` tree has help text, options that take one of a fixed set
//! of words list them, and the generated completions and manual pages name
//! every command.

use std::process::Command;

use clap::CommandFactory;

/// Every command of the tree under `cmd`, with its full name.
fn walk<'a>(cmd: &'a clap::Command, name: String, out: &mut Vec<(String, &'a clap::Command)>) {
    for sub in cmd.get_subcommands() {
        walk(sub, format!("{name} {}", sub.get_name()), out);
    }
    out.push((name, cmd));
}

fn all_commands(cli: &clap::Command) -> Vec<(String, &clap::Command)> {
    let mut out = Vec::new();
    walk(cli, "certex".into(), &mut out);
    out
}

#[test]
fn every_command_option_and_argument_has_help() {
    let cli = certex::cli::Cli::command();
    let commands = all_commands(&cli);
    assert!(commands.len() > 50, "{} commands", commands.len());
    let mut missing = Vec::new();
    for (name, c) in &commands {
        if c.get_about().is_none() {
            missing.push(format!("{name}: no about"));
        }
        for a in c.get_arguments() {
            if matches!(a.get_id().as_str(), "help" | "version") || a.is_hide_set() {
                continue;
            }
            let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
            if help.trim().is_empty() {
                missing.push(format!("{name} {}", a.get_id()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "without help text:\n{}",
        missing.join("\n")
    );
}

/// Options whose value is one word of a fixed set: clap must know the set,
/// so `--help`, completions and the error for a wrong word list it.
#[test]
fn enum_valued_options_list_their_values() {
    let cli = certex::cli::Cli::command();
    let expect: &[(&str, &str, &[&str])] = &[
        (
            "certex subscribe",
            "kinds",
            &["incident", "warning", "request", "retraction"],
        ),
        (
            "certex subscribe",
            "tlps",
            &["clear", "green", "amber", "amber+strict", "red"],
        ),
        (
            "certex subscribe",
            "min_severity",
            &["low", "medium", "high", "critical"],
        ),
        (
            "certex case list",
            "state",
            &["open", "acknowledged", "in-progress", "withdrawn"],
        ),
        (
            "certex case list",
            "role",
            &["requester", "addressee", "cc"],
        ),
        ("certex case list", "format", &["json", "table"]),
        ("certex case show", "format", &["json", "table"]),
        ("certex log head", "format", &["json", "table"]),
        ("certex log prove", "format", &["json", "tlog-proof"]),
        (
            "certex completions",
            "shell",
            &["bash", "zsh", "fish", "elvish", "powershell"],
        ),
    ];
    let commands = all_commands(&cli);
    for (cmd, arg, words) in expect {
        let c = commands
            .iter()
            .find(|(n, _)| n == cmd)
            .unwrap_or_else(|| panic!("no command {cmd}"))
            .1;
        let a = c
            .get_arguments()
            .find(|a| a.get_id() == *arg)
            .unwrap_or_else(|| panic!("{cmd}: no argument {arg}"));
        let values: Vec<String> = a
            .get_possible_values()
            .iter()
            .map(|v| v.get_name().to_owned())
            .collect();
        for w in *words {
            assert!(
                values.iter().any(|v| v == w),
                "{cmd} --{arg}: {w} not in {values:?}"
            );
        }
    }
}

fn certex(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_certex"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "certex {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn top_level() -> Vec<String> {
    certex::cli::Cli::command()
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .map(|c| c.get_name().to_owned())
        .collect()
}

#[test]
fn completions_name_every_command() {
    let bash = certex(&["completions", "bash"]);
    assert!(bash.contains("complete -F"), "{bash:.200}");
    for sub in top_level() {
        assert!(bash.contains(&sub), "bash completions lack {sub}");
    }
    assert!(bash.contains("--min-severity"));
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        assert!(
            certex(&["completions", shell]).contains("subscribe"),
            "{shell}"
        );
    }
}

#[test]
fn man_page_renders_with_every_command() {
    let page = certex(&["man"]);
    assert!(
        page.starts_with(".ie") || page.contains("\n.TH"),
        "{page:.200}"
    );
    assert!(page.contains(".TH certex 1"), "{page:.300}");
    for sub in top_level() {
        assert!(page.contains(&sub), "the manual page lacks {sub}");
    }

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man1");
    certex(&["man", "--out", out.to_str().unwrap()]);
    let mut pages: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    for want in [
        "certex.1",
        "certex-serve.1",
        "certex-case-list.1",
        "certex-log-head.1",
    ] {
        assert!(pages.iter().any(|p| p == want), "{want} not in {pages:?}");
    }
    let serve = std::fs::read_to_string(out.join("certex-serve.1")).unwrap();
    assert!(serve.contains(".TH certex-serve 1"), "{serve:.300}");
    assert!(serve.contains("listen"));
}
