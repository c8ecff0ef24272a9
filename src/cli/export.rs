//! `certex export --format stix21`: the records a team may read, as one
//! STIX 2.1 bundle (SPEC §14). The records come through the broker's own
//! read path (a subscription without follow), so the access rules of SPEC §5
//! are the same as for `subscribe`; each record's signature is verified
//! with the local directory before it is mapped, and a record that does
//! not verify is left out and named in the error.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::cli::args::{CliError, Conn, ScopeArgs, parse_kinds};
use crate::client::connection::{Client, ClientError, record_request, verify_record};
use crate::interop::stix::{self, Bundle, Related, Target};
use crate::proto as pb;

/// Export formats.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A STIX 2.1 bundle (OASIS), with the TLP 2.0 marking definitions.
    Stix21,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The output format.
    #[arg(long, value_enum, default_value = "stix21")]
    pub format: Format,
    /// Records after this seq (0 = from the first record).
    #[arg(long, default_value_t = 0)]
    pub from: u64,
    /// Only these kinds; repeatable.
    #[arg(long = "kind", value_parser = crate::cli::args::kind_words())]
    pub kinds: Vec<String>,
    /// Write the bundle to this file instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub scope: ScopeArgs,
    #[command(flatten)]
    pub conn: Conn,
}

/// A record as received, with its verified body (None for a tombstone).
type Seen = (pb::Record, Option<pb::Body>);

/// Runs `certex export`.
pub async fn run(args: ExportArgs) -> Result<(), CliError> {
    let kinds = parse_kinds(&args.kinds)?;
    let client = args.conn.connect().await?;
    let dir = client.local_directory().cloned().ok_or_else(|| {
        CliError::usage(
            "export verifies every record: give --directory FILE (or --pki DIR) so signatures can be checked",
        )
    })?;
    let names: BTreeMap<String, String> = dir
        .teams()
        .map(|t| (t.id.clone(), t.name.clone()))
        .collect();
    let scope = args.scope.scope();
    let req = pb::SubscribeRequest {
        start: Some(pb::subscribe_request::Start::AfterSeq(args.from)),
        filter: Some(pb::Filter {
            kinds,
            senders: vec![],
            min_severity: 0,
            tlps: vec![],
            exercise: Some(scope.to_selector()),
        }),
        follow: false,
    };
    let mut stream = client
        .exchange()
        .subscribe(req)
        .await
        .map_err(ClientError::from)?
        .into_inner();
    let mut records: Vec<Seen> = Vec::new();
    let mut failed = Vec::new();
    while let Some(rec) = stream.message().await.map_err(ClientError::from)? {
        if let Some(t) = rec.retracted.clone() {
            // A tombstone is the broker's word: it becomes a revoked
            // object only if the sender's signed retraction names it.
            let key = (t.sender.clone(), t.retracted_by.clone());
            match fetch(&client, &key, &scope, &dir).await? {
                Some((_, Some(b)))
                    if b.sender == t.sender
                        && matches!(&b.content,
                            Some(pb::body::Content::Retraction(r)) if r.target == t.id) =>
                {
                    records.push((rec, None))
                }
                _ => failed.push(format!(
                    "record {}: a tombstone whose signed retraction ({} of {}) is missing or names another message",
                    rec.seq, t.retracted_by, t.sender
                )),
            }
            continue;
        }
        if rec.envelope.is_none() {
            continue;
        }
        match verify_record(&rec, &dir) {
            Ok((body, _)) => records.push((rec, Some(body))),
            Err(e) => failed.push(format!("record {}: {e}", rec.seq)),
        }
    }
    // Messages the mapping needs (a case's request, a retraction's target)
    // come from this export when present, else from the broker with the
    // same access rules (absent when this team may not read them).
    let mut known: HashMap<(String, String), Seen> = HashMap::new();
    for (rec, body) in &records {
        if let Some(b) = body {
            known.insert(
                (b.sender.clone(), b.id.clone()),
                (rec.clone(), Some(b.clone())),
            );
        }
    }
    let mut bundle = Bundle::new();
    let mut mapped = 0usize;
    for (rec, body) in &records {
        let mut related = Related {
            names: Some(&names),
            ..Related::default()
        };
        let fetched;
        if let Some(key) = body.as_ref().and_then(stix::needs) {
            if !known.contains_key(&key) {
                let got = fetch(&client, &key, &scope, &dir).await?;
                if let Some(seen) = got {
                    known.insert(key.clone(), seen);
                }
            }
            fetched = known.get(&key);
            if let Some((r, b)) = fetched {
                related.request = b.as_ref();
                related.target = Target::of(r, b.as_ref());
            }
        }
        let objects = stix::objects(rec, body.as_ref(), &related);
        if !objects.is_empty() {
            mapped += 1;
        }
        bundle.extend(objects);
    }
    let text = serde_json::to_string_pretty(&bundle.finish())
        .map_err(|e| CliError::other(format!("cannot encode the bundle: {e}")))?;
    match &args.out {
        Some(path) => std::fs::write(path, format!("{text}\n"))
            .map_err(|e| CliError::other(format!("cannot write {}: {e}", path.display())))?,
        None => println!("{text}"),
    }
    eprintln!(
        "exported {mapped} of {} record(s) as STIX 2.1",
        records.len() + failed.len()
    );
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::verification(format!(
            "{} record(s) did NOT verify and were left out: {}",
            failed.len(),
            failed.join("; ")
        )))
    }
}

/// A message by sender and id as this team may read it, verified; `None`
/// when the broker answers NOT_FOUND (not readable, or not there).
async fn fetch(
    client: &Client,
    (sender, id): &(String, String),
    scope: &crate::rules::access::TrafficScope,
    dir: &crate::rules::directory::Directory,
) -> Result<Option<Seen>, CliError> {
    match client
        .get(record_request(id, Some(sender.clone()), scope))
        .await
    {
        Ok(rec) if rec.envelope.is_none() => Ok(Some((rec, None))),
        Ok(rec) => match verify_record(&rec, dir) {
            Ok((body, _)) => Ok(Some((rec, Some(body)))),
            Err(_) => Ok(None),
        },
        Err(ClientError::Status(s)) if s.code() == tonic::Code::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}
