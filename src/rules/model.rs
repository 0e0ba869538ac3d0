//! What a rules file says: a vendor (with its cutoff) and its domain rules.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// What kind of contact a name stands for; it decides the host's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Update,
    Telemetry,
    Activation,
    Management,
    Excluded,
    Other,
}

impl Category {
    pub const ALL: [Category; 6] = [
        Category::Update,
        Category::Telemetry,
        Category::Activation,
        Category::Management,
        Category::Excluded,
        Category::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Update => "update",
            Category::Telemetry => "telemetry",
            Category::Activation => "activation",
            Category::Management => "management",
            Category::Excluded => "excluded",
            Category::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Update, telemetry, activation and management are what the ban forbids after the cutoff.
    pub fn is_banned_service(self) -> bool {
        matches!(self, Category::Update | Category::Telemetry | Category::Activation | Category::Management)
    }
}

/// How a rule's patterns are matched: against names (exact, suffix, glob), or, for traffic that
/// names nothing, against an HTTP request's path or User-Agent, or a port (`13000/tcp`) that the
/// Kaspersky Security Center detector watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MatchKind {
    Exact,
    Suffix,
    Glob,
    HttpPath,
    UserAgent,
    Port,
}

impl MatchKind {
    pub fn parse(s: &str) -> Option<MatchKind> {
        match s {
            "exact" => Some(MatchKind::Exact),
            "suffix" => Some(MatchKind::Suffix),
            "glob" => Some(MatchKind::Glob),
            "http-path" => Some(MatchKind::HttpPath),
            "user-agent" => Some(MatchKind::UserAgent),
            "port" => Some(MatchKind::Port),
            _ => None,
        }
    }

    /// Matched against DNS, SNI and Host names.
    pub fn is_name(self) -> bool {
        matches!(self, MatchKind::Exact | MatchKind::Suffix | MatchKind::Glob)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Vendor {
    pub id: String,
    pub name: String,
    pub version: String,
    /// Nanoseconds since the epoch.
    #[serde(skip)]
    pub cutoff_ns: i64,
    pub cutoff: String,
    pub legal_reference: String,
    /// The file it came from.
    pub file: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Rule {
    pub id: String,
    pub category: Category,
    #[serde(rename = "match")]
    pub kind: MatchKind,
    /// One name pattern (`pattern = "..."`) or many (`patterns = [...]`, e.g. an imported list).
    /// Shared with the matcher's index, so a list of 100,000 names is held once.
    pub patterns: Vec<Arc<str>>,
    pub source: Vec<String>,
    pub confidence: String,
    pub note: String,
    /// Index into [`RuleSet::vendors`].
    #[serde(skip)]
    pub vendor: usize,
}

/// All loaded rules.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub vendors: Vec<Vendor>,
    pub rules: Vec<Rule>,
}
