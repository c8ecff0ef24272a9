//! The broker: assembles directory, log and TLS, serves the gRPC services
//! over authenticated connections, reloads the directory, and shuts down
//! gracefully (health NOT_SERVING, drain, bounded wait).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::broker::admission::{AdmissionLayer, RefusalLog};
use crate::broker::config::BrokerConfig;
use crate::broker::peering::FederationService;
use crate::broker::reflection::Reflection;
use crate::broker::services::{Services, set_health};
use crate::broker::state::State;
use crate::broker::transport::{self, TeamVerifier};
use crate::broker::verifier::SignaturePool;
use crate::federation::relay::{Federation, PeerSpec};
use crate::log::storage::Storage;
use crate::log::writer::Log;
use crate::rules::directory::Directory;
use crate::rules::envelope;

/// The encoded descriptor set of `certex.v1`, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/certex_descriptor.bin"));

/// How long shutdown waits for open calls (e.g. live subscriptions) to end.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Decode limit of `Exchange` above the envelope limit: a `PublishRequest`
/// is the envelope plus its field tag and length; a `SubscribeRequest` with
/// the longest filter lists fits in the same.
const ENVELOPE_FRAMING: usize = 1024;

/// Decode limit of every other service: their requests are a few ids,
/// numbers and enums (reflection asks for a file or symbol name).
const SMALL_REQUEST: usize = 8 * 1024;

/// HTTP/2 streams a connection may have reset (by the client or here)
/// before the broker sends GOAWAY: h2's own default, which tonic turns off.
const MAX_RESET_STREAMS: usize = 1024;

/// HTTP/2 flow-control windows: bytes a client may send ahead of what the
/// broker has read, per call and per connection.
const STREAM_WINDOW: u32 = 1024 * 1024;
const CONNECTION_WINDOW: u32 = 2 * 1024 * 1024;

