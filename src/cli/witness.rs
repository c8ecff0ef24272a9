//! `certex witness init|serve`: the command-line face of the witness wing.
//! `init` writes a new witness key (owner-only, never over an existing
//! file) and prints its verifier key; `serve` checks its flags, reads the
//! key and the state, binds, prints the verifier key and
//! `listening on ADDR`, and serves (within a cap on open connections and a
//! deadline for request headers) until SIGINT or SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::cli::args::CliError;
use crate::rules::envelope::read_signing_key;
use crate::rules::note::{self, TYPE_COSIGNATURE, Vkey};
use crate::witness::server::{self, Witness};
use crate::witness::state::StateDir;

#[derive(Subcommand, Debug)]
pub enum WitnessCommand {
    /// Generate a witness key (PKCS#8 PEM, 0600) and print its verifier key.
    Init {
        /// Where to write the key; an existing file is never overwritten.
        #[arg(long)]
        key: PathBuf,
        /// The witness's name, e.g. witness.example.org/w1.
        #[arg(long)]
        name: String,
    },
    /// Run a C2SP tlog-witness: POST /add-checkpoint.
    Serve(ServeArgs),
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long)]
    pub listen: SocketAddr,
    /// Directory of the latest cosigned checkpoint of each log (created 0700).
    #[arg(long)]
    pub state: PathBuf,
    /// The witness key (`certex witness init`). Use a witness key for one
    /// witness only: a key that also cosigns through `certex log verify
    /// --cosign` keeps two separate memories of the log and can be led to
    /// cosign both sides of a fork.
    #[arg(long)]
    pub key: PathBuf,
    /// The witness's name, as its verifier key names it.
    #[arg(long)]
    pub name: String,
    /// A log's verifier key (type 0x01; its name is the log's origin);
    /// repeatable, several keys per origin allowed.
    #[arg(long = "log", required = true)]
    pub logs: Vec<String>,
    /// Most connections open at once; new ones beyond it are closed at once.
    #[arg(long, default_value_t = server::MAX_CONNECTIONS as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Milliseconds a client has to send a request's headers (also closes
    /// idle connections); for tests.
    #[arg(long, hide = true, default_value_t = server::HEADER_READ_TIMEOUT.as_millis() as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout_ms: u64,
}

/// Runs one witness command.
pub async fn run(cmd: WitnessCommand) -> Result<(), CliError> {
    match cmd {
        WitnessCommand::Init { key, name } => init(&key, &name),
        WitnessCommand::Serve(args) => serve(args).await,
    }
}

fn init(path: &std::path::Path, name: &str) -> Result<(), CliError> {
    note::check_name(name).map_err(|e| CliError::usage(format!("--name: {e}")))?;
    let key = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let vkey = Vkey::new(name, TYPE_COSIGNATURE, key.verifying_key())
        .map_err(|e| CliError::other(format!("--name: {e}")))?;
    let pem = crate::cli::pki::signing_key_pem(&key)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => CliError::other(format!(
                "--key {}: the file exists; refusing to overwrite a key",
                path.display()
            )),
            _ => CliError::other(format!("cannot create {}: {e}", path.display())),
        })?;
    f.write_all(pem.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| CliError::other(format!("cannot write {}: {e}", path.display())))?;
    println!("{vkey}");
    Ok(())
}

async fn serve(args: ServeArgs) -> Result<(), CliError> {
    let logs = args
        .logs
        .iter()
        .map(|s| Vkey::parse(s).map_err(|e| CliError::usage(format!("--log {s}: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let key = read_signing_key(&args.key).map_err(|e| CliError::other(format!("--key: {e}")))?;
    let state = StateDir::open(&args.state).map_err(|e| CliError::other(e.to_string()))?;
    let witness = Witness::new(&args.name, key, logs, state).map_err(|e| CliError::other(e.0))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| CliError::other(format!("--listen: cannot listen on {}: {e}", args.listen)))?;
    let local = listener
        .local_addr()
        .map_err(|e| CliError::other(e.to_string()))?;
    tracing::info!(addr = %local, name = %args.name, origins = ?witness.origins(), "witness listening");
    println!("{}", witness.vkey());
    println!("listening on {local}");

    crate::broker::server::notify_systemd(sd_notify::NotifyState::Ready);
    let shutdown = async {
        crate::cli::args::shutdown_signal().await;
        crate::broker::server::notify_systemd(sd_notify::NotifyState::Stopping);
    };
    let limits = server::Limits {
        max_connections: args.max_connections as usize,
        header_read_timeout: Duration::from_millis(args.header_read_timeout_ms),
    };
    server::run(listener, Arc::new(witness), limits, shutdown)
        .await
        .map_err(|e| CliError::other(format!("witness server failed: {e}")))
}
