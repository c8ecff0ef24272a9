//! Witness quorum policies (SPEC §8) in the C2SP `tlog-policy` syntax:
//! `log VKEY [URL]`, `witness NAME VKEY [URL]`, `group NAME all|any|K
//! MEMBER…` and exactly one `quorum NAME` (or `quorum none`), names defined
//! before use. The directory carries one as `witness_policy`, so every
//! member and the offline checker apply the same rule ("2 of the BRICS
//! teams and 2 of the SCO teams"). Pure functions: parsing, and deciding
//! which witnesses cosigned a checkpoint and whether that meets the quorum.

use std::collections::BTreeMap;

use crate::rules::note::{self, Note, TYPE_COSIGNATURE, TYPE_ED25519, Vkey};

/// Most logs, witnesses or groups a policy may define (the spec asks
/// implementations to support at least 32 of each).
pub const MAX_ENTRIES: usize = 256;

/// A named witness: its cosigning key and where it takes checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Witness {
    pub name: String,
    pub vkey: Vkey,
    pub url: Option<String>,
}

/// A group: met when at least `k` of its members are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub k: usize,
    pub members: Vec<String>,
}

/// A parsed policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Logs whose checkpoints the policy accepts (may be empty when the log
    /// is known from elsewhere, as with the directory's `checkpoint_vkey`).
    pub logs: Vec<(Vkey, Option<String>)>,
    pub witnesses: Vec<Witness>,
    pub groups: Vec<Group>,
    /// The witness or group that must be met; `None` for `quorum none`.
    pub quorum: Option<String>,
    /// The source text, kept to print it back.
    pub text: String,
}

/// What a checkpoint's cosignatures amount to under a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Policy names of the witnesses whose cosignature verified.
    pub cosigned: Vec<String>,
    /// Whether the quorum is met.
    pub met: bool,
    /// One line per group, e.g. `BRICS: 1 cosigned, 2 needed (CN-CNCERT)`.
    pub groups: Vec<String>,
}

fn is_space(c: char) -> bool {
    c == ' ' || c == '\t'
}

