//! Field validation of a message body (SPEC §3–§5 rules checkable from the body
//! and the directory alone): required fields, enums, limits, observables by
//! type, known teams and groups, and the TLP/audience rules.
//!
//! Rules that need the log (duplicates, retraction targets, case state) are
//! checked by the writer, atomically with the append (see `log::writer`).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::error::Error;
use crate::proto::audience::Kind as AudienceKind;
use crate::proto::body::Content;
use crate::proto::{
    Action, Audience, Body, CaseState, Category, Observable, ObservableType, Severity, Tlp,
};
use crate::rules::directory::Directory;
use crate::rules::vocab::known;

/// Field limits (characters of UTF-8 text unless stated).
pub mod limits {
    pub const TITLE: usize = 200;
    pub const LONG_TEXT: usize = 64 * 1024;
    pub const SUMMARY: usize = 8 * 1024;
    pub const SHORT_TEXT: usize = 2000;
    pub const NOTE: usize = 16 * 1024;
    pub const LIST: usize = 1000;
    pub const SECTORS: usize = 32;
    pub const SECTOR: usize = 64;
    pub const AUDIENCE_TEAMS: usize = 256;
    pub const REFERENCES: usize = 64;
    pub const ID: usize = 64;
    pub const OBSERVABLE_VALUE: usize = 2048;
    pub const EXERCISE: usize = 64;
}

/// The kind of content a body carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Incident,
    Warning,
    Request,
    CaseUpdate,
    Retraction,
}

impl Kind {
    pub fn of(body: &Body) -> Option<Kind> {
        Some(match body.content.as_ref()? {
            Content::Incident(_) => Kind::Incident,
            Content::Warning(_) => Kind::Warning,
            Content::Request(_) => Kind::Request,
            Content::CaseUpdate(_) => Kind::CaseUpdate,
            Content::Retraction(_) => Kind::Retraction,
        })
    }

    /// The draft/record key of this kind (`incident`, `warning`, `request`, `case_update`, `retraction`).
    pub fn word(self) -> &'static str {
        match self {
            Kind::Incident => "incident",
            Kind::Warning => "warning",
            Kind::Request => "request",
            Kind::CaseUpdate => "case_update",
            Kind::Retraction => "retraction",
        }
    }

    /// The wire enum value of this kind.
    pub fn proto(self) -> crate::proto::Kind {
        use crate::proto::Kind as P;
        match self {
            Kind::Incident => P::Incident,
            Kind::Warning => P::Warning,
            Kind::Request => P::Request,
            Kind::CaseUpdate => P::CaseUpdate,
            Kind::Retraction => P::Retraction,
        }
    }

    pub fn from_word(w: &str) -> Option<Kind> {
        [
            Kind::Incident,
            Kind::Warning,
            Kind::Request,
            Kind::CaseUpdate,
            Kind::Retraction,
        ]
        .into_iter()
        .find(|k| k.word() == w)
    }
}

fn text(field: &str, value: &str, max: usize, required: bool) -> Result<(), Error> {
    if required && value.trim().is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    let n = value.chars().count();
    if n > max {
        return Err(Error::invalid(
            field,
            format!("is {n} characters long, over the limit of {max}"),
        ));
    }
    Ok(())
}

fn list_len<T>(field: &str, items: &[T], max: usize) -> Result<(), Error> {
    if items.len() > max {
        return Err(Error::invalid(
            field,
            format!("has {} entries, over the limit of {max}", items.len()),
        ));
    }
    Ok(())
}

fn enum_field<T>(field: &str, raw: i32) -> Result<T, Error>
where
    T: crate::rules::vocab::Word + TryFrom<i32> + Into<i32>,
{
    known::<T>(raw).map_err(|p| Error::invalid(field, p))
}

