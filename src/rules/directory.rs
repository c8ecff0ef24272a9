//! The directory the broker enforces: teams, country anchors, signing keys and
//! sharing groups, loaded from `directory.toml` and validated as a whole.
//!
//! A directory that fails validation is refused with an error naming the entry
//! to fix; the caller keeps the directory it had (SIGHUP reload).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::rules::envelope::key_id;

/// Why a directory file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirectoryError {
    /// The file could not be read.
    #[error("cannot read directory {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("directory {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    /// The file parses but an entry breaks a rule.
    #[error("directory {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

pub mod changes;

/// `directory.toml` as written on disk.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryFile {
    /// How many intermediate CAs may stand between a country anchor and a
    /// team certificate (default 1). An anchor's own basicConstraints path
    /// length, when smaller, wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_chain_depth: Option<u32>,
    /// The verifier key of the broker's checkpoints (C2SP vkey
    /// `origin+hexid+base64(0x01‖key)`; SPEC §8); its name is the log's
    /// origin line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_vkey: Option<String>,
    /// Which member witnesses must cosign a checkpoint for members to rely
    /// on it, in C2SP `tlog-policy` syntax (`witness NAME VKEY [URL]`,
    /// `group NAME K MEMBER…`, `quorum NAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness_policy: Option<String>,
    /// The brokers of a federation (SPEC §12); none for a single broker.
    #[serde(default, rename = "broker", skip_serializing_if = "Vec::is_empty")]
    pub brokers: Vec<BrokerEntry>,
    /// One or more CA certificates per country.
    #[serde(default, rename = "anchor")]
    pub anchors: Vec<AnchorEntry>,
    #[serde(default, rename = "team")]
    pub teams: Vec<TeamEntry>,
    /// Sharing group name → member team ids.
    #[serde(default, rename = "groups")]
    pub groups: BTreeMap<String, Vec<String>>,
}

/// A broker of the federation: its id (named in its certificate as
/// `urn:certex:broker:<ID>`), the country whose anchor issues its
/// certificate, and where its peers reach it; optionally the keys anyone
/// verifies its logs with.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerEntry {
    pub id: String,
    pub country: String,
    pub url: String,
    /// The verifier key of this broker's checkpoints (C2SP vkey of type
    /// 0x01, `origin+hexid+base64(0x01‖key)`); its name is the origin line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_vkey: Option<String>,
    /// This broker's Ed25519 tree-head public key, 64 hex characters (the
    /// form of `signing.pub`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree_head_key: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnchorEntry {
    /// ISO 3166-1 alpha-2 code, e.g. "CN".
    pub country: String,
    /// PEM file, relative to the directory file.
    pub certificate: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamEntry {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub contact: String,
    #[serde(default, rename = "key")]
    pub keys: Vec<KeyEntry>,
    /// RFC 3339; from then on the team can neither connect nor publish. Its
    /// keys stay so its past records still verify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<String>,
    /// Withdrawn TLS certificates of the team: each the certificate's serial
    /// number or its SHA-256 fingerprint, in hex (colons allowed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revoked_certificates: Vec<String>,
    /// Optional pin: the SHA-256 fingerprint (hex) of the one certificate the
    /// team may connect with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_sha256: Option<String>,
    /// The team's witness key, a C2SP vkey of type 0x04 (tlog-cosignature):
    /// with it the team cosigns the broker's checkpoints (SPEC §8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness_key: Option<String>,
    /// In a federation, the id of the broker the team connects to and
    /// reads through (SPEC §12).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// Lowercase hex of the 32-byte Ed25519 public key.
    pub public_key: String,
    /// Optional; checked against the public key when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// RFC 3339; the key is not valid before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    /// RFC 3339; the key is not valid after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    /// RFC 3339; the key is no longer trusted from this instant. Records
    /// the broker logged before it stay valid evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    /// Kept so an old file gets a clear message: revocation needs a time.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revoked: bool,
}

