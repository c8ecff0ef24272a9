//! The hostile-member suite (issue 11, SPEC §15): every attack a member with
//! a valid certificate (or anyone, before authentication) could mount to
//! deny service to the other teams, scripted against a real broker over real
//! mTLS and real gRPC: hand-made HTTP/2 streams on tonic's `Channel` where a
//! well-behaved client would never go, plain TCP where no certificate is
//! shown. Each attack sets itself up, keeps running in background tasks
//! until it is stopped or dropped, and reports what the attacker saw: a
//! count per gRPC status and per connection outcome. The victim side is
//! here too: a second team's calls under a liveness deadline, its latency,
//! and the broker's peak RSS. `certex bench abuse` runs the attacks at full
//! scale against the default limits; `tests/hostile.rs` at small scale
//! against tight ones.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use hyper_util::rt::TokioIo;
use prost::Message;
use serde::Serialize;
use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tower::{Service, ServiceExt};

use crate::broker::config::Limits;
use crate::cli::pki::SAMPLE_TEAMS;
use crate::client::connection::{Client, ClientError, ClientFiles, tls_endpoint};
use crate::proto::directory_client::DirectoryClient;
use crate::proto::{self as pb, body::Content, subscribe_request::Start};
use crate::rules::time::to_timestamp;

/// The deadline of every single step, the attacker's and the victim's: a
/// liveness bound ("answered at all"), never a performance threshold.
pub const LIVENESS: Duration = Duration::from_secs(10);

/// Bytes an envelope adds to its body (signature, key id, field framing),
/// rounded up: a body this much under the limit seals under it.
const ENVELOPE_OVERHEAD: usize = 128;

/// The gRPC path of `Exchange/Publish`, for hand-made streams.
const PUBLISH_PATH: &str = "/certex.v1.Exchange/Publish";

/// The first bytes of a TLS ClientHello record that promises 512 bytes and
/// never sends the rest: the record header, the handshake header, the
/// legacy version and part of the random.
const PARTIAL_CLIENT_HELLO: &[u8] = &[
    0x16, 0x03, 0x01, 0x02, 0x00, // handshake record, 512 bytes
    0x01, 0x00, 0x01, 0xfc, // ClientHello, 508 bytes
    0x03, 0x03, // legacy_version TLS 1.2
    0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, // random…
];

// === Target ===

/// A broker under attack: its URL, the socket address behind it (for raw
/// TCP) and the development PKI holding every team's files.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub addr: SocketAddr,
    pub pki: PathBuf,
}

impl Target {
    /// `url` is `https://host:port`; the address is its first IPv4 address
    /// (the brokers of the bench and the tests listen on 127.0.0.1).
    pub async fn new(url: &str, pki: &Path) -> Result<Self, String> {
        let authority = url
            .split("://")
            .nth(1)
            .unwrap_or(url)
            .trim_end_matches('/')
            .to_owned();
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(authority.as_str())
            .await
            .map_err(|e| format!("cannot resolve {authority}: {e}"))?
            .collect();
        let addr = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .copied()
            .ok_or_else(|| format!("{authority} resolves to no address"))?;
        Ok(Target {
            url: url.to_owned(),
            addr,
            pki: pki.to_owned(),
        })
    }

    pub fn files(&self, team: &str) -> ClientFiles {
        ClientFiles::from_pki(&self.pki, team)
    }

    /// A client of `team`, connected within [`LIVENESS`]. A connection the
    /// broker turns away at once (its handshake pool for this source is
    /// full, say while other attacks connect from the same address) is
    /// tried again, as any client would.
    pub async fn client(&self, team: &str) -> Result<Client, String> {
        let connect = async {
            loop {
                match Client::connect(&self.url, &self.files(team), team).await {
                    Ok(c) => return Ok(c),
                    Err(crate::client::connection::ClientError::Connect { .. }) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        match tokio::time::timeout(LIVENESS, connect).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!(
                "{team} could not connect within {} s",
                LIVENESS.as_secs()
            )),
        }
    }
}

// === Report ===

/// What an attacker saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Outcome → count. gRPC statuses by their canonical names (`OK`,
    /// `RESOURCE_EXHAUSTED`, …); connection outcomes in lower case:
    /// `timeout` (no answer within [`LIVENESS`]), `connect_failed`,
    /// `closed_at_once`, `closed_later`, `held` (still open when stopped).
    pub counts: BTreeMap<String, u64>,
    /// The first message seen for each outcome.
    pub messages: BTreeMap<String, String>,
    /// Measurements of the attack itself, named by each attack's docs.
    pub gauges: BTreeMap<String, u64>,
    /// Seconds since the attack started.
    pub seconds: f64,
}

impl Report {
    pub fn count(&self, outcome: &str) -> u64 {
        self.counts.get(outcome).copied().unwrap_or(0)
    }

    pub fn gauge(&self, name: &str) -> u64 {
        self.gauges.get(name).copied().unwrap_or(0)
    }

    /// The first message seen for `outcome` ("" if none).
    pub fn message(&self, outcome: &str) -> &str {
        self.messages.get(outcome).map_or("", String::as_str)
    }

    /// Every outcome counted.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }
}

/// The canonical name of a gRPC status code.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The shared, growing report of one attack.
#[derive(Clone, Default)]
struct Tally(Arc<Mutex<Report>>);

