//! The gRPC services of SPEC §9 (`Exchange`, `Directory`, `Cases`,
//! `Transparency`) over the broker's shared state. Every call is taken only
//! from an authenticated connection whose team is in the directory in force,
//! runs in a span naming the RPC and the team, and turns its error into a
//! status in one place (`error.rs`). The work itself is in the read paths,
//! `publish`, `subscribe`, `case_views` and `transparency`; the case views'
//! storage scans run on tokio's blocking pool, off the async workers.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use time::OffsetDateTime;
use tokio::sync::OwnedSemaphorePermit;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::broker::admission::CallBudget;
use crate::broker::outgoing::{Outgoing, RecordCodec};
use crate::broker::state::State;
use crate::broker::transport::Peer;
use crate::broker::{case_views, publish, publish_stream, read, subscribe, transparency};
use crate::error::Error;
use crate::proto::cases_server::{Cases, CasesServer};
use crate::proto::directory_server::{Directory as DirectoryApi, DirectoryServer};
use crate::proto::exchange_server::{Exchange, ExchangeServer};
use crate::proto::transparency_server::{Transparency, TransparencyServer};
use crate::proto::{self as pb};

/// Sets the health of the whole server ("") and of every certex service.
pub async fn set_health(
    h: &tonic_health::server::HealthReporter,
    status: tonic_health::ServingStatus,
) {
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

/// The four certex services, ready to add to a tonic router.
pub struct Services {
    pub exchange: ExchangeRoutes,
    pub directory: DirectoryServer<DirectoryService>,
    pub cases: CasesServer<CasesService>,
    pub transparency: TransparencyServer<TransparencyService>,
}

impl Services {
    pub fn new(state: Arc<State>) -> Self {
        let svc = Svc(state);
        Services {
            exchange: {
                let service = Arc::new(ExchangeService(svc.clone()));
                ExchangeRoutes {
                    server: ExchangeServer::from_arc(service.clone()),
                    service,
                    max_decoding_message_size: TONIC_DECODE_LIMIT,
                }
            },
            directory: DirectoryServer::new(DirectoryService(svc.clone())),
            cases: CasesServer::new(CasesService(svc.clone())),
            transparency: TransparencyServer::new(TransparencyService(svc)),
        }
    }
}

#[derive(Clone)]
struct Svc(Arc<State>);

impl Svc {
    /// The team of an authenticated call, if it is still in the directory
    /// and, in a federation, homed on this broker. A broker identity may
    /// call none of the team services.
    fn caller<T>(&self, req: &Request<T>) -> Result<String, Error> {
        let peer = req
            .extensions()
            .get::<Peer>()
            .ok_or_else(|| Error::Internal("call without an authenticated connection".into()))?;
        self.0.team_caller(peer)
    }

    /// Runs `f` for the authenticated caller inside a span naming the RPC
    /// and the team; errors become statuses in one place (`error.rs`).
    async fn call<T, R, F, Fut>(
        &self,
        rpc: &'static str,
        req: Request<T>,
        f: F,
    ) -> Result<Response<R>, Status>
    where
        F: FnOnce(Arc<State>, String, T) -> Fut,
        Fut: Future<Output = Result<R, Error>>,
    {
        let team = match self.caller(&req) {
            Ok(t) => t,
            Err(e) => {
                let team = req.extensions().get::<Peer>().map(|p| p.team.as_str());
                log_refusal(&self.0, rpc, team.unwrap_or("-"), &e);
                return Err(e.into());
            }
        };
        let remote = req.extensions().get::<Peer>().map(|p| p.addr);
        let span = tracing::info_span!("rpc", rpc, team = %team, remote = ?remote.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))));
        let broker = self.0.clone();
        async move {
            let r = f(broker.clone(), team.clone(), req.into_inner()).await;
            if let Err(e) = &r {
                log_refusal(&broker, rpc, &team, e);
            }
            r.map(Response::new).map_err(Status::from)
        }
        .instrument(span)
        .await
    }
}

