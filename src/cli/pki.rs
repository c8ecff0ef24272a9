//! The development PKI of SPEC §10 (`certex pki init`): one CA per country,
//! the broker's TLS identity and tree-head key, per-team client certificates
//! and signing keys, and the directory file. With `--brokers CN,BR,…` it is a
//! federation PKI (SPEC §12): one broker identity per listed country, issued
//! by that country's CA, and every team homed on its country's broker. Never
//! for production keys.
//!
//! ```text
//! DIR/directory.toml
//! DIR/ca/<CC>.pem  DIR/ca/<CC>.key
//! DIR/broker/cert.pem key.pem ca.pem signing.key signing.pub
//!            checkpoint.key checkpoint.vkey
//! DIR/teams/<TEAM>/cert.pem key.pem signing.key witness.key
//! with --brokers, per listed broker ID (a country code):
//! DIR/brokers/<ID>/cert.pem key.pem    TLS server and client identity
//!                  ca.pem              its country's CA (what clients and peers trust)
//!                  signing.key signing.pub          tree-head key
//!                  checkpoint.key checkpoint.vkey   origin certex.localhost/<ID>/v1
//! ```
//!
//! A federation directory lists each broker (`[[broker]]` with its id,
//! country, a placeholder URL `https://localhost:<7443+i>`, its
//! `checkpoint_vkey` and `tree_head_key`) and each team's `home`; it has no
//! top-level `checkpoint_vkey` or `witness_policy` (each broker has its own
//! checkpoint key).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::{EncodePrivateKey, KeypairBytes, spki::der::pem::LineEnding};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::broker::transport::{BROKER_URI_PREFIX, TEAM_URI_PREFIX};
use crate::rules::directory::{
    AnchorEntry, BrokerEntry, DirectoryFile, KeyEntry, TeamEntry, check_group_name, check_team_id,
    country_of,
};
use crate::rules::envelope::key_id;
use crate::rules::time::format_time;

pub(crate) fn mkdir(p: &Path) -> Result<(), String> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(p)
        .map_err(|e| format!("cannot create {}: {e}", p.display()))
}

/// Writes a file; `secret` files are created owner-only (0600).
pub(crate) fn write(p: &Path, contents: &[u8], secret: bool) -> Result<(), String> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(p)
        .map_err(|e| format!("cannot write {}: {e}", p.display()))?;
    f.write_all(contents)
        .map_err(|e| format!("cannot write {}: {e}", p.display()))
}

fn rc(e: rcgen::Error) -> String {
    format!("certificate generation failed: {e}")
}

fn ca_params(cn: &str, now: OffsetDateTime) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.distinguished_name
        .push(DnType::OrganizationName, "certex development PKI");
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = now - Duration::days(1);
    p.not_after = now + Duration::days(3650);
    p
}

fn leaf_params(cn: &str, now: OffsetDateTime) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.not_before = now - Duration::days(1);
    p.not_after = now + Duration::days(825);
    p
}

/// A client certificate for `team`, issued by the CA in `ca_cert`/`ca_key`
/// (PEM). Returns (certificate PEM, private key PEM). Tests use it to forge
/// certificates from the wrong country's CA.
pub fn issue_team_certificate(
    ca_cert: &str,
    ca_key: &str,
    team: &str,
) -> Result<(String, String), String> {
    let key = KeyPair::from_pem(ca_key).map_err(rc)?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert, key).map_err(rc)?;
    let now = OffsetDateTime::now_utc();
    let mut p = leaf_params(team, now);
    p.subject_alt_names = vec![SanType::URI(
        format!("{TEAM_URI_PREFIX}{team}").try_into().map_err(rc)?,
    )];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let leaf_key = KeyPair::generate().map_err(rc)?;
    let cert = p.signed_by(&leaf_key, &issuer).map_err(rc)?;
    Ok((cert.pem(), leaf_key.serialize_pem()))
}

