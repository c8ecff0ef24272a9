//! Where a record goes in a federation (SPEC §12), as plain functions over
//! the directory: the readers of a record are its sender, its audience and
//! the teams stored with it (a group's members when it was accepted, a
//! case's requester); a record goes to the home broker of each reader and
//! nowhere else, so TLP:RED and AMBER+STRICT (addressed to named teams) reach
//! only the brokers of those teams. A broker relays only records whose
//! sender is homed on it.

use std::collections::BTreeSet;

use crate::rules::access::{Distribution, audience_admits};
use crate::rules::directory::Directory;

/// Whether `team` may read a record of this distribution, whatever traffic
/// (real or exercise) it asks for.
pub fn may_read(team: &str, d: &Distribution<'_>) -> bool {
    team == d.sender
        || d.also_readers.iter().any(|t| t == team)
        || audience_admits(d.audience, team)
}

/// The brokers other than `origin` that home at least one reader of the
/// record: where it must be relayed.
pub fn destinations(d: &Distribution<'_>, dir: &Directory, origin: &str) -> BTreeSet<String> {
    dir.teams()
        .filter(|t| may_read(&t.id, d))
        .filter_map(|t| t.home.clone())
        .filter(|home| home != origin)
        .collect()
}

/// Whether broker `from` may relay a record sent by `sender`: only the
/// sender's home broker speaks for it.
pub fn may_relay(dir: &Directory, from: &str, sender: &str) -> Result<(), String> {
    match dir.home_of(sender) {
        Some(home) if home == from => Ok(()),
        Some(home) => Err(format!(
            "{sender} is homed on broker {home}, not {from}: only a sender's home broker relays its records"
        )),
        None => Err(format!("{sender} has no home broker in the directory")),
    }
}

/// Whether broker `me` homes a reader of the record: a broker never takes
/// a record none of its teams may read.
pub fn wanted_by(d: &Distribution<'_>, dir: &Directory, me: &str) -> bool {
    dir.teams()
        .any(|t| t.home.as_deref() == Some(me) && may_read(&t.id, d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::audience::Kind;
    use crate::proto::{Audience, TeamList};
    use crate::rules::directory::DirectoryFile;

    /// A federation of three brokers (CN, BR, RU) over a dev PKI's
    /// directory, IN-CERTIN homed on BR.
    fn federation() -> (tempfile::TempDir, Directory) {
        let tmp = tempfile::tempdir().unwrap();
        crate::cli::pki::init_sample(tmp.path()).unwrap();
        let path = tmp.path().join("directory.toml");
        let mut file: DirectoryFile =
            toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for (id, port) in [("CN", 7001), ("BR", 7002), ("RU", 7003)] {
            file.brokers.push(crate::rules::directory::BrokerEntry {
                id: id.into(),
                country: id.into(),
                url: format!("https://localhost:{port}"),
                ..Default::default()
            });
        }
        for t in &mut file.teams {
            let c = crate::rules::directory::country_of(&t.id);
            t.home = Some(match c {
                "CN" | "RU" => c.to_owned(),
                _ => "BR".to_owned(),
            });
        }
        std::fs::write(&path, toml::to_string_pretty(&file).unwrap()).unwrap();
        let dir = Directory::load(&path).unwrap();
        (tmp, dir)
    }

    fn teams(list: &[&str]) -> Audience {
        Audience {
            kind: Some(Kind::Teams(TeamList {
                teams: list.iter().map(|s| s.to_string()).collect(),
            })),
        }
    }

    fn dist<'a>(sender: &'a str, aud: &'a Audience, also: &'a [String]) -> Distribution<'a> {
        Distribution {
            sender,
            audience: Some(aud),
            exercise: "",
            also_readers: also,
        }
    }

    #[test]
    fn a_bilateral_record_goes_only_to_the_recipients_broker() {
        let (_t, dir) = federation();
        let aud = teams(&["BR-CERTBR"]);
        let d = dist("CN-CNCERT", &aud, &[]);
        assert_eq!(
            destinations(&d, &dir, "CN"),
            BTreeSet::from(["BR".to_owned()])
        );
        assert!(wanted_by(&d, &dir, "BR"));
        assert!(
            !wanted_by(&d, &dir, "RU"),
            "never lands on a third nation's broker"
        );
    }

    #[test]
    fn community_goes_everywhere_and_groups_to_their_members_brokers() {
        let (_t, dir) = federation();
        let all = Audience {
            kind: Some(Kind::Community(true)),
        };
        let d = dist("CN-CNCERT", &all, &[]);
        assert_eq!(
            destinations(&d, &dir, "CN"),
            BTreeSet::from(["BR".to_owned(), "RU".to_owned()])
        );
        // SCO = CN, RU, IN (IN homed on BR): members stored with the record.
        let group = Audience {
            kind: Some(Kind::Group("SCO".into())),
        };
        let members: Vec<String> = dir.group("SCO").unwrap().iter().cloned().collect();
        let d = dist("RU-GOVCERT", &group, &members);
        assert_eq!(
            destinations(&d, &dir, "RU"),
            BTreeSet::from(["BR".to_owned(), "CN".to_owned()])
        );
        // A record only the sender's compatriots read stays home.
        let aud = teams(&["CN-CNCERT"]);
        let d = dist("CN-CNCERT", &aud, &[]);
        assert!(destinations(&d, &dir, "CN").is_empty());
    }

    #[test]
    fn only_the_senders_home_broker_relays_it() {
        let (_t, dir) = federation();
        assert!(may_relay(&dir, "CN", "CN-CNCERT").is_ok());
        let e = may_relay(&dir, "RU", "CN-CNCERT").unwrap_err();
        assert!(e.contains("homed on broker CN"), "{e}");
        assert!(may_relay(&dir, "BR", "IN-CERTIN").is_ok());
    }

    #[test]
    fn homes_must_name_listed_brokers() {
        let tmp = tempfile::tempdir().unwrap();
        crate::cli::pki::init_sample(tmp.path()).unwrap();
        let path = tmp.path().join("directory.toml");
        let mut file: DirectoryFile =
            toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        file.teams[0].home = Some("CN".into());
        let e = Directory::from_file(file.clone(), tmp.path()).unwrap_err();
        assert!(e.contains("lists no [[broker]]"), "{e}");
        file.brokers.push(crate::rules::directory::BrokerEntry {
            id: "CN".into(),
            country: "CN".into(),
            url: "https://localhost:7001".into(),
            ..Default::default()
        });
        let e = Directory::from_file(file.clone(), tmp.path()).unwrap_err();
        assert!(e.contains("every team needs a home"), "{e}");
        for t in &mut file.teams {
            t.home = Some("XX".into());
        }
        let e = Directory::from_file(file.clone(), tmp.path()).unwrap_err();
        assert!(e.contains("not a listed broker"), "{e}");
        file.brokers[0].url = "http://localhost:7001".into();
        let e = Directory::from_file(file, tmp.path()).unwrap_err();
        assert!(e.contains("must be https"), "{e}");
    }
}
