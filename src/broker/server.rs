//! The broker: assembles directory, log and TLS, serves the gRPC services
//! over authenticated connections, reloads the directory, and shuts down
//! gracefully (health NOT_SERVING, drain, bounded wait).

use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::broker::config::{BrokerConfig, Limits};
use crate::broker::subscribe::{self, StreamSlots};
use crate::broker::transparency;
use crate::broker::transport::{self, Peer, TeamVerifier};
use crate::error::Error;
use crate::log::storage::{Storage, StoredRecord};
use crate::log::writer::{Log, Submission, open_record, timestamp};
use crate::proto::body::Content;
use crate::proto::cases_server::{Cases, CasesServer};
use crate::proto::directory_server::{Directory as DirectoryApi, DirectoryServer};
use crate::proto::exchange_server::{Exchange, ExchangeServer};
use crate::proto::transparency_server::{Transparency, TransparencyServer};
use crate::proto::{self as pb, get_request::Selector};
use crate::rules::access::{self, Distribution, TrafficScope, Visibility};
use crate::rules::directory::Directory;
use crate::rules::envelope;
use crate::rules::validate;
use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;

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

struct Inner {
    config: BrokerConfig,
    slots: StreamSlots,
    recent: subscribe::RecentRecords,
    closing: watch::Sender<bool>,
    reloads: watch::Sender<u64>,
    directory: RwLock<Arc<Directory>>,
    verifier: Arc<TeamVerifier>,
    log: Log,
    limiter: DefaultKeyedRateLimiter<String>,
}

