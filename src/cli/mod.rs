//! The `certex` command line (SPEC §10): argument definitions and one
//! function per command. Data goes to stdout as JSON; errors to stderr.
//!
//! The CLI sits on top: it may use every other wing, and nothing below uses
//! it. [`demo`], [`bench`], [`pki`] and [`witness`] are commands of their own; [`abuse`]
//! holds the hostile-member attacks that `bench abuse` and the tests run.

pub mod abuse;
pub mod args;
pub mod bench;
pub mod demo;
pub mod directory;
pub mod drill;
pub mod export;
pub mod federation;
pub mod import;
pub mod manual;
pub mod pki;
pub mod submit;
pub mod subscribe;
pub mod table;
pub mod witness;

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use crate::cli::args::{CliError, Conn, ScopeArgs, print_json};
pub use crate::cli::subscribe::SubscribeArgs;
pub use crate::cli::table::OutputFormat;
use serde::Serialize;

use crate::broker::config::BrokerConfig;
use crate::broker::server::Broker;
use crate::client::audit::{fetch_head, head_json, prove, verify_state};
use crate::client::connection::record_request;
use crate::client::draft::{BodyJson, ReceiptJson, RecordJson};
use crate::proto as pb;

/// The exit codes, one per class of failure ([`args::ExitClass`]), as
/// `certex --help` lists them.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  any other failure (a local file unreadable or invalid, a write failed)
  2  usage: a wrong flag or value, or a file named on the command line that
     does not exist
  3  connection: the broker cannot be reached, the TLS handshake failed
     (wrong --ca, this team's certificate refused) or the connection was lost
  4  refused: the broker answered the call with a gRPC status refusing it
  5  verification: a record, proof, tree head or checkpoint failed the
     client's own checks (get and subscribe still print such a record, with
     \"verified\": false and its verify_error, then exit 5)";

#[derive(Parser, Debug)]
#[command(
    name = "certex",
    version,
    about = "Cross-border CERT cooperation broker",
    after_help = EXIT_CODES
)]
pub struct Cli {
    /// Diagnostics on stderr: `text` for people (coloured only on a
    /// terminal, never when NO_COLOR is set), `json` for log collectors (one
    /// object per line). Their level: RUST_LOG (default: info for `serve`
    /// and `witness serve`, warn otherwise).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "CERTEX_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// How diagnostics are written (`--log-format`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines; colour only on a terminal without NO_COLOR.
    Text,
    /// One JSON object per line: timestamp, level, target, fields, span.
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Development PKI.
    #[command(subcommand)]
    Pki(PkiCommand),
    /// Run the broker.
    Serve(ServeArgs),
    /// Check and edit directory.toml: teams, keys, groups (the broker
    /// applies it on SIGHUP).
    #[command(subcommand)]
    Directory(crate::cli::directory::DirectoryCommand),
    /// Federation of brokers (SPEC §12): relay state per peer.
    #[command(subcommand)]
    Federation(crate::cli::federation::FederationCommand),
    /// Write what this team may read as a STIX 2.1 bundle (SPEC §14).
    Export(crate::cli::export::ExportArgs),
    /// Sign a draft (JSON file or - for stdin) and publish it; prints the receipt.
    /// With --stream, FILE holds one draft per line, all published on one stream.
    Submit {
        /// Draft file, or - for standard input.
        file: String,
        /// FILE holds drafts as JSON lines (blank lines skipped): every line is
        /// checked and signed first (a line that is not a valid draft stops the
        /// command, naming its line number, before anything is sent), then all
        /// go over one PublishStream. Prints one JSON line per draft, in order:
        /// its receipt with "index" (0-based among the drafts) and "line", or
        /// {"index", "line", "refused": {"code", "message"}}. Exit 4 if the
        /// broker refused any.
        #[arg(long)]
        stream: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print one record (by seq or id) as JSON, signature verified.
    Get {
        /// A seq (number) or a message id (UUID).
        what: String,
        /// With an id: whose message.
        #[arg(long)]
        sender: Option<String>,
        #[command(flatten)]
        scope: ScopeArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// Records as JSON lines, signatures verified client-side.
    Subscribe(SubscribeArgs),
    /// Case assistance: list, show, and signed updates.
    #[command(subcommand)]
    Case(CaseCommand),
    /// The transparency log.
    #[command(subcommand)]
    Log(LogCommand),
    /// Tabletop drills: check a scenario, run it as the control cell, or
    /// play an automated participant.
    #[command(subcommand)]
    Drill(crate::cli::drill::DrillCommand),
    /// The whole story in one process, narrated.
    Demo,
    /// Benchmarks over real mTLS; one JSON summary line each.
    #[command(subcommand)]
    Bench(crate::cli::bench::BenchCommand),
    /// A C2SP tlog-witness: create its key, or serve add-checkpoint.
    #[command(subcommand)]
    Witness(crate::cli::witness::WitnessCommand),
    /// Import a STIX 2.1 bundle (MISP, OpenCTI): sign and publish its
    /// incidents, reports and indicators; one JSON line per STIX object.
    Import(crate::cli::import::ImportArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(crate::cli::manual::CompletionsArgs),
    /// Print the manual page, or write one per command with --out DIR.
    Man(crate::cli::manual::ManArgs),
}

#[derive(Subcommand, Debug)]
pub enum PkiCommand {
    /// Create a development PKI and directory in DIR.
    Init {
        /// Where to write the PKI and directory.toml (created).
        #[arg(long)]
        dir: PathBuf,
        /// Comma-separated team ids, e.g. CN-CNCERT,BR-CERTBR.
        #[arg(long, value_delimiter = ',', required = true)]
        teams: Vec<String>,
        /// A sharing group, NAME=TEAM,TEAM (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// A federation: comma-separated broker ids, each a country code
        /// of --teams, e.g. CN,BR,RU; every team is homed on its
        /// country's broker.
        #[arg(long, value_delimiter = ',')]
        brokers: Vec<String>,
    },
    /// Issue a TLS client certificate for a team in a development PKI
    /// (teams/<TEAM>/cert.pem and key.pem), signed by its country's CA.
    IssueTeamCert {
        /// Development PKI directory (pki init --dir).
        #[arg(long, env = "CERTEX_PKI")]
        pki: PathBuf,
        /// The team id, e.g. FR-CERTFR; its country code picks the CA.
        #[arg(long)]
        team: String,
        /// Replace the team's existing certificate and key.
        #[arg(long)]
        replace: bool,
    },
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Development PKI directory (broker identity, directory.toml).
    #[arg(long, env = "CERTEX_PKI", required_unless_present = "config")]
    pub pki: Option<PathBuf>,
    /// Database directory.
    #[arg(long, required_unless_present = "config")]
    pub data: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7443")]
    pub listen: SocketAddr,
    /// Also serve the read-only TAXII 2.1 API on this address (same TLS
    /// identity, client certificates and access rules as gRPC).
    #[arg(long, value_name = "ADDR")]
    pub taxii_listen: Option<SocketAddr>,
    /// Serve Prometheus metrics on this address: plain HTTP, GET /metrics,
    /// for the operator only (no TLS, no authentication: bind to loopback
    /// or a management network; no record content is exposed). Off by
    /// default.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// A TOML configuration file instead of --pki/--data/--listen.
    #[arg(long, conflicts_with_all = ["pki", "data"])]
    pub config: Option<PathBuf>,
    /// This broker's id in a federation (a [[broker]] of the directory);
    /// with --pki, its identity is brokers/<ID>/ of the PKI; with
    /// --config, it sets the configuration's `broker`.
    #[arg(long)]
    pub broker: Option<String>,
    /// A standard witness (C2SP tlog-witness submission prefix, http://…)
    /// to push each new checkpoint to; repeatable, added to the config's.
    #[arg(long = "witness-push")]
    pub witness_push: Vec<String>,
    /// A federation peer's URL, `ID=https://HOST:PORT` (overrides the
    /// directory's URL for that broker); repeatable.
    #[arg(long = "peer", value_name = "ID=URL")]
    pub peers: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum CaseCommand {
    /// Cases you are a party to, as JSON lines.
    List {
        /// Only cases past respond_by and not yet acknowledged.
        #[arg(long)]
        overdue: bool,
        /// Only cases in this state.
        #[arg(long, value_parser = crate::cli::args::words::<pb::CaseState>())]
        state: Option<String>,
        /// Only cases where you are the requester, the addressee or a cc.
        #[arg(long, value_parser = ["requester", "addressee", "cc"])]
        role: Option<String>,
        /// JSON lines, or an aligned table for people.
        #[arg(long, value_enum, default_value_t = OutputFormat::Json)]
        format: OutputFormat,
        #[command(flatten)]
        scope: ScopeArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// One case: the request, its state and its full history.
    Show {
        /// The case id (the request's id).
        id: String,
        /// JSON, or aligned text for people: the case, then its history.
        #[arg(long, value_enum, default_value_t = OutputFormat::Json)]
        format: OutputFormat,
        #[command(flatten)]
        scope: ScopeArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// Acknowledge receipt (addressee).
    Ack(UpdateArgs),
    /// Accept the request (addressee).
    Accept(UpdateArgs),
    /// Decline the request, with a reason (addressee).
    Decline(UpdateArgs),
    /// Report progress, with a note (addressee).
    Progress(UpdateArgs),
    /// Resolve, with the result as a note (addressee).
    Resolve(UpdateArgs),
    /// Close a resolved or declined case (requester).
    Close(UpdateArgs),
    /// Withdraw the request before it is resolved, with a reason (requester).
    Withdraw(UpdateArgs),
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// The case id (the request's id).
    pub id: String,
    /// The requester (the request's sender), when several visible cases share the id.
    #[arg(long)]
    pub requester: Option<String>,
    /// A note: the progress made or the result (required by progress and resolve).
    #[arg(long, default_value = "")]
    pub note: String,
    /// Why (required by decline and withdraw).
    #[arg(long, default_value = "")]
    pub reason: String,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Subcommand, Debug)]
pub enum LogCommand {
    /// The current signed tree head, verified; with the latest
    /// checkpoint's cosigners and whether they meet the witness quorum.
    Head {
        /// Fail (exit non-zero) unless the checkpoint's cosignatures meet
        /// the directory's witness_policy quorum.
        #[arg(long)]
        require_quorum: bool,
        /// JSON, or aligned text for people.
        #[arg(long, value_enum, default_value_t = OutputFormat::Json)]
        format: OutputFormat,
        #[command(flatten)]
        conn: Conn,
    },
    /// Fetch and verify an inclusion proof for a record (seq or id).
    Prove {
        /// A seq (number) or a message id (UUID).
        what: String,
        /// `json` (a verified proof summary) or `tlog-proof` (a C2SP
        /// tlog-proof@v1 bundle with the record's bytes and the cosigned
        /// checkpoint, for `log check-proof`).
        #[arg(long, default_value = "json", value_parser = ["json", "tlog-proof"])]
        format: String,
        #[command(flatten)]
        scope: ScopeArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// Verify a tlog-proof bundle with no broker: record bytes, inclusion,
    /// checkpoint signature, cosignatures, the record's own signature.
    CheckProof {
        /// The bundle (`log prove … --format tlog-proof`).
        file: PathBuf,
        /// A record as `certex get` printed it, which must be the proven one.
        #[arg(long)]
        record: Option<PathBuf>,
        /// The directory file to verify with.
        #[arg(long)]
        directory: Option<PathBuf>,
        /// Development PKI whose directory.toml to verify with.
        #[arg(long, env = "CERTEX_PKI")]
        pki: Option<PathBuf>,
        /// Fail unless the checkpoint's cosignatures meet the directory's
        /// witness_policy quorum.
        #[arg(long)]
        require_quorum: bool,
    },
    /// The latest checkpoint (C2SP signed note), verified with the
    /// directory's checkpoint_vkey; its root checked against the signed
    /// tree head when they have the same size.
    Checkpoint {
        #[command(flatten)]
        conn: Conn,
    },
    /// Check the current head extends the one kept in FILE, then keep it;
    /// with --cosign, then cosign the broker's checkpoint as a witness.
    Verify {
        /// The state file: the head kept from the last run (created on the first).
        #[arg(long)]
        state: PathBuf,
        /// Cosign the latest checkpoint once it agrees with the verified head.
        #[arg(long)]
        cosign: bool,
        /// The team's witness key (default: teams/<TEAM>/witness.key in --pki).
        #[arg(long)]
        witness_key: Option<PathBuf>,
        /// Fail (exit non-zero) unless the latest checkpoint's cosignatures
        /// meet the directory's witness_policy quorum.
        #[arg(long)]
        require_quorum: bool,
        #[command(flatten)]
        conn: Conn,
    },
}

/// What `log head` and `log verify` report of the latest checkpoint.
#[derive(serde::Serialize)]
struct CheckpointSummary {
    tree_size: u64,
    cosigners: Vec<String>,
    quorum: Option<crate::client::audit::QuorumJson>,
}

/// The latest checkpoint's cosigners and quorum, when the local directory
/// lists a checkpoint key (else nothing to verify it with). The checkpoint
/// must be the same log as `verified`, the tree head just checked, so a
/// quorum elsewhere cannot vouch for it.
async fn checkpoint_summary(
    client: &crate::client::connection::Client,
    verified: (u64, &crate::client::verify::Hash),
) -> Result<Option<CheckpointSummary>, CliError> {
    if client
        .local_directory()
        .and_then(|d| d.log_vkey_for(client.team()))
        .is_none()
    {
        return Ok(None);
    }
    let (cp, json) = crate::client::audit::fetch_checkpoint(client).await?;
    if !crate::client::audit::agrees(client, verified, (cp.size, &cp.root)).await? {
        return Err(CliError::verification(format!(
            "LOG INCONSISTENT: the checkpoint of size {} and the verified tree head of size {} are not the same log",
            cp.size, verified.0
        )));
    }
    Ok(Some(CheckpointSummary {
        tree_size: cp.size,
        cosigners: json.cosigners,
        quorum: json.quorum,
    }))
}

/// `--require-quorum`: fails unless the checkpoint met the quorum.
fn quorum_check(required: bool, c: Option<&CheckpointSummary>) -> Result<(), CliError> {
    if !required {
        return Ok(());
    }
    let c = c.ok_or_else(|| {
        CliError::usage("--require-quorum: the local directory lists no checkpoint_vkey")
    })?;
    crate::client::audit::require_quorum(c.quorum.as_ref()).map_err(CliError::verification)
}

/// Runs one command.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Pki(PkiCommand::Init {
            dir,
            teams,
            groups,
            brokers,
        }) => {
            let groups = groups
                .iter()
                .map(|g| crate::cli::pki::parse_group(g))
                .collect::<Result<Vec<_>, _>>()?;
            crate::cli::pki::init_federation(&dir, &teams, &groups, &brokers)?;
            if brokers.is_empty() {
                eprintln!(
                    "development PKI for {} teams written to {}",
                    teams.len(),
                    dir.display()
                );
            } else {
                eprintln!(
                    "development federation PKI for {} teams and brokers {} written to {}",
                    teams.len(),
                    brokers.join(", "),
                    dir.display()
                );
            }
            Ok(())
        }
        Command::Pki(PkiCommand::IssueTeamCert { pki, team, replace }) => {
            let cert = crate::cli::pki::issue_team_files(&pki, &team, replace)?;
            print_json(&serde_json::json!({
                "team": team,
                "certificate": cert.display().to_string(),
                "key": cert.with_file_name("key.pem").display().to_string(),
            }))
        }
        Command::Directory(cmd) => crate::cli::directory::run(cmd),
        Command::Serve(args) => serve(args, cli.log_format).await,
        Command::Submit {
            file,
            stream: true,
            conn,
        } => crate::cli::submit::stream(&file, &conn).await,
        Command::Submit {
            file,
            stream: false,
            conn,
        } => {
            let text = if file == "-" {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s).map_err(|e| {
                    CliError::other(format!("cannot read the draft from stdin: {e}"))
                })?;
                s
            } else {
                std::fs::read_to_string(&file)
                    .map_err(|e| CliError::other(format!("cannot read draft {file}: {e}")))?
            };
            let draft: BodyJson = serde_json::from_str(&text)
                .map_err(|e| CliError::other(format!("draft {file} is not valid: {e}")))?;
            let client = conn.connect().await?;
            let receipt = client.submit(draft).await?;
            print_json(&ReceiptJson::from(&receipt))
        }
        Command::Get {
            what,
            sender,
            scope,
            conn,
        } => {
            let client = conn.connect().await?;
            let rec = client
                .get(record_request(&what, sender, &scope.scope()))
                .await?;
            let json = client.render(&rec);
            print_json(&json)?;
            unverified(&[&json])
        }
        Command::Subscribe(args) => crate::cli::subscribe::run(args).await,
        Command::Log(cmd) => log_command(cmd).await,
        Command::Case(cmd) => case_command(cmd).await,
        Command::Drill(cmd) => crate::cli::drill::run(cmd).await,
        Command::Demo => crate::cli::demo::run().await.map_err(CliError::other),
        Command::Bench(cmd) => crate::cli::bench::run(cmd).await.map_err(CliError::other),
        Command::Witness(cmd) => crate::cli::witness::run(cmd).await,
        Command::Federation(cmd) => crate::cli::federation::run(cmd).await,
        Command::Export(args) => crate::cli::export::run(args).await,
        Command::Import(args) => crate::cli::import::run(args).await,
        Command::Completions(args) => {
            crate::cli::manual::completions(&args, <Cli as clap::CommandFactory>::command())
        }
        Command::Man(args) => {
            crate::cli::manual::man(&args, <Cli as clap::CommandFactory>::command())
        }
    }
}

/// A non-zero exit when a printed record's signature does not verify (a
/// key revoked or expired after the record was logged is not a failure:
/// `key_status` says so). Tombstones carry no signature to check.
fn unverified(records: &[&RecordJson]) -> Result<(), CliError> {
    let bad: Vec<String> = records
        .iter()
        .filter_map(|r| {
            r.verify_error
                .as_ref()
                .map(|e| format!("record {}: {e}", r.seq))
        })
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(CliError::verification(format!(
            "{} record(s) did NOT verify: {}",
            bad.len(),
            bad.join("; ")
        )))
    }
}

