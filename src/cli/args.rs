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
use crate::client::connection::{Client, ClientError, ClientFiles};
use crate::rules::access::TrafficScope;

/// A failed command: one clear line for stderr.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CliError(pub String);

impl From<String> for CliError {
    fn from(s: String) -> Self {
        CliError(s)
    }
}
impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        CliError(e.to_string())
    }
}
impl From<StartError> for CliError {
    fn from(e: StartError) -> Self {
        CliError(e.to_string())
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

/// `--kind` words (incident, warning, request, case_update, retraction) as
/// wire values.
pub fn parse_kinds(kinds: &[String]) -> Result<Vec<i32>, CliError> {
    kinds
        .iter()
        .map(|k| {
            crate::rules::validate::Kind::from_word(k)
                .map(|k| k.proto() as i32)
                .ok_or_else(|| {
                    CliError(format!(
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
            return Err(CliError(
                "no credentials: give --pki DIR (or CERTEX_PKI), or --ca, --cert and --key".into(),
            ));
        }
        Ok(files)
    }

    pub async fn connect(&self) -> Result<Client, CliError> {
        Ok(Client::connect(&self.broker, &self.files()?, &self.team).await?)
    }

    pub fn log_key(&self) -> Result<VerifyingKey, CliError> {
        let path = match (&self.log_key, &self.pki) {
            (Some(p), _) => p.clone(),
            (None, Some(pki)) => {
                crate::client::connection::broker_files_in_pki(pki, &self.team).join("signing.pub")
            }
            (None, None) => {
                return Err(CliError(
                    "give --log-key FILE (the broker's tree-head public key)".into(),
                ));
            }
        };
        Ok(read_public_key(&path)?)
    }
}

pub fn print_json<T: Serialize>(v: &T) -> Result<(), CliError> {
    let line = serde_json::to_string(v).map_err(|e| CliError(e.to_string()))?;
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
