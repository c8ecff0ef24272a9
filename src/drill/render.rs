//! Renders an after-action [`Report`] for people: Markdown and a
//! self-contained HTML page with an SVG timeline.
//!
//! Both renderers walk the same document, built once from the report: a list
//! of sections made of paragraphs, label/value fields, lists and tables of
//! typed spans (text, strong, code, status word). Markdown and HTML only
//! decide how a span looks, so the two always carry the same sections and
//! rows. The HTML page loads nothing: its style is inline, its chart is
//! inline SVG, and every piece of report text goes through one escape
//! function, which also keeps the text from looking like a resource
//! reference (`http`, `url(`, `src=`) to a scanner.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::drill::report::{
    self, ComcheckOutcome, ComcheckReply, Entry, ExpectationOutcome, Finding, InjectOutcome,
    Report, Stats, Tally, TeamMetrics,
};

/// The report as Markdown.
pub fn markdown(r: &Report) -> String {
    let mut out = String::with_capacity(32 * 1024);
    let _ = writeln!(out, "# After-action report: {}\n", md_text(&title_text(r)));
    md_block(&mut out, &Block::Banner(Tone::Warn, exercise_banner(r)));
    md_block(&mut out, &Block::Para(report_meta(r)));
    for section in document(r) {
        let _ = writeln!(out, "## {}\n", section.title);
        for block in &section.blocks {
            md_block(&mut out, block);
        }
    }
    md_block(&mut out, &Block::Banner(Tone::Warn, footer_banner(r)));
    out
}

/// The report as one self-contained HTML page (also well-formed XML).
pub fn html(r: &Report) -> String {
    let sections = document(r);
    let title = esc(&title_text(r));
    let mut out = String::with_capacity(96 * 1024);
    out.push_str("<!DOCTYPE html>\n");
    out.push_str("<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\">\n<head>\n");
    out.push_str("<meta charset=\"utf-8\"/>\n");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>\n");
    let _ = writeln!(out, "<title>After-action report: {title}</title>");
    let _ = writeln!(out, "<style>{CSS}</style>\n</head>\n<body>\n<header>");
    let _ = writeln!(out, "<h1>After-action report: {title}</h1>");
    html_block(&mut out, &Block::Banner(Tone::Warn, exercise_banner(r)), r);
    html_block(&mut out, &Block::Para(report_meta(r)), r);
    html_toc(&mut out, &sections);
    out.push_str("</header>\n<main>\n");
    for section in &sections {
        html_section(&mut out, section, r);
    }
    out.push_str("</main>\n<footer>\n");
    html_block(&mut out, &Block::Banner(Tone::Warn, footer_banner(r)), r);
    out.push_str("</footer>\n</body>\n</html>\n");
    out
}

// === The document both renderers walk ===

/// How a status word or a banner is coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tone {
    Good,
    Warn,
    Bad,
    Muted,
    Plain,
}

/// A run of text and how it is shown.
#[derive(Debug)]
enum Span {
    Text(String),
    Strong(String),
    Code(String),
    /// A status word (`SUCCESS`, `missed`, `P`, `✓`…), coloured by its tone.
    Status(String),
}

/// A table cell, a list item or a paragraph: spans in a row.
type Line = Vec<Span>;

