//! `certex bench`: measured, not guessed. Each scenario drives a broker over
//! real mTLS with signed bodies and ends with one JSON summary line on
//! stdout (progress goes to stderr). By default the broker is a child
//! process started from this binary with a temporary PKI and database, so
//! its RSS is measured apart from the load generator. `bench federation`
//! runs its three brokers in this process instead
//! ([`crate::cli::federation::LocalFederation`]), so its CPU and RSS figures
//! are the whole process's.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Subcommand;
use futures_util::StreamExt;
use serde::Serialize;

use crate::broker::config::{BrokerConfig, Limits};
use crate::cli::abuse::{self, AttackKind, Mix, PeakRss, Target, VICTIM, rss_kib};
use crate::client::connection::{Client, ClientFiles};
use crate::proto::{self as pb, body::Content};

use crate::cli::pki::SAMPLE_TEAMS as TEAMS;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Durable publishes: N concurrent publishers for S seconds.
    Publish {
        /// Concurrent publishers, each with its own connection.
        #[arg(long, default_value_t = 16)]
        publishers: usize,
        /// Seconds to publish for.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Body size in bytes (padded description).
        #[arg(long, default_value_t = 2048)]
        size: usize,
        /// Publishes in flight per publisher (closed loop).
        #[arg(long, default_value_t = 1)]
        depth: usize,
        /// Offered load in publishes/s across all publishers (open loop:
        /// sends on a fixed schedule whatever the replies, up to 256 in flight
        /// per publisher). Without it each publisher sends as fast as its
        /// `--depth` allows.
        #[arg(long)]
        rate: Option<u64>,
        /// Each publisher opens one PublishStream and keeps up to `--window`
        /// envelopes in flight on it (instead of unary calls).
        #[arg(long)]
        stream: bool,
        /// With --stream: envelopes in flight per stream (the broker's
        /// limits.publish_stream_window is raised to it when larger).
        #[arg(long, default_value_t = 256)]
        window: usize,
        /// Envelopes signed before the timed window (on all cores; in
        /// production the signer is the sender's machine); the run ends at
        /// --duration or when they run out. Default: --duration × 40,000
        /// (~2.2 KB of memory each with 2 KiB bodies).
        #[arg(long)]
        records: Option<u64>,
    },
    /// Delivery latency from publish to each of N live subscribers at R msg/s.
    Fanout {
        /// Live subscribers, each with its own connection.
        #[arg(long, default_value_t = 100)]
        subscribers: usize,
        /// Publishes per second.
        #[arg(long, default_value_t = 500)]
        rate: u64,
        /// Seconds to publish for.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Body size in bytes (padded description).
        #[arg(long, default_value_t = 2048)]
        size: usize,
    },
    /// Replay rate of one subscriber from seq 0 over N records.
    Catchup {
        /// Records published before the subscriber starts.
        #[arg(long, default_value_t = 100_000)]
        records: u64,
        /// Body size in bytes (padded description).
        #[arg(long, default_value_t = 2048)]
        size: usize,
    },
    /// Broker RSS after N records, then with M idle live subscribers.
    Memory {
        /// Records published first.
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
        /// Live subscribers then opened and left idle at the tail.
        #[arg(long, default_value_t = 1_000)]
        idle_subscribers: usize,
        /// Body size in bytes (padded description).
        #[arg(long, default_value_t = 2048)]
        size: usize,
    },
    /// Merkle append and proof timings at N leaves (storage-backed).
    Log {
        /// Leaves appended to the tree.
        #[arg(long, default_value_t = 1_000_000)]
        leaves: u64,
    },
    /// Hostile members (issue 11): a victim team's p50/p99 latency under
    /// each attack against its baseline, and the broker's peak RSS, at full
    /// scale against the default limits; one JSON line per attack, then one
    /// with every attack at once ("all"; the disk attack needs a broker of
    /// its own and is not part of it).
    Abuse {
        /// An attack to run (repeatable); without it, every attack and "all".
        #[arg(long = "attack", value_enum)]
        attacks: Vec<AttackKind>,
        /// Also run the chosen attacks at once (implied without --attack).
        #[arg(long)]
        all: bool,
        /// Victim calls per measurement, Publish and Get in turn.
        #[arg(long, default_value_t = 300)]
        calls: usize,
    },
    /// Three federated brokers (CN, BR, RU) in this process on loopback,
    /// real mTLS: relay throughput and per-record lag from CN's receipt to
    /// BR's and RU's, then RU's catch-up after it was down while `--down`
    /// records were published; one JSON line per phase.
    Federation {
        /// Records CN's team publishes in the relay phase.
        #[arg(long, default_value_t = 20_000)]
        records: u64,
        /// Body size in bytes (padded description).
        #[arg(long, default_value_t = 2048)]
        size: usize,
        /// Concurrent publishers at CN (one connection and one publish in
        /// flight each).
        #[arg(long, default_value_t = 16)]
        publishers: usize,
        /// Records published while RU is down.
        #[arg(long, default_value_t = 10_000)]
        down: u64,
    },
    /// The machine's limits: Ed25519 verifies/s on all cores (one by one and in batches of 64), one torsion check's cost, fdatasync/s.
    Limits {
        /// Bytes written before each fdatasync.
        #[arg(long, default_value_t = 32 * 1024)]
        commit_bytes: usize,
    },
}

fn progress(msg: &str) {
    eprintln!("bench: {msg}");
}

/// Percentile of sorted values (nearest rank).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn round(x: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (x * m).round() / m
}

/// A broker child process with a temporary PKI and database.
pub struct BenchBroker {
    child: Child,
    pub url: String,
    pub pki: PathBuf,
    pub data: PathBuf,
    _tmp: tempfile::TempDir,
}

/// The limits of the throughput scenarios: the defaults, with the per-team
/// budgets out of the way of a load generator that is one client.
fn bench_limits() -> Limits {
    Limits {
        rate_per_second: 1_000_000,
        rate_burst: 1_000_000,
        max_subscriptions_per_team: 100_000,
        max_connections: 100_000,
        ..Limits::default()
    }
}

