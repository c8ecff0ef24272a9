//! The `Federation` gRPC service (SPEC §12), open only to broker identities
//! of the directory: `Relay` takes records a peer relays (checked by
//! `federation::receive` on the blocking pool, then appended in the peer's
//! order through the ordinary writer, one result per record) and case
//! updates handed to this broker as a case's authority; `Status` shows this
//! broker's operator the relay state per peer.

use std::sync::Arc;

use time::OffsetDateTime;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::broker::state::State;
use crate::error::Error;
use crate::federation::receive::{self, Hop};
use crate::log::writer::Submission;
use crate::proto::federation_server::{Federation as FederationApi, FederationServer};
use crate::proto::{self as pb};
use crate::rules::signature::KeyCache;

/// Most records in one relay call.
const MAX_BATCH: usize = 2048;

/// `certex.v1.Federation`.
pub struct FederationService(pub Arc<State>);

impl FederationService {
    pub fn server(state: Arc<State>) -> FederationServer<Self> {
        FederationServer::new(FederationService(state))
            .max_decoding_message_size(crate::federation::relay::MAX_RELAY_MESSAGE)
            .max_encoding_message_size(crate::federation::relay::MAX_RELAY_MESSAGE)
    }
}

fn refused(state: &State, rpc: &str, who: &str, e: Error) -> Status {
    if !matches!(e, Error::Internal(_)) {
        state
            .refusals
            .record(who, rpc, e.code(), e.kind(), e.field().unwrap_or("-"));
    }
    e.into()
}

#[tonic::async_trait]
impl FederationApi for FederationService {
    async fn relay(&self, req: Request<pb::RelayBatch>) -> Result<Response<pb::RelayAck>, Status> {
        let state = self.0.clone();
        let from = state
            .broker_peer(&req)
            .map_err(|e| refused(&state, "Relay", "-", e))?;
        let span = tracing::info_span!("rpc", rpc = "Relay", broker = %from);
        async move {
            let who = format!("broker:{from}");
            let r = relay(&state, &from, req.into_inner()).await;
            r.map(Response::new)
                .map_err(|e| refused(&state, "Relay", &who, e))
        }
        .instrument(span)
        .await
    }

    async fn status(
        &self,
        req: Request<pb::FederationStatusRequest>,
    ) -> Result<Response<pb::FederationStatus>, Status> {
        let state = self.0.clone();
        let caller = state
            .broker_identity(&req)
            .map_err(|e| refused(&state, "Status", "-", e))?;
        let Some(fed) = state.federation.as_ref() else {
            return Err(Error::Precondition("this broker is not in a federation".into()).into());
        };
        if caller != fed.me {
            return Err(refused(
                &state,
                "Status",
                &format!("broker:{caller}"),
                Error::NotRelayable(format!(
                    "broker {caller} asked for broker {}'s relay status: only its own operator may",
                    fed.me
                )),
            ));
        }
        let st = state.clone();
        let answer = tokio::task::spawn_blocking(move || {
            let fed = st.federation.as_ref().expect("checked above");
            fed.status(st.log().storage(), st.committed())
        })
        .await
        .map_err(|e| Status::from(Error::Internal(format!("status task failed: {e}"))))??;
        Ok(Response::new(answer))
    }
}

/// Checks and appends one relayed batch; one result per record.
async fn relay(
    state: &Arc<State>,
    from: &str,
    batch: pb::RelayBatch,
) -> Result<pb::RelayAck, Error> {
    let Some(me) = state.config.broker.clone() else {
        return Err(Error::Precondition(
            "this broker is not in a federation (it has no broker id)".into(),
        ));
    };
    if batch.records.len() > MAX_BATCH {
        return Err(Error::BadRequest(format!(
            "a relay batch holds at most {MAX_BATCH} records"
        )));
    }
    state.disk.check(state.log().storage())?;
    let origin_seqs: Vec<u64> = batch.records.iter().map(|r| r.origin_seq).collect();
    let (st, from_id) = (state.clone(), from.to_owned());
    let checked: Vec<Result<Submission, Error>> = tokio::task::spawn_blocking(move || {
        let dir = st.directory();
        let hop = Hop {
            me: &me,
            from: &from_id,
        };
        let now = OffsetDateTime::now_utc();
        let max = st.config.limits.max_envelope_bytes;
        let mut keys = KeyCache::default();
        batch
            .records
            .into_iter()
            .map(|r| receive::check(&hop, &dir, st.log().storage(), r, max, now, &mut keys))
            .collect()
    })
    .await
    .map_err(|e| Error::Internal(format!("relay check task failed: {e}")))?;

    let mut subs = Vec::new();
    let mut slots = Vec::with_capacity(checked.len());
    for c in checked {
        match c {
            Ok(sub) => {
                subs.push(sub);
                slots.push(None);
            }
            Err(e) => slots.push(Some(e)),
        }
    }
    let mut appended = state.log().append_in_order(subs).await.into_iter();
    let mut results = Vec::with_capacity(slots.len());
    for (slot, origin_seq) in slots.into_iter().zip(origin_seqs) {
        let outcome = match slot {
            Some(e) => Err(e),
            None => appended
                .next()
                .unwrap_or_else(|| Err(Error::Internal("relay answer missing".into()))),
        };
        results.push(match outcome {
            Ok(receipt) => pb::RelayResult {
                origin_seq,
                receipt: Some(receipt),
                code: 0,
                message: String::new(),
            },
            Err(e) => {
                tracing::info!(origin_seq, code = ?e.code(), rule = e.kind(), field = e.field().unwrap_or("-"), "relayed record refused");
                let status = Status::from(e);
                pb::RelayResult {
                    origin_seq,
                    receipt: None,
                    code: status.code() as i32,
                    message: status.message().to_owned(),
                }
            }
        });
    }
    Ok(pb::RelayAck { results })
}
