//! Subscriptions (SPEC §7): cursors over the log. A subscription catches up
//! from storage, then waits for the writer's commit notifications and reads
//! what was committed; it never polls. Memory is bounded by bytes: storage is
//! read (and the access rule applied) off the async workers in steps of at
//! most [`READ_BATCH_BYTES`] (one record when records are large), and at most
//! `limits.subscription_buffer_bytes` of records (or one record) wait for
//! the consumer. A consumer that stops reading only stops its own task:
//! publishers and other subscribers never wait for it, and it loses nothing
//! because it reads from the log when it continues.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

use crate::broker::limits::StreamSlot;
use crate::broker::read::view_decoded;
use crate::broker::recent::{Decoded, RECENT, open_head};
use crate::broker::state::State;
use crate::broker::transport::ConnState;
use crate::error::Error;
use crate::proto::body::Content;
use crate::proto::{self as pb, Body, Kind, subscribe_request::Start};
use crate::rules::access::TrafficScope;

/// Most records read from storage per step.
const READ_BATCH: u64 = 256;
/// Most bytes of records read from storage per step (at least one record).
pub const READ_BATCH_BYTES: usize = 128 * 1024;
/// Most records queued for the consumer (the byte bound usually comes first).
const CHANNEL: usize = 64;

/// The records of a subscription, as tonic sends them.
pub type RecordStream = Pin<Box<dyn Stream<Item = Result<pb::Record, Status>> + Send>>;

/// A subscription filter, checked against a decoded body.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    kinds: HashSet<i32>,
    senders: HashSet<String>,
    min_severity: i32,
    tlps: HashSet<i32>,
    pub scope: TrafficScope,
}

impl Filter {
    /// The filter of a request; each list may have at most `max_entries`
    /// entries (matched as sets, in constant time per record).
    pub fn from_proto(f: Option<&pb::Filter>, max_entries: usize) -> Result<Self, Error> {
        let Some(f) = f else {
            return Ok(Filter::default());
        };
        for (name, len) in [
            ("kinds", f.kinds.len()),
            ("senders", f.senders.len()),
            ("tlps", f.tlps.len()),
        ] {
            if len > max_entries {
                return Err(Error::invalid(
                    format!("filter.{name}"),
                    format!(
                        "has {len} entries; at most {max_entries} are allowed \
                         (limits.max_filter_entries)"
                    ),
                ));
            }
        }
        for k in &f.kinds {
            if Kind::try_from(*k).map_or(true, |k| k == Kind::Unspecified) {
                return Err(Error::BadRequest(format!("filter.kinds: unknown kind {k}")));
            }
        }
        if pb::Severity::try_from(f.min_severity).is_err() {
            return Err(Error::BadRequest(format!(
                "filter.min_severity: unknown severity {}",
                f.min_severity
            )));
        }
        Ok(Filter {
            kinds: f.kinds.iter().copied().collect(),
            senders: f.senders.iter().cloned().collect(),
            min_severity: f.min_severity,
            tlps: f.tlps.iter().copied().collect(),
            scope: TrafficScope::from_selector(f.exercise.as_ref()),
        })
    }

    /// Whether the sender filter admits `sender` (all a tombstone is matched on).
    pub fn matches_sender(&self, sender: &str) -> bool {
        self.senders.is_empty() || self.senders.contains(sender)
    }

    /// Whether a body passes (the exercise scope is checked by the access rule).
    pub fn matches(&self, body: &Body) -> bool {
        let (kind, severity) = match &body.content {
            Some(Content::Incident(r)) => (Kind::Incident, Some(r.severity)),
            Some(Content::Warning(w)) => (Kind::Warning, Some(w.severity)),
            Some(Content::Request(r)) => (Kind::Request, Some(r.priority)),
            Some(Content::CaseUpdate(_)) => (Kind::CaseUpdate, None),
            Some(Content::Retraction(_)) => (Kind::Retraction, None),
            None => return false,
        };
        (self.kinds.is_empty() || self.kinds.contains(&(kind as i32)))
            && (self.senders.is_empty() || self.senders.contains(&body.sender))
            && (self.tlps.is_empty() || self.tlps.contains(&body.tlp))
            && severity.is_none_or(|s| s >= self.min_severity)
    }
}

/// Checks a durable subscription name: 1–64 of `A-Za-z0-9._-`.
pub fn check_durable_name(name: &str) -> Result<(), Error> {
    if (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        Ok(())
    } else {
        Err(Error::BadRequest(format!(
            "durable name {name:?} must be 1 to 64 characters of letters, digits, '.', '_' and '-'"
        )))
    }
}

/// A record on its way to the consumer, holding its share of the
/// subscription's buffer until tonic takes it.
type Queued = (Result<pb::Record, Status>, Option<OwnedSemaphorePermit>);

