//! The scenario file of a tabletop drill (SPEC §13; field reference in
//! `docs/drills.md`): the exercise, its participants, communication checks,
//! the master events list of injects and the expectations that score the
//! answers. [`Scenario::parse`] refuses a bad file with the line and the
//! reason of every problem; [`Scenario::draft`] turns an inject's payload
//! template into a SPEC §11 draft at the moment it is played.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use time::OffsetDateTime;
use toml::Spanned;

use crate::client::draft::{AudienceJson, BodyJson};
use crate::rules::directory::{Directory, check_team_id};
use crate::rules::time::format_time;
use crate::rules::validate::check_body;

/// One problem in a scenario file: where and what.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// 1-based line of the file.
    pub line: usize,
    pub message: String,
}

/// A refused scenario: every problem found, in file order.
#[derive(Debug, Clone)]
pub struct ScenarioError {
    pub file: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "scenario {} is not valid ({} problem{})",
            self.file,
            self.problems.len(),
            if self.problems.len() == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  {}:{}: {}", self.file, p.line, p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ScenarioError {}

/// A participant's part in the drill (HSEEP's player, controller, observer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Responds to injects; scored.
    Player,
    /// Plays injects (the control cell, EXCON); not scored.
    Control,
    /// Watches; neither plays nor is scored.
    Observer,
}

/// The message kind an inject is sent as (the MEL's "method").
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Incident,
    Warning,
    Request,
}

impl Method {
    fn parse(w: &str) -> Option<Self> {
        match w {
            "incident" => Some(Method::Incident),
            "warning" => Some(Method::Warning),
            "request" => Some(Method::Request),
            _ => None,
        }
    }

    /// The draft key of this content.
    pub fn key(self) -> &'static str {
        match self {
            Method::Incident => "incident",
            Method::Warning => "warning",
            Method::Request => "request",
        }
    }
}

/// What answer an expectation waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExpectKind {
    /// A case update `acknowledged` by the team on the inject's request.
    Acknowledge,
    Accept,
    Decline,
    Progress,
    Resolve,
    /// A warning by the team that references the inject.
    Warning,
    /// An incident report by the team after the inject.
    Incident,
    /// An assistance request by the team after the inject.
    Request,
    /// The team acknowledged a communication check.
    ComcheckReply,
    /// Any message by the team that references the inject.
    Any,
}

impl ExpectKind {
    pub const WORDS: &'static [&'static str] = &[
        "acknowledge",
        "accept",
        "decline",
        "progress",
        "resolve",
        "warning",
        "incident",
        "request",
        "comcheck-reply",
        "any",
    ];

    fn parse(w: &str) -> Option<Self> {
        Some(match w {
            "acknowledge" => ExpectKind::Acknowledge,
            "accept" => ExpectKind::Accept,
            "decline" => ExpectKind::Decline,
            "progress" => ExpectKind::Progress,
            "resolve" => ExpectKind::Resolve,
            "warning" => ExpectKind::Warning,
            "incident" => ExpectKind::Incident,
            "request" => ExpectKind::Request,
            "comcheck-reply" => ExpectKind::ComcheckReply,
            "any" => ExpectKind::Any,
            _ => return None,
        })
    }

    pub fn word(self) -> &'static str {
        Self::WORDS[self as usize]
    }

    /// The case transition this kind waits for, if it is a case update.
    pub fn transition(self) -> Option<&'static str> {
        match self {
            ExpectKind::Acknowledge | ExpectKind::ComcheckReply => Some("acknowledged"),
            ExpectKind::Accept => Some("accepted"),
            ExpectKind::Decline => Some("declined"),
            ExpectKind::Progress => Some("in-progress"),
            ExpectKind::Resolve => Some("resolved"),
            _ => None,
        }
    }
}

/// When an inject is played.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// At this exercise time after the start.
    At(Duration),
    /// `delay` after another event: an inject was sent, or an expectation
    /// settled as `on` asks.
    After {
        event: String,
        on: On,
        delay: Duration,
    },
}

/// Which outcome of an expectation triggers a dependent inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum On {
    /// SUCCESS, or PARTIAL once its time is up.
    Met,
    /// FAILED.
    Failed,
    /// Any final status.
    Settled,
}

/// What an expectation is about.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Inject(String),
    Comcheck(String),
}

#[derive(Debug, Clone)]
pub struct Exercise {
    pub id: String,
    pub name: String,
    pub description: String,
    pub objectives: Vec<String>,
    pub core_capabilities: Vec<String>,
    /// Total exercise time.
    pub duration: Duration,
    /// Exercise seconds per wall-clock second (`--speed` overrides).
    pub time_compression: f64,
    /// Where and by whom, for the report's overview.
    pub organiser: String,
}

#[derive(Debug, Clone)]
pub struct Participant {
    pub team: String,
    pub role: Role,
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct Comcheck {
    pub id: String,
    pub from: String,
    pub to: Vec<String>,
    pub at: Duration,
    pub expires: Duration,
    pub message: String,
    pub line: usize,
}

#[derive(Debug, Clone)]
pub struct Inject {
    /// The MEL inject number, e.g. `I3`.
    pub id: String,
    pub mv: u32,
    pub trigger: Trigger,
    pub from: String,
    pub to: Vec<String>,
    pub method: Method,
    pub subject: String,
    pub expected_action: String,
    /// The §11 draft template.
    pub payload: toml::Table,
    pub line: usize,
}

#[derive(Debug, Clone)]
pub struct Expectation {
    pub id: String,
    pub target: Target,
    pub team: String,
    pub kind: ExpectKind,
    /// Exercise time from the target's sending.
    pub within: Duration,
    /// Points for a full answer in time.
    pub score: u32,
    /// Points the facilitator expects the team to earn: SUCCESS at or above.
    pub expected_score: u32,
    /// Index into the exercise's objectives.
    pub objective: Option<usize>,
    /// Dotted field path of the answer's body → required value.
    pub matches: Vec<(String, String)>,
    /// Incident/request answers must reference the inject.
    pub referencing: bool,
    pub description: String,
    pub line: usize,
}

/// A validated scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub exercise: Exercise,
    pub participants: Vec<Participant>,
    pub comchecks: Vec<Comcheck>,
    pub injects: Vec<Inject>,
    pub expectations: Vec<Expectation>,
}

