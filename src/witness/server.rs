//! The witness's HTTP face: `POST /add-checkpoint` (C2SP tlog-witness) and
//! the checks behind it, in the spec's order: a well-formed body (400), a
//! known origin (404), a signature by one of the origin's trusted keys
//! (403), `old` not beyond the checkpoint (400), `old` equal to the size
//! last cosigned (409 with `text/x.tlog.size`), the same root when the size
//! is unchanged (409), an RFC 6962 consistency proof otherwise (422); then
//! the new checkpoint is persisted and cosigned (200). A resend of the
//! latest checkpoint is cosigned without writing anything. A cosignature's
//! time is never before the origin's previous one: that time is kept in
//! memory and written with the state whenever the state changes (not for a
//! resend, which writes nothing). The per-origin lock is held from reading
//! the stored size to persisting the new one, so two racing requests cannot
//! roll a log back. Refusals become HTTP answers in one place ([`Refusal`])
//! and are logged once ([`Witness::log_refusal`]), quoting client text only
//! cut short, with warnings and errors held to one line per origin and kind
//! every [`ALARM_INTERVAL`]. The server ([`run`]) speaks HTTP/1.1 through
//! hyper with [`Limits`]: a cap on open connections (new ones beyond it are
//! closed at once; one request at a time per connection, so it also caps
//! requests in flight) and a deadline for each request's headers, which
//! also closes idle keep-alive connections.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use ed25519_dalek::SigningKey;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, Semaphore};

use crate::client::verify::verify_consistency;
use crate::rules::note::{self, TYPE_COSIGNATURE, TYPE_ED25519, Vkey};
use crate::witness::request::{self, AddCheckpoint, clip};
use crate::witness::state::{Latest, StateDir, StateError};

/// Largest request body accepted (a checkpoint with many signatures and 63
/// proof lines is a few KiB).
pub const MAX_BODY: usize = 64 * 1024;
/// Time a client has to send its whole request body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Time in-flight requests get to finish after a shutdown signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Default cap on open connections ([`Limits::max_connections`]).
pub const MAX_CONNECTIONS: usize = 256;
/// Default time a client has to send a request's headers, counted from
/// the connection's opening or the end of its previous answer
/// ([`Limits::header_read_timeout`]).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest buffered request head (request line and headers).
const MAX_HEAD: usize = 16 * 1024;
/// Least time between two warning or error lines of one kind for one
/// origin; the lines held back in between are counted in the next one.
pub const ALARM_INTERVAL: Duration = Duration::from_secs(10);
/// Content type of a 409 answer carrying the latest cosigned size.
pub const SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";
/// Content type of cosignature lines and of refusal reasons.
const TEXT: &str = "text/plain; charset=utf-8";

/// Why the witness was not configured: one line naming the flag to fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

// === impl Gate ===

/// One line per [`ALARM_INTERVAL`] for one kind of alarm, counting the
/// lines held back.
#[derive(Debug, Default)]
struct Gate {
    last: Option<Instant>,
    held: u64,
}

impl Gate {
    /// Whether a line may be logged at `now`: `Some(lines held back since
    /// the previous one)`, or `None` (and one more held back).
    fn pass(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < ALARM_INTERVAL)
        {
            self.held += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }
}

/// The alarm gates of one origin, one per kind so that noise anyone can
/// make (bad proofs, bad signatures) cannot hold back evidence of a fork.
#[derive(Debug, Default)]
struct Alarms {
    fork: Gate,
    bad_proof: Gate,
    forbidden: Gate,
}

// === impl Witness ===

/// One log the witness follows: its trusted keys, its latest cosigned
/// checkpoint behind the lock that makes check-and-persist atomic, and
/// its alarm gates.
struct Log {
    keys: Vec<Vkey>,
    latest: Mutex<Option<Latest>>,
    alarms: std::sync::Mutex<Alarms>,
}

/// A configured witness: its name and key, the logs it follows and where
/// it keeps their state.
pub struct Witness {
    name: String,
    key: SigningKey,
    vkey: Vkey,
    logs: HashMap<String, Log>,
    state: StateDir,
}

