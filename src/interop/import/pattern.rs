//! Reading the simple STIX 2.1 patterns CTI platforms write for single
//! indicators (`[ipv4-addr:value = '203.0.113.7']`, OR-ed alternatives,
//! `file:hashes.'SHA-256'`) into certex observables. Anything richer (AND,
//! FOLLOWEDBY, qualifiers, other operators) is refused with a reason, never
//! approximated; hostile input ends in an error, never a panic.

use crate::proto::ObservableType;
use crate::rules::validate::check_observable;

/// Patterns longer than this (bytes) are not read at all.
pub const MAX_PATTERN: usize = 64 * 1024;
/// How deeply parentheses and brackets may nest.
const MAX_DEPTH: usize = 32;
/// How many comparisons one pattern may hold.
const MAX_COMPARISONS: usize = 1000;

/// What a pattern yields: the observables of its supported comparisons, and
/// why each other comparison was left out.
#[derive(Debug, Default, PartialEq)]
pub struct PatternYield {
    pub observables: Vec<(ObservableType, String)>,
    pub skipped: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open,
    Close,
    LParen,
    RParen,
    Str(String),
    Int(String),
    Path(String),
    Op(String),
    Word(String),
}

fn show(s: &str) -> String {
    let cut: String = s.chars().take(60).collect();
    if cut.len() < s.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

fn tokens(p: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = p.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    // A string literal starting at `i` (a quote): its value and the index
    // after its closing quote. STIX escapes only `\'` and `\\`.
    let literal = |mut i: usize| -> Result<(String, usize), String> {
        let mut s = String::new();
        i += 1;
        loop {
            match chars.get(i) {
                None => return Err("a string literal is not closed".into()),
                Some('\'') => return Ok((s, i + 1)),
                Some('\\') => match chars.get(i + 1) {
                    Some(c @ ('\'' | '\\')) => {
                        s.push(*c);
                        i += 2;
                    }
                    _ => {
                        return Err(
                            "a string literal holds an escape other than \\' or \\\\".into()
                        );
                    }
                },
                Some(c) => {
                    s.push(*c);
                    i += 1;
                }
            }
        }
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '[' => {
                out.push(Token::Open);
                i += 1;
            }
            ']' => {
                out.push(Token::Close);
                i += 1;
            }
            '(' => {
                out.push(Token::LParen);
                i += 1;
            }
            ')' => {
                out.push(Token::RParen);
                i += 1;
            }
            '\'' => {
                let (s, next) = literal(i)?;
                out.push(Token::Str(s));
                i = next;
            }
            '=' | '!' | '<' | '>' => {
                let mut op = c.to_string();
                if chars.get(i + 1) == Some(&'=') {
                    op.push('=');
                    i += 1;
                }
                out.push(Token::Op(op));
                i += 1;
            }
            c if c.is_ascii_digit() || c == '-' => {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
                out.push(Token::Int(chars[start..i].iter().collect()));
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                // An object path (`type:prop.'quoted key'.sub`) or a keyword.
                let mut s = String::new();
                while i < chars.len() {
                    let c = chars[i];
                    if c.is_ascii_alphanumeric() || "_-:.".contains(c) {
                        s.push(c);
                        i += 1;
                    } else if c == '\'' && s.ends_with('.') {
                        let (key, next) = literal(i)?;
                        s.push('\'');
                        s.push_str(&key);
                        s.push('\'');
                        i = next;
                    } else if c == '\'' && s.len() == 1 && "tbh".contains(s.as_str()) {
                        return Err(format!("{s}'…' literals are not supported"));
                    } else {
                        break;
                    }
                }
                if s.contains(':') {
                    out.push(Token::Path(s));
                } else {
                    out.push(Token::Word(s.to_ascii_uppercase()));
                }
            }
            other => return Err(format!("unexpected character {other:?}")),
        }
        if out.len() > 16 * MAX_COMPARISONS {
            return Err(format!("more than {MAX_COMPARISONS} comparisons"));
        }
    }
    Ok(out)
}

/// One `path = value` comparison, as read.
#[derive(Debug)]
struct Comparison {
    path: String,
    value: Token,
}