/// One piece of a section.
#[derive(Debug)]
enum Block {
    /// A prominent notice.
    Banner(Tone, Line),
    Para(Line),
    /// Label and value pairs.
    Fields(Vec<(&'static str, Line)>),
    List(Vec<Line>),
    Table {
        head: Vec<String>,
        rows: Vec<Vec<Line>>,
    },
    /// A heading inside a section.
    Sub(&'static str),
    /// Preformatted text, such as commands to run.
    Pre(String),
    /// The SVG timeline; only the HTML page can show it.
    Chart,
}

/// A top-level section: its anchor, its heading and its blocks.
#[derive(Debug)]
struct Section {
    id: &'static str,
    title: &'static str,
    blocks: Vec<Block>,
}

/// A line of plain text.
fn text(s: impl Into<String>) -> Line {
    vec![Span::Text(s.into())]
}

/// A line of code-formatted text (ids, hashes, addresses).
fn code(s: impl Into<String>) -> Line {
    vec![Span::Code(s.into())]
}

/// A line holding one coloured status word.
fn status(s: impl Into<String>) -> Line {
    vec![Span::Status(s.into())]
}

/// A table, or `empty` as a paragraph when there are no rows.
fn table_or(head: &[&str], rows: Vec<Vec<Line>>, empty: &str) -> Block {
    if rows.is_empty() {
        return Block::Para(text(empty));
    }
    let head = head.iter().map(|h| (*h).to_string()).collect();
    Block::Table { head, rows }
}

/// A list, or `empty` as a paragraph when there are no items.
fn list_or(items: Vec<Line>, empty: &str) -> Block {
    if items.is_empty() {
        Block::Para(text(empty))
    } else {
        Block::List(items)
    }
}

/// The tone a status word is shown in.
fn tone_of(word: &str) -> Tone {
    match word {
        "SUCCESS" | "sent" | "replied" | "passed" | "verified" | "P" | "✓" | "deadline-met" => {
            Tone::Good
        }
        "PARTIAL" | "S" => Tone::Warn,
        "FAILED" | "missed" | "not-played" | "NOT verified" | "unproved" | "M" | "U" | "✗"
        | "deadline-missed" => Tone::Bad,
        "PENDING" | "not-sent" | "-" => Tone::Muted,
        _ => Tone::Plain,
    }
}

// === Building the document from a report ===

/// Every section of the after-action report, in reading order.
fn document(r: &Report) -> Vec<Section> {
    vec![
        overview(r),
        at_a_glance(r),
        master_events(r),
        comchecks(r),
        expectations(r),
        team_metrics(r),
        matrix(r),
        findings(
            "strengths",
            "Strengths",
            &r.hseep.strengths,
            "No strengths were recorded.",
        ),
        findings(
            "areas-for-improvement",
            "Areas for improvement",
            &r.hseep.areas_for_improvement,
            "No areas for improvement were recorded.",
        ),
        ratings(r),
        improvement_plan(r),
        isolation(r),
        evidence(r),
        timeline(r),
    ]
}

/// The exercise's name and id, for titles.
fn title_text(r: &Report) -> String {
    format!(
        "{} ({})",
        or_dash(&r.exercise.name),
        or_dash(&r.exercise.id)
    )
}

/// The banner that says this is an exercise.
fn exercise_banner(r: &Report) -> Line {
    vec![
        Span::Strong("EXERCISE — not real-world traffic.".into()),
        Span::Text(format!(
            " Every message in this report was exercise traffic under exercise id {}; none of it describes a real incident.",
            or_dash(&r.exercise.id)
        )),
    ]
}

/// The closing marking, repeated at the end like a document classification.
fn footer_banner(r: &Report) -> Line {
    vec![
        Span::Strong("EXERCISE".into()),
        Span::Text(format!(
            " — end of the after-action report of {}.",
            title_text(r)
        )),
    ]
}

/// Where the report came from: its format and the scenario.
fn report_meta(r: &Report) -> Line {
    vec![
        Span::Text("Report format ".into()),
        Span::Code(or_dash(&r.format).to_string()),
        Span::Text(", scenario ".into()),
        Span::Code(or_dash(&r.exercise.scenario).to_string()),
        Span::Text(". Times are exercise time since the start unless marked wall clock.".into()),
    ]
}

/// Overview: the exercise, its participants, objectives and capabilities.
fn overview(r: &Report) -> Section {
    let x = &r.exercise;
    let fields = vec![
        ("Exercise", text(or_dash(&x.name))),
        ("Exercise id", code(or_dash(&x.id))),
        ("Organiser", text(or_dash(&x.organiser))),
        ("Description", text(or_dash(&x.description))),
        ("Scenario file", code(or_dash(&x.scenario))),
        ("Broker", code(or_dash(&x.broker))),
        ("Control team", text(or_dash(&x.control_team))),
        (
            "Started",
            text(format!("{} (wall clock)", or_dash(&x.started_at))),
        ),
        (
            "Ended",
            text(format!("{} (wall clock)", or_dash(&x.ended_at))),
        ),
        (
            "Exercise time",
            text(format!(
                "{} played of {} planned",
                report::human(x.played_s),
                report::human(x.duration_s)
            )),
        ),
        ("Speed", text(speed_text(x.speed))),
        ("How it ended", text(ended_text(&x.ended))),
    ];
    let participants = r
        .participants
        .iter()
        .map(|p| {
            vec![
                text(or_dash(&p.team)),
                text(or_dash(&p.name)),
                text(or_dash(&p.role)),
            ]
        })
        .collect();
    let objectives = x
        .objectives
        .iter()
        .enumerate()
        .map(|(i, o)| vec![Span::Strong(objective_id(i)), Span::Text(format!(" — {o}"))])
        .collect();
    let capabilities = x
        .core_capabilities
        .iter()
        .map(|c| text(c.as_str()))
        .collect();
    let blocks = vec![
        Block::Fields(fields),
        Block::Sub("Participants"),
        table_or(
            &["Team", "Name", "Role"],
            participants,
            "No participants are listed.",
        ),
        Block::Sub("Objectives"),
        list_or(objectives, "No objectives are listed."),
        Block::Sub("Core capabilities"),
        list_or(capabilities, "No core capabilities are listed."),
    ];
    Section {
        id: "overview",
        title: "Overview",
        blocks,
    }
}

/// Results at a glance: the overall tallies, score and rates.
fn at_a_glance(r: &Report) -> Section {
    let o = &r.overall;
    let fields = vec![
        ("Expectations", tally_line(&o.expectations, false)),
        (
            "Score",
            text(format!(
                "{} achieved / {} expected / {} max",
                o.score, o.expected_score, o.max_score
            )),
        ),
        ("Comcheck success", text(percent_text(o.comcheck_success))),
        ("Messages exchanged", text(o.messages.to_string())),
        (
            "Injects",
            text(format!(
                "{} sent, {} not played",
                o.injects_sent, o.injects_not_played
            )),
        ),
        (
            "Time to acknowledge",
            text(stats_text(&o.time_to_acknowledge)),
        ),
        ("Time to accept", text(stats_text(&o.time_to_accept))),
        ("Time to resolve", text(stats_text(&o.time_to_resolve))),
    ];
    Section {
        id: "results",
        title: "Results at a glance",
        blocks: vec![Block::Fields(fields)],
    }
}

/// Master events list: every scripted inject and what became of it.
fn master_events(r: &Report) -> Section {
    let head = [
        "Inject",
        "Move",
        "Time",
        "From → To",
        "Method",
        "Subject",
        "Expected action",
        "Status",
        "Seq",
    ];
    let rows = r.injects.iter().map(inject_row).collect();
    Section {
        id: "master-events",
        title: "Master events list",
        blocks: vec![table_or(&head, rows, "The scenario has no injects.")],
    }
}

/// One inject as a row of the master events list.
fn inject_row(i: &InjectOutcome) -> Vec<Line> {
    vec![
        code(or_dash(&i.id)),
        text(i.mv.to_string()),
        text(opt_human(i.at_s)),
        text(inject_route(i)),
        text(or_dash(&i.method)),
        text(or_dash(&i.subject)),
        text(or_dash(&i.expected_action)),
        inject_status(i),
        text(seq_text(i.seq)),
    ]
}

/// `from → to, to`, naming the signer when it was not the scripted sender.
fn inject_route(i: &InjectOutcome) -> String {
    let mut route = format!("{} → {}", or_dash(&i.from), join_or_dash(&i.to));
    if !i.sent_as.is_empty() && i.sent_as != i.from {
        let _ = write!(route, " (signed as {})", i.sent_as);
    }
    route
}

/// The inject's status, with why it was not played.
fn inject_status(i: &InjectOutcome) -> Line {
    let mut line = status(or_dash(&i.status));
    if let Some(why) = i.why.as_deref().filter(|w| !w.is_empty()) {
        line.push(Span::Text(format!(": {why}")));
    }
    line
}

/// Communication checks: one row per check and asked team.
fn comchecks(r: &Report) -> Section {
    let head = [
        "Check",
        "From",
        "Sent at",
        "Reply within",
        "Message",
        "Team",
        "Result",
        "Records",
    ];
    let rows = r.comchecks.iter().flat_map(comcheck_rows).collect();
    Section {
        id: "comchecks",
        title: "Communication checks",
        blocks: vec![table_or(
            &head,
            rows,
            "No communication checks were scheduled.",
        )],
    }
}

/// The rows of one check: one per asked team (one row when none was asked).
fn comcheck_rows(c: &ComcheckOutcome) -> Vec<Vec<Line>> {
    let check = || {
        vec![
            code(or_dash(&c.id)),
            text(or_dash(&c.from)),
            text(report::human(c.at_s)),
            text(report::human(c.expires_s)),
            text(or_dash(&c.message)),
        ]
    };
    if c.replies.is_empty() {
        let mut row = check();
        row.extend([text("-"), text("no team was asked"), text("-")]);
        return vec![row];
    }
    c.replies
        .iter()
        .map(|reply| {
            let mut row = check();
            row.extend([
                text(or_dash(&reply.team)),
                reply_result(reply),
                text(reply_records(reply)),
            ]);
            row
        })
        .collect()
}

/// `replied after 4m 00s`, `missed` or `not-sent`.
fn reply_result(reply: &ComcheckReply) -> Line {
    let mut line = status(or_dash(&reply.status));
    if reply.status == "replied"
        && let Some(after) = reply.reply_after_s
    {
        line.push(Span::Text(format!(" after {}", report::human(after))));
    }
    line
}

/// The check's and the reply's seqs.
fn reply_records(reply: &ComcheckReply) -> String {
    let mut parts = Vec::new();
    if let Some(seq) = reply.request_seq {
        parts.push(format!("check seq {seq}"));
    }
    if let Some(seq) = reply.reply_seq {
        parts.push(format!("reply seq {seq}"));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

/// Expectations: each one, how it was scored and why.
fn expectations(r: &Report) -> Section {
    let head = [
        "Id",
        "Team",
        "Kind",
        "Target",
        "Expected",
        "Objective",
        "Within",
        "Status",
        "Score (achieved / expected / max)",
        "Answered after",
        "Record seq",
        "Note",
    ];
    let rows = r.expectations.iter().map(expectation_row).collect();
    Section {
        id: "expectations",
        title: "Expectations",
        blocks: vec![table_or(&head, rows, "The scenario has no expectations.")],
    }
}

/// One expectation as a table row.
fn expectation_row(e: &ExpectationOutcome) -> Vec<Line> {
    vec![
        code(or_dash(&e.id)),
        text(or_dash(&e.team)),
        text(or_dash(&e.kind)),
        code(or_dash(&e.target)),
        text(or_dash(&e.description)),
        text(e.objective.as_deref().map_or("-", or_dash)),
        text(report::human(e.within_s)),
        status(or_dash(&e.status)),
        text(score_text(e.score, e.expected_score, e.max_score)),
        text(opt_human(e.response_after_s)),
        text(seq_text(e.response_seq)),
        text(or_dash(&e.note)),
    ]
}

/// Per-team metrics, with a closing row for all teams.
fn team_metrics(r: &Report) -> Section {
    let head = [
        "Team",
        "Role",
        "Sent / received",
        "Time to acknowledge",
        "Time to accept",
        "Time to resolve",
        "Expectations",
        "Score (achieved / expected / max)",
        "Comchecks",
    ];
    let mut rows: Vec<Vec<Line>> = r.teams.iter().map(team_row).collect();
    if !rows.is_empty() {
        rows.push(all_teams_row(r));
    }
    Section {
        id: "team-metrics",
        title: "Per-team metrics",
        blocks: vec![
            Block::Para(text(
                "Times are p50 · p90 · max over the team's answers, in exercise time.",
            )),
            table_or(&head, rows, "No team metrics were recorded."),
        ],
    }
}

/// One team's metrics as a table row.
fn team_row(t: &TeamMetrics) -> Vec<Line> {
    vec![
        text(or_dash(&t.team)),
        text(or_dash(&t.role)),
        text(format!("{} / {}", t.sent, t.received)),
        text(stats_text(&t.time_to_acknowledge)),
        text(stats_text(&t.time_to_accept)),
        text(stats_text(&t.time_to_resolve)),
        tally_line(&t.expectations, true),
        text(score_text(t.score, t.expected_score, t.max_score)),
        text(format!(
            "{} replied, {} missed",
            t.comchecks_replied, t.comchecks_missed
        )),
    ]
}

/// The overall figures as the last row of the per-team table.
fn all_teams_row(r: &Report) -> Vec<Line> {
    let o = &r.overall;
    vec![
        vec![Span::Strong("All teams".into())],
        text("-"),
        text(format!("{} messages", o.messages)),
        text(stats_text(&o.time_to_acknowledge)),
        text(stats_text(&o.time_to_accept)),
        text(stats_text(&o.time_to_resolve)),
        tally_line(&o.expectations, true),
        text(score_text(o.score, o.expected_score, o.max_score)),
        text(percent_text(o.comcheck_success)),
    ]
}

/// Communication matrix: senders down, recipients across.
fn matrix(r: &Report) -> Section {
    let order = team_order(r);
    let senders: Vec<&String> = order
        .iter()
        .filter(|t| r.matrix.iter().any(|c| &c.from == *t))
        .collect();
    let recipients: Vec<&String> = order
        .iter()
        .filter(|t| r.matrix.iter().any(|c| &c.to == *t))
        .collect();
    let mut head = vec!["From ↓ / To →".to_string()];
    head.extend(recipients.iter().map(|t| (*t).clone()));
    let rows: Vec<Vec<Line>> = senders
        .iter()
        .map(|from| {
            let mut row = vec![vec![Span::Strong((*from).clone())]];
            row.extend(recipients.iter().map(|to| text(matrix_cell(r, from, to))));
            row
        })
        .collect();
    let block = if rows.is_empty() {
        Block::Para(text("No exercise messages were recorded."))
    } else {
        Block::Table { head, rows }
    };
    Section {
        id: "matrix",
        title: "Communication matrix",
        blocks: vec![block],
    }
}

/// What `from` sent `to`, by kind: `2 request, 1 warning`.
fn matrix_cell(r: &Report, from: &str, to: &str) -> String {
    let mut kinds: BTreeMap<&str, u64> = BTreeMap::new();
    for c in r.matrix.iter().filter(|c| c.from == from && c.to == to) {
        *kinds.entry(c.kind.as_str()).or_default() += u64::from(c.count);
    }
    kinds
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(kind, n)| format!("{n} {}", or_dash(kind)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every team the report names, participants first, then in order of appearance.
fn team_order(r: &Report) -> Vec<String> {
    let mut order = Vec::new();
    for p in &r.participants {
        push_unique(&mut order, &p.team);
    }
    for e in &r.timeline {
        push_unique(&mut order, &e.team);
        for to in &e.to {
            push_unique(&mut order, to);
        }
    }
    for c in &r.matrix {
        push_unique(&mut order, &c.from);
        push_unique(&mut order, &c.to);
    }
    order
}

/// Appends `item` unless it is already there.
fn push_unique(list: &mut Vec<String>, item: &str) {
    if !list.iter().any(|x| x == item) {
        list.push(item.to_string());
    }
}

/// Strengths or areas for improvement, one finding per item.
fn findings(id: &'static str, title: &'static str, list: &[Finding], empty: &str) -> Section {
    let items = list
        .iter()
        .map(|f| {
            vec![
                Span::Text(or_dash(&f.text).to_string()),
                Span::Text(format!(" ({})", finding_context(f))),
            ]
        })
        .collect();
    Section {
        id,
        title,
        blocks: vec![list_or(items, empty)],
    }
}

/// A finding's team, objective, expectation and records.
fn finding_context(f: &Finding) -> String {
    let mut parts = vec![format!("team {}", or_dash(&f.team))];
    if let Some(objective) = f.objective.as_deref().filter(|o| !o.is_empty()) {
        parts.push(format!("objective {objective}"));
    }
    if !f.expectation.is_empty() {
        parts.push(format!("expectation {}", f.expectation));
    }
    parts.push(format!("records: {}", seq_list(&f.records)));
    parts.join("; ")
}

/// Capability ratings per objective, with the HSEEP legend.
fn ratings(r: &Report) -> Section {
    let head = [
        "Id",
        "Objective",
        "Rating",
        "Score (achieved / expected / max)",
    ];
    let rows = r
        .hseep
        .ratings
        .iter()
        .map(|g| {
            vec![
                text(or_dash(&g.objective_id)),
                text(or_dash(&g.objective)),
                status(or_dash(&g.rating)),
                text(score_text(g.score, g.expected_score, g.max_score)),
            ]
        })
        .collect();
    let legend = "P = performed without challenges, S = performed with some challenges, \
                  M = performed with major challenges, U = unable to be performed, \
                  - = not measured (no expectation measured the objective).";
    Section {
        id: "ratings",
        title: "Capability ratings",
        blocks: vec![
            table_or(&head, rows, "No objectives were rated."),
            Block::Para(text(legend)),
        ],
    }
}

/// The improvement plan, blank cells left for the facilitator.
fn improvement_plan(r: &Report) -> Section {
    let head = [
        "Objective",
        "Issue / area for improvement",
        "Corrective action",
        "Capability",
        "Primary responsible",
        "Start",
        "Completion",
    ];
    let rows = r
        .hseep
        .improvement_plan
        .iter()
        .map(|p| {
            [
                &p.objective,
                &p.issue,
                &p.corrective_action,
                &p.capability,
                &p.primary_responsible,
                &p.start,
                &p.completion,
            ]
            .into_iter()
            .map(|cell| text(cell.as_str()))
            .collect()
        })
        .collect();
    Section {
        id: "improvement-plan",
        title: "Improvement plan",
        blocks: vec![
            Block::Para(text("Blank cells are for the facilitator to fill in.")),
            table_or(&head, rows, "No areas for improvement, so no plan rows."),
        ],
    }
}

/// Exercise isolation: whether exercise traffic stayed an exercise.
fn isolation(r: &Report) -> Section {
    let i = &r.isolation;
    let banner = if i.passed {
        Block::Banner(
            Tone::Good,
            vec![
                Span::Strong("Isolation check passed.".into()),
                Span::Text(" No exercise record reached a real-world reader.".into()),
            ],
        )
    } else {
        Block::Banner(
            Tone::Bad,
            vec![
                Span::Strong("Isolation check FAILED.".into()),
                Span::Text(" Exercise traffic was not kept apart from real-world traffic.".into()),
            ],
        )
    };
    let fields = vec![
        (
            "Exercise records seen",
            text(i.exercise_records.to_string()),
        ),
        (
            "All carry the exercise id",
            text(yes_no(i.all_carry_exercise_id)),
        ),
        (
            "Real-world subscriptions held open",
            text(i.real_world_subscriptions.to_string()),
        ),
        (
            "Exercise records they delivered",
            text(i.exercise_records_in_real_world.to_string()),
        ),
    ];
    Section {
        id: "isolation",
        title: "Exercise isolation",
        blocks: vec![
            banner,
            Block::Para(text(or_dash(&i.statement))),
            Block::Fields(fields),
        ],
    }
}

/// Evidence: the signed tree head, the proofs and how to check them again.
fn evidence(r: &Report) -> Section {
    let e = &r.evidence;
    let mut blocks = vec![Block::Sub("Signed tree head")];
    blocks.push(match &e.tree_head {
        Some(h) => Block::Fields(vec![
            ("Tree size", text(h.tree_size.to_string())),
            ("Root hash", code(or_dash(&h.root_hash))),
            ("Timestamp", text(timestamp_text(h.timestamp_ms))),
            ("Signature", code(or_dash(&h.signature))),
            (
                "Verified",
                status(if h.verified {
                    "verified"
                } else {
                    "NOT verified"
                }),
            ),
        ]),
        None => Block::Para(text(
            "No signed tree head was fetched, so no record could be proved.",
        )),
    });
    let unproved = if e.unproved.is_empty() {
        text("none")
    } else {
        vec![
            Span::Status("unproved".into()),
            Span::Text(format!(" {}", seq_list(&e.unproved))),
        ]
    };
    blocks.push(Block::Sub("Inclusion proofs"));
    blocks.push(Block::Fields(vec![
        ("Log key", code(or_dash(&e.log_key))),
        ("Records proved", text(e.proved.to_string())),
        ("Records not proved", unproved),
    ]));
    blocks.push(Block::Sub("How to verify"));
    blocks.push(if e.how_to_verify.trim().is_empty() {
        Block::Para(text("-"))
    } else {
        Block::Pre(e.how_to_verify.clone())
    });
    Section {
        id: "evidence",
        title: "Evidence",
        blocks,
    }
}

/// Timeline: the chart (HTML only) and every entry as a table row.
fn timeline(r: &Report) -> Section {
    let head = [
        "Time",
        "Lane / team",
        "Kind",
        "Summary",
        "Seq",
        "Leaf hash",
        "Proved",
    ];
    let rows = r.timeline.iter().map(timeline_row).collect();
    Section {
        id: "timeline",
        title: "Timeline",
        blocks: vec![
            Block::Chart,
            table_or(&head, rows, "No events were recorded."),
        ],
    }
}

/// One timeline entry as a table row.
fn timeline_row(e: &Entry) -> Vec<Line> {
    let leaf = match e.leaf_hash.as_deref().filter(|h| !h.is_empty()) {
        Some(hash) => code(short_hash(hash)),
        None => text("-"),
    };
    vec![
        text(report::human(e.at_s)),
        text(entry_route(e)),
        entry_kind(e),
        text(or_dash(&e.summary)),
        text(seq_text(e.seq)),
        leaf,
        entry_proved(e),
    ]
}

/// `team → to, to` for an entry.
fn entry_route(e: &Entry) -> String {
    if e.to.is_empty() {
        or_dash(&e.team).to_string()
    } else {
        format!("{} → {}", or_dash(&e.team), e.to.join(", "))
    }
}

/// The entry's kind, its record kind and what it belongs to.
fn entry_kind(e: &Entry) -> Line {
    let mut line = if e.kind.starts_with("deadline") {
        status(e.kind.as_str())
    } else {
        text(or_dash(&e.kind))
    };
    if !e.record_kind.is_empty() {
        line.push(Span::Text(format!(" ({})", e.record_kind)));
    }
    let about = [&e.inject, &e.expectation, &e.comcheck];
    for id in about.into_iter().flatten() {
        line.push(Span::Text(format!(" · {id}")));
    }
    line
}

/// ✓ or ✗ for a record's inclusion proof; `-` when the entry is no record.
fn entry_proved(e: &Entry) -> Line {
    match (e.seq, e.proved) {
        (None, _) => text("-"),
        (Some(_), true) => status("✓"),
        (Some(_), false) => status("✗"),
    }
}

// === Small formatting helpers ===

/// `-` for an empty or blank string.
fn or_dash(s: &str) -> &str {
    if s.trim().is_empty() { "-" } else { s }
}

/// The objective id for the objective at `index`: `O1`, `O2`…
fn objective_id(index: usize) -> String {
    format!("O{}", index + 1)
}

/// The items joined with commas, or `-` when there are none.
fn join_or_dash(items: &[String]) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items.join(", ")
    }
}

/// A seq, or `-`.
fn seq_text(seq: Option<u64>) -> String {
    seq.map_or("-".into(), |s| s.to_string())
}

/// `seq 12, 15`, or `none`.
fn seq_list(seqs: &[u64]) -> String {
    if seqs.is_empty() {
        return "none".into();
    }
    let list: Vec<String> = seqs.iter().map(u64::to_string).collect();
    format!("seq {}", list.join(", "))
}

/// A duration for people, or `-`.
fn opt_human(seconds: Option<f64>) -> String {
    seconds.map_or("-".into(), report::human)
}

/// `achieved / expected / max`.
fn score_text(score: u32, expected: u32, max: u32) -> String {
    format!("{score} / {expected} / {max}")
}

/// `p50 · p90 · max (n = count)`, or `-` without values.
fn stats_text(s: &Stats) -> String {
    if s.count == 0 {
        return "-".into();
    }
    format!(
        "p50 {} · p90 {} · max {} (n = {})",
        opt_human(s.p50_s),
        opt_human(s.p90_s),
        opt_human(s.max_s),
        s.count
    )
}

/// The tally as coloured status words with counts; `skip_zero` drops empty ones.
fn tally_line(t: &Tally, skip_zero: bool) -> Line {
    let counts = [
        ("SUCCESS", t.success),
        ("PARTIAL", t.partial),
        ("FAILED", t.failed),
        ("PENDING", t.pending),
    ];
    let mut line = Vec::new();
    for (word, n) in counts.into_iter().filter(|(_, n)| !skip_zero || *n > 0) {
        if !line.is_empty() {
            line.push(Span::Text(", ".into()));
        }
        line.push(Span::Status(word.into()));
        line.push(Span::Text(format!(" {n}")));
    }
    if line.is_empty() {
        return text("-");
    }
    line
}

/// A 0..1 rate as a percentage.
fn percent_text(rate: Option<f64>) -> String {
    match rate {
        Some(v) if v.is_finite() => format!("{:.0}%", v * 100.0),
        _ => "- (no communication checks)".into(),
    }
}

/// The speed as exercise seconds per wall-clock second.
fn speed_text(speed: f64) -> String {
    if !speed.is_finite() || speed <= 0.0 {
        return "-".into();
    }
    let mut n = format!("{speed:.3}");
    while n.ends_with('0') {
        n.pop();
    }
    if n.ends_with('.') {
        n.pop();
    }
    format!("{n}× (exercise seconds per wall-clock second)")
}

/// How the drill ended, in words.
fn ended_text(ended: &str) -> String {
    match ended {
        "completed" => "completed (every expectation settled)".into(),
        "time-up" => "time up (the planned exercise time ran out)".into(),
        "interrupted" => "interrupted (stopped before every expectation settled)".into(),
        other => or_dash(other).to_string(),
    }
}

/// `yes` or `no`.
fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// The first 16 characters of a hash and `…` when it is longer.
fn short_hash(hash: &str) -> String {
    if hash.chars().count() <= 16 {
        return or_dash(hash).to_string();
    }
    let head: String = hash.chars().take(16).collect();
    format!("{head}…")
}

/// A tree head's timestamp in RFC 3339, with the milliseconds it came as.
fn timestamp_text(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .map(crate::rules::time::format_time)
        .map_or_else(
            || format!("{ms} ms since the Unix epoch"),
            |s| format!("{s} ({ms} ms)"),
        )
}

// === Markdown ===

/// Appends one block as Markdown.
fn md_block(out: &mut String, block: &Block) {
    match block {
        Block::Banner(_, line) => {
            let _ = writeln!(out, "> {}\n", md_line(line));
        }
        Block::Para(line) => {
            let _ = writeln!(out, "{}\n", md_line(line));
        }
        Block::Fields(fields) => {
            for (label, value) in fields {
                let _ = writeln!(out, "- **{}:** {}", md_text(label), md_line(value));
            }
            out.push('\n');
        }
        Block::List(items) => {
            for item in items {
                let _ = writeln!(out, "- {}", md_line(item));
            }
            out.push('\n');
        }
        Block::Table { head, rows } => md_table(out, head, rows),
        Block::Sub(title) => {
            let _ = writeln!(out, "### {}\n", md_text(title));
        }
        Block::Pre(body) => md_fenced(out, body),
        Block::Chart => {}
    }
}

/// Appends a pipe table.
fn md_table(out: &mut String, head: &[String], rows: &[Vec<Line>]) {
    let head: Vec<String> = head.iter().map(|h| md_text(h)).collect();
    md_row(out, &head);
    md_row(out, &vec!["---".to_string(); head.len()]);
    for row in rows {
        let cells: Vec<String> = row.iter().map(|cell| md_line(cell)).collect();
        md_row(out, &cells);
    }
    out.push('\n');
}

/// Appends one table row of already-escaped cells.
fn md_row(out: &mut String, cells: &[String]) {
    out.push('|');
    for cell in cells {
        let _ = write!(out, " {cell} |");
    }
    out.push('\n');
}

/// Appends a fenced code block whose fence no line of `body` can close.
fn md_fenced(out: &mut String, body: &str) {
    let longest = body.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    let body = body.trim_end_matches(['\n', '\r']);
    let _ = writeln!(out, "{fence}text\n{body}\n{fence}\n");
}

/// The spans of a line as Markdown.
fn md_line(line: &[Span]) -> String {
    line.iter().map(md_span).collect()
}

/// One span as Markdown; status words stay plain (Markdown has no colour).
fn md_span(span: &Span) -> String {
    match span {
        Span::Text(s) | Span::Status(s) => md_text(s),
        Span::Strong(s) if s.trim().is_empty() => String::new(),
        Span::Strong(s) => format!("**{}**", md_text(s.trim())),
        Span::Code(s) => md_code(s),
    }
}

/// Text with Markdown's syntax characters escaped and newlines as `<br>`,
/// safe in a table cell, a list item or a paragraph.
fn md_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '&' | '#' | '~' => {
                out.push('\\');
                out.push(c);
            }
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push_str("<br>");
            }
            '\n' => out.push_str("<br>"),
            _ => out.push(c),
        }
    }
    out
}

/// A code span, or escaped text when the value has a backtick or a pipe
/// (neither survives inside a code span in every context).
fn md_code(s: &str) -> String {
    if s.is_empty() {
        return String::new();
    }
    if s.contains(['`', '|']) {
        return md_text(s);
    }
    format!("`{}`", s.replace(['\r', '\n'], " "))
}

// === HTML ===

/// The page's only style: readable on screen, plain on paper.
const CSS: &str = "
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif;
  color: #1b1f24; background: #ffffff; max-width: 1240px; margin: 0 auto; padding: 1.5rem;
  line-height: 1.45; font-size: 15px; }