/// Starts a subscription for `team`; the stream ends when caught up (without
/// `follow`), when the consumer goes away, or when the broker shuts down.
pub fn start(
    broker: Arc<State>,
    team: String,
    req: pb::SubscribeRequest,
    closing: watch::Receiver<bool>,
    conn: Option<Arc<ConnState>>,
) -> Result<RecordStream, Error> {
    let limits = &broker.config.limits;
    let filter = Filter::from_proto(req.filter.as_ref(), limits.max_filter_entries)?;
    let storage = broker.log().storage();
    let mut committed = broker.log().committed();
    let cursor = match &req.start {
        None => 0,
        Some(Start::AfterSeq(s)) => *s,
        Some(Start::Durable(name)) => {
            check_durable_name(name)?;
            storage.cursor(&team, name)?
        }
        Some(Start::Tail(_)) => *committed.borrow_and_update(),
    };
    let slot = broker.slots.acquire(&team)?;
    slot.read_up_to(cursor);
    let size = limits.subscription_buffer_bytes.min(Semaphore::MAX_PERMITS);
    let buffer = Arc::new(Semaphore::new(size));
    let (tx, rx) = mpsc::channel::<Queued>(CHANNEL);
    let span = tracing::info_span!("subscription", team = %team);
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            let out = Out { tx, buffer, size };
            if let Err(status) = run(
                broker,
                &team,
                cursor,
                &slot,
                req.follow,
                Arc::new(filter),
                &out,
                &mut committed,
                closing,
                conn,
            )
            .await
            {
                let _ = out.tx.send((Err(status), None)).await;
            }
        },
        span,
    ));
    // The permit is dropped as tonic takes the record: the buffer bounds
    // what waits for the consumer here, not what it has been sent.
    Ok(Box::pin(
        ReceiverStream::new(rx).map(|(item, _permit)| item),
    ))
}

/// Where a subscription's records go: the channel and its byte budget.
struct Out {
    tx: mpsc::Sender<Queued>,
    buffer: Arc<Semaphore>,
    /// The buffer's size in bytes (its permits when nothing waits).
    size: usize,
}

impl Out {
    /// Queues a record once its bytes fit in the buffer (a record larger
    /// than the whole buffer waits for it to be empty). False when the
    /// consumer went away.
    async fn send(&self, record: pb::Record) -> bool {
        let size = prost::Message::encoded_len(&record);
        let want = u32::try_from(size.clamp(1, self.size)).unwrap_or(u32::MAX);
        let permit = tokio::select! {
            p = self.buffer.clone().acquire_many_owned(want) => match p {
                Ok(p) => p,
                Err(_) => return false,
            },
            _ = self.tx.closed() => return false,
        };
        self.tx.send((Ok(record), Some(permit))).await.is_ok()
    }
}

/// One step of a subscription: the records the reader may see among
/// `(cursor, last]`, read and checked off the async workers, and where the
/// step ended.
fn read_step(
    broker: &State,
    team: &str,
    cursor: u64,
    last: u64,
    filter: &Filter,
    conn: Option<&ConnState>,
) -> Result<(Vec<pb::Record>, u64), Status> {
    let dir = broker.directory();
    standing(&dir, team, conn)?;
    let storage = broker.log().storage();
    let upto = *broker.log().committed().borrow();
    // Far behind: one range scan. Near the tail, where live subscribers
    // read the same new records: the shared cache, so a record is read
    // and decoded once for all of them.
    let far_behind = upto.saturating_sub(cursor) > RECENT as u64 / 2;
    let mut out = Vec::new();
    let mut bytes = 0;
    let mut end = cursor;
    let mut take = |d: &Decoded, env: &mut dyn FnMut() -> pb::Envelope| -> Result<(), Status> {
        if conn.is_some_and(|c| !c.is_valid()) {
            standing(&dir, team, conn)?;
        }
        // Content filters look at the body, so they apply only to records
        // delivered in full: a tombstone must not reveal the kind,
        // severity or TLP of what was withheld.
        let view = view_decoded(
            broker,
            team,
            d.seq,
            &d.rec,
            env,
            &d.body,
            &filter.scope,
            &dir,
        )
        .map_err(Status::from)?;
        if let Some(record) = view {
            let wanted = if record.envelope.is_some() {
                filter.matches(&d.body)
            } else {
                filter.matches_sender(&d.body.sender)
            };
            if wanted {
                out.push(record);
            }
        }
        Ok(())
    };
    if far_behind {
        for r in storage.records(cursor + 1, last) {
            let (seq, rec) = r.map_err(|e| Status::from(Error::from(e)))?;
            let (env, body) = open_head(&rec).map_err(Status::from)?;
            let mut d = Decoded {
                seq,
                rec,
                env,
                body,
            };
            let mut env = Some(std::mem::take(&mut d.env));
            take(&d, &mut || env.take().unwrap_or_default())?;
            end = seq;
            bytes += d.rec.envelope.len();
            if bytes >= READ_BATCH_BYTES {
                break;
            }
        }
    } else {
        for seq in cursor + 1..=last {
            let d = broker.recent.get(storage, seq).map_err(Status::from)?;
            take(&d, &mut || d.env.clone())?;
            end = seq;
            bytes += d.rec.envelope.len();
            if bytes >= READ_BATCH_BYTES {
                break;
            }
        }
    }
    Ok((out, end.max(cursor)))
}