struct Parser {
    toks: Vec<Token>,
    at: usize,
    depth: usize,
    found: Vec<Comparison>,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.toks.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.toks.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn deeper(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!("nested more than {MAX_DEPTH} levels deep"));
        }
        Ok(())
    }

    /// After an operand: OR continues, anything else that joins is refused.
    fn or_follows(&mut self, closing: &Token) -> Result<bool, String> {
        match self.peek() {
            Some(Token::Word(w)) if w == "OR" => {
                self.at += 1;
                Ok(true)
            }
            Some(Token::Word(w)) if w == "AND" || w == "FOLLOWEDBY" => Err(format!(
                "{w} is not supported (only comparisons joined by OR become observables)"
            )),
            Some(Token::Word(w)) => Err(format!(
                "{w} is not supported (qualifiers and other operators are not imported)"
            )),
            Some(t) if t == closing => Ok(false),
            None => Ok(false),
            Some(t) => Err(format!("unexpected {t:?}")),
        }
    }

    /// pattern := obs (OR obs)* ; obs := '[' cmps ']' | '(' pattern ')'
    fn pattern(&mut self, closing: Token) -> Result<(), String> {
        loop {
            match self.next() {
                Some(Token::Open) => {
                    self.deeper()?;
                    self.comparisons(Token::Close)?;
                    self.depth -= 1;
                    if self.next() != Some(Token::Close) {
                        return Err("an observation expression is not closed with ]".into());
                    }
                }
                Some(Token::LParen) => {
                    self.deeper()?;
                    self.pattern(Token::RParen)?;
                    self.depth -= 1;
                    if self.next() != Some(Token::RParen) {
                        return Err("a parenthesis is not closed".into());
                    }
                }
                Some(t) => return Err(format!("expected [ but found {t:?}")),
                None => return Err("the pattern is empty".into()),
            }
            if !self.or_follows(&closing)? {
                return Ok(());
            }
        }
    }

    /// cmps := cmp (OR cmp)* ; cmp := path '=' value | '(' cmps ')'
    fn comparisons(&mut self, closing: Token) -> Result<(), String> {
        loop {
            match self.next() {
                Some(Token::LParen) => {
                    self.deeper()?;
                    self.comparisons(Token::RParen)?;
                    self.depth -= 1;
                    if self.next() != Some(Token::RParen) {
                        return Err("a parenthesis is not closed".into());
                    }
                }
                Some(Token::Path(path)) => {
                    match self.next() {
                        Some(Token::Op(op)) if op == "=" => {}
                        Some(Token::Op(op)) => {
                            return Err(format!(
                                "the operator {op} is not supported (only = comparisons)"
                            ));
                        }
                        Some(Token::Word(w)) => {
                            return Err(format!(
                                "the operator {w} is not supported (only = comparisons)"
                            ));
                        }
                        _ => return Err(format!("{} is not followed by =", show(&path))),
                    }
                    let value = match self.next() {
                        Some(v @ (Token::Str(_) | Token::Int(_))) => v,
                        _ => return Err(format!("{} = is not followed by a value", show(&path))),
                    };
                    if self.found.len() >= MAX_COMPARISONS {
                        return Err(format!("more than {MAX_COMPARISONS} comparisons"));
                    }
                    self.found.push(Comparison { path, value });
                }
                Some(t) => return Err(format!("expected a comparison but found {t:?}")),
                None => return Err("an observation expression is not closed".into()),
            }
            if !self.or_follows(&closing)? {
                return Ok(());
            }
        }
    }
}

/// The certex observable type an object path of a comparison stands for.
fn type_of_path(path: &str) -> Option<ObservableType> {
    let (object, prop) = path.split_once(':')?;
    let hash = |p: &str| {
        p.strip_prefix("hashes.")
            .map(|k| k.trim_matches('\'').to_ascii_uppercase().replace('-', ""))
    };
    Some(match (object, prop) {
        ("ipv4-addr", "value") => ObservableType::Ipv4,
        ("ipv6-addr", "value") => ObservableType::Ipv6,
        ("domain-name", "value") => ObservableType::Domain,
        ("url", "value") => ObservableType::Url,
        ("email-addr", "value") => ObservableType::Email,
        ("autonomous-system", "number") => ObservableType::Asn,
        ("file", p) => match hash(p).as_deref() {
            Some("SHA256") => ObservableType::Sha256,
            Some("SHA1") => ObservableType::Sha1,
            Some("MD5") => ObservableType::Md5,
            _ => return None,
        },
        _ => return None,
    })
}