/// Starts `certex serve --config` over `pki` and `data` with `limits`
/// (the binary named by `CERTEX_BENCH_BROKER`, else this one).
/// With `CERTEX_BENCH_METRICS` set in the environment the broker records
/// metrics (`metrics_listen` on 127.0.0.1:0), to measure what they cost.
fn spawn_broker(pki: &Path, data: &Path, limits: &Limits) -> Result<(Child, String), String> {
    let mut config =
        BrokerConfig::from_pki(pki, data, "127.0.0.1:0".parse().map_err(|_| "address")?);
    config.limits = limits.clone();
    if std::env::var_os("CERTEX_BENCH_METRICS").is_some() {
        config.metrics_listen = Some("127.0.0.1:0".parse().map_err(|_| "address")?);
    }
    let file = data.with_extension("toml");
    let text = toml::to_string(&config).map_err(|e| format!("broker config: {e}"))?;
    std::fs::write(&file, text).map_err(|e| format!("{}: {e}", file.display()))?;
    // CERTEX_BENCH_BROKER names another certex binary to serve (an earlier
    // build), so before/after runs share this load generator.
    let exe = match std::env::var_os("CERTEX_BENCH_BROKER") {
        Some(path) => PathBuf::from(path),
        None => std::env::current_exe().map_err(|e| e.to_string())?,
    };
    // Text logs whatever the caller's CERTEX_LOG_FORMAT: the listening
    // line below is read as text.
    let mut child = Command::new(exe)
        .args(["--log-format", "text", "serve", "--config"])
        .arg(&file)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the broker: {e}"))?;
    let mut lines = BufReader::new(child.stderr.take().ok_or("no stderr")?).lines();
    let addr = loop {
        let line = lines
            .next()
            .ok_or("broker exited before listening")?
            .map_err(|e| e.to_string())?;
        if let Some(a) = line.strip_prefix("certex broker listening on ") {
            break a.to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let port = addr.rsplit(':').next().unwrap_or_default().to_owned();
    Ok((child, format!("https://localhost:{port}")))
}

impl BenchBroker {
    /// A broker for the throughput scenarios ([`bench_limits`]).
    pub fn start() -> Result<Self, String> {
        Self::start_with(&bench_limits())
    }

    pub fn start_with(limits: &Limits) -> Result<Self, String> {
        let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
        let pki = tmp.path().join("pki");
        let data = tmp.path().join("data");
        crate::cli::pki::init_sample(&pki)?;
        let (child, url) = spawn_broker(&pki, &data, limits)?;
        Ok(BenchBroker {
            child,
            url,
            pki,
            data,
            _tmp: tmp,
        })
    }

    /// Kills the broker and starts it again over the same database with
    /// `limits`.
    pub fn restart_with(&mut self, limits: &Limits) -> Result<(), String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, url) = spawn_broker(&self.pki, &self.data, limits)?;
        self.child = child;
        self.url = url;
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn rss_mib(&self) -> f64 {
        rss_kib(self.child.id()).unwrap_or(0) as f64 / 1024.0
    }

    /// CPU time the broker process has used (user + system, all threads).
    pub fn cpu_seconds(&self) -> f64 {
        // Fields 14 and 15 of /proc/PID/stat, in USER_HZ (100 on Linux),
        // counted after the parenthesised command name.
        std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .ok()
            .and_then(|s| {
                let rest = s.rsplit_once(')')?.1;
                let f: Vec<&str> = rest.split_whitespace().collect();
                let utime: f64 = f.get(11)?.parse().ok()?;
                let stime: f64 = f.get(12)?.parse().ok()?;
                Some((utime + stime) / 100.0)
            })
            .unwrap_or(0.0)
    }

    pub async fn client(&self, team: &str) -> Result<Client, String> {
        Client::connect(&self.url, &ClientFiles::from_pki(&self.pki, team), team)
            .await
            .map_err(|e| e.to_string())
    }

    pub fn bytes_on_disk(&self) -> u64 {
        dir_size(&self.data)
    }
}

impl Drop for BenchBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// A community incident whose encoded body is about `size` bytes.
pub fn sized_body(team: &str, size: usize, tag: &str) -> pb::Body {
    let mut body = crate::cli::abuse::small_incident(team, tag);
    if let Some(Content::Incident(inc)) = body.content.as_mut() {
        inc.description = "x".repeat(size.saturating_sub(180));
        inc.severity = pb::Severity::Medium as i32;
    }
    body
}

#[derive(Serialize)]
struct PublishSummary {
    scenario: &'static str,
    /// "unary" (one call per envelope) or "stream" (PublishStream).
    mode: &'static str,
    publishers: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    window: Option<usize>,
    depth: usize,
    size: usize,
    duration_s: f64,
    records: u64,
    errors: u64,
    throughput: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    offered_rate: Option<u64>,
    /// Broker CPU time (user + system, all threads) per durable record.
    broker_cpu_us_per_record: f64,
    /// This process's CPU time (the load generator: sending, TLS, receipts;
    /// not signing, done before) per durable record.
    generator_cpu_us_per_record: f64,
    /// Envelopes signed before the timed window.
    presigned: u64,
    /// Whether the run ended because they ran out (before --duration).
    supply_exhausted: bool,
    broker_rss_mib: f64,
    disk_bytes_per_record: f64,
}

/// How `bench publish` sends.
pub struct PublishShape {
    pub publishers: usize,
    pub duration: u64,
    pub size: usize,
    pub depth: usize,
    pub rate: Option<u64>,
    /// Stream mode with this many in flight per stream.
    pub window: Option<usize>,
    pub records: u64,
}

/// Signs `per` envelopes of `size` bytes for each client (its team's key),
/// on all cores: one list per client.
fn presign(clients: &[Client], per: u64, size: usize) -> Result<Vec<Vec<pb::Envelope>>, String> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let chunks: Vec<Vec<Vec<pb::Envelope>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let clients = clients.to_vec();
                s.spawn(move || {
                    clients
                        .iter()
                        .map(|c| {
                            // Thread t signs its share of every client's list.
                            let n = per / threads + u64::from(t < per % threads);
                            sign_all(c, n, size, "bench")
                        })
                        .collect::<Result<Vec<_>, String>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| "a signing thread panicked".to_owned())?
            })
            .collect::<Result<Vec<_>, String>>()
    })?;
    let mut out: Vec<Vec<pb::Envelope>> = vec![Vec::new(); clients.len()];
    for chunk in chunks {
        for (i, list) in chunk.into_iter().enumerate() {
            out[i].extend(list);
        }
    }
    Ok(out)
}

/// One stream publisher: `envelopes` on one PublishStream, at most
/// `window` awaiting receipts; each record's latency (send to receipt) and
/// the refused count.
async fn stream_publisher(
    c: Client,
    envelopes: Vec<pb::Envelope>,
    window: usize,
    stop: Arc<AtomicBool>,
) -> Result<(Vec<f64>, u64), String> {
    use std::collections::VecDeque;
    let room = Arc::new(tokio::sync::Semaphore::new(window));
    let sent = Arc::new(std::sync::Mutex::new(VecDeque::<Instant>::new()));
    let source = futures_util::stream::unfold(
        (envelopes.into_iter(), room.clone(), sent.clone()),
        move |(mut it, room, sent)| {
            let stop = stop.clone();
            async move {
                room.acquire().await.ok()?.forget();
                if stop.load(Ordering::Relaxed) {
                    return None;
                }
                let env = it.next()?;
                sent.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_back(Instant::now());
                Some((env, (it, room, sent)))
            }
        },
    );
    let mut outcomes = c.publish_stream(source).await.map_err(|e| e.to_string())?;
    let (mut lat, mut refused) = (Vec::new(), 0);
    while let Some(o) = outcomes.next().await {
        let o = o.map_err(|e| e.to_string())?;
        let at = sent.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
        room.add_permits(1);
        match (o.outcome, at) {
            (Ok(_), Some(t)) => lat.push(t.elapsed().as_secs_f64() * 1000.0),
            _ => refused += 1,
        }
    }
    Ok((lat, refused))
}

/// One publish and how long its durable receipt took.
async fn timed_publish(c: Client, env: pb::Envelope) -> (Duration, bool) {
    let t = Instant::now();
    let r = c.publish(env).await;
    (t.elapsed(), r.is_ok())
}

