//! `Exchange.PublishStream` (SPEC §4 for each envelope): many envelopes on
//! one HTTP/2 stream, each through [`publish::publish`] exactly as a unary
//! `Publish` (same checks, budgets, duplicates, metrics), many at once.
//! Their checks run at once, but each goes to the log writer after the one
//! before it, so records keep the stream's order (a retraction may follow
//! its target directly). Receipts go back in request order, each once its
//! record is durable; a
//! refusal takes its envelope's slot and the stream goes on. Memory is
//! bounded per stream: at most `limits.publish_stream_window` envelopes and
//! `limits.publish_stream_window_bytes` bytes (one envelope always fits) are
//! read ahead of the receipts sent, and receipts queue in a small channel;
//! past that the stream is not read, so HTTP/2 flow control holds the sender
//! back. The stream takes one of the team's stream slots, like a
//! subscription. On shutdown (or a withdrawn certificate) it stops reading,
//! answers what it has read, then ends with a status.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::stream::FuturesOrdered;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Status, Streaming};

use crate::broker::admission::CallBudget;
use crate::broker::limits::StreamSlot;
use crate::broker::publish;
use crate::broker::state::State;
use crate::broker::transport::ConnState;
use crate::error::Error;
use crate::proto as pb;

/// Receipts queued for the sender beyond those in the window (they are
/// small; a sender that does not read them stops the stream being read).
const RECEIPTS_QUEUED: usize = 64;

/// The receipts of a stream, as tonic sends them.
pub type ReceiptStream = Pin<Box<dyn Stream<Item = Result<pb::StreamReceipt, Status>> + Send>>;

/// Whether the stream may read another envelope with `count` envelopes of
/// `bytes` bytes awaiting their receipts: below both bounds, and always
/// when none are (so one envelope larger than the byte window still goes).
pub fn may_read(count: usize, bytes: usize, window: usize, window_bytes: usize) -> bool {
    count == 0 || (count < window && bytes < window_bytes)
}

/// The slot of one envelope's answer: the refusal a unary `Publish` would
/// have answered (same code and message, internal errors logged once and
/// sent as the same generic text).
pub fn refusal(e: Error) -> pb::Refusal {
    let status = Status::from(e);
    pb::Refusal {
        code: status.code() as i32,
        message: status.message().to_owned(),
    }
}

/// What [`start`] needs of the call besides its requests.
pub struct Call {
    pub team: String,
    pub closing: watch::Receiver<bool>,
    pub conn: Option<Arc<ConnState>>,
    /// The call's hold on the team's in-flight budget: given back as each
    /// envelope is read, since the window bounds what the stream holds.
    pub budget: Option<CallBudget>,
    /// Notes one refused envelope in the refusal log.
    pub on_refusal: fn(&State, &str, &Error),
}

/// Starts a publish stream for `call.team` over `requests`.
pub fn start(
    broker: Arc<State>,
    requests: Streaming<pb::PublishRequest>,
    call: Call,
) -> Result<ReceiptStream, Error> {
    let slot = broker.slots.acquire(&call.team)?;
    if let Some(b) = &call.budget {
        b.release();
    }
    let (tx, rx) = mpsc::channel(RECEIPTS_QUEUED);
    let span = tracing::info_span!("publish_stream", team = %call.team);
    tokio::spawn(tracing::Instrument::instrument(
        run(broker, requests, call, slot, tx),
        span,
    ));
    Ok(Box::pin(ReceiverStream::new(rx)))
}

/// One envelope on its way: its index, size, and its task's answer.
type Pending = Pin<Box<dyn std::future::Future<Output = (pb::StreamReceipt, usize)> + Send>>;

