//! The only module that touches rustls: the broker's TLS 1.3 server with
//! per-country client-certificate anchors, the accept loop that hands tonic
//! authenticated connections, and reading a team id from a certificate.
//!
//! Each country's CA is a trust anchor only for that country's teams and
//! brokers: the verifier reads the identity from the certificate's
//! `urn:certex:team:<ID>` URI (the country from the id) or its
//! `urn:certex:broker:<ID>` URI (the country the directory gives for that
//! broker), and checks the chain against that country's anchor alone. The
//! identity is never taken from anything the client sends.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

pub use rustls::ServerConfig as TlsServerConfig;

use crate::broker::config::Limits;
use crate::broker::metrics::{self, Handshake};
use crate::rules::directory::{Directory, country_of};

/// The SAN URI prefix that names a team.
pub const TEAM_URI_PREFIX: &str = "urn:certex:team:";

/// The SAN URI prefix that names a broker of a federation (SPEC §12).
pub const BROKER_URI_PREFIX: &str = "urn:certex:broker:";

/// Who a client certificate names: a team or a federation broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    Team(String),
    Broker(String),
}

impl Identity {
    /// The connection's label in logs and per-identity connection slots:
    /// the team id, or `broker:<ID>` (never a team id: it holds a ':').
    pub fn label(&self) -> String {
        match self {
            Identity::Team(t) => t.clone(),
            Identity::Broker(b) => format!("broker:{b}"),
        }
    }
}

/// How long a connection whose certificate a reload withdrew stays open, so
/// that its calls and streams can be answered `UNAUTHENTICATED` first.
const WITHDRAW_GRACE: Duration = Duration::from_secs(1);

/// How often failed handshakes are summed up in the log, per source.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Connections over a limit kept open at once to be told why (each for
/// [`WITHDRAW_GRACE`]); more are closed at once.
const REFUSED_CONNECTIONS: usize = 64;

/// Sources the handshake-failure summary tracks one by one; more are counted
/// together, so a flood from many addresses cannot grow the summary.
const FAILURE_LOG_SOURCES: usize = 1024;

/// The crypto provider used everywhere (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads the team id from a certificate's subjectAltName URI (a broker's
/// certificate is refused: see [`identity_of_certificate`]).
pub fn team_of_certificate(der: &[u8]) -> Result<String, String> {
    match identity_of_certificate(der)? {
        Identity::Team(t) => Ok(t),
        Identity::Broker(b) => Err(format!("client certificate names broker {b}, not a team")),
    }
}

/// Reads who a certificate names from its subjectAltName URIs: exactly one
/// `urn:certex:team:<ID>` or exactly one `urn:certex:broker:<ID>`, never
/// both kinds.
pub fn identity_of_certificate(der: &[u8]) -> Result<Identity, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("client certificate does not parse: {e}"))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("client certificate has a malformed subjectAltName: {e}"))?
        .ok_or("client certificate has no subjectAltName naming a team")?;
    let uris = || {
        san.value.general_names.iter().filter_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => Some(*u),
            _ => None,
        })
    };
    let teams: Vec<&str> = uris()
        .filter_map(|u| u.strip_prefix(TEAM_URI_PREFIX))
        .collect();
    let brokers: Vec<&str> = uris()
        .filter_map(|u| u.strip_prefix(BROKER_URI_PREFIX))
        .collect();
    match (teams.as_slice(), brokers.as_slice()) {
        ([], []) => Err(format!(
            "client certificate has no subjectAltName URI {TEAM_URI_PREFIX}<TEAM-ID>"
        )),
        ([team], []) => {
            crate::rules::directory::check_team_id(team)?;
            Ok(Identity::Team((*team).to_owned()))
        }
        ([], [broker]) => {
            crate::rules::directory::check_broker_id(broker)?;
            Ok(Identity::Broker((*broker).to_owned()))
        }
        (_, []) => Err("client certificate names more than one team".into()),
        ([], _) => Err("client certificate names more than one broker".into()),
        _ => Err("client certificate names both a team and a broker".into()),
    }
}