/// A case summary as `case list` prints it.
#[derive(Debug, Serialize)]
pub struct CaseLine {
    pub id: String,
    pub seq: u64,
    pub state: String,
    pub requester: String,
    pub to: String,
    pub cc: Vec<String>,
    pub action: String,
    pub priority: String,
    pub respond_by: String,
    pub overdue: bool,
    pub role: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub exercise: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub marking: Option<String>,
}

fn word<T: crate::rules::vocab::Word + TryFrom<i32>>(v: i32) -> String {
    T::try_from(v)
        .map(|x| x.word().to_owned())
        .unwrap_or_default()
}

fn case_line(s: &pb::CaseSummary) -> CaseLine {
    CaseLine {
        id: s.id.clone(),
        seq: s.seq,
        state: word::<pb::CaseState>(s.state),
        requester: s.requester.clone(),
        to: s.to.clone(),
        cc: s.cc.clone(),
        action: word::<pb::Action>(s.action),
        priority: word::<pb::Severity>(s.priority),
        respond_by: s
            .respond_by
            .as_ref()
            .map(crate::rules::time::timestamp_text)
            .unwrap_or_default(),
        overdue: s.overdue,
        role: match pb::CaseRole::try_from(s.my_role) {
            Ok(pb::CaseRole::Requester) => "requester",
            Ok(pb::CaseRole::Addressee) => "addressee",
            Ok(pb::CaseRole::Cc) => "cc",
            _ => "",
        }
        .to_owned(),
        exercise: s.exercise.clone(),
        marking: (!s.exercise.is_empty()).then(|| "EXERCISE".to_owned()),
    }
}