/// A running broker's shared state. Cheap to clone.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
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
        let limiter = RateLimiter::keyed(rate_quota(&config.limits));
        Ok(Broker {
            inner: Arc::new(Inner {
                slots: StreamSlots::new(config.limits.max_subscriptions_per_team),
                recent: Default::default(),
                closing: watch::channel(false).0,
                reloads: watch::channel(0).0,
                config,
                directory: RwLock::new(Arc::new(directory)),
                verifier,
                log,
                limiter,
            }),
        })
    }

    /// The directory in force.
    pub fn directory(&self) -> Arc<Directory> {
        self.inner
            .directory
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn log(&self) -> &Log {
        &self.inner.log
    }

    /// The durable size of the log: records above it are not yet on the
    /// device and no read path shows them.
    pub(crate) fn committed(&self) -> u64 {
        *self.log().committed().borrow()
    }

    /// Changes once per successful directory reload.
    pub(crate) fn directory_reloads(&self) -> watch::Receiver<u64> {
        self.inner.reloads.subscribe()
    }

    pub(crate) fn recent(&self) -> &subscribe::RecentRecords {
        &self.inner.recent
    }

    pub(crate) fn stream_slots(&self) -> &StreamSlots {
        &self.inner.slots
    }

    /// Re-reads the directory file. A bad file is refused and the directory
    /// in force stays.
    pub fn reload_directory(&self) -> Result<(), String> {
        let dir = Directory::load(&self.inner.config.directory).map_err(|e| e.to_string())?;
        self.inner.verifier.reload(&dir)?;
        *self
            .inner
            .directory
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(dir);
        self.inner.reloads.send_modify(|n| *n += 1);
        tracing::info!(path = %self.inner.config.directory.display(), "directory reloaded");
        Ok(())
    }

    /// Serves on `listener` until `shutdown` completes, then drains open calls
    /// for at most a few seconds.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let c = &self.inner.config;
        let chain = CertificateDer::pem_file_iter(&c.cert)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| {
                StartError::Config(format!("broker certificate {}: {e}", c.cert.display()))
            })?;
        let key = PrivateKeyDer::from_pem_file(&c.key)
            .map_err(|e| StartError::Config(format!("broker key {}: {e}", c.key.display())))?;
        let tls = transport::server_config(chain, key, self.inner.verifier.clone())
            .map_err(StartError::Config)?;
        let incoming = transport::incoming(listener, Arc::new(tls), c.limits.max_connections);

        let (health, health_service) = tonic_health::server::health_reporter();
        set_health(&health, tonic_health::ServingStatus::Serving).await;
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection()
            .build_v1()
            .map_err(|e| StartError::Serve(e.to_string()))?;
        let reflection_v1alpha = reflection()
            .build_v1alpha()
            .map_err(|e| StartError::Serve(e.to_string()))?;

        let max_message = c.limits.max_envelope_bytes.saturating_mul(4);
        let svc = Svc(self.clone());
        let envelope_limit = c.limits.max_envelope_bytes;
        let router = tonic::transport::Server::builder()
            .layer(tower::util::MapResponseLayer::new(
                move |resp: http::Response<tonic::body::Body>| {
                    oversize_to_resource_exhausted(resp, max_message, envelope_limit)
                },
            ))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(
                ExchangeServer::new(ExchangeService(svc.clone()))
                    .max_decoding_message_size(max_message),
            )
            .add_service(DirectoryServer::new(DirectoryService(svc.clone())))
            .add_service(CasesServer::new(CasesService(svc.clone())))
            .add_service(TransparencyServer::new(TransparencyService(svc)));

        let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<()>();
        let closing = self.inner.closing.clone();
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

    /// The team of an authenticated call, if it is still in the directory.
    fn caller<T>(&self, req: &Request<T>) -> Result<String, Error> {
        let peer = req
            .extensions()
            .get::<Peer>()
            .ok_or_else(|| Error::Internal("call without an authenticated connection".into()))?;
        if self.directory().team(&peer.team).is_none() {
            return Err(Error::UnknownCaller(peer.team.clone()));
        }
        Ok(peer.team.clone())
    }

    /// SPEC §4 in order: size, body, sender, key and signature, clock skew,
    /// fields; then the writer checks duplicates and log-dependent rules.
    async fn publish(&self, team: &str, env: Option<pb::Envelope>) -> Result<pb::Receipt, Error> {
        let env = env.ok_or_else(|| Error::invalid("envelope", "is required"))?;
        let limits = &self.inner.config.limits;
        let size = prost::Message::encoded_len(&env);
        if size > limits.max_envelope_bytes {
            return Err(Error::TooLarge {
                size,
                limit: limits.max_envelope_bytes,
            });
        }
        let body = envelope::decode_body(&env).map_err(|e| {
            Error::invalid(
                "body",
                format!("is not a valid certex.v1.Body encoding ({e})"),
            )
        })?;
        if body.sender != team {
            return Err(Error::NotSender {
                claimed: body.sender,
                team: team.to_owned(),
            });
        }
        let dir = self.directory();
        let now = OffsetDateTime::now_utc();
        let key = dir.active_key(team, &env.key_id, now)?;
        envelope::verify(&env, &key.public)?;
        // A retry of a logged message is answered by the writer (original
        // receipt or ALREADY_EXISTS) even when its created_at is now old.
        let retry = !body.id.is_empty() && self.log().storage().seq_of(&body.id, team)?.is_some();
        if !retry {
            // Only new messages spend the team's rate budget: a retry after a
            // timeout gets its original receipt.
            if self.inner.limiter.check_key(&team.to_owned()).is_err() {
                return Err(Error::RateLimited {
                    team: team.to_owned(),
                    per_second: limits.rate_per_second,
                    burst: limits.rate_burst,
                });
            }
            check_skew(&body, now, limits)?;
            validate::check_body(&body, &dir)?;
        }
        self.log()
            .append(Submission {
                envelope: env,
                body,
            })
            .await
    }

    /// A record as `reader` may see it, or `None` when hidden.
    fn view(
        &self,
        reader: &str,
        seq: u64,
        rec: StoredRecord,
        scope: &TrafficScope,
        dir: &Directory,
    ) -> Result<Option<pb::Record>, Error> {
        let (env, body) = open_record(&rec)?;
        self.view_decoded(reader, seq, &rec, || env, &body, scope, dir)
    }

    /// [`Broker::view`] for a record whose envelope is already decoded;
    /// `env` hands over the envelope (moved or copied) only if the reader
    /// receives it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn view_decoded(
        &self,
        reader: &str,
        seq: u64,
        rec: &StoredRecord,
        env: impl FnOnce() -> pb::Envelope,
        body: &pb::Body,
        scope: &TrafficScope,
        dir: &Directory,
    ) -> Result<Option<pb::Record>, Error> {
        let dist = Distribution {
            sender: &body.sender,
            audience: body.audience.as_ref(),
            exercise: &body.exercise,
            also_readers: &rec.also_readers,
        };
        // Who may see it at all is decided before any storage read.
        if !scope.includes(&body.exercise)
            || access::visibility(reader, &dist, false, scope, dir) == Visibility::Hidden
        {
            return Ok(None);
        }
        let storage = self.log().storage();
        let retraction = storage.retraction_of(seq)?;
        let mut record = pb::Record {
            seq,
            received_at: Some(timestamp(rec.received_at_ms)),
            leaf_hash: rec.leaf_hash.clone(),
            envelope: None,
            retracted: None,
        };
        match access::visibility(reader, &dist, retraction.is_some(), scope, dir) {
            Visibility::Hidden => return Ok(None),
            Visibility::Full => record.envelope = Some(env()),
            Visibility::Tombstone => {
                let by = retraction.unwrap_or_default();
                let (_, rbody) = open_record(
                    &storage
                        .record(by)?
                        .ok_or_else(|| Error::Internal(format!("retraction {by} is missing")))?,
                )?;
                let reason = match rbody.content {
                    Some(Content::Retraction(r)) => r.reason,
                    _ => String::new(),
                };
                record.retracted = Some(pb::Tombstone {
                    id: body.id.clone(),
                    sender: body.sender.clone(),
                    seq,
                    retracted_by: rbody.id,
                    reason,
                });
            }
        }
        Ok(Some(record))
    }

    fn get(&self, reader: &str, req: pb::GetRequest) -> Result<pb::Record, Error> {
        let scope = TrafficScope::from_selector(req.exercise.as_ref());
        let dir = self.directory();
        let storage = self.log().storage();
        let (what, mut seqs) = match req.selector {
            Some(Selector::Seq(seq)) => (format!("record {seq}"), vec![seq]),
            Some(Selector::Id(id)) => {
                let mut seqs: Vec<u64> = storage
                    .seqs_of_id(&id)?
                    .into_iter()
                    .filter(|(s, _)| req.sender.is_empty() || *s == req.sender)
                    .map(|(_, seq)| seq)
                    .collect();
                seqs.sort_unstable();
                (format!("message {id}"), seqs)
            }
            None => return Err(Error::BadRequest("name a record by seq or by id".into())),
        };
        let committed = self.committed();
        for seq in seqs.drain(..).filter(|s| *s <= committed) {
            if let Some(rec) = storage.record(seq)?
                && let Some(view) = self.view(reader, seq, rec, &scope, &dir)?
            {
                return Ok(view);
            }
        }
        Err(Error::NotFound(what))
    }
}

