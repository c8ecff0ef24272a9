//! Feeds that survive restarts and exit codes scripts can trust: a
//! `certex subscribe --follow` child process across a broker killed with
//! SIGKILL and one stopped with SIGTERM, each restarted on the same address
//! and data, prints every record once, in order; and each class of failure
//! exits with its own code and one clear line.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use certex::client::connection::{Client, ClientFiles};
use certex::proto as pb;
use common::*;
use serde_json::Value;

/// How long any awaited condition may take.
const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `cond` every 50 ms until it holds; panics with `what` after
/// [`DEADLINE`].
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `certex serve` over `pki` and `data` on `listen` (`127.0.0.1:0` for any
/// port). The same port is free again once a probe can bind it; the broker
/// binds with SO_REUSEADDR, as the probe does.
fn start_broker(pki: &Path, data: &Path, listen: &str) -> BrokerProcess {
    if !listen.ends_with(":0") {
        wait_until("the port to be free", || {
            std::net::TcpListener::bind(listen).is_ok()
        });
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_certex"));
    cmd.args(["serve", "--listen", listen, "--pki"])
        .arg(pki)
        .arg("--data")
        .arg(data);
    BrokerProcess::spawn(cmd)
}

fn signal(child: &mut Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
    child.wait().unwrap();
}

/// Publishes `n` community records as CN-CNCERT; their seqs.
async fn publish(pki: &Path, url: &str, n: usize) -> Vec<u64> {
    let team = "CN-CNCERT";
    let c = Client::connect(url, &ClientFiles::from_pki(pki, team), team)
        .await
        .unwrap();
    let mut seqs = Vec::new();
    for i in 0..n {
        let env = c
            .seal(&body(
                team,
                pb::Tlp::Green,
                community(),
                incident(&format!("feed {i}")),
            ))
            .unwrap();
        seqs.push(c.publish(env).await.unwrap().seq);
    }
    seqs
}

/// Lines a child writes to a pipe, collected by a thread.
fn collect(pipe: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let kept = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            kept.lock().unwrap().push(line);
        }
    });
    lines
}

fn count(lines: &Mutex<Vec<String>>) -> usize {
    lines.lock().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_follow_prints_every_record_once_across_broker_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    let data = tmp.path().join("data");
    make_pki(&pki);
    let mut broker = start_broker(&pki, &data, "127.0.0.1:0");
    let url = broker.url.clone();
    let listen = format!("127.0.0.1:{}", url.rsplit(':').next().unwrap());

    let mut sub = Command::new(env!("CARGO_BIN_EXE_certex"))
        .args(["subscribe", "--follow", "--from", "0", "--as", "BR-CERTBR"])
        .args(["--broker", &url, "--pki"])
        .arg(&pki)
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = collect(sub.stdout.take().unwrap());
    let err = collect(sub.stderr.take().unwrap());

    // Before any restart.
    let mut expected = publish(&pki, &url, 4).await;
    wait_until("the first records", || count(&out) == expected.len());

    // SIGKILL: the connection breaks under the stream; the subscriber
    // retries while nothing listens, then resumes on the new process.
    broker.kill();
    broker = start_broker(&pki, &data, &listen);
    expected.extend(publish(&pki, &url, 3).await);
    wait_until("the records after SIGKILL", || {
        count(&out) == expected.len()
    });
    assert!(
        err.lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("certex: connection lost (") && l.contains("reconnecting in")),
        "no reconnect notice: {:?}",
        err.lock().unwrap()
    );

    // SIGTERM: the broker drains, telling subscribers to resume.
    signal(&mut broker.child, "-TERM");
    let _broker = start_broker(&pki, &data, &listen);
    expected.extend(publish(&pki, &url, 3).await);
    wait_until("the records after SIGTERM", || {
        count(&out) == expected.len()
    });

    // Nothing more arrives late: one more record, and it is the next line.
    expected.extend(publish(&pki, &url, 1).await);
    wait_until("the last record", || count(&out) >= expected.len());
    signal(&mut sub, "-TERM");
    let status = sub.wait().unwrap();

    let printed: Vec<Value> = out
        .lock()
        .unwrap()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seqs: Vec<u64> = printed.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, expected, "every record once, in order");
    assert_eq!(seqs, (1..=expected.len() as u64).collect::<Vec<_>>());
    assert!(printed.iter().all(|r| r["verified"] == true));
    let err = err.lock().unwrap();
    assert!(
        err.iter().all(|l| l.starts_with("certex: ")),
        "stderr only has one-line notices: {err:?}"
    );
    assert!(
        err.iter()
            .any(|l| l.contains("reconnected; resuming after seq"))
    );
    assert_eq!(status.code(), Some(0), "stopped cleanly: {err:?}");
}

// === exit codes ===