// ---- the file as written -------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    exercise: Spanned<ExerciseToml>,
    #[serde(default)]
    participant: Vec<Spanned<ParticipantToml>>,
    #[serde(default)]
    comcheck: Vec<Spanned<ComcheckToml>>,
    #[serde(default)]
    inject: Vec<Spanned<InjectToml>>,
    #[serde(default)]
    expectation: Vec<Spanned<ExpectationToml>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExerciseToml {
    id: Spanned<String>,
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    objectives: Vec<String>,
    #[serde(default)]
    core_capabilities: Vec<String>,
    duration: Spanned<String>,
    #[serde(default)]
    time_compression: Option<Spanned<f64>>,
    #[serde(default)]
    organiser: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ParticipantToml {
    team: Spanned<String>,
    role: Role,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ComcheckToml {
    id: Spanned<String>,
    #[serde(default)]
    from: Option<Spanned<String>>,
    #[serde(default)]
    to: Option<Spanned<Vec<String>>>,
    at: Spanned<String>,
    expires: Spanned<String>,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InjectToml {
    #[serde(alias = "number")]
    id: Spanned<String>,
    #[serde(default, rename = "move")]
    mv: u32,
    #[serde(default)]
    at: Option<Spanned<String>>,
    #[serde(default)]
    after: Option<Spanned<String>>,
    #[serde(default)]
    on: Option<Spanned<String>>,
    #[serde(default)]
    delay: Option<Spanned<String>>,
    from: Spanned<String>,
    to: Spanned<Vec<String>>,
    method: Spanned<String>,
    subject: String,
    #[serde(default)]
    expected_action: String,
    payload: Option<Spanned<toml::Table>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectationToml {
    id: Spanned<String>,
    #[serde(default)]
    inject: Option<Spanned<String>>,
    #[serde(default)]
    comcheck: Option<Spanned<String>>,
    team: Spanned<String>,
    kind: Spanned<String>,
    within: Spanned<String>,
    #[serde(default)]
    score: Option<u32>,
    #[serde(default)]
    expected_score: Option<Spanned<u32>>,
    #[serde(default)]
    objective: Option<Spanned<String>>,
    #[serde(default, rename = "match")]
    matches: Option<Spanned<toml::Table>>,
    #[serde(default)]
    referencing: bool,
    #[serde(default)]
    description: String,
}

/// Parses a duration such as `90s`, `15m`, `2h`, `1h30m`, `1d` or `0`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let bad = || format!("{s:?} is not a duration (write it like 90s, 15m, 2h, 1h30m or 1d)");
    let mut total = 0u64;
    let mut num = String::new();
    let mut any = false;
    for c in t.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = num.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        num.clear();
        any = true;
    }
    if !num.is_empty() || !any {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// Writes a duration the way scenarios do: `1h30m`, `45s`, `0`.
pub fn format_duration(d: Duration) -> String {
    let mut s = d.as_secs();
    if s == 0 {
        return if d.is_zero() {
            "0".into()
        } else {
            format!("{}ms", d.as_millis())
        };
    }
    let mut out = String::new();
    for (unit, len) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if s >= len {
            out.push_str(&format!("{}{unit}", s / len));
            s %= len;
        }
    }
    out
}

struct Checker<'a> {
    text: &'a str,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn line(&self, span: std::ops::Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text[..end].bytes().filter(|b| *b == b'\n').count() + 1
    }

    fn at(&mut self, span: std::ops::Range<usize>, message: impl Into<String>) {
        let line = self.line(span);
        self.problems.push(Problem {
            line,
            message: message.into(),
        });
    }

    fn duration(&mut self, what: &str, s: &Spanned<String>) -> Duration {
        match parse_duration(s.get_ref()) {
            Ok(d) => d,
            Err(e) => {
                self.at(s.span(), format!("{what}: {e}"));
                Duration::ZERO
            }
        }
    }
}

/// What a payload template may name: `{{now}}`, `{{now+2h}}`, `{{now-15m}}`,
/// `{{exercise}}`, `{{inject:I1}}` (the id of inject I1's message) and
/// `{{sender:I1}}` (the team that sent it).
pub struct TemplateContext<'a> {
    /// Wall-clock now.
    pub now: OffsetDateTime,
    /// Exercise seconds per wall-clock second: `{{now+2h}}` is 2 h of
    /// exercise time, 2 min of wall time at speed 60.
    pub speed: f64,
    pub exercise: &'a str,
    /// Inject number → (sender, message id) of what has been sent.
    pub sent: &'a BTreeMap<String, (String, String)>,
}

