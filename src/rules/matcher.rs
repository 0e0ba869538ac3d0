//! Name matching by hashed label suffixes: a name with L labels costs L hash look-ups,
//! whatever the number of rules.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::model::{MatchKind, Rule, RuleSet};

/// A glob pattern, indexed by its trailing labels without wildcards.
struct Glob {
    entry: u32,
    /// The labels in front of the fixed suffix, one pattern each.
    head: Vec<String>,
}

/// One pattern of one rule.
struct Entry {
    rule: u32,
    pattern: u32,
    /// Labels the pattern covers and its kind's rank: "the most specific rule wins".
    labels: u16,
    rank: u8,
}

pub struct Matcher {
    /// Pattern text -> index into `entries`.
    exact: FxHashMap<Arc<str>, u32>,
    suffix: FxHashMap<Arc<str>, u32>,
    glob: FxHashMap<String, Vec<Glob>>,
    entries: Vec<Entry>,
}

/// `*` any run of characters, `?` exactly one, inside one label. Linear-time backtracking
/// to the last star, so a crafted label cannot make it blow up.
fn glob_label(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pat.len() && (pat[p] == b'?' || pat[p] == s[i]) {
            p += 1;
            i += 1;
        } else if p < pat.len() && pat[p] == b'*' {
            star = Some((p, i));
            p += 1;
        } else if let Some((sp, si)) = star {
            p = sp + 1;
            i = si + 1;
            star = Some((sp, si + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

impl Matcher {
    pub fn new(set: &RuleSet) -> Matcher {
        // Sized up front: a list of 100,000 names would otherwise rehash a dozen times.
        let count = |k: MatchKind| set.rules.iter().filter(|r| r.kind == k).map(|r| r.patterns.len()).sum::<usize>();
        let mut m = Matcher {
            exact: FxHashMap::with_capacity_and_hasher(count(MatchKind::Exact), Default::default()),
            suffix: FxHashMap::with_capacity_and_hasher(count(MatchKind::Suffix), Default::default()),
            glob: FxHashMap::default(),
            entries: Vec::with_capacity(set.rules.iter().map(|r| r.patterns.len()).sum()),
        };
        for (ri, r) in set.rules.iter().enumerate().filter(|(_, r)| r.kind.is_name()) {
            for (pi, pattern) in r.patterns.iter().enumerate() {
                let e = m.entries.len() as u32;
                let is_glob = r.kind == MatchKind::Glob && pattern.contains(['*', '?']);
                let rank = match (r.kind, is_glob) {
                    (MatchKind::Glob, true) => 2,
                    (MatchKind::Suffix, _) => 1,
                    _ => 3,
                };
                let labels = pattern.split('.').count().min(u16::MAX as usize) as u16;
                m.entries.push(Entry { rule: ri as u32, pattern: pi as u32, labels, rank });
                // A later duplicate pattern of the same kind never wins; the first one stays.
                match (r.kind, is_glob) {
                    (MatchKind::Suffix, _) => {
                        m.suffix.entry(Arc::clone(pattern)).or_insert(e);
                    }
                    (MatchKind::Glob, true) => {
                        let labels: Vec<&str> = pattern.split('.').collect();
                        let fixed = labels.iter().rev().take_while(|l| !l.contains(['*', '?'])).count();
                        let split = labels.len() - fixed;
                        m.glob
                            .entry(labels[split..].join("."))
                            .or_default()
                            .push(Glob { entry: e, head: labels[..split].iter().map(|s| s.to_string()).collect() });
                    }
                    _ => {
                        m.exact.entry(Arc::clone(pattern)).or_insert(e);
                    }
                }
            }
        }
        m
    }

    /// The most specific rule matching a normalised name: (rule, pattern) indexes.
    pub fn find(&self, name: &str) -> Option<(u32, u32)> {
        self.find_entry(name).map(|e| (self.entries[e as usize].rule, self.entries[e as usize].pattern))
    }

    /// The most specific pattern matching a normalised name (lowercase, no trailing dot).
    fn find_entry(&self, name: &str) -> Option<u32> {
        if name.is_empty() || name.len() > 1024 {
            return None;
        }
        let mut best: Option<u32> = None;
        let mut consider = |r: u32| {
            let key = |r: u32| {
                let e = &self.entries[r as usize];
                (e.labels, e.rank, u32::MAX - r)
            };
            if best.is_none_or(|b| key(r) > key(b)) {
                best = Some(r);
            }
        };
        if let Some(&r) = self.exact.get(name) {
            consider(r);
        }
        // Walk the suffixes: "a.b.c", "b.c", "c"; `head` is how many labels lie in front.
        let mut start = 0;
        let mut head = 0usize;
        loop {
            let suffix = &name[start..];
            if let Some(&r) = self.suffix.get(suffix) {
                consider(r);
            }
            if !self.glob.is_empty() {
                self.globs_at(name, suffix, start, head, &mut consider);
            }
            match suffix.find('.') {
                Some(dot) => {
                    start += dot + 1;
                    head += 1;
                }
                None => break,
            }
        }
        // Globs whose every label has a wildcard are keyed by "".
        if let Some(gs) = self.glob.get("") {
            for g in gs {
                if g.head.len() == head + 1 && Self::head_matches(&g.head, name) {
                    consider(g.entry);
                }
            }
        }
        best
    }

    fn globs_at(&self, name: &str, suffix: &str, start: usize, head: usize, consider: &mut impl FnMut(u32)) {
        let Some(gs) = self.glob.get(suffix) else {
            return;
        };
        if start == 0 {
            return; // a glob needs at least one label in front of its fixed part
        }
        let front = &name[..start - 1];
        for g in gs {
            if g.head.len() == head && Self::head_matches(&g.head, front) {
                consider(g.entry);
            }
        }
    }

    fn head_matches(head: &[String], front: &str) -> bool {
        let mut labels = front.split('.');
        head.iter().all(|p| labels.next().is_some_and(|l| glob_label(p.as_bytes(), l.as_bytes())))
            && labels.next().is_none()
    }
}

/// HTTP paths and User-Agents longer than this are matched on their first bytes only.
const HTTP_MATCH_MAX: usize = 2048;

/// Rules and their matcher together.
pub struct Rules {
    pub set: RuleSet,
    matcher: Matcher,
    /// `http-path` and `user-agent` patterns (few: a scan is cheap), with their rule.
    paths: Vec<(u32, Arc<str>)>,
    agents: Vec<(u32, Arc<str>)>,
    /// `port` rules: (port, IP protocol number) -> rule.
    ports: Vec<(u16, u8, u32)>,
}

/// `13000/tcp` -> (13000, 6).
pub fn parse_port(p: &str) -> Option<(u16, u8)> {
    let (n, proto) = p.split_once('/')?;
    let proto = match proto {
        "tcp" => crate::decode::IPPROTO_TCP,
        "udp" => crate::decode::IPPROTO_UDP,
        _ => return None,
    };
    Some((n.parse::<u16>().ok().filter(|n| *n > 0)?, proto))
}

/// `text`, cut to [`HTTP_MATCH_MAX`] bytes and lowercased, for [`glob_label`] against
/// lowercase patterns (`*` then spans '/' too).
fn lowered(text: &str) -> Vec<u8> {
    text.as_bytes()[..text.len().min(HTTP_MATCH_MAX)].iter().map(u8::to_ascii_lowercase).collect()
}

impl Rules {
    pub fn new(set: RuleSet) -> Rules {
        let matcher = Matcher::new(&set);
        let (mut paths, mut agents, mut ports) = (Vec::new(), Vec::new(), Vec::new());
        for (i, r) in set.rules.iter().enumerate() {
            for p in &r.patterns {
                match r.kind {
                    MatchKind::HttpPath => paths.push((i as u32, Arc::clone(p))),
                    MatchKind::UserAgent => agents.push((i as u32, Arc::clone(p))),
                    MatchKind::Port => ports.extend(parse_port(p).map(|(n, proto)| (n, proto, i as u32))),
                    _ => {}
                }
            }
        }
        Rules { set, matcher, paths, agents, ports }
    }

    /// An HTTP request that names nothing a rule matched: the rule its path (without the query)
    /// or its User-Agent matches, path first.
    pub fn find_http(&self, path: &str, user_agent: Option<&str>) -> Option<u32> {
        let find = |rules: &[(u32, Arc<str>)], text: &str| {
            if rules.is_empty() {
                return None;
            }
            let text = lowered(text);
            rules.iter().find(|(_, p)| glob_label(p.as_bytes(), &text)).map(|(r, _)| *r)
        };
        find(&self.paths, path.split(['?', '#']).next().unwrap_or(""))
            .or_else(|| find(&self.agents, user_agent?.trim()))
    }

    /// The `port` rule for a port and IP protocol (see `ksc`).
    pub fn find_port(&self, port: u16, proto: u8) -> Option<u32> {
        self.ports.iter().find(|(n, p, _)| *n == port && *p == proto).map(|(_, _, r)| *r)
    }

    pub fn find(&self, name: &str) -> Option<&Rule> {
        self.matcher.find(name).map(|(r, _)| &self.set.rules[r as usize])
    }

    /// The rule and the very pattern that matched.
    pub fn find_pattern(&self, name: &str) -> Option<(&Rule, &str)> {
        let (r, p) = self.matcher.find(name)?;
        let rule = &self.set.rules[r as usize];
        Some((rule, &rule.patterns[p as usize]))
    }

    pub fn find_index(&self, name: &str) -> Option<u32> {
        self.matcher.find(name).map(|(r, _)| r)
    }

    pub fn rule(&self, i: u32) -> &Rule {
        &self.set.rules[i as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::load::parse_into;

    fn rules(body: &str) -> Rules {
        let mut set = RuleSet::default();
        let text = format!("[vendor]\nid = \"v\"\nname = \"V\"\ncutoff = \"2024-09-29T04:00:00Z\"\n{body}");
        parse_into(&mut set, "t", &text).unwrap();
        Rules::new(set)
    }

    fn id<'a>(r: &'a Rules, name: &str) -> Option<&'a str> {
        r.find(name).map(|r| r.id.as_str())
    }

    #[test]
    fn most_specific_wins_and_decoys_fail() {
        let r = rules(
            r#"
[[rule]]
id = "any"
category = "other"
match = "suffix"
pattern = "kaspersky.com"
[[rule]]
id = "geo"
category = "update"
match = "suffix"
pattern = "geo.kaspersky.com"
[[rule]]
id = "dnl"
category = "update"
match = "glob"
pattern = "dnl-??.geo.kaspersky.com"
[[rule]]
id = "act"
category = "activation"
match = "exact"
pattern = "activation-v2.geo.kaspersky.com"
[[rule]]
id = "ksn"
category = "telemetry"
match = "glob"
pattern = "ksn-*-geo.kaspersky-labs.com"
"#,
        );
        assert_eq!(id(&r, "dnl-02.geo.kaspersky.com"), Some("dnl"));
        assert_eq!(id(&r, "dnl-002.geo.kaspersky.com"), Some("geo"));
        assert_eq!(id(&r, "activation-v2.geo.kaspersky.com"), Some("act"));
        assert_eq!(id(&r, "x.activation-v2.geo.kaspersky.com"), Some("geo"));
        assert_eq!(id(&r, "kaspersky.com"), Some("any"));
        assert_eq!(id(&r, "www.kaspersky.com"), Some("any"));
        assert_eq!(id(&r, "ksn-info-geo.kaspersky-labs.com"), Some("ksn"));
        assert_eq!(id(&r, "ksn--geo.kaspersky-labs.com"), Some("ksn"));
        assert_eq!(id(&r, "a.ksn-info-geo.kaspersky-labs.com"), None);
        for decoy in
            ["kaspersky.com.evil.test", "notkaspersky.com", "mykaspersky-labs.com", "com", "", "kaspersky\\x2ecom"]
        {
            assert_eq!(id(&r, decoy), None, "{decoy}");
        }
    }

    #[test]
    fn shipped_rules_classify_the_documented_names() {
        let r = Rules::new(crate::rules::load::load(None).unwrap());
        let cat = |n: &str| r.find(n).map(|r| r.category.as_str());
        assert_eq!(cat("dnl-02.geo.kaspersky.com"), Some("update"));
        assert_eq!(cat("s05.upd.kaspersky.com"), Some("update"));
        assert_eq!(cat("ksn-info-geo.kaspersky-labs.com"), Some("telemetry"));
        assert_eq!(cat("dc1.ksn.kaspersky-labs.com"), Some("telemetry"));
        assert_eq!(cat("activation-v2.kaspersky.com"), Some("activation"));
        assert_eq!(cat("agent.ksc.kaspersky.com"), Some("management"));
        assert_eq!(cat("opentip.kaspersky.com"), Some("excluded"));
        assert_eq!(cat("securelist.com"), Some("excluded"));
        assert_eq!(cat("usa.kaspersky.com"), Some("other"));
        for decoy in ["kaspersky.com.evil.test", "notkaspersky.com", "mykaspersky-labs.com"] {
            assert_eq!(cat(decoy), None, "{decoy}");
        }
    }

    #[test]
    fn http_paths_user_agents_and_ports() {
        let r = Rules::new(crate::rules::load::load(None).unwrap());
        let id = |i: Option<u32>| i.map(|i| r.rule(i).id.as_str());
        for path in [
            "/diffs/bases/av/kdb/i386/kdb-i386-0607g.xml.dif",
            "/bases/av/kdb/i386/kdb-i386-0607g.xml",
            "/Updates/index/u0607g.xml.dif?x=1",
            "/index/U0607G.XML",
        ] {
            assert_eq!(id(r.find_http(path, None)), Some("kl-update-http-path"), "{path}");
        }
        assert_eq!(id(r.find_http("/", Some("@hEKzPRNa0lItsGIjysY"))), Some("kl-update-http-user-agent"));
        for (path, ua) in [("/", Some("curl/8.0")), ("/bases/", None), ("/index.html", None), ("/x?/diffs/", None)] {
            assert_eq!(r.find_http(path, ua), None, "{path} {ua:?}");
        }
        // Long hostile paths cost a bounded scan.
        assert_eq!(r.find_http(&"/a".repeat(100_000), Some(&"x".repeat(100_000))), None);
        assert_eq!(id(r.find_port(13000, crate::decode::IPPROTO_TCP)), Some("kl-management-ksc-ports"));
        assert_eq!(id(r.find_port(15000, crate::decode::IPPROTO_UDP)), Some("kl-management-ksc-ports"));
        assert_eq!(r.find_port(15000, crate::decode::IPPROTO_TCP), None);
        assert!(r.find("13000/tcp").is_none(), "port and path patterns are never names");
    }
}
