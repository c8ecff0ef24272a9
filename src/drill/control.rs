//! The control cell (`certex drill run`): plays a scenario's comchecks and
//! injects at their times as their scripted senders under the exercise id,
//! follows the exercise over one subscription per team identity it holds,
//! scores every expectation (PENDING → SUCCESS / PARTIAL / FAILED), prints
//! progress, and builds the after-action [`Report`] with every record
//! proved against a signed tree head.
//!
//! While it runs it also holds a real-world subscription per identity: the
//! report states how many exercise records reached real-world readers
//! (SPEC §5 says none may).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::client::audit::{fetch_head, head_json};
use crate::client::connection::Client;
use crate::client::draft::BodyJson;
use crate::client::verify;
use crate::drill::matching::{TargetRef, answers, worth};
use crate::drill::report::{self, Report, human};
use crate::drill::scenario::{
    Inject, On, Role, Scenario, Target, TemplateContext, Trigger, format_duration,
};
use crate::proto::{self as pb, body::Content};
use crate::rules::access::TrafficScope;
use crate::rules::directory::Directory;
use crate::rules::envelope;
use crate::rules::time::{format_time, to_timestamp};
use crate::rules::validate::Kind;
use crate::rules::vocab::Word;

/// How long after a deadline the control cell waits for answers still in
/// flight before it settles an expectation (wall clock). Answers are judged
/// by the broker's receipt time, so this only bounds the wait.
const GRACE: Duration = Duration::from_millis(300);

/// The identities the control cell acts and reads as.
pub struct Identities {
    /// The `--as` team: sends what no scripted sender's identity can.
    pub control: Client,
    /// Other team identities available (dev PKI: every participant).
    pub teams: BTreeMap<String, Client>,
}

impl Identities {
    /// The client that signs for `team`, and whether it is the team itself.
    fn sender(&self, team: &str) -> &Client {
        if self.control.team() == team {
            return &self.control;
        }
        self.teams.get(team).unwrap_or(&self.control)
    }

    /// Every distinct identity, the control team first.
    fn all(&self) -> Vec<&Client> {
        let mut out = vec![&self.control];
        out.extend(
            self.teams
                .values()
                .filter(|c| c.team() != self.control.team()),
        );
        out
    }
}

/// What `drill run` needs beyond the scenario and the identities.
pub struct RunOptions {
    pub broker: String,
    /// Exercise seconds per wall second; the scenario's when `None`.
    pub speed: Option<f64>,
    /// The broker's tree-head key, to verify the head the report is proved
    /// against.
    pub log_key: Option<VerifyingKey>,
    /// For groups' members in the communication matrix.
    pub directory: Option<Directory>,
    pub scenario_file: String,
    /// Progress lines on stderr.
    pub progress: bool,
}

#[derive(Debug, Clone)]
struct Sent {
    sender: String,
    id: String,
    seq: u64,
    at: OffsetDateTime,
    leaf: String,
}

#[derive(Debug, Clone, PartialEq)]
enum InjState {
    Waiting,
    Due(Instant),
    Sent,
    NotPlayed(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Pending,
    Success,
    Partial,
    Failed,
    NotPlayed,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Success => "SUCCESS",
            Status::Partial => "PARTIAL",
            Status::Failed => "FAILED",
            Status::NotPlayed => "NOT-PLAYED",
        }
    }
}

#[derive(Debug, Clone)]
struct ExpState {
    status: Status,
    points: u32,
    answer: Option<(u64, OffsetDateTime)>,
    deadline: Option<OffsetDateTime>,
    note: String,
}

/// A record of the exercise as one of the identities read it.
struct Seen {
    rec: pb::Record,
    body: pb::Body,
    json: serde_json::Value,
    at: OffsetDateTime,
    /// Index into [`Identities::all`] of a reader.
    reader: usize,
    verified: bool,
}

enum Event {
    Exercise(usize, pb::Record),
    Real(pb::Record),
    Ended(usize, bool, String),
}

/// A protobuf time as a time; now when absent or out of range.
fn time_of(ts: Option<&prost_types::Timestamp>) -> OffsetDateTime {
    ts.and_then(|t| {
        OffsetDateTime::from_unix_timestamp_nanos(
            i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos),
        )
        .ok()
    })
    .unwrap_or_else(OffsetDateTime::now_utc)
}

fn received(rec: &pb::Record) -> OffsetDateTime {
    time_of(rec.received_at.as_ref())
}

fn kind_word(body: &pb::Body) -> String {
    Kind::of(body)
        .map(|k| k.word().to_owned())
        .unwrap_or_default()
}

/// The control cell's state while the drill runs.
struct Cell<'a> {
    s: &'a Scenario,
    ids: &'a Identities,
    speed: f64,
    t0: OffsetDateTime,
    i0: Instant,
    progress: bool,
    injects: Vec<InjState>,
    sent_injects: BTreeMap<String, Sent>,
    /// (comcheck index, team) → the check sent to that team.
    comchecks: BTreeMap<(usize, String), Sent>,
    comcheck_due: Vec<Option<Instant>>,
    exps: Vec<ExpState>,
    seen: BTreeMap<u64, Seen>,
    real_seen: u32,
    real_exercise: u32,
    real_streams: u32,
}

impl<'a> Cell<'a> {
    /// Exercise seconds at a wall-clock time.
    fn ex(&self, t: OffsetDateTime) -> f64 {
        ((t - self.t0).as_seconds_f64() * self.speed).max(0.0)
    }

    fn ex_now(&self) -> f64 {
        self.i0.elapsed().as_secs_f64() * self.speed
    }

    fn wall(&self, exercise: Duration) -> Duration {
        exercise.div_f64(self.speed)
    }

    /// The local instant of a broker time (same clock assumed).
    fn instant(&self, t: OffsetDateTime) -> Instant {
        let d = (t - self.t0).as_seconds_f64().max(0.0);
        self.i0 + Duration::from_secs_f64(d)
    }

    fn say(&self, line: impl AsRef<str>) {
        if self.progress {
            let t = self.ex_now().max(0.0) as u64;
            eprintln!(
                "[ex {:02}:{:02}:{:02} | wall {:>6.1}s] {}",
                t / 3600,
                (t % 3600) / 60,
                t % 60,
                self.i0.elapsed().as_secs_f64(),
                line.as_ref()
            );
        }
    }

    fn sent_map(&self) -> BTreeMap<String, (String, String)> {
        self.sent_injects
            .iter()
            .map(|(k, v)| (k.clone(), (v.sender.clone(), v.id.clone())))
            .collect()
    }

