//! The broker's metrics (Prometheus text exposition, `serve
//! --metrics-listen`): every metric name, its description and unit, the
//! histogram buckets, and small recording functions the call sites use, so a
//! newcomer finds every metric here. Recording goes through the `metrics`
//! crate; until [`install`] runs (metrics are off by default) the functions
//! return at once. No label carries a record's content, id, seq or any field
//! value: labels are fixed words (kind, result, status code, RPC, rule,
//! budget, reason), team ids and broker ids of the directory. The log's own
//! metrics (commit group size, fdatasync latency) are named in `log::writer`
//! and `log::storage` (the log does not know the broker) and described here;
//! the gauges read at scrape time are set by `broker::metrics_http`.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ::metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::log::storage::METRIC_FDATASYNC_SECONDS;
use crate::log::writer::{METRIC_COMMIT_GROUP_RECORDS, METRIC_COMMIT_SECONDS};
use crate::proto::body::Content;

// === counters and histograms recorded as things happen ===

/// Publishes by kind (`incident`, `warning`, `request`, `case_update`,
/// `retraction`, `unknown` before the body decodes) and result
/// (`accepted`, `duplicate`, `refused`).
pub const PUBLISHES: &str = "certex_publishes_total";
/// Re-publishes of an id already logged (retries), by team.
pub const PUBLISH_RETRIES: &str = "certex_publish_retries_total";
/// Time from a publish call's start to its receipt, by result
/// (`accepted`, `duplicate`).
pub const PUBLISH_SECONDS: &str = "certex_publish_duration_seconds";
/// Refused calls by RPC, gRPC status code, rule and team.
pub const REFUSALS: &str = "certex_refusals_total";
/// Calls refused by a per-team budget, by team and budget (`messages`,
/// `bytes`, `retries`, `day_quota`).
pub const RATE_LIMITED: &str = "certex_rate_limited_total";
/// TLS handshakes failed or turned away, by reason (see [`Handshake`]).
pub const HANDSHAKE_FAILURES: &str = "certex_tls_handshake_failures_total";
/// Directory reloads by result (`ok`, `refused`).
pub const DIRECTORY_RELOADS: &str = "certex_directory_reloads_total";
/// Signatures checked together by one thread of the signature pool.
pub const VERIFY_BATCH: &str = "certex_signature_batch_size";
/// Checkpoint pushes to witnesses by result (`cosigned`, `conflict`, `failed`).
pub const WITNESS_PUSHES: &str = "certex_witness_pushes_total";
/// Witness cosignatures received and kept.
pub const WITNESS_COSIGNATURES: &str = "certex_witness_cosignatures_total";

// === gauges set at scrape time (`broker::metrics_http`) ===

/// Records in the log (the committed tree size).
pub const LOG_RECORDS: &str = "certex_log_records";
/// Bytes the data directory's database occupies (records, nodes, indexes).
pub const LOG_BYTES: &str = "certex_log_bytes";
/// Free bytes on the data directory's device.
pub const DISK_FREE: &str = "certex_disk_free_bytes";
/// The free-disk watermark below which publishing pauses.
pub const DISK_WATERMARK: &str = "certex_disk_watermark_bytes";
/// Open authenticated connections (gRPC and TAXII).
pub const CONNECTIONS: &str = "certex_connections_open";
/// Open authenticated connections per team (or `broker:<ID>`).
pub const TEAM_CONNECTIONS: &str = "certex_team_connections_open";
/// Open subscriptions.
pub const SUBSCRIPTIONS: &str = "certex_subscriptions_open";
/// Open subscriptions per team.
pub const TEAM_SUBSCRIPTIONS: &str = "certex_team_subscriptions_open";
/// Per team, how many records the furthest-behind open subscription has
/// still to read up to the committed head (0 with none open).
pub const SUBSCRIBER_LAG: &str = "certex_team_subscriber_lag_records";
/// Per federation peer: 1 while its relay channel is up.
pub const PEER_CONNECTED: &str = "certex_federation_peer_connected";
/// Per federation peer: records of this log not yet relayed to it.
pub const PEER_LAG: &str = "certex_federation_peer_lag_records";
/// Per federation peer and outcome (`relayed`, `withheld`, `refused`):
/// records of this log examined for it.
pub const PEER_RECORDS: &str = "certex_federation_records_total";

