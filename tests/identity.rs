//! Who may connect: per-country anchors, certificate-only team identity, and
//! the directory file's validation and reload.

mod common;

use certex::client::connection::{ClientFiles, connect_channel};
use certex::proto::{self as pb, directory_client::DirectoryClient};
use certex::rules::directory::Directory;
use common::*;
use tonic::Code;

async fn whoami_with(b: &TestBroker, cert: &[u8], key: &[u8]) -> Result<String, String> {
    let ca = std::fs::read(b.pki().join("broker/ca.pem")).unwrap();
    let channel = connect_channel(&b.url(), &ca, cert, key)
        .await
        .map_err(|e| e.to_string())?;
    DirectoryClient::new(channel)
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .map(|r| r.into_inner().id)
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn team_comes_from_the_certificate() {
    let b = TestBroker::start().await;
    let files = ClientFiles::from_pki(&b.pki(), "BR-CERTBR");
    let cert = std::fs::read(&files.cert).unwrap();
    let key = std::fs::read(&files.key).unwrap();
    assert_eq!(whoami_with(&b, &cert, &key).await.unwrap(), "BR-CERTBR");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_from_another_countrys_ca_is_refused() {
    let b = TestBroker::start().await;
    let pki = b.pki();
    let ru_ca = std::fs::read_to_string(pki.join("ca/RU.pem")).unwrap();
    let ru_key = std::fs::read_to_string(pki.join("ca/RU.key")).unwrap();
    // The RU CA issues a certificate naming a CN team.
    let (cert, key) =
        certex::cli::pki::issue_team_certificate(&ru_ca, &ru_key, "CN-CNCERT").unwrap();
    let err = whoami_with(&b, cert.as_bytes(), key.as_bytes())
        .await
        .unwrap_err();
    assert!(!err.contains("CN-CNCERT\""), "{err}");
    // The same CA for its own team works.
    let (cert, key) =
        certex::cli::pki::issue_team_certificate(&ru_ca, &ru_key, "RU-GOVCERT").unwrap();
    assert_eq!(
        whoami_with(&b, cert.as_bytes(), key.as_bytes())
            .await
            .unwrap(),
        "RU-GOVCERT"
    );
    // The CN CA issuing for a team missing from the directory: refused.
    let cn_ca = std::fs::read_to_string(pki.join("ca/CN.pem")).unwrap();
    let cn_key = std::fs::read_to_string(pki.join("ca/CN.key")).unwrap();
    let (cert, key) =
        certex::cli::pki::issue_team_certificate(&cn_ca, &cn_key, "CN-IMPOSTOR").unwrap();
    assert!(
        whoami_with(&b, cert.as_bytes(), key.as_bytes())
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_without_client_certificate_is_refused() {
    let b = TestBroker::start().await;
    let ca = std::fs::read(b.pki().join("broker/ca.pem")).unwrap();
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca))
        .domain_name("localhost");
    let outcome = async {
        let channel = tonic::transport::Endpoint::from_shared(b.url())
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        DirectoryClient::new(channel)
            .who_am_i(pb::WhoAmIRequest {})
            .await
            .map(|r| r.into_inner().id)
            .map_err(|s| format!("{:?}", s.code()))
    }
    .await;
    assert!(outcome.is_err(), "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn team_removed_from_directory_is_unauthenticated_after_reload() {
    let b = TestBroker::start().await;
    let de = b.client("DE-CERTBUND").await;
    de.directory_api()
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap();
    let path = b.pki().join("directory.toml");
    let mut file: certex::rules::directory::DirectoryFile =
        toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    file.teams.retain(|t| t.id != "DE-CERTBUND");
    std::fs::write(&path, toml::to_string(&file).unwrap()).unwrap();
    b.broker.reload_directory().unwrap();
    // The open connection's calls now fail.
    let err = de
        .directory_api()
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(
        err.message()
            .contains("DE-CERTBUND is not in the broker's directory")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_directory_is_refused_and_the_old_one_stays() {
    let b = TestBroker::start().await;
    let path = b.pki().join("directory.toml");
    let good = std::fs::read_to_string(&path).unwrap();
    let broken = [
        ("[[team]\nid = ", "is not valid"),
        (
            "[[team]]\nid = \"cn-lower\"\nname = \"x\"\n",
            "is not of the form CC-NAME",
        ),
        (
            "[[team]]\nid = \"FR-ANSSI\"\nname = \"ANSSI\"\n",
            "no anchor for country FR",
        ),
        ("G7 = [\"FR-ANSSI\"]\n", "member FR-ANSSI is not a team"),
    ];
    for (text, expected) in broken {
        std::fs::write(&path, format!("{good}\n{text}")).unwrap();
        let err = Directory::load(&path).unwrap_err().to_string();
        assert!(err.contains(expected), "{expected:?} not in {err:?}");
        let err = b.broker.reload_directory().unwrap_err();
        assert!(err.contains(expected), "{err}");
    }
    // The old directory is still in force (the client reads the file too).
    std::fs::write(&path, &good).unwrap();
    let groups = b
        .client("CN-CNCERT")
        .await
        .directory_api()
        .list_groups(pb::ListGroupsRequest {})
        .await
        .unwrap()
        .into_inner()
        .groups;
    assert_eq!(groups.len(), 2);
    assert_eq!(b.broker.directory().teams().count(), TEAMS.len());
}

#[test]
fn key_files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    make_pki(&tmp.path().join("pki"));
    let pki = tmp.path().join("pki");
    let mut keys = vec![
        pki.join("broker/key.pem"),
        pki.join("broker/signing.key"),
        pki.join("ca/CN.key"),
    ];
    for t in TEAMS {
        keys.push(pki.join(format!("teams/{t}/key.pem")));
        keys.push(pki.join(format!("teams/{t}/signing.key")));
    }
    for k in keys {
        let mode = std::fs::metadata(&k).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", k.display());
    }
    // A second init into the same directory is refused.
    let teams: Vec<String> = vec!["CN-CNCERT".into()];
    assert!(
        certex::cli::pki::init(&pki, &teams, &[])
            .unwrap_err()
            .contains("already holds a PKI")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_is_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let b = TestBroker::start().await;
    let data = b.tmp.path().join("data");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("db")), 0o600);
    assert_eq!(mode(&data.join("conf")), 0o600);
}