impl Svc {
    /// [`Svc::call`] for a unary call: its answer's bytes are charged to the
    /// team's in-flight budget until sent, so answers a team does not read
    /// stop only that team. The answer of a call whose effect happened
    /// already (`anyway`: a receipt, a cursor) is charged whatever the
    /// budget; any other over the budget is refused.
    async fn unary<T, R, F, Fut>(
        &self,
        rpc: &'static str,
        req: Request<T>,
        anyway: bool,
        f: F,
    ) -> Result<Response<R>, Status>
    where
        F: FnOnce(Arc<State>, String, T) -> Fut,
        Fut: Future<Output = Result<R, Error>>,
        R: prost::Message,
    {
        let budget = req.extensions().get::<CallBudget>().cloned();
        self.call(rpc, req, move |b, team, r| async move {
            let answer = f(b, team, r).await?;
            if let Some(budget) = budget {
                let n = answer.encoded_len();
                if anyway {
                    budget.charge_answer_anyway(n);
                } else {
                    budget.charge_answer(n).map_err(Error::Limit)?;
                }
            }
            Ok(answer)
        })
        .await
    }
}

/// A refused call goes to the refusal log (one INFO line per kind of
/// refusal per team and interval, then a count): the team, the call, the
/// status code, the rule and the field at fault, never a field's value (a
/// TLP:RED value must not reach the log) nor the error's text, which may
/// quote one. Internal errors are logged where they become a status
/// (`error.rs`).
fn log_refusal(state: &State, rpc: &str, team: &str, e: &Error) {
    if matches!(e, Error::Internal(_)) {
        return;
    }
    state
        .refusals
        .record(team, rpc, e.code(), e.kind(), e.field().unwrap_or("-"));
}

/// Runs `f`, a call's storage work, on tokio's blocking pool, in the
/// call's span, so a long scan never holds up an async worker. `slot` is
/// one of the team's few scan slots: it is held by the scan itself, so a
/// call abandoned by its client still counts until its scan ends.
async fn blocking<R, F>(slot: OwnedSemaphorePermit, f: F) -> Result<R, Error>
where
    F: FnOnce() -> Result<R, Error> + Send + 'static,
    R: Send + 'static,
{
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        span.in_scope(f)
    })
    .await
    .map_err(|e| Error::Internal(format!("blocking task failed: {e}")))?
}

/// `certex.v1.Exchange`.
pub struct ExchangeService(Svc);

impl ExchangeService {
    /// Starts a subscription: records as they go on the wire.
    async fn subscribe_records(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<subscribe::RecordStream>, Status> {
        let conn = req.extensions().get::<Peer>().map(|p| p.conn.clone());
        let budget = req.extensions().get::<CallBudget>().cloned();
        self.0
            .call("Subscribe", req, |b, team, r| async move {
                let closing = b.closing.subscribe();
                let stream = subscribe::start(b, team, r, closing, conn)?;
                // The stream's records are bounded by its own buffer; its
                // request no longer holds the team's in-flight budget.
                if let Some(budget) = budget {
                    budget.release();
                }
                Ok(stream)
            })
            .await
    }
}

/// `certex.v1.Exchange` as the broker serves it: every method through the
/// generated `ExchangeServer`, except `Subscribe`, whose records go out
/// through [`RecordCodec`] so a record shared by many subscribers is
/// encoded once for all of them (SPEC §7).
#[derive(Clone)]
pub struct ExchangeRoutes {
    server: ExchangeServer<ExchangeService>,
    service: Arc<ExchangeService>,
    max_decoding_message_size: usize,
}

impl ExchangeRoutes {
    /// The largest request any `Exchange` method decodes.
    pub fn max_decoding_message_size(mut self, limit: usize) -> Self {
        self.server = self.server.max_decoding_message_size(limit);
        self.max_decoding_message_size = limit;
        self
    }
}

impl tonic::server::NamedService for ExchangeRoutes {
    const NAME: &'static str =
        <ExchangeServer<ExchangeService> as tonic::server::NamedService>::NAME;
}

/// tonic's default decode limit, which `ExchangeRoutes` starts from like
/// the generated server it wraps (the broker sets its own).
const TONIC_DECODE_LIMIT: usize = 4 * 1024 * 1024;

/// The path of `Exchange.Subscribe`.
const SUBSCRIBE_PATH: &str = "/certex.v1.Exchange/Subscribe";

impl tower::Service<http::Request<tonic::body::Body>> for ExchangeRoutes {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        if req.uri().path() != SUBSCRIBE_PATH {
            return self.server.call(req);
        }
        let service = self.service.clone();
        let limit = self.max_decoding_message_size;
        Box::pin(async move {
            let method = tower::service_fn(move |r: Request<pb::SubscribeRequest>| {
                let service = service.clone();
                async move { service.subscribe_records(r).await }
            });
            let mut grpc = tonic::server::Grpc::new(RecordCodec::<pb::SubscribeRequest>::default())
                .apply_max_message_size_config(Some(limit), None);
            Ok(grpc.server_streaming(method, req).await)
        })
    }
}

