//! Case assistance over a real broker: lifecycles through the CLI and gRPC,
//! every invalid transition, racing updates, visibility and deadlines.

mod common;

use std::time::Duration;

use certex::client::connection::Client;
use certex::proto::{self as pb, CaseState, body::Content};
use common::*;
use time::OffsetDateTime;
use tonic::Code;

fn request_body(from: &str, to: &str, cc: &[&str], respond_in_secs: i64) -> pb::Body {
    let mut audience = vec![to];
    audience.extend_from_slice(cc);
    let respond_by = OffsetDateTime::now_utc() + time::Duration::seconds(respond_in_secs);
    body(
        from,
        pb::Tlp::Amber,
        teams(&audience),
        Content::Request(pb::AssistanceRequest {
            to: to.into(),
            action: pb::Action::PreserveEvidence as i32,
            legal_basis: "MLAT art. 18".into(),
            description: "Preserve logs for 203.0.113.7".into(),
            respond_by: Some(certex::rules::time::to_timestamp(respond_by)),
            priority: pb::Severity::High as i32,
        }),
    )
}

async fn open_case(requester: &Client, to: &str, cc: &[&str], respond_in_secs: i64) -> String {
    let b = request_body(requester.team(), to, cc, respond_in_secs);
    requester
        .publish(requester.seal(&b).unwrap())
        .await
        .unwrap();
    b.id
}

async fn case(c: &Client, id: &str) -> pb::Case {
    case_of(c, "", id).await
}

/// The case `(requester, id)` with its whole history (every page); `""`
/// leaves the requester out.
async fn case_of(c: &Client, requester: &str, id: &str) -> pb::Case {
    c.get_case(pb::GetCaseRequest {
        id: id.into(),
        requester: requester.into(),
        ..Default::default()
    })
    .await
    .unwrap()
}

fn state_of(c: &pb::Case) -> CaseState {
    CaseState::try_from(c.summary.as_ref().unwrap().state).unwrap()
}