/// Buckets of the latency histograms, in seconds.
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
/// Buckets of the commit group size, in records.
const GROUP_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

static ON: AtomicBool = AtomicBool::new(false);
static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Whether metrics are recorded (`--metrics-listen` given).
pub fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Installs the process-wide Prometheus recorder (once; later calls return
/// the same handle) and describes every metric.
pub fn install() -> Result<PrometheusHandle, String> {
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let mut b = PrometheusBuilder::new();
    for name in [
        PUBLISH_SECONDS,
        METRIC_COMMIT_SECONDS,
        METRIC_FDATASYNC_SECONDS,
    ] {
        b = b
            .set_buckets_for_metric(Matcher::Full(name.into()), SECONDS_BUCKETS)
            .map_err(|e| e.to_string())?;
    }
    for name in [METRIC_COMMIT_GROUP_RECORDS, VERIFY_BATCH] {
        b = b
            .set_buckets_for_metric(Matcher::Full(name.into()), GROUP_BUCKETS)
            .map_err(|e| e.to_string())?;
    }
    let handle = b
        .install_recorder()
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    let handle = HANDLE.get_or_init(|| handle).clone();
    describe();
    ON.store(true, Ordering::Relaxed);
    Ok(handle)
}

fn describe() {
    describe_counter!(
        PUBLISHES,
        "Publishes by kind and result (accepted, duplicate, refused)"
    );
    describe_counter!(
        PUBLISH_RETRIES,
        "Re-publishes of an id already logged, by team"
    );
    describe_histogram!(
        PUBLISH_SECONDS,
        Unit::Seconds,
        "Time from a publish call's start to its receipt, by result"
    );
    describe_counter!(
        REFUSALS,
        "Refused calls by RPC, gRPC status code, rule and team"
    );
    describe_counter!(
        RATE_LIMITED,
        "Calls refused by a per-team budget, by team and budget"
    );
    describe_counter!(
        HANDSHAKE_FAILURES,
        "TLS handshakes failed or turned away, by reason"
    );
    describe_counter!(DIRECTORY_RELOADS, "Directory reloads by result");
    describe_counter!(WITNESS_PUSHES, "Checkpoint pushes to witnesses by result");
    describe_counter!(
        WITNESS_COSIGNATURES,
        "Witness cosignatures received and kept"
    );
    describe_histogram!(
        VERIFY_BATCH,
        Unit::Count,
        "Signatures checked together as one batch by the signature pool"
    );
    describe_histogram!(
        METRIC_COMMIT_GROUP_RECORDS,
        Unit::Count,
        "Records committed together with one device sync"
    );
    describe_histogram!(
        METRIC_COMMIT_SECONDS,
        Unit::Seconds,
        "Time to write and sync one commit group"
    );
    describe_histogram!(
        METRIC_FDATASYNC_SECONDS,
        Unit::Seconds,
        "Time of the device syncs of a commit, by file (records, database)"
    );
    describe_gauge!(LOG_RECORDS, Unit::Count, "Records in the log");
    describe_gauge!(
        LOG_BYTES,
        Unit::Bytes,
        "Bytes the data directory's database occupies"
    );
    describe_gauge!(
        DISK_FREE,
        Unit::Bytes,
        "Free bytes on the data directory's device"
    );
    describe_gauge!(
        DISK_WATERMARK,
        Unit::Bytes,
        "Free-disk watermark below which publishing pauses (limits.min_free_disk_bytes)"
    );
    describe_gauge!(CONNECTIONS, "Open authenticated connections");
    describe_gauge!(TEAM_CONNECTIONS, "Open authenticated connections per team");
    describe_gauge!(SUBSCRIPTIONS, "Open subscriptions");
    describe_gauge!(TEAM_SUBSCRIPTIONS, "Open subscriptions per team");
    describe_gauge!(
        SUBSCRIBER_LAG,
        Unit::Count,
        "Records the team's furthest-behind open subscription has still to read"
    );
    describe_gauge!(
        PEER_CONNECTED,
        "1 while the relay channel to the peer is up"
    );
    describe_gauge!(
        PEER_LAG,
        Unit::Count,
        "Records of this log not yet relayed to the peer"
    );
    describe_counter!(
        PEER_RECORDS,
        "Records of this log examined for a peer, by outcome (relayed, withheld, refused)"
    );
}

/// Keeps the recorder's histograms drained between scrapes; ends with the
/// runtime.
pub fn spawn_upkeep(handle: PrometheusHandle) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            handle.run_upkeep();
        }
    });
}