impl TemplateContext<'_> {
    /// Wall-clock time for an exercise offset.
    pub fn wall(&self, exercise_time: Duration) -> Duration {
        exercise_time.div_f64(self.speed)
    }

    fn expand(&self, s: &str) -> Result<String, String> {
        let mut out = String::new();
        let mut rest = s;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| format!("{s:?}: \"{{{{\" without \"}}}}\""))?;
            out.push_str(&self.value(after[..end].trim())?);
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn value(&self, name: &str) -> Result<String, String> {
        if name == "exercise" {
            return Ok(self.exercise.to_owned());
        }
        if let Some(rest) = name.strip_prefix("now") {
            let rest = rest.trim();
            let (sign, d) = match rest.chars().next() {
                None => (1, Duration::ZERO),
                Some('+') => (1, parse_duration(rest[1..].trim())?),
                Some('-') => (-1, parse_duration(rest[1..].trim())?),
                _ => {
                    return Err(format!(
                        "{{{{{name}}}}}: write now, now+DURATION or now-DURATION"
                    ));
                }
            };
            let wall = time::Duration::try_from(self.wall(d)).map_err(|e| e.to_string())?;
            return Ok(format_time(if sign > 0 {
                self.now + wall
            } else {
                self.now - wall
            }));
        }
        for (prefix, pick) in [("inject:", 1usize), ("sender:", 0)] {
            if let Some(id) = name.strip_prefix(prefix) {
                let id = id.trim();
                let sent = self
                    .sent
                    .get(id)
                    .ok_or_else(|| format!("{{{{{name}}}}}: inject {id} has not been sent"))?;
                return Ok(if pick == 1 {
                    sent.1.clone()
                } else {
                    sent.0.clone()
                });
            }
        }
        Err(format!(
            "{{{{{name}}}}} is not a template (use now, now+DURATION, now-DURATION, exercise, inject:ID, sender:ID)"
        ))
    }
}

