//! Subscriptions (SPEC §7): cursors over the log. A subscription catches up
//! from storage, then waits for the recent-records feeder (which reads each
//! commit once for everyone) and takes the new records from its ring; it
//! never polls. A subscription reads only when tonic asks for its next
//! record, so a consumer that falls behind is not buffered for: it reads
//! from the ring or the log when it continues, and loses nothing. Memory is
//! bounded by bytes: storage is read (and the access rule applied) off the
//! async workers in steps of at most `limits.subscription_buffer_bytes`
//! and [`READ_BATCH_BYTES`] (one record when records are large), one step
//! waiting and one read ahead while catching up. Publishers and other subscribers never wait for a consumer.

use std::collections::{HashSet, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Weak};

use tokio::sync::watch;
use tokio_stream::Stream;
use tonic::Status;

use crate::broker::limits::StreamSlot;
use crate::broker::outgoing::Outgoing;
use crate::broker::read::view_decoded;
use crate::broker::recent::{Decoded, RECENT};
use crate::broker::state::State;
use crate::broker::transport::ConnState;
use crate::error::Error;
use crate::proto::body::Content;
use crate::proto::{self as pb, Body, Kind, subscribe_request::Start};
use crate::rules::access::{self, Distribution, TrafficScope, Visibility};
use crate::rules::directory::Directory;

/// Most records read from storage per step.
const READ_BATCH: u64 = 256;
/// Most bytes of records read from storage per step (at least one record).
pub const READ_BATCH_BYTES: usize = 128 * 1024;

/// The records of a subscription, as tonic sends them.
pub type RecordStream = Pin<Box<dyn Stream<Item = Result<Outgoing, Status>> + Send>>;

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

/// Starts a subscription for `team`; the stream ends when caught up (without
/// `follow`), when the consumer goes away, or when the broker shuts down.
///
/// The stream reads only when tonic asks for the next record, that is when
/// HTTP/2 has taken what came before: a subscriber that falls behind is not
/// buffered for, it reads from the ring of recent records or from the log
/// when it continues. What waits here is one step of reading
/// (`limits.subscription_buffer_bytes` and [`READ_BATCH_BYTES`] at most, or
/// one record), and while catching up the step read ahead.
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
    start_feeder(&broker);
    // A step is the buffer (at most READ_BATCH_BYTES); catching up, one
    // more step is read ahead while it is sent. Smaller steps cost a
    // blocking-pool round trip and wakeups each (context switches led the
    // catch-up profile with half-size steps).
    let step_bytes = limits.subscription_buffer_bytes.clamp(1, READ_BATCH_BYTES);
    let end = *committed.borrow_and_update();
    let span = tracing::info_span!("subscription", team = %team);
    let sub = Sub {
        filled: broker.recent.filled(),
        reloads: broker.directory_reloads(),
        broker,
        team,
        cursor,
        slot,
        follow: req.follow,
        end,
        filter: Arc::new(filter),
        committed,
        closing,
        conn,
        step_bytes,
        queue: VecDeque::new(),
        queued: 0,
        ahead: None,
        done: false,
    };
    Ok(Box::pin(futures_util::stream::unfold(
        sub,
        move |mut sub| {
            let span = span.clone();
            async move {
                let item = tracing::Instrument::instrument(sub.next(), span).await?;
                Some((item, sub))
            }
        },
    )))
}

/// A step of records read off the async workers, and where it ended.
type Step = Result<(Vec<Outgoing>, u64), Status>;

/// A subscription's position and what it has read but not yet handed over.
struct Sub {
    broker: Arc<State>,
    team: String,
    cursor: u64,
    slot: StreamSlot,
    follow: bool,
    /// Without `follow`, the stream ends at the seq committed when it began.
    end: u64,
    filter: Arc<Filter>,
    committed: watch::Receiver<u64>,
    filled: watch::Receiver<u64>,
    reloads: watch::Receiver<u64>,
    closing: watch::Receiver<bool>,
    conn: Option<Arc<ConnState>>,
    step_bytes: usize,
    queue: VecDeque<Outgoing>,
    /// Bytes in `queue` (counted in the broker-wide total too).
    queued: usize,
    /// The next storage step, read while this one is sent (catch-up only):
    /// the cursor it starts after, and the read.
    ahead: Option<(u64, tokio::task::JoinHandle<Step>)>,
    done: bool,
}

impl Drop for Sub {
    fn drop(&mut self) {
        self.broker.recent.count_queued(self.queued, false);
        if let Some((_, read)) = self.ahead.take() {
            read.abort();
        }
    }
}

impl Sub {
    /// The next item of the stream, or `None` when it ends.
    async fn next(&mut self) -> Option<Result<Outgoing, Status>> {
        loop {
            if let Some(r) = self.queue.pop_front() {
                let n = r.encoded_len();
                self.queued -= n;
                self.broker.recent.count_queued(n, false);
                return Some(Ok(r));
            }
            if self.done {
                return None;
            }
            match self.fill().await {
                Ok(true) => {}
                Ok(false) => self.done = true,
                Err(status) => {
                    self.done = true;
                    return Some(Err(status));
                }
            }
        }
    }