/// Per-country chain verifiers built from one directory.
#[derive(Debug)]
struct Anchors {
    by_country: BTreeMap<String, Arc<dyn ClientCertVerifier>>,
    /// Country → each anchor's certificate (DER) and path length.
    path_limits: BTreeMap<String, Vec<AnchorLimit>>,
    /// Intermediate CAs the directory allows below an anchor.
    max_chain_depth: u32,
    teams: BTreeMap<String, TeamAuth>,
    /// Broker id → the country whose anchor issues its certificate.
    brokers: BTreeMap<String, String>,
}

/// An anchor's certificate (DER) and its basicConstraints path length.
type AnchorLimit = (Vec<u8>, Option<u32>);

/// What the directory says about a team's TLS certificates.
#[derive(Debug)]
struct TeamAuth {
    retired_at: Option<OffsetDateTime>,
    revoked: BTreeSet<String>,
    pin: Option<String>,
}

impl Anchors {
    fn build(dir: &Directory, provider: &Arc<CryptoProvider>) -> Result<Self, String> {
        let mut by_country = BTreeMap::new();
        let mut path_limits: BTreeMap<String, Vec<AnchorLimit>> = BTreeMap::new();
        for (country, certs) in dir.anchors() {
            for c in certs {
                let (_, cert) = x509_parser::parse_x509_certificate(c)
                    .map_err(|e| format!("anchor {country}: certificate does not parse: {e}"))?;
                let path_len = cert
                    .basic_constraints()
                    .ok()
                    .flatten()
                    .and_then(|b| b.value.path_len_constraint);
                path_limits
                    .entry(country.clone())
                    .or_default()
                    .push((c.as_ref().to_vec(), path_len));
            }
            let mut roots = RootCertStore::empty();
            for c in certs {
                roots.add(c.clone()).map_err(|e| {
                    format!("anchor {country}: certificate is not a usable CA: {e}")
                })?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| format!("anchor {country}: {e}"))?;
            by_country.insert(country.clone(), v);
        }
        Ok(Anchors {
            by_country,
            path_limits,
            max_chain_depth: dir.max_chain_depth(),
            teams: dir
                .teams()
                .map(|t| {
                    (
                        t.id.clone(),
                        TeamAuth {
                            retired_at: t.retired_at,
                            revoked: t.revoked_certificates.clone(),
                            pin: t.certificate_sha256.clone(),
                        },
                    )
                })
                .collect(),
            brokers: dir
                .brokers()
                .map(|b| (b.id.clone(), b.country.clone()))
                .collect(),
        })
    }
}

/// Why the verifier refused a client certificate.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// Client-certificate verifier that scopes each anchor to its country.
#[derive(Debug)]
pub struct TeamVerifier {
    anchors: RwLock<Arc<Anchors>>,
    /// Every open authenticated connection, re-checked on each reload.
    live: Mutex<HashMap<u64, Live>>,
    next_id: AtomicU64,
    algorithms: WebPkiSupportedAlgorithms,
    provider: Arc<CryptoProvider>,
}

impl TeamVerifier {
    pub fn new(dir: &Directory) -> Result<Arc<Self>, String> {
        let provider = provider();
        Ok(Arc::new(TeamVerifier {
            anchors: RwLock::new(Arc::new(Anchors::build(dir, &provider)?)),
            live: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            algorithms: provider.signature_verification_algorithms,
            provider,
        }))
    }

    /// Switches to the anchors and teams of a newly loaded directory, then
    /// re-verifies every live connection's certificate against it: those that
    /// no longer pass are withdrawn (their calls and streams end
    /// `UNAUTHENTICATED`) and closed a moment later.
    pub fn reload(&self, dir: &Directory) -> Result<(), String> {
        let anchors = Arc::new(Anchors::build(dir, &self.provider)?);
        *self.anchors.write().unwrap_or_else(|p| p.into_inner()) = anchors;
        let live: Vec<Live> = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for conn in live {
            if let Err(why) = self.check(&conn.chain[0], &conn.chain[1..], UnixTime::now()) {
                tracing::info!(peer = %conn.team, reason = %why, "connection withdrawn by the directory reload");
                conn.state.withdraw();
            }
        }
        Ok(())
    }