fn note_for(t: CaseState) -> (&'static str, &'static str) {
    match t {
        CaseState::Declined | CaseState::Withdrawn => ("", "outside our jurisdiction"),
        _ => ("done", ""),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_through_grpc_with_decline_and_withdraw_paths() {
    let b = TestBroker::start().await;
    let br = b.client("BR-CERTBR").await;
    let cn = b.client("CN-CNCERT").await;
    let id = open_case(&br, "CN-CNCERT", &["IN-CERTIN"], 3600).await;
    assert_eq!(state_of(&case(&cn, &id).await), CaseState::Open);
    for (who, t, note) in [
        (&cn, CaseState::Acknowledged, ""),
        (&cn, CaseState::Accepted, ""),
        (&cn, CaseState::InProgress, "logs preserved"),
        (&cn, CaseState::InProgress, "provider confirmed"),
        (&cn, CaseState::Resolved, "order CN-118 in place"),
        (&br, CaseState::Closed, ""),
    ] {
        who.update_case(&id, t, note, "").await.unwrap();
        assert_eq!(state_of(&case(&br, &id).await), t);
    }
    let c = case(&b.client("IN-CERTIN").await, &id).await; // cc reads the case
    let history: Vec<_> = c
        .history
        .iter()
        .map(|h| {
            (
                h.sender.as_str(),
                CaseState::try_from(h.transition).unwrap(),
            )
        })
        .collect();
    assert_eq!(history.len(), 6);
    assert_eq!(history[0], ("CN-CNCERT", CaseState::Acknowledged));
    assert_eq!(history[5], ("BR-CERTBR", CaseState::Closed));
    assert_eq!(c.history[2].note, "logs preserved");
    assert!(c.time_to_acknowledge_ms <= c.time_to_resolve_ms);
    assert!(c.updates.iter().all(|u| br.render(u).verified));

    // Decline path: a reason is required.
    let id = open_case(&br, "CN-CNCERT", &[], 3600).await;
    cn.update_case(&id, CaseState::Acknowledged, "", "")
        .await
        .unwrap();
    let (c, msg) = code(cn.update_case(&id, CaseState::Declined, "", "").await);
    assert_eq!(c, Code::InvalidArgument);
    assert!(msg.contains("case_update.reason: is required"), "{msg}");
    cn.update_case(&id, CaseState::Declined, "", "not a crime under CN law")
        .await
        .unwrap();
    assert_eq!(state_of(&case(&br, &id).await), CaseState::Declined);
    assert_eq!(
        case(&br, &id).await.history[1].reason,
        "not a crime under CN law"
    );
    br.update_case(&id, CaseState::Closed, "", "")
        .await
        .unwrap();

    // Withdraw path.
    let id = open_case(&br, "CN-CNCERT", &[], 3600).await;
    cn.update_case(&id, CaseState::Acknowledged, "", "")
        .await
        .unwrap();
    br.update_case(&id, CaseState::Withdrawn, "", "resolved domestically")
        .await
        .unwrap();
    assert_eq!(state_of(&case(&cn, &id).await), CaseState::Withdrawn);
    let (c, msg) = code(cn.update_case(&id, CaseState::Accepted, "", "").await);
    assert_eq!(c, Code::FailedPrecondition);
    assert!(msg.contains("case is withdrawn"), "{msg}");
}

/// SPEC §6 written out as a table, independently of `certex::rules::cases`.
fn allowed(state: CaseState, to: CaseState, requester: bool) -> bool {
    use CaseState::*;
    let by_addressee = matches!(
        (state, to),
        (Open, Acknowledged)
            | (Acknowledged, Accepted | Declined)
            | (Accepted | InProgress, InProgress | Resolved)
    );
    let by_requester = matches!(
        (state, to),
        (Resolved | Declined, Closed) | (Open | Acknowledged | Accepted | InProgress, Withdrawn)
    );
    if requester {
        by_requester
    } else {
        by_addressee
    }
}

/// The updates that bring a fresh case to `state`.
fn path_to(state: CaseState) -> Vec<(bool, CaseState)> {
    use CaseState::*;
    let (r, a) = (true, false);
    match state {
        Open => vec![],
        Acknowledged => vec![(a, Acknowledged)],
        Accepted => vec![(a, Acknowledged), (a, Accepted)],
        Declined => vec![(a, Acknowledged), (a, Declined)],
        InProgress => vec![(a, Acknowledged), (a, Accepted), (a, InProgress)],
        Resolved => vec![(a, Acknowledged), (a, Accepted), (a, Resolved)],
        Closed => vec![(a, Acknowledged), (a, Accepted), (a, Resolved), (r, Closed)],
        Withdrawn => vec![(r, Withdrawn)],
        Unspecified => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transition_by_every_party_matches_the_lifecycle() {
    use CaseState::*;
    let b = TestBroker::start().await;
    let requester = b.client("BR-CERTBR").await;
    let addressee = b.client("CN-CNCERT").await;
    let cc = b.client("IN-CERTIN").await;
    let states = [
        Open,
        Acknowledged,
        Accepted,
        Declined,
        InProgress,
        Resolved,
        Closed,
        Withdrawn,
    ];
    let targets = [
        Acknowledged,
        Accepted,
        Declined,
        InProgress,
        Resolved,
        Closed,
        Withdrawn,
    ];
    let mut checked = 0;
    for state in states {
        for to in targets {
            for by_requester in [true, false] {
                let id = open_case(&requester, "CN-CNCERT", &["IN-CERTIN"], 3600).await;
                for (r, t) in path_to(state) {
                    let who = if r { &requester } else { &addressee };
                    let (note, reason) = note_for(t);
                    who.update_case(&id, t, note, reason).await.unwrap();
                }
                let who = if by_requester { &requester } else { &addressee };
                let (note, reason) = note_for(to);
                let got = who.update_case(&id, to, note, reason).await;
                let expect = allowed(state, to, by_requester);
                match got {
                    Ok(_) => assert!(
                        expect,
                        "{state:?} -> {to:?} by requester={by_requester} was accepted"
                    ),
                    Err(e) => {
                        let (c, msg) = code::<()>(Err(e));
                        assert!(
                            !expect,
                            "{state:?} -> {to:?} by requester={by_requester} refused: {msg}"
                        );
                        assert_eq!(c, Code::FailedPrecondition, "{msg}");
                        assert!(msg.contains(&id), "{msg}");
                    }
                }
                // A cc team is no party to the lifecycle.
                if state == Open && to == Acknowledged && by_requester {
                    let (c, msg) = code(cc.update_case(&id, Acknowledged, "", "").await);
                    assert_eq!(c, Code::FailedPrecondition);
                    assert!(msg.contains("requester or the addressee"), "{msg}");
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 112);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_updates_have_one_winner_and_survive_restart() {
    let b = TestBroker::start().await;
    let br = b.client("BR-CERTBR").await;
    let cn = b.client("CN-CNCERT").await;
    let id = open_case(&br, "CN-CNCERT", &[], 3600).await;
    cn.update_case(&id, CaseState::Acknowledged, "", "")
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..24 {
        let (cn, id) = (cn.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            let t = if i % 2 == 0 {
                CaseState::Accepted
            } else {
                CaseState::Declined
            };
            (t, cn.update_case(&id, t, "", "no resources").await)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (t, r) = t.await.unwrap();
        match r {
            Ok(_) => winners.push(t),
            Err(e) => {
                let (c, msg) = code::<()>(Err(e));
                assert_eq!(c, Code::FailedPrecondition);
                assert!(
                    msg.contains("case is accepted") || msg.contains("case is declined"),
                    "{msg}"
                );
            }
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let before = case(&br, &id).await;
    assert_eq!(state_of(&before), winners[0]);
    assert_eq!(before.history.len(), 2);

    let tmp = b.stop().await;
    let b = TestBroker::start_in(tmp, Default::default()).await;
    let after = case(&b.client("BR-CERTBR").await, &id).await;
    assert_eq!(state_of(&after), winners[0]);
    assert_eq!(after.history, before.history);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_team_sees_nothing_of_the_case() {
    let b = TestBroker::start().await;
    let br = b.client("BR-CERTBR").await;
    let cn = b.client("CN-CNCERT").await;
    let id = open_case(&br, "CN-CNCERT", &[], 3600).await;
    let ack = cn
        .update_case(&id, CaseState::Acknowledged, "", "")
        .await
        .unwrap();
    let us = b.client("US-CISA").await;
    for req in [get_seq(1), get_seq(ack.seq), get_id(&id)] {
        assert_eq!(code(us.get(req).await).0, Code::NotFound);
    }
    let err = us
        .cases()
        .get_case(pb::GetCaseRequest {
            id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let list = us
        .cases()
        .list_cases(pb::ListCasesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(list.cases.is_empty());
    assert!(catch_up(&us).await.is_empty());
    let err = us
        .transparency()
        .get_inclusion_proof(pb::InclusionProofRequest {
            leaf: Some(pb::inclusion_proof_request::Leaf::Seq(2)),
            tree_size: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // The requester reads the addressee's update even though it is not in the request's audience.
    assert!(br.get(get_seq(ack.seq)).await.unwrap().envelope.is_some());
    let listed = br
        .cases()
        .list_cases(pb::ListCasesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.cases.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overdue_appears_and_disappears() {
    let b = TestBroker::start().await;
    let br = b.client("BR-CERTBR").await;
    let cn = b.client("CN-CNCERT").await;
    let late = open_case(&br, "CN-CNCERT", &[], -60).await;
    let early = open_case(&br, "CN-CNCERT", &[], 3600).await;
    let soon = open_case(&br, "CN-CNCERT", &[], 2).await;
    let soon_due = std::time::Instant::now() + Duration::from_secs(2);
    let overdue = |c: Client| async move {
        let l = c
            .cases()
            .list_cases(pb::ListCasesRequest {
                overdue_only: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        l.cases.into_iter().map(|c| c.id).collect::<Vec<_>>()
    };
    let now_overdue = overdue(cn.clone()).await;
    assert!(now_overdue.contains(&late), "respond_by in the past");
    assert!(!now_overdue.contains(&early), "respond_by in the future");
    assert!(!case(&br, &early).await.summary.unwrap().overdue);
    // Wait until `soon`'s respond_by has certainly passed (nothing asserts how fast).
    tokio::time::sleep_until((soon_due + Duration::from_millis(500)).into()).await;
    assert_eq!(
        overdue(br.clone()).await,
        vec![late.clone(), soon.clone()],
        "respond_by passed"
    );
    cn.update_case(&late, CaseState::Acknowledged, "", "")
        .await
        .unwrap();
    assert_eq!(
        overdue(br.clone()).await,
        vec![soon.clone()],
        "acknowledged: no longer overdue"
    );
    let c = case(&br, &late).await;
    assert!(c.acknowledged_late);
    assert!(!c.summary.unwrap().overdue);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_through_the_cli() {
    use serde_json::Value;
    let b = TestBroker::start().await;
    let run = |team: &str, args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_certex"))
            .args(args)
            .env("CERTEX_BROKER", b.url())
            .env("CERTEX_PKI", b.pki())
            .env("CERTEX_TEAM", team)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let draft = b.tmp.path().join("request.json");
    std::fs::write(
        &draft,
        r#"{"tlp":"amber","audience":{"teams":["CN-CNCERT"]},
            "request":{"to":"CN-CNCERT","action":"takedown","legal_basis":"Budapest Convention art. 29",
                       "description":"Phishing kit at hxxp://bank-login.example","respond_by":"2030-01-01T00:00:00Z","priority":"high"}}"#,
    )
    .unwrap();
    let (ok, out, err) =
        tokio::task::block_in_place(|| run("BR-CERTBR", &["submit", draft.to_str().unwrap()]));
    assert!(ok, "{err}");
    let id = serde_json::from_str::<Value>(&out).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let steps: Vec<(&str, Vec<&str>)> = vec![
        ("CN-CNCERT", vec!["case", "ack", &id]),
        ("CN-CNCERT", vec!["case", "accept", &id]),
        (
            "CN-CNCERT",
            vec!["case", "progress", &id, "--note", "registrar contacted"],
        ),
        (
            "CN-CNCERT",
            vec!["case", "resolve", &id, "--note", "domain suspended"],
        ),
        ("BR-CERTBR", vec!["case", "close", &id]),
    ];
    for (team, args) in &steps {
        let (ok, out, err) = tokio::task::block_in_place(|| run(team, args));
        assert!(ok, "{args:?}: {err}");
        assert!(
            serde_json::from_str::<Value>(&out).unwrap()["seq"]
                .as_u64()
                .is_some()
        );
    }
    // Out of order: refused with the current state named, non-zero exit.
    let (ok, _, err) = tokio::task::block_in_place(|| run("CN-CNCERT", &["case", "ack", &id]));
    assert!(!ok);
    assert!(err.contains("case is closed"), "{err}");
    let (ok, _, err) = tokio::task::block_in_place(|| run("CN-CNCERT", &["case", "decline", &id]));
    assert!(!ok && err.contains("--reason is required"), "{err}");

    let (ok, out, err) = tokio::task::block_in_place(|| run("BR-CERTBR", &["case", "show", &id]));
    assert!(ok, "{err}");
    let show: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(show["state"], "closed");
    assert_eq!(show["overdue"], false);
    assert_eq!(show["request"]["verified"], true);
    let history = show["history"].as_array().unwrap();
    assert_eq!(history.len(), 5);
    assert_eq!(history[2]["note"], "registrar contacted");
    assert_eq!(history[2]["sender"], "CN-CNCERT");
    assert!(
        history
            .iter()
            .all(|h| h["verified"] == true && h["at"].as_str().is_some())
    );

    let (ok, out, _) =
        tokio::task::block_in_place(|| run("CN-CNCERT", &["case", "list", "--state", "closed"]));
    assert!(ok);
    let line: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(
        (
            line["id"].as_str(),
            line["requester"].as_str(),
            line["to"].as_str()
        ),
        (Some(id.as_str()), Some("BR-CERTBR"), Some("CN-CNCERT"))
    );
    assert_eq!(line["overdue"], false);
    let (ok, out, _) =
        tokio::task::block_in_place(|| run("CN-CNCERT", &["case", "list", "--overdue"]));
    assert!(ok && out.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_is_its_requester_and_id_and_retracted_requests_are_frozen() {
    let b = TestBroker::start().await;
    let us = b.client("US-CISA").await;
    let br = b.client("BR-CERTBR").await;
    let cn = b.client("CN-CNCERT").await;
    // US asks CN, with BR in copy; BR learns the id and tries to reuse it.
    let real = request_body("US-CISA", "CN-CNCERT", &["BR-CERTBR"], 3600);
    us.publish(us.seal(&real).unwrap()).await.unwrap();
    // Ids are the requester's own: BR's request under the same id is a
    // separate case (BR, id) and cannot shadow US's.
    let mut other = request_body("BR-CERTBR", "CN-CNCERT", &["US-CISA"], 3600);
    other.id = real.id.clone();
    br.publish(br.seal(&other).unwrap()).await.unwrap();
    // No existence oracle: a team that cannot see either request reuses the
    // id as freely as a fresh one.
    let za = b.client("ZA-CSIRT").await;
    let mut unrelated = request_body("ZA-CSIRT", "DE-CERTBUND", &[], 3600);
    unrelated.id = real.id.clone();
    za.publish(za.seal(&unrelated).unwrap()).await.unwrap();
    // CN reads two requests under this id: it must say whose it means.
    let (c, msg) = code(cn.get(get_id(&real.id)).await);
    assert_eq!(c, Code::InvalidArgument, "{msg}");
    assert!(
        msg.contains("give the sender") && !msg.contains("ZA-CSIRT"),
        "{msg}"
    );
    let (c, _) = code(
        cn.update_case(&real.id, CaseState::Acknowledged, "", "")
            .await,
    );
    assert_eq!(c, Code::InvalidArgument);
    let ack = cn
        .update_case_of(Some("US-CISA"), &real.id, CaseState::Acknowledged, "", "")
        .await
        .unwrap();
    let us_case = case_of(&us, "US-CISA", &real.id).await;
    assert_eq!(us_case.summary.as_ref().unwrap().requester, "US-CISA");
    assert_eq!(state_of(&us_case), CaseState::Acknowledged);
    assert_eq!(
        state_of(&case_of(&br, "BR-CERTBR", &real.id).await),
        CaseState::Open
    );
    assert_eq!(state_of(&case(&za, &real.id).await), CaseState::Open);
    let (c, msg) = code(
        cn.cases()
            .get_case(pb::GetCaseRequest {
                id: real.id.clone(),
                ..Default::default()
            })
            .await
            .map_err(Into::into),
    );
    assert_eq!(c, Code::InvalidArgument, "{msg}");

    // A case update cannot be retracted: a case is corrected by a further update.
    let retract_ack = body(
        "CN-CNCERT",
        pb::Tlp::Amber,
        teams(&["CN-CNCERT", "BR-CERTBR"]),
        Content::Retraction(pb::Retraction {
            target: ack.id.clone(),
            reason: "mistake".into(),
        }),
    );
    let (c, msg) = code(cn.publish(cn.seal(&retract_ack).unwrap()).await);
    assert_eq!(c, Code::FailedPrecondition, "{msg}");
    assert!(msg.contains("cannot be retracted"), "{msg}");
    // An update must name the requester.
    let nameless = body(
        "CN-CNCERT",
        pb::Tlp::Amber,
        teams(&["CN-CNCERT", "BR-CERTBR"]),
        Content::CaseUpdate(pb::CaseUpdate {
            case_id: real.id.clone(),
            transition: CaseState::Accepted as i32,
            note: String::new(),
            reason: String::new(),
            requester: String::new(),
        }),
    );
    let (c, msg) = code(cn.publish(cn.seal(&nameless).unwrap()).await);
    assert_eq!(c, Code::InvalidArgument, "{msg}");
    assert!(msg.contains("case_update.requester"), "{msg}");

    // A retracted request takes no more updates, and its summary shows only
    // what a tombstone may.
    let retraction = body(
        "US-CISA",
        pb::Tlp::Amber,
        teams(&["CN-CNCERT", "BR-CERTBR"]),
        Content::Retraction(pb::Retraction {
            target: real.id.clone(),
            reason: "sent in error".into(),
        }),
    );
    us.publish(us.seal(&retraction).unwrap()).await.unwrap();
    let env = {
        // The CLI refuses to build an update for a retracted request, so sign one by hand.
        let update = body(
            "CN-CNCERT",
            pb::Tlp::Amber,
            teams(&["CN-CNCERT", "BR-CERTBR"]),
            Content::CaseUpdate(pb::CaseUpdate {
                case_id: real.id.clone(),
                transition: CaseState::Accepted as i32,
                note: String::new(),
                reason: String::new(),
                requester: "US-CISA".into(),
            }),
        );
        cn.seal(&update).unwrap()
    };
    let (c, msg) = code(cn.publish(env).await);
    assert_eq!(c, Code::FailedPrecondition);
    assert!(msg.contains("retracted"), "{msg}");
    let seen = case_of(&cn, "US-CISA", &real.id).await;
    assert!(seen.request.unwrap().retracted.is_some());
    let s = seen.summary.unwrap();
    assert_eq!(
        (s.to.as_str(), s.respond_by, s.state, s.overdue),
        ("", None, 0, false)
    );
    assert!(s.cc.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_out_of_range_are_refused() {
    let b = TestBroker::start().await;
    let br = b.client("BR-CERTBR").await;
    let mut r = request_body("BR-CERTBR", "CN-CNCERT", &[], 3600);
    if let Some(Content::Request(req)) = &mut r.content {
        req.respond_by = Some(prost_types::Timestamp {
            seconds: 100_000_000_000_000_000,
            nanos: 0,
        });
    }
    let (c, msg) = code(br.publish(br.seal(&r).unwrap()).await);
    assert_eq!(c, Code::InvalidArgument);
    assert!(msg.contains("field request.respond_by"), "{msg}");
}
