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

/// Rewrites the broker's directory through its typed form; returns the reload's result.
fn edit_directory(
    b: &TestBroker,
    edit: impl FnOnce(&mut certex::rules::directory::DirectoryFile),
) -> Result<(), String> {
    let path = b.pki().join("directory.toml");
    let mut file: certex::rules::directory::DirectoryFile =
        toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut file);
    std::fs::write(&path, toml::to_string(&file).unwrap()).unwrap();
    b.broker.reload_directory()
}

fn sha256_of_pem(pem: &[u8]) -> String {
    use rustls_pki_types::pem::PemObject;
    use sha2::Digest;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(pem).unwrap();
    hex::encode(sha2::Sha256::digest(der.as_ref()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ca_never_anchors_two_countries_and_an_empty_directory_is_refused() {
    let b = TestBroker::start().await;
    let path = b.pki().join("directory.toml");
    let good = std::fs::read_to_string(&path).unwrap();
    // The CN CA listed as RU's anchor too.
    let err = edit_directory(&b, |f| {
        f.anchors
            .iter_mut()
            .find(|a| a.country == "RU")
            .unwrap()
            .certificate = "ca/CN.pem".into();
    })
    .unwrap_err();
    assert!(err.contains("already the anchor of"), "{err}");
    std::fs::write(&path, &good).unwrap();
    // An RU anchor issued by the CN anchor: CN's CA could mint RU teams.
    let cn_ca = std::fs::read_to_string(b.pki().join("ca/CN.pem")).unwrap();
    let cn_key = std::fs::read_to_string(b.pki().join("ca/CN.key")).unwrap();
    let (nested, _) =
        certex::cli::pki::issue_ca("RU under CN", Some((&cn_ca, &cn_key)), Some(0)).unwrap();
    std::fs::write(b.pki().join("ca/RU-nested.pem"), nested).unwrap();
    let err = edit_directory(&b, |f| {
        f.anchors
            .iter_mut()
            .find(|a| a.country == "RU")
            .unwrap()
            .certificate = "ca/RU-nested.pem".into();
    })
    .unwrap_err();
    assert!(err.contains("issued by the CN anchor"), "{err}");
    std::fs::write(&path, &good).unwrap();
    // No teams, no anchors: refused at reload and at boot.
    let err = edit_directory(&b, |f| {
        f.teams.clear();
        f.groups.clear();
    })
    .unwrap_err();
    assert!(err.contains("no [[team]]"), "{err}");
    std::fs::write(&path, &good).unwrap();
    let err = edit_directory(&b, |f| {
        f.anchors.clear();
        f.teams.clear();
        f.groups.clear();
    })
    .unwrap_err();
    assert!(err.contains("no [[anchor]]"), "{err}");
    let config = certex::broker::config::BrokerConfig::from_pki(
        &b.pki(),
        &b.tmp.path().join("other-data"),
        "127.0.0.1:0".parse().unwrap(),
    );
    let err = certex::broker::server::Broker::open(config)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("no [[anchor]]"), "{err}");
    // The old directory stayed in force.
    std::fs::write(&path, &good).unwrap();
    assert_eq!(b.broker.directory().teams().count(), TEAMS.len());
    b.client("CN-CNCERT")
        .await
        .directory_api()
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anchor_path_length_is_honoured() {
    let b = TestBroker::start().await;
    let pki = b.pki();
    let cn_ca = std::fs::read_to_string(pki.join("ca/CN.pem")).unwrap();
    let cn_key = std::fs::read_to_string(pki.join("ca/CN.key")).unwrap();
    // The dev CN anchor has pathlen:0; a sub-CA under it mints a CN team cert.
    let (sub, sub_key) =
        certex::cli::pki::issue_ca("CN rogue sub-CA", Some((&cn_ca, &cn_key)), None).unwrap();
    let (leaf, leaf_key) =
        certex::cli::pki::issue_team_certificate(&sub, &sub_key, "CN-CNCERT").unwrap();
    let chain = format!("{leaf}{sub}");
    let err = whoami_with(&b, chain.as_bytes(), leaf_key.as_bytes())
        .await
        .unwrap_err();
    assert!(!err.contains("CN-CNCERT\""), "{err}");

    // An anchor without a path length: one intermediate is allowed (the
    // default max_chain_depth), two are not.
    let (za_root, za_root_key) = certex::cli::pki::issue_ca("ZA root", None, None).unwrap();
    std::fs::write(pki.join("ca/ZA-open.pem"), &za_root).unwrap();
    edit_directory(&b, |f| {
        f.anchors
            .iter_mut()
            .find(|a| a.country == "ZA")
            .unwrap()
            .certificate = "ca/ZA-open.pem".into();
    })
    .unwrap();
    let (i1, i1_key) =
        certex::cli::pki::issue_ca("ZA issuing", Some((&za_root, &za_root_key)), None).unwrap();
    let (leaf, leaf_key) =
        certex::cli::pki::issue_team_certificate(&i1, &i1_key, "ZA-CSIRT").unwrap();
    assert_eq!(
        whoami_with(&b, format!("{leaf}{i1}").as_bytes(), leaf_key.as_bytes())
            .await
            .unwrap(),
        "ZA-CSIRT"
    );
    let (i2, i2_key) = certex::cli::pki::issue_ca("ZA second", Some((&i1, &i1_key)), None).unwrap();
    let (leaf, leaf_key) =
        certex::cli::pki::issue_team_certificate(&i2, &i2_key, "ZA-CSIRT").unwrap();
    assert!(
        whoami_with(
            &b,
            format!("{leaf}{i2}{i1}").as_bytes(),
            leaf_key.as_bytes()
        )
        .await
        .is_err(),
        "two intermediates exceed max_chain_depth = 1"
    );
    edit_directory(&b, |f| f.max_chain_depth = Some(2)).unwrap();
    assert_eq!(
        whoami_with(
            &b,
            format!("{leaf}{i2}{i1}").as_bytes(),
            leaf_key.as_bytes()
        )
        .await
        .unwrap(),
        "ZA-CSIRT"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_or_unpinned_team_certificate_is_refused() {
    let b = TestBroker::start().await;
    let files = ClientFiles::from_pki(&b.pki(), "BR-CERTBR");
    let cert = std::fs::read(&files.cert).unwrap();
    let key = std::fs::read(&files.key).unwrap();
    let fingerprint = sha256_of_pem(&cert);
    assert_eq!(whoami_with(&b, &cert, &key).await.unwrap(), "BR-CERTBR");

    // Pinned to this certificate: accepted; a second certificate is not.
    edit_directory(&b, |f| {
        f.teams
            .iter_mut()
            .find(|t| t.id == "BR-CERTBR")
            .unwrap()
            .certificate_sha256 = Some(fingerprint.clone());
    })
    .unwrap();
    assert_eq!(whoami_with(&b, &cert, &key).await.unwrap(), "BR-CERTBR");
    let br_ca = std::fs::read_to_string(b.pki().join("ca/BR.pem")).unwrap();
    let br_key = std::fs::read_to_string(b.pki().join("ca/BR.key")).unwrap();
    let (other, other_key) =
        certex::cli::pki::issue_team_certificate(&br_ca, &br_key, "BR-CERTBR").unwrap();
    assert!(
        whoami_with(&b, other.as_bytes(), other_key.as_bytes())
            .await
            .is_err()
    );

    // Revoked by fingerprint (colon form): refused; the other one, unpinned, works.
    let colons = fingerprint
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap().to_uppercase())
        .collect::<Vec<_>>()
        .join(":");
    edit_directory(&b, |f| {
        let t = f.teams.iter_mut().find(|t| t.id == "BR-CERTBR").unwrap();
        t.certificate_sha256 = None;
        t.revoked_certificates = vec![colons];
    })
    .unwrap();
    assert!(whoami_with(&b, &cert, &key).await.is_err());
    assert_eq!(
        whoami_with(&b, other.as_bytes(), other_key.as_bytes())
            .await
            .unwrap(),
        "BR-CERTBR"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reaches_live_connections_and_ends_their_streams() {
    let b = TestBroker::start().await;
    let br = b.client("BR-CERTBR").await;
    let cn = b.client("CN-CNCERT").await;
    let total = 1000u64;
    // 8 KB records, 8 MB in all: far more than HTTP/2 flow control and the
    // socket buffers let the broker push ahead of a slow reader (about 1.5 MB),
    // so what arrives after the reload shows whether the broker kept sending.
    for i in 0..total {
        let mut body = body(
            "BR-CERTBR",
            pb::Tlp::Red,
            teams(&["CN-CNCERT"]),
            incident(&format!("red {i}")),
        );
        if let Some(pb::body::Content::Incident(r)) = &mut body.content {
            r.description = "x".repeat(8000);
        }
        br.publish(br.seal(&body).unwrap()).await.unwrap();
    }
    let mut live = cn
        .exchange()
        .subscribe(pb::SubscribeRequest {
            start: Some(pb::subscribe_request::Start::AfterSeq(0)),
            filter: None,
            follow: true,
        })
        .await
        .unwrap()
        .into_inner();
    for _ in 0..5 {
        live.message().await.unwrap().unwrap();
    }
    // Let the broker fill what flow control allows before the reload.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    // CN's country CA is replaced: the live connection's certificate no
    // longer chains to the CN anchor.
    let (new_ca, _) = certex::cli::pki::issue_ca("CN new CA", None, Some(0)).unwrap();
    std::fs::write(b.pki().join("ca/CN-new.pem"), &new_ca).unwrap();
    edit_directory(&b, |f| {
        f.anchors
            .iter_mut()
            .find(|a| a.country == "CN")
            .unwrap()
            .certificate = "ca/CN-new.pem".into();
    })
    .unwrap();

    // The stream ends UNAUTHENTICATED long before the last record.
    let mut after = 0u64;
    let status = loop {
        match tokio::time::timeout(std::time::Duration::from_secs(10), live.message()).await {
            Ok(Ok(Some(_))) => after += 1,
            Ok(Ok(None)) => panic!("the stream ended without a status after {after} records"),
            Ok(Err(s)) => break s,
            Err(_) => panic!("the stream neither ended nor delivered within 10 s"),
        }
    };
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    eprintln!("{after} of {total} records arrived after the reload");
    assert!(
        after < total / 2,
        "{after} records delivered after the reload"
    );
    // Unary calls on the same connection are refused, then it is closed.
    let (c, msg) = code(cn.get(get_seq(1)).await);
    assert!(
        matches!(c, Code::Unauthenticated | Code::Unavailable | Code::Unknown),
        "{c:?} {msg}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(cn.get(get_seq(1)).await.is_err());
    // Other teams are untouched.
    br.get(get_seq(1)).await.unwrap();
}