    /// The number of open authenticated connections.
    pub fn live_connections(&self) -> usize {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Open authenticated connections per identity label (team id, or
    /// `broker:<ID>`).
    pub fn connections_by_identity(&self) -> BTreeMap<String, usize> {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = BTreeMap::new();
        for l in live.values() {
            *out.entry(l.team.clone()).or_insert(0) += 1;
        }
        out
    }

    /// Who the certificate chain authenticates under the directory in
    /// force, or why it does not.
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<Identity, String> {
        let anchors = self
            .anchors
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match identity_of_certificate(end_entity)? {
            Identity::Team(team) => {
                Self::check_team(&anchors, &team, end_entity, intermediates, now)?;
                Ok(Identity::Team(team))
            }
            Identity::Broker(id) => {
                let country = anchors
                    .brokers
                    .get(&id)
                    .ok_or_else(|| format!("broker {id} is not in the directory"))?;
                let who = format!("broker {id}");
                Self::check_chain(&anchors, country, &who, end_entity, intermediates, now)?;
                Ok(Identity::Broker(id))
            }
        }
    }

    /// The chain of `who`'s certificate ends at one of `country`'s anchors,
    /// with no more intermediates than the anchor and the directory allow.
    fn check_chain(
        anchors: &Anchors,
        country: &str,
        who: &str,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), String> {
        let verifier = anchors
            .by_country
            .get(country)
            .ok_or_else(|| format!("no anchor for country {country} ({who})"))?;
        verifier
            .verify_client_cert(end_entity, intermediates, now)
            .map_err(|e| {
                format!("certificate for {who} does not chain to the {country} anchor: {e}")
            })?;
        // webpki honours the path length of intermediates, not of anchors.
        // Count what the client presented (less copies of an anchor), not a
        // path walked by names, which forged or colliding names could
        // shorten: at most the smallest path length of the country's anchors
        // and the directory's max_chain_depth.
        let limits = anchors
            .path_limits
            .get(country)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let presented = intermediates
            .iter()
            .filter(|d| !limits.iter().any(|(der, _)| der.as_slice() == d.as_ref()))
            .count();
        let allowed = limits
            .iter()
            .filter_map(|(_, len)| *len)
            .fold(anchors.max_chain_depth, u32::min) as usize;
        if presented > allowed {
            return Err(format!(
                "certificate chain of {who} carries {presented} intermediate CA(s) below the {country} anchor; \
                 at most {allowed} allowed (anchor path length and the directory's max_chain_depth)"
            ));
        }
        Ok(())
    }

    /// A team's certificate: its country's chain, the team in the directory
    /// and not retired, the certificate not revoked and as pinned.
    fn check_team(
        anchors: &Anchors,
        team: &str,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), String> {
        let country = country_of(team);
        Self::check_chain(anchors, country, team, end_entity, intermediates, now)?;
        let auth = anchors
            .teams
            .get(team)
            .ok_or_else(|| format!("team {team} is not in the directory"))?;
        if auth
            .retired_at
            .is_some_and(|r| OffsetDateTime::now_utc() >= r)
        {
            return Err(format!("team {team} has retired"));
        }
        let fingerprint = hex::encode(Sha256::digest(end_entity.as_ref()));
        let (_, leaf) = x509_parser::parse_x509_certificate(end_entity)
            .map_err(|e| format!("client certificate does not parse: {e}"))?;
        let serial = hex::encode(leaf.raw_serial());
        let serial = serial.trim_start_matches('0');
        if auth
            .revoked
            .iter()
            .any(|r| *r == fingerprint || r.trim_start_matches('0') == serial)
        {
            return Err(format!(
                "certificate {fingerprint} of {team} is revoked in the directory"
            ));
        }
        if auth.pin.as_ref().is_some_and(|pin| *pin != fingerprint) {
            return Err(format!(
                "certificate {fingerprint} of {team} is not the certificate the directory pins"
            ));
        }
        Ok(())
    }
}

impl ClientCertVerifier for TeamVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match self.check(end_entity, intermediates, now) {
            Ok(_) => Ok(ClientCertVerified::assertion()),
            // The reason reaches the handshake-failure summary through the
            // error; one line per failure would let anyone flood the log.
            Err(why) => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(Refused(why)))),
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The broker's rustls configuration from its PEM certificate chain and key
/// files: TLS 1.3 only, client certificate required and checked by
/// `verifier`, ALPN `h2`.
pub fn server_config(
    cert: &Path,
    key: &Path,
    verifier: Arc<TeamVerifier>,
) -> Result<ServerConfig, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("broker certificate {}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("broker key {}: {e}", key.display()))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| format!("TLS configuration: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| format!("broker certificate and key do not fit together: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    // No session resumption: every connection is authenticated by a full
    // handshake against the directory in force (a reload that removes a team
    // or an anchor must not be bypassed with a ticket).
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// [`server_config`] for an HTTP/1.1 listener (the TAXII API): the same
/// certificate, TLS 1.3 only and the same client-certificate check, with
/// ALPN `http/1.1`.
pub fn http1_server_config(
    cert: &Path,
    key: &Path,
    verifier: Arc<TeamVerifier>,
) -> Result<ServerConfig, String> {
    let mut config = server_config(cert, key, verifier)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Who is on the other end of a connection; in every request's extensions.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The team, or for a broker connection `broker:<ID>` (never a team id):
    /// the label of logs and per-identity connection slots.
    pub team: String,
    /// The broker id, when the certificate names a federation broker.
    pub broker: Option<String>,
    pub addr: SocketAddr,
    /// Whether the connection's certificate still passes the directory.
    pub conn: Arc<ConnState>,
}

/// A live connection's standing: valid, withdrawn by a directory reload (its
/// calls and streams are refused), then closed; and its open calls, which
/// tell when it has been idle long enough to close.
#[derive(Debug)]
pub struct ConnState {
    phase: watch::Sender<u8>,
    /// Set when the connection was authenticated but is over a connection
    /// limit: every call on it is refused with this, and it closes shortly.
    refusal: Option<String>,
    /// Calls open on the connection.
    active: AtomicUsize,
    /// When the last call ended (ms since `born`).
    last_active_ms: AtomicU64,
    born: Instant,
}

const VALID: u8 = 0;
const WITHDRAWN: u8 = 1;
const CLOSED: u8 = 2;

/// Marks a call open on a connection until dropped.
pub struct CallGuard(Arc<ConnState>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        let c = &self.0;
        c.last_active_ms
            .store(c.born.elapsed().as_millis() as u64, Ordering::Relaxed);
        c.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ConnState {
    fn new(refusal: Option<String>) -> Arc<Self> {
        Arc::new(ConnState {
            phase: watch::channel(VALID).0,
            refusal,
            active: AtomicUsize::new(0),
            last_active_ms: AtomicU64::new(0),
            born: Instant::now(),
        })
    }

    /// Whether the certificate still passes the directory in force.
    pub fn is_valid(&self) -> bool {
        *self.phase.borrow() == VALID
    }

    /// Why every call on this connection is refused (a connection limit).
    pub fn refusal(&self) -> Option<&str> {
        self.refusal.as_deref()
    }

    /// Completes once the connection is withdrawn.
    pub async fn withdrawn(&self) {
        let mut rx = self.phase.subscribe();
        let _ = rx.wait_for(|p| *p != VALID).await;
    }

    /// Counts a call as open until the guard drops.
    pub fn call_started(self: &Arc<Self>) -> CallGuard {
        self.active.fetch_add(1, Ordering::AcqRel);
        CallGuard(self.clone())
    }

    /// How long the connection has had no open call (zero while one is open).
    fn idle_for(&self) -> Duration {
        if self.active.load(Ordering::Acquire) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last_active_ms.load(Ordering::Relaxed));
        self.born.elapsed().saturating_sub(last)
    }

    /// Completes when the connection must close: withdrawn and past the
    /// grace period, or idle for `idle`.
    async fn must_close(self: Arc<Self>, idle: Duration) {
        let mut phase = self.phase.subscribe();
        let closed = async move {
            let _ = phase.wait_for(|p| *p == CLOSED).await;
        };
        let idle_watch = async {
            loop {
                let idle_for = self.idle_for();
                if idle_for >= idle {
                    return;
                }
                tokio::time::sleep(idle - idle_for).await;
            }
        };
        tokio::select! {
            _ = closed => {}
            _ = idle_watch => tracing::debug!("closing an idle connection"),
        }
    }

    fn withdraw(self: &Arc<Self>) {
        self.phase.send_if_modified(|p| {
            let changed = *p == VALID;
            *p = (*p).max(WITHDRAWN);
            changed
        });
        let state = self.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    tokio::time::sleep(WITHDRAW_GRACE).await;
                    state.phase.send_replace(CLOSED);
                });
            }
            Err(_) => {
                self.phase.send_replace(CLOSED);
            }
        }
    }
}