impl Policy {
    /// Parses a policy file; errors name the line.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(c) = text
            .chars()
            .find(|&c| (c as u32) < 0x20 && c != '\t' && c != '\n')
        {
            return Err(format!(
                "the policy holds control character {:#04x}; only tab and newline are allowed",
                c as u32
            ));
        }
        if text.contains('\u{7f}') {
            return Err("the policy holds control character 0x7f".into());
        }
        let mut p = Policy {
            logs: vec![],
            witnesses: vec![],
            groups: vec![],
            quorum: None,
            text: text.to_owned(),
        };
        let mut quorum_seen = false;
        // Each name may be a group member once in the whole file, so no
        // witness counts twice towards the quorum.
        let mut used: Vec<String> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let words: Vec<&str> = raw.split(is_space).filter(|w| !w.is_empty()).collect();
            let at = |m: String| format!("policy line {n}: {m}");
            match words.as_slice() {
                [] => {}
                [w, ..] if w.starts_with('#') => {}
                ["log", vkey, rest @ ..] if rest.len() <= 1 => {
                    let v = Vkey::parse(vkey).map_err(|e| at(e.to_string()))?;
                    if v.sig_type != TYPE_ED25519 {
                        return Err(at("a log key is an Ed25519 note key (type 0x01)".to_owned()));
                    }
                    if p.logs.iter().any(|(l, _)| l.key == v.key) {
                        return Err(at(format!("log {} is listed twice", v.name)));
                    }
                    p.logs.push((v, rest.first().map(|u| u.to_string())));
                }
                ["witness", name, vkey, rest @ ..] if rest.len() <= 1 => {
                    p.check_new_name(name).map_err(at)?;
                    let v = Vkey::parse(vkey).map_err(|e| at(e.to_string()))?;
                    if v.sig_type != TYPE_COSIGNATURE {
                        return Err(at(format!(
                            "witness {name}: a witness key is a cosignature key (type 0x04)"
                        )));
                    }
                    if let Some(w) = p.witnesses.iter().find(|w| w.vkey.key == v.key) {
                        return Err(at(format!(
                            "witness {name} has the same key as witness {}",
                            w.name
                        )));
                    }
                    p.witnesses.push(Witness {
                        name: name.to_string(),
                        vkey: v,
                        url: rest.first().map(|u| u.to_string()),
                    });
                }
                ["group", name, k, members @ ..] if !members.is_empty() => {
                    p.check_new_name(name).map_err(at)?;
                    let mut seen: Vec<String> = Vec::new();
                    for m in members {
                        if *m == "none" {
                            return Err(at(format!("group {name}: none cannot be a member")));
                        }
                        if !p.defined(m) {
                            return Err(at(format!(
                                "group {name}: {m} is not a witness or group defined above"
                            )));
                        }
                        if seen.iter().any(|s| s == m) {
                            return Err(at(format!("group {name}: {m} is listed twice")));
                        }
                        if used.iter().any(|s| s == m) {
                            return Err(at(format!(
                                "group {name}: {m} is already a member of another group (a name may be a member once)"
                            )));
                        }
                        seen.push(m.to_string());
                    }
                    let k = match *k {
                        "all" => seen.len(),
                        "any" => 1,
                        raw => match raw.parse::<usize>() {
                            Ok(k) if (1..=seen.len()).contains(&k) && k.to_string() == raw => k,
                            _ => {
                                return Err(at(format!(
                                    "group {name}: threshold {raw} must be all, any or a decimal from 1 to {}",
                                    seen.len()
                                )));
                            }
                        },
                    };
                    used.extend(seen.iter().cloned());
                    p.groups.push(Group {
                        name: name.to_string(),
                        k,
                        members: seen,
                    });
                }
                ["quorum", name] => {
                    if quorum_seen {
                        return Err(at("a policy has exactly one quorum line".into()));
                    }
                    quorum_seen = true;
                    if *name != "none" {
                        if !p.defined(name) {
                            return Err(at(format!(
                                "quorum {name}: not a witness or group defined above"
                            )));
                        }
                        p.quorum = Some(name.to_string());
                    }
                }
                [kw, ..] => {
                    return Err(at(format!(
                        "cannot read {kw:?} here (expected log VKEY [URL], witness NAME VKEY [URL], group NAME K MEMBER…, or quorum NAME)"
                    )));
                }
            }
            if p.logs.len().max(p.witnesses.len()).max(p.groups.len()) > MAX_ENTRIES {
                return Err(at(format!("more than {MAX_ENTRIES} entries of one kind")));
            }
        }
        if !quorum_seen {
            return Err("the policy has no quorum line (write `quorum none` for none)".into());
        }
        Ok(p)
    }

    fn defined(&self, name: &str) -> bool {
        self.witnesses.iter().any(|w| w.name == name) || self.groups.iter().any(|g| g.name == name)
    }

    fn check_new_name(&self, name: &str) -> Result<(), String> {
        if name == "none" {
            return Err("none is a reserved name".into());
        }
        if self.defined(name) {
            return Err(format!("{name} is defined twice"));
        }
        Ok(())
    }

    /// The witness keys the policy lists.
    pub fn witness_keys(&self) -> Vec<Vkey> {
        self.witnesses.iter().map(|w| w.vkey.clone()).collect()
    }

    /// Which listed witnesses cosigned `note` (a cosignature that fails by
    /// a listed key is an error, as in `note::open`), and whether that
    /// meets the quorum. The log's own signature is checked elsewhere.
    pub fn evaluate(&self, note: &Note) -> Result<Outcome, String> {
        let mut cosigned: Vec<String> = Vec::new();
        for line in &note.sigs {
            for w in &self.witnesses {
                if w.vkey.name == line.name && w.vkey.id == line.id {
                    note::verify_line(&note.text, line, &w.vkey).map_err(|e| e.to_string())?;
                    if !cosigned.contains(&w.name) {
                        cosigned.push(w.name.clone());
                    }
                }
            }
        }
        Ok(self.outcome(cosigned))
    }

    /// The outcome for a set of witnesses (by policy name) that cosigned.
    pub fn outcome(&self, cosigned: Vec<String>) -> Outcome {
        let mut met: BTreeMap<&str, bool> = BTreeMap::new();
        for w in &self.witnesses {
            met.insert(&w.name, cosigned.contains(&w.name));
        }
        let mut groups = Vec::new();
        for g in &self.groups {
            let have: Vec<&str> = g
                .members
                .iter()
                .filter(|m| met.get(m.as_str()).copied().unwrap_or(false))
                .map(String::as_str)
                .collect();
            met.insert(&g.name, have.len() >= g.k);
            groups.push(format!(
                "{}: {} cosigned, {} needed ({})",
                g.name,
                have.len(),
                g.k,
                if have.is_empty() {
                    "none".to_owned()
                } else {
                    have.join(", ")
                }
            ));
        }
        let ok = match &self.quorum {
            None => true,
            Some(q) => met.get(q.as_str()).copied().unwrap_or(false),
        };
        Outcome {
            cosigned,
            met: ok,
            groups,
        }
    }

    /// The quorum in words, e.g. `quorum frameworks` or `none`.
    pub fn quorum_name(&self) -> &str {
        self.quorum.as_deref().unwrap_or("none")
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::rules::note::{Checkpoint, cosign, sign};

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn wvkey(name: &str, seed: u8) -> Vkey {
        Vkey::new(name, TYPE_COSIGNATURE, key(seed).verifying_key()).unwrap()
    }

    fn policy(q: &str) -> String {
        let log = Vkey::new("example.org/log", TYPE_ED25519, key(1).verifying_key()).unwrap();
        format!(
            "# two frameworks\nlog {log}\n\n\twitness A {}  \nwitness B {} https://b.example/w\nwitness C {}\ngroup X 2 A B C\nwitness D {}\nwitness E {}\ngroup Y any D E\ngroup XY all X Y\n{q}\n",
            wvkey("w/a", 10),
            wvkey("w/b", 11),
            wvkey("w/c", 12),
            wvkey("w/d", 13),
            wvkey("w/e", 14),
        )
    }

    fn checkpoint(cosigners: &[(&str, u8)]) -> Note {
        let text = Checkpoint {
            origin: "example.org/log".into(),
            size: 5,
            root: [7; 32],
            extensions: vec![],
        }
        .text();
        let mut sigs = vec![sign(&text, "example.org/log", &key(1)).unwrap()];
        for (name, seed) in cosigners {
            sigs.push(cosign(&text, name, &key(*seed), 1_700_000_000).unwrap());
        }
        Note { text, sigs }
    }

    #[test]
    fn nested_groups_decide_the_quorum() {
        let p = Policy::parse(&policy("quorum XY")).unwrap();
        assert_eq!(p.logs.len(), 1);
        assert_eq!(p.witnesses.len(), 5);
        assert_eq!(p.witnesses[1].url.as_deref(), Some("https://b.example/w"));
        assert_eq!(p.groups[1].k, 1);
        assert_eq!(p.groups[2].k, 2);

        let o = p
            .evaluate(&checkpoint(&[("w/a", 10), ("w/b", 11)]))
            .unwrap();
        assert_eq!(o.cosigned, ["A", "B"]);
        assert!(!o.met, "Y is not met: {o:?}");
        assert_eq!(o.groups[0], "X: 2 cosigned, 2 needed (A, B)");
        assert_eq!(o.groups[1], "Y: 0 cosigned, 1 needed (none)");

        let o = p
            .evaluate(&checkpoint(&[("w/a", 10), ("w/e", 14), ("w/c", 12)]))
            .unwrap();
        assert!(o.met, "{o:?}");

        // Unknown cosigners are ignored; one is not two.
        let o = p
            .evaluate(&checkpoint(&[("w/a", 10), ("w/z", 99), ("w/d", 13)]))
            .unwrap();
        assert!(!o.met);

        // The same witness twice counts once.
        let o = p
            .evaluate(&checkpoint(&[("w/a", 10), ("w/a", 10), ("w/d", 13)]))
            .unwrap();
        assert_eq!(o.cosigned, ["A", "D"]);
        assert!(!o.met);
    }

    #[test]
    fn quorum_of_one_witness_and_none() {
        let p = Policy::parse(&policy("quorum D")).unwrap();
        assert!(p.evaluate(&checkpoint(&[("w/d", 13)])).unwrap().met);
        assert!(!p.evaluate(&checkpoint(&[("w/e", 14)])).unwrap().met);
        let p = Policy::parse(&policy("quorum none")).unwrap();
        assert!(p.evaluate(&checkpoint(&[])).unwrap().met);
        assert_eq!(p.quorum_name(), "none");
    }

    #[test]
    fn a_failing_cosignature_by_a_listed_key_is_an_error() {
        let p = Policy::parse(&policy("quorum XY")).unwrap();
        let mut n = checkpoint(&[("w/a", 10), ("w/d", 13)]);
        let last = n.sigs.len() - 1;
        n.sigs[last].bytes[20] ^= 1;
        assert!(p.evaluate(&n).unwrap_err().contains("w/d"));
        // Cosigned over another text.
        let mut n = checkpoint(&[("w/a", 10)]);
        n.text = n.text.replace("\n5\n", "\n6\n");
        assert!(p.evaluate(&n).is_err());
    }

    #[test]
    fn malformed_policies_are_refused_with_the_line() {
        let w = wvkey("w/a", 10);
        let l = Vkey::new("example.org/log", TYPE_ED25519, key(1).verifying_key()).unwrap();
        let cases: Vec<(String, &str)> = vec![
            ("witness A x\nquorum A\n".into(), "line 1"),
            (format!("witness A {w}\n"), "no quorum line"),
            (
                format!("witness A {w}\nquorum A\nquorum A\n"),
                "exactly one",
            ),
            (
                format!("witness A {w}\nquorum B\n"),
                "not a witness or group",
            ),
            (
                format!("group G any A\nwitness A {w}\nquorum G\n"),
                "defined above",
            ),
            (
                format!("witness A {w}\ngroup G 2 A\nquorum G\n"),
                "threshold 2",
            ),
            (
                format!("witness A {w}\ngroup G 0 A\nquorum G\n"),
                "threshold 0",
            ),
            (
                format!("witness A {w}\ngroup G 01 A\nquorum G\n"),
                "threshold 01",
            ),
            (
                format!("witness A {w}\ngroup G any A A\nquorum G\n"),
                "twice",
            ),
            (
                format!(
                    "witness A {w}\nwitness B {}\ngroup X any A\ngroup Y any A B\ngroup Q all X Y\nquorum Q\n",
                    wvkey("w/b", 11)
                ),
                "already a member",
            ),
            (
                format!("witness A {w}\nwitness B {w}\nquorum A\n"),
                "same key",
            ),
            (
                format!("witness A {w}\nwitness A {}\nquorum A\n", wvkey("w/b", 11)),
                "defined twice",
            ),
            (format!("witness none {w}\nquorum none\n"), "reserved"),
            (
                format!("witness A {w}\ngroup G any A none\nquorum G\n"),
                "none cannot",
            ),
            (format!("witness A {l}\nquorum A\n"), "type 0x04"),
            (format!("log {w}\nquorum none\n"), "type 0x01"),
            (format!("log {l}\nlog {l}\nquorum none\n"), "twice"),
            ("frobnicate\nquorum none\n".into(), "cannot read"),
            ("quorum none\r\n".into(), "control character 0x0d"),
            (
                format!("witness A {w} url extra\nquorum A\n"),
                "cannot read",
            ),
        ];
        for (text, want) in cases {
            let e = Policy::parse(&text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
