//! `certex demo`: the whole story in one process, narrated for a newcomer.
//! A temporary development PKI, a broker on an ephemeral loopback port, and
//! national teams exchanging over real mTLS with real signatures; then a
//! federation PKI and three national brokers (CN, BR, RU) in this process,
//! relaying to each other (SPEC §12): a bilateral report, group and
//! community warnings under an egress policy, a cross-border case, and each
//! broker's relay status.

use std::time::Duration;

use time::OffsetDateTime;

use crate::broker::config::BrokerConfig;
use crate::broker::server::Broker;
use crate::client::connection::{Client, ClientError, ClientFiles, connect_channel, verify_record};
use crate::client::verify;
use crate::proto::{self as pb, body::Content};
use crate::rules::directory::Directory;
use crate::rules::time::to_timestamp;

fn say(step: &str, text: &str) {
    println!("\n== {step}\n{text}");
}

fn e<E: std::fmt::Display>(x: E) -> String {
    x.to_string()
}

fn new_body(
    sender: &str,
    tlp: pb::Tlp,
    audience: pb::audience::Kind,
    content: Content,
) -> pb::Body {
    pb::Body {
        id: uuid::Uuid::new_v4().to_string(),
        sender: sender.to_owned(),
        created_at: Some(to_timestamp(OffsetDateTime::now_utc())),
        tlp: tlp as i32,
        audience: Some(pb::Audience {
            kind: Some(audience),
        }),
        exercise: String::new(),
        references: vec![],
        content: Some(content),
    }
}

fn to_teams(list: &[&str]) -> pb::audience::Kind {
    pb::audience::Kind::Teams(pb::TeamList {
        teams: list.iter().map(|s| s.to_string()).collect(),
    })
}

fn refused<T>(r: Result<T, ClientError>) -> String {
    match r {
        Ok(_) => "UNEXPECTEDLY ACCEPTED".into(),
        Err(ClientError::Status(s)) => format!("{:?}: {}", s.code(), s.message()),
        Err(other) => other.to_string(),
    }
}