/// A validated directory.
#[derive(Debug, Clone)]
pub struct Directory {
    max_chain_depth: u32,
    teams: BTreeMap<String, Team>,
    anchors: BTreeMap<String, Vec<CertificateDer<'static>>>,
    groups: BTreeMap<String, BTreeSet<String>>,
    keys: HashMap<String, (String, usize)>,
    checkpoint_vkey: Option<crate::rules::note::Vkey>,
    witness_policy: Option<crate::rules::policy::Policy>,
    brokers: BTreeMap<String, Broker>,
}

/// A member team.
#[derive(Debug, Clone)]
pub struct Team {
    pub id: String,
    pub country: String,
    pub name: String,
    pub contact: String,
    pub keys: Vec<SigningKey>,
    /// The team has left the federation from this instant.
    pub retired_at: Option<OffsetDateTime>,
    /// Withdrawn TLS certificates: serial numbers or SHA-256 fingerprints,
    /// lowercase hex without separators.
    pub revoked_certificates: BTreeSet<String>,
    /// The only certificate fingerprint accepted, if pinned.
    pub certificate_sha256: Option<String>,
    /// The key the team cosigns checkpoints with, if it witnesses.
    pub witness: Option<crate::rules::note::Vkey>,
    /// In a federation, the broker the team is homed on.
    pub home: Option<String>,
}

/// A broker of a federation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    pub id: String,
    pub country: String,
    pub url: String,
    /// The verifier key of its checkpoints, when listed.
    pub checkpoint_vkey: Option<crate::rules::note::Vkey>,
    /// Its tree-head public key, when listed.
    pub tree_head_key: Option<VerifyingKey>,
}

/// One of a team's Ed25519 signing keys.
#[derive(Debug, Clone)]
pub struct SigningKey {
    pub key_id: String,
    pub public: VerifyingKey,
    pub not_before: Option<OffsetDateTime>,
    pub not_after: Option<OffsetDateTime>,
    /// The key is no longer trusted from this instant.
    pub revoked_at: Option<OffsetDateTime>,
}

/// A verified record's key, as of now (SPEC §2): the record was logged while
/// the key was valid; this says what has happened to the key since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    /// Still valid.
    Active,
    /// Its validity window ended, or its team retired, after the record was logged.
    Expired,
    /// Revoked after the record was logged.
    RevokedAfterSigning,
}

impl KeyStatus {
    /// The word `get` and `subscribe` print.
    pub fn word(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Expired => "expired",
            KeyStatus::RevokedAfterSigning => "revoked-after-signing",
        }
    }
}

/// Why a key cannot be used to sign at a given time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyProblem {
    #[error("key {key_id} is not a signing key of {team}")]
    Unknown { team: String, key_id: String },
    #[error("key {key_id} of {team} is revoked")]
    Revoked { team: String, key_id: String },
    #[error("team {team} has retired: it can no longer sign")]
    Retired { team: String, key_id: String },
    #[error("key {key_id} of {team} is not valid yet")]
    NotYetValid { team: String, key_id: String },
    #[error("key {key_id} of {team} has expired")]
    Expired { team: String, key_id: String },
}

/// Checks the form of a team id: country code, `-`, short name;
/// `[A-Z0-9-]`, 4–32 characters.
pub fn check_team_id(id: &str) -> Result<(), String> {
    let ok_chars = id
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-');
    let b = id.as_bytes();
    if !(4..=32).contains(&id.len())
        || !ok_chars
        || !b[0].is_ascii_uppercase()
        || !b[1].is_ascii_uppercase()
        || b[2] != b'-'
    {
        return Err(format!(
            "team id {id:?} is not of the form CC-NAME (country code, '-', name; A-Z, 0-9 and '-'; 4 to 32 characters)"
        ));
    }
    Ok(())
}

/// The country code of a (well-formed) team id.
pub fn country_of(team_id: &str) -> &str {
    team_id.get(..2).unwrap_or("")
}

