//! Recently committed records, decoded once and shared by every live
//! subscription (at most a configured number of bytes of them), and the
//! head-only decode that delivery needs: a body's id,
//! sender, TLP, audience, exercise, kind and severity, without the free text
//! that makes up most of it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::Error;
use crate::log::storage::{Storage, StoredRecord};
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
        + 256
}

impl RecentRecords {
    pub fn new(budget: usize) -> Self {
        RecentRecords {
            slots: (0..RECENT).map(|_| Mutex::new(None)).collect(),
            budget,
            held: AtomicUsize::new(0),
        }
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
        let d = Arc::new(Decoded {
            seq,
            rec,
            env,
            body,
        });
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
