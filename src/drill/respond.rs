//! The automated participant (`certex drill respond`): a team that answers
//! exercise traffic by simple rules, for unattended drills and for tests.
//! It acknowledges communication checks; acknowledges, accepts, reports
//! progress on and resolves the assistance requests addressed to it (or
//! declines them, or stays silent, as its rules say), each step a set delay
//! after the one before; and answers incidents it may read with a warning
//! that references them. It acts only on records whose signature verifies
//! against its copy of the directory, and never on exercise traffic of
//! another drill than the one it was given.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::client::connection::Client;
use crate::drill::control::COMCHECK_MARK;
use crate::drill::scenario::parse_duration;
use crate::proto::{self as pb, body::Content};
use crate::rules::access::TrafficScope;
use crate::rules::envelope;
use crate::rules::time::{format_time, to_timestamp};
use crate::rules::vocab::{self, Word};

/// The steps a participant takes on a request, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Steps {
    pub steps: Vec<pb::CaseState>,
    /// Wall-clock wait before each step.
    pub delay: Duration,
    pub note: String,
    pub reason: String,
}

/// A rule for requests of one action (or any).
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRule {
    pub action: Option<pb::Action>,
    pub steps: Steps,
}

/// How the participant answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    pub comcheck: Steps,
    /// First rule whose action matches wins; requests no rule matches get
    /// the default lifecycle.
    pub requests: Vec<RequestRule>,
    pub default_request: Steps,
    /// Answer incidents with a warning, after this delay.
    pub warn_on_incident: Option<Duration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesToml {
    delay: Option<String>,
    comcheck: Option<StepsToml>,
    #[serde(default)]
    request: Vec<RequestToml>,
    incident: Option<IncidentToml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepsToml {
    steps: Option<Vec<String>>,
    delay: Option<String>,
    note: Option<String>,
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestToml {
    action: Option<String>,
    steps: Option<Vec<String>>,
    delay: Option<String>,
    note: Option<String>,
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IncidentToml {
    #[serde(default = "yes")]
    warn: bool,
    delay: Option<String>,
}

fn yes() -> bool {
    true
}

const LIFECYCLE: [pb::CaseState; 4] = [
    pb::CaseState::Acknowledged,
    pb::CaseState::Accepted,
    pb::CaseState::InProgress,
    pb::CaseState::Resolved,
];

fn step_word(w: &str) -> Result<pb::CaseState, String> {
    let t = match w {
        "acknowledge" | "ack" => pb::CaseState::Acknowledged,
        "accept" => pb::CaseState::Accepted,
        "decline" => pb::CaseState::Declined,
        "progress" => pb::CaseState::InProgress,
        "resolve" => pb::CaseState::Resolved,
        other => {
            return Err(format!(
                "step {other:?} is not one of acknowledge, accept, decline, progress, resolve"
            ));
        }
    };
    Ok(t)
}

impl Rules {
    /// The default participant: every step `delay` after the previous one.
    pub fn with_delay(delay: Duration) -> Self {
        let steps = |s: &[pb::CaseState]| Steps {
            steps: s.to_vec(),
            delay,
            note: String::new(),
            reason: String::new(),
        };
        Rules {
            comcheck: steps(&[pb::CaseState::Acknowledged]),
            requests: Vec::new(),
            default_request: steps(&LIFECYCLE),
            warn_on_incident: Some(delay),
        }
    }

    /// Reads a rules file; `delay` is the default for what it leaves out.
    pub fn load(path: &Path, delay: Duration) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read rules {}: {e}", path.display()))?;
        Self::parse(&text, delay).map_err(|e| format!("rules {}: {e}", path.display()))
    }

    pub fn parse(text: &str, delay: Duration) -> Result<Self, String> {
        let raw: RulesToml = toml::from_str(text).map_err(|e| e.to_string())?;
        let dur = |s: &Option<String>, d: Duration| -> Result<Duration, String> {
            s.as_deref()
                .map(parse_duration)
                .transpose()
                .map(|x| x.unwrap_or(d))
        };
        let delay = dur(&raw.delay, delay)?;
        let mut rules = Rules::with_delay(delay);
        let steps = |words: &Option<Vec<String>>,
                     d: &Option<String>,
                     note: &Option<String>,
                     reason: &Option<String>,
                     default: &[pb::CaseState]|
         -> Result<Steps, String> {
            let steps = match words {
                Some(w) => w.iter().map(|x| step_word(x)).collect::<Result<_, _>>()?,
                None => default.to_vec(),
            };
            Ok(Steps {
                steps,
                delay: dur(d, delay)?,
                note: note.clone().unwrap_or_default(),
                reason: reason.clone().unwrap_or_default(),
            })
        };
        if let Some(c) = &raw.comcheck {
            rules.comcheck = steps(
                &c.steps,
                &c.delay,
                &c.note,
                &c.reason,
                &[pb::CaseState::Acknowledged],
            )?;
        }
        for r in &raw.request {
            let action = r
                .action
                .as_deref()
                .map(|a| vocab::parse::<pb::Action>(a).map_err(|e| format!("request.action: {e}")))
                .transpose()?;
            rules.requests.push(RequestRule {
                action,
                steps: steps(&r.steps, &r.delay, &r.note, &r.reason, &LIFECYCLE)?,
            });
        }
        if let Some(i) = &raw.incident {
            rules.warn_on_incident = if i.warn {
                Some(dur(&i.delay, delay)?)
            } else {
                None
            };
        }
        Ok(rules)
    }

    fn for_request(&self, r: &pb::AssistanceRequest) -> &Steps {
        if r.description.starts_with(COMCHECK_MARK) {
            return &self.comcheck;
        }
        self.requests
            .iter()
            .find(|x| x.action.is_none_or(|a| a as i32 == r.action))
            .map(|x| &x.steps)
            .unwrap_or(&self.default_request)
    }
}

/// One thing the participant did, as it prints it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ActionLine {
    pub team: String,
    /// `acknowledged`, `accepted`, …, or `warning`.
    pub action: String,
    /// The record answered: its sender and id.
    pub to_sender: String,
    pub to_id: String,
    pub exercise: String,
    /// The answer's receipt, or why the broker refused it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub at: String,
}

fn case_update(me: &str, req: &pb::Body, t: pb::CaseState, steps: &Steps) -> pb::Body {
    let (note, reason) = match t {
        pb::CaseState::InProgress | pb::CaseState::Resolved => (
            if steps.note.is_empty() {
                format!("{me} (automated participant): {}", t.word())
            } else {
                steps.note.clone()
            },
            String::new(),
        ),
        pb::CaseState::Declined => (
            String::new(),
            if steps.reason.is_empty() {
                format!("{me} (automated participant): declined under its rules")
            } else {
                steps.reason.clone()
            },
        ),
        _ => (String::new(), String::new()),
    };
    pb::Body {
        id: uuid::Uuid::new_v4().to_string(),
        sender: me.to_owned(),
        created_at: Some(to_timestamp(OffsetDateTime::now_utc())),
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
            transition: t as i32,
            note,
            reason,
        })),
    }
}

