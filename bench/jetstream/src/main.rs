//! Peer driver for the certex benchmarks: N concurrent publishers send
//! `size`-byte messages to a file-backed JetStream stream and wait for each
//! publish acknowledgement (the durable receipt), for `duration` seconds.
//! Prints one JSON line shaped like `certex bench publish`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream::StorageType};
use clap::Parser;
use futures_util::StreamExt;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    url: String,
    #[arg(long, default_value_t = 16)]
    publishers: usize,
    #[arg(long, default_value_t = 10)]
    duration: u64,
    #[arg(long, default_value_t = 2048)]
    size: usize,
    #[arg(long, default_value_t = 1)]
    depth: usize,
    /// Label for the summary (e.g. the server's sync mode).
    #[arg(long, default_value = "jetstream")]
    label: String,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let admin = jetstream::new(async_nats::connect(&args.url).await?);
    let _ = admin.delete_stream("BENCH").await;
    admin
        .create_stream(jetstream::stream::Config {
            name: "BENCH".into(),
            subjects: vec!["bench.>".into()],
            storage: StorageType::File,
            ..Default::default()
        })
        .await?;
    let payload = bytes::Bytes::from(vec![b'x'; args.size]);
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..args.publishers {
        let js = jetstream::new(async_nats::connect(&args.url).await?);
        let (stop, payload, depth) = (stop.clone(), payload.clone(), args.depth);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut in_flight = futures_util::stream::FuturesUnordered::new();
            loop {
                while in_flight.len() < depth && !stop.load(Ordering::Relaxed) {
                    let (js, payload) = (js.clone(), payload.clone());
                    in_flight.push(async move {
                        let t = Instant::now();
                        let ok = match js.publish(format!("bench.{p}"), payload).await {
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
    tokio::time::sleep(Duration::from_secs(args.duration)).await;
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
    let r = |x: f64| (x * 1000.0).round() / 1000.0;
    println!(
        "{}",
        serde_json::json!({
            "scenario": "publish",
            "system": args.label,
            "publishers": args.publishers,
            "depth": args.depth,
            "size": args.size,
            "duration_s": r(elapsed),
            "records": lat.len(),
            "errors": errors,
            "throughput": (lat.len() as f64 / elapsed * 10.0).round() / 10.0,
            "p50_ms": r(percentile(&lat, 50.0)),
            "p90_ms": r(percentile(&lat, 90.0)),
            "p99_ms": r(percentile(&lat, 99.0)),
            "max_ms": r(lat.last().copied().unwrap_or(0.0)),
        })
    );
    Ok(())
}