/// Runs the demo; `Err` is a one-line reason.
pub async fn run() -> Result<(), String> {
    let tmp = tempfile::tempdir().map_err(e)?;
    let pki = tmp.path().join("pki");
    crate::cli::pki::init_sample(&pki)?;
    say(
        "1. A federation of national CERTs",
        &format!(
            "Development PKI in {}: one CA per country ({}), each a trust anchor only for its own\n\
             country's teams; a client certificate and an Ed25519 signing key per team; sharing groups\n\
             BRICS and SCO.",
            pki.display(),
            "BR, CN, DE, IN, RU, US, ZA"
        ),
    );

    let config = BrokerConfig::from_pki(
        &pki,
        &tmp.path().join("data"),
        "127.0.0.1:0".parse().map_err(e)?,
    );
    let broker = Broker::open(config).map_err(e)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(e)?;
    let addr = listener.local_addr().map_err(e)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = broker.clone();
    let server = tokio::spawn(async move {
        serving
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await
    });
    let url = format!("https://localhost:{}", addr.port());
    say(
        "2. The broker",
        &format!(
            "Listening on {addr}: TLS 1.3 only, client certificate required, sled database in a temp dir."
        ),
    );

    let connect = |team: &'static str| {
        let files = ClientFiles::from_pki(&pki, team);
        let url = url.clone();
        async move { Client::connect(&url, &files, team).await.map_err(e) }
    };
    let cn = connect("CN-CNCERT").await?;
    let br = connect("BR-CERTBR").await?;
    let ru = connect("RU-GOVCERT").await?;
    let us = connect("US-CISA").await?;
    let de = connect("DE-CERTBUND").await?;
    let directory = Directory::load(&pki.join("directory.toml")).map_err(e)?;
    let first_head = broker.log().head();

    // An incident report, TLP:AMBER, to one team.
    let report = new_body(
        "CN-CNCERT",
        pb::Tlp::Amber,
        to_teams(&["BR-CERTBR"]),
        Content::Incident(pb::IncidentReport {
            title: "Intrusion at a regional grid operator".into(),
            description: "Spear-phishing, then lateral movement to SCADA jump hosts; C2 below."
                .into(),
            category: pb::Category::Intrusions as i32,
            severity: pb::Severity::High as i32,
            sectors: vec!["energy".into()],
            detected_at: Some(to_timestamp(
                OffsetDateTime::now_utc() - Duration::from_secs(7200),
            )),
            observables: vec![
                pb::Observable {
                    r#type: pb::ObservableType::Ipv4 as i32,
                    value: "203.0.113.7".into(),
                },
                pb::Observable {
                    r#type: pb::ObservableType::Domain as i32,
                    value: "update-grid.example".into(),
                },
            ],
        }),
    );
    let r = cn.publish(cn.seal(&report).map_err(e)?).await.map_err(e)?;
    say(
        "3. CN-CNCERT reports an incident to BR-CERTBR (TLP:AMBER)",
        &format!(
            "Signed with CN-CNCERT's key and published. Receipt: seq {}, leaf {}…, durable on disk.",
            r.seq,
            &hex::encode(&r.leaf_hash)[..16]
        ),
    );
    let rec = br.get(get(r.seq)).await.map_err(e)?;
    let (body, _) = verify_record(&rec, &directory)?;
    println!(
        "BR-CERTBR reads record {}: {:?} from {}, signature verified against the directory key.",
        rec.seq,
        match &body.content {
            Some(Content::Incident(i)) => i.title.as_str(),
            _ => "?",
        },
        body.sender
    );
    println!(
        "US-CISA asks for the same record: {}",
        refused(us.get(get(r.seq)).await)
    );

    // A community warning.
    let warning = new_body(
        "RU-GOVCERT",
        pb::Tlp::Clear,
        pb::audience::Kind::Community(true),
        Content::Warning(pb::Warning {
            title: "Mass exploitation of a VPN appliance flaw".into(),
            summary: "Unauthenticated RCE exploited since 02:00 UTC; patch or isolate.".into(),
            severity: pb::Severity::Critical as i32,
            expires_at: None,
            cves: vec!["CVE-2024-3400".into()],
            observables: vec![pb::Observable {
                r#type: pb::ObservableType::Sha256 as i32,
                value: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into(),
            }],
            recommended_actions: vec![
                "apply the vendor hotfix".into(),
                "hunt for the web shell hash".into(),
            ],
        }),
    );
    // An automated feed (ZA-CSIRT) subscribes to high and critical warnings, live.
    let za = connect("ZA-CSIRT").await?;
    let mut feed = za
        .exchange()
        .subscribe(pb::SubscribeRequest {
            start: Some(pb::subscribe_request::Start::Tail(true)),
            filter: Some(pb::Filter {
                kinds: vec![pb::Kind::Warning as i32],
                min_severity: pb::Severity::High as i32,
                ..Default::default()
            }),
            follow: true,
        })
        .await
        .map_err(e)?
        .into_inner();
    let published = std::time::Instant::now();
    let w = ru.publish(ru.seal(&warning).map_err(e)?).await.map_err(e)?;
    let pushed = tokio::time::timeout(Duration::from_secs(10), feed.message())
        .await
        .map_err(|_| "the feed did not receive the warning".to_string())?
        .map_err(e)?
        .ok_or("the feed ended")?;
    let latency = published.elapsed().as_millis();
    let rec = de.get(get(w.seq)).await.map_err(e)?;
    verify_record(&rec, &directory)?;
    verify_record(&pushed, &directory)?;
    drop(feed);
    say(
        "4. RU-GOVCERT issues an early warning to the whole community (TLP:CLEAR, critical)",
        &format!(
            "Record {}. ZA-CSIRT's automated feed (warnings, high and above) had it pushed live, {latency} ms\n\
             after the publish call began; DE-CERTBUND reads it too. Both verify RU-GOVCERT's signature.",
            w.seq
        ),
    );

    // A tabletop drill runs on the same broker, apart from real traffic.
    let mut drill = new_body(
        "IN-CERTIN",
        pb::Tlp::Green,
        pb::audience::Kind::Group("BRICS".into()),
        Content::Incident(pb::IncidentReport {
            title: "DRILL: ransomware at a port operator".into(),
            description: "Tabletop inject 1".into(),
            category: pb::Category::MaliciousCode as i32,
            severity: pb::Severity::Critical as i32,
            ..Default::default()
        }),
    );
    drill.exercise = "BRICS-TTX-2026".into();
    let india = connect("IN-CERTIN").await?;
    let d = india
        .publish(india.seal(&drill).map_err(e)?)
        .await
        .map_err(e)?
        .seq;
    let real_read = refused(br.get(get(d)).await);
    let mut drill_get = get(d);
    drill_get.exercise =
        Some(crate::rules::access::TrafficScope::Exercise("BRICS-TTX-2026".into()).to_selector());
    let shown = br.render(&br.get(drill_get).await.map_err(e)?);
    say(
        "5. A BRICS tabletop drill on the same broker",
        &format!(
            "IN-CERTIN injects exercise traffic (record {d}, exercise BRICS-TTX-2026). A real-world read by\n\
             BR-CERTBR: {real_read}. Asking for the drill: {:?}, marked {}.",
            shown
                .body
                .as_ref()
                .and_then(|b| b.incident.as_ref())
                .map(|i| i.title.clone())
                .unwrap_or_default(),
            shown.marking.unwrap_or_default()
        ),
    );

    // Impersonation attempts.
    let forged = new_body(
        "CN-CNCERT",
        pb::Tlp::Clear,
        pb::audience::Kind::Community(true),
        warning
            .content
            .clone()
            .unwrap_or(Content::Retraction(Default::default())),
    );
    say(
        "6. Impersonation is refused",
        &format!(
            "US-CISA publishes a body claiming sender CN-CNCERT: {}",
            refused(us.publish(us.seal(&forged).map_err(e)?).await)
        ),
    );
    let ru_ca = std::fs::read_to_string(pki.join("ca/RU.pem")).map_err(e)?;
    let ru_ca_key = std::fs::read_to_string(pki.join("ca/RU.key")).map_err(e)?;
    let (cert, key) = crate::cli::pki::issue_team_certificate(&ru_ca, &ru_ca_key, "CN-CNCERT")?;
    let ca = std::fs::read(pki.join("broker/ca.pem")).map_err(e)?;
    let attempt = match connect_channel(&url, &ca, cert.as_bytes(), key.as_bytes()).await {
        Err(err) => format!("connection refused ({err})"),
        Ok(ch) => match crate::proto::directory_client::DirectoryClient::new(ch)
            .who_am_i(pb::WhoAmIRequest {})
            .await
        {
            Ok(t) => format!("UNEXPECTEDLY ACCEPTED as {}", t.into_inner().id),
            Err(s) => format!("TLS handshake refused ({:?})", s.code()),
        },
    };
    println!("A certificate for CN-CNCERT issued by the RU country CA: {attempt}");

    // Case assistance.
    let respond_by = OffsetDateTime::now_utc() + Duration::from_secs(48 * 3600);
    let request = new_body(
        "BR-CERTBR",
        pb::Tlp::Amber,
        to_teams(&["CN-CNCERT"]),
        Content::Request(pb::AssistanceRequest {
            to: "CN-CNCERT".into(),
            action: pb::Action::PreserveEvidence as i32,
            legal_basis: "Budapest-style mutual assistance; BR Law 12.965/2014 art. 15".into(),
            description:
                "Preserve logs of 203.0.113.7 for 90 days; a Brazilian bank was attacked from it."
                    .into(),
            respond_by: Some(to_timestamp(respond_by)),
            priority: pb::Severity::High as i32,
        }),
    );
    let case_id = request.id.clone();
    br.publish(br.seal(&request).map_err(e)?).await.map_err(e)?;
    say(
        "7. BR-CERTBR asks CN-CNCERT for assistance (preserve evidence)",
        &format!(
            "Case {case_id}, respond by {}.",
            crate::rules::time::format_time(respond_by)
        ),
    );
    use pb::CaseState::*;
    let steps: [(&Client, pb::CaseState, &str); 5] = [
        (&cn, Acknowledged, "received, checking jurisdiction"),
        (&cn, Accepted, "accepted under CN law"),
        (&cn, InProgress, "logs preserved at the hosting provider"),
        (
            &cn,
            Resolved,
            "90-day preservation order in place; reference CN-2026-118",
        ),
        (&br, Closed, "thank you"),
    ];
    for (i, (who, to, note)) in steps.iter().enumerate() {
        if i == 3 {
            println!(
                "  BR-CERTBR tries to resolve the case itself: {}",
                refused(br.update_case(&case_id, Resolved, "done", "").await)
            );
        }
        let r = who.update_case(&case_id, *to, note, "").await.map_err(e)?;
        println!(
            "  {} -> {:<12} (record {}): {note}",
            who.team(),
            crate::rules::vocab::Word::word(*to),
            r.seq
        );
    }
    println!(
        "US-CISA, not a party, asks for the request: {}",
        refused(us.get(get_by_id(&case_id)).await)
    );

    // Transparency.
    let key = crate::client::audit::read_public_key(&pki.join("broker/signing.pub")).map_err(e)?;
    let proof = crate::client::audit::prove(&br, &key, &case_id, &Default::default())
        .await
        .map_err(e)?;
    let head = broker.log().head();
    let old_root = verify::hash_from_slice(&first_head.root_hash).map_err(e)?;
    let new_root = verify::hash_from_slice(&head.root_hash).map_err(e)?;
    let path = br
        .consistency_proof(first_head.tree_size, head.tree_size)
        .await
        .map_err(e)?;
    verify::check_extends(
        (first_head.tree_size, &old_root),
        (head.tree_size, &new_root),
        &path,
    )
    .map_err(e)?;
    say(
        "8. Anyone can audit the log",
        &format!(
            "BR-CERTBR verifies its request, record {}, is in the signed tree of {} records ({} proof hashes),\n\
             and that this head extends the empty head from the start: nothing dropped, altered or reordered.\n\
             Root {}…",
            proof.seq,
            proof.tree_size,
            proof.path_len,
            &proof.root_hash[..16]
        ),
    );

    let evidence = witness_and_bundle(&pki, tmp.path(), &key, &url, &case_id).await?;

    // Key rotation: CN-CNCERT's key is replaced; what it signed before stays evidence.
    let at = OffsetDateTime::now_utc();
    let new_key = crate::cli::pki::rotate_signing_key(&pki, "CN-CNCERT", at)?;
    broker.reload_directory()?;
    let low_warning = |title: &str| {
        new_body(
            "CN-CNCERT",
            pb::Tlp::Clear,
            pb::audience::Kind::Community(true),
            Content::Warning(pb::Warning {
                title: title.into(),
                severity: pb::Severity::Low as i32,
                ..Default::default()
            }),
        )
    };
    let stale = cn
        .publish(
            cn.seal(&low_warning("Signed with the old key"))
                .map_err(e)?,
        )
        .await;
    let cn = connect("CN-CNCERT").await?;
    let fresh = cn
        .publish(
            cn.seal(&low_warning("Signed with the new key"))
                .map_err(e)?,
        )
        .await
        .map_err(e)?;
    let br = connect("BR-CERTBR").await?;
    let old = br.render(&br.get(get(1)).await.map_err(e)?);
    let new = br.render(&br.get(get(fresh.seq)).await.map_err(e)?);
    if !(old.verified && new.verified) {
        return Err(format!(
            "a record failed verification after the key rotation: {:?} {:?}",
            old.verify_error, new.verify_error
        ));
    }
    say(
        "9. A key rotation",
        &format!(
            "CN-CNCERT rotates its signing key (new key {new_key}); the old key is revoked from now on.\n\
             A message signed with the old key: {}\n\
             Record {} (new key): verified {}, key {}.\n\
             Record 1, logged before the revocation: verified {}, key {} - revocation does not erase the past.",
            refused(stale),
            fresh.seq,
            new.verified,
            new.key_status.as_deref().unwrap_or("?"),
            old.verified,
            old.key_status.as_deref().unwrap_or("?"),
        ),
    );

    play_drill(&pki, &url).await?;

    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    check_offline(&evidence)?;
    three_national_brokers(tmp.path()).await?;
    say(
        "Done",
        "Every message was signed end to end, stored byte for byte, and is provable in the log; across\n\
         brokers, each went only to the brokers of its readers, and each case has one authority.",
    );
    Ok(())
}

