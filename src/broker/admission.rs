//! Every call passes here before its service (SPEC §15): it is counted open
//! on its connection (an idle connection is closed), its request bytes are
//! charged to its team's and the broker's in-flight budgets until its answer
//! is complete (the call that would pass a budget is refused
//! `RESOURCE_EXHAUSTED`), a unary call (reading its request included) has a
//! deadline, and statuses tonic produces before a service sees the request
//! are given their SPEC §4 codes. Each refusal made here is logged once at
//! INFO with team, call and code; refusals made by the services are logged
//! by them.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tonic::Status;
use tonic::body::Body;

use crate::broker::config::Limits;
use crate::broker::transport::{CallGuard, Peer};

/// Request bytes in flight: received and not yet answered, per team and in
/// all.
pub struct Inflight {
    per_team_limit: usize,
    total_limit: usize,
    total: AtomicUsize,
    teams: Mutex<HashMap<String, usize>>,
}

impl Inflight {
    pub fn new(per_team_limit: usize, total_limit: usize) -> Self {
        Inflight {
            per_team_limit,
            total_limit,
            total: AtomicUsize::new(0),
            teams: Mutex::new(HashMap::new()),
        }
    }

    /// Charges `n` bytes to `team`, or says which budget they would pass.
    fn charge(&self, team: &str, n: usize) -> Result<(), String> {
        let mut teams = self.teams.lock().unwrap_or_else(|p| p.into_inner());
        let held = teams.get(team).copied().unwrap_or(0);
        if held + n > self.per_team_limit {
            return Err(format!(
                "team {team} has {held} request bytes in flight and this call would pass the \
                 limit of {} per team (limits.max_inflight_bytes_per_team); wait for answers \
                 to your open calls",
                self.per_team_limit
            ));
        }
        let total = self.total.load(Ordering::Acquire);
        if total + n > self.total_limit {
            return Err(format!(
                "the broker has {total} request bytes in flight, its limit \
                 (limits.max_inflight_bytes); retry shortly"
            ));
        }
        self.total.fetch_add(n, Ordering::AcqRel);
        *teams.entry(team.to_owned()).or_insert(0) += n;
        Ok(())
    }

    fn release(&self, team: &str, n: usize) {
        if n == 0 {
            return;
        }
        let mut teams = self.teams.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(held) = teams.get_mut(team) {
            *held = held.saturating_sub(n);
            if *held == 0 {
                teams.remove(team);
            }
        }
        self.total.fetch_sub(n, Ordering::AcqRel);
    }

    /// Bytes in flight for `team`.
    pub fn of(&self, team: &str) -> usize {
        let teams = self.teams.lock().unwrap_or_else(|p| p.into_inner());
        teams.get(team).copied().unwrap_or(0)
    }
}

/// What one call holds: its request bytes charged, released on drop (once
/// the request body and the answer are both gone).
struct Charge {
    inflight: Arc<Inflight>,
    team: String,
    bytes: AtomicUsize,
    refused: AtomicBool,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.inflight
            .release(&self.team, self.bytes.load(Ordering::Acquire));
    }
}

