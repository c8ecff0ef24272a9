//! The only module that touches rustls: the broker's TLS 1.3 server with
//! per-country client-certificate anchors, the accept loop that hands tonic
//! authenticated connections, and reading a team id from a certificate.
//!
//! Each country's CA is a trust anchor only for that country's teams: the
//! verifier reads the team from the certificate's `urn:certex:team:<ID>` URI,
//! takes the country from the id, and checks the chain against that country's
//! anchor alone. The team is never taken from anything the client sends.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
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
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use crate::rules::directory::{Directory, country_of};

/// The SAN URI prefix that names a team.
pub const TEAM_URI_PREFIX: &str = "urn:certex:team:";

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
    /// Team id → when it retired, if it has.
    teams: BTreeMap<String, Option<time::OffsetDateTime>>,
}

impl Anchors {
    fn build(dir: &Directory, provider: &Arc<CryptoProvider>) -> Result<Self, String> {
        let mut by_country = BTreeMap::new();
        for (country, certs) in dir.anchors() {
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
            teams: dir.teams().map(|t| (t.id.clone(), t.retired_at)).collect(),
        })
    }
}

/// Client-certificate verifier that scopes each anchor to its country.
#[derive(Debug)]
pub struct TeamVerifier {
    anchors: RwLock<Arc<Anchors>>,
    algorithms: WebPkiSupportedAlgorithms,
    provider: Arc<CryptoProvider>,
}

impl TeamVerifier {
    pub fn new(dir: &Directory) -> Result<Arc<Self>, String> {
        let provider = provider();
        Ok(Arc::new(TeamVerifier {
            anchors: RwLock::new(Arc::new(Anchors::build(dir, &provider)?)),
            algorithms: provider.signature_verification_algorithms,
            provider,
        }))
    }

    /// Switches to the anchors and teams of a newly loaded directory.
    pub fn reload(&self, dir: &Directory) -> Result<(), String> {
        let anchors = Arc::new(Anchors::build(dir, &self.provider)?);
        *self.anchors.write().unwrap_or_else(|p| p.into_inner()) = anchors;
        Ok(())
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
        match anchors.teams.get(&team) {
            None => return Err(format!("team {team} is not in the directory")),
            Some(Some(retired)) if time::OffsetDateTime::now_utc() >= *retired => {
                return Err(format!("team {team} has retired"));
            }
            Some(_) => {}
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
}

/// An authenticated TLS connection handed to tonic.
pub struct TlsConnection {
    inner: TlsStream<TcpStream>,
    peer: Peer,
    _permit: OwnedSemaphorePermit,
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
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
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
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
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
                let team = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .ok_or_else(|| "no client certificate".to_string())
                    .and_then(|c| team_of_certificate(c));
                match team {
                    Ok(team) => {
                        tracing::debug!(%addr, %team, "connection authenticated");
                        let conn = TlsConnection {
                            inner: tls,
                            peer: Peer { team, addr },
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
