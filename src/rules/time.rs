//! Times as certex writes them (SPEC §11): RFC 3339 in UTC to the
//! millisecond, and conversions to and from protobuf timestamps.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// RFC 3339 in UTC with exactly three fraction digits
/// (`2026-11-25T10:00:00.000Z`), so every time certex prints has the same
/// width and sorts as text.
const MILLIS_UTC: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
);

/// RFC 3339 in UTC, to the millisecond, always with three fraction digits.
pub fn format_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.format(MILLIS_UTC)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_with_three_fraction_digits() {
        let at = |s: &str| OffsetDateTime::parse(s, &Rfc3339).unwrap();
        assert_eq!(
            format_time(at("2026-11-25T10:00:00Z")),
            "2026-11-25T10:00:00.000Z"
        );
        assert_eq!(
            format_time(at("2026-11-25T10:00:00.5Z")),
            "2026-11-25T10:00:00.500Z"
        );
        assert_eq!(
            format_time(at("2026-11-25T12:00:00.123456+02:00")),
            "2026-11-25T10:00:00.123Z"
        );
        let ts = parse_timestamp("t", "2026-11-25T10:00:00.04Z").unwrap();
        assert_eq!(timestamp_text(&ts), "2026-11-25T10:00:00.040Z");
    }
}
