//! Pushing checkpoints to standard witnesses (SPEC §8, C2SP `tlog-witness`):
//! for each URL in `witness_push`, a task posts every new checkpoint to
//! `<url>/add-checkpoint` with `old N`, the consistency proof from N and
//! the signed note, and keeps the cosignature lines the witness answers
//! with when they verify with a witness key the directory lists (a team's
//! `witness_key` or a `witness` line of its `witness_policy`). A 409 tells
//! the witness's size, which becomes the next `old`; other failures back
//! off. Bursts of commits are coalesced into one push per interval.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::broker::state::State;
use crate::log::merkle;

/// Shortest time between two pushes to one witness.
pub const PUSH_INTERVAL: Duration = Duration::from_millis(500);
/// How long one add-checkpoint call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Most bytes read of a witness's answer.
const MAX_ANSWER: usize = 64 * 1024;

/// Starts one push task per configured witness; they end when the broker
/// starts closing.
pub fn spawn(state: &Arc<State>) {
    if state.checkpoints.is_none() {
        if !state.config.witness_push.is_empty() {
            tracing::warn!("witness_push is set but the broker has no checkpoint_key; not pushing");
        }
        return;
    }
    for url in &state.config.witness_push {
        tokio::spawn(run(state.clone(), url.clone()));
    }
}

/// Why a push did not bring a cosignature.
enum Failure {
    /// The witness's latest size differs (409 with a size).
    Conflict(u64),
    Other(String),
}

async fn run(state: Arc<State>, url: String) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let endpoint = format!("{}/add-checkpoint", url.trim_end_matches('/'));
    let mut committed = state.log().committed();
    let mut closing = state.closing.subscribe();
    // The witness's latest size as far as we know; a 409 corrects it.
    let mut old = 0u64;
    let mut done = None::<u64>;
    let mut backoff = PUSH_INTERVAL;
    loop {
        if *closing.borrow() {
            return;
        }
        let head = state.log().head();
        if head.tree_size > 0 && done != Some(head.tree_size) {
            let mut tries = 0;
            loop {
                tries += 1;
                match push(&state, &client, &endpoint, old, &head).await {
                    Ok(kept) => {
                        crate::broker::metrics::witness_push(Ok(kept));
                        tracing::info!(witness = %url, size = head.tree_size, cosignatures = kept, "witness cosigned the checkpoint");
                        old = head.tree_size;
                        done = Some(head.tree_size);
                        backoff = PUSH_INTERVAL;
                    }
                    Err(Failure::Conflict(n)) if n <= head.tree_size && tries < 3 => {
                        old = n;
                        continue;
                    }
                    Err(Failure::Conflict(n)) => {
                        crate::broker::metrics::witness_push(Err(true));
                        tracing::error!(witness = %url, witness_size = n, size = head.tree_size, "the witness holds a checkpoint of this log this broker cannot extend (larger, or the log forked)");
                        old = n.min(head.tree_size);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                    Err(Failure::Other(e)) => {
                        crate::broker::metrics::witness_push(Err(false));
                        tracing::warn!(witness = %url, size = head.tree_size, error = %e, "pushing the checkpoint to the witness failed");
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
                break;
            }
        }
        let wait = if done == Some(head.tree_size) {
            PUSH_INTERVAL
        } else {
            backoff
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = closing.changed() => continue,
        }
        if done == Some(state.log().head().tree_size) {
            tokio::select! {
                r = committed.changed() => if r.is_err() { return },
                _ = closing.changed() => {}
            }
        }
    }
}

/// One add-checkpoint call; returns how many cosignatures were kept.
async fn push(
    state: &Arc<State>,
    client: &Client<HttpConnector, Full<Bytes>>,
    endpoint: &str,
    old: u64,
    head: &crate::proto::SignedTreeHead,
) -> Result<usize, Failure> {
    let Some(signer) = state.checkpoints.as_ref() else {
        return Err(Failure::Other("no checkpoint key".into()));
    };
    let size = head.tree_size;
    let note = signer
        .note_for(head)
        .map_err(|e| Failure::Other(e.to_string()))?;
    let proof = if old == 0 || old >= size {
        vec![]
    } else {
        let storage = state.log().storage_arc();
        tokio::task::spawn_blocking(move || merkle::consistency_path(old, size, &*storage))
            .await
            .map_err(|e| Failure::Other(e.to_string()))?
            .map_err(|e| Failure::Other(format!("consistency proof: {e}")))?
    };
    let body = request_body(old.min(size), &proof, &note);
    let req = http::Request::post(endpoint)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| Failure::Other(e.to_string()))?;
    let (status, text) = tokio::time::timeout(CALL_TIMEOUT, async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| Failure::Other(format!("cannot reach the witness: {e}")))?;
        let status = resp.status();
        let limited = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER);
        let bytes = limited
            .collect()
            .await
            .map_err(|e| Failure::Other(format!("reading the answer: {e}")))?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
    })
    .await
    .map_err(|_| Failure::Other(format!("no answer within {CALL_TIMEOUT:?}")))??;
    match status.as_u16() {
        200 => {}
        409 => {
            return match text.trim_end_matches('\n').parse::<u64>() {
                Ok(n) => Err(Failure::Conflict(n)),
                Err(_) => Err(Failure::Other(
                    "409 without a size: the witness holds a different checkpoint of this size (the log forked?)".into(),
                )),
            };
        }
        code => {
            let first = text.lines().next().unwrap_or("").chars().take(200);
            return Err(Failure::Other(format!(
                "HTTP {code}: {}",
                first.collect::<String>()
            )));
        }
    }
    let dir = state.directory();
    let mut known: Vec<crate::rules::note::Vkey> =
        dir.teams().filter_map(|t| t.witness.clone()).collect();
    if let Some(p) = dir.witness_policy() {
        known.extend(p.witness_keys());
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
    let skew = state.config.limits.clock_skew_secs;
    // Verifying and syncing the cosignatures to disk blocks.
    let st = state.clone();
    let kept = tokio::task::spawn_blocking(move || {
        let Some(signer) = st.checkpoints.as_ref() else {
            return 0;
        };
        let mut kept = 0;
        for line in text.lines().filter(|l| !l.is_empty()) {
            match signer.add_witnessed(size, line, &known, now, skew) {
                Ok(_) => kept += 1,
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring a cosignature line from the witness")
                }
            }
        }
        kept
    })
    .await
    .map_err(|e| Failure::Other(e.to_string()))?;
    if kept == 0 {
        return Err(Failure::Other(
            "the witness answered with no cosignature by a key the directory lists".into(),
        ));
    }
    Ok(kept)
}

/// The add-checkpoint body: `old N`, the proof lines, a blank line, the
/// checkpoint.
pub fn request_body(old: u64, proof: &[merkle::Hash], note: &str) -> String {
    use base64::Engine;
    let mut out = format!("old {old}\n");
    for h in proof {
        out.push_str(&base64::engine::general_purpose::STANDARD.encode(h));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(note);
    out
}
