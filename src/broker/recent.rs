//! Recently committed records, decoded once and shared by every live
//! subscription (at most a configured number of bytes of them), and the
//! head-only decode that delivery needs: a body's id,
//! sender, TLP, audience, exercise, kind and severity, without the free text
//! that makes up most of it. One feeder task reads each newly committed
//! record into the ring as it commits, so a thousand live subscribers wake
//! to records already decoded, with the record as a full reader receives it
//! built and encoded once for all of them.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use tokio::sync::watch;

use crate::broker::outgoing::encode_shared;
use crate::error::Error;
use crate::log::storage::{Storage, StoredRecord};
use crate::log::writer::timestamp;
use crate::proto::body::Content;
use crate::proto::{self as pb, Body};

/// Records kept decoded for live subscribers (a ring indexed by seq).
pub const RECENT: usize = 4096;

/// A committed record, decoded for delivery.
pub struct Decoded {
    pub seq: u64,
    pub rec: StoredRecord,
    pub env: pb::Envelope,
    /// The body's head only (see [`open_head`]): what access rules, filters
    /// and tombstones read. Readers receive the envelope's exact bytes.
    pub body: Body,
    /// The record as a reader who sees it in full receives it, before
    /// retraction and without the per-sender relay list: built and
    /// protobuf-encoded once (see [`Decoded::full`]); every such reader is
    /// sent these bytes.
    full: OnceLock<Bytes>,
}

impl Decoded {
    pub fn new(seq: u64, rec: StoredRecord, env: pb::Envelope, body: Body) -> Self {
        Decoded {
            seq,
            rec,
            env,
            body,
            full: OnceLock::new(),
        }
    }

    /// The shared full record's encoding, if built already (see
    /// [`Decoded::full`]).
    pub fn full_built(&self) -> Option<&Bytes> {
        self.full.get()
    }

    /// The encoding of the record as a full reader receives it when it is
    /// not retracted and the reader is not its sender on a federated broker
    /// (see `read::view_decoded`, whose fields this matches); `origin` is
    /// read once, as it never changes after commit.
    pub fn full(&self, storage: &Storage, federated: bool) -> Result<&Bytes, Error> {
        if let Some(r) = self.full.get() {
            return Ok(r);
        }
        let origin = if federated {
            match storage.origin_of(self.seq)? {
                Some((broker, seq)) => Some(pb::RecordOrigin {
                    broker,
                    seq,
                    proof: storage.origin_proof(self.seq)?.unwrap_or_default(),
                }),
                None => None,
            }
        } else {
            None
        };
        Ok(self.full.get_or_init(|| {
            encode_shared(&pb::Record {
                seq: self.seq,
                received_at: Some(timestamp(self.rec.received_at_ms)),
                leaf_hash: self.rec.leaf_hash.clone(),
                envelope: Some(self.env.clone()),
                retracted: None,
                relays: vec![],
                origin,
            })
        }))
    }
}

/// What delivery reads from a body, decoded from the same bytes as
/// [`pb::Body`] (same tags, same last-one-wins rules) but skipping the free
/// text (titles, descriptions, observables) that makes up most of it.
#[derive(Clone, PartialEq, prost::Message)]
struct BodyHead {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(string, tag = "2")]
    sender: String,
    /// Named by a tombstone.
    #[prost(message, optional, tag = "3")]
    created_at: Option<prost_types::Timestamp>,
    #[prost(int32, tag = "4")]
    tlp: i32,
    #[prost(message, optional, tag = "5")]
    audience: Option<pb::Audience>,
    #[prost(string, tag = "6")]
    exercise: String,
    #[prost(oneof = "HeadContent", tags = "10, 11, 12, 13, 14")]
    content: Option<HeadContent>,
}

/// The content's kind and, where it has one, its severity or priority.
#[derive(Clone, PartialEq, prost::Oneof)]
enum HeadContent {
    /// `IncidentReport.severity` is field 4.
    #[prost(message, tag = "10")]
    Incident(Level4),
    /// `Warning.severity` is field 3.
    #[prost(message, tag = "11")]
    Warning(Level3),
    /// `AssistanceRequest.priority` is field 6.
    #[prost(message, tag = "12")]
    Request(Level6),
    #[prost(message, tag = "13")]
    CaseUpdate(Unread),
    #[prost(message, tag = "14")]
    Retraction(Unread),
}