/// The warning that answers an incident: same TLP, the incident's audience
/// (its sender added to a team list), its observables.
fn warning_for(me: &str, inc: &pb::Body, r: &pb::IncidentReport) -> pb::Body {
    let audience = match inc.audience.as_ref().and_then(|a| a.kind.as_ref()) {
        Some(pb::audience::Kind::Teams(l)) => {
            let mut teams: Vec<String> = l.teams.iter().filter(|t| *t != me).cloned().collect();
            if !teams.contains(&inc.sender) {
                teams.push(inc.sender.clone());
            }
            Some(pb::Audience {
                kind: Some(pb::audience::Kind::Teams(pb::TeamList { teams })),
            })
        }
        _ => inc.audience.clone(),
    };
    let title: String = format!("Re: {}", r.title).chars().take(200).collect();
    pb::Body {
        id: uuid::Uuid::new_v4().to_string(),
        sender: me.to_owned(),
        created_at: Some(to_timestamp(OffsetDateTime::now_utc())),
        tlp: inc.tlp,
        audience,
        exercise: inc.exercise.clone(),
        references: vec![pb::Reference {
            sender: inc.sender.clone(),
            id: inc.id.clone(),
        }],
        content: Some(Content::Warning(pb::Warning {
            title,
            summary: format!(
                "{me} (automated participant) relays the indicators of {}'s incident report.",
                inc.sender
            ),
            severity: r.severity,
            expires_at: None,
            cves: vec![],
            observables: r.observables.clone(),
            recommended_actions: vec![
                "Block the listed indicators and look for them in your logs".into(),
            ],
        })),
    }
}