async fn publish(shape: PublishShape) -> Result<String, String> {
    let PublishShape {
        publishers,
        duration,
        size,
        depth,
        rate,
        window,
        records,
    } = shape;
    let mut limits = bench_limits();
    if let Some(w) = window {
        limits.publish_stream_window = limits.publish_stream_window.max(w);
        limits.publish_stream_window_bytes =
            limits.publish_stream_window_bytes.max(w * (size + 1024));
    }
    let broker = BenchBroker::start_with(&limits)?;
    let shape = match (window, rate) {
        (Some(w), _) => format!("one stream each, {w} in flight"),
        (None, Some(r)) => format!("{r}/s offered (open loop)"),
        (None, None) => format!("{depth} in flight each"),
    };
    progress(&format!(
        "publish: {publishers} publishers, {shape}, {size}-byte bodies, {duration} s, broker at {}",
        broker.url
    ));
    let mut clients = Vec::new();
    for i in 0..publishers {
        clients.push(broker.client(TEAMS[i % TEAMS.len()]).await?);
    }
    progress(&format!(
        "publish: signing {records} envelopes on all cores"
    ));
    let per = records.div_ceil(publishers as u64);
    let supply = {
        let clients = clients.clone();
        tokio::task::spawn_blocking(move || presign(&clients, per, size))
            .await
            .map_err(|e| e.to_string())??
    };
    let presigned = per * publishers as u64;
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let exhausted = Arc::new(AtomicBool::new(false));
    let cpu_before = broker.cpu_seconds();
    let gen_before = process_cpu_seconds();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, (c, envs)) in clients.into_iter().zip(supply).enumerate() {
        let (stop, errors, exhausted) = (stop.clone(), errors.clone(), exhausted.clone());
        tasks.push(tokio::spawn(async move {
            if let Some(w) = window {
                let (lat, refused) = stream_publisher(c, envs, w, stop.clone())
                    .await
                    .unwrap_or_else(|e| {
                        progress(&format!("publish: stream {i} failed: {e}"));
                        (Vec::new(), 1)
                    });
                errors.fetch_add(refused, Ordering::Relaxed);
                if !stop.load(Ordering::Relaxed) {
                    exhausted.store(true, Ordering::Relaxed);
                }
                return lat;
            }
            let mut envs = envs.into_iter();
            let mut lat = Vec::new();
            let mut in_flight = futures_util::stream::FuturesUnordered::new();
            if let Some(rate) = rate {
                let period = Duration::from_secs_f64(publishers as f64 / rate.max(1) as f64);
                // Publishers take turns: one send every period / publishers.
                let offset = period.mul_f64(i as f64 / publishers as f64);
                let mut tick =
                    tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let mut sending = true;
                loop {
                    sending = sending && !stop.load(Ordering::Relaxed);
                    if !sending && in_flight.is_empty() {
                        break;
                    }
                    tokio::select! {
                        _ = tick.tick(), if sending && in_flight.len() < 256 => {
                            match envs.next() {
                                Some(env) => in_flight.push(timed_publish(c.clone(), env)),
                                None => {
                                    exhausted.store(true, Ordering::Relaxed);
                                    sending = false;
                                }
                            }
                        }
                        Some((d, ok)) = in_flight.next(), if !in_flight.is_empty() => {
                            if ok {
                                lat.push(d.as_secs_f64() * 1000.0);
                            } else {
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        _ = tokio::time::sleep(Duration::from_millis(50)), if !sending => {}
                    }
                }
                return lat;
            }
            loop {
                while in_flight.len() < depth && !stop.load(Ordering::Relaxed) {
                    let Some(env) = envs.next() else {
                        exhausted.store(true, Ordering::Relaxed);
                        break;
                    };
                    in_flight.push(timed_publish(c.clone(), env));
                }
                match in_flight.next().await {
                    Some((d, ok)) => {
                        if ok {
                            lat.push(d.as_secs_f64() * 1000.0);
                        } else {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    None => break,
                }
            }
            lat
        }));
    }
    let ticker = {
        let stop = stop.clone();
        tokio::spawn(async move {
            for s in 1..=duration {
                tokio::time::sleep(Duration::from_secs(1)).await;
                progress(&format!("publish: {s}/{duration} s"));
            }
            stop.store(true, Ordering::Relaxed);
        })
    };
    // The run ends at the duration, or earlier when the supply runs out.
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.map_err(|e| e.to_string())?);
    }
    ticker.abort();
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = broker.cpu_seconds() - cpu_before;
    let generator = process_cpu_seconds() - gen_before;
    lat.sort_by(f64::total_cmp);
    let records = lat.len() as u64;
    let per_record = |secs: f64| round(secs * 1e6 / records.max(1) as f64, 1);
    let summary = PublishSummary {
        scenario: "publish",
        mode: if window.is_some() { "stream" } else { "unary" },
        publishers,
        window,
        depth,
        offered_rate: rate,
        broker_cpu_us_per_record: per_record(cpu),
        generator_cpu_us_per_record: per_record(generator),
        presigned,
        supply_exhausted: exhausted.load(Ordering::Relaxed),
        size,
        duration_s: round(elapsed, 2),
        records,
        errors: errors.load(Ordering::Relaxed),
        throughput: round(records as f64 / elapsed, 1),
        p50_ms: round(percentile(&lat, 50.0), 3),
        p90_ms: round(percentile(&lat, 90.0), 3),
        p99_ms: round(percentile(&lat, 99.0), 3),
        max_ms: round(lat.last().copied().unwrap_or(0.0), 3),
        broker_rss_mib: round(broker.rss_mib(), 1),
        disk_bytes_per_record: round(broker.bytes_on_disk() as f64 / records.max(1) as f64, 1),
    };
    serde_json::to_string(&summary).map_err(|e| e.to_string())
}

#[derive(Serialize)]
struct FanoutSummary {
    scenario: &'static str,
    subscribers: usize,
    rate: u64,
    size: usize,
    published: u64,
    delivered: u64,
    lost: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    broker_rss_mib: f64,
    /// Broker CPU over the run (publishing, delivering), and the load
    /// generator's (publisher and readers) in this process.
    broker_cpu_s: f64,
    generator_cpu_s: f64,
    disk_bytes_per_record: f64,
}

/// What a fan-out reader looks at in a body: the incident's title, which
/// carries the publisher's clock. The rest (the padded description) is
/// skipped, not decoded, so the readers cost little beside the broker.
#[derive(Clone, PartialEq, prost::Message)]
struct StampedBody {
    /// `Body.incident`.
    #[prost(message, optional, tag = "10")]
    incident: Option<Stamp>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Stamp {
    /// `IncidentReport.title`.
    #[prost(string, tag = "1")]
    title: String,
}

fn unix_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Opens `n` live subscriptions at the tail over `conns` connections (the
/// teams taken in turn); the clients are returned to keep them open.
async fn tail_subscriptions(
    broker: &BenchBroker,
    n: usize,
    conns: usize,
) -> Result<(Vec<Client>, Vec<tonic::Streaming<pb::Record>>), String> {
    let conns = conns.max(1);
    let mut clients = Vec::new();
    for i in 0..conns {
        clients.push(broker.client(TEAMS[i % TEAMS.len()]).await?);
    }
    let mut streams = Vec::with_capacity(n);
    for i in 0..n {
        let s = clients[i % conns]
            .exchange()
            .subscribe(pb::SubscribeRequest {
                start: Some(pb::subscribe_request::Start::Tail(true)),
                filter: None,
                follow: true,
            })
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        streams.push(s);
    }
    Ok((clients, streams))
}

async fn fanout(
    subscribers: usize,
    rate: u64,
    duration: u64,
    size: usize,
) -> Result<String, String> {
    let broker = BenchBroker::start()?;
    progress(&format!(
        "fanout: {subscribers} subscribers, {rate} msg/s for {duration} s, broker at {}",
        broker.url
    ));
    // Subscriptions share a few connections (HTTP/2 streams), as a feed
    // gateway would.
    let (_readers, streams) =
        tail_subscriptions(&broker, subscribers, subscribers.clamp(1, 16)).await?;
    let expected = rate * duration;
    let mut tasks = Vec::new();
    for mut s in streams {
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(expected as usize);
            while (lat.len() as u64) < expected {
                match tokio::time::timeout(Duration::from_secs(10), s.message()).await {
                    Ok(Ok(Some(rec))) => {
                        let now = unix_nanos();
                        let sent = rec
                            .envelope
                            .as_ref()
                            .and_then(|e| {
                                <StampedBody as prost::Message>::decode(e.body.clone()).ok()
                            })
                            .and_then(|b| b.incident?.title.parse::<u128>().ok())
                            .unwrap_or(now);
                        lat.push(now.saturating_sub(sent) as f64 / 1e6);
                    }
                    _ => break,
                }
            }
            lat
        }));
    }
    let publisher = broker.client("CN-CNCERT").await?;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let (broker_cpu0, own_cpu0) = (broker.cpu_seconds(), process_cpu_seconds());
    let start = Instant::now();
    let mut published = 0u64;
    let mut in_flight = futures_util::stream::FuturesUnordered::new();
    while published < expected {
        let due = start + interval.mul_f64(published as f64);
        tokio::time::sleep_until(due.into()).await;
        let body = sized_body("CN-CNCERT", size, &unix_nanos().to_string());
        let env = publisher.seal(&body).map_err(|e| e.to_string())?;
        let c = publisher.clone();
        in_flight.push(async move { c.publish(env).await.is_ok() });
        published += 1;
        while let Some(Some(_)) = futures_util::FutureExt::now_or_never(in_flight.next()) {}
        if published.is_multiple_of(rate) {
            progress(&format!("fanout: {}/{duration} s", published / rate));
        }
    }
    while in_flight.next().await.is_some() {}
    let mut lat = Vec::new();
    let mut delivered = 0u64;
    for t in tasks {
        let l = t.await.map_err(|e| e.to_string())?;
        delivered += l.len() as u64;
        lat.extend(l);
    }
    let (broker_cpu, own_cpu) = (
        broker.cpu_seconds() - broker_cpu0,
        process_cpu_seconds() - own_cpu0,
    );
    lat.sort_by(f64::total_cmp);
    let summary = FanoutSummary {
        scenario: "fanout",
        subscribers,
        rate,
        size,
        published,
        delivered,
        lost: (published * subscribers as u64).saturating_sub(delivered),
        p50_ms: round(percentile(&lat, 50.0), 3),
        p99_ms: round(percentile(&lat, 99.0), 3),
        max_ms: round(lat.last().copied().unwrap_or(0.0), 3),
        broker_rss_mib: round(broker.rss_mib(), 1),
        broker_cpu_s: round(broker_cpu, 2),
        generator_cpu_s: round(own_cpu, 2),
        disk_bytes_per_record: round(broker.bytes_on_disk() as f64 / published.max(1) as f64, 1),
    };
    serde_json::to_string(&summary).map_err(|e| e.to_string())
}

