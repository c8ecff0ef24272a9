//! The one test harness: a real broker on 127.0.0.1:0 with a freshly
//! generated development PKI, real mTLS and a temporary sled database, and
//! real gRPC clients per team; and ([`witness`]) a real `certex witness
//! serve` process with a plain HTTP client.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use certex::broker::config::{BrokerConfig, Limits};
use certex::broker::server::Broker;
use certex::client::connection::{Client, ClientFiles};
use certex::client::draft::BodyJson;
use certex::proto::{self as pb, body::Content};
use certex::rules::time::to_timestamp;
use tempfile::TempDir;
use time::OffsetDateTime;
use tokio::sync::oneshot;

pub mod federation;
pub mod witness;

#[allow(unused_imports)]
pub use certex::cli::pki::SAMPLE_TEAMS as TEAMS;

/// Creates a development PKI with [`TEAMS`] and groups BRICS and SCO.
pub fn make_pki(dir: &Path) {
    certex::cli::pki::init_sample(dir).unwrap();
}

pub struct TestBroker {
    pub tmp: TempDir,
    pub addr: std::net::SocketAddr,
    pub broker: Broker,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestBroker {
    pub async fn start() -> Self {
        Self::start_with(Limits::default()).await
    }

    pub async fn start_with(limits: Limits) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        make_pki(&tmp.path().join("pki"));
        Self::start_in(tmp, limits).await
    }