/// A request body whose bytes are charged as they arrive.
struct Counted {
    inner: Body,
    charge: Arc<Charge>,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let c = &this.charge;
                    if let Err(why) = c.inflight.charge(&c.team, data.len()) {
                        c.refused.store(true, Ordering::Release);
                        return Poll::Ready(Some(Err(Status::resource_exhausted(why))));
                    }
                    c.bytes.fetch_add(data.len(), Ordering::AcqRel);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps its call counted and charged until it is done.
struct Guarded {
    inner: Body,
    _hold: (CallGuard, Arc<Charge>),
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The settings of the admission layer.
struct Settings {
    inflight: Arc<Inflight>,
    call_timeout: Duration,
    envelope_limit: usize,
}

/// The tower layer every call of the router passes through.
#[derive(Clone)]
pub struct AdmissionLayer {
    settings: Arc<Settings>,
}

impl AdmissionLayer {
    pub fn new(limits: &Limits, inflight: Arc<Inflight>) -> Self {
        AdmissionLayer {
            settings: Arc::new(Settings {
                inflight,
                call_timeout: Duration::from_millis(limits.call_timeout_ms),
                envelope_limit: limits.max_envelope_bytes,
            }),
        }
    }
}

impl<S> tower::Layer<S> for AdmissionLayer {
    type Service = Admission<S>;
    fn layer(&self, inner: S) -> Admission<S> {
        Admission {
            inner,
            settings: self.settings.clone(),
        }
    }
}

/// See [`AdmissionLayer`].
#[derive(Clone)]
pub struct Admission<S> {
    inner: S,
    settings: Arc<Settings>,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S> tower::Service<http::Request<Body>> for Admission<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<http::Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        // The clone is ready only if polled; the polled one serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let settings = self.settings.clone();
        Box::pin(async move {
            let Some(peer) = req.extensions().get::<Peer>().cloned() else {
                // Not from an authenticated connection: the services refuse it.
                return inner.call(req).await;
            };
            let rpc = req.uri().path().to_owned();
            let guard = peer.conn.call_started();
            let charge = Arc::new(Charge {
                inflight: settings.inflight.clone(),
                team: peer.team.clone(),
                bytes: AtomicUsize::new(0),
                refused: AtomicBool::new(false),
            });
            let (parts, body) = req.into_parts();
            let body = Body::new(Counted {
                inner: body,
                charge: charge.clone(),
            });
            let req = http::Request::from_parts(parts, body);
            let resp = match tokio::time::timeout(settings.call_timeout, inner.call(req)).await {
                Ok(r) => r?,
                Err(_) => {
                    let status = Status::deadline_exceeded(format!(
                        "the call did not complete within the broker's {} ms \
                         (limits.call_timeout_ms), reading the request included; nothing was \
                         stored unless a receipt is returned for the same message on retry",
                        settings.call_timeout.as_millis()
                    ));
                    log(&peer.team, &rpc, &status, "call-deadline");
                    return Ok(status.into_http());
                }
            };
            let resp = refusal_statuses(resp, &settings, &peer.team, &rpc, &charge);
            let (parts, body) = resp.into_parts();
            Ok(http::Response::from_parts(
                parts,
                Body::new(Guarded {
                    inner: body,
                    _hold: (guard, charge),
                }),
            ))
        })
    }
}

fn log(team: &str, rpc: &str, status: &Status, rule: &str) {
    tracing::info!(team, rpc, code = ?status.code(), rule, field = "-", "call refused");
}

/// SPEC §4 statuses for requests tonic refuses before a service sees them.
/// A request message over its service's decode limit comes back from tonic
/// as `OUT_OF_RANGE`, refused on its length prefix before being buffered: it
/// becomes `RESOURCE_EXHAUSTED` naming the limit. A request that is not a
/// valid protobuf message of its type (truncated, wrong wire types) comes
/// back as `INTERNAL`: it becomes `INVALID_ARGUMENT`, since the fault is the
/// caller's. A call refused by its in-flight budget is only logged.
fn refusal_statuses(
    resp: http::Response<Body>,
    settings: &Settings,
    team: &str,
    rpc: &str,
    charge: &Charge,
) -> http::Response<Body> {
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok());
    // grpc-message is percent-encoded on the wire. The texts are tonic's
    // own; the broker's internal errors never carry them (they reach clients
    // as a generic message), and the decode failure must open the message.
    let message = header("grpc-message")
        .unwrap_or_default()
        .replace("%20", " ");
    let status = match header("grpc-status") {
        Some("11") if message.contains("decoded message length too large") => {
            let limit = message
                .rsplit("limit is: ")
                .next()
                .and_then(|s| s.split_whitespace().next())
                .unwrap_or("?")
                .to_owned();
            let hint = if rpc.ends_with("/Publish") {
                format!(
                    "; an envelope may be at most the broker's limit of {} bytes",
                    settings.envelope_limit
                )
            } else {
                String::new()
            };
            Status::resource_exhausted(format!(
                "the request message is over this call's limit of {limit} bytes and was not \
                 read{hint}"
            ))
        }
        Some("13") if message.starts_with("failed to decode Protobuf message") => {
            Status::invalid_argument(
                "the request is not a valid protobuf message of its type (truncated or malformed); \
                 nothing was stored",
            )
        }
        Some("8") if charge.refused.load(Ordering::Acquire) => {
            log(team, rpc, &Status::resource_exhausted(""), "inflight-bytes");
            return resp;
        }
        _ => return resp,
    };
    log(team, rpc, &status, "request-decode");
    status.into_http()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflight_budgets_per_team_and_in_all() {
        let f = Inflight::new(100, 150);
        assert!(f.charge("A", 60).is_ok());
        assert!(f.charge("A", 41).unwrap_err().contains("per team"));
        assert!(f.charge("B", 80).is_ok());
        // 140 in all: B may not take 20 more (160 > 150) though under its own 100.
        assert!(
            f.charge("B", 20)
                .unwrap_err()
                .contains("max_inflight_bytes")
        );
        f.release("A", 60);
        assert_eq!(f.of("A"), 0);
        assert!(f.charge("B", 20).is_ok());
        assert_eq!(f.of("B"), 100);
    }
}
