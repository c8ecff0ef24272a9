//! The arguments and helpers every command shares: how to reach the broker
//! and as whom ([`Conn`]), which traffic to read ([`ScopeArgs`]), the
//! one-line command error, and JSON output. A leaf of the `cli` wing, so
//! each command's file can use it without importing the command table.

use std::path::PathBuf;

use clap::Args;
use ed25519_dalek::VerifyingKey;
use serde::Serialize;

use crate::broker::server::StartError;
use crate::client::audit::read_public_key;
use crate::client::connection::{Client, ClientError, ClientFiles, transport_failure};
use crate::rules::access::TrafficScope;

/// The class of a failed command, which picks its exit code (listed in
/// `certex --help`, the table `EXIT_CODES` of the command module) so scripts can tell a
/// mistyped flag from a broker that is down, a refusal or a forgery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitClass {
    /// Anything else: a local file unreadable or invalid, a write failed.
    Other,
    /// The command line is wrong: a flag, a value, a file it names that
    /// does not exist. Exit 2, as clap's own usage errors.
    Usage,
    /// The broker cannot be reached, the TLS handshake failed either way
    /// (wrong CA, certificate refused), or the connection was lost.
    Connection,
    /// The broker answered the call with a gRPC status refusing it.
    Refused,
    /// What the broker sent failed the client's own checks: a record's
    /// signature, a proof, a tree head, a checkpoint or its quorum.
    Verification,
}

impl ExitClass {
    /// The process exit code of this class.
    pub fn code(self) -> u8 {
        match self {
            ExitClass::Other => 1,
            ExitClass::Usage => 2,
            ExitClass::Connection => 3,
            ExitClass::Refused => 4,
            ExitClass::Verification => 5,
        }
    }
}

/// A failed command: one clear line for stderr, and its class.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    pub class: ExitClass,
    pub message: String,
}

impl CliError {
    /// A failure of no particular class (exit 1).
    pub fn other(message: impl Into<String>) -> Self {
        Self::of(ExitClass::Other, message)
    }

    /// A wrong command line (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self::of(ExitClass::Usage, message)
    }

    /// A check of the broker's answer failed (exit 5).
    pub fn verification(message: impl Into<String>) -> Self {
        Self::of(ExitClass::Verification, message)
    }

    pub fn of(class: ExitClass, message: impl Into<String>) -> Self {
        CliError {
            class,
            message: message.into(),
        }
    }
}

impl From<String> for CliError {
    fn from(s: String) -> Self {
        CliError::other(s)
    }
}
impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        let class = match &e {
            ClientError::Local(_) => ExitClass::Other,
            ClientError::Connect { .. } => ExitClass::Connection,
            ClientError::Check(_) => ExitClass::Verification,
            ClientError::Status(s) if transport_failure(s).is_some() => ExitClass::Connection,
            ClientError::Status(_) => ExitClass::Refused,
        };
        CliError::of(class, e.to_string())
    }
}
impl From<StartError> for CliError {
    fn from(e: StartError) -> Self {
        CliError::other(e.to_string())
    }
}

/// How to reach the broker and as whom.
#[derive(Args, Debug, Clone)]
pub struct Conn {
    /// Broker URL.
    #[arg(long, env = "CERTEX_BROKER", default_value = "https://localhost:7443")]
    pub broker: String,
    /// Development PKI directory.
    #[arg(long, env = "CERTEX_PKI")]
    pub pki: Option<PathBuf>,
    /// The team to act as.
    #[arg(long = "as", env = "CERTEX_TEAM")]
    pub team: String,
    /// CA certificate of the broker (overrides the PKI layout).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Team TLS certificate.
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// Team TLS key.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Team Ed25519 signing key.
    #[arg(long)]
    pub signing_key: Option<PathBuf>,
    /// Directory file used to verify signatures.
    #[arg(long)]
    pub directory: Option<PathBuf>,
    /// Broker tree-head public key (hex file).
    #[arg(long)]
    pub log_key: Option<PathBuf>,
}

/// Which traffic to read.
#[derive(Args, Debug, Clone, Default)]
pub struct ScopeArgs {
    /// Read the traffic of this exercise (drill) instead of real traffic.
    #[arg(long)]
    pub exercise: Option<String>,
    /// Read the traffic of every exercise.
    #[arg(long, conflicts_with = "exercise")]
    pub all_exercises: bool,
}

/// A value parser that accepts exactly the words of `T` (SPEC §3/§6), so
/// `--help`, completions and the error for a wrong word list them.
pub fn words<T: crate::rules::vocab::Word>() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(T::TABLE.iter().map(|(_, w)| *w))
}