/// The TLS certificate of broker `id` (both its server certificate and its
/// client certificate toward peers), issued by the CA in `ca_cert`/`ca_key`
/// (PEM): SAN URI `urn:certex:broker:<ID>`, `localhost`, 127.0.0.1 and ::1;
/// serverAuth and clientAuth. Returns (certificate PEM, private key PEM).
/// Tests use it to forge broker certificates from the wrong country's CA.
pub fn issue_broker_certificate(
    ca_cert: &str,
    ca_key: &str,
    id: &str,
) -> Result<(String, String), String> {
    let key = KeyPair::from_pem(ca_key).map_err(rc)?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert, key).map_err(rc)?;
    broker_certificate(&issuer, id, OffsetDateTime::now_utc())
}

fn broker_certificate<S: rcgen::SigningKey>(
    issuer: &Issuer<'_, S>,
    id: &str,
    now: OffsetDateTime,
) -> Result<(String, String), String> {
    let mut p = leaf_params(&format!("certex broker {id}"), now);
    p.subject_alt_names = vec![
        SanType::URI(format!("{BROKER_URI_PREFIX}{id}").try_into().map_err(rc)?),
        SanType::DnsName("localhost".try_into().map_err(rc)?),
        SanType::IpAddress([127, 0, 0, 1].into()),
        SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()),
    ];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let leaf_key = KeyPair::generate().map_err(rc)?;
    let cert = p.signed_by(&leaf_key, issuer).map_err(rc)?;
    Ok((cert.pem(), leaf_key.serialize_pem()))
}

/// The origin line of broker `id`'s checkpoints in a development federation.
pub fn broker_origin(id: &str) -> String {
    format!("certex.localhost/{id}/v1")
}

/// The first port of the placeholder broker URLs of a development
/// federation: broker i (in `--brokers` order) is `https://localhost:<7443+i>`.
pub const FIRST_BROKER_PORT: u16 = 7443;

/// Checks `--brokers` against `--teams`: each a country code (two letters
/// A-Z) listed once, each country with a team, each team's country with a
/// broker.
pub fn check_brokers(teams: &[String], brokers: &[String]) -> Result<(), String> {
    let countries: BTreeSet<&str> = teams.iter().map(|t| country_of(t)).collect();
    let mut seen = BTreeSet::new();
    for b in brokers {
        if b.len() != 2 || !b.bytes().all(|c| c.is_ascii_uppercase()) {
            return Err(format!(
                "broker {b:?}: a development broker id is its country code, two letters A-Z"
            ));
        }
        if !seen.insert(b.as_str()) {
            return Err(format!("broker {b} is listed twice"));
        }
        if !countries.contains(b.as_str()) {
            return Err(format!("broker {b}: no team of country {b} in --teams"));
        }
    }
    if !brokers.is_empty()
        && let Some(t) = teams.iter().find(|t| !seen.contains(country_of(t)))
    {
        return Err(format!(
            "team {t}: no broker for country {} (add it to --brokers)",
            country_of(t)
        ));
    }
    Ok(())
}

/// A CA certificate: self-signed when `parent` (certificate PEM, key PEM) is
/// `None`, else issued by it; `path_len` `None` leaves the path length
/// unconstrained. Returns (certificate PEM, key PEM). Tests use it to forge
/// sub-CAs and replacement anchors.
pub fn issue_ca(
    cn: &str,
    parent: Option<(&str, &str)>,
    path_len: Option<u8>,
) -> Result<(String, String), String> {
    let mut p = ca_params(cn, OffsetDateTime::now_utc());
    p.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    let key = KeyPair::generate().map_err(rc)?;
    let cert = match parent {
        None => p.self_signed(&key).map_err(rc)?,
        Some((cert, pkey)) => {
            let issuer_key = KeyPair::from_pem(pkey).map_err(rc)?;
            let issuer = Issuer::from_ca_cert_pem(cert, issuer_key).map_err(rc)?;
            p.signed_by(&key, &issuer).map_err(rc)?
        }
    };
    Ok((cert.pem(), key.serialize_pem()))
}

/// A fresh Ed25519 key: (PKCS#8 PEM, public key hex, key id).
fn signing_key() -> Result<(String, String, String), String> {
    let key = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let public = key.verifying_key();
    Ok((
        signing_key_pem(&key)?,
        hex::encode(public.as_bytes()),
        key_id(&public),
    ))
}

