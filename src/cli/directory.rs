//! `certex directory …`: check and edit `directory.toml` without a text
//! editor (SPEC §2, §10). Each edit parses the file with `toml_edit` (its
//! comments and layout survive), applies one change, validates the result
//! with the loader the broker uses ([`Directory::from_text`]) and only then
//! writes it: a temporary file beside it, fsync, rename, the original's
//! permissions kept. A change the loader refuses leaves the file
//! byte-identical. Each command prints what changed as one JSON line; the
//! broker applies the file on SIGHUP.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use ed25519_dalek::VerifyingKey;
use ed25519_dalek::pkcs8::DecodePublicKey;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use toml_edit::{Array, ArrayOfTables, DocumentMut, Item, Table, value};

use crate::cli::args::{CliError, print_json};
use crate::cli::pki::signing_key_pem;
use crate::rules::directory::{
    Directory, check_group_name, check_team_id, country_of, parse_public_key,
};
use crate::rules::envelope::key_id;
use crate::rules::time::format_time;

#[derive(Subcommand, Debug)]
pub enum DirectoryCommand {
    /// Validate a directory file as the broker would and print a one-line
    /// JSON summary; exits non-zero with the loader's message if invalid.
    Check {
        /// The directory file (directory.toml).
        file: PathBuf,
    },
    /// Add a member team, optionally with its first signing key.
    AddTeam(AddTeamArgs),
    /// Add a signing key to a team (imported or generated); its key id is
    /// computed from the public key.
    AddKey(AddKeyArgs),
    /// Generate a new signing key for a team and end the old active key's
    /// validity after an overlap (sets its not_after).
    RotateKey(RotateKeyArgs),
    /// Revoke a signing key from a time on: records the broker logged
    /// before it still verify (SPEC §2); later use of the key is refused.
    RevokeKey(RevokeKeyArgs),
    /// Retire a team: from then on it can neither connect nor publish; its
    /// keys stay so its past records still verify.
    RetireTeam(RetireTeamArgs),
    /// Add a sharing group.
    AddGroup(GroupArgs),
    /// Replace the members of an existing sharing group.
    SetGroup(GroupArgs),
}

#[derive(Args, Debug)]
pub struct AddTeamArgs {
    /// The directory file (directory.toml).
    pub file: PathBuf,
    /// Team id: country code, '-', short name (A-Z, 0-9, '-'; 4 to 32
    /// characters), e.g. FR-CERTFR. Its country needs an [[anchor]].
    #[arg(long)]
    pub id: String,
    /// Display name, e.g. "CERT-FR".
    #[arg(long)]
    pub name: String,
    /// Out-of-band contact, e.g. an e-mail address or phone number.
    #[arg(long, default_value = "")]
    pub contact: String,
    /// In a federation: the id of the broker the team connects to (a
    /// [[broker]] of the directory).
    #[arg(long)]
    pub home: Option<String>,
    /// Import the team's first Ed25519 public key from this file: 64 hex
    /// characters (the form of signing.pub) or a PEM public key.
    #[arg(long, value_name = "PUBKEY_FILE", conflicts_with = "generate_key")]
    pub key: Option<PathBuf>,
    /// Generate the team's first Ed25519 signing key and write it here
    /// (PKCS#8 PEM, owner-only 0600; never over an existing file).
    #[arg(long, value_name = "OUT.key")]
    pub generate_key: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct AddKeyArgs {
    /// The directory file (directory.toml).
    pub file: PathBuf,
    /// The team the key belongs to.
    #[arg(long)]
    pub team: String,
    /// Import the Ed25519 public key from this file: 64 hex characters
    /// (the form of signing.pub) or a PEM public key.
    #[arg(
        long,
        value_name = "PUBKEY_FILE",
        required_unless_present = "generate_key",
        conflicts_with = "generate_key"
    )]
    pub key: Option<PathBuf>,
    /// Generate an Ed25519 signing key and write it here (PKCS#8 PEM,
    /// owner-only 0600; never over an existing file).
    #[arg(long, value_name = "OUT.key")]
    pub generate_key: Option<PathBuf>,
    /// The key is not valid before this time (RFC 3339, or `now`).
    #[arg(long, value_name = "TIME", value_parser = parse_when)]
    pub not_before: Option<OffsetDateTime>,
    /// The key is not valid after this time (RFC 3339, or `now`).
    #[arg(long, value_name = "TIME", value_parser = parse_when)]
    pub not_after: Option<OffsetDateTime>,
}