/// Largest header block a client may send (metadata of a call).
const MAX_HEADER_LIST: u32 = 16 * 1024;

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Directory(#[from] crate::rules::directory::DirectoryError),
    #[error("{0}")]
    Storage(#[from] crate::log::storage::StorageError),
    #[error("{0}")]
    Config(String),
    #[error("cannot serve: {0}")]
    Serve(String),
}

/// A broker ready to serve: its shared [`State`] and its lifecycle. Cheap to clone.
#[derive(Clone)]
pub struct Broker {
    state: Arc<State>,
    /// The gRPC listener's TLS configuration, loaded by [`Broker::open`] so
    /// a bad certificate or key stops the start before anything listens.
    tls: Arc<transport::TlsServerConfig>,
}

impl Broker {
    /// Loads the directory and keys, opens the database and starts the log
    /// writer.
    pub fn open(config: BrokerConfig) -> Result<Self, StartError> {
        config.validate().map_err(StartError::Config)?;
        let directory = Directory::load(&config.directory)?;
        config
            .check_directory(&directory)
            .map_err(StartError::Config)?;
        let verifier = TeamVerifier::new(&directory).map_err(StartError::Config)?;
        let tls = transport::server_config(&config.cert, &config.key, verifier.clone())
            .map_err(StartError::Config)?;
        let key = envelope::read_signing_key(&config.tree_head_key).map_err(StartError::Config)?;
        let storage = Arc::new(Storage::open(&config.data)?);
        let checkpoints = config
            .checkpoint_key
            .as_deref()
            .map(|p| crate::broker::checkpoint::Checkpoints::open(p, &directory, storage.clone()))
            .transpose()
            .map_err(StartError::Config)?;
        let federation = federation(&config, &directory).map_err(StartError::Config)?;
        let log = Log::start(storage, key).map_err(|e| StartError::Config(e.to_string()))?;
        let signatures = SignaturePool::new().map_err(|e| StartError::Config(e.to_string()))?;
        Ok(Broker {
            tls: Arc::new(tls),
            state: Arc::new(State::new(
                config,
                directory,
                verifier,
                checkpoints,
                federation,
                signatures,
                log,
            )),
        })
    }

    /// The directory in force.
    pub fn directory(&self) -> Arc<Directory> {
        self.state.directory()
    }

    pub fn log(&self) -> &Log {
        self.state.log()
    }

    /// Bytes of records the broker has read for its subscriptions and not
    /// yet handed to HTTP/2, over all of them (what subscriptions buffer).
    pub fn subscription_queued_bytes(&self) -> usize {
        self.state.recent.queued_bytes()
    }

    /// Re-reads the directory file. A bad file is refused and the directory
    /// in force stays.
    pub fn reload_directory(&self) -> Result<(), String> {
        self.state.reload_directory()
    }

    /// The relay state per peer, in a federation (what `Federation.Status`
    /// answers this broker's operator).
    pub fn federation_status(&self) -> Option<Result<crate::proto::FederationStatus, String>> {
        let fed = self.state.federation.as_ref()?;
        Some(
            fed.status(self.state.log().storage(), self.state.committed())
                .map_err(|e| e.to_string()),
        )
    }

    /// The configuration the broker runs with.
    pub fn config(&self) -> &BrokerConfig {
        &self.state.config
    }

    /// Starts the read-only TAXII 2.1 API on `listener` (SPEC §14); it
    /// stops when [`Broker::serve`] shuts down. Returns its address.
    pub fn start_taxii(
        &self,
        listener: tokio::net::TcpListener,
    ) -> Result<std::net::SocketAddr, StartError> {
        crate::broker::taxii::spawn(self.state.clone(), listener).map_err(StartError::Config)
    }

    /// Starts the operator's metrics endpoint (plain HTTP, `GET /metrics`)
    /// on `listener` and turns metric recording on; it stops when
    /// [`Broker::serve`] shuts down. Returns its address.
    pub fn start_metrics(
        &self,
        listener: tokio::net::TcpListener,
    ) -> Result<std::net::SocketAddr, StartError> {
        crate::broker::metrics_http::spawn(self.state.clone(), listener).map_err(StartError::Config)
    }

    /// Serves on `listener` until `shutdown` completes, then drains open calls
    /// for at most a few seconds.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let c = &self.state.config;
        let incoming = transport::incoming(
            listener,
            self.tls.clone(),
            self.state.verifier.clone(),
            transport::ConnLimits::from_limits(&c.limits),
        );

        let (health, health_service) = tonic_health::server::health_reporter();
        set_health(&health, tonic_health::ServingStatus::Serving).await;
        let reflection = Reflection::new(&[
            FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ])
        .map_err(StartError::Serve)?;

        let l = &c.limits;
        RefusalLog::spawn_flusher(&self.state.refusals);
        crate::broker::witness_push::spawn(&self.state);
        if let Some(fed) = &self.state.federation {
            let st = self.state.clone();
            fed.spawn(
                self.state.log().clone(),
                Arc::new(move || st.directory()),
                prover(self.state.clone()),
                self.state.closing.subscribe(),
            );
        }
        let services = Services::new(self.state.clone());
        let router = tonic::transport::Server::builder()
            // HTTP/2: calls per connection, the caps on reset streams (both
            // refused by the peer and reset here, which tonic leaves
            // unlimited), keepalive pings, and a connection age after which
            // the client is asked to reconnect.
            .max_concurrent_streams(l.max_streams_per_connection)
            .http2_max_pending_accept_reset_streams(Some(MAX_RESET_STREAMS))
            .http2_max_local_error_reset_streams(Some(MAX_RESET_STREAMS))
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .http2_max_header_list_size(MAX_HEADER_LIST)
            .http2_keepalive_interval(Some(Duration::from_secs(l.keepalive_secs)))
            .http2_keepalive_timeout(Some(Duration::from_secs(l.keepalive_timeout_secs)))
            .max_connection_age(Duration::from_secs(l.max_connection_age_secs))
            .max_connection_age_grace(Duration::from_secs(l.max_connection_age_grace_secs))
            .layer(AdmissionLayer::new(
                l,
                self.state.inflight.clone(),
                self.state.refusals.clone(),
            ))
            .add_service(health_service.max_decoding_message_size(SMALL_REQUEST))
            .add_service(reflection.v1().max_decoding_message_size(SMALL_REQUEST))
            .add_service(
                reflection
                    .v1alpha()
                    .max_decoding_message_size(SMALL_REQUEST),
            )
            .add_service(
                services
                    .exchange
                    .max_decoding_message_size(l.max_envelope_bytes + ENVELOPE_FRAMING),
            )
            .add_service(services.directory.max_decoding_message_size(SMALL_REQUEST))
            .add_service(services.cases.max_decoding_message_size(SMALL_REQUEST))
            .add_service(FederationService::server(self.state.clone()))
            .add_service(
                services
                    .transparency
                    .max_decoding_message_size(SMALL_REQUEST),
            );

        let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<()>();
        let closing = self.state.closing.clone();
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: NOT_SERVING, draining open calls");
            notify_systemd(sd_notify::NotifyState::Stopping);
            closing.send_replace(true);
            set_health(&health, tonic_health::ServingStatus::NotServing).await;
            let _ = draining_tx.send(());
        };
        let server = router.serve_with_incoming_shutdown(incoming, signal);
        // The TLS identity is loaded and the listener bound: connections
        // already queue on it and are served from the first poll below.
        notify_systemd(sd_notify::NotifyState::Ready);
        tokio::pin!(server);
        let served = tokio::select! {
            r = &mut server => r.map_err(|e| StartError::Serve(e.to_string())),
            _ = async {
                if draining_rx.await.is_ok() {
                    tokio::time::sleep(DRAIN_TIMEOUT).await;
                } else {
                    std::future::pending::<()>().await;
                }
            } => {
                tracing::warn!("drain timed out; closing remaining connections");
                Ok(())
            }
        };
        if let Err(e) = self.state.log().close().await {
            tracing::warn!(error = %e, "could not sync the Merkle node file at shutdown; the next start recomputes it");
        }
        served
    }
}

