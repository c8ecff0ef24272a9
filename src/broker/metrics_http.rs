//! The metrics endpoint (`serve --metrics-listen ADDR`): plain HTTP on its
//! own port, `GET /metrics` only, in the Prometheus text format. It is for
//! the operator: no TLS and no client authentication, so bind it to
//! loopback or a management network. It carries no record content (see
//! `broker::metrics` for what its labels may hold). On each scrape the
//! gauges that describe the broker's state now are read first — log size,
//! free disk and watermark, open connections and subscriptions per team,
//! subscriber lag, federation peers — so keeping them costs nothing between
//! scrapes; then the recorder renders everything.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use ::metrics::{counter, gauge};
use axum::Router;
use axum::extract::State as Shared;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::broker::metrics::{
    self, CONNECTIONS, DISK_FREE, DISK_WATERMARK, LOG_BYTES, LOG_RECORDS, PEER_CONNECTED, PEER_LAG,
    PEER_RECORDS, SUBSCRIBER_LAG, SUBSCRIPTIONS, TEAM_CONNECTIONS, TEAM_SUBSCRIPTIONS,
};
use crate::broker::state::State;

/// The text format's content type.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

struct Scrape {
    state: Arc<State>,
    handle: PrometheusHandle,
    /// Identities that have had a connection gauge, so one whose
    /// connections all closed reads 0 rather than its last value.
    seen: Mutex<BTreeSet<String>>,
}

/// Installs the recorder and serves `GET /metrics` on `listener` until the
/// broker shuts down. Returns the address.
pub fn spawn(state: Arc<State>, listener: TcpListener) -> Result<SocketAddr, String> {
    let addr = listener
        .local_addr()
        .map_err(|e| format!("metrics listener: {e}"))?;
    let handle = metrics::install()?;
    metrics::spawn_upkeep(handle.clone());
    let mut closing = state.closing.subscribe();
    let scrape = Arc::new(Scrape {
        state,
        handle,
        seen: Mutex::new(BTreeSet::new()),
    });
    let app = Router::new()
        .route("/metrics", get(render))
        .with_state(scrape);
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = closing.wait_for(|c| *c).await;
            })
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "the metrics listener stopped");
        }
    });
    Ok(addr)
}

async fn render(Shared(scrape): Shared<Arc<Scrape>>) -> impl IntoResponse {
    // Reading the disk and the relay state touches storage: off the workers.
    let text = tokio::task::spawn_blocking(move || {
        collect(&scrape);
        scrape.handle.render()
    })
    .await;
    match text {
        Ok(text) => (StatusCode::OK, [(header::CONTENT_TYPE, CONTENT_TYPE)], text),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, CONTENT_TYPE)],
            String::new(),
        ),
    }
}

/// Sets the gauges that describe the broker now.
fn collect(scrape: &Scrape) {
    let state = &scrape.state;
    let committed = state.committed();
    let storage = state.log().storage();
    gauge!(LOG_RECORDS).set(committed as f64);
    if let Ok(bytes) = storage.size_on_disk() {
        gauge!(LOG_BYTES).set(bytes as f64);
    }
    if let Ok(free) = storage.free_bytes() {
        gauge!(DISK_FREE).set(free as f64);
    }
    gauge!(DISK_WATERMARK).set(state.config.limits.min_free_disk_bytes as f64);

    let conns = state.verifier.connections_by_identity();
    gauge!(CONNECTIONS).set(conns.values().sum::<usize>() as f64);
    {
        let mut seen = scrape.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.extend(state.directory().teams().map(|t| t.id.clone()));
        seen.extend(conns.keys().cloned());
        for id in seen.iter() {
            let n = conns.get(id).copied().unwrap_or(0);
            gauge!(TEAM_CONNECTIONS, "team" => id.clone()).set(n as f64);
        }
    }

    gauge!(SUBSCRIPTIONS).set(state.slots.open() as f64);
    for t in state.slots.per_team() {
        let lag = t.lowest.map_or(0, |at| committed.saturating_sub(at));
        gauge!(TEAM_SUBSCRIPTIONS, "team" => t.team.clone()).set(t.open as f64);
        gauge!(SUBSCRIBER_LAG, "team" => t.team).set(lag as f64);
    }

    if let Some(fed) = &state.federation
        && let Ok(status) = fed.status(storage, committed)
    {
        for p in status.peers {
            let peer = p.broker;
            gauge!(PEER_CONNECTED, "peer" => peer.clone()).set(if p.connected { 1.0 } else { 0.0 });
            gauge!(PEER_LAG, "peer" => peer.clone()).set(p.lag as f64);
            for (outcome, n) in [
                ("relayed", p.relayed),
                ("withheld", p.withheld),
                ("refused", p.refused),
            ] {
                counter!(PEER_RECORDS, "peer" => peer.clone(), "outcome" => outcome).absolute(n);
            }
        }
    }
}
