//! `certex drill check|run|respond`: the command-line face of the drill
//! wing. `run` connects the control cell (the `--as` team, plus every
//! participant identity the development PKI holds), plays the scenario and
//! writes the after-action report to `--out`; `respond` runs an automated
//! participant until stopped.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::cli::args::{CliError, Conn, ScopeArgs, print_json};
use crate::client::connection::{Client, ClientFiles};
use crate::drill::control::{Identities, RunOptions};
use crate::drill::report::Report;
use crate::drill::respond::Rules;
use crate::drill::scenario::{On, Role, Scenario, Trigger, format_duration, parse_duration};
use crate::drill::{control, render, respond};
use crate::rules::access::TrafficScope;
use crate::rules::directory::Directory;

#[derive(Subcommand, Debug)]
pub enum DrillCommand {
    /// Validate a scenario file and print its master events list.
    Check {
        /// The scenario (TOML; see docs/drills.md).
        scenario: PathBuf,
        /// Also check teams and payloads against this directory file.
        #[arg(long)]
        directory: Option<PathBuf>,
        /// Development PKI whose directory.toml to check against.
        #[arg(long, env = "CERTEX_PKI")]
        pki: Option<PathBuf>,
    },
    /// Run a drill as its control cell and write the after-action report.
    Run(RunArgs),
    /// An automated participant: answers exercise traffic until stopped.
    Respond(RespondArgs),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The scenario (TOML; see docs/drills.md).
    pub scenario: PathBuf,
    /// Exercise seconds per wall-clock second (overrides the scenario's
    /// time_compression); 60 plays an hour in a minute.
    #[arg(long)]
    pub speed: Option<f64>,
    /// Directory for report.json, report.md and report.html.
    #[arg(long, default_value = "drill-report")]
    pub out: PathBuf,
    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Args, Debug)]
pub struct RespondArgs {
    /// Wall-clock wait before each answer (e.g. 2s, 1m).
    #[arg(long, default_value = "2s")]
    pub delay: String,
    /// A rules file (TOML; see docs/drills.md) for what to answer and how.
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// Answer only this exercise (default: every exercise, never real traffic).
    #[arg(long)]
    pub exercise: Option<String>,
    #[command(flatten)]
    pub conn: Conn,
}

fn read_scenario(path: &Path, dir: Option<&Directory>) -> Result<Scenario, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::other(format!("cannot read scenario {}: {e}", path.display())))?;
    Scenario::parse(&path.display().to_string(), &text, dir)
        .map_err(|e| CliError::other(e.to_string()))
}

/// Runs one drill command.
pub async fn run(cmd: DrillCommand) -> Result<(), CliError> {
    match cmd {
        DrillCommand::Check {
            scenario,
            directory,
            pki,
        } => {
            let dir_file = directory.or_else(|| pki.map(|p| p.join("directory.toml")));
            let dir = dir_file
                .map(|f| Directory::load(&f).map_err(|e| CliError::other(e.to_string())))
                .transpose()?;
            let s = read_scenario(&scenario, dir.as_ref())?;
            print_json(&check_summary(&s, dir.is_some()))
        }
        DrillCommand::Run(args) => run_drill(args).await,
        DrillCommand::Respond(args) => run_respond(args).await,
    }
}

fn check_summary(s: &Scenario, against_directory: bool) -> serde_json::Value {
    let mel: Vec<serde_json::Value> = s
        .injects
        .iter()
        .map(|i| {
            serde_json::json!({
                "id": i.id,
                "move": i.mv,
                "when": match &i.trigger {
                    Trigger::At(t) => format!("at {}", format_duration(*t)),
                    Trigger::After { event, delay, on } => format!(
                        "{} after {event}{}",
                        format_duration(*delay),
                        match on {
                            On::Met => "",
                            On::Failed => " failed",
                            On::Settled => " settled",
                        }
                    ),
                },
                "from": i.from,
                "to": i.to,
                "method": i.method.key(),
                "subject": i.subject,
            })
        })
        .collect();
    serde_json::json!({
        "valid": true,
        "checked_against_directory": against_directory,
        "exercise": s.exercise.id,
        "name": s.exercise.name,
        "duration": format_duration(s.exercise.duration),
        "participants": s.participants.len(),
        "comchecks": s.comchecks.len(),
        "injects": mel,
        "expectations": s.expectations.len(),
    })
}