#[derive(Args, Debug)]
pub struct RotateKeyArgs {
    /// The directory file (directory.toml).
    pub file: PathBuf,
    /// The team whose key to rotate.
    #[arg(long)]
    pub team: String,
    /// Where to write the new Ed25519 signing key (PKCS#8 PEM, owner-only
    /// 0600; never over an existing file). Valid from now.
    #[arg(long, value_name = "OUT.key")]
    pub generate_key: PathBuf,
    /// The key id of the key being replaced (default: the team's only
    /// active key).
    #[arg(long, value_name = "ID")]
    pub key_id: Option<String>,
    /// How long the old key stays valid beside the new one.
    #[arg(long, value_name = "DURATION", default_value = "1d", value_parser = parse_overlap)]
    pub overlap: time::Duration,
    /// End the old key's validity at this time instead (RFC 3339, or `now`).
    #[arg(long, value_name = "TIME", value_parser = parse_when)]
    pub retire_old_at: Option<OffsetDateTime>,
}

#[derive(Args, Debug)]
pub struct RevokeKeyArgs {
    /// The directory file (directory.toml).
    pub file: PathBuf,
    /// The team the key belongs to.
    #[arg(long)]
    pub team: String,
    /// The key id (32 hex characters) of the key to revoke.
    #[arg(long, value_name = "ID")]
    pub key_id: String,
    /// The instant from which the key is no longer trusted (RFC 3339, or
    /// `now`): records the broker logged before it stay valid evidence.
    #[arg(long, value_name = "TIME", value_parser = parse_when)]
    pub at: OffsetDateTime,
}

#[derive(Args, Debug)]
pub struct RetireTeamArgs {
    /// The directory file (directory.toml).
    pub file: PathBuf,
    /// The team to retire.
    #[arg(long)]
    pub team: String,
    /// When the team retires (RFC 3339, or `now`; default now).
    #[arg(long, value_name = "TIME", value_parser = parse_when)]
    pub at: Option<OffsetDateTime>,
}

#[derive(Args, Debug)]
pub struct GroupArgs {
    /// The directory file (directory.toml).
    pub file: PathBuf,
    /// Group name: 2 to 32 characters of A-Z, 0-9 and '-', e.g. SCO.
    #[arg(long)]
    pub name: String,
    /// Comma-separated member team ids, each a team of the directory.
    #[arg(long, value_delimiter = ',', required = true)]
    pub members: Vec<String>,
}

/// `now` or an RFC 3339 time.
fn parse_when(s: &str) -> Result<OffsetDateTime, String> {
    if s == "now" {
        return Ok(OffsetDateTime::now_utc());
    }
    OffsetDateTime::parse(s, &Rfc3339)
        .map_err(|e| format!("{s:?} is not an RFC 3339 time or `now` ({e})"))
}

/// A duration such as `90s`, `12h`, `7d`.
fn parse_overlap(s: &str) -> Result<time::Duration, String> {
    let d = crate::drill::scenario::parse_duration(s)?;
    time::Duration::try_from(d).map_err(|_| format!("{s:?} is too long"))
}

/// Runs one `certex directory` command.
pub fn run(cmd: DirectoryCommand) -> Result<(), CliError> {
    match cmd {
        DirectoryCommand::Check { file } => check(&file),
        DirectoryCommand::AddTeam(a) => add_team(a),
        DirectoryCommand::AddKey(a) => add_key(a),
        DirectoryCommand::RotateKey(a) => rotate_key(a),
        DirectoryCommand::RevokeKey(a) => revoke_key(a),
        DirectoryCommand::RetireTeam(a) => retire_team(a),
        DirectoryCommand::AddGroup(a) => set_group(a, true),
        DirectoryCommand::SetGroup(a) => set_group(a, false),
    }
}

fn check(file: &Path) -> Result<(), CliError> {
    let dir = Directory::load(file).map_err(|e| CliError::other(e.to_string()))?;
    print_json(&summary(file, &dir))
}

