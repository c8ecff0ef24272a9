//! `--format table`: aligned columns for people, beside the JSON lines that
//! scripts read. Renders what `case list`, `case show` and `log head`
//! already print as JSON (the same values, never more).

use crate::cli::{CaseJson, CaseLine};

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

fn yes(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

/// `case list --format table`: one row per case.
pub fn case_list(cases: &[CaseLine]) -> String {
    let exercise = cases.iter().any(|c| !c.exercise.is_empty());
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
    if exercise {
        header.push("EXERCISE");
    }
    let rows: Vec<Vec<String>> = cases
        .iter()
        .map(|c| {
            let mut r = vec![
                c.seq.to_string(),
                c.id.clone(),
                c.state.clone(),
                c.requester.clone(),
                c.to.clone(),
                c.action.clone(),
                c.priority.clone(),
                c.respond_by.clone(),
                yes(c.overdue),
                c.role.clone(),
            ];
            if exercise {
                r.push(c.exercise.clone());
            }
            r
        })
        .collect();
    render(&header, &rows)
}

/// `case show --format table`: the case as aligned fields, then its
/// history as a table.
pub fn case_show(case: &CaseJson) -> String {
    let s = &case.summary;
    let request = case.request.body.as_ref().and_then(|b| b.request.as_ref());
    let ms = |v: Option<u64>| v.map(|ms| format!("{:.1} h", ms as f64 / 3_600_000.0));
    let mut pairs = vec![
        ("case", s.id.clone()),
        ("state", s.state.clone()),
        ("requester", s.requester.clone()),
        ("to", s.to.clone()),
        ("cc", s.cc.join(", ")),
        ("action", s.action.clone()),
        ("priority", s.priority.clone()),
        ("respond by", s.respond_by.clone()),
        ("overdue", yes(s.overdue)),
        ("your role", s.role.clone()),
        (
            "legal basis",
            request.map(|r| r.legal_basis.clone()).unwrap_or_default(),
        ),
        (
            "description",
            request.map(|r| r.description.clone()).unwrap_or_default(),
        ),
        ("request seq", s.seq.to_string()),
        ("verified", yes(case.request.verified)),
        (
            "acknowledged in",
            ms(case.time_to_acknowledge_ms).unwrap_or_default(),
        ),
        ("acknowledged late", yes(case.acknowledged_late)),
        (
            "resolved in",
            ms(case.time_to_resolve_ms).unwrap_or_default(),
        ),
    ];
    if let Some(m) = &s.marking {
        pairs.insert(0, ("marking", format!("{m} {}", s.exercise)));
    }
    let history: Vec<Vec<String>> = case
        .history
        .iter()
        .map(|h| {
            let text = match (h.note.is_empty(), h.reason.is_empty()) {
                (_, false) => format!("reason: {}", h.reason),
                _ => h.note.clone(),
            };
            vec![
                h.seq.to_string(),
                h.at.clone(),
                h.sender.clone(),
                h.transition.clone(),
                yes(h.verified),
                text,
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
pub fn log_head(head: &serde_json::Value) -> String {
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let time = head["timestamp_ms"]
        .as_u64()
        .and_then(|ms| time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).ok())
        .map(crate::rules::time::format_time)
        .unwrap_or_default();
    let cp = &head["checkpoint"];
    let cosigners = cp["cosigners"]
        .as_array()
        .map(|a| a.iter().map(text).collect::<Vec<_>>().join(", "))
        .unwrap_or_default();
    let quorum = match &cp["quorum"] {
        serde_json::Value::Null => String::new(),
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
    fn fields_align_names() {
        let out = fields(&[("a", "1".into()), ("long name", String::new())]);
        assert_eq!(out, "a          1\nlong name  -\n");
    }
}