/// `key` as a PKCS#8 v1 PEM (RFC 8410: version 0, id-Ed25519, the 32-byte
/// seed, no public key), the form OpenSSL 3 and Python `cryptography` read.
/// ed25519-dalek's own `to_pkcs8_pem` writes v2 (public key embedded), which
/// both refuse.
pub(crate) fn signing_key_pem(key: &ed25519_dalek::SigningKey) -> Result<String, String> {
    let v1 = KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    };
    let pem = v1
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| format!("cannot encode signing key: {e}"))?;
    Ok(pem.to_string())
}

/// The origin line of a development broker's checkpoints (and the name of
/// its checkpoint key).
pub const DEV_ORIGIN: &str = "certex.localhost/certex/v1";

/// The federation the demo, the benchmarks and the tests use.
pub const SAMPLE_TEAMS: &[&str] = &[
    "CN-CNCERT",
    "RU-GOVCERT",
    "BR-CERTBR",
    "IN-CERTIN",
    "ZA-CSIRT",
    "US-CISA",
    "DE-CERTBUND",
];

/// Sharing groups of the sample federation.
pub const SAMPLE_GROUPS: &[&str] = &[
    "BRICS=CN-CNCERT,RU-GOVCERT,BR-CERTBR,IN-CERTIN,ZA-CSIRT",
    "SCO=CN-CNCERT,RU-GOVCERT,IN-CERTIN",
];

/// A development PKI for [`SAMPLE_TEAMS`] with [`SAMPLE_GROUPS`].
pub fn init_sample(dir: &Path) -> Result<(), String> {
    let teams: Vec<String> = SAMPLE_TEAMS.iter().map(|s| s.to_string()).collect();
    let groups = SAMPLE_GROUPS
        .iter()
        .map(|g| parse_group(g))
        .collect::<Result<Vec<_>, _>>()?;
    init(dir, &teams, &groups)
}

/// Parses `NAME=TEAM,TEAM`.
pub fn parse_group(s: &str) -> Result<(String, Vec<String>), String> {
    let (name, members) = s
        .split_once('=')
        .ok_or_else(|| format!("--group {s:?}: expected NAME=TEAM,TEAM"))?;
    Ok((
        name.to_owned(),
        members
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(str::to_owned)
            .collect(),
    ))
}

/// Creates the development PKI in `dir` (refuses to overwrite one).
pub fn init(dir: &Path, teams: &[String], groups: &[(String, Vec<String>)]) -> Result<(), String> {
    init_federation(dir, teams, groups, &[])
}

