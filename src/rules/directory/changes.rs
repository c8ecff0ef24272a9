//! What changed between two directories, in words an operator reads in the
//! audit log when the broker reloads `directory.toml` (SPEC §3): teams
//! added, retired or removed; signing keys added, revoked or removed;
//! certificate withdrawals and pins; country anchors; groups; brokers; the
//! checkpoint key and witness policy. Only the directory's own public
//! contents are named (team ids, key ids, countries, group names), never a
//! certificate's or key's bytes.

use std::collections::{BTreeMap, BTreeSet};

use super::{Directory, SigningKey, Team};
use crate::rules::time::format_time;

/// One line per change from `old` to `new`, in a stable order (by kind,
/// then name); empty when they are the same.
pub fn changes(old: &Directory, new: &Directory) -> Vec<String> {
    let mut out = Vec::new();
    if old.max_chain_depth != new.max_chain_depth {
        out.push(format!(
            "max_chain_depth {} -> {}",
            old.max_chain_depth, new.max_chain_depth
        ));
    }
    if old.checkpoint_vkey != new.checkpoint_vkey {
        out.push("checkpoint_vkey changed".into());
    }
    if old.witness_policy != new.witness_policy {
        out.push("witness_policy changed".into());
    }
    for (name, change) in keyed(&old.anchors, &new.anchors, |a, b| a == b) {
        out.push(format!("anchor {name} {change}"));
    }
    for (id, change) in keyed(&old.brokers, &new.brokers, |a, b| a == b) {
        out.push(format!("broker {id} {change}"));
    }
    for (id, t) in &new.teams {
        match old.teams.get(id) {
            None => out.push(format!(
                "team {id} added ({} key{})",
                t.keys.len(),
                if t.keys.len() == 1 { "" } else { "s" }
            )),
            Some(o) => team_changes(o, t, &mut out),
        }
    }
    for id in old.teams.keys().filter(|id| !new.teams.contains_key(*id)) {
        out.push(format!("team {id} removed"));
    }
    for (name, members) in &new.groups {
        match old.groups.get(name) {
            None => out.push(format!("group {name} added: {}", list(members.iter()))),
            Some(o) if o != members => out.push(format!(
                "group {name} changed: +[{}] -[{}]",
                list(members.difference(o)),
                list(o.difference(members))
            )),
            Some(_) => {}
        }
    }
    for name in old.groups.keys().filter(|n| !new.groups.contains_key(*n)) {
        out.push(format!("group {name} removed"));
    }
    out
}

fn team_changes(o: &Team, t: &Team, out: &mut Vec<String>) {
    let id = &t.id;
    match (o.retired_at, t.retired_at) {
        (None, Some(at)) => out.push(format!("team {id} retired at {}", format_time(at))),
        (Some(_), None) => out.push(format!("team {id} no longer retired")),
        (Some(a), Some(b)) if a != b => out.push(format!(
            "team {id} retired at {} (was {})",
            format_time(b),
            format_time(a)
        )),
        _ => {}
    }
    if o.name != t.name || o.contact != t.contact {
        out.push(format!("team {id} name or contact changed"));
    }
    let old_keys: BTreeMap<&str, &SigningKey> =
        o.keys.iter().map(|k| (k.key_id.as_str(), k)).collect();
    let new_keys: BTreeMap<&str, &SigningKey> =
        t.keys.iter().map(|k| (k.key_id.as_str(), k)).collect();
    for (kid, k) in &new_keys {
        match old_keys.get(kid) {
            None => out.push(format!("team {id} key {kid} added")),
            Some(ok) => {
                match (ok.revoked_at, k.revoked_at) {
                    (None, Some(at)) => out.push(format!(
                        "team {id} key {kid} revoked at {}",
                        format_time(at)
                    )),
                    (Some(_), None) => {
                        out.push(format!("team {id} key {kid} revocation withdrawn"))
                    }
                    (Some(a), Some(b)) if a != b => out.push(format!(
                        "team {id} key {kid} revoked at {} (was {})",
                        format_time(b),
                        format_time(a)
                    )),
                    _ => {}
                }
                if ok.not_before != k.not_before || ok.not_after != k.not_after {
                    out.push(format!("team {id} key {kid} validity changed"));
                }
            }
        }
    }
    for kid in old_keys.keys().filter(|k| !new_keys.contains_key(*k)) {
        out.push(format!("team {id} key {kid} removed"));
    }
    let added = t
        .revoked_certificates
        .difference(&o.revoked_certificates)
        .count();
    let dropped = o
        .revoked_certificates
        .difference(&t.revoked_certificates)
        .count();
    if added > 0 {
        out.push(format!("team {id} certificates withdrawn: {added}"));
    }
    if dropped > 0 {
        out.push(format!(
            "team {id} certificate withdrawals removed: {dropped}"
        ));
    }
    if o.certificate_sha256 != t.certificate_sha256 {
        out.push(format!(
            "team {id} certificate pin {}",
            match t.certificate_sha256 {
                Some(_) if o.certificate_sha256.is_none() => "set",
                Some(_) => "changed",
                None => "removed",
            }
        ));
    }
    if o.witness != t.witness {
        out.push(format!("team {id} witness key changed"));
    }
    if o.home != t.home {
        out.push(format!(
            "team {id} home {} -> {}",
            o.home.as_deref().unwrap_or("-"),
            t.home.as_deref().unwrap_or("-")
        ));
    }
}

