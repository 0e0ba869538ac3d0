//! Loading rules files (TOML), with errors that name the file, line and field.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use thiserror::Error;
use toml::Spanned;

use super::model::{Category, MatchKind, Rule, RuleSet, Vendor};

/// The rules shipped with kavwatch, compiled in so the binary works from any directory.
pub const SHIPPED: &str = include_str!("../../rules/kaspersky.toml");
pub const SHIPPED_NAME: &str = "rules/kaspersky.toml (built in)";

#[derive(Debug, Error)]
pub enum RulesError {
    #[error("{file}: {source}")]
    Io { file: String, source: std::io::Error },
    #[error("{file}:{line}: {msg}")]
    Invalid { file: String, line: usize, msg: String },
    #[error("{0}: no .toml rules files in this directory")]
    EmptyDir(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    vendor: Spanned<RawVendor>,
    #[serde(default)]
    sources: BTreeMap<String, String>,
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVendor {
    id: String,
    name: String,
    #[serde(default)]
    version: String,
    cutoff: Spanned<String>,
    #[serde(default)]
    legal_reference: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: Spanned<String>,
    category: Spanned<String>,
    #[serde(rename = "match")]
    kind: Spanned<String>,
    #[serde(default)]
    pattern: Option<Spanned<String>>,
    /// Many names sharing one rule: far cheaper to load than one table per name.
    #[serde(default)]
    patterns: Option<Spanned<Vec<String>>>,
    /// A text file of names, one per line (`#` comments), relative to the rules file.
    #[serde(default)]
    patterns_file: Option<Spanned<String>>,
    #[serde(default)]
    source: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    confidence: String,
    #[serde(default)]
    note: String,
}

/// Parses an RFC 3339 instant into nanoseconds since the epoch.
pub fn parse_instant(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s).ok()?.timestamp_nanos_opt()
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset.min(text.len())).map_or(1, |t| t.bytes().filter(|&b| b == b'\n').count() + 1)
}

/// Checks a pattern: lowercase labels of letters, digits, '-', '_' (and '*', '?' for globs);
/// for `http-path` and `user-agent`, lowercase printable ASCII without spaces; for `port`,
/// `N/tcp` or `N/udp`.
fn check_pattern(p: &str, kind: MatchKind) -> Result<(), String> {
    match kind {
        MatchKind::Port => {
            return crate::rules::matcher::parse_port(p)
                .map(|_| ())
                .ok_or_else(|| format!("pattern {p:?}: expected PORT/tcp or PORT/udp, e.g. 13000/tcp"));
        }
        MatchKind::HttpPath | MatchKind::UserAgent => {
            if kind == MatchKind::HttpPath && !p.starts_with(['/', '*']) {
                return Err(format!("pattern {p:?}: an HTTP path pattern starts with '/' or '*'"));
            }
            return match p.chars().find(|c| !c.is_ascii_graphic() || c.is_ascii_uppercase()) {
                Some(c) => {
                    Err(format!("pattern {p:?}: character {c:?} not allowed (lowercase printable ASCII, no spaces)"))
                }
                None if p.is_empty() => Err("empty pattern".into()),
                None => Ok(()),
            };
        }
        _ => {}
    }
    if p.is_empty() || p.starts_with('.') || p.ends_with('.') || p.contains("..") {
        return Err(format!("pattern {p:?}: empty label or leading/trailing dot"));
    }
    let glob = kind == MatchKind::Glob;
    if let Some(c) = p.chars().find(|&c| {
        !(c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || matches!(c, '-' | '_' | '.')
            || (glob && matches!(c, '*' | '?')))
    }) {
        let allowed =
            if glob { "lowercase letters, digits, '-', '_', '*', '?'" } else { "lowercase letters, digits, '-', '_'" };
        return Err(format!("pattern {p:?}: character {c:?} not allowed ({allowed})"));
    }
    Ok(())
}