#[derive(Clone, PartialEq, prost::Message)]
struct Level4 {
    #[prost(int32, tag = "4")]
    level: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Level3 {
    #[prost(int32, tag = "3")]
    level: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Level6 {
    #[prost(int32, tag = "6")]
    level: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Unread {}

/// Decodes a stored record's envelope and the head of its body: a
/// [`Body`] whose content keeps only its kind and severity/priority.
pub fn open_head(rec: &StoredRecord) -> Result<(pb::Envelope, Body), Error> {
    use prost::Message;
    let env = pb::Envelope::decode(rec.envelope.clone())
        .map_err(|e| Error::Internal(format!("stored envelope does not decode: {e}")))?;
    let head = BodyHead::decode(env.body.clone())
        .map_err(|e| Error::Internal(format!("stored body does not decode: {e}")))?;
    let content = head.content.map(|c| match c {
        HeadContent::Incident(l) => Content::Incident(pb::IncidentReport {
            severity: l.level,
            ..Default::default()
        }),
        HeadContent::Warning(l) => Content::Warning(pb::Warning {
            severity: l.level,
            ..Default::default()
        }),
        HeadContent::Request(l) => Content::Request(pb::AssistanceRequest {
            priority: l.level,
            ..Default::default()
        }),
        HeadContent::CaseUpdate(_) => Content::CaseUpdate(Default::default()),
        HeadContent::Retraction(_) => Content::Retraction(Default::default()),
    });
    let body = Body {
        id: head.id,
        sender: head.sender,
        created_at: head.created_at,
        tlp: head.tlp,
        audience: head.audience,
        exercise: head.exercise,
        content,
        ..Default::default()
    };
    Ok((env, body))
}

/// The most recently read records, decoded once and shared by every
/// subscription (records never change once committed). Holds at most
/// [`RECENT`] records and `budget` bytes of them: a record that would pass
/// the budget is handed out without being kept.
pub struct RecentRecords {
    slots: Vec<Mutex<Option<Arc<Decoded>>>>,
    budget: usize,
    held: AtomicUsize,
    /// The last seq the feeder has read into the ring (never past the
    /// committed seq); live subscribers wait on it rather than on commits.
    filled: watch::Sender<u64>,
    feeding: AtomicBool,
    /// Bytes of records read for subscribers and not yet taken by tonic,
    /// summed over every subscription (what the broker itself buffers).
    queued: AtomicUsize,
    /// Records read for subscribers that fell out of the ring (see
    /// [`RecentRecords::behind`]).
    behind: Mutex<Behind>,
    /// Held while a span is read into `behind`, so subscribers at the same
    /// place read it once.
    loading: Mutex<()>,
}

/// Records read from storage for subscribers far behind the tail, shared by
/// every one of them that reads the same seqs: oldest out first, at most
/// half of `recent_cache_bytes`.
#[derive(Default)]
struct Behind {
    records: std::collections::HashMap<u64, Arc<Decoded>>,
    order: std::collections::VecDeque<u64>,
    held: usize,
}

/// Bytes a decoded record holds: its stored bytes (the envelope's body is a
/// view into them) and the decoded head.
fn weight(d: &Decoded) -> usize {
    d.rec.envelope.len()
        + d.rec.leaf_hash.len()
        + d.env.signature.len()
        + d.env.key_id.len()
        + d.body.id.len()
        + d.body.sender.len()
        // The shared full record's encoding: the envelope again, the
        // small fields and an origin proof, if any.
        + d.rec.envelope.len()
        + d.rec.leaf_hash.len()
        + 512
}

impl RecentRecords {
    pub fn new(budget: usize) -> Self {
        RecentRecords {
            slots: (0..RECENT).map(|_| Mutex::new(None)).collect(),
            budget,
            held: AtomicUsize::new(0),
            filled: watch::Sender::new(0),
            feeding: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
            behind: Mutex::new(Behind::default()),
            loading: Mutex::new(()),
        }
    }

    /// Where the feeder has read up to; changes after each commit it reads.
    pub fn filled(&self) -> watch::Receiver<u64> {
        self.filled.subscribe()
    }

    /// Bytes of records read for subscribers and not yet handed to tonic.
    pub fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Counts `n` bytes into (`add`) or out of [`Self::queued_bytes`].
    pub fn count_queued(&self, n: usize, add: bool) {
        if add {
            self.queued.fetch_add(n, Ordering::Relaxed);
        } else {
            self.queued.fetch_sub(n, Ordering::Relaxed);
        }
    }

    /// Record `seq` if the ring holds it, without reading storage.
    pub fn cached(&self, seq: u64) -> Option<Arc<Decoded>> {
        let slot = self.slots[(seq % RECENT as u64) as usize]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        slot.as_ref().filter(|d| d.seq == seq).cloned()
    }

    /// Whether this call is the first to claim the feeder (one per broker).
    pub fn claim_feeder(&self) -> bool {
        !self.feeding.swap(true, Ordering::AcqRel)
    }

    /// The log size the ring has been filled up to.
    pub fn filled_upto(&self) -> u64 {
        *self.filled.borrow()
    }

    /// Notes that the ring is filled up to `upto`, waking live subscribers.
    pub fn set_filled(&self, upto: u64) {
        self.filled.send_replace(upto);
    }

    /// Record `seq` (which must be committed), decoded.
    pub fn get(&self, storage: &Storage, seq: u64) -> Result<Arc<Decoded>, Error> {
        let slot = &self.slots[(seq % RECENT as u64) as usize];
        if let Some(d) = slot.lock().unwrap_or_else(|p| p.into_inner()).as_ref()
            && d.seq == seq
        {
            return Ok(d.clone());
        }
        let rec = storage
            .record(seq)?
            .ok_or_else(|| Error::Internal(format!("committed record {seq} is missing")))?;
        let (env, body) = open_head(&rec)?;
        let d = Arc::new(Decoded::new(seq, rec, env, body));
        let w = weight(&d);
        let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
        // The slot's record is older than this one: it goes either way, so
        // a burst of large records drains as the ring moves on.
        if let Some(old) = slot.take() {
            self.held.fetch_sub(weight(&old), Ordering::AcqRel);
        }
        if self.held.load(Ordering::Acquire) + w <= self.budget {
            self.held.fetch_add(w, Ordering::AcqRel);
            *slot = Some(d.clone());
        }
        Ok(d)
    }
}

impl RecentRecords {
    /// Records `from..=to` (committed) for a subscriber far behind the
    /// tail, from the records read for others before it, or read from
    /// storage in one span (stopping after `max_bytes`, at least one
    /// record) and kept for those after it. A thousand subscribers that
    /// fell behind together read and decode each record once, and share
    /// its encoding (see [`Decoded::full`]). Without `share` (the only
    /// open stream), the span is read and nothing kept.
    pub fn behind(
        &self,
        storage: &Storage,
        from: u64,
        to: u64,
        max_bytes: usize,
        share: bool,
    ) -> Result<Vec<Arc<Decoded>>, Error> {
        let _loading = if share {
            if let Some(kept) = self.kept_behind(from, to, max_bytes) {
                return Ok(kept);
            }
            let loading = self.loading.lock().unwrap_or_else(|p| p.into_inner());
            // Another subscriber may have read it while this one waited.
            if let Some(kept) = self.kept_behind(from, to, max_bytes) {
                return Ok(kept);
            }
            Some(loading)
        } else {
            None
        };
        let mut out = Vec::new();
        let mut bytes = 0;
        for r in storage.records(from, to) {
            let (seq, rec) = r?;
            let (env, body) = open_head(&rec)?;
            let d = Arc::new(Decoded::new(seq, rec, env, body));
            bytes += d.rec.envelope.len();
            if share {
                self.keep_behind(d.clone());
            }
            out.push(d);
            if bytes >= max_bytes {
                break;
            }
        }
        Ok(out)
    }

    /// The kept records from `from` on, if `from` is kept: up to `to`, the
    /// first one missing, or `max_bytes`.
    fn kept_behind(&self, from: u64, to: u64, max_bytes: usize) -> Option<Vec<Arc<Decoded>>> {
        let behind = self.behind.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        let mut bytes = 0;
        for seq in from..=to {
            let Some(d) = behind.records.get(&seq) else {
                break;
            };
            bytes += d.rec.envelope.len();
            out.push(d.clone());
            if bytes >= max_bytes {
                break;
            }
        }
        (!out.is_empty()).then_some(out)
    }

    fn keep_behind(&self, d: Arc<Decoded>) {
        let budget = self.budget / 2;
        let w = weight(&d);
        let mut behind = self.behind.lock().unwrap_or_else(|p| p.into_inner());
        let behind = &mut *behind;
        if w > budget || behind.records.contains_key(&d.seq) {
            return;
        }
        while behind.held + w > budget {
            let Some(old) = behind.order.pop_front() else {
                break;
            };
            if let Some(old) = behind.records.remove(&old) {
                behind.held -= weight(&old);
            }
        }
        behind.held += w;
        behind.order.push_back(d.seq);
        behind.records.insert(d.seq, d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Kind, Severity, Tlp};
    type Projection = (
        String,
        String,
        i32,
        Option<pb::Audience>,
        String,
        Option<(Kind, i32)>,
    );

    fn projection(b: &Body) -> Projection {
        let content = b.content.as_ref().map(|c| match c {
            Content::Incident(r) => (Kind::Incident, r.severity),
            Content::Warning(w) => (Kind::Warning, w.severity),
            Content::Request(r) => (Kind::Request, r.priority),
            Content::CaseUpdate(_) => (Kind::CaseUpdate, 0),
            Content::Retraction(_) => (Kind::Retraction, 0),
        });
        (
            b.id.clone(),
            b.sender.clone(),
            b.tlp,
            b.audience.clone(),
            b.exercise.clone(),
            content,
        )
    }

    fn stored(body_bytes: Vec<u8>) -> StoredRecord {
        use prost::Message;
        let env = pb::Envelope {
            body: body_bytes.into(),
            signature: vec![1; 64],
            key_id: "k".into(),
        };
        StoredRecord {
            envelope: env.encode_to_vec().into(),
            ..Default::default()
        }
    }

    #[test]
    fn body_head_reads_what_the_full_body_says() {
        use prost::Message;
        let full = |content| Body {
            id: "id-1".into(),
            sender: "CN-CNCERT".into(),
            created_at: None,
            tlp: Tlp::Amber as i32,
            audience: Some(pb::Audience {
                kind: Some(pb::audience::Kind::Community(true)),
            }),
            exercise: "BRICS-2026".into(),
            references: vec![pb::Reference {
                sender: "CN-CNCERT".into(),
                id: "x".into(),
            }],
            content: Some(content),
        };
        let contents = [
            Content::Incident(pb::IncidentReport {
                title: "t".into(),
                description: "d".repeat(2000),
                severity: Severity::High as i32,
                ..Default::default()
            }),
            Content::Warning(pb::Warning {
                severity: Severity::Critical as i32,
                ..Default::default()
            }),
            Content::Request(pb::AssistanceRequest {
                priority: Severity::Low as i32,
                ..Default::default()
            }),
            Content::CaseUpdate(Default::default()),
            Content::Retraction(pb::Retraction {
                reason: "wrong".into(),
                ..Default::default()
            }),
        ];
        for c in contents.iter().cloned() {
            let body = full(c);
            let (_, head) = open_head(&stored(body.encode_to_vec())).unwrap();
            assert_eq!(projection(&head), projection(&body));
        }
        // Two contents in one body (crafted bytes): both decoders keep the
        // last, so filters see what the full body says.
        let mut bytes = full(contents[0].clone()).encode_to_vec();
        bytes.extend(
            Body {
                content: Some(contents[1].clone()),
                ..Default::default()
            }
            .encode_to_vec(),
        );
        let (_, head) = open_head(&stored(bytes.clone())).unwrap();
        let body = Body::decode(bytes.as_slice()).unwrap();
        assert_eq!(projection(&head), projection(&body));
        assert!(matches!(head.content, Some(Content::Warning(_))));
    }
}