/// A value parser for `--kind` (the words of [`parse_kinds`]).
pub fn kind_words() -> clap::builder::PossibleValuesParser {
    use crate::rules::validate::Kind;
    clap::builder::PossibleValuesParser::new(
        [
            Kind::Incident,
            Kind::Warning,
            Kind::Request,
            Kind::CaseUpdate,
            Kind::Retraction,
        ]
        .map(Kind::word),
    )
}

/// `--kind` words (incident, warning, request, case_update, retraction) as
/// wire values.
pub fn parse_kinds(kinds: &[String]) -> Result<Vec<i32>, CliError> {
    kinds
        .iter()
        .map(|k| {
            crate::rules::validate::Kind::from_word(k)
                .map(|k| k.proto() as i32)
                .ok_or_else(|| {
                    CliError::usage(format!(
                        "--kind {k:?}: one of incident, warning, request, case_update, retraction"
                    ))
                })
        })
        .collect()
}

impl ScopeArgs {
    pub fn scope(&self) -> TrafficScope {
        match (&self.exercise, self.all_exercises) {
            (_, true) => TrafficScope::AllExercises,
            (Some(e), _) if !e.is_empty() => TrafficScope::Exercise(e.clone()),
            _ => TrafficScope::Real,
        }
    }
}

impl Conn {
    pub fn files(&self) -> Result<ClientFiles, CliError> {
        let mut files = match &self.pki {
            Some(p) => ClientFiles::from_pki(p, &self.team),
            None => ClientFiles {
                ca: PathBuf::new(),
                cert: PathBuf::new(),
                key: PathBuf::new(),
                signing_key: PathBuf::new(),
                directory: PathBuf::new(),
            },
        };
        let set = |slot: &mut PathBuf, v: &Option<PathBuf>| {
            if let Some(v) = v {
                *slot = v.clone();
            }
        };
        set(&mut files.ca, &self.ca);
        set(&mut files.cert, &self.cert);
        set(&mut files.key, &self.key);
        set(&mut files.signing_key, &self.signing_key);
        set(&mut files.directory, &self.directory);
        if files.ca.as_os_str().is_empty()
            || files.cert.as_os_str().is_empty()
            || files.key.as_os_str().is_empty()
        {
            return Err(CliError::usage(
                "no credentials: give --pki DIR (or CERTEX_PKI), or --ca, --cert and --key",
            ));
        }
        // A file named on the command line, or the PKI layout, that is not
        // there is a usage error, caught before the broker is asked
        // anything. Only the directory may be missing from a PKI: records
        // then print unverified and fail the command; a directory that is
        // there but lists other keys does the same.
        if let Some(pki) = self.pki.as_ref().filter(|p| !p.is_dir()) {
            return Err(CliError::usage(format!(
                "--pki {}: no such directory",
                pki.display()
            )));
        }
        for (flag, given, path) in [
            ("--ca", &self.ca, &files.ca),
            ("--cert", &self.cert, &files.cert),
            ("--key", &self.key, &files.key),
            ("--directory", &self.directory, &files.directory),
        ] {
            let required = given.is_some() || flag != "--directory";
            if required && !path.exists() {
                let flag = if given.is_some() { flag } else { "--pki" };
                return Err(CliError::usage(format!(
                    "{flag}: {} does not exist",
                    path.display()
                )));
            }
        }
        Ok(files)
    }

    /// Connects and has the broker confirm it accepts this team's
    /// certificate, so that a refused certificate is reported as such.
    pub async fn connect(&self) -> Result<Client, CliError> {
        let client = Client::connect(&self.broker, &self.files()?, &self.team).await?;
        client.check_accepted(&self.broker).await?;
        Ok(client)
    }

    pub fn log_key(&self) -> Result<VerifyingKey, CliError> {
        let path = match (&self.log_key, &self.pki) {
            (Some(p), _) => p.clone(),
            (None, Some(pki)) => {
                crate::client::connection::broker_files_in_pki(pki, &self.team).join("signing.pub")
            }
            (None, None) => {
                return Err(CliError::usage(
                    "give --log-key FILE (the broker's tree-head public key)",
                ));
            }
        };
        Ok(read_public_key(&path)?)
    }
}

pub fn print_json<T: Serialize>(v: &T) -> Result<(), CliError> {
    let line = serde_json::to_string(v).map_err(|e| CliError::other(e.to_string()))?;
    println!("{line}");
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM: when a server should stop and drain.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