/// The time to put in a cosignature: now, unless an earlier cosignature
/// for the origin carries a later time (the clock went back).
pub fn cosign_time(now: u64, last: u64) -> u64 {
    now.max(last)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Witness {
    /// A witness named `name` cosigning with `key` for the logs whose
    /// verifier keys are `logs` (type 0x01; the origin is the key's name,
    /// and an origin may have several keys), with the state read from
    /// `state`.
    pub fn new(
        name: &str,
        key: SigningKey,
        logs: Vec<Vkey>,
        state: (StateDir, HashMap<String, Latest>),
    ) -> Result<Self, ConfigError> {
        let vkey = Vkey::new(name, TYPE_COSIGNATURE, key.verifying_key())
            .map_err(|e| ConfigError(format!("--name: {e}")))?;
        if logs.is_empty() {
            return Err(ConfigError(
                "give at least one --log verifier key to witness".into(),
            ));
        }
        let (dir, mut stored) = state;
        let mut by_origin: HashMap<String, Log> = HashMap::new();
        for v in logs {
            if v.sig_type != TYPE_ED25519 {
                return Err(ConfigError(format!(
                    "--log {v}: a log key must be an Ed25519 note key (type 0x01), \
                     this one is type 0x{:02x}",
                    v.sig_type
                )));
            }
            let log = by_origin.entry(v.name.clone()).or_insert_with(|| Log {
                keys: Vec::new(),
                latest: Mutex::new(stored.remove(&v.name)),
                alarms: std::sync::Mutex::default(),
            });
            if !log.keys.contains(&v) {
                log.keys.push(v);
            }
        }
        Ok(Witness {
            name: name.to_owned(),
            key,
            vkey,
            logs: by_origin,
            state: dir,
        })
    }

    /// The witness's verifier key (type 0x04), as logs and clients
    /// configure it.
    pub fn vkey(&self) -> &Vkey {
        &self.vkey
    }

    /// The origins followed, sorted.
    pub fn origins(&self) -> Vec<&str> {
        let mut o: Vec<&str> = self.logs.keys().map(String::as_str).collect();
        o.sort_unstable();
        o
    }

    /// Handles one `add-checkpoint` body: the cosignature line, or why not.
    pub async fn add_checkpoint(&self, body: &[u8]) -> Result<String, Refusal> {
        let req = request::parse(body).map_err(|e| Refusal::BadRequest(e.0))?;
        let AddCheckpoint {
            old,
            proof,
            note,
            checkpoint: cp,
        } = req;
        let origin = cp.origin.clone();
        let Some(log) = self.logs.get(&origin) else {
            return Err(Refusal::UnknownOrigin(origin));
        };
        if let Err(e) = note::open(&note, &log.keys) {
            return Err(Refusal::Forbidden {
                origin,
                why: clip(&e.0),
            });
        }
        if old > cp.size {
            return Err(Refusal::BadRequest(format!(
                "old size {old} is larger than the checkpoint's size {}",
                cp.size
            )));
        }

        // Check and persist under the origin's lock (the spec's race).
        let mut latest = log.latest.lock().await;
        let (kept_size, kept_root, last_time) = match &*latest {
            Some(l) => (l.size, l.root, l.cosigned_at),
            None => (0, empty_root(), 0),
        };
        if old != kept_size {
            return Err(Refusal::OldMismatch {
                origin,
                old,
                kept: kept_size,
            });
        }
        if cp.size == kept_size {
            if cp.root != kept_root {
                return Err(Refusal::Fork {
                    origin,
                    size: cp.size,
                    text: note.text,
                });
            }
            if !proof.is_empty() {
                return Err(Refusal::BadProof {
                    origin,
                    old,
                    size: cp.size,
                    why: "the consistency proof must be empty when the size is unchanged".into(),
                });
            }
        } else if let Err(e) = verify_consistency(old, cp.size, &kept_root, &cp.root, &proof) {
            return Err(Refusal::BadProof {
                origin,
                old,
                size: cp.size,
                why: e.to_string(),
            });
        }

        let time = cosign_time(unix_now(), last_time);
        let line = note::cosign(&note.text, &self.name, &self.key, time)
            .map_err(|e| Refusal::Internal(format!("cannot cosign: {e}")))?;
        match &mut *latest {
            // The latest checkpoint again (anyone can resend it): nothing
            // new to make durable, so no write under the lock. The time is
            // remembered for this process; the state file keeps the time
            // of the last change.
            Some(l) if l.size == cp.size && l.root == cp.root => l.cosigned_at = time,
            _ => {
                let new = Latest {
                    size: cp.size,
                    root: cp.root,
                    checkpoint: note.text,
                    cosigned_at: time,
                };
                let dir = self.state.clone();
                let (o, n) = (origin.clone(), new.clone());
                tokio::task::spawn_blocking(move || dir.save(&o, &n))
                    .await
                    .map_err(|e| Refusal::Internal(format!("state write task failed: {e}")))?
                    .map_err(Refusal::Store)?;
                *latest = Some(new);
            }
        }
        drop(latest);
        tracing::info!(%origin, old, size = cp.size, "cosigned");
        Ok(line.line())
    }

    /// Logs a refusal once: client text cut short, warnings and errors at
    /// most one line per origin and kind every [`ALARM_INTERVAL`].
    pub fn log_refusal(&self, r: &Refusal) {
        let gate = |origin: &str, pick: fn(&mut Alarms) -> &mut Gate| -> Option<u64> {
            let log = self.logs.get(origin)?;
            let mut alarms = log.alarms.lock().unwrap_or_else(|e| e.into_inner());
            pick(&mut alarms).pass(Instant::now())
        };
        match r {
            Refusal::BadRequest(why) => {
                tracing::info!(why = %clip(why), "add-checkpoint refused: bad request");
            }
            Refusal::TooLarge | Refusal::Timeout => {}
            Refusal::UnknownOrigin(origin) => {
                let origin = request::quote(origin);
                tracing::info!(%origin, "add-checkpoint refused: unknown origin");
            }
            Refusal::Forbidden { origin, why } => {
                if let Some(held) = gate(origin, |a| &mut a.forbidden) {
                    let (origin, why) = (clip(origin), clip(why));
                    tracing::warn!(%origin, %why, held, "add-checkpoint refused: no trusted log signature");
                }
            }
            Refusal::OldMismatch { origin, old, kept } => {
                let origin = clip(origin);
                tracing::info!(%origin, old, kept, "add-checkpoint refused: old size is not the latest cosigned");
            }
            Refusal::Fork { origin, size, text } => {
                // Signed by a trusted log key: evidence the log misbehaved.
                if let Some(held) = gate(origin, |a| &mut a.fork) {
                    let origin = clip(origin);
                    tracing::error!(%origin, size, checkpoint = ?text, held, "add-checkpoint refused: the log signed another root for a size already cosigned (fork)");
                }
            }
            Refusal::BadProof {
                origin, old, size, ..
            } => {
                // Anyone can resend a genuine checkpoint with a junk proof:
                // no evidence against the log.
                if let Some(held) = gate(origin, |a| &mut a.bad_proof) {
                    let origin = clip(origin);
                    tracing::warn!(%origin, old, size, held, "add-checkpoint refused: a client sent a consistency proof that does not verify");
                }
            }
            Refusal::Store(e) => {
                tracing::error!(error = %e, "add-checkpoint failed: state not persisted");
            }
            Refusal::Internal(why) => {
                tracing::error!(%why, "add-checkpoint failed");
            }
        }
    }
}

/// The root of the empty tree, `SHA-256("")`: what a witness that never
/// cosigned for an origin holds for size 0.
fn empty_root() -> [u8; 32] {
    Sha256::digest([]).into()
}

// === impl Refusal ===

/// Why a checkpoint was not cosigned; each maps to one HTTP status.
#[derive(Debug)]
#[non_exhaustive]
pub enum Refusal {
    /// The body is malformed, or `old` is beyond the checkpoint (400).
    BadRequest(String),
    /// The body is larger than [`MAX_BODY`] (413).
    TooLarge,
    /// The body did not arrive within [`BODY_TIMEOUT`] (408).
    Timeout,
    /// No log of this origin is followed (404).
    UnknownOrigin(String),
    /// No signature verifies with the origin's trusted keys, or one by a
    /// trusted key is wrong (403).
    Forbidden {
        /// The checkpoint's origin.
        origin: String,
        /// What failed.
        why: String,
    },
    /// `old` is not the size last cosigned (409, the size in the body).
    OldMismatch {
        /// The checkpoint's origin.
        origin: String,
        /// The size the client claimed.
        old: u64,
        /// The size last cosigned.
        kept: u64,
    },
    /// The same size as last cosigned with another root, under a trusted
    /// log signature: a fork (409).
    Fork {
        /// The checkpoint's origin.
        origin: String,
        /// The size.
        size: u64,
        /// The checkpoint text, kept in the log as evidence.
        text: String,
    },
    /// The consistency proof does not verify (422): the client's fault,
    /// not evidence against the log.
    BadProof {
        /// The checkpoint's origin.
        origin: String,
        /// The size proven from.
        old: u64,
        /// The checkpoint's size.
        size: u64,
        /// What failed.
        why: String,
    },
    /// The new state could not be made durable (500).
    Store(StateError),
    /// Anything else that is the witness's fault (500).
    Internal(String),
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        use StatusCode as S;
        let plain = |status, why: String| text(status, TEXT, format!("{why}\n"));
        match self {
            Refusal::BadRequest(why) => plain(S::BAD_REQUEST, clip(&why)),
            Refusal::TooLarge => plain(
                S::PAYLOAD_TOO_LARGE,
                format!("the request body is larger than {MAX_BODY} bytes"),
            ),
            Refusal::Timeout => plain(
                S::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} s",
                    BODY_TIMEOUT.as_secs()
                ),
            ),
            Refusal::UnknownOrigin(origin) => plain(
                S::NOT_FOUND,
                format!(
                    "this witness does not follow a log with origin {}",
                    request::quote(&origin)
                ),
            ),
            Refusal::Forbidden { origin, why } => plain(
                S::FORBIDDEN,
                format!(
                    "the checkpoint of {} is not signed by a key trusted for it: {}",
                    clip(&origin),
                    clip(&why)
                ),
            ),
            Refusal::OldMismatch { kept, .. } => {
                text(S::CONFLICT, SIZE_CONTENT_TYPE, format!("{kept}\n"))
            }
            Refusal::Fork { origin, size, .. } => plain(
                S::CONFLICT,
                format!(
                    "size {size} of {} was cosigned with another root hash",
                    clip(&origin)
                ),
            ),
            Refusal::BadProof { old, size, why, .. } => plain(
                S::UNPROCESSABLE_ENTITY,
                format!(
                    "consistency proof from size {old} to {size} does not verify: {}",
                    clip(&why)
                ),
            ),
            Refusal::Store(_) => plain(
                S::INTERNAL_SERVER_ERROR,
                "the witness could not persist its state".into(),
            ),
            Refusal::Internal(_) => {
                plain(S::INTERNAL_SERVER_ERROR, "internal witness error".into())
            }
        }
    }
}

