//! The operator's metrics endpoint (`serve --metrics-listen`): a real broker
//! process with real mTLS clients, scraped over plain HTTP and parsed as
//! Prometheus text. After a publish, a refused publish, a retry, a
//! subscription, a failed TLS handshake and a directory reload, the
//! counters and gauges move by exactly what happened, with the right labels;
//! no label (nor anything else in the scrape) carries a record's content, id
//! or any field value; and only `GET /metrics` is served.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use certex::client::connection::{Client, ClientFiles};
use certex::proto as pb;
use common::*;
use tonic::Code;

/// A field value no scrape may carry.
const SECRET: &str = "XX-METRICSSECRET";
/// The published record's title.
const TITLE: &str = "Operation Quiet Meter at the grid operator";

/// One sample of the exposition: name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// What `GET path` answers: status code and body.
fn http_get(addr: &str, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    (status, body.to_owned())
}

/// The Prometheus text format: `name{k="v",…} value` lines, `#` comments.
fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect(line);
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), BTreeMap::new()),
            Some((name, rest)) => {
                let rest = rest.strip_suffix('}').expect(line);
                (name.to_owned(), parse_labels(rest, line))
            }
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name in {line:?}"
        );
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

/// `k="v",k2="v2"` with `\\`, `\"` and `\n` escapes.
fn parse_labels(s: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        assert_eq!(chars.next(), Some('"'), "{line}");
        let mut value = String::new();
        loop {
            match chars.next().expect(line) {
                '\\' => match chars.next().expect(line) {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').to_owned(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    labels
}

/// The sum of the samples named `name` whose labels include `want`.
fn value(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && want
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

fn scrape(addr: &str) -> (String, Vec<Sample>) {
    let (status, body) = http_get(addr, "GET", "/metrics");
    assert_eq!(status, 200, "{body}");
    let samples = parse(&body);
    (body, samples)
}

/// Scrapes until `ok` holds for the samples (gauges that follow a stream
/// closing move a moment later).
fn scrape_until(addr: &str, ok: impl Fn(&[Sample]) -> bool) -> (String, Vec<Sample>) {
    let start = Instant::now();
    loop {
        let (text, samples) = scrape(addr);
        if ok(&samples) || start.elapsed() > Duration::from_secs(10) {
            return (text, samples);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_publishes_refusals_and_subscriptions_and_carry_no_content() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    make_pki(&pki);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_certex"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--pki"])
        .arg(&pki)
        .arg("--data")
        .arg(tmp.path().join("data"))
        .args(["--metrics-listen", "127.0.0.1:0"]);
    let broker = BrokerProcess::spawn(cmd);
    let addr = broker
        .metrics
        .clone()
        .expect("no \"certex metrics listening on\" line");

    // Only GET /metrics.
    assert_eq!(http_get(&addr, "GET", "/").0, 404);
    assert_eq!(http_get(&addr, "POST", "/metrics").0, 405);
    let (_, before) = scrape(&addr);
    assert_eq!(value(&before, "certex_log_records", &[]), 0.0);
    let watermark = value(&before, "certex_disk_watermark_bytes", &[]);
    assert_eq!(watermark, 1024.0 * 1024.0 * 1024.0);
    assert!(value(&before, "certex_disk_free_bytes", &[]) > 0.0);

    let connect = |team: &'static str| {
        let pki = pki.clone();
        let url = broker.url.clone();
        async move {
            Client::connect(&url, &ClientFiles::from_pki(&pki, team), team)
                .await
                .unwrap()
        }
    };
    let cn = connect("CN-CNCERT").await;
    let br = connect("BR-CERTBR").await;

    // One publish, accepted; the same envelope again, a duplicate.
    let record = body("CN-CNCERT", pb::Tlp::Green, community(), incident(TITLE));
    let env = cn.seal(&record).unwrap();
    let first = cn.publish(env.clone()).await.unwrap();
    assert!(!first.duplicate);
    assert!(cn.publish(env).await.unwrap().duplicate);
    // One refusal: an audience naming a team that does not exist (the
    // secret), refused INVALID_ARGUMENT on audience.teams.
    let bad = body(
        "CN-CNCERT",
        pb::Tlp::Red,
        teams(&[SECRET]),
        incident(&format!("{SECRET} in the title")),
    );
    let (c, msg) = code(cn.publish(cn.seal(&bad).unwrap()).await);
    assert_eq!(c, Code::InvalidArgument, "{msg}");

    // One subscription, open, having read the record.
    let mut stream = br
        .exchange()
        .subscribe(pb::SubscribeRequest {
            start: Some(pb::subscribe_request::Start::AfterSeq(0)),
            filter: None,
            follow: true,
        })
        .await
        .unwrap()
        .into_inner();
    let got = stream.message().await.unwrap().unwrap();
    assert_eq!(got.seq, first.seq);

    // A TLS handshake that fails: plain HTTP to the gRPC port.
    let grpc = format!("127.0.0.1:{}", broker.url.rsplit(':').next().unwrap());
    let mut raw = TcpStream::connect(&grpc).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let _ = raw.read_to_end(&mut Vec::new());
    // A directory reload.
    broker.hangup();

    let (text, after) = scrape_until(&addr, |s| {
        value(s, "certex_tls_handshake_failures_total", &[]) >= 1.0
            && value(s, "certex_directory_reloads_total", &[]) >= 1.0
    });
    let delta = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    let publishes = "certex_publishes_total";
    assert_eq!(
        delta(publishes, &[("kind", "incident"), ("result", "accepted")]),
        1.0,
        "{text}"
    );
    assert_eq!(
        delta(publishes, &[("kind", "incident"), ("result", "duplicate")]),
        1.0
    );
    assert_eq!(
        delta(publishes, &[("kind", "incident"), ("result", "refused")]),
        1.0
    );
    assert_eq!(delta(publishes, &[]), 3.0, "{text}");
    assert_eq!(
        delta("certex_publish_retries_total", &[("team", "CN-CNCERT")]),
        1.0
    );
    assert_eq!(
        delta(
            "certex_refusals_total",
            &[
                ("rpc", "Publish"),
                ("code", "INVALID_ARGUMENT"),
                ("rule", "invalid-field"),
                ("team", "CN-CNCERT"),
            ]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(delta("certex_refusals_total", &[]), 1.0);
    assert_eq!(
        value(
            &after,
            "certex_publish_duration_seconds_count",
            &[("result", "accepted")]
        ),
        1.0
    );
    assert_eq!(
        value(&after, "certex_commit_group_records_sum", &[]),
        1.0,
        "one record committed"
    );
    // The accepted publish's signature, at least (the refused one may or
    // may not have reached the signature check).
    assert!(value(&after, "certex_signature_batch_size_sum", &[]) >= 1.0);
    assert!(
        value(
            &after,
            "certex_fdatasync_duration_seconds_count",
            &[("file", "records")]
        ) >= 1.0
    );
    assert_eq!(value(&after, "certex_log_records", &[]), 1.0);
    assert!(value(&after, "certex_log_bytes", &[]) > 0.0);
    // Connections and subscriptions, in all and per team.
    assert!(value(&after, "certex_connections_open", &[]) >= 2.0);
    for team in ["CN-CNCERT", "BR-CERTBR"] {
        assert!(
            value(&after, "certex_team_connections_open", &[("team", team)]) >= 1.0,
            "{team}: {text}"
        );
    }
    assert_eq!(
        value(
            &after,
            "certex_team_connections_open",
            &[("team", "RU-GOVCERT")]
        ),
        0.0
    );
    assert_eq!(value(&after, "certex_subscriptions_open", &[]), 1.0);
    assert_eq!(
        value(
            &after,
            "certex_team_subscriptions_open",
            &[("team", "BR-CERTBR")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            "certex_team_subscriber_lag_records",
            &[("team", "BR-CERTBR")]
        ),
        0.0
    );
    assert_eq!(
        value(
            &after,
            "certex_tls_handshake_failures_total",
            &[("reason", "protocol")]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        value(
            &after,
            "certex_directory_reloads_total",
            &[("result", "ok")]
        ),
        1.0
    );

    // No content: not the title, the description, an observable, the
    // message id or the refused value, anywhere in the scrape; and every
    // label is one of the fixed keys.
    let description = match &record.content {
        Some(pb::body::Content::Incident(i)) => i.description.clone(),
        _ => unreachable!(),
    };
    for word in [TITLE, &description, "203.0.113.7", &record.id, SECRET] {
        assert!(!text.contains(word), "the scrape carries {word:?}");
    }
    let keys = [
        "kind", "result", "team", "rpc", "code", "rule", "budget", "reason", "file", "peer",
        "outcome", "le",
    ];
    for s in &after {
        for (k, v) in &s.labels {
            assert!(keys.contains(&k.as_str()), "label {k} on {}", s.name);
            if k != "le" {
                assert!(
                    v.parse::<f64>().is_err(),
                    "a number as label {k}={v} on {}",
                    s.name
                );
            }
        }
    }

    // The subscription ends: its gauges go back to 0.
    drop(stream);
    let (_, closed) = scrape_until(&addr, |s| value(s, "certex_subscriptions_open", &[]) == 0.0);
    assert_eq!(value(&closed, "certex_subscriptions_open", &[]), 0.0);
    assert_eq!(
        value(
            &closed,
            "certex_team_subscriptions_open",
            &[("team", "BR-CERTBR")]
        ),
        0.0
    );
}

/// Without `--metrics-listen` nothing listens and nothing is recorded: the
/// broker prints no metrics line.
#[test]
fn metrics_are_off_by_default() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    make_pki(&pki);
    let broker = BrokerProcess::start(&pki, &tmp.path().join("data"));
    assert!(broker.metrics.is_none());
}