impl Tally {
    fn with<R>(&self, f: impl FnOnce(&mut Report) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn add(&self, outcome: &str, message: &str) {
        self.with(|r| {
            *r.counts.entry(outcome.to_owned()).or_default() += 1;
            if !message.is_empty() {
                r.messages
                    .entry(outcome.to_owned())
                    .or_insert_with(|| message.to_owned());
            }
        });
    }

    fn status(&self, s: &Status) {
        self.add(code_name(s.code()), s.message());
    }

    /// Counts a call's outcome; true when it failed below gRPC (no answer,
    /// or the transport's UNAVAILABLE, UNKNOWN or CANCELLED): the caller
    /// backs off instead of spinning on a dead connection.
    fn call<T>(&self, r: &Result<Result<T, Status>, tokio::time::error::Elapsed>) -> bool {
        match r {
            Ok(Ok(_)) => {
                self.add("OK", "");
                false
            }
            Ok(Err(s)) => {
                self.status(s);
                below_grpc(s.code())
            }
            Err(_) => {
                self.add("timeout", "");
                true
            }
        }
    }

    /// [`Tally::call`] for the client library's results.
    fn client<T>(&self, r: Result<Result<T, ClientError>, tokio::time::error::Elapsed>) -> bool {
        let r = r.map(|r| {
            r.map_err(|e| match e {
                ClientError::Status(s) => s,
                other => Status::unavailable(other.to_string()),
            })
        });
        self.call(&r)
    }

    fn gauge(&self, name: &str, f: impl FnOnce(&mut u64)) {
        self.with(|r| f(r.gauges.entry(name.to_owned()).or_default()));
    }

    fn snapshot(&self) -> Report {
        self.with(|r| r.clone())
    }
}

/// Codes a call gets when its connection failed rather than the broker
/// answering.
fn below_grpc(code: Code) -> bool {
    matches!(code, Code::Unavailable | Code::Unknown | Code::Cancelled)
}

/// Waits a little after a failure below gRPC, so a flood on a dead
/// connection does not spin.
async fn back_off(failed_below_grpc: bool) {
    if failed_below_grpc {
        tokio::time::sleep(Duration::from_millis(50)).await;
    } else {
        tokio::task::yield_now().await;
    }
}

// === Attack ===

/// A running attack. Dropping it aborts its tasks (and so closes its
/// connections and streams); [`Attack::stop`] ends it and returns the
/// final report.
pub struct Attack {
    name: &'static str,
    tally: Tally,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    started: Instant,
}

impl Attack {
    fn new(name: &'static str) -> Self {
        Attack {
            name,
            tally: Tally::default(),
            stop: watch::channel(false).0,
            tasks: JoinSet::new(),
            started: Instant::now(),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// What the attacker has seen so far.
    pub fn report(&self) -> Report {
        let mut r = self.tally.snapshot();
        r.seconds = self.started.elapsed().as_secs_f64();
        r
    }

    /// Waits until `done` holds for the report, or `within` has passed;
    /// returns the last report either way.
    pub async fn until(&self, within: Duration, done: impl Fn(&Report) -> bool) -> Report {
        let deadline = Instant::now() + within;
        loop {
            let r = self.report();
            if done(&r) || Instant::now() >= deadline {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Ends the attack: its loops stop, its connections close. Tasks that
    /// do not end within 5 s are aborted.
    pub async fn stop(mut self) -> Report {
        self.stop.send_replace(true);
        let drained = tokio::time::timeout(Duration::from_secs(5), async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
        }
        self.report()
    }

    fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(task);
    }

    fn stopping(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Keeps `tasks` copies of `step` running back to back until stopped;
    /// `step` gets a running number.
    fn flood<F, Fut>(&mut self, tasks: usize, step: F)
    where
        F: Fn(u64) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let step = Arc::new(step);
        let counter = Arc::new(AtomicU64::new(0));
        for _ in 0..tasks.max(1) {
            let (step, counter, mut stop) = (step.clone(), counter.clone(), self.stopping());
            self.spawn(async move {
                while !*stop.borrow() {
                    let i = counter.fetch_add(1, Ordering::Relaxed);
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => break,
                        _ = step(i) => {}
                    }
                }
            });
        }
    }
}

/// Completes once the attack is told to stop (or is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

// === Bodies ===

fn now() -> Option<prost_types::Timestamp> {
    Some(to_timestamp(OffsetDateTime::now_utc()))
}

/// A small community incident by `team`.
pub fn small_incident(team: &str, tag: &str) -> pb::Body {
    pb::Body {
        id: uuid::Uuid::new_v4().to_string(),
        sender: team.to_owned(),
        created_at: now(),
        tlp: pb::Tlp::Clear as i32,
        audience: Some(pb::Audience {
            kind: Some(pb::audience::Kind::Community(true)),
        }),
        exercise: String::new(),
        references: vec![],
        content: Some(Content::Incident(pb::IncidentReport {
            title: tag.to_owned(),
            description: "hostile-member suite".into(),
            category: pb::Category::Test as i32,
            severity: pb::Severity::Low as i32,
            sectors: vec![],
            detected_at: None,
            observables: vec![pb::Observable {
                r#type: pb::ObservableType::Ipv4 as i32,
                value: "192.0.2.1".into(),
            }],
        })),
    }
}

/// A community incident by `team` whose sealed envelope is just under
/// `envelope_bytes`: padded with URL observables (at most 1,000 of 2,000
/// characters, the largest a valid body carries, so at most about 2 MB).
pub fn sized_incident(team: &str, envelope_bytes: usize, tag: &str) -> pb::Body {
    let mut body = small_incident(team, tag);
    let target = envelope_bytes.saturating_sub(ENVELOPE_OVERHEAD);
    const PREFIX: &str = "https://pad.example/";
    loop {
        let len = body.encoded_len();
        let Some(Content::Incident(inc)) = body.content.as_mut() else {
            break;
        };
        // An observable costs its value plus at most 12 bytes of framing,
        // and may lengthen the incident's own length prefix by one.
        let value_len = target.saturating_sub(len + 13).min(2000);
        if value_len < PREFIX.len() + 8
            || inc.observables.len() >= crate::rules::validate::limits::LIST
        {
            break;
        }
        inc.observables.push(pb::Observable {
            r#type: pb::ObservableType::Url as i32,
            value: format!("{PREFIX}{}", "a".repeat(value_len - PREFIX.len())),
        });
    }
    body
}

/// The same body under a new id, created now.
fn renewed(template: &pb::Body) -> pb::Body {
    let mut b = template.clone();
    b.id = uuid::Uuid::new_v4().to_string();
    b.created_at = now();
    b
}

/// An assistance request from `team` to `to`, cc'ing `cc`.
fn assistance_request(team: &str, to: &str, cc: &[&str]) -> pb::Body {
    let mut audience = vec![to.to_owned()];
    audience.extend(cc.iter().map(|t| t.to_string()));
    let respond_by = OffsetDateTime::now_utc() + time::Duration::days(1);
    pb::Body {
        tlp: pb::Tlp::Amber as i32,
        audience: Some(pb::Audience {
            kind: Some(pb::audience::Kind::Teams(pb::TeamList { teams: audience })),
        }),
        content: Some(Content::Request(pb::AssistanceRequest {
            to: to.to_owned(),
            action: pb::Action::PreserveEvidence as i32,
            legal_basis: "MLAT art. 18".into(),
            description: "Preserve all logs for 192.0.2.1".into(),
            respond_by: Some(to_timestamp(respond_by)),
            priority: pb::Severity::High as i32,
        })),
        ..small_incident(team, "")
    }
}

// === Watched connections ===

/// A TCP stream that says when the broker closed it.
struct WatchedStream {
    inner: TcpStream,
    closed: Arc<watch::Sender<bool>>,
}

impl AsyncRead for WatchedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let (before, room) = (buf.filled().len(), buf.remaining());
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        let eof = matches!(r, Poll::Ready(Ok(()))) && room > 0 && buf.filled().len() == before;
        if eof || matches!(r, Poll::Ready(Err(_))) {
            this.closed.send_replace(true);
        }
        r
    }
}

impl AsyncWrite for WatchedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Err(_))) {
            this.closed.send_replace(true);
        }
        r
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A TCP connection to `addr`, from `source` when given (any loopback
/// address on Linux: each is a distinct source to the broker).
async fn tcp_connect(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// One team's mTLS endpoint, built once and cloned for every connection.
#[derive(Clone)]
struct Identity {
    endpoint: Endpoint,
    addr: SocketAddr,
}

impl Identity {
    fn load(target: &Target, team: &str) -> Result<Self, String> {
        let f = target.files(team);
        let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        let endpoint = tls_endpoint(&target.url, &read(&f.ca)?, &read(&f.cert)?, &read(&f.key)?)
            .map_err(|e| e.to_string())?;
        Ok(Identity {
            endpoint,
            addr: target.addr,
        })
    }

    /// One authenticated connection whose closing by the broker is
    /// watched. tonic reconnects a closed channel on its next call; the
    /// attacks that watch closing make no call after it.
    async fn connect(&self) -> Result<(Channel, watch::Receiver<bool>), String> {
        let (closed, watching) = watch::channel(false);
        let closed = Arc::new(closed);
        let addr = self.addr;
        let connector = tower::service_fn(move |_: http::Uri| {
            let closed = closed.clone();
            async move {
                let inner = tcp_connect(addr, None).await?;
                closed.send_replace(false);
                Ok::<_, io::Error>(TokioIo::new(WatchedStream { inner, closed }))
            }
        });
        match tokio::time::timeout(LIVENESS, self.endpoint.connect_with_connector(connector)).await
        {
            Ok(Ok(channel)) => Ok((channel, watching)),
            Ok(Err(e)) => Err(format!(
                "{e} ({})",
                std::error::Error::source(&e)
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            )),
            Err(_) => Err(format!("no connection within {} s", LIVENESS.as_secs())),
        }
    }
}

async fn who_am_i(
    channel: Channel,
) -> Result<Result<pb::Team, Status>, tokio::time::error::Elapsed> {
    tokio::time::timeout(
        LIVENESS,
        DirectoryClient::new(channel).who_am_i(pb::WhoAmIRequest {}),
    )
    .await
    .map(|r| r.map(tonic::Response::into_inner))
}

// === Hand-made streams ===

/// A request body that sends one chunk and then never ends. It counts, in
/// the tally, the bodies hyper is sending now (`sending`) and the most at
/// once (`peak_sending`). This is not the broker's stream count: HTTP/2
/// lets a client queue a few streams past the peer's cap and hyper starts
/// their bodies; what the broker allowed shows in when streams end.
struct StalledBody {
    chunk: Option<Bytes>,
    tally: Tally,
    started: bool,
}

impl http_body::Body for StalledBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if !this.started {
            this.started = true;
            this.tally.with(|r| {
                let sending = r.gauges.entry("sending".into()).or_default();
                *sending += 1;
                let sending = *sending;
                let peak = r.gauges.entry("peak_sending".into()).or_default();
                *peak = (*peak).max(sending);
            });
        }
        match this.chunk.take() {
            Some(b) => Poll::Ready(Some(Ok(http_body::Frame::data(b)))),
            // Never woken: the stream stays open until the broker ends it.
            None => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        false
    }
}

impl Drop for StalledBody {
    fn drop(&mut self) {
        if self.started {
            self.tally.gauge("sending", |n| *n = n.saturating_sub(1));
        }
    }
}

/// A gRPC message prefix declaring `declared` bytes, followed by all of
/// them but the last.
fn truncated_frame(declared: u32) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + declared as usize);
    b.put_u8(0);
    b.put_u32(declared);
    b.resize(5 + declared.saturating_sub(1) as usize, 0);
    b.freeze()
}