/// What `check` prints: counts of the directory's entries.
fn summary(file: &Path, dir: &Directory) -> Value {
    let now = OffsetDateTime::now_utc();
    let keys: usize = dir.teams().map(|t| t.keys.len()).sum();
    let active = dir
        .teams()
        .flat_map(|t| t.keys.iter().map(move |k| (t, k)))
        .filter(|(t, k)| dir.active_key(&t.id, &k.key_id, now).is_ok())
        .count();
    json!({
        "file": file.display().to_string(),
        "valid": true,
        "teams": dir.teams().count(),
        "retired_teams": dir.teams().filter(|t| !dir.is_member(&t.id, now)).count(),
        "keys": keys,
        "active_keys": active,
        "groups": dir.groups().count(),
        "anchors": dir.anchors().len(),
        "brokers": dir.brokers().count(),
    })
}

fn add_team(a: AddTeamArgs) -> Result<(), CliError> {
    check_team_id(&a.id)?;
    let mut edit = Edit::open(&a.file)?;
    let new_key = match (&a.key, &a.generate_key) {
        (Some(p), _) => Some(NewKey::import(p)?),
        (None, Some(out)) => Some(NewKey::generate(out)?),
        (None, None) => None,
    };
    let mut team = Table::new();
    team["id"] = value(&a.id);
    team["name"] = value(&a.name);
    team["contact"] = value(&a.contact);
    if let Some(h) = &a.home {
        team["home"] = value(h);
    }
    if let Some(k) = &new_key {
        let mut keys = ArrayOfTables::new();
        keys.push(k.entry(None, None));
        team["key"] = Item::ArrayOfTables(keys);
    }
    let not_tables = edit.not_tables("team");
    match edit.doc.get_mut("team") {
        None => {
            let mut teams = ArrayOfTables::new();
            teams.push(team);
            edit.doc["team"] = Item::ArrayOfTables(teams);
        }
        Some(item) => item.as_array_of_tables_mut().ok_or(not_tables)?.push(team),
    }
    let mut change = json!({"change": "add-team", "team": a.id, "country": country_of(&a.id)});
    if let Some(k) = &new_key {
        k.describe(&mut change);
    }
    edit.commit(new_key.as_ref(), change)
}

fn add_key(a: AddKeyArgs) -> Result<(), CliError> {
    let mut edit = Edit::open(&a.file)?;
    let new_key = match (&a.key, &a.generate_key) {
        (Some(p), _) => NewKey::import(p)?,
        (None, Some(out)) => NewKey::generate(out)?,
        (None, None) => return Err(CliError::other("give --key FILE or --generate-key FILE")),
    };
    let entry = new_key.entry(a.not_before, a.not_after);
    edit.keys_of(&a.team)?.push(entry);
    let mut change = json!({"change": "add-key", "team": a.team});
    new_key.describe(&mut change);
    if let Some(t) = a.not_before {
        change["not_before"] = format_time(t).into();
    }
    if let Some(t) = a.not_after {
        change["not_after"] = format_time(t).into();
    }
    edit.commit(Some(&new_key), change)
}