#[derive(Serialize)]
struct CatchupSummary {
    scenario: &'static str,
    records: u64,
    size: usize,
    seconds: f64,
    records_per_s: f64,
    mib_per_s: f64,
    broker_rss_mib: f64,
    /// CPU of the replay: the broker's, and the reader's (receiving,
    /// decrypting and decoding the records; it verifies nothing).
    broker_cpu_s: f64,
    reader_cpu_s: f64,
    disk_bytes_per_record: f64,
}

/// Publishes `records` community incidents of `size` bytes, spread over the
/// sample teams, 32 in flight per team.
async fn load(broker: &BenchBroker, records: u64, size: usize, tag: &str) -> Result<(), String> {
    progress(&format!("{tag}: loading {records} records of {size} bytes"));
    let done = Arc::new(AtomicU64::new(0));
    let loading = Arc::new(AtomicBool::new(true));
    let reporter = {
        let (done, loading) = (done.clone(), loading.clone());
        let pid = broker.child.id();
        let tag = tag.to_owned();
        tokio::spawn(async move {
            while loading.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(10)).await;
                progress(&format!(
                    "{tag}: {} records, broker RSS {:.1} MiB",
                    done.load(Ordering::Relaxed),
                    rss_kib(pid).unwrap_or(0) as f64 / 1024.0
                ));
            }
        })
    };
    let mut loaders = Vec::new();
    let per = records.div_ceil(TEAMS.len() as u64);
    for (i, team) in TEAMS.iter().enumerate() {
        let c = broker.client(team).await?;
        let n = per.min(records.saturating_sub(per * i as u64));
        let done = done.clone();
        loaders.push(tokio::spawn(async move {
            let mut in_flight = futures_util::stream::FuturesUnordered::new();
            for _ in 0..n {
                let env = c
                    .seal(&sized_body(c.team(), size, "catchup"))
                    .expect("signing key");
                let c = c.clone();
                let done = done.clone();
                in_flight.push(async move {
                    let ok = c.publish(env).await.is_ok();
                    done.fetch_add(u64::from(ok), Ordering::Relaxed);
                });
                if in_flight.len() >= 32 {
                    in_flight.next().await;
                }
            }
            while in_flight.next().await.is_some() {}
        }));
    }
    for l in loaders {
        l.await.map_err(|e| e.to_string())?;
    }
    loading.store(false, Ordering::Relaxed);
    reporter.abort();
    let done = done.load(Ordering::Relaxed);
    if done != records {
        return Err(format!(
            "{tag}: only {done} of {records} publishes succeeded"
        ));
    }
    Ok(())
}

#[derive(Serialize)]
struct MemorySummary {
    scenario: &'static str,
    records: u64,
    size: usize,
    idle_subscribers: usize,
    rss_after_load_mib: f64,
    rss_with_subscribers_mib: f64,
    disk_bytes_per_record: f64,
}

async fn memory(records: u64, idle: usize, size: usize) -> Result<String, String> {
    let broker = BenchBroker::start()?;
    load(&broker, records, size, "memory").await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_load = broker.rss_mib();
    progress(&format!("memory: opening {idle} idle subscriptions"));
    // One connection per 50 subscribers.
    let (_clients, streams) = tail_subscriptions(&broker, idle, idle.div_ceil(50)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let summary = MemorySummary {
        scenario: "memory",
        records,
        size,
        idle_subscribers: streams.len(),
        rss_after_load_mib: round(after_load, 1),
        rss_with_subscribers_mib: round(broker.rss_mib(), 1),
        disk_bytes_per_record: round(broker.bytes_on_disk() as f64 / records.max(1) as f64, 1),
    };
    drop(streams);
    serde_json::to_string(&summary).map_err(|e| e.to_string())
}

async fn catchup(records: u64, size: usize) -> Result<String, String> {
    let broker = BenchBroker::start()?;
    load(&broker, records, size, "catchup").await?;
    progress("catchup: replaying from seq 0");
    let reader = broker.client("US-CISA").await?;
    let (broker_cpu0, own_cpu0) = (broker.cpu_seconds(), process_cpu_seconds());
    let start = Instant::now();
    let mut s = reader
        .exchange()
        .subscribe(pb::SubscribeRequest {
            start: Some(pb::subscribe_request::Start::AfterSeq(0)),
            filter: None,
            follow: false,
        })
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    let mut n = 0u64;
    let mut bytes = 0u64;
    while let Some(rec) = s.message().await.map_err(|e| e.to_string())? {
        n += 1;
        bytes += rec.envelope.map(|e| e.body.len() as u64).unwrap_or(0);
    }
    let secs = start.elapsed().as_secs_f64();
    let (broker_cpu, own_cpu) = (
        broker.cpu_seconds() - broker_cpu0,
        process_cpu_seconds() - own_cpu0,
    );
    let summary = CatchupSummary {
        scenario: "catchup",
        records: n,
        size,
        seconds: round(secs, 3),
        records_per_s: round(n as f64 / secs, 1),
        mib_per_s: round(bytes as f64 / secs / 1048576.0, 1),
        broker_rss_mib: round(broker.rss_mib(), 1),
        broker_cpu_s: round(broker_cpu, 2),
        reader_cpu_s: round(own_cpu, 2),
        disk_bytes_per_record: round(broker.bytes_on_disk() as f64 / n.max(1) as f64, 1),
    };
    serde_json::to_string(&summary).map_err(|e| e.to_string())
}

#[derive(Serialize)]
struct LogSummary {
    scenario: &'static str,
    leaves: u64,
    append_per_leaf_us: f64,
    inclusion_p50_us: f64,
    inclusion_p99_us: f64,
    consistency_p50_us: f64,
    consistency_p99_us: f64,
    proof_hashes_max: usize,
    rss_mib: f64,
    disk_bytes_per_leaf: f64,
}

fn log_bench(leaves: u64) -> Result<String, String> {
    use crate::log::merkle::{Frontier, consistency_path, inclusion_path};
    use crate::log::storage::{Storage, WriteBatch};
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let storage = Storage::open(&tmp.path().join("db")).map_err(|e| e.to_string())?;
    let mut frontier = Frontier::new();
    progress(&format!(
        "log: appending {leaves} leaves (commits of 1024, synced)"
    ));
    let start = Instant::now();
    let mut batch = WriteBatch::default();
    for i in 0..leaves {
        let leaf = crate::log::merkle::leaf_hash(&i.to_be_bytes());
        for (level, index, hash) in frontier.push(leaf) {
            batch.put_node(level, index, &hash);
        }
        if (i + 1) % 1024 == 0 || i + 1 == leaves {
            storage
                .commit(std::mem::take(&mut batch))
                .map_err(|e| e.to_string())?;
        }
        if (i + 1) % 200_000 == 0 {
            progress(&format!("log: {} leaves", i + 1));
        }
    }
    let append = start.elapsed().as_secs_f64() * 1e6 / leaves.max(1) as f64;
    let root = frontier.root();
    let mut incl = Vec::new();
    let mut cons = Vec::new();
    let mut max_len = 0;
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for _ in 0..2000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let idx = x % leaves;
        let t = Instant::now();
        let p = inclusion_path(idx, leaves, &storage).map_err(|e| e.to_string())?;
        incl.push(t.elapsed().as_secs_f64() * 1e6);
        max_len = max_len.max(p.len());
        let leaf = crate::log::merkle::leaf_hash(&idx.to_be_bytes());
        crate::client::verify::verify_inclusion(&leaf, idx, leaves, &p, &root)
            .map_err(|e| e.to_string())?;
        let old = 1 + idx % leaves;
        let t = Instant::now();
        let c = consistency_path(old, leaves, &storage).map_err(|e| e.to_string())?;
        cons.push(t.elapsed().as_secs_f64() * 1e6);
        max_len = max_len.max(c.len());
    }
    incl.sort_by(f64::total_cmp);
    cons.sort_by(f64::total_cmp);
    let s = LogSummary {
        scenario: "log",
        leaves,
        append_per_leaf_us: round(append, 3),
        inclusion_p50_us: round(percentile(&incl, 50.0), 1),
        inclusion_p99_us: round(percentile(&incl, 99.0), 1),
        consistency_p50_us: round(percentile(&cons, 50.0), 1),
        consistency_p99_us: round(percentile(&cons, 99.0), 1),
        proof_hashes_max: max_len,
        rss_mib: round(rss_kib(std::process::id()).unwrap_or(0) as f64 / 1024.0, 1),
        disk_bytes_per_leaf: round(
            dir_size(&tmp.path().join("db")) as f64 / leaves.max(1) as f64,
            1,
        ),
    };
    serde_json::to_string(&s).map_err(|e| e.to_string())
}

