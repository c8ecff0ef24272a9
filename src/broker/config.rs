//! Typed broker configuration: from the development PKI layout (`--pki`,
//! `--data`, `--listen`) or from a TOML file (`--config`), validated at boot
//! with errors that name the key to fix.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::federation::egress::Egress;

/// Limits of SPEC §4 and §15, with their defaults. Every limit is per broker
/// unless its name says per team, per connection or per subscription; the
/// README states what each bounds and the memory formula they add up to.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest accepted envelope, in bytes.
    pub max_envelope_bytes: usize,
    /// Allowed distance of `created_at` from the broker clock, in seconds.
    pub clock_skew_secs: u64,
    /// Sustained new messages per second per team.
    pub rate_per_second: u32,
    /// New messages a team may burst above the sustained rate.
    pub rate_burst: u32,
    /// Sustained envelope bytes per second per team.
    pub rate_bytes_per_second: u32,
    /// Envelope bytes a team may burst above the sustained byte rate.
    pub rate_bytes_burst: u32,
    /// Sustained retries (re-publishes of a logged id) per second per team.
    pub retry_rate_per_second: u32,
    /// Retries a team may burst above the sustained retry rate.
    pub retry_burst: u32,
    /// Envelope bytes a team may publish per UTC day (0: no quota).
    pub team_bytes_per_day: u64,
    /// Open authenticated connections the broker keeps at once.
    pub max_connections: usize,
    /// Open authenticated connections per team.
    pub max_connections_per_team: usize,
    /// Connection slots kept for teams holding fewer than two connections.
    pub connection_reserve: usize,
    /// TLS handshakes in progress at once (before any certificate is seen).
    pub max_handshakes: usize,
    /// TLS handshakes in progress at once from one source address.
    pub max_handshakes_per_source: usize,
    /// How long a client may take to complete the TLS handshake, in ms.
    pub handshake_timeout_ms: u64,
    /// HTTP/2 streams (calls) open at once on one connection.
    pub max_streams_per_connection: u32,
    /// HTTP/2 keepalive ping interval, in seconds.
    pub keepalive_secs: u64,
    /// How long a keepalive ping may go unanswered before the connection is closed, in seconds.
    pub keepalive_timeout_secs: u64,
    /// A connection is asked to go away (GOAWAY) after this long, in seconds.
    pub max_connection_age_secs: u64,
    /// Calls still open on a connection past its age end after this long, in seconds.
    pub max_connection_age_grace_secs: u64,
    /// A connection with no open call for this long is closed, in ms.
    pub idle_timeout_ms: u64,
    /// Deadline of a unary call, reading its request included, in ms.
    pub call_timeout_ms: u64,
    /// Request bytes a team may have in flight (received, not yet answered).
    pub max_inflight_bytes_per_team: usize,
    /// Request bytes all teams together may have in flight.
    pub max_inflight_bytes: usize,
    /// Open subscriptions per team; more are refused with RESOURCE_EXHAUSTED.
    pub max_subscriptions_per_team: usize,
    /// Open subscriptions on the broker.
    pub max_subscriptions: usize,
    /// Bytes of records a subscription queues ahead of its consumer (one
    /// record always fits, however large).
    pub subscription_buffer_bytes: usize,
    /// Envelopes a `PublishStream` reads ahead of the receipts it has sent
    /// (checked and appended concurrently); past it the broker stops
    /// reading the stream and HTTP/2 flow control holds the sender back.
    pub publish_stream_window: usize,
    /// Envelope bytes a `PublishStream` reads ahead of its receipts (one
    /// envelope always fits, however large).
    pub publish_stream_window_bytes: usize,
    /// Entries in each list of a subscription filter (`kinds`, `senders`, `tlps`).
    pub max_filter_entries: usize,
    /// Durable subscription names per team.
    pub max_durable_names_per_team: usize,
    /// Bytes of recently committed records kept decoded for live subscribers.
    pub recent_cache_bytes: usize,
    /// Free space the data directory's device must keep; below it Publish
    /// is refused with RESOURCE_EXHAUSTED while reads go on.
    pub min_free_disk_bytes: u64,
}

const MIB: usize = 1024 * 1024;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_envelope_bytes: MIB,
            clock_skew_secs: 600,
            rate_per_second: 2000,
            rate_burst: 4000,
            rate_bytes_per_second: 16 * MIB as u32,
            rate_bytes_burst: 64 * MIB as u32,
            retry_rate_per_second: 500,
            retry_burst: 2000,
            team_bytes_per_day: 0,
            max_connections: 2048,
            max_connections_per_team: 32,
            connection_reserve: 256,
            max_handshakes: 128,
            max_handshakes_per_source: 16,
            handshake_timeout_ms: 5000,
            max_streams_per_connection: 64,
            keepalive_secs: 30,
            keepalive_timeout_secs: 20,
            max_connection_age_secs: 24 * 3600,
            max_connection_age_grace_secs: 600,
            idle_timeout_ms: 600_000,
            call_timeout_ms: 30_000,
            max_inflight_bytes_per_team: 8 * MIB,
            max_inflight_bytes: 128 * MIB,
            max_subscriptions_per_team: 32,
            max_subscriptions: 1024,
            subscription_buffer_bytes: 128 * 1024,
            publish_stream_window: 256,
            publish_stream_window_bytes: MIB,
            max_filter_entries: 1024,
            max_durable_names_per_team: 64,
            recent_cache_bytes: 64 * MIB,
            min_free_disk_bytes: 1024 * MIB as u64,
        }
    }
}