/// Step 8b: BR-CERTBR and IN-CERTIN witness the log (each checks the
/// head against its own state, then cosigns the checkpoint), and BR-CERTBR
/// takes a C2SP tlog-proof bundle of its request. The bundle, the record
/// and a copy of the directory go to a directory that outlives the demo.
async fn witness_and_bundle(
    pki: &std::path::Path,
    tmp: &std::path::Path,
    key: &ed25519_dalek::VerifyingKey,
    url: &str,
    case_id: &str,
) -> Result<std::path::PathBuf, String> {
    use crate::client::audit;
    let connect = |team: &str| {
        let files = ClientFiles::from_pki(pki, team);
        let team = team.to_owned();
        async move { Client::connect(url, &files, &team).await.map_err(e) }
    };
    let mut lines = Vec::new();
    for team in ["BR-CERTBR", "IN-CERTIN"] {
        let c = connect(team).await?;
        let state = tmp.join(format!("{team}-log-state.json"));
        let audited = audit::verify_state(&c, key, &state).await.map_err(e)?;
        let root = hex::decode(&audited.root_hash)
            .ok()
            .and_then(|r| verify::hash_from_slice(&r).ok())
            .ok_or("the verified head has no root")?;
        let witness = crate::rules::envelope::read_signing_key(
            &pki.join("teams").join(team).join("witness.key"),
        )?;
        let done = audit::cosign_latest(&c, (audited.tree_size, &root), &witness, &state)
            .await
            .map_err(e)?;
        lines.push(format!(
            "  {team} checks the head of {} records extends its kept state, then cosigns as {}",
            audited.tree_size, done.witness
        ));
    }
    let br = connect("BR-CERTBR").await?;
    let (_, checkpoint) = audit::fetch_checkpoint(&br).await.map_err(e)?;
    let quorum = checkpoint
        .quorum
        .as_ref()
        .map(|q| {
            format!(
                "quorum {}: {}",
                q.quorum,
                if q.met { "met" } else { "NOT met" }
            )
        })
        .unwrap_or_else(|| "no quorum policy".into());
    let bundle = audit::tlog_proof(&br, case_id, &Default::default())
        .await
        .map_err(e)?;
    let record = br.render(&br.get(get_by_id(case_id)).await.map_err(e)?);
    let out = std::env::temp_dir().join(format!("certex-demo-evidence-{}", std::process::id()));
    crate::cli::pki::mkdir(&out)?;
    crate::cli::pki::write(&out.join("request.tlog-proof"), bundle.as_bytes(), true)?;
    crate::cli::pki::write(
        &out.join("request.json"),
        serde_json::to_string_pretty(&record).map_err(e)?.as_bytes(),
        true,
    )?;
    // The directory and the public anchor certificates it names.
    let dir_text = std::fs::read(pki.join("directory.toml")).map_err(e)?;
    crate::cli::pki::write(&out.join("directory.toml"), &dir_text, true)?;
    crate::cli::pki::mkdir(&out.join("ca"))?;
    for entry in std::fs::read_dir(pki.join("ca")).map_err(e)? {
        let path = entry.map_err(e)?.path();
        if path.extension().is_some_and(|x| x == "pem") {
            let name = path.file_name().ok_or("anchor without a name")?;
            let cert = std::fs::read(&path).map_err(e)?;
            crate::cli::pki::write(&out.join("ca").join(name), &cert, false)?;
        }
    }
    say(
        "8b. Members witness the log",
        &format!(
            "A broker could show each member a different log (a split view); members cosign its checkpoints\n\
             only after checking them against their own history, and a checkpoint counts once enough have.\n\
             {}\n\
             The checkpoint, a C2SP signed note (origin, size, root; the broker's signature, then the cosignatures):\n    \
             {}\n\
             Cosigners {:?}; {quorum}.\n\
             BR-CERTBR takes the evidence bundle of its request (C2SP tlog-proof: record bytes, inclusion path,\n\
             cosigned checkpoint) to {}",
            lines.join("\n"),
            checkpoint.note.trim_end().replace('\n', "\n    "),
            checkpoint.cosigners,
            out.join("request.tlog-proof").display()
        ),
    );
    Ok(out)
}

