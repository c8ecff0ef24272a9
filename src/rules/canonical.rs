//! The canonical-body rule (SPEC §3): the broker accepts a body only if its
//! bytes are the canonical protobuf encoding of a `Body`, so that what was
//! signed is exactly what every reader sees and nothing unvalidated rides
//! along.
//!
//! Canonical means: fields in field-number order, each non-repeated field at
//! most once, exactly one content, no unknown fields, no default values
//! written (a oneof member that is set is written even when it holds its
//! default, as every protobuf library does). Python's `SerializeToString()`,
//! prost's `encode` and Go's deterministic marshalling produce it for messages
//! without maps. The check decodes, re-encodes and compares bytes; when they
//! differ, a walk over the top-level fields says which rule was broken.

use prost::Message;
use prost::encoding::{WireType, decode_key, decode_varint};

use crate::proto::Body;

/// Why body bytes are not the canonical encoding of a `Body`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotCanonical {
    #[error("is not a valid certex.v1.Body encoding ({0})")]
    Undecodable(String),
    #[error("carries unknown field number {0}, which no reader would show")]
    UnknownField(u32),
    #[error("carries field {0} more than once (readers would show only the last)")]
    Repeated(&'static str),
    #[error("carries two contents, {0} and {1}: a message has exactly one")]
    TwoContents(&'static str, &'static str),
    #[error("has field {later} before field {earlier}: fields must be in field-number order")]
    OutOfOrder {
        earlier: &'static str,
        later: &'static str,
    },
    #[error("writes field {0} with its default value, which the canonical form omits")]
    DefaultWritten(&'static str),
    #[error(
        "has field {0} whose contents are not in canonical form (order, repeats, unknown fields or defaults inside it)"
    )]
    Nested(&'static str),
}

/// The top-level fields of `Body`: (number, name, repeated, content).
const FIELDS: &[(u32, &str, bool, bool)] = &[
    (1, "id", false, false),
    (2, "sender", false, false),
    (3, "created_at", false, false),
    (4, "tlp", false, false),
    (5, "audience", false, false),
    (6, "exercise", false, false),
    (7, "references", true, false),
    (10, "incident", false, true),
    (11, "warning", false, true),
    (12, "request", false, true),
    (13, "case_update", false, true),
    (14, "retraction", false, true),
];

/// Decodes `bytes` as a `Body` if, and only if, they are its canonical
/// encoding.
pub fn decode_canonical(bytes: &[u8]) -> Result<Body, NotCanonical> {
    let body = Body::decode(bytes).map_err(|e| NotCanonical::Undecodable(e.to_string()))?;
    if body.encode_to_vec() == bytes {
        return Ok(body);
    }
    Err(diagnose(bytes))
}