/// Creates the development PKI in `dir` (refuses to overwrite one); with
/// `brokers` (country codes), a federation PKI: one broker identity per
/// listed country under `brokers/<ID>/` and every team homed on its
/// country's broker. Without, [`init`].
pub fn init_federation(
    dir: &Path,
    teams: &[String],
    groups: &[(String, Vec<String>)],
    brokers: &[String],
) -> Result<(), String> {
    if dir.join("directory.toml").exists() {
        return Err(format!(
            "{} already holds a PKI (directory.toml exists); choose another --dir",
            dir.display()
        ));
    }
    if teams.is_empty() {
        return Err("--teams names no team".into());
    }
    let mut seen = BTreeSet::new();
    for t in teams {
        check_team_id(t)?;
        if !seen.insert(t.as_str()) {
            return Err(format!("team {t} is listed twice"));
        }
    }
    let mut group_map = BTreeMap::new();
    for (name, members) in groups {
        check_group_name(name)?;
        for m in members {
            if !seen.contains(m.as_str()) {
                return Err(format!("group {name}: {m} is not one of --teams"));
            }
        }
        group_map.insert(name.clone(), members.clone());
    }
    check_brokers(teams, brokers)?;
    let federation = !brokers.is_empty();

    let now = OffsetDateTime::now_utc();
    mkdir(dir)?;
    mkdir(&dir.join("ca"))?;
    mkdir(&dir.join("broker"))?;
    mkdir(&dir.join("teams"))?;

    // One CA per country.
    let countries: BTreeSet<&str> = teams.iter().map(|t| country_of(t)).collect();
    let mut issuers = BTreeMap::new();
    let mut anchors = Vec::new();
    for cc in &countries {
        let key = KeyPair::generate().map_err(rc)?;
        let params = ca_params(&format!("certex dev CA {cc}"), now);
        let cert = params.self_signed(&key).map_err(rc)?;
        write(
            &dir.join(format!("ca/{cc}.pem")),
            cert.pem().as_bytes(),
            false,
        )?;
        write(
            &dir.join(format!("ca/{cc}.key")),
            key.serialize_pem().as_bytes(),
            true,
        )?;
        anchors.push(AnchorEntry {
            country: (*cc).to_owned(),
            certificate: format!("ca/{cc}.pem"),
        });
        issuers.insert(*cc, (Issuer::new(params, key), cert.pem()));
    }

    // The broker: its own CA (what clients trust), TLS identity, tree-head key.
    let broker_ca_key = KeyPair::generate().map_err(rc)?;
    let broker_ca_params = ca_params("certex dev broker CA", now);
    let broker_ca = broker_ca_params.self_signed(&broker_ca_key).map_err(rc)?;
    let broker_issuer = Issuer::new(broker_ca_params, broker_ca_key);
    let mut p = leaf_params("certex broker", now);
    p.subject_alt_names = vec![
        SanType::DnsName("localhost".try_into().map_err(rc)?),
        SanType::IpAddress([127, 0, 0, 1].into()),
        SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()),
    ];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let broker_key = KeyPair::generate().map_err(rc)?;
    let broker_cert = p.signed_by(&broker_key, &broker_issuer).map_err(rc)?;
    write(
        &dir.join("broker/ca.pem"),
        broker_ca.pem().as_bytes(),
        false,
    )?;
    write(
        &dir.join("broker/cert.pem"),
        broker_cert.pem().as_bytes(),
        false,
    )?;
    write(
        &dir.join("broker/key.pem"),
        broker_key.serialize_pem().as_bytes(),
        true,
    )?;
    let (head_key, head_public, _) = signing_key()?;
    write(&dir.join("broker/signing.key"), head_key.as_bytes(), true)?;
    write(
        &dir.join("broker/signing.pub"),
        format!("{head_public}\n").as_bytes(),
        false,
    )?;
    // The checkpoint (note) key, separate from the tree-head key.
    let note_key = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    write(
        &dir.join("broker/checkpoint.key"),
        signing_key_pem(&note_key)?.as_bytes(),
        true,
    )?;
    let vkey = crate::rules::note::Vkey::new(
        DEV_ORIGIN,
        crate::rules::note::TYPE_ED25519,
        note_key.verifying_key(),
    )
    .map_err(|e| e.to_string())?
    .to_string();
    write(
        &dir.join("broker/checkpoint.vkey"),
        format!("{vkey}\n").as_bytes(),
        false,
    )?;

    // Federation: one identity per broker, issued by its country's CA.
    let mut broker_entries = Vec::new();
    if federation {
        mkdir(&dir.join("brokers"))?;
    }
    for (i, id) in brokers.iter().enumerate() {
        let bdir = dir.join("brokers").join(id);
        mkdir(&bdir)?;
        let (issuer, ca_pem) = &issuers[id.as_str()];
        let (cert, key) = broker_certificate(issuer, id, now)?;
        write(&bdir.join("cert.pem"), cert.as_bytes(), false)?;
        write(&bdir.join("key.pem"), key.as_bytes(), true)?;
        write(&bdir.join("ca.pem"), ca_pem.as_bytes(), false)?;
        let (head_key, head_public, _) = signing_key()?;
        write(&bdir.join("signing.key"), head_key.as_bytes(), true)?;
        write(
            &bdir.join("signing.pub"),
            format!("{head_public}\n").as_bytes(),
            false,
        )?;
        let note_key = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
        write(
            &bdir.join("checkpoint.key"),
            signing_key_pem(&note_key)?.as_bytes(),
            true,
        )?;
        let vkey = crate::rules::note::Vkey::new(
            &broker_origin(id),
            crate::rules::note::TYPE_ED25519,
            note_key.verifying_key(),
        )
        .map_err(|e| e.to_string())?
        .to_string();
        write(
            &bdir.join("checkpoint.vkey"),
            format!("{vkey}\n").as_bytes(),
            false,
        )?;
        broker_entries.push(BrokerEntry {
            id: id.clone(),
            country: id.clone(),
            url: format!("https://localhost:{}", usize::from(FIRST_BROKER_PORT) + i),
            checkpoint_vkey: Some(vkey),
            tree_head_key: Some(head_public),
        });
    }

    // Teams.
    let mut entries = Vec::new();
    let mut policy = format!(
        "# Who must cosign a checkpoint before members rely on it (C2SP tlog-policy).\n\
         # Default: any two member teams. Per framework, e.g.:\n\
         #   group BRICS 2 <team> <team> <team>\n\
         #   group SCO 2 <team> <team> <team>\n\
         #   group frameworks all BRICS SCO\n\
         #   quorum frameworks\n\
         log {vkey}\n"
    );
    for t in teams {
        let tdir = dir.join("teams").join(t);
        mkdir(&tdir)?;
        let issuer = &issuers[country_of(t)].0;
        let mut p = leaf_params(t, now);
        p.subject_alt_names = vec![SanType::URI(
            format!("{TEAM_URI_PREFIX}{t}").try_into().map_err(rc)?,
        )];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().map_err(rc)?;
        let cert = p.signed_by(&key, issuer).map_err(rc)?;
        write(&tdir.join("cert.pem"), cert.pem().as_bytes(), false)?;
        write(&tdir.join("key.pem"), key.serialize_pem().as_bytes(), true)?;
        let (pem, public, id) = signing_key()?;
        write(&tdir.join("signing.key"), pem.as_bytes(), true)?;
        let witness = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
        write(
            &tdir.join("witness.key"),
            signing_key_pem(&witness)?.as_bytes(),
            true,
        )?;
        let witness_key = crate::rules::note::Vkey::new(
            &format!("witness.certex.localhost/{t}"),
            crate::rules::note::TYPE_COSIGNATURE,
            witness.verifying_key(),
        )
        .map_err(|e| e.to_string())?
        .to_string();
        policy.push_str(&format!("witness {t} {witness_key}\n"));
        entries.push(TeamEntry {
            id: t.clone(),
            name: t.clone(),
            contact: format!("incident-desk@{}.example", t.to_ascii_lowercase()),
            keys: vec![KeyEntry {
                public_key: public,
                key_id: Some(id),
                not_before: Some(format_time(now - Duration::days(1))),
                not_after: None,
                revoked_at: None,
                revoked: false,
            }],
            retired_at: None,
            revoked_certificates: vec![],
            certificate_sha256: None,
            witness_key: Some(witness_key),
            home: federation.then(|| country_of(t).to_owned()),
        });
    }
    match teams {
        [only] => policy.push_str(&format!("quorum {only}\n")),
        _ => policy.push_str(&format!(
            "group members 2 {}\nquorum members\n",
            teams.join(" ")
        )),
    }
    // In a federation each broker has its own checkpoint key (in its
    // [[broker]] entry): no top-level checkpoint_vkey, and no witness
    // policy naming one log.
    let file = DirectoryFile {
        max_chain_depth: None,
        checkpoint_vkey: (!federation).then_some(vkey),
        witness_policy: (!federation).then_some(policy),
        brokers: broker_entries,
        anchors,
        teams: entries,
        groups: group_map,
    };
    let text = toml::to_string_pretty(&file).map_err(|e| format!("cannot write directory: {e}"))?;
    let header = if federation {
        "# certex federation directory: brokers, teams and their home brokers, country\n\
         # anchors, signing keys, sharing groups; the same file at every broker.\n\
         # Broker URLs are placeholders (serve --peer ID=URL overrides them).\n\
         # Edit and send SIGHUP to the brokers to reload; a bad file is refused.\n\n"
    } else {
        "# certex directory: teams, country anchors, signing keys, sharing groups.\n\
         # Edit and send SIGHUP to the broker to reload; a bad file is refused.\n\n"
    };
    write(
        &dir.join("directory.toml"),
        format!("{header}{text}").as_bytes(),
        false,
    )?;
    Ok(())
}