/// Step 11: the bundle verifies with the broker stopped.
fn check_offline(out: &std::path::Path) -> Result<(), String> {
    let dir = Directory::load(&out.join("directory.toml")).map_err(e)?;
    let bundle = std::fs::read_to_string(out.join("request.tlog-proof")).map_err(e)?;
    let record: crate::client::draft::RecordJson =
        serde_json::from_str(&std::fs::read_to_string(out.join("request.json")).map_err(e)?)
            .map_err(e)?;
    let checked = crate::client::audit::check_proof(&bundle, &dir, Some(&record))?;
    crate::client::audit::require_quorum(checked.quorum.as_ref())?;
    say(
        "11. Evidence with the broker stopped",
        &format!(
            "The broker is down. From the bundle alone: record {} ({} by {}) hashes to a leaf included in the\n\
             checkpoint of {} records, signed by {}, cosigned by {:?} (quorum met); the request's own signature\n\
             verifies with key {}. Check it yourself:\n  \
             certex log check-proof {} --record {} --directory {} --require-quorum",
            checked.seq,
            checked.kind,
            checked.sender,
            checked.tree_size,
            checked.origin,
            checked.cosigners,
            checked.signature_key,
            out.join("request.tlog-proof").display(),
            out.join("request.json").display(),
            out.join("directory.toml").display(),
        ),
    );
    Ok(())
}

