//! Federation of sovereign brokers (SPEC §12, issue 15), with every broker a
//! child process and real mTLS between brokers: where records go and where
//! they never land, relay across SIGKILLs of either side in the origin's
//! order, a partition and its catch-up, egress policy, forged relays, and a
//! case between teams on two brokers with racing updates.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use certex::client::connection::Client;
use certex::federation::egress::Egress;
use certex::proto::{self as pb, CaseState, body::Content};
use common::federation::Federation;
use common::{body, code, community, get_id, group, incident, teams, warning};
use prost::Message;
use time::OffsetDateTime;

const CN: &str = "CN-CNCERT";
const BR: &str = "BR-CERTBR";
const RU: &str = "RU-GOVCERT";

fn three() -> Federation {
    Federation::new(&[CN, BR, RU], &["CN", "BR", "RU"], &[("PAIR", &[CN, BR])])
}

async fn publish(c: &Client, b: &pb::Body) -> pb::Receipt {
    c.publish(c.seal(b).unwrap()).await.unwrap()
}

fn exercise_scope(ex: &str) -> Option<pb::ExerciseSelector> {
    Some(pb::ExerciseSelector {
        scope: Some(pb::exercise_selector::Scope::Exercise(ex.into())),
    })
}

/// Whether any file under `dir` holds `needle`.
fn files_hold(dir: &std::path::Path, needle: &[u8]) -> bool {
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                return true;
            }
        }
    }
    false
}

/// Every record `c` may read at its broker, real traffic, from the start.
async fn all_records(c: &Client) -> Vec<pb::Record> {
    common::catch_up(c).await
}

