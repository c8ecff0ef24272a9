//! `certex federation status`: a broker's relay state per peer, asked by
//! its operator with the broker's own identity (SPEC §12).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::cli::CliError;
use crate::cli::args::print_json;
use crate::client::connection::connect_channel;
use crate::proto as pb;
use crate::rules::directory::Directory;

#[derive(Subcommand, Debug)]
pub enum FederationCommand {
    /// Per peer: connected, relay position and lag, records relayed,
    /// withheld by the egress policy and refused by the peer.
    Status(StatusArgs),
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Development PKI made with `pki init --brokers` (the broker's files
    /// are under brokers/<ID>/).
    #[arg(long, env = "CERTEX_PKI")]
    pub pki: Option<PathBuf>,
    /// The broker to ask; the call presents this broker's own certificate.
    #[arg(long = "broker-id")]
    pub id: String,
    /// The broker's URL (default: its URL in the directory).
    #[arg(long)]
    pub url: Option<String>,
    /// CA certificate of the broker's server certificate (overrides the PKI).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// The broker's TLS certificate (overrides the PKI).
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// The broker's TLS key (overrides the PKI).
    #[arg(long)]
    pub key: Option<PathBuf>,
}

pub async fn run(cmd: FederationCommand) -> Result<(), CliError> {
    match cmd {
        FederationCommand::Status(a) => status(a).await,
    }
}

async fn status(a: StatusArgs) -> Result<(), CliError> {
    let from_pki = |name: &str| {
        a.pki
            .as_ref()
            .map(|p| p.join("brokers").join(&a.id).join(name))
    };
    let pick = |given: &Option<PathBuf>, name: &str| {
        given.clone().or_else(|| from_pki(name)).ok_or_else(|| {
            CliError(format!(
                "give --pki DIR (or CERTEX_PKI), or --{}",
                name.trim_end_matches(".pem")
            ))
        })
    };
    let (ca, cert, key) = (
        pick(&a.ca, "ca.pem")?,
        pick(&a.cert, "cert.pem")?,
        pick(&a.key, "key.pem")?,
    );
    let url = match (&a.url, &a.pki) {
        (Some(u), _) => u.clone(),
        (None, Some(pki)) => {
            let dir = Directory::load(&pki.join("directory.toml"))
                .map_err(|e| CliError(e.to_string()))?;
            dir.broker(&a.id)
                .map(|b| b.url.clone())
                .ok_or_else(|| CliError(format!("broker {} is not in the directory", a.id)))?
        }
        (None, None) => return Err(CliError("give --url".into())),
    };
    let read = |p: &PathBuf| {
        std::fs::read(p).map_err(|e| CliError(format!("cannot read {}: {e}", p.display())))
    };
    let channel = connect_channel(&url, &read(&ca)?, &read(&cert)?, &read(&key)?).await?;
    let st = pb::federation_client::FederationClient::new(channel)
        .status(pb::FederationStatusRequest {})
        .await
        .map_err(|s| CliError(format!("broker refused: {} ({:?})", s.message(), s.code())))?
        .into_inner();
    let peers: Vec<serde_json::Value> = st
        .peers
        .iter()
        .map(|p| {
            serde_json::json!({
                "broker": p.broker,
                "url": p.url,
                "connected": p.connected,
                "position": p.position,
                "lag": p.lag,
                "relayed": p.relayed,
                "withheld": p.withheld,
                "refused": p.refused,
                "last_error": p.last_error,
            })
        })
        .collect();
    print_json(&serde_json::json!({
        "broker": st.broker,
        "log_size": st.log_size,
        "peers": peers,
    }))
}
