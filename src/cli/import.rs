//! `certex import`: reads a STIX 2.1 bundle, maps it with
//! [`crate::interop::import`], signs and publishes each draft (unless
//! `--dry-run`), and prints one JSON line per STIX object and a summary.
//!
//! Idempotence: a draft's id is derived from its STIX id, so before
//! publishing, the command asks the broker for the team's message of that
//! id. Found with the same content: `duplicate`, nothing published. Found
//! with other content (the STIX object changed since it was imported):
//! `refused`, because certex messages are immutable. Not found: published
//! with `created_at` = now, as the broker's clock-skew rule requires.

use std::io::Read;

use clap::Args;
use serde::Serialize;
use serde_json::{Value, json};

use crate::cli::args::{CliError, Conn, print_json};
use crate::client::connection::{Client, ClientError, record_request};
use crate::client::draft::{AudienceJson, BodyJson};
use crate::interop::import::{Import, ObjectReport, Options, Outcome, import};
use crate::proto::Tlp;
use crate::rules::access::TrafficScope;
use crate::rules::canonical::decode_canonical;
use crate::rules::vocab::Word;

/// `certex import BUNDLE.json --as TEAM …`
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// A STIX 2.1 bundle (or one object, or a list of objects) as JSON; - for stdin.
    pub bundle: String,
    /// The TLP for objects without a TLP marking (otherwise they are refused).
    #[arg(long, value_parser = crate::cli::args::words::<crate::proto::Tlp>())]
    pub tlp: Option<String>,
    /// Who receives the messages: community, teams:A,B or group:NAME.
    #[arg(long, default_value = "community")]
    pub audience: String,
    /// Import exercise traffic as this exercise's; every message carries it.
    #[arg(long)]
    pub exercise: Option<String>,
    /// Map and print the drafts, publish nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub conn: Conn,
}

/// `community`, `teams:A,B` or `group:NAME` as a draft audience.
pub fn parse_audience(s: &str) -> Result<AudienceJson, CliError> {
    let s = s.trim();
    if s == "community" {
        return Ok(AudienceJson::Word(s.to_owned()));
    }
    if let Some(list) = s.strip_prefix("teams:") {
        let teams: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect();
        if !teams.is_empty() {
            return Ok(AudienceJson::Teams { teams });
        }
    }
    if let Some(g) = s.strip_prefix("group:").filter(|g| !g.trim().is_empty()) {
        return Ok(AudienceJson::Group {
            group: g.trim().to_owned(),
        });
    }
    Err(CliError::usage(format!(
        "--audience {s:?}: use community, teams:TEAM,TEAM or group:NAME"
    )))
}

fn read_input(path: &str) -> Result<Value, CliError> {
    let text = if path == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| CliError::other(format!("cannot read the bundle from stdin: {e}")))?;
        s
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| CliError::other(format!("cannot read bundle {path}: {e}")))?
    };
    serde_json::from_str(&text)
        .map_err(|e| CliError::other(format!("bundle {path} is not valid JSON: {e}")))
}

/// A report line; with `--dry-run`, the draft too.
#[derive(Serialize)]
struct Line<'a> {
    #[serde(flatten)]
    report: &'a ObjectReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    draft: Option<&'a BodyJson>,
}

/// What publishing one draft came to.
struct Published {
    result: Outcome,
    seq: Option<u64>,
    reason: Option<String>,
}

impl Published {
    fn refused(reason: String) -> Self {
        Published {
            result: Outcome::Refused,
            seq: None,
            reason: Some(reason),
        }
    }
}