/// The short drill of `examples/drills/demo-quick.toml` at speed 600:
/// BR-CERTBR and IN-CERTIN answer through automated participants,
/// RU-GOVCERT stays silent; the report goes to a directory that outlives
/// the demo.
async fn play_drill(pki: &std::path::Path, url: &str) -> Result<(), String> {
    use crate::drill::control::{self, Identities, RunOptions};
    use crate::drill::respond::{self, Rules};
    use crate::drill::scenario::Scenario;
    use crate::rules::access::TrafficScope;

    const SCENARIO: &str = include_str!("../../examples/drills/demo-quick.toml");
    let directory = Directory::load(&pki.join("directory.toml")).map_err(e)?;
    let s = Scenario::parse(
        "examples/drills/demo-quick.toml",
        SCENARIO,
        Some(&directory),
    )
    .map_err(e)?;
    let connect = |team: &str| {
        let files = ClientFiles::from_pki(pki, team);
        let team = team.to_owned();
        async move { Client::connect(url, &files, &team).await.map_err(e) }
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (tx, mut actions) = tokio::sync::mpsc::unbounded_channel();
    let mut participants = Vec::new();
    for team in ["BR-CERTBR", "IN-CERTIN"] {
        let client = connect(team).await?;
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut stop = stop_rx.clone();
        let tx = tx.clone();
        participants.push(tokio::spawn(async move {
            respond::respond(
                client,
                TrafficScope::Exercise("DEMO-QUICK-1".into()),
                Rules::with_delay(Duration::from_millis(300)),
                async move {
                    let _ = stop.changed().await;
                },
                move || {
                    let _ = ready_tx.send(());
                },
                tx,
            )
            .await
        }));
        ready_rx
            .await
            .map_err(|_| format!("the automated participant {team} did not start"))?;
    }
    drop(tx);
    let mut teams = std::collections::BTreeMap::new();
    for team in ["BR-CERTBR", "IN-CERTIN", "RU-GOVCERT"] {
        teams.insert(team.to_owned(), connect(team).await?);
    }
    let ids = Identities {
        control: connect("ZA-CSIRT").await?,
        teams,
    };
    let opts = RunOptions {
        broker: url.to_owned(),
        speed: None,
        log_key: crate::client::audit::read_public_key(&pki.join("broker/signing.pub")).ok(),
        directory: Some(directory),
        scenario_file: "examples/drills/demo-quick.toml".into(),
        progress: false,
    };
    let report = control::run(&s, &ids, &opts, std::future::pending()).await?;
    let _ = stop_tx.send(true);
    for p in participants {
        let _ = p.await;
    }
    let mut answered = 0;
    while actions.try_recv().is_ok() {
        answered += 1;
    }
    let out = std::env::temp_dir().join(format!("certex-demo-drill-{}", std::process::id()));
    let html = crate::cli::drill::write_report(&report, &out).map_err(e)?;
    let lines: Vec<String> = report
        .expectations
        .iter()
        .map(|x| {
            format!(
                "  {} {:<10} {} {} — {}",
                x.id, x.status, x.team, x.kind, x.note
            )
        })
        .collect();
    say(
        "10. A tabletop drill",
        &format!(
            "ZA-CSIRT runs the control cell of \"{}\" at speed {} (2 h of exercise time in {:.0} s): a\n\
             communication check, an incident to BR-CERTBR and IN-CERTIN, and a takedown request that is\n\
             played only once BR-CERTBR's warning has come in. BR-CERTBR and IN-CERTIN are automated\n\
             participants ({answered} answers); RU-GOVCERT stays silent. Everything carries the exercise id\n\
             {}, so no real-world reader sees it.\n\
             Expectations scored ({} of {} points):\n{}\n\
             Isolation check: {}\n\
             {} of {} records proved in the log under a signed head. After-action report: {html}\n\
             (also report.md and report.json there). Run your own: certex drill run examples/drills/grid-ransomware.toml",
            report.exercise.name,
            report.exercise.speed,
            report.exercise.played_s / report.exercise.speed,
            report.exercise.id,
            report.overall.score,
            report.overall.max_score,
            lines.join("\n"),
            if report.isolation.passed {
                "passed"
            } else {
                "FAILED"
            },
            report.evidence.proved,
            report.isolation.exercise_records,
        ),
    );
    if !report.isolation.passed {
        return Err(format!(
            "drill isolation check failed: {}",
            report.isolation.statement
        ));
    }
    Ok(())
}

fn get(seq: u64) -> pb::GetRequest {
    pb::GetRequest {
        selector: Some(pb::get_request::Selector::Seq(seq)),
        sender: String::new(),
        exercise: None,
    }
}

fn get_by_id(id: &str) -> pb::GetRequest {
    pb::GetRequest {
        selector: Some(pb::get_request::Selector::Id(id.to_owned())),
        sender: String::new(),
        exercise: None,
    }
}

// Step 12: a federation of three national brokers (SPEC §12).

const FED_CN: &str = "CN-CNCERT";
const FED_BR: &str = "BR-CERTBR";
const FED_BR2: &str = "BR-CTIR";
const FED_RU: &str = "RU-GOVCERT";

/// How long the demo waits for relay to catch up before it gives up.
const RELAY_WAIT: Duration = Duration::from_secs(10);

/// Waits (at most [`RELAY_WAIT`]) until every broker of `fed` has relayed
/// everything it holds to every peer (lag 0 everywhere); how long it took.
async fn relay_settled(
    fed: &crate::cli::federation::LocalFederation,
    brokers: &[&str],
) -> Result<Duration, String> {
    let started = std::time::Instant::now();
    loop {
        let mut behind = Vec::new();
        for id in brokers {
            let st = fed
                .broker(id)
                .ok_or_else(|| format!("broker {id} is not running"))?
                .federation_status()
                .ok_or_else(|| format!("broker {id} is not in a federation"))??;
            for p in st.peers.iter().filter(|p| p.lag > 0) {
                behind.push(format!(
                    "{id} is {} records behind for {} ({})",
                    p.lag, p.broker, p.last_error
                ));
            }
        }
        if behind.is_empty() {
            return Ok(started.elapsed());
        }
        if started.elapsed() >= RELAY_WAIT {
            return Err(format!(
                "relay did not catch up within {} s: {}",
                RELAY_WAIT.as_secs(),
                behind.join("; ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Where the sender's home broker relayed a record, in words.
fn relays_of(rec: &pb::Record) -> String {
    if rec.relays.is_empty() {
        return "nowhere (no reader on another broker)".into();
    }
    rec.relays
        .iter()
        .map(|r| match r.state.as_str() {
            "relayed" => format!("{} relayed (its record {})", r.broker, r.peer_seq),
            other => format!("{} {other} ({})", r.broker, r.reason),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn origin_of(rec: &pb::Record) -> String {
    match &rec.origin {
        Some(o) => format!("origin {} record {}", o.broker, o.seq),
        None => "published here".into(),
    }
}

/// A case as one broker shows it: state and (sender, transition) history.
async fn case_view(c: &Client, requester: &str, id: &str) -> Result<(String, Vec<String>), String> {
    use crate::rules::vocab::Word;
    let case = c
        .get_case(pb::GetCaseRequest {
            id: id.to_owned(),
            requester: requester.to_owned(),
            ..Default::default()
        })
        .await
        .map_err(e)?;
    let state = case
        .summary
        .as_ref()
        .and_then(|s| pb::CaseState::try_from(s.state).ok())
        .unwrap_or(pb::CaseState::Unspecified);
    let history = case
        .history
        .iter()
        .map(|ev| {
            format!(
                "{} {}",
                ev.sender,
                pb::CaseState::try_from(ev.transition)
                    .unwrap_or(pb::CaseState::Unspecified)
                    .word()
            )
        })
        .collect();
    Ok((state.word().to_owned(), history))
}

/// Three national brokers (CN, BR, RU) in this process, each serving its own
/// country's teams, relaying to each other over mTLS with broker identities.
async fn three_national_brokers(tmp: &std::path::Path) -> Result<(), String> {
    use crate::cli::federation::LocalFederation;
    use crate::federation::egress::Egress;

    let pki = tmp.join("federation-pki");
    let teams: Vec<String> = [FED_CN, FED_BR, FED_BR2, FED_RU]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let groups = vec![(
        "GRID".to_owned(),
        vec![FED_CN.to_owned(), FED_BR.to_owned(), FED_BR2.to_owned()],
    )];
    let brokers = ["CN", "BR", "RU"];
    crate::cli::pki::init_federation(&pki, &teams, &groups, &brokers.map(str::to_owned))?;
    let mut fed = LocalFederation::new(&pki, &tmp.join("federation-data"), &brokers)?;
    // CN's operator lets only TLP:CLEAR and GREEN leave for RU.
    fed.set_egress(
        "CN",
        "RU",
        Egress {
            tlp: Some(vec!["clear".into(), "green".into()]),
            ..Default::default()
        },
    );
    fed.start_all().await?;
    let story = federation_story(&fed, &pki, &brokers).await;
    fed.stop_all().await;
    story
}

async fn federation_story(
    fed: &crate::cli::federation::LocalFederation,
    pki: &std::path::Path,
    brokers: &[&str],
) -> Result<(), String> {
    let home = |team: &str| team[..2].to_owned();
    let connect = |team: &'static str| {
        let files = ClientFiles::from_pki(pki, team);
        let url = fed.url(&home(team));
        async move { Client::connect(&url, &files, team).await.map_err(e) }
    };
    let cn = connect(FED_CN).await?;
    let br = connect(FED_BR).await?;
    let ctir = connect(FED_BR2).await?;
    let ru = connect(FED_RU).await?;
    let directory = Directory::load(&pki.join("directory.toml")).map_err(e)?;
    let broker = |id: &str| {
        fed.broker(id)
            .ok_or_else(|| format!("broker {id} is not running"))
    };
    say(
        "12. Three national brokers",
        &format!(
            "Sovereignty: each nation runs its own broker, and a bilateral exchange never sits on a third\n\
             nation's machine. A federation PKI (pki init --brokers CN,BR,RU) in\n  {}\n\
             and three brokers in this process:\n  CN {}   BR {}   RU {}\n\
             each with a certificate from its own country's CA naming urn:certex:broker:<ID>, relaying to\n\
             each other over mTLS.\n\
             Teams connect only to their home broker: {FED_CN} to CN; {FED_BR} and {FED_BR2} to BR;\n\
             {FED_RU} to RU. Group GRID = {FED_CN}, {FED_BR}, {FED_BR2}.\n\
             CN's egress policy for RU: only TLP:CLEAR and GREEN leave ([peers.RU.egress] tlp = [\"clear\", \"green\"]).",
            pki.display(),
            fed.url("CN"),
            fed.url("BR"),
            fed.url("RU"),
        ),
    );

    // (a) A bilateral report stays bilateral.
    let report = new_body(
        FED_CN,
        pb::Tlp::Amber,
        to_teams(&[FED_BR]),
        Content::Incident(pb::IncidentReport {
            title: "C2 for the grid intrusion hosted in a Sao Paulo data centre".into(),
            description: "Beaconing every 300 s from three SCADA jump hosts to the address below."
                .into(),
            category: pb::Category::Intrusions as i32,
            severity: pb::Severity::High as i32,
            sectors: vec!["energy".into()],
            detected_at: Some(to_timestamp(
                OffsetDateTime::now_utc() - Duration::from_secs(3600),
            )),
            observables: vec![pb::Observable {
                r#type: pb::ObservableType::Ipv4 as i32,
                value: "198.51.100.23".into(),
            }],
        }),
    );
    let r = cn.publish(cn.seal(&report).map_err(e)?).await.map_err(e)?;
    let took = relay_settled(fed, brokers).await?;
    let at_br = br.get(get_by_id(&report.id)).await.map_err(e)?;
    verify_record(&at_br, &directory)?;
    if at_br.leaf_hash != r.leaf_hash {
        return Err("the relayed report is not byte-identical".into());
    }
    let mine = cn.get(get_by_id(&report.id)).await.map_err(e)?;
    let ru_read = refused(ru.get(get_by_id(&report.id)).await);
    let ru_log = broker("RU")?.log();
    if ru_log
        .storage()
        .logged(&report.id, FED_CN)
        .map_err(e)?
        .is_some()
    {
        return Err("the bilateral report reached RU's broker".into());
    }
    say(
        "12a. A bilateral report: CN-CNCERT to BR-CERTBR (TLP:AMBER)",
        &format!(
            "{FED_CN} publishes at its home broker: CN's record {}. CN relays the exact envelope to BR\n\
             (relay caught up in {} ms).\n\
             {FED_BR} reads it at BR: BR's record {}, {}, same leaf hash, {FED_CN}'s signature verified.\n\
             {FED_CN}'s get shows where it went: {}.\n\
             {FED_RU} asks its broker for it: {ru_read}.\n\
             RU's own log ({} records) holds no record with that id: it never left for RU.",
            r.seq,
            took.as_millis(),
            at_br.seq,
            origin_of(&at_br),
            relays_of(&mine),
            ru_log.head().tree_size,
        ),
    );

    // (b) A group warning, a community warning, and CN's egress policy.
    let group_warning = new_body(
        FED_CN,
        pb::Tlp::Green,
        pb::audience::Kind::Group("GRID".into()),
        Content::Warning(pb::Warning {
            title: "Grid operators: block the C2 address at the border".into(),
            summary: "The same actor probes transmission operators' VPN portals.".into(),
            severity: pb::Severity::High as i32,
            observables: vec![pb::Observable {
                r#type: pb::ObservableType::Ipv4 as i32,
                value: "198.51.100.23".into(),
            }],
            recommended_actions: vec!["block at the border".into()],
            ..Default::default()
        }),
    );
    let amber_warning = new_body(
        FED_CN,
        pb::Tlp::Amber,
        pb::audience::Kind::Community(true),
        Content::Warning(pb::Warning {
            title: "Phishing kit impersonating national CERTs".into(),
            summary: "Lures signed as CERT newsletters; the kit harvests VPN credentials.".into(),
            severity: pb::Severity::Medium as i32,
            ..Default::default()
        }),
    );
    let clear_warning = new_body(
        FED_RU,
        pb::Tlp::Clear,
        pb::audience::Kind::Community(true),
        Content::Warning(pb::Warning {
            title: "Mass scanning for an exposed industrial protocol".into(),
            summary: "Scanning of TCP/502 from a botnet since 04:00 UTC.".into(),
            severity: pb::Severity::Medium as i32,
            ..Default::default()
        }),
    );
    let g = cn
        .publish(cn.seal(&group_warning).map_err(e)?)
        .await
        .map_err(e)?;
    cn.publish(cn.seal(&amber_warning).map_err(e)?)
        .await
        .map_err(e)?;
    ru.publish(ru.seal(&clear_warning).map_err(e)?)
        .await
        .map_err(e)?;
    relay_settled(fed, brokers).await?;
    let mut group_seq = 0;
    for c in [&br, &ctir] {
        let rec = c.get(get_by_id(&group_warning.id)).await.map_err(e)?;
        verify_record(&rec, &directory)?;
        group_seq = rec.seq;
    }
    let ru_group = refused(ru.get(get_by_id(&group_warning.id)).await);
    let group_relays = relays_of(&cn.get(get_by_id(&group_warning.id)).await.map_err(e)?);
    let ctir_amber = ctir.get(get_by_id(&amber_warning.id)).await.map_err(e)?;
    verify_record(&ctir_amber, &directory)?;
    let amber_relays = relays_of(&cn.get(get_by_id(&amber_warning.id)).await.map_err(e)?);
    let ru_amber = refused(ru.get(get_by_id(&amber_warning.id)).await);
    let mut clear_reads = Vec::new();
    for c in [&cn, &ctir] {
        let rec = c.get(get_by_id(&clear_warning.id)).await.map_err(e)?;
        verify_record(&rec, &directory)?;
        clear_reads.push(format!("{} ({})", c.team(), origin_of(&rec)));
    }
    let ru_relays = relays_of(&ru.get(get_by_id(&clear_warning.id)).await.map_err(e)?);
    say(
        "12b. A group warning, community warnings and an egress policy",
        &format!(
            "{FED_CN} warns group GRID (TLP:GREEN, CN's record {}). One relay to BR serves both Brazilian\n\
             members: {FED_BR} and {FED_BR2} read it at their home broker as BR's record {group_seq},\n\
             signature verified. CN's relays: {group_relays}.\n\
             {FED_RU}, not a member, asks its broker: {ru_group}.\n\
             {FED_CN} warns the whole community at TLP:AMBER; {FED_BR2} reads it at BR. CN's relays:\n  \
             {amber_relays}.\n\
             {FED_RU} asks for it: {ru_amber}\n\
             (CN's operator decided that, not RU's).\n\
             {FED_RU} warns the community at TLP:CLEAR; read by {}.\n\
             RU's relays: {ru_relays}.",
            g.seq,
            clear_reads.join(" and "),
        ),
    );

    // (c) A case across a border: BR, the addressee's home, is its authority.
    let request = new_body(
        FED_CN,
        pb::Tlp::Amber,
        to_teams(&[FED_BR]),
        Content::Request(pb::AssistanceRequest {
            to: FED_BR.into(),
            action: pb::Action::Takedown as i32,
            legal_basis: "bilateral MoU on cyber incident response, art. 4".into(),
            description: "Take down the C2 server at 198.51.100.23 and preserve its disk image."
                .into(),
            respond_by: Some(to_timestamp(
                OffsetDateTime::now_utc() + Duration::from_secs(24 * 3600),
            )),
            priority: pb::Severity::High as i32,
        }),
    );
    let case_id = request.id.clone();
    let opened = cn.publish(cn.seal(&request).map_err(e)?).await.map_err(e)?;
    relay_settled(fed, brokers).await?;
    say(
        "12c. A case across a border: CN-CNCERT asks BR-CERTBR for a takedown",
        &format!(
            "Request {case_id}: CN's record {}, relayed to BR.\n\
             BR, the addressee's home broker, is the case's authority: it orders every update against the\n\
             case, and the outcome comes back by relay.",
            opened.seq
        ),
    );
    use pb::CaseState::*;
    let steps: [(&Client, pb::CaseState, &str); 5] = [
        (&br, Acknowledged, "received; checking under Brazilian law"),
        (&br, Accepted, "court order requested"),
        (&br, InProgress, "hosting provider notified"),
        (&br, Resolved, "server seized, disk image preserved"),
        (&cn, Closed, "thank you"),
    ];
    for (i, (who, to, note)) in steps.iter().enumerate() {
        if i == 2 {
            let (state, _) = case_view(&cn, FED_CN, &case_id).await?;
            println!("  {FED_CN} looks at its own broker CN: the case is {state}.");
        }
        if i == 3 {
            println!(
                "  {FED_CN} tries to resolve its own request: {}",
                refused(
                    cn.update_case_of(Some(FED_CN), &case_id, Resolved, "done", "")
                        .await
                )
            );
        }
        let r = who
            .update_case_of(Some(FED_CN), &case_id, *to, note, "")
            .await
            .map_err(e)?;
        let at = home(who.team());
        let rec = who
            .get(pb::GetRequest {
                selector: Some(pb::get_request::Selector::Seq(r.seq)),
                sender: String::new(),
                exercise: None,
            })
            .await
            .map_err(e)?;
        let route = match &rec.origin {
            Some(o) => format!(
                "handed to the authority {}, ordered there as its record {}, relayed back",
                o.broker, o.seq
            ),
            None => "ordered here".into(),
        };
        println!(
            "  {} -> {:<12} at {at}, its record {} ({route}): {note}",
            who.team(),
            crate::rules::vocab::Word::word(*to),
            r.seq,
        );
        relay_settled(fed, brokers).await?;
    }
    let at_cn = case_view(&cn, FED_CN, &case_id).await?;
    let at_br = case_view(&br, FED_CN, &case_id).await?;
    if at_cn != at_br {
        return Err(format!(
            "the brokers disagree on case {case_id}: CN {at_cn:?}, BR {at_br:?}"
        ));
    }
    println!(
        "Both brokers agree: case {} at CN and at BR, the same {} updates in the same order\n\
         ({}).\n{FED_RU} asks for the request: {}",
        at_cn.0,
        at_cn.1.len(),
        at_cn.1.join(", "),
        refused(ru.get(get_by_id(&case_id)).await)
    );

    // (d) Each operator asks its own broker, with the broker's identity.
    let mut rows = vec![format!(
        "  {:<7}{:<6}{:<11}{:>9}{:>6}{:>9}{:>10}{:>9}",
        "broker", "peer", "connected", "position", "lag", "relayed", "withheld", "refused"
    )];
    for id in brokers {
        let dir = pki.join("brokers").join(id);
        let read = |name: &str| std::fs::read(dir.join(name)).map_err(e);
        let channel = connect_channel(
            &fed.url(id),
            &read("ca.pem")?,
            &read("cert.pem")?,
            &read("key.pem")?,
        )
        .await
        .map_err(e)?;
        let st = pb::federation_client::FederationClient::new(channel)
            .status(pb::FederationStatusRequest {})
            .await
            .map_err(e)?
            .into_inner();
        for p in &st.peers {
            rows.push(format!(
                "  {:<7}{:<6}{:<11}{:>9}{:>6}{:>9}{:>10}{:>9}",
                st.broker,
                p.broker,
                match (p.connected, p.last_error.is_empty()) {
                    (true, _) => "yes",
                    (false, true) => "-",
                    (false, false) => "no",
                },
                p.position,
                p.lag,
                p.relayed,
                p.withheld,
                p.refused
            ));
        }
    }
    say(
        "12d. Relay status per peer (certex federation status --broker-id ID)",
        &format!(
            "Each operator asks its own broker over mTLS with the broker's certificate (teams may not):\n{}\n\
             (connected \"-\": nothing has had to go there yet.) Lag 0 everywhere: every record is where its\n\
             readers are, and nowhere else.",
            rows.join("\n")
        ),
    );
    Ok(())
}