fn rotate_key(a: RotateKeyArgs) -> Result<(), CliError> {
    let mut edit = Edit::open(&a.file)?;
    let now = OffsetDateTime::now_utc();
    let team = edit
        .current
        .team(&a.team)
        .ok_or_else(|| edit.no_team(&a.team))?;
    // Indexes into the team's keys, in file order (the loader keeps it).
    let active: Vec<usize> = team
        .keys
        .iter()
        .enumerate()
        .filter(|(_, k)| edit.current.active_key(&a.team, &k.key_id, now).is_ok())
        .map(|(i, _)| i)
        .collect();
    let old = match &a.key_id {
        Some(id) => {
            let i = team
                .keys
                .iter()
                .position(|k| k.key_id == *id)
                .ok_or_else(|| CliError::other(format!("team {}: no key {id}", a.team)))?;
            if !active.contains(&i) {
                return Err(CliError::other(format!(
                    "team {}: key {id} is not active now; nothing to rotate",
                    a.team
                )));
            }
            i
        }
        None => match active.as_slice() {
            [only] => *only,
            [] => {
                return Err(CliError::other(format!(
                    "team {} has no active key to rotate; use add-key",
                    a.team
                )));
            }
            _ => {
                return Err(CliError::other(format!(
                    "team {} has {} active keys; name the one to replace with --key-id",
                    a.team,
                    active.len()
                )));
            }
        },
    };
    let old_key = &team.keys[old];
    let old_id = old_key.key_id.clone();
    let mut end = a.retire_old_at.unwrap_or(now + a.overlap);
    // Never extend a validity the directory already ends earlier.
    if let Some(na) = old_key.not_after {
        end = end.min(na);
    }
    let new_key = NewKey::generate(&a.generate_key)?;
    let keys = edit.keys_of(&a.team)?;
    let old_entry = keys.get_mut(old).ok_or_else(|| {
        CliError::other(format!(
            "team {}: the key entries changed while reading",
            a.team
        ))
    })?;
    old_entry["not_after"] = value(format_time(end));
    keys.push(new_key.entry(Some(now), None));
    let mut change = json!({
        "change": "rotate-key",
        "team": a.team,
        "old_key_id": old_id,
        "old_not_after": format_time(end),
        "not_before": format_time(now),
    });
    new_key.describe(&mut change);
    edit.commit(Some(&new_key), change)
}

fn revoke_key(a: RevokeKeyArgs) -> Result<(), CliError> {
    let mut edit = Edit::open(&a.file)?;
    let team = edit
        .current
        .team(&a.team)
        .ok_or_else(|| edit.no_team(&a.team))?;
    let i = team
        .keys
        .iter()
        .position(|k| k.key_id == a.key_id)
        .ok_or_else(|| CliError::other(format!("team {}: no key {}", a.team, a.key_id)))?;
    if let Some(r) = team.keys[i].revoked_at
        && r <= a.at
    {
        return Err(CliError::other(format!(
            "team {}: key {} is already revoked at {}",
            a.team,
            a.key_id,
            format_time(r)
        )));
    }
    let entry = edit.keys_of(&a.team)?.get_mut(i).ok_or_else(|| {
        CliError::other(format!(
            "team {}: the key entries changed while reading",
            a.team
        ))
    })?;
    entry["revoked_at"] = value(format_time(a.at));
    let change = json!({
        "change": "revoke-key",
        "team": a.team,
        "key_id": a.key_id,
        "revoked_at": format_time(a.at),
    });
    edit.commit(None, change)
}

fn retire_team(a: RetireTeamArgs) -> Result<(), CliError> {
    let mut edit = Edit::open(&a.file)?;
    let at = a.at.unwrap_or_else(OffsetDateTime::now_utc);
    if let Some(r) = edit
        .current
        .team(&a.team)
        .ok_or_else(|| edit.no_team(&a.team))?
        .retired_at
    {
        return Err(CliError::other(format!(
            "team {} already retires at {}",
            a.team,
            format_time(r)
        )));
    }
    edit.team_mut(&a.team)?["retired_at"] = value(format_time(at));
    let change = json!({"change": "retire-team", "team": a.team, "retired_at": format_time(at)});
    edit.commit(None, change)
}

fn set_group(a: GroupArgs, add: bool) -> Result<(), CliError> {
    check_group_name(&a.name)?;
    let mut edit = Edit::open(&a.file)?;
    let exists = edit.current.group(&a.name).is_some();
    match (add, exists) {
        (true, true) => {
            return Err(CliError::other(format!(
                "group {} exists; change its members with set-group",
                a.name
            )));
        }
        (false, false) => {
            return Err(CliError::other(format!(
                "no group {}; create it with add-group",
                a.name
            )));
        }
        _ => {}
    }
    let members: Array = a.members.iter().map(String::as_str).collect();
    let groups = edit
        .doc
        .entry("groups")
        .or_insert_with(|| Item::Table(Table::new()));
    let groups = groups
        .as_table_like_mut()
        .ok_or_else(|| CliError::other(format!("{}: groups is not a table", a.file.display())))?;
    match groups.get_mut(&a.name) {
        Some(item) => *item = value(members),
        None => {
            groups.insert(&a.name, value(members));
        }
    }
    let change = json!({
        "change": if add { "add-group" } else { "set-group" },
        "group": a.name,
        "members": a.members,
    });
    edit.commit(None, change)
}