#[tonic::async_trait]
impl Exchange for ExchangeService {
    async fn publish(
        &self,
        req: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::Receipt>, Status> {
        self.0
            .unary("Publish", req, true, |b, team, r| async move {
                publish::publish(&b, &team, r.envelope).await
            })
            .await
    }

    type PublishStreamStream = publish_stream::ReceiptStream;

    async fn publish_stream(
        &self,
        req: Request<Streaming<pb::PublishRequest>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        let conn = req.extensions().get::<Peer>().map(|p| p.conn.clone());
        let budget = req.extensions().get::<CallBudget>().cloned();
        self.0
            .call("PublishStream", req, |b, team, requests| async move {
                let call = publish_stream::Call {
                    team,
                    closing: b.closing.subscribe(),
                    conn,
                    budget,
                    on_refusal: |state, team, e| log_refusal(state, "PublishStream", team, e),
                };
                publish_stream::start(b, requests, call)
            })
            .await
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::Record>, Status> {
        self.0
            .unary("Get", req, false, |b, team, r| async move {
                read::get(&b, &team, r)
            })
            .await
    }

    type SubscribeStream = Pin<Box<dyn Stream<Item = Result<pb::Record, Status>> + Send>>;

    /// `Subscribe` as a generated `ExchangeServer` would serve it, each
    /// record decoded back into a message. The broker's router serves the
    /// method itself ([`ExchangeRoutes`]), sending the shared encodings as
    /// they are; this is the same subscription for any other host of
    /// `ExchangeServer`.
    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let records = self.subscribe_records(req).await?;
        Ok(records.map(|s| -> Self::SubscribeStream {
            Box::pin(s.map(|item| item.and_then(Outgoing::into_record)))
        }))
    }

    async fn commit_cursor(
        &self,
        req: Request<pb::CommitCursorRequest>,
    ) -> Result<Response<pb::Cursor>, Status> {
        self.0
            .unary("CommitCursor", req, true, |b, team, r| async move {
                subscribe::check_durable_name(&r.durable)?;
                let size = b.log().head().tree_size;
                if r.seq > size {
                    return Err(Error::BadRequest(format!(
                        "seq {} is beyond the end of the log ({size})",
                        r.seq
                    )));
                }
                // A move that changes nothing is answered without the writer.
                let storage = b.log().storage();
                if storage.cursor_names(&team, &r.durable)?.1 {
                    let at = storage.cursor(&team, &r.durable)?;
                    if at >= r.seq {
                        return Ok(pb::Cursor {
                            durable: r.durable,
                            seq: at,
                        });
                    }
                }
                // A cursor move writes: it spends the team's message budget
                // and is refused below the disk watermark.
                b.budgets.cursor_move(&team)?;
                b.disk.check(storage)?;
                let max_names = b.config.limits.max_durable_names_per_team;
                let seq = b
                    .log()
                    .advance_cursor(&team, &r.durable, r.seq, max_names)
                    .await?;
                Ok(pb::Cursor {
                    durable: r.durable,
                    seq,
                })
            })
            .await
    }
}

/// `certex.v1.Directory`.
pub struct DirectoryService(Svc);

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
                revoked: k.revoked_at.is_some(),
                revoked_at: ts(k.revoked_at),
            })
            .collect(),
        retired_at: ts(t.retired_at),
    }
}

