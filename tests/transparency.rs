//! The transparency log over a real broker: receipts, inclusion and
//! consistency proofs verified with the independent client verifier, and the
//! rejections a member relies on (tampered proof, bad head signature,
//! rollback, fork).

mod common;

use certex::client::verify::{self, VerifyError};
use certex::proto::{self as pb, body::Content, inclusion_proof_request::Leaf};
use common::witness::WitnessProcess;
use common::*;

fn hashes(path: &[Vec<u8>]) -> Vec<verify::Hash> {
    path.iter()
        .map(|h| verify::hash_from_slice(h).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_verify_for_every_record_and_size() {
    let b = TestBroker::start().await;
    let cn = b.client("CN-CNCERT").await;
    let mut receipts = Vec::new();
    let mut heads = Vec::new();
    for i in 0..21 {
        let env = cn
            .seal(&body(
                "CN-CNCERT",
                pb::Tlp::Clear,
                community(),
                incident(&format!("r{i}")),
            ))
            .unwrap();
        let r = cn.publish(env.clone()).await.unwrap();
        // The client can recompute the leaf hash from what it sent.
        assert_eq!(
            r.leaf_hash,
            verify::leaf_hash(&certex::rules::envelope::log_bytes(&env)).to_vec()
        );
        receipts.push(r);
        heads.push(
            cn.transparency()
                .get_head(pb::GetHeadRequest {})
                .await
                .unwrap()
                .into_inner(),
        );
    }
    let key = certex::client::audit::read_public_key(&b.pki().join("broker/signing.pub")).unwrap();
    let mut t = cn.transparency();
    for head in &heads {
        let root = verify::hash_from_slice(&head.root_hash).unwrap();
        verify::verify_tree_head(
            &key,
            head.tree_size,
            &root,
            head.timestamp_ms,
            &head.signature,
        )
        .unwrap();
        for r in receipts.iter().filter(|r| r.seq <= head.tree_size) {
            let p = t
                .get_inclusion_proof(pb::InclusionProofRequest {
                    leaf: Some(Leaf::Seq(r.seq)),
                    tree_size: head.tree_size,
                })
                .await
                .unwrap()
                .into_inner();
            let leaf = verify::hash_from_slice(&r.leaf_hash).unwrap();
            verify::verify_inclusion(&leaf, r.seq - 1, head.tree_size, &hashes(&p.path), &root)
                .unwrap();
        }
        for older in heads.iter().filter(|h| h.tree_size <= head.tree_size) {
            let path = cn
                .consistency_proof(older.tree_size, head.tree_size)
                .await
                .unwrap();
            let old_root = verify::hash_from_slice(&older.root_hash).unwrap();
            verify::check_extends((older.tree_size, &old_root), (head.tree_size, &root), &path)
                .unwrap();
        }
    }
    // By leaf hash, against the current head.
    let p = t
        .get_inclusion_proof(pb::InclusionProofRequest {
            leaf: Some(Leaf::LeafHash(receipts[4].leaf_hash.clone())),
            tree_size: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((p.leaf_index, p.tree_size), (4, 21));
    // Heads never go back in time.
    assert!(
        heads
            .windows(2)
            .all(|w| w[0].timestamp_ms <= w[1].timestamp_ms)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_proof_and_bad_head_signature_are_rejected() {
    let b = TestBroker::start().await;
    let cn = b.client("CN-CNCERT").await;
    for i in 0..9 {
        cn.publish(
            cn.seal(&body(
                "CN-CNCERT",
                pb::Tlp::Clear,
                community(),
                incident(&format!("r{i}")),
            ))
            .unwrap(),
        )
        .await
        .unwrap();
    }
    let key = certex::client::audit::read_public_key(&b.pki().join("broker/signing.pub")).unwrap();
    let head = cn
        .transparency()
        .get_head(pb::GetHeadRequest {})
        .await
        .unwrap()
        .into_inner();
    let root = verify::hash_from_slice(&head.root_hash).unwrap();
    let p = cn
        .transparency()
        .get_inclusion_proof(pb::InclusionProofRequest {
            leaf: Some(Leaf::Seq(3)),
            tree_size: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let leaf = verify::hash_from_slice(&p.leaf_hash).unwrap();
    let path = hashes(&p.path);
    verify::verify_inclusion(&leaf, 2, 9, &path, &root).unwrap();
    for i in 0..path.len() {
        let mut bad = path.clone();
        bad[i][7] ^= 0x10;
        assert_eq!(
            verify::verify_inclusion(&leaf, 2, 9, &bad, &root),
            Err(VerifyError::InclusionRootMismatch)
        );
    }
    assert!(
        verify::verify_inclusion(&leaf, 3, 9, &path, &root).is_err(),
        "wrong index"
    );

    let mut sig = head.signature.clone();
    sig[10] ^= 1;
    assert_eq!(
        verify::verify_tree_head(&key, head.tree_size, &root, head.timestamp_ms, &sig),
        Err(VerifyError::BadSignature)
    );
    assert!(
        verify::verify_tree_head(
            &key,
            head.tree_size + 1,
            &root,
            head.timestamp_ms,
            &head.signature
        )
        .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_verify_detects_rollback_and_fork() {
    let b = TestBroker::start().await;
    let cn = b.client("CN-CNCERT").await;
    let key = certex::client::audit::read_public_key(&b.pki().join("broker/signing.pub")).unwrap();
    let state = b.tmp.path().join("audit.json");
    let first = certex::client::audit::verify_state(&cn, &key, &state)
        .await
        .unwrap();
    assert_eq!((first.previous_size, first.tree_size), (None, 0));
    for i in 0..5 {
        cn.publish(
            cn.seal(&body(
                "CN-CNCERT",
                pb::Tlp::Clear,
                community(),
                incident(&format!("r{i}")),
            ))
            .unwrap(),
        )
        .await
        .unwrap();
    }
    let second = certex::client::audit::verify_state(&cn, &key, &state)
        .await
        .unwrap();
    assert_eq!((second.previous_size, second.tree_size), (Some(0), 5));

    // The kept head claims a larger log than the broker now shows: rollback.
    let kept: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    let mut bigger = kept.clone();
    bigger["tree_size"] = 9.into();
    std::fs::write(&state, bigger.to_string()).unwrap();
    let err = certex::client::audit::verify_state(&cn, &key, &state)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("LOG ROLLBACK"), "{err}");

    // Same size, other root: a fork.
    let mut forked = kept.clone();
    forked["root_hash"] = hex::encode([7u8; 32]).into();
    std::fs::write(&state, forked.to_string()).unwrap();
    let err = certex::client::audit::verify_state(&cn, &key, &state)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("LOG INCONSISTENT"), "{err}");

    // An older kept head whose root is not the prefix root: inconsistent.
    let mut smaller_wrong = kept.clone();
    smaller_wrong["tree_size"] = 3.into();
    std::fs::write(&state, smaller_wrong.to_string()).unwrap();
    let err = certex::client::audit::verify_state(&cn, &key, &state)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("LOG INCONSISTENT"), "{err}");

    // A checkpoint this member cosigned beyond its kept head binds it too:
    // a head that does not extend it, or is smaller, is refused.
    let mut cosigned_other = kept.clone();
    cosigned_other["cosigned"] = serde_json::json!({
        "tree_size": 5, "root_hash": hex::encode([9u8; 32])
    });
    std::fs::write(&state, cosigned_other.to_string()).unwrap();
    let err = certex::client::audit::verify_state(&cn, &key, &state)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("this member cosigned"), "{err}");
    let mut cosigned_bigger = kept.clone();
    cosigned_bigger["cosigned"] = serde_json::json!({
        "tree_size": 8, "root_hash": kept["root_hash"].clone()
    });
    std::fs::write(&state, cosigned_bigger.to_string()).unwrap();
    let err = certex::client::audit::verify_state(&cn, &key, &state)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("LOG ROLLBACK"), "{err}");
    assert!(
        err.to_string().contains("cosigned a checkpoint of 8"),
        "{err}"
    );

    // The genuine state still verifies.
    std::fs::write(&state, kept.to_string()).unwrap();
    certex::client::audit::verify_state(&cn, &key, &state)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retracted_records_keep_their_leaf_and_proofs() {
    let b = TestBroker::start().await;
    let cn = b.client("CN-CNCERT").await;
    let br = b.client("BR-CERTBR").await;
    let target = body(
        "CN-CNCERT",
        pb::Tlp::Clear,
        community(),
        incident("to retract"),
    );
    let r = cn.publish(cn.seal(&target).unwrap()).await.unwrap();
    let mut retraction = body(
        "CN-CNCERT",
        pb::Tlp::Clear,
        community(),
        Content::Retraction(pb::Retraction {
            target: target.id.clone(),
            reason: "duplicate report".into(),
        }),
    );
    retraction.references = vec![pb::Reference {
        sender: target.sender.clone(),
        id: target.id.clone(),
    }];
    cn.publish(cn.seal(&retraction).unwrap()).await.unwrap();
    let key = certex::client::audit::read_public_key(&b.pki().join("broker/signing.pub")).unwrap();
    // The reader only has the tombstone's leaf hash, which the proof ties to the signed root.
    let proof = certex::client::audit::prove(&br, &key, "1", &Default::default())
        .await
        .unwrap();
    assert_eq!(proof.leaf_hash, hex::encode(&r.leaf_hash));
    assert!(proof.verified);
    assert!(br.get(get_seq(1)).await.unwrap().retracted.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_follow_the_read_rule() {
    let b = TestBroker::start().await;
    let cn = b.client("CN-CNCERT").await;
    let secret = body(
        "CN-CNCERT",
        pb::Tlp::Red,
        teams(&["RU-GOVCERT"]),
        incident("red"),
    );
    let r = cn.publish(cn.seal(&secret).unwrap()).await.unwrap();
    let us = b.client("US-CISA").await;
    for leaf in [Leaf::Seq(1), Leaf::LeafHash(r.leaf_hash.clone())] {
        let err = us
            .transparency()
            .get_inclusion_proof(pb::InclusionProofRequest {
                leaf: Some(leaf),
                tree_size: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
    }
    // Heads and consistency are for everyone.
    let head = us
        .transparency()
        .get_head(pb::GetHeadRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(head.tree_size, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hidden_leaf_is_answered_like_an_unknown_one() {
    let b = TestBroker::start().await;
    let cn = b.client("CN-CNCERT").await;
    let r = cn
        .publish(
            cn.seal(&body(
                "CN-CNCERT",
                pb::Tlp::Red,
                teams(&["RU-GOVCERT"]),
                incident("red"),
            ))
            .unwrap(),
        )
        .await
        .unwrap();
    let us = b.client("US-CISA").await;
    let ask = |h: Vec<u8>| {
        let us = us.clone();
        async move {
            us.transparency()
                .get_inclusion_proof(pb::InclusionProofRequest {
                    leaf: Some(Leaf::LeafHash(h)),
                    tree_size: 0,
                })
                .await
                .unwrap_err()
        }
    };
    let hidden = ask(r.leaf_hash.clone()).await;
    let unknown = ask(vec![0x42; 32]).await;
    assert_eq!(
        (hidden.code(), unknown.code()),
        (tonic::Code::NotFound, tonic::Code::NotFound)
    );
    assert_eq!(
        hidden.message().replace(&hex::encode(&r.leaf_hash), "H"),
        unknown.message().replace(&hex::encode([0x42; 32]), "H")
    );
}

/// Checkpoints (SPEC §8): a C2SP signed note of the current head, opened
/// with the directory's checkpoint_vkey by our verifier and by a second
/// implementation (the `signed_note` crate), whose root is the signed tree
/// head's and whose successors are provably consistent with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_are_standard_signed_notes_of_the_log() {
    use certex::rules::note::{Checkpoint, Note, open};
    let b = TestBroker::start().await;
    let cn = b.client("CN-CNCERT").await;
    let vkey = cn
        .local_directory()
        .unwrap()
        .checkpoint_vkey()
        .unwrap()
        .clone();
    assert_eq!(vkey.name, certex::cli::pki::DEV_ORIGIN);
    let mut seen: Vec<Checkpoint> = Vec::new();
    for round in 0..2 {
        for i in 0..5 {
            let env = cn
                .seal(&body(
                    "CN-CNCERT",
                    pb::Tlp::Clear,
                    community(),
                    incident(&format!("c{round}-{i}")),
                ))
                .unwrap();
            cn.publish(env).await.unwrap();
        }
        let (cp, json) = certex::client::audit::fetch_checkpoint(&cn).await.unwrap();
        assert!(json.verified);
        let note = Note::parse(&json.note).unwrap();
        assert_eq!(open(&note, std::slice::from_ref(&vkey)).unwrap().len(), 1);
        // A second implementation agrees.
        let theirs = signed_note::Note::from_bytes(json.note.as_bytes()).unwrap();
        let known = signed_note::VerifierList::new(vec![Box::new(
            signed_note::StandardVerifier::new(&vkey.to_string()).unwrap(),
        )]);
        theirs.verify(&known).unwrap();
        // The checkpoint's root is the signed tree head's of that size.
        let head = cn
            .transparency()
            .get_head(pb::GetHeadRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(cp.size, head.tree_size);
        assert_eq!(cp.root.to_vec(), head.root_hash);
        // Flip one byte of the text: no longer opens.
        let forged = json.note.replacen(
            &format!("\n{}\n", cp.size),
            &format!("\n{}\n", cp.size + 1),
            1,
        );
        assert!(open(&Note::parse(&forged).unwrap(), std::slice::from_ref(&vkey)).is_err());
        if let Some(prev) = seen.last() {
            let path = cn.consistency_proof(prev.size, cp.size).await.unwrap();
            verify::check_extends((prev.size, &prev.root), (cp.size, &cp.root), &path).unwrap();
        }
        seen.push(cp);
    }
    assert_eq!(seen[1].size, seen[0].size + 5);
}

/// A checkpoint key the directory does not list is refused at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_key_the_directory_does_not_list_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    make_pki(&pki);
    let other = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
    let pem = ed25519_dalek::pkcs8::EncodePrivateKey::to_pkcs8_pem(
        &other,
        ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF,
    )
    .unwrap();
    std::fs::write(pki.join("broker/checkpoint.key"), pem.as_bytes()).unwrap();
    let config = certex::broker::config::BrokerConfig::from_pki(
        &pki,
        &tmp.path().join("data"),
        "127.0.0.1:0".parse().unwrap(),
    );
    let err = certex::broker::server::Broker::open(config)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("not the one the directory lists"), "{err}");
}

/// Two members witness the log through the CLI (`log verify --cosign`):
/// the checkpoint is then served with both cosignatures, which verify with
/// the witness keys of the directory; a cosignature by another key, of a
/// checkpoint the broker did not sign, or of a size it no longer keeps is
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_cosign_checkpoints_through_the_cli() {
    use certex::rules::note::{self, Note};
    let b = TestBroker::start().await;
    let cn = b.client("CN-CNCERT").await;
    for i in 0..3 {
        let env = cn
            .seal(&body(
                "CN-CNCERT",
                pb::Tlp::Clear,
                community(),
                incident(&format!("w{i}")),
            ))
            .unwrap();
        cn.publish(env).await.unwrap();
    }
    let tmp = tempfile::tempdir().unwrap();
    for team in ["BR-CERTBR", "IN-CERTIN"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_certex"))
            .args([
                "log",
                "verify",
                "--cosign",
                "--broker",
                &b.url(),
                "--as",
                team,
                "--pki",
            ])
            .arg(b.pki())
            .arg("--state")
            .arg(tmp.path().join(format!("{team}.json")))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(line["cosign"]["cosigned_size"], 3, "{line}");
    }
    let (_, json) = certex::client::audit::fetch_checkpoint(&cn).await.unwrap();
    assert_eq!(json.cosigners, vec!["BR-CERTBR", "IN-CERTIN"]);
    let parsed = Note::parse(&json.note).unwrap();
    assert_eq!(
        parsed.sigs.len(),
        3,
        "the broker's signature and two cosignatures"
    );
    let dir = cn.local_directory().unwrap();
    for team in ["BR-CERTBR", "IN-CERTIN"] {
        let w = dir.team(team).unwrap().witness.clone().unwrap();
        let line = parsed.by(&w).next().unwrap();
        assert!(note::verify_line(&parsed.text, line, &w).unwrap().is_some());
    }
    // The checkpoint also opens with the witness keys alone, as a C2SP
    // client configured with them would.
    let witnesses: Vec<_> = ["BR-CERTBR", "IN-CERTIN"]
        .iter()
        .map(|t| dir.team(t).unwrap().witness.clone().unwrap())
        .collect();
    assert_eq!(note::open(&parsed, &witnesses).unwrap().len(), 2);

    // Refusals.
    let add = |size: u64, line: String| {
        let c = cn.clone();
        async move {
            c.transparency()
                .add_cosignature(pb::AddCosignatureRequest {
                    tree_size: size,
                    signature_line: line,
                })
                .await
        }
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp() as u64;
    let cn_witness =
        certex::rules::envelope::read_signing_key(&b.pki().join("teams/CN-CNCERT/witness.key"))
            .unwrap();
    let cn_name = dir.team("CN-CNCERT").unwrap().witness.clone().unwrap().name;
    // Another key under CN's witness name.
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    let l = note::cosign(&parsed.text, &cn_name, &stranger, now).unwrap();
    let e = add(3, l.line()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    // A checkpoint text the broker did not sign (a forged root).
    let forged = parsed.text.replace(
        parsed.text.lines().nth(2).unwrap(),
        "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=",
    );
    let l = note::cosign(&forged, &cn_name, &cn_witness, now).unwrap();
    let e = add(3, l.line()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("does not verify"), "{}", e.message());
    // A size the broker never signed.
    let l = note::cosign(&parsed.text, &cn_name, &cn_witness, now).unwrap();
    let e = add(2, l.line()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    // A cosignature from the future.
    let l = note::cosign(&parsed.text, &cn_name, &cn_witness, now + 86_400).unwrap();
    let e = add(3, l.line()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    // The right one is taken.
    let l = note::cosign(&parsed.text, &cn_name, &cn_witness, now).unwrap();
    assert_eq!(add(3, l.line()).await.unwrap().into_inner().cosignatures, 3);
}

/// Offline evidence: `log prove --format tlog-proof` writes a C2SP bundle
/// that `log check-proof` verifies with the broker stopped — record bytes,
/// inclusion, the checkpoint's signature and the members' cosignatures —
/// and that fails once any byte of the record, the proof or the checkpoint
/// is changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tlog_proof_verifies_offline_and_breaks_when_touched() {
    use base64::Engine;
    let b = TestBroker::start().await;
    let cn = b.client("CN-CNCERT").await;
    for i in 0..6 {
        let env = cn
            .seal(&body(
                "CN-CNCERT",
                pb::Tlp::Amber,
                teams(&["BR-CERTBR"]),
                incident(&format!("p{i}")),
            ))
            .unwrap();
        cn.publish(env).await.unwrap();
    }
    let tmp = tempfile::tempdir().unwrap();
    let certex = |args: &[&str], team: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_certex"))
            .args(args)
            .env("CERTEX_BROKER", b.url())
            .env("CERTEX_PKI", b.pki())
            .env("CERTEX_TEAM", team)
            .output()
            .unwrap()
    };
    // Before any member cosigns: the bundle verifies, but not the quorum.
    let early = certex(
        &["log", "prove", "4", "--format", "tlog-proof"],
        "BR-CERTBR",
    );
    assert!(early.status.success());
    std::fs::write(tmp.path().join("early.tlog-proof"), &early.stdout).unwrap();
    let check_early = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_certex"))
            .args(["log", "check-proof"])
            .arg(tmp.path().join("early.tlog-proof"))
            .arg("--pki")
            .arg(b.pki())
            .args(extra)
            .output()
            .unwrap()
    };
    assert!(check_early(&[]).status.success());
    let out = check_early(&["--require-quorum"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("QUORUM NOT MET"), "{err}");

    for team in ["BR-CERTBR", "IN-CERTIN"] {
        let state = tmp.path().join(format!("{team}.json"));
        let out = certex(
            &[
                "log",
                "verify",
                "--cosign",
                "--state",
                state.to_str().unwrap(),
            ],
            team,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let bundle = certex(
        &["log", "prove", "4", "--format", "tlog-proof"],
        "BR-CERTBR",
    );
    assert!(
        bundle.status.success(),
        "{}",
        String::from_utf8_lossy(&bundle.stderr)
    );
    let text = String::from_utf8(bundle.stdout).unwrap();
    assert!(text.starts_with("c2sp.org/tlog-proof@v1\nextra "));
    assert!(text.contains("\nindex 3\n"));
    let record = certex(&["get", "4"], "BR-CERTBR");
    assert!(record.status.success());
    std::fs::write(tmp.path().join("rec.json"), &record.stdout).unwrap();
    // A team outside the audience gets no bundle.
    let denied = certex(&["log", "prove", "4", "--format", "tlog-proof"], "US-CISA");
    assert!(!denied.status.success());

    let pki = b.pki();
    drop(cn);
    // The broker is gone; its temp dir (with the PKI) is kept.
    let _kept = b.stop().await;

    let check = |bundle: &str| {
        let f = tmp.path().join("x.tlog-proof");
        std::fs::write(&f, bundle).unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_certex"))
            .args(["log", "check-proof"])
            .arg(&f)
            .arg("--record")
            .arg(tmp.path().join("rec.json"))
            .arg("--pki")
            .arg(&pki)
            .output()
            .unwrap()
    };
    let ok = check(&text);
    let with_quorum = std::process::Command::new(env!("CARGO_BIN_EXE_certex"))
        .args(["log", "check-proof", "--require-quorum", "--pki"])
        .arg(&pki)
        .arg(tmp.path().join("x.tlog-proof"))
        .output()
        .unwrap();
    assert!(
        with_quorum.status.success(),
        "{}",
        String::from_utf8_lossy(&with_quorum.stderr)
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(json["seq"], 4);
    assert_eq!(json["sender"], "CN-CNCERT");
    assert_eq!(
        json["cosigners"],
        serde_json::json!(["BR-CERTBR", "IN-CERTIN"])
    );
    // The sender's key is judged when the quorum attests the record logged.
    assert_eq!(json["key_status"], "active", "{json}");
    assert!(json["attested_at"].is_string(), "{json}");

    // Change one byte of the record, of a proof line, of the checkpoint.
    let lines: Vec<&str> = text.split('\n').collect();
    let b64 = base64::engine::general_purpose::STANDARD;
    let flip = |line: &str, prefix: &str| {
        let mut raw = b64.decode(line.strip_prefix(prefix).unwrap()).unwrap();
        let mid = raw.len() / 2;
        raw[mid] ^= 1;
        format!("{prefix}{}", b64.encode(raw))
    };
    let damaged = [
        text.replacen(lines[1], &flip(lines[1], "extra "), 1),
        text.replacen(lines[3], &flip(lines[3], ""), 1),
        text.replacen("\n6\n", "\n7\n", 1),
    ];
    for d in &damaged {
        assert_ne!(d, &text);
        let out = check(d);
        assert!(!out.status.success(), "a damaged bundle verified: {d}");
    }
}

/// Copies a directory tree (a stopped broker's PKI or database).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// `certex log verify` as `team` against `url`, keeping its state in `state`.
fn log_verify(
    url: &str,
    pki: &std::path::Path,
    team: &str,
    state: &std::path::Path,
    extra: &[&str],
) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_certex"))
        .args(["log", "verify", "--broker", url, "--as", team, "--pki"])
        .arg(pki)
        .arg("--state")
        .arg(state)
        .args(extra)
        .output()
        .unwrap()
}

async fn publish_n(b: &TestBroker, tag: &str, n: usize) {
    let cn = b.client("CN-CNCERT").await;
    for i in 0..n {
        let env = cn
            .seal(&body(
                "CN-CNCERT",
                pb::Tlp::Clear,
                community(),
                incident(&format!("{tag}{i}")),
            ))
            .unwrap();
        cn.publish(env).await.unwrap();
    }
}

/// A split view: the operator runs a second broker with the same keys over
/// a copy of the log taken earlier, and shows it to one member. The member
/// that witnessed the real log refuses to cosign the forged view and exits
/// non-zero naming the conflict; a member with no history is fooled into
/// cosigning it, but alone its cosignature does not meet the quorum, so
/// `--require-quorum` fails there while the real log meets it. Cosignatures
/// survive a restart of the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_view_is_refused_by_witnesses_and_lacks_the_quorum() {
    let b = TestBroker::start().await;
    publish_n(&b, "shared", 2).await;
    let tmp = b.stop().await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // The operator keeps a copy of the log at size 2, with the same keys.
    let fork_tmp = tempfile::tempdir().unwrap();
    copy_dir(&tmp.path().join("pki"), &fork_tmp.path().join("pki"));
    copy_dir(&tmp.path().join("data"), &fork_tmp.path().join("data"));

    let real = TestBroker::start_in(tmp, Default::default()).await;
    publish_n(&real, "real", 1).await;
    let pki = real.pki();
    let states = tempfile::tempdir().unwrap();
    let state = |team: &str| states.path().join(format!("{team}.json"));
    for team in ["BR-CERTBR", "IN-CERTIN"] {
        let out = log_verify(&real.url(), &pki, team, &state(team), &["--cosign"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Two cosigners meet the dev quorum (any two members), shown by log head.
    let head = std::process::Command::new(env!("CARGO_BIN_EXE_certex"))
        .args([
            "log",
            "head",
            "--broker",
            &real.url(),
            "--as",
            "CN-CNCERT",
            "--pki",
        ])
        .arg(&pki)
        .output()
        .unwrap();
    assert!(
        head.status.success(),
        "{}",
        String::from_utf8_lossy(&head.stderr)
    );
    let head: serde_json::Value = serde_json::from_slice(&head.stdout).unwrap();
    assert_eq!(head["checkpoint"]["tree_size"], 3, "{head}");
    assert_eq!(head["checkpoint"]["quorum"]["met"], true, "{head}");
    assert_eq!(
        head["checkpoint"]["cosigners"],
        serde_json::json!(["BR-CERTBR", "IN-CERTIN"])
    );

    // The forged view: same origin and keys, other records after size 2.
    let forged = TestBroker::start_in(fork_tmp, Default::default()).await;
    publish_n(&forged, "forged", 2).await;
    let out = log_verify(
        &forged.url(),
        &pki,
        "IN-CERTIN",
        &state("IN-CERTIN"),
        &["--cosign"],
    );
    assert!(!out.status.success(), "a witness cosigned a split view");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to cosign"), "{err}");
    assert!(err.contains("LOG INCONSISTENT"), "{err}");
    assert!(err.contains("split view"), "{err}");
    assert!(out.stdout.is_empty(), "nothing printed as if fine");

    // A member with no history cosigns the forged view, but alone: no quorum.
    let out = log_verify(
        &forged.url(),
        &pki,
        "RU-GOVCERT",
        &state("RU-GOVCERT"),
        &["--cosign", "--require-quorum"],
    );
    assert!(!out.status.success(), "the forged view met the quorum");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("QUORUM NOT MET"), "{err}");
    assert!(err.contains("members: 1 cosigned, 2 needed"), "{err}");
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["checkpoint"]["quorum"]["met"], false, "{printed}");

    // The real log meets it, and keeps its cosignatures over a restart.
    let out = log_verify(
        &real.url(),
        &pki,
        "CN-CNCERT",
        &state("CN-CNCERT"),
        &["--require-quorum"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tmp = real.stop().await;
    let real = TestBroker::start_in(tmp, Default::default()).await;
    let out = log_verify(
        &real.url(),
        &pki,
        "CN-CNCERT",
        &state("CN-CNCERT"),
        &["--require-quorum"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        printed["checkpoint"]["cosigners"],
        serde_json::json!(["BR-CERTBR", "IN-CERTIN"]),
        "{printed}"
    );
}

/// Waits (10 s at most) until the broker's checkpoint covers `size`
/// records and carries a cosignature by `who`; returns the checkpoint.
async fn cosigned_by(
    c: &certex::client::connection::Client,
    who: &str,
    size: u64,
) -> certex::client::audit::CheckpointJson {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (cp, json) = certex::client::audit::fetch_checkpoint(c).await.unwrap();
        if cp.size >= size && json.cosigners.iter().any(|x| x == who) {
            return json;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no cosignature by {who} at size {size} within 10 s: {json:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The push path: the broker posts its checkpoints to a `certex witness
/// serve` listed in the directory's policy, keeps its cosignatures, and the
/// policy's quorum (two members and the standard witness) is met; the
/// witness keeps its state over a restart and the broker, restarted with no
/// memory of the witness, learns its size from the 409 and carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standard_witness_cosigns_through_the_push_path() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    make_pki(&pki);
    let key = tmp.path().join("witness.key");
    let init = std::process::Command::new(env!("CARGO_BIN_EXE_certex"))
        .args(["witness", "init", "--name", "witness.example/w1", "--key"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let vkey = String::from_utf8(init.stdout)
        .unwrap()
        .trim()
        .lines()
        .last()
        .unwrap()
        .to_owned();
    let log_vkey = std::fs::read_to_string(pki.join("broker/checkpoint.vkey")).unwrap();
    let state = tmp.path().join("witness-state");
    let logs = [log_vkey.trim().to_owned()];
    let witness = WitnessProcess::start(&state, &key, "witness.example/w1", &logs);
    assert_eq!(witness.vkey, vkey);
    let url = witness.url.clone();

    // The policy: any two members, and the standard witness too.
    let dir_path = pki.join("directory.toml");
    let mut file: certex::rules::directory::DirectoryFile =
        toml::from_str(&std::fs::read_to_string(&dir_path).unwrap()).unwrap();
    let policy = file.witness_policy.take().unwrap();
    let policy = policy.replace(
        "quorum members\n",
        &format!("witness W1 {vkey} {url}\ngroup both all members W1\nquorum both\n"),
    );
    file.witness_policy = Some(policy);
    std::fs::write(&dir_path, toml::to_string_pretty(&file).unwrap()).unwrap();

    let data = tmp.path().join("data");
    let serve = |pki: &std::path::Path| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_certex"));
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--witness-push",
            &url,
            "--pki",
        ])
        .arg(pki)
        .arg("--data")
        .arg(&data);
        BrokerProcess::spawn(cmd)
    };
    let broker = serve(&pki);
    let connect = |team: &'static str, url: String| {
        let files = certex::client::connection::ClientFiles::from_pki(&pki, team);
        async move {
            certex::client::connection::Client::connect(&url, &files, team)
                .await
                .unwrap()
        }
    };
    let cn = connect("CN-CNCERT", broker.url.clone()).await;
    let publish = |c: certex::client::connection::Client, tag: &'static str| async move {
        let env = c
            .seal(&body(
                "CN-CNCERT",
                pb::Tlp::Clear,
                community(),
                incident(tag),
            ))
            .unwrap();
        c.publish(env).await.unwrap().seq
    };
    publish(cn.clone(), "p1").await;
    publish(cn.clone(), "p2").await;
    let json = cosigned_by(&cn, "W1", 2).await;
    assert!(!json.quorum.as_ref().unwrap().met, "W1 alone: {json:?}");
    // The cosignature verifies with the witness's vkey, as any C2SP client would.
    let w1 = certex::rules::note::Vkey::parse(&vkey).unwrap();
    let note = certex::rules::note::Note::parse(&json.note).unwrap();
    assert!(certex::rules::note::open(&note, std::slice::from_ref(&w1)).is_ok());

    let states = tmp.path().join("states");
    std::fs::create_dir_all(&states).unwrap();
    for team in ["BR-CERTBR", "IN-CERTIN"] {
        let out = log_verify(&broker.url, &pki, team, &states.join(team), &["--cosign"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = log_verify(
        &broker.url,
        &pki,
        "US-CISA",
        &states.join("US"),
        &["--require-quorum"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["checkpoint"]["quorum"]["met"], true, "{line}");

    // The witness restarts on the same state; new checkpoints still get cosigned.
    let addr = url.trim_start_matches("http://").to_owned();
    drop(witness);
    let witness = WitnessProcess::start_at(&addr, &state, &key, "witness.example/w1", &logs);
    let seq = publish(cn.clone(), "p3").await;
    cosigned_by(&cn, "W1", seq).await;

    // The broker restarts without memory of the witness's size: the 409
    // tells it, and the next checkpoint is cosigned.
    drop(cn);
    drop(broker);
    let broker = serve(&pki);
    let cn = connect("CN-CNCERT", broker.url.clone()).await;
    let seq = publish(cn.clone(), "p4").await;
    cosigned_by(&cn, "W1", seq).await;
    drop(witness);
}

/// The directory refuses witness keys that would count twice or sign in
/// two roles, and policies where one witness is a member of two groups.
#[test]
fn witness_keys_and_policies_that_would_count_twice_are_refused() {
    use certex::rules::directory::{Directory, DirectoryFile};
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    make_pki(&pki);
    let path = pki.join("directory.toml");
    let original: DirectoryFile = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let load = |f: &DirectoryFile| {
        std::fs::write(&path, toml::to_string_pretty(f).unwrap()).unwrap();
        Directory::load(&path)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    load(&original).unwrap();

    let mut shared = original.clone();
    shared.teams[1].witness_key = shared.teams[0].witness_key.clone();
    let e = load(&shared).unwrap_err();
    assert!(e.contains("witness_key is also"), "{e}");

    let mut twice = original.clone();
    let policy = twice.witness_policy.take().unwrap();
    let policy = policy.replace(
        "quorum members\n",
        "group X any CN-CNCERT\ngroup Y any CN-CNCERT BR-CERTBR\ngroup Q all X Y\nquorum Q\n",
    );
    let policy = policy.replace("group members 2", "# group members 2");
    twice.witness_policy = Some(policy);
    let e = load(&twice).unwrap_err();
    assert!(e.contains("already a member"), "{e}");
}
