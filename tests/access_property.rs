//! Property test of SPEC §5 over a real broker: for random message sets,
//! every team's Get and Subscribe, in every traffic scope, return exactly
//! what an independent model of §5 allows (full, tombstone or NOT_FOUND).

mod common;

use certex::client::connection::{Client, ClientError};
use certex::proto::{self as pb, body::Content, subscribe_request::Start};
use certex::rules::access::TrafficScope;
use common::*;
use proptest::prelude::*;
use proptest::sample::{select, subsequence};

const BRICS: &[&str] = &[
    "CN-CNCERT",
    "RU-GOVCERT",
    "BR-CERTBR",
    "IN-CERTIN",
    "ZA-CSIRT",
];
const SCO: &[&str] = &["CN-CNCERT", "RU-GOVCERT", "IN-CERTIN"];
const EXERCISES: &[&str] = &["", "DRILL-A", "DRILL-B"];

#[derive(Debug, Clone, PartialEq)]
enum Aud {
    Community,
    Group(&'static str),
    Teams(Vec<&'static str>),
}

impl Aud {
    fn wire(&self) -> pb::Audience {
        match self {
            Aud::Community => community(),
            Aud::Group(g) => group(g),
            Aud::Teams(list) => teams(list),
        }
    }

    /// The model of "audience admits T", with the groups of the test PKI.
    fn admits(&self, team: &str) -> bool {
        match self {
            Aud::Community => true,
            Aud::Teams(list) => list.contains(&team),
            Aud::Group("BRICS") => BRICS.contains(&team),
            Aud::Group("SCO") => SCO.contains(&team),
            Aud::Group(_) => false,
        }
    }
}

#[derive(Debug, Clone)]
struct Msg {
    sender: &'static str,
    tlp: pb::Tlp,
    aud: Aud,
    exercise: &'static str,
    retract: bool,
}

impl Msg {
    /// TLP 2.0 as in §5: red and amber+strict need an explicit team list.
    fn acceptable(&self) -> bool {
        !matches!(self.tlp, pb::Tlp::Red | pb::Tlp::AmberStrict)
            || matches!(self.aud, Aud::Teams(_))
    }
}

fn msg() -> impl Strategy<Value = Msg> {
    let tlp = prop_oneof![
        Just(pb::Tlp::Clear),
        Just(pb::Tlp::Green),
        Just(pb::Tlp::Amber),
        Just(pb::Tlp::AmberStrict),
        Just(pb::Tlp::Red),
    ];
    let aud = prop_oneof![
        Just(Aud::Community),
        Just(Aud::Group("BRICS")),
        Just(Aud::Group("SCO")),
        subsequence(TEAMS.to_vec(), 1..=TEAMS.len())
            .prop_shuffle()
            .prop_map(Aud::Teams),
    ];
    (select(TEAMS), tlp, aud, select(EXERCISES), any::<bool>()).prop_map(
        |(sender, tlp, aud, exercise, retract)| Msg {
            sender,
            tlp,
            aud,
            exercise,
            retract,
        },
    )
}

/// One record of the log as the model knows it.
struct Stored {
    seq: u64,
    id: String,
    sender: &'static str,
    tlp: pb::Tlp,
    aud: Aud,
    exercise: &'static str,
    envelope: pb::Envelope,
    leaf_hash: Vec<u8>,
    /// (retraction id, reason) once retracted.
    retracted_by: Option<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Full,
    Tombstone,
}

/// The model of the exercise rule of §5.
fn in_scope(scope: &TrafficScope, exercise: &str) -> bool {
    match scope {
        TrafficScope::Real => exercise.is_empty(),
        TrafficScope::Exercise(x) => exercise == x,
        TrafficScope::AllExercises => !exercise.is_empty(),
    }
}

/// The model of §5: what `team` gets of `rec` when reading in `scope`.
fn expected(team: &str, rec: &Stored, scope: &TrafficScope) -> Option<Shape> {
    if !in_scope(scope, rec.exercise) {
        None
    } else if team == rec.sender {
        Some(Shape::Full)
    } else if !rec.aud.admits(team) {
        None
    } else if rec.retracted_by.is_some() {
        Some(Shape::Tombstone)
    } else {
        Some(Shape::Full)
    }
}

/// Checks one returned record against the model's record and shape.
fn check(
    team: &str,
    scope: &TrafficScope,
    via: &str,
    rec: &Stored,
    shape: Shape,
    got: &pb::Record,
) -> Result<(), String> {
    let at = format!("team {team}, scope {scope:?}, seq {} ({via})", rec.seq);
    if got.seq != rec.seq {
        return Err(format!("{at}: got seq {}", got.seq));
    }
    if got.leaf_hash != rec.leaf_hash {
        return Err(format!("{at}: leaf hash differs from the receipt"));
    }
    match shape {
        Shape::Full => {
            if got.envelope.as_ref() != Some(&rec.envelope) || got.retracted.is_some() {
                return Err(format!(
                    "{at}: expected the full record, got envelope {} and tombstone {:?}",
                    if got.envelope.is_some() {
                        "set"
                    } else {
                        "absent"
                    },
                    got.retracted
                ));
            }
        }
        Shape::Tombstone => {
            let (by, reason) = rec.retracted_by.clone().unwrap();
            let want = pb::Tombstone {
                id: rec.id.clone(),
                sender: rec.sender.to_owned(),
                seq: rec.seq,
                retracted_by: by,
                reason,
                // What the record was (kind and signed time, never content)
                // and when it was retracted: checked for presence only.
                kind: got.retracted.as_ref().map_or(0, |t| t.kind),
                created_at: got.retracted.as_ref().and_then(|t| t.created_at),
                retracted_at: got.retracted.as_ref().and_then(|t| t.retracted_at),
            };
            if want.kind == 0 || want.created_at.is_none() || want.retracted_at.is_none() {
                return Err(format!("{at}: tombstone without kind or times: {want:?}"));
            }
            if got.envelope.is_some() || got.retracted.as_ref() != Some(&want) {
                return Err(format!(
                    "{at}: expected tombstone {want:?}, got envelope {} and tombstone {:?}",
                    if got.envelope.is_some() {
                        "set (content leaked)"
                    } else {
                        "absent"
                    },
                    got.retracted
                ));
            }
        }
    }
    Ok(())
}

fn scopes() -> Vec<TrafficScope> {
    vec![
        TrafficScope::Real,
        TrafficScope::Exercise("DRILL-A".into()),
        TrafficScope::Exercise("DRILL-B".into()),
        TrafficScope::AllExercises,
    ]
}

async fn subscribe_all(c: &Client, scope: &TrafficScope) -> Vec<pb::Record> {
    let req = pb::SubscribeRequest {
        start: Some(Start::AfterSeq(0)),
        filter: Some(pb::Filter {
            exercise: Some(scope.to_selector()),
            ..Default::default()
        }),
        follow: false,
    };
    let mut s = c.exchange().subscribe(req).await.unwrap().into_inner();
    let mut out = Vec::new();
    while let Some(r) = s.message().await.unwrap() {
        out.push(r);
    }
    out
}

async fn run_case(msgs: Vec<Msg>) -> Result<(), String> {
    let b = TestBroker::start().await;
    let mut clients = Vec::new();
    for team in TEAMS {
        clients.push(b.client(team).await);
    }
    let client = |team: &str| &clients[TEAMS.iter().position(|t| *t == team).unwrap()];

    // Publish every message; the model decides acceptance and seqs.
    let mut log: Vec<Stored> = Vec::new();
    let mut targets = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let mut body = body(m.sender, m.tlp, m.aud.wire(), incident(&format!("m{i}")));
        body.exercise = m.exercise.to_owned();
        let c = client(m.sender);
        let envelope = c.seal(&body).unwrap();
        match (m.acceptable(), c.publish(envelope.clone()).await) {
            (true, Ok(r)) => {
                let seq = log.len() as u64 + 1;
                if r.seq != seq || r.duplicate {
                    return Err(format!("message {i}: receipt {r:?}, expected seq {seq}"));
                }
                log.push(Stored {
                    seq,
                    id: body.id.clone(),
                    sender: m.sender,
                    tlp: m.tlp,
                    aud: m.aud.clone(),
                    exercise: m.exercise,
                    envelope,
                    leaf_hash: r.leaf_hash,
                    retracted_by: None,
                });
                if m.retract {
                    targets.push(log.len() - 1);
                }
            }
            (false, Err(ClientError::Status(s))) if s.code() == tonic::Code::InvalidArgument => {}
            (ok, r) => {
                return Err(format!(
                    "message {i} {m:?}: expected {}, got {r:?}",
                    if ok { "acceptance" } else { "INVALID_ARGUMENT" }
                ));
            }
        }
    }
    for t in targets {
        let (sender, tlp, aud, exercise, target_id) = {
            let s = &log[t];
            (s.sender, s.tlp, s.aud.clone(), s.exercise, s.id.clone())
        };
        let reason = format!("retracting seq {}", log[t].seq);
        let mut rbody = body(
            sender,
            tlp,
            aud.wire(),
            Content::Retraction(pb::Retraction {
                target: target_id,
                reason: reason.clone(),
            }),
        );
        rbody.exercise = exercise.to_owned();
        let envelope = client(sender).seal(&rbody).unwrap();
        let r = client(sender)
            .publish(envelope.clone())
            .await
            .map_err(|e| format!("retraction of seq {}: {e:?}", log[t].seq))?;
        let seq = log.len() as u64 + 1;
        if r.seq != seq {
            return Err(format!("retraction of seq {}: receipt {r:?}", log[t].seq));
        }
        log[t].retracted_by = Some((rbody.id.clone(), reason));
        log.push(Stored {
            seq,
            id: rbody.id,
            sender,
            tlp,
            aud,
            exercise,
            envelope,
            leaf_hash: r.leaf_hash,
            retracted_by: None,
        });
    }

    for team in TEAMS {
        let c = client(team);
        for scope in scopes() {
            // (a) Subscribe from the start: exactly the model's records, in order.
            let want: Vec<(&Stored, Shape)> = log
                .iter()
                .filter_map(|r| expected(team, r, &scope).map(|s| (r, s)))
                .collect();
            let got = subscribe_all(c, &scope).await;
            for i in 0..want.len().max(got.len()) {
                let at = |seq: u64| format!("team {team}, scope {scope:?}, seq {seq} (subscribe)");
                match (want.get(i), got.get(i)) {
                    (Some((rec, shape)), Some(g)) if g.seq == rec.seq => {
                        check(team, &scope, "subscribe", rec, *shape, g)?
                    }
                    (Some((rec, _)), None) => {
                        return Err(format!("{}: visible record not delivered", at(rec.seq)));
                    }
                    (Some((rec, _)), Some(g)) if g.seq > rec.seq => {
                        return Err(format!("{}: visible record not delivered", at(rec.seq)));
                    }
                    (_, Some(g)) => {
                        return Err(format!(
                            "{}: delivered, but the team may not read it in this scope \
                             (or it is out of order or repeated)",
                            at(g.seq)
                        ));
                    }
                    (None, None) => unreachable!(),
                }
            }
            // (b) Get every seq, and one past the end (a rejected message
            // must not have been stored): same shape, or NOT_FOUND.
            for seq in 1..=log.len() as u64 + 1 {
                let mut req = get_seq(seq);
                req.exercise = Some(scope.to_selector());
                let res = c.get(req).await;
                let rec = log.get(seq as usize - 1);
                match (rec.and_then(|r| expected(team, r, &scope)), res) {
                    (Some(shape), Ok(g)) => check(team, &scope, "get", rec.unwrap(), shape, &g)?,
                    (None, Err(ClientError::Status(s))) if s.code() == tonic::Code::NotFound => {}
                    (want, res) => {
                        return Err(format!(
                            "team {team}, scope {scope:?}, seq {seq} (get): expected {}, got {}",
                            match want {
                                Some(s) => format!("{s:?}"),
                                None => "NOT_FOUND".into(),
                            },
                            match res {
                                Ok(_) => "a record".to_owned(),
                                Err(e) => format!("{e:?}"),
                            }
                        ));
                    }
                }
            }
        }
    }
    drop(clients);
    b.stop().await;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 12,
        max_shrink_iters: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_read_path_returns_exactly_what_section_5_allows(
        msgs in proptest::collection::vec(msg(), 1..=14)
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        if let Err(e) = rt.block_on(run_case(msgs)) {
            return Err(TestCaseError::fail(e));
        }
    }
}
