//! Subscriptions over a real broker: exact resume, live push after catch-up,
//! durable cursors across kill -9, slow consumers, exercise isolation,
//! tombstones, per-team stream bounds and directory reload on SIGHUP.

mod common;

use std::path::Path;
use std::time::Duration;

use certex::broker::config::Limits;
use certex::client::connection::{Client, ClientFiles};
use certex::proto::{self as pb, body::Content, subscribe_request::Start};
use common::*;
use tokio_stream::StreamExt;

fn sub(start: Start, follow: bool) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        start: Some(start),
        filter: None,
        follow,
    }
}

async fn collect(c: &Client, req: pb::SubscribeRequest) -> Vec<pb::Record> {
    let mut s = c.exchange().subscribe(req).await.unwrap().into_inner();
    let mut out = Vec::new();
    while let Some(r) = s.message().await.unwrap() {
        out.push(r);
    }
    out
}

async fn publish_n(c: &Client, team: &str, n: usize, aud: pb::Audience) -> Vec<pb::Receipt> {
    let mut out = Vec::new();
    for i in 0..n {
        let env = c
            .seal(&body(
                team,
                pb::Tlp::Green,
                aud.clone(),
                incident(&format!("n{i}")),
            ))
            .unwrap();
        out.push(c.publish(env).await.unwrap());
    }
    out
}