/// Rotates `team`'s signing key in a development PKI: a new key is written to
/// `teams/<TEAM>/signing.key` and listed from `at`, and every earlier key of
/// the team is revoked at `at` (records logged before stay valid evidence).
/// Returns the new key id. The broker sees it after a directory reload.
pub fn rotate_signing_key(dir: &Path, team: &str, at: OffsetDateTime) -> Result<String, String> {
    let path = dir.join("directory.toml");
    let text =
        fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut file: DirectoryFile =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let entry = file
        .teams
        .iter_mut()
        .find(|t| t.id == team)
        .ok_or_else(|| format!("team {team} is not in {}", path.display()))?;
    for k in &mut entry.keys {
        if k.revoked_at.is_none() {
            k.revoked_at = Some(format_time(at));
        }
    }
    let (pem, public, id) = signing_key()?;
    entry.keys.push(KeyEntry {
        public_key: public,
        key_id: Some(id.clone()),
        not_before: Some(format_time(at)),
        not_after: None,
        revoked_at: None,
        revoked: false,
    });
    write(
        &dir.join("teams").join(team).join("signing.key"),
        pem.as_bytes(),
        true,
    )?;
    let text = toml::to_string_pretty(&file).map_err(|e| format!("cannot write directory: {e}"))?;
    write(&path, text.as_bytes(), false)?;
    Ok(id)
}