// === recording ===

/// The kind word of a body's content.
pub fn kind_label(content: Option<&Content>) -> &'static str {
    match content {
        Some(Content::Incident(_)) => "incident",
        Some(Content::Warning(_)) => "warning",
        Some(Content::Request(_)) => "request",
        Some(Content::CaseUpdate(_)) => "case_update",
        Some(Content::Retraction(_)) => "retraction",
        None => "unknown",
    }
}

/// What became of a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishResult {
    Accepted,
    Duplicate,
    Refused,
}

impl PublishResult {
    fn word(self) -> &'static str {
        match self {
            PublishResult::Accepted => "accepted",
            PublishResult::Duplicate => "duplicate",
            PublishResult::Refused => "refused",
        }
    }
}

/// A publish of `kind` ended with `result` after `elapsed`.
/// The publish metrics' handles, looked up once: every publish records
/// two, and a labelled lookup per call costs a hash of the labels and a
/// map search in the recorder.
struct PublishHandles {
    /// By kind (in [`KINDS`]' order), then result.
    counts: Vec<[::metrics::Counter; 3]>,
    /// Accepted, duplicate.
    seconds: [::metrics::Histogram; 2],
    /// The size of each signature batch.
    batch: ::metrics::Histogram,
}

/// The body kinds [`kind_label`] gives.
const KINDS: [&str; 6] = [
    "incident",
    "warning",
    "request",
    "case_update",
    "retraction",
    "unknown",
];
const RESULTS: [PublishResult; 3] = [
    PublishResult::Accepted,
    PublishResult::Duplicate,
    PublishResult::Refused,
];

static PUBLISH_HANDLES: OnceLock<PublishHandles> = OnceLock::new();

/// The cached handles, registered on first use (after [`install`]).
fn publish_handles() -> &'static PublishHandles {
    PUBLISH_HANDLES.get_or_init(|| PublishHandles {
        counts: KINDS
            .iter()
            .map(|&kind| RESULTS.map(|r| counter!(PUBLISHES, "kind" => kind, "result" => r.word())))
            .collect(),
        seconds: [PublishResult::Accepted, PublishResult::Duplicate]
            .map(|r| histogram!(PUBLISH_SECONDS, "result" => r.word())),
        batch: histogram!(VERIFY_BATCH),
    })
}

pub fn publish(kind: &'static str, result: PublishResult, elapsed: Duration) {
    if !on() {
        return;
    }
    let h = publish_handles();
    let k = KINDS
        .iter()
        .position(|&k| k == kind)
        .unwrap_or(KINDS.len() - 1);
    h.counts[k][result as usize].increment(1);
    if result != PublishResult::Refused {
        h.seconds[result as usize].record(elapsed.as_secs_f64());
    }
}

/// A batch of `n` signatures checked together.
pub fn verify_batch(n: usize) {
    if on() {
        publish_handles().batch.record(n as f64);
    }
}

/// `team` re-published an id already logged.
pub fn publish_retry(team: &str) {
    if on() {
        counter!(PUBLISH_RETRIES, "team" => team.to_owned()).increment(1);
    }
}