/// Whether the subscription may go on: the team is still a member and the
/// connection's certificate still passes the directory in force.
fn standing(
    dir: &crate::rules::directory::Directory,
    team: &str,
    conn: Option<&ConnState>,
) -> Result<(), Status> {
    if !dir.is_member(team, time::OffsetDateTime::now_utc()) {
        return Err(Error::UnknownCaller(team.to_owned()).into());
    }
    if conn.is_some_and(|c| !c.is_valid()) {
        return Err(Error::Withdrawn {
            team: team.to_owned(),
        }
        .into());
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn run(
    broker: Arc<State>,
    team: &str,
    mut cursor: u64,
    slot: &StreamSlot,
    follow: bool,
    filter: Arc<Filter>,
    out: &Out,
    committed: &mut watch::Receiver<u64>,
    mut closing: watch::Receiver<bool>,
    conn: Option<Arc<ConnState>>,
) -> Result<(), Status> {
    let end = *committed.borrow_and_update();
    let mut reloads = broker.directory_reloads();
    loop {
        // The directory in force now: a reload applies to open streams, and
        // a team removed from it is cut off.
        broker.member(team)?;
        broker.homed_here(team)?;
        let upto = if follow {
            *committed.borrow_and_update()
        } else {
            end
        };
        while cursor < upto {
            let last = upto.min(cursor + READ_BATCH);
            let (b, t, f, c) = (
                broker.clone(),
                team.to_owned(),
                filter.clone(),
                conn.clone(),
            );
            let (records, reached) = tokio::task::spawn_blocking(move || {
                read_step(&b, &t, cursor, last, &f, c.as_deref())
            })
            .await
            .map_err(|e| Status::from(Error::Internal(format!("subscription reader: {e}"))))??;
            cursor = reached;
            slot.read_up_to(cursor);
            for record in records {
                if !out.send(record).await {
                    return Ok(()); // the consumer went away
                }
            }
        }
        if !follow {
            return Ok(());
        }
        tokio::select! {
            changed = committed.changed() => if changed.is_err() { return Ok(()) },
            _ = reloads.changed() => {}
            _ = closing.changed() => {
                return Err(Status::unavailable("the broker is shutting down; resume from your last seq"));
            }
            _ = out.tx.closed() => return Ok(()),
            _ = async { match &conn { Some(c) => c.withdrawn().await, None => std::future::pending().await } } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{IncidentReport, Severity, Tlp};

    fn incident(sender: &str, sev: Severity, tlp: Tlp) -> Body {
        Body {
            sender: sender.into(),
            tlp: tlp as i32,
            content: Some(Content::Incident(IncidentReport {
                severity: sev as i32,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn filters() {
        let all = Filter::default();
        let b = incident("CN-CNCERT", Severity::Medium, Tlp::Green);
        assert!(all.matches(&b));
        let f = Filter::from_proto(
            Some(&pb::Filter {
                kinds: vec![Kind::Warning as i32],
                ..Default::default()
            }),
            16,
        )
        .unwrap();
        assert!(!f.matches(&b));
        let f = Filter::from_proto(
            Some(&pb::Filter {
                min_severity: Severity::High as i32,
                ..Default::default()
            }),
            16,
        )
        .unwrap();
        assert!(!f.matches(&b));
        assert!(f.matches(&incident("CN-CNCERT", Severity::Critical, Tlp::Green)));
        let retraction = Body {
            content: Some(Content::Retraction(Default::default())),
            ..Default::default()
        };
        assert!(
            f.matches(&retraction),
            "retractions pass the severity filter"
        );
        let f = Filter::from_proto(
            Some(&pb::Filter {
                senders: vec!["RU-GOVCERT".into()],
                tlps: vec![Tlp::Green as i32],
                ..Default::default()
            }),
            16,
        )
        .unwrap();
        assert!(!f.matches(&b));
        assert!(f.matches(&incident("RU-GOVCERT", Severity::Low, Tlp::Green)));
        assert!(!f.matches(&incident("RU-GOVCERT", Severity::Low, Tlp::Red)));
        assert!(
            Filter::from_proto(
                Some(&pb::Filter {
                    kinds: vec![99],
                    ..Default::default()
                }),
                16
            )
            .is_err()
        );
        let long = pb::Filter {
            senders: (0..17).map(|i| format!("XX-T{i}")).collect(),
            ..Default::default()
        };
        let e = Filter::from_proto(Some(&long), 16).unwrap_err();
        assert!(e.to_string().contains("filter.senders"), "{e}");
        assert!(Filter::from_proto(Some(&long), 17).is_ok());
    }

    /// What delivery reads from a body: id, sender, TLP, audience,
    /// exercise, and the content's kind with its severity or priority.
    #[test]
    fn durable_names() {
        assert!(check_durable_name("soc-feed.1").is_ok());
        assert!(check_durable_name("").is_err());
        assert!(check_durable_name("a b").is_err());
        assert!(check_durable_name(&"x".repeat(65)).is_err());
    }
}