fn certex(b: &TestBroker, team: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_certex"));
    c.env("CERTEX_BROKER", b.url())
        .env("CERTEX_PKI", b.pki())
        .env("CERTEX_TEAM", team)
        .env("RUST_LOG", "error");
    c
}

/// The command's exit code and its stderr, which must be one line.
fn failure(out: &Output) -> (i32, String) {
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert_eq!(stderr.lines().count(), 1, "one line on stderr: {stderr}");
    (out.status.code().unwrap(), stderr)
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_class_of_failure_has_its_exit_code() {
    let b = TestBroker::start().await;
    let c = b.client("CN-CNCERT").await;
    let env = c
        .seal(&body(
            "CN-CNCERT",
            pb::Tlp::Green,
            community(),
            incident("x"),
        ))
        .unwrap();
    c.publish(env).await.unwrap();
    let other = tempfile::tempdir().unwrap();
    make_pki(other.path());

    // 0: fine.
    let out = run(certex(&b, "BR-CERTBR").args(["get", "1"]));
    assert_eq!(out.status.code(), Some(0));

    // The codes are documented in --help.
    let help =
        String::from_utf8(run(Command::new(env!("CARGO_BIN_EXE_certex")).arg("--help")).stdout)
            .unwrap();
    for line in [
        "Exit codes:",
        "2  usage",
        "3  connection",
        "4  refused",
        "5  verification",
    ] {
        assert!(help.contains(line), "--help lacks {line:?}: {help}");
    }

    // 2: usage, from clap and from certex (a file named that is not there).
    let out = run(certex(&b, "BR-CERTBR").args(["subscribe", "--no-such-flag"]));
    assert_eq!(out.status.code(), Some(2));
    let missing = b.tmp.path().join("no-such-directory.toml");
    let out = run(certex(&b, "BR-CERTBR")
        .args(["get", "1", "--directory"])
        .arg(&missing));
    let (code, msg) = failure(&out);
    assert_eq!(code, 2, "{msg}");
    assert!(
        msg.contains("--directory") && msg.contains("does not exist"),
        "{msg}"
    );
    assert!(out.stdout.is_empty());

    // 3: nothing listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = format!("https://localhost:{port}");
    let out = run(certex(&b, "BR-CERTBR").args(["get", "1", "--broker", &down]));
    let (code, msg) = failure(&out);
    assert_eq!(code, 3, "{msg}");
    assert_eq!(
        msg,
        format!("certex: cannot reach the broker at {down}: connection refused")
    );

    // 3: a plain http:// URL.
    let plain = b.url().replace("https://", "http://");
    let out = run(certex(&b, "BR-CERTBR").args(["get", "1", "--broker", &plain]));
    let (code, msg) = failure(&out);
    assert_eq!(code, 3, "{msg}");
    assert!(
        msg.contains("must start with https://") && msg.contains("mutual TLS"),
        "{msg}"
    );

    // 3: a CA that did not sign the broker's certificate.
    let wrong_ca = other.path().join("broker/ca.pem");
    let out = run(certex(&b, "BR-CERTBR")
        .args(["get", "1", "--ca"])
        .arg(&wrong_ca));
    let (code, msg) = failure(&out);
    assert_eq!(code, 3, "{msg}");
    assert!(
        msg.contains(&format!(
            "the broker's certificate is not signed by the CA in {} (wrong --ca?)",
            wrong_ca.display()
        )),
        "{msg}"
    );

    // 3: a team certificate the broker refuses (issued by another PKI's CA).
    let stranger = other.path().join("teams/BR-CERTBR");
    let out = run(certex(&b, "BR-CERTBR")
        .args(["get", "1", "--cert"])
        .arg(stranger.join("cert.pem"))
        .arg("--key")
        .arg(stranger.join("key.pem")));
    let (code, msg) = failure(&out);
    assert_eq!(code, 3, "{msg}");
    assert!(msg.contains("refused this team's certificate"), "{msg}");

    // 4: the broker refuses the call with a status.
    let out = run(certex(&b, "BR-CERTBR").args(["get", "999"]));
    let (code, msg) = failure(&out);
    assert_eq!(code, 4, "{msg}");
    assert!(
        msg.contains("broker refused") && msg.contains("NotFound"),
        "{msg}"
    );

    // 5: a directory that lists other keys (another PKI's): the record
    // prints, marked unverified, and the command fails.
    let wrong_dir = other.path().join("directory.toml");
    for args in [&["get", "1"][..], &["subscribe", "--from", "0"][..]] {
        let out = run(certex(&b, "BR-CERTBR")
            .args(args)
            .arg("--directory")
            .arg(&wrong_dir));
        let (code, msg) = failure(&out);
        assert_eq!(code, 5, "{args:?}: {msg}");
        assert!(msg.contains("did NOT verify"), "{msg}");
        let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(printed["verified"], false, "{args:?}");
        assert!(printed["verify_error"].is_string(), "{args:?}");
    }
}