/// Names the first broken rule in bytes that decode but are not canonical.
fn diagnose(mut buf: &[u8]) -> NotCanonical {
    let mut last: Option<(u32, &'static str)> = None;
    let mut content: Option<&'static str> = None;
    let mut seen = std::collections::BTreeSet::new();
    while !buf.is_empty() {
        let Ok((number, wire)) = decode_key(&mut buf) else {
            return NotCanonical::Undecodable("bad field key".into());
        };
        let Some(&(_, name, repeated, is_content)) = FIELDS.iter().find(|f| f.0 == number) else {
            return NotCanonical::UnknownField(number);
        };
        // The field's value, and whether it is the default one.
        let value: &[u8] = match wire {
            WireType::Varint => {
                let before = buf;
                let Ok(v) = decode_varint(&mut buf) else {
                    return NotCanonical::Undecodable(format!("bad varint in field {name}"));
                };
                if v == 0 {
                    return NotCanonical::DefaultWritten(name);
                }
                &before[..before.len() - buf.len()]
            }
            WireType::LengthDelimited => {
                let Ok(len) = decode_varint(&mut buf) else {
                    return NotCanonical::Undecodable(format!("bad length in field {name}"));
                };
                let Some(v) = buf.get(..len as usize) else {
                    return NotCanonical::Undecodable(format!("field {name} is truncated"));
                };
                buf = &buf[len as usize..];
                v
            }
            _ => return NotCanonical::Undecodable(format!("field {name} has a wrong wire type")),
        };
        if !repeated && !seen.insert(number) {
            return NotCanonical::Repeated(name);
        }
        if is_content {
            if let Some(first) = content {
                return NotCanonical::TwoContents(first, name);
            }
            content = Some(name);
        }
        // An empty plain string is a default; a oneof member (content) is
        // written even when empty.
        if matches!(number, 1 | 2 | 6) && value.is_empty() {
            return NotCanonical::DefaultWritten(name);
        }
        if let Some((prev, prev_name)) = last
            && number < prev
        {
            return NotCanonical::OutOfOrder {
                earlier: name,
                later: prev_name,
            };
        }
        if !nested_canonical(number, value) {
            return NotCanonical::Nested(name);
        }
        last = Some((number, name));
    }
    // Not reached for bytes that decode: some rule above differs. Say so
    // plainly rather than guess.
    NotCanonical::Nested("body")
}

/// Whether a nested message field's bytes survive a decode and re-encode.
fn nested_canonical(number: u32, value: &[u8]) -> bool {
    fn same<M: Message + Default>(v: &[u8]) -> bool {
        M::decode(v).is_ok_and(|m| m.encode_to_vec() == v)
    }
    use crate::proto as pb;
    match number {
        3 => same::<prost_types::Timestamp>(value),
        5 => same::<pb::Audience>(value),
        10 => same::<pb::IncidentReport>(value),
        11 => same::<pb::Warning>(value),
        7 => same::<pb::Reference>(value),
        12 => same::<pb::AssistanceRequest>(value),
        13 => same::<pb::CaseUpdate>(value),
        14 => same::<pb::Retraction>(value),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::body::Content;
    use crate::proto::{IncidentReport, Severity, Tlp, Warning};
    use prost::encoding::{encode_key, encode_varint};

    fn canonical() -> Body {
        Body {
            id: "id-1".into(),
            sender: "CN-CNCERT".into(),
            created_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            tlp: Tlp::Green as i32,
            audience: Some(crate::proto::Audience {
                kind: Some(crate::proto::audience::Kind::Community(true)),
            }),
            exercise: String::new(),
            references: vec![],
            content: Some(Content::Incident(IncidentReport {
                title: "t".into(),
                category: 5,
                severity: Severity::High as i32,
                ..Default::default()
            })),
        }
    }

    /// Appends one length-delimited field.
    fn bytes_field(out: &mut Vec<u8>, number: u32, value: &[u8]) {
        encode_key(number, WireType::LengthDelimited, out);
        encode_varint(value.len() as u64, out);
        out.extend_from_slice(value);
    }

    fn varint_field(out: &mut Vec<u8>, number: u32, value: u64) {
        encode_key(number, WireType::Varint, out);
        encode_varint(value, out);
    }

    #[test]
    fn prost_encoding_is_canonical() {
        let b = canonical();
        assert_eq!(decode_canonical(&b.encode_to_vec()).unwrap(), b);
        // A oneof member holding its default value is written, and canonical.
        let mut b = canonical();
        b.audience = Some(crate::proto::Audience {
            kind: Some(crate::proto::audience::Kind::Community(false)),
        });
        decode_canonical(&b.encode_to_vec()).unwrap();
    }

    #[test]
    fn each_broken_rule_is_named() {
        let good = canonical().encode_to_vec();
        let warning = Warning {
            title: "w".into(),
            severity: 2,
            ..Default::default()
        }
        .encode_to_vec();

        // Two contents: an incident followed by a warning.
        let mut two = good.clone();
        bytes_field(&mut two, 11, &warning);
        assert_eq!(
            decode_canonical(&two),
            Err(NotCanonical::TwoContents("incident", "warning"))
        );

        // sender twice (last one would win).
        let mut b = Vec::new();
        bytes_field(&mut b, 1, b"id-1");
        bytes_field(&mut b, 2, b"CN-CNCERT");
        bytes_field(&mut b, 2, b"US-CISA");
        assert_eq!(decode_canonical(&b), Err(NotCanonical::Repeated("sender")));

        // id twice.
        let mut b = Vec::new();
        bytes_field(&mut b, 1, b"a");
        bytes_field(&mut b, 1, b"b");
        assert_eq!(decode_canonical(&b), Err(NotCanonical::Repeated("id")));

        // An unknown field appended to a valid body.
        let mut b = good.clone();
        bytes_field(&mut b, 99, &[0u8; 100]);
        assert_eq!(decode_canonical(&b), Err(NotCanonical::UnknownField(99)));

        // Fields out of order: sender before id.
        let mut b = Vec::new();
        bytes_field(&mut b, 2, b"CN-CNCERT");
        bytes_field(&mut b, 1, b"id-1");
        assert_eq!(
            decode_canonical(&b),
            Err(NotCanonical::OutOfOrder {
                earlier: "id",
                later: "sender"
            })
        );

        // Defaults written: an empty exercise, a zero TLP.
        let mut b = Vec::new();
        bytes_field(&mut b, 1, b"id-1");
        bytes_field(&mut b, 6, b"");
        assert_eq!(
            decode_canonical(&b),
            Err(NotCanonical::DefaultWritten("exercise"))
        );
        let mut b = Vec::new();
        bytes_field(&mut b, 1, b"id-1");
        varint_field(&mut b, 4, 0);
        assert_eq!(
            decode_canonical(&b),
            Err(NotCanonical::DefaultWritten("tlp"))
        );

        // Inside the content: the incident's title twice.
        let mut inner = Vec::new();
        bytes_field(&mut inner, 1, b"first");
        bytes_field(&mut inner, 1, b"second");
        let mut b = Vec::new();
        bytes_field(&mut b, 1, b"id-1");
        bytes_field(&mut b, 10, &inner);
        assert_eq!(decode_canonical(&b), Err(NotCanonical::Nested("incident")));

        // Not a Body at all.
        assert!(matches!(
            decode_canonical(&[0x0a, 0x05, b'a']),
            Err(NotCanonical::Undecodable(_))
        ));
    }
}