/// Publishes one draft unless the team already published its id.
async fn publish(client: &Client, scope: &TrafficScope, draft: &BodyJson) -> Published {
    let id = draft.id.clone().unwrap_or_default();
    let team = client.team().to_owned();
    match client
        .get(record_request(&id, Some(team.clone()), scope))
        .await
    {
        Ok(rec) => {
            let existing = rec.envelope.as_ref().map(|e| decode_canonical(&e.body));
            let Some(Ok(existing)) = existing else {
                return Published::refused(format!(
                    "certex message {id} (seq {}) exists but its content cannot be read back",
                    rec.seq
                ));
            };
            let mut mine = draft.clone();
            mine.sender = Some(team);
            mine.created_at = existing
                .created_at
                .as_ref()
                .map(crate::rules::time::timestamp_text);
            if mine.to_body().ok().as_ref() == Some(&existing) {
                Published {
                    result: Outcome::Duplicate,
                    seq: Some(rec.seq),
                    reason: None,
                }
            } else {
                Published::refused(format!(
                    "certex message {id} (seq {}) already holds other content from an earlier import of this STIX object; \
                     certex messages are immutable, so a version modified since cannot be published under the same id \
                     (retract the earlier message and publish the new content with certex submit if it matters)",
                    rec.seq
                ))
            }
        }
        Err(ClientError::Status(s)) if s.code() == tonic::Code::NotFound => {
            match client.submit(draft.clone()).await {
                Ok(r) => Published {
                    result: if r.duplicate {
                        Outcome::Duplicate
                    } else {
                        Outcome::Imported
                    },
                    seq: Some(r.seq),
                    reason: None,
                },
                Err(ClientError::Status(s)) => Published::refused(format!(
                    "the broker refused it ({:?}): {}",
                    s.code(),
                    s.message()
                )),
                Err(e) => Published::refused(e.to_string()),
            }
        }
        Err(e) => Published::refused(format!("cannot check for an earlier import: {e}")),
    }
}

/// Runs `certex import`.
pub async fn run(args: ImportArgs) -> Result<(), CliError> {
    let tlp = match &args.tlp {
        Some(w) => {
            let w = w.trim().to_ascii_lowercase();
            let w = if w == "white" { "clear".to_owned() } else { w };
            Some(
                Tlp::from_word(&w)
                    .map(|t| t.word().to_owned())
                    .ok_or_else(|| {
                        CliError::usage(format!("--tlp {w:?}: use one of {}", Tlp::choices()))
                    })?,
            )
        }
        None => None,
    };
    let exercise = args.exercise.clone().filter(|e| !e.is_empty());
    let opts = Options {
        team: args.conn.team.clone(),
        tlp,
        audience: parse_audience(&args.audience)?,
        exercise: exercise.clone(),
    };
    let input = read_input(&args.bundle)?;
    let Import {
        mut reports,
        drafts,
    } = import(&input, &opts)
        .map_err(|e| CliError::other(format!("bundle {}: {e}", args.bundle)))?;

    let mut draft_of: Vec<Option<&BodyJson>> = vec![None; reports.len()];
    if args.dry_run {
        for p in &drafts {
            draft_of[p.line] = Some(&p.draft);
        }
    } else if !drafts.is_empty() {
        let client = args.conn.connect().await?;
        let scope = match &exercise {
            Some(e) => TrafficScope::Exercise(e.clone()),
            None => TrafficScope::Real,
        };
        for p in &drafts {
            let done = publish(&client, &scope, &p.draft).await;
            let line: &mut ObjectReport = &mut reports[p.line];
            line.result = done.result;
            line.seq = done.seq;
            line.reason = done.reason;
        }
    }

    let mut counts = serde_json::Map::new();
    for (i, r) in reports.iter().enumerate() {
        let key = serde_json::to_value(r.result)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let n = counts.get(&key).and_then(Value::as_u64).unwrap_or(0);
        counts.insert(key, json!(n + 1));
        print_json(&Line {
            report: r,
            draft: draft_of[i],
        })?;
    }
    let refused = reports
        .iter()
        .filter(|r| r.result == Outcome::Refused)
        .count();
    let mut summary = json!({
        "objects": reports.len(),
        "drafts": drafts.len(),
        "dry_run": args.dry_run,
    });
    for word in ["imported", "merged", "skipped", "duplicate", "refused"] {
        summary[word] = counts.get(word).cloned().unwrap_or(json!(0));
    }
    print_json(&json!({ "summary": summary }))?;
    if refused > 0 {
        return Err(CliError::other(format!(
            "{refused} STIX object(s) refused; see their report lines"
        )));
    }
    Ok(())
}