fn id_of(r: &pb::Record) -> String {
    certex::rules::envelope::decode_body(r.envelope.as_ref().unwrap())
        .unwrap()
        .id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_reach_exactly_the_brokers_of_their_readers() {
    let mut f = three();
    f.start_all();
    let (cn, br, ru) = (f.client(CN).await, f.client(BR).await, f.client(RU).await);

    let bilateral_marker = format!("bilateral-{}", uuid::Uuid::new_v4());
    let group_marker = format!("pair-only-{}", uuid::Uuid::new_v4());
    let bilateral = body(
        CN,
        pb::Tlp::Amber,
        teams(&[BR]),
        incident(&bilateral_marker),
    );
    let warning_b = body(
        CN,
        pb::Tlp::Clear,
        community(),
        warning("community", pb::Severity::High),
    );
    let paired = body(CN, pb::Tlp::Green, group("PAIR"), incident(&group_marker));
    let r1 = publish(&cn, &bilateral).await;
    let r2 = publish(&cn, &warning_b).await;
    let r3 = publish(&cn, &paired).await;
    f.settle("CN", 30).await;

    // BR holds the exact bytes CN logged, under its own seq, origin CN.
    let got = br.get(get_id(&bilateral.id)).await.unwrap();
    assert_eq!(
        got.leaf_hash, r1.leaf_hash,
        "the relayed envelope is byte-identical"
    );
    let origin = got
        .origin
        .clone()
        .expect("a relayed record names its origin");
    assert_eq!((origin.broker.as_str(), origin.seq), ("CN", r1.seq));
    let shown = br.render(&got);
    assert!(shown.verified, "BR's team verifies CN's signature");
    // ... and CN's proof that CN logged it, with CN's checkpoint key.
    let o = shown.origin.expect("origin shown");
    assert_eq!(o.logged_at_origin, Some(true), "{o:?}");
    assert!(o.origin_checkpoint_size.unwrap() >= r1.seq);
    let mut tampered = got.clone();
    tampered.origin.as_mut().unwrap().seq += 1;
    let o = br.render(&tampered).origin.unwrap();
    assert_eq!(
        o.logged_at_origin,
        Some(false),
        "a proof for another seq fails: {o:?}"
    );
    assert_eq!(
        br.get(get_id(&paired.id)).await.unwrap().leaf_hash,
        r3.leaf_hash
    );
    // The community warning reaches every broker.
    assert_eq!(
        br.get(get_id(&warning_b.id)).await.unwrap().leaf_hash,
        r2.leaf_hash
    );
    assert_eq!(
        ru.get(get_id(&warning_b.id)).await.unwrap().leaf_hash,
        r2.leaf_hash
    );
    // RU never receives what none of its teams may read.
    for id in [&bilateral.id, &paired.id] {
        let (c, _) = code(ru.get(get_id(id)).await);
        assert_eq!(c, tonic::Code::NotFound);
    }

    // The sender sees where each record went.
    let relays = |r: &pb::Record| -> BTreeMap<String, (String, u64)> {
        r.relays
            .iter()
            .map(|s| (s.broker.clone(), (s.state.clone(), s.peer_seq)))
            .collect()
    };
    let mine = cn.get(get_id(&bilateral.id)).await.unwrap();
    assert_eq!(
        relays(&mine),
        BTreeMap::from([("BR".into(), ("relayed".into(), got.seq))])
    );
    let mine = cn.get(get_id(&warning_b.id)).await.unwrap();
    let r = relays(&mine);
    assert_eq!(r.keys().cloned().collect::<Vec<_>>(), ["BR", "RU"]);
    assert!(
        r.values().all(|(s, seq)| s == "relayed" && *seq > 0),
        "{r:?}"
    );
    assert_eq!(relays(&cn.get(get_id(&paired.id)).await.unwrap()).len(), 1);
    // Readers at BR see no relay state (only the sender does).
    assert!(got.relays.is_empty());

    // Not on RU's disk at all; on BR's (the control).
    let status = f.status("CN").await;
    assert!(
        status.peers.iter().all(|p| p.connected && p.lag == 0),
        "{status:?}"
    );
    f.kill("RU");
    f.kill("BR");
    assert!(!files_hold(f.data_dir("RU"), bilateral_marker.as_bytes()));
    assert!(!files_hold(f.data_dir("RU"), group_marker.as_bytes()));
    assert!(files_hold(f.data_dir("BR"), bilateral_marker.as_bytes()));
    assert!(files_hold(f.data_dir("BR"), group_marker.as_bytes()));
}

/// Publishes `n` community warnings from `c`, counting from `from`;
/// returns the receipted ids (stops quietly at the first failure).
async fn publish_run(c: &Client, from: usize, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in from..from + n {
        let b = body(
            CN,
            pb::Tlp::Green,
            community(),
            warning(&format!("w{i}"), pb::Severity::Low),
        );
        match c.publish(c.seal(&b).unwrap()).await {
            Ok(_) => ids.push(b.id),
            Err(_) => break,
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_survives_sigkill_of_either_side_once_and_in_order() {
    let mut f = Federation::new(&[CN, BR], &["CN", "BR"], &[]);
    f.start_all();
    let cn = f.client(CN).await;
    let mut receipted = Vec::new();

    // Destination killed while records flow, then back.
    let flow = {
        let cn = cn.clone();
        tokio::spawn(async move { publish_run(&cn, 0, 150).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    f.kill("BR");
    tokio::time::sleep(Duration::from_millis(300)).await;
    f.start("BR");
    receipted.extend(flow.await.unwrap());

    // Origin killed while it relays: its publishers see failures.
    let flow = {
        let cn = cn.clone();
        tokio::spawn(async move { publish_run(&cn, 1000, 150).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    f.kill("CN");
    receipted.extend(flow.await.unwrap());
    f.start("CN");
    let cn = f.client(CN).await;
    receipted.extend(publish_run(&cn, 2000, 50).await);
    f.settle("CN", 60).await;

    // The origin's whole log, in its order, is BR's relayed sequence, once.
    let at_cn: Vec<String> = all_records(&cn).await.iter().map(id_of).collect();
    let br = f.client(BR).await;
    let relayed = all_records(&br).await;
    let at_br: Vec<String> = relayed.iter().map(id_of).collect();
    assert_eq!(
        at_br, at_cn,
        "BR holds CN's records once each, in CN's order"
    );
    let origin_seqs: Vec<u64> = relayed
        .iter()
        .map(|r| r.origin.as_ref().unwrap().seq)
        .collect();
    assert!(origin_seqs.windows(2).all(|w| w[0] < w[1]));
    let present: BTreeSet<&String> = at_br.iter().collect();
    for id in &receipted {
        assert!(
            present.contains(id),
            "receipted record {id} never reached BR"
        );
    }
    assert!(
        receipted.len() >= 200,
        "only {} publishes were receipted",
        receipted.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_catches_up_and_egress_withholds_exercise_traffic() {
    let mut f = three();
    f.nodes.get_mut("CN").unwrap().egress.insert(
        "RU".into(),
        Egress {
            exercise: Some(false),
            ..Default::default()
        },
    );
    f.start("CN");
    f.start("BR");
    let cn = f.client(CN).await;
    let mut real = Vec::new();
    for i in 0..40 {
        let b = body(
            CN,
            pb::Tlp::Clear,
            community(),
            warning(&format!("p{i}"), pb::Severity::Low),
        );
        publish(&cn, &b).await;
        real.push(b.id);
    }
    let mut drill = body(CN, pb::Tlp::Green, community(), incident("drill inject"));
    drill.exercise = "CYBER-STORM-7".into();
    publish(&cn, &drill).await;

    // RU is down: CN keeps publishing; BR is served; RU waits.
    // (Its socket accepts connections that no process answers: the relay
    // call times out.)
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let ru_peer = loop {
        let st = f.status("CN").await;
        let p = st.peers.iter().find(|p| p.broker == "RU").unwrap().clone();
        if !p.last_error.is_empty() || std::time::Instant::now() > deadline {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(!ru_peer.connected && ru_peer.lag > 0, "{ru_peer:?}");
    assert!(!ru_peer.last_error.is_empty(), "{ru_peer:?}");
    let br_peer = f
        .status("CN")
        .await
        .peers
        .into_iter()
        .find(|p| p.broker == "BR")
        .unwrap();
    assert!(
        br_peer.connected,
        "BR is served while RU is down: {br_peer:?}"
    );

    f.start("RU");
    f.settle("CN", 60).await;
    let ru = f.client(RU).await;
    let at_ru: Vec<String> = all_records(&ru).await.iter().map(id_of).collect();
    assert_eq!(at_ru, real, "RU caught up on every real record, in order");
    let mut req = get_id(&drill.id);
    req.exercise = exercise_scope("CYBER-STORM-7");
    let (c, _) = code(ru.get(req.clone()).await);
    assert_eq!(
        c,
        tonic::Code::NotFound,
        "exercise traffic never left for RU"
    );
    let br = f.client(BR).await;
    assert!(
        br.get(req.clone()).await.is_ok(),
        "BR's policy lets exercise traffic in"
    );

    // The sender sees why.
    let mine = cn.get(req).await.unwrap();
    let ru_state = mine.relays.iter().find(|r| r.broker == "RU").unwrap();
    assert_eq!(ru_state.state, "withheld");
    assert!(ru_state.reason.contains("exercise"), "{ru_state:?}");
    let st = f.status("CN").await;
    let ru_peer = st.peers.iter().find(|p| p.broker == "RU").unwrap();
    assert_eq!((ru_peer.withheld, ru_peer.relayed), (1, 40), "{ru_peer:?}");
}

fn relayed(env: &pb::Envelope, seq: u64) -> pb::RelayBatch {
    pb::RelayBatch {
        records: vec![pb::RelayedRecord {
            origin_seq: seq,
            envelope: env.encode_to_vec(),
            origin_received_at_ms: (OffsetDateTime::now_utc().unix_timestamp() * 1000) as u64,
            group_members: vec![],
            origin_proof: String::new(),
        }],
    }
}

/// Relays `batch` to broker `to` as broker `from` and expects its one
/// record refused with `code` and a message containing `says`.
async fn refused(
    f: &Federation,
    from: &str,
    to: &str,
    batch: pb::RelayBatch,
    code: tonic::Code,
    says: &str,
) {
    let ack = pb::federation_client::FederationClient::new(f.broker_channel(from, to).await)
        .relay(batch)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.results[0].code, code as i32, "{ack:?}");
    assert!(ack.results[0].message.contains(says), "{ack:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_relays_are_refused_and_nothing_is_stored() {
    let mut f = three();
    f.start_all();
    let cn = f.client(CN).await;
    let br = f.client(BR).await;
    let fed = |ch| pb::federation_client::FederationClient::new(ch);

    // RU's broker relaying a CN team's (validly signed) record to BR.
    let b = body(
        CN,
        pb::Tlp::Green,
        teams(&[BR]),
        incident("not yours to relay"),
    );
    let env = cn.seal(&b).unwrap();
    refused(
        &f,
        "RU",
        "BR",
        relayed(&env, 7),
        tonic::Code::PermissionDenied,
        "homed on broker CN",
    )
    .await;

    // CN's broker relaying a record whose signature was tampered with.
    let mut bad = env.clone();
    bad.signature[0] ^= 1;
    refused(
        &f,
        "CN",
        "BR",
        relayed(&bad, 8),
        tonic::Code::Unauthenticated,
        "",
    )
    .await;

    // CN's broker relaying a valid record without its evidence, or with
    // evidence that proves nothing.
    let missing = relayed(&env, 9);
    refused(
        &f,
        "CN",
        "BR",
        missing,
        tonic::Code::InvalidArgument,
        "origin_proof: is required",
    )
    .await;
    let mut forged = relayed(&env, 9);
    forged.records[0].origin_proof = format!(
        "c2sp.org/tlog-proof@v1\nindex 8\n\n{}",
        "certex.localhost/CN/v1\n9\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n— certex.localhost/CN/v1 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"
    );
    refused(
        &f,
        "CN",
        "BR",
        forged,
        tonic::Code::InvalidArgument,
        "origin",
    )
    .await;

    let mut bloated = relayed(&env, 9);
    bloated.records[0].origin_proof = "x".repeat(65 * 1024);
    refused(
        &f,
        "CN",
        "BR",
        bloated,
        tonic::Code::InvalidArgument,
        "limit of an inclusion proof",
    )
    .await;

    // CN's broker relaying to RU a record none of RU's teams may read.
    let unwanted = relayed(&env, 9);
    refused(
        &f,
        "CN",
        "RU",
        unwanted,
        tonic::Code::PermissionDenied,
        "no team homed on broker RU",
    )
    .await;
    // (The log line may reach us a moment after the answer.)
    for b in ["BR", "RU"] {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while f.log_lines(b, &["relayed record refused"]).is_empty()
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            !f.log_lines(b, &["relayed record refused"]).is_empty(),
            "broker {b} logs the refusal"
        );
    }

    // Nothing of it was stored.
    let (c, _) = code(br.get(get_id(&b.id)).await);
    assert_eq!(c, tonic::Code::NotFound);

    // A team may not call the peer protocol; a peer may not read another
    // broker's status.
    let team_channel = br.channel();
    let s = fed(team_channel).relay(relayed(&env, 1)).await.unwrap_err();
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
    let s = fed(f.broker_channel("CN", "BR").await)
        .status(pb::FederationStatusRequest {})
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
}

fn request_body(requester: &str, to: &str) -> pb::Body {
    body(
        requester,
        pb::Tlp::Amber,
        teams(&[to]),
        Content::Request(pb::AssistanceRequest {
            to: to.into(),
            action: pb::Action::PreserveEvidence as i32,
            legal_basis: "MLAT art. 18".into(),
            description: "Preserve logs for 203.0.113.7".into(),
            respond_by: Some(certex::rules::time::to_timestamp(
                OffsetDateTime::now_utc() + time::Duration::hours(1),
            )),
            priority: pb::Severity::High as i32,
        }),
    )
}

async fn case_at(c: &Client, requester: &str, id: &str) -> (CaseState, Vec<String>) {
    let case = c
        .get_case(pb::GetCaseRequest {
            id: id.into(),
            requester: requester.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let state = CaseState::try_from(case.summary.as_ref().unwrap().state).unwrap();
    let history = case
        .history
        .iter()
        .map(|e| format!("{} {} {}", e.sender, e.transition, e.reason))
        .collect();
    (state, history)
}

/// Waits until both brokers' relay is caught up, then both views agree.
async fn agree(f: &Federation, cn: &Client, br: &Client, id: &str) -> CaseState {
    f.settle("CN", 30).await;
    f.settle("BR", 30).await;
    let a = case_at(cn, CN, id).await;
    let b = case_at(br, CN, id).await;
    assert_eq!(a, b, "the two brokers disagree on case {id}");
    a.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_across_two_brokers_is_ordered_by_the_addressees_broker() {
    let mut f = Federation::new(&[CN, BR], &["CN", "BR"], &[]);
    f.start_all();
    let (cn, br) = (f.client(CN).await, f.client(BR).await);

    // A whole lifecycle: the addressee's updates at BR, the requester's
    // handed to BR (the authority) and relayed back.
    let req = request_body(CN, BR);
    publish(&cn, &req).await;
    f.settle("CN", 30).await;
    for (who, to) in [
        (&br, CaseState::Acknowledged),
        (&br, CaseState::Accepted),
        (&br, CaseState::InProgress),
        (&br, CaseState::Resolved),
        (&cn, CaseState::Closed),
    ] {
        let r = who.update_case_of(Some(CN), &req.id, to, "done", "").await;
        assert!(r.is_ok(), "{to:?}: {r:?}");
        assert_eq!(agree(&f, &cn, &br, &req.id).await, to);
    }
    // The requester's receipt is its own broker's record of the update.
    let (_, history) = case_at(&cn, CN, &req.id).await;
    assert_eq!(history.len(), 5);

    // A refused transition from the requester is refused by the authority,
    // and nothing is logged at either broker.
    let (c, msg) = code(
        cn.update_case_of(Some(CN), &req.id, CaseState::Withdrawn, "", "x")
            .await,
    );
    assert_eq!(c, tonic::Code::FailedPrecondition, "{msg}");
    assert!(msg.contains("case authority BR"), "{msg}");
    assert_eq!(agree(&f, &cn, &br, &req.id).await, CaseState::Closed);

    // Racing updates from both sides: exactly one wins, the same on both.
    for round in 0..4 {
        let req = request_body(CN, BR);
        publish(&cn, &req).await;
        f.settle("CN", 30).await;
        br.update_case_of(Some(CN), &req.id, CaseState::Acknowledged, "", "")
            .await
            .unwrap();
        f.settle("BR", 30).await;
        let (a, b) = tokio::join!(
            cn.update_case_of(
                Some(CN),
                &req.id,
                CaseState::Withdrawn,
                "",
                "handled at home"
            ),
            br.update_case_of(
                Some(CN),
                &req.id,
                CaseState::Declined,
                "",
                "outside our law"
            ),
        );
        assert!(
            a.is_ok() != b.is_ok(),
            "round {round}: exactly one wins: {a:?} / {b:?}"
        );
        let winner = if a.is_ok() {
            CaseState::Withdrawn
        } else {
            CaseState::Declined
        };
        assert_eq!(agree(&f, &cn, &br, &req.id).await, winner, "round {round}");
    }
}

/// A requester's case update signed by `CN` for the case `req`.
fn case_update_body(req: &pb::Body, to: CaseState) -> pb::Body {
    pb::Body {
        id: uuid::Uuid::new_v4().to_string(),
        sender: req.sender.clone(),
        created_at: Some(certex::rules::time::to_timestamp(OffsetDateTime::now_utc())),
        tlp: req.tlp,
        audience: req.audience.clone(),
        exercise: req.exercise.clone(),
        references: vec![pb::Reference {
            sender: req.sender.clone(),
            id: req.id.clone(),
        }],
        content: Some(Content::CaseUpdate(pb::CaseUpdate {
            case_id: req.id.clone(),
            requester: req.sender.clone(),
            transition: to as i32,
            note: String::new(),
            reason: "handled at home".into(),
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_updates_reach_the_authority_only_as_handed_over_and_within_egress() {
    const BR2: &str = "BR-CTIR";
    let mut f = Federation::new(&[CN, BR, BR2], &["CN", "BR"], &[]);
    // CN lets requests reach BR, but no case updates.
    f.nodes.get_mut("CN").unwrap().egress.insert(
        "BR".into(),
        Egress {
            kinds: Some(vec!["incident".into(), "request".into()]),
            ..Default::default()
        },
    );
    f.start_all();
    let (cn, br) = (f.client(CN).await, f.client(BR).await);
    let req = request_body(CN, BR);
    publish(&cn, &req).await;
    f.settle("CN", 30).await;
    assert_eq!(case_at(&br, CN, &req.id).await.0, CaseState::Open);

    // The hand-over to the authority is egress like any other.
    let (c, msg) = code(
        cn.update_case_of(Some(CN), &req.id, CaseState::Withdrawn, "", "x")
            .await,
    );
    assert_eq!(c, tonic::Code::FailedPrecondition, "{msg}");
    assert!(msg.contains("egress policy"), "{msg}");
    assert_eq!(case_at(&br, CN, &req.id).await.0, CaseState::Open);

    let fed = |ch| pb::federation_client::FederationClient::new(ch);
    let env = cn
        .seal(&case_update_body(&req, CaseState::Withdrawn))
        .unwrap();
    // A logged case update relayed by a broker that is not the case's
    // authority (the requester's own) is refused: only the authority orders
    // the case.
    let ack = fed(f.broker_channel("CN", "BR").await)
        .relay(relayed(&env, 5))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        ack.results[0].code,
        tonic::Code::PermissionDenied as i32,
        "{ack:?}"
    );
    assert!(ack.results[0].message.contains("authority"), "{ack:?}");
    // An unlogged hand-over may not claim when it was logged.
    let mut batch = relayed(&env, 0);
    batch.records[0].origin_received_at_ms -= 60_000;
    let ack = fed(f.broker_channel("CN", "BR").await)
        .relay(batch)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        ack.results[0].code,
        tonic::Code::InvalidArgument as i32,
        "{ack:?}"
    );
    assert!(
        ack.results[0].message.contains("origin_received_at_ms"),
        "{ack:?}"
    );
    assert_eq!(case_at(&br, CN, &req.id).await.0, CaseState::Open);
    // Handed over as the protocol says, it is taken.
    let mut batch = relayed(&env, 0);
    batch.records[0].origin_received_at_ms = 0;
    let ack = fed(f.broker_channel("CN", "BR").await)
        .relay(batch)
        .await
        .unwrap()
        .into_inner();
    assert!(ack.results[0].receipt.is_some(), "{ack:?}");
    assert_eq!(case_at(&br, CN, &req.id).await.0, CaseState::Withdrawn);

    // A case between two BR teams, which no CN team may read: CN's broker
    // handing over updates of it learns nothing of whether it exists.
    let br2 = f.client(BR2).await;
    let home_req = request_body(BR2, BR);
    publish(&br2, &home_req).await;
    let probe = |case_id: &str| {
        let mut b = case_update_body(&home_req, CaseState::Withdrawn);
        b.sender = CN.into();
        if let Some(Content::CaseUpdate(u)) = &mut b.content {
            u.case_id = case_id.into();
        }
        b.references[0].id = case_id.into();
        relayed(&cn.seal(&b).unwrap(), 0)
    };
    let (exists, absent) = (probe(&home_req.id), probe("no-such-case"));
    let mut answers = Vec::new();
    for mut batch in [exists, absent] {
        batch.records[0].origin_received_at_ms = 0;
        let ack = fed(f.broker_channel("CN", "BR").await)
            .relay(batch)
            .await
            .unwrap()
            .into_inner();
        assert!(ack.results[0].receipt.is_none(), "{ack:?}");
        answers.push((
            ack.results[0].code,
            ack.results[0].message.replace(&home_req.id, "no-such-case"),
        ));
    }
    assert_eq!(answers[0], answers[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_back_before_a_record_was_logged_does_not_hold_relay_up() {
    const CN2: &str = "CN-CNNIC";
    let mut f = Federation::new(&[CN, CN2, BR], &["CN", "BR"], &[]);
    f.start("CN");
    let (cn, cn2) = (f.client(CN).await, f.client(CN2).await);
    let a = body(
        CN,
        pb::Tlp::Green,
        teams(&[BR]),
        incident("signed, then compromised"),
    );
    let receipt = publish(&cn, &a).await;
    let c = body(
        CN2,
        pb::Tlp::Green,
        teams(&[BR]),
        incident("from another team"),
    );
    publish(&cn2, &c).await;

    // CN-CNCERT's key turns out compromised since just before `a` was
    // logged: the operators revoke it back to then.
    let at = receipt.received_at.unwrap();
    let logged = OffsetDateTime::from_unix_timestamp(at.seconds).unwrap()
        + time::Duration::nanoseconds(at.nanos.into());
    let path = f.pki.join("directory.toml");
    let mut file: certex::rules::directory::DirectoryFile =
        toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let team = file.teams.iter_mut().find(|t| t.id == CN).unwrap();
    for k in &mut team.keys {
        k.revoked_at = Some(certex::rules::time::format_time(
            logged - time::Duration::milliseconds(500),
        ));
    }
    std::fs::write(&path, toml::to_string_pretty(&file).unwrap()).unwrap();
    f.node("CN").process.as_ref().unwrap().hangup();
    tokio::time::sleep(Duration::from_secs(1)).await;
    f.start("BR");

    // BR refuses `a`, but the records after it still go.
    f.settle("CN", 20).await;
    let br = f.client(BR).await;
    br.get(get_id(&c.id)).await.unwrap();
    let (got, _) = code(br.get(get_id(&a.id)).await);
    assert_eq!(got, tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_over_the_peers_size_limit_does_not_hold_relay_up() {
    let mut f = Federation::new(&[CN, BR], &["CN", "BR"], &[]);
    f.nodes.get_mut("BR").unwrap().max_envelope_bytes = Some(2048);
    f.start_all();
    let (cn, br) = (f.client(CN).await, f.client(BR).await);
    let mut big = body(CN, pb::Tlp::Green, teams(&[BR]), incident("large"));
    if let Some(Content::Incident(i)) = &mut big.content {
        i.description = "x".repeat(4000);
    }
    publish(&cn, &big).await;
    let small = body(CN, pb::Tlp::Green, teams(&[BR]), incident("after it"));
    publish(&cn, &small).await;
    f.settle("CN", 20).await;
    br.get(get_id(&small.id)).await.unwrap();
    let (got, _) = code(br.get(get_id(&big.id)).await);
    assert_eq!(got, tonic::Code::NotFound);
    let st = f.status("CN").await;
    assert_eq!(st.peers[0].refused, 1, "{st:?}");
}