/// The status of a hand-made call: from the headers of a trailers-only
/// answer, or from the trailers.
async fn status_of(resp: http::Response<tonic::body::Body>) -> Status {
    if let Some(s) = Status::from_header_map(resp.headers()) {
        return s;
    }
    let mut body = resp.into_body();
    loop {
        let frame =
            std::future::poll_fn(|cx| http_body::Body::poll_frame(Pin::new(&mut body), cx)).await;
        match frame {
            None => return Status::unknown("the answer ended without a grpc-status"),
            Some(Err(s)) => return s,
            Some(Ok(f)) => {
                if let Ok(trailers) = f.into_trailers() {
                    return Status::from_header_map(&trailers)
                        .unwrap_or_else(|| Status::unknown("trailers without a grpc-status"));
                }
            }
        }
    }
}

/// Sends `body` as a call to `path` and returns the broker's status.
async fn raw_call(mut channel: Channel, path: &'static str, body: StalledBody) -> Status {
    let req = http::Request::builder()
        .method(http::Method::POST)
        .uri(path)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(body));
    let req = match req {
        Ok(r) => r,
        Err(e) => return Status::internal(e.to_string()),
    };
    let resp = match channel.ready().await {
        Ok(ch) => ch.call(req).await,
        Err(e) => Err(e),
    };
    match resp {
        Ok(resp) => status_of(resp).await,
        Err(e) => Status::from_error(Box::new(e)),
    }
}

// === The attacks ===

