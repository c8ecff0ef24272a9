//! The after-action report of a drill as data: what `report.json` holds and
//! what the `render` module turns into Markdown and HTML. Times are
//! exercise time in seconds since the start (wall time × speed), so a
//! facilitator reads "acknowledged after 30 min" whatever the compression;
//! every entry that is a record names its seq and leaf hash, proved against
//! the signed tree head in [`Evidence`].

use serde::{Deserialize, Serialize};

/// The report format's name and version.
pub const FORMAT: &str = "certex-drill-report/v1";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub format: String,
    pub exercise: ExerciseInfo,
    pub participants: Vec<ParticipantInfo>,
    /// Every event in exercise-time order.
    pub timeline: Vec<Entry>,
    pub injects: Vec<InjectOutcome>,
    pub comchecks: Vec<ComcheckOutcome>,
    pub expectations: Vec<ExpectationOutcome>,
    /// One per participant, in the scenario's order.
    pub teams: Vec<TeamMetrics>,
    pub overall: Overall,
    /// Who sent what kind of message to whom.
    pub matrix: Vec<MatrixCell>,
    pub hseep: Hseep,
    pub isolation: Isolation,
    pub evidence: Evidence,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExerciseInfo {
    pub id: String,
    pub name: String,
    pub description: String,
    pub organiser: String,
    pub objectives: Vec<String>,
    pub core_capabilities: Vec<String>,
    /// Planned exercise time, seconds.
    pub duration_s: f64,
    /// Exercise seconds per wall-clock second.
    pub speed: f64,
    /// Wall-clock start and end, RFC 3339.
    pub started_at: String,
    pub ended_at: String,
    /// Exercise time actually played, seconds.
    pub played_s: f64,
    /// `completed` (every expectation settled), `time-up` or `interrupted`.
    pub ended: String,
    pub broker: String,
    /// The team the control cell ran as.
    pub control_team: String,
    /// The scenario file.
    pub scenario: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ParticipantInfo {
    pub team: String,
    /// `player`, `control` or `observer`.
    pub role: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    /// Exercise time, seconds since the start.
    pub at_s: f64,
    /// `inject`, `comcheck`, `response` (answers an expectation),
    /// `message` (any other exercise record), `deadline-met`,
    /// `deadline-missed`.
    pub kind: String,
    /// The lane: the team that sent it (for deadlines: the team expected).
    pub team: String,
    /// Who it went to (teams; a group's members; `community`).
    pub to: Vec<String>,
    /// The record's kind (`incident`, `warning`, `request`, `case_update`,
    /// `retraction`); empty for deadlines.
    pub record_kind: String,
    /// One line for people.
    pub summary: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expectation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comcheck: Option<String>,
    /// The record, when the entry is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaf_hash: Option<String>,
    /// The broker's receipt time, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_at: Option<String>,
    /// Its inclusion in the log was proved against [`Evidence::tree_head`].
    pub proved: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InjectOutcome {
    pub id: String,
    #[serde(rename = "move")]
    pub mv: u32,
    pub subject: String,
    pub method: String,
    /// The scripted sender.
    pub from: String,
    /// The team whose identity signed it (the control team when the
    /// scripted sender's identity was not available).
    pub sent_as: String,
    pub to: Vec<String>,
    pub expected_action: String,
    /// `sent` or `not-played`.
    pub status: String,
    /// Why it was not played.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaf_hash: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ComcheckOutcome {
    pub id: String,
    pub from: String,
    pub message: String,
    pub at_s: f64,
    /// Exercise seconds after sending during which a reply counts.
    pub expires_s: f64,
    pub replies: Vec<ComcheckReply>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ComcheckReply {
    pub team: String,
    /// `replied`, `missed` (no reply before it expired) or `not-sent`.
    pub status: String,
    /// Exercise seconds from the check to the reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_after_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_seq: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExpectationOutcome {
    pub id: String,
    pub team: String,
    /// `acknowledge`, `accept`, …, `comcheck-reply`, `any`.
    pub kind: String,
    /// The inject or comcheck it answers.
    pub target: String,
    pub description: String,
    /// `O1`… when the scenario ties it to an objective.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objective: Option<String>,
    pub within_s: f64,
    /// `SUCCESS`, `PARTIAL`, `FAILED` or `PENDING` (the drill was
    /// interrupted before it settled).
    pub status: String,
    pub score: u32,
    pub expected_score: u32,
    pub max_score: u32,
    /// Exercise time of the deadline (absent when the target was never sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_at_s: Option<f64>,
    /// The best answer: its record and how long after the target it came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_after_s: Option<f64>,
    /// Why this status, in words (e.g. "warning severity was medium, high
    /// expected"; "no answer within 30m"; "answered 12m late").
    pub note: String,
}

/// Percentiles of a set of durations, exercise seconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    pub count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p90_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_s: Option<f64>,
}

impl Stats {
    /// Nearest-rank percentiles of `values`.
    pub fn of(values: &[f64]) -> Self {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Stats::default();
        }
        v.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let i = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
            v[i - 1]
        };
        Stats {
            count: v.len() as u32,
            p50_s: Some(rank(0.5)),
            p90_s: Some(rank(0.9)),
            max_s: v.last().copied(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Tally {
    pub success: u32,
    pub partial: u32,
    pub failed: u32,
    pub pending: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TeamMetrics {
    pub team: String,
    pub role: String,
    /// Exercise messages the team sent / could read from others.
    pub sent: u32,
    pub received: u32,
    /// From an assistance request addressed to the team (injects and
    /// requests from other players; not comchecks) to its case update.
    pub time_to_acknowledge: Stats,
    pub time_to_accept: Stats,
    pub time_to_resolve: Stats,
    pub expectations: Tally,
    pub score: u32,
    pub expected_score: u32,
    pub max_score: u32,
    pub comchecks_replied: u32,
    pub comchecks_missed: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Overall {
    pub messages: u32,
    pub injects_sent: u32,
    pub injects_not_played: u32,
    pub time_to_acknowledge: Stats,
    pub time_to_accept: Stats,
    pub time_to_resolve: Stats,
    pub expectations: Tally,
    pub score: u32,
    pub expected_score: u32,
    pub max_score: u32,
    /// Replies / checks sent, 0..1 (absent without comchecks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comcheck_success: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MatrixCell {
    pub from: String,
    pub to: String,
    pub kind: String,
    pub count: u32,
}

/// The HSEEP after-action sections.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Hseep {
    pub strengths: Vec<Finding>,
    pub areas_for_improvement: Vec<Finding>,
    pub ratings: Vec<Rating>,
    /// One row per area for improvement; the facilitator fills in the rest.
    pub improvement_plan: Vec<PlanRow>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Finding {
    pub text: String,
    pub team: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objective: Option<String>,
    pub expectation: String,
    /// The records that show it (seq).
    pub records: Vec<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Rating {
    /// `O1`…
    pub objective_id: String,
    pub objective: String,
    /// HSEEP: `P` performed without challenges, `S` with some challenges,
    /// `M` with major challenges, `U` unable to be performed; `-` when no
    /// expectation measured it.
    pub rating: String,
    pub score: u32,
    pub expected_score: u32,
    pub max_score: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PlanRow {
    pub objective: String,
    pub issue: String,
    pub corrective_action: String,
    pub capability: String,
    pub primary_responsible: String,
    pub start: String,
    pub completion: String,
}

/// The check that exercise traffic stayed an exercise (SPEC §5).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Isolation {
    /// Records of this exercise the control cell saw.
    pub exercise_records: u32,
    /// Every one of them carries the exercise id.
    pub all_carry_exercise_id: bool,
    /// Real-world subscriptions held open during the drill (one per team
    /// identity the control cell has).
    pub real_world_subscriptions: u32,
    /// Exercise records those subscriptions delivered (must be 0).
    pub exercise_records_in_real_world: u32,
    pub passed: bool,
    /// The check in one sentence for the report.
    pub statement: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Evidence {
    /// The signed tree head every entry is proved against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree_head: Option<TreeHead>,
    /// The broker's tree-head public key, hex.
    pub log_key: String,
    pub proved: u32,
    /// Records whose proof failed or could not be fetched.
    pub unproved: Vec<u64>,
    /// Records whose signature verified against the control cell's copy of
    /// the directory, and those that did not.
    #[serde(default)]
    pub signatures_verified: u32,
    #[serde(default)]
    pub signatures_failed: Vec<u64>,
    /// How to check it again.
    pub how_to_verify: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TreeHead {
    pub tree_size: u64,
    pub root_hash: String,
    pub timestamp_ms: u64,
    pub signature: String,
    pub verified: bool,
}

/// Seconds as a facilitator reads them: `45s`, `12m 30s`, `2h 05m`.
pub fn human(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "-".into();
    }
    let s = seconds.round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let s = Stats::of(&[10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0]);
        assert_eq!(s.count, 10);
        assert_eq!(s.p50_s, Some(50.0));
        assert_eq!(s.p90_s, Some(90.0));
        assert_eq!(s.max_s, Some(100.0));
        assert_eq!(Stats::of(&[]), Stats::default());
        assert_eq!(Stats::of(&[7.0]).p90_s, Some(7.0));
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(45.2), "45s");
        assert_eq!(human(750.0), "12m 30s");
        assert_eq!(human(7500.0), "2h 05m");
    }
}