    fn push(&mut self, r: Outgoing) {
        let n = r.encoded_len();
        self.queued += n;
        self.broker.recent.count_queued(n, true);
        self.queue.push_back(r);
    }

    /// Reads the next records into the queue, waiting for commits when
    /// following; false when the stream is over.
    async fn fill(&mut self) -> Result<bool, Status> {
        loop {
            // The directory in force now: a reload applies to open streams,
            // and a team removed from it is cut off.
            self.broker.member(&self.team)?;
            self.broker.homed_here(&self.team)?;
            let committed = if self.follow {
                *self.committed.borrow_and_update()
            } else {
                self.end
            };
            // Live subscribers near the tail read what the feeder has put
            // in the ring; one far behind reads the log.
            let filled = *self.filled.borrow_and_update();
            let near = filled.saturating_sub(self.cursor) <= RECENT as u64 / 2;
            let upto = if near && self.follow {
                committed.min(filled)
            } else {
                committed
            };
            if self.cursor < upto {
                self.step(upto, near).await?;
                if !self.queue.is_empty() {
                    return Ok(true);
                }
                continue;
            }
            if !self.follow {
                return Ok(false);
            }
            let conn = self.conn.clone();
            tokio::select! {
                changed = self.filled.changed() => if changed.is_err() { return Ok(false) },
                _ = self.reloads.changed() => {}
                _ = self.closing.changed() => {
                    return Err(Status::unavailable("the broker is shutting down; resume from your last seq"));
                }
                _ = async { match &conn { Some(c) => c.withdrawn().await, None => std::future::pending().await } } => {}
            }
        }
    }

    /// Reads one step of `(cursor, upto]`: from the ring on this task while
    /// each record is there and needs nothing more, else one storage step
    /// off the async workers.
    async fn step(&mut self, upto: u64, near: bool) -> Result<(), Status> {
        let last = upto.min(self.cursor + READ_BATCH);
        if near {
            let dir = self.broker.directory();
            standing(&dir, &self.team, self.conn.as_deref())?;
            let start = self.cursor;
            while self.cursor < last && self.queued < self.step_bytes {
                let seq = self.cursor + 1;
                let Some(d) = self.broker.recent.cached(seq) else {
                    break;
                };
                let view = shared_view(
                    &self.broker,
                    &self.team,
                    &d,
                    &self.filter,
                    &dir,
                    self.conn.as_deref(),
                )?;
                match view {
                    Some(view) => {
                        if let Some(r) = view {
                            self.push(r);
                        }
                        self.cursor = seq;
                    }
                    None => break,
                }
            }
            if self.cursor > start {
                self.slot.read_up_to(self.cursor);
                return Ok(());
            }
        }
        let read = match self.ahead.take() {
            Some((from, read)) if from == self.cursor => read,
            other => {
                if let Some((_, stale)) = other {
                    stale.abort();
                }
                self.spawn_read(self.cursor, last)
            }
        };
        let (records, reached) = read
            .await
            .map_err(|e| Status::from(Error::Internal(format!("subscription reader: {e}"))))??;
        self.cursor = reached;
        self.slot.read_up_to(reached);
        // Catching up: the next step is read while this one is sent.
        if !near && reached < upto {
            let next_last = upto.min(reached + READ_BATCH);
            self.ahead = Some((reached, self.spawn_read(reached, next_last)));
        }
        for r in records {
            self.push(r);
        }
        Ok(())
    }

    fn spawn_read(&self, cursor: u64, last: u64) -> tokio::task::JoinHandle<Step> {
        let (b, t, f, c, bytes) = (
            self.broker.clone(),
            self.team.clone(),
            self.filter.clone(),
            self.conn.clone(),
            self.step_bytes,
        );
        tokio::task::spawn_blocking(move || {
            read_step(&b, &t, cursor, last, &f, c.as_deref(), bytes)
        })
    }
}

