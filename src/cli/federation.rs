//! `certex federation status`: a broker's relay state per peer, asked by
//! its operator with the broker's own identity (SPEC §12).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::cli::args::{CliError, print_json};
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
            CliError::other(format!(
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
                .map_err(|e| CliError::other(e.to_string()))?;
            dir.broker(&a.id).map(|b| b.url.clone()).ok_or_else(|| {
                CliError::other(format!("broker {} is not in the directory", a.id))
            })?
        }
        (None, None) => return Err(CliError::usage("give --url")),
    };
    let read = |p: &PathBuf| {
        std::fs::read(p).map_err(|e| CliError::other(format!("cannot read {}: {e}", p.display())))
    };
    let channel = connect_channel(&url, &read(&ca)?, &read(&cert)?, &read(&key)?).await?;
    let st = pb::federation_client::FederationClient::new(channel)
        .status(pb::FederationStatusRequest {})
        .await
        .map_err(|s| CliError::from(crate::client::connection::ClientError::from(s)))?
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

/// Brokers of a development federation (`pki init --brokers`) run in this
/// process, for the demo and `bench federation`: each serves on a socket
/// bound before any starts, so every broker knows every peer's address, and
/// a stopped broker comes back on the same address.
pub struct LocalFederation {
    pki: std::path::PathBuf,
    limits: crate::broker::config::Limits,
    nodes: std::collections::BTreeMap<String, LocalNode>,
}

struct LocalNode {
    listener: std::net::TcpListener,
    port: u16,
    data: std::path::PathBuf,
    egress: std::collections::BTreeMap<String, crate::federation::egress::Egress>,
    running: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
        crate::broker::server::Broker,
    )>,
}

impl LocalFederation {
    /// Binds one loopback socket per broker; data directories go under
    /// `data_root/<ID>`.
    pub fn new(
        pki: &std::path::Path,
        data_root: &std::path::Path,
        brokers: &[&str],
    ) -> Result<Self, String> {
        let mut nodes = std::collections::BTreeMap::new();
        for id in brokers {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")
                .map_err(|e| format!("cannot bind a loopback socket: {e}"))?;
            let port = listener.local_addr().map_err(|e| e.to_string())?.port();
            nodes.insert(
                id.to_string(),
                LocalNode {
                    listener,
                    port,
                    data: data_root.join(id),
                    egress: Default::default(),
                    running: None,
                },
            );
        }
        Ok(LocalFederation {
            pki: pki.to_owned(),
            limits: Default::default(),
            nodes,
        })
    }

    pub fn url(&self, id: &str) -> String {
        format!("https://localhost:{}", self.nodes[id].port)
    }

    /// Sets what broker `id` lets leave for `peer` (from its next start).
    pub fn set_egress(&mut self, id: &str, peer: &str, egress: crate::federation::egress::Egress) {
        if let Some(n) = self.nodes.get_mut(id) {
            n.egress.insert(peer.to_owned(), egress);
        }
    }

    /// Sets every broker's operating limits (from its next start; the
    /// default limits otherwise).
    pub fn set_limits(&mut self, limits: crate::broker::config::Limits) {
        self.limits = limits;
    }

    /// The running broker `id`.
    pub fn broker(&self, id: &str) -> Option<&crate::broker::server::Broker> {
        self.nodes.get(id)?.running.as_ref().map(|(_, _, b)| b)
    }

    /// Starts broker `id` with every other broker as a peer at its address.
    pub async fn start(&mut self, id: &str) -> Result<(), String> {
        use crate::broker::config::{BrokerConfig, PeerConfig};
        let urls: Vec<(String, String)> = self
            .nodes
            .keys()
            .filter(|p| *p != id)
            .map(|p| (p.clone(), self.url(p)))
            .collect();
        let node = self
            .nodes
            .get_mut(id)
            .ok_or_else(|| format!("no broker {id} here"))?;
        let mut config = BrokerConfig::from_pki_broker(
            &self.pki,
            id,
            &node.data,
            format!("127.0.0.1:{}", node.port)
                .parse()
                .map_err(|e| format!("{e}"))?,
        );
        config.limits = self.limits.clone();
        for (peer, url) in urls {
            let egress = node.egress.get(&peer).cloned().unwrap_or_default();
            config.peers.insert(
                peer,
                PeerConfig {
                    url: Some(url),
                    egress,
                },
            );
        }
        // A broker stopped a moment ago may still be releasing its database.
        let mut attempts = 0;
        let broker = loop {
            match crate::broker::server::Broker::open(config.clone()) {
                Ok(b) => break b,
                Err(_) if attempts < 100 => {
                    attempts += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(e) => return Err(format!("broker {id} did not start: {e}")),
            }
        };
        let std_listener = node
            .listener
            .try_clone()
            .map_err(|e| format!("socket of broker {id}: {e}"))?;
        std_listener
            .set_nonblocking(true)
            .map_err(|e| format!("socket of broker {id}: {e}"))?;
        let listener = tokio::net::TcpListener::from_std(std_listener)
            .map_err(|e| format!("socket of broker {id}: {e}"))?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let serving = broker.clone();
        let name = id.to_owned();
        let task = tokio::spawn(async move {
            let stop = async {
                let _ = rx.await;
            };
            if let Err(e) = serving.serve(listener, stop).await {
                tracing::error!(broker = %name, error = %e, "broker stopped with an error");
            }
        });
        node.running = Some((tx, task, broker));
        Ok(())
    }

    pub async fn start_all(&mut self) -> Result<(), String> {
        let ids: Vec<String> = self.nodes.keys().cloned().collect();
        for id in ids {
            self.start(&id).await?;
        }
        Ok(())
    }

    /// Stops broker `id` (drains its open calls for a few seconds at most).
    pub async fn stop(&mut self, id: &str) {
        if let Some((tx, task, broker)) = self.nodes.get_mut(id).and_then(|n| n.running.take()) {
            let _ = tx.send(());
            let _ = tokio::time::timeout(std::time::Duration::from_secs(15), task).await;
            drop(broker);
        }
    }

    pub async fn stop_all(&mut self) {
        let ids: Vec<String> = self.nodes.keys().cloned().collect();
        for id in ids {
            self.stop(&id).await;
        }
    }
}