    async fn publish(&self, client: &Client, body: pb::Body) -> Result<Sent, String> {
        let receipt = client
            .publish(client.seal(&body).map_err(|e| e.to_string())?)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Sent {
            sender: body.sender,
            id: body.id,
            seq: receipt.seq,
            at: time_of(receipt.received_at.as_ref()),
            leaf: hex::encode(&receipt.leaf_hash),
        })
    }

    async fn play_inject(&mut self, i: usize) {
        let inj: &Inject = &self.s.injects[i];
        let client = self.ids.sender(&inj.from);
        let id = uuid::Uuid::new_v4().to_string();
        let sent = self.sent_map();
        let ctx = TemplateContext {
            now: OffsetDateTime::now_utc(),
            speed: self.speed,
            exercise: &self.s.exercise.id,
            sent: &sent,
        };
        let outcome = match self.s.draft(inj, &ctx, &id, client.team()) {
            Err(e) => Err(format!("its payload is not a valid draft: {e}")),
            Ok(d) => match d.to_body() {
                Err(e) => Err(format!("its payload is not a valid draft: {e}")),
                Ok(body) => self
                    .publish(client, body)
                    .await
                    .map_err(|e| format!("the broker refused it: {e}")),
            },
        };
        match outcome {
            Ok(sent) => {
                let as_note = if client.team() != inj.from {
                    format!(
                        " (signed as {}: no identity for {})",
                        client.team(),
                        inj.from
                    )
                } else {
                    String::new()
                };
                self.say(format!(
                    "inject {} sent: {} → {} {} \"{}\" (seq {}){as_note}",
                    inj.id,
                    client.team(),
                    inj.to.join(", "),
                    inj.method.key(),
                    inj.subject,
                    sent.seq
                ));
                if !inj.expected_action.is_empty() {
                    self.say(format!("    expected action: {}", inj.expected_action));
                }
                self.sent_injects.insert(inj.id.clone(), sent);
                self.injects[i] = InjState::Sent;
            }
            Err(why) => {
                self.say(format!("inject {} NOT played: {why}", inj.id));
                self.injects[i] = InjState::NotPlayed(why);
            }
        }
    }

    async fn send_comcheck(&mut self, c: usize) {
        let cc = &self.s.comchecks[c];
        let client = self.ids.sender(&cc.from);
        let mut ok = Vec::new();
        for team in &cc.to {
            let now = OffsetDateTime::now_utc();
            let wall = time::Duration::try_from(self.wall(cc.expires)).unwrap_or_default();
            let message = if cc.message.is_empty() {
                "Communication check".to_owned()
            } else {
                cc.message.clone()
            };
            let body = pb::Body {
                id: uuid::Uuid::new_v4().to_string(),
                sender: client.team().to_owned(),
                created_at: Some(to_timestamp(now)),
                tlp: pb::Tlp::Green as i32,
                audience: Some(pb::Audience {
                    kind: Some(pb::audience::Kind::Teams(pb::TeamList {
                        teams: vec![team.clone()],
                    })),
                }),
                exercise: self.s.exercise.id.clone(),
                references: vec![],
                content: Some(Content::Request(pb::AssistanceRequest {
                    to: team.clone(),
                    action: pb::Action::Other as i32,
                    legal_basis: format!(
                        "Exercise {}: communication check, no legal effect",
                        self.s.exercise.id
                    ),
                    description: format!(
                        "{} {}: {message}. Acknowledge this request within {} (exercise time) to confirm you receive exercise traffic.",
                        COMCHECK_MARK,
                        cc.id,
                        format_duration(cc.expires)
                    ),
                    respond_by: Some(to_timestamp(now + wall)),
                    priority: pb::Severity::Low as i32,
                })),
            };
            match self.publish(client, body).await {
                Ok(sent) => {
                    ok.push(format!("{team} (seq {})", sent.seq));
                    self.comchecks.insert((c, team.clone()), sent);
                }
                Err(e) => self.say(format!("comcheck {} to {team} NOT sent: {e}", cc.id)),
            }
        }
        self.say(format!(
            "comcheck {} sent by {} to {}; expires after {}",
            cc.id,
            client.team(),
            ok.join(", "),
            format_duration(cc.expires)
        ));
    }

    /// The target message of an expectation, once sent.
    fn target(&self, e: usize) -> Result<Option<&Sent>, String> {
        let exp = &self.s.expectations[e];
        match &exp.target {
            Target::Inject(id) => {
                let i = self.s.injects.iter().position(|x| &x.id == id);
                match i.map(|i| &self.injects[i]) {
                    Some(InjState::NotPlayed(why)) => {
                        Err(format!("inject {id} was not played: {why}"))
                    }
                    _ => Ok(self.sent_injects.get(id)),
                }
            }
            Target::Comcheck(id) => {
                let c = self
                    .s
                    .comchecks
                    .iter()
                    .position(|x| &x.id == id)
                    .unwrap_or(0);
                if !self.s.comchecks[c].to.contains(&exp.team) {
                    return Err(format!("comcheck {id} is not addressed to {}", exp.team));
                }
                match (
                    self.comcheck_due[c],
                    self.comchecks.get(&(c, exp.team.clone())),
                ) {
                    (None, None) => Err(format!("comcheck {id} could not be sent to {}", exp.team)),
                    (_, sent) => Ok(sent),
                }
            }
        }
    }

    /// Settles what can be settled; returns whether anything changed.
    fn settle(&mut self, now: Instant, ending: bool) -> bool {
        let mut changed = false;
        for e in 0..self.exps.len() {
            if self.exps[e].status != Status::Pending {
                continue;
            }
            let s = self.s;
            let exp = &s.expectations[e];
            let target = match self.target(e) {
                Err(why) => {
                    self.exps[e].status = Status::NotPlayed;
                    self.exps[e].note = why;
                    changed = true;
                    continue;
                }
                Ok(None) => {
                    if ending {
                        self.exps[e].status = Status::NotPlayed;
                        self.exps[e].note =
                            "its target was never sent: the drill ended first".into();
                        changed = true;
                    }
                    continue;
                }
                Ok(Some(t)) => t.clone(),
            };
            let wall = time::Duration::try_from(self.wall(exp.within)).unwrap_or_default();
            let deadline = target.at + wall;
            self.exps[e].deadline = Some(deadline);
            let tref = TargetRef {
                sender: &target.sender,
                id: &target.id,
                seq: target.seq,
            };
            let mut best: Option<(u32, u64, OffsetDateTime, Vec<String>)> = None;
            let mut late: Option<(u64, OffsetDateTime)> = None;
            for (seq, seen) in &self.seen {
                if !answers(exp, &tref, *seq, &seen.body) {
                    continue;
                }
                if seen.at > deadline {
                    late.get_or_insert((*seq, seen.at));
                    continue;
                }
                let w = worth(exp, &seen.json);
                if best.as_ref().is_none_or(|b| w.points > b.0) {
                    best = Some((w.points, *seq, seen.at, w.missing));
                }
            }
            let after = |at: OffsetDateTime| human((at - target.at).as_seconds_f64() * self.speed);
            let full = best.as_ref().is_some_and(|b| b.0 == exp.score);
            let past = now >= self.instant(deadline) + GRACE;
            if !(full || past || ending) {
                continue;
            }
            let st = &mut self.exps[e];
            changed = true;
            match best {
                Some((points, seq, at, missing)) => {
                    st.points = points;
                    st.answer = Some((seq, at));
                    st.status = if points >= exp.expected_score {
                        Status::Success
                    } else if points > 0 {
                        Status::Partial
                    } else {
                        Status::Failed
                    };
                    st.note = if missing.is_empty() {
                        format!("{} after {}", exp.kind.word(), after(at))
                    } else {
                        format!(
                            "{} after {}, but {}",
                            exp.kind.word(),
                            after(at),
                            missing.join("; ")
                        )
                    };
                }
                None => {
                    st.status = Status::Failed;
                    st.note = match late {
                        Some((seq, at)) => format!(
                            "no {} within {}; it came after {} (seq {seq}), too late",
                            exp.kind.word(),
                            format_duration(exp.within),
                            after(at)
                        ),
                        None if !past => format!(
                            "no {} before the drill ended (deadline {} after the target)",
                            exp.kind.word(),
                            format_duration(exp.within)
                        ),
                        None => format!(
                            "no {} within {}",
                            exp.kind.word(),
                            format_duration(exp.within)
                        ),
                    };
                }
            }
            let line = format!(
                "expectation {} {}: {} ({}/{} points) — {}",
                exp.id,
                st.status.word(),
                exp.team,
                st.points,
                exp.score,
                st.note
            );
            self.say(line);
        }
        changed
    }

    /// Schedules or cancels injects whose trigger has fired.
    fn trigger(&mut self) -> bool {
        let mut changed = false;
        for i in 0..self.s.injects.len() {
            if self.injects[i] != InjState::Waiting {
                continue;
            }
            let Trigger::After { event, on, delay } = &self.s.injects[i].trigger else {
                continue;
            };
            let wall_delay = self.wall(*delay);
            if let Some(j) = self.s.injects.iter().position(|x| &x.id == event) {
                match &self.injects[j] {
                    InjState::Sent => {
                        let at = self.instant(self.sent_injects[event].at) + wall_delay;
                        self.injects[i] = InjState::Due(at);
                        changed = true;
                    }
                    InjState::NotPlayed(_) => {
                        self.injects[i] = InjState::NotPlayed(format!(
                            "it follows inject {event}, which was not played"
                        ));
                        changed = true;
                    }
                    _ => {}
                }
            } else if let Some(e) = self.s.expectations.iter().position(|x| &x.id == event) {
                let st = self.exps[e].status;
                let fires = match (st, on) {
                    (Status::Pending, _) => continue,
                    (Status::NotPlayed, _) => false,
                    (Status::Success | Status::Partial, On::Met | On::Settled) => true,
                    (Status::Failed, On::Failed | On::Settled) => true,
                    _ => false,
                };
                changed = true;
                // A failure dates from its deadline, a success from its
                // settling (the answer's arrival, or the deadline for a
                // partial answer).
                let base = match (st, self.exps[e].deadline) {
                    (Status::Failed, Some(d)) => self.instant(d),
                    _ => Instant::now(),
                };
                self.injects[i] = if fires {
                    InjState::Due(base + wall_delay)
                } else {
                    InjState::NotPlayed(format!(
                        "expectation {event} ended {}; this inject plays when it is {}",
                        st.word(),
                        match on {
                            On::Met => "met",
                            On::Failed => "failed",
                            On::Settled => "settled",
                        }
                    ))
                };
                if let InjState::NotPlayed(why) = &self.injects[i] {
                    let line = format!("inject {} will not be played: {why}", self.s.injects[i].id);
                    self.say(line);
                }
            }
        }
        changed
    }

    /// Whether a comcheck to a team was answered in time, or has expired.
    fn comcheck_reply(&self, c: usize, team: &str) -> (Option<(u64, OffsetDateTime)>, bool) {
        let Some(sent) = self.comchecks.get(&(c, team.to_owned())) else {
            return (None, true);
        };
        let wall =
            time::Duration::try_from(self.wall(self.s.comchecks[c].expires)).unwrap_or_default();
        let deadline = sent.at + wall;
        let reply = self.seen.iter().find_map(|(seq, seen)| {
            let tref = TargetRef {
                sender: &sent.sender,
                id: &sent.id,
                seq: sent.seq,
            };
            let is_ack = seen.body.sender == team
                && *seq > sent.seq
                && seen.at <= deadline
                && matches!(&seen.body.content, Some(Content::CaseUpdate(u))
                    if u.requester == tref.sender && u.case_id == tref.id
                        && u.transition == pb::CaseState::Acknowledged as i32);
            is_ack.then_some((*seq, seen.at))
        });
        let expired = Instant::now() >= self.instant(deadline) + GRACE;
        (reply, expired)
    }

    fn finished(&self) -> bool {
        let injects_done = self
            .injects
            .iter()
            .all(|s| matches!(s, InjState::Sent | InjState::NotPlayed(_)));
        let exps_done = self.exps.iter().all(|e| e.status != Status::Pending);
        let checks_done = self.s.comchecks.iter().enumerate().all(|(c, cc)| {
            self.comcheck_due[c].is_none()
                && cc.to.iter().all(|t| {
                    let (reply, expired) = self.comcheck_reply(c, t);
                    reply.is_some() || expired
                })
        });
        injects_done && exps_done && checks_done
    }

    /// The next instant something may happen without a record arriving.
    fn next_wake(&self, end: Instant) -> Instant {
        let mut next = end;
        for s in &self.injects {
            if let InjState::Due(t) = s {
                next = next.min(*t);
            }
        }
        for t in self.comcheck_due.iter().flatten() {
            next = next.min(*t);
        }
        for e in &self.exps {
            if e.status == Status::Pending
                && let Some(d) = e.deadline
            {
                next = next.min(self.instant(d) + GRACE);
            }
        }
        for ((c, _), sent) in &self.comchecks {
            let wall = time::Duration::try_from(self.wall(self.s.comchecks[*c].expires))
                .unwrap_or_default();
            let t = self.instant(sent.at + wall) + GRACE;
            if t > Instant::now() {
                next = next.min(t);
            }
        }
        next.max(Instant::now() + Duration::from_millis(5))
    }

    fn observe(&mut self, reader: usize, rec: pb::Record) {
        if self.seen.contains_key(&rec.seq) {
            return;
        }
        let Some(env) = rec.envelope.as_ref() else {
            return;
        };
        let Ok(body) = envelope::decode_body(env) else {
            return;
        };
        let client = self.ids.all()[reader];
        let verified = client.render(&rec).verified;
        let json = serde_json::to_value(BodyJson::from_body(&body)).unwrap_or_default();
        let at = received(&rec);
        self.seen.insert(
            rec.seq,
            Seen {
                rec,
                body,
                json,
                at,
                reader,
                verified,
            },
        );
    }
}