/// Checks a message id: a UUID in its hyphenated form.
pub fn check_id(field: &str, id: &str) -> Result<(), Error> {
    if id.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    match uuid::Uuid::try_parse(id) {
        Ok(u) if u.hyphenated().to_string() == id.to_ascii_lowercase() && id.len() == 36 => Ok(()),
        _ => Err(Error::invalid(
            field,
            format!(
                "{:?} is not a UUID (e.g. 0b6c1d5e-8f1a-4c1e-9a57-3f0f3e2b7c11)",
                truncate(id)
            ),
        )),
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Checks one observable value against its type.
pub fn check_observable(kind: ObservableType, value: &str) -> Result<(), String> {
    let bad = |what: &str| Err(format!("{:?} is not {what}", truncate(value)));
    if value.is_empty() {
        return Err("value is required".into());
    }
    if value.len() > limits::OBSERVABLE_VALUE {
        return Err(format!(
            "value is {} bytes long, over the limit of {}",
            value.len(),
            limits::OBSERVABLE_VALUE
        ));
    }
    let hex_of = |n: usize| value.len() == n && value.bytes().all(|b| b.is_ascii_hexdigit());
    match kind {
        ObservableType::Ipv4 => value
            .parse::<Ipv4Addr>()
            .map(|_| ())
            .or_else(|_| bad("an IPv4 address")),
        ObservableType::Ipv6 => value
            .parse::<Ipv6Addr>()
            .map(|_| ())
            .or_else(|_| bad("an IPv6 address")),
        ObservableType::Cidr => {
            let ok = value.split_once('/').is_some_and(|(addr, len)| {
                let max = match addr.parse::<IpAddr>() {
                    Ok(IpAddr::V4(_)) => 32,
                    Ok(IpAddr::V6(_)) => 128,
                    Err(_) => return false,
                };
                !len.starts_with('+') && len.parse::<u8>().is_ok_and(|l| l <= max)
            });
            if ok {
                Ok(())
            } else {
                bad("a CIDR block (address/prefix)")
            }
        }
        ObservableType::Domain => {
            if is_domain(value) {
                Ok(())
            } else if let Some(ascii) = idna_form(value) {
                Err(format!(
                    "{:?} is an internationalised domain name: send its IDNA form {ascii:?} (certex submit converts it)",
                    truncate(value)
                ))
            } else {
                bad("a domain name")
            }
        }
        ObservableType::Url => match url::Url::parse(value) {
            Ok(u) if u.has_host() && !u.cannot_be_a_base() => Ok(()),
            _ => bad("an absolute URL with a host"),
        },
        ObservableType::Email => {
            let ok = value.rsplit_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && local.len() <= 64
                    && !local.chars().any(|c| c.is_whitespace() || c.is_control())
                    && is_domain(domain)
            });
            match normalise_observable(kind, value) {
                _ if ok => Ok(()),
                n if n != value && check_observable(kind, &n).is_ok() => Err(format!(
                    "{:?} has an internationalised domain: send its IDNA form {n:?} (certex submit converts it)",
                    truncate(value)
                )),
                _ => bad("an e-mail address"),
            }
        }
        ObservableType::Sha256 => {
            if hex_of(64) {
                Ok(())
            } else {
                bad("a SHA-256 digest (64 hex characters)")
            }
        }
        ObservableType::Sha1 => {
            if hex_of(40) {
                Ok(())
            } else {
                bad("a SHA-1 digest (40 hex characters)")
            }
        }
        ObservableType::Md5 => {
            if hex_of(32) {
                Ok(())
            } else {
                bad("an MD5 digest (32 hex characters)")
            }
        }
        ObservableType::Asn => {
            let digits = value.strip_prefix("AS").unwrap_or(value);
            if !digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit())
                && digits.parse::<u32>().is_ok()
            {
                Ok(())
            } else {
                bad("an AS number (e.g. AS64500)")
            }
        }
        ObservableType::Unspecified => Err("observable type is missing".into()),
    }
}

/// The IDNA (A-label, lowercase) form of a domain name that is not
/// already ASCII, if it has one that is a valid domain name.
fn idna_form(s: &str) -> Option<String> {
    if s.is_ascii() {
        return None;
    }
    idna::domain_to_ascii(s).ok().filter(|a| is_domain(a))
}

/// An observable value as a sender should sign it: domain names (alone or
/// after an e-mail address's `@`) in their IDNA form (UTS #46: `bücher.example`
/// becomes `xn--bcher-kva.example`) and in lowercase. Anything else, and a
/// value with no such form, comes back unchanged (validation then says what
/// is wrong with it).
pub fn normalise_observable(kind: ObservableType, value: &str) -> String {
    let domain = |d: &str| {
        idna::domain_to_ascii(d)
            .ok()
            .filter(|a| is_domain(a))
            .unwrap_or_else(|| d.to_owned())
    };
    match kind {
        ObservableType::Domain => domain(value),
        ObservableType::Email => match value.rsplit_once('@') {
            Some((local, d)) => format!("{local}@{}", domain(d)),
            None => value.to_owned(),
        },
        _ => value.to_owned(),
    }
}

