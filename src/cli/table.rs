//! `--format table`: aligned columns for people, beside the JSON lines that
//! scripts read. Renders what `case list`, `case show` and `log head`
//! already print as JSON (the same values, never more).

use serde_json::Value;

/// How a listing command prints.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutputFormat {
    /// One JSON value per line (for scripts; the default).
    #[default]
    Json,
    /// Aligned columns with a header line (for people).
    Table,
}

/// Rows under a header, each column as wide as its widest cell, two spaces
/// between columns, no trailing spaces. An empty cell prints as `-`.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let cell = |s: &str| {
        if s.is_empty() {
            "-".to_owned()
        } else {
            s.to_owned()
        }
    };
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| cell(c)).collect())
        .collect();
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (c, w)) in cells.iter().zip(&width).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(c);
                out.push_str(&" ".repeat(w - c.chars().count() + 2));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in &rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// `name  value` lines, names aligned.
fn fields(pairs: &[(&str, String)]) -> String {
    let w = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| {
            let v = if v.is_empty() { "-" } else { v.as_str() };
            format!("{k:<w$}  {v}\n")
        })
        .collect()
}

/// Milliseconds for people: seconds under a minute, minutes under an
/// hour, else hours with one decimal.
fn duration(ms: u64) -> String {
    match ms {
        ..60_000 => format!("{} s", ms / 1000),
        60_000..3_600_000 => format!("{} min", ms / 60_000),
        _ => format!("{:.1} h", ms as f64 / 3_600_000.0),
    }
}

fn yes(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

/// A JSON value as a cell: strings bare, `null` empty, booleans yes/no,
/// lists comma-separated.
fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => yes(*b),
        Value::Array(a) => a.iter().map(text).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// `case list --format table`: one row per case, from the JSON lines
/// `case list` prints.
pub fn case_list(cases: &[Value]) -> String {
    let mut header = vec![
        "SEQ",
        "ID",
        "STATE",
        "REQUESTER",
        "TO",
        "ACTION",
        "PRIORITY",
        "RESPOND BY",
        "OVERDUE",
        "ROLE",
    ];
    let keys = [
        "seq",
        "id",
        "state",
        "requester",
        "to",
        "action",
        "priority",
        "respond_by",
        "overdue",
        "role",
    ];
    let exercise = cases.iter().any(|c| !text(&c["exercise"]).is_empty());
    if exercise {
        header.push("EXERCISE");
    }
    let rows: Vec<Vec<String>> = cases
        .iter()
        .map(|c| {
            let mut r: Vec<String> = keys.iter().map(|k| text(&c[*k])).collect();
            if exercise {
                r.push(text(&c["exercise"]));
            }
            r
        })
        .collect();
    render(&header, &rows)
}

/// `case show --format table`: the case as aligned fields, then its
/// history as a table, from the JSON `case show` prints.
pub fn case_show(case: &Value) -> String {
    let request = &case["request"]["body"]["request"];
    let hours = |v: &Value| v.as_u64().map(duration).unwrap_or_default();
    let mut pairs = vec![
        ("case", text(&case["id"])),
        ("state", text(&case["state"])),
        ("requester", text(&case["requester"])),
        ("to", text(&case["to"])),
        ("cc", text(&case["cc"])),
        ("action", text(&case["action"])),
        ("priority", text(&case["priority"])),
        ("respond by", text(&case["respond_by"])),
        ("overdue", text(&case["overdue"])),
        ("your role", text(&case["role"])),
        ("legal basis", text(&request["legal_basis"])),
        ("description", text(&request["description"])),
        ("request seq", text(&case["seq"])),
        ("verified", text(&case["request"]["verified"])),
        ("acknowledged in", hours(&case["time_to_acknowledge_ms"])),
        ("acknowledged late", text(&case["acknowledged_late"])),
        ("resolved in", hours(&case["time_to_resolve_ms"])),
    ];
    if case["marking"].is_string() {
        pairs.insert(
            0,
            (
                "marking",
                format!("{} {}", text(&case["marking"]), text(&case["exercise"])),
            ),
        );
    }
    let empty = Vec::new();
    let history: Vec<Vec<String>> = case["history"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|h| {
            let reason = text(&h["reason"]);
            let note = if reason.is_empty() {
                text(&h["note"])
            } else {
                format!("reason: {reason}")
            };
            vec![
                text(&h["seq"]),
                text(&h["at"]),
                text(&h["sender"]),
                text(&h["transition"]),
                text(&h["verified"]),
                note,
            ]
        })
        .collect();
    let mut out = fields(&pairs);
    out.push('\n');
    out.push_str(&render(
        &["SEQ", "AT", "SENDER", "TRANSITION", "VERIFIED", "NOTE"],
        &history,
    ));
    out
}

/// `log head --format table`: the verified head and its checkpoint, as
/// aligned fields (from the JSON `log head` prints).
pub fn log_head(head: &Value) -> String {
    let time = head["timestamp_ms"]
        .as_u64()
        .and_then(|ms| time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).ok())
        .map(crate::rules::time::format_time)
        .unwrap_or_default();
    let cp = &head["checkpoint"];
    let cosigners = text(&cp["cosigners"]);
    let quorum = match &cp["quorum"] {
        Value::Null => String::new(),
        q => format!(
            "{} ({})",
            if q["met"].as_bool() == Some(true) {
                "met"
            } else {
                "NOT met"
            },
            text(&q["quorum"])
        ),
    };
    fields(&[
        ("tree size", text(&head["tree_size"])),
        ("root hash", text(&head["root_hash"])),
        ("signed at", time),
        ("verified", yes(head["verified"].as_bool() == Some(true))),
        ("checkpoint size", text(&cp["tree_size"])),
        ("cosigners", cosigners),
        ("quorum", quorum),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned_and_empty_cells_marked() {
        let out = render(
            &["SEQ", "STATE"],
            &[
                vec!["1".into(), "open".into()],
                vec!["12345".into(), "".into()],
            ],
        );
        assert_eq!(out, "SEQ    STATE\n1      open\n12345  -\n");
    }

    #[test]
    fn durations_read_in_the_unit_that_fits() {
        assert_eq!(duration(4_200), "4 s");
        assert_eq!(duration(125_000), "2 min");
        assert_eq!(duration(5_400_000), "1.5 h");
    }

    #[test]
    fn fields_align_names() {
        let out = fields(&[("a", "1".into()), ("long name", String::new())]);
        assert_eq!(out, "a          1\nlong name  -\n");
    }
}