/// Parses one rules file's text into `set`.
pub fn parse_into(set: &mut RuleSet, file: &str, text: &str) -> Result<(), RulesError> {
    let err =
        |offset: usize, msg: String| RulesError::Invalid { file: file.to_string(), line: line_of(text, offset), msg };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let off = e.span().map_or(0, |s| s.start);
        err(off, e.message().trim().replace('\n', " "))
    })?;
    let vspan = raw.vendor.span();
    let v = raw.vendor.into_inner();
    let cutoff_ns = parse_instant(v.cutoff.get_ref()).ok_or_else(|| {
        err(v.cutoff.span().start, format!("vendor.cutoff: {:?} is not an RFC 3339 instant", v.cutoff.get_ref()))
    })?;
    if v.id.is_empty() {
        return Err(err(vspan.start, "vendor.id is empty".into()));
    }
    let vendor = set.vendors.len();
    set.vendors.push(Vendor {
        id: v.id,
        name: v.name,
        version: v.version,
        cutoff_ns,
        cutoff: v.cutoff.into_inner(),
        legal_reference: v.legal_reference,
        file: file.to_string(),
    });
    let mut ids: HashSet<String> = set.rules.iter().map(|r| r.id.clone()).collect();
    for r in raw.rule {
        let r = r.into_inner();
        let id = r.id.get_ref().clone();
        if id.is_empty() || !ids.insert(id.clone()) {
            return Err(err(r.id.span().start, format!("rule id {id:?} is empty or used twice")));
        }
        let category = Category::parse(r.category.get_ref()).ok_or_else(|| {
            err(r.category.span().start, format!("rule {id:?}: field `category`: unknown category {:?} (expected one of update, telemetry, activation, management, excluded, other)", r.category.get_ref()))
        })?;
        let kind = MatchKind::parse(r.kind.get_ref()).ok_or_else(|| {
            err(
                r.kind.span().start,
                format!(
                    "rule {id:?}: field `match`: unknown match kind {:?} (expected exact, suffix, glob, http-path, user-agent or port)",
                    r.kind.get_ref()
                ),
            )
        })?;
        let patterns = match (r.pattern, r.patterns, r.patterns_file) {
            (Some(p), None, None) => {
                check_pattern(p.get_ref(), kind)
                    .map_err(|m| err(p.span().start, format!("rule {id:?}: field `pattern`: {m}")))?;
                vec![Arc::from(p.into_inner())]
            }
            (None, Some(ps), None) if !ps.get_ref().is_empty() => {
                for p in ps.get_ref() {
                    check_pattern(p, kind)
                        .map_err(|m| err(ps.span().start, format!("rule {id:?}: field `patterns`: {m}")))?;
                }
                ps.into_inner().into_iter().map(Arc::from).collect()
            }
            (None, None, Some(f)) => read_patterns_file(file, f.get_ref(), kind).map_err(|e| match e {
                RulesError::Io { file: f2, source } => {
                    err(f.span().start, format!("rule {id:?}: field `patterns_file`: {f2}: {source}"))
                }
                other => other,
            })?,
            _ => {
                return Err(err(
                    r.id.span().start,
                    format!(
                        "rule {id:?}: give exactly one of `pattern`, a non-empty `patterns` list, or `patterns_file`"
                    ),
                ));
            }
        };
        let (source, source_at) = match r.source {
            Some(s) => (s.get_ref().clone(), s.span().start),
            None => (Vec::new(), r.id.span().start),
        };
        for s in &source {
            if !raw.sources.contains_key(s) {
                return Err(err(source_at, format!("rule {id:?}: field `source`: {s:?} is not a key of [sources]")));
            }
        }
        set.rules.push(Rule { id, category, kind, patterns, source, confidence: r.confidence, note: r.note, vendor });
    }
    Ok(())
}

/// Names from a text file, one per line; blank lines and `#` comments skipped. Errors name
/// that file and line.
fn read_patterns_file(rules_file: &str, rel: &str, kind: MatchKind) -> Result<Vec<Arc<str>>, RulesError> {
    let base = Path::new(rules_file).parent().unwrap_or(Path::new("."));
    let path = base.join(rel);
    let name = path.display().to_string();
    let text = std::fs::read_to_string(&path).map_err(|source| RulesError::Io { file: name.clone(), source })?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let p = line.split('#').next().unwrap_or("").trim();
        if p.is_empty() {
            continue;
        }
        check_pattern(p, kind).map_err(|msg| RulesError::Invalid { file: name.clone(), line: n + 1, msg })?;
        out.push(Arc::from(p));
    }
    if out.is_empty() {
        return Err(RulesError::Invalid { file: name, line: 1, msg: "no names in this file".into() });
    }
    Ok(out)
}

/// The .toml files a path names: the file itself, or a directory's, in name order.
fn rule_files(path: &Path) -> Result<Vec<PathBuf>, RulesError> {
    let io = |source| RulesError::Io { file: path.display().to_string(), source };
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml") && p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(RulesError::EmptyDir(path.display().to_string()));
    }
    Ok(files)
}