/// The certex observable for a STIX value of a given type: addresses with a
/// prefix length become CIDR blocks, AS numbers are written `AS<n>`, hashes
/// lowercase; `Err` if the value is not valid for its type.
pub fn observable(kind: ObservableType, value: &str) -> Result<(ObservableType, String), String> {
    let (kind, value) = match kind {
        ObservableType::Ipv4 | ObservableType::Ipv6 if value.contains('/') => {
            (ObservableType::Cidr, value.to_owned())
        }
        ObservableType::Asn => {
            let digits = value.strip_prefix("AS").unwrap_or(value);
            (kind, format!("AS{digits}"))
        }
        ObservableType::Sha256 | ObservableType::Sha1 | ObservableType::Md5 => {
            (kind, value.to_ascii_lowercase())
        }
        _ => (kind, value.to_owned()),
    };
    check_observable(kind, &value)?;
    Ok((kind, value))
}

/// Reads a STIX pattern: `Err` says why the whole pattern is not imported;
/// `Ok` lists the observables of its supported comparisons and a reason for
/// each comparison left out (an OR alternative certex has no type for).
pub fn read(pattern: &str) -> Result<PatternYield, String> {
    if pattern.len() > MAX_PATTERN {
        return Err(format!(
            "the pattern is {} bytes long, over the limit of {MAX_PATTERN}",
            pattern.len()
        ));
    }
    let mut p = Parser {
        toks: tokens(pattern)?,
        at: 0,
        depth: 0,
        found: Vec::new(),
    };
    p.pattern(Token::Close)?;
    if let Some(t) = p.peek() {
        return Err(format!("unexpected {t:?} after the pattern"));
    }
    let mut out = PatternYield::default();
    for c in p.found {
        let Some(kind) = type_of_path(&c.path) else {
            out.skipped
                .push(format!("{} has no certex observable type", show(&c.path)));
            continue;
        };
        let value = match (&c.value, kind) {
            (Token::Str(s), _) => s.clone(),
            (Token::Int(n), ObservableType::Asn) => n.clone(),
            _ => {
                out.skipped
                    .push(format!("{} needs a string value", show(&c.path)));
                continue;
            }
        };
        match observable(kind, &value) {
            Ok(o) if !out.observables.contains(&o) => out.observables.push(o),
            Ok(_) => {}
            Err(e) => out.skipped.push(format!("{}: {e}", show(&c.path))),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(p: &str) -> Vec<(ObservableType, String)> {
        read(p).unwrap().observables
    }

    #[test]
    fn simple_comparisons() {
        assert_eq!(
            obs("[ipv4-addr:value = '203.0.113.7']"),
            vec![(ObservableType::Ipv4, "203.0.113.7".into())]
        );
        assert_eq!(
            obs("[ipv4-addr:value = '198.51.100.0/24']"),
            vec![(ObservableType::Cidr, "198.51.100.0/24".into())]
        );
        assert_eq!(
            obs("[ipv6-addr:value = '2001:db8::1']"),
            vec![(ObservableType::Ipv6, "2001:db8::1".into())]
        );
        assert_eq!(
            obs("[domain-name:value='evil.example']"),
            vec![(ObservableType::Domain, "evil.example".into())]
        );
        assert_eq!(
            obs("[url:value = 'https://evil.example/a?b=c']"),
            vec![(ObservableType::Url, "https://evil.example/a?b=c".into())]
        );
        assert_eq!(
            obs("[email-addr:value = 'x@evil.example']"),
            vec![(ObservableType::Email, "x@evil.example".into())]
        );
        let sha = "A".repeat(64);
        assert_eq!(
            obs(&format!("[file:hashes.'SHA-256' = '{sha}']")),
            vec![(ObservableType::Sha256, "a".repeat(64))]
        );
        assert_eq!(
            obs(&format!("[file:hashes.SHA256 = '{sha}']")),
            vec![(ObservableType::Sha256, "a".repeat(64))]
        );
        assert_eq!(
            obs(&format!("[file:hashes.'SHA-1' = '{}']", "b".repeat(40))),
            vec![(ObservableType::Sha1, "b".repeat(40))]
        );
        assert_eq!(
            obs(&format!("[file:hashes.MD5 = '{}']", "c".repeat(32))),
            vec![(ObservableType::Md5, "c".repeat(32))]
        );
        assert_eq!(
            obs("[autonomous-system:number = 64500]"),
            vec![(ObservableType::Asn, "AS64500".into())]
        );
    }

    #[test]
    fn or_gives_several_observables() {
        let y = read(
            "[ipv4-addr:value = '203.0.113.7' OR domain-name:value = 'evil.example'] \
             OR ([url:value = 'http://evil.example/x'] OR [file:name = 'a.exe'])",
        )
        .unwrap();
        assert_eq!(y.observables.len(), 3);
        assert_eq!(y.skipped.len(), 1, "{:?}", y.skipped);
        assert!(y.skipped[0].contains("file:name"));
        // Repeated values count once.
        assert_eq!(
            obs("[ipv4-addr:value = '203.0.113.7' OR (ipv4-addr:value = '203.0.113.7')]").len(),
            1
        );
    }

    #[test]
    fn richer_patterns_are_refused_with_a_reason() {
        for (p, why) in [
            (
                "[ipv4-addr:value = '1.2.3.4' AND domain-name:value = 'a.example']",
                "AND",
            ),
            (
                "[ipv4-addr:value = '1.2.3.4'] FOLLOWEDBY [ipv4-addr:value = '1.2.3.5']",
                "FOLLOWEDBY",
            ),
            ("[ipv4-addr:value = '1.2.3.4'] WITHIN 5 SECONDS", "WITHIN"),
            ("[ipv4-addr:value != '1.2.3.4']", "!="),
            ("[domain-name:value LIKE '%.example']", "LIKE"),
            ("[ipv4-addr:value ISSUBSET '1.2.3.0/24']", "ISSUBSET"),
            ("", "empty"),
            ("ipv4-addr:value = '1.2.3.4'", "expected ["),
        ] {
            let e = read(p).unwrap_err();
            assert!(e.contains(why), "{p}: {e}");
        }
    }

    #[test]
    fn bad_values_are_skipped_not_imported() {
        let y = read("[ipv4-addr:value = 'not-an-ip' OR ipv4-addr:value = '1.2.3.4']").unwrap();
        assert_eq!(y.observables.len(), 1);
        assert!(y.skipped[0].contains("IPv4"), "{:?}", y.skipped);
        let y = read("[file:hashes.'SHA-256' = 'abc']").unwrap();
        assert!(y.observables.is_empty());
        assert_eq!(y.skipped.len(), 1);
    }

    #[test]
    fn hostile_input_never_panics() {
        // Quotes and escapes.
        assert_eq!(
            obs(r"[url:value = 'http://evil.example/it\'s']"),
            vec![(ObservableType::Url, "http://evil.example/it's".into())]
        );
        for p in [
            "[url:value = 'open",
            r"[url:value = 'x\q']",
            r"[url:value = 'x\",
            "[ipv4-addr:value = '1.2.3.4'",
            "[ipv4-addr:value = '1.2.3.4']]",
            "]]]][[[[",
            "[[ipv4-addr:value = '1.2.3.4']]",
            "[ipv4-addr:value =]",
            "[ipv4-addr:value '1.2.3.4']",
            "[file:hashes.'SHA-256 = 'x']",
            "[x:y = t'2020-01-01T00:00:00Z']",
            "[x:y = h'ff']",
            "[ipv4-addr:value = '1.2.3.4' OR]",
            "[OR ipv4-addr:value = '1.2.3.4']",
            "[\u{0}]",
            "[ipv4-addr:value = '1.2.3.4'] OR",
            "([ipv4-addr:value = '1.2.3.4']",
        ] {
            assert!(read(p).is_err(), "{p:?} should be refused");
        }
        let deep = format!(
            "{}[ipv4-addr:value = '1.2.3.4']{}",
            "(".repeat(5_000),
            ")".repeat(5_000)
        );
        assert!(read(&deep).unwrap_err().contains("nested"));
        let deep = format!(
            "[{}ipv4-addr:value = '1.2.3.4'{}]",
            "(".repeat(100),
            ")".repeat(100)
        );
        assert!(read(&deep).unwrap_err().contains("nested"));
        let huge = format!("[url:value = '{}']", "a".repeat(MAX_PATTERN));
        assert!(read(&huge).unwrap_err().contains("over the limit"));
        let long_value = format!("[url:value = 'http://e.example/{}']", "a".repeat(5000));
        let y = read(&long_value).unwrap();
        assert!(y.observables.is_empty() && y.skipped[0].contains("over the limit"));
        let many = format!(
            "[{}]",
            vec!["ipv4-addr:value = '1.2.3.4'"; 2000].join(" OR ")
        );
        assert!(read(&many).unwrap_err().contains("comparisons"));
        // Non-ASCII and control characters inside literals are values, not syntax.
        let y = read("[domain-name:value = 'ex\u{7}ample.\u{1F600}']").unwrap();
        assert!(y.observables.is_empty());
    }
}