async fn act(
    client: Client,
    body: pb::Body,
    action: String,
    answered: (String, String),
) -> ActionLine {
    let exercise = body.exercise.clone();
    let result = match client.seal(&body) {
        Ok(env) => client.publish(env).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    ActionLine {
        team: client.team().to_owned(),
        action,
        to_sender: answered.0,
        to_id: answered.1,
        exercise,
        seq: result.as_ref().ok().map(|r| r.seq),
        error: result.err(),
        at: format_time(OffsetDateTime::now_utc()),
    }
}

/// Answers exercise traffic in `scope` (never real traffic) until `stop`
/// resolves; each action goes to `out` as it completes. Starts at the
/// current end of the log and calls `ready` once its subscription is open.
pub async fn respond(
    client: Client,
    scope: TrafficScope,
    rules: Rules,
    stop: impl Future<Output = ()>,
    ready: impl FnOnce(),
    out: tokio::sync::mpsc::UnboundedSender<ActionLine>,
) -> Result<(), String> {
    if scope == TrafficScope::Real {
        return Err("an automated participant answers exercise traffic only".into());
    }
    let me = client.team().to_owned();
    let head = client
        .transparency()
        .get_head(pb::GetHeadRequest {})
        .await
        .map_err(|e| format!("cannot read the log head: {}", e.message()))?
        .into_inner();
    let mut stream = client
        .exchange()
        .subscribe(pb::SubscribeRequest {
            start: Some(pb::subscribe_request::Start::AfterSeq(head.tree_size)),
            filter: Some(pb::Filter {
                exercise: Some(scope.to_selector()),
                ..Default::default()
            }),
            follow: true,
        })
        .await
        .map_err(|e| format!("cannot subscribe as {me}: {}", e.message()))?
        .into_inner();
    ready();
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(stop);
    loop {
        let rec = tokio::select! {
            _ = &mut stop => break,
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                let _ = done;
                continue;
            }
            r = stream.message() => match r {
                Ok(Some(rec)) => rec,
                Ok(None) => return Err("the broker ended the subscription".into()),
                Err(e) => return Err(format!("subscription failed: {}", e.message())),
            },
        };
        if !client.render(&rec).verified {
            tracing::warn!(seq = rec.seq, "record does not verify; not answered");
            continue;
        }
        let Some(body) = rec
            .envelope
            .as_ref()
            .and_then(|e| envelope::decode_body(e).ok())
        else {
            continue;
        };
        if body.sender == me || !scope.includes(&body.exercise) {
            continue;
        }
        match &body.content {
            Some(Content::Request(r)) if r.to == me => {
                let steps = rules.for_request(r).clone();
                let (client, out, me) = (client.clone(), out.clone(), me.clone());
                tasks.spawn(async move {
                    for t in &steps.steps {
                        tokio::time::sleep(steps.delay).await;
                        let line = act(
                            client.clone(),
                            case_update(&me, &body, *t, &steps),
                            t.word().to_owned(),
                            (body.sender.clone(), body.id.clone()),
                        )
                        .await;
                        let failed = line.error.is_some();
                        let _ = out.send(line);
                        if failed {
                            return;
                        }
                    }
                });
            }
            Some(Content::Incident(r)) => {
                if let Some(delay) = rules.warn_on_incident {
                    let w = warning_for(&me, &body, r);
                    let (client, out) = (client.clone(), out.clone());
                    tasks.spawn(async move {
                        tokio::time::sleep(delay).await;
                        let line = act(
                            client,
                            w,
                            "warning".into(),
                            (body.sender.clone(), body.id.clone()),
                        )
                        .await;
                        let _ = out.send(line);
                    });
                }
            }
            _ => {}
        }
    }
    tasks.abort_all();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_files_read_and_refuse() {
        let r = Rules::parse(
            r#"
delay = "3s"
[comcheck]
steps = []
[[request]]
action = "takedown"
steps = ["acknowledge", "decline"]
reason = "not under our law"
[incident]
warn = false
"#,
            Duration::from_secs(1),
        )
        .unwrap();
        assert!(r.comcheck.steps.is_empty());
        assert_eq!(r.requests[0].action, Some(pb::Action::Takedown));
        assert_eq!(r.requests[0].steps.delay, Duration::from_secs(3));
        assert_eq!(r.requests[0].steps.steps[1], pb::CaseState::Declined);
        assert_eq!(r.default_request.steps, LIFECYCLE.to_vec());
        assert_eq!(r.warn_on_incident, None);
        assert!(Rules::parse("[[request]]\nsteps = [\"dance\"]\n", Duration::ZERO).is_err());
        assert!(Rules::parse("[[request]]\naction = \"nuke\"\n", Duration::ZERO).is_err());
        assert!(Rules::parse("colour = 1\n", Duration::ZERO).is_err());
    }

    #[test]
    fn comchecks_get_the_comcheck_steps() {
        let r = Rules::with_delay(Duration::from_secs(2));
        let req = pb::AssistanceRequest {
            description: format!("{COMCHECK_MARK} C1: hello"),
            ..Default::default()
        };
        assert_eq!(r.for_request(&req).steps, vec![pb::CaseState::Acknowledged]);
        let req = pb::AssistanceRequest::default();
        assert_eq!(r.for_request(&req).steps.len(), 4);
    }

    #[test]
    fn warnings_answer_to_the_incident_audience_and_sender() {
        let inc = pb::Body {
            id: "i1".into(),
            sender: "ZA-EXCON".into(),
            tlp: pb::Tlp::Red as i32,
            audience: Some(pb::Audience {
                kind: Some(pb::audience::Kind::Teams(pb::TeamList {
                    teams: vec!["BR-CERTBR".into(), "IN-CERTIN".into()],
                })),
            }),
            exercise: "EX".into(),
            ..Default::default()
        };
        let w = warning_for("BR-CERTBR", &inc, &pb::IncidentReport::default());
        let Some(pb::audience::Kind::Teams(l)) = w.audience.unwrap().kind else {
            panic!()
        };
        assert_eq!(l.teams, vec!["IN-CERTIN", "ZA-EXCON"]);
        assert_eq!(w.exercise, "EX");
        assert_eq!(w.references[0].id, "i1");
    }
}
