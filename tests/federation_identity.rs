//! Who a federation broker lets in (SPEC §12): `pki init --brokers` writes
//! one broker identity per country; a broker serves only the teams homed on
//! it; a broker's certificate names it in `urn:certex:broker:<ID>`, chains
//! to its country's anchor and opens none of the team services. Brokers run
//! as child processes (`certex serve --pki D --broker CN`) over real mTLS.

mod common;

use std::path::Path;
use std::time::Duration;

use certex::client::connection::{Client, ClientFiles, connect_channel};
use certex::proto::{
    self as pb, directory_client::DirectoryClient, exchange_client::ExchangeClient,
};
use certex::rules::directory::{Directory, DirectoryFile};
use common::*;
use serde_json::Value;
use tokio::process::Command;
use tonic::Code;

const FED_TEAMS: &str = "CN-CNCERT,BR-CERTBR";

async fn certex(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_certex"))
        .args(args)
        .env("RUST_LOG", "error")
        .env_remove("CERTEX_PKI")
        .env_remove("CERTEX_BROKER")
        .env_remove("CERTEX_TEAM")
        .output()
        .await
        .unwrap()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `pki init --teams CN-CNCERT,BR-CERTBR --brokers CN,BR` into `dir`.
async fn federation_pki(dir: &Path) {
    let out = certex(&[
        "pki",
        "init",
        "--teams",
        FED_TEAMS,
        "--brokers",
        "CN,BR",
        "--dir",
        dir.to_str().unwrap(),
    ])
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
}

/// `certex serve --pki D --broker ID` on a free loopback port.
fn serve(pki: &Path, id: &str, data: &Path) -> BrokerProcess {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_certex"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--broker", id, "--pki"])
        .arg(pki)
        .arg("--data")
        .arg(data)
        .env_remove("CERTEX_PKI");
    BrokerProcess::spawn(cmd)
}

/// A raw channel to `url` trusting `ca`, presenting `cert`/`key`, and the
/// outcome of `Directory.WhoAmI` over it.
/// A TLS 1.3 server refuses a client certificate after the client thinks
/// the handshake is done: the client sees the refusal on its first call, as
/// the server's alert or as the connection closing, depending on timing;
/// never as an answer.
fn assert_handshake_refused(code: Code, msg: &str) {
    assert!(
        matches!(code, Code::Unknown | Code::Unavailable | Code::Cancelled)
            && (msg.contains("CertificateUnknown")
                || msg.contains("connection closed")
                || msg.contains("broken pipe")
                || msg.contains("transport error")
                || msg.contains("tls handshake eof")
                || msg.contains("Connection reset")),
        "{code:?}: {msg}"
    );
}