h1 { font-size: 1.7rem; margin: 0.2rem 0 0.6rem; }
h2 { font-size: 1.3rem; border-bottom: 2px solid #d0d7de; padding-bottom: 0.2rem; margin-top: 2.2rem; }
h3 { font-size: 1.05rem; margin: 1.2rem 0 0.4rem; }
.banner { padding: 0.6rem 0.9rem; border: 2px solid #9a6700; border-radius: 4px; margin: 0.8rem 0; }
.banner.warn { background: #fff4d6; border-color: #b7791f; color: #4d3300; font-size: 1.05rem; }
.banner.good { background: #e6f4ea; border-color: #1e7e34; color: #14532d; }
.banner.bad { background: #fdecea; border-color: #c62828; color: #7f1d1d; font-size: 1.15rem; }
.banner.muted, .banner.plain { background: #f6f8fa; border-color: #8c959f; }
nav.toc { margin: 0.8rem 0; font-size: 0.92rem; }
nav.toc ol { columns: 3; margin: 0.3rem 0; }
table { border-collapse: collapse; width: 100%; margin: 0.5rem 0 1rem; font-size: 0.88rem; }
th, td { border: 1px solid #b8c0c8; padding: 0.3rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #eef1f4; }
tbody tr:nth-child(even) { background: #f8f9fa; }
td:empty { min-width: 5rem; height: 1.6rem; }
.scroll { overflow-x: auto; }
.st { display: inline-block; padding: 0 0.35rem; border-radius: 3px; font-weight: 600; font-size: 0.9em; }
.st.good { background: #d4edda; color: #155724; }
.st.warn { background: #fff3cd; color: #7a5200; }
.st.bad { background: #f8d7da; color: #842029; }
.st.muted { background: #e2e3e5; color: #41464b; }
.st.plain { background: transparent; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.86em; }
code { word-break: break-all; }
pre { background: #f6f8fa; border: 1px solid #d0d7de; padding: 0.7rem; white-space: pre-wrap; word-break: break-word; }
dl.fields { display: grid; grid-template-columns: max-content 1fr; gap: 0.25rem 1.2rem; margin: 0.5rem 0 1rem; }
dl.fields dt { font-weight: 600; }
dl.fields dd { margin: 0; }
figure.chart { margin: 0.5rem 0 1rem; overflow-x: auto; }
figure.chart svg { max-width: 100%; height: auto; }
figure.chart figcaption { font-size: 0.85rem; color: #57606a; }
footer { margin-top: 2rem; }
@media print {
  body { max-width: none; padding: 0; font-size: 10.5pt; }
  nav.toc { display: none; }
  h2 { break-after: avoid; }
  tr, figure, dl, .banner { break-inside: avoid; }
  .scroll, figure.chart { overflow: visible; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
@page { margin: 14mm; }
";

/// The CSS class of a tone.
fn tone_class(tone: Tone) -> &'static str {
    match tone {
        Tone::Good => "good",
        Tone::Warn => "warn",
        Tone::Bad => "bad",
        Tone::Muted => "muted",
        Tone::Plain => "plain",
    }
}

/// Appends the table of contents.
fn html_toc(out: &mut String, sections: &[Section]) {
    out.push_str("<nav class=\"toc\"><strong>Contents</strong>\n<ol>\n");
    for s in sections {
        let _ = writeln!(out, "<li><a href=\"#{}\">{}</a></li>", s.id, esc(s.title));
    }
    out.push_str("</ol>\n</nav>\n");
}

/// Appends one section with its heading.
fn html_section(out: &mut String, section: &Section, r: &Report) {
    let _ = writeln!(
        out,
        "<section id=\"{}\">\n<h2>{}</h2>",
        section.id,
        esc(section.title)
    );
    for block in &section.blocks {
        html_block(out, block, r);
    }
    out.push_str("</section>\n");
}

/// Appends one block as HTML.
fn html_block(out: &mut String, block: &Block, r: &Report) {
    match block {
        Block::Banner(tone, line) => {
            let _ = writeln!(
                out,
                "<div class=\"banner {}\">{}</div>",
                tone_class(*tone),
                html_line(line)
            );
        }
        Block::Para(line) => {
            let _ = writeln!(out, "<p>{}</p>", html_line(line));
        }
        Block::Fields(fields) => {
            out.push_str("<dl class=\"fields\">\n");
            for (label, value) in fields {
                let _ = writeln!(out, "<dt>{}</dt><dd>{}</dd>", esc(label), html_line(value));
            }
            out.push_str("</dl>\n");
        }
        Block::List(items) => {
            out.push_str("<ul>\n");
            for item in items {
                let _ = writeln!(out, "<li>{}</li>", html_line(item));
            }
            out.push_str("</ul>\n");
        }
        Block::Table { head, rows } => html_table(out, head, rows),
        Block::Sub(title) => {
            let _ = writeln!(out, "<h3>{}</h3>", esc(title));
        }
        Block::Pre(body) => {
            let _ = writeln!(out, "<pre>{}</pre>", esc(body));
        }
        Block::Chart => html_chart(out, r),
    }
}

/// Appends a bordered table inside a horizontally scrolling box.
fn html_table(out: &mut String, head: &[String], rows: &[Vec<Line>]) {
    out.push_str("<div class=\"scroll\"><table>\n<thead><tr>");
    for h in head {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{}</td>", html_line(cell));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table></div>\n");
}

/// Appends the SVG timeline as a figure.
fn html_chart(out: &mut String, r: &Report) {
    out.push_str("<figure class=\"chart\">\n");
    out.push_str(&svg_timeline(r));
    out.push_str(
        "<figcaption>One lane per team; hover a marker for its time, summary, seq and leaf hash.</figcaption>\n</figure>\n",
    );
}

/// The spans of a line as HTML.
fn html_line(line: &[Span]) -> String {
    line.iter().map(html_span).collect()
}

/// One span as HTML; newlines in text become line breaks.
fn html_span(span: &Span) -> String {
    match span {
        Span::Text(s) => html_text(s),
        Span::Strong(s) => format!("<strong>{}</strong>", html_text(s)),
        Span::Code(s) => format!("<code>{}</code>", html_text(s)),
        Span::Status(s) => format!(
            "<span class=\"st {}\">{}</span>",
            tone_class(tone_of(s)),
            esc(s)
        ),
    }
}

/// Escaped text with its line breaks kept.
fn html_text(s: &str) -> String {
    esc(&s.replace("\r\n", "\n").replace('\r', "\n")).replace('\n', "<br/>")
}

/// Escapes text for XML and HTML alike, in text and in quoted attributes.
///
/// `&`, `<`, `>`, `"` and `'` become `&amp;`, `&lt;`, `&gt;`, `&quot;` and
/// `&#39;`; characters XML 1.0 does not allow become U+FFFD. The `h` of
/// `http`, the `(` of `url(` and the `=` of `src=` are written as numeric
/// character references: the page reads the same, and its source never looks
/// like a reference to an outside resource, whatever the report's text says.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for (i, c) in s.char_indices() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\u{27}' => out.push_str("&#39;"),
            'h' | 'H' if starts_with_ignore_case(&s[i..], "http") => {
                let _ = write!(out, "&#{};", u32::from(c));
            }
            '(' if ends_with_ignore_case(&s[..i], "url") => out.push_str("&#40;"),
            '=' if ends_with_ignore_case(&s[..i], "src") => out.push_str("&#61;"),
            c if !is_xml_char(c) => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// `s` starts with the ASCII `prefix`, ignoring case.
fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    let (s, p) = (s.as_bytes(), prefix.as_bytes());
    s.len() >= p.len() && s[..p.len()].eq_ignore_ascii_case(p)
}

/// `s` ends with the ASCII `suffix`, ignoring case.
fn ends_with_ignore_case(s: &str, suffix: &str) -> bool {
    let (s, p) = (s.as_bytes(), suffix.as_bytes());
    s.len() >= p.len() && s[s.len() - p.len()..].eq_ignore_ascii_case(p)
}

/// The character may appear in an XML 1.0 document.
fn is_xml_char(c: char) -> bool {
    matches!(c,
        '\t' | '\n' | '\r'
        | '\u{20}'..='\u{D7FF}'
        | '\u{E000}'..='\u{FFFD}'
        | '\u{10000}'..='\u{10FFFF}')
}

// === SVG timeline ===

/// The chart's width.
const SVG_WIDTH: f64 = 1000.0;
/// The left column that holds the lane labels.
const SVG_LEFT: f64 = 170.0;
/// The margin right of the plot.
const SVG_RIGHT: f64 = 24.0;
/// The margin above the first lane (room for the planned-end label).
const SVG_TOP: f64 = 24.0;
/// One lane's height.
const LANE_HEIGHT: f64 = 36.0;
/// The longest exercise time the axis spans (about 31 years); later times sit at its end.
const MAX_SPAN_S: f64 = 1.0e9;

// The colours of the entry kinds, shared by markers, arrows and the legend.
const INJECT_COLOUR: &str = "#7b3294";
const COMCHECK_COLOUR: &str = "#d9730d";
const RESPONSE_COLOUR: &str = "#1f5fa8";
const MESSAGE_COLOUR: &str = "#57606a";
const MET_COLOUR: &str = "#1a7f37";
const MISSED_COLOUR: &str = "#cf222e";

/// The exercise timeline as an inline SVG: one lane per team, markers for
/// every entry with a tooltip, an exercise-time axis and a legend.
pub fn svg_timeline(r: &Report) -> String {
    let lanes = lanes(r);
    let chart = Chart::new(r, lanes.len());
    let mut out = String::with_capacity(16 * 1024);
    svg_open(&mut out, &chart, r);
    svg_lanes(&mut out, &chart, &lanes);
    svg_axis(&mut out, &chart, r);
    svg_connectors(&mut out, &chart, &lanes, &r.timeline);
    svg_markers(&mut out, &chart, &lanes, &r.timeline);
    if r.timeline.is_empty() {
        svg_nothing_recorded(&mut out, &chart);
    }
    svg_legend(&mut out, &chart);
    out.push_str("</svg>\n");
    out
}

/// A lane of the chart: a team and what it was in the drill.
struct Lane {
    team: String,
    role: String,
}

/// The chart's lanes: participants in order, then any other team on the timeline.
fn lanes(r: &Report) -> Vec<Lane> {
    let mut lanes: Vec<Lane> = Vec::new();
    let known = |lanes: &[Lane], team: &str| lanes.iter().any(|l| l.team == team);
    for p in &r.participants {
        if !known(&lanes, &p.team) {
            lanes.push(Lane {
                team: p.team.clone(),
                role: p.role.clone(),
            });
        }
    }
    for e in &r.timeline {
        if !known(&lanes, &e.team) {
            lanes.push(Lane {
                team: e.team.clone(),
                role: "not a participant".into(),
            });
        }
    }
    lanes
}

/// The index of `team`'s lane.
fn lane_index(lanes: &[Lane], team: &str) -> Option<usize> {
    lanes.iter().position(|l| l.team == team)
}

/// A lane's label: the team, cut to 24 characters.
fn lane_label(team: &str) -> String {
    if team.trim().is_empty() {
        return "(no team)".into();
    }
    if team.chars().count() <= 24 {
        return team.to_string();
    }
    let head: String = team.chars().take(23).collect();
    format!("{head}…")
}

/// The chart's geometry: lanes, time scale and ticks.
struct Chart {
    lanes: usize,
    /// Exercise seconds the x axis spans (a whole number of ticks, > 0).
    span: f64,
    /// Exercise seconds between ticks (> 0).
    step: f64,
}

impl Chart {
    /// Scales the axis to the played time, the planned time and the last entry.
    fn new(r: &Report, lanes: usize) -> Self {
        let end = time_extent(r);
        let padded = if end > 0.0 { end * 1.04 } else { 60.0 };
        let step = tick_step(padded);
        let span = (padded / step).ceil().max(1.0) * step;
        Chart { lanes, span, step }
    }

    /// The plot area's width.
    fn plot_width(&self) -> f64 {
        SVG_WIDTH - SVG_LEFT - SVG_RIGHT
    }

    /// The x of an exercise time, clamped to the axis (0 for a non-finite time).
    fn x(&self, t: f64) -> f64 {
        let t = if t.is_finite() {
            t.clamp(0.0, self.span)
        } else {
            0.0
        };
        SVG_LEFT + t / self.span * self.plot_width()
    }

    /// The y of the middle of lane `i`.
    fn lane_y(&self, i: usize) -> f64 {
        SVG_TOP + (i as f64 + 0.5) * LANE_HEIGHT
    }

    /// The y of the axis line, under the last lane (or one empty lane).
    fn axis_y(&self) -> f64 {
        SVG_TOP + self.lanes.max(1) as f64 * LANE_HEIGHT
    }

    /// The y of the legend's row.
    fn legend_y(&self) -> f64 {
        self.axis_y() + 44.0
    }

    /// The whole chart's height.
    fn height(&self) -> f64 {
        self.legend_y() + 18.0
    }
}

/// The latest time the chart must show: played, planned or the last entry.
fn time_extent(r: &Report) -> f64 {
    let entries = r.timeline.iter().map(|e| e.at_s);
    [r.exercise.played_s, r.exercise.duration_s]
        .into_iter()
        .chain(entries)
        .filter(|t| t.is_finite() && *t > 0.0)
        .fold(0.0, f64::max)
        .min(MAX_SPAN_S)
}

/// A round tick interval giving at most ten ticks over `span` seconds.
fn tick_step(span: f64) -> f64 {
    const STEPS: [f64; 18] = [
        1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
        10800.0, 21600.0, 43200.0, 86400.0,
    ];
    STEPS
        .into_iter()
        .find(|step| span / step <= 10.0)
        .unwrap_or_else(|| (span / 10.0 / 86400.0).ceil().max(1.0) * 86400.0)
}

/// A coordinate for an attribute: one decimal, never NaN or infinite.
fn num(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.1}")
    } else {
        "0".into()
    }
}

/// Opens the `<svg>` element with its size and accessible title.
fn svg_open(out: &mut String, chart: &Chart, r: &Report) {
    let h = num(chart.height());
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"timeline\" width=\"{w}\" height=\"{h}\" \
         viewBox=\"0 0 {w} {h}\" font-family=\"system-ui, sans-serif\" font-size=\"11\" role=\"img\">",
        w = num(SVG_WIDTH),
    );
    let _ = writeln!(
        out,
        "<title>Exercise timeline of {}</title>",
        esc(&title_text(r))
    );
}

/// Draws the lane bands with their labels.
fn svg_lanes(out: &mut String, chart: &Chart, lanes: &[Lane]) {
    let width = num(chart.plot_width());
    for (i, lane) in lanes.iter().enumerate() {
        let top = SVG_TOP + i as f64 * LANE_HEIGHT;
        let y = chart.lane_y(i);
        let fill = if i % 2 == 0 { "#f6f8fa" } else { "#ffffff" };
        let _ = writeln!(
            out,
            "<rect x=\"{}\" y=\"{}\" width=\"{width}\" height=\"{}\" fill=\"{fill}\"/>",
            num(SVG_LEFT),
            num(top),
            num(LANE_HEIGHT)
        );
        let _ = writeln!(
            out,
            "<line x1=\"{}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#d0d7de\" stroke-width=\"1\"/>",
            num(SVG_LEFT),
            num(SVG_LEFT + chart.plot_width()),
            y = num(y)
        );
        let _ = writeln!(
            out,
            "<text class=\"lane-label\" x=\"{x}\" y=\"{}\" text-anchor=\"end\" font-weight=\"600\" \
             fill=\"#1b1f24\">{}</text>",
            num(y),
            esc(&lane_label(&lane.team)),
            x = num(SVG_LEFT - 10.0)
        );
        let _ = writeln!(
            out,
            "<text class=\"lane-role\" x=\"{}\" y=\"{}\" text-anchor=\"end\" font-size=\"9.5\" \
             fill=\"#57606a\">{}</text>",
            num(SVG_LEFT - 10.0),
            num(y + 11.0),
            esc(&lane.role)
        );
    }
}

/// Draws the time axis: grid lines, ticks, labels and the planned end.
fn svg_axis(out: &mut String, chart: &Chart, r: &Report) {
    let axis_y = chart.axis_y();
    let right = SVG_LEFT + chart.plot_width();
    let ticks = (chart.span / chart.step).round().clamp(0.0, 100.0) as usize;
    for i in 0..=ticks {
        let t = i as f64 * chart.step;
        let x = num(chart.x(t));
        let _ = writeln!(
            out,
            "<line x1=\"{x}\" y1=\"{}\" x2=\"{x}\" y2=\"{}\" stroke=\"#d8dee4\" stroke-width=\"0.6\"/>",
            num(SVG_TOP),
            num(axis_y + 4.0)
        );
        let _ = writeln!(
            out,
            "<text class=\"tick\" x=\"{x}\" y=\"{}\" text-anchor=\"middle\" fill=\"#57606a\">{}</text>",
            num(axis_y + 17.0),
            esc(&report::human(t))
        );
    }
    let _ = writeln!(
        out,
        "<line x1=\"{}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#57606a\" stroke-width=\"1.2\"/>",
        num(SVG_LEFT),
        num(right),
        y = num(axis_y)
    );
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" fill=\"#57606a\">exercise time</text>",
        num(SVG_LEFT - 10.0),
        num(axis_y + 17.0)
    );
    let planned = r.exercise.duration_s;
    if planned.is_finite() && planned > 0.0 {
        svg_planned_end(out, chart, planned);
    }
}

/// Draws the dashed line at the planned end of the exercise.
fn svg_planned_end(out: &mut String, chart: &Chart, planned: f64) {
    let x = chart.x(planned);
    let _ = writeln!(
        out,
        "<g class=\"planned-end\"><title>planned end: {}</title>\
         <line x1=\"{x}\" y1=\"{}\" x2=\"{x}\" y2=\"{}\" stroke=\"#1b1f24\" stroke-width=\"1\" \
         stroke-dasharray=\"4 3\"/>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"end\" font-size=\"10\" fill=\"#1b1f24\">planned end</text></g>",
        esc(&report::human(planned)),
        num(SVG_TOP - 4.0),
        num(chart.axis_y()),
        num(x - 3.0),
        num(SVG_TOP - 8.0),
        x = num(x)
    );
}

/// Draws light lines from each sender's lane to its recipients' lanes.
fn svg_connectors(out: &mut String, chart: &Chart, lanes: &[Lane], timeline: &[Entry]) {
    out.push_str("<g class=\"connectors\" stroke-width=\"1\" opacity=\"0.45\">\n");
    for e in timeline.iter().filter(|e| !e.to.is_empty()) {
        let Some(from) = lane_index(lanes, &e.team) else {
            continue;
        };
        let mut drawn: Vec<usize> = Vec::new();
        for to in &e.to {
            if let Some(j) = lane_index(lanes, to)
                && j != from
                && !drawn.contains(&j)
            {
                drawn.push(j);
                svg_arrow(
                    out,
                    chart.x(e.at_s),
                    chart.lane_y(from),
                    chart.lane_y(j),
                    kind_colour(&e.kind),
                );
            }
        }
    }
    out.push_str("</g>\n");
}

/// Draws a vertical arrow at `x` from `y1` to just short of `y2`.
fn svg_arrow(out: &mut String, x: f64, y1: f64, y2: f64, colour: &str) {
    let dir = if y2 > y1 { 1.0 } else { -1.0 };
    let tip = y2 - dir * 7.0;
    let base = tip - dir * 5.0;
    let _ = writeln!(
        out,
        "<line x1=\"{x}\" y1=\"{}\" x2=\"{x}\" y2=\"{}\" stroke=\"{colour}\"/>\
         <polygon points=\"{x},{} {},{b} {},{b}\" fill=\"{colour}\"/>",
        num(y1),
        num(tip),
        num(tip),
        num(x - 3.0),
        num(x + 3.0),
        x = num(x),
        b = num(base)
    );
}

/// Draws one marker per entry, each with its tooltip.
fn svg_markers(out: &mut String, chart: &Chart, lanes: &[Lane], timeline: &[Entry]) {
    for e in timeline {
        let Some(lane) = lane_index(lanes, &e.team) else {
            continue;
        };
        let _ = writeln!(
            out,
            "<g class=\"marker\"><title>{}</title>{}</g>",
            esc(&tooltip(e)),
            marker_shape(&e.kind, chart.x(e.at_s), chart.lane_y(lane))
        );
    }
}

/// An entry's tooltip: time, team, kind, summary, seq and leaf hash.
fn tooltip(e: &Entry) -> String {
    let mut tip = format!(
        "{} · {} · {}",
        report::human(e.at_s),
        lane_label(&e.team),
        or_dash(&e.kind)
    );
    if !e.to.is_empty() {
        let _ = write!(tip, " → {}", e.to.join(", "));
    }
    if !e.summary.trim().is_empty() {
        let _ = write!(tip, "\n{}", e.summary);
    }
    if let Some(seq) = e.seq {
        let proved = if e.proved { "proved" } else { "not proved" };
        let _ = write!(tip, "\nseq {seq} ({proved})");
    }
    if let Some(leaf) = e.leaf_hash.as_deref().filter(|h| !h.is_empty()) {
        let _ = write!(tip, "\nleaf {leaf}");
    }
    tip
}

/// The colour an entry kind is drawn in.
fn kind_colour(kind: &str) -> &'static str {
    match kind {
        "inject" => INJECT_COLOUR,
        "comcheck" => COMCHECK_COLOUR,
        "response" => RESPONSE_COLOUR,
        "deadline-met" => MET_COLOUR,
        "deadline-missed" => MISSED_COLOUR,
        _ => MESSAGE_COLOUR,
    }
}

/// The marker of an entry kind centred on `(x, y)`.
fn marker_shape(kind: &str, x: f64, y: f64) -> String {
    let colour = kind_colour(kind);
    let p = |dx: f64, dy: f64| format!("{},{}", num(x + dx), num(y + dy));
    match kind {
        "inject" => format!(
            "<polygon points=\"{} {} {}\" fill=\"{colour}\" stroke=\"#ffffff\" stroke-width=\"0.8\"/>",
            p(0.0, -8.0),
            p(-7.0, 5.0),
            p(7.0, 5.0)
        ),
        "comcheck" => format!(
            "<polygon points=\"{} {} {} {}\" fill=\"{colour}\" stroke=\"#ffffff\" stroke-width=\"0.8\"/>",
            p(0.0, -7.0),
            p(7.0, 0.0),
            p(0.0, 7.0),
            p(-7.0, 0.0)
        ),
        "response" => format!(
            "<circle cx=\"{}\" cy=\"{}\" r=\"5.5\" fill=\"{colour}\" stroke=\"#ffffff\" stroke-width=\"0.8\"/>",
            num(x),
            num(y)
        ),
        "deadline-met" => tick_mark(x, y, colour),
        "deadline-missed" => format!(
            "{}<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{colour}\" stroke-width=\"2\"/>\
             <line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{colour}\" stroke-width=\"2\"/>",
            tick_mark(x, y, colour),
            num(x - 5.0),
            num(y - 5.0),
            num(x + 5.0),
            num(y + 5.0),
            num(x + 5.0),
            num(y - 5.0),
            num(x - 5.0),
            num(y + 5.0)
        ),
        _ => format!(
            "<circle cx=\"{}\" cy=\"{}\" r=\"5\" fill=\"#ffffff\" stroke=\"{colour}\" stroke-width=\"1.6\"/>",
            num(x),
            num(y)
        ),
    }
}

/// A vertical deadline tick centred on `(x, y)`.
fn tick_mark(x: f64, y: f64, colour: &str) -> String {
    format!(
        "<line x1=\"{x}\" y1=\"{}\" x2=\"{x}\" y2=\"{}\" stroke=\"{colour}\" stroke-width=\"2.5\"/>",
        num(y - 12.0),
        num(y + 12.0),
        x = num(x)
    )
}

/// Writes that nothing was recorded across the empty plot.
fn svg_nothing_recorded(out: &mut String, chart: &Chart) {
    let _ = writeln!(
        out,
        "<text class=\"empty\" x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#57606a\">No events were recorded.</text>",
        num(SVG_LEFT + chart.plot_width() / 2.0),
        num(SVG_TOP + LANE_HEIGHT / 2.0 + 4.0)
    );
}

/// Draws the legend under the axis.
fn svg_legend(out: &mut String, chart: &Chart) {
    let y = chart.legend_y();
    let items = [
        ("inject", "inject"),
        ("comcheck", "comcheck"),
        ("response", "response"),
        ("message", "other message"),
        ("deadline-met", "deadline met"),
        ("deadline-missed", "deadline missed"),
    ];
    out.push_str("<g class=\"legend\">\n");
    let mut x = 24.0;
    for (kind, label) in items {
        let _ = writeln!(
            out,
            "{}<text x=\"{}\" y=\"{}\" fill=\"#1b1f24\">{label}</text>",
            marker_shape(kind, x + 8.0, y),
            num(x + 20.0),
            num(y + 4.0)
        );
        x += 136.0;
    }
    let _ = writeln!(
        out,
        "<line x1=\"{a}\" y1=\"{}\" x2=\"{a}\" y2=\"{}\" stroke=\"#1b1f24\" stroke-width=\"1\" \
         stroke-dasharray=\"4 3\"/><text x=\"{}\" y=\"{}\" fill=\"#1b1f24\">planned end</text>",
        num(y - 10.0),
        num(y + 10.0),
        num(x + 20.0),
        num(y + 4.0),
        a = num(x + 8.0)
    );
    out.push_str("</g>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drill::report::{
        Evidence, ExerciseInfo, Hseep, Isolation, MatrixCell, Overall, ParticipantInfo, PlanRow,
        Rating, TreeHead,
    };

    /// Hostile text: markup, an ampersand and both quotes.
    const EVIL: &str = "<script>alert(1)</script> & \"quoted\" 'single'";

    /// A timeline entry.
    fn entry(
        at_s: f64,
        kind: &str,
        team: &str,
        to: &[&str],
        record_kind: &str,
        summary: &str,
        seq: Option<u64>,
    ) -> Entry {
        Entry {
            at_s,
            kind: kind.into(),
            team: team.into(),
            to: to.iter().map(|t| t.to_string()).collect(),
            record_kind: record_kind.into(),
            summary: summary.into(),
            inject: None,
            expectation: None,
            comcheck: None,
            seq,
            leaf_hash: seq.map(|s| format!("{s:02x}{}", "ab".repeat(31))),
            received_at: seq.map(|_| "2025-05-14T09:41:02Z".into()),
            proved: seq.is_some_and(|s| s != 15),
        }
    }

    /// An expectation outcome.
    fn expectation(
        id: &str,
        team: &str,
        status: &str,
        score: u32,
        seq: Option<u64>,
        note: &str,
    ) -> ExpectationOutcome {
        ExpectationOutcome {
            id: id.into(),
            team: team.into(),
            kind: "acknowledge".into(),
            target: "I1".into(),
            description: format!("{team} acknowledges the ransomware request"),
            objective: Some("O1".into()),
            within_s: 1800.0,
            status: status.into(),
            score,
            expected_score: 8,
            max_score: 10,
            deadline_at_s: Some(2400.0),
            response_seq: seq,
            response_after_s: seq.map(|_| 960.0),
            note: note.into(),
        }
    }

    /// One team's metrics.
    fn team(team: &str, role: &str, expectations: Tally, score: u32) -> TeamMetrics {
        let answered = expectations.success + expectations.partial > 0;
        let times: &[f64] = if answered { &[240.0, 960.0] } else { &[] };
        TeamMetrics {
            team: team.into(),
            role: role.into(),
            sent: if answered { 3 } else { 1 },
            received: 4,
            time_to_acknowledge: Stats::of(times),
            time_to_accept: Stats::of(&times[..times.len().min(1)]),
            time_to_resolve: Stats::default(),
            score,
            expected_score: 8
                * (expectations.success
                    + expectations.partial
                    + expectations.failed
                    + expectations.pending),
            max_score: 10
                * (expectations.success
                    + expectations.partial
                    + expectations.failed
                    + expectations.pending),
            comchecks_replied: u32::from(answered),
            comchecks_missed: u32::from(!answered && role == "player"),
            expectations,
        }
    }

    /// A realistic report: three teams, two injects (one not played), a
    /// comcheck with a reply and a miss, expectations of every status, every
    /// timeline kind, and hostile text in a summary, a team and an objective.
    fn sample() -> Report {
        let mut timeline = vec![
            entry(
                600.0,
                "inject",
                "excon",
                &["cert-ee", "cert-lv"],
                "request",
                "Ransomware at a hospital: assistance request",
                Some(11),
            ),
            entry(
                660.0,
                "comcheck",
                "excon",
                &["cert-ee", "cert-lv"],
                "request",
                "Communication check 1",
                Some(12),
            ),
            entry(
                900.0,
                "response",
                "cert-ee",
                &["excon"],
                "case_update",
                "Reply to COMCHECK-1",
                Some(13),
            ),
            entry(
                1560.0,
                "response",
                "cert-ee",
                &["excon"],
                "case_update",
                "Acknowledged the hospital request",
                Some(14),
            ),
            entry(
                1700.0,
                "message",
                EVIL,
                &["cert-ee"],
                "warning",
                &format!("pipe | in summary {EVIL}"),
                Some(15),
            ),
            entry(
                1800.0,
                "message",
                "cert-lv",
                &["cert-ee", "community"],
                "warning",
                "IoCs: http://evil.example/x url(a) src=1.2.3.4",
                Some(16),
            ),
            entry(2400.0, "deadline-met", "cert-ee", &[], "", "E1 met", None),
            entry(
                2460.0,
                "deadline-missed",
                "cert-lv",
                &[],
                "",
                "E2 missed: no answer within 30m",
                None,
            ),
        ];
        timeline[0].inject = Some("I1".into());
        timeline[1].comcheck = Some("COMCHECK-1".into());
        timeline[3].expectation = Some("E1".into());
        Report {
            format: report::FORMAT.into(),
            exercise: ExerciseInfo {
                id: "baltic-2025".into(),
                name: "Baltic Shield 2025".into(),
                description: "A ransomware wave against hospitals,\nplayed across three CERTs.".into(),
                organiser: "CERT-EE".into(),
                objectives: vec![
                    "Acknowledge requests within 30 minutes".into(),
                    format!("Warn partners {EVIL}"),
                ],
                core_capabilities: vec!["Operational coordination".into(), "Intelligence and information sharing".into()],
                duration_s: 3600.0,
                speed: 6.0,
                started_at: "2025-05-14T09:00:00Z".into(),
                ended_at: "2025-05-14T09:10:00Z".into(),
                played_s: 3000.0,
                ended: "time-up".into(),
                broker: "https://localhost:7443".into(),
                control_team: "excon".into(),
                scenario: "drills/baltic.toml".into(),
            },
            participants: vec![
                ParticipantInfo { team: "excon".into(), role: "control".into(), name: "Exercise control".into() },
                ParticipantInfo { team: "cert-ee".into(), role: "player".into(), name: "CERT-EE".into() },
                ParticipantInfo { team: "cert-lv".into(), role: "player".into(), name: EVIL.into() },
            ],
            timeline,
            injects: vec![
                InjectOutcome {
                    id: "I1".into(),
                    mv: 1,
                    subject: "Ransomware at a hospital".into(),
                    method: "request".into(),
                    from: "cert-lt".into(),
                    sent_as: "excon".into(),
                    to: vec!["cert-ee".into(), "cert-lv".into()],
                    expected_action: "Acknowledge and accept the request".into(),
                    status: "sent".into(),
                    why: None,
                    at_s: Some(600.0),
                    seq: Some(11),
                    leaf_hash: Some("0b".repeat(32)),
                },
                InjectOutcome {
                    id: "I2".into(),
                    mv: 2,
                    subject: "Data leak follow-up".into(),
                    method: "warning".into(),
                    from: "excon".into(),
                    sent_as: "excon".into(),
                    to: vec!["cert-lv".into()],
                    expected_action: "Warn the community".into(),
                    status: "not-played".into(),
                    why: Some("time ran out before move 2".into()),
                    at_s: None,
                    seq: None,
                    leaf_hash: None,
                },
            ],
            comchecks: vec![ComcheckOutcome {
                id: "COMCHECK-1".into(),
                from: "excon".into(),
                message: "Reply with your duty officer".into(),
                at_s: 660.0,
                expires_s: 900.0,
                replies: vec![
                    ComcheckReply { team: "cert-ee".into(), status: "replied".into(), reply_after_s: Some(240.0), request_seq: Some(12), reply_seq: Some(13) },
                    ComcheckReply { team: "cert-lv".into(), status: "missed".into(), reply_after_s: None, request_seq: Some(12), reply_seq: None },
                ],
            }],
            expectations: vec![
                expectation("E1", "cert-ee", "SUCCESS", 10, Some(14), "acknowledged in 16m 00s"),
                expectation("E2", "cert-lv", "FAILED", 0, None, "no answer within 30m"),
                expectation("E3", "cert-ee", "PARTIAL", 5, Some(16), "warning severity was medium, high expected"),
                expectation("E4", "cert-lv", "PENDING", 0, None, ""),
            ],
            teams: vec![
                team("excon", "control", Tally::default(), 0),
                team("cert-ee", "player", Tally { success: 1, partial: 1, failed: 0, pending: 0 }, 15),
                team("cert-lv", "player", Tally { success: 0, partial: 0, failed: 1, pending: 1 }, 0),
            ],
            overall: Overall {
                messages: 6,
                injects_sent: 1,
                injects_not_played: 1,
                time_to_acknowledge: Stats::of(&[240.0, 960.0]),
                time_to_accept: Stats::default(),
                time_to_resolve: Stats::default(),
                expectations: Tally { success: 1, partial: 1, failed: 1, pending: 1 },
                score: 15,
                expected_score: 32,
                max_score: 40,
                comcheck_success: Some(0.5),
            },
            matrix: vec![
                MatrixCell { from: "excon".into(), to: "cert-ee".into(), kind: "request".into(), count: 2 },
                MatrixCell { from: "excon".into(), to: "cert-lv".into(), kind: "request".into(), count: 2 },
                MatrixCell { from: "cert-ee".into(), to: "excon".into(), kind: "case_update".into(), count: 2 },
                MatrixCell { from: "cert-lv".into(), to: "cert-ee".into(), kind: "warning".into(), count: 1 },
                MatrixCell { from: "cert-lv".into(), to: "cert-ee".into(), kind: "request".into(), count: 2 },
            ],
            hseep: Hseep {
                strengths: vec![Finding {
                    text: "CERT-EE acknowledged the hospital request in 16 minutes".into(),
                    team: "cert-ee".into(),
                    objective: Some("O1".into()),
                    expectation: "E1".into(),
                    records: vec![11, 14],
                }],
                areas_for_improvement: vec![Finding {
                    text: format!("CERT-LV did not answer the request {EVIL}"),
                    team: "cert-lv".into(),
                    objective: Some("O1".into()),
                    expectation: "E2".into(),
                    records: vec![11],
                }],
                ratings: vec![
                    Rating { objective_id: "O1".into(), objective: "Acknowledge requests within 30 minutes".into(), rating: "S".into(), score: 10, expected_score: 16, max_score: 20 },
                    Rating { objective_id: "O2".into(), objective: format!("Warn partners {EVIL}"), rating: "-".into(), score: 0, expected_score: 0, max_score: 0 },
                ],
                improvement_plan: vec![PlanRow {
                    objective: "O1".into(),
                    issue: "CERT-LV did not answer the request".into(),
                    corrective_action: String::new(),
                    capability: "Operational coordination".into(),
                    primary_responsible: String::new(),
                    start: String::new(),
                    completion: String::new(),
                }],
            },
            isolation: Isolation {
                exercise_records: 6,
                all_carry_exercise_id: true,
                real_world_subscriptions: 3,
                exercise_records_in_real_world: 0,
                passed: true,
                statement: "All 6 exercise records carried exercise id baltic-2025; 3 real-world subscriptions delivered none of them.".into(),
            },
            evidence: Evidence {
                tree_head: Some(TreeHead {
                    tree_size: 42,
                    root_hash: "9f".repeat(32),
                    timestamp_ms: 1_747_215_600_000,
                    signature: "5a".repeat(64),
                    verified: true,
                }),
                log_key: "c0ffee".repeat(10),
                proved: 5,
                unproved: vec![15],
                signatures_verified: 0,
                signatures_failed: vec![],
                how_to_verify: "certex verify --broker https://localhost:7443 --report report.json\n# checks ``` every proof".into(),
            },
        }
    }

    /// A report with nothing in it and zero times.
    fn empty() -> Report {
        let mut r = sample();
        r.exercise.duration_s = 0.0;
        r.exercise.played_s = 0.0;
        r.exercise.speed = 0.0;
        r.exercise.objectives.clear();
        r.exercise.core_capabilities.clear();
        r.participants.clear();
        r.timeline.clear();
        r.injects.clear();
        r.comchecks.clear();
        r.expectations.clear();
        r.teams.clear();
        r.matrix.clear();
        r.hseep = Hseep {
            strengths: vec![],
            areas_for_improvement: vec![],
            ratings: vec![],
            improvement_plan: vec![],
        };
        r.evidence.tree_head = None;
        r.evidence.unproved.clear();
        r.evidence.how_to_verify.clear();
        r.overall.comcheck_success = None;
        r
    }

    /// Parses an HTML page (with its DOCTYPE) as XML.
    fn parse(text: &str) -> roxmltree::Document<'_> {
        let options = roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        };
        match roxmltree::Document::parse_with_options(text, options) {
            Ok(doc) => doc,
            Err(e) => panic!("not well-formed XML: {e}\n{text}"),
        }
    }

    /// The elements of `doc` with the local name `name`.
    fn elements<'a>(doc: &'a roxmltree::Document<'a>, name: &str) -> Vec<roxmltree::Node<'a, 'a>> {
        doc.descendants()
            .filter(|n| n.is_element() && n.tag_name().name() == name)
            .collect()
    }

    /// All the text under a node.
    fn text_of(node: roxmltree::Node<'_, '_>) -> String {
        node.descendants()
            .filter(|n| n.is_text())
            .filter_map(|n| n.text())
            .collect()
    }

    #[test]
    fn html_is_well_formed_xml_with_one_svg() {
        let page = html(&sample());
        assert!(page.starts_with(
            "<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\">"
        ));
        let doc = parse(&page);
        assert_eq!(
            doc.root_element().tag_name().namespace(),
            Some("http://www.w3.org/1999/xhtml")
        );
        let svgs = elements(&doc, "svg");
        assert_eq!(svgs.len(), 1);
        assert_eq!(
            svgs[0].tag_name().namespace(),
            Some("http://www.w3.org/2000/svg")
        );
        assert!(page.contains("<meta charset=\"utf-8\"/>"));
        for section in document(&sample()) {
            let found = doc
                .descendants()
                .any(|n| n.has_tag_name("section") && n.attribute("id") == Some(section.id));
            assert!(found, "section {} missing", section.id);
        }
    }

    #[test]
    fn svg_has_a_lane_per_team_and_a_title_per_record() {
        let r = sample();
        let page = html(&r);
        let doc = parse(&page);
        let labels: Vec<String> = doc
            .descendants()
            .filter(|n| n.has_tag_name("text") && n.attribute("class") == Some("lane-label"))
            .map(text_of)
            .collect();
        // The three participants in order, then the team only on the timeline.
        let want: Vec<String> = ["excon", "cert-ee", "cert-lv", EVIL]
            .iter()
            .map(|t| lane_label(t))
            .collect();
        assert_eq!(labels, want);
        let titles: Vec<String> = elements(&doc, "title")
            .into_iter()
            .filter(|t| {
                t.parent()
                    .is_some_and(|p| p.attribute("class") == Some("marker"))
            })
            .map(text_of)
            .collect();
        assert_eq!(titles.len(), r.timeline.len());
        for e in &r.timeline {
            let Some(seq) = e.seq else { continue };
            let title = titles.iter().find(|t| t.contains(&format!("seq {seq} ")));
            let title = title.unwrap_or_else(|| panic!("no title for seq {seq}"));
            assert!(title.contains(&report::human(e.at_s)));
            assert!(title.contains(e.leaf_hash.as_deref().unwrap_or("?")));
            assert!(title.contains(&e.summary));
        }
    }

    #[test]
    fn html_loads_nothing_from_outside() {
        let page = html(&sample());
        for banned in [
            "src=", "<link", "url(", "<script", "@import", "<img", "<iframe", "<object",
        ] {
            assert!(!page.to_lowercase().contains(banned), "page has {banned}");
        }
        let rest = page
            .replace("xmlns=\"http://www.w3.org/1999/xhtml\"", "")
            .replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
        assert!(
            !rest.to_lowercase().contains("http"),
            "page has an http reference"
        );
        assert_eq!(page.matches("http://www.w3.org/2000/svg").count(), 1);
    }

    #[test]
    fn html_uses_only_the_five_xml_entities() {
        let page = html(&sample());
        let mut rest = page.as_str();
        while let Some(i) = rest.find('&') {
            rest = &rest[i + 1..];
            let end = rest.find(';').expect("an entity ends with ;");
            let name = &rest[..end];
            let numeric = name
                .strip_prefix('#')
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            assert!(
                numeric || ["amp", "lt", "gt", "quot"].contains(&name),
                "entity &{name};"
            );
        }
    }

    #[test]
    fn html_escapes_untrusted_text() {
        let r = sample();
        let page = html(&r);
        let doc = parse(&page);
        assert!(elements(&doc, "script").is_empty());
        assert!(page.contains(
            "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;quoted&quot; &#39;single&#39;"
        ));
        let body = text_of(doc.root_element());
        // The summary, the participant's name, the team and the objective read as written.
        assert!(body.contains(&format!("pipe | in summary {EVIL}")));
        assert!(body.contains(&format!("Warn partners {EVIL}")));
        assert!(body.contains(&format!("{EVIL} → cert-ee")));
        let names: Vec<String> = elements(&doc, "td").into_iter().map(text_of).collect();
        assert!(names.contains(&EVIL.to_string()));
        // Text that looks like a reference still reads the same.
        assert!(body.contains("IoCs: http://evil.example/x url(a) src=1.2.3.4"));
        assert!(body.contains("https://localhost:7443"));
    }

    #[test]
    fn html_shows_statuses_in_colour_and_the_exercise_banner() {
        let page = html(&sample());
        assert!(page.contains("<span class=\"st good\">SUCCESS</span>"));
        assert!(page.contains("<span class=\"st warn\">PARTIAL</span>"));
        assert!(page.contains("<span class=\"st bad\">FAILED</span>"));
        assert!(page.contains("<span class=\"st muted\">PENDING</span>"));
        assert!(page.contains("EXERCISE — not real-world traffic."));
        assert!(
            page.contains("<div class=\"banner good\"><strong>Isolation check passed.</strong>")
        );
        let mut failed = sample();
        failed.isolation.passed = false;
        assert!(
            html(&failed)
                .contains("<div class=\"banner bad\"><strong>Isolation check FAILED.</strong>")
        );
    }

    #[test]
    fn markdown_has_every_section_and_escapes_pipes() {
        let r = sample();
        let md = markdown(&r);
        for heading in [
            "Overview",
            "Results at a glance",
            "Master events list",
            "Communication checks",
            "Expectations",
            "Per-team metrics",
            "Communication matrix",
            "Strengths",
            "Areas for improvement",
            "Capability ratings",
            "Improvement plan",
            "Exercise isolation",
            "Evidence",
            "Timeline",
        ] {
            assert!(
                md.contains(&format!("\n## {heading}\n")),
                "no section {heading}"
            );
        }
        for word in [
            "SUCCESS",
            "PARTIAL",
            "FAILED",
            "PENDING",
            "not-played",
            "replied after 4m 00s",
            "missed",
        ] {
            assert!(md.contains(word), "no {word}");
        }
        assert!(md.contains("**EXERCISE — not real-world traffic.**"));
        assert!(md.contains("pipe \\| in summary"));
        assert!(md.contains("\\<script\\>alert(1)\\</script\\>"));
        assert!(
            md.match_indices("<script")
                .all(|(i, _)| md[..i].ends_with('\\'))
        );
        assert!(md.contains("| **excon** |  | 2 request | 2 request |"));
        assert!(md.contains("| **cert-lv** |  | 2 request, 1 warning |  |"));
        assert!(md.contains("P = performed without challenges"));
        // Every table row has as many cells as its header.
        for table in md.split("\n\n").filter(|b| b.starts_with('|')) {
            let widths: Vec<usize> = table
                .lines()
                .map(|l| l.replace("\\|", "").matches('|').count())
                .collect();
            assert!(
                widths.windows(2).all(|w| w[0] == w[1]),
                "ragged table:\n{table}"
            );
        }
        // The fence around the verification commands outlasts the backticks in them.
        assert!(md.contains("````text\ncertex verify"));
    }

    #[test]
    fn timeline_rows_shorten_leaf_hashes_and_mark_proofs() {
        let md = markdown(&sample());
        let row = md
            .lines()
            .find(|l| l.contains("Acknowledged the hospital request"))
            .expect("row");
        assert!(row.contains(&format!("`0e{}…`", "ab".repeat(7))), "{row}");
        assert!(row.contains("| ✓ |"));
        let unproved = md
            .lines()
            .find(|l| l.contains("pipe \\| in summary"))
            .expect("row");
        assert!(unproved.contains("| ✗ |"));
        let deadline = md.lines().find(|l| l.contains("E2 missed")).expect("row");
        assert!(deadline.ends_with("| - |"));
    }

    #[test]
    fn svg_of_an_empty_report_has_no_nan() {
        let r = empty();
        let svg = svg_timeline(&r);
        for bad in ["NaN", "inf"] {
            assert!(!svg.contains(bad), "{bad} in {svg}");
        }
        let doc = roxmltree::Document::parse(&svg).expect("well-formed SVG");
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        assert!(svg.contains("No events were recorded."));
        parse(&html(&r));
        let md = markdown(&r);
        assert!(md.contains("The scenario has no injects."));
    }

    #[test]
    fn odd_numbers_stay_out_of_the_svg() {
        let mut r = sample();
        r.exercise.duration_s = f64::INFINITY;
        r.exercise.played_s = f64::NAN;
        r.timeline[0].at_s = f64::NAN;
        r.timeline[1].at_s = -50.0;
        r.timeline[2].at_s = 1.0e300;
        r.timeline[3].team = String::new();
        let svg = svg_timeline(&r);
        for bad in ["NaN", "inf"] {
            assert!(!svg.contains(bad), "{bad} in svg");
        }
        roxmltree::Document::parse(&svg).expect("well-formed SVG");
        parse(&html(&r));
    }

    #[test]
    fn characters_xml_forbids_are_replaced() {
        let mut r = sample();
        r.timeline[0].summary = "bell \u{7} and nul \u{0} and form feed \u{c}".into();
        let page = html(&r);
        parse(&page);
        assert!(page.contains("bell \u{FFFD} and nul \u{FFFD}"));
    }

    #[test]
    fn axis_steps_are_round_and_never_zero() {
        assert_eq!(tick_step(60.0), 10.0);
        assert_eq!(tick_step(3744.0), 600.0);
        assert!(tick_step(1.0e9) >= 86400.0);
        let chart = Chart::new(&empty(), 0);
        assert!(chart.span > 0.0 && chart.step > 0.0);
        assert_eq!(num(chart.x(f64::NAN)), num(SVG_LEFT));
    }

    /// Writes the sample report to /work/render-sample.{html,md} when
    /// `CERTEX_WRITE_SAMPLE=1`, for a person to look at.
    #[test]
    fn write_sample_when_asked() {
        if std::env::var("CERTEX_WRITE_SAMPLE").as_deref() != Ok("1") {
            return;
        }
        let r = sample();
        std::fs::write("/work/render-sample.html", html(&r)).expect("write html");
        std::fs::write("/work/render-sample.md", markdown(&r)).expect("write md");
    }
}
