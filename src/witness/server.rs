//! The witness's HTTP face: `POST /add-checkpoint` (C2SP tlog-witness) and
//! the checks behind it, in the spec's order: a well-formed body (400), a
//! known origin (404), a signature by one of the origin's trusted keys
//! (403), `old` not beyond the checkpoint (400), `old` equal to the size
//! last cosigned (409 with `text/x.tlog.size`), the same root when the size
//! is unchanged (409), an RFC 6962 consistency proof otherwise (422); then
//! the new checkpoint is persisted and cosigned (200). The per-origin lock
//! is held from reading the stored size to persisting the new one, so two
//! racing requests cannot roll a log back. Refusals become HTTP answers in
//! one place ([`Refusal`]), where they are logged once.

use std::collections::HashMap;
use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use ed25519_dalek::SigningKey;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::Mutex;

use crate::client::verify::verify_consistency;
use crate::rules::note::{self, TYPE_COSIGNATURE, TYPE_ED25519, Vkey};
use crate::witness::request::{self, AddCheckpoint};
use crate::witness::state::{Latest, StateDir, StateError};

/// Largest request body accepted (a checkpoint with many signatures and 63
/// proof lines is a few KiB).
pub const MAX_BODY: usize = 64 * 1024;
/// Time a client has to send its whole request body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Time in-flight requests get to finish after a shutdown signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Content type of a 409 answer carrying the latest cosigned size.
pub const SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";
/// Content type of cosignature lines and of refusal reasons.
const TEXT: &str = "text/plain; charset=utf-8";

/// Why the witness was not configured: one line naming the flag to fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

// === impl Witness ===

/// One log the witness follows: its trusted keys and its latest cosigned
/// checkpoint, behind the lock that makes check-and-persist atomic.
struct Log {
    keys: Vec<Vkey>,
    latest: Mutex<Option<Latest>>,
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
            return Err(Refusal::Forbidden { origin, why: e.0 });
        }
        if old > cp.size {
            return Err(Refusal::BadRequest(format!(
                "old size {old} is larger than the checkpoint's size {}",
                cp.size
            )));
        }

        // Check and persist under the origin's lock (the spec's race).
        let mut latest = log.latest.lock().await;
        let (kept_size, kept_root) = match &*latest {
            Some(l) => (l.size, l.root),
            None => (0, empty_root()),
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
                    text: note.text,
                });
            }
        } else if let Err(e) = verify_consistency(old, cp.size, &kept_root, &cp.root, &proof) {
            return Err(Refusal::BadProof {
                origin,
                old,
                size: cp.size,
                why: e.to_string(),
                text: note.text,
            });
        }

        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let line = note::cosign(&note.text, &self.name, &self.key, now)
            .map_err(|e| Refusal::Internal(format!("cannot cosign: {e}")))?;
        let new = Latest {
            size: cp.size,
            root: cp.root,
            checkpoint: note.text,
        };
        let dir = self.state.clone();
        let (o, n) = (origin.clone(), new.clone());
        tokio::task::spawn_blocking(move || dir.save(&o, &n))
            .await
            .map_err(|e| Refusal::Internal(format!("state write task failed: {e}")))?
            .map_err(Refusal::Store)?;
        *latest = Some(new);
        drop(latest);
        tracing::info!(%origin, old, size = cp.size, "cosigned");
        Ok(line.line())
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
    /// The same size as last cosigned with another root: a fork (409).
    Fork {
        /// The checkpoint's origin.
        origin: String,
        /// The size.
        size: u64,
        /// The checkpoint text, kept in the log as evidence.
        text: String,
    },
    /// The consistency proof does not verify (422).
    BadProof {
        /// The checkpoint's origin.
        origin: String,
        /// The size proven from.
        old: u64,
        /// The checkpoint's size.
        size: u64,
        /// What failed.
        why: String,
        /// The checkpoint text, kept in the log as evidence.
        text: String,
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
            Refusal::BadRequest(why) => {
                tracing::info!(%why, "add-checkpoint refused: bad request");
                plain(S::BAD_REQUEST, why)
            }
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
            Refusal::UnknownOrigin(origin) => {
                tracing::info!(%origin, "add-checkpoint refused: unknown origin");
                plain(
                    S::NOT_FOUND,
                    format!("this witness does not follow a log with origin {origin:?}"),
                )
            }
            Refusal::Forbidden { origin, why } => {
                tracing::warn!(%origin, %why, "add-checkpoint refused: no trusted log signature");
                plain(
                    S::FORBIDDEN,
                    format!(
                        "the checkpoint of {origin} is not signed by a key trusted for it: {why}"
                    ),
                )
            }
            Refusal::OldMismatch { origin, old, kept } => {
                tracing::info!(%origin, old, kept, "add-checkpoint refused: old size is not the latest cosigned");
                text(S::CONFLICT, SIZE_CONTENT_TYPE, format!("{kept}\n"))
            }
            Refusal::Fork { origin, size, text } => {
                tracing::error!(%origin, size, checkpoint = %text, "add-checkpoint refused: another root for a size already cosigned (possible fork)");
                plain(
                    S::CONFLICT,
                    format!("size {size} of {origin} was cosigned with another root hash"),
                )
            }
            Refusal::BadProof {
                origin,
                old,
                size,
                why,
                text,
            } => {
                tracing::error!(%origin, old, size, %why, checkpoint = %text, "add-checkpoint refused: consistency proof does not verify");
                plain(
                    S::UNPROCESSABLE_ENTITY,
                    format!("consistency proof from size {old} to {size} does not verify: {why}"),
                )
            }
            Refusal::Store(e) => {
                tracing::error!(error = %e, "add-checkpoint failed: state not persisted");
                plain(
                    S::INTERNAL_SERVER_ERROR,
                    "the witness could not persist its state".into(),
                )
            }
            Refusal::Internal(why) => {
                tracing::error!(%why, "add-checkpoint failed");
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
    let bytes = match read_body(body).await {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    match w.add_checkpoint(&bytes).await {
        Ok(line) => text(StatusCode::OK, TEXT, line),
        Err(r) => r.into_response(),
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

/// Serves the witness on a bound listener until `shutdown` completes, then
/// lets in-flight requests finish for at most [`DRAIN_TIMEOUT`].
pub async fn run(
    listener: TcpListener,
    witness: Arc<Witness>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stopping = Arc::new(tokio::sync::Notify::new());
    let notify = stopping.clone();
    let serve = axum::serve(listener, router(witness)).with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("witness shutting down");
        notify.notify_one();
    });
    tokio::select! {
        r = serve.into_future() => r,
        _ = async {
            stopping.notified().await;
            tokio::time::sleep(DRAIN_TIMEOUT).await;
        } => {
            tracing::warn!("requests still open after the drain timeout; stopping anyway");
            Ok(())
        }
    }
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
}