async fn who_am_i(url: &str, ca: &Path, cert: &[u8], key: &[u8]) -> Result<String, (Code, String)> {
    let ca = std::fs::read(ca).unwrap();
    let channel = connect_channel(url, &ca, cert, key)
        .await
        .map_err(|e| (Code::Unavailable, e.to_string()))?;
    DirectoryClient::new(channel)
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .map(|r| r.into_inner().id)
        .map_err(|s| (s.code(), format!("{} ({s:?})", s.message())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pki_init_brokers_refuses_a_mismatch_with_the_teams() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("a");
    let out = certex(&[
        "pki",
        "init",
        "--teams",
        FED_TEAMS,
        "--brokers",
        "CN,BR,RU",
        "--dir",
        d.to_str().unwrap(),
    ])
    .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("broker RU: no team of country RU"),
        "{}",
        stderr(&out)
    );
    assert!(!d.join("directory.toml").exists());

    let out = certex(&[
        "pki",
        "init",
        "--teams",
        FED_TEAMS,
        "--brokers",
        "CN",
        "--dir",
        d.to_str().unwrap(),
    ])
    .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("team BR-CERTBR: no broker for country BR"),
        "{}",
        stderr(&out)
    );

    let out = certex(&[
        "pki",
        "init",
        "--teams",
        FED_TEAMS,
        "--brokers",
        "CN,bra",
        "--dir",
        d.to_str().unwrap(),
    ])
    .await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("country code"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pki_init_brokers_writes_the_federation() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    federation_pki(&pki).await;
    let dir = Directory::load(&pki.join("directory.toml")).unwrap();
    assert!(dir.checkpoint_vkey().is_none());
    assert!(dir.witness_policy().is_none());
    assert_eq!(dir.home_of("CN-CNCERT"), Some("CN"));
    assert_eq!(dir.home_of("BR-CERTBR"), Some("BR"));
    for (i, id) in ["CN", "BR"].iter().enumerate() {
        let b = dir.broker(id).unwrap();
        assert_eq!(b.country, *id);
        assert_eq!(b.url, format!("https://localhost:{}", 7443 + i));
        let bdir = pki.join("brokers").join(id);
        let vkey = std::fs::read_to_string(bdir.join("checkpoint.vkey")).unwrap();
        assert_eq!(b.checkpoint_vkey.as_ref().unwrap().to_string(), vkey.trim());
        assert_eq!(
            b.checkpoint_vkey.as_ref().unwrap().name,
            format!("certex.localhost/{id}/v1")
        );
        let public = certex::client::audit::read_public_key(&bdir.join("signing.pub")).unwrap();
        assert_eq!(b.tree_head_key, Some(public));
        assert_eq!(
            std::fs::read(bdir.join("ca.pem")).unwrap(),
            std::fs::read(pki.join(format!("ca/{id}.pem"))).unwrap()
        );
        use std::os::unix::fs::PermissionsExt;
        for secret in ["key.pem", "signing.key", "checkpoint.key"] {
            let mode = std::fs::metadata(bdir.join(secret))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{id}/{secret}");
        }
        let pem = std::fs::read(bdir.join("cert.pem")).unwrap();
        let der: rustls_pki_types::CertificateDer<'static> =
            rustls_pki_types::pem::PemObject::from_pem_slice(&pem).unwrap();
        assert_eq!(
            certex::broker::transport::identity_of_certificate(&der).unwrap(),
            certex::broker::transport::Identity::Broker((*id).to_owned())
        );
    }
    // The single-broker files are still there.
    assert!(pki.join("broker/cert.pem").exists());
    // Clients of each team trust their home broker's CA.
    assert_eq!(
        ClientFiles::from_pki(&pki, "BR-CERTBR").ca,
        pki.join("brokers/BR/ca.pem")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_serves_its_home_teams_only_and_no_broker_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    federation_pki(&pki).await;
    let cn = serve(&pki, "CN", &tmp.path().join("cn"));
    let cn_ca = pki.join("brokers/CN/ca.pem");

    // A home team publishes and reads through its home broker, with the
    // CA and tree-head key the PKI layout gives it (brokers/CN/…).
    let draft_file = tmp.path().join("draft.json");
    std::fs::write(
        &draft_file,
        r#"{"tlp": "amber", "audience": {"teams": ["BR-CERTBR"]},
            "incident": {"title": "Grid intrusion", "category": "intrusions", "severity": "high"}}"#,
    )
    .unwrap();
    let conn = [
        "--broker",
        &cn.url,
        "--pki",
        pki.to_str().unwrap(),
        "--as",
        "CN-CNCERT",
    ];
    let out = certex(&[&["submit", draft_file.to_str().unwrap()][..], &conn[..]].concat()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let receipt: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(receipt["seq"], 1);
    let out = certex(&[&["get", "1"][..], &conn[..]].concat()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let rec: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rec["verified"], true);
    let out = certex(&[&["log", "head"][..], &conn[..]].concat()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let head: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (head["tree_size"].as_u64(), head["verified"].as_bool()),
        (Some(1), Some(true))
    );
    let c = Client::connect(
        &cn.url,
        &ClientFiles::from_pki(&pki, "CN-CNCERT"),
        "CN-CNCERT",
    )
    .await
    .unwrap();
    let out = c
        .submit(draft(
            r#"{"tlp": "green", "audience": "community",
                "warning": {"title": "Exploited", "summary": "patch", "severity": "high"}}"#,
        ))
        .await
        .unwrap();
    assert_eq!(out.seq, 2);
    assert_eq!(c.get(get_seq(2)).await.unwrap().seq, 2);

    // A team homed on BR is sent to its home broker.
    let br_team = ClientFiles::from_pki(&pki, "BR-CERTBR");
    let (code, msg) = who_am_i(
        &cn.url,
        &cn_ca,
        &std::fs::read(&br_team.cert).unwrap(),
        &std::fs::read(&br_team.key).unwrap(),
    )
    .await
    .unwrap_err();
    assert_eq!(code, Code::PermissionDenied, "{msg}");
    assert!(
        msg.contains("team BR-CERTBR is homed on broker BR (https://localhost:7444)")
            && msg.contains("connect to its home broker"),
        "{msg}"
    );

    // Broker BR's own certificate opens none of the team services.
    let br_cert = std::fs::read(pki.join("brokers/BR/cert.pem")).unwrap();
    let br_key = std::fs::read(pki.join("brokers/BR/key.pem")).unwrap();
    let channel = connect_channel(&cn.url, &std::fs::read(&cn_ca).unwrap(), &br_cert, &br_key)
        .await
        .unwrap();
    let err = ExchangeClient::new(channel.clone())
        .get(get_seq(1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message()
            .contains("broker identities may call only the Federation service"),
        "{err:?}"
    );
    let err = DirectoryClient::new(channel)
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // A certificate naming broker BR but issued by CN's CA: refused at the
    // handshake (BR's certificates chain to the BR anchor only).
    let (cert, key) = certex::cli::pki::issue_broker_certificate(
        &std::fs::read_to_string(pki.join("ca/CN.pem")).unwrap(),
        &std::fs::read_to_string(pki.join("ca/CN.key")).unwrap(),
        "BR",
    )
    .unwrap();
    let (code, msg) = who_am_i(&cn.url, &cn_ca, cert.as_bytes(), key.as_bytes())
        .await
        .unwrap_err();
    assert_handshake_refused(code, &msg);
    // A broker the directory does not list: refused at the handshake too.
    let (cert, key) = certex::cli::pki::issue_broker_certificate(
        &std::fs::read_to_string(pki.join("ca/CN.pem")).unwrap(),
        &std::fs::read_to_string(pki.join("ca/CN.key")).unwrap(),
        "CN-2",
    )
    .unwrap();
    let (code, msg) = who_am_i(&cn.url, &cn_ca, cert.as_bytes(), key.as_bytes())
        .await
        .unwrap_err();
    assert_handshake_refused(code, &msg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_rehomes_teams_and_withdraws_removed_brokers() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    federation_pki(&pki).await;
    let cn = serve(&pki, "CN", &tmp.path().join("cn"));
    let cn_ca = std::fs::read(pki.join("brokers/CN/ca.pem")).unwrap();
    let br_cert = std::fs::read(pki.join("brokers/BR/cert.pem")).unwrap();
    let br_key = std::fs::read(pki.join("brokers/BR/key.pem")).unwrap();
    let channel = connect_channel(&cn.url, &cn_ca, &br_cert, &br_key)
        .await
        .unwrap();
    let err = ExchangeClient::new(channel.clone())
        .get(get_seq(1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // Broker BR leaves the federation; BR-CERTBR is homed on CN.
    let path = pki.join("directory.toml");
    let mut file: DirectoryFile = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    file.brokers.retain(|b| b.id != "BR");
    for t in &mut file.teams {
        t.home = Some("CN".into());
    }
    std::fs::write(&path, toml::to_string_pretty(&file).unwrap()).unwrap();
    cn.hangup();

    let br_team = ClientFiles::from_pki(&pki, "BR-CERTBR");
    assert_eq!(br_team.ca, pki.join("brokers/CN/ca.pem"));
    let mut answer = Err((Code::Unknown, String::new()));
    for _ in 0..50 {
        answer = who_am_i(
            &cn.url,
            &br_team.ca,
            &std::fs::read(&br_team.cert).unwrap(),
            &std::fs::read(&br_team.key).unwrap(),
        )
        .await;
        if answer.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answer.unwrap(), "BR-CERTBR");

    // The open connection of broker BR was withdrawn and closed; a new
    // handshake with its certificate is refused.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let err = ExchangeClient::new(channel)
        .get(get_seq(1))
        .await
        .unwrap_err();
    assert_handshake_refused(err.code(), &format!("{err:?}"));
    let (code, msg) = who_am_i(&cn.url, &pki.join("brokers/CN/ca.pem"), &br_cert, &br_key)
        .await
        .unwrap_err();
    assert_handshake_refused(code, &msg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_a_broker_id_the_directory_does_not_list() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    federation_pki(&pki).await;
    let data = tmp.path().join("data");
    // No identity for it in the PKI.
    let out = certex(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--broker",
        "RU",
        "--pki",
        pki.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ])
    .await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--broker RU"), "{}", stderr(&out));
    // A configuration whose broker id is not a [[broker]].
    let config = certex::broker::config::BrokerConfig::from_pki_broker(
        &pki,
        "CN",
        &data,
        "127.0.0.1:0".parse().unwrap(),
    );
    let file = tmp.path().join("cn.toml");
    std::fs::write(&file, toml::to_string(&config).unwrap()).unwrap();
    let out = certex(&[
        "serve",
        "--config",
        file.to_str().unwrap(),
        "--broker",
        "ZZ",
    ])
    .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("this broker's id is ZZ, but the directory's brokers are BR, CN"),
        "{}",
        stderr(&out)
    );
    // A broker id on a single-broker PKI.
    let single = tmp.path().join("single");
    certex::cli::pki::init(&single, &["CN-CNCERT".to_owned()], &[]).unwrap();
    let mut config = certex::broker::config::BrokerConfig::from_pki(
        &single,
        &data,
        "127.0.0.1:0".parse().unwrap(),
    );
    config.broker = Some("CN".into());
    std::fs::write(&file, toml::to_string(&config).unwrap()).unwrap();
    let out = certex(&["serve", "--config", file.to_str().unwrap()]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("the directory lists no [[broker]]"),
        "{}",
        stderr(&out)
    );
}