    /// Starts a broker over an existing `tmp/pki` and `tmp/data`.
    pub async fn start_in(tmp: TempDir, limits: Limits) -> Self {
        let mut config = BrokerConfig::from_pki(
            &tmp.path().join("pki"),
            &tmp.path().join("data"),
            "127.0.0.1:0".parse().unwrap(),
        );
        config.limits = limits;
        // After a restart in the same process, the previous log writer may
        // still be releasing the database lock for a moment.
        let mut attempts = 0;
        let broker = loop {
            match Broker::open(config.clone()) {
                Ok(b) => break b,
                Err(e) if attempts < 100 => {
                    attempts += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("broker did not start: {e}"),
            }
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let serving = broker.clone();
        let task = tokio::spawn(async move {
            serving
                .serve(listener, async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        TestBroker {
            tmp,
            addr,
            broker,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn pki(&self) -> PathBuf {
        self.tmp.path().join("pki")
    }

    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    pub async fn client(&self, team: &str) -> Client {
        Client::connect(&self.url(), &ClientFiles::from_pki(&self.pki(), team), team)
            .await
            .unwrap()
    }

    /// Stops the broker gracefully and returns its directory for a restart.
    pub async fn stop(mut self) -> TempDir {
        let tmp = std::mem::replace(&mut self.tmp, tempfile::tempdir().unwrap());
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
        }
        tmp
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A body with the given content, sent by `sender`, created now.
pub fn body(sender: &str, tlp: pb::Tlp, audience: pb::Audience, content: Content) -> pb::Body {
    pb::Body {
        id: uuid::Uuid::new_v4().to_string(),
        sender: sender.to_owned(),
        created_at: Some(to_timestamp(OffsetDateTime::now_utc())),
        tlp: tlp as i32,
        audience: Some(audience),
        exercise: String::new(),
        references: vec![],
        content: Some(content),
    }
}

pub fn teams(list: &[&str]) -> pb::Audience {
    pb::Audience {
        kind: Some(pb::audience::Kind::Teams(pb::TeamList {
            teams: list.iter().map(|s| s.to_string()).collect(),
        })),
    }
}

pub fn community() -> pb::Audience {
    pb::Audience {
        kind: Some(pb::audience::Kind::Community(true)),
    }
}

pub fn group(name: &str) -> pb::Audience {
    pb::Audience {
        kind: Some(pb::audience::Kind::Group(name.to_owned())),
    }
}

pub fn incident(title: &str) -> Content {
    Content::Incident(pb::IncidentReport {
        title: title.to_owned(),
        description: "Spear-phishing led to domain controller compromise".into(),
        category: pb::Category::Intrusions as i32,
        severity: pb::Severity::High as i32,
        sectors: vec!["energy".into()],
        detected_at: None,
        observables: vec![pb::Observable {
            r#type: pb::ObservableType::Ipv4 as i32,
            value: "203.0.113.7".into(),
        }],
    })
}

pub fn warning(title: &str, severity: pb::Severity) -> Content {
    Content::Warning(pb::Warning {
        title: title.to_owned(),
        summary: "Active exploitation observed".into(),
        severity: severity as i32,
        expires_at: None,
        cves: vec!["CVE-2024-3094".into()],
        observables: vec![],
        recommended_actions: vec!["patch".into()],
    })
}

/// Parses a §11 draft.
pub fn draft(json: &str) -> BodyJson {
    serde_json::from_str(json).unwrap()
}

pub fn get_seq(seq: u64) -> pb::GetRequest {
    pb::GetRequest {
        selector: Some(pb::get_request::Selector::Seq(seq)),
        sender: String::new(),
        exercise: None,
    }
}

pub fn get_id(id: &str) -> pb::GetRequest {
    pb::GetRequest {
        selector: Some(pb::get_request::Selector::Id(id.to_owned())),
        sender: String::new(),
        exercise: None,
    }
}

/// The gRPC status code of a failed client call.
pub fn code<T: std::fmt::Debug>(
    r: Result<T, certex::client::connection::ClientError>,
) -> (tonic::Code, String) {
    match r {
        Err(certex::client::connection::ClientError::Status(s)) => {
            (s.code(), s.message().to_owned())
        }
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

/// `line` without ANSI colour codes.
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A broker child process, killed when dropped.
/// The lines of a child's captured log that contain every one of `words`.
pub fn lines_with(log: &std::sync::Mutex<Vec<String>>, words: &[&str]) -> Vec<String> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|l| words.iter().all(|w| l.contains(w)))
        .cloned()
        .collect()
}

pub struct BrokerProcess {
    pub child: Child,
    pub url: String,
    /// The broker's log lines after its listening line (ANSI codes removed).
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// The metrics endpoint's address, when started with `--metrics-listen`.
    pub metrics: Option<String>,
}

impl BrokerProcess {
    pub fn start(pki: &Path, data: &Path) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_certex"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--pki"])
            .arg(pki)
            .arg("--data")
            .arg(data);
        Self::spawn(cmd)
    }

    /// Starts `certex serve --config FILE` over the development PKI `pki`
    /// and the database `data`, with `limits`; the file is written beside
    /// the database (`DATA.toml`).
    pub fn start_with(pki: &Path, data: &Path, limits: &Limits) -> Self {
        Self::spawn(Self::configured(pki, data, limits))
    }

    /// [`BrokerProcess::start_with`], logging at INFO into [`BrokerProcess::log`].
    pub fn start_logging(pki: &Path, data: &Path, limits: &Limits) -> Self {
        let mut cmd = Self::configured(pki, data, limits);
        cmd.env("RUST_LOG", "info");
        Self::spawn(cmd)
    }

    /// `certex serve --config FILE`, the file written beside `data`.
    fn configured(pki: &Path, data: &Path, limits: &Limits) -> Command {
        let mut config = BrokerConfig::from_pki(pki, data, "127.0.0.1:0".parse().unwrap());
        config.limits = limits.clone();
        let file = data.with_extension("toml");
        std::fs::write(&file, toml::to_string(&config).unwrap()).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_certex"));
        cmd.args(["serve", "--config"]).arg(&file);
        cmd
    }

    /// The log lines so far that contain every one of `words`.
    pub fn log_lines(&self, words: &[&str]) -> Vec<String> {
        lines_with(&self.log, words)
    }

    /// Spawns the broker and waits for its listening line. With
    /// `SHOW_BROKER` set in the environment, its log (at INFO) is copied to
    /// the test's stderr.
    pub fn spawn(mut cmd: Command) -> Self {
        let show = std::env::var_os("SHOW_BROKER").is_some();
        let level = cmd
            .get_envs()
            .find(|(k, _)| *k == "RUST_LOG")
            .and_then(|(_, v)| v.map(|v| v.to_owned()));
        let level = level.unwrap_or_else(|| (if show { "info" } else { "warn" }).into());
        let mut child = cmd
            .env("RUST_LOG", level)
            // The listening line below is read as text.
            .env_remove("CERTEX_LOG_FORMAT")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut metrics = None;
        let addr = loop {
            let line = lines
                .next()
                .expect("broker exited before listening")
                .unwrap();
            if let Some(addr) = line.strip_prefix("certex broker listening on ") {
                break addr.to_owned();
            }
            if let Some(addr) = line.strip_prefix("certex metrics listening on ") {
                metrics = Some(addr.to_owned());
            }
        };
        // Keep draining stderr so the child never blocks on a full pipe.
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if show {
                    eprintln!("broker: {line}");
                }
                kept.lock().unwrap().push(strip_ansi(&line));
            }
        });
        let port = addr.rsplit(':').next().unwrap().to_owned();
        BrokerProcess {
            child,
            url: format!("https://localhost:{port}"),
            log,
            metrics,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The broker's resident set size in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// Sends SIGHUP (directory reload).
    pub fn hangup(&self) {
        let ok = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    pub fn kill(&mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every record `c` may read from the start of the log, without following.
pub async fn catch_up(c: &Client) -> Vec<pb::Record> {
    let mut stream = c
        .exchange()
        .subscribe(pb::SubscribeRequest {
            start: Some(pb::subscribe_request::Start::AfterSeq(0)),
            filter: None,
            follow: false,
        })
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(r) = stream.message().await.unwrap() {
        out.push(r);
    }
    out
}