// === the HTTP server ===

/// The witness's routes: `POST /add-checkpoint`.
pub fn router(witness: Arc<Witness>) -> Router {
    Router::new()
        .route("/add-checkpoint", post(add_checkpoint))
        .with_state(witness)
}

async fn add_checkpoint(State(w): State<Arc<Witness>>, body: Body) -> Response {
    let result = match read_body(body).await {
        Ok(b) => w.add_checkpoint(&b).await,
        Err(r) => Err(r),
    };
    match result {
        Ok(line) => text(StatusCode::OK, TEXT, line),
        Err(r) => {
            w.log_refusal(&r);
            r.into_response()
        }
    }
}

/// The whole body, at most [`MAX_BODY`] bytes, within [`BODY_TIMEOUT`].
async fn read_body(body: Body) -> Result<bytes::Bytes, Refusal> {
    match tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY).collect()).await {
        Err(_) => Err(Refusal::Timeout),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(Refusal::TooLarge),
        Ok(Err(e)) => Err(Refusal::BadRequest(format!(
            "cannot read the request body: {e}"
        ))),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

/// What one witness server lets its clients hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most connections open at once; a connection beyond it is closed as
    /// soon as it is accepted. Each serves one request at a time, so this
    /// also bounds the requests (and [`MAX_BODY`] buffers) in flight.
    pub max_connections: usize,
    /// Time a client has to send a request's headers, from the opening of
    /// the connection or the end of the previous answer on it: idle
    /// keep-alive connections are closed after it too.
    pub header_read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: MAX_CONNECTIONS,
            header_read_timeout: HEADER_READ_TIMEOUT,
        }
    }
}