/// Tells systemd (`Type=notify`) the broker's state: `READY=1` once it
/// serves, `STOPPING=1` when the drain starts. Nothing without
/// `NOTIFY_SOCKET`; a failed notification is logged, never fatal.
pub fn notify_systemd(state: sd_notify::NotifyState<'_>) {
    if let Err(e) = sd_notify::notify(&[state]) {
        tracing::warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}

/// This broker's place in a federation, from its configuration: its id must
/// be a `[[broker]]` of the directory; every other listed broker is a peer,
/// at the URL the configuration gives (else the directory's), with the
/// configuration's egress policy (else none).
fn federation(config: &BrokerConfig, dir: &Directory) -> Result<Option<Arc<Federation>>, String> {
    let Some(me) = config.broker.as_deref() else {
        return Ok(None);
    };
    if dir.broker(me).is_none() {
        return Err(format!(
            "this broker's id {me} is not a [[broker]] of the directory {}",
            config.directory.display()
        ));
    }
    for id in config.peers.keys() {
        if dir.broker(id).is_none() {
            return Err(format!("peers.{id}: not a [[broker]] of the directory"));
        }
    }
    let peers = dir
        .brokers()
        .filter(|b| b.id != me)
        .map(|b| {
            let local = config.peers.get(&b.id);
            PeerSpec {
                id: b.id.clone(),
                url: local
                    .and_then(|p| p.url.clone())
                    .unwrap_or_else(|| b.url.clone()),
                egress: local.map(|p| p.egress.clone()).unwrap_or_default(),
            }
        })
        .collect();
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    Federation::new(me, peers, dir, &read(&config.cert)?, &read(&config.key)?)
        .map(|f| Some(Arc::new(f)))
}

/// This broker's evidence for the records it relays: each record's
/// inclusion path in its latest signed checkpoint (with the cosignatures
/// it has), as a C2SP tlog-proof@v1 bundle without the record bytes.
fn prover(state: Arc<State>) -> crate::federation::relay::Prover {
    Arc::new(move |seqs: &[u64]| {
        let Some(signer) = state.checkpoints.as_ref() else {
            return Ok(vec![String::new(); seqs.len()]);
        };
        let head = state.log().head();
        let note = signer.note_for(&head).map_err(|e| e.to_string())?;
        let storage = state.log().storage();
        seqs.iter()
            .map(|&seq| {
                let p = crate::broker::transparency::inclusion(
                    storage,
                    seq,
                    head.tree_size,
                    head.tree_size,
                )
                .map_err(|e| e.to_string())?;
                let path = p
                    .path
                    .iter()
                    .map(|h| <[u8; 32]>::try_from(h.as_slice()).map_err(|_| "bad node".to_owned()))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(crate::rules::note::Proof {
                    extra: None,
                    index: seq - 1,
                    path,
                    checkpoint: note.clone(),
                }
                .encode())
            })
            .collect()
    })
}