/// Issues a TLS client certificate for `team` in the development PKI `dir`
/// (`certex pki issue-team-cert`), as `pki init` does for its teams: signed
/// by `ca/<CC>.pem` of the team's country, written to
/// `teams/<TEAM>/cert.pem` and `key.pem` (owner-only). Refuses to replace an
/// existing certificate unless `replace`. Returns the certificate's path.
pub fn issue_team_files(dir: &Path, team: &str, replace: bool) -> Result<PathBuf, String> {
    check_team_id(team)?;
    let cc = country_of(team);
    let ca_cert = dir.join("ca").join(format!("{cc}.pem"));
    let ca_key = dir.join("ca").join(format!("{cc}.key"));
    let read = |p: &Path| {
        fs::read_to_string(p).map_err(|e| {
            format!(
                "cannot read {}: {e} (the PKI has no CA for country {cc}; pki init creates                  one per country of --teams)",
                p.display()
            )
        })
    };
    let (ca_cert, ca_key) = (read(&ca_cert)?, read(&ca_key)?);
    let tdir = dir.join("teams").join(team);
    let cert_path = tdir.join("cert.pem");
    if cert_path.exists() && !replace {
        return Err(format!(
            "{} exists; give --replace to issue a new certificate",
            cert_path.display()
        ));
    }
    let (cert, key) = issue_team_certificate(&ca_cert, &ca_key, team)?;
    mkdir(&tdir)?;
    write(&tdir.join("key.pem"), key.as_bytes(), true)?;
    write(&cert_path, cert.as_bytes(), false)?;
    Ok(cert_path)
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use rustls_pki_types::pem::PemObject;

    use super::*;

    /// RFC 8410 §7 with the seed left out: SEQUENCE { INTEGER 0,
    /// SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING (32) } }.
    const V1_PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];

    #[test]
    fn signing_keys_are_written_as_pkcs8_v1_and_read_back() {
        let (pem, public, id) = signing_key().unwrap();
        let lines: Vec<&str> = pem.lines().collect();
        assert_eq!(lines.first(), Some(&"-----BEGIN PRIVATE KEY-----"));
        assert_eq!(lines.last(), Some(&"-----END PRIVATE KEY-----"));
        let der = base64::engine::general_purpose::STANDARD
            .decode(lines[1..lines.len() - 1].concat())
            .unwrap();
        // Version 0 and nothing after the seed: no public key, no attributes.
        assert_eq!(der.len(), 48, "{}", hex::encode(&der));
        assert_eq!(der[..16], V1_PREFIX, "{}", hex::encode(&der));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.key");
        write(&path, pem.as_bytes(), true).unwrap();
        let key = crate::rules::envelope::read_signing_key(&path).unwrap();
        assert_eq!(key.to_bytes(), der[16..]);
        assert_eq!(hex::encode(key.verifying_key().as_bytes()), public);
        assert_eq!(key_id(&key.verifying_key()), id);
        assert_eq!(signing_key_pem(&key).unwrap(), pem);
    }

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn brokers_must_match_the_teams_countries() {
        let teams = ids(&["CN-CNCERT", "BR-CERTBR", "BR-OTHER"]);
        assert!(check_brokers(&teams, &[]).is_ok());
        assert!(check_brokers(&teams, &ids(&["BR", "CN"])).is_ok());
        let e = check_brokers(&teams, &ids(&["CN", "BR", "RU"])).unwrap_err();
        assert_eq!(e, "broker RU: no team of country RU in --teams");
        let e = check_brokers(&teams, &ids(&["CN"])).unwrap_err();
        assert!(
            e.starts_with("team BR-CERTBR: no broker for country BR"),
            "{e}"
        );
        let e = check_brokers(&teams, &ids(&["CN", "BR", "CN"])).unwrap_err();
        assert!(e.contains("listed twice"), "{e}");
        for bad in ["cn", "CHN", "C1", ""] {
            let e = check_brokers(&teams, &ids(&["BR", bad])).unwrap_err();
            assert!(e.contains("two letters A-Z"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_federation_pki_homes_each_team_and_lists_each_broker() {
        let tmp = tempfile::tempdir().unwrap();
        let teams = ids(&["CN-CNCERT", "BR-CERTBR", "BR-OTHER"]);
        let groups = vec![("BRICS".to_owned(), teams.clone())];
        let e = init_federation(tmp.path(), &teams, &groups, &ids(&["CN"])).unwrap_err();
        assert!(e.contains("no broker for country BR"), "{e}");
        assert!(!tmp.path().join("directory.toml").exists());
        init_federation(tmp.path(), &teams, &groups, &ids(&["BR", "CN"])).unwrap();
        let dir =
            crate::rules::directory::Directory::load(&tmp.path().join("directory.toml")).unwrap();
        assert!(dir.checkpoint_vkey().is_none() && dir.witness_policy().is_none());
        let brokers: Vec<_> = dir
            .brokers()
            .map(|b| (b.id.as_str(), b.url.as_str()))
            .collect();
        assert_eq!(
            brokers,
            [
                ("BR", "https://localhost:7443"),
                ("CN", "https://localhost:7444")
            ]
        );
        assert_eq!(dir.home_of("BR-OTHER"), Some("BR"));
        assert_eq!(dir.home_of("CN-CNCERT"), Some("CN"));
        let cn = dir.broker("CN").unwrap();
        let key =
            crate::rules::envelope::read_signing_key(&tmp.path().join("brokers/CN/checkpoint.key"))
                .unwrap();
        let vkey = cn.checkpoint_vkey.as_ref().unwrap();
        assert_eq!(vkey.key, key.verifying_key());
        assert_eq!(vkey.name, "certex.localhost/CN/v1");
        let head =
            crate::rules::envelope::read_signing_key(&tmp.path().join("brokers/CN/signing.key"))
                .unwrap();
        assert_eq!(cn.tree_head_key, Some(head.verifying_key()));
        let pem = fs::read(tmp.path().join("brokers/CN/cert.pem")).unwrap();
        let der = rustls_pki_types::CertificateDer::from_pem_slice(&pem).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        assert_eq!(
            cert.issuer().to_string(),
            "CN=certex dev CA CN, O=certex development PKI"
        );
        // A single-broker PKI is as before.
        let single = tempfile::tempdir().unwrap();
        init(single.path(), &teams, &groups).unwrap();
        let dir = crate::rules::directory::Directory::load(&single.path().join("directory.toml"))
            .unwrap();
        assert!(dir.checkpoint_vkey().is_some() && dir.witness_policy().is_some());
        assert_eq!(dir.brokers().count(), 0);
        assert_eq!(dir.home_of("CN-CNCERT"), None);
        assert!(!single.path().join("brokers").exists());
    }
}