/// An Ed25519 public key as `signing.pub` holds it: 64 hex characters.
pub fn parse_public_key(s: &str) -> Result<VerifyingKey, String> {
    let raw = hex::decode(s.trim())
        .ok()
        .and_then(|v| <[u8; 32]>::try_from(v).ok())
        .ok_or("not 64 hex characters")?;
    VerifyingKey::from_bytes(&raw).map_err(|_| "not a valid Ed25519 public key".to_owned())
}

fn parse_time(s: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(s, &Rfc3339).map_err(|e| format!("{s:?} is not an RFC 3339 time: {e}"))
}

impl Directory {
    /// Reads and validates a directory file; certificate paths are relative to it.
    pub fn load(path: &Path) -> Result<Self, DirectoryError> {
        let text = std::fs::read_to_string(path).map_err(|source| DirectoryError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_text(&text, path)
    }

    /// Validates the text of a directory file as [`Directory::load`] does;
    /// `path` names it in errors and its folder resolves certificate paths.
    /// `certex directory …` checks an edit with it before writing.
    pub fn from_text(text: &str, path: &Path) -> Result<Self, DirectoryError> {
        let file: DirectoryFile = toml::from_str(text).map_err(|e| DirectoryError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_file(file, base).map_err(|message| DirectoryError::Invalid {
            path: path.to_owned(),
            message,
        })
    }

    /// Validates a parsed directory; `base` resolves certificate paths.
    pub fn from_file(file: DirectoryFile, base: &Path) -> Result<Self, String> {
        let mut anchors: BTreeMap<String, Vec<CertificateDer<'static>>> = BTreeMap::new();
        // A CA's public key → the country it anchors.
        let mut anchor_countries: BTreeMap<Vec<u8>, String> = BTreeMap::new();
        for a in &file.anchors {
            if a.country.len() != 2 || !a.country.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(format!(
                    "anchor country {:?} is not a two-letter upper-case country code",
                    a.country
                ));
            }
            let p = base.join(&a.certificate);
            let certs: Vec<_> = CertificateDer::pem_file_iter(&p)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    format!(
                        "anchor {}: cannot read certificate {}: {e}",
                        a.country,
                        p.display()
                    )
                })?;
            if certs.is_empty() {
                return Err(format!(
                    "anchor {}: {} holds no PEM certificate",
                    a.country,
                    p.display()
                ));
            }
            for c in &certs {
                let key = anchor_identity(c).map_err(|e| {
                    format!(
                        "anchor {}: {} is not a certificate: {e}",
                        a.country,
                        p.display()
                    )
                })?;
                match anchor_countries.get(&key) {
                    Some(other) if *other != a.country => {
                        return Err(format!(
                            "anchor {}: the CA in {} is already the anchor of {other}; \
                             a CA may be the anchor of one country only",
                            a.country,
                            p.display()
                        ));
                    }
                    _ => {
                        anchor_countries.insert(key, a.country.clone());
                    }
                }
            }
            anchors.entry(a.country.clone()).or_default().extend(certs);
        }
        check_anchor_nesting(&anchors)?;