/// The record `team` receives from ring entry `d` when deciding it needs
/// no storage read (`Some(None)`: hidden or filtered out), else `None` to
/// take [`view_decoded`]'s way: a retracted record (tombstones read the
/// retraction), the sender's own record on a federated broker (its relay
/// list), or a shared record not built yet. Same rules, same fields.
fn shared_view(
    broker: &State,
    team: &str,
    d: &Decoded,
    filter: &Filter,
    dir: &Directory,
    conn: Option<&ConnState>,
) -> Result<Option<Option<Outgoing>>, Status> {
    if conn.is_some_and(|c| !c.is_valid()) {
        standing(dir, team, conn)?;
    }
    let storage = broker.log().storage();
    let federated = broker.config.broker.is_some();
    if (federated && team == d.body.sender)
        || storage
            .retraction_of(d.seq)
            .map_err(|e| Status::from(Error::from(e)))?
            .is_some()
    {
        return Ok(None);
    }
    let dist = Distribution {
        sender: &d.body.sender,
        audience: d.body.audience.as_ref(),
        exercise: &d.body.exercise,
        also_readers: &d.rec.also_readers,
    };
    let scope = &filter.scope;
    if !scope.includes(&d.body.exercise) || dir.team(team).is_none() {
        return Ok(Some(None));
    }
    match access::visibility(team, &dist, false, scope) {
        Visibility::Hidden => Ok(Some(None)),
        Visibility::Tombstone => Ok(None),
        Visibility::Full if !filter.matches(&d.body) => Ok(Some(None)),
        Visibility::Full => {
            let full = if federated {
                match d.full_built() {
                    Some(r) => r,
                    None => return Ok(None),
                }
            } else {
                d.full(storage, false).map_err(Status::from)?
            };
            Ok(Some(Some(Outgoing::Shared(full.clone()))))
        }
    }
}

/// One step of a subscription: the records the reader may see among
/// `(cursor, last]` (at most `max_bytes` of stored records, or one), read
/// and checked off the async workers, and where the step ended.
fn read_step(
    broker: &State,
    team: &str,
    cursor: u64,
    last: u64,
    filter: &Filter,
    conn: Option<&ConnState>,
    max_bytes: usize,
) -> Result<(Vec<Outgoing>, u64), Status> {
    let dir = broker.directory();
    standing(&dir, team, conn)?;
    let storage = broker.log().storage();
    let upto = *broker.log().committed().borrow();
    // Far behind: spans read once for all subscribers at the same place.
    // Near the tail, where live subscribers read the same new records: the
    // ring, so a record is read and decoded once for all of them.
    let far_behind = upto.saturating_sub(cursor) > RECENT as u64 / 2;
    // The record this reader gets: with `shared`, the shared encoding when
    // it sees the record in full; else (or for a tombstone, a retracted
    // record, its relay list) its own view, built from storage and encoded
    // for it alone, one copy fewer for a record no one else reads.
    let view = |d: &Decoded, shared: bool| -> Result<Option<Outgoing>, Status> {
        if shared && let Some(shared) = shared_view(broker, team, d, filter, &dir, conn)? {
            return Ok(shared);
        }
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
            || d.env.clone(),
            &d.body,
            &filter.scope,
            &dir,
        )
        .map_err(Status::from)?;
        Ok(view.and_then(|record| {
            let wanted = if record.envelope.is_some() {
                filter.matches(&d.body)
            } else {
                filter.matches_sender(&d.body.sender)
            };
            wanted.then(|| Outgoing::Own(Box::new(record)))
        }))
    };
    let mut out = Vec::new();
    let mut end = cursor;
    if far_behind {
        // Read once for every subscriber this far behind at the same
        // place (see `RecentRecords::behind`); a lone reader keeps nothing.
        let share = broker.slots.open() > 1;
        let span = broker
            .recent
            .behind(storage, cursor + 1, last, max_bytes, share)
            .map_err(Status::from)?;
        for d in span {
            out.extend(view(&d, share)?);
            end = d.seq;
        }
    } else {
        let mut bytes = 0;
        for seq in cursor + 1..=last {
            let d = broker.recent.get(storage, seq).map_err(Status::from)?;
            out.extend(view(&d, true)?);
            end = seq;
            bytes += d.rec.envelope.len();
            if bytes >= max_bytes {
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

/// Starts the feeder once per broker: after each commit it reads the new
/// records (the last [`RECENT`]` / 2` of them at most) into the ring and
/// builds their shared full record, off the async workers, then moves
/// `RecentRecords::filled`. It holds the broker weakly and ends with it.
pub fn start_feeder(state: &Arc<State>) {
    if !state.recent.claim_feeder() {
        return;
    }
    let weak: Weak<State> = Arc::downgrade(state);
    let mut committed = state.log().committed();
    let mut closing = state.closing.subscribe();
    tokio::spawn(async move {
        loop {
            let upto = *committed.borrow_and_update();
            let Some(st) = weak.upgrade() else { return };
            let from = st
                .recent
                .filled_upto()
                .max(upto.saturating_sub(RECENT as u64 / 2));
            if upto > from {
                let reader = st.clone();
                let read = tokio::task::spawn_blocking(move || {
                    let storage = reader.log().storage();
                    let federated = reader.config.broker.is_some();
                    for seq in from + 1..=upto {
                        reader.recent.get(storage, seq)?.full(storage, federated)?;
                    }
                    Ok::<_, Error>(())
                })
                .await;
                // Subscribers read what the ring misses from storage
                // and meet the same error there, with their own status.
                match read {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!("recent-records feeder: {e}"),
                    Err(e) => tracing::warn!("recent-records feeder: {e}"),
                }
            }
            st.recent.set_filled(upto);
            drop(st);
            tokio::select! {
                c = committed.changed() => if c.is_err() { return },
                _ = closing.changed() => return,
            }
        }
    });
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