fn to_json(v: &toml::Value, ctx: &TemplateContext) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    Ok(match v {
        toml::Value::String(s) => J::String(ctx.expand(s)?),
        toml::Value::Integer(i) => J::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(J::Number)
            .ok_or("a number that JSON cannot hold")?,
        toml::Value::Boolean(b) => J::Bool(*b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(a) => J::Array(
            a.iter()
                .map(|x| to_json(x, ctx))
                .collect::<Result<_, _>>()?,
        ),
        toml::Value::Table(t) => J::Object(
            t.iter()
                .map(|(k, x)| Ok((k.clone(), to_json(x, ctx)?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}

/// A team list as a templated draft wants it.
fn teams_audience(to: &[String]) -> serde_json::Value {
    serde_json::json!({ "teams": to })
}

impl Scenario {
    /// Parses and validates a scenario. With a directory, teams must be
    /// members and payloads must pass the broker's own field checks.
    pub fn parse(file: &str, text: &str, dir: Option<&Directory>) -> Result<Self, ScenarioError> {
        let err = |problems| ScenarioError {
            file: file.to_owned(),
            problems,
        };
        let raw: FileToml = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
                .unwrap_or(1);
            err(vec![Problem {
                line,
                message: e.message().trim().to_owned(),
            }])
        })?;
        let mut c = Checker {
            text,
            problems: Vec::new(),
        };
        let scenario = Self::check(&mut c, raw, dir);
        if c.problems.is_empty() {
            Ok(scenario)
        } else {
            c.problems.sort_by_key(|p| p.line);
            Err(err(c.problems))
        }
    }

    fn check(c: &mut Checker, raw: FileToml, dir: Option<&Directory>) -> Scenario {
        let ex_span = raw.exercise.span();
        let ex = raw.exercise.into_inner();
        let id = ex.id.get_ref().clone();
        if id.is_empty()
            || id.len() > 64
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
        {
            c.at(
                ex.id.span(),
                format!(
                    "exercise.id {id:?} must be 1 to 64 letters, digits and . _ : - (it is the exercise id every drill record carries)"
                ),
            );
        }
        let duration = c.duration("exercise.duration", &ex.duration);
        if duration.is_zero() && parse_duration(ex.duration.get_ref()).is_ok() {
            c.at(ex.duration.span(), "exercise.duration must be more than 0");
        }
        let time_compression = match &ex.time_compression {
            Some(t) if !(t.get_ref().is_finite() && *t.get_ref() > 0.0) => {
                c.at(
                    t.span(),
                    "exercise.time_compression must be a number above 0",
                );
                1.0
            }
            Some(t) => *t.get_ref(),
            None => 1.0,
        };
        if ex.name.trim().is_empty() {
            c.at(ex_span.clone(), "exercise.name is empty");
        }
        let exercise = Exercise {
            id,
            name: ex.name,
            description: ex.description,
            objectives: ex.objectives,
            core_capabilities: ex.core_capabilities,
            duration,
            time_compression,
            organiser: ex.organiser,
        };

        // Participants.
        let mut participants = Vec::new();
        let mut roles: BTreeMap<String, Role> = BTreeMap::new();
        for p in raw.participant {
            let p = p.into_inner();
            let team = p.team.get_ref().clone();
            if let Err(e) = check_team_id(&team) {
                c.at(p.team.span(), format!("participant: {e}"));
            } else if let Some(d) = dir
                && d.team(&team).is_none()
            {
                c.at(
                    p.team.span(),
                    format!("participant {team} is not a team of the directory"),
                );
            }
            if roles.insert(team.clone(), p.role).is_some() {
                c.at(p.team.span(), format!("participant {team} is listed twice"));
            }
            participants.push(Participant {
                name: p.name,
                team,
                role: p.role,
            });
        }
        if participants.is_empty() {
            c.at(ex_span.clone(), "the scenario lists no [[participant]]");
        }
        let players: Vec<String> = participants
            .iter()
            .filter(|p| p.role == Role::Player)
            .map(|p| p.team.clone())
            .collect();
        let control = participants
            .iter()
            .find(|p| p.role == Role::Control)
            .map(|p| p.team.clone());

        let mut ids: BTreeSet<String> = BTreeSet::new();
        let mut unique = |c: &mut Checker, id: &Spanned<String>, what: &str| {
            let v = id.get_ref();
            if v.is_empty() {
                c.at(id.span(), format!("{what} id is empty"));
            } else if !ids.insert(v.clone()) {
                c.at(
                    id.span(),
                    format!("{what} id {v} is used twice (ids are shared by injects, comchecks and expectations)"),
                );
            }
        };
        let sender_ok =
            |c: &mut Checker, what: &str, t: &Spanned<String>| match roles.get(t.get_ref()) {
                None => c.at(
                    t.span(),
                    format!(
                        "{what}: unknown team {} (not a [[participant]])",
                        t.get_ref()
                    ),
                ),
                Some(Role::Observer) => c.at(
                    t.span(),
                    format!(
                        "{what}: {} is an observer; observers send nothing",
                        t.get_ref()
                    ),
                ),
                _ => {}
            };
        let receivers_ok = |c: &mut Checker, what: &str, list: &Spanned<Vec<String>>| {
            if list.get_ref().is_empty() {
                c.at(list.span(), format!("{what}: names no team"));
            }
            for t in list.get_ref() {
                if !roles.contains_key(t) {
                    c.at(
                        list.span(),
                        format!("{what}: unknown team {t} (not a [[participant]])"),
                    );
                }
            }
        };

        // Comchecks.
        let mut comchecks = Vec::new();
        for cc in raw.comcheck {
            let line = c.line(cc.span());
            let cc = cc.into_inner();
            unique(c, &cc.id, "comcheck");
            let what = format!("comcheck {}", cc.id.get_ref());
            let from = match &cc.from {
                Some(f) => {
                    sender_ok(c, &what, f);
                    f.get_ref().clone()
                }
                None => match &control {
                    Some(t) => t.clone(),
                    None => {
                        c.at(
                            cc.id.span(),
                            format!("{what}: no `from` and no participant with role = \"control\""),
                        );
                        String::new()
                    }
                },
            };
            let to = match &cc.to {
                Some(list) => {
                    receivers_ok(c, &what, list);
                    list.get_ref().clone()
                }
                None => players.clone(),
            };
            let at = c.duration(&format!("{what}: at"), &cc.at);
            let expires = c.duration(&format!("{what}: expires"), &cc.expires);
            if expires.is_zero() && parse_duration(cc.expires.get_ref()).is_ok() {
                c.at(
                    cc.expires.span(),
                    format!("{what}: expires must be more than 0"),
                );
            }
            if at > exercise.duration {
                c.at(
                    cc.at.span(),
                    format!(
                        "{what}: at {} is after the end of the exercise ({})",
                        format_duration(at),
                        format_duration(exercise.duration)
                    ),
                );
            }
            comchecks.push(Comcheck {
                id: cc.id.into_inner(),
                from,
                to,
                at,
                expires,
                message: cc.message,
                line,
            });
        }

        // Injects, first without their dependencies.
        let mut injects = Vec::new();
        let mut inject_after: Vec<Option<Spanned<String>>> = Vec::new();
        let mut explicit_on: Vec<bool> = Vec::new();
        let mut check_payload: Vec<bool> = Vec::new();
        for inj in raw.inject {
            let line = c.line(inj.span());
            let inj = inj.into_inner();
            unique(c, &inj.id, "inject");
            let what = format!("inject {}", inj.id.get_ref());
            sender_ok(c, &what, &inj.from);
            receivers_ok(c, &what, &inj.to);
            let method_known = Method::parse(inj.method.get_ref()).is_some();
            let method = match Method::parse(inj.method.get_ref()) {
                Some(m) => m,
                None => {
                    c.at(
                        inj.method.span(),
                        format!(
                            "{what}: method {:?} is not one of incident, warning, request",
                            inj.method.get_ref()
                        ),
                    );
                    Method::Incident
                }
            };
            let delay = match &inj.delay {
                Some(d) => c.duration(&format!("{what}: delay"), d),
                None => Duration::ZERO,
            };
            let on = match &inj.on {
                None => On::Met,
                Some(o) => match o.get_ref().as_str() {
                    "met" => On::Met,
                    "failed" => On::Failed,
                    "settled" => On::Settled,
                    other => {
                        c.at(
                            o.span(),
                            format!("{what}: on = {other:?} is not one of met, failed, settled"),
                        );
                        On::Met
                    }
                },
            };
            let trigger = match (&inj.at, &inj.after) {
                (Some(at), None) => {
                    if inj.delay.is_some() || inj.on.is_some() {
                        c.at(
                            at.span(),
                            format!("{what}: `delay` and `on` go with `after`, not with `at`"),
                        );
                    }
                    let at_d = c.duration(&format!("{what}: at"), at);
                    if at_d > exercise.duration {
                        c.at(
                            at.span(),
                            format!(
                                "{what}: at {} is after the end of the exercise ({})",
                                format_duration(at_d),
                                format_duration(exercise.duration)
                            ),
                        );
                    }
                    Trigger::At(at_d)
                }
                (None, Some(after)) => Trigger::After {
                    event: after.get_ref().clone(),
                    on,
                    delay,
                },
                _ => {
                    c.at(
                        inj.id.span(),
                        format!("{what}: give exactly one of `at = \"10m\"` or `after = \"I2\"`"),
                    );
                    Trigger::At(Duration::ZERO)
                }
            };
            check_payload.push(method_known && inj.payload.is_some());
            let payload = match inj.payload {
                Some(p) => p.into_inner(),
                None => {
                    c.at(
                        inj.id.span(),
                        format!(
                            "{what}: no [inject.payload] (the SPEC §11 draft the inject sends)"
                        ),
                    );
                    toml::Table::new()
                }
            };
            inject_after.push(inj.after);
            explicit_on.push(inj.on.is_some());
            injects.push(Inject {
                id: inj.id.into_inner(),
                mv: inj.mv,
                trigger,
                from: inj.from.into_inner(),
                to: inj.to.into_inner(),
                method,
                subject: inj.subject,
                expected_action: inj.expected_action,
                payload,
                line,
            });
        }

        // Expectations.
        let inject_ids: BTreeMap<String, usize> = injects
            .iter()
            .enumerate()
            .map(|(i, x)| (x.id.clone(), i))
            .collect();
        let comcheck_ids: BTreeSet<String> = comchecks.iter().map(|x| x.id.clone()).collect();
        let mut expectations = Vec::new();
        for e in raw.expectation {
            let line = c.line(e.span());
            let e_span = e.span();
            let e = e.into_inner();
            unique(c, &e.id, "expectation");
            let what = format!("expectation {}", e.id.get_ref());
            let target = match (&e.inject, &e.comcheck) {
                (Some(i), None) => {
                    if !inject_ids.contains_key(i.get_ref()) {
                        c.at(
                            i.span(),
                            format!(
                                "{what}: names inject {}, which the scenario does not have",
                                i.get_ref()
                            ),
                        );
                    }
                    Target::Inject(i.get_ref().clone())
                }
                (None, Some(cc)) => {
                    if !comcheck_ids.contains(cc.get_ref()) {
                        c.at(
                            cc.span(),
                            format!(
                                "{what}: names comcheck {}, which the scenario does not have",
                                cc.get_ref()
                            ),
                        );
                    }
                    Target::Comcheck(cc.get_ref().clone())
                }
                (None, None) => {
                    c.at(
                        e_span.clone(),
                        format!(
                            "{what}: names no inject (give inject = \"I1\" or comcheck = \"C1\")"
                        ),
                    );
                    Target::Inject(String::new())
                }
                (Some(i), Some(_)) => {
                    c.at(
                        i.span(),
                        format!("{what}: give inject or comcheck, not both"),
                    );
                    Target::Inject(i.get_ref().clone())
                }
            };
            match roles.get(e.team.get_ref()) {
                None => c.at(
                    e.team.span(),
                    format!(
                        "{what}: unknown team {} (not a [[participant]])",
                        e.team.get_ref()
                    ),
                ),
                Some(Role::Player) => {}
                Some(r) => c.at(
                    e.team.span(),
                    format!(
                        "{what}: {} is {}; only players are scored",
                        e.team.get_ref(),
                        if *r == Role::Control {
                            "the control cell"
                        } else {
                            "an observer"
                        }
                    ),
                ),
            }
            let kind = match ExpectKind::parse(e.kind.get_ref()) {
                Some(k) => k,
                None => {
                    c.at(
                        e.kind.span(),
                        format!(
                            "{what}: kind {:?} is not one of {}",
                            e.kind.get_ref(),
                            ExpectKind::WORDS.join(", ")
                        ),
                    );
                    ExpectKind::Any
                }
            };
            match (&target, kind) {
                (Target::Comcheck(_), ExpectKind::ComcheckReply) => {}
                (Target::Comcheck(_), k) => c.at(
                    e.kind.span(),
                    format!(
                        "{what}: a comcheck is answered by kind = \"comcheck-reply\", not {:?}",
                        k.word()
                    ),
                ),
                (Target::Inject(_), ExpectKind::ComcheckReply) => c.at(
                    e.kind.span(),
                    format!("{what}: kind = \"comcheck-reply\" goes with comcheck = \"C…\""),
                ),
                (Target::Inject(i), k) if k.transition().is_some() => {
                    if let Some(&idx) = inject_ids.get(i) {
                        let inj = &injects[idx];
                        if inj.method != Method::Request {
                            c.at(
                                e.kind.span(),
                                format!(
                                    "{what}: kind {:?} answers an assistance request, but inject {i} is a {}",
                                    k.word(),
                                    inj.method.key()
                                ),
                            );
                        } else if inj.to.first() != Some(e.team.get_ref()) {
                            c.at(
                                e.team.span(),
                                format!(
                                    "{what}: only the addressee of inject {i} ({}) can {}",
                                    inj.to.first().map(String::as_str).unwrap_or("?"),
                                    k.word()
                                ),
                            );
                        }
                    }
                }
                _ => {}
            }
            let within = c.duration(&format!("{what}: within"), &e.within);
            if within.is_zero() && parse_duration(e.within.get_ref()).is_ok() {
                c.at(
                    e.within.span(),
                    format!("{what}: within must be more than 0"),
                );
            }
            let score = e.score.unwrap_or(10);
            let expected_score = match &e.expected_score {
                Some(s) if *s.get_ref() > score => {
                    c.at(
                        s.span(),
                        format!(
                            "{what}: expected_score {} is above score {score}",
                            s.get_ref()
                        ),
                    );
                    score
                }
                Some(s) => *s.get_ref(),
                None => score,
            };
            let objective = match &e.objective {
                None => None,
                Some(o) => {
                    let n = o
                        .get_ref()
                        .strip_prefix('O')
                        .and_then(|n| n.parse::<usize>().ok())
                        .filter(|n| (1..=exercise.objectives.len()).contains(n));
                    if n.is_none() {
                        c.at(
                            o.span(),
                            format!(
                                "{what}: objective {:?} is not one of O1..O{} (the exercise's objectives, in order)",
                                o.get_ref(),
                                exercise.objectives.len()
                            ),
                        );
                    }
                    n.map(|n| n - 1)
                }
            };
            let mut matches = Vec::new();
            if let Some(m) = &e.matches {
                for (k, v) in m.get_ref() {
                    let v = match v {
                        toml::Value::String(s) => s.clone(),
                        toml::Value::Integer(i) => i.to_string(),
                        toml::Value::Boolean(b) => b.to_string(),
                        _ => {
                            c.at(
                                m.span(),
                                format!("{what}: match.{k} must be a string, number or boolean"),
                            );
                            continue;
                        }
                    };
                    if k.is_empty() || k.split('.').any(str::is_empty) {
                        c.at(
                            m.span(),
                            format!("{what}: match key {k:?} is not a field path"),
                        );
                    }
                    matches.push((k.clone(), v));
                }
            }
            expectations.push(Expectation {
                id: e.id.into_inner(),
                target,
                team: e.team.into_inner(),
                kind,
                within,
                score,
                expected_score,
                objective,
                matches,
                referencing: e.referencing,
                description: e.description,
                line,
            });
        }

        // Dependencies: known, not the inject itself, no loop.
        let exp_target: BTreeMap<&str, &Target> = expectations
            .iter()
            .map(|e| (e.id.as_str(), &e.target))
            .collect();
        for (i, after) in inject_after.iter().enumerate() {
            let Some(after) = after else { continue };
            let me = &injects[i].id;
            let ev = after.get_ref();
            if ev == me {
                c.at(after.span(), format!("inject {me} depends on itself"));
                continue;
            }
            if !inject_ids.contains_key(ev) && !exp_target.contains_key(ev.as_str()) {
                c.at(
                    after.span(),
                    format!("inject {me}: after = {ev:?} names no inject or expectation"),
                );
                continue;
            }
            if explicit_on[i] && inject_ids.contains_key(ev) {
                c.at(
                    after.span(),
                    format!("inject {me}: `on` applies to expectations; {ev} is an inject"),
                );
            }
            // Walk the chain of dependencies back to a timed inject.
            let mut seen = vec![me.clone()];
            let mut cur = ev.clone();
            loop {
                let inject_of = if let Some(&j) = inject_ids.get(&cur) {
                    Some(j)
                } else if let Some(Target::Inject(t)) = exp_target.get(cur.as_str()) {
                    inject_ids.get(t).copied()
                } else {
                    None
                };
                let Some(j) = inject_of else { break };
                let name = injects[j].id.clone();
                if exp_target.contains_key(cur.as_str()) {
                    seen.push(cur.clone());
                }
                if name == *me {
                    seen.push(name);
                    c.at(
                        after.span(),
                        format!("inject {me} depends on itself ({})", seen.join(" → ")),
                    );
                    break;
                }
                if seen.contains(&name) {
                    break;
                }
                seen.push(name);
                match &inject_after[j] {
                    Some(a) => cur = a.get_ref().clone(),
                    None => break,
                }
            }
        }

        // Payloads: a valid §11 draft once templated.
        let sent: BTreeMap<String, (String, String)> = injects
            .iter()
            .map(|i| {
                (
                    i.id.clone(),
                    (i.from.clone(), uuid::Uuid::nil().to_string()),
                )
            })
            .collect();
        let ctx = TemplateContext {
            now: OffsetDateTime::now_utc(),
            speed: 1.0,
            exercise: &exercise.id,
            sent: &sent,
        };
        let partial = Scenario {
            exercise: exercise.clone(),
            participants: participants.clone(),
            comchecks: Vec::new(),
            injects: Vec::new(),
            expectations: Vec::new(),
        };
        for (n, inj) in injects.iter().enumerate() {
            if !check_payload[n] {
                continue;
            }
            match partial.draft(inj, &ctx, &uuid::Uuid::new_v4().to_string(), &inj.from) {
                Err(e) => c.problems.push(Problem {
                    line: inj.line,
                    message: format!("inject {} payload is not a valid draft: {e}", inj.id),
                }),
                Ok(d) => {
                    if let Some(dir) = dir {
                        let checked = d
                            .to_body()
                            .map_err(|e| e.to_string())
                            .and_then(|b| check_body(&b, dir).map_err(|e| e.to_string()));
                        if let Err(e) = checked {
                            c.problems.push(Problem {
                                line: inj.line,
                                message: format!(
                                    "inject {} payload would be refused by the broker: {e}",
                                    inj.id
                                ),
                            });
                        }
                    }
                }
            }
            for name in template_names(&inj.payload) {
                if let Some(dep) = name
                    .strip_prefix("inject:")
                    .or_else(|| name.strip_prefix("sender:"))
                {
                    let dep = dep.trim();
                    if !depends_on(&injects, &inject_after, &exp_target, &inj.id, dep) {
                        c.problems.push(Problem {
                            line: inj.line,
                            message: format!(
                                "inject {}: {{{{{name}}}}} names {dep}, which is not sent before {} (make {} depend on it, or play it earlier)",
                                inj.id, inj.id, inj.id
                            ),
                        });
                    }
                }
            }
        }
        Scenario {
            exercise,
            participants,
            comchecks,
            injects,
            expectations,
        }
    }

    /// The participant entry of a team.
    pub fn participant(&self, team: &str) -> Option<&Participant> {
        self.participants.iter().find(|p| p.team == team)
    }

    pub fn inject(&self, id: &str) -> Option<&Inject> {
        self.injects.iter().find(|i| i.id == id)
    }

    /// The §11 draft an inject sends: the payload template expanded, with
    /// what the scenario implies filled in (exercise id, message id, sender,
    /// the audience = the inject's `to`, a request's addressee, legal basis,
    /// deadline and priority, titles from the subject). A payload naming a
    /// different exercise, sender or id is refused.
    pub fn draft(
        &self,
        inj: &Inject,
        ctx: &TemplateContext,
        id: &str,
        sender: &str,
    ) -> Result<BodyJson, String> {
        let serde_json::Value::Object(mut obj) =
            to_json(&toml::Value::Table(inj.payload.clone()), ctx)?
        else {
            return Err("the payload is not a table".into());
        };
        for (key, what) in [
            ("id", "the drill chooses the id"),
            ("sender", "the sender is `from`"),
        ] {
            if obj.contains_key(key) {
                return Err(format!("payload.{key}: leave it out; {what}"));
            }
        }
        match obj.get("exercise") {
            None => {}
            Some(serde_json::Value::String(e)) if e == &self.exercise.id => {}
            Some(other) => {
                return Err(format!(
                    "payload.exercise is {other}, but every drill record carries the exercise id {:?}",
                    self.exercise.id
                ));
            }
        }
        obj.insert("exercise".into(), self.exercise.id.clone().into());
        obj.insert("id".into(), id.into());
        obj.insert("sender".into(), sender.into());
        obj.entry("tlp").or_insert_with(|| "amber".into());
        obj.entry("audience")
            .or_insert_with(|| teams_audience(&inj.to));
        let keys = [
            "incident",
            "warning",
            "request",
            "case_update",
            "retraction",
        ];
        let present: Vec<&str> = keys
            .iter()
            .copied()
            .filter(|k| obj.contains_key(*k))
            .collect();
        if present != [inj.method.key()] {
            return Err(format!(
                "method = \"{}\" needs a [inject.payload.{}] table and no other content (found: {})",
                inj.method.key(),
                inj.method.key(),
                if present.is_empty() {
                    "none".to_owned()
                } else {
                    present.join(", ")
                }
            ));
        }
        let Some(serde_json::Value::Object(content)) = obj.get_mut(inj.method.key()) else {
            return Err(format!("payload.{} must be a table", inj.method.key()));
        };
        match inj.method {
            Method::Incident | Method::Warning => {
                content
                    .entry("title")
                    .or_insert_with(|| inj.subject.clone().into());
            }
            Method::Request => {
                let addressee = inj.to.first().cloned().unwrap_or_default();
                match content.get("to") {
                    None => {
                        content.insert("to".into(), addressee.clone().into());
                    }
                    Some(serde_json::Value::String(t)) if *t == addressee => {}
                    Some(other) => {
                        return Err(format!(
                            "request.to is {other}, but the inject's first `to` team ({addressee}) is the addressee"
                        ));
                    }
                }
                content.entry("legal_basis").or_insert_with(|| {
                    format!(
                        "Exercise {}: simulated request, no legal effect",
                        self.exercise.id
                    )
                    .into()
                });
                content
                    .entry("description")
                    .or_insert_with(|| inj.subject.clone().into());
                content.entry("priority").or_insert_with(|| "medium".into());
                if !content.contains_key("respond_by") {
                    let by = ctx.value("now+1h")?;
                    content.insert("respond_by".into(), by.into());
                }
            }
        }
        let mut draft: BodyJson =
            serde_json::from_value(serde_json::Value::Object(obj)).map_err(|e| e.to_string())?;
        if draft.created_at.is_none() {
            draft.created_at = Some(format_time(ctx.now));
        }
        if matches!(&draft.audience, AudienceJson::Word(w) if w != "community") {
            return Err(
                "audience: use \"community\", {teams = [...]} or {group = \"NAME\"}".into(),
            );
        }
        draft.to_body()?;
        Ok(draft)
    }
}

/// Every `{{…}}` name in a payload.
fn template_names(t: &toml::Table) -> Vec<String> {
    fn walk(v: &toml::Value, out: &mut Vec<String>) {
        match v {
            toml::Value::String(s) => {
                let mut rest = s.as_str();
                while let Some(a) = rest.find("{{") {
                    let after = &rest[a + 2..];
                    match after.find("}}") {
                        Some(b) => {
                            out.push(after[..b].trim().to_owned());
                            rest = &after[b + 2..];
                        }
                        None => break,
                    }
                }
            }
            toml::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            toml::Value::Table(t) => t.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    t.values().for_each(|v| walk(v, &mut out));
    out
}

/// Whether inject `me` is played only after inject `dep` was sent: `dep` is
/// on its chain of dependencies, or both are timed and `dep` comes first.
fn depends_on(
    injects: &[Inject],
    after: &[Option<Spanned<String>>],
    exp_target: &BTreeMap<&str, &Target>,
    me: &str,
    dep: &str,
) -> bool {
    let idx = |id: &str| injects.iter().position(|i| i.id == id);
    let (Some(mut cur), Some(d)) = (idx(me), idx(dep)) else {
        return false;
    };
    if cur == d {
        return false;
    }
    let dep_at = match &injects[d].trigger {
        Trigger::At(t) => Some(*t),
        _ => None,
    };
    for _ in 0..=injects.len() {
        match &after[cur] {
            Some(a) => {
                let ev = a.get_ref();
                let next = idx(ev).or_else(|| match exp_target.get(ev.as_str()) {
                    Some(Target::Inject(t)) => idx(t),
                    _ => None,
                });
                match next {
                    Some(n) if n == d => return true,
                    Some(n) => cur = n,
                    None => return false,
                }
            }
            None => {
                return match (&injects[cur].trigger, dep_at) {
                    (Trigger::At(mine), Some(theirs)) => theirs < *mine,
                    _ => false,
                };
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[exercise]
id = "EX-TEST-1"
name = "Test drill"
objectives = ["Acknowledge requests within 30 minutes", "Warn partners"]
duration = "2h"
time_compression = 60

[[participant]]
team = "ZA-EXCON"
role = "control"

[[participant]]
team = "ZA-CSIRT"
role = "player"

[[participant]]
team = "BR-CERTBR"
role = "player"

[[comcheck]]
id = "C1"
at = "0m"
expires = "10m"

[[inject]]
id = "I1"
move = 1
at = "5m"
from = "ZA-EXCON"
to = ["ZA-CSIRT"]
method = "incident"
subject = "Ransomware at the grid operator"
[inject.payload]
tlp = "amber"
[inject.payload.incident]
category = "malicious-code"
severity = "high"
detected_at = "{{now-20m}}"

[[inject]]
id = "I2"
after = "E1"
delay = "5m"
from = "ZA-EXCON"
to = ["BR-CERTBR"]
method = "request"
subject = "Take down the C2"
references = []
[inject.payload]
references = [{ sender = "{{sender:I1}}", id = "{{inject:I1}}" }]
[inject.payload.request]
action = "takedown"
respond_by = "{{now+1h}}"

[[expectation]]
id = "E1"
inject = "I1"
team = "ZA-CSIRT"
kind = "warning"
within = "30m"
objective = "O2"
[expectation.match]
"warning.severity" = "high"

[[expectation]]
id = "E2"
inject = "I2"
team = "BR-CERTBR"
kind = "accept"
within = "1h"
score = 20
expected_score = 10

[[expectation]]
id = "E3"
comcheck = "C1"
team = "BR-CERTBR"
kind = "comcheck-reply"
within = "10m"
"#;

    fn problems(text: &str) -> Vec<Problem> {
        Scenario::parse("s.toml", text, None).unwrap_err().problems
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        for bad in ["", "h", "10", "5x", "1.5h", "-3m"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(45)), "45s");
    }

    #[test]
    fn a_good_scenario_parses() {
        // The GOOD text has a stray `references = []` in I2's table: refused.
        let p = problems(GOOD);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].message.contains("references"), "{p:?}");
        let s = Scenario::parse("s.toml", &GOOD.replace("references = []\n", ""), None).unwrap();
        assert_eq!(s.injects.len(), 2);
        assert_eq!(s.comchecks[0].to, vec!["ZA-CSIRT", "BR-CERTBR"]);
        assert_eq!(s.comchecks[0].from, "ZA-EXCON");
        assert_eq!(s.expectations[0].objective, Some(1));
        assert_eq!(s.expectations[1].expected_score, 10);
        assert_eq!(
            s.injects[1].trigger,
            Trigger::After {
                event: "E1".into(),
                on: On::Met,
                delay: Duration::from_secs(300)
            }
        );
    }

    fn good() -> String {
        GOOD.replace("references = []\n", "")
    }

    fn line_of(text: &str, needle: &str) -> usize {
        text[..text.find(needle).unwrap()].matches('\n').count() + 1
    }

    #[test]
    fn drafts_are_templated_and_filled() {
        let s = Scenario::parse("s.toml", &good(), None).unwrap();
        let now = OffsetDateTime::now_utc();
        let mut sent = BTreeMap::new();
        sent.insert("I1".to_owned(), ("ZA-EXCON".to_owned(), "id-1".to_owned()));
        let ctx = TemplateContext {
            now,
            speed: 60.0,
            exercise: "EX-TEST-1",
            sent: &sent,
        };
        let d = s.draft(&s.injects[1], &ctx, "id-2", "ZA-EXCON").unwrap();
        assert_eq!(d.exercise, "EX-TEST-1");
        assert_eq!(d.references[0].id, "id-1");
        let r = d.request.unwrap();
        assert_eq!(r.to, "BR-CERTBR");
        assert_eq!(r.priority, "medium");
        // 1 h of exercise time at speed 60 is one wall-clock minute.
        assert_eq!(r.respond_by, format_time(now + time::Duration::minutes(1)));
        assert_eq!(
            d.audience,
            AudienceJson::Teams {
                teams: vec!["BR-CERTBR".into()]
            }
        );
        let d1 = s.draft(&s.injects[0], &ctx, "id-1", "ZA-EXCON").unwrap();
        assert_eq!(
            d1.incident.unwrap().title,
            "Ransomware at the grid operator"
        );
    }

    #[test]
    fn bad_scenarios_name_the_line_and_the_reason() {
        let text = good();
        let cases: Vec<(String, &str, &str)> = vec![
            (
                text.replace("to = [\"BR-CERTBR\"]", "to = [\"FR-ANSSI\"]"),
                "to = [\"FR-ANSSI\"]",
                "unknown team FR-ANSSI",
            ),
            (
                text.replace("after = \"E1\"", "after = \"I2\""),
                "after = \"I2\"",
                "inject I2 depends on itself",
            ),
            (
                text.replace("after = \"E1\"", "after = \"E2\""),
                "after = \"E2\"",
                "depends on itself (I2 → E2 → I2)",
            ),
            (
                text.replace("inject = \"I2\"", "inject = \"I9\""),
                "inject = \"I9\"",
                "names inject I9, which the scenario does not have",
            ),
            (
                text.replace("id = \"E3\"\ncomcheck = \"C1\"\n", "id = \"E3\"\n"),
                "[[expectation]]\nid = \"E3\"",
                "names no inject",
            ),
            (
                text.replace("category = \"malicious-code\"", "category = \"bad-stuff\""),
                "[[inject]]\nid = \"I1\"",
                "inject I1 payload is not a valid draft: incident.category",
            ),
            (
                text.replace("kind = \"accept\"", "kind = \"applaud\""),
                "kind = \"applaud\"",
                "kind \"applaud\" is not one of",
            ),
            (
                text.replace("within = \"1h\"", "within = \"soon\""),
                "within = \"soon\"",
                "is not a duration",
            ),
            (
                text.replace("kind = \"warning\"", "kind = \"accept\""),
                "kind = \"accept\"",
                "answers an assistance request, but inject I1 is a incident",
            ),
            (
                text.replace("at = \"5m\"", "at = \"5h\""),
                "at = \"5h\"",
                "after the end of the exercise",
            ),
            (
                text.replace("{{inject:I1}}", "{{inject:I2}}"),
                "[[inject]]\nid = \"I2\"",
                "is not sent before I2",
            ),
            (
                text.replace("team = \"ZA-CSIRT\"\nkind", "team = \"ZA-EXCON\"\nkind"),
                "team = \"ZA-EXCON\"\nkind",
                "only players are scored",
            ),
        ];
        for (bad, at, reason) in cases {
            let p = problems(&bad);
            let want = line_of(&bad, at);
            assert!(
                p.iter()
                    .any(|p| p.line == want && p.message.contains(reason)),
                "wanted line {want} with {reason:?}, got {p:?}"
            );
        }
        // A TOML syntax error names its line too.
        let p = problems("[exercise]\nid = \"x\"\nname = oops\n");
        assert_eq!(p[0].line, 3, "{p:?}");
        let shown = Scenario::parse(
            "s.toml",
            &text.replace("inject = \"I2\"", "inject = \"I9\""),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(shown.contains("s.toml:"), "{shown}");
    }
}
