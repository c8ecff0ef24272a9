//! `deploy/`: the sample production configuration is one the broker really
//! runs with (paths moved into a temporary directory), the broker tells
//! systemd READY=1 once it serves and STOPPING=1 when it drains, and the
//! unit file runs that configuration the way the README says.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

use certex::broker::config::BrokerConfig;
use common::*;

fn deploy(file: &str) -> String {
    std::fs::read_to_string(format!("{}/deploy/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// deploy/certex.toml with /etc/certex → `pki`, /var/lib/certex → `data`,
/// and an ephemeral port.
fn sample_config(pki: &std::path::Path, data: &std::path::Path) -> String {
    let text = deploy("certex.toml");
    assert!(text.contains("listen = \"0.0.0.0:7443\""));
    text.replace("0.0.0.0:7443", "127.0.0.1:0")
        .replace("/etc/certex", pki.to_str().unwrap())
        .replace("/var/lib/certex", data.to_str().unwrap())
}

#[test]
fn the_sample_config_loads_with_every_commented_key_known() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("certex.toml");
    std::fs::write(
        &file,
        sample_config(&tmp.path().join("pki"), &tmp.path().join("data")),
    )
    .unwrap();
    let c = BrokerConfig::from_file(&file).unwrap();
    assert_eq!(c.data, tmp.path().join("data"));
    assert_eq!(c.directory, tmp.path().join("pki/directory.toml"));
    assert!(c.checkpoint_key.is_some());
    assert_eq!(c.limits.max_envelope_bytes, 1 << 20);

    // The commented optional keys are real keys: uncommented, it still
    // loads (metrics_listen only once this broker has metrics).
    let has_metrics = {
        use clap::CommandFactory;
        certex::cli::Cli::command()
            .find_subcommand("serve")
            .unwrap()
            .get_arguments()
            .any(|a| a.get_id() == "metrics_listen")
    };
    let uncommented: String = sample_config(&tmp.path().join("pki"), &tmp.path().join("data"))
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest)
                if ["taxii_listen", "witness_push"]
                    .iter()
                    .any(|k| rest.starts_with(k))
                    || (has_metrics && rest.starts_with("metrics_listen")) =>
            {
                rest.to_owned()
            }
            _ => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&file, uncommented).unwrap();
    let c = BrokerConfig::from_file(&file).unwrap();
    assert!(c.taxii_listen.is_some());
    assert_eq!(c.witness_push.len(), 1);
}

#[test]
fn the_broker_runs_the_sample_config_and_notifies_systemd() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    make_pki(&pki);
    let file = tmp.path().join("certex.toml");
    std::fs::write(&file, sample_config(&pki, &tmp.path().join("data"))).unwrap();

    let socket_path = tmp.path().join("notify");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_certex"));
    cmd.args(["serve", "--config"])
        .arg(&file)
        .env_remove("CERTEX_PKI")
        .env("NOTIFY_SOCKET", &socket_path);
    let mut broker = BrokerProcess::spawn(cmd);

    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).expect("READY=1 within 20 s");
    assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), "READY=1\n");

    // Ready means serving: a client's call succeeds at once.
    let out = Command::new(env!("CARGO_BIN_EXE_certex"))
        .args([
            "log",
            "head",
            "--as",
            "US-CISA",
            "--broker",
            &broker.url,
            "--pki",
        ])
        .arg(&pki)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let ok = Command::new("kill")
        .args(["-TERM", &broker.pid().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let n = socket.recv(&mut buf).expect("STOPPING=1 on SIGTERM");
    assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), "STOPPING=1\n");
    let status = broker.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn the_unit_runs_the_config_as_a_notify_service() {
    let unit = deploy("certex.service");
    for line in [
        "Type=notify",
        "ExecStart=/usr/local/bin/certex serve --config /etc/certex/certex.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "StateDirectory=certex",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "MemoryDenyWriteExecute=yes",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "certex.service lacks {line}"
        );
    }
    let stop: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .and_then(|v| v.trim_end_matches('s').parse().ok())
        .expect("TimeoutStopSec");
    assert!(stop > 5, "the drain takes up to 5 s");
    assert!(deploy("certex.toml").contains("data = \"/var/lib/certex\""));
    assert!(deploy("certex.socket").contains("ListenStream="));
}
