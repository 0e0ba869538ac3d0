//! Name matching by hashed label suffixes: a name with L labels costs L hash look-ups,
//! whatever the number of rules.

use rustc_hash::FxHashMap;

use super::model::{MatchKind, Rule, RuleSet};

/// A glob rule, indexed by its trailing labels without wildcards.
struct Glob {
    rule: u32,
    /// The labels in front of the fixed suffix, one pattern each.
    head: Vec<String>,
}

pub struct Matcher {
    exact: FxHashMap<String, u32>,
    suffix: FxHashMap<String, u32>,
    glob: FxHashMap<String, Vec<Glob>>,
    /// Labels each rule covers, for "the most specific rule wins".
    labels: Vec<u16>,
    rank: Vec<u8>,
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
        let mut m = Matcher {
            exact: FxHashMap::default(),
            suffix: FxHashMap::default(),
            glob: FxHashMap::default(),
            labels: Vec::with_capacity(set.rules.len()),
            rank: Vec::with_capacity(set.rules.len()),
        };
        for (i, r) in set.rules.iter().enumerate() {
            let i = i as u32;
            m.labels.push(r.pattern.split('.').count().min(u16::MAX as usize) as u16);
            let is_glob = r.kind == MatchKind::Glob && r.pattern.contains(['*', '?']);
            m.rank.push(match (r.kind, is_glob) {
                (MatchKind::Exact, _) | (MatchKind::Glob, false) => 3,
                (MatchKind::Glob, true) => 2,
                (MatchKind::Suffix, _) => 1,
            });
            // A later duplicate pattern of the same kind never wins; the first one stays.
            match (r.kind, is_glob) {
                (MatchKind::Exact, _) | (MatchKind::Glob, false) => {
                    m.exact.entry(r.pattern.clone()).or_insert(i);
                }
                (MatchKind::Suffix, _) => {
                    m.suffix.entry(r.pattern.clone()).or_insert(i);
                }
                (MatchKind::Glob, true) => {
                    let labels: Vec<&str> = r.pattern.split('.').collect();
                    let fixed = labels.iter().rev().take_while(|l| !l.contains(['*', '?'])).count();
                    let split = labels.len() - fixed;
                    m.glob
                        .entry(labels[split..].join("."))
                        .or_default()
                        .push(Glob { rule: i, head: labels[..split].iter().map(|s| s.to_string()).collect() });
                }
            }
        }
        m
    }

    /// The most specific rule matching a normalised name (lowercase, no trailing dot).
    pub fn find(&self, name: &str) -> Option<u32> {
        if name.is_empty() || name.len() > 1024 {
            return None;
        }
        let mut best: Option<u32> = None;
        let mut consider = |r: u32| {
            let key = |r: u32| (self.labels[r as usize], self.rank[r as usize], u32::MAX - r);
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
                    consider(g.rule);
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
                consider(g.rule);
            }
        }
    }

    fn head_matches(head: &[String], front: &str) -> bool {
        let mut labels = front.split('.');
        head.iter().all(|p| labels.next().is_some_and(|l| glob_label(p.as_bytes(), l.as_bytes())))
            && labels.next().is_none()
    }
}

/// Rules and their matcher together.
pub struct Rules {
    pub set: RuleSet,
    matcher: Matcher,
}

impl Rules {
    pub fn new(set: RuleSet) -> Rules {
        let matcher = Matcher::new(&set);
        Rules { set, matcher }
    }

    pub fn find(&self, name: &str) -> Option<&Rule> {
        self.matcher.find(name).map(|i| &self.set.rules[i as usize])
    }

    pub fn find_index(&self, name: &str) -> Option<u32> {
        self.matcher.find(name)
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
}