fn seqs(recs: &[pb::Record]) -> Vec<u64> {
    recs.iter().map(|r| r.seq).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_is_exact_and_live_records_follow_catch_up() {
    let b = TestBroker::start().await;
    let cn = b.client("CN-CNCERT").await;
    let br = b.client("BR-CERTBR").await;
    publish_n(&cn, "CN-CNCERT", 5, community()).await;
    assert_eq!(
        seqs(&collect(&br, sub(Start::AfterSeq(2), false)).await),
        vec![3, 4, 5]
    );
    assert_eq!(
        seqs(&collect(&br, sub(Start::AfterSeq(0), false)).await),
        vec![1, 2, 3, 4, 5]
    );
    assert!(
        collect(&br, sub(Start::AfterSeq(5), false))
            .await
            .is_empty()
    );
    assert!(collect(&br, sub(Start::Tail(true), false)).await.is_empty());

    let mut live = br
        .exchange()
        .subscribe(sub(Start::AfterSeq(0), true))
        .await
        .unwrap()
        .into_inner();
    let mut tail = br
        .exchange()
        .subscribe(sub(Start::Tail(true), true))
        .await
        .unwrap()
        .into_inner();
    let publisher = {
        let cn = cn.clone();
        tokio::spawn(async move { publish_n(&cn, "CN-CNCERT", 25, community()).await })
    };
    let mut got = Vec::new();
    while got.len() < 30 {
        got.push(live.message().await.unwrap().unwrap().seq);
    }
    assert_eq!(
        got,
        (1..=30).collect::<Vec<_>>(),
        "in order, no gaps, no duplicates"
    );
    let mut tailed = Vec::new();
    while tailed.len() < 25 {
        tailed.push(tail.message().await.unwrap().unwrap().seq);
    }
    assert_eq!(tailed, (6..=30).collect::<Vec<_>>());
    publisher.await.unwrap();
    // Nothing more arrives.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), live.message())
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_apply() {
    let b = TestBroker::start().await;
    let cn = b.client("CN-CNCERT").await;
    let ru = b.client("RU-GOVCERT").await;
    publish_n(&cn, "CN-CNCERT", 2, community()).await; // incidents, high
    for (sev, tlp) in [
        (pb::Severity::Low, pb::Tlp::Clear),
        (pb::Severity::Critical, pb::Tlp::Green),
    ] {
        let w = body("RU-GOVCERT", tlp, community(), warning("w", sev));
        ru.publish(ru.seal(&w).unwrap()).await.unwrap();
    }
    let with = |f: pb::Filter| pb::SubscribeRequest {
        start: Some(Start::AfterSeq(0)),
        filter: Some(f),
        follow: false,
    };
    let us = b.client("US-CISA").await;
    let warnings = collect(
        &us,
        with(pb::Filter {
            kinds: vec![pb::Kind::Warning as i32],
            ..Default::default()
        }),
    )
    .await;
    assert_eq!(seqs(&warnings), vec![3, 4]);
    let severe = collect(
        &us,
        with(pb::Filter {
            min_severity: pb::Severity::Critical as i32,
            ..Default::default()
        }),
    )
    .await;
    assert_eq!(seqs(&severe), vec![4]);
    let from_cn = collect(
        &us,
        with(pb::Filter {
            senders: vec!["CN-CNCERT".into()],
            ..Default::default()
        }),
    )
    .await;
    assert_eq!(seqs(&from_cn), vec![1, 2]);
    let clear = collect(
        &us,
        with(pb::Filter {
            tlps: vec![pb::Tlp::Clear as i32],
            ..Default::default()
        }),
    )
    .await;
    assert_eq!(seqs(&clear), vec![3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exercise_traffic_is_isolated_both_ways() {
    let b = TestBroker::start().await;
    let cn = b.client("CN-CNCERT").await;
    let br = b.client("BR-CERTBR").await;
    let real = body("CN-CNCERT", pb::Tlp::Green, community(), incident("real"));
    let mut drill = body("CN-CNCERT", pb::Tlp::Green, community(), incident("drill"));
    drill.exercise = "CYBER-STORM-7".into();
    let mut other = body(
        "CN-CNCERT",
        pb::Tlp::Green,
        community(),
        incident("other drill"),
    );
    other.exercise = "LOCKED-SHIELDS".into();
    for m in [&real, &drill, &other] {
        cn.publish(cn.seal(m).unwrap()).await.unwrap();
    }
    let scoped = |scope: certex::rules::access::TrafficScope| pb::SubscribeRequest {
        start: Some(Start::AfterSeq(0)),
        filter: Some(pb::Filter {
            exercise: Some(scope.to_selector()),
            ..Default::default()
        }),
        follow: false,
    };
    use certex::rules::access::TrafficScope::*;
    for reader in [&br, &cn] {
        assert_eq!(seqs(&collect(reader, scoped(Real)).await), vec![1]);
        assert_eq!(
            seqs(&collect(reader, scoped(Exercise("CYBER-STORM-7".into()))).await),
            vec![2]
        );
        assert_eq!(
            seqs(&collect(reader, scoped(AllExercises)).await),
            vec![2, 3]
        );
    }
    // get follows the same rule.
    let (c, _) = code(br.get(get_seq(2)).await);
    assert_eq!(c, tonic::Code::NotFound);
    let mut req = get_seq(2);
    req.exercise = Some(Exercise("CYBER-STORM-7".into()).to_selector());
    let rec = br.get(req).await.unwrap();
    let json = br.render(&rec);
    assert_eq!(json.marking.as_deref(), Some("EXERCISE"));
    let mut req = get_seq(1);
    req.exercise = Some(AllExercises.to_selector());
    assert_eq!(code(br.get(req).await).0, tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_on_subscribe_and_retraction_reaches_live_readers() {
    let b = TestBroker::start().await;
    let cn = b.client("CN-CNCERT").await;
    let ru = b.client("RU-GOVCERT").await;
    let target = body(
        "CN-CNCERT",
        pb::Tlp::Amber,
        teams(&["RU-GOVCERT"]),
        incident("oops"),
    );
    cn.publish(cn.seal(&target).unwrap()).await.unwrap();
    let mut live = ru
        .exchange()
        .subscribe(sub(Start::AfterSeq(0), true))
        .await
        .unwrap()
        .into_inner();
    let first = live.message().await.unwrap().unwrap();
    assert!(first.envelope.is_some());
    let r = body(
        "CN-CNCERT",
        pb::Tlp::Amber,
        teams(&["RU-GOVCERT"]),
        Content::Retraction(pb::Retraction {
            target: target.id.clone(),
            reason: "wrong victim".into(),
        }),
    );
    cn.publish(cn.seal(&r).unwrap()).await.unwrap();
    let second = live.message().await.unwrap().unwrap();
    assert_eq!(second.seq, 2, "the live reader receives the retraction");
    // A new subscription sees the tombstone in place of the content.
    let recs = collect(&ru, sub(Start::AfterSeq(0), false)).await;
    assert!(recs[0].envelope.is_none());
    assert_eq!(recs[0].retracted.as_ref().unwrap().reason, "wrong victim");
    assert_eq!(recs[0].leaf_hash, first.leaf_hash);
    // The sender keeps its content; outsiders get nothing.
    assert!(
        collect(&cn, sub(Start::AfterSeq(0), false)).await[0]
            .envelope
            .is_some()
    );
    assert!(
        collect(&b.client("US-CISA").await, sub(Start::AfterSeq(0), false))
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_subscriptions_per_team_are_bounded() {
    let limits = Limits {
        max_subscriptions_per_team: 2,
        ..Limits::default()
    };
    let b = TestBroker::start_with(limits).await;
    let br = b.client("BR-CERTBR").await;
    let s1 = br
        .exchange()
        .subscribe(sub(Start::Tail(true), true))
        .await
        .unwrap();
    let s2 = br
        .exchange()
        .subscribe(sub(Start::Tail(true), true))
        .await
        .unwrap();
    let err = br
        .exchange()
        .subscribe(sub(Start::Tail(true), true))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(
        err.message().contains("already has 2 open subscriptions"),
        "{}",
        err.message()
    );
    // Other teams are unaffected; closing one frees a slot.
    b.client("RU-GOVCERT")
        .await
        .exchange()
        .subscribe(sub(Start::Tail(true), true))
        .await
        .unwrap();
    drop(s1);
    let mut ok = false;
    for _ in 0..500 {
        if br
            .exchange()
            .subscribe(sub(Start::Tail(true), true))
            .await
            .is_ok()
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "a slot is freed when a subscriber goes away");
    drop(s2);
}

async fn client_at(pki: &Path, url: &str, team: &str) -> Client {
    Client::connect(url, &ClientFiles::from_pki(pki, team), team)
        .await
        .unwrap()
}

fn cli(pki: &Path, url: &str, team: &str, args: &[&str]) -> Vec<serde_json::Value> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_certex"))
        .args(args)
        .env("CERTEX_BROKER", url)
        .env("CERTEX_PKI", pki)
        .env("CERTEX_TEAM", team)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_cursor_survives_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let (pki, data) = (tmp.path().join("pki"), tmp.path().join("data"));
    make_pki(&pki);
    let mut broker = BrokerProcess::start(&pki, &data);
    let cn = client_at(&pki, &broker.url, "CN-CNCERT").await;
    publish_n(&cn, "CN-CNCERT", 10, community()).await;
    let url = broker.url.clone();
    let (p, u) = (pki.clone(), url.clone());
    let first = tokio::task::spawn_blocking(move || {
        cli(
            &p,
            &u,
            "BR-CERTBR",
            &["subscribe", "--durable", "soc-feed", "--limit", "4"],
        )
    })
    .await
    .unwrap();
    assert_eq!(
        first
            .iter()
            .map(|r| r["seq"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert!(first.iter().all(|r| r["verified"] == true));
    broker.kill();
    let broker = BrokerProcess::start(&pki, &data);
    let (p, u) = (pki.clone(), broker.url.clone());
    let rest = tokio::task::spawn_blocking(move || {
        cli(&p, &u, "BR-CERTBR", &["subscribe", "--durable", "soc-feed"])
    })
    .await
    .unwrap();
    assert_eq!(
        rest.iter()
            .map(|r| r["seq"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        (5..=10).collect::<Vec<_>>()
    );
    // Cursors are per team: the same name for another team starts at 0.
    let (p, u) = (pki.clone(), broker.url.clone());
    let other = tokio::task::spawn_blocking(move || {
        cli(
            &p,
            &u,
            "RU-GOVCERT",
            &["subscribe", "--durable", "soc-feed", "--limit", "1"],
        )
    })
    .await
    .unwrap();
    assert_eq!(other[0]["seq"], 1);
    // A commit never moves a cursor back.
    let br = client_at(&pki, &broker.url, "BR-CERTBR").await;
    let c = br
        .exchange()
        .commit_cursor(pb::CommitCursorRequest {
            durable: "soc-feed".into(),
            seq: 2,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(c.seq, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_slows_nobody_and_loses_nothing() {
    const TOTAL: usize = 10_000;
    let tmp = tempfile::tempdir().unwrap();
    let (pki, data) = (tmp.path().join("pki"), tmp.path().join("data"));
    make_pki(&pki);
    let broker = BrokerProcess::start(&pki, &data);
    let url = broker.url.clone();
    // The slow one subscribes and then never reads.
    let slow = client_at(&pki, &url, "DE-CERTBUND").await;
    let mut slow_stream = slow
        .exchange()
        .subscribe(sub(Start::AfterSeq(0), true))
        .await
        .unwrap()
        .into_inner();
    let rss_before = broker.rss_kib();

    let mut fast = Vec::new();
    for team in ["US-CISA", "ZA-CSIRT"] {
        let c = client_at(&pki, &url, team).await;
        let mut s = c
            .exchange()
            .subscribe(sub(Start::AfterSeq(0), true))
            .await
            .unwrap()
            .into_inner();
        fast.push(tokio::spawn(async move {
            let mut next = 1u64;
            while next <= TOTAL as u64 {
                let r = s.message().await.unwrap().unwrap();
                assert_eq!(r.seq, next);
                next += 1;
            }
            let _keep = c;
            next - 1
        }));
    }
    let publishers = ["CN-CNCERT", "RU-GOVCERT", "BR-CERTBR", "IN-CERTIN"];
    let mut pubs = Vec::new();
    for team in publishers {
        let c = client_at(&pki, &url, team).await;
        pubs.push(tokio::spawn(async move {
            let mut in_flight = futures_util::stream::FuturesUnordered::new();
            for i in 0..TOTAL / 4 {
                let env = c
                    .seal(&body(
                        team,
                        pb::Tlp::Clear,
                        community(),
                        incident(&format!("bulk {i}")),
                    ))
                    .unwrap();
                let c = c.clone();
                in_flight.push(async move { c.publish(env).await.unwrap() });
                if in_flight.len() >= 16 {
                    in_flight.next().await;
                }
            }
            while in_flight.next().await.is_some() {}
        }));
    }
    for p in pubs {
        p.await.unwrap();
    }
    for f in fast {
        assert_eq!(
            f.await.unwrap(),
            TOTAL as u64,
            "fast subscribers received everything"
        );
    }
    let rss_after = broker.rss_kib();
    eprintln!(
        "broker RSS: {rss_before} KiB before, {rss_after} KiB after {TOTAL} records with a stalled subscriber"
    );
    assert!(
        rss_after < 256 * 1024,
        "broker RSS {rss_after} KiB is not bounded"
    );
    // The slow one now reads everything, in order, from the log.
    let mut next = 1u64;
    while next <= TOTAL as u64 {
        let r = slow_stream.message().await.unwrap().unwrap();
        assert_eq!(r.seq, next);
        next += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reload_adds_a_group_member_for_new_records_and_refuses_a_broken_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (pki, data) = (tmp.path().join("pki"), tmp.path().join("data"));
    make_pki(&pki);
    let broker = BrokerProcess::start(&pki, &data);
    let cn = client_at(&pki, &broker.url, "CN-CNCERT").await;
    let scoped = body(
        "CN-CNCERT",
        pb::Tlp::Amber,
        group("SCO"),
        incident("for SCO"),
    );
    cn.publish(cn.seal(&scoped).unwrap()).await.unwrap();
    let de = client_at(&pki, &broker.url, "DE-CERTBUND").await;
    let mut live = de
        .exchange()
        .subscribe(sub(Start::AfterSeq(0), true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(code(de.get(get_seq(1)).await).0, tonic::Code::NotFound);

    // A broken file is refused; the broker keeps serving with the old one.
    let path = pki.join("directory.toml");
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{good}\nthis is not toml")).unwrap();
    broker.hangup();
    tokio::time::sleep(Duration::from_millis(300)).await;
    cn.publish(
        cn.seal(&body(
            "CN-CNCERT",
            pb::Tlp::Clear,
            community(),
            incident("still up"),
        ))
        .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(
        live.message().await.unwrap().unwrap().seq,
        2,
        "DE still sees only what it may"
    );

    // Add DE-CERTBUND to SCO and reload.
    let with_de = good.replace("SCO = [", "SCO = [\n    \"DE-CERTBUND\",");
    assert_ne!(with_de, good);
    std::fs::write(&path, with_de).unwrap();
    broker.hangup();
    let mut seen = false;
    for _ in 0..500 {
        let groups = de
            .directory_api()
            .list_groups(pb::ListGroupsRequest {})
            .await
            .unwrap()
            .into_inner()
            .groups;
        if groups
            .iter()
            .any(|g| g.name == "SCO" && g.members.iter().any(|m| m == "DE-CERTBUND"))
        {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(seen, "the reload adds DE-CERTBUND to SCO");
    // SPEC §5: a group admits its members as they were when a record was
    // accepted, so the new member does not read the group's history.
    assert_eq!(code(de.get(get_seq(1)).await).0, tonic::Code::NotFound);
    // Live: the next SCO record reaches the open subscription.
    cn.publish(
        cn.seal(&body(
            "CN-CNCERT",
            pb::Tlp::Amber,
            group("SCO"),
            incident("after reload"),
        ))
        .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(live.message().await.unwrap().unwrap().seq, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_removed_by_reload_is_cut_off_from_its_open_stream() {
    let b = TestBroker::start().await;
    let de = b.client("DE-CERTBUND").await;
    let mut live = de
        .exchange()
        .subscribe(sub(Start::Tail(true), true))
        .await
        .unwrap()
        .into_inner();
    let path = b.pki().join("directory.toml");
    let mut file: certex::rules::directory::DirectoryFile =
        toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    file.teams.retain(|t| t.id != "DE-CERTBUND");
    std::fs::write(&path, toml::to_string(&file).unwrap()).unwrap();
    b.broker.reload_directory().unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), live.message())
        .await
        .expect("stream ended");
    let err = end.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_filters_do_not_reveal_what_a_tombstone_withholds() {
    let b = TestBroker::start().await;
    let cn = b.client("CN-CNCERT").await;
    let critical = body(
        "CN-CNCERT",
        pb::Tlp::Clear,
        community(),
        warning("critical", pb::Severity::Critical),
    );
    let low = body(
        "CN-CNCERT",
        pb::Tlp::Clear,
        community(),
        warning("low", pb::Severity::Low),
    );
    for m in [&critical, &low] {
        cn.publish(cn.seal(m).unwrap()).await.unwrap();
        let r = body(
            "CN-CNCERT",
            pb::Tlp::Clear,
            community(),
            Content::Retraction(pb::Retraction {
                target: m.id.clone(),
                reason: "withdrawn".into(),
            }),
        );
        cn.publish(cn.seal(&r).unwrap()).await.unwrap();
    }
    let us = b.client("US-CISA").await;
    let req = pb::SubscribeRequest {
        start: Some(Start::AfterSeq(0)),
        filter: Some(pb::Filter {
            min_severity: pb::Severity::Critical as i32,
            kinds: vec![pb::Kind::Warning as i32],
            ..Default::default()
        }),
        follow: false,
    };
    let got = collect(&us, req).await;
    let tombstones: Vec<u64> = got
        .iter()
        .filter(|r| r.retracted.is_some())
        .map(|r| r.seq)
        .collect();
    assert_eq!(
        tombstones,
        vec![1, 3],
        "both tombstones, whatever the withheld severity"
    );
}

/// Among many live subscribers, one that never reads holds at most its own
/// buffer in the broker however much is published (it is not buffered for:
/// it reads from the log when it continues), while every other subscriber
/// receives every record, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_among_many_holds_only_its_own_buffer() {
    let limits = Limits {
        max_subscriptions_per_team: 100,
        ..Limits::default()
    };
    let per_sub = limits.subscription_buffer_bytes;
    let b = TestBroker::start_with(limits).await;
    let stalled_client = b.client("RU-GOVCERT").await;
    let mut stalled = stalled_client
        .exchange()
        .subscribe(sub(Start::Tail(true), true))
        .await
        .unwrap()
        .into_inner();
    const READERS: usize = 24;
    const RECORDS: usize = 400;
    let mut readers = Vec::new();
    for i in 0..READERS {
        let c = b.client(TEAMS[i % TEAMS.len()]).await;
        let s = c
            .exchange()
            .subscribe(sub(Start::Tail(true), true))
            .await
            .unwrap()
            .into_inner();
        readers.push(tokio::spawn(async move {
            let _keep = c;
            let mut s = s;
            let mut got = Vec::new();
            while got.len() < RECORDS {
                match tokio::time::timeout(Duration::from_secs(60), s.message()).await {
                    Ok(Ok(Some(r))) => got.push(r.seq),
                    other => panic!("reader {i} stopped after {}: {other:?}", got.len()),
                }
            }
            got
        }));
    }
    // 400 records of 12 KiB: 4.8 MB, more than the stalled stream's HTTP/2
    // window (2 MiB) and the broker's buffers together.
    let cn = b.client("CN-CNCERT").await;
    let mut max_queued = 0;
    let mut publishes = futures_util::stream::FuturesOrdered::new();
    for i in 0..RECORDS {
        let mut content = incident(&format!("stall-{i}"));
        if let Content::Incident(inc) = &mut content {
            inc.description = "x".repeat(12 * 1024);
        }
        let env = cn
            .seal(&body("CN-CNCERT", pb::Tlp::Green, community(), content))
            .unwrap();
        let c = cn.clone();
        publishes.push_back(async move { c.publish(env).await.unwrap() });
        if publishes.len() >= 16 {
            publishes.next().await;
        }
        max_queued = max_queued.max(b.broker.subscription_queued_bytes());
    }
    while publishes.next().await.is_some() {
        max_queued = max_queued.max(b.broker.subscription_queued_bytes());
    }
    for r in readers {
        let got = r.await.unwrap();
        assert_eq!(got, (1..=RECORDS as u64).collect::<Vec<_>>());
    }
    // The readers are done; what is left is the stalled one's share.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let left = b.broker.subscription_queued_bytes();
    let record = 13 * 1024;
    assert!(
        left <= per_sub + record,
        "the stalled subscriber holds {left} bytes; its buffer is {per_sub}"
    );
    assert!(
        max_queued <= (READERS + 1) * (per_sub + record),
        "subscriptions held {max_queued} bytes at once"
    );
    // It lost nothing: reading now, it gets every record in order.
    let mut seen = Vec::new();
    while seen.len() < RECORDS {
        let r = tokio::time::timeout(Duration::from_secs(30), stalled.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push(r.seq);
    }
    assert_eq!(seen, (1..=RECORDS as u64).collect::<Vec<_>>());
}

/// A record many live subscribers receive is encoded once and shared:
/// every reader still gets exactly the record `Get` gives it, live and in
/// catch-up, and a record a reader may not see never reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_records_are_the_records_get_gives_each_reader() {
    let b = TestBroker::start().await;
    let cn = b.client("CN-CNCERT").await;
    let br = b.client("BR-CERTBR").await;
    let ru = b.client("RU-GOVCERT").await;
    let mut live = Vec::new();
    for c in [&br, &br, &ru] {
        live.push(
            c.exchange()
                .subscribe(sub(Start::Tail(true), true))
                .await
                .unwrap()
                .into_inner(),
        );
    }
    publish_n(&cn, "CN-CNCERT", 6, community()).await;
    // For BR only: RU never sees it.
    let only_br = cn
        .seal(&body(
            "CN-CNCERT",
            pb::Tlp::Amber,
            teams(&["BR-CERTBR"]),
            incident("for BR"),
        ))
        .unwrap();
    let only_br_seq = cn.publish(only_br).await.unwrap().seq;
    publish_n(&cn, "CN-CNCERT", 3, community()).await;

    let mut received: Vec<Vec<pb::Record>> = Vec::new();
    for (i, s) in live.iter_mut().enumerate() {
        let want = if i < 2 { 10 } else { 9 };
        let mut got = Vec::new();
        while got.len() < want {
            got.push(s.message().await.unwrap().unwrap());
        }
        received.push(got);
    }
    assert_eq!(received[0], received[1], "two readers, the same bytes");
    assert!(!received[2].iter().any(|r| r.seq == only_br_seq));
    for (reader, records) in [(&br, &received[0]), (&ru, &received[2])] {
        for r in records {
            assert!(r.envelope.is_some());
            assert_eq!(*r, reader.get(get_seq(r.seq)).await.unwrap());
        }
        assert_eq!(
            *records,
            collect(reader, sub(Start::AfterSeq(0), false)).await
        );
    }
}

/// Subscribers far behind the tail (more than half the ring) at the same
/// place share one read of each span: each still gets exactly its own
/// records, the same as `Get` gives it, and nothing it may not see.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_far_behind_together_get_each_their_own_records() {
    let b = TestBroker::start().await;
    let cn = b.client("CN-CNCERT").await;
    let br = b.client("BR-CERTBR").await;
    let ru = b.client("RU-GOVCERT").await;
    let total = 2500;
    let envs: Vec<pb::Envelope> = (0..total)
        .map(|i| {
            let aud = if i % 10 == 0 {
                teams(&["BR-CERTBR"])
            } else {
                community()
            };
            cn.seal(&body(
                "CN-CNCERT",
                pb::Tlp::Green,
                aud,
                incident(&format!("r{i}")),
            ))
            .unwrap()
        })
        .collect();
    let mut receipts = cn
        .publish_stream(futures_util::stream::iter(envs))
        .await
        .unwrap();
    let mut stored = 0;
    while let Some(r) = receipts.next().await {
        r.unwrap().outcome.unwrap();
        stored += 1;
    }
    assert_eq!(stored, total);

    let all = || sub(Start::AfterSeq(0), false);
    let (a, b2, r) = tokio::join!(
        collect(&br, all()),
        collect(&br, all()),
        collect(&ru, all())
    );
    assert_eq!(seqs(&a), (1..=total as u64).collect::<Vec<_>>());
    assert_eq!(a, b2, "two readers at the same place, the same records");
    let hidden: Vec<u64> = (0..total as u64)
        .filter(|i| i % 10 == 0)
        .map(|i| i + 1)
        .collect();
    assert_eq!(r.len(), total - hidden.len());
    assert!(r.iter().all(|rec| !hidden.contains(&rec.seq)));
    for (reader, records) in [(&br, &a), (&ru, &r)] {
        for rec in records.iter().step_by(97) {
            assert_eq!(*rec, reader.get(get_seq(rec.seq)).await.unwrap());
        }
    }
}
