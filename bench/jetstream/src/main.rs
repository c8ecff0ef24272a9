//! Peer driver for the certex benchmarks: the same scenarios against NATS
//! JetStream (file storage), printing one JSON line shaped like
//! `certex bench …`.
//!
//! - `publish`: N concurrent publishers wait for each publish acknowledgement
//!   (the durable receipt) for `duration` seconds;
//! - `fanout`: N ordered consumers at the tail, one publisher at R msg/s;
//!   latency from the start of the publish call to each delivery;
//!   with `--window W`, async publish instead: each publisher sends without
//!   waiting and keeps up to W acknowledgements outstanding (the peer of
//!   `certex bench publish --stream --window W`);
//! - `catchup`: load N messages, then one ordered consumer replays from the start.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{
    self, consumer::DeliverPolicy, consumer::pull::OrderedConfig, stream::StorageType,
};
use clap::{Parser, Subcommand};
use futures_util::StreamExt;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    url: String,
    /// Label for the summary (e.g. the server's sync mode).
    #[arg(long, default_value = "jetstream")]
    label: String,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    Publish {
        #[arg(long, default_value_t = 16)]
        publishers: usize,
        #[arg(long, default_value_t = 10)]
        duration: u64,
        #[arg(long, default_value_t = 2048)]
        size: usize,
        #[arg(long, default_value_t = 1)]
        depth: usize,
        /// Async publish with up to this many acknowledgements outstanding
        /// per publisher (instead of --depth calls each awaiting its ack).
        #[arg(long)]
        window: Option<usize>,
    },
    Fanout {
        #[arg(long, default_value_t = 100)]
        subscribers: usize,
        #[arg(long, default_value_t = 500)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        duration: u64,
        #[arg(long, default_value_t = 2048)]
        size: usize,
    },
    Catchup {
        #[arg(long, default_value_t = 100_000)]
        records: u64,
        #[arg(long, default_value_t = 2048)]
        size: usize,
    },
}

type Error = Box<dyn std::error::Error + Send + Sync>;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn unix_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// A fresh file-backed stream `BENCH` on `bench.>`.
async fn fresh_stream(url: &str) -> Result<jetstream::Context, Error> {
    let js = jetstream::new(async_nats::connect(url).await?);
    let _ = js.delete_stream("BENCH").await;
    js.create_stream(jetstream::stream::Config {
        name: "BENCH".into(),
        subjects: vec!["bench.>".into()],
        storage: StorageType::File,
        ..Default::default()
    })
    .await?;
    Ok(js)
}

/// A payload of `size` bytes that starts with a timestamp and a space.
fn payload(size: usize) -> bytes::Bytes {
    let mut p = format!("{} ", unix_nanos()).into_bytes();
    p.resize(size.max(p.len()), b'x');
    bytes::Bytes::from(p)
}

async fn publish(
    args: &Args,
    publishers: usize,
    duration: u64,
    size: usize,
    depth: usize,
    window: Option<usize>,
) -> Result<serde_json::Value, Error> {
    fresh_stream(&args.url).await?;
    let body = bytes::Bytes::from(vec![b'x'; size]);
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let js = jetstream::new(async_nats::connect(&args.url).await?);
        let (stop, body) = (stop.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            if let Some(w) = window {
                // Async publish: send, keep the ack future, and wait only
                // when W are outstanding; acks come back in order.
                let mut acks = futures_util::stream::FuturesOrdered::new();
                loop {
                    while acks.len() < w && !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        match js.publish(format!("bench.{p}"), body.clone()).await {
                            Ok(ack) => acks.push_back(async move { (t, ack.await.is_ok()) }),
                            Err(_) => errors += 1,
                        }
                    }
                    match acks.next().await {
                        Some((t, true)) => lat.push(t.elapsed().as_secs_f64() * 1000.0),
                        Some((_, false)) => errors += 1,
                        None => break,
                    }
                }
                return (lat, errors);
            }
            let mut in_flight = futures_util::stream::FuturesUnordered::new();
            loop {
                while in_flight.len() < depth && !stop.load(Ordering::Relaxed) {
                    let (js, body) = (js.clone(), body.clone());
                    in_flight.push(async move {
                        let t = Instant::now();
                        let ok = match js.publish(format!("bench.{p}"), body).await {
                            Ok(ack) => ack.await.is_ok(),
                            Err(_) => false,
                        };
                        (t.elapsed(), ok)
                    });
                }
                match in_flight.next().await {
                    Some((d, true)) => lat.push(d.as_secs_f64() * 1000.0),
                    Some((_, false)) => errors += 1,
                    None => break,
                }
            }
            (lat, errors)
        }));
    }
    tokio::time::sleep(Duration::from_secs(duration)).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        lat.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    Ok(serde_json::json!({
        "scenario": "publish", "system": args.label, "publishers": publishers, "depth": depth,
        "mode": if window.is_some() { "async" } else { "sync" }, "window": window,
        "size": size, "duration_s": r3(elapsed), "records": lat.len(), "errors": errors,
        "throughput": (lat.len() as f64 / elapsed * 10.0).round() / 10.0,
        "p50_ms": r3(percentile(&lat, 50.0)), "p90_ms": r3(percentile(&lat, 90.0)),
        "p99_ms": r3(percentile(&lat, 99.0)), "max_ms": r3(lat.last().copied().unwrap_or(0.0)),
    }))
}