        let mut teams = BTreeMap::new();
        let mut keys = HashMap::new();
        for t in &file.teams {
            check_team_id(&t.id)?;
            let country = country_of(&t.id).to_owned();
            if !anchors.contains_key(&country) {
                return Err(format!(
                    "team {}: no anchor for country {country} (add an [[anchor]] with country = \"{country}\")",
                    t.id
                ));
            }
            if t.name.trim().is_empty() {
                return Err(format!("team {}: name is empty", t.id));
            }
            let mut team_keys = Vec::new();
            for (n, k) in t.keys.iter().enumerate() {
                let at = |msg: String| format!("team {} key {}: {msg}", t.id, n + 1);
                let raw = hex::decode(&k.public_key)
                    .ok()
                    .and_then(|v| <[u8; 32]>::try_from(v).ok())
                    .ok_or_else(|| at("public_key is not 64 hex characters".into()))?;
                let public = VerifyingKey::from_bytes(&raw)
                    .map_err(|_| at("public_key is not a valid Ed25519 point".into()))?;
                let id = key_id(&public);
                if let Some(stated) = &k.key_id
                    && *stated != id
                {
                    return Err(at(format!(
                        "key_id {stated} does not match the public key (its id is {id})"
                    )));
                }
                let not_before = k
                    .not_before
                    .as_deref()
                    .map(parse_time)
                    .transpose()
                    .map_err(at)?;
                let not_after = k
                    .not_after
                    .as_deref()
                    .map(parse_time)
                    .transpose()
                    .map_err(at)?;
                let revoked_at = k
                    .revoked_at
                    .as_deref()
                    .map(parse_time)
                    .transpose()
                    .map_err(at)?;
                if k.revoked && revoked_at.is_none() {
                    return Err(at(
                        "revoked = true needs revoked_at = \"<RFC 3339 time>\": the instant from \
                         which the key is no longer trusted (records logged before it stay valid)"
                            .into(),
                    ));
                }
                if let Some((owner, _)) = keys.get(&id) {
                    return Err(at(format!("key {id} is already a key of {owner}")));
                }
                keys.insert(id.clone(), (t.id.clone(), team_keys.len()));
                team_keys.push(SigningKey {
                    key_id: id,
                    public,
                    not_before,
                    not_after,
                    revoked_at,
                });
            }
            let team = Team {
                id: t.id.clone(),
                country,
                name: t.name.clone(),
                contact: t.contact.clone(),
                keys: team_keys,
                retired_at: t
                    .retired_at
                    .as_deref()
                    .map(parse_time)
                    .transpose()
                    .map_err(|e| format!("team {}: retired_at: {e}", t.id))?,
                revoked_certificates: t
                    .revoked_certificates
                    .iter()
                    .map(|c| certificate_ref(c))
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("team {}: revoked_certificates: {e}", t.id))?,
                certificate_sha256: t
                    .certificate_sha256
                    .as_deref()
                    .map(certificate_ref)
                    .transpose()
                    .map_err(|e| format!("team {}: certificate_sha256: {e}", t.id))?,
                witness: t
                    .witness_key
                    .as_deref()
                    .map(|v| {
                        let k = crate::rules::note::Vkey::parse(v).map_err(|e| e.to_string())?;
                        if k.sig_type != crate::rules::note::TYPE_COSIGNATURE {
                            return Err(
                                "a witness key is of type 0x04 (tlog-cosignature)".to_owned()
                            );
                        }
                        Ok(k)
                    })
                    .transpose()
                    .map_err(|e| format!("team {}: witness_key: {e}", t.id))?,
                home: t.home.clone(),
            };
            if teams.insert(t.id.clone(), team).is_some() {
                return Err(format!("team {} is listed twice", t.id));
            }
        }

        let mut groups = BTreeMap::new();
        for (name, members) in &file.groups {
            check_group_name(name)?;
            let mut set = BTreeSet::new();
            for m in members {
                if !teams.contains_key(m) {
                    return Err(format!(
                        "group {name}: member {m} is not a team of the directory"
                    ));
                }
                set.insert(m.clone());
            }
            groups.insert(name.clone(), set);
        }
        if anchors.is_empty() {
            return Err(
                "the directory lists no [[anchor]]: no team could connect; refusing it".into(),
            );
        }
        if teams.is_empty() {
            return Err(
                "the directory lists no [[team]]: every team would be cut off; refusing it".into(),
            );
        }
        let checkpoint_vkey = file
            .checkpoint_vkey
            .as_deref()
            .map(|v| {
                let k = crate::rules::note::Vkey::parse(v)
                    .map_err(|e| format!("checkpoint_vkey: {e}"))?;
                if k.sig_type != crate::rules::note::TYPE_ED25519 {
                    return Err(
                        "checkpoint_vkey: a checkpoint key is of type 0x01 (Ed25519)".to_owned(),
                    );
                }
                Ok(k)
            })
            .transpose()?;
        let mut brokers: BTreeMap<String, Broker> = BTreeMap::new();
        for b in &file.brokers {
            check_broker_id(&b.id)?;
            if !anchors.contains_key(&b.country) {
                return Err(format!(
                    "broker {}: country {} has no [[anchor]] to issue its certificate",
                    b.id, b.country
                ));
            }
            let url = url::Url::parse(&b.url)
                .map_err(|e| format!("broker {}: url {:?}: {e}", b.id, b.url))?;
            if url.scheme() != "https" || url.host().is_none() {
                return Err(format!(
                    "broker {}: url {:?} must be https://HOST:PORT",
                    b.id, b.url
                ));
            }
            let checkpoint_vkey = b
                .checkpoint_vkey
                .as_deref()
                .map(|v| {
                    let k = crate::rules::note::Vkey::parse(v).map_err(|e| e.to_string())?;
                    if k.sig_type != crate::rules::note::TYPE_ED25519 {
                        return Err("a checkpoint key is of type 0x01 (Ed25519)".to_owned());
                    }
                    Ok(k)
                })
                .transpose()
                .map_err(|e| format!("broker {}: checkpoint_vkey: {e}", b.id))?;
            let tree_head_key = b
                .tree_head_key
                .as_deref()
                .map(parse_public_key)
                .transpose()
                .map_err(|e| format!("broker {}: tree_head_key: {e}", b.id))?;
            if let Some(cp) = &checkpoint_vkey {
                if let Some(other) = brokers.values().find(|o| {
                    o.checkpoint_vkey
                        .as_ref()
                        .is_some_and(|k| k.key == cp.key || k.name == cp.name)
                }) {
                    return Err(format!(
                        "broker {}: checkpoint_vkey has the key or the origin of broker {}'s; \
                         each broker signs its own log",
                        b.id, other.id
                    ));
                }
                if let Some(t) = teams
                    .values()
                    .find(|t| t.witness.as_ref().is_some_and(|w| w.key == cp.key))
                {
                    return Err(format!(
                        "broker {}: checkpoint_vkey is team {}'s witness key",
                        b.id, t.id
                    ));
                }
            }
            let entry = Broker {
                id: b.id.clone(),
                country: b.country.clone(),
                url: b.url.clone(),
                checkpoint_vkey,
                tree_head_key,
            };
            if brokers.insert(b.id.clone(), entry).is_some() {
                return Err(format!("broker {} is listed twice", b.id));
            }
        }
        for t in teams.values() {
            match (&t.home, brokers.is_empty()) {
                (Some(h), true) => {
                    return Err(format!(
                        "team {}: home {h}, but the directory lists no [[broker]]",
                        t.id
                    ));
                }
                (Some(h), false) if !brokers.contains_key(h) => {
                    return Err(format!("team {}: home {h} is not a listed broker", t.id));
                }
                (None, false) => {
                    return Err(format!(
                        "team {}: the directory lists brokers, so every team needs a home",
                        t.id
                    ));
                }
                _ => {}
            }
        }
        // A cosignature does not name its signer inside the signed bytes:
        // one key in two roles would count twice or sign for both.
        let mut witness_keys: BTreeMap<[u8; 32], &str> = BTreeMap::new();
        for t in teams.values() {
            if let Some(w) = &t.witness {
                if let Some(other) = witness_keys.insert(w.key.to_bytes(), &t.id) {
                    return Err(format!(
                        "team {}: witness_key is also {other}'s; each witness has its own key",
                        t.id
                    ));
                }
                if checkpoint_vkey.as_ref().is_some_and(|c| c.key == w.key) {
                    return Err(format!(
                        "team {}: witness_key is the broker's checkpoint key",
                        t.id
                    ));
                }
            }
        }
        let witness_policy = file
            .witness_policy
            .as_deref()
            .map(|text| {
                let p = crate::rules::policy::Policy::parse(text)
                    .map_err(|e| format!("witness_policy: {e}"))?;
                if let Some(cp) = &checkpoint_vkey
                    && let Some(w) = p.witnesses.iter().find(|w| w.vkey.key == cp.key)
                {
                    return Err(format!(
                        "witness_policy: witness {} has the broker's checkpoint key",
                        w.name
                    ));
                }
                if let Some(cp) = &checkpoint_vkey
                    && !p.logs.is_empty()
                    && !p.logs.iter().any(|(l, _)| l == cp)
                {
                    return Err(format!(
                        "witness_policy: its log lines do not list this broker's checkpoint_vkey {cp}"
                    ));
                }
                Ok(p)
            })
            .transpose()?;
        Ok(Directory {
            brokers,
            witness_policy,
            max_chain_depth: file.max_chain_depth.unwrap_or(1),
            teams,
            anchors,
            groups,
            keys,
            checkpoint_vkey,
        })
    }

    pub fn team(&self, id: &str) -> Option<&Team> {
        self.teams.get(id)
    }

    pub fn teams(&self) -> impl Iterator<Item = &Team> {
        self.teams.values()
    }

    pub fn group(&self, name: &str) -> Option<&BTreeSet<String>> {
        self.groups.get(name)
    }

    pub fn groups(&self) -> impl Iterator<Item = (&String, &BTreeSet<String>)> {
        self.groups.iter()
    }

    /// The verifier key of the broker's checkpoints, when it publishes them.
    pub fn checkpoint_vkey(&self) -> Option<&crate::rules::note::Vkey> {
        self.checkpoint_vkey.as_ref()
    }

    /// The verifier key of the checkpoints of the log `team` reads: its home
    /// broker's in a federation, else the single broker's.
    pub fn log_vkey_for(&self, team: &str) -> Option<&crate::rules::note::Vkey> {
        match self.home_of(team).and_then(|h| self.brokers.get(h)) {
            Some(b) => b.checkpoint_vkey.as_ref(),
            None => self.checkpoint_vkey.as_ref(),
        }
    }

    /// The checkpoint verifier key whose name is `origin`: the single
    /// broker's or one of the federation's brokers'.
    pub fn checkpoint_vkey_named(&self, origin: &str) -> Option<&crate::rules::note::Vkey> {
        self.checkpoint_vkey
            .iter()
            .chain(
                self.brokers
                    .values()
                    .filter_map(|b| b.checkpoint_vkey.as_ref()),
            )
            .find(|v| v.name == origin)
    }

    /// The brokers of the federation (empty for a single broker).
    pub fn brokers(&self) -> impl Iterator<Item = &Broker> {
        self.brokers.values()
    }

    pub fn broker(&self, id: &str) -> Option<&Broker> {
        self.brokers.get(id)
    }

    /// The broker `team` is homed on, in a federation.
    pub fn home_of(&self, team: &str) -> Option<&str> {
        self.teams.get(team).and_then(|t| t.home.as_deref())
    }

    /// The witness quorum members apply to checkpoints, when there is one.
    pub fn witness_policy(&self) -> Option<&crate::rules::policy::Policy> {
        self.witness_policy.as_ref()
    }

    /// Intermediate CAs allowed between an anchor and a team certificate.
    pub fn max_chain_depth(&self) -> u32 {
        self.max_chain_depth
    }

    /// Country code → CA certificates.
    pub fn anchors(&self) -> &BTreeMap<String, Vec<CertificateDer<'static>>> {
        &self.anchors
    }

    /// Whether `id` is a team of the directory that has not retired by `at`:
    /// only members connect, publish and read.
    pub fn is_member(&self, id: &str, at: OffsetDateTime) -> bool {
        self.teams
            .get(id)
            .is_some_and(|t| t.retired_at.is_none_or(|r| at < r))
    }

    /// The key `key_id` of `team` if it may sign at `at`.
    pub fn active_key(
        &self,
        team: &str,
        key_id: &str,
        at: OffsetDateTime,
    ) -> Result<&SigningKey, KeyProblem> {
        self.key_valid_at(team, key_id, at)
    }

    /// The key `key_id` of `team` that signed a record the broker logged at
    /// `logged_at`, and what has happened to the key since (as of `now`).
    /// A key revoked, or a team retired, after the record was logged still
    /// verifies it: revocation does not erase the past.
    pub fn key_for_record(
        &self,
        team: &str,
        key_id: &str,
        logged_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<(&SigningKey, KeyStatus), KeyProblem> {
        let key = self.key_valid_at(team, key_id, logged_at)?;
        let retired = self.teams[team].retired_at;
        let status = if key.revoked_at.is_some_and(|r| r <= now) {
            KeyStatus::RevokedAfterSigning
        } else if key.not_after.is_some_and(|na| now > na) || retired.is_some_and(|r| now >= r) {
            KeyStatus::Expired
        } else {
            KeyStatus::Active
        };
        Ok((key, status))
    }

    fn key_valid_at(
        &self,
        team: &str,
        key_id: &str,
        at: OffsetDateTime,
    ) -> Result<&SigningKey, KeyProblem> {
        let problem = |k: fn(String, String) -> KeyProblem| k(team.to_owned(), key_id.to_owned());
        let key = match self.keys.get(key_id) {
            Some((owner, idx)) if owner == team => &self.teams[owner].keys[*idx],
            _ => return Err(problem(|team, key_id| KeyProblem::Unknown { team, key_id })),
        };
        if key.revoked_at.is_some_and(|r| at >= r) {
            return Err(problem(|team, key_id| KeyProblem::Revoked { team, key_id }));
        }
        if self.teams[team].retired_at.is_some_and(|r| at >= r) {
            return Err(problem(|team, key_id| KeyProblem::Retired { team, key_id }));
        }
        if key.not_before.is_some_and(|nb| at < nb) {
            return Err(problem(|team, key_id| KeyProblem::NotYetValid {
                team,
                key_id,
            }));
        }
        if key.not_after.is_some_and(|na| at > na) {
            return Err(problem(|team, key_id| KeyProblem::Expired { team, key_id }));
        }
        Ok(key)
    }
}

