//! A real `certex witness serve` process on 127.0.0.1:0, and a plain
//! HTTP/1.1 client (hyper-util's) to talk to it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A running witness.
pub struct WitnessProcess {
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The verifier key the witness printed.
    pub vkey: String,
    /// Its log lines (at INFO), ANSI codes removed.
    pub log: Arc<Mutex<Vec<String>>>,
}

/// The `certex witness serve` arguments for these files and log keys.
pub fn serve_args(state: &Path, key: &Path, name: &str, logs: &[String]) -> Vec<String> {
    serve_args_at("127.0.0.1:0", state, key, name, logs)
}

/// [`serve_args`] listening on `listen`.
pub fn serve_args_at(
    listen: &str,
    state: &Path,
    key: &Path,
    name: &str,
    logs: &[String],
) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "witness".into(),
        "serve".into(),
        "--listen".into(),
        listen.into(),
        "--state".into(),
        state.display().to_string(),
        "--key".into(),
        key.display().to_string(),
        "--name".into(),
        name.into(),
    ];
    for l in logs {
        args.push("--log".into());
        args.push(l.clone());
    }
    args
}

/// Runs `certex ARGS` to completion (for commands expected to exit).
pub fn certex(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_certex"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

impl WitnessProcess {
    /// Starts the witness and waits for its `listening on` line.
    pub fn start(state: &Path, key: &Path, name: &str, logs: &[String]) -> Self {
        Self::start_with(state, key, name, logs, &[])
    }

    /// [`WitnessProcess::start`] on a given address (a restart keeps its URL).
    pub fn start_at(listen: &str, state: &Path, key: &Path, name: &str, logs: &[String]) -> Self {
        Self::spawn(serve_args_at(listen, state, key, name, logs), &[])
    }

    /// [`WitnessProcess::start`] with more `serve` flags.
    pub fn start_with(
        state: &Path,
        key: &Path,
        name: &str,
        logs: &[String],
        more: &[&str],
    ) -> Self {
        Self::spawn(serve_args(state, key, name, logs), more)
    }

    fn spawn(args: Vec<String>, more: &[&str]) -> Self {
        let show = std::env::var_os("SHOW_WITNESS").is_some();
        let mut child = Command::new(env!("CARGO_BIN_EXE_certex"))
            .args(args)
            .args(more)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let kept = log.clone();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if show {
                    eprintln!("witness: {line}");
                }
                kept.lock().unwrap().push(super::strip_ansi(&line));
            }
        });
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let vkey = out
            .next()
            .expect("witness exited before printing its key")
            .unwrap();
        let listening = out
            .next()
            .expect("witness exited before listening")
            .unwrap();
        let addr = listening
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected line {listening:?}"))
            .to_owned();
        std::thread::spawn(move || for _ in out.map_while(Result::ok) {});
        WitnessProcess {
            child,
            url: format!("http://{addr}"),
            vkey,
            log,
        }
    }

    /// The log lines so far that contain every one of `words`.
    pub fn log_lines(&self, words: &[&str]) -> Vec<String> {
        super::lines_with(&self.log, words)
    }

    /// The log lines containing every one of `words`, waiting up to 5 s
    /// for the first (the log is read from a pipe, behind the answers).
    pub fn wait_log(&self, words: &[&str]) -> Vec<String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let lines = self.log_lines(words);
            if !lines.is_empty() || std::time::Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for WitnessProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An answer: status, content type, body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// A plain HTTP/1.1 client, as a log pushing checkpoints would use.
#[derive(Clone)]
pub struct Http(Client<HttpConnector, Full<Bytes>>);

impl Default for Http {
    fn default() -> Self {
        Http(Client::builder(TokioExecutor::new()).build_http())
    }
}

impl Http {
    pub async fn send(&self, method: &str, url: &str, body: Vec<u8>) -> Answer {
        let req = http::Request::builder()
            .method(method)
            .uri(url)
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let resp = self.0.request(req).await.unwrap();
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            content_type,
            body: String::from_utf8(body.to_vec()).unwrap(),
        }
    }

    /// `POST {url}/add-checkpoint`.
    pub async fn add_checkpoint(&self, url: &str, body: impl Into<Vec<u8>>) -> Answer {
        self.send("POST", &format!("{url}/add-checkpoint"), body.into())
            .await
    }
}