/// Loads a rules file or directory, or the shipped rules when `path` is `None`.
pub fn load(path: Option<&Path>) -> Result<RuleSet, RulesError> {
    let mut set = RuleSet::default();
    match path {
        None => parse_into(&mut set, SHIPPED_NAME, SHIPPED)?,
        Some(p) => {
            for f in rule_files(p)? {
                let name = f.display().to_string();
                let text =
                    std::fs::read_to_string(&f).map_err(|source| RulesError::Io { file: name.clone(), source })?;
                parse_into(&mut set, &name, &text)?;
            }
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "[vendor]\nid = \"v\"\nname = \"V\"\ncutoff = \"2024-09-29T04:00:00Z\"\n[sources]\nS = \"https://example.test\"\n";

    fn parse(rules: &str) -> Result<RuleSet, RulesError> {
        let mut set = RuleSet::default();
        parse_into(&mut set, "t.toml", &format!("{HEAD}{rules}")).map(|_| set)
    }

    #[test]
    fn shipped_rules_load() {
        let set = load(None).unwrap();
        assert_eq!(set.vendors[0].cutoff_ns, parse_instant("2024-09-29T04:00:00Z").unwrap());
        assert!(set.rules.len() > 20);
    }

    #[test]
    fn a_rule_may_list_many_patterns() {
        let set = parse(
            "[[rule]]\nid = \"list\"\ncategory = \"other\"\nmatch = \"suffix\"\npatterns = [\"a.test\", \"b.test\"]\n",
        )
        .unwrap();
        assert_eq!(set.rules[0].patterns, vec![Arc::from("a.test"), Arc::from("b.test")]);
        let rules = crate::rules::matcher::Rules::new(set);
        assert_eq!(rules.find_pattern("x.b.test").map(|(r, p)| (r.id.as_str(), p)), Some(("list", "b.test")));
        let e = parse(
            "[[rule]]\nid = \"a\"\ncategory = \"other\"\nmatch = \"exact\"\npatterns = [\"ok.test\", \"Bad.test\"]\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("field `patterns`") && e.to_string().contains("Bad.test"), "{e}");
        let e = parse("[[rule]]\nid = \"a\"\ncategory = \"other\"\nmatch = \"exact\"\n").unwrap_err();
        assert!(e.to_string().contains("exactly one of `pattern`"), "{e}");
    }

    #[test]
    fn errors_name_line_and_field() {
        let e = parse("[[rule]]\nid = \"a\"\ncategory = \"updates\"\nmatch = \"exact\"\npattern = \"x.test\"\n")
            .unwrap_err();
        assert_eq!(e.to_string().split(": rule").next().unwrap(), "t.toml:9");
        assert!(e.to_string().contains("field `category`"), "{e}");
        let e = parse("[[rule]]\nid = \"a\"\ncategory = \"update\"\nmatch = \"exact\"\npattern = \"X.test\"\n")
            .unwrap_err();
        assert!(e.to_string().starts_with("t.toml:11:") && e.to_string().contains("`pattern`"), "{e}");
        let e = parse("[[rule]]\nid = \"a\"\ncategory = \"update\"\nmatch = \"exact\"\npattern = \"x.test\"\nsource = [\"NOPE\"]\n").unwrap_err();
        assert!(e.to_string().contains("NOPE"), "{e}");
        let e = parse("[[rule]]\nid = \"a\"\n").unwrap_err();
        assert!(e.to_string().starts_with("t.toml:"), "{e}");
    }

    #[test]
    fn path_user_agent_and_port_patterns_are_checked() {
        let rule = |kind: &str, p: &str| {
            parse(&format!("[[rule]]\nid = \"a\"\ncategory = \"update\"\nmatch = \"{kind}\"\npattern = \"{p}\"\n"))
        };
        assert!(rule("http-path", "/diffs/*").is_ok());
        assert!(rule("user-agent", "@*").is_ok());
        assert!(rule("port", "13000/tcp").is_ok());
        for (kind, p) in [
            ("http-path", "diffs/*"),
            ("http-path", "/a b"),
            ("http-path", "/Diffs"),
            ("port", "13000"),
            ("port", "0/udp"),
            ("port", "70000/tcp"),
            ("port", "13000/sctp"),
        ] {
            let e = rule(kind, p).unwrap_err().to_string();
            assert!(e.contains("field `pattern`"), "{kind} {p}: {e}");
        }
        assert!(rule("regex", "x").unwrap_err().to_string().contains("http-path, user-agent or port"));
    }
}
