//! A federation of real brokers as child processes: one development PKI made
//! with `pki init --brokers`, one `certex serve --config` process per broker
//! with real mTLS between brokers, and clients per team connected to their
//! home broker. Each broker's listening socket is bound here once (port 0)
//! and handed to every incarnation of its process as fd 3 (`LISTEN_FDS=1`,
//! as systemd socket activation does),
//! so peers know each other's addresses before any starts, and a broker
//! killed with SIGKILL comes back on the same address.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use certex::broker::config::{BrokerConfig, PeerConfig};
use certex::client::connection::{Client, ClientFiles};
use certex::federation::egress::Egress;
use certex::proto as pb;
use tempfile::TempDir;

use super::BrokerProcess;

pub struct Federation {
    pub tmp: TempDir,
    pub pki: PathBuf,
    pub nodes: BTreeMap<String, Node>,
}

pub struct Node {
    pub id: String,
    listener: std::net::TcpListener,
    pub port: u16,
    pub data: PathBuf,
    /// Egress policy per peer, written into the configuration at start.
    pub egress: BTreeMap<String, Egress>,
    /// This broker's largest envelope, when not the default.
    pub max_envelope_bytes: Option<usize>,
    pub process: Option<BrokerProcess>,
}

impl Node {
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }
}

impl Federation {
    /// A PKI for `teams` with one broker per country in `brokers`, and
    /// `groups`; no broker started yet.
    pub fn new(teams: &[&str], brokers: &[&str], groups: &[(&str, &[&str])]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let pki = tmp.path().join("pki");
        let teams: Vec<String> = teams.iter().map(|t| t.to_string()).collect();
        let groups: Vec<(String, Vec<String>)> = groups
            .iter()
            .map(|(g, m)| (g.to_string(), m.iter().map(|t| t.to_string()).collect()))
            .collect();
        let brokers_owned: Vec<String> = brokers.iter().map(|b| b.to_string()).collect();
        certex::cli::pki::init_federation(&pki, &teams, &groups, &brokers_owned).unwrap();
        let mut nodes = BTreeMap::new();
        for b in brokers {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            nodes.insert(
                b.to_string(),
                Node {
                    id: b.to_string(),
                    listener,
                    port,
                    data: tmp.path().join(format!("data-{b}")),
                    egress: BTreeMap::new(),
                    max_envelope_bytes: None,
                    process: None,
                },
            );
        }
        Federation { tmp, pki, nodes }
    }

    /// The configuration file of broker `id`: its PKI files, every other
    /// broker as a peer at its real address, its egress policies.
    fn config_file(&self, id: &str) -> PathBuf {
        let node = &self.nodes[id];
        let mut config = BrokerConfig::from_pki_broker(
            &self.pki,
            id,
            &node.data,
            format!("127.0.0.1:{}", node.port).parse().unwrap(),
        );
        if let Some(max) = node.max_envelope_bytes {
            config.limits.max_envelope_bytes = max;
        }
        for (peer, other) in &self.nodes {
            if peer != id {
                config.peers.insert(
                    peer.clone(),
                    PeerConfig {
                        url: Some(other.url()),
                        egress: node.egress.get(peer).cloned().unwrap_or_default(),
                    },
                );
            }
        }
        let file = self.tmp.path().join(format!("broker-{id}.toml"));
        std::fs::write(&file, toml::to_string(&config).unwrap()).unwrap();
        file
    }

    /// Starts (or restarts) broker `id` as a child process on its socket.
    pub fn start(&mut self, id: &str) {
        let file = self.config_file(id);
        let node = self.nodes.get_mut(id).unwrap();
        assert!(node.process.is_none(), "broker {id} is already running");
        let fd = node.listener.as_raw_fd();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_certex"));
        cmd.args(["serve", "--config"]).arg(&file);
        // systemd socket activation: the socket is fd 3.
        cmd.env("LISTEN_FDS", "1").env_remove("LISTEN_PID");
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if fd == 3 {
                    let flags = libc::fcntl(3, libc::F_GETFD);
                    if flags < 0 || libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.env("RUST_LOG", "info");
        node.process = Some(BrokerProcess::spawn(cmd));
    }

    pub fn start_all(&mut self) {
        let ids: Vec<String> = self.nodes.keys().cloned().collect();
        for id in ids {
            self.start(&id);
        }
    }

    /// SIGKILL: the process dies at once; its socket stays bound here.
    pub fn kill(&mut self, id: &str) {
        if let Some(mut p) = self.nodes.get_mut(id).unwrap().process.take() {
            p.kill();
        }
    }

    pub fn node(&self, id: &str) -> &Node {
        &self.nodes[id]
    }

    pub fn log_lines(&self, id: &str, words: &[&str]) -> Vec<String> {
        self.nodes[id]
            .process
            .as_ref()
            .map(|p| p.log_lines(words))
            .unwrap_or_default()
    }

    /// A client of `team` connected to broker `at` (normally its home).
    pub async fn client_at(&self, team: &str, at: &str) -> Result<Client, String> {
        let mut files = ClientFiles::from_pki(&self.pki, team);
        files.ca = self.pki.join("brokers").join(at).join("ca.pem");
        Client::connect(&self.nodes[at].url(), &files, team)
            .await
            .map_err(|e| e.to_string())
    }

    /// A client of `team` at its home broker (the broker of its country).
    pub async fn client(&self, team: &str) -> Client {
        let home = &team[..2];
        self.client_at(team, home).await.unwrap()
    }

    /// A channel to broker `at` presenting broker `as_broker`'s certificate
    /// (what a peer or the operator uses).
    pub async fn broker_channel(&self, as_broker: &str, at: &str) -> tonic::transport::Channel {
        let b = self.pki.join("brokers");
        let read = |p: PathBuf| std::fs::read(p).unwrap();
        certex::client::connection::connect_channel(
            &self.nodes[at].url(),
            &read(b.join(at).join("ca.pem")),
            &read(b.join(as_broker).join("cert.pem")),
            &read(b.join(as_broker).join("key.pem")),
        )
        .await
        .unwrap()
    }

    /// `Federation.Status` of broker `id`, asked as its own operator.
    pub async fn status(&self, id: &str) -> pb::FederationStatus {
        let ch = self.broker_channel(id, id).await;
        pb::federation_client::FederationClient::new(ch)
            .status(pb::FederationStatusRequest {})
            .await
            .unwrap()
            .into_inner()
    }

    /// Waits (at most `secs`) until every peer of `id` is caught up.
    pub async fn settle(&self, id: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let st = self.status(id).await;
            if st.peers.iter().all(|p| p.lag == 0) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "broker {id} did not catch its peers up within {secs} s: {st:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn data_dir(&self, id: &str) -> &Path {
        &self.nodes[id].data
    }
}