// === impl Edit ===

/// One edit of a directory file: its text as read, the editable document,
/// and the directory it holds now (valid, or the edit is refused).
struct Edit {
    path: PathBuf,
    original: String,
    doc: DocumentMut,
    current: Directory,
}

impl Edit {
    fn open(path: &Path) -> Result<Self, CliError> {
        let original = fs::read_to_string(path).map_err(|e| {
            CliError::other(format!("cannot read directory {}: {e}", path.display()))
        })?;
        let current = Directory::from_text(&original, path).map_err(|e| {
            CliError::other(format!(
                "{e}; fix it first (certex directory check shows the problem)"
            ))
        })?;
        let doc = original.parse::<DocumentMut>().map_err(|e| {
            CliError::other(format!("directory {} is not valid: {e}", path.display()))
        })?;
        Ok(Edit {
            path: path.to_owned(),
            original,
            doc,
            current,
        })
    }

    fn no_team(&self, team: &str) -> CliError {
        CliError::other(format!(
            "team {team} is not in the directory {}",
            self.path.display()
        ))
    }

    fn not_tables(&self, what: &str) -> CliError {
        CliError::other(format!(
            "{}: {what} is not written as [[{what}]] tables; edit it by hand",
            self.path.display()
        ))
    }

    /// The `[[team]]` table of `team`.
    fn team_mut(&mut self, team: &str) -> Result<&mut Table, CliError> {
        let (missing, absent) = (self.no_team(team), self.no_team(team));
        let not_tables = self.not_tables("team");
        self.doc
            .get_mut("team")
            .ok_or(absent)?
            .as_array_of_tables_mut()
            .ok_or(not_tables)?
            .iter_mut()
            .find(|t| t.get("id").and_then(Item::as_str) == Some(team))
            .ok_or(missing)
    }

    /// The `[[team.key]]` tables of `team` (created when it has none).
    fn keys_of(&mut self, team: &str) -> Result<&mut ArrayOfTables, CliError> {
        let not_tables = self.not_tables("team.key");
        self.team_mut(team)?
            .entry("key")
            .or_insert_with(|| Item::ArrayOfTables(ArrayOfTables::new()))
            .as_array_of_tables_mut()
            .ok_or(not_tables)
    }

    /// Validates the edited text with the broker's loader; then writes the
    /// new key (if any) and the directory, and prints `change`.
    fn commit(self, key: Option<&NewKey>, change: Value) -> Result<(), CliError> {
        let text = self.doc.to_string();
        Directory::from_text(&text, &self.path)
            .map_err(|e| CliError::other(format!("refused, the directory is unchanged: {e}")))?;
        if let Some(k) = key {
            k.write()?;
        }
        if let Err(e) = write_atomically(&self.path, &text, &self.original) {
            if let Some((out, _)) = key.and_then(|k| k.generated.as_ref()) {
                let _ = fs::remove_file(out);
            }
            return Err(e);
        }
        let mut change = change;
        change["file"] = self.path.display().to_string().into();
        print_json(&change)?;
        eprintln!(
            "{} updated; send SIGHUP to the broker to apply it (kill -HUP <broker pid>)",
            self.path.display()
        );
        Ok(())
    }
}

