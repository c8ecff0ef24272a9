//! Every call passes here before its service (SPEC §15): a connection over a
//! limit is refused for every service; the call is counted open on its
//! connection (an idle connection is closed); its request bytes — and, once
//! the service has it, its answer's — are charged to its team's and the
//! broker's in-flight budgets until the answer is sent (the call that would
//! pass a budget is refused `RESOURCE_EXHAUSTED`, so a team that does not
//! read its answers only stops itself); a unary call (reading its request
//! included) has a deadline; and statuses tonic produces before a service
//! sees the request are given their SPEC §4 codes. Refusals go to the
//! [`RefusalLog`]: one INFO line per kind of refusal per team and interval,
//! then a count.

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

    /// Charges `n` bytes whatever the limits.
    fn force(&self, team: &str, n: usize) {
        let mut teams = self.teams.lock().unwrap_or_else(|p| p.into_inner());
        self.total.fetch_add(n, Ordering::AcqRel);
        *teams.entry(team.to_owned()).or_insert(0) += n;
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
    #[cfg(test)]
    fn of(&self, team: &str) -> usize {
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

impl Charge {
    fn add(&self, n: usize) -> Result<(), String> {
        self.inflight.charge(&self.team, n)?;
        self.bytes.fetch_add(n, Ordering::AcqRel);
        Ok(())
    }
}

/// A call's hold on its team's in-flight budget, in the request's
/// extensions for the services: the answer's bytes are charged to it, and
/// a streaming call gives back its request's bytes once it has started.
#[derive(Clone)]
pub struct CallBudget(Arc<Charge>);

impl CallBudget {
    /// Charges an answer of `n` bytes, or says which budget it would pass.
    pub fn charge_answer(&self, n: usize) -> Result<(), String> {
        self.0.add(n)
    }

    /// Charges an answer of `n` bytes whatever the budget (the answer of a
    /// call whose effect already happened, e.g. a receipt).
    pub fn charge_answer_anyway(&self, n: usize) {
        let c = &self.0;
        c.inflight.force(&c.team, n);
        c.bytes.fetch_add(n, Ordering::AcqRel);
    }

    /// Gives back what was charged so far (a stream that has started no
    /// longer holds its request).
    pub fn release(&self) {
        let c = &self.0;
        let n = c.bytes.swap(0, Ordering::AcqRel);
        c.inflight.release(&c.team, n);
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
                    if let Err(why) = c.add(data.len()) {
                        c.refused.store(true, Ordering::Release);
                        return Poll::Ready(Some(Err(Status::resource_exhausted(why))));
                    }
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
    refusals: Arc<RefusalLog>,
    call_timeout: Duration,
    envelope_limit: usize,
}

/// The tower layer every call of the router passes through.
#[derive(Clone)]
pub struct AdmissionLayer {
    settings: Arc<Settings>,
}

impl AdmissionLayer {
    pub fn new(limits: &Limits, inflight: Arc<Inflight>, refusals: Arc<RefusalLog>) -> Self {
        AdmissionLayer {
            settings: Arc::new(Settings {
                inflight,
                refusals,
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
            // A connection over a limit is refused for every service
            // (health and reflection included) until it closes.
            if let Some(why) = peer.conn.refusal() {
                let status = Status::resource_exhausted(why.to_owned());
                settings
                    .refusals
                    .record(&peer.team, &rpc, status.code(), "connection-limit", "-");
                return Ok(status.into_http());
            }
            let guard = peer.conn.call_started();
            let charge = Arc::new(Charge {
                inflight: settings.inflight.clone(),
                team: peer.team.clone(),
                bytes: AtomicUsize::new(0),
                refused: AtomicBool::new(false),
            });
            let (mut parts, body) = req.into_parts();
            parts.extensions.insert(CallBudget(charge.clone()));
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
                    settings
                        .refusals
                        .record(&peer.team, &rpc, status.code(), "call-deadline", "-");
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

/// How often repeated refusals are summed up.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Kinds of refusal tracked one by one per interval; more are counted
/// together.
const REFUSAL_LOG_KINDS: usize = 4096;

/// Refused calls, logged at INFO with team, call, status code, rule and
/// field name — never a value. The first refusal of a kind (team, call,
/// code, rule, field) in an interval is logged at once; the others of that
/// interval are summed up in one line when it ends, so a flood of refused
/// calls costs a line per kind, not one per call.
/// A kind of refusal: team, call, status code, rule, field name.
type RefusalKind = (String, String, tonic::Code, &'static str, String);

#[derive(Default)]
pub struct RefusalLog {
    counts: Mutex<HashMap<RefusalKind, u64>>,
    others: AtomicUsize,
}

impl RefusalLog {
    pub fn record(
        &self,
        team: &str,
        rpc: &str,
        code: tonic::Code,
        rule: &'static str,
        field: &str,
    ) {
        crate::broker::metrics::refusal(team, rpc, code, rule);
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let key = (
            team.to_owned(),
            rpc.to_owned(),
            code,
            rule,
            field.to_owned(),
        );
        if let Some(n) = counts.get_mut(&key) {
            *n += 1;
            return;
        }
        if counts.len() >= REFUSAL_LOG_KINDS {
            self.others.fetch_add(1, Ordering::Relaxed);
            return;
        }
        counts.insert(key, 0);
        drop(counts);
        tracing::info!(team, rpc, code = ?code, rule, field, "call refused");
    }

    /// Logs the counts of the interval that ends and starts a new one.
    pub fn flush(&self) {
        let counts = std::mem::take(&mut *self.counts.lock().unwrap_or_else(|p| p.into_inner()));
        for ((team, rpc, code, rule, field), n) in counts {
            if n > 0 {
                tracing::info!(
                    team,
                    rpc,
                    code = ?code,
                    rule,
                    field,
                    count = n,
                    "further calls refused alike in the last {} s",
                    REFUSAL_LOG_INTERVAL.as_secs()
                );
            }
        }
        let others = self.others.swap(0, Ordering::Relaxed);
        if others > 0 {
            tracing::info!(
                count = others,
                "further calls refused (of other kinds) in the last {} s",
                REFUSAL_LOG_INTERVAL.as_secs()
            );
        }
    }

    /// Flushes every interval while `log` lives.
    pub fn spawn_flusher(log: &Arc<Self>) {
        let weak = Arc::downgrade(log);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFUSAL_LOG_INTERVAL);
            tick.tick().await;
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(l) => l.flush(),
                    None => return,
                }
            }
        });
    }
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
            settings.refusals.record(
                team,
                rpc,
                tonic::Code::ResourceExhausted,
                "inflight-bytes",
                "-",
            );
            return resp;
        }
        _ => return resp,
    };
    settings
        .refusals
        .record(team, rpc, status.code(), "request-decode", "-");
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