#[derive(Serialize)]
struct LimitsSummary {
    scenario: &'static str,
    cores: usize,
    ed25519_verify_per_s: f64,
    /// Through `rules::signature::verify_batch`, batches of 64, all cores.
    ed25519_batch_verify_per_s: f64,
    /// One `is_torsion_free` (what checking R for torsion would add per
    /// signature), on one core.
    torsion_check_us: f64,
    fdatasync_per_s: f64,
    fdatasync_p50_ms: f64,
    fdatasync_p99_ms: f64,
    commit_bytes: usize,
    /// TLS 1.3 AES-256-GCM seals of 2 KiB records on one core, through
    /// rustls' own record encrypter (the ring provider the broker uses):
    /// the ceiling of what one connection's TLS can send.
    aes_gcm_seal_2k_per_s: f64,
    aes_gcm_mib_per_s: f64,
    /// 2 KiB `write` calls on a loopback TCP socket (Nagle off), another
    /// thread reading and discarding: the ceiling of one unbatched write per
    /// delivered record.
    tcp_write_2k_per_s: f64,
    tcp_write_mib_per_s: f64,
}

/// Writes 2 KiB at a time to a loopback TCP socket for `secs` while another
/// thread reads and discards: writes per second.
fn tcp_write_rate(secs: f64) -> Result<f64, String> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let reader = std::thread::spawn(move || {
        if let Ok((mut sock, _)) = listener.accept() {
            let mut buf = vec![0u8; 256 * 1024];
            while matches!(sock.read(&mut buf), Ok(n) if n > 0) {}
        }
    });
    let mut sock = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    sock.set_nodelay(true).map_err(|e| e.to_string())?;
    let chunk = vec![1u8; 2048];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        for _ in 0..64 {
            sock.write_all(&chunk).map_err(|e| e.to_string())?;
        }
        n += 64;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    drop(sock);
    let _ = reader.join();
    Ok(rate)
}

