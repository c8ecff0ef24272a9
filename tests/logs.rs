//! What an operator reads in the broker's logs (issue 17, SPEC §15):
//! `--log-format json` writes one JSON object per stderr line; a refused
//! call is one INFO line naming team, call, code and field, never a value;
//! a directory reload lists what changed; start-up says "listening" only once
//! it can serve; a clean restart (and a restart after a crash) logs no
//! warning; text logs written to a file carry no colour codes.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use certex::client::connection::{Client, ClientFiles};
use certex::proto as pb;
use common::*;
use serde_json::Value;
use tonic::Code;

/// A value no log line may carry.
const SECRET: &str = "XX-SECRETVALUE";

/// A broker child process at INFO, its every stderr line kept.
struct Logged {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Logged {
    /// `certex [--log-format json] serve --pki PKI --data DATA`, waiting for
    /// its listening line; returns the process and that line.
    fn start(pki: &Path, data: &Path, json: bool) -> (Self, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_certex"));
        if json {
            cmd.args(["--log-format", "json"]);
        }
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--pki"])
            .arg(pki)
            .arg("--data")
            .arg(data)
            .env("RUST_LOG", "info")
            .env_remove("NO_COLOR")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let kept = lines.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                kept.lock().unwrap().push(line);
            }
        });
        let logged = Logged { child, lines };
        let marker = if json {
            "\"broker listening\""
        } else {
            "certex broker listening on "
        };
        let line = logged.wait_for(&[marker], Duration::from_secs(30));
        (logged, line)
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits for the first line holding every word, and returns it.
    fn wait_for(&self, words: &[&str], within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self
                .lines()
                .into_iter()
                .find(|l| words.iter().all(|w| l.contains(w)))
            {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "no line with {words:?}; log: {:#?}",
                self.lines()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    /// SIGTERM, then waits for the exit (the drain ends within seconds).
    fn stop(mut self) -> Vec<String> {
        self.signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "broker did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(100));
        self.lines()
    }

    fn kill(mut self) -> Vec<String> {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.lines()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn json(line: &str) -> Value {
    let v: Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line:?}"));
    for key in ["timestamp", "level", "message", "target"] {
        assert!(v.get(key).is_some(), "{key} missing: {line}");
    }
    v
}

async fn client(url: &str, pki: &Path, team: &str) -> Client {
    Client::connect(url, &ClientFiles::from_pki(pki, team), team)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_one_line_per_refusal_and_an_audit_line_per_directory_change() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    make_pki(&pki);
    let (broker, listening) = Logged::start(&pki, &tmp.path().join("data"), true);
    let listening = json(&listening);
    assert_eq!(listening["message"], "broker listening");
    let addr = listening["addr"].as_str().unwrap().to_owned();
    let port = addr.rsplit(':').next().unwrap();
    let url = format!("https://localhost:{port}");

    // One refused publish: a TLP:RED report to a team named by the secret.
    let cn = client(&url, &pki, "CN-CNCERT").await;
    let b = body(
        "CN-CNCERT",
        pb::Tlp::Red,
        teams(&[SECRET]),
        incident(&format!("{SECRET} in the title")),
    );
    let (c, _) = code(cn.publish(cn.seal(&b).unwrap()).await);
    assert_eq!(c, Code::InvalidArgument);
    broker.wait_for(&["call refused"], Duration::from_secs(10));
    // A call that succeeds logs nothing at INFO.
    let ok = body(
        "CN-CNCERT",
        pb::Tlp::Amber,
        teams(&["BR-CERTBR"]),
        incident("ordinary"),
    );
    cn.publish(cn.seal(&ok).unwrap()).await.unwrap();

    // A directory change, applied on SIGHUP, is audited line by line.
    let dir = pki.join("directory.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_certex"))
        .args(["directory", "add-group"])
        .arg(&dir)
        .args(["--name", "PAIR", "--members", "CN-CNCERT,BR-CERTBR"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    broker.signal("-HUP");
    broker.wait_for(&["directory reloaded"], Duration::from_secs(20));

    let lines = broker.stop();
    let events: Vec<Value> = lines.iter().map(|l| json(l)).collect();
    let refused: Vec<&Value> = events
        .iter()
        .filter(|e| e["message"] == "call refused")
        .collect();
    assert_eq!(refused.len(), 1, "exactly one refusal line: {refused:#?}");
    let r = refused[0];
    assert_eq!(r["level"], "INFO");
    assert_eq!(r["team"], "CN-CNCERT");
    assert_eq!(r["rpc"], "Publish");
    assert_eq!(r["field"], "audience.teams[0]");
    assert!(
        r["code"].as_str().unwrap().contains("InvalidArgument"),
        "{r}"
    );
    let leaked: Vec<&String> = lines.iter().filter(|l| l.contains(SECRET)).collect();
    assert!(leaked.is_empty(), "a value reached the log: {leaked:?}");
    assert!(
        !lines.iter().any(|l| l.contains("ordinary")),
        "a title reached the log"
    );

    let audit: Vec<&Value> = events
        .iter()
        .filter(|e| e["target"] == "certex::audit")
        .collect();
    assert_eq!(audit.len(), 1, "{audit:#?}");
    assert_eq!(audit[0]["change"], "group PAIR added: BR-CERTBR,CN-CNCERT");
    let reloaded = events
        .iter()
        .find(|e| e["message"] == "directory reloaded")
        .unwrap();
    assert_eq!(reloaded["changes"], 1);
    assert!(
        events
            .iter()
            .all(|e| e["level"] != "WARN" && e["level"] != "ERROR"),
        "{events:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_log_no_warning_and_text_logs_carry_no_colour_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    let data = tmp.path().join("data");
    make_pki(&pki);
    let publish = |url: String, n: usize| {
        let pki = pki.clone();
        async move {
            let cn = client(&url, &pki, "CN-CNCERT").await;
            for i in 0..n {
                let b = body(
                    "CN-CNCERT",
                    pb::Tlp::Green,
                    community(),
                    incident(&format!("r{i}")),
                );
                cn.publish(cn.seal(&b).unwrap()).await.unwrap();
            }
        }
    };
    let url_of = |line: &str| {
        let addr = line.rsplit(' ').next().unwrap();
        format!("https://localhost:{}", addr.rsplit(':').next().unwrap())
    };
    let mut all = Vec::new();
    // Clean stops: SIGTERM after publishing, three times over.
    for _ in 0..3 {
        let (broker, line) = Logged::start(&pki, &data, false);
        publish(url_of(&line), 5).await;
        all.push(broker.stop());
    }
    // A crash (SIGKILL) after publishing, then a start over what it left.
    let (broker, line) = Logged::start(&pki, &data, false);
    publish(url_of(&line), 5).await;
    all.push(broker.kill());
    let (broker, _) = Logged::start(&pki, &data, false);
    all.push(broker.stop());

    for (run, lines) in all.iter().enumerate() {
        for l in lines {
            assert!(!l.contains('\u{1b}'), "run {run}: colour code in {l:?}");
            assert!(
                !l.contains(" WARN ") && !l.contains(" ERROR "),
                "run {run}: {l}"
            );
        }
        if run < 4 {
            assert!(
                !lines.iter().any(|l| l.contains("Merkle")),
                "run {run} followed a clean stop: {lines:#?}"
            );
        }
    }
    // After the crash the nodes since their last sync are completed, at INFO.
    assert!(
        all[4].iter().any(|l| l.contains(" INFO ")
            && l.contains("completing the Merkle nodes written since their last sync")),
        "{:#?}",
        all[4]
    );
}

#[test]
fn a_broker_that_cannot_load_its_key_never_says_listening() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    make_pki(&pki);
    std::fs::write(pki.join("broker/key.pem"), "not a key\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_certex"))
        .args(["serve", "--listen", "127.0.0.1:0", "--pki"])
        .arg(&pki)
        .arg("--data")
        .arg(tmp.path().join("data"))
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(!err.contains("listening"), "{err}");
    assert!(err.contains("key.pem"), "names the file: {err}");
}