#[tonic::async_trait]
impl DirectoryApi for DirectoryService {
    async fn who_am_i(
        &self,
        req: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::Team>, Status> {
        self.0
            .unary("WhoAmI", req, false, |b, team, _| async move {
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
            .unary("ListTeams", req, false, |b, _, _| async move {
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
            .unary("ListGroups", req, false, |b, _, _| async move {
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

/// `certex.v1.Cases`.
pub struct CasesService(Svc);

#[tonic::async_trait]
impl Cases for CasesService {
    async fn list_cases(
        &self,
        req: Request<pb::ListCasesRequest>,
    ) -> Result<Response<pb::ListCasesResponse>, Status> {
        self.0
            .unary("ListCases", req, false, |b, team, r| async move {
                let slot = b.scans.acquire(&team).await?;
                blocking(slot, move || case_views::list(&b, &team, &r)).await
            })
            .await
    }

    async fn get_case(
        &self,
        req: Request<pb::GetCaseRequest>,
    ) -> Result<Response<pb::Case>, Status> {
        self.0
            .unary("GetCase", req, false, |b, team, r| async move {
                let slot = b.scans.acquire(&team).await?;
                blocking(slot, move || case_views::get(&b, &team, &r)).await
            })
            .await
    }
}

/// `certex.v1.Transparency`.
pub struct TransparencyService(Svc);

#[tonic::async_trait]
impl Transparency for TransparencyService {
    async fn get_head(
        &self,
        req: Request<pb::GetHeadRequest>,
    ) -> Result<Response<pb::SignedTreeHead>, Status> {
        self.0
            .unary("GetHead", req, false, |b, _, _| async move {
                Ok(b.log().head())
            })
            .await
    }

    async fn get_inclusion_proof(
        &self,
        req: Request<pb::InclusionProofRequest>,
    ) -> Result<Response<pb::InclusionProof>, Status> {
        self.0
            .unary("GetInclusionProof", req, false, |b, team, r| async move {
                transparency::inclusion_for(&b, &team, &r)
            })
            .await
    }

    async fn get_consistency_proof(
        &self,
        req: Request<pb::ConsistencyProofRequest>,
    ) -> Result<Response<pb::ConsistencyProof>, Status> {
        self.0
            .unary("GetConsistencyProof", req, false, |b, _, r| async move {
                transparency::consistency(b.log().storage(), &r, b.log().head().tree_size)
            })
            .await
    }

    async fn get_checkpoint(
        &self,
        req: Request<pb::GetCheckpointRequest>,
    ) -> Result<Response<pb::SignedCheckpoint>, Status> {
        self.0
            .unary("GetCheckpoint", req, false, |b, _, _| async move {
                transparency::checkpoint(&b)
            })
            .await
    }

    async fn add_cosignature(
        &self,
        req: Request<pb::AddCosignatureRequest>,
    ) -> Result<Response<pb::AddCosignatureResponse>, Status> {
        self.0
            .unary("AddCosignature", req, false, |b, team, r| async move {
                // Verifying and syncing the cosignature to disk blocks.
                tokio::task::spawn_blocking(move || transparency::add_cosignature(&b, &team, &r))
                    .await
                    .map_err(|e| crate::error::Error::Internal(format!("cosignature task: {e}")))?
            })
            .await
    }
}
