//! A read-only TAXII 2.1 API (SPEC §14) on its own listener
//! (`serve --taxii-listen ADDR`): the same TLS server identity, the same
//! client-certificate authentication and the same per-team access rules as
//! the gRPC services, for the CTI tools CERT teams already run.
//!
//! One API root (`/certex/`) with a collection for real-world traffic and
//! one per exercise the team has traffic in. A collection holds the STIX
//! objects of [`crate::interop::stix`] for exactly the records the team may
//! read (every record goes through [`read::view_decoded`], as on every
//! other read path), plus the fixed objects (TLP 2.0 markings, certex's
//! identity and extension definition) and the teams' identities. A record
//! the team may not read appears in no collection, manifest, version list
//! or page count; a retracted record's objects leave the collection and its
//! retraction adds the revoked version. `date_added` is the broker's receipt
//! time, which never goes backwards along the log.
//!
//! Each team has an index of its collections (object id, version, type,
//! date added, record), extended from the log as it grows; a page re-reads
//! its records and maps them again, so no content is cached. Writing stays
//! signed publishing: every collection is `can_write: false`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Extension, Path, Query, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tonic::transport::server::Connected;
use uuid::Uuid;

use crate::broker::read;
use crate::broker::state::State;
use crate::broker::transport::{self, CallGuard, ConnLimits, Peer};
use crate::error::Error;
use crate::interop::markings::CERTEX_NAMESPACE;
use crate::interop::stix::{self, Related, Target};
use crate::log::writer::open_record;
use crate::proto::{self as pb, body::Content, get_request::Selector};
use crate::rules::access::TrafficScope;
use crate::rules::canonical::decode_canonical;

/// The TAXII media type of every response.
pub const TAXII_MEDIA: &str = "application/taxii+json;version=2.1";
/// The media type of the objects in a collection.
pub const STIX_MEDIA: &str = "application/stix+json;version=2.1";
/// The one API root.
const ROOT: &str = "certex";
/// Objects per page when the client names no `limit`, and the most it may.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;
/// The longest a request head may take to arrive.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest open requests get to finish at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// The `date_added` of the fixed objects and identities every collection
/// starts with.
const PRELUDE_ADDED_MS: u64 = 1_793_491_200_000; // 2026-11-01T00:00:00Z

/// One object version in a collection.
#[derive(Debug, Clone)]
struct Entry {
    /// The record it comes from (0 for the fixed objects and identities).
    seq: u64,
    /// Its place among the record's objects.
    ord: u32,
    added_ms: u64,
    id: String,
    version: String,
    /// The version as nanoseconds since the epoch: versions are ordered
    /// by time, not as text ("…123Z" is before "…123004Z").
    version_ns: i128,
    kind: String,
}

/// A STIX timestamp as nanoseconds since the epoch (0 if it does not parse).
fn time_ns(v: &str) -> i128 {
    time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp_nanos())
        .unwrap_or(0)
}

impl Entry {
    fn new(seq: u64, ord: u32, added_ms: u64, o: &Value) -> Entry {
        let version = version_of(o, added_ms);
        Entry {
            seq,
            ord,
            added_ms,
            id: o["id"].as_str().unwrap_or_default().to_owned(),
            version_ns: time_ns(&version),
            version,
            kind: o["type"].as_str().unwrap_or_default().to_owned(),
        }
    }

    fn token(&self) -> String {
        format!("{}.{}", self.seq, self.ord)
    }
}

/// A team's collections: entries by exercise ("" for real traffic), in log
/// order, and how far the log has been read for it.
#[derive(Default)]
struct TeamIndex {
    upto: u64,
    collections: BTreeMap<String, Vec<Entry>>,
}

/// The TAXII service: the broker's state and each team's index.
pub struct Taxii {
    state: Arc<State>,
    indexes: Mutex<HashMap<String, Arc<tokio::sync::Mutex<TeamIndex>>>>,
}

/// The collection id of real traffic or of an exercise.
fn collection_id(exercise: &str) -> String {
    let key = if exercise.is_empty() {
        "collection/real".to_owned()
    } else {
        format!("collection/exercise/{exercise}")
    };
    Uuid::new_v5(&CERTEX_NAMESPACE, key.as_bytes()).to_string()
}