/// Sets the health of the whole server ("") and of every certex service.
async fn set_health(h: &tonic_health::server::HealthReporter, status: tonic_health::ServingStatus) {
    use tonic::server::NamedService;
    for name in [
        "",
        ExchangeServer::<ExchangeService>::NAME,
        CasesServer::<CasesService>::NAME,
        DirectoryServer::<DirectoryService>::NAME,
        TransparencyServer::<TransparencyService>::NAME,
    ] {
        h.set_service_status(name, status).await;
    }
}

fn rate_quota(l: &Limits) -> Quota {
    let per_second = NonZeroU32::new(l.rate_per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(l.rate_burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(per_second).allow_burst(burst)
}

fn check_skew(body: &pb::Body, now: OffsetDateTime, limits: &Limits) -> Result<(), Error> {
    let Some(ts) = &body.created_at else {
        return Err(Error::invalid("created_at", "is required"));
    };
    let created = OffsetDateTime::from_unix_timestamp(ts.seconds)
        .ok()
        .filter(|_| (0..1_000_000_000).contains(&ts.nanos))
        .ok_or_else(|| Error::invalid("created_at", "is not a valid timestamp"))?;
    let skew = (created - now).whole_seconds();
    if skew.unsigned_abs() > limits.clock_skew_secs {
        return Err(Error::Skew {
            created_at: crate::client::draft::format_time(created),
            now: crate::client::draft::format_time(now),
            skew_secs: skew,
            window_secs: limits.clock_skew_secs,
        });
    }
    Ok(())
}

// === impl gRPC services ===

#[derive(Clone)]
struct Svc(Broker);

impl Svc {
    /// Runs `f` for the authenticated caller inside a span naming the RPC
    /// and the team; errors become statuses in one place (`error.rs`).
    async fn call<T, R, F, Fut>(
        &self,
        rpc: &'static str,
        req: Request<T>,
        f: F,
    ) -> Result<Response<R>, Status>
    where
        F: FnOnce(Broker, String, T) -> Fut,
        Fut: Future<Output = Result<R, Error>>,
    {
        let team = match self.0.caller(&req) {
            Ok(t) => t,
            Err(e) => return Err(e.into()),
        };
        let remote = req.extensions().get::<Peer>().map(|p| p.addr);
        let span = tracing::info_span!("rpc", rpc, team = %team, remote = ?remote.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))));
        let broker = self.0.clone();
        async move {
            let r = f(broker, team, req.into_inner()).await;
            if let Err(e) = &r {
                tracing::debug!(code = ?e.code(), error = %e, "refused");
            }
            r.map(Response::new).map_err(Status::from)
        }
        .instrument(span)
        .await
    }
}