/// Errors of `accept` that concern one connection only.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::ConnectionRefused | K::ConnectionAborted | K::ConnectionReset
    )
}

/// Serves the witness on a bound listener within `limits` until
/// `shutdown` completes, then stops accepting and lets in-flight requests
/// finish for at most [`DRAIN_TIMEOUT`].
pub async fn run(
    listener: TcpListener,
    witness: Arc<Witness>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let service = TowerToHyperService::new(router(witness));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true)
        .max_buf_size(MAX_HEAD);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut full = Gate::default();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(c) => c,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors, say: wait rather than spin.
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            if let Some(held) = full.pass(Instant::now()) {
                tracing::warn!(
                    max = limits.max_connections,
                    held,
                    "connection limit reached: closing new connections"
                );
            }
            drop(stream);
            continue;
        };
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service.clone()));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection closed with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!("witness shutting down");
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still open after the drain timeout; stopping anyway");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::note::{Checkpoint, Note};

    fn log_key() -> (SigningKey, Vkey) {
        let k = SigningKey::from_bytes(&[3; 32]);
        let v = Vkey::new("example.com/log", TYPE_ED25519, k.verifying_key()).unwrap();
        (k, v)
    }

    fn witness(dir: &std::path::Path) -> Witness {
        let (_, v) = log_key();
        Witness::new(
            "witness.example/w",
            SigningKey::from_bytes(&[4; 32]),
            vec![v],
            StateDir::open(dir).unwrap(),
        )
        .unwrap()
    }

    fn body(old: u64, size: u64, root: [u8; 32]) -> Vec<u8> {
        let (k, _) = log_key();
        let text = Checkpoint {
            origin: "example.com/log".into(),
            size,
            root,
            extensions: vec![],
        }
        .text();
        let sig = note::sign(&text, "example.com/log", &k).unwrap();
        format!(
            "old {old}\n\n{}",
            Note {
                text,
                sigs: vec![sig]
            }
            .encode()
        )
        .into_bytes()
    }

    #[test]
    fn log_keys_must_be_ed25519_note_keys() {
        let tmp = tempfile::tempdir().unwrap();
        let k = SigningKey::from_bytes(&[3; 32]);
        let cosig = Vkey::new("example.com/log", TYPE_COSIGNATURE, k.verifying_key()).unwrap();
        let e = Witness::new(
            "w",
            k.clone(),
            vec![cosig],
            StateDir::open(tmp.path()).unwrap(),
        )
        .err()
        .unwrap();
        assert!(e.0.contains("type 0x01"), "{e}");
        let e = Witness::new("w", k, vec![], StateDir::open(tmp.path()).unwrap())
            .err()
            .unwrap();
        assert!(e.0.contains("--log"), "{e}");
    }

    #[tokio::test]
    async fn a_size_zero_checkpoint_must_have_the_empty_root() {
        let tmp = tempfile::tempdir().unwrap();
        let w = witness(tmp.path());
        assert!(matches!(
            w.add_checkpoint(&body(0, 0, [1; 32])).await,
            Err(Refusal::Fork { .. })
        ));
        assert!(w.add_checkpoint(&body(0, 0, empty_root())).await.is_ok());
    }

    #[tokio::test]
    async fn the_same_checkpoint_is_cosigned_again() {
        let tmp = tempfile::tempdir().unwrap();
        let w = witness(tmp.path());
        w.add_checkpoint(&body(0, 1, [9; 32])).await.unwrap();
        w.add_checkpoint(&body(1, 1, [9; 32])).await.unwrap();
        assert!(matches!(
            w.add_checkpoint(&body(1, 1, [8; 32])).await,
            Err(Refusal::Fork { size: 1, .. })
        ));
    }

    fn cosignature_time(line: &str) -> u64 {
        let l = note::SigLine::parse(line).unwrap();
        u64::from_be_bytes(l.bytes[..8].try_into().unwrap())
    }

    #[tokio::test]
    async fn a_resent_checkpoint_is_cosigned_without_a_write() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let w = witness(tmp.path());
        w.add_checkpoint(&body(0, 1, [9; 32])).await.unwrap();
        let file = w.state.file_of("example.com/log");
        let stamp = |m: std::fs::Metadata| (m.ino(), m.mtime(), m.mtime_nsec());
        let before = stamp(std::fs::metadata(&file).unwrap());
        for _ in 0..3 {
            w.add_checkpoint(&body(1, 1, [9; 32])).await.unwrap();
        }
        assert_eq!(stamp(std::fs::metadata(&file).unwrap()), before);
    }

    #[test]
    fn the_cosignature_time_is_the_later_of_now_and_the_last() {
        assert_eq!(cosign_time(100, 0), 100);
        assert_eq!(cosign_time(100, 100), 100);
        assert_eq!(cosign_time(100, 250), 250);
    }

    #[tokio::test]
    async fn cosignature_times_never_go_backwards() {
        let tmp = tempfile::tempdir().unwrap();
        let ahead = unix_now() + 1_000_000;
        {
            // A state written when the clock was far ahead.
            let (dir, _) = StateDir::open(tmp.path()).unwrap();
            let cp = Checkpoint {
                origin: "example.com/log".into(),
                size: 1,
                root: [9; 32],
                extensions: vec![],
            };
            let l = Latest {
                size: 1,
                root: cp.root,
                checkpoint: cp.text(),
                cosigned_at: ahead,
            };
            dir.save("example.com/log", &l).unwrap();
        }
        let w = witness(tmp.path());
        let line = w.add_checkpoint(&body(1, 1, [9; 32])).await.unwrap();
        assert_eq!(cosignature_time(&line), ahead);
        // Growth to size 2 (RFC 6962: the old root and the new leaf's hash).
        let leaf = [5u8; 32];
        let mut h = Sha256::new();
        h.update([1u8]);
        h.update([9u8; 32]);
        h.update(leaf);
        let root2: [u8; 32] = h.finalize().into();
        let mut b = String::from_utf8(body(1, 2, root2)).unwrap();
        b.insert_str(
            "old 1\n".len(),
            &format!(
                "{}\n",
                base64::Engine::encode(&base64::engine::general_purpose::STANDARD, leaf)
            ),
        );
        let line = w.add_checkpoint(b.as_bytes()).await.unwrap();
        assert_eq!(cosignature_time(&line), ahead);
        drop(w);
        let (_, stored) = StateDir::open(tmp.path()).unwrap();
        assert_eq!(stored["example.com/log"].size, 2);
        assert_eq!(stored["example.com/log"].cosigned_at, ahead);
    }

    #[test]
    fn alarms_pass_once_per_interval_and_count_the_rest() {
        let mut g = Gate::default();
        let t = Instant::now();
        assert_eq!(g.pass(t), Some(0));
        assert_eq!(g.pass(t + Duration::from_secs(1)), None);
        assert_eq!(g.pass(t + Duration::from_secs(9)), None);
        assert_eq!(g.pass(t + ALARM_INTERVAL), Some(2));
        assert_eq!(g.pass(t + ALARM_INTERVAL + Duration::from_secs(1)), None);
        // Kinds are gated apart: bad proofs do not hold back a fork.
        let mut a = Alarms::default();
        assert_eq!(a.bad_proof.pass(t), Some(0));
        assert_eq!(a.bad_proof.pass(t), None);
        assert_eq!(a.fork.pass(t), Some(0));
    }

    #[tokio::test]
    async fn refusals_quote_client_text_short() {
        let tmp = tempfile::tempdir().unwrap();
        let w = witness(tmp.path());
        let long = format!("example.com/{}", "o".repeat(60_000));
        let text = Checkpoint {
            origin: long.clone(),
            size: 1,
            root: [1; 32],
            extensions: vec![],
        }
        .text();
        let sig = note::sign(&text, "example.com/log", &log_key().0).unwrap();
        let b = format!(
            "old 0\n\n{}",
            Note {
                text,
                sigs: vec![sig]
            }
            .encode()
        );
        let r = w.add_checkpoint(b.as_bytes()).await.unwrap_err();
        assert!(matches!(&r, Refusal::UnknownOrigin(o) if *o == long));
        let resp = r.into_response();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(body.len() < 300, "{}", body.len());
    }
}