fn scope_of(exercise: &str) -> TrafficScope {
    if exercise.is_empty() {
        TrafficScope::Real
    } else {
        TrafficScope::Exercise(exercise.to_owned())
    }
}

fn stix_ms(ms: u64) -> String {
    stix::stix_time(&prost_types::Timestamp {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    })
}

fn ts_ms(ts: Option<&prost_types::Timestamp>) -> u64 {
    ts.map(|t| (t.seconds.max(0) as u64) * 1000 + (t.nanos.max(0) as u64) / 1_000_000)
        .unwrap_or_default()
}

/// A TAXII error: the status and the error message body of TAXII 2.1 §3.6.3.
#[derive(Debug)]
struct TaxiiError {
    status: StatusCode,
    title: String,
    description: String,
}

impl TaxiiError {
    fn new(status: StatusCode, title: &str, description: impl Into<String>) -> Self {
        TaxiiError {
            status,
            title: title.to_owned(),
            description: description.into(),
        }
    }

    fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "Not found",
            format!("{what} does not exist or is not yours to read"),
        )
    }
}

impl From<Error> for TaxiiError {
    fn from(e: Error) -> Self {
        use tonic::Code;
        if let Error::Internal(detail) = &e {
            tracing::error!(error = %detail, "internal error (TAXII)");
            return Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal error",
                "internal broker error; the operator can find it in the broker log",
            );
        }
        let (status, title) = match e.code() {
            Code::PermissionDenied => (StatusCode::FORBIDDEN, "Forbidden"),
            Code::Unauthenticated => (StatusCode::UNAUTHORIZED, "Unauthorized"),
            Code::NotFound => (StatusCode::NOT_FOUND, "Not found"),
            Code::InvalidArgument => (StatusCode::BAD_REQUEST, "Bad request"),
            Code::ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, "Too many requests"),
            Code::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "Unavailable"),
            _ => (StatusCode::BAD_REQUEST, "Refused"),
        };
        Self::new(status, title, e.to_string())
    }
}

impl IntoResponse for TaxiiError {
    fn into_response(self) -> Response {
        let body = json!({
            "title": self.title,
            "description": self.description,
            "http_status": self.status.as_u16().to_string(),
        });
        let mut r = (self.status, body.to_string()).into_response();
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(TAXII_MEDIA));
        r
    }
}

type Answer = Result<Response, TaxiiError>;

/// A TAXII JSON answer, with the date-added headers when given.
fn answer(body: Value, added: Option<(u64, u64)>) -> Answer {
    let mut r = (StatusCode::OK, body.to_string()).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(TAXII_MEDIA));
    if let Some((first, last)) = added {
        for (name, ms) in [
            ("x-taxii-date-added-first", first),
            ("x-taxii-date-added-last", last),
        ] {
            if let Ok(v) = HeaderValue::from_str(&stix_ms(ms)) {
                h.insert(name, v);
            }
        }
    }
    Ok(r)
}

/// The request's `Accept` must allow the TAXII 2.1 media type (406 if it
/// names only others).
fn check_accept(headers: &HeaderMap) -> Result<(), TaxiiError> {
    let Some(accept) = headers.get(header::ACCEPT) else {
        return Ok(());
    };
    let accept = accept.to_str().unwrap_or_default().to_ascii_lowercase();
    let ok = accept.split(',').any(|part| {
        let p = part.trim().replace(' ', "");
        p.starts_with("*/*")
            || p.starts_with("application/*")
            || (p.starts_with("application/taxii+json")
                && (!p.contains("version=") || p.contains("version=2.1")))
    });
    if ok {
        Ok(())
    } else {
        Err(TaxiiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "Not acceptable",
            format!("this server answers {TAXII_MEDIA} only"),
        ))
    }
}

/// The calling team, checked as for every gRPC call.
/// The calling team, checked as for every gRPC call, and the request
/// counted open on its connection until the guard drops (so an active
/// connection is never closed as idle).
fn caller(
    taxii: &Taxii,
    peer: &Peer,
    headers: &HeaderMap,
) -> Result<(String, CallGuard), TaxiiError> {
    let guard = peer.conn.call_started();
    check_accept(headers)?;
    let team = taxii.state.team_caller(peer).map_err(|e| {
        tracing::info!(team = %peer.team, code = ?e.code(), kind = e.kind(), "TAXII request refused");
        TaxiiError::from(e)
    })?;
    Ok((team, guard))
}