/// Everything `certex serve` needs; serialises back to the TOML it reads
/// (harnesses write configuration files with it).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// Address to listen on, e.g. "0.0.0.0:7443".
    pub listen: SocketAddr,
    /// Directory for the sled database (created owner-only).
    pub data: PathBuf,
    /// The directory file (teams, anchors, keys, groups).
    pub directory: PathBuf,
    /// Broker TLS certificate chain (PEM).
    pub cert: PathBuf,
    /// Broker TLS private key (PEM).
    pub key: PathBuf,
    /// Ed25519 tree-head signing key (PKCS#8 PEM).
    pub tree_head_key: PathBuf,
    /// Ed25519 checkpoint (note) key (PKCS#8 PEM), separate from the
    /// tree-head key; with it the broker publishes C2SP checkpoints whose
    /// verifier key the directory lists as `checkpoint_vkey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_key: Option<PathBuf>,
    /// Standard witnesses (C2SP tlog-witness submission prefixes, http) the
    /// broker pushes each new checkpoint to for cosigning.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub witness_push: Vec<String>,
    /// Address of the read-only TAXII 2.1 API (SPEC §14), e.g.
    /// "0.0.0.0:7444"; none to serve gRPC only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taxii_listen: Option<SocketAddr>,
    /// Address of the operator's metrics endpoint (plain HTTP, `GET
    /// /metrics`, Prometheus text format), e.g. "127.0.0.1:9464"; none to
    /// record no metrics. No TLS and no authentication: bind it to loopback
    /// or a management network. It carries no record content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// This broker's id in a federation (a `[[broker]]` of the directory);
    /// none for a single broker serving everyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
    /// The peers this broker relays to, by broker id: where to reach each
    /// (default: the directory's URL) and what may leave for it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub peers: BTreeMap<String, PeerConfig>,
    #[serde(default)]
    pub limits: Limits,
}

/// One federation peer in this broker's own configuration.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// `https://HOST:PORT`; overrides the directory's URL for this peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// What may leave for this peer (everything when left out).
    #[serde(default)]
    pub egress: Egress,
}

/// Checks a witness URL from the configuration.
pub fn check_witness_url(url: &str) -> Result<(), String> {
    let u = url::Url::parse(url).map_err(|e| format!("witness_push {url:?}: {e}"))?;
    match u.scheme() {
        "http" => {}
        "https" => {
            return Err(format!(
                "witness_push {url:?}: https witnesses are not supported yet; reach them through a local TLS proxy (the exchange is signed end to end)"
            ));
        }
        s => return Err(format!("witness_push {url:?}: scheme {s} is not http")),
    }
    if u.host().is_none() || !u.username().is_empty() || u.password().is_some() {
        return Err(format!(
            "witness_push {url:?}: give a host and no credentials"
        ));
    }
    Ok(())
}

/// Checks a peer URL: `https://HOST:PORT`, nothing else.
pub fn check_peer_url(id: &str, url: &str) -> Result<(), String> {
    let u: http::Uri = url
        .parse()
        .map_err(|e| format!("peer {id}: {url:?} is not a URL: {e}"))?;
    if u.scheme_str() != Some("https") || u.host().is_none() || u.port_u16().is_none() {
        return Err(format!("peer {id}: {url:?} must be https://HOST:PORT"));
    }
    Ok(())
}

impl BrokerConfig {
    /// The configuration implied by a development PKI directory (SPEC §10).
    pub fn from_pki(pki: &Path, data: &Path, listen: SocketAddr) -> Self {
        BrokerConfig {
            listen,
            data: data.to_owned(),
            directory: pki.join("directory.toml"),
            cert: pki.join("broker/cert.pem"),
            key: pki.join("broker/key.pem"),
            tree_head_key: pki.join("broker/signing.key"),
            checkpoint_key: Some(pki.join("broker/checkpoint.key")).filter(|p| p.exists()),
            witness_push: vec![],
            taxii_listen: None,
            metrics_listen: None,
            broker: None,
            peers: BTreeMap::new(),
            limits: Limits::default(),
        }
    }

