//! The only module that touches rustls: the broker's TLS 1.3 server with
//! per-country client-certificate anchors, the accept loop that hands tonic
//! authenticated connections, and reading a team id from a certificate.
//!
//! Each country's CA is a trust anchor only for that country's teams: the
//! verifier reads the team from the certificate's `urn:certex:team:<ID>` URI,
//! takes the country from the id, and checks the chain against that country's
//! anchor alone. The team is never taken from anything the client sends.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

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

use crate::rules::directory::{Directory, country_of};

/// The SAN URI prefix that names a team.
pub const TEAM_URI_PREFIX: &str = "urn:certex:team:";

/// How long a connection whose certificate a reload withdrew stays open, so
/// that its calls and streams can be answered `UNAUTHENTICATED` first.
const WITHDRAW_GRACE: Duration = Duration::from_secs(1);

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The crypto provider used everywhere (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads the team id from a certificate's subjectAltName URI.
pub fn team_of_certificate(der: &[u8]) -> Result<String, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("client certificate does not parse: {e}"))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("client certificate has a malformed subjectAltName: {e}"))?
        .ok_or("client certificate has no subjectAltName naming a team")?;
    let mut teams = san.value.general_names.iter().filter_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(u) => u.strip_prefix(TEAM_URI_PREFIX),
        _ => None,
    });
    let team = teams.next().ok_or_else(|| {
        format!("client certificate has no subjectAltName URI {TEAM_URI_PREFIX}<TEAM-ID>")
    })?;
    if teams.next().is_some() {
        return Err("client certificate names more than one team".into());
    }
    crate::rules::directory::check_team_id(team)?;
    Ok(team.to_owned())
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
        })
    }
}

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
                tracing::info!(team = %conn.team, reason = %why, "connection withdrawn by the directory reload");
                conn.state.withdraw();
            }
        }
        Ok(())
    }

    /// The number of open authenticated connections.
    pub fn live_connections(&self) -> usize {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<String, String> {
        let team = team_of_certificate(end_entity)?;
        let anchors = self
            .anchors
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let country = country_of(&team);
        let verifier = anchors
            .by_country
            .get(country)
            .ok_or_else(|| format!("no anchor for country {country} (team {team})"))?;
        verifier
            .verify_client_cert(end_entity, intermediates, now)
            .map_err(|e| {
                format!("certificate for {team} does not chain to the {country} anchor: {e}")
            })?;
        let auth = anchors
            .teams
            .get(&team)
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
                "certificate chain of {team} carries {presented} intermediate CA(s) below the {country} anchor; \
                 at most {allowed} allowed (anchor path length and the directory's max_chain_depth)"
            ));
        }
        Ok(team)
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
            Err(why) => {
                tracing::warn!(reason = %why, "client certificate refused");
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::ApplicationVerificationFailure,
                ))
            }
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

/// Who is on the other end of a connection; in every request's extensions.
#[derive(Debug, Clone)]
pub struct Peer {
    pub team: String,
    pub addr: SocketAddr,
    /// Whether the connection's certificate still passes the directory.
    pub conn: Arc<ConnState>,
}

/// A live connection's standing: valid, withdrawn by a directory reload (its
/// calls and streams are refused), then closed.
#[derive(Debug)]
pub struct ConnState {
    phase: watch::Sender<u8>,
}

const VALID: u8 = 0;
const WITHDRAWN: u8 = 1;
const CLOSED: u8 = 2;

impl ConnState {
    fn new() -> Arc<Self> {
        Arc::new(ConnState {
            phase: watch::channel(VALID).0,
        })
    }

    /// Whether the certificate still passes the directory in force.
    pub fn is_valid(&self) -> bool {
        *self.phase.borrow() == VALID
    }

    /// Completes once the connection is withdrawn.
    pub async fn withdrawn(&self) {
        let mut rx = self.phase.subscribe();
        let _ = rx.wait_for(|p| *p != VALID).await;
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
    id: u64,
    verifier: Arc<TeamVerifier>,
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
        self.verifier
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
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

/// Accepts TCP connections, completes TLS handshakes concurrently (bounded by
/// `max_connections` open connections and a handshake timeout), and yields
/// the authenticated ones. Ends when `listener` fails hard or the receiver is
/// dropped.
pub fn incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    verifier: Arc<TeamVerifier>,
    max_connections: usize,
) -> ReceiverStream<Result<TlsConnection, io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    let slots = Arc::new(Semaphore::new(max_connections));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
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
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            let verifier = verifier.clone();
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::info!(%addr, error = %e, "TLS handshake refused");
                        return;
                    }
                    Err(_) => {
                        tracing::info!(%addr, "TLS handshake timed out");
                        return;
                    }
                };
                let chain: Vec<CertificateDer<'static>> = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
                    .unwrap_or_default();
                let team = chain
                    .first()
                    .ok_or_else(|| "no client certificate".to_string())
                    .and_then(|c| team_of_certificate(c));
                match team {
                    Ok(team) => {
                        tracing::debug!(%addr, %team, "connection authenticated");
                        let state = ConnState::new();
                        let id = verifier.next_id.fetch_add(1, Ordering::Relaxed);
                        {
                            // Checked again and registered under one lock: a
                            // reload that swapped the anchors while this
                            // handshake was in flight either sees this
                            // connection or is seen by this check.
                            let mut live = verifier.live.lock().unwrap_or_else(|p| p.into_inner());
                            if let Err(why) =
                                verifier.check(&chain[0], &chain[1..], UnixTime::now())
                            {
                                tracing::info!(%addr, reason = %why, "connection refused after a directory reload");
                                return;
                            }
                            live.insert(
                                id,
                                Live {
                                    team: team.clone(),
                                    chain,
                                    state: state.clone(),
                                },
                            );
                        }
                        let mut phase = state.phase.subscribe();
                        let conn = TlsConnection {
                            inner: tls,
                            peer: Peer {
                                team,
                                addr,
                                conn: state,
                            },
                            closing: Box::pin(async move {
                                let _ = phase.wait_for(|p| *p == CLOSED).await;
                            }),
                            closed: false,
                            id,
                            verifier,
                            _permit: permit,
                        };
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Err(why) => tracing::warn!(%addr, reason = %why, "connection dropped"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