async fn run(
    broker: Arc<State>,
    mut requests: Streaming<pb::PublishRequest>,
    mut call: Call,
    _slot: StreamSlot,
    tx: mpsc::Sender<Result<pb::StreamReceipt, Status>>,
) {
    let limits = &broker.config.limits;
    let (window, window_bytes) = (
        limits.publish_stream_window,
        limits.publish_stream_window_bytes,
    );
    let mut pending: FuturesOrdered<Pending> = FuturesOrdered::new();
    // Each envelope goes to the writer after the one before it (its checks
    // run at once with theirs): the log keeps the stream's order.
    let mut previous: Option<oneshot::Receiver<()>> = None;
    let mut bytes = 0usize;
    let mut next_index = 0u64;
    // Why the stream ends once what was read is answered; `None`: the
    // sender closed its side.
    let mut end: Option<Status> = None;
    let mut reading = true;
    if *call.closing.borrow_and_update() {
        end = Some(Error::Unavailable.into());
        reading = false;
    }
    loop {
        let room = reading && may_read(pending.len(), bytes, window, window_bytes);
        tokio::select! {
            // Answers first: a full window drains before more is read.
            biased;
            Some((receipt, size)) = pending.next(), if !pending.is_empty() => {
                bytes -= size;
                if tx.send(Ok(receipt)).await.is_err() {
                    return; // the sender went away; what it sent is committed anyway
                }
            }
            _ = call.closing.changed(), if reading => {
                reading = false;
                end = Some(Status::unavailable(
                    "the broker is shutting down; envelopes after the last receipt were not read: \
                     send them again (a stored message gets its original receipt)",
                ));
            }
            _ = withdrawn(call.conn.as_deref()), if reading => {
                reading = false;
                end = Some(Error::Withdrawn { team: call.team.clone() }.into());
            }
            msg = requests.next(), if room => match msg {
                Some(Ok(req)) => {
                    if let Some(b) = &call.budget {
                        b.release();
                    }
                    let index = next_index;
                    next_index += 1;
                    let size = req.envelope.as_ref().map_or(0, prost::Message::encoded_len);
                    bytes += size;
                    let (done, next) = oneshot::channel();
                    let turn = publish::Turn { after: previous.replace(next), done: Some(done) };
                    pending.push_back(publish_one(&broker, &call, index, size, req.envelope, turn));
                }
                Some(Err(status)) => {
                    reading = false;
                    end = Some(status);
                }
                None => reading = false,
            },
            else => break,
        }
    }
    if let Some(status) = end {
        let _ = tx.send(Err(status)).await;
    }
}

/// Completes when the connection's certificate is withdrawn.
async fn withdrawn(conn: Option<&ConnState>) {
    match conn {
        Some(c) => c.withdrawn().await,
        None => std::future::pending().await,
    }
}

/// Publishes one envelope on a task of its own (its checks run in
/// parallel with the stream's others); its receipt or refusal.
fn publish_one(
    broker: &Arc<State>,
    call: &Call,
    index: u64,
    size: usize,
    envelope: Option<pb::Envelope>,
    turn: publish::Turn,
) -> Pending {
    let (b, team, on_refusal) = (broker.clone(), call.team.clone(), call.on_refusal);
    let task = tokio::spawn(tracing::Instrument::in_current_span(async move {
        let outcome = match publish::publish_in_turn(&b, &team, envelope, turn).await {
            Ok(r) => pb::stream_receipt::Outcome::Receipt(r),
            Err(e) => {
                on_refusal(&b, &team, &e);
                pb::stream_receipt::Outcome::Refused(refusal(e))
            }
        };
        pb::StreamReceipt {
            index,
            outcome: Some(outcome),
        }
    }));
    Box::pin(async move {
        let receipt = task.await.unwrap_or_else(|e| pb::StreamReceipt {
            index,
            outcome: Some(pb::stream_receipt::Outcome::Refused(refusal(
                Error::Internal(format!("publish task failed: {e}")),
            ))),
        });
        (receipt, size)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_bounds_count_and_bytes_but_one_always_fits() {
        assert!(may_read(0, 0, 4, 100));
        assert!(may_read(3, 99, 4, 100));
        assert!(!may_read(4, 10, 4, 100));
        assert!(!may_read(1, 100, 4, 100));
        // Nothing in flight: even an envelope over the byte window is read.
        assert!(may_read(0, 0, 1, 1));
    }

    #[test]
    fn refusal_says_what_unary_says() {
        let e = Error::NotSender {
            claimed: "A".into(),
            team: "B".into(),
        };
        let text = e.to_string();
        let r = refusal(e);
        assert_eq!(r.code, tonic::Code::PermissionDenied as i32);
        assert_eq!(r.message, text);
        let r = refusal(Error::Internal("disk on fire".into()));
        assert_eq!(r.code, tonic::Code::Internal as i32);
        assert!(!r.message.contains("disk"));
    }
}