fn is_domain(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    s.len() <= 253
        && s.contains('.')
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn observables(field: &str, list: &[Observable]) -> Result<(), Error> {
    list_len(field, list, limits::LIST)?;
    for (i, o) in list.iter().enumerate() {
        let kind: ObservableType = enum_field(&format!("{field}[{i}].type"), o.r#type)?;
        check_observable(kind, &o.value)
            .map_err(|p| Error::invalid(format!("{field}[{i}].value"), p))?;
    }
    Ok(())
}

fn strings(field: &str, list: &[String], max_len: usize, max_items: usize) -> Result<(), Error> {
    list_len(field, list, max_items)?;
    for (i, s) in list.iter().enumerate() {
        text(&format!("{field}[{i}]"), s, max_len, true)?;
    }
    Ok(())
}

/// Checks a timestamp: present if `required`, between 1970 and 9999, nanos
/// in range.
fn time(field: &str, ts: &Option<prost_types::Timestamp>, required: bool) -> Result<(), Error> {
    match ts {
        None if required => Err(Error::invalid(field, "is required")),
        None => Ok(()),
        Some(t)
            if (0..=253_402_300_799).contains(&t.seconds)
                && (0..1_000_000_000).contains(&t.nanos) =>
        {
            Ok(())
        }
        Some(_) => Err(Error::invalid(field, "is not a time between 1970 and 9999")),
    }
}

/// A team of the directory, retired or not: past messages of a retired team
/// can still be referred to, and its open cases still moved by the other side.
fn listed_team(field: &str, team: &str, dir: &Directory) -> Result<(), Error> {
    if dir.team(team).is_none() {
        return Err(Error::invalid(
            field,
            format!("team {team:?} is not in the directory"),
        ));
    }
    Ok(())
}

fn known_team(field: &str, team: &str, dir: &Directory) -> Result<(), Error> {
    if dir.team(team).is_none_or(|t| {
        t.retired_at
            .is_some_and(|r| time::OffsetDateTime::now_utc() >= r)
    }) {
        return Err(Error::invalid(
            field,
            format!("team {team:?} is not a member of the directory (absent or retired)"),
        ));
    }
    Ok(())
}

fn is_cve(s: &str) -> bool {
    let mut parts = s.splitn(3, '-');
    parts.next() == Some("CVE")
        && parts
            .next()
            .is_some_and(|y| y.len() == 4 && y.bytes().all(|b| b.is_ascii_digit()))
        && parts
            .next()
            .is_some_and(|n| n.len() >= 4 && n.len() <= 19 && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Checks the audience against the directory and the TLP 2.0 rules.
fn audience(tlp: Tlp, aud: Option<&Audience>, dir: &Directory) -> Result<(), Error> {
    let kind = aud
        .and_then(|a| a.kind.as_ref())
        .ok_or_else(|| Error::invalid("audience", "is required (community, teams or group)"))?;
    match kind {
        AudienceKind::Community(true) => {}
        AudienceKind::Community(false) => {
            return Err(Error::invalid(
                "audience.community",
                "must be true when set",
            ));
        }
        AudienceKind::Teams(list) => {
            if list.teams.is_empty() {
                return Err(Error::invalid("audience.teams", "lists no team"));
            }
            list_len("audience.teams", &list.teams, limits::AUDIENCE_TEAMS)?;
            let mut seen = BTreeSet::new();
            for (i, t) in list.teams.iter().enumerate() {
                known_team(&format!("audience.teams[{i}]"), t, dir)?;
                if !seen.insert(t) {
                    return Err(Error::invalid("audience.teams", format!("lists {t} twice")));
                }
            }
        }
        AudienceKind::Group(name) => {
            if dir.group(name).is_none() {
                return Err(Error::invalid(
                    "audience.group",
                    format!("sharing group {name:?} is not in the directory"),
                ));
            }
        }
    }
    if matches!(tlp, Tlp::Red | Tlp::AmberStrict) && !matches!(kind, AudienceKind::Teams(_)) {
        return Err(Error::invalid(
            "audience",
            format!(
                "TLP:{} may only be sent to an explicit list of teams, not to the community or a group",
                crate::rules::vocab::Word::word(tlp).to_uppercase()
            ),
        ));
    }
    Ok(())
}

/// Checks every field of a decoded body whose sender has already been
/// authenticated. Returns the content kind.
pub fn check_body(body: &Body, dir: &Directory) -> Result<Kind, Error> {
    check_id("id", &body.id)?;
    time("created_at", &body.created_at, true)?;
    let tlp: Tlp = enum_field("tlp", body.tlp)?;
    audience(tlp, body.audience.as_ref(), dir)?;
    if !body.exercise.is_empty() {
        text("exercise", &body.exercise, limits::EXERCISE, false)?;
        if !body
            .exercise
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
        {
            return Err(Error::invalid(
                "exercise",
                "may only hold letters, digits and . _ : -",
            ));
        }
    }
    list_len("references", &body.references, limits::REFERENCES)?;
    for (i, r) in body.references.iter().enumerate() {
        check_id(&format!("references[{i}].id"), &r.id)?;
        listed_team(&format!("references[{i}].sender"), &r.sender, dir)?;
    }
    let content = body.content.as_ref().ok_or_else(|| {
        Error::invalid(
            "content",
            "is required: one of incident, warning, request, case_update, retraction",
        )
    })?;
    match content {
        Content::Incident(r) => {
            text("incident.title", &r.title, limits::TITLE, true)?;
            text(
                "incident.description",
                &r.description,
                limits::LONG_TEXT,
                false,
            )?;
            enum_field::<Category>("incident.category", r.category)?;
            enum_field::<Severity>("incident.severity", r.severity)?;
            time("incident.detected_at", &r.detected_at, false)?;
            strings(
                "incident.sectors",
                &r.sectors,
                limits::SECTOR,
                limits::SECTORS,
            )?;
            observables("incident.observables", &r.observables)?;
        }
        Content::Warning(w) => {
            text("warning.title", &w.title, limits::TITLE, true)?;
            text("warning.summary", &w.summary, limits::SUMMARY, false)?;
            enum_field::<Severity>("warning.severity", w.severity)?;
            time("warning.expires_at", &w.expires_at, false)?;
            list_len("warning.cves", &w.cves, limits::LIST)?;
            for (i, c) in w.cves.iter().enumerate() {
                if !is_cve(c) {
                    return Err(Error::invalid(
                        format!("warning.cves[{i}]"),
                        format!("{:?} is not a CVE id (CVE-YYYY-NNNN)", truncate(c)),
                    ));
                }
            }
            observables("warning.observables", &w.observables)?;
            strings(
                "warning.recommended_actions",
                &w.recommended_actions,
                limits::SHORT_TEXT,
                limits::REFERENCES,
            )?;
        }
        Content::Request(r) => {
            if r.to.is_empty() {
                return Err(Error::invalid("request.to", "is required"));
            }
            known_team("request.to", &r.to, dir)?;
            if r.to == body.sender {
                return Err(Error::invalid(
                    "request.to",
                    "a team cannot ask itself for assistance",
                ));
            }
            enum_field::<Action>("request.action", r.action)?;
            text(
                "request.legal_basis",
                &r.legal_basis,
                limits::SHORT_TEXT,
                true,
            )?;
            text(
                "request.description",
                &r.description,
                limits::LONG_TEXT,
                true,
            )?;
            time("request.respond_by", &r.respond_by, true)?;
            let (by, at) = (
                r.respond_by.as_ref().map(|t| (t.seconds, t.nanos)),
                body.created_at.as_ref().map(|t| (t.seconds, t.nanos)),
            );
            if by <= at {
                return Err(Error::invalid(
                    "request.respond_by",
                    "is not after the request's created_at: a deadline must lie in the future",
                ));
            }
            enum_field::<Severity>("request.priority", r.priority)?;
            let addressed = matches!(
                body.audience.as_ref().and_then(|a| a.kind.as_ref()),
                Some(AudienceKind::Teams(l)) if l.teams.contains(&r.to)
            );
            if !addressed {
                return Err(Error::invalid(
                    "audience",
                    format!(
                        "an assistance request's audience must be a team list holding its addressee {} (plus any cc teams)",
                        r.to
                    ),
                ));
            }
        }
        Content::CaseUpdate(u) => {
            check_id("case_update.case_id", &u.case_id)?;
            if u.requester.is_empty() {
                return Err(Error::invalid(
                    "case_update.requester",
                    "is required: a case is named by its requester and request id",
                ));
            }
            listed_team("case_update.requester", &u.requester, dir)?;
            let t: CaseState = enum_field("case_update.transition", u.transition)?;
            if t == CaseState::Open {
                return Err(Error::invalid(
                    "case_update.transition",
                    "a case is opened by publishing the request, not by an update",
                ));
            }
            text(
                "case_update.note",
                &u.note,
                limits::NOTE,
                matches!(t, CaseState::InProgress | CaseState::Resolved),
            )?;
            text(
                "case_update.reason",
                &u.reason,
                limits::SHORT_TEXT,
                matches!(t, CaseState::Declined | CaseState::Withdrawn),
            )?;
        }
        Content::Retraction(r) => {
            check_id("retraction.target", &r.target)?;
            text("retraction.reason", &r.reason, limits::SHORT_TEXT, true)?;
        }
    }
    Ok(Kind::of(body).expect("content checked above"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internationalised_domains_are_normalised_to_idna() {
        use ObservableType::{Domain, Email, Ipv4};
        assert_eq!(
            normalise_observable(Domain, "bücher.example"),
            "xn--bcher-kva.example"
        );
        assert_eq!(
            normalise_observable(Domain, "Evil.Example.COM"),
            "evil.example.com"
        );
        assert_eq!(
            normalise_observable(Email, "Info@Bücher.example"),
            "Info@xn--bcher-kva.example"
        );
        assert_eq!(
            normalise_observable(Domain, "例え.テスト"),
            "xn--r8jz45g.xn--zckzah"
        );
        assert_eq!(normalise_observable(Ipv4, "203.0.113.7"), "203.0.113.7");
        // No IDNA form: unchanged, and validation names the problem.
        assert_eq!(normalise_observable(Domain, "localhost"), "localhost");
        for (kind, v) in [
            (Domain, "xn--bcher-kva.example"),
            (Email, "a@xn--bcher-kva.example"),
        ] {
            assert!(check_observable(kind, v).is_ok(), "{v}");
        }
        let e = check_observable(Domain, "bücher.example").unwrap_err();
        assert!(
            e.contains("send its IDNA form \"xn--bcher-kva.example\""),
            "{e}"
        );
        let e = check_observable(Email, "a@bücher.example").unwrap_err();
        assert!(e.contains("\"a@xn--bcher-kva.example\""), "{e}");
        assert!(check_observable(Domain, "bü cher.example").is_err());
    }

    #[test]
    fn observables_by_type() {
        use ObservableType::*;
        let ok = [
            (Ipv4, "203.0.113.7"),
            (Ipv6, "2001:db8::1"),
            (Cidr, "198.51.100.0/24"),
            (Cidr, "2001:db8::/32"),
            (Domain, "evil.example.com"),
            (Url, "https://evil.example.com/a?b=c"),
            (Email, "phish@evil.example"),
            (
                Sha256,
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            ),
            (Sha1, "da39a3ee5e6b4b0d3255bfef95601890afd80709"),
            (Md5, "d41d8cd98f00b204e9800998ecf8427e"),
            (Asn, "AS64500"),
            (Asn, "64500"),
        ];
        for (k, v) in ok {
            assert!(check_observable(k, v).is_ok(), "{k:?} {v}");
        }
        let bad = [
            (Ipv4, "203.0.113.300"),
            (Ipv4, "2001:db8::1"),
            (Ipv6, "203.0.113.7"),
            (Cidr, "198.51.100.0/33"),
            (Cidr, "198.51.100.0"),
            (Domain, "-bad.example"),
            (Domain, "localhost"),
            (Url, "not a url"),
            (Email, "no-at-sign"),
            (Sha256, "abc"),
            (Sha1, "zz39a3ee5e6b4b0d3255bfef95601890afd80709"),
            (Md5, ""),
            (Asn, "AS"),
            (Asn, "AS99999999999"),
        ];
        for (k, v) in bad {
            assert!(check_observable(k, v).is_err(), "{k:?} {v}");
        }
    }

    #[test]
    fn ids_and_cves() {
        assert!(check_id("id", "0b6c1d5e-8f1a-4c1e-9a57-3f0f3e2b7c11").is_ok());
        assert!(check_id("id", "0b6c1d5e8f1a4c1e9a573f0f3e2b7c11").is_err());
        assert!(check_id("id", "").is_err());
        assert!(is_cve("CVE-2024-3094"));
        assert!(!is_cve("CVE-24-3094"));
        assert!(!is_cve("cve-2024-3094"));
    }
}