async fn run_drill(args: RunArgs) -> Result<(), CliError> {
    let control = args.conn.connect().await?;
    let directory = control.local_directory().cloned();
    let s = read_scenario(&args.scenario, directory.as_ref())?;
    let mut teams = std::collections::BTreeMap::new();
    if let Some(pki) = &args.conn.pki {
        for p in s.participants.iter().filter(|p| p.role != Role::Observer) {
            if p.team == control.team()
                || !pki.join("teams").join(&p.team).join("cert.pem").exists()
            {
                continue;
            }
            let mut files = ClientFiles::from_pki(pki, &p.team);
            if let Some(ca) = &args.conn.ca {
                files.ca = ca.clone();
            }
            let c = Client::connect(&args.conn.broker, &files, &p.team).await?;
            teams.insert(p.team.clone(), c);
        }
    }
    let ids = Identities { control, teams };
    let opts = RunOptions {
        broker: args.conn.broker.clone(),
        speed: args.speed,
        log_key: args.conn.log_key().ok(),
        directory,
        scenario_file: args.scenario.display().to_string(),
        progress: !args.quiet,
    };
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let report = control::run(&s, &ids, &opts, stop)
        .await
        .map_err(CliError::other)?;
    let written = write_report(&report, &args.out)?;
    print_json(&serde_json::json!({
        "exercise": report.exercise.id,
        "ended": report.exercise.ended,
        "expectations": report.overall.expectations,
        "score": report.overall.score,
        "expected_score": report.overall.expected_score,
        "max_score": report.overall.max_score,
        "isolation_passed": report.isolation.passed,
        "proved": report.evidence.proved,
        "report": written,
    }))
}

/// Writes report.json, report.md and report.html into `out` (owner-only
/// files: a report quotes exercise traffic); returns the HTML's path.
pub fn write_report(report: &Report, out: &Path) -> Result<String, CliError> {
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(out)
            .map_err(|e| CliError::other(format!("cannot create {}: {e}", out.display())))?;
    }
    let json = serde_json::to_string_pretty(report).map_err(|e| CliError::other(e.to_string()))?;
    let files = [
        ("report.json", json),
        ("report.md", render::markdown(report)),
        ("report.html", render::html(report)),
    ];
    for (name, text) in &files {
        let path = out.join(name);
        write_private(&path, text.as_bytes())
            .map_err(|e| CliError::other(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(out.join("report.html").display().to_string())
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

async fn run_respond(args: RespondArgs) -> Result<(), CliError> {
    let delay: Duration =
        parse_duration(&args.delay).map_err(|e| CliError::usage(format!("--delay: {e}")))?;
    let rules = match &args.rules {
        Some(f) => Rules::load(f, delay).map_err(CliError::other)?,
        None => Rules::with_delay(delay),
    };
    let scope = ScopeArgs {
        exercise: args.exercise.clone(),
        all_exercises: args.exercise.is_none(),
    }
    .scope();
    let client = args.conn.connect().await?;
    let announce = format!(
        "certex drill respond: {} answers {} (every step {} after the one before); stop with Ctrl-C",
        client.team(),
        match &scope {
            TrafficScope::Exercise(e) => format!("exercise {e}"),
            _ => "every exercise".to_owned(),
        },
        match &args.rules {
            Some(f) => format!(
                "{} unless the rules in {} say otherwise",
                format_duration(delay),
                f.display()
            ),
            None => format_duration(delay),
        }
    );
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let printer = tokio::spawn(async move {
        while let Some(line) = rx.recv().await {
            if print_json(&line).is_err() {
                return;
            }
        }
    });
    let stop = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    let ready = move || eprintln!("{announce}");
    let result = respond::respond(client, scope, rules, stop, ready, tx).await;
    let _ = printer.await;
    result.map_err(CliError::other)
}
