//! The shape of `src/` (ARCHITECTURE.md): wings by responsibility,
//! dependencies pointing down (`cli` → `broker`/`client` → `log`/`rules`), no
//! two files importing each other directly or through a loop, sled and rustls
//! each behind one module, and a `//!` paragraph at the top of every file.
//!
//! Imports are read from the source text: every `crate::…`, `super::…` and
//! `self::…` path (brace groups expanded) outside comments and the
//! `#[cfg(test)]` module, resolved to the file that defines the module.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `src/` but `main.rs` (the binary imports the
/// library by name), keyed by module path (`""` is the crate root).
fn modules() -> BTreeMap<String, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&root, &mut files);
    let mut map = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&root).unwrap().with_extension("");
        let mut parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if parts == ["main"] {
            continue;
        }
        if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
            parts.pop();
        }
        map.insert(parts.join("::"), f);
    }
    map
}

/// The source without comments, string literals and the test module.
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => &text[..],
    };
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && i + 2 < b.len() && (b[i + 2] == b'\'' || b[i + 1] == b'\\') {
            // A char literal such as '"' or '\n' (lifetimes have no closing quote).
            let end = b[i + 1..].iter().position(|c| *c == b'\'').unwrap_or(0);
            i += end + 2;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// Expands the path tree starting at `s` (after `crate::` etc.) into full
/// paths: `a::{b, c::{d, e}}` → `a::b`, `a::c::d`, `a::c::e`.
fn expand(s: &str) -> Vec<String> {
    fn tree(s: &[u8], i: &mut usize, prefix: &str, out: &mut Vec<String>) {
        let mut path = prefix.to_owned();
        loop {
            let start = *i;
            while *i < s.len() && (s[*i].is_ascii_alphanumeric() || s[*i] == b'_') {
                *i += 1;
            }
            let ident = std::str::from_utf8(&s[start..*i]).unwrap();
            if !ident.is_empty() && ident != "self" {
                if !path.is_empty() {
                    path.push_str("::");
                }
                path.push_str(ident);
            }
            if s[*i..].starts_with(b"::") {
                *i += 2;
                if s.get(*i) == Some(&b'{') {
                    *i += 1;
                    loop {
                        while s
                            .get(*i)
                            .is_some_and(|c| c.is_ascii_whitespace() || *c == b',')
                        {
                            *i += 1;
                        }
                        if s.get(*i).is_none_or(|c| *c == b'}') {
                            *i += 1;
                            return;
                        }
                        tree(s, i, &path, out);
                    }
                }
            } else {
                out.push(path);
                return;
            }
        }
    }
    let mut out = Vec::new();
    let mut i = 0;
    tree(s.as_bytes(), &mut i, "", &mut out);
    out
}

/// The files each file imports.
fn imports(mods: &BTreeMap<String, PathBuf>) -> BTreeMap<String, BTreeSet<String>> {
    let mut edges = BTreeMap::new();
    for (module, path) in mods {
        let code = code_of(path);
        let is_dir_module = path.ends_with("mod.rs") || path.ends_with("lib.rs");
        let own: Vec<&str> = module.split("::").filter(|p| !p.is_empty()).collect();
        let mut targets = BTreeSet::new();
        for (anchor, base) in [
            ("crate::", Vec::new()),
            (
                "self::",
                if is_dir_module {
                    own.clone()
                } else {
                    own[..own.len().saturating_sub(1)].to_vec()
                },
            ),
            ("super::", {
                let mut b = own.clone();
                b.pop();
                if is_dir_module {
                    b.pop();
                }
                b
            }),
        ] {
            let mut from = 0;
            while let Some(at) = code[from..].find(anchor) {
                let at = from + at;
                from = at + anchor.len();
                // `crate::` inside a longer identifier or path is not an anchor.
                if at > 0 {
                    let prev = code.as_bytes()[at - 1];
                    if prev.is_ascii_alphanumeric() || prev == b'_' || prev == b':' {
                        continue;
                    }
                }
                for p in expand(&code[from..]) {
                    let mut full: Vec<&str> = base.clone();
                    full.extend(p.split("::").filter(|x| !x.is_empty()));
                    // The longest prefix that names a module file.
                    let target = (0..=full.len())
                        .rev()
                        .map(|k| full[..k].join("::"))
                        .find(|m| mods.contains_key(m))
                        .unwrap_or_default();
                    if &target != module {
                        targets.insert(target);
                    }
                }
            }
        }
        edges.insert(module.clone(), targets);
    }
    edges
}

fn wing(module: &str) -> &str {
    module.split("::").next().unwrap_or("")
}

#[test]
fn at_most_five_files_at_the_top_of_src() {
    let top: Vec<String> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "rs"))
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        top.len() <= 5,
        "src/ holds {} .rs files at its top: {top:?}",
        top.len()
    );
}

