//! The broker: assembles directory, log and TLS, serves the gRPC services
//! over authenticated connections, reloads the directory, and shuts down
//! gracefully (health NOT_SERVING, drain, bounded wait).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::Status;

use crate::broker::config::BrokerConfig;
use crate::broker::reflection::Reflection;
use crate::broker::services::{Services, set_health};
use crate::broker::state::State;
use crate::broker::transport::{self, TeamVerifier};
use crate::log::storage::Storage;
use crate::log::writer::Log;
use crate::rules::directory::Directory;
use crate::rules::envelope;

/// The encoded descriptor set of `certex.v1`, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/certex_descriptor.bin"));

/// How long shutdown waits for open calls (e.g. live subscriptions) to end.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

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
}

impl Broker {
    /// Loads the directory and keys, opens the database and starts the log
    /// writer.
    pub fn open(config: BrokerConfig) -> Result<Self, StartError> {
        config.validate().map_err(StartError::Config)?;
        let directory = Directory::load(&config.directory)?;
        let verifier = TeamVerifier::new(&directory).map_err(StartError::Config)?;
        let key = envelope::read_signing_key(&config.tree_head_key).map_err(StartError::Config)?;
        let storage = Arc::new(Storage::open(&config.data)?);
        let log = Log::start(storage, key).map_err(|e| StartError::Config(e.to_string()))?;
        Ok(Broker {
            state: Arc::new(State::new(config, directory, verifier, log)),
        })
    }

    /// The directory in force.
    pub fn directory(&self) -> Arc<Directory> {
        self.state.directory()
    }

    pub fn log(&self) -> &Log {
        self.state.log()
    }

    /// Re-reads the directory file. A bad file is refused and the directory
    /// in force stays.
    pub fn reload_directory(&self) -> Result<(), String> {
        self.state.reload_directory()
    }

    /// Serves on `listener` until `shutdown` completes, then drains open calls
    /// for at most a few seconds.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let c = &self.state.config;
        let tls = transport::server_config(&c.cert, &c.key, self.state.verifier.clone())
            .map_err(StartError::Config)?;
        let incoming = transport::incoming(
            listener,
            Arc::new(tls),
            self.state.verifier.clone(),
            c.limits.max_connections,
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

        let max_message = c.limits.max_envelope_bytes.saturating_mul(4);
        let envelope_limit = c.limits.max_envelope_bytes;
        let services = Services::new(self.state.clone());
        let router = tonic::transport::Server::builder()
            .layer(tower::util::MapResponseLayer::new(
                move |resp: http::Response<tonic::body::Body>| {
                    refusal_statuses(resp, max_message, envelope_limit)
                },
            ))
            .add_service(health_service)
            .add_service(reflection.v1())
            .add_service(reflection.v1alpha())
            .add_service(services.exchange.max_decoding_message_size(max_message))
            .add_service(services.directory)
            .add_service(services.cases)
            .add_service(services.transparency);

        let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<()>();
        let closing = self.state.closing.clone();
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: NOT_SERVING, draining open calls");
            closing.send_replace(true);
            set_health(&health, tonic_health::ServingStatus::NotServing).await;
            let _ = draining_tx.send(());
        };
        let server = router.serve_with_incoming_shutdown(incoming, signal);
        tokio::pin!(server);
        tokio::select! {
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
        }
    }
}

/// SPEC §4 statuses for requests tonic refuses before a service sees them.
/// A request message so large that tonic refuses to decode it at all (over
/// four times the envelope limit, so it is never buffered) comes back from
/// tonic as `OUT_OF_RANGE`: it becomes `RESOURCE_EXHAUSTED` naming the limit.
/// A request that is not a valid protobuf message of its type (truncated,
/// wrong wire types) comes back as `INTERNAL`: it becomes `INVALID_ARGUMENT`,
/// since the fault is the caller's.
fn refusal_statuses(
    resp: http::Response<tonic::body::Body>,
    max_message: usize,
    envelope_limit: usize,
) -> http::Response<tonic::body::Body> {
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok());
    // grpc-message is percent-encoded on the wire. The texts are tonic's
    // own; the broker's internal errors never carry them (they reach clients
    // as a generic message), and the decode failure must open the message.
    let message = header("grpc-message")
        .unwrap_or_default()
        .replace("%20", " ");
    match header("grpc-status") {
        Some("11") if message.contains("decoded message length too large") => {
            Status::resource_exhausted(format!(
                "the request message is over {max_message} bytes and was not read; \
                 an envelope may be at most the broker's limit of {envelope_limit} bytes"
            ))
            .into_http()
        }
        Some("13") if message.starts_with("failed to decode Protobuf message") => {
            Status::invalid_argument(
                "the request is not a valid protobuf message of its type (truncated or malformed); \
                 nothing was stored",
            )
            .into_http()
        }
        _ => resp,
    }
}