/// The mark that opens a communication check's description; automated
/// participants answer requests that carry it with an acknowledgement.
pub const COMCHECK_MARK: &str = "COMCHECK";

/// Runs a drill to its end (every expectation settled, the exercise time
/// up, or `stop` resolving) and returns its report.
pub async fn run(
    s: &Scenario,
    ids: &Identities,
    opts: &RunOptions,
    stop: impl Future<Output = ()>,
) -> Result<Report, String> {
    let speed = opts.speed.unwrap_or(s.exercise.time_compression);
    if !(speed.is_finite() && speed > 0.0) {
        return Err(format!("--speed {speed}: must be a number above 0"));
    }
    let head = ids
        .control
        .transparency()
        .get_head(pb::GetHeadRequest {})
        .await
        .map_err(|e| format!("cannot read the log head: {}", e.message()))?
        .into_inner();
    let start_seq = head.tree_size;

    // One exercise and one real-world subscription per identity.
    let (tx, mut rx) = mpsc::channel::<Event>(4096);
    let readers = ids.all();
    let mut tasks = Vec::new();
    for (n, client) in readers.iter().enumerate() {
        for real in [false, true] {
            let scope = if real {
                TrafficScope::Real
            } else {
                TrafficScope::Exercise(s.exercise.id.clone())
            };
            let req = pb::SubscribeRequest {
                start: Some(pb::subscribe_request::Start::AfterSeq(start_seq)),
                filter: Some(pb::Filter {
                    exercise: Some(scope.to_selector()),
                    ..Default::default()
                }),
                follow: true,
            };
            let mut stream = client
                .exchange()
                .subscribe(req)
                .await
                .map_err(|e| format!("cannot subscribe as {}: {}", client.team(), e.message()))?
                .into_inner();
            let tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    match stream.message().await {
                        Ok(Some(rec)) => {
                            let ev = if real {
                                Event::Real(rec)
                            } else {
                                Event::Exercise(n, rec)
                            };
                            if tx.send(ev).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => {
                            let _ = tx.send(Event::Ended(n, real, "ended".into())).await;
                            return;
                        }
                        Err(e) => {
                            let _ = tx.send(Event::Ended(n, real, e.message().to_owned())).await;
                            return;
                        }
                    }
                }
            }));
        }
    }
    drop(tx);

    let t0 = OffsetDateTime::now_utc();
    let i0 = Instant::now();
    let mut cell = Cell {
        s,
        ids,
        speed,
        t0,
        i0,
        progress: opts.progress,
        injects: s
            .injects
            .iter()
            .map(|i| match i.trigger {
                Trigger::At(at) => InjState::Due(i0 + at.div_f64(speed)),
                Trigger::After { .. } => InjState::Waiting,
            })
            .collect(),
        sent_injects: BTreeMap::new(),
        comchecks: BTreeMap::new(),
        comcheck_due: s
            .comchecks
            .iter()
            .map(|c| Some(i0 + c.at.div_f64(speed)))
            .collect(),
        exps: s
            .expectations
            .iter()
            .map(|_| ExpState {
                status: Status::Pending,
                points: 0,
                answer: None,
                deadline: None,
                note: String::new(),
            })
            .collect(),
        seen: BTreeMap::new(),
        real_seen: 0,
        real_exercise: 0,
        real_streams: readers.len() as u32,
    };
    let end = i0 + s.exercise.duration.div_f64(speed);
    cell.say(format!(
        "drill {} \"{}\" starts: {} injects, {} comchecks, {} expectations; {} of exercise time at speed {speed} ({} wall); log at seq {start_seq}",
        s.exercise.id,
        s.exercise.name,
        s.injects.len(),
        s.comchecks.len(),
        s.expectations.len(),
        format_duration(s.exercise.duration),
        human(s.exercise.duration.as_secs_f64() / speed),
    ));
    tokio::pin!(stop);
    let ended;
    let mut stream_trouble: Vec<String> = Vec::new();
    loop {
        // Play what is due, settle, trigger, until nothing moves.
        loop {
            let now = Instant::now();
            let mut moved = false;
            for c in 0..s.comchecks.len() {
                if cell.comcheck_due[c].is_some_and(|t| t <= now) {
                    cell.comcheck_due[c] = None;
                    cell.send_comcheck(c).await;
                    moved = true;
                }
            }
            for i in 0..s.injects.len() {
                if matches!(cell.injects[i], InjState::Due(t) if t <= now) {
                    cell.play_inject(i).await;
                    moved = true;
                }
            }
            moved |= cell.settle(Instant::now(), false);
            moved |= cell.trigger();
            if !moved {
                break;
            }
        }
        if cell.finished() {
            ended = "completed";
            break;
        }
        if Instant::now() >= end {
            ended = "time-up";
            break;
        }
        let wake = cell.next_wake(end);
        tokio::select! {
            _ = &mut stop => { ended = "interrupted"; break; }
            _ = tokio::time::sleep_until(wake) => {}
            ev = rx.recv() => match ev {
                Some(Event::Exercise(n, rec)) => cell.observe(n, rec),
                Some(Event::Real(rec)) => {
                    cell.real_seen += 1;
                    let exercise = rec.envelope.as_ref()
                        .and_then(|e| envelope::decode_body(e).ok())
                        .is_some_and(|b| !b.exercise.is_empty());
                    if exercise {
                        cell.real_exercise += 1;
                    }
                }
                Some(Event::Ended(n, real, why)) => {
                    let line = format!(
                        "the {} subscription of {} ended: {why}",
                        if real { "real-world" } else { "exercise" },
                        readers[n].team()
                    );
                    cell.say(&line);
                    stream_trouble.push(line);
                }
                None => {}
            }
        }
    }
    // Take in what is already queued, then settle for good.
    while let Ok(ev) = rx.try_recv() {
        match ev {
            Event::Exercise(n, rec) => cell.observe(n, rec),
            Event::Real(rec) => {
                cell.real_seen += 1;
                if rec
                    .envelope
                    .as_ref()
                    .and_then(|e| envelope::decode_body(e).ok())
                    .is_some_and(|b| !b.exercise.is_empty())
                {
                    cell.real_exercise += 1;
                }
            }
            Event::Ended(..) => {}
        }
    }
    for t in &tasks {
        t.abort();
    }
    if ended != "interrupted" {
        cell.settle(Instant::now(), true);
        for i in 0..s.injects.len() {
            if matches!(cell.injects[i], InjState::Waiting | InjState::Due(_)) {
                cell.injects[i] = InjState::NotPlayed("the drill ended first".into());
            }
        }
    }
    cell.say(format!("drill ended: {ended}"));
    let report = build_report(&cell, opts, ended, &stream_trouble).await;
    Ok(report)
}