/// One entry of `case show`'s history.
#[derive(Debug, Serialize)]
pub struct HistoryLine {
    pub seq: u64,
    pub sender: String,
    pub at: String,
    pub transition: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub note: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    pub verified: bool,
}

/// What `case show` prints.
#[derive(Debug, Serialize)]
pub struct CaseJson {
    #[serde(flatten)]
    pub summary: CaseLine,
    pub time_to_acknowledge_ms: Option<u64>,
    pub time_to_resolve_ms: Option<u64>,
    pub acknowledged_late: bool,
    pub request: crate::client::draft::RecordJson,
    pub history: Vec<HistoryLine>,
}

async fn case_command(cmd: CaseCommand) -> Result<(), CliError> {
    use crate::rules::vocab::parse;
    use pb::CaseState::*;
    let (args, transition) = match cmd {
        CaseCommand::List {
            overdue,
            state,
            role,
            format,
            scope,
            conn,
        } => {
            let state = match state {
                Some(s) => parse::<pb::CaseState>(&s)
                    .map_err(|e| CliError::usage(format!("--state: {e}")))?
                    as i32,
                None => 0,
            };
            let role = match role.as_deref() {
                None => pb::CaseRole::Unspecified,
                Some("requester") => pb::CaseRole::Requester,
                Some("addressee") => pb::CaseRole::Addressee,
                Some("cc") => pb::CaseRole::Cc,
                Some(other) => {
                    return Err(CliError::usage(format!(
                        "--role {other:?}: one of requester, addressee, cc"
                    )));
                }
            };
            let client = conn.connect().await?;
            let cases = client
                .list_cases(pb::ListCasesRequest {
                    state,
                    role: role as i32,
                    overdue_only: overdue,
                    exercise: Some(scope.scope().to_selector()),
                    ..Default::default()
                })
                .await?;
            if format == OutputFormat::Table {
                let lines = cases
                    .iter()
                    .map(|c| serde_json::to_value(case_line(c)))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| CliError::other(format!("cannot print the cases: {e}")))?;
                print!("{}", crate::cli::table::case_list(&lines));
                return Ok(());
            }
            for c in &cases {
                print_json(&case_line(c))?;
            }
            return Ok(());
        }
        CaseCommand::Show {
            id,
            format,
            scope,
            conn,
        } => {
            let client = conn.connect().await?;
            let case = client
                .get_case(pb::GetCaseRequest {
                    id,
                    exercise: Some(scope.scope().to_selector()),
                    ..Default::default()
                })
                .await?;
            let summary = case.summary.unwrap_or_default();
            let verified: std::collections::HashMap<u64, bool> = case
                .updates
                .iter()
                .map(|u| (u.seq, client.render(u).verified))
                .collect();
            let out = CaseJson {
                summary: case_line(&summary),
                time_to_acknowledge_ms: (case.time_to_acknowledge_ms > 0)
                    .then_some(case.time_to_acknowledge_ms),
                time_to_resolve_ms: (case.time_to_resolve_ms > 0)
                    .then_some(case.time_to_resolve_ms),
                acknowledged_late: case.acknowledged_late,
                request: client.render(&case.request.unwrap_or_default()),
                history: case
                    .history
                    .iter()
                    .map(|h| HistoryLine {
                        seq: h.seq,
                        sender: h.sender.clone(),
                        at: h
                            .at
                            .as_ref()
                            .map(crate::rules::time::timestamp_text)
                            .unwrap_or_default(),
                        transition: word::<pb::CaseState>(h.transition),
                        note: h.note.clone(),
                        reason: h.reason.clone(),
                        verified: verified.get(&h.seq).copied().unwrap_or(false),
                    })
                    .collect(),
            };
            if format == OutputFormat::Table {
                let out = serde_json::to_value(&out)
                    .map_err(|e| CliError::other(format!("cannot print the case: {e}")))?;
                print!("{}", crate::cli::table::case_show(&out));
                return Ok(());
            }
            return print_json(&out);
        }
        CaseCommand::Ack(a) => (a, Acknowledged),
        CaseCommand::Accept(a) => (a, Accepted),
        CaseCommand::Decline(a) => (a, Declined),
        CaseCommand::Progress(a) => (a, InProgress),
        CaseCommand::Resolve(a) => (a, Resolved),
        CaseCommand::Close(a) => (a, Closed),
        CaseCommand::Withdraw(a) => (a, Withdrawn),
    };
    if matches!(transition, Declined | Withdrawn) && args.reason.trim().is_empty() {
        return Err(CliError::usage(
            "--reason is required to decline or withdraw",
        ));
    }
    if matches!(transition, InProgress | Resolved) && args.note.trim().is_empty() {
        return Err(CliError::usage(
            "--note is required for progress and resolve",
        ));
    }
    let client = args.conn.connect().await?;
    let receipt = client
        .update_case_of(
            args.requester.as_deref(),
            &args.id,
            transition,
            &args.note,
            &args.reason,
        )
        .await?;
    print_json(&ReceiptJson::from(&receipt))
}