/// Refuses an anchor issued by another country's anchor: that CA could then
/// mint identities for the other country's teams.
fn check_anchor_nesting(
    anchors: &BTreeMap<String, Vec<CertificateDer<'static>>>,
) -> Result<(), String> {
    let mut subjects: Vec<(String, Vec<u8>)> = Vec::new();
    let mut issuers: Vec<(String, Vec<u8>, Vec<u8>)> = Vec::new();
    for (country, certs) in anchors {
        for c in certs {
            let (_, cert) = x509_parser::parse_x509_certificate(c)
                .map_err(|e| format!("anchor {country}: certificate does not parse: {e}"))?;
            subjects.push((country.clone(), cert.subject().as_raw().to_vec()));
            issuers.push((
                country.clone(),
                cert.issuer().as_raw().to_vec(),
                cert.subject().as_raw().to_vec(),
            ));
        }
    }
    for (country, issuer, subject) in &issuers {
        if issuer == subject {
            continue; // self-issued
        }
        if let Some((other, _)) = subjects.iter().find(|(c, s)| c != country && s == issuer) {
            return Err(format!(
                "anchor {country}: its CA is issued by the {other} anchor; \
                 a CA may vouch for one country only"
            ));
        }
    }
    Ok(())
}

/// What makes two anchor certificates the same CA: its public key.
fn anchor_identity(der: &CertificateDer<'_>) -> Result<Vec<u8>, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    Ok(cert.public_key().raw.to_vec())
}