/// A registered live connection.
#[derive(Debug, Clone)]
struct Live {
    /// The identity's label ([`Identity::label`]).
    team: String,
    chain: Vec<CertificateDer<'static>>,
    state: Arc<ConnState>,
}

/// An authenticated TLS connection handed to tonic.
pub struct TlsConnection {
    inner: TlsStream<TcpStream>,
    peer: Peer,
    /// Completes when the connection must close (certificate withdrawn).
    closing: Pin<Box<dyn Future<Output = ()> + Send>>,
    closed: bool,
    /// The connection's entry in the verifier's live set, if it has one
    /// (a connection refused for a limit has none).
    id: Option<u64>,
    verifier: Arc<TeamVerifier>,
    /// A connection slot, or for a refused connection its place among them.
    _permit: OwnedSemaphorePermit,
}

impl TlsConnection {
    /// An error once the connection's certificate was withdrawn and the
    /// grace period is over.
    fn check_closed(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        if !self.closed && self.closing.as_mut().poll(cx).is_ready() {
            self.closed = true;
        }
        self.closed.then(|| {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the connection's certificate is no longer accepted",
            )
        })
    }
}

impl Drop for TlsConnection {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.verifier
                .live
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
        }
    }
}

impl Connected for TlsConnection {
    type ConnectInfo = Peer;
    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.check_closed(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.check_closed(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.check_closed(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The connection limits of [`incoming`], from the broker's [`Limits`].
#[derive(Debug, Clone)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub per_team: usize,
    pub reserve: usize,
    pub max_handshakes: usize,
    pub handshakes_per_source: usize,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
}

impl ConnLimits {
    pub fn from_limits(l: &Limits) -> Self {
        ConnLimits {
            max_connections: l.max_connections,
            per_team: l.max_connections_per_team,
            reserve: l.connection_reserve,
            max_handshakes: l.max_handshakes,
            handshakes_per_source: l.max_handshakes_per_source,
            handshake_timeout: Duration::from_millis(l.handshake_timeout_ms),
            idle_timeout: Duration::from_millis(l.idle_timeout_ms),
        }
    }
}

/// Handshakes in progress, per source address; released on drop.
struct SourceSlot {
    sources: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl SourceSlot {
    fn take(sources: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, max: usize) -> Option<Self> {
        let mut map = sources.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            sources: sources.clone(),
            ip,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut map = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Failed and turned-away handshakes, summed up per source and logged once
/// per interval: unauthenticated noise costs one line per source, not one
/// per attempt.
#[derive(Default)]
struct FailureLog {
    by_source: Mutex<BTreeMap<IpAddr, (u64, String)>>,
    others: AtomicU64,
}

impl FailureLog {
    fn record(&self, ip: IpAddr, reason: impl Into<String>) {
        let mut map = self.by_source.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= FAILURE_LOG_SOURCES && !map.contains_key(&ip) {
            self.others.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let e = map.entry(ip).or_insert((0, String::new()));
        e.0 += 1;
        e.1 = reason.into();
    }

    fn flush(&self) {
        let map = std::mem::take(&mut *self.by_source.lock().unwrap_or_else(|p| p.into_inner()));
        for (ip, (count, reason)) in map {
            tracing::info!(
                source = %ip,
                count,
                last_reason = %reason,
                "TLS handshakes failed or turned away in the last {} s",
                FAILURE_LOG_INTERVAL.as_secs()
            );
        }
        let others = self.others.swap(0, Ordering::Relaxed);
        if others > 0 {
            tracing::info!(
                count = others,
                "TLS handshakes failed or turned away from further sources in the last {} s",
                FAILURE_LOG_INTERVAL.as_secs()
            );
        }
    }
}

/// The metric's reason for a failed TLS handshake: the client certificate
/// refused or missing, or anything else.
fn handshake_reason(e: &io::Error) -> Handshake {
    match e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented) => {
            Handshake::Certificate
        }
        _ => Handshake::Protocol,
    }
}

/// Accepts TCP connections and completes TLS handshakes in their own small
/// pool (at most `max_handshakes` at once, `handshakes_per_source` from one
/// address, each within `handshake_timeout`), so unauthenticated peers never
/// hold authenticated capacity. An authenticated connection then takes a
/// connection slot: at most `per_team` per team, and the last `reserve`
/// slots only for teams holding fewer than two. A connection over a limit is
/// still handed to tonic for a moment so that its calls are answered
/// `RESOURCE_EXHAUSTED` naming the limit, then closed. Ends when `listener`
/// fails hard or the receiver is dropped.
pub fn incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    verifier: Arc<TeamVerifier>,
    limits: ConnLimits,
) -> ReceiverStream<Result<TlsConnection, io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let handshakes = Arc::new(Semaphore::new(limits.max_handshakes));
    let refused = Arc::new(Semaphore::new(REFUSED_CONNECTIONS));
    let sources: Arc<Mutex<HashMap<IpAddr, usize>>> = Default::default();
    let failures = Arc::new(FailureLog::default());
    let flusher = Arc::downgrade(&failures);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(FAILURE_LOG_INTERVAL);
        loop {
            tick.tick().await;
            match flusher.upgrade() {
                Some(f) => f.flush(),
                None => return,
            }
        }
    });
    let limits = Arc::new(limits);
    tokio::spawn(async move {
        loop {
            let (tcp, addr) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = tx.closed() => return,
            };
            let Ok(handshake) = handshakes.clone().try_acquire_owned() else {
                metrics::handshake_failure(Handshake::PoolFull);
                failures.record(addr.ip(), "handshake pool full: connection closed at once");
                continue;
            };
            let Some(source) = SourceSlot::take(&sources, addr.ip(), limits.handshakes_per_source)
            else {
                metrics::handshake_failure(Handshake::SourceLimit);
                failures.record(
                    addr.ip(),
                    "too many handshakes in progress from this address: connection closed at once",
                );
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            let verifier = verifier.clone();
            let slots = slots.clone();
            let refused = refused.clone();
            let failures = failures.clone();
            let limits = limits.clone();
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp))
                    .await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        metrics::handshake_failure(handshake_reason(&e));
                        failures.record(addr.ip(), format!("TLS handshake refused: {e}"));
                        return;
                    }
                    Err(_) => {
                        metrics::handshake_failure(Handshake::Timeout);
                        failures.record(addr.ip(), "TLS handshake timed out");
                        return;
                    }
                };
                drop(source);
                let chain: Vec<CertificateDer<'static>> = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
                    .unwrap_or_default();
                let identity = match chain
                    .first()
                    .ok_or_else(|| "no client certificate".to_string())
                    .and_then(|c| identity_of_certificate(c))
                {
                    Ok(identity) => identity,
                    Err(why) => {
                        metrics::handshake_failure(Handshake::Certificate);
                        failures.record(addr.ip(), why);
                        return;
                    }
                };
                let team = identity.label();
                let who = match &identity {
                    Identity::Team(t) => format!("team {t}"),
                    Identity::Broker(b) => format!("broker {b}"),
                };
                let admitted = {
                    // Checked again and registered under one lock: a
                    // reload that swapped the anchors while this
                    // handshake was in flight either sees this
                    // connection or is seen by this check.
                    let mut live = verifier.live.lock().unwrap_or_else(|p| p.into_inner());
                    match verifier.check(&chain[0], &chain[1..], UnixTime::now()) {
                        Ok(checked) if checked == identity => {}
                        Ok(_) => return,
                        Err(why) => {
                            metrics::handshake_failure(Handshake::Certificate);
                            tracing::info!(%addr, reason = %why, "connection refused after a directory reload");
                            return;
                        }
                    }
                    let held = live.values().filter(|l| l.team == team).count();
                    let slot = if held >= limits.per_team {
                        Err(format!(
                            "{who} already has {held} connections open, the broker's limit per team \
                             (limits.max_connections_per_team = {}); reuse an open connection",
                            limits.per_team
                        ))
                    } else {
                        match slots.clone().try_acquire_owned() {
                            Ok(p) if held < 2 || slots.available_permits() >= limits.reserve => {
                                Ok(p)
                            }
                            Ok(_) => Err(format!(
                                "the broker is near its connection limit and keeps its last {} \
                                 connections for identities holding fewer than two; {who} holds {held}",
                                limits.reserve
                            )),
                            Err(_) => Err(format!(
                                "the broker holds its limit of {} connections; retry later",
                                limits.max_connections
                            )),
                        }
                    };
                    match slot {
                        Ok(permit) => {
                            let state = ConnState::new(None);
                            let id = verifier.next_id.fetch_add(1, Ordering::Relaxed);
                            live.insert(
                                id,
                                Live {
                                    team: team.clone(),
                                    chain,
                                    state: state.clone(),
                                },
                            );
                            Ok((state, Some(id), permit))
                        }
                        Err(why) => Err(why),
                    }
                };
                drop(handshake);
                let (state, id, permit) = match admitted {
                    Ok(a) => a,
                    Err(why) => {
                        metrics::handshake_failure(Handshake::ConnectionLimit);
                        // Told why on each call for a moment, from a small
                        // pool of its own; past that, closed at once.
                        let Ok(permit) = refused.clone().try_acquire_owned() else {
                            failures.record(addr.ip(), format!("{why} (closed at once)"));
                            return;
                        };
                        failures.record(addr.ip(), why.clone());
                        let state = ConnState::new(Some(why));
                        state.withdraw();
                        (state, None, permit)
                    }
                };
                tracing::debug!(%addr, %team, "connection authenticated");
                let conn = TlsConnection {
                    inner: tls,
                    peer: Peer {
                        team,
                        broker: match identity {
                            Identity::Broker(b) => Some(b),
                            Identity::Team(_) => None,
                        },
                        addr,
                        conn: state.clone(),
                    },
                    closing: Box::pin(state.must_close(limits.idle_timeout)),
                    closed: false,
                    id,
                    verifier,
                    _permit: permit,
                };
                let _ = tx.send(Ok(conn)).await;
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Seals 2 KiB TLS 1.3 records (AES-256-GCM, rustls' own record encrypter
/// with the ring provider the broker uses) for `secs` on this thread: seals
/// per second, a machine limit for `certex bench limits`.
pub fn aes_gcm_seal_rate(secs: f64) -> Result<f64, String> {
    use rustls::crypto::cipher::{AeadKey, Iv, OutboundChunks, OutboundPlainMessage};
    use rustls::{ContentType, ProtocolVersion};
    let suite = rustls::crypto::ring::cipher_suite::TLS13_AES_256_GCM_SHA384;
    let tls13 = suite.tls13().ok_or("no TLS 1.3 suite")?;
    let mut enc = tls13
        .aead_alg
        .encrypter(AeadKey::from([5u8; 32]), Iv::new([9u8; 12]));
    let payload = vec![7u8; 2048];
    let start = Instant::now();
    let mut seq = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        for _ in 0..256 {
            let msg = OutboundPlainMessage {
                typ: ContentType::ApplicationData,
                version: ProtocolVersion::TLSv1_2,
                payload: OutboundChunks::Single(&payload),
            };
            let sealed = enc.encrypt(msg, seq).map_err(|e| e.to_string())?;
            std::hint::black_box(sealed);
            seq += 1;
        }
    }
    Ok(seq as f64 / start.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::pem::PemObject;

    use super::*;

    /// A self-signed certificate with these SAN URIs (parsing only).
    fn with_uris(uris: &[&str]) -> Vec<u8> {
        let mut p = rcgen::CertificateParams::default();
        p.subject_alt_names = uris
            .iter()
            .map(|u| rcgen::SanType::URI((*u).try_into().unwrap()))
            .collect();
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn a_certificate_names_one_team_or_one_broker() {
        let id = |uris: &[&str]| identity_of_certificate(&with_uris(uris));
        assert_eq!(
            id(&["urn:certex:team:CN-CNCERT"]),
            Ok(Identity::Team("CN-CNCERT".into()))
        );
        assert_eq!(
            id(&["urn:certex:broker:CN", "https://example.org/"]),
            Ok(Identity::Broker("CN".into()))
        );
        let err = id(&["urn:certex:team:CN-CNCERT", "urn:certex:broker:CN"]).unwrap_err();
        assert!(err.contains("both a team and a broker"), "{err}");
        let err = id(&["urn:certex:broker:CN", "urn:certex:broker:BR"]).unwrap_err();
        assert!(err.contains("more than one broker"), "{err}");
        let err = id(&["urn:certex:team:CN-A", "urn:certex:team:CN-B"]).unwrap_err();
        assert!(err.contains("more than one team"), "{err}");
        assert!(id(&["urn:certex:broker:cn"]).is_err());
        assert!(id(&["urn:certex:broker:"]).is_err());
        assert!(id(&["urn:example:other"]).is_err());
        let err = team_of_certificate(&with_uris(&["urn:certex:broker:CN"])).unwrap_err();
        assert!(err.contains("names broker CN, not a team"), "{err}");
        assert_eq!(Identity::Broker("CN".into()).label(), "broker:CN");
        assert_eq!(Identity::Team("CN-CNCERT".into()).label(), "CN-CNCERT");
    }

    fn der(path: &Path) -> CertificateDer<'static> {
        CertificateDer::from_pem_file(path).unwrap()
    }

    #[test]
    fn a_broker_certificate_chains_to_its_countrys_anchor() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = tmp.path();
        let teams = ["CN-CNCERT".to_owned(), "BR-CERTBR".to_owned()];
        crate::cli::pki::init_federation(pki, &teams, &[], &["CN".into(), "BR".into()]).unwrap();
        let dir = Directory::load(&pki.join("directory.toml")).unwrap();
        let v = TeamVerifier::new(&dir).unwrap();
        let now = UnixTime::now();
        assert_eq!(
            v.check(&der(&pki.join("brokers/BR/cert.pem")), &[], now),
            Ok(Identity::Broker("BR".into()))
        );
        assert_eq!(
            v.check(&der(&pki.join("teams/CN-CNCERT/cert.pem")), &[], now),
            Ok(Identity::Team("CN-CNCERT".into()))
        );
        // Broker BR named in a certificate from the CN CA.
        let read = |p: &str| std::fs::read_to_string(pki.join(p)).unwrap();
        let (forged, _) =
            crate::cli::pki::issue_broker_certificate(&read("ca/CN.pem"), &read("ca/CN.key"), "BR")
                .unwrap();
        let forged = CertificateDer::from_pem_slice(forged.as_bytes()).unwrap();
        let err = v.check(&forged, &[], now).unwrap_err();
        assert!(err.contains("does not chain to the BR anchor"), "{err}");
        // A broker the directory does not list.
        let (other, _) = crate::cli::pki::issue_broker_certificate(
            &read("ca/CN.pem"),
            &read("ca/CN.key"),
            "CN-2",
        )
        .unwrap();
        let other = CertificateDer::from_pem_slice(other.as_bytes()).unwrap();
        let err = v.check(&other, &[], now).unwrap_err();
        assert!(err.contains("broker CN-2 is not in the directory"), "{err}");
        // Path length: the dev CAs have pathlen 0, so a sub-CA may not issue.
        let (sub, sub_key) =
            crate::cli::pki::issue_ca("sub", Some((&read("ca/BR.pem"), &read("ca/BR.key"))), None)
                .unwrap();
        let (leaf, _) = crate::cli::pki::issue_broker_certificate(&sub, &sub_key, "BR").unwrap();
        let leaf = CertificateDer::from_pem_slice(leaf.as_bytes()).unwrap();
        let sub = CertificateDer::from_pem_slice(sub.as_bytes()).unwrap();
        assert!(v.check(&leaf, &[sub], now).is_err());

        // Broker BR leaves the directory: its certificate no longer passes.
        let mut file: crate::rules::directory::DirectoryFile =
            toml::from_str(&std::fs::read_to_string(pki.join("directory.toml")).unwrap()).unwrap();
        file.brokers.retain(|b| b.id != "BR");
        for t in &mut file.teams {
            t.home = Some("CN".into());
        }
        let smaller = Directory::from_file(file, pki).unwrap();
        v.reload(&smaller).unwrap();
        let err = v
            .check(&der(&pki.join("brokers/BR/cert.pem")), &[], now)
            .unwrap_err();
        assert!(err.contains("broker BR is not in the directory"), "{err}");
        assert!(
            v.check(&der(&pki.join("brokers/CN/cert.pem")), &[], now)
                .is_ok()
        );
    }
}
