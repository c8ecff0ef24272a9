//! `certex submit --stream FILE`: drafts as JSON lines, each filled and
//! signed as `submit` signs one, all published on one `PublishStream`; one
//! output line per draft, in order. Every line is checked (and signed)
//! before anything is sent, so a file with a line that is not a valid draft
//! publishes nothing.

use std::io::Read;

use futures_util::StreamExt;
use serde::Serialize;
use time::OffsetDateTime;

use crate::cli::args::{CliError, Conn, ExitClass, print_json};
use crate::client::draft::{BodyJson, ReceiptJson};

/// One draft's line of output: its receipt, or why it was refused.
#[derive(Serialize)]
struct Line {
    /// 0-based among the drafts of the file.
    index: u64,
    /// 1-based line number in the file.
    line: usize,
    #[serde(flatten)]
    receipt: Option<ReceiptJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refused: Option<Refused>,
}

#[derive(Serialize)]
struct Refused {
    code: String,
    message: String,
}

/// A gRPC code as SPEC §4 writes it: `PERMISSION_DENIED`.
pub fn code_name(code: tonic::Code) -> String {
    let camel = format!("{code:?}");
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// The drafts of a JSON-lines text with their line numbers (blank lines
/// skipped), or an error naming the first line that is not a draft.
pub fn parse_lines(text: &str, file: &str) -> Result<Vec<(usize, BodyJson)>, String> {
    let mut drafts = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let draft: BodyJson = serde_json::from_str(line).map_err(|e| {
            format!(
                "{file} line {}: not a valid draft ({e}); nothing was sent",
                n + 1
            )
        })?;
        drafts.push((n + 1, draft));
    }
    Ok(drafts)
}

/// `certex submit --stream FILE`.
pub async fn stream(file: &str, conn: &Conn) -> Result<(), CliError> {
    let text = if file == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| CliError::other(format!("cannot read drafts from stdin: {e}")))?;
        s
    } else {
        std::fs::read_to_string(file)
            .map_err(|e| CliError::other(format!("cannot read drafts {file}: {e}")))?
    };
    let drafts = parse_lines(&text, file)?;
    let client = conn.connect().await?;
    let now = OffsetDateTime::now_utc();
    let mut envelopes = Vec::with_capacity(drafts.len());
    let mut lines = Vec::with_capacity(drafts.len());
    for (line, mut draft) in drafts {
        let at = |e: String| CliError::other(format!("{file} line {line}: {e}; nothing was sent"));
        draft.fill(client.team(), now).map_err(at)?;
        let body = draft.to_body().map_err(at)?;
        envelopes.push(client.seal(&body).map_err(|e| at(e.to_string()))?);
        lines.push(line);
    }
    let sent = envelopes.len();
    let mut outcomes = client
        .publish_stream(futures_util::stream::iter(envelopes))
        .await?;
    let (mut answered, mut refused) = (0usize, 0usize);
    while let Some(o) = outcomes.next().await {
        let o = o?;
        let line = lines.get(o.index as usize).copied().unwrap_or(0);
        let out = match o.outcome {
            Ok(r) => Line {
                index: o.index,
                line,
                receipt: Some(ReceiptJson::from(&r)),
                refused: None,
            },
            Err(s) => {
                refused += 1;
                Line {
                    index: o.index,
                    line,
                    receipt: None,
                    refused: Some(Refused {
                        code: code_name(s.code()),
                        message: s.message().to_owned(),
                    }),
                }
            }
        };
        print_json(&out)?;
        answered += 1;
    }
    if answered < sent {
        return Err(CliError::other(format!(
            "the stream ended after {answered} of {sent} answers; the others may be sent again"
        )));
    }
    if refused > 0 {
        return Err(CliError::of(
            ExitClass::Refused,
            format!("the broker refused {refused} of {sent} drafts"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_as_the_spec_writes_them() {
        assert_eq!(
            code_name(tonic::Code::PermissionDenied),
            "PERMISSION_DENIED"
        );
        assert_eq!(code_name(tonic::Code::Unauthenticated), "UNAUTHENTICATED");
        assert_eq!(
            code_name(tonic::Code::ResourceExhausted),
            "RESOURCE_EXHAUSTED"
        );
    }

    #[test]
    fn lines_are_numbered_and_a_bad_one_is_named() {
        let draft = r#"{"tlp": "clear", "audience": "community", "incident": {"title": "t", "description": "d", "category": "intrusions", "severity": "low", "detected_at": "2026-11-25T10:00:00Z"}}"#;
        let text = format!("{draft}\n\n{draft}\n");
        let got = parse_lines(&text, "f").unwrap();
        assert_eq!(got.iter().map(|(n, _)| *n).collect::<Vec<_>>(), vec![1, 3]);
        let err = parse_lines("\n{not json\n", "drafts.jsonl").unwrap_err();
        assert!(err.contains("drafts.jsonl line 2"), "{err}");
    }
}