struct ExchangeService(Svc);

#[tonic::async_trait]
impl Exchange for ExchangeService {
    async fn publish(
        &self,
        req: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::Receipt>, Status> {
        self.0
            .call("Publish", req, |b, team, r| async move {
                b.publish(&team, r.envelope).await
            })
            .await
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::Record>, Status> {
        self.0
            .call("Get", req, |b, team, r| async move { b.get(&team, r) })
            .await
    }

    type SubscribeStream = ReceiverStream<Result<pb::Record, Status>>;

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        self.0
            .call("Subscribe", req, |b, team, r| async move {
                let closing = b.inner.closing.subscribe();
                subscribe::start(b, team, r, closing)
            })
            .await
    }

    async fn commit_cursor(
        &self,
        req: Request<pb::CommitCursorRequest>,
    ) -> Result<Response<pb::Cursor>, Status> {
        self.0
            .call("CommitCursor", req, |b, team, r| async move {
                subscribe::check_durable_name(&r.durable)?;
                let size = b.log().head().tree_size;
                if r.seq > size {
                    return Err(Error::BadRequest(format!(
                        "seq {} is beyond the end of the log ({size})",
                        r.seq
                    )));
                }
                let storage = b.log().storage_arc();
                let seq = tokio::task::spawn_blocking(move || {
                    storage
                        .advance_cursor(&team, &r.durable, r.seq)
                        .map(|s| (r.durable, s))
                })
                .await
                .map_err(|e| Error::Internal(e.to_string()))??;
                Ok(pb::Cursor {
                    durable: seq.0,
                    seq: seq.1,
                })
            })
            .await
    }
}

struct DirectoryService(Svc);

fn team_proto(t: &crate::rules::directory::Team) -> pb::Team {
    let ts = |t: Option<OffsetDateTime>| {
        t.map(|t| prost_types::Timestamp {
            seconds: t.unix_timestamp(),
            nanos: t.nanosecond() as i32,
        })
    };
    pb::Team {
        id: t.id.clone(),
        country: t.country.clone(),
        name: t.name.clone(),
        contact: t.contact.clone(),
        keys: t
            .keys
            .iter()
            .map(|k| pb::SigningKey {
                key_id: k.key_id.clone(),
                public_key: k.public.as_bytes().to_vec(),
                not_before: ts(k.not_before),
                not_after: ts(k.not_after),
                revoked: k.revoked,
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl DirectoryApi for DirectoryService {
    async fn who_am_i(
        &self,
        req: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::Team>, Status> {
        self.0
            .call("WhoAmI", req, |b, team, _| async move {
                b.directory()
                    .team(&team)
                    .map(team_proto)
                    .ok_or(Error::UnknownCaller(team))
            })
            .await
    }

    async fn list_teams(
        &self,
        req: Request<pb::ListTeamsRequest>,
    ) -> Result<Response<pb::ListTeamsResponse>, Status> {
        self.0
            .call("ListTeams", req, |b, _, _| async move {
                Ok(pb::ListTeamsResponse {
                    teams: b.directory().teams().map(team_proto).collect(),
                })
            })
            .await
    }

    async fn list_groups(
        &self,
        req: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        self.0
            .call("ListGroups", req, |b, _, _| async move {
                Ok(pb::ListGroupsResponse {
                    groups: b
                        .directory()
                        .groups()
                        .map(|(name, members)| pb::Group {
                            name: name.clone(),
                            members: members.iter().cloned().collect(),
                        })
                        .collect(),
                })
            })
            .await
    }
}

struct CasesService(Svc);

#[tonic::async_trait]
impl Cases for CasesService {
    async fn list_cases(
        &self,
        req: Request<pb::ListCasesRequest>,
    ) -> Result<Response<pb::ListCasesResponse>, Status> {
        self.0
            .call("ListCases", req, |b, team, r| async move {
                crate::broker::case_views::list(&b, &team, &r)
            })
            .await
    }

    async fn get_case(
        &self,
        req: Request<pb::GetCaseRequest>,
    ) -> Result<Response<pb::Case>, Status> {
        self.0
            .call("GetCase", req, |b, team, r| async move {
                crate::broker::case_views::get(&b, &team, &r)
            })
            .await
    }
}

struct TransparencyService(Svc);

#[tonic::async_trait]
impl Transparency for TransparencyService {
    async fn get_head(
        &self,
        req: Request<pb::GetHeadRequest>,
    ) -> Result<Response<pb::SignedTreeHead>, Status> {
        self.0
            .call("GetHead", req, |b, _, _| async move { Ok(b.log().head()) })
            .await
    }

    async fn get_inclusion_proof(
        &self,
        req: Request<pb::InclusionProofRequest>,
    ) -> Result<Response<pb::InclusionProof>, Status> {
        self.0
            .call("GetInclusionProof", req, |b, team, r| async move {
                let storage = b.log().storage();
                let seq = transparency::leaf_seq(storage, &r)?;
                // Proofs follow the read rule: a record the caller may not
                // read, or that is not yet in a signed tree, is answered
                // exactly like a leaf that does not exist.
                let not_found = || match &r.leaf {
                    Some(pb::inclusion_proof_request::Leaf::LeafHash(h)) => {
                        Error::NotFound(format!("leaf {}", hex::encode(h)))
                    }
                    _ => Error::NotFound(format!("record {seq}")),
                };
                let head_size = b.log().head().tree_size;
                if seq > head_size {
                    return Err(not_found());
                }
                let rec = storage.record(seq)?.ok_or_else(not_found)?;
                let dir = b.directory();
                let (_, body) = open_record(&rec)?;
                let scope = if body.exercise.is_empty() {
                    TrafficScope::Real
                } else {
                    TrafficScope::Exercise(body.exercise.clone())
                };
                if b.view(&team, seq, rec, &scope, &dir)?.is_none() {
                    return Err(not_found());
                }
                transparency::inclusion(storage, seq, r.tree_size, head_size)
            })
            .await
    }

    async fn get_consistency_proof(
        &self,
        req: Request<pb::ConsistencyProofRequest>,
    ) -> Result<Response<pb::ConsistencyProof>, Status> {
        self.0
            .call("GetConsistencyProof", req, |b, _, r| async move {
                transparency::consistency(b.log().storage(), &r, b.log().head().tree_size)
            })
            .await
    }
}

/// SPEC §4: an envelope over the size limit is `RESOURCE_EXHAUSTED`. A
/// request message so large that tonic refuses to decode it at all (over
/// four times the envelope limit, so it is never buffered) comes back from
/// tonic as `OUT_OF_RANGE`; this gives it the status and a message the spec
/// promises.
fn oversize_to_resource_exhausted(
    resp: http::Response<tonic::body::Body>,
    max_message: usize,
    envelope_limit: usize,
) -> http::Response<tonic::body::Body> {
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok());
    let oversize = header("grpc-status") == Some("11")
        && header("grpc-message").is_some_and(|m| {
            m.contains("decoded message length too large")
                || m.contains("decoded%20message%20length%20too%20large")
        });
    if !oversize {
        return resp;
    }
    Status::resource_exhausted(format!(
        "the request message is over {max_message} bytes and was not read; \
         an envelope may be at most the broker's limit of {envelope_limit} bytes"
    ))
    .into_http()
}
