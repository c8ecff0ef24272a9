//! `Exchange.PublishStream` against real brokers: receipts in request order
//! matching what `Get` returns, refusals in their slots with the stream
//! going on, duplicates, the rate budget per envelope, bounded reading when
//! the sender does not read its receipts, durability across SIGKILL, and
//! `certex submit --stream`.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use certex::broker::config::Limits;
use certex::client::connection::{Client, ClientFiles, StreamOutcome, tls_endpoint};
use certex::proto::{self as pb, body::Content};
use certex::rules::envelope;
use common::*;
use futures_util::StreamExt;
use tonic::Code;

/// Every outcome of publishing `envs` on one stream, in the order received.
async fn stream_all(c: &Client, envs: Vec<pb::Envelope>) -> Vec<StreamOutcome> {
    let mut out = Vec::new();
    let mut s = c
        .publish_stream(futures_util::stream::iter(envs))
        .await
        .unwrap();
    while let Some(o) = s.next().await {
        out.push(o.unwrap());
    }
    out
}

fn sealed(c: &Client, title: &str) -> pb::Envelope {
    c.seal(&body(
        c.team(),
        pb::Tlp::Clear,
        community(),
        incident(title),
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_come_in_order_and_match_get() {
    let b = TestBroker::start().await;
    let cn = b.client("CN-CNCERT").await;
    // More than the default window of 256: the stream is read in turns.
    let envs: Vec<_> = (0..600).map(|i| sealed(&cn, &format!("n{i}"))).collect();
    let out = stream_all(&cn, envs.clone()).await;
    assert_eq!(out.len(), 600);
    let mut seqs = std::collections::HashSet::new();
    for (i, o) in out.iter().enumerate() {
        assert_eq!(o.index, i as u64);
        let r = o.outcome.as_ref().unwrap();
        assert!(!r.duplicate);
        assert!(seqs.insert(r.seq));
        let rec = cn.get(get_seq(r.seq)).await.unwrap();
        assert_eq!(rec.leaf_hash, r.leaf_hash);
        assert_eq!(
            rec.envelope.as_ref().unwrap().signature,
            envs[i].signature,
            "receipt {i} names the record of envelope {i}"
        );
    }
    assert_eq!(b.broker.log().head().tree_size, 600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_envelopes_get_their_status_in_their_slot() {
    let limits = Limits {
        max_envelope_bytes: 4096,
        ..Limits::default()
    };
    let b = TestBroker::start_with(limits).await;
    let cn = b.client("CN-CNCERT").await;
    let ru = b.client("RU-GOVCERT").await;
    // A message already stored, to be sent again with other bytes.
    let first = body("CN-CNCERT", pb::Tlp::Clear, community(), incident("v1"));
    let stored = cn.publish(cn.seal(&first).unwrap()).await.unwrap();
    let mut other_bytes = first.clone();
    other_bytes.content = Some(incident("v2"));

    let mut bad_sig = sealed(&cn, "bad signature");
    bad_sig.signature[32] ^= 1; // s, not R: R may then not be a point at all
    let not_ours = sealed(&ru, "RU's message on CN's stream");
    let mut big = body("CN-CNCERT", pb::Tlp::Clear, community(), incident("big"));
    if let Some(Content::Incident(r)) = &mut big.content {
        r.description = "x".repeat(4200); // over 4096, within the frame limit
    }
    let envs = vec![
        sealed(&cn, "ok 0"),
        bad_sig,
        not_ours,
        cn.seal(&other_bytes).unwrap(),
        cn.seal(&big).unwrap(),
        sealed(&cn, "ok 5"),
    ];
    let out = stream_all(&cn, envs).await;
    assert_eq!(out.len(), 6);
    let codes: Vec<Code> = out
        .iter()
        .map(|o| o.outcome.as_ref().map_or_else(|s| s.code(), |_| Code::Ok))
        .collect();
    assert_eq!(
        codes,
        [
            Code::Ok,
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::AlreadyExists,
            Code::ResourceExhausted,
            Code::Ok,
        ]
    );
    let msg = |i: usize| out[i].outcome.as_ref().unwrap_err().message().to_owned();
    assert!(msg(1).contains("signature does not match"), "{}", msg(1));
    assert!(
        msg(2).contains("a team may only publish as itself"),
        "{}",
        msg(2)
    );
    assert!(
        msg(3).contains(&first.id) && msg(3).contains(&format!("record {}", stored.seq)),
        "{}",
        msg(3)
    );
    assert!(
        msg(4).contains("over the broker's limit of 4096 bytes"),
        "{}",
        msg(4)
    );
    // The same refusals as the unary call, word for word.
    let mut again = sealed(&cn, "bad signature");
    again.signature[32] ^= 1;
    let (c, unary) = code(cn.publish(again).await);
    assert_eq!(
        (c, unary.as_str()),
        (Code::Unauthenticated, msg(1).as_str())
    );
    // Only the three accepted are in the log.
    assert_eq!(b.broker.log().head().tree_size, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_on_the_stream_get_duplicate_receipts() {
    let b = TestBroker::start().await;
    let cn = b.client("CN-CNCERT").await;
    let env = sealed(&cn, "sent three times");
    let out = stream_all(&cn, vec![env.clone(), env.clone(), env.clone()]).await;
    let receipts: Vec<&pb::Receipt> = out.iter().map(|o| o.outcome.as_ref().unwrap()).collect();
    assert!(
        receipts
            .iter()
            .all(|r| r.seq == receipts[0].seq && r.leaf_hash == receipts[0].leaf_hash)
    );
    assert_eq!(receipts.iter().filter(|r| r.duplicate).count(), 2);
    // And later, on a new stream.
    let out = stream_all(&cn, vec![env]).await;
    let r = out[0].outcome.as_ref().unwrap();
    assert!(r.duplicate && r.seq == receipts[0].seq);
    assert_eq!(b.broker.log().head().tree_size, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_budget_applies_per_envelope() {
    let limits = Limits {
        rate_per_second: 1,
        rate_burst: 3,
        ..Limits::default()
    };
    let b = TestBroker::start_with(limits).await;
    let cn = b.client("CN-CNCERT").await;
    let envs: Vec<_> = (0..8).map(|i| sealed(&cn, &format!("flood {i}"))).collect();
    let out = stream_all(&cn, envs).await;
    assert_eq!(out.len(), 8);
    let accepted = out.iter().filter(|o| o.outcome.is_ok()).count();
    for o in &out {
        if let Err(s) = &o.outcome {
            assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
            assert!(
                s.message()
                    .contains("rate limit exceeded for team CN-CNCERT")
            );
        }
    }
    // The burst, and at most what refilled while the test ran.
    assert!((3..=5).contains(&accepted), "{accepted} accepted");
    assert_eq!(b.broker.log().head().tree_size, accepted as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_that_never_reads_its_receipts_is_held_back() {
    let limits = Limits {
        rate_per_second: 1_000_000,
        rate_burst: 1_000_000,
        ..Limits::default()
    };
    let b = TestBroker::start_with(limits).await;
    let cn = b.client("CN-CNCERT").await;
    const N: usize = 20_000;
    let envs: Vec<_> = (0..N).map(|i| sealed(&cn, &format!("u{i}"))).collect();
    // A client whose HTTP/2 windows are the protocol's default (64 KiB), so
    // that what the broker may send ahead is small and known.
    let files = ClientFiles::from_pki(&b.pki(), "CN-CNCERT");
    let read = |p: &Path| std::fs::read(p).unwrap();
    let channel = tls_endpoint(
        &b.url(),
        &read(&files.ca),
        &read(&files.cert),
        &read(&files.key),
    )
    .unwrap()
    .initial_stream_window_size(65_535)
    .initial_connection_window_size(65_535)
    .connect()
    .await
    .unwrap();
    let size = prost::Message::encoded_len(&envs[0]);
    let pulled = Arc::new(AtomicUsize::new(0));
    let counted = pulled.clone();
    let requests = futures_util::stream::iter(envs).map(move |e| {
        counted.fetch_add(1, Ordering::Relaxed);
        pb::PublishRequest { envelope: Some(e) }
    });
    let mut exchange = pb::exchange_client::ExchangeClient::new(channel);
    let response = exchange.publish_stream(requests).await.unwrap();
    // Nothing read: the broker stops once its window and the receipts
    // HTTP/2 lets it send ahead are full.
    let mut last = 0;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = b.broker.log().head().tree_size;
        if now == last && now > 0 {
            break;
        }
        last = now;
    }
    let stored = b.broker.log().head().tree_size as usize;
    // Stored: the window (256), the receipts queued (64) and those the
    // client's 64 KiB window takes (~110 bytes each), with room to spare.
    assert!(stored > 0 && stored < 3000, "{stored} of {N} stored");
    // Taken from the sender and not stored: what the broker's 1 MiB stream
    // window and the client's send buffer hold, nothing more.
    let waiting = (pulled.load(Ordering::Relaxed) - stored) * size;
    assert!(
        waiting < 1024 * 1024 + 256 * size + 128 * 1024,
        "{waiting} bytes taken from the sender and not stored ({stored} of {N} stored)"
    );
    // Another team is not held up meanwhile.
    let ru = b.client("RU-GOVCERT").await;
    tokio::time::timeout(
        Duration::from_secs(10),
        ru.publish(sealed(&ru, "meanwhile")),
    )
    .await
    .expect("another team's publish within 10 s")
    .unwrap();
    // Reading the receipts lets the rest through, in order.
    let mut receipts = response.into_inner();
    let mut n = 0u64;
    while let Some(r) = receipts.message().await.unwrap() {
        assert_eq!(r.index, n);
        assert!(matches!(
            r.outcome,
            Some(pb::stream_receipt::Outcome::Receipt(_))
        ));
        n += 1;
    }
    assert_eq!(n, N as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_receipt_before_sigkill_is_in_the_log_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    let data = tmp.path().join("data");
    make_pki(&pki);
    let mut got: Vec<(pb::Receipt, pb::Envelope)> = Vec::new();
    for round in 0..2u64 {
        let mut broker = BrokerProcess::start(&pki, &data);
        let received = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for team in ["CN-CNCERT", "BR-CERTBR"] {
            let c = Client::connect(&broker.url, &ClientFiles::from_pki(&pki, team), team)
                .await
                .unwrap();
            let envs: Vec<_> = (0..20_000).map(|i| sealed(&c, &format!("k{i}"))).collect();
            let received = received.clone();
            tasks.push(tokio::spawn(async move {
                let Ok(mut s) = c
                    .publish_stream(futures_util::stream::iter(envs.clone()))
                    .await
                else {
                    return;
                };
                while let Some(Ok(o)) = s.next().await {
                    if let Ok(r) = o.outcome {
                        let env = envs[o.index as usize].clone();
                        received.lock().unwrap().push((r, env));
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(500 + 300 * round)).await;
        broker.kill();
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(20), t).await;
        }
        let new = std::mem::take(&mut *received.lock().unwrap());
        assert!(
            !new.is_empty(),
            "round {round}: no receipts before the kill"
        );
        got.extend(new);
    }
    let broker = BrokerProcess::start(&pki, &data);
    let c = Client::connect(
        &broker.url,
        &ClientFiles::from_pki(&pki, "US-CISA"),
        "US-CISA",
    )
    .await
    .unwrap();
    for (r, env) in &got {
        let rec = c.get(get_seq(r.seq)).await.unwrap();
        assert_eq!(rec.leaf_hash, r.leaf_hash, "record {}", r.seq);
        assert_eq!(rec.envelope.as_ref().unwrap().body, env.body);
    }
    let size = c
        .transparency()
        .get_head(pb::GetHeadRequest {})
        .await
        .unwrap()
        .into_inner()
        .tree_size;
    assert!(got.iter().all(|(r, _)| r.seq <= size));
    // The log verifies: each record's bytes hash to its receipt's leaf.
    let (_, env) = &got[0];
    assert!(!envelope::log_bytes(env).is_empty());
}

const GOOD: &str = r#"{"tlp": "clear", "audience": "community", "incident": {"title": "T", "description": "d", "category": "intrusions", "severity": "low", "detected_at": "2026-11-25T10:00:00Z"}}"#;
const REFUSED: &str = r#"{"tlp": "red", "audience": "community", "incident": {"title": "R", "description": "d", "category": "intrusions", "severity": "low", "detected_at": "2026-11-25T10:00:00Z"}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_stream_prints_a_line_per_draft_and_exits_4_on_a_refusal() {
    let b = TestBroker::start().await;
    let file = b.tmp.path().join("drafts.jsonl");
    std::fs::write(&file, format!("{GOOD}\n{REFUSED}\n\n{GOOD}\n")).unwrap();
    let certex = || {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_certex"));
        c.env("CERTEX_BROKER", b.url())
            .env("CERTEX_PKI", b.pki())
            .env("CERTEX_TEAM", "CN-CNCERT")
            .env("RUST_LOG", "error");
        c
    };
    let out = certex()
        .args(["submit", "--stream"])
        .arg(&file)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["index"], i as u64);
    }
    assert_eq!(
        lines
            .iter()
            .map(|l| l["line"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 4]
    );
    assert_eq!(lines[1]["refused"]["code"], "INVALID_ARGUMENT");
    assert!(lines[1].get("seq").is_none());
    for l in [&lines[0], &lines[2]] {
        let seq = l["seq"].as_u64().unwrap();
        let rec = b.client("US-CISA").await.get(get_seq(seq)).await.unwrap();
        assert_eq!(
            hex::encode(&rec.leaf_hash),
            l["leaf_hash"].as_str().unwrap()
        );
    }
    assert_eq!(b.broker.log().head().tree_size, 2);

    // A line that is not a draft: nothing is sent, the line is named.
    std::fs::write(&file, format!("{GOOD}\n{{\"tlp\": \n")).unwrap();
    let out = certex()
        .args(["submit", "--stream"])
        .arg(&file)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 2") && err.contains("nothing was sent"),
        "{err}"
    );
    assert_eq!(b.broker.log().head().tree_size, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_what_was_read_then_ends_unavailable() {
    let b = TestBroker::start().await;
    let cn = b.client("CN-CNCERT").await;
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::Envelope>(16);
    let mut out = cn
        .publish_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap();
    for i in 0..5 {
        tx.send(sealed(&cn, &format!("before {i}"))).await.unwrap();
    }
    for i in 0..5u64 {
        let o = out.next().await.unwrap().unwrap();
        assert_eq!(o.index, i);
        assert!(o.outcome.is_ok());
    }
    // The sender keeps its side open; the broker shuts down.
    let stopping = tokio::spawn(b.stop());
    let end = tokio::time::timeout(Duration::from_secs(10), out.next())
        .await
        .expect("the stream ends within 10 s");
    match end {
        Some(Err(certex::client::connection::ClientError::Status(s))) => {
            assert_eq!(s.code(), Code::Unavailable, "{s:?}");
            assert!(s.message().contains("shutting down"), "{s:?}");
        }
        other => panic!("expected UNAVAILABLE, got {other:?}"),
    }
    drop(tx);
    let _ = stopping.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_keep_the_stream_order_so_a_retraction_may_follow_its_target() {
    let b = TestBroker::start().await;
    let cn = b.client("CN-CNCERT").await;
    // Each message directly followed by its retraction, a bad signature
    // now and then between them: checked concurrently, appended in order.
    let mut envs = Vec::new();
    for i in 0..100 {
        let target = body(
            "CN-CNCERT",
            pb::Tlp::Clear,
            community(),
            incident(&format!("m{i}")),
        );
        envs.push(cn.seal(&target).unwrap());
        if i % 10 == 3 {
            let mut bad = sealed(&cn, &format!("bad {i}"));
            bad.signature[32] ^= 1;
            envs.push(bad);
        }
        let retraction = body(
            "CN-CNCERT",
            pb::Tlp::Clear,
            community(),
            Content::Retraction(pb::Retraction {
                target: target.id.clone(),
                reason: "sent in error".into(),
            }),
        );
        envs.push(cn.seal(&retraction).unwrap());
    }
    let out = stream_all(&cn, envs.clone()).await;
    assert_eq!(out.len(), envs.len());
    let mut last = 0;
    let mut refused = 0;
    for o in &out {
        match &o.outcome {
            Ok(r) => {
                assert!(
                    r.seq > last,
                    "record {} after {last}: the stream's order",
                    r.seq
                );
                last = r.seq;
            }
            Err(s) => {
                assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
                refused += 1;
            }
        }
    }
    assert_eq!(refused, 10);
    assert_eq!(b.broker.log().head().tree_size, 200);
}