fn limits(commit_bytes: usize) -> Result<String, String> {
    use ed25519_dalek::{Signer, SigningKey};
    use std::io::Write;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    progress(&format!(
        "limits: Ed25519 verify on {cores} threads for 2 s"
    ));
    let key = SigningKey::from_bytes(&[3u8; 32]);
    let msg = vec![7u8; 2048];
    let sig = key.sign(&msg);
    let public = key.verifying_key();
    let deadline = Instant::now() + Duration::from_secs(2);
    let total: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..cores)
            .map(|_| {
                s.spawn(|| {
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        for _ in 0..64 {
                            let _ = public.verify_strict(&msg, &sig);
                        }
                        n += 64;
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    progress(&format!(
        "limits: Ed25519 batch verify (64 a batch) on {cores} threads for 2 s"
    ));
    let batch_total = batch_verify_rate(cores, Duration::from_secs(2));
    progress("limits: torsion check for 1 s");
    let torsion_us = torsion_check_us(public.to_edwards(), Duration::from_secs(1));
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut f = std::fs::File::create(tmp.path().join("sync")).map_err(|e| e.to_string())?;
    let buf = vec![1u8; commit_bytes];
    let mut lat = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        let t = Instant::now();
        f.write_all(&buf).map_err(|e| e.to_string())?;
        f.sync_data().map_err(|e| e.to_string())?;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let secs = start.elapsed().as_secs_f64();
    let n = lat.len();
    lat.sort_by(f64::total_cmp);
    progress("limits: AES-256-GCM seals of 2 KiB TLS records on one core for 2 s");
    let seals = crate::broker::transport::aes_gcm_seal_rate(2.0)?;
    progress("limits: 2 KiB loopback TCP writes for 2 s");
    let writes = tcp_write_rate(2.0)?;
    let s = LimitsSummary {
        scenario: "limits",
        cores,
        ed25519_verify_per_s: round(total as f64 / 2.0, 0),
        ed25519_batch_verify_per_s: round(batch_total as f64 / 2.0, 0),
        torsion_check_us: round(torsion_us, 2),
        fdatasync_per_s: round(n as f64 / secs, 1),
        fdatasync_p50_ms: round(percentile(&lat, 50.0), 3),
        fdatasync_p99_ms: round(percentile(&lat, 99.0), 3),
        commit_bytes,
        aes_gcm_seal_2k_per_s: round(seals, 0),
        aes_gcm_mib_per_s: round(seals * 2048.0 / 1048576.0, 1),
        tcp_write_2k_per_s: round(writes, 0),
        tcp_write_mib_per_s: round(writes * 2048.0 / 1048576.0, 1),
    };
    serde_json::to_string(&s).map_err(|e| e.to_string())
}

/// Signatures checked in `dur` by [`crate::rules::signature::verify_batch`]
/// on `cores` threads, 64 distinct 2 KiB messages of 8 keys a batch.
fn batch_verify_rate(cores: usize, dur: Duration) -> u64 {
    use crate::rules::envelope::seal;
    use crate::rules::signature::{Item, KeyCache, verify_batch};
    use ed25519_dalek::SigningKey;
    let keys: Vec<SigningKey> = (0..8u8)
        .map(|i| SigningKey::from_bytes(&[i + 1; 32]))
        .collect();
    let sealed: Vec<_> = (0..64usize)
        .map(|i| {
            let k = &keys[i % keys.len()];
            (k.verifying_key(), seal(vec![i as u8; 2048], k))
        })
        .collect();
    let deadline = Instant::now() + dur;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..cores)
            .map(|_| {
                s.spawn(|| {
                    let items: Vec<Item> = sealed
                        .iter()
                        .map(|(vk, env)| Item {
                            key: vk,
                            key_id: &env.key_id,
                            body: &env.body,
                            signature: &env.signature,
                        })
                        .collect();
                    let mut cache = KeyCache::default();
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        let ok = verify_batch(&items, &mut cache);
                        debug_assert!(ok.iter().all(Result::is_ok));
                        n += ok.len() as u64;
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    })
}

/// Microseconds one `is_torsion_free` takes on one core.
fn torsion_check_us(point: curve25519_dalek::EdwardsPoint, dur: Duration) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < dur {
        for _ in 0..64 {
            std::hint::black_box(std::hint::black_box(point).is_torsion_free());
        }
        n += 64;
    }
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// One line of `bench abuse`.
#[derive(Serialize)]
struct AbuseLine {
    attack: &'static str,
    victim_p50_ms: Option<f64>,
    victim_p99_ms: Option<f64>,
    baseline_p50_ms: f64,
    baseline_p99_ms: f64,
    p50_ratio: Option<f64>,
    p99_ratio: Option<f64>,
    /// How long the victim's fresh connection took (None: it failed).
    victim_connect_ms: Option<f64>,
    victim_failures: u64,
    peak_rss_mib: f64,
    /// Status (or connection outcome) → count, summed over the attacks.
    attacker: std::collections::BTreeMap<String, u64>,
}

/// The budget of one victim measurement: calls not made by then count as
/// failures (a broker that answers each call only near the 10 s liveness
/// deadline would otherwise hold the run for most of an hour).
const VICTIM_BUDGET: Duration = Duration::from_secs(60);

/// p50 and p99 of a victim run, in ms (None when no call succeeded).
fn victim_percentiles(v: &abuse::VictimStats) -> (Option<f64>, Option<f64>) {
    if v.latencies_ms.is_empty() {
        return (None, None);
    }
    (
        Some(round(percentile(&v.latencies_ms, 50.0), 3)),
        Some(round(percentile(&v.latencies_ms, 99.0), 3)),
    )
}

/// Waits until an attack that ramps up (connections opened one by one) is
/// in place, at most 30 s; the others get a second.
async fn settle(kind: AttackKind, attack: &abuse::Attack, limits: &Limits) {
    let within = Duration::from_secs(30);
    match kind {
        AttackKind::IdleConnections => {
            let n = limits.max_connections as u64;
            attack.until(within, |r| r.gauge("done") >= n).await;
        }
        AttackKind::PreauthIdle => {
            let n = (limits.max_connections + limits.max_handshakes_per_source) as u64;
            attack
                .until(within, |r| {
                    r.gauge("open")
                        + r.count("closed_at_once")
                        + r.count("closed_later")
                        + r.count("connect_failed")
                        >= n
                })
                .await;
        }
        _ => tokio::time::sleep(Duration::from_secs(1)).await,
    }
}

/// Runs `kinds` at once against `target`, measures the victim meanwhile,
/// and prints the line.
#[allow(clippy::too_many_arguments)]
async fn abuse_line(
    name: &'static str,
    kinds: &[AttackKind],
    target: &Target,
    limits: &Limits,
    pid: u32,
    baseline: &abuse::VictimStats,
    mix: Mix,
    calls: usize,
) -> Result<(), String> {
    progress(&format!("abuse: {name}: starting"));
    let peak = PeakRss::start(pid, Duration::from_millis(100));
    let mut attacks = Vec::new();
    for (kind, a) in abuse::launch_together(kinds, target, limits).await {
        match a {
            Ok(a) => attacks.push((kind, a)),
            Err(e) => progress(&format!("abuse: {}: could not start: {e}", kind.name())),
        }
    }
    for (kind, a) in &attacks {
        settle(*kind, a, limits).await;
    }
    progress(&format!(
        "abuse: {name}: measuring the victim ({calls} calls)"
    ));
    let victim = abuse::measure_victim(target, VICTIM, calls, mix, VICTIM_BUDGET).await;
    let mut attacker = std::collections::BTreeMap::new();
    for (kind, a) in attacks {
        let r = a.stop().await;
        progress(&format!(
            "abuse: {name}: {} saw {:?} gauges {:?}",
            kind.name(),
            r.counts,
            r.gauges
        ));
        for (code, n) in r.counts {
            *attacker.entry(code).or_insert(0) += n;
        }
    }
    let peak_kib = peak.stop();
    if let Some(why) = &victim.first_failure {
        progress(&format!(
            "abuse: {name}: {} victim failures, the first: {why}",
            victim.failures
        ));
    }
    let (p50, p99) = victim_percentiles(&victim);
    let (b50, b99) = victim_percentiles(baseline);
    let (b50, b99) = (b50.unwrap_or(0.0), b99.unwrap_or(0.0));
    let ratio = |x: Option<f64>, base: f64| x.filter(|_| base > 0.0).map(|x| round(x / base, 2));
    let line = AbuseLine {
        attack: name,
        victim_p50_ms: p50,
        victim_p99_ms: p99,
        baseline_p50_ms: b50,
        baseline_p99_ms: b99,
        p50_ratio: ratio(p50, b50),
        p99_ratio: ratio(p99, b99),
        victim_connect_ms: victim.connect_ms.map(|ms| round(ms, 3)),
        victim_failures: victim.failures,
        peak_rss_mib: round(peak_kib as f64 / 1024.0, 1),
        attacker,
    };
    println!(
        "{}",
        serde_json::to_string(&line).map_err(|e| e.to_string())?
    );
    // Let the broker close what the attack left behind before the next one.
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(())
}

/// `certex bench abuse`: every attack against a broker with the default
/// limits, one after the other, then all at once; the disk attack against
/// a broker of its own, restarted below its free-space watermark.
async fn abuse_bench(attacks: Vec<AttackKind>, all: bool, calls: usize) -> Result<(), String> {
    let (kinds, all) = if attacks.is_empty() {
        (AttackKind::ALL.to_vec(), true)
    } else {
        (attacks, all)
    };
    let limits = Limits::default();
    let broker = BenchBroker::start_with(&limits)?;
    let target = Target::new(&broker.url, &broker.pki).await?;
    progress(&format!(
        "abuse: broker at {} with the default limits; victim {VICTIM}; baseline ({calls} calls)",
        broker.url
    ));
    let baseline =
        abuse::measure_victim(&target, VICTIM, calls, Mix::PublishGet, VICTIM_BUDGET).await;
    if baseline.failures > 0 {
        return Err(format!(
            "the victim fails without any attack: {}",
            baseline.first_failure.unwrap_or_default()
        ));
    }
    for kind in kinds.iter().filter(|k| **k != AttackKind::Disk) {
        abuse_line(
            kind.name(),
            &[*kind],
            &target,
            &limits,
            broker.pid(),
            &baseline,
            Mix::PublishGet,
            calls,
        )
        .await?;
    }
    if kinds.contains(&AttackKind::Disk) {
        // A record to read, then a restart below the watermark: reads must
        // go on, so the victim's baseline and load are reads alone.
        let mut full = BenchBroker::start_with(&limits)?;
        let seq = abuse::Victim::connect(&Target::new(&full.url, &full.pki).await?, VICTIM)
            .await?
            .publish()
            .await?;
        let watermark = Limits {
            min_free_disk_bytes: u64::MAX / 2,
            ..Limits::default()
        };
        full.restart_with(&watermark)?;
        let target = Target::new(&full.url, &full.pki).await?;
        progress("abuse: disk: baseline of reads on a broker below its watermark");
        let reads =
            abuse::measure_victim(&target, VICTIM, calls, Mix::Reads(seq), VICTIM_BUDGET).await;
        abuse_line(
            "disk",
            &[AttackKind::Disk],
            &target,
            &watermark,
            full.pid(),
            &reads,
            Mix::Reads(seq),
            calls,
        )
        .await?;
    }
    let together: Vec<AttackKind> = kinds
        .iter()
        .copied()
        .filter(|k| *k != AttackKind::Disk)
        .collect();
    if all && !together.is_empty() {
        abuse_line(
            "all",
            &together,
            &target,
            &limits,
            broker.pid(),
            &baseline,
            Mix::PublishGet,
            calls,
        )
        .await?;
    }
    Ok(())
}

/// The brokers and teams of `bench federation`: the origin first.
const FED_BROKERS: [&str; 3] = ["CN", "BR", "RU"];
const FED_TEAMS: [&str; 3] = ["CN-CNCERT", "BR-CERTBR", "RU-GOVCERT"];
/// How often the origin's relay state is read while waiting on relay.
const FED_POLL: Duration = Duration::from_millis(5);
/// The longest wait for relay to reach a target before the bench gives up.
const FED_PATIENCE: Duration = Duration::from_secs(600);

/// CPU time this process has used (user + system, all threads), from
/// /proc/self/stat. In `bench federation` the three brokers (and, while
/// publishing, the load generator) share the process.
fn process_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = f.get(11)?.parse().ok()?;
            let stime: f64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(0.0)
}

fn timestamp_ms(t: Option<&prost_types::Timestamp>) -> f64 {
    t.map(|t| t.seconds as f64 * 1000.0 + f64::from(t.nanos) / 1e6)
        .unwrap_or(0.0)
}

/// One origin receipt: seq there, receive time (ms since the epoch).
type OriginReceipts = std::collections::HashMap<u64, f64>;

/// Publishes pre-signed `envelopes` over `clients`, one in flight per
/// client (closed loop); the origin receipts and each publish's latency.
async fn publish_signed(
    clients: &[Client],
    envelopes: Vec<pb::Envelope>,
) -> Result<(OriginReceipts, Vec<f64>), String> {
    let queue = Arc::new(std::sync::Mutex::new(envelopes));
    let mut tasks = Vec::new();
    for c in clients {
        let (c, queue) = (c.clone(), queue.clone());
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop();
                let Some(env) = next else { break };
                let t = Instant::now();
                let r = c.publish(env).await.map_err(|e| e.to_string())?;
                got.push((
                    r.seq,
                    timestamp_ms(r.received_at.as_ref()),
                    t.elapsed().as_secs_f64() * 1000.0,
                ));
            }
            Ok::<_, String>(got)
        }));
    }
    let mut receipts = OriginReceipts::new();
    let mut lat = Vec::new();
    for t in tasks {
        for (seq, at, ms) in t.await.map_err(|e| e.to_string())?? {
            receipts.insert(seq, at);
            lat.push(ms);
        }
    }
    lat.sort_by(f64::total_cmp);
    Ok((receipts, lat))
}

