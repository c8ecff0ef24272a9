//! Publishing over real mTLS: the round trip and every rule of SPEC §4, each
//! with its gRPC status.

mod common;

use certex::broker::config::Limits;
use certex::proto::{self as pb, body::Content};
use certex::rules::envelope;
use common::*;
use prost::Message;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_between_countries() {
    let b = TestBroker::start().await;
    let cn = b.client("CN-CNCERT").await;
    let br = b.client("BR-CERTBR").await;
    let body = body(
        "CN-CNCERT",
        pb::Tlp::Amber,
        teams(&["BR-CERTBR"]),
        incident("Grid intrusion"),
    );
    let env = cn.seal(&body).unwrap();
    let receipt = cn.publish(env.clone()).await.unwrap();
    assert_eq!(receipt.seq, 1);
    assert_eq!(receipt.id, body.id);
    assert!(!receipt.duplicate);
    assert_eq!(receipt.tree_size, 1);
    assert_eq!(receipt.leaf_hash.len(), 32);

    let rec = br.get(get_seq(1)).await.unwrap();
    assert_eq!(
        rec.envelope.as_ref().unwrap(),
        &env,
        "stored and forwarded byte for byte"
    );
    let json = br.render(&rec);
    assert!(json.verified);
    assert_eq!(json.sender, "CN-CNCERT");
    assert_eq!(json.kind.as_deref(), Some("incident"));

    let by_id = br.get(get_id(&body.id)).await.unwrap();
    assert_eq!(by_id.seq, 1);

    // A team outside the audience: not found, exactly like a missing record.
    let us = b.client("US-CISA").await;
    let (c, msg) = code(us.get(get_seq(1)).await);
    assert_eq!(c, Code::NotFound);
    let (c2, msg2) = code(us.get(get_seq(99)).await);
    assert_eq!(c2, Code::NotFound);
    assert_eq!(msg.replace('1', "N"), msg2.replace("99", "N"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_must_be_the_tls_team() {
    let b = TestBroker::start().await;
    let us = b.client("US-CISA").await;
    // US-CISA signs with its own key but claims to be CN-CNCERT.
    let body = body("CN-CNCERT", pb::Tlp::Clear, community(), incident("forged"));
    let (c, msg) = code(us.publish(us.seal(&body).unwrap()).await);
    assert_eq!(c, Code::PermissionDenied);
    assert!(msg.contains("authenticated as US-CISA"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_key_and_bad_signature_are_unauthenticated() {
    let b = TestBroker::start().await;
    let cn = b.client("CN-CNCERT").await;
    let body = body("CN-CNCERT", pb::Tlp::Clear, community(), incident("x"));

    // A key that is not in the directory.
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
    let (c, msg) = code(cn.publish(envelope::seal_body(&body, &stranger)).await);
    assert_eq!(c, Code::Unauthenticated);
    assert!(msg.contains("is not a signing key of CN-CNCERT"), "{msg}");

    // Another team's key id.
    let ru_key = envelope::read_signing_key(&b.pki().join("teams/RU-GOVCERT/signing.key")).unwrap();
    let (c, _) = code(cn.publish(envelope::seal_body(&body, &ru_key)).await);
    assert_eq!(c, Code::Unauthenticated);

    // The right key id, a signature over other bytes.
    let mut env = cn.seal(&body).unwrap();
    env.signature[32] ^= 1; // s, not R: R may then not be a point at all
    let (c, msg) = code(cn.publish(env).await);
    assert_eq!(c, Code::Unauthenticated);
    assert!(msg.contains("signature does not match"), "{msg}");

    // Nothing was stored.
    assert_eq!(b.broker.log().head().tree_size, 0);
}

/// Rewrites the broker's directory file through its typed form and reloads.
fn edit_directory(b: &TestBroker, edit: impl FnOnce(&mut certex::rules::directory::DirectoryFile)) {
    let path = b.pki().join("directory.toml");
    let mut file: certex::rules::directory::DirectoryFile =
        toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut file);
    std::fs::write(&path, toml::to_string(&file).unwrap()).unwrap();
    b.broker.reload_directory().unwrap();
}

fn now_text() -> String {
    certex::rules::time::format_time(time::OffsetDateTime::now_utc())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_has_a_time_and_does_not_erase_the_past() {
    let b = TestBroker::start().await;
    let cn = b.client("CN-CNCERT").await;
    let br = b.client("BR-CERTBR").await;
    let before = cn
        .seal(&body(
            "CN-CNCERT",
            pb::Tlp::Clear,
            community(),
            incident("before"),
        ))
        .unwrap();
    let receipt = cn.publish(before.clone()).await.unwrap();
    let json = br.render(&br.get(get_seq(1)).await.unwrap());
    assert_eq!(
        (json.verified, json.key_status.as_deref()),
        (true, Some("active"))
    );

    // `revoked = true` without a time is refused: the old directory stays.
    let path = b.pki().join("directory.toml");
    let kept = std::fs::read_to_string(&path).unwrap();
    let mut file: certex::rules::directory::DirectoryFile = toml::from_str(&kept).unwrap();
    file.teams
        .iter_mut()
        .find(|t| t.id == "CN-CNCERT")
        .unwrap()
        .keys[0]
        .revoked = true;
    std::fs::write(&path, toml::to_string(&file).unwrap()).unwrap();
    let err = b.broker.reload_directory().unwrap_err();
    assert!(err.contains("revoked_at"), "{err}");
    std::fs::write(&path, &kept).unwrap();

    // Revoked from now on.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    edit_directory(&b, |f| {
        f.teams
            .iter_mut()
            .find(|t| t.id == "CN-CNCERT")
            .unwrap()
            .keys[0]
            .revoked_at = Some(now_text());
    });
    let after = cn
        .seal(&body(
            "CN-CNCERT",
            pb::Tlp::Clear,
            community(),
            incident("after"),
        ))
        .unwrap();
    let (c, msg) = code(cn.publish(after).await);
    assert_eq!(c, Code::Unauthenticated);
    assert!(msg.contains("revoked"), "{msg}");

    // The exact bytes logged before the revocation: the original receipt.
    let again = cn.publish(before.clone()).await.unwrap();
    assert_eq!((again.seq, again.duplicate), (receipt.seq, true));
    assert_eq!(again.leaf_hash, receipt.leaf_hash);
    // Other bytes under the same id are refused for the key, not stored.
    let mut changed = body(
        "CN-CNCERT",
        pb::Tlp::Clear,
        community(),
        incident("changed"),
    );
    changed.id = receipt.id.clone();
    let (c, _) = code(cn.publish(cn.seal(&changed).unwrap()).await);
    assert_eq!(c, Code::Unauthenticated);

    // The past record is still evidence, with the key's fate shown (a client
    // verifies against its local copy of the directory: a fresh one).
    let br = b.client("BR-CERTBR").await;
    let json = br.render(&br.get(get_seq(1)).await.unwrap());
    assert!(json.verified, "{:?}", json.verify_error);
    assert_eq!(json.key_status.as_deref(), Some("revoked-after-signing"));
    assert_eq!(b.broker.log().head().tree_size, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_team_cannot_connect_and_its_records_still_verify() {
    let b = TestBroker::start().await;
    let cn = b.client("CN-CNCERT").await;
    cn.publish(
        cn.seal(&body(
            "CN-CNCERT",
            pb::Tlp::Clear,
            community(),
            incident("x"),
        ))
        .unwrap(),
    )
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    edit_directory(&b, |f| {
        f.teams
            .iter_mut()
            .find(|t| t.id == "CN-CNCERT")
            .unwrap()
            .retired_at = Some(now_text());
    });
    // The open connection's calls are refused; a new one fails the handshake.
    let (c, _) = code(cn.get(get_seq(1)).await);
    assert_eq!(c, Code::Unauthenticated);
    let (c, _) = code(
        cn.publish(
            cn.seal(&body(
                "CN-CNCERT",
                pb::Tlp::Clear,
                community(),
                incident("y"),
            ))
            .unwrap(),
        )
        .await,
    );
    assert_eq!(c, Code::Unauthenticated);
    let files = certex::client::connection::ClientFiles::from_pki(&b.pki(), "CN-CNCERT");
    let fresh = certex::client::connection::Client::connect(&b.url(), &files, "CN-CNCERT").await;
    let refused = match fresh {
        Err(_) => true,
        Ok(c) => c.get(get_seq(1)).await.is_err(),
    };
    assert!(refused, "a retired team's new connection must be refused");
    // Its keys stay listed: the past record verifies, its key now expired.
    let br = b.client("BR-CERTBR").await;
    let json = br.render(&br.get(get_seq(1)).await.unwrap());
    assert!(json.verified, "{:?}", json.verify_error);
    assert_eq!(json.key_status.as_deref(), Some("expired"));
    // Nobody can address it any more.
    let (c, msg) = code(
        br.publish(
            br.seal(&body(
                "BR-CERTBR",
                pb::Tlp::Amber,
                teams(&["CN-CNCERT"]),
                incident("z"),
            ))
            .unwrap(),
        )
        .await,
    );
    assert_eq!(c, Code::InvalidArgument, "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_skew_is_invalid_argument_naming_the_skew() {
    let b = TestBroker::start().await;
    let cn = b.client("CN-CNCERT").await;
    for offset in [-3600i64, 3600] {
        let mut body = body("CN-CNCERT", pb::Tlp::Clear, community(), incident("late"));
        body.created_at.as_mut().unwrap().seconds += offset;
        let (c, msg) = code(cn.publish(cn.seal(&body).unwrap()).await);
        assert_eq!(c, Code::InvalidArgument);
        assert!(
            msg.contains("created_at") && msg.contains("±600 s"),
            "{msg}"
        );
    }
    // Inside the window is fine.
    let mut body = body(
        "CN-CNCERT",
        pb::Tlp::Clear,
        community(),
        incident("a bit early"),
    );
    body.created_at.as_mut().unwrap().seconds += 300;
    cn.publish(cn.seal(&body).unwrap()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_retry_returns_the_original_receipt() {
    let b = TestBroker::start().await;
    let cn = b.client("CN-CNCERT").await;
    let env = cn
        .seal(&body(
            "CN-CNCERT",
            pb::Tlp::Clear,
            community(),
            incident("once"),
        ))
        .unwrap();
    let first = cn.publish(env.clone()).await.unwrap();
    cn.publish(
        cn.seal(&body(
            "CN-CNCERT",
            pb::Tlp::Clear,
            community(),
            incident("other"),
        ))
        .unwrap(),
    )
    .await
    .unwrap();
    let again = cn.publish(env.clone()).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(
        (again.seq, &again.id, &again.leaf_hash, &again.received_at),
        (first.seq, &first.id, &first.leaf_hash, &first.received_at)
    );
    assert_eq!(
        b.broker.log().head().tree_size,
        2,
        "the retry added nothing"
    );

    // Concurrent identical publishes: one record, the same seq for all.
    let env = cn
        .seal(&body(
            "CN-CNCERT",
            pb::Tlp::Clear,
            community(),
            incident("racing"),
        ))
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (cn, env) = (cn.clone(), env.clone());
        tasks.push(tokio::spawn(async move { cn.publish(env).await.unwrap() }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap());
    }
    assert!(seqs.iter().all(|r| r.seq == seqs[0].seq));
    assert_eq!(seqs.iter().filter(|r| !r.duplicate).count(), 1);
    assert_eq!(b.broker.log().head().tree_size, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_id_other_bytes_already_exists() {
    let b = TestBroker::start().await;
    let cn = b.client("CN-CNCERT").await;
    let first = body("CN-CNCERT", pb::Tlp::Clear, community(), incident("v1"));
    cn.publish(cn.seal(&first).unwrap()).await.unwrap();
    let mut second = first.clone();
    second.content = Some(incident("v2"));
    let (c, msg) = code(cn.publish(cn.seal(&second).unwrap()).await);
    assert_eq!(c, Code::AlreadyExists);
    assert!(msg.contains(&first.id) && msg.contains("record 1"), "{msg}");
    // Another team may use the same id: ids are unique per sender.
    let ru = b.client("RU-GOVCERT").await;
    let mut theirs = first.clone();
    theirs.sender = "RU-GOVCERT".into();
    assert_eq!(ru.publish(ru.seal(&theirs).unwrap()).await.unwrap().seq, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_limits() {
    let b = TestBroker::start().await;
    let cn = b.client("CN-CNCERT").await;
    // Over the envelope limit (1 MiB).
    let mut big = body("CN-CNCERT", pb::Tlp::Clear, community(), incident("big"));
    if let Some(Content::Incident(r)) = &mut big.content {
        r.description = "x".repeat(1024 * 1024 + 10);
    }
    let (c, msg) = code(cn.publish(cn.seal(&big).unwrap()).await);
    assert_eq!(c, Code::ResourceExhausted);
    assert!(
        msg.contains("over the broker's limit of 1048576 bytes"),
        "{msg}"
    );
    // So large that it is refused before it is read (over 4x the limit):
    // still RESOURCE_EXHAUSTED, as SPEC §4 says, and nothing is stored.
    if let Some(Content::Incident(r)) = &mut big.content {
        r.description = "x".repeat(4 * 1024 * 1024 + 10);
    }
    let (c, msg) = code(cn.publish(cn.seal(&big).unwrap()).await);
    assert_eq!(c, Code::ResourceExhausted, "{msg}");
    assert!(msg.contains("limit of 1048576 bytes"), "{msg}");
    assert_eq!(b.broker.log().head().tree_size, 0);
    // Under the envelope limit but over a field limit.
    let mut long = body("CN-CNCERT", pb::Tlp::Clear, community(), incident("long"));
    if let Some(Content::Incident(r)) = &mut long.content {
        r.title = "t".repeat(201);
    }
    let (c, msg) = code(cn.publish(cn.seal(&long).unwrap()).await);
    assert_eq!(c, Code::InvalidArgument);
    assert!(
        msg.contains("field incident.title") && msg.contains("limit of 200"),
        "{msg}"
    );
    assert_eq!(b.broker.log().head().tree_size, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_fields_are_invalid_argument_naming_the_field() {
    let b = TestBroker::start().await;
    let cn = b.client("CN-CNCERT").await;
    let base = || body("CN-CNCERT", pb::Tlp::Clear, community(), incident("x"));
    type Mutation = Box<dyn Fn(&mut pb::Body)>;
    let cases: Vec<(Mutation, &str)> = vec![
        (Box::new(|b| b.id = "not-a-uuid".into()), "field id"),
        (Box::new(|b| b.tlp = 0), "field tlp: tlp is missing"),
        (
            Box::new(|b| b.tlp = 42),
            "field tlp: tlp has unknown value 42",
        ),
        (
            Box::new(|b| b.audience = None),
            "field audience: is required",
        ),
        (Box::new(|b| b.content = None), "field content: is required"),
        (
            Box::new(|b| b.audience = Some(teams(&["XX-NOBODY"]))),
            "field audience.teams[0]: team \"XX-NOBODY\"",
        ),
        (
            Box::new(|b| b.audience = Some(group("NATO"))),
            "field audience.group: sharing group \"NATO\"",
        ),
        (
            Box::new(|b| {
                if let Some(Content::Incident(r)) = &mut b.content {
                    r.observables[0].value = "203.0.113.300".into();
                }
            }),
            "field incident.observables[0].value",
        ),
        (
            Box::new(|b| {
                if let Some(Content::Incident(r)) = &mut b.content {
                    r.observables[0].r#type = 77;
                }
            }),
            "field incident.observables[0].type",
        ),
        (
            Box::new(|b| {
                if let Some(Content::Incident(r)) = &mut b.content {
                    r.category = 0;
                }
            }),
            "field incident.category: category is missing",
        ),
        (
            Box::new(|b| b.content = Some(warning("", pb::Severity::High))),
            "field warning.title: is required",
        ),
        (
            Box::new(|b| {
                b.content = Some(Content::Request(pb::AssistanceRequest {
                    to: "BR-CERTBR".into(),
                    action: pb::Action::Takedown as i32,
                    legal_basis: String::new(),
                    description: "take down".into(),
                    respond_by: b.created_at,
                    priority: pb::Severity::High as i32,
                }));
                b.audience = Some(teams(&["BR-CERTBR"]));
            }),
            "field request.legal_basis: is required",
        ),
    ];
    for (mutate, expected) in cases {
        let mut body = base();
        mutate(&mut body);
        let (c, msg) = code(cn.publish(cn.seal(&body).unwrap()).await);
        assert_eq!(c, Code::InvalidArgument, "{expected}: {msg}");
        assert!(msg.contains(expected), "expected {expected:?} in {msg:?}");
    }
    // Bytes that are not a Body at all.
    let env = envelope::seal(
        vec![0xff, 0xff, 0xff],
        &envelope::read_signing_key(&b.pki().join("teams/CN-CNCERT/signing.key")).unwrap(),
    );
    let (c, msg) = code(cn.publish(env).await);
    assert_eq!(c, Code::InvalidArgument);
    assert!(msg.contains("field body"), "{msg}");
    assert_eq!(
        b.broker.log().head().tree_size,
        0,
        "nothing malformed is stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tlp_red_and_amber_strict_need_explicit_teams() {
    let b = TestBroker::start().await;
    let cn = b.client("CN-CNCERT").await;
    for tlp in [pb::Tlp::Red, pb::Tlp::AmberStrict] {
        for aud in [community(), group("BRICS")] {
            let (c, msg) = code(
                cn.publish(
                    cn.seal(&body("CN-CNCERT", tlp, aud, incident("x")))
                        .unwrap(),
                )
                .await,
            );
            assert_eq!(c, Code::InvalidArgument);
            assert!(msg.contains("explicit list of teams"), "{msg}");
        }
        cn.publish(
            cn.seal(&body(
                "CN-CNCERT",
                tlp,
                teams(&["RU-GOVCERT"]),
                incident("x"),
            ))
            .unwrap(),
        )
        .await
        .unwrap();
    }
    for tlp in [pb::Tlp::Clear, pb::Tlp::Green, pb::Tlp::Amber] {
        cn.publish(
            cn.seal(&body("CN-CNCERT", tlp, group("SCO"), incident("x")))
                .unwrap(),
        )
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_team_rate_limit_is_resource_exhausted() {
    let limits = Limits {
        rate_per_second: 1,
        rate_burst: 3,
        ..Limits::default()
    };
    let b = TestBroker::start_with(limits).await;
    let cn = b.client("CN-CNCERT").await;
    let mut codes = Vec::new();
    for _ in 0..6 {
        let r = cn
            .publish(
                cn.seal(&body(
                    "CN-CNCERT",
                    pb::Tlp::Clear,
                    community(),
                    incident("flood"),
                ))
                .unwrap(),
            )
            .await;
        codes.push(r.map(|_| Code::Ok).unwrap_or_else(|e| match e {
            certex::client::connection::ClientError::Status(s) => s.code(),
            other => panic!("{other}"),
        }));
    }
    assert_eq!(&codes[..3], &[Code::Ok; 3]);
    assert!(codes[3..].contains(&Code::ResourceExhausted), "{codes:?}");
    // Another team has its own budget.
    let ru = b.client("RU-GOVCERT").await;
    ru.publish(
        ru.seal(&body(
            "RU-GOVCERT",
            pb::Tlp::Clear,
            community(),
            incident("ok"),
        ))
        .unwrap(),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_bytes_are_forwarded_and_re_encoding_breaks_the_signature() {
    let b = TestBroker::start().await;
    let cn = b.client("CN-CNCERT").await;
    let body = body(
        "CN-CNCERT",
        pb::Tlp::Clear,
        community(),
        incident("exact bytes"),
    );
    let bytes = body.encode_to_vec();
    let key = envelope::read_signing_key(&b.pki().join("teams/CN-CNCERT/signing.key")).unwrap();
    let env = envelope::seal(bytes.clone(), &key);
    cn.publish(env.clone()).await.unwrap();

    let rec = b.client("BR-CERTBR").await.get(get_seq(1)).await.unwrap();
    let got = rec.envelope.clone().unwrap();
    assert_eq!(got.body, bytes, "the broker forwards the exact bytes");
    envelope::verify(&got, &key.verifying_key()).unwrap();
    assert!(cn.render(&rec).verified);

    // Any other encoding of the same body (here: an unknown field that a
    // decoder drops) is other bytes, and the signature does not hold.
    let mut longer = bytes.clone();
    longer.extend_from_slice(&[0x98, 0x06, 0x01]);
    let other = pb::Envelope {
        body: longer.into(),
        ..got
    };
    assert!(envelope::verify(&other, &key.verifying_key()).is_err());
}

/// Appends one length-delimited protobuf field.
fn field(out: &mut Vec<u8>, number: u32, value: &[u8]) {
    prost::encoding::encode_key(number, prost::encoding::WireType::LengthDelimited, out);
    prost::encoding::encode_varint(value.len() as u64, out);
    out.extend_from_slice(value);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_canonical_bodies_are_accepted() {
    let b = TestBroker::start().await;
    let cn = b.client("CN-CNCERT").await;
    let key = envelope::read_signing_key(&b.pki().join("teams/CN-CNCERT/signing.key")).unwrap();
    let good = body("CN-CNCERT", pb::Tlp::Clear, community(), incident("one"));
    let good_bytes = good.encode_to_vec();
    let warning = match warning("two", pb::Severity::High) {
        Content::Warning(w) => w.encode_to_vec(),
        _ => unreachable!(),
    };

    // Each way of breaking the rule, built field by field, correctly signed.
    let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();
    let mut two = good_bytes.clone();
    field(&mut two, 11, &warning);
    cases.push(("incident then warning", two, "two contents"));
    let mut sender_twice = good_bytes.clone();
    field(&mut sender_twice, 2, b"CN-CNCERT");
    cases.push(("sender twice", sender_twice, "more than once"));
    let mut id_twice = Vec::new();
    field(&mut id_twice, 1, good.id.as_bytes());
    id_twice.extend_from_slice(&good_bytes);
    cases.push(("id twice", id_twice, "more than once"));
    let mut unknown = good_bytes.clone();
    field(&mut unknown, 99, &[7u8; 1000]);
    cases.push(("unknown field", unknown, "unknown field number 99"));
    // sender (2) before id (1).
    let mut reordered = Vec::new();
    field(&mut reordered, 2, b"CN-CNCERT");
    field(&mut reordered, 1, good.id.as_bytes());
    reordered.extend_from_slice(&good_bytes[2 + good.id.len() + 2 + "CN-CNCERT".len()..]);
    cases.push(("out of order", reordered, "field-number order"));
    let mut default_written = good_bytes.clone();
    field(&mut default_written, 6, b"");
    cases.push(("default written", default_written, "default value"));

    for (what, bytes, says) in cases {
        assert!(
            pb::Body::decode(bytes.as_slice()).is_ok(),
            "{what}: decodes"
        );
        let (c, msg) = code(cn.publish(envelope::seal(bytes, &key)).await);
        assert_eq!(c, Code::InvalidArgument, "{what}: {msg}");
        assert!(
            msg.contains("field body") && msg.contains(says),
            "{what}: {msg}"
        );
    }
    // Nothing malformed was stored; the canonical body is accepted.
    assert_eq!(b.broker.log().head().tree_size, 0);
    cn.publish(envelope::seal(good_bytes, &key)).await.unwrap();
    assert_eq!(b.broker.log().head().tree_size, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_invalid_argument() {
    let b = TestBroker::start().await;
    let cn = b.client("CN-CNCERT").await;

    // No envelope, an empty body, a body without sender, no key id, no signature.
    let (c, msg) = code(
        cn.exchange()
            .publish(pb::PublishRequest { envelope: None })
            .await
            .map_err(Into::into),
    );
    assert_eq!(
        (c, msg.contains("envelope")),
        (Code::InvalidArgument, true),
        "{msg}"
    );
    let key = envelope::read_signing_key(&b.pki().join("teams/CN-CNCERT/signing.key")).unwrap();
    let (c, msg) = code(cn.publish(envelope::seal(vec![], &key)).await);
    assert_eq!(
        (c, msg.contains("field body")),
        (Code::InvalidArgument, true),
        "{msg}"
    );
    let mut no_sender = body("CN-CNCERT", pb::Tlp::Clear, community(), incident("x"));
    no_sender.sender.clear();
    let (c, msg) = code(cn.publish(envelope::seal_body(&no_sender, &key)).await);
    assert_eq!(
        (c, msg.contains("field sender")),
        (Code::InvalidArgument, true),
        "{msg}"
    );
    let good = envelope::seal_body(
        &body("CN-CNCERT", pb::Tlp::Clear, community(), incident("x")),
        &key,
    );
    let (c, msg) = code(
        cn.publish(pb::Envelope {
            key_id: String::new(),
            ..good.clone()
        })
        .await,
    );
    assert_eq!(
        (c, msg.contains("field key_id")),
        (Code::InvalidArgument, true),
        "{msg}"
    );
    let (c, msg) = code(
        cn.publish(pb::Envelope {
            signature: vec![],
            ..good.clone()
        })
        .await,
    );
    assert_eq!(
        (c, msg.contains("field signature")),
        (Code::InvalidArgument, true),
        "{msg}"
    );

    // A truncated PublishRequest, sent as raw gRPC bytes.
    let req = pb::PublishRequest {
        envelope: Some(good),
    }
    .encode_to_vec();
    let truncated = &req[..req.len() - 10];
    let status = raw_unary(&cn, "/certex.v1.Exchange/Publish", truncated).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // A leaf hash that is not 32 bytes.
    let (c, msg) = code(
        cn.transparency()
            .get_inclusion_proof(pb::InclusionProofRequest {
                leaf: Some(pb::inclusion_proof_request::Leaf::LeafHash(vec![1, 2])),
                tree_size: 0,
            })
            .await
            .map_err(Into::into),
    );
    assert_eq!(
        (c, msg.contains("32-byte")),
        (Code::InvalidArgument, true),
        "{msg}"
    );
    assert_eq!(b.broker.log().head().tree_size, 0);
}

/// Sends `message` as the raw protobuf of a unary call and returns the status.
async fn raw_unary(
    client: &certex::client::connection::Client,
    path: &str,
    message: &[u8],
) -> tonic::Status {
    use bytes::{Buf, BufMut};
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    /// Passes bytes through unchanged.
    #[derive(Default)]
    struct Raw;
    impl Codec for Raw {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = Raw;
        type Decoder = Raw;
        fn encoder(&mut self) -> Raw {
            Raw
        }
        fn decoder(&mut self) -> Raw {
            Raw
        }
    }
    impl Encoder for Raw {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
            dst.put_slice(&item);
            Ok(())
        }
    }
    impl Decoder for Raw {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
            let v = src.chunk().to_vec();
            src.advance(v.len());
            Ok(Some(v))
        }
    }
    let mut grpc = tonic::client::Grpc::new(client.channel());
    grpc.ready().await.unwrap();
    match grpc
        .unary(
            tonic::Request::new(message.to_vec()),
            http::uri::PathAndQuery::from_static(Box::leak(path.to_owned().into_boxed_str())),
            Raw,
        )
        .await
    {
        Ok(_) => tonic::Status::ok("accepted"),
        Err(s) => s,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retraction_only_by_sender_and_tombstone_on_get() {
    let b = TestBroker::start().await;
    let cn = b.client("CN-CNCERT").await;
    let ru = b.client("RU-GOVCERT").await;
    let target = body(
        "CN-CNCERT",
        pb::Tlp::Green,
        group("SCO"),
        incident("mistaken"),
    );
    cn.publish(cn.seal(&target).unwrap()).await.unwrap();

    let retract = |sender: &str| {
        body(
            sender,
            pb::Tlp::Green,
            group("SCO"),
            Content::Retraction(pb::Retraction {
                target: target.id.clone(),
                reason: "false positive".into(),
            }),
        )
    };
    let (c, msg) = code(ru.publish(ru.seal(&retract("RU-GOVCERT")).unwrap()).await);
    assert_eq!(c, Code::FailedPrecondition);
    assert!(msg.contains("only its sender can retract"), "{msg}");

    let mut wrong_audience = retract("CN-CNCERT");
    wrong_audience.audience = Some(community());
    let (c, _) = code(cn.publish(cn.seal(&wrong_audience).unwrap()).await);
    assert_eq!(c, Code::InvalidArgument);

    let r = retract("CN-CNCERT");
    cn.publish(cn.seal(&r).unwrap()).await.unwrap();
    let seen = ru.get(get_seq(1)).await.unwrap();
    assert!(seen.envelope.is_none());
    let t = seen.retracted.unwrap();
    assert_eq!(
        (t.seq, t.retracted_by.as_str(), t.reason.as_str()),
        (1, r.id.as_str(), "false positive")
    );
    assert_eq!(seen.leaf_hash.len(), 32, "the record keeps its leaf hash");
    // The sender still sees the content; the retraction reaches the audience.
    assert!(cn.get(get_seq(1)).await.unwrap().envelope.is_some());
    assert!(ru.get(get_seq(2)).await.unwrap().envelope.is_some());
    let (c, _) = code(b.client("US-CISA").await.get(get_seq(2)).await);
    assert_eq!(c, Code::NotFound);
    // Twice is refused.
    let (c, msg) = code(cn.publish(cn.seal(&retract("CN-CNCERT")).unwrap()).await);
    assert_eq!(c, Code::FailedPrecondition);
    assert!(msg.contains("already retracted"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_gets_its_receipt_even_when_the_rate_budget_is_spent() {
    let limits = Limits {
        rate_per_second: 1,
        rate_burst: 1,
        ..Limits::default()
    };
    let b = TestBroker::start_with(limits).await;
    let cn = b.client("CN-CNCERT").await;
    let env = cn
        .seal(&body(
            "CN-CNCERT",
            pb::Tlp::Clear,
            community(),
            incident("once"),
        ))
        .unwrap();
    let first = cn.publish(env.clone()).await.unwrap();
    // Spend the budget (however slowly this machine runs, some new publish
    // is refused before the bucket refills faster than we send).
    let mut refused = false;
    for _ in 0..50 {
        let fresh = cn
            .seal(&body(
                "CN-CNCERT",
                pb::Tlp::Clear,
                community(),
                incident("new"),
            ))
            .unwrap();
        if let Err(e) = cn.publish(fresh).await {
            assert_eq!(code::<()>(Err(e)).0, Code::ResourceExhausted);
            refused = true;
            break;
        }
    }
    assert!(refused, "the rate limit never applied");
    // The retry comes straight after the refusal, with the budget spent.
    let again = cn.publish(env).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.seq, first.seq);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_audience_is_fixed_when_the_record_is_accepted() {
    let b = TestBroker::start().await;
    let ru = b.client("RU-GOVCERT").await;
    let br = b.client("BR-CERTBR").await;
    let first = ru
        .publish(
            ru.seal(&body(
                "RU-GOVCERT",
                pb::Tlp::Amber,
                group("SCO"),
                incident("before BR joined"),
            ))
            .unwrap(),
        )
        .await
        .unwrap();
    let (c, _) = code(br.get(get_seq(first.seq)).await);
    assert_eq!(c, Code::NotFound, "BR is not in SCO");

    // BR joins SCO; IN leaves it.
    edit_directory(&b, |f| {
        let sco = f.groups.get_mut("SCO").unwrap();
        sco.push("BR-CERTBR".into());
        sco.retain(|t| t != "IN-CERTIN");
    });
    let (c, _) = code(br.get(get_seq(first.seq)).await);
    assert_eq!(
        c,
        Code::NotFound,
        "a team that joins later does not read the history"
    );
    let ind = b.client("IN-CERTIN").await;
    ind.get(get_seq(first.seq))
        .await
        .expect("a member when the record was accepted still reads it");

    let second = ru
        .publish(
            ru.seal(&body(
                "RU-GOVCERT",
                pb::Tlp::Amber,
                group("SCO"),
                incident("after BR joined"),
            ))
            .unwrap(),
        )
        .await
        .unwrap();
    br.get(get_seq(second.seq))
        .await
        .expect("BR reads what was shared after it joined");
    let (c, _) = code(ind.get(get_seq(second.seq)).await);
    assert_eq!(c, Code::NotFound, "IN left before the second record");

    // The same on a subscription from the start.
    let seen: Vec<u64> = catch_up(&br).await.iter().map(|r| r.seq).collect();
    assert_eq!(seen, vec![second.seq]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn references_name_a_sender_and_an_id() {
    let b = TestBroker::start().await;
    let cn = b.client("CN-CNCERT").await;
    let first = body("CN-CNCERT", pb::Tlp::Clear, community(), incident("first"));
    cn.publish(cn.seal(&first).unwrap()).await.unwrap();
    let mut follow_up = body(
        "CN-CNCERT",
        pb::Tlp::Clear,
        community(),
        incident("follow-up"),
    );
    follow_up.references = vec![pb::Reference {
        sender: "XX-NOBODY".into(),
        id: first.id.clone(),
    }];
    let (c, msg) = code(cn.publish(cn.seal(&follow_up).unwrap()).await);
    assert_eq!(c, Code::InvalidArgument);
    assert!(msg.contains("references[0].sender"), "{msg}");
    follow_up.references[0].sender = "CN-CNCERT".into();
    cn.publish(cn.seal(&follow_up).unwrap()).await.unwrap();
    let json = b
        .client("BR-CERTBR")
        .await
        .render(&b.client("BR-CERTBR").await.get(get_seq(2)).await.unwrap());
    let refs = &json.body.unwrap().references;
    assert_eq!(
        (refs[0].sender.as_str(), refs[0].id.as_str()),
        ("CN-CNCERT", first.id.as_str())
    );
}