async fn fanout(
    args: &Args,
    subscribers: usize,
    rate: u64,
    duration: u64,
    size: usize,
) -> Result<serde_json::Value, Error> {
    let js = fresh_stream(&args.url).await?;
    let expected = rate * duration;
    let conns = subscribers.clamp(1, 16);
    let mut contexts = Vec::new();
    for _ in 0..conns {
        contexts.push(jetstream::new(async_nats::connect(&args.url).await?));
    }
    let mut tasks = Vec::new();
    for i in 0..subscribers {
        let stream = contexts[i % conns].get_stream("BENCH").await?;
        let consumer = stream
            .create_consumer(OrderedConfig {
                deliver_policy: DeliverPolicy::New,
                ..Default::default()
            })
            .await?;
        let mut messages = consumer.messages().await?;
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(expected as usize);
            while (lat.len() as u64) < expected {
                match tokio::time::timeout(Duration::from_secs(10), messages.next()).await {
                    Ok(Some(Ok(m))) => {
                        let now = unix_nanos();
                        let sent = std::str::from_utf8(&m.payload)
                            .ok()
                            .and_then(|s| s.split(' ').next())
                            .and_then(|t| t.parse::<u128>().ok())
                            .unwrap_or(now);
                        lat.push(now.saturating_sub(sent) as f64 / 1e6);
                    }
                    _ => break,
                }
            }
            lat
        }));
    }
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    let mut in_flight = futures_util::stream::FuturesUnordered::new();
    for n in 0..expected {
        tokio::time::sleep_until((start + interval.mul_f64(n as f64)).into()).await;
        let js = js.clone();
        let body = payload(size);
        in_flight.push(async move {
            match js.publish("bench.fanout", body).await {
                Ok(ack) => ack.await.is_ok(),
                Err(_) => false,
            }
        });
        while let Some(Some(_)) = futures_util::FutureExt::now_or_never(in_flight.next()) {}
    }
    while in_flight.next().await.is_some() {}
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await?);
    }
    let delivered = lat.len() as u64;
    lat.sort_by(f64::total_cmp);
    Ok(serde_json::json!({
        "scenario": "fanout", "system": args.label, "subscribers": subscribers, "rate": rate,
        "size": size, "published": expected, "delivered": delivered,
        "lost": (expected * subscribers as u64).saturating_sub(delivered),
        "p50_ms": r3(percentile(&lat, 50.0)), "p99_ms": r3(percentile(&lat, 99.0)),
        "max_ms": r3(lat.last().copied().unwrap_or(0.0)),
    }))
}

async fn catchup(args: &Args, records: u64, size: usize) -> Result<serde_json::Value, Error> {
    let js = fresh_stream(&args.url).await?;
    let mut in_flight = futures_util::stream::FuturesUnordered::new();
    for _ in 0..records {
        let js = js.clone();
        let body = payload(size);
        in_flight.push(async move { js.publish("bench.catchup", body).await?.await.map(|_| ()) });
        if in_flight.len() >= 256 {
            in_flight.next().await.transpose()?;
        }
    }
    while let Some(r) = in_flight.next().await {
        r?;
    }
    let consumer = js
        .get_stream("BENCH")
        .await?
        .create_consumer(OrderedConfig {
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await?;
    let start = Instant::now();
    let mut messages = consumer.messages().await?;
    let mut n = 0u64;
    let mut bytes = 0u64;
    while n < records {
        match messages.next().await {
            Some(Ok(m)) => {
                n += 1;
                bytes += m.payload.len() as u64;
            }
            _ => break,
        }
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(serde_json::json!({
        "scenario": "catchup", "system": args.label, "records": n, "size": size,
        "seconds": r3(secs), "records_per_s": (n as f64 / secs * 10.0).round() / 10.0,
        "mib_per_s": (bytes as f64 / secs / 1048576.0 * 10.0).round() / 10.0,
    }))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args = Args::parse();
    let line = match args.scenario {
        Scenario::Publish {
            publishers,
            duration,
            size,
            depth,
            window,
        } => {
            publish(
                &args,
                publishers,
                duration,
                size,
                depth.max(1),
                window.map(|w| w.max(1)),
            )
            .await?
        }
        Scenario::Fanout {
            subscribers,
            rate,
            duration,
            size,
        } => fanout(&args, subscribers, rate.max(1), duration, size).await?,
        Scenario::Catchup { records, size } => catchup(&args, records, size).await?,
    };
    println!("{line}");
    Ok(())
}