impl Taxii {
    fn new(state: Arc<State>) -> Self {
        Taxii {
            state,
            indexes: Mutex::new(HashMap::new()),
        }
    }

    /// The team's index, brought up to the committed log.
    async fn index(
        self: &Arc<Self>,
        team: &str,
    ) -> Result<tokio::sync::OwnedMutexGuard<TeamIndex>, TaxiiError> {
        let slot = {
            let mut indexes = self.indexes.lock().unwrap_or_else(|p| p.into_inner());
            // Teams that left the directory keep no index.
            let dir = self.state.directory();
            indexes.retain(|t, _| dir.team(t).is_some());
            indexes.entry(team.to_owned()).or_default().clone()
        };
        let mut guard = slot.lock_owned().await;
        let me = self.clone();
        let team = team.to_owned();
        let guard = tokio::task::spawn_blocking(move || -> Result<_, Error> {
            me.extend(&team, &mut guard)?;
            Ok(guard)
        })
        .await
        .map_err(|e| Error::Internal(format!("TAXII index task failed: {e}")))??;
        Ok(guard)
    }

    /// Reads the log from where the index stopped to the committed end.
    fn extend(&self, team: &str, index: &mut TeamIndex) -> Result<(), Error> {
        let committed = self.state.committed();
        if index.upto >= committed {
            return Ok(());
        }
        let dir = self.state.directory();
        let storage = self.state.log().storage();
        for item in storage.records(index.upto + 1, committed) {
            let (seq, stored) = item?;
            index.upto = seq;
            let (env, body) = open_record(&stored)?;
            let scope = scope_of(&body.exercise);
            let Some(record) =
                read::view_decoded(&self.state, team, seq, &stored, || env, &body, &scope, &dir)?
            else {
                continue;
            };
            if record.envelope.is_none() {
                // A tombstone: its objects are not served (the retraction's
                // revoked version is, at the retraction's place).
                continue;
            }
            let entries = index.collections.entry(body.exercise.clone()).or_default();
            if let Some(Content::Retraction(r)) = &body.content
                && let Some(target) = storage.seq_of(&r.target, &body.sender)?
            {
                entries.retain(|e| e.seq != target);
            }
            let added_ms = ts_ms(record.received_at.as_ref());
            for (ord, o) in self
                .objects_of(team, &record, &body, &scope)?
                .into_iter()
                .enumerate()
            {
                entries.push(Entry::new(seq, ord as u32, added_ms, &o));
            }
        }
        Ok(())
    }

    /// The STIX objects of one record the team may read, without the
    /// identities (every collection starts with those).
    fn objects_of(
        &self,
        team: &str,
        record: &pb::Record,
        body: &pb::Body,
        scope: &TrafficScope,
    ) -> Result<Vec<Value>, Error> {
        let mut related = Related::default();
        let looked_up = match stix::needs(body) {
            Some((sender, id)) => {
                let req = pb::GetRequest {
                    selector: Some(Selector::Id(id)),
                    sender,
                    exercise: Some(scope.to_selector()),
                };
                match read::get(&self.state, team, req) {
                    Ok(rec) => {
                        let b = match &rec.envelope {
                            Some(env) => Some(decode_canonical(&env.body).map_err(|e| {
                                Error::Internal(format!("stored body is not canonical: {e}"))
                            })?),
                            None => None,
                        };
                        Some((rec, b))
                    }
                    Err(Error::NotFound(_)) => None,
                    Err(e) => return Err(e),
                }
            }
            None => None,
        };
        if let Some((rec, b)) = &looked_up {
            related.request = b.as_ref();
            related.target = Target::of(rec, b.as_ref());
        }
        Ok(stix::objects(record, Some(body), &related)
            .into_iter()
            .filter(|o| o["type"] != "identity")
            .collect())
    }