fn recipients(
    body: &pb::Body,
    s: &Scenario,
    dir: Option<&Directory>,
    seen: &BTreeMap<u64, Seen>,
) -> Vec<String> {
    let mut out: BTreeSet<String> = BTreeSet::new();
    match body.audience.as_ref().and_then(|a| a.kind.as_ref()) {
        Some(pb::audience::Kind::Teams(l)) => out.extend(l.teams.iter().cloned()),
        Some(pb::audience::Kind::Group(g)) => match dir.and_then(|d| d.group(g)) {
            Some(members) => out.extend(members.iter().cloned()),
            None => {
                out.insert(format!("group {g}"));
            }
        },
        Some(pb::audience::Kind::Community(_)) => {
            out.extend(s.participants.iter().map(|p| p.team.clone()))
        }
        None => {}
    }
    if let Some(Content::CaseUpdate(u)) = &body.content {
        out.insert(u.requester.clone());
        // The addressee reads the requester's updates.
        if let Some(req) = seen
            .values()
            .find(|x| x.body.sender == u.requester && x.body.id == u.case_id)
            && let Some(Content::Request(r)) = &req.body.content
        {
            out.insert(r.to.clone());
        }
    }
    out.remove(&body.sender);
    out.into_iter().collect()
}

fn summary(body: &pb::Body) -> String {
    match &body.content {
        Some(Content::Incident(r)) => format!(
            "incident \"{}\" ({})",
            r.title,
            pb::Severity::try_from(r.severity)
                .map(|s| s.word())
                .unwrap_or("?")
        ),
        Some(Content::Warning(w)) => format!(
            "warning \"{}\" ({})",
            w.title,
            pb::Severity::try_from(w.severity)
                .map(|s| s.word())
                .unwrap_or("?")
        ),
        Some(Content::Request(r)) => format!(
            "request to {}: {}",
            r.to,
            pb::Action::try_from(r.action)
                .map(|a| a.word())
                .unwrap_or("?")
        ),
        Some(Content::CaseUpdate(u)) => format!(
            "case {} of {}: {}{}",
            short(&u.case_id),
            u.requester,
            pb::CaseState::try_from(u.transition)
                .map(|s| s.word())
                .unwrap_or("?"),
            match (u.note.is_empty(), u.reason.is_empty()) {
                (false, _) => format!(" — {}", u.note),
                (true, false) => format!(" — reason: {}", u.reason),
                _ => String::new(),
            }
        ),
        Some(Content::Retraction(r)) => format!("retraction of {}", short(&r.target)),
        None => "?".into(),
    }
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

async fn build_report(
    cell: &Cell<'_>,
    opts: &RunOptions,
    ended: &str,
    trouble: &[String],
) -> Report {
    let s = cell.s;
    let dir = opts.directory.as_ref();
    let readers = cell.ids.all();
    let ex = |t: OffsetDateTime| cell.ex(t);

    // Which records answered what.
    let mut answer_of: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for (e, st) in cell.exps.iter().enumerate() {
        if let Some((seq, _)) = st.answer {
            answer_of
                .entry(seq)
                .or_default()
                .push(s.expectations[e].id.clone());
        }
    }
    let mut inject_of: BTreeMap<u64, String> = BTreeMap::new();
    for (id, sent) in &cell.sent_injects {
        inject_of.insert(sent.seq, id.clone());
    }
    let mut comcheck_of: BTreeMap<u64, String> = BTreeMap::new();
    let mut comcheck_reply_of: BTreeMap<u64, String> = BTreeMap::new();
    for ((c, team), sent) in &cell.comchecks {
        comcheck_of.insert(sent.seq, s.comchecks[*c].id.clone());
        if let (Some((seq, _)), _) = cell.comcheck_reply(*c, team) {
            comcheck_reply_of.insert(seq, s.comchecks[*c].id.clone());
        }
    }

    // Evidence: a signed head and an inclusion proof per record.
    let mut proved: BTreeSet<u64> = BTreeSet::new();
    let mut unproved: Vec<u64> = Vec::new();
    let head = match &opts.log_key {
        Some(key) => fetch_head(&cell.ids.control, key)
            .await
            .ok()
            .map(|(h, _)| (h, true)),
        None => cell
            .ids
            .control
            .transparency()
            .get_head(pb::GetHeadRequest {})
            .await
            .ok()
            .map(|h| (h.into_inner(), false)),
    };
    if let Some((h, _)) = &head {
        let root = verify::hash_from_slice(&h.root_hash).ok();
        for (seq, seen) in &cell.seen {
            let Some(root) = root else { break };
            let Some(env) = seen.rec.envelope.as_ref() else {
                continue;
            };
            let leaf = verify::leaf_hash(&envelope::log_bytes(env));
            let proof = readers[seen.reader]
                .transparency()
                .get_inclusion_proof(pb::InclusionProofRequest {
                    leaf: Some(pb::inclusion_proof_request::Leaf::Seq(*seq)),
                    tree_size: h.tree_size,
                })
                .await;
            let ok = proof.ok().is_some_and(|p| {
                let path: Result<Vec<_>, _> = p
                    .into_inner()
                    .path
                    .iter()
                    .map(|x| verify::hash_from_slice(x))
                    .collect();
                path.is_ok_and(|path| {
                    verify::verify_inclusion(&leaf, seq - 1, h.tree_size, &path, &root).is_ok()
                })
            }) && leaf.as_slice() == seen.rec.leaf_hash.as_slice();
            if ok {
                proved.insert(*seq);
            } else {
                unproved.push(*seq);
            }
        }
    } else {
        unproved.extend(cell.seen.keys());
    }

    // The timeline.
    let mut timeline: Vec<report::Entry> = Vec::new();
    for (seq, seen) in &cell.seen {
        let b = &seen.body;
        let (kind, inject, expectation, comcheck) = if let Some(i) = inject_of.get(seq) {
            ("inject", Some(i.clone()), None, None)
        } else if let Some(c) = comcheck_of.get(seq) {
            ("comcheck", None, None, Some(c.clone()))
        } else if let Some(e) = answer_of.get(seq) {
            ("response", None, Some(e.join(", ")), None)
        } else if let Some(c) = comcheck_reply_of.get(seq) {
            ("response", None, None, Some(c.clone()))
        } else {
            ("message", None, None, None)
        };
        let mut text = summary(b);
        if let Some(i) = &inject {
            if let Some(inj) = s.inject(i) {
                text = format!("{i}: {} — {text}", inj.subject);
            }
        } else if let Some(c) = &comcheck {
            if kind == "comcheck" {
                text = format!("comcheck {c}");
            } else {
                text = format!("reply to comcheck {c}");
            }
        } else if let Some(e) = &expectation {
            text = format!("{e}: {text}");
        }
        if !seen.verified {
            text.push_str(" [signature NOT verified]");
        }
        timeline.push(report::Entry {
            at_s: ex(seen.at),
            kind: kind.into(),
            team: b.sender.clone(),
            to: recipients(b, s, dir, &cell.seen),
            record_kind: kind_word(b),
            summary: text,
            inject,
            expectation,
            comcheck,
            seq: Some(*seq),
            leaf_hash: Some(hex::encode(&seen.rec.leaf_hash)),
            received_at: Some(format_time(seen.at)),
            proved: proved.contains(seq),
        });
    }
    for (e, st) in cell.exps.iter().enumerate() {
        let exp = &s.expectations[e];
        let Some(d) = st.deadline else { continue };
        let kind = match st.status {
            Status::Success | Status::Partial => "deadline-met",
            Status::Failed => "deadline-missed",
            _ => continue,
        };
        timeline.push(report::Entry {
            at_s: ex(d),
            kind: kind.into(),
            team: exp.team.clone(),
            to: vec![],
            record_kind: String::new(),
            summary: format!(
                "{} deadline ({} within {}): {}",
                exp.id,
                exp.kind.word(),
                format_duration(exp.within),
                st.status.word()
            ),
            inject: match &exp.target {
                Target::Inject(i) => Some(i.clone()),
                _ => None,
            },
            expectation: Some(exp.id.clone()),
            comcheck: None,
            seq: None,
            leaf_hash: None,
            received_at: None,
            proved: false,
        });
    }
    timeline.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));

    let injects: Vec<report::InjectOutcome> = s
        .injects
        .iter()
        .enumerate()
        .map(|(i, inj)| {
            let sent = cell.sent_injects.get(&inj.id);
            report::InjectOutcome {
                id: inj.id.clone(),
                mv: inj.mv,
                subject: inj.subject.clone(),
                method: inj.method.key().into(),
                from: inj.from.clone(),
                sent_as: sent
                    .map(|x| x.sender.clone())
                    .unwrap_or_else(|| cell.ids.sender(&inj.from).team().to_owned()),
                to: inj.to.clone(),
                expected_action: inj.expected_action.clone(),
                status: if sent.is_some() { "sent" } else { "not-played" }.into(),
                why: match &cell.injects[i] {
                    InjState::NotPlayed(w) => Some(w.clone()),
                    _ => None,
                },
                at_s: sent.map(|x| ex(x.at)),
                seq: sent.map(|x| x.seq),
                leaf_hash: sent.map(|x| x.leaf.clone()),
            }
        })
        .collect();

    let comchecks: Vec<report::ComcheckOutcome> = s
        .comchecks
        .iter()
        .enumerate()
        .map(|(c, cc)| {
            let first = cc
                .to
                .iter()
                .filter_map(|t| cell.comchecks.get(&(c, t.clone())))
                .map(|x| ex(x.at))
                .fold(f64::INFINITY, f64::min);
            report::ComcheckOutcome {
                id: cc.id.clone(),
                from: cc.from.clone(),
                message: cc.message.clone(),
                at_s: if first.is_finite() {
                    first
                } else {
                    cc.at.as_secs_f64()
                },
                expires_s: cc.expires.as_secs_f64(),
                replies: cc
                    .to
                    .iter()
                    .map(|t| {
                        let sent = cell.comchecks.get(&(c, t.clone()));
                        let (reply, _) = cell.comcheck_reply(c, t);
                        report::ComcheckReply {
                            team: t.clone(),
                            status: match (sent, reply) {
                                (None, _) => "not-sent",
                                (Some(_), Some(_)) => "replied",
                                (Some(_), None) => "missed",
                            }
                            .into(),
                            reply_after_s: match (sent, reply) {
                                (Some(x), Some((_, at))) => {
                                    Some((at - x.at).as_seconds_f64() * cell.speed)
                                }
                                _ => None,
                            },
                            request_seq: sent.map(|x| x.seq),
                            reply_seq: reply.map(|r| r.0),
                        }
                    })
                    .collect(),
            }
        })
        .collect();

    let expectations: Vec<report::ExpectationOutcome> = s
        .expectations
        .iter()
        .enumerate()
        .map(|(e, exp)| {
            let st = &cell.exps[e];
            let target_at = cell.target(e).ok().flatten().map(|t| t.at);
            report::ExpectationOutcome {
                id: exp.id.clone(),
                team: exp.team.clone(),
                kind: exp.kind.word().into(),
                target: match &exp.target {
                    Target::Inject(i) | Target::Comcheck(i) => i.clone(),
                },
                description: exp.description.clone(),
                objective: exp.objective.map(|o| format!("O{}", o + 1)),
                within_s: exp.within.as_secs_f64(),
                status: st.status.word().into(),
                score: st.points,
                expected_score: exp.expected_score,
                max_score: exp.score,
                deadline_at_s: st.deadline.map(ex),
                response_seq: st.answer.map(|a| a.0),
                response_after_s: match (st.answer, target_at) {
                    (Some((_, at)), Some(t)) => Some((at - t).as_seconds_f64() * cell.speed),
                    _ => None,
                },
                note: st.note.clone(),
            }
        })
        .collect();

    // Per-team metrics.
    let comcheck_seqs: BTreeSet<u64> = comcheck_of.keys().copied().collect();
    let case_times = |team: Option<&str>, transition: pb::CaseState| -> Vec<f64> {
        let mut out = Vec::new();
        for (seq, req) in &cell.seen {
            let Some(Content::Request(r)) = &req.body.content else {
                continue;
            };
            if comcheck_seqs.contains(seq) || team.is_some_and(|t| r.to != t) {
                continue;
            }
            let first = cell.seen.values().find(|u| {
                matches!(&u.body.content, Some(Content::CaseUpdate(c))
                    if c.requester == req.body.sender && c.case_id == req.body.id
                        && c.transition == transition as i32 && u.body.sender == r.to)
            });
            if let Some(u) = first {
                out.push((u.at - req.at).as_seconds_f64() * cell.speed);
            }
        }
        out
    };
    let tally = |filter: &dyn Fn(&report::ExpectationOutcome) -> bool| {
        let mut t = report::Tally::default();
        let (mut score, mut expected, mut max) = (0, 0, 0);
        for x in expectations.iter().filter(|x| filter(x)) {
            match x.status.as_str() {
                "SUCCESS" => t.success += 1,
                "PARTIAL" => t.partial += 1,
                "FAILED" => t.failed += 1,
                "PENDING" => t.pending += 1,
                _ => continue,
            }
            score += x.score;
            expected += x.expected_score;
            max += x.max_score;
        }
        (t, score, expected, max)
    };
    let teams: Vec<report::TeamMetrics> = s
        .participants
        .iter()
        .map(|p| {
            let (t, score, expected_score, max_score) = tally(&|x| x.team == p.team);
            let replies = comchecks
                .iter()
                .flat_map(|c| c.replies.iter())
                .filter(|r| r.team == p.team);
            let (mut replied, mut missed) = (0, 0);
            for r in replies {
                match r.status.as_str() {
                    "replied" => replied += 1,
                    "missed" => missed += 1,
                    _ => {}
                }
            }
            report::TeamMetrics {
                team: p.team.clone(),
                role: role_word(p.role).into(),
                sent: timeline
                    .iter()
                    .filter(|e| e.seq.is_some() && e.team == p.team)
                    .count() as u32,
                received: timeline
                    .iter()
                    .filter(|e| e.seq.is_some() && e.to.contains(&p.team))
                    .count() as u32,
                time_to_acknowledge: report::Stats::of(&case_times(
                    Some(&p.team),
                    pb::CaseState::Acknowledged,
                )),
                time_to_accept: report::Stats::of(&case_times(
                    Some(&p.team),
                    pb::CaseState::Accepted,
                )),
                time_to_resolve: report::Stats::of(&case_times(
                    Some(&p.team),
                    pb::CaseState::Resolved,
                )),
                expectations: t,
                score,
                expected_score,
                max_score,
                comchecks_replied: replied,
                comchecks_missed: missed,
            }
        })
        .collect();
    let (t, score, expected_score, max_score) = tally(&|_| true);
    let checks: u32 = comchecks
        .iter()
        .flat_map(|c| c.replies.iter())
        .filter(|r| r.status != "not-sent")
        .count() as u32;
    let replied: u32 = teams.iter().map(|t| t.comchecks_replied).sum();
    let overall = report::Overall {
        messages: cell.seen.len() as u32,
        injects_sent: injects.iter().filter(|i| i.status == "sent").count() as u32,
        injects_not_played: injects.iter().filter(|i| i.status != "sent").count() as u32,
        time_to_acknowledge: report::Stats::of(&case_times(None, pb::CaseState::Acknowledged)),
        time_to_accept: report::Stats::of(&case_times(None, pb::CaseState::Accepted)),
        time_to_resolve: report::Stats::of(&case_times(None, pb::CaseState::Resolved)),
        expectations: t,
        score,
        expected_score,
        max_score,
        comcheck_success: (checks > 0).then(|| f64::from(replied) / f64::from(checks)),
    };

    // Who sent what to whom.
    let mut cells: BTreeMap<(String, String, String), u32> = BTreeMap::new();
    for e in timeline.iter().filter(|e| e.seq.is_some()) {
        for to in &e.to {
            *cells
                .entry((e.team.clone(), to.clone(), e.record_kind.clone()))
                .or_default() += 1;
        }
    }
    let matrix = cells
        .into_iter()
        .map(|((from, to, kind), count)| report::MatrixCell {
            from,
            to,
            kind,
            count,
        })
        .collect();

    let hseep = hseep(s, &expectations, &comchecks, &cell.sent_injects);
    let all_carry = cell.seen.values().all(|x| x.body.exercise == s.exercise.id);
    let passed =
        all_carry && cell.real_exercise == 0 && cell.real_streams > 0 && trouble.is_empty();
    let isolation = report::Isolation {
        exercise_records: cell.seen.len() as u32,
        all_carry_exercise_id: all_carry,
        real_world_subscriptions: cell.real_streams,
        exercise_records_in_real_world: cell.real_exercise,
        passed,
        statement: format!(
            "{} of the {} records of exercise {} carried the exercise id; {} real-world subscription(s) (one per team identity of the control cell: {}) were open from seq {} to the end and delivered {} record(s), {} of them exercise traffic.{}",
            cell.seen
                .values()
                .filter(|x| x.body.exercise == s.exercise.id)
                .count(),
            cell.seen.len(),
            s.exercise.id,
            cell.real_streams,
            readers
                .iter()
                .map(|c| c.team())
                .collect::<Vec<_>>()
                .join(", "),
            cell.seen.keys().next().map(|x| x - 1).unwrap_or(0),
            cell.real_seen,
            cell.real_exercise,
            if trouble.is_empty() {
                String::new()
            } else {
                format!(" Subscriptions did not stay open: {}.", trouble.join("; "))
            }
        ),
    };
    let (tree_head, verified_head) = match &head {
        Some((h, verified)) => {
            let j = head_json(h);
            (
                Some(report::TreeHead {
                    tree_size: j.tree_size,
                    root_hash: j.root_hash,
                    timestamp_ms: j.timestamp_ms,
                    signature: j.signature,
                    verified: *verified,
                }),
                *verified,
            )
        }
        None => (None, false),
    };
    let evidence = report::Evidence {
        tree_head,
        log_key: opts
            .log_key
            .map(|k| hex::encode(k.as_bytes()))
            .unwrap_or_default(),
        proved: proved.len() as u32,
        unproved,
        signatures_verified: cell.seen.values().filter(|x| x.verified).count() as u32,
        signatures_failed: cell
            .seen
            .iter()
            .filter(|(_, x)| !x.verified)
            .map(|(k, _)| *k)
            .collect(),
        how_to_verify: format!(
            "Each entry's record is in the log under the {}tree head above: `certex log prove SEQ --exercise {}` as a team that may read it re-checks one; `certex get SEQ --exercise {}` re-checks its signature.",
            if verified_head {
                "signed and verified "
            } else {
                "(unverified: no --log-key) "
            },
            s.exercise.id,
            s.exercise.id
        ),
    };
    let now = OffsetDateTime::now_utc();
    Report {
        format: report::FORMAT.into(),
        exercise: report::ExerciseInfo {
            id: s.exercise.id.clone(),
            name: s.exercise.name.clone(),
            description: s.exercise.description.clone(),
            organiser: s.exercise.organiser.clone(),
            objectives: s.exercise.objectives.clone(),
            core_capabilities: s.exercise.core_capabilities.clone(),
            duration_s: s.exercise.duration.as_secs_f64(),
            speed: cell.speed,
            started_at: format_time(cell.t0),
            ended_at: format_time(now),
            played_s: cell.ex(now),
            ended: ended.into(),
            broker: opts.broker.clone(),
            control_team: cell.ids.control.team().into(),
            scenario: opts.scenario_file.clone(),
        },
        participants: s
            .participants
            .iter()
            .map(|p| report::ParticipantInfo {
                team: p.team.clone(),
                role: role_word(p.role).into(),
                name: p.name.clone(),
            })
            .collect(),
        timeline,
        injects,
        comchecks,
        expectations,
        teams,
        overall,
        matrix,
        hseep,
        isolation,
        evidence,
    }
}