/// When relay from the origin reached a target at one peer.
#[derive(Clone, Copy, Default)]
struct Reach {
    /// The origin's relay position for the peer when watching began.
    from: u64,
    /// The first time the position moved past `from` (s since the start).
    first_advance_s: Option<f64>,
    /// The position then.
    first_position: u64,
    /// The time the position reached the target (s since the start).
    reached_s: f64,
    /// The most records the peer was behind (the origin's lag) while watched.
    max_lag: u64,
}

/// Reads `origin`'s relay state every [`FED_POLL`] until its position for
/// each of `peers` is at least `target`; times are from `start`.
async fn watch_relay(
    origin: crate::broker::server::Broker,
    peers: Vec<String>,
    target: u64,
    start: Instant,
) -> Result<std::collections::BTreeMap<String, Reach>, String> {
    let status = || -> Result<pb::FederationStatus, String> {
        origin
            .federation_status()
            .ok_or("the origin broker is not in a federation")?
    };
    let mut reach = std::collections::BTreeMap::new();
    for p in status()?.peers {
        if peers.contains(&p.broker) {
            reach.insert(
                p.broker.clone(),
                (
                    Reach {
                        from: p.position,
                        max_lag: p.lag,
                        ..Reach::default()
                    },
                    false,
                ),
            );
        }
    }
    if reach.len() != peers.len() {
        return Err(format!("the origin does not peer with all of {peers:?}"));
    }
    loop {
        let now = start.elapsed().as_secs_f64();
        for p in status()?.peers {
            let Some((r, done)) = reach.get_mut(&p.broker) else {
                continue;
            };
            if *done {
                continue;
            }
            r.max_lag = r.max_lag.max(p.lag);
            if r.first_advance_s.is_none() && p.position > r.from {
                r.first_advance_s = Some(now);
                r.first_position = p.position;
            }
            if p.position >= target {
                r.reached_s = now;
                *done = true;
            }
        }
        if reach.values().all(|(_, done)| *done) {
            return Ok(reach.into_iter().map(|(k, (r, _))| (k, r)).collect());
        }
        if start.elapsed() > FED_PATIENCE {
            return Err(format!(
                "relay did not reach position {target} within {} s",
                FED_PATIENCE.as_secs()
            ));
        }
        tokio::time::sleep(FED_POLL).await;
    }
}

/// Reads every record at a destination broker as `team` (catch-up from the
/// first record) and, for those relayed from `origin` and in `receipts`,
/// the lag from the origin's receipt to the destination's (ms).
async fn relay_lags(
    url: &str,
    pki: &Path,
    team: &str,
    origin: &str,
    receipts: &OriginReceipts,
) -> Result<(Vec<f64>, u64), String> {
    let reader = Client::connect(url, &ClientFiles::from_pki(pki, team), team)
        .await
        .map_err(|e| e.to_string())?;
    let mut s = reader
        .exchange()
        .subscribe(pb::SubscribeRequest {
            start: Some(pb::subscribe_request::Start::AfterSeq(0)),
            filter: None,
            follow: false,
        })
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    let mut lags = Vec::new();
    let mut from_origin = 0u64;
    while let Some(rec) = s.message().await.map_err(|e| e.to_string())? {
        let Some(o) = rec.origin.as_ref().filter(|o| o.broker == origin) else {
            continue;
        };
        from_origin += 1;
        if let Some(at) = receipts.get(&o.seq) {
            lags.push(timestamp_ms(rec.received_at.as_ref()) - at);
        }
    }
    Ok((lags, from_origin))
}

/// Signs `n` community TLP:CLEAR incidents of `size` bytes by `team`
/// (before any timed window: the signer runs on the sender's machine).
fn sign_all(c: &Client, n: u64, size: usize, tag: &str) -> Result<Vec<pb::Envelope>, String> {
    (0..n)
        .map(|_| {
            c.seal(&sized_body(c.team(), size, tag))
                .map_err(|e| e.to_string())
        })
        .collect()
}

#[derive(Serialize)]
struct FedPeerLine {
    /// Seconds from the first publish until the origin's relay position for
    /// this peer covered every record.
    reached_s: f64,
    /// Records of the timed window found at the peer.
    delivered: u64,
    lag_p50_ms: f64,
    lag_p99_ms: f64,
    lag_max_ms: f64,
    /// The most records the peer was behind the origin meanwhile.
    max_backlog: u64,
}

#[derive(Serialize)]
struct FedRelayLine {
    scenario: &'static str,
    phase: &'static str,
    brokers: usize,
    records: u64,
    size: usize,
    publishers: usize,
    /// Origin: first publish to last receipt.
    publish_s: f64,
    publish_per_s: f64,
    publish_p50_ms: f64,
    publish_p99_ms: f64,
    /// First publish until every record was relayed to both peers.
    relay_s: f64,
    /// Records delivered to each peer per second (records / relay_s).
    relay_per_s: f64,
    /// Destination receipt − origin receipt, both peers together.
    lag_p50_ms: f64,
    lag_p99_ms: f64,
    lag_max_ms: f64,
    /// Records of the window missing at some peer (expected 0).
    lost: u64,
    peers: std::collections::BTreeMap<String, FedPeerLine>,
    /// CPU of the whole process per record: the three brokers AND the
    /// publishers' clients (TLS, gRPC), which share it.
    process_cpu_us_per_record: f64,
    process_rss_mib: f64,
}

#[derive(Serialize)]
struct FedCatchupLine {
    scenario: &'static str,
    phase: &'static str,
    /// Records published at the origin while the peer was down.
    records: u64,
    size: usize,
    peer: &'static str,
    /// How long stopping the peer took (its open calls drained).
    stop_s: f64,
    /// Origin publish rate meanwhile (the other peer still relaying).
    publish_per_s_peer_down: f64,
    publish_p50_ms: f64,
    publish_p99_ms: f64,
    /// The peer's restart: opening its database until it serves.
    open_s: f64,
    /// Restart until the origin's first batch to the peer was acknowledged
    /// (reconnection, including the relay task's backoff).
    reconnect_s: f64,
    /// Restart until the origin's lag to the peer was 0.
    catchup_s: f64,
    /// records / catchup_s.
    catchup_per_s: f64,
    /// Records after the first acknowledged batch / the time they took.
    transfer_per_s: f64,
    /// Records relayed from the origin found at the peer afterwards, and
    /// how many the origin receipted (warm-up, phase 1 and phase 2).
    delivered: u64,
    expected: u64,
    /// CPU of the process from the restart until the lag was 0, per record:
    /// only the brokers run then (no clients; a status read every 5 ms).
    broker_cpu_us_per_record: f64,
    process_rss_mib: f64,
}