/// `certex serve`. Its start-up lines come in the true order: a bad file
/// (configuration, directory, keys, certificate) stops it before anything
/// says "listening"; with `--log-format json` the listening lines are log
/// events (fields `addr`), so every stderr line is JSON.
async fn serve(args: ServeArgs, log_format: LogFormat) -> Result<(), CliError> {
    let plain = log_format == LogFormat::Text;
    let mut config = match (&args.config, &args.pki, &args.data) {
        (Some(c), _, _) => {
            let mut config = BrokerConfig::from_file(c)?;
            if let Some(id) = &args.broker {
                config.broker = Some(id.clone());
            }
            config
        }
        (None, Some(pki), Some(data)) => match &args.broker {
            Some(id) => {
                crate::rules::directory::check_broker_id(id)?;
                let b = pki.join("brokers").join(id);
                if !b.is_dir() {
                    return Err(CliError::usage(format!(
                        "--broker {id}: {} does not exist (pki init --brokers … writes it)",
                        b.display()
                    )));
                }
                BrokerConfig::from_pki_broker(pki, id, data, args.listen)
            }
            None => BrokerConfig::from_pki(pki, data, args.listen),
        },
        _ => return Err(CliError::usage("give --pki and --data, or --config")),
    };
    config.witness_push.extend(args.witness_push);
    if args.taxii_listen.is_some() {
        config.taxii_listen = args.taxii_listen;
    }
    if args.metrics_listen.is_some() {
        config.metrics_listen = args.metrics_listen;
    }
    for p in &args.peers {
        let (id, url) = p
            .split_once('=')
            .ok_or_else(|| CliError::usage(format!("--peer {p:?}: give ID=https://HOST:PORT")))?;
        config.peers.entry(id.to_owned()).or_default().url = Some(url.to_owned());
    }
    config.validate()?;
    let listen = config.listen;
    let broker = Broker::open(config)?;
    let listener = match inherited_listener()? {
        Some(l) => l,
        None => tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| CliError::other(format!("cannot listen on {listen}: {e}")))?,
    };
    let local = listener
        .local_addr()
        .map_err(|e| CliError::other(e.to_string()))?;
    if let Some(addr) = broker.config().taxii_listen {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| CliError::other(format!("cannot listen on {addr} (TAXII): {e}")))?;
        let at = broker.start_taxii(l)?;
        tracing::info!(addr = %at, "TAXII 2.1 API listening");
        if plain {
            eprintln!("certex TAXII 2.1 listening on {at} (API root /certex/)");
        }
    }
    if let Some(addr) = broker.config().metrics_listen {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| CliError::other(format!("cannot listen on {addr} (metrics): {e}")))?;
        let at = broker.start_metrics(l)?;
        tracing::info!(addr = %at, "metrics listening");
        if plain {
            eprintln!("certex metrics listening on {at}");
        }
    }
    tracing::info!(addr = %local, size = broker.log().head().tree_size, "broker listening");
    if plain {
        eprintln!("certex broker listening on {local}");
    }

    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).map_err(|e| CliError::other(e.to_string()))?;
    let reloader = broker.clone();
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            if let Err(e) = reloader.reload_directory() {
                tracing::error!(error = %e, "directory reload refused; the previous directory stays in force");
            }
        }
    });
    broker
        .serve(listener, crate::cli::args::shutdown_signal())
        .await?;
    Ok(())
}