    /// The objects every collection starts with, as entries and objects.
    fn prelude(&self) -> Vec<Value> {
        let dir = self.state.directory();
        let names: BTreeMap<String, String> = dir
            .teams()
            .map(|t| (t.id.clone(), t.name.clone()))
            .collect();
        let mut out = stix::fixed_objects();
        for team in names.keys() {
            out.push(stix::identity(team, Some(&names)));
        }
        out
    }

    /// The objects of `entries` (all of one collection), mapped again from
    /// their records as the team may read them now.
    fn materialise(
        &self,
        team: &str,
        exercise: &str,
        entries: &[Entry],
    ) -> Result<Vec<Value>, Error> {
        let scope = scope_of(exercise);
        let dir = self.state.directory();
        let storage = self.state.log().storage();
        let prelude = self.prelude();
        let mut by_seq: HashMap<u64, Vec<Value>> = HashMap::new();
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let objects = if e.seq == 0 {
                &prelude
            } else {
                if let std::collections::hash_map::Entry::Vacant(slot) = by_seq.entry(e.seq) {
                    let mut objs = Vec::new();
                    if let Some(stored) = storage.record(e.seq)? {
                        let (env, body) = open_record(&stored)?;
                        if let Some(record) = read::view_decoded(
                            &self.state,
                            team,
                            e.seq,
                            &stored,
                            || env,
                            &body,
                            &scope,
                            &dir,
                        )? && record.envelope.is_some()
                        {
                            objs = self.objects_of(team, &record, &body, &scope)?;
                        }
                    }
                    slot.insert(objs);
                }
                &by_seq[&e.seq]
            };
            if let Some(o) = objects
                .iter()
                .find(|o| o["id"] == e.id.as_str() && version_of(o, e.added_ms) == e.version)
            {
                out.push(o.clone());
            }
        }
        Ok(out)
    }
}

/// An object's version (TAXII 2.1 §3.6.2): `modified`, else `created`,
/// else (SCOs) when it was added.
fn version_of(o: &Value, added_ms: u64) -> String {
    o["modified"]
        .as_str()
        .or_else(|| o["created"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| stix_ms(added_ms))
}

/// The filters of TAXII 2.1 §3.4: `added_after`, `limit`, `next`,
/// `match[id]`, `match[type]`, `match[version]`, `match[spec_version]`.
#[derive(Clone)]
struct Filters {
    added_after: Option<u64>,
    limit: usize,
    next: Option<(u64, u32)>,
    ids: Vec<String>,
    types: Vec<String>,
    versions: Vec<String>,
}

fn parse_time_ms(field: &str, s: &str) -> Result<u64, TaxiiError> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| {
            TaxiiError::new(
                StatusCode::BAD_REQUEST,
                "Bad request",
                format!("{field}: {s:?} is not a STIX timestamp ({e})"),
            )
        })?;
    Ok((t.unix_timestamp_nanos() / 1_000_000).max(0) as u64)
}