/// `certex bench federation`: three brokers (CN, BR, RU) in this process
/// on loopback with real mTLS; CN's team publishes community records that
/// CN relays to BR and RU. Phase 1: relay throughput and per-record lag.
/// Phase 2: RU down while `down` more are published, then its catch-up.
async fn federation_bench(
    records: u64,
    size: usize,
    publishers: usize,
    down: u64,
) -> Result<(), String> {
    use crate::cli::federation::LocalFederation;
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let pki = tmp.path().join("pki");
    let teams: Vec<String> = FED_TEAMS.iter().map(|t| t.to_string()).collect();
    let brokers: Vec<String> = FED_BROKERS.iter().map(|b| b.to_string()).collect();
    crate::cli::pki::init_federation(&pki, &teams, &[], &brokers)?;
    let mut fed = LocalFederation::new(&pki, &tmp.path().join("data"), &FED_BROKERS)?;
    fed.set_limits(Limits {
        max_connections_per_team: 100_000,
        ..bench_limits()
    });
    fed.start_all().await?;
    let (origin, origin_team) = (FED_BROKERS[0], FED_TEAMS[0]);
    let cn_url = fed.url(origin);
    progress(&format!(
        "federation: brokers CN {cn_url}, BR {}, RU {} (in this process); {publishers} publishers as {origin_team}",
        fed.url("BR"),
        fed.url("RU"),
    ));
    let mut clients = Vec::new();
    for _ in 0..publishers {
        clients.push(
            Client::connect(
                &cn_url,
                &ClientFiles::from_pki(&pki, origin_team),
                origin_team,
            )
            .await
            .map_err(|e| e.to_string())?,
        );
    }
    let cn = fed.broker(origin).ok_or("CN is not running")?.clone();
    let log_size = |b: &crate::broker::server::Broker| -> Result<u64, String> {
        Ok(b.federation_status()
            .ok_or("not in a federation")??
            .log_size)
    };
    let peers: Vec<String> = FED_BROKERS[1..].iter().map(|s| s.to_string()).collect();

    // Warm-up: one record through, so the peer connections are up.
    let warm = sign_all(&clients[0], 1, size, "warm-up")?;
    publish_signed(&clients[..1], warm).await?;
    watch_relay(cn.clone(), peers.clone(), log_size(&cn)?, Instant::now()).await?;

    // Phase 1.
    progress(&format!(
        "federation: relay: signing {records} records of {size} bytes"
    ));
    let envelopes = sign_all(&clients[0], records, size, "federation")?;
    let target = log_size(&cn)? + records;
    progress("federation: relay: publishing at CN");
    let cpu0 = process_cpu_seconds();
    let start = Instant::now();
    let watcher = tokio::spawn(watch_relay(cn.clone(), peers.clone(), target, start));
    let (receipts, publish_lat) = publish_signed(&clients, envelopes).await?;
    let publish_s = start.elapsed().as_secs_f64();
    progress(&format!(
        "federation: relay: published in {publish_s:.2} s; waiting on relay"
    ));
    let reach = watcher.await.map_err(|e| e.to_string())??;
    let cpu = process_cpu_seconds() - cpu0;
    let relay_s = reach.values().map(|r| r.reached_s).fold(0.0, f64::max);
    if receipts.keys().max().copied() != Some(target) {
        return Err(format!(
            "the origin's receipts end at {:?}, not at {target}",
            receipts.keys().max()
        ));
    }
    let mut all_lags = Vec::new();
    let mut peer_lines = std::collections::BTreeMap::new();
    let mut lost = 0u64;
    for (peer, team) in FED_BROKERS[1..].iter().zip(&FED_TEAMS[1..]) {
        progress(&format!(
            "federation: relay: reading {peer}'s records as {team}"
        ));
        let (mut lags, _) = relay_lags(&fed.url(peer), &pki, team, origin, &receipts).await?;
        lags.sort_by(f64::total_cmp);
        let r = reach[*peer];
        lost += records.saturating_sub(lags.len() as u64);
        peer_lines.insert(
            peer.to_string(),
            FedPeerLine {
                reached_s: round(r.reached_s, 3),
                delivered: lags.len() as u64,
                lag_p50_ms: round(percentile(&lags, 50.0), 1),
                lag_p99_ms: round(percentile(&lags, 99.0), 1),
                lag_max_ms: round(lags.last().copied().unwrap_or(0.0), 1),
                max_backlog: r.max_lag,
            },
        );
        all_lags.extend(lags);
    }
    all_lags.sort_by(f64::total_cmp);
    let line = FedRelayLine {
        scenario: "federation",
        phase: "relay",
        brokers: FED_BROKERS.len(),
        records,
        size,
        publishers,
        publish_s: round(publish_s, 3),
        publish_per_s: round(records as f64 / publish_s, 1),
        publish_p50_ms: round(percentile(&publish_lat, 50.0), 3),
        publish_p99_ms: round(percentile(&publish_lat, 99.0), 3),
        relay_s: round(relay_s, 3),
        relay_per_s: round(records as f64 / relay_s, 1),
        lag_p50_ms: round(percentile(&all_lags, 50.0), 1),
        lag_p99_ms: round(percentile(&all_lags, 99.0), 1),
        lag_max_ms: round(all_lags.last().copied().unwrap_or(0.0), 1),
        lost,
        peers: peer_lines,
        process_cpu_us_per_record: round(cpu * 1e6 / records.max(1) as f64, 1),
        process_rss_mib: round(rss_kib(std::process::id()).unwrap_or(0) as f64 / 1024.0, 1),
    };
    println!(
        "{}",
        serde_json::to_string(&line).map_err(|e| e.to_string())?
    );

    // Phase 2: RU down while `down` records are published, then back.
    let (peer, team) = (FED_BROKERS[2], FED_TEAMS[2]);
    progress(&format!("federation: catch-up: stopping {peer}"));
    let t = Instant::now();
    fed.stop(peer).await;
    let stop_s = t.elapsed().as_secs_f64();
    let envelopes = sign_all(&clients[0], down, size, "federation-down")?;
    let target = log_size(&cn)? + down;
    progress(&format!(
        "federation: catch-up: publishing {down} records at CN while {peer} is down"
    ));
    let start = Instant::now();
    let (_, down_lat) = publish_signed(&clients, envelopes).await?;
    let down_s = start.elapsed().as_secs_f64();
    // The other peer first, so that only the catch-up runs afterwards.
    let others: Vec<String> = peers.iter().filter(|p| *p != peer).cloned().collect();
    watch_relay(cn.clone(), others, target, Instant::now()).await?;
    progress(&format!(
        "federation: catch-up: published in {down_s:.2} s; restarting {peer}"
    ));
    let cpu0 = process_cpu_seconds();
    let restart = Instant::now();
    fed.start(peer).await?;
    let open_s = restart.elapsed().as_secs_f64();
    let r = watch_relay(cn.clone(), vec![peer.to_owned()], target, restart).await?[peer];
    let cpu = process_cpu_seconds() - cpu0;
    let reconnect_s = r.first_advance_s.unwrap_or(r.reached_s);
    let after_first = target.saturating_sub(r.first_position);
    let transfer_s = r.reached_s - reconnect_s;
    progress(&format!(
        "federation: catch-up: {peer} caught up in {:.2} s; reading its records as {team}",
        r.reached_s
    ));
    let (_, delivered) =
        relay_lags(&fed.url(peer), &pki, team, origin, &OriginReceipts::new()).await?;
    let line = FedCatchupLine {
        scenario: "federation",
        phase: "catchup",
        records: down,
        size,
        peer: "RU",
        stop_s: round(stop_s, 3),
        publish_per_s_peer_down: round(down as f64 / down_s, 1),
        publish_p50_ms: round(percentile(&down_lat, 50.0), 3),
        publish_p99_ms: round(percentile(&down_lat, 99.0), 3),
        open_s: round(open_s, 3),
        reconnect_s: round(reconnect_s, 3),
        catchup_s: round(r.reached_s, 3),
        catchup_per_s: round(down as f64 / r.reached_s, 1),
        transfer_per_s: if transfer_s > 0.0 {
            round(after_first as f64 / transfer_s, 1)
        } else {
            0.0
        },
        delivered,
        expected: 1 + records + down,
        broker_cpu_us_per_record: round(cpu * 1e6 / down.max(1) as f64, 1),
        process_rss_mib: round(rss_kib(std::process::id()).unwrap_or(0) as f64 / 1024.0, 1),
    };
    println!(
        "{}",
        serde_json::to_string(&line).map_err(|e| e.to_string())?
    );
    drop(clients);
    fed.stop_all().await;
    Ok(())
}

/// Runs one scenario and prints its summary line.
pub async fn run(cmd: BenchCommand) -> Result<(), String> {
    let line = match cmd {
        BenchCommand::Publish {
            publishers,
            duration,
            size,
            depth,
            rate,
            stream,
            window,
            records,
        } => {
            let duration = duration.max(1);
            publish(PublishShape {
                publishers: publishers.max(1),
                duration,
                size,
                depth: depth.max(1),
                rate,
                window: stream.then_some(window.max(1)),
                records: records.unwrap_or(duration * 40_000).max(1),
            })
            .await?
        }
        BenchCommand::Fanout {
            subscribers,
            rate,
            duration,
            size,
        } => fanout(subscribers.max(1), rate.max(1), duration.max(1), size).await?,
        BenchCommand::Catchup { records, size } => catchup(records.max(1), size).await?,
        BenchCommand::Memory {
            records,
            idle_subscribers,
            size,
        } => memory(records.max(1), idle_subscribers, size).await?,
        BenchCommand::Log { leaves } => {
            tokio::task::spawn_blocking(move || log_bench(leaves.max(1)))
                .await
                .map_err(|e| e.to_string())??
        }
        BenchCommand::Limits { commit_bytes } => limits(commit_bytes)?,
        BenchCommand::Abuse {
            attacks,
            all,
            calls,
        } => return abuse_bench(attacks, all, calls.max(2)).await,
        BenchCommand::Federation {
            records,
            size,
            publishers,
            down,
        } => return federation_bench(records.max(1), size, publishers.max(1), down.max(1)).await,
    };
    println!("{line}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }
}
