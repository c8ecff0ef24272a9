//! `certex demo`: the whole story in one process, narrated for a newcomer.
//! A temporary development PKI, a broker on an ephemeral loopback port, and
//! national teams exchanging over real mTLS with real signatures.

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
    say(
        "Done",
        "Every message was signed end to end, stored byte for byte, and is provable in the log.",
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