impl Filters {
    fn parse(q: &HashMap<String, String>, default_version: &str) -> Result<Filters, TaxiiError> {
        let bad = |what: String| TaxiiError::new(StatusCode::BAD_REQUEST, "Bad request", what);
        for key in q.keys() {
            if !matches!(
                key.as_str(),
                "added_after"
                    | "limit"
                    | "next"
                    | "match[id]"
                    | "match[type]"
                    | "match[version]"
                    | "match[spec_version]"
            ) {
                return Err(bad(format!("unknown query parameter {key:?}")));
            }
        }
        let list = |k: &str| -> Vec<String> {
            q.get(k)
                .map(|v| {
                    v.split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default()
        };
        if let Some(sv) = q.get("match[spec_version]")
            && !sv.split(',').any(|v| v.trim() == "2.1")
        {
            return Err(bad(
                "match[spec_version]: this server holds STIX 2.1 only".into()
            ));
        }
        let limit = match q.get("limit") {
            None => DEFAULT_PAGE,
            Some(l) => match l.parse::<usize>() {
                Ok(n) if n > 0 => n.min(MAX_PAGE),
                _ => return Err(bad(format!("limit: {l:?} is not a positive integer"))),
            },
        };
        let next =
            match q.get("next") {
                None => None,
                Some(t) => {
                    let parsed = t
                        .split_once('.')
                        .and_then(|(s, o)| Some((s.parse::<u64>().ok()?, o.parse::<u32>().ok()?)));
                    Some(parsed.ok_or_else(|| {
                        bad(format!("next: {t:?} is not a token this server gave"))
                    })?)
                }
            };
        let mut versions = list("match[version]");
        if versions.is_empty() {
            versions.push(default_version.to_owned());
        }
        for v in &versions {
            if !matches!(v.as_str(), "all" | "first" | "last") {
                parse_time_ms("match[version]", v)?;
            }
        }
        Ok(Filters {
            added_after: q
                .get("added_after")
                .map(|s| parse_time_ms("added_after", s))
                .transpose()?,
            limit,
            next,
            ids: list("match[id]"),
            types: list("match[type]"),
            versions,
        })
    }

    /// The entries these filters select, in collection order, and whether
    /// more follow the page.
    fn select<'a>(&self, parts: [&'a [Entry]; 2]) -> (Vec<&'a Entry>, bool) {
        let matching: Vec<&Entry> = parts
            .into_iter()
            .flatten()
            .filter(|e| self.ids.is_empty() || self.ids.contains(&e.id))
            .filter(|e| self.types.is_empty() || self.types.contains(&e.kind))
            .collect();
        // first/last version of each object among the matching entries.
        let mut bounds: HashMap<&str, (i128, i128)> = HashMap::new();
        for e in &matching {
            let b = bounds
                .entry(e.id.as_str())
                .or_insert((e.version_ns, e.version_ns));
            b.0 = b.0.min(e.version_ns);
            b.1 = b.1.max(e.version_ns);
        }
        let wanted = |e: &Entry| {
            self.versions.iter().any(|v| match v.as_str() {
                "all" => true,
                "first" => bounds
                    .get(e.id.as_str())
                    .is_some_and(|b| b.0 == e.version_ns),
                "last" => bounds
                    .get(e.id.as_str())
                    .is_some_and(|b| b.1 == e.version_ns),
                t => time_ns(t) == e.version_ns,
            })
        };
        let mut seen = std::collections::HashSet::new();
        let mut picked = matching
            .into_iter()
            .filter(|e| wanted(e))
            .filter(|e| self.added_after.is_none_or(|t| e.added_ms > t))
            .filter(|e| self.next.is_none_or(|n| (e.seq, e.ord) > n))
            // One entry per object version (a version made twice, by a
            // target's retraction say, is listed where it first appeared).
            .filter(|e| seen.insert((e.id.as_str(), e.version.as_str())));
        let page: Vec<&Entry> = picked.by_ref().take(self.limit).collect();
        let more = picked.next().is_some();
        (page, more)
    }
}

fn added_range(page: &[&Entry]) -> Option<(u64, u64)> {
    Some((page.first()?.added_ms, page.last()?.added_ms))
}

/// The entries of one collection (the prelude, then the records') that
/// `filters` select for `team`, worked out on the blocking pool; and the
/// collection's exercise ("" for real traffic).
async fn select_page(
    taxii: &Arc<Taxii>,
    team: &str,
    collection: &str,
    filters: Filters,
) -> Result<(String, Vec<Entry>, bool), TaxiiError> {
    let index = taxii.index(team).await?;
    let exercise = exercise_of(&index, collection)?;
    let t = taxii.clone();
    let ex = exercise.clone();
    let (page, more) = tokio::task::spawn_blocking(move || {
        let prelude: Vec<Entry> = t
            .prelude()
            .iter()
            .enumerate()
            .map(|(ord, o)| Entry::new(0, ord as u32, PRELUDE_ADDED_MS, o))
            .collect();
        let records = index.collections.get(&ex).map_or(&[][..], |v| &v[..]);
        let (page, more) = filters.select([&prelude, records]);
        (page.into_iter().cloned().collect::<Vec<Entry>>(), more)
    })
    .await
    .map_err(|e| Error::Internal(format!("TAXII selection task failed: {e}")))?;
    Ok((exercise, page, more))
}