/// A refused call (every refusal point goes through the refusal log).
pub fn refusal(team: &str, rpc: &str, code: tonic::Code, rule: &'static str) {
    if on() {
        counter!(
            REFUSALS,
            "rpc" => rpc_label(rpc),
            "code" => code_label(code),
            "rule" => rule,
            "team" => team.to_owned()
        )
        .increment(1);
    }
}

/// The per-team budgets of `limits`.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    Messages,
    Bytes,
    Retries,
    DayQuota,
}

/// `team` was refused by `budget`.
pub fn rate_limited(team: &str, budget: Budget) {
    if on() {
        let word = match budget {
            Budget::Messages => "messages",
            Budget::Bytes => "bytes",
            Budget::Retries => "retries",
            Budget::DayQuota => "day_quota",
        };
        counter!(RATE_LIMITED, "team" => team.to_owned(), "budget" => word).increment(1);
    }
}

/// Why a TLS handshake failed or was turned away: a small fixed set.
#[derive(Debug, Clone, Copy)]
pub enum Handshake {
    /// The handshake pool was full.
    PoolFull,
    /// Too many handshakes in progress from the source address.
    SourceLimit,
    /// Not completed within `limits.handshake_timeout_ms`.
    Timeout,
    /// The client certificate was refused (chain, directory, revocation).
    Certificate,
    /// Any other TLS failure (protocol, version, I/O).
    Protocol,
    /// Authenticated, but over a connection limit.
    ConnectionLimit,
}

/// A handshake failed or was turned away.
pub fn handshake_failure(reason: Handshake) {
    if on() {
        let word = match reason {
            Handshake::PoolFull => "pool_full",
            Handshake::SourceLimit => "source_limit",
            Handshake::Timeout => "timeout",
            Handshake::Certificate => "certificate",
            Handshake::Protocol => "protocol",
            Handshake::ConnectionLimit => "connection_limit",
        };
        counter!(HANDSHAKE_FAILURES, "reason" => word).increment(1);
    }
}

/// A directory reload ended.
pub fn directory_reload(ok: bool) {
    if on() {
        let word = if ok { "ok" } else { "refused" };
        counter!(DIRECTORY_RELOADS, "result" => word).increment(1);
    }
}

/// A checkpoint push to a witness ended: `Ok(kept cosignatures)`, or
/// `Err(conflict)`.
pub fn witness_push(result: Result<usize, bool>) {
    if !on() {
        return;
    }
    let word = match result {
        Ok(kept) => {
            counter!(WITNESS_COSIGNATURES).increment(kept as u64);
            "cosigned"
        }
        Err(true) => "conflict",
        Err(false) => "failed",
    };
    counter!(WITNESS_PUSHES, "result" => word).increment(1);
}

/// The method of an RPC name or path (`Publish`,
/// `/certex.v1.Exchange/Publish`) when it is one the broker serves, else
/// `other`: a client's path never becomes a label.
pub fn rpc_label(rpc: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "Publish",
        "Get",
        "Subscribe",
        "CommitCursor",
        "WhoAmI",
        "ListTeams",
        "ListGroups",
        "ListCases",
        "GetCase",
        "GetHead",
        "GetInclusionProof",
        "GetConsistencyProof",
        "GetCheckpoint",
        "AddCosignature",
        "Relay",
        "Status",
        "Check",
        "Watch",
        "ServerReflectionInfo",
    ];
    let method = rpc.rsplit('/').next().unwrap_or(rpc);
    KNOWN
        .iter()
        .find(|k| **k == method)
        .copied()
        .unwrap_or("other")
}

/// The canonical name of a gRPC status code.
pub fn code_label(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_fixed_words() {
        assert_eq!(rpc_label("/certex.v1.Exchange/Publish"), "Publish");
        assert_eq!(rpc_label("Publish"), "Publish");
        assert_eq!(rpc_label("/x.Y/SECRET-VALUE"), "other");
        assert_eq!(code_label(tonic::Code::InvalidArgument), "INVALID_ARGUMENT");
        assert_eq!(kind_label(None), "unknown");
    }
}