fn role_word(r: Role) -> &'static str {
    match r {
        Role::Player => "player",
        Role::Control => "control",
        Role::Observer => "observer",
    }
}

/// HSEEP's strengths, areas for improvement, capability ratings and the
/// improvement plan's rows, from the scored expectations.
fn hseep(
    s: &Scenario,
    exps: &[report::ExpectationOutcome],
    comchecks: &[report::ComcheckOutcome],
    sent: &BTreeMap<String, Sent>,
) -> report::Hseep {
    let objective_text = |o: &Option<String>| {
        o.as_ref()
            .and_then(|id| id[1..].parse::<usize>().ok())
            .and_then(|n| s.exercise.objectives.get(n - 1).cloned())
            .unwrap_or_default()
    };
    let records = |x: &report::ExpectationOutcome| {
        let mut r: Vec<u64> = Vec::new();
        if let Some(t) = sent.get(&x.target) {
            r.push(t.seq);
        }
        let check = comchecks
            .iter()
            .filter(|c| c.id == x.target)
            .flat_map(|c| c.replies.iter())
            .find(|r| r.team == x.team);
        r.extend(check.and_then(|c| c.request_seq));
        r.extend(x.response_seq);
        r
    };
    let what = |x: &report::ExpectationOutcome| {
        let d = if x.description.is_empty() {
            format!("{} {} on {}", x.team, x.kind, x.target)
        } else {
            format!("{} ({})", x.description, x.team)
        };
        format!("{}: {d} — {}", x.id, x.note)
    };
    let mut strengths = Vec::new();
    let mut areas = Vec::new();
    for x in exps {
        let f = report::Finding {
            text: what(x),
            team: x.team.clone(),
            objective: x.objective.clone(),
            expectation: x.id.clone(),
            records: records(x),
        };
        match x.status.as_str() {
            "SUCCESS" => strengths.push(f),
            "PARTIAL" | "FAILED" => areas.push(f),
            _ => {}
        }
    }
    for c in comchecks {
        // A miss an expectation already scores is reported there.
        let scored = |team: &str| exps.iter().any(|x| x.target == c.id && x.team == team);
        for r in c
            .replies
            .iter()
            .filter(|r| r.status == "missed" && !scored(&r.team))
        {
            areas.push(report::Finding {
                text: format!(
                    "{} did not acknowledge communication check {} within {}",
                    r.team,
                    c.id,
                    human(c.expires_s)
                ),
                team: r.team.clone(),
                objective: None,
                expectation: String::new(),
                records: r.request_seq.into_iter().collect(),
            });
        }
    }
    let ratings = s
        .exercise
        .objectives
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let id = format!("O{}", i + 1);
            let mine: Vec<&report::ExpectationOutcome> = exps
                .iter()
                .filter(|x| x.objective.as_deref() == Some(&id))
                .filter(|x| matches!(x.status.as_str(), "SUCCESS" | "PARTIAL" | "FAILED"))
                .collect();
            let score: u32 = mine.iter().map(|x| x.score).sum();
            let expected: u32 = mine.iter().map(|x| x.expected_score).sum();
            let max: u32 = mine.iter().map(|x| x.max_score).sum();
            report::Rating {
                objective_id: id,
                objective: text.clone(),
                rating: rating(mine.len(), score, expected).into(),
                score,
                expected_score: expected,
                max_score: max,
            }
        })
        .collect();
    let improvement_plan = areas
        .iter()
        .map(|f| report::PlanRow {
            objective: objective_text(&f.objective),
            issue: f.text.clone(),
            corrective_action: String::new(),
            capability: String::new(),
            primary_responsible: f.team.clone(),
            start: String::new(),
            completion: String::new(),
        })
        .collect();
    report::Hseep {
        strengths,
        areas_for_improvement: areas,
        ratings,
        improvement_plan,
    }
}

/// HSEEP capability rating from the points earned against those expected:
/// all of them P, at least 70 % S, at least 40 % M, less U; `-` when no
/// expectation measured the objective.
pub fn rating(measured: usize, score: u32, expected: u32) -> &'static str {
    if measured == 0 {
        return "-";
    }
    if expected == 0 || score >= expected {
        return "P";
    }
    let r = f64::from(score) / f64::from(expected);
    if r >= 0.7 {
        "S"
    } else if r >= 0.4 {
        "M"
    } else {
        "U"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drill::scenario::ExpectKind;

    #[test]
    fn ratings_follow_the_share_of_expected_points() {
        assert_eq!(rating(0, 0, 0), "-");
        assert_eq!(rating(2, 20, 20), "P");
        assert_eq!(rating(2, 15, 20), "S");
        assert_eq!(rating(2, 9, 20), "M");
        assert_eq!(rating(2, 0, 20), "U");
        assert_eq!(rating(1, 0, 0), "P");
    }

    #[test]
    fn expect_kind_words_line_up() {
        assert_eq!(ExpectKind::ComcheckReply.word(), "comcheck-reply");
        assert_eq!(ExpectKind::Any.word(), "any");
    }
}