/// Added, changed and removed entries of two maps, by key.
fn keyed<'a, V>(
    old: &'a BTreeMap<String, V>,
    new: &'a BTreeMap<String, V>,
    same: impl Fn(&V, &V) -> bool,
) -> Vec<(&'a str, &'static str)> {
    let names: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    names
        .into_iter()
        .filter_map(|k| match (old.get(k), new.get(k)) {
            (None, Some(_)) => Some((k.as_str(), "added")),
            (Some(_), None) => Some((k.as_str(), "removed")),
            (Some(a), Some(b)) if !same(a, b) => Some((k.as_str(), "changed")),
            _ => None,
        })
        .collect()
}

fn list<'a>(ids: impl Iterator<Item = &'a String>) -> String {
    ids.map(String::as_str).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::rules::directory::DirectoryFile;

    fn load(file: &DirectoryFile, base: &Path) -> Directory {
        Directory::from_file(file.clone(), base).unwrap()
    }

    #[test]
    fn names_each_change_and_nothing_else() {
        let tmp = tempfile::tempdir().unwrap();
        let teams = ["CN-CNCERT".to_owned(), "BR-CERTBR".to_owned()];
        crate::cli::pki::init(tmp.path(), &teams, &[]).unwrap();
        let text = std::fs::read_to_string(tmp.path().join("directory.toml")).unwrap();
        let file: DirectoryFile = toml::from_str(&text).unwrap();
        let before = load(&file, tmp.path());
        assert!(changes(&before, &before).is_empty());

        let mut edited = file.clone();
        let kid = before.team("BR-CERTBR").unwrap().keys[0].key_id.clone();
        let br = edited
            .teams
            .iter_mut()
            .find(|t| t.id == "BR-CERTBR")
            .unwrap();
        br.keys[0].revoked_at = Some("2026-11-01T00:00:00Z".into());
        br.revoked_certificates = vec!["01ab".into()];
        let cn = edited
            .teams
            .iter_mut()
            .find(|t| t.id == "CN-CNCERT")
            .unwrap();
        cn.retired_at = Some("2026-11-02T00:00:00Z".into());
        edited
            .groups
            .insert("PAIR".into(), vec!["CN-CNCERT".into(), "BR-CERTBR".into()]);
        let after = load(&edited, tmp.path());
        let got = changes(&before, &after);
        assert_eq!(
            got,
            [
                "team BR-CERTBR key ".to_owned() + &kid + " revoked at 2026-11-01T00:00:00.000Z",
                "team BR-CERTBR certificates withdrawn: 1".into(),
                "team CN-CNCERT retired at 2026-11-02T00:00:00.000Z".into(),
                "group PAIR added: BR-CERTBR,CN-CNCERT".into(),
            ]
        );
        let back = changes(&after, &before);
        assert!(back.contains(&"group PAIR removed".to_owned()), "{back:?}");
        assert!(
            back.contains(&format!("team BR-CERTBR key {kid} revocation withdrawn")),
            "{back:?}"
        );

        let mut fewer = file.clone();
        fewer.teams.retain(|t| t.id != "BR-CERTBR");
        fewer.anchors.retain(|a| a.country != "BR");
        let got = changes(&before, &load(&fewer, tmp.path()));
        assert_eq!(got, ["anchor BR removed", "team BR-CERTBR removed"]);
        let got = changes(&load(&fewer, tmp.path()), &before);
        assert_eq!(got[0], "anchor BR added");
        assert!(
            got[1].starts_with("team BR-CERTBR added (1 key)"),
            "{got:?}"
        );
    }
}