/// The exercise a collection id names for this team ("" for real traffic),
/// or 404.
fn exercise_of(index: &TeamIndex, id: &str) -> Result<String, TaxiiError> {
    if id == collection_id("") {
        return Ok(String::new());
    }
    index
        .collections
        .keys()
        .find(|e| !e.is_empty() && collection_id(e) == id)
        .cloned()
        .ok_or_else(|| TaxiiError::not_found(&format!("collection {id}")))
}

fn collection_json(exercise: &str) -> Value {
    let (title, description) = if exercise.is_empty() {
        (
            "certex: real-world traffic".to_owned(),
            "Incident reports, warnings and assistance cases this team may read.".to_owned(),
        )
    } else {
        (
            format!("certex: EXERCISE {exercise}"),
            format!("Traffic of exercise {exercise} (EXERCISE, not real) this team may read."),
        )
    };
    json!({
        "id": collection_id(exercise),
        "title": title,
        "description": description,
        "can_read": true,
        "can_write": false,
        "media_types": [STIX_MEDIA],
    })
}

type Ctx = AxumState<Arc<Taxii>>;

async fn discovery(
    AxumState(t): Ctx,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Answer {
    let (_team, _open) = caller(&t, &peer, &headers)?;
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or("localhost");
    answer(
        json!({
            "title": "certex TAXII 2.1",
            "description": "Read-only TAXII 2.1 view of a certex broker: what your team may read, as STIX 2.1. Publishing stays signed (certex submit).",
            "default": format!("https://{host}/{ROOT}/"),
            "api_roots": [format!("https://{host}/{ROOT}/")],
        }),
        None,
    )
}

async fn api_root(
    AxumState(t): Ctx,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Answer {
    let (_team, _open) = caller(&t, &peer, &headers)?;
    answer(
        json!({
            "title": "certex",
            "description": "The collections of this broker: real-world traffic and each exercise.",
            "versions": [TAXII_MEDIA],
            "max_content_length": 0,
        }),
        None,
    )
}

async fn collections(
    AxumState(t): Ctx,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Answer {
    let (team, _open) = caller(&t, &peer, &headers)?;
    let index = t.index(&team).await?;
    let mut list = vec![collection_json("")];
    list.extend(
        index
            .collections
            .keys()
            .filter(|e| !e.is_empty())
            .map(|e| collection_json(e)),
    );
    answer(json!({ "collections": list }), None)
}

async fn collection(
    AxumState(t): Ctx,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    let (team, _open) = caller(&t, &peer, &headers)?;
    let index = t.index(&team).await?;
    let exercise = exercise_of(&index, &id)?;
    answer(collection_json(&exercise), None)
}

/// Objects of a collection (all, or one object's with `object`).
async fn objects_page(
    t: Arc<Taxii>,
    team: String,
    id: String,
    object: Option<String>,
    q: HashMap<String, String>,
) -> Answer {
    let mut filters = Filters::parse(&q, "last")?;
    if let Some(o) = &object {
        filters.ids = vec![o.clone()];
    }
    let (exercise, page, more) = select_page(&t, &team, &id, filters.clone()).await?;
    let page: Vec<&Entry> = page.iter().collect();
    if object.is_some() && page.is_empty() && filters.next.is_none() {
        return Err(TaxiiError::not_found(&format!(
            "object {}",
            object.unwrap_or_default()
        )));
    }
    let added = added_range(&page);
    let next = more.then(|| page.last().map(|e| e.token())).flatten();
    let owned: Vec<Entry> = page.into_iter().cloned().collect();
    let t2 = t.clone();
    let objects = tokio::task::spawn_blocking(move || t2.materialise(&team, &exercise, &owned))
        .await
        .map_err(|e| Error::Internal(format!("TAXII page task failed: {e}")))??;
    let mut body = json!({ "more": more });
    if let Some(n) = next {
        body["next"] = n.into();
    }
    if !objects.is_empty() {
        body["objects"] = objects.into();
    }
    answer(body, added)
}

async fn objects(
    AxumState(t): Ctx,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Answer {
    let (team, _open) = caller(&t, &peer, &headers)?;
    objects_page(t, team, id, None, q).await
}

async fn object(
    AxumState(t): Ctx,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path((id, object)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Answer {
    let (team, _open) = caller(&t, &peer, &headers)?;
    if q.contains_key("match[id]") || q.contains_key("match[type]") {
        return Err(TaxiiError::new(
            StatusCode::BAD_REQUEST,
            "Bad request",
            "match[id] and match[type] do not apply to one object",
        ));
    }
    objects_page(t, team, id, Some(object), q).await
}

async fn manifest(
    AxumState(t): Ctx,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Answer {
    let (team, _open) = caller(&t, &peer, &headers)?;
    let filters = Filters::parse(&q, "last")?;
    let (_, page, more) = select_page(&t, &team, &id, filters.clone()).await?;
    let page: Vec<&Entry> = page.iter().collect();
    let list: Vec<Value> = page
        .iter()
        .map(|e| {
            json!({
                "id": e.id,
                "date_added": stix_ms(e.added_ms),
                "version": e.version,
                "media_type": STIX_MEDIA,
            })
        })
        .collect();
    let mut body = json!({ "more": more });
    if more && let Some(last) = page.last() {
        body["next"] = last.token().into();
    }
    if !list.is_empty() {
        body["objects"] = list.into();
    }
    answer(body, added_range(&page))
}

async fn versions(
    AxumState(t): Ctx,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path((id, object)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Answer {
    let (team, _open) = caller(&t, &peer, &headers)?;
    if q.contains_key("match[id]")
        || q.contains_key("match[type]")
        || q.contains_key("match[version]")
    {
        return Err(TaxiiError::new(
            StatusCode::BAD_REQUEST,
            "Bad request",
            "the versions endpoint takes added_after, limit, next and match[spec_version] only",
        ));
    }
    let mut filters = Filters::parse(&q, "all")?;
    filters.ids = vec![object.clone()];
    let (_, page, more) = select_page(&t, &team, &id, filters.clone()).await?;
    let page: Vec<&Entry> = page.iter().collect();
    if page.is_empty() && filters.next.is_none() && filters.added_after.is_none() {
        return Err(TaxiiError::not_found(&format!("object {object}")));
    }
    let mut body = json!({ "more": more });
    if more && let Some(last) = page.last() {
        body["next"] = last.token().into();
    }
    if !page.is_empty() {
        body["versions"] = page
            .iter()
            .map(|e| e.version.clone())
            .collect::<Vec<_>>()
            .into();
    }
    answer(body, added_range(&page))
}

/// Writing, deleting and status: this API is read-only.
async fn read_only(
    AxumState(t): Ctx,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Answer {
    let (_team, _open) = caller(&t, &peer, &headers)?;
    Err(TaxiiError::new(
        StatusCode::FORBIDDEN,
        "Read-only",
        "collections here are read-only (can_write: false): publish signed messages with certex submit or certex import",
    ))
}

async fn no_route(
    AxumState(t): Ctx,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Answer {
    let (_team, _open) = caller(&t, &peer, &headers)?;
    Err(TaxiiError::not_found("this resource"))
}

fn router(taxii: Arc<Taxii>) -> Router {
    let c = "/certex/collections/{id}";
    Router::new()
        .route("/taxii2/", get(discovery))
        .route("/certex/", get(api_root))
        .route("/certex/collections/", get(collections))
        .route(&format!("{c}/"), get(collection))
        .route(&format!("{c}/objects/"), get(objects).post(read_only))
        .route(
            &format!("{c}/objects/{{object}}/"),
            get(object).delete(read_only),
        )
        .route(&format!("{c}/objects/{{object}}/versions/"), get(versions))
        .route(&format!("{c}/manifest/"), get(manifest))
        .fallback(no_route)
        .with_state(taxii)
}

/// Serves the TAXII API on `listener` until the broker starts closing.
/// Connections are accepted and authenticated exactly as for gRPC
/// ([`transport::incoming`]), in their own pool of connection slots.
pub fn spawn(state: Arc<State>, listener: TcpListener) -> Result<SocketAddr, String> {
    let addr = listener
        .local_addr()
        .map_err(|e| format!("TAXII listener: {e}"))?;
    let c = &state.config;
    let tls = transport::http1_server_config(&c.cert, &c.key, state.verifier.clone())?;
    let mut incoming = transport::incoming(
        listener,
        Arc::new(tls),
        state.verifier.clone(),
        ConnLimits::from_limits(&c.limits),
    );
    let app = router(Arc::new(Taxii::new(state.clone())));
    let mut closing = state.closing.subscribe();
    tokio::spawn(async move {
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .keep_alive(true);
        let graceful = GracefulShutdown::new();
        loop {
            let conn = tokio::select! {
                c = incoming.next() => c,
                _ = closing.wait_for(|c| *c) => break,
            };
            let conn = match conn {
                Some(Ok(c)) => c,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "TAXII connection failed");
                    continue;
                }
                None => break,
            };
            let peer = conn.connect_info();
            let service = TowerToHyperService::new(app.clone().layer(Extension(peer)));
            let served = graceful.watch(http.serve_connection(TokioIo::new(conn), service));
            tokio::spawn(async move {
                if let Err(e) = served.await {
                    tracing::debug!(error = %e, "TAXII connection closed with an error");
                }
            });
        }
        if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("TAXII requests still open after the drain timeout");
        }
    });
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Two versions within one millisecond: as text, V2 sorts before V1.
    const V1: &str = "2026-01-01T00:00:00.123Z";
    const V2: &str = "2026-01-01T00:00:00.123004Z";

    fn entry(seq: u64, ord: u32, id: &str, version: &str) -> Entry {
        Entry::new(
            seq,
            ord,
            seq * 1000,
            &json!({"id": id, "type": id.split("--").next().unwrap(), "modified": version}),
        )
    }

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn versions_pages_and_filters() {
        let entries = vec![
            entry(1, 0, "task--a", V1),
            entry(1, 1, "note--n", V1),
            entry(2, 0, "task--a", V2),
            entry(3, 0, "report--r", V1),
        ];
        let f = Filters::parse(&q(&[]), "last").unwrap();
        let (page, more) = f.select([&entries, &[]]);
        let ids: Vec<_> = page
            .iter()
            .map(|e| (e.id.as_str(), e.version.as_str()))
            .collect();
        assert_eq!(ids, [("note--n", V1), ("task--a", V2), ("report--r", V1)]);
        assert!(!more);
        let f = Filters::parse(&q(&[("match[version]", "all"), ("limit", "2")]), "last").unwrap();
        let (page, more) = f.select([&entries, &[]]);
        assert_eq!(page.len(), 2);
        assert!(more);
        let token = page.last().unwrap().token();
        let f = Filters::parse(
            &q(&[("match[version]", "all"), ("limit", "2"), ("next", &token)]),
            "last",
        )
        .unwrap();
        let (page, more) = f.select([&entries, &[]]);
        assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3]);
        assert!(!more);
        let f = Filters::parse(
            &q(&[("match[type]", "task"), ("match[version]", "first")]),
            "last",
        )
        .unwrap();
        let (page, _) = f.select([&entries, &[]]);
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].version, V1);
        // added_after is strict.
        let f = Filters::parse(&q(&[("added_after", "1970-01-01T00:00:02Z")]), "all").unwrap();
        let (page, _) = f.select([&entries, &[]]);
        assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [3]);
    }

    #[test]
    fn bad_queries_are_refused() {
        for bad in [
            ("limit", "0"),
            ("limit", "x"),
            ("next", "zz"),
            ("added_after", "yesterday"),
            ("match[spec_version]", "2.0"),
            ("colour", "red"),
        ] {
            assert!(Filters::parse(&q(&[bad]), "last").is_err(), "{bad:?}");
        }
        assert_eq!(
            Filters::parse(&q(&[("limit", "999999")]), "last")
                .unwrap()
                .limit,
            MAX_PAGE
        );
    }

    #[test]
    fn accept_header() {
        let mut h = HeaderMap::new();
        assert!(check_accept(&h).is_ok());
        h.insert(header::ACCEPT, HeaderValue::from_static(TAXII_MEDIA));
        assert!(check_accept(&h).is_ok());
        h.insert(header::ACCEPT, HeaderValue::from_static("text/html"));
        assert_eq!(
            check_accept(&h).unwrap_err().status,
            StatusCode::NOT_ACCEPTABLE
        );
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/taxii+json;version=2.0"),
        );
        assert!(check_accept(&h).is_err());
    }
}
