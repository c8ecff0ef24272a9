//! Case assistance over a real broker: lifecycles through the CLI and gRPC,
//! every invalid transition, racing updates, visibility and deadlines, and
//! paged listings and histories that no team's flood of requests can break.

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

/// Runs the `certex` binary as `team` against `b`: (success, stdout, stderr).
fn cli(b: &TestBroker, team: &str, args: &[&str]) -> (bool, String, String) {
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
    // A deadline must lie after the request's creation (SPEC §11), so
    // "late" is one that passes a second after it is set.
    let late = open_case(&br, "CN-CNCERT", &[], 1).await;
    let late_due = std::time::Instant::now() + Duration::from_secs(1);
    let early = open_case(&br, "CN-CNCERT", &[], 3600).await;
    let soon = open_case(&br, "CN-CNCERT", &[], 4).await;
    let soon_due = std::time::Instant::now() + Duration::from_secs(4);
    tokio::time::sleep_until((late_due + Duration::from_millis(500)).into()).await;
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
    let run = |team: &str, args: &[&str]| cli(&b, team, args);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_in_the_past_is_refused() {
    let b = TestBroker::start().await;
    let br = b.client("BR-CERTBR").await;
    for secs in [-60, 0] {
        let mut r = request_body("BR-CERTBR", "CN-CNCERT", &[], 0);
        if let Some(Content::Request(req)) = &mut r.content {
            let at = r.created_at.unwrap();
            req.respond_by = Some(prost_types::Timestamp {
                seconds: at.seconds + secs,
                nanos: at.nanos,
            });
        }
        let (c, msg) = code(br.publish(br.seal(&r).unwrap()).await);
        assert_eq!(c, Code::InvalidArgument, "{secs}: {msg}");
        assert!(
            msg.contains("field request.respond_by")
                && msg.contains("a deadline must lie in the future"),
            "{msg}"
        );
    }
    // A second after creation is a deadline (and nothing was stored before).
    let r = request_body("BR-CERTBR", "CN-CNCERT", &[], 1);
    let receipt = br.publish(br.seal(&r).unwrap()).await.unwrap();
    assert_eq!(receipt.seq, 1);
}

// === paging (SPEC §15) ===

/// Publishes `n` requests from `from` to `to` (with `cc` in copy), many at
/// once so that group commit batches them; returns their seqs in order.
async fn open_cases(from: &Client, to: &str, cc: &[&str], n: usize) -> Vec<u64> {
    let mut tasks = tokio::task::JoinSet::new();
    let mut seqs = Vec::with_capacity(n);
    for _ in 0..n {
        if tasks.len() >= 32 {
            seqs.push(tasks.join_next().await.unwrap().unwrap());
        }
        let env = from.seal(&request_body(from.team(), to, cc, 3600)).unwrap();
        let c = from.clone();
        tasks.spawn(async move { c.publish(env).await.unwrap().seq });
    }
    while let Some(seq) = tasks.join_next().await {
        seqs.push(seq.unwrap());
    }
    seqs.sort_unstable();
    seqs
}

/// Every page of `c`'s case listing with `page_size`, following tokens
/// through the raw gRPC client.
async fn list_pages(c: &Client, page_size: u32, page_token: &str) -> Vec<pb::ListCasesResponse> {
    let mut pages = Vec::new();
    let mut token = page_token.to_owned();
    loop {
        let page = c
            .cases()
            .list_cases(pb::ListCasesRequest {
                page_size,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        token = page.next_page_token.clone();
        pages.push(page);
        if token.is_empty() {
            return pages;
        }
    }
}

/// Every page of case `id` with `page_size`, through the raw gRPC client.
async fn case_pages(c: &Client, id: &str, page_size: u32) -> Vec<pb::Case> {
    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .cases()
            .get_case(pb::GetCaseRequest {
                id: id.into(),
                page_size,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        token = page.next_page_token.clone();
        pages.push(page);
        if token.is_empty() {
            return pages;
        }
    }
}

fn seqs_of(pages: &[pb::ListCasesResponse]) -> Vec<u64> {
    pages.iter().flat_map(|p| &p.cases).map(|c| c.seq).collect()
}

fn ms_of(t: &Option<prost_types::Timestamp>) -> u64 {
    let t = t.as_ref().unwrap();
    t.seconds as u64 * 1000 + t.nanos as u64 / 1_000_000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_listing_comes_in_pages_each_case_once_in_order() {
    let b = TestBroker::start().await;
    let br = b.client("BR-CERTBR").await;
    let cn = b.client("CN-CNCERT").await;
    let published = open_cases(&br, "CN-CNCERT", &[], 250).await;

    let pages = list_pages(&cn, 100, "").await;
    let sizes: Vec<usize> = pages.iter().map(|p| p.cases.len()).collect();
    assert_eq!(sizes, [100, 100, 50]);
    assert!(pages[..2].iter().all(|p| !p.next_page_token.is_empty()));
    assert_eq!(pages[2].next_page_token, "");
    assert_eq!(seqs_of(&pages), published, "every case once, oldest first");

    // 0 means 100; over 1000 is taken as 1000 (here: everything at once).
    assert_eq!(list_pages(&cn, 0, "").await.len(), 3);
    let all = list_pages(&cn, u32::MAX, "").await;
    assert_eq!((all.len(), all[0].cases.len()), (1, 250));
    // Filters apply across pages: the requester's view, by role.
    let pages = br
        .cases()
        .list_cases(pb::ListCasesRequest {
            role: pb::CaseRole::Requester as i32,
            page_size: 200,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pages.cases.len(), 200);
    let rest = br
        .cases()
        .list_cases(pb::ListCasesRequest {
            role: pb::CaseRole::Requester as i32,
            page_token: pages.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((rest.cases.len(), rest.next_page_token.as_str()), (50, ""));
    // The client library follows the pages.
    let listed = cn.list_cases(Default::default()).await.unwrap();
    assert_eq!(listed.iter().map(|c| c.seq).collect::<Vec<_>>(), published);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_page_token_is_invalid_argument_and_discloses_nothing() {
    let b = TestBroker::start().await;
    let br = b.client("BR-CERTBR").await;
    let us = b.client("US-CISA").await;
    let hidden = open_case(&br, "CN-CNCERT", &[], 3600).await;
    open_cases(&us, "DE-CERTBUND", &[], 3).await;
    let list_token = list_pages(&us, 1, "").await[0].next_page_token.clone();
    assert!(!list_token.is_empty());
    for token in ["garbage", "-1", "0x10", " ", "\u{0}"] {
        let err = us
            .cases()
            .list_cases(pb::ListCasesRequest {
                page_token: token.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{token:?}");
        assert!(
            err.message().starts_with("page_token: "),
            "{}",
            err.message()
        );
    }
    // GetCase checks its token first: the same answer for a case that does
    // not exist and one the caller may not read. A ListCases token is not a
    // GetCase token.
    for token in ["garbage", list_token.as_str()] {
        let mut answers = Vec::new();
        for id in [hidden.as_str(), "no-such-case"] {
            let err = us
                .cases()
                .get_case(pb::GetCaseRequest {
                    id: id.into(),
                    page_token: token.into(),
                    ..Default::default()
                })
                .await
                .unwrap_err();
            answers.push((err.code(), err.message().to_owned()));
        }
        assert_eq!(answers[0].0, Code::InvalidArgument, "{token:?}");
        assert!(answers[0].1.starts_with("page_token: "), "{}", answers[0].1);
        assert_eq!(answers[0], answers[1]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_history_comes_in_pages_with_the_case_on_each() {
    let b = TestBroker::start().await;
    let br = b.client("BR-CERTBR").await;
    let cn = b.client("CN-CNCERT").await;
    let id = open_case(&br, "CN-CNCERT", &["IN-CERTIN"], 3600).await;
    let mut updates = Vec::new();
    for t in [CaseState::Acknowledged, CaseState::Accepted] {
        updates.push(cn.update_case(&id, t, "", "").await.unwrap().seq);
    }
    // Progress notes may follow each other in any number, so publish many at once.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..118 {
        let (cn, id) = (cn.clone(), id.clone());
        tasks.spawn(async move {
            cn.update_case(&id, CaseState::InProgress, &format!("note {i}"), "")
                .await
                .unwrap()
                .seq
        });
    }
    while let Some(seq) = tasks.join_next().await {
        updates.push(seq.unwrap());
    }
    let resolved = cn.update_case(&id, CaseState::Resolved, "done", "");
    updates.push(resolved.await.unwrap().seq);
    let closed = br.update_case(&id, CaseState::Closed, "", "");
    updates.push(closed.await.unwrap().seq);
    updates.sort_unstable();
    assert_eq!(updates.len(), 122);

    let ic = b.client("IN-CERTIN").await; // cc reads it too
    let pages = case_pages(&ic, &id, 50).await;
    let sizes: Vec<usize> = pages.iter().map(|p| p.updates.len()).collect();
    assert_eq!(sizes, [50, 50, 22]);
    let first = &pages[0];
    for p in &pages {
        assert_eq!(p.summary, first.summary, "the summary on every page");
        assert_eq!(p.request, first.request, "the request on every page");
        assert_eq!(p.history.len(), p.updates.len());
        assert_eq!(
            (
                p.time_to_acknowledge_ms,
                p.time_to_resolve_ms,
                p.acknowledged_late
            ),
            (
                first.time_to_acknowledge_ms,
                first.time_to_resolve_ms,
                first.acknowledged_late
            ),
            "the derived state on every page"
        );
    }
    assert_eq!(state_of(first), CaseState::Closed);
    let seqs: Vec<u64> = pages
        .iter()
        .flat_map(|p| &p.updates)
        .map(|u| u.seq)
        .collect();
    assert_eq!(seqs, updates, "every update once, in order");
    let history: Vec<&pb::CaseEvent> = pages.iter().flat_map(|p| &p.history).collect();
    assert!(history.iter().map(|h| h.seq).eq(updates.iter().copied()));
    // The milestones are those of the whole history.
    let opened = ms_of(&first.request.as_ref().unwrap().received_at);
    let at = |t: CaseState| {
        let h = history.iter().find(|h| h.transition == t as i32).unwrap();
        ms_of(&h.at) - opened
    };
    assert_eq!(first.time_to_acknowledge_ms, at(CaseState::Acknowledged));
    assert_eq!(first.time_to_resolve_ms, at(CaseState::Resolved));

    // The client library follows the pages (two at the default size).
    let whole = cn
        .get_case(pb::GetCaseRequest {
            id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(whole.next_page_token, "");
    assert!(
        whole
            .updates
            .iter()
            .map(|u| u.seq)
            .eq(updates.iter().copied())
    );
    assert_eq!(whole.history.len(), 122);
    assert!(whole.updates.iter().all(|u| cn.render(u).verified));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_history_stops_before_one_mebibyte() {
    let b = TestBroker::start().await;
    let br = b.client("BR-CERTBR").await;
    let cn = b.client("CN-CNCERT").await;
    let id = open_case(&br, "CN-CNCERT", &[], 3600).await;
    for t in [CaseState::Acknowledged, CaseState::Accepted] {
        cn.update_case(&id, t, "", "").await.unwrap();
    }
    // 60 notes of 16,000 characters: about 32 KB each in a page (the signed
    // update and its history entry), some 2 MB in all.
    let note = "x".repeat(16_000);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..60 {
        let (cn, id, note) = (cn.clone(), id.clone(), note.clone());
        tasks.spawn(async move {
            cn.update_case(&id, CaseState::InProgress, &note, "")
                .await
                .unwrap();
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let pages = case_pages(&br, &id, 1000).await;
    assert!(pages.len() >= 2, "{} pages", pages.len());
    for p in &pages {
        let len = prost::Message::encoded_len(p);
        assert!(len <= 1024 * 1024, "a page of {len} bytes");
    }
    let seqs: Vec<u64> = pages
        .iter()
        .flat_map(|p| &p.updates)
        .map(|u| u.seq)
        .collect();
    assert_eq!(seqs.len(), 62);
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "each once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_requests_does_not_break_the_listings_of_others() {
    let b = TestBroker::start().await;
    let ru = b.client("RU-GOVCERT").await; // floods
    let cn = b.client("CN-CNCERT").await;
    let br = b.client("BR-CERTBR").await;
    let de = b.client("DE-CERTBUND").await; // no party to any of it
    let own = open_case(&cn, "US-CISA", &[], 3600).await;
    let to_cn_cc_br = open_cases(&ru, "CN-CNCERT", &["BR-CERTBR"], 150).await;
    let to_br = open_cases(&ru, "BR-CERTBR", &[], 50).await;
    let to_in_cc_cn = open_cases(&ru, "IN-CERTIN", &["CN-CNCERT"], 100).await;
    let sorted = |a: &[u64], b: &[u64]| {
        let mut v = [a, b].concat();
        v.sort_unstable();
        v
    };

    let listed = cn.list_cases(Default::default()).await.unwrap();
    assert_eq!(listed.len(), 251);
    assert_eq!(listed[0].id, own);
    let seqs: Vec<u64> = listed[1..].iter().map(|c| c.seq).collect();
    assert_eq!(
        seqs,
        sorted(&to_cn_cc_br, &to_in_cc_cn),
        "CN's cases, once, in order"
    );
    let listed = br.list_cases(Default::default()).await.unwrap();
    let seqs: Vec<u64> = listed.iter().map(|c| c.seq).collect();
    assert_eq!(
        seqs,
        sorted(&to_cn_cc_br, &to_br),
        "BR's cases, once, in order"
    );
    assert!(de.list_cases(Default::default()).await.unwrap().is_empty());
    assert!(list_pages(&de, 1, "").await[0].cases.is_empty());

    // The CLI lists them all, as before.
    let (ok, out, err) = tokio::task::block_in_place(|| cli(&b, "CN-CNCERT", &["case", "list"]));
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 251);
    let (ok, out, err) = tokio::task::block_in_place(|| cli(&b, "DE-CERTBUND", &["case", "list"]));
    assert!(ok && out.is_empty(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_tokens_never_reveal_a_hidden_case() {
    let b = TestBroker::start().await;
    let br = b.client("BR-CERTBR").await;
    let cn = b.client("CN-CNCERT").await;
    let us = b.client("US-CISA").await;
    let de = b.client("DE-CERTBUND").await;
    // CN's cases and cases hidden from CN, interleaved in the log.
    let (mut mine, mut hidden) = (Vec::new(), Vec::new());
    for _ in 0..6 {
        mine.extend(open_cases(&br, "CN-CNCERT", &[], 2).await);
        hidden.extend(open_cases(&us, "DE-CERTBUND", &[], 3).await);
    }
    let visible = |pages: &[pb::ListCasesResponse]| {
        let seqs = seqs_of(pages);
        assert!(seqs.iter().all(|s| !hidden.contains(s)), "{seqs:?}");
        seqs
    };
    let pages = list_pages(&cn, 2, "").await;
    assert_eq!(visible(&pages), mine);
    // Tokens of another team's listing, each ending on a case hidden from
    // CN, only resume CN's own listing after that position.
    let de_pages = list_pages(&de, 1, "").await;
    assert_eq!(seqs_of(&de_pages), hidden);
    for p in &de_pages[..de_pages.len() - 1] {
        let after = p.cases[0].seq;
        let resumed = list_pages(&cn, 2, &p.next_page_token).await;
        let expected: Vec<u64> = mine.iter().copied().filter(|s| *s > after).collect();
        assert_eq!(visible(&resumed), expected);
    }
    // And CN's tokens give DE nothing of CN's.
    for p in &pages[..pages.len() - 1] {
        let resumed = list_pages(&de, 1, &p.next_page_token).await;
        assert!(seqs_of(&resumed).iter().all(|s| hidden.contains(s)));
    }

    // GetCase: a token of a hidden case's history opens nothing of it and
    // resumes nothing foreign in CN's own case.
    let hidden_id = open_case(&us, "DE-CERTBUND", &[], 3600).await;
    let cn_id = open_case(&br, "CN-CNCERT", &[], 3600).await;
    for t in [CaseState::Acknowledged, CaseState::Accepted] {
        de.update_case_of(Some("US-CISA"), &hidden_id, t, "", "")
            .await
            .unwrap();
        cn.update_case(&cn_id, t, "", "").await.unwrap();
    }
    let de_page = case_pages(&de, &hidden_id, 1).await.remove(0);
    let (de_token, after) = (de_page.next_page_token, de_page.updates[0].seq);
    assert!(!de_token.is_empty());
    let err = cn
        .cases()
        .get_case(pb::GetCaseRequest {
            id: hidden_id.clone(),
            page_token: de_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let own = cn
        .cases()
        .get_case(pb::GetCaseRequest {
            id: cn_id.clone(),
            page_token: de_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(own.summary.unwrap().requester, "BR-CERTBR");
    let all = case(&cn, &cn_id).await.updates;
    let expected: Vec<_> = all.into_iter().filter(|u| u.seq > after).collect();
    assert_eq!(
        own.updates, expected,
        "CN's own updates after that position"
    );
    assert_eq!(own.updates.len(), 2);
}