/// Replaces `path` with `text`: a temporary file in the same folder with
/// the original's permissions (and owner, where allowed), fsync, rename,
/// fsync of the folder. Refuses if the file changed since it was read as
/// `original`. A symbolic link is followed: its target is replaced.
fn write_atomically(path: &Path, text: &str, original: &str) -> Result<(), CliError> {
    let fail = |what: &str, e: std::io::Error| {
        CliError::other(format!(
            "cannot {what} {}: {e}; the directory is unchanged",
            path.display()
        ))
    };
    let real = fs::canonicalize(path).map_err(|e| fail("resolve", e))?;
    let folder = real.parent().unwrap_or(Path::new("/"));
    let meta = fs::metadata(&real).map_err(|e| fail("read", e))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".directory.")
        .suffix(".tmp")
        .tempfile_in(folder)
        .map_err(|e| fail("write beside", e))?;
    tmp.write_all(text.as_bytes())
        .map_err(|e| fail("write beside", e))?;
    tmp.as_file()
        .set_permissions(meta.permissions())
        .map_err(|e| fail("write beside", e))?;
    // Keep the owner when we may (e.g. root editing the broker's file).
    let _ = std::os::unix::fs::fchown(tmp.as_file(), Some(meta.uid()), Some(meta.gid()));
    tmp.as_file()
        .sync_all()
        .map_err(|e| fail("write beside", e))?;
    let now = fs::read_to_string(&real).map_err(|e| fail("read", e))?;
    if now != original {
        return Err(CliError::other(format!(
            "{} changed while this command edited it; nothing written, run it again",
            path.display()
        )));
    }
    tmp.persist(&real).map_err(|e| fail("replace", e.error))?;
    File::open(folder)
        .and_then(|d| d.sync_all())
        .map_err(|e| fail("sync the folder of", e))?;
    Ok(())
}

// === impl NewKey ===

/// A signing key being added: imported (public key only) or generated
/// (written to `out` once the directory edit is valid).
struct NewKey {
    public: VerifyingKey,
    /// Where the generated private key goes, and its PEM.
    generated: Option<(PathBuf, String)>,
}

impl NewKey {
    /// Reads a public key: 64 hex characters or a PEM public key.
    fn import(path: &Path) -> Result<Self, CliError> {
        let text = fs::read_to_string(path)
            .map_err(|e| CliError::other(format!("cannot read key {}: {e}", path.display())))?;
        let public = if text.contains("PRIVATE KEY") {
            return Err(CliError::other(format!(
                "{} holds a private key; give the public key (64 hex characters as in \
                 signing.pub, or PEM -----BEGIN PUBLIC KEY-----)",
                path.display()
            )));
        } else if text.contains("-----BEGIN PUBLIC KEY-----") {
            VerifyingKey::from_public_key_pem(text.trim())
                .map_err(|e| format!("key {}: not an Ed25519 public key: {e}", path.display()))?
        } else {
            parse_public_key(&text).map_err(|e| format!("key {}: {e}", path.display()))?
        };
        Ok(NewKey {
            public,
            generated: None,
        })
    }

    /// A fresh key, to be written to `out` (which must not exist).
    fn generate(out: &Path) -> Result<Self, CliError> {
        if out.exists() {
            return Err(CliError::other(format!(
                "{} exists; a signing key is never overwritten, choose another path",
                out.display()
            )));
        }
        let key = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
        let pem = signing_key_pem(&key)?;
        Ok(NewKey {
            public: key.verifying_key(),
            generated: Some((out.to_owned(), pem)),
        })
    }

    /// Writes a generated key, owner-only, creating its folder (0700).
    fn write(&self) -> Result<(), CliError> {
        let Some((out, pem)) = &self.generated else {
            return Ok(());
        };
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| CliError::other(format!("cannot create {}: {e}", parent.display())))?;
        }
        let fail =
            |e: std::io::Error| CliError::other(format!("cannot write {}: {e}", out.display()));
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(out)
            .map_err(fail)?;
        f.write_all(pem.as_bytes()).map_err(fail)?;
        f.sync_all().map_err(fail)
    }

    fn key_id(&self) -> String {
        key_id(&self.public)
    }

    /// The `[[team.key]]` entry.
    fn entry(
        &self,
        not_before: Option<OffsetDateTime>,
        not_after: Option<OffsetDateTime>,
    ) -> Table {
        let mut t = Table::new();
        t["public_key"] = value(hex::encode(self.public.as_bytes()));
        t["key_id"] = value(self.key_id());
        if let Some(nb) = not_before {
            t["not_before"] = value(format_time(nb));
        }
        if let Some(na) = not_after {
            t["not_after"] = value(format_time(na));
        }
        t
    }

    /// Adds the key's id, public key and file to a change line.
    fn describe(&self, change: &mut Value) {
        change["key_id"] = self.key_id().into();
        change["public_key"] = hex::encode(self.public.as_bytes()).into();
        if let Some((out, _)) = &self.generated {
            change["key_file"] = out.display().to_string().into();
        }
    }
}