#[test]
fn the_import_reader_sees_groups_super_and_self() {
    assert_eq!(
        expand("a::{b, c::{d, e}, self};"),
        ["a::b", "a::c::d", "a::c::e", "a"]
    );
    assert_eq!(
        expand("rules::access::TrafficScope;"),
        ["rules::access::TrafficScope"]
    );
    let mods = modules();
    let edges = imports(&mods);
    // Known imports, one of each form, so the reader cannot silently see nothing.
    assert!(
        edges["broker::server"].contains("log::writer"),
        "{:?}",
        edges["broker::server"]
    );
    assert!(edges["rules::validate"].contains("error"));
    assert!(
        edges[""].is_empty(),
        "lib.rs imports nothing: {:?}",
        edges[""]
    );
}

#[test]
fn no_file_imports_itself_through_a_loop() {
    let mods = modules();
    let edges = imports(&mods);
    // Depth-first search for a back edge; reports the loop it finds.
    fn visit(
        m: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(m.to_owned(), 1);
        stack.push(m.to_owned());
        for next in edges.get(m).into_iter().flatten() {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                1 => {
                    let start = stack.iter().position(|s| s == next).unwrap();
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(next, edges, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(m.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in edges.keys() {
        if state.get(m.as_str()).copied().unwrap_or(0) == 0
            && let Some(cycle) = visit(m, &edges, &mut state, &mut Vec::new())
        {
            panic!("import loop: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn dependencies_point_down() {
    // Which wings each wing may import ("" is lib.rs, error.rs and proto).
    let allowed = |from: &str, to: &str| -> bool {
        let to_wing = if to == "error" { "" } else { wing(to) };
        match wing(from) {
            _ if to_wing.is_empty() || wing(from) == to_wing => true,
            "error" => to_wing == "rules",
            "log" => to_wing == "rules",
            "broker" => matches!(to_wing, "federation" | "interop" | "log" | "rules"),
            "client" => to_wing == "rules",
            "drill" => matches!(to_wing, "client" | "rules"),
            "federation" => matches!(to_wing, "client" | "log" | "rules"),
            "interop" => matches!(to_wing, "client" | "rules"),
            "witness" => matches!(to_wing, "client" | "rules"),
            "cli" => true,
            _ => false,
        }
    };
    let mods = modules();
    let mut wrong = Vec::new();
    for (from, tos) in imports(&mods) {
        for to in tos {
            if !allowed(&from, &to) {
                wrong.push(format!("{from} -> {to}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the wings' direction: {wrong:?}"
    );
}

#[test]
fn sled_and_rustls_each_behind_one_module() {
    for (module, path) in modules() {
        let code = code_of(&path);
        let uses = |name: &str| {
            code.match_indices(name).any(|(i, _)| {
                i == 0 || !matches!(code.as_bytes()[i - 1], b'_' | b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9')
            })
        };
        if module != "log::storage" {
            assert!(!uses("sled::"), "{module} uses sled: only log::storage may");
        }
        if module != "broker::transport" {
            assert!(
                !uses("rustls::") && !uses("tokio_rustls"),
                "{module} uses rustls: only broker::transport may"
            );
        }
    }
}

#[test]
fn every_file_says_its_job_first() {
    let mut files: Vec<PathBuf> = modules().into_values().collect();
    files.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/main.rs"));
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("//!"),
            "{} does not open with a //! paragraph",
            path.display()
        );
    }
}