/// The listening socket handed over by a supervisor (systemd socket
/// activation: `LISTEN_FDS`, the first at file descriptor 3; `LISTEN_PID`, if
/// set, must be this process), if any.
fn inherited_listener() -> Result<Option<tokio::net::TcpListener>, CliError> {
    let mut fds = listenfd::ListenFd::from_env();
    let Some(l) = fds.take_tcp_listener(0).map_err(|e| {
        CliError::other(format!(
            "LISTEN_FDS: the inherited socket is not a TCP listener: {e}"
        ))
    })?
    else {
        return Ok(None);
    };
    l.set_nonblocking(true)
        .map_err(|e| CliError::other(format!("inherited socket: {e}")))?;
    tokio::net::TcpListener::from_std(l)
        .map(Some)
        .map_err(|e| CliError::other(format!("inherited socket: {e}")))
}

async fn log_command(cmd: LogCommand) -> Result<(), CliError> {
    match cmd {
        LogCommand::Head {
            require_quorum,
            format,
            conn,
        } => {
            let client = conn.connect().await?;
            let (head, root) = fetch_head(&client, &conn.log_key()?).await?;
            let checkpoint = checkpoint_summary(&client, (head.tree_size, &root)).await?;
            let mut out = serde_json::to_value(head_json(&head))
                .map_err(|e| CliError::other(format!("cannot print the head: {e}")))?;
            out["checkpoint"] = serde_json::to_value(&checkpoint)
                .map_err(|e| CliError::other(format!("cannot print the checkpoint: {e}")))?;
            match format {
                OutputFormat::Json => print_json(&out)?,
                OutputFormat::Table => print!("{}", crate::cli::table::log_head(&out)),
            }
            quorum_check(require_quorum, checkpoint.as_ref())
        }
        LogCommand::Prove {
            what,
            format,
            scope,
            conn,
        } => {
            let client = conn.connect().await?;
            match format.as_str() {
                "json" => {
                    let key = conn.log_key()?;
                    let out = prove(&client, &key, &what, &scope.scope()).await?;
                    print_json(&out)
                }
                "tlog-proof" => {
                    let bundle =
                        crate::client::audit::tlog_proof(&client, &what, &scope.scope()).await?;
                    print!("{bundle}");
                    Ok(())
                }
                other => Err(CliError::usage(format!(
                    "--format {other:?}: one of json, tlog-proof"
                ))),
            }
        }
        LogCommand::CheckProof {
            file,
            record,
            directory,
            pki,
            require_quorum,
        } => {
            let dir_file = directory
                .or_else(|| pki.map(|p| p.join("directory.toml")))
                .ok_or_else(|| CliError::usage("give --directory FILE or --pki DIR"))?;
            let dir = crate::rules::directory::Directory::load(&dir_file)
                .map_err(|e| CliError::other(e.to_string()))?;
            let text = std::fs::read_to_string(&file)
                .map_err(|e| CliError::other(format!("cannot read {}: {e}", file.display())))?;
            let record = record
                .map(|r| -> Result<RecordJson, CliError> {
                    let t = std::fs::read_to_string(&r).map_err(|e| {
                        CliError::other(format!("cannot read {}: {e}", r.display()))
                    })?;
                    serde_json::from_str(&t).map_err(|e| {
                        CliError::other(format!("{} is not a record: {e}", r.display()))
                    })
                })
                .transpose()?;
            let out = crate::client::audit::check_proof(&text, &dir, record.as_ref())
                .map_err(|e| CliError::verification(format!("{}: {e}", file.display())))?;
            print_json(&out)?;
            if require_quorum {
                crate::client::audit::require_quorum(out.quorum.as_ref())
                    .map_err(|e| CliError::verification(format!("{}: {e}", file.display())))?;
            }
            Ok(())
        }
        LogCommand::Checkpoint { conn } => {
            let client = conn.connect().await?;
            let (cp, json) = crate::client::audit::fetch_checkpoint(&client).await?;
            if let Ok(key) = conn.log_key() {
                let (head, root) = fetch_head(&client, &key).await?;
                if !crate::client::audit::agrees(
                    &client,
                    (head.tree_size, &root),
                    (cp.size, &cp.root),
                )
                .await?
                {
                    return Err(CliError::verification(format!(
                        "LOG INCONSISTENT: the checkpoint of size {} and the signed tree head of size {} are not the same log",
                        cp.size, head.tree_size
                    )));
                }
            }
            print_json(&json)
        }
        LogCommand::Verify {
            state,
            cosign,
            witness_key,
            require_quorum,
            conn,
        } => {
            let client = conn.connect().await?;
            let key = conn.log_key()?;
            let out = match verify_state(&client, &key, &state).await {
                Ok(out) => out,
                Err(e) if cosign => {
                    let e = CliError::from(e);
                    return Err(CliError::of(
                        e.class,
                        format!(
                            "refusing to cosign: {e} (another member may have been shown a different log: a split view)"
                        ),
                    ));
                }
                Err(e) => return Err(e.into()),
            };
            let root = hex::decode(&out.root_hash)
                .ok()
                .and_then(|r| crate::client::verify::hash_from_slice(&r).ok())
                .ok_or_else(|| CliError::other("the verified head has no root"))?;
            if !cosign {
                let checkpoint = checkpoint_summary(&client, (out.tree_size, &root)).await?;
                let mut line = serde_json::to_value(&out)
                    .map_err(|e| CliError::other(format!("cannot print the audit: {e}")))?;
                line["checkpoint"] = serde_json::to_value(&checkpoint)
                    .map_err(|e| CliError::other(format!("cannot print the checkpoint: {e}")))?;
                print_json(&line)?;
                return quorum_check(require_quorum, checkpoint.as_ref());
            }
            let path = match (witness_key, &conn.pki) {
                (Some(p), _) => p,
                (None, Some(pki)) => pki.join("teams").join(&conn.team).join("witness.key"),
                (None, None) => {
                    return Err(CliError::usage(
                        "--cosign needs --witness-key FILE (or --pki)",
                    ));
                }
            };
            let witness =
                crate::rules::envelope::read_signing_key(&path).map_err(CliError::other)?;
            let cosigned = crate::client::audit::cosign_latest(
                &client,
                (out.tree_size, &root),
                &witness,
                &state,
            )
            .await?;
            let checkpoint = checkpoint_summary(&client, (out.tree_size, &root)).await?;
            print_json(&serde_json::json!({
                "audit": out,
                "cosign": cosigned,
                "checkpoint": checkpoint,
            }))?;
            quorum_check(require_quorum, checkpoint.as_ref())
        }
    }
}