    /// The configuration of broker `id` of a development PKI made with
    /// `pki init --brokers` (its files under `brokers/<ID>/`).
    pub fn from_pki_broker(pki: &Path, id: &str, data: &Path, listen: SocketAddr) -> Self {
        let b = pki.join("brokers").join(id);
        BrokerConfig {
            listen,
            data: data.to_owned(),
            directory: pki.join("directory.toml"),
            cert: b.join("cert.pem"),
            key: b.join("key.pem"),
            tree_head_key: b.join("signing.key"),
            checkpoint_key: Some(b.join("checkpoint.key")).filter(|p| p.exists()),
            witness_push: vec![],
            taxii_listen: None,
            metrics_listen: None,
            broker: Some(id.to_owned()),
            peers: BTreeMap::new(),
            limits: Limits::default(),
        }
    }

    /// Reads a TOML configuration file; relative paths are relative to it.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
        let mut c: BrokerConfig =
            toml::from_str(&text).map_err(|e| format!("config {}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut c.data,
            &mut c.directory,
            &mut c.cert,
            &mut c.key,
            &mut c.tree_head_key,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if let Some(p) = &mut c.checkpoint_key
            && p.is_relative()
        {
            *p = base.join(&*p);
        }
        c.validate()
            .map_err(|e| format!("config {}: {e}", path.display()))?;
        Ok(c)
    }

    /// Checks this configuration against the directory in force (at start
    /// and on each reload): this broker's federation id, when it has one,
    /// must be a `[[broker]]` of the directory.
    pub fn check_directory(&self, dir: &crate::rules::directory::Directory) -> Result<(), String> {
        let Some(me) = self.broker.as_deref() else {
            return Ok(());
        };
        if dir.broker(me).is_some() {
            return Ok(());
        }
        let listed: Vec<&str> = dir.brokers().map(|b| b.id.as_str()).collect();
        Err(if listed.is_empty() {
            format!("this broker's id is {me}, but the directory lists no [[broker]]")
        } else {
            format!(
                "this broker's id is {me}, but the directory's brokers are {}",
                listed.join(", ")
            )
        })
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), String> {
        for url in &self.witness_push {
            check_witness_url(url)?;
        }
        if !self.peers.is_empty() && self.broker.is_none() {
            return Err("peers are configured but not this broker's id (broker = \"ID\", or serve --broker ID)".into());
        }
        for (id, p) in &self.peers {
            if self.broker.as_deref() == Some(id.as_str()) {
                return Err(format!("peers.{id}: a broker is not its own peer"));
            }
            if let Some(url) = &p.url {
                check_peer_url(id, url)?;
            }
            p.egress.validate(id)?;
        }
        let l = &self.limits;
        if l.max_envelope_bytes < 1024 {
            return Err("limits.max_envelope_bytes must be at least 1024".into());
        }
        let positive: [(&str, u64); 23] = [
            ("rate_per_second", l.rate_per_second.into()),
            ("rate_burst", l.rate_burst.into()),
            ("rate_bytes_per_second", l.rate_bytes_per_second.into()),
            ("retry_rate_per_second", l.retry_rate_per_second.into()),
            ("retry_burst", l.retry_burst.into()),
            ("max_connections", l.max_connections as u64),
            (
                "max_connections_per_team",
                l.max_connections_per_team as u64,
            ),
            ("max_handshakes", l.max_handshakes as u64),
            (
                "max_handshakes_per_source",
                l.max_handshakes_per_source as u64,
            ),
            ("handshake_timeout_ms", l.handshake_timeout_ms),
            (
                "max_streams_per_connection",
                l.max_streams_per_connection.into(),
            ),
            ("keepalive_secs", l.keepalive_secs),
            ("keepalive_timeout_secs", l.keepalive_timeout_secs),
            ("max_connection_age_secs", l.max_connection_age_secs),
            ("idle_timeout_ms", l.idle_timeout_ms),
            ("call_timeout_ms", l.call_timeout_ms),
            (
                "max_subscriptions_per_team",
                l.max_subscriptions_per_team as u64,
            ),
            ("max_subscriptions", l.max_subscriptions as u64),
            (
                "subscription_buffer_bytes",
                l.subscription_buffer_bytes as u64,
            ),
            ("publish_stream_window", l.publish_stream_window as u64),
            (
                "publish_stream_window_bytes",
                l.publish_stream_window_bytes as u64,
            ),
            ("max_filter_entries", l.max_filter_entries as u64),
            (
                "max_durable_names_per_team",
                l.max_durable_names_per_team as u64,
            ),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("limits.{name} must be positive"));
        }
        if (l.rate_bytes_burst as usize) < l.max_envelope_bytes {
            return Err(
                "limits.rate_bytes_burst must be at least limits.max_envelope_bytes, \
                 or no envelope of the largest size could ever be published"
                    .into(),
            );
        }
        if l.max_inflight_bytes_per_team < l.max_envelope_bytes + 1024
            || l.max_inflight_bytes < l.max_inflight_bytes_per_team
        {
            return Err(
                "limits.max_inflight_bytes_per_team must exceed limits.max_envelope_bytes \
                 (plus 1 KiB of framing) and limits.max_inflight_bytes must be at least it"
                    .into(),
            );
        }
        if l.connection_reserve >= l.max_connections {
            return Err("limits.connection_reserve must be below limits.max_connections".into());
        }
        Ok(())
    }
}