/// A certificate serial or fingerprint as written in the directory:
/// hex, colons allowed; kept lowercase without separators.
fn certificate_ref(s: &str) -> Result<String, String> {
    let hex: String = s
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    if hex.is_empty() || hex.len() > 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "{s:?} is not a certificate serial or SHA-256 fingerprint in hex"
        ));
    }
    Ok(hex)
}

/// Sharing group names: `[A-Z0-9-]`, 2–32 characters (e.g. `SCO`, `ASEAN-ARF`).
/// A broker id: 2 to 32 characters of A-Z, 0-9 and '-', e.g. `CN` or `CN-2`.
pub fn check_broker_id(id: &str) -> Result<(), String> {
    if (2..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
    {
        Ok(())
    } else {
        Err(format!(
            "broker id {id:?} must be 2 to 32 characters of A-Z, 0-9 and '-'"
        ))
    }
}

pub fn check_group_name(name: &str) -> Result<(), String> {
    if (2..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
    {
        Ok(())
    } else {
        Err(format!(
            "group name {name:?} must be 2 to 32 characters of A-Z, 0-9 and '-'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn team_ids() {
        assert!(check_team_id("CN-CNCERT").is_ok());
        assert!(check_team_id("BR-CERTBR").is_ok());
        assert!(check_team_id("C-X").is_err());
        assert!(check_team_id("cn-cncert").is_err());
        assert!(check_team_id("CNCERT").is_err());
        assert!(check_team_id("CN-THIS-NAME-IS-FAR-TOO-LONG-FOR-US").is_err());
        assert!(check_team_id("CN_CERT").is_err());
    }

    #[test]
    fn rejects_member_that_is_not_a_team() {
        let file: DirectoryFile = toml::from_str(
            r#"
            [groups]
            SCO = ["CN-NOPE"]
            "#,
        )
        .unwrap();
        let err = Directory::from_file(file, Path::new(".")).unwrap_err();
        assert!(err.contains("member CN-NOPE is not a team"), "{err}");
    }

    #[test]
    fn rejects_unknown_keys_in_file() {
        let err = toml::from_str::<DirectoryFile>("[[team]]\nid='CN-X1'\nname='x'\ncolour='red'\n")
            .unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
    }

    #[test]
    fn broker_keys_are_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let teams = ["CN-CNCERT".to_owned(), "BR-CERTBR".to_owned()];
        crate::cli::pki::init_federation(tmp.path(), &teams, &[], &["CN".into(), "BR".into()])
            .unwrap();
        let text = std::fs::read_to_string(tmp.path().join("directory.toml")).unwrap();
        let file: DirectoryFile = toml::from_str(&text).unwrap();
        assert!(Directory::from_file(file.clone(), tmp.path()).is_ok());
        let with = |f: &dyn Fn(&mut DirectoryFile)| {
            let mut file = file.clone();
            f(&mut file);
            Directory::from_file(file, tmp.path()).unwrap_err()
        };
        let e = with(&|f| f.brokers[0].tree_head_key = Some("abcd".into()));
        assert!(e.contains("tree_head_key: not 64 hex"), "{e}");
        let e = with(&|f| f.brokers[0].checkpoint_vkey = Some("nope".into()));
        assert!(e.contains("checkpoint_vkey"), "{e}");
        let e = with(&|f| f.brokers[1].checkpoint_vkey = f.brokers[0].checkpoint_vkey.clone());
        assert!(e.contains("each broker signs its own log"), "{e}");
        let e = with(&|f| {
            let w = f.teams[0].witness_key.clone();
            f.brokers[0].checkpoint_vkey = w;
        });
        assert!(e.contains("type 0x01"), "{e}");
        // Both are optional.
        let mut bare = file.clone();
        for b in &mut bare.brokers {
            b.checkpoint_vkey = None;
            b.tree_head_key = None;
        }
        let dir = Directory::from_file(bare, tmp.path()).unwrap();
        assert!(dir.broker("CN").unwrap().checkpoint_vkey.is_none());
    }
}