/// Attack 1. One connection, `streams` HTTP/2 streams to `Exchange/Publish`,
/// each sending a message prefix that declares `declared` bytes and then
/// all of them but the last, never finishing. With `reopen`, each stream
/// the broker ends is opened again (10 ms later). Counts: the status of each stream.
/// Gauges: `sending`, `peak_sending` (see [`StalledBody`]).
pub async fn slow_streams(
    target: &Target,
    team: &str,
    streams: usize,
    declared: u32,
    reopen: bool,
) -> Result<Attack, String> {
    let (channel, _closed) = Identity::load(target, team)?.connect().await?;
    let mut attack = Attack::new("slow_streams");
    // One cheap call first: the broker's HTTP/2 SETTINGS (its stream cap)
    // arrive before its answer, so every stream below respects them.
    match who_am_i(channel.clone()).await {
        Ok(Ok(_)) => {}
        Ok(Err(s)) => return Err(format!("{team}: WhoAmI refused: {s:?}")),
        Err(_) => return Err(format!("{team}: WhoAmI unanswered")),
    }
    let chunk = truncated_frame(declared);
    for _ in 0..streams {
        let (channel, chunk, tally, stop) = (
            channel.clone(),
            chunk.clone(),
            attack.tally.clone(),
            attack.stopping(),
        );
        attack.spawn(async move {
            loop {
                let body = StalledBody {
                    chunk: Some(chunk.clone()),
                    tally: tally.clone(),
                    started: false,
                };
                let status = tokio::select! {
                    s = raw_call(channel.clone(), PUBLISH_PATH, body) => s,
                    _ = stopped(stop.clone()) => return,
                };
                tally.status(&status);
                if !reopen || *stop.borrow() {
                    return;
                }
                // Refused at once, a stream would be reopened thousands of
                // times a second: the attacker's own CPU, not the broker's
                // answer, would then set the pace on a small machine.
                back_off(below_grpc(status.code())).await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
    }
    Ok(attack)
}

/// Attack 2. `connections` authenticated connections of `team`, opened at
/// most 64 at a time; each makes one `Directory/WhoAmI` and then idles.
/// With `reopen`, a connection that fails or is closed is opened again
/// (after 100 ms), so the pressure lasts. Counts: the WhoAmI statuses,
/// `connect_failed`, `timeout`, `held` (open when stopped). Gauges: `done`
/// (attempts that got an answer or failed), `closed_after_ok`,
/// `closed_after_refusal` (closed by the broker after WhoAmI succeeded /
/// was refused).
pub async fn idle_connections(
    target: &Target,
    team: &str,
    connections: usize,
    reopen: bool,
) -> Result<Attack, String> {
    let identity = Identity::load(target, team)?;
    let mut attack = Attack::new("idle_connections");
    let gate = Arc::new(Semaphore::new(64));
    for _ in 0..connections {
        let (identity, gate, tally, stop) = (
            identity.clone(),
            gate.clone(),
            attack.tally.clone(),
            attack.stopping(),
        );
        attack.spawn(async move {
            loop {
                if !idle_connection(&identity, &gate, &tally, stop.clone()).await
                    || !reopen
                    || *stop.borrow()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    Ok(attack)
}

/// One connection of [`idle_connections`], held until the broker closes it
/// or the attack stops; false once stopped.
async fn idle_connection(
    identity: &Identity,
    gate: &Arc<Semaphore>,
    tally: &Tally,
    stop: watch::Receiver<bool>,
) -> bool {
    let permit = tokio::select! {
        p = gate.clone().acquire_owned() => p,
        _ = stopped(stop.clone()) => return false,
    };
    let connected = tokio::select! {
        c = identity.connect() => c,
        _ = stopped(stop.clone()) => return false,
    };
    let (channel, mut closed) = match connected {
        Ok(c) => c,
        Err(e) => {
            tally.add("connect_failed", &e);
            tally.gauge("done", |n| *n += 1);
            return true;
        }
    };
    let answer = tokio::select! {
        a = who_am_i(channel.clone()) => a,
        _ = stopped(stop.clone()) => return false,
    };
    tally.call(&answer);
    tally.gauge("done", |n| *n += 1);
    drop(permit);
    let refused = !matches!(answer, Ok(Ok(_)));
    tokio::select! {
        _ = closed.wait_for(|c| *c) => {
            let gauge = if refused { "closed_after_refusal" } else { "closed_after_ok" };
            tally.gauge(gauge, |n| *n += 1);
            true
        }
        _ = stopped(stop) => {
            tally.add("held", "");
            false
        }
    }
}

/// What [`stalled_subscriptions`] publishes and opens.
#[derive(Debug, Clone, Copy)]
pub struct Stalled {
    /// Large records, published first.
    pub large: usize,
    /// The size of each large record's envelope (just under it).
    pub record_bytes: usize,
    /// Small records after them: far behind the tail, a subscriber reads
    /// the log in batches, and enough small records after the large ones
    /// put a fresh subscriber far behind while its first batch is the large
    /// ones.
    pub small: usize,
    /// Publishes in flight at once (the team's in-flight byte budget bounds
    /// how many large ones may be).
    pub in_flight: usize,
    /// Subscriptions attempted.
    pub subscriptions: usize,
    /// Subscriptions per connection (the broker's stream cap bounds it).
    pub per_connection: usize,
}

/// Attack 3. Publishes the records of `plan` (a refusal for the team's
/// byte or message rate is retried until accepted, within [`LIVENESS`] per
/// record), then opens its subscriptions from seq 0 (following,
/// unfiltered) and never reads them. Counts: the subscribe statuses.
/// Gauges: `published` (large records accepted), `seeded` (small ones),
/// `subscriptions_open`.
pub async fn stalled_subscriptions(
    target: &Target,
    team: &str,
    plan: Stalled,
) -> Result<Attack, String> {
    let mut attack = Attack::new("stalled_subscriptions");
    let publisher = target.client(team).await?;
    let big = sized_incident(team, plan.record_bytes, "stalled subscriptions");
    let tally = &attack.tally;
    publish_copies(
        &publisher,
        &big,
        plan.large,
        plan.in_flight,
        tally,
        "published",
    )
    .await;
    let filler = small_incident(team, "filler");
    publish_copies(&publisher, &filler, plan.small, 16, tally, "seeded").await;
    let (subscriptions, per_connection) = (plan.subscriptions, plan.per_connection);
    let mut held = Vec::new();
    let mut connections: Vec<Client> = Vec::new();
    for i in 0..subscriptions {
        if i % per_connection.max(1) == 0 {
            connections.push(target.client(team).await?);
        }
        let Some(client) = connections.last() else {
            continue;
        };
        let r = tokio::time::timeout(
            LIVENESS,
            client.exchange().subscribe(pb::SubscribeRequest {
                start: Some(Start::AfterSeq(0)),
                filter: None,
                follow: true,
            }),
        )
        .await;
        match r {
            Ok(Ok(stream)) => {
                attack.tally.add("OK", "");
                attack.tally.gauge("subscriptions_open", |n| *n += 1);
                held.push(stream.into_inner());
            }
            Ok(Err(s)) => attack.tally.status(&s),
            Err(_) => attack.tally.add("timeout", ""),
        }
    }
    let stop = attack.stopping();
    attack.spawn(async move {
        stopped(stop).await;
        drop(held);
        drop(connections);
    });
    Ok(attack)
}

/// Attack 4. After publishing `seed_records` small records (so catch-up
/// has a log to scan), opens one following subscription from seq 0 whose
/// filter lists `entries + 1` senders (over a cap of `entries`), then
/// `subscriptions` whose filters list `entries` senders, none of them a
/// team. Counts: the subscribe statuses. Gauges: `seeded`,
/// `records_received` (should stay 0), `streams_ended`.
pub async fn nothing_matches(
    target: &Target,
    team: &str,
    subscriptions: usize,
    entries: usize,
    seed_records: usize,
) -> Result<Attack, String> {
    let mut attack = Attack::new("nothing_matches");
    let client = target.client(team).await?;
    let filler = small_incident(team, "filler");
    publish_copies(&client, &filler, seed_records, 16, &attack.tally, "seeded").await;
    let filter = |n: usize| pb::Filter {
        senders: (0..n).map(|i| format!("ZZ-NOBODY-{i:06}")).collect(),
        ..Default::default()
    };
    for n in std::iter::once(entries + 1).chain(std::iter::repeat_n(entries, subscriptions)) {
        let r = tokio::time::timeout(
            LIVENESS,
            client.exchange().subscribe(pb::SubscribeRequest {
                start: Some(Start::AfterSeq(0)),
                filter: Some(filter(n)),
                follow: true,
            }),
        )
        .await;
        match r {
            Ok(Ok(stream)) => {
                attack.tally.add("OK", "");
                let (tally, stop) = (attack.tally.clone(), attack.stopping());
                let mut stream = stream.into_inner();
                attack.spawn(async move {
                    loop {
                        tokio::select! {
                            m = stream.message() => match m {
                                Ok(Some(_)) => tally.gauge("records_received", |n| *n += 1),
                                _ => {
                                    tally.gauge("streams_ended", |n| *n += 1);
                                    return;
                                }
                            },
                            _ = stopped(stop.clone()) => return,
                        }
                    }
                });
            }
            Ok(Err(s)) => attack.tally.status(&s),
            Err(_) => attack.tally.add("timeout", ""),
        }
    }
    let stop = attack.stopping();
    attack.spawn(async move {
        stopped(stop).await;
        drop(client);
    });
    Ok(attack)
}

/// Publishes `n` copies of `template` (each under a new id), `in_flight`
/// at a time; a copy refused RESOURCE_EXHAUSTED (a rate or budget) is
/// tried again 100 ms later, within [`LIVENESS`]. Counts the accepted ones
/// in the gauge `gauge`.
async fn publish_copies(
    client: &Client,
    template: &pb::Body,
    n: usize,
    in_flight: usize,
    tally: &Tally,
    gauge: &str,
) {
    use futures_util::StreamExt;
    futures_util::stream::iter(0..n)
        .for_each_concurrent(in_flight.max(1), |_| {
            let (client, tally) = (client.clone(), tally.clone());
            async move {
                let Ok(env) = client.seal(&renewed(template)) else {
                    return;
                };
                // Retries carry the same bytes, so one that races a commit
                // gets the original receipt: refusals for a budget and
                // deadlines under load are waited out, as a client would.
                let deadline = Instant::now() + 3 * LIVENESS;
                loop {
                    let transient =
                        match tokio::time::timeout(LIVENESS, client.publish(env.clone())).await {
                            Ok(Ok(_)) => return tally.gauge(gauge, |n| *n += 1),
                            Ok(Err(ClientError::Status(s))) => matches!(
                                s.code(),
                                Code::ResourceExhausted
                                    | Code::DeadlineExceeded
                                    | Code::Unavailable
                                    | Code::Cancelled
                            ),
                            Ok(Err(_)) | Err(_) => true,
                        };
                    if !transient || Instant::now() >= deadline {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        })
        .await;
}

/// Attack 5. From each address of `sources` (loopback aliases such as
/// 127.0.0.2 are distinct sources), `idle` TCP connections that never send
/// a byte and `partial` that send the start of a TLS ClientHello and no
/// more, 128 connecting at a time. With `reopen`, each connection the
/// broker closes is opened again after 100 ms. Each is counted when the
/// broker closes it: `closed_at_once` within `at_once` of connecting,
/// `closed_later` after; `held` if still open when stopped;
/// `connect_failed`. Gauge: `open` (connections open now).
pub async fn preauth_idle(
    target: &Target,
    sources: &[IpAddr],
    idle: usize,
    partial: usize,
    at_once: Duration,
    reopen: bool,
) -> Result<Attack, String> {
    let mut attack = Attack::new("preauth_idle");
    let gate = Arc::new(Semaphore::new(128));
    for source in sources {
        for i in 0..idle + partial {
            let (gate, tally, stop) = (gate.clone(), attack.tally.clone(), attack.stopping());
            let (addr, source, hello) = (target.addr, *source, i >= idle);
            attack.spawn(async move {
                loop {
                    let go_on =
                        unauthenticated(addr, source, hello, at_once, &gate, &tally, stop.clone())
                            .await;
                    if !go_on || !reopen || *stop.borrow() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
        }
    }
    Ok(attack)
}

/// One connection of [`preauth_idle`], held until the broker closes it or
/// the attack stops; false once stopped.
async fn unauthenticated(
    addr: SocketAddr,
    source: IpAddr,
    hello: bool,
    at_once: Duration,
    gate: &Semaphore,
    tally: &Tally,
    stop: watch::Receiver<bool>,
) -> bool {
    let connected = {
        let _permit = gate.acquire().await;
        tokio::select! {
            c = tokio::time::timeout(LIVENESS, tcp_connect(addr, Some(source))) => c,
            _ = stopped(stop.clone()) => return false,
        }
    };
    let mut tcp = match connected {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            tally.add("connect_failed", &e.to_string());
            return true;
        }
        Err(_) => {
            tally.add("connect_failed", "no connection within LIVENESS");
            return true;
        }
    };
    let since = Instant::now();
    tally.gauge("open", |n| *n += 1);
    if hello {
        let _ = tcp.write_all(PARTIAL_CLIENT_HELLO).await;
    }
    let closed = async {
        let mut buf = [0u8; 512];
        // An alert may come first; the end of the stream is what counts.
        while let Ok(n) = tcp.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    let go_on = tokio::select! {
        _ = closed => {
            let when = if since.elapsed() < at_once { "closed_at_once" } else { "closed_later" };
            tally.add(when, "");
            true
        }
        _ = stopped(stop) => {
            tally.add("held", "");
            false
        }
    };
    tally.gauge("open", |n| *n = n.saturating_sub(1));
    go_on
}

/// Attack 6. `tasks` loops publishing new community incidents whose
/// envelopes are just under `envelope_bytes`, as fast as answers come.
/// Counts: the publish statuses. Gauges: `envelope_bytes` (the size of
/// each sealed envelope), `accepted_bytes`.
pub async fn byte_flood(
    target: &Target,
    team: &str,
    envelope_bytes: usize,
    tasks: usize,
) -> Result<Attack, String> {
    let mut attack = Attack::new("byte_flood");
    let client = target.client(team).await?;
    let template = Arc::new(sized_incident(team, envelope_bytes, "byte flood"));
    let size = client
        .seal(&template)
        .map_err(|e| e.to_string())?
        .encoded_len() as u64;
    attack.tally.gauge("envelope_bytes", |n| *n = size);
    let tally = attack.tally.clone();
    attack.flood(tasks, move |_| {
        let (client, template, tally) = (client.clone(), template.clone(), tally.clone());
        async move {
            let Ok(env) = client.seal(&renewed(&template)) else {
                return;
            };
            let r = tokio::time::timeout(LIVENESS, client.publish(env)).await;
            if matches!(r, Ok(Ok(_))) {
                tally.gauge("accepted_bytes", |n| *n += size);
            }
            back_off(tally.client(r)).await;
        }
    });
    Ok(attack)
}

/// Attack 7. `tasks` loops publishing assistance requests addressed to
/// each of `addressees` in turn, cc'ing up to three of the others.
/// Counts: the publish statuses.
pub async fn case_flood(
    target: &Target,
    team: &str,
    addressees: &[String],
    tasks: usize,
) -> Result<Attack, String> {
    let mut attack = Attack::new("case_flood");
    let others: Arc<Vec<String>> = Arc::new(
        addressees
            .iter()
            .filter(|t| t.as_str() != team)
            .cloned()
            .collect(),
    );
    if others.is_empty() {
        return Err("case_flood needs another team to address".into());
    }
    let client = target.client(team).await?;
    let tally = attack.tally.clone();
    attack.flood(tasks, move |i| {
        let (client, others, tally) = (client.clone(), others.clone(), tally.clone());
        async move {
            let n = others.len();
            let to = &others[i as usize % n];
            let cc: Vec<&str> = (1..n.min(4))
                .map(|k| others[(i as usize + k) % n].as_str())
                .collect();
            let Ok(env) = client.seal(&assistance_request(client.team(), to, &cc)) else {
                return;
            };
            let r = tokio::time::timeout(LIVENESS, client.publish(env)).await;
            back_off(tally.client(r)).await;
        }
    });
    Ok(attack)
}

/// Attack 8. Publishes one record, then `tasks` loops re-publish it: in
/// turn the identical envelope (a retry, answered with the original
/// receipt) and an envelope with the same id and other bytes (answered
/// `ALREADY_EXISTS`). Counts: every publish status, the first included.
pub async fn retry_flood(target: &Target, team: &str, tasks: usize) -> Result<Attack, String> {
    let mut attack = Attack::new("retry_flood");
    let client = target.client(team).await?;
    let original = small_incident(team, "retry flood");
    let mut other = original.clone();
    if let Some(Content::Incident(i)) = other.content.as_mut() {
        i.title = "retry flood, other bytes".into();
    }
    let same = client.seal(&original).map_err(|e| e.to_string())?;
    let other = client.seal(&other).map_err(|e| e.to_string())?;
    let first = tokio::time::timeout(LIVENESS, client.publish(same.clone())).await;
    if !matches!(first, Ok(Ok(_))) {
        return Err(format!("retry_flood: the first publish failed: {first:?}"));
    }
    attack.tally.client(first);
    let tally = attack.tally.clone();
    attack.flood(tasks, move |i| {
        let env = if i % 2 == 0 {
            same.clone()
        } else {
            other.clone()
        };
        let (client, tally) = (client.clone(), tally.clone());
        async move {
            let r = tokio::time::timeout(LIVENESS, client.publish(env)).await;
            back_off(tally.client(r)).await;
        }
    });
    Ok(attack)
}

/// Attack 9. `CommitCursor` under `names` distinct durable names, one
/// after the other, then `tasks` loops committing the first name again
/// and again. Counts: every status. Gauges: `names_accepted`,
/// `names_refused` (the distinct-name phase alone).
pub async fn cursor_flood(
    target: &Target,
    team: &str,
    names: usize,
    tasks: usize,
) -> Result<Attack, String> {
    let mut attack = Attack::new("cursor_flood");
    let client = target.client(team).await?;
    let commit = |client: &Client, name: String| {
        let mut exchange = client.exchange();
        async move {
            tokio::time::timeout(
                LIVENESS,
                exchange.commit_cursor(pb::CommitCursorRequest {
                    durable: name,
                    seq: 0,
                }),
            )
            .await
            .map(|r| r.map(tonic::Response::into_inner))
        }
    };
    for i in 0..names {
        let r = commit(&client, format!("flood-{i}")).await;
        let gauge = if matches!(r, Ok(Ok(_))) {
            "names_accepted"
        } else {
            "names_refused"
        };
        attack.tally.gauge(gauge, |n| *n += 1);
        attack.tally.call(&r);
    }
    let tally = attack.tally.clone();
    attack.flood(tasks, move |_| {
        let (call, tally) = (commit(&client, "flood-0".into()), tally.clone());
        async move {
            let r = call.await;
            back_off(tally.call(&r)).await;
        }
    });
    Ok(attack)
}

/// Attack 10. Against a broker whose device is below its free-space
/// watermark: `tasks` loops publishing small records. Counts: the publish
/// statuses.
pub async fn disk(target: &Target, team: &str, tasks: usize) -> Result<Attack, String> {
    let mut attack = Attack::new("disk");
    let client = target.client(team).await?;
    let tally = attack.tally.clone();
    attack.flood(tasks, move |_| {
        let (client, tally) = (client.clone(), tally.clone());
        async move {
            let Ok(env) = client.seal(&small_incident(client.team(), "disk")) else {
                return;
            };
            let r = tokio::time::timeout(LIVENESS, client.publish(env)).await;
            back_off(tally.client(r)).await;
            // Refusals come at once; keep the log of refusals readable.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    Ok(attack)
}

// === Every attack, scaled from the limits ===

/// The attacks by name, for `certex bench abuse --attack NAME` and for
/// running them all at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum AttackKind {
    /// 64 streams declaring 4 × max_envelope_bytes, never finished.
    SlowStreamsOver,
    /// 64 streams declaring just under max_envelope_bytes, never finished.
    SlowStreamsUnder,
    /// max_connections authenticated connections of one team, idle.
    IdleConnections,
    /// 256 records of max_envelope_bytes and 2,100 small ones (at most the
    /// message burst), then more subscriptions from seq 0 than a team may
    /// hold, never read.
    StalledSubscriptions,
    /// A team's every subscription with a max_filter_entries filter that
    /// matches nothing, and one over the cap.
    NothingMatches,
    /// max_connections idle TCP connections and some partial ClientHellos
    /// from one source.
    PreauthIdle,
    /// Envelopes just under max_envelope_bytes, 4 in flight.
    ByteFlood,
    /// Assistance requests to and cc'ing every other team, 8 in flight.
    CaseFlood,
    /// Identical and same-id re-publishes, 8 in flight.
    RetryFlood,
    /// 2 × max_durable_names_per_team durable names, then one name in a loop.
    CursorFlood,
    /// Publishing to a broker below its free-disk watermark (a broker of
    /// its own).
    Disk,
}

impl AttackKind {
    pub const ALL: [AttackKind; 11] = [
        AttackKind::SlowStreamsOver,
        AttackKind::SlowStreamsUnder,
        AttackKind::IdleConnections,
        AttackKind::StalledSubscriptions,
        AttackKind::NothingMatches,
        AttackKind::PreauthIdle,
        AttackKind::ByteFlood,
        AttackKind::CaseFlood,
        AttackKind::RetryFlood,
        AttackKind::CursorFlood,
        AttackKind::Disk,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AttackKind::SlowStreamsOver => "slow_streams_over",
            AttackKind::SlowStreamsUnder => "slow_streams_under",
            AttackKind::IdleConnections => "idle_connections",
            AttackKind::StalledSubscriptions => "stalled_subscriptions",
            AttackKind::NothingMatches => "nothing_matches",
            AttackKind::PreauthIdle => "preauth_idle",
            AttackKind::ByteFlood => "byte_flood",
            AttackKind::CaseFlood => "case_flood",
            AttackKind::RetryFlood => "retry_flood",
            AttackKind::CursorFlood => "cursor_flood",
            AttackKind::Disk => "disk",
        }
    }

    /// The sample team that mounts the attack: six attackers for eleven
    /// attacks, so that with every attack at once each team's budgets are
    /// shared the way a coalition would share them; [`VICTIM`] is never one.
    pub fn attacker(self) -> &'static str {
        match self {
            AttackKind::SlowStreamsOver | AttackKind::SlowStreamsUnder => "CN-CNCERT",
            AttackKind::IdleConnections => "RU-GOVCERT",
            AttackKind::StalledSubscriptions | AttackKind::CursorFlood => "BR-CERTBR",
            AttackKind::NothingMatches | AttackKind::RetryFlood => "IN-CERTIN",
            AttackKind::ByteFlood | AttackKind::Disk => "ZA-CSIRT",
            AttackKind::CaseFlood | AttackKind::PreauthIdle => "US-CISA",
        }
    }

    /// Starts the attack at the scale the issue describes, derived from
    /// `limits` (the broker's), so the same call is full scale against the
    /// default limits and small against a test's tight ones.
    pub async fn launch(self, target: &Target, limits: &Limits) -> Result<Attack, String> {
        let team = self.attacker();
        let max_envelope = limits.max_envelope_bytes;
        let declared = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        match self {
            AttackKind::SlowStreamsOver => {
                slow_streams(target, team, 64, declared(4 * max_envelope), true).await
            }
            AttackKind::SlowStreamsUnder => {
                slow_streams(target, team, 64, declared(max_envelope - 16), true).await
            }
            AttackKind::IdleConnections => {
                idle_connections(target, team, limits.max_connections, true).await
            }
            AttackKind::StalledSubscriptions => {
                // One read batch of large records, then enough small ones
                // to put a fresh subscriber far behind, as far as the
                // team's message burst goes at once; large ones in flight
                // as the team's byte budget allows (one short of it, for
                // the framing).
                let in_flight =
                    (limits.max_inflight_bytes_per_team / max_envelope).saturating_sub(1);
                let plan = Stalled {
                    large: STALLED_LARGE_RECORDS,
                    record_bytes: max_envelope,
                    small: STALLED_SMALL_RECORDS.min(limits.rate_burst as usize),
                    in_flight: in_flight.clamp(1, 16),
                    subscriptions: limits.max_subscriptions_per_team + 4,
                    per_connection: limits.max_streams_per_connection as usize,
                };
                stalled_subscriptions(target, team, plan).await
            }
            AttackKind::NothingMatches => {
                let seed = 2000.min(limits.rate_burst as usize / 2);
                nothing_matches(
                    target,
                    team,
                    limits.max_subscriptions_per_team,
                    limits.max_filter_entries,
                    seed,
                )
                .await
            }
            AttackKind::PreauthIdle => {
                let at_once = Duration::from_millis(limits.handshake_timeout_ms / 2);
                preauth_idle(
                    target,
                    &[PREAUTH_SOURCE],
                    limits.max_connections,
                    limits.max_handshakes_per_source,
                    at_once,
                    true,
                )
                .await
            }
            AttackKind::ByteFlood => byte_flood(target, team, max_envelope, 4).await,
            AttackKind::CaseFlood => {
                let to: Vec<String> = SAMPLE_TEAMS.iter().map(|t| t.to_string()).collect();
                case_flood(target, team, &to, 8).await
            }
            AttackKind::RetryFlood => retry_flood(target, team, 8).await,
            AttackKind::CursorFlood => {
                cursor_flood(target, team, 2 * limits.max_durable_names_per_team, 4).await
            }
            AttackKind::Disk => disk(target, team, 2).await,
        }
    }
}

/// Starts `kinds` together, in the order that hurts most: first every
/// attack that works over a few connections (so that no attacker needs a
/// new connection while the floods hold the broker's slots), then the
/// authenticated idle connections, which take what slots they may and keep
/// them (it waits until each has been answered, at most 3 s), then the
/// unauthenticated ones. Returns each attack, or why it could not start.
pub async fn launch_together(
    kinds: &[AttackKind],
    target: &Target,
    limits: &Limits,
) -> Vec<(AttackKind, Result<Attack, String>)> {
    let wave = |k: &AttackKind| match k {
        AttackKind::IdleConnections => 1,
        AttackKind::PreauthIdle => 2,
        _ => 0,
    };
    let mut started: Vec<(AttackKind, Result<Attack, String>)> = Vec::new();
    for w in 0..3 {
        let these: Vec<AttackKind> = kinds.iter().copied().filter(|k| wave(k) == w).collect();
        let attacks =
            futures_util::future::join_all(these.iter().map(|k| k.launch(target, limits))).await;
        started.extend(these.into_iter().zip(attacks));
        if w == 1 {
            let n = limits.max_connections as u64;
            for (_, a) in started.iter().filter(|(k, _)| wave(k) == 1) {
                if let Ok(a) = a {
                    a.until(Duration::from_secs(3), |r| r.gauge("done") >= n)
                        .await;
                }
            }
        }
    }
    started
}

/// Large records the stalled-subscriptions attack publishes: one read
/// batch of the broker the issue measured (256 records).
pub const STALLED_LARGE_RECORDS: usize = 256;
/// Small records after them: past the 2,048 records behind the tail where
/// that broker stopped using its shared cache and read owned batches.
pub const STALLED_SMALL_RECORDS: usize = 2100;

/// The source address of unauthenticated attackers: a loopback alias, so
/// the victim (from 127.0.0.1) is another source to the broker.
pub const PREAUTH_SOURCE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

/// The team whose calls are watched while the others attack.
pub const VICTIM: &str = "DE-CERTBUND";

// === The victim ===

/// A team going about its business while others attack: each call must be
/// answered within [`LIVENESS`].
pub struct Victim {
    client: Client,
}

fn within<T>(
    what: &str,
    r: Result<Result<T, ClientError>, tokio::time::error::Elapsed>,
) -> Result<T, String> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {} s", LIVENESS.as_secs())),
    }
}

impl Victim {
    /// Connects afresh (an attack on connection slots must not hide behind
    /// a connection made before it).
    pub async fn connect(target: &Target, team: &str) -> Result<Self, String> {
        Ok(Victim {
            client: target.client(team).await?,
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Publishes a small community incident; returns its seq.
    pub async fn publish(&self) -> Result<u64, String> {
        let env = self
            .client
            .seal(&small_incident(self.client.team(), "victim"))
            .map_err(|e| e.to_string())?;
        within(
            "Publish",
            tokio::time::timeout(LIVENESS, self.client.publish(env)).await,
        )
        .map(|r| r.seq)
    }

    pub async fn get(&self, seq: u64) -> Result<(), String> {
        let req = pb::GetRequest {
            selector: Some(pb::get_request::Selector::Seq(seq)),
            sender: String::new(),
            exercise: None,
        };
        let rec = within(
            "Get",
            tokio::time::timeout(LIVENESS, self.client.get(req)).await,
        )?;
        if rec.seq == seq {
            Ok(())
        } else {
            Err(format!("Get {seq} answered record {}", rec.seq))
        }
    }

    /// Subscribes from just before `seq` and reads its first record, which
    /// must be `seq`.
    pub async fn subscribe_to(&self, seq: u64) -> Result<(), String> {
        let mut exchange = self.client.exchange();
        let first = async move {
            let mut stream = exchange
                .subscribe(pb::SubscribeRequest {
                    start: Some(Start::AfterSeq(seq.saturating_sub(1))),
                    filter: None,
                    follow: false,
                })
                .await?
                .into_inner();
            stream.message().await
        };
        match tokio::time::timeout(LIVENESS, first).await {
            Ok(Ok(Some(rec))) if rec.seq == seq => Ok(()),
            Ok(Ok(Some(rec))) => Err(format!(
                "Subscribe after {} began with record {}",
                seq - 1,
                rec.seq
            )),
            Ok(Ok(None)) => Err(format!("Subscribe after {} ended empty", seq - 1)),
            Ok(Err(s)) => Err(format!("Subscribe: {s:?}")),
            Err(_) => Err(format!(
                "Subscribe: no record within {} s",
                LIVENESS.as_secs()
            )),
        }
    }

    /// The signed tree head's size.
    pub async fn head(&self) -> Result<u64, String> {
        let r = tokio::time::timeout(
            LIVENESS,
            self.client.transparency().get_head(pb::GetHeadRequest {}),
        )
        .await;
        within("GetHead", r.map(|r| r.map_err(ClientError::from))).map(|h| h.into_inner().tree_size)
    }

    /// The team's cases (real traffic, every state and role). One page
    /// today: this is the one place to follow `page_token` once ListCases
    /// is paged.
    pub async fn cases(&self) -> Result<usize, String> {
        let r = tokio::time::timeout(
            LIVENESS,
            self.client
                .cases()
                .list_cases(pb::ListCasesRequest::default()),
        )
        .await;
        within("ListCases", r.map(|r| r.map_err(ClientError::from)))
            .map(|l| l.into_inner().cases.len())
    }
}

/// The victim's round: a fresh connection, then Publish, Get and Subscribe,
/// each answered within [`LIVENESS`]; on a thread and runtime of its own,
/// like [`measure_victim`].
pub async fn victim_round(target: &Target, team: &str) -> Result<(), String> {
    let (target, team) = (target.clone(), team.to_owned());
    on_own_thread(async move {
        let v = Victim::connect(&target, &team).await?;
        let seq = v.publish().await?;
        v.get(seq).await?;
        v.subscribe_to(seq).await
    })
    .await
    .unwrap_or_else(Err)
}

/// Runs `work` on a new thread with a runtime of its own, so that tasks of
/// the calling runtime (the attackers') never queue it.
async fn on_own_thread<T: Send + 'static>(
    work: impl Future<Output = T> + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let out = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(|rt| rt.block_on(work))
            .map_err(|e| e.to_string());
        let _ = tx.send(out);
    });
    rx.await
        .map_err(|_| "the victim's thread died".to_owned())?
}

/// What the victim calls while it is measured.
#[derive(Debug, Clone, Copy)]
pub enum Mix {
    /// Publish and Get of what it just published, in turn.
    PublishGet,
    /// GetHead and Get of this seq, in turn (a broker that refuses
    /// publishing).
    Reads(u64),
}

/// The victim's latencies over a run of calls.
#[derive(Debug, Clone, Default)]
pub struct VictimStats {
    /// Milliseconds to connect (TCP, TLS, HTTP/2), None if it failed: what
    /// floods of connections or handshakes cost a newcomer.
    pub connect_ms: Option<f64>,
    /// Milliseconds per successful call, sorted.
    pub latencies_ms: Vec<f64>,
    /// Calls that failed, timed out, or were never made because the
    /// connection or the time budget failed first.
    pub failures: u64,
    pub first_failure: Option<String>,
}

/// Makes `calls` victim calls of `mix` on a fresh connection of `team`, on
/// a thread and runtime of their own (the attackers' tasks must not queue
/// the victim's), within `budget` overall.
pub async fn measure_victim(
    target: &Target,
    team: &str,
    calls: usize,
    mix: Mix,
    budget: Duration,
) -> VictimStats {
    let (target, team) = (target.clone(), team.to_owned());
    on_own_thread(async move { victim_calls(&target, &team, calls, mix, budget).await })
        .await
        .unwrap_or_else(|e| VictimStats {
            failures: calls as u64,
            first_failure: Some(e),
            ..Default::default()
        })
}

async fn victim_calls(
    target: &Target,
    team: &str,
    calls: usize,
    mix: Mix,
    budget: Duration,
) -> VictimStats {
    let mut stats = VictimStats::default();
    let fail = |stats: &mut VictimStats, n: u64, why: String| {
        stats.failures += n;
        stats.first_failure.get_or_insert(why);
    };
    let deadline = Instant::now() + budget;
    let connecting = Instant::now();
    let victim = match Victim::connect(target, team).await {
        Ok(v) => {
            stats.connect_ms = Some(connecting.elapsed().as_secs_f64() * 1000.0);
            v
        }
        Err(e) => {
            fail(&mut stats, calls as u64, e);
            return stats;
        }
    };
    let mut last = match mix {
        Mix::Reads(seq) => seq,
        Mix::PublishGet => 0,
    };
    for i in 0..calls {
        if Instant::now() >= deadline {
            let why = format!("time budget of {} s spent", budget.as_secs());
            fail(&mut stats, (calls - i) as u64, why);
            break;
        }
        let t = Instant::now();
        let r = match (mix, i % 2) {
            (Mix::PublishGet, 0) => victim.publish().await.map(|seq| last = seq),
            (Mix::PublishGet, _) if last == 0 => Err("nothing published to get".into()),
            (Mix::Reads(_), 0) => victim.head().await.map(|_| ()),
            (_, _) => victim.get(last).await,
        };
        match r {
            Ok(()) => stats.latencies_ms.push(t.elapsed().as_secs_f64() * 1000.0),
            Err(e) => fail(&mut stats, 1, e),
        }
    }
    stats.latencies_ms.sort_by(f64::total_cmp);
    stats
}

// === Broker memory ===

/// The resident set size of process `pid`, in KiB (None once it is gone).
pub fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Samples a process's RSS on a thread of its own, keeping the peak.
pub struct PeakRss {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PeakRss {
    pub fn start(pid: u32, every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss_kib(pid).unwrap_or(0)));
        let thread = {
            let (stop, peak) = (stop.clone(), peak.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(kib) = rss_kib(pid) {
                        peak.fetch_max(kib, Ordering::Relaxed);
                    }
                    std::thread::sleep(every);
                }
            })
        };
        PeakRss {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    /// The peak so far, in KiB.
    pub fn peak_kib(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// Stops sampling; the peak in KiB.
    pub fn stop(mut self) -> u64 {
        self.halt();
        self.peak_kib()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for PeakRss {
    fn drop(&mut self) {
        self.halt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sized_bodies_seal_just_under_the_size() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        for size in [4096, 64 * 1024, 256 * 1024, 1024 * 1024] {
            let body = sized_incident("CN-CNCERT", size, "t");
            let env = crate::rules::envelope::seal_body(&body, &key);
            let len = env.encoded_len();
            assert!(len <= size, "{len} > {size}");
            assert!(len + 2100 > size, "{len} is far under {size}");
        }
    }

    #[test]
    fn truncated_frames_declare_more_than_they_carry() {
        let f = truncated_frame(1000);
        assert_eq!(f.len(), 5 + 999);
        assert_eq!(&f[..5], &[0, 0, 0, 0x03, 0xe8]);
    }

    #[test]
    fn status_names_are_canonical() {
        assert_eq!(code_name(Code::ResourceExhausted), "RESOURCE_EXHAUSTED");
        assert_eq!(code_name(Code::Ok), "OK");
    }
}
