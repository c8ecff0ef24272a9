//! Times as certex writes them (SPEC §11): RFC 3339 in UTC to the
//! millisecond, and conversions to and from protobuf timestamps.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// RFC 3339 in UTC, to the millisecond.
pub fn format_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.replace_millisecond(t.millisecond())
        .unwrap_or(t)
        .format(&Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Parses an RFC 3339 time into a protobuf timestamp.
pub fn parse_timestamp(field: &str, s: &str) -> Result<prost_types::Timestamp, String> {
    let t = OffsetDateTime::parse(s, &Rfc3339)
        .map_err(|e| format!("{field}: {s:?} is not an RFC 3339 time ({e})"))?;
    Ok(to_timestamp(t))
}

/// A time as a protobuf timestamp.
pub fn to_timestamp(t: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: t.nanosecond() as i32,
    }
}

/// Renders a protobuf timestamp as RFC 3339.
pub fn timestamp_text(ts: &prost_types::Timestamp) -> String {
    OffsetDateTime::from_unix_timestamp(ts.seconds)
        .ok()
        .and_then(|t| {
            t.replace_nanosecond(ts.nanos.clamp(0, 999_999_999) as u32)
                .ok()
        })
        .map(format_time)
        .unwrap_or_else(|| format!("{}s", ts.seconds))
}
