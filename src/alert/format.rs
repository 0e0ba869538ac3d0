//! Renders an [`Alert`] for a SIEM: kavwatch JSON, ArcSight CEF and Elastic Common Schema (ECS),
//! and the RFC 5424 syslog message that carries any of them.
//!
//! Names come from an attacker's packets, so each format quotes its own special characters here,
//! whatever an alert's strings hold (`proto::name` already makes wire names printable ASCII, but
//! this module does not rely on it). Every output is printable ASCII (0x20..=0x7e) by
//! construction, so no raw control character (CR, LF, ESC, DEL...) and no non-ASCII byte ever
//! reaches a collector:
//! - JSON and ECS are written by serde_json; its formatter here also writes DEL and every
//!   non-ASCII character as `\uXXXX`, so every value round-trips exactly.
//! - CEF and syslog write each UTF-8 byte of a character outside 0x20..=0x7e as the text `\xHH`
//!   (lowercase hex, as `proto::name` does), then quote that text like any other (its backslash
//!   becomes `\\`): a parser gets the text `\xHH` back. Exceptions: CEF extension values keep CR
//!   and LF as CEF's own `\r` and `\n`; CEF header fields turn CR and LF into spaces.
//! - In comma-joined lists (CEF `cs1`/`cs2`/`cs3`, syslog `domains`/`rules`/`vlan`), a comma
//!   inside an item is written as the text `\x2c`, so that the list splits back into its items.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::io;
use std::net::IpAddr;
use std::str::FromStr;

use serde::Serialize;
use serde_json::json;

use super::{Alert, Evidence, Severity};
use crate::output::rfc3339;
use crate::rules::model::Category;

/// How alerts are rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// kavwatch's own JSON, one line.
    Json,
    /// ArcSight Common Event Format.
    Cef,
    /// Elastic Common Schema, one JSON line.
    Ecs,
}

impl Format {
    pub const ALL: [Format; 3] = [Format::Json, Format::Cef, Format::Ecs];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Cef => "cef",
            Format::Ecs => "ecs",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An alert format name that is none of `json`, `cef`, `ecs`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown alert format {0:?}: expected one of json, cef, ecs")]
pub struct ParseFormatError(pub String);

impl FromStr for Format {
    type Err = ParseFormatError;

    fn from_str(s: &str) -> Result<Format, ParseFormatError> {
        Format::ALL.into_iter().find(|f| f.as_str() == s).ok_or_else(|| ParseFormatError(s.to_string()))
    }
}

/// Renders `a` in format `f`; `version` (kavwatch's) is used by CEF only.
pub fn render(a: &Alert, f: Format, version: &str) -> String {
    match f {
        Format::Json => to_json(a),
        Format::Cef => to_cef(a, version),
        Format::Ecs => to_ecs(a),
    }
}

// ---------------------------------------------------------------------------------------------
// Shared pieces

/// Printable ASCII, the space included.
fn is_print(c: char) -> bool {
    matches!(c, ' '..='~')
}

/// Appends each UTF-8 byte of `c` as the text `\xHH`; `backslash` is how the format writes the
/// backslash of that text (`"\\"` where it is plain, `"\\\\"` where it must be escaped).
fn push_hex(out: &mut String, c: char, backslash: &str) {
    let mut buf = [0u8; 4];
    for b in c.encode_utf8(&mut buf).bytes() {
        out.push_str(backslash);
        let _ = write!(out, "x{b:02x}");
    }
}

/// Joins list items with commas, a comma inside an item written as the text `\x2c`. The result
/// still needs the quoting of the format it goes into.
fn join_list<T: AsRef<str>>(items: &[T]) -> String {
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for c in item.as_ref().chars() {
            if c == ',' {
                push_hex(&mut out, c, "\\");
            } else {
                out.push(c);
            }
        }
    }
    out
}

fn join_vlan(vlan: &[u16]) -> String {
    vlan.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
}

/// The vendor as a title: first letter in upper case ("kaspersky" -> "Kaspersky").
fn vendor_title(vendor: &str) -> Cow<'_, str> {
    match vendor.chars().next() {
        Some(c) if c.is_ascii_lowercase() => Cow::Owned(format!("{}{}", c.to_ascii_uppercase(), &vendor[1..])),
        _ => Cow::Borrowed(vendor),
    }
}

/// What the alert is about, e.g. "Kaspersky update contact after the US cutoff" (CEF Name, ECS
/// `rule.name`).
fn alert_name(a: &Alert) -> String {
    let when = if a.after_cutoff { "after" } else { "before" };
    format!("{} {} contact {when} the US cutoff", vendor_title(&a.vendor), a.category.as_str())
}

/// The rule an alert is filed under: its first rule id, else `kavwatch-<category>`.
fn rule_id(a: &Alert) -> Cow<'_, str> {
    match a.rule_ids.first() {
        Some(id) => Cow::Borrowed(id),
        None => Cow::Owned(format!("kavwatch-{}", a.category.as_str())),
    }
}

/// One line for people, e.g. "10.0.0.5: 3 Kaspersky update contacts (alert 2, 12 in total),
/// last ksn.kaspersky.com via dns" (CEF `msg`, ECS `message`).
fn summary(a: &Alert) -> String {
    let s = if a.count == 1 { "" } else { "s" };
    format!(
        "{}: {} {} {} contact{s} (alert {}, {} in total), last {} via {}",
        a.host,
        a.count,
        vendor_title(&a.vendor),
        a.category.as_str(),
        a.sequence,
        a.total,
        a.evidence.domain,
        a.evidence.event_type
    )
}

fn ms(ns: i64) -> i64 {
    ns.div_euclid(1_000_000)
}

/// CEF severity, 0..=10.
fn cef_severity(s: Severity) -> u8 {
    match s {
        Severity::High => 8,
        Severity::Medium => 5,
        Severity::Low => 3,
    }
}

/// ECS `event.severity` (the 0..=100 scale of Elastic's detection rules).
fn ecs_severity(s: Severity) -> u8 {
    match s {
        Severity::High => 73,
        Severity::Medium => 47,
        Severity::Low => 21,
    }
}

/// RFC 5424 severity: warning, notice, informational.
fn syslog_severity(s: Severity) -> u8 {
    match s {
        Severity::High => 4,
        Severity::Medium => 5,
        Severity::Low => 6,
    }
}

/// The MAC address on the side of the packet that is the alert's host: (source, destination).
fn host_mac_side(a: &Alert) -> (Option<&str>, Option<&str>) {
    let mac = a.mac.as_deref();
    if a.evidence.src_ip == a.host {
        (mac, None)
    } else if a.evidence.dest_ip == a.host {
        (None, mac)
    } else {
        (None, None)
    }
}

// ---------------------------------------------------------------------------------------------
// JSON (kavwatch's own and ECS)

/// serde_json's compact output, but DEL and every non-ASCII character written as `\uXXXX`
/// (UTF-16 surrogate pairs above U+FFFF): the JSON is printable ASCII and still decodes to the
/// same strings. serde_json already escapes `"`, `\` and the controls below 0x20 itself; only the
/// rest of a string reaches `write_string_fragment`.
struct AsciiFormatter;

impl serde_json::ser::Formatter for AsciiFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(&mut self, w: &mut W, fragment: &str) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if is_print(c) {
                continue;
            }
            w.write_all(&fragment.as_bytes()[start..i])?;
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                write!(w, "\\u{u:04x}")?;
            }
            start = i + c.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[start..])
    }
}

fn ascii_json<T: Serialize + ?Sized>(value: &T) -> String {
    let mut buf = Vec::with_capacity(1024);
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, AsciiFormatter);
    // Alerts hold only strings, numbers, addresses and string-keyed maps: nothing that can fail
    // to serialize, and writing to a Vec cannot fail either.
    value.serialize(&mut ser).expect("an alert always serializes");
    String::from_utf8(buf).expect("serde_json writes UTF-8")
}

#[derive(Serialize)]
struct JsonAlert<'a> {
    id: &'a str,
    timestamp: String,
    sensor: &'a str,
    host: IpAddr,
    #[serde(skip_serializing_if = "<[u16]>::is_empty")]
    vlan: &'a [u16],
    #[serde(skip_serializing_if = "Option::is_none")]
    mac: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hostname: Option<&'a str>,
    vendor: &'a str,
    category: Category,
    severity: Severity,
    sequence: u64,
    count: u64,
    total: u64,
    first_seen: String,
    last_seen: String,
    domains: &'a [String],
    rule_ids: &'a [String],
    after_cutoff: bool,
    cutoff: String,
    evidence: &'a Evidence,
}

/// kavwatch JSON, one line without a newline: every field of the alert, times as RFC 3339 strings
/// (`timestamp`, `first_seen`, `last_seen`, `cutoff`) instead of nanoseconds; `vlan` left out
/// when untagged, `mac` and `hostname` when unknown. Printable ASCII (see the module notes).
pub fn to_json(a: &Alert) -> String {
    ascii_json(&JsonAlert {
        id: &a.id,
        timestamp: rfc3339(a.time_ns),
        sensor: &a.sensor,
        host: a.host,
        vlan: &a.vlan,
        mac: a.mac.as_deref(),
        hostname: a.hostname.as_deref(),
        vendor: &a.vendor,
        category: a.category,
        severity: a.severity,
        sequence: a.sequence,
        count: a.count,
        total: a.total,
        first_seen: rfc3339(a.first_ns),
        last_seen: rfc3339(a.last_ns),
        domains: &a.domains,
        rule_ids: &a.rule_ids,
        after_cutoff: a.after_cutoff,
        cutoff: rfc3339(a.cutoff_ns),
        evidence: &a.evidence,
    })
}

/// The ECS version whose field names [`to_ecs`] uses.
const ECS_VERSION: &str = "8.11.0";

/// ECS MAC notation (RFC 7042): upper-case hex pairs separated by hyphens.
fn ecs_mac(mac: &str) -> String {
    mac.replace(':', "-").to_ascii_uppercase()
}

/// Elastic Common Schema, one JSON line without a newline (nested objects, keys sorted):
/// `@timestamp`, `message`, `ecs.version`, `event.*` (kind "alert", category ["network"], type
/// ["protocol"] for DNS and HTTP or ["connection"] for TLS, severity 73/47/21, id, start, end,
/// dataset, module), `source.*`/`destination.*` (ip, port, the host's mac on its side,
/// destination.domain), `network.*` (transport, protocol, type, vlan.id outer and inner.vlan.id
/// innermost, as strings), `dns.question.name` + `dns.type`, `tls.client.server_name` or
/// `url.domain` + `url.path`, `rule.*`, `observer.*`, `host.ip` (+ `host.mac`, `host.hostname`) of the alerted
/// host, `related.hosts`/`related.ip`, `labels.after_cutoff` ("true"/"false") and the rest under
/// `kavwatch.*`. Printable ASCII (see the module notes).
pub fn to_ecs(a: &Alert) -> String {
    let e = &a.evidence;
    let (src_mac, dst_mac) = host_mac_side(a);

    let mut source = json!({ "ip": e.src_ip, "port": e.src_port });
    if let Some(m) = src_mac {
        source["mac"] = json!(ecs_mac(m));
    }
    let mut destination = json!({ "ip": e.dest_ip, "port": e.dest_port, "domain": e.domain });
    if let Some(m) = dst_mac {
        destination["mac"] = json!(ecs_mac(m));
    }

    let mut network = json!({
        "transport": e.proto.to_ascii_lowercase(),
        "protocol": e.event_type,
        "type": if e.dest_ip.is_ipv4() { "ipv4" } else { "ipv6" },
    });
    if let Some(outer) = a.vlan.first() {
        network["vlan"] = json!({ "id": outer.to_string() });
    }
    if let [_, .., inner] = a.vlan.as_slice() {
        network["inner"] = json!({ "vlan": { "id": inner.to_string() } });
    }

    let mut host = json!({ "ip": [a.host] });
    if let Some(m) = &a.mac {
        host["mac"] = json!([ecs_mac(m)]);
    }
    if let Some(n) = &a.hostname {
        host["hostname"] = json!(n);
    }

    let mut related_ip = vec![a.host];
    for ip in [e.src_ip, e.dest_ip] {
        if !related_ip.contains(&ip) {
            related_ip.push(ip);
        }
    }

    let mut kavwatch = json!({
        "sequence": a.sequence,
        "count": a.count,
        "total": a.total,
        "domains": a.domains,
        "rule_ids": a.rule_ids,
        "cutoff": rfc3339(a.cutoff_ns),
        "after_cutoff": a.after_cutoff,
        "vendor": a.vendor,
        "category": a.category,
        "severity": a.severity,
        "host": a.host,
    });
    if !a.vlan.is_empty() {
        kavwatch["vlan"] = json!(a.vlan);
    }
    if let Some(input) = &e.input {
        kavwatch["input"] = json!(input);
    }

    let event_type = if e.event_type == "tls" { "connection" } else { "protocol" };
    let mut doc = json!({
        "@timestamp": rfc3339(a.time_ns),
        "message": summary(a),
        "ecs": { "version": ECS_VERSION },
        "event": {
            "kind": "alert",
            "category": ["network"],
            "type": [event_type],
            "severity": ecs_severity(a.severity),
            "id": a.id,
            "start": rfc3339(a.first_ns),
            "end": rfc3339(a.last_ns),
            "dataset": "kavwatch.alert",
            "module": "kavwatch",
        },
        "source": source,
        "destination": destination,
        "network": network,
        "rule": {
            "id": rule_id(a),
            "name": alert_name(a),
            "category": a.category,
            "ruleset": a.vendor,
        },
        "observer": { "name": a.sensor, "product": "kavwatch", "vendor": "kavwatch", "type": "sensor" },
        "host": host,
        "related": { "hosts": a.domains, "ip": related_ip },
        "labels": { "after_cutoff": a.after_cutoff.to_string() },
        "kavwatch": kavwatch,
    });
    match e.event_type {
        "dns" => {
            let kind = if e.src_ip == a.host { "query" } else { "answer" };
            doc["dns"] = json!({ "question": { "name": e.domain }, "type": kind });
        }
        "tls" => doc["tls"] = json!({ "client": { "server_name": e.domain } }),
        "http" => {
            let mut url = json!({ "domain": e.domain });
            if let Some(path) = &e.http_path {
                url["path"] = json!(path);
            }
            doc["url"] = url;
        }
        _ => {}
    }
    ascii_json(&doc)
}

// ---------------------------------------------------------------------------------------------
// CEF

/// A CEF header field: `\` -> `\\`, `|` -> `\|`, CR and LF -> space, other characters outside
/// printable ASCII -> `\\xHH` (the text `\xHH`).
fn push_cef_header(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            '\r' | '\n' => out.push(' '),
            c if is_print(c) => out.push(c),
            c => push_hex(out, c, "\\\\"),
        }
    }
}

/// A CEF extension value: `\` -> `\\`, `=` -> `\=`, CR -> `\r`, LF -> `\n`, other characters
/// outside printable ASCII -> `\\xHH` (the text `\xHH`). `|` needs no escaping there.
fn push_cef_value(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            c if is_print(c) => out.push(c),
            c => push_hex(out, c, "\\\\"),
        }
    }
}

/// CEF extension writer: fixed keys, each used once, values quoted.
struct CefExt<'o> {
    out: &'o mut String,
    first: bool,
}

impl CefExt<'_> {
    fn kv(&mut self, key: &'static str, value: &str) {
        debug_assert!(!key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric()));
        if !self.first {
            self.out.push(' ');
        }
        self.first = false;
        self.out.push_str(key);
        self.out.push('=');
        push_cef_value(self.out, value);
    }

    /// A custom string field and its label (`cs1Label=domains cs1=...`).
    fn labelled(&mut self, label_key: &'static str, label: &str, key: &'static str, value: &str) {
        self.kv(label_key, label);
        self.kv(key, value);
    }
}

/// ArcSight CEF, one line without a newline:
/// `CEF:0|kavwatch|kavwatch|VERSION|RULE_ID|NAME|SEVERITY|EXTENSION`, with RULE_ID the first rule
/// id (else `kavwatch-<category>`), NAME e.g. "Kaspersky update contact after the US cutoff",
/// SEVERITY 8/5/3 for high/medium/low. Extension keys, in this order (those marked ? only when
/// they apply): rt, externalId (alert id), cat (category), src, spt, dst, dpt, proto, app
/// (DNS/TLS/HTTP), smac? or dmac? (the host's MAC on its side), shost? (its DHCP host name, when
/// it is the source), dhost (evidence name), request?
/// (`http://name/path` for HTTP), cnt (count), start, end, dvchost (sensor), msg,
/// cs1Label=domains cs1, cs2Label=ruleIds cs2, cs3Label=vlan? cs3?, cs4Label=eventType cs4,
/// cs5Label=host cs5, cs6Label=vendor cs6, cn1Label=sequence cn1, cn2Label=total cn2,
/// flexDate1Label=cutoff flexDate1. Times are milliseconds since the epoch; lists are
/// comma-joined. `src`/`dst` may be IPv6 addresses (ArcSight maps both families there).
/// Printable ASCII (see the module notes for the quoting).
pub fn to_cef(a: &Alert, version: &str) -> String {
    let e = &a.evidence;
    let mut out = String::with_capacity(768);
    out.push_str("CEF:0|");
    for field in ["kavwatch", "kavwatch", version, &rule_id(a), &alert_name(a)] {
        push_cef_header(&mut out, field);
        out.push('|');
    }
    let _ = write!(out, "{}|", cef_severity(a.severity));

    let (src_mac, dst_mac) = host_mac_side(a);
    let mut x = CefExt { out: &mut out, first: true };
    x.kv("rt", &ms(a.time_ns).to_string());
    x.kv("externalId", &a.id);
    x.kv("cat", a.category.as_str());
    x.kv("src", &e.src_ip.to_string());
    x.kv("spt", &e.src_port.to_string());
    x.kv("dst", &e.dest_ip.to_string());
    x.kv("dpt", &e.dest_port.to_string());
    x.kv("proto", e.proto);
    x.kv("app", &e.event_type.to_ascii_uppercase());
    if let Some(m) = src_mac {
        x.kv("smac", m);
    }
    if let Some(m) = dst_mac {
        x.kv("dmac", m);
    }
    if let Some(n) = a.hostname.as_deref().filter(|_| e.src_ip == a.host) {
        x.kv("shost", n);
    }
    x.kv("dhost", &e.domain);
    if let Some(path) = e.http_path.as_deref().filter(|_| e.event_type == "http") {
        x.kv("request", &format!("http://{}{path}", e.domain));
    }
    x.kv("cnt", &a.count.to_string());
    x.kv("start", &ms(a.first_ns).to_string());
    x.kv("end", &ms(a.last_ns).to_string());
    x.kv("dvchost", &a.sensor);
    x.kv("msg", &summary(a));
    x.labelled("cs1Label", "domains", "cs1", &join_list(&a.domains));
    x.labelled("cs2Label", "ruleIds", "cs2", &join_list(&a.rule_ids));
    if !a.vlan.is_empty() {
        x.labelled("cs3Label", "vlan", "cs3", &join_vlan(&a.vlan));
    }
    x.labelled("cs4Label", "eventType", "cs4", e.event_type);
    x.labelled("cs5Label", "host", "cs5", &a.host.to_string());
    x.labelled("cs6Label", "vendor", "cs6", &a.vendor);
    x.labelled("cn1Label", "sequence", "cn1", &a.sequence.to_string());
    x.labelled("cn2Label", "total", "cn2", &a.total.to_string());
    x.labelled("flexDate1Label", "cutoff", "flexDate1", &ms(a.cutoff_ns).to_string());
    out
}

// ---------------------------------------------------------------------------------------------
// RFC 5424 syslog

/// SD-ID of kavwatch's structured data. 32473 is the example Private Enterprise Number that IANA
/// reserved for documentation (RFC 5612) and that RFC 5424's own examples use: kavwatch has no
/// PEN of its own.
const SD_ID: &str = "kavwatch@32473";

/// An SD-PARAM value (RFC 5424 section 6.3.3): `"` -> `\"`, `\` -> `\\`, `]` -> `\]`, characters
/// outside printable ASCII -> `\\xHH` (the text `\xHH`).
fn push_sd_value(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' | '\\' | ']' => {
                out.push('\\');
                out.push(c);
            }
            c if is_print(c) => out.push(c),
            c => push_hex(out, c, "\\\\"),
        }
    }
}

/// A header field (HOSTNAME, MSGID): PRINTUSASCII (33..=126) only, anything else written as the
/// text `\xHH`, at most `max` characters (whole `\xHH` groups), `-` (NILVALUE) when empty.
fn header_token(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    for c in s.chars() {
        let before = out.len();
        if matches!(c, '!'..='~') {
            out.push(c);
        } else {
            push_hex(&mut out, c, "\\");
        }
        if out.len() > max {
            out.truncate(before);
            break;
        }
    }
    if out.is_empty() {
        out.push('-');
    }
    out
}

/// The MSG part: printable ASCII kept, anything else written as the text `\xHH` (the formats
/// above never need this; it keeps a syslog line one line whatever the body).
fn body_text(s: &str) -> Cow<'_, str> {
    if s.chars().all(is_print) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if is_print(c) {
            out.push(c);
        } else {
            push_hex(&mut out, c, "\\");
        }
    }
    Cow::Owned(out)
}

/// One RFC 5424 message, without trailing newline or transport framing:
/// `<PRI>1 TIMESTAMP HOSTNAME kavwatch PROCID MSGID [kavwatch@32473 id=".." host=".." ...] BODY`.
///
/// PRI = facility * 8 + severity (high 4 warning, medium 5 notice, low 6 informational); a
/// facility above 23 (local7) is taken as 23. TIMESTAMP is the alert's packet time in UTC with
/// microseconds. HOSTNAME is `hostname` (normally the sensor name) reduced to PRINTUSASCII (other
/// characters written as the text `\xHH`), at most 255 characters, `-` when empty. PROCID is
/// `pid`; MSGID the category in upper case ("UPDATE"). The one SD-ELEMENT holds, in this order:
/// id, host, category, severity, domains, rules, vendor, afterCutoff, event, src, dst, dport,
/// mac?, hostname?, vlan?, count, sequence, total (lists comma-joined). BODY is `body` (one of the formats
/// above), left out with its space when empty, with any character outside printable ASCII written
/// as `\xHH` text: the message is pure ASCII, so it needs no BOM.
pub fn to_syslog(a: &Alert, body: &str, facility: u8, hostname: &str, pid: u32) -> String {
    let e = &a.evidence;
    let pri = u16::from(facility.min(23)) * 8 + u16::from(syslog_severity(a.severity));
    let time = rfc3339(a.time_ns);
    let time = if time.starts_with(|c: char| c.is_ascii_digit()) { time.as_str() } else { "-" };
    let mut out = String::with_capacity(512 + body.len());
    let _ = write!(
        out,
        "<{pri}>1 {time} {} kavwatch {pid} {} [{SD_ID}",
        header_token(hostname, 255),
        header_token(&a.category.as_str().to_ascii_uppercase(), 32)
    );

    let mut param = |name: &'static str, value: &str| {
        debug_assert!(
            (1..=32).contains(&name.len())
                && name.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'=' | b']' | b'"'))
        );
        out.push(' ');
        out.push_str(name);
        out.push_str("=\"");
        push_sd_value(&mut out, value);
        out.push('"');
    };
    param("id", &a.id);
    param("host", &a.host.to_string());
    param("category", a.category.as_str());
    param("severity", a.severity.as_str());
    param("domains", &join_list(&a.domains));
    param("rules", &join_list(&a.rule_ids));
    param("vendor", &a.vendor);
    param("afterCutoff", if a.after_cutoff { "true" } else { "false" });
    param("event", e.event_type);
    param("src", &e.src_ip.to_string());
    param("dst", &e.dest_ip.to_string());
    param("dport", &e.dest_port.to_string());
    if let Some(mac) = &a.mac {
        param("mac", mac);
    }
    if let Some(name) = &a.hostname {
        param("hostname", name);
    }
    if !a.vlan.is_empty() {
        param("vlan", &join_vlan(&a.vlan));
    }
    param("count", &a.count.to_string());
    param("sequence", &a.sequence.to_string());
    param("total", &a.total.to_string());
    out.push(']');

    if !body.is_empty() {
        out.push(' ');
        out.push_str(&body_text(body));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use serde_json::Value;

    use super::*;

    // -----------------------------------------------------------------------------------------
    // Alerts

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A DNS alert with ordinary values.
    fn benign() -> Alert {
        Alert {
            id: "3f2a9c1e8b7d6a50".into(),
            sensor: "sensor-hq1".into(),
            time_ns: 1_727_600_000_123_456_789,
            host: ip("10.0.0.5"),
            vlan: vec![100],
            mac: Some("00:11:22:aa:bb:cc".into()),
            hostname: None,
            vendor: "kaspersky".into(),
            category: Category::Update,
            severity: Severity::High,
            sequence: 2,
            count: 3,
            total: 12,
            first_ns: 1_727_599_000_000_000_000,
            last_ns: 1_727_600_000_123_456_789,
            domains: vec!["dnl-01.geo.kaspersky.com".into(), "ds.kaspersky.com".into()],
            rule_ids: vec!["kl-update-dnl".into(), "kl-update-ds".into()],
            after_cutoff: true,
            cutoff_ns: 1_727_582_400_000_000_000,
            evidence: Evidence {
                event_type: "dns",
                src_ip: ip("10.0.0.5"),
                src_port: 53124,
                dest_ip: ip("10.0.0.1"),
                dest_port: 53,
                proto: "UDP",
                domain: "dnl-01.geo.kaspersky.com".into(),
                http_path: None,
                input: Some("eth0".into()),
            },
        }
    }

    /// A name that tries to end a syslog line, start a forged one and break out of every quoting.
    const EVIL: &str = "evil.com\n<13>1 - fake|x=y]\"\\";
    const HOSTILE_DOMAINS: [&str; 9] =
        [EVIL, "a=b", "a|b", "a]b", "\u{1b}[31m", "\u{e9}", "a,b", "", "cr\rdel\u{7f}\u{fffd}"];
    const HOSTILE_PATH: &str = "/p?a=b|c]\r\n\u{1b}\u{e9}";
    const HOSTILE_VENDOR: &str = "Kas|per=sky]\"\\";
    const HOSTILE_SENSOR: &str = "sensor one\r\n|x=y]\"\u{e9}";
    const HOSTILE_ID: &str = "id\"]\\|=\n";
    const HOSTILE_VERSION: &str = "1.0|x\\y\r\n\u{1b}";

    /// An HTTP alert whose every string is hostile.
    fn hostile() -> Alert {
        Alert {
            id: HOSTILE_ID.into(),
            sensor: HOSTILE_SENSOR.into(),
            vlan: vec![100, 200],
            mac: Some("aa:bb:cc:dd:ee:0f".into()),
            hostname: Some(EVIL.into()),
            vendor: HOSTILE_VENDOR.into(),
            domains: HOSTILE_DOMAINS.iter().map(|d| d.to_string()).collect(),
            rule_ids: vec!["kl-update|x=1".into(), "kl,2".into()],
            evidence: Evidence {
                event_type: "http",
                src_ip: ip("10.0.0.5"),
                src_port: 51515,
                dest_ip: ip("192.0.2.7"),
                dest_port: 80,
                proto: "TCP",
                domain: EVIL.into(),
                http_path: Some(HOSTILE_PATH.into()),
                input: Some("eth0 \"x\"\\".into()),
            },
            ..benign()
        }
    }

    /// Every rendering of `a`, syslog included (hostname = sensor).
    fn all_outputs(a: &Alert, version: &str) -> Vec<String> {
        let mut v = Vec::new();
        for f in Format::ALL {
            let body = render(a, f, version);
            v.push(to_syslog(a, &body, 16, &a.sensor, 4242));
            v.push(body);
        }
        v
    }

    fn assert_printable_ascii(s: &str) {
        if let Some((i, b)) = s.bytes().enumerate().find(|&(_, b)| !(0x20..=0x7e).contains(&b)) {
            panic!("byte {b:#04x} at {i} in {s:?}");
        }
    }

    // -----------------------------------------------------------------------------------------
    // A strict CEF parser: header split on unescaped '|', extension split before each unescaped
    // '=' on its " key" boundary, values unescaped.

    type Cef = (Vec<String>, Vec<(String, String)>);

    fn parse_cef(line: &str) -> Result<Cef, String> {
        if line.contains(['\r', '\n']) {
            return Err("raw CR or LF".into());
        }
        let mut header = Vec::new();
        let mut cur = String::new();
        let mut ext_start = None;
        let mut it = line.char_indices();
        while let Some((i, c)) = it.next() {
            match c {
                '\\' => match it.next() {
                    Some((_, n @ ('\\' | '|'))) => cur.push(n),
                    other => return Err(format!("bad header escape {other:?}")),
                },
                '|' => {
                    header.push(std::mem::take(&mut cur));
                    if header.len() == 7 {
                        ext_start = Some(i + 1);
                        break;
                    }
                }
                c => cur.push(c),
            }
        }
        let ext = &line[ext_start.ok_or("fewer than 7 header fields")?..];
        let b = ext.as_bytes();
        // (key start, '=') for every unescaped '='.
        let mut keys = Vec::new();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'\\' => i += 2,
                b'=' => {
                    let start = ext[..i].rfind(|c: char| !c.is_ascii_alphanumeric()).map_or(0, |p| p + 1);
                    if start == i || (start > 0 && b[start - 1] != b' ') {
                        return Err(format!("'=' without a key at {i}"));
                    }
                    keys.push((start, i));
                    i += 1;
                }
                _ => i += 1,
            }
        }
        if keys.first().map_or(!ext.is_empty(), |k| k.0 != 0) {
            return Err("text before the first key".into());
        }
        let mut pairs = Vec::new();
        for (n, &(start, eq)) in keys.iter().enumerate() {
            let end = keys.get(n + 1).map_or(ext.len(), |k| k.0 - 1);
            pairs.push((ext[start..eq].to_string(), cef_unescape(&ext[eq + 1..end])?));
        }
        Ok((header, pairs))
    }

    fn cef_unescape(v: &str) -> Result<String, String> {
        let mut out = String::new();
        let mut it = v.chars();
        while let Some(c) = it.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match it.next() {
                Some('\\') => out.push('\\'),
                Some('=') => out.push('='),
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                other => return Err(format!("bad extension escape {other:?} in {v:?}")),
            }
        }
        Ok(out)
    }

    fn assert_unique_keys(pairs: &[(String, String)]) {
        let keys: HashSet<_> = pairs.iter().map(|(k, _)| k).collect();
        assert_eq!(keys.len(), pairs.len(), "duplicate keys in {pairs:?}");
    }

    fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|&(k, v)| (k.to_string(), v.to_string())).collect()
    }

    // -----------------------------------------------------------------------------------------
    // A strict RFC 5424 parser: PRI, the six header fields, SD-ELEMENTs with their params
    // unescaped (an unescaped ']' or '"', or an unknown escape, is an error), MSG.

    #[derive(Debug)]
    struct Syslog {
        pri: u16,
        /// VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID
        header: Vec<String>,
        sd: Vec<(String, Vec<(String, String)>)>,
        msg: Option<String>,
    }

    fn is_sd_name(s: &str) -> bool {
        (1..=32).contains(&s.len()) && s.bytes().all(|b| (33..=126).contains(&b) && !b"= ]\"".contains(&b))
    }

    fn parse_syslog(line: &str) -> Result<Syslog, String> {
        if !line.is_ascii() {
            return Err("not ASCII".into());
        }
        let (pri, mut rest) = line.strip_prefix('<').and_then(|r| r.split_once('>')).ok_or("no PRI")?;
        let pri: u16 = pri.parse().map_err(|e| format!("PRI: {e}"))?;
        if pri > 191 {
            return Err("PRI above 191".into());
        }
        let mut header = Vec::new();
        for _ in 0..6 {
            let (tok, r) = rest.split_once(' ').ok_or("short header")?;
            if tok.is_empty() || !tok.bytes().all(|b| (33..=126).contains(&b)) {
                return Err(format!("bad header field {tok:?}"));
            }
            header.push(tok.to_string());
            rest = r;
        }
        let b = rest.as_bytes();
        let mut i = 0;
        let mut sd = Vec::new();
        if b.first() == Some(&b'-') {
            i = 1;
        } else {
            while b.get(i) == Some(&b'[') {
                i += 1;
                let start = i;
                while i < b.len() && !matches!(b[i], b' ' | b']') {
                    i += 1;
                }
                let id = &rest[start..i];
                if !is_sd_name(id) {
                    return Err(format!("bad SD-ID {id:?}"));
                }
                let mut params = Vec::new();
                while b.get(i) == Some(&b' ') {
                    i += 1;
                    let start = i;
                    while i < b.len() && b[i] != b'=' {
                        i += 1;
                    }
                    let name = &rest[start..i];
                    if !is_sd_name(name) {
                        return Err(format!("bad PARAM-NAME {name:?}"));
                    }
                    if b.get(i + 1) != Some(&b'"') {
                        return Err(format!("no opening quote for {name}"));
                    }
                    i += 2;
                    let mut value = String::new();
                    loop {
                        match b.get(i) {
                            None => return Err("unterminated PARAM-VALUE".into()),
                            Some(b'"') => {
                                i += 1;
                                break;
                            }
                            Some(b']') => return Err(format!("unescaped ']' in {name}")),
                            Some(b'\\') => match b.get(i + 1) {
                                Some(&c @ (b'"' | b'\\' | b']')) => {
                                    value.push(c as char);
                                    i += 2;
                                }
                                other => return Err(format!("bad escape {other:?} in {name}")),
                            },
                            Some(&c) => {
                                value.push(c as char);
                                i += 1;
                            }
                        }
                    }
                    params.push((name.to_string(), value));
                }
                if b.get(i) != Some(&b']') {
                    return Err(format!("SD-ELEMENT {id} not closed"));
                }
                i += 1;
                sd.push((id.to_string(), params));
            }
            if sd.is_empty() {
                return Err("no STRUCTURED-DATA".into());
            }
        }
        let msg = match &rest[i..] {
            "" => None,
            r => Some(r.strip_prefix(' ').ok_or("no space before MSG")?.to_string()),
        };
        Ok(Syslog { pri, header, sd, msg })
    }

    // -----------------------------------------------------------------------------------------
    // The parsers catch what missing quoting would let through (so the tests below can fail).

    #[test]
    fn test_parsers_catch_unquoted_input() {
        // A raw '|' in the name shifts the header: the severity field is no longer the severity.
        let (h, _) = parse_cef("CEF:0|v|p|1|s|a|b|msg=x").unwrap();
        assert_eq!((h[5].as_str(), h[6].as_str()), ("a", "b"));
        assert!(parse_cef("CEF:0|v|p|1|s|a|b|5|msg=x").is_err());
        // A raw '=' in a value forges a key.
        let (_, x) = parse_cef("CEF:0|v|p|1|s|n|5|msg=a b=c cnt=1").unwrap();
        assert_eq!(x, owned(&[("msg", "a"), ("b", "c"), ("cnt", "1")]));
        assert!(parse_cef("CEF:0|v|p|1|s|n|5|msg=a\nb").is_err());
        assert!(parse_cef("CEF:0|v|p|1|s|n|5|msg=a\\xb").is_err());
        // Syslog: an unescaped ']' or '"', a raw control, a second SD-ELEMENT.
        assert!(parse_syslog("<13>1 - - - - - [x@1 a=\"b]\"]").is_err());
        assert!(parse_syslog("<13>1 - - - - - [x@1 a=\"b\"\"]").is_err());
        assert!(parse_syslog("<13>1 - - - - - [x@1 a=\"b\nc\"]").is_ok_and(|s| s.sd[0].1[0].1.contains('\n')));
        let two = parse_syslog("<13>1 - - - - - [x@1 a=\"b\"][y@1 c=\"d\"] m").unwrap();
        assert_eq!((two.sd.len(), two.msg.as_deref()), (2, Some("m")));
    }

    // -----------------------------------------------------------------------------------------
    // Format names

    #[test]
    fn format_from_str() {
        for f in Format::ALL {
            assert_eq!(f.as_str().parse::<Format>(), Ok(f));
            assert_eq!(f.to_string(), f.as_str());
        }
        assert_eq!("cef".parse(), Ok(Format::Cef));
        let err = "xml".parse::<Format>().unwrap_err().to_string();
        assert!(err.contains("\"xml\"") && err.contains("json") && err.contains("cef") && err.contains("ecs"), "{err}");
        assert!("JSON".parse::<Format>().is_err());
        assert!("".parse::<Format>().is_err());
    }

    #[test]
    fn render_dispatches() {
        let a = benign();
        assert_eq!(render(&a, Format::Json, "9"), to_json(&a));
        assert_eq!(render(&a, Format::Cef, "9"), to_cef(&a, "9"));
        assert_eq!(render(&a, Format::Ecs, "9"), to_ecs(&a));
    }

    // -----------------------------------------------------------------------------------------
    // (1) No raw control character, no non-ASCII byte, whatever the alert holds.

    #[test]
    fn every_output_is_printable_ascii() {
        for a in [benign(), hostile()] {
            for out in all_outputs(&a, HOSTILE_VERSION) {
                assert_printable_ascii(&out);
            }
        }
        // Every single control character and a few non-ASCII ones, one at a time everywhere.
        for c in (0u32..0x20).chain([0x7f, 0x85, 0xa0, 0x2028, 0xfeff, 0x1f600]).filter_map(char::from_u32) {
            let s = format!("x{c}y");
            let mut a = hostile();
            a.id.clone_from(&s);
            a.sensor.clone_from(&s);
            a.vendor.clone_from(&s);
            a.domains = vec![s.clone()];
            a.rule_ids = vec![s.clone()];
            a.mac = Some(s.clone());
            a.evidence.domain.clone_from(&s);
            a.evidence.http_path = Some(s.clone());
            a.evidence.input = Some(s.clone());
            for out in all_outputs(&a, &s) {
                assert_printable_ascii(&out);
            }
            assert_printable_ascii(&to_syslog(&a, &s, 1, &s, 1));
        }
    }

    // -----------------------------------------------------------------------------------------
    // (2) CEF

    #[test]
    fn cef_benign_exact() {
        assert_eq!(
            to_cef(&benign(), "0.1.0"),
            "CEF:0|kavwatch|kavwatch|0.1.0|kl-update-dnl|Kaspersky update contact after the US cutoff|8|\
             rt=1727600000123 externalId=3f2a9c1e8b7d6a50 cat=update src=10.0.0.5 spt=53124 dst=10.0.0.1 dpt=53 \
             proto=UDP app=DNS smac=00:11:22:aa:bb:cc dhost=dnl-01.geo.kaspersky.com cnt=3 start=1727599000000 \
             end=1727600000123 dvchost=sensor-hq1 msg=10.0.0.5: 3 Kaspersky update contacts (alert 2, 12 in total), \
             last dnl-01.geo.kaspersky.com via dns cs1Label=domains cs1=dnl-01.geo.kaspersky.com,ds.kaspersky.com \
             cs2Label=ruleIds cs2=kl-update-dnl,kl-update-ds cs3Label=vlan cs3=100 cs4Label=eventType cs4=dns \
             cs5Label=host cs5=10.0.0.5 cs6Label=vendor cs6=kaspersky cn1Label=sequence cn1=2 cn2Label=total cn2=12 \
             flexDate1Label=cutoff flexDate1=1727582400000"
        );
    }

    #[test]
    fn cef_hostile_round_trips() {
        let line = to_cef(&hostile(), HOSTILE_VERSION);
        let (header, ext) = parse_cef(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(
            header,
            [
                "CEF:0",
                "kavwatch",
                "kavwatch",
                "1.0|x\\y  \\x1b", // CR and LF become spaces, ESC the text \x1b
                "kl-update|x=1",
                "Kas|per=sky]\"\\ update contact after the US cutoff",
                "8",
            ]
        );
        assert_unique_keys(&ext);
        let request = format!("http://{EVIL}/p?a=b|c]\r\n\\x1b\\xc3\\xa9");
        let msg = format!("10.0.0.5: 3 {HOSTILE_VENDOR} update contacts (alert 2, 12 in total), last {EVIL} via http");
        let cs1 = format!("{EVIL},a=b,a|b,a]b,\\x1b[31m,\\xc3\\xa9,a\\x2cb,,cr\rdel\\x7f\\xef\\xbf\\xbd");
        assert_eq!(
            ext,
            owned(&[
                ("rt", "1727600000123"),
                ("externalId", HOSTILE_ID),
                ("cat", "update"),
                ("src", "10.0.0.5"),
                ("spt", "51515"),
                ("dst", "192.0.2.7"),
                ("dpt", "80"),
                ("proto", "TCP"),
                ("app", "HTTP"),
                ("smac", "aa:bb:cc:dd:ee:0f"),
                ("shost", EVIL),
                ("dhost", EVIL),
                ("request", &request),
                ("cnt", "3"),
                ("start", "1727599000000"),
                ("end", "1727600000123"),
                ("dvchost", "sensor one\r\n|x=y]\"\\xc3\\xa9"),
                ("msg", &msg),
                ("cs1Label", "domains"),
                ("cs1", &cs1),
                ("cs2Label", "ruleIds"),
                ("cs2", "kl-update|x=1,kl\\x2c2"),
                ("cs3Label", "vlan"),
                ("cs3", "100,200"),
                ("cs4Label", "eventType"),
                ("cs4", "http"),
                ("cs5Label", "host"),
                ("cs5", "10.0.0.5"),
                ("cs6Label", "vendor"),
                ("cs6", HOSTILE_VENDOR),
                ("cn1Label", "sequence"),
                ("cn1", "2"),
                ("cn2Label", "total"),
                ("cn2", "12"),
                ("flexDate1Label", "cutoff"),
                ("flexDate1", "1727582400000"),
            ])
        );
        // The list splits back into the original items (as text, non-ASCII as \xHH).
        let items: Vec<&str> = cs1.split(',').collect();
        assert_eq!(items.len(), HOSTILE_DOMAINS.len());
    }

    #[test]
    fn cef_single_characters_round_trip() {
        // Each special character alone, as a domain (extension) and as the vendor (header name).
        for (raw, ext, head) in [
            ("|", "|", "|"),
            ("=", "=", "="),
            ("\\", "\\", "\\"),
            ("\n", "\n", " "),
            ("\r", "\r", " "),
            ("]", "]", "]"),
            ("\"", "\"", "\""),
            (" ", " ", " "),
            ("\t", "\\x09", "\\x09"),
            ("\u{e9}", "\\xc3\\xa9", "\\xc3\\xa9"),
            ("X=", "X=", "X="),
            (" cs1=z", " cs1=z", " cs1=z"),
            ("\\=", "\\=", "\\="),
            ("\\|", "\\|", "\\|"),
        ] {
            let mut a = benign();
            a.evidence.domain = raw.to_string();
            a.vendor = raw.to_string();
            a.rule_ids.clear();
            let line = to_cef(&a, "1");
            let (header, ext_pairs) = parse_cef(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert_eq!(header.len(), 7);
            assert_eq!(header[4], "kavwatch-update");
            assert_eq!(header[5], format!("{head} update contact after the US cutoff"), "{line}");
            assert_eq!(header[6], "8");
            assert_unique_keys(&ext_pairs);
            let get = |k: &str| ext_pairs.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
            assert_eq!(get("dhost"), Some(ext), "{line}");
            assert_eq!(get("cs6"), Some(ext), "{line}");
            assert_eq!(get("flexDate1"), Some("1727582400000"), "{line}");
        }
    }

    #[test]
    fn cef_optional_keys() {
        // Untagged, no MAC, host answered to (a DNS response seen alone), no rule id.
        let mut a = benign();
        a.vlan.clear();
        a.rule_ids.clear();
        a.evidence.src_ip = ip("10.0.0.1");
        a.evidence.dest_ip = ip("10.0.0.5");
        let (h, x) = parse_cef(&to_cef(&a, "1")).unwrap();
        assert_eq!(h[4], "kavwatch-update");
        let keys: Vec<&str> = x.iter().map(|(k, _)| k.as_str()).collect();
        assert!(keys.contains(&"dmac") && !keys.contains(&"smac"), "{keys:?}");
        assert!(!keys.contains(&"cs3") && !keys.contains(&"cs3Label") && !keys.contains(&"request"));
        a.mac = None;
        let (_, x) = parse_cef(&to_cef(&a, "1")).unwrap();
        assert!(!x.iter().any(|(k, _)| k == "smac" || k == "dmac"));
        // Before the cutoff.
        a.after_cutoff = false;
        a.category = Category::Activation;
        a.severity = Severity::Medium;
        let (h, _) = parse_cef(&to_cef(&a, "1")).unwrap();
        assert_eq!((h[5].as_str(), h[6].as_str()), ("Kaspersky activation contact before the US cutoff", "5"));
    }

    // -----------------------------------------------------------------------------------------
    // (3) RFC 5424

    #[test]
    fn syslog_benign_exact() {
        let a = benign();
        assert_eq!(
            to_syslog(&a, "BODY", 16, "sensor-hq1", 4242),
            "<132>1 2024-09-29T08:53:20.123456Z sensor-hq1 kavwatch 4242 UPDATE [kavwatch@32473 \
             id=\"3f2a9c1e8b7d6a50\" host=\"10.0.0.5\" category=\"update\" severity=\"high\" \
             domains=\"dnl-01.geo.kaspersky.com,ds.kaspersky.com\" rules=\"kl-update-dnl,kl-update-ds\" \
             vendor=\"kaspersky\" afterCutoff=\"true\" event=\"dns\" src=\"10.0.0.5\" dst=\"10.0.0.1\" dport=\"53\" \
             mac=\"00:11:22:aa:bb:cc\" vlan=\"100\" count=\"3\" sequence=\"2\" total=\"12\"] BODY"
        );
    }

    #[test]
    fn syslog_hostile_round_trips() {
        let a = hostile();
        for f in Format::ALL {
            let body = render(&a, f, HOSTILE_VERSION);
            let line = to_syslog(&a, &body, 16, &a.sensor, 4242);
            let m = parse_syslog(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert_eq!(m.pri, 132);
            assert_eq!(
                m.header,
                [
                    "1",
                    "2024-09-29T08:53:20.123456Z",
                    "sensor\\x20one\\x0d\\x0a|x=y]\"\\xc3\\xa9",
                    "kavwatch",
                    "4242",
                    "UPDATE"
                ]
            );
            assert_eq!(m.sd.len(), 1, "{line}");
            let (id, params) = &m.sd[0];
            assert_eq!(id, "kavwatch@32473");
            assert_unique_keys(params);
            assert_eq!(
                *params,
                owned(&[
                    ("id", "id\"]\\|=\\x0a"),
                    ("host", "10.0.0.5"),
                    ("category", "update"),
                    ("severity", "high"),
                    (
                        "domains",
                        "evil.com\\x0a<13>1 - fake|x=y]\"\\,a=b,a|b,a]b,\\x1b[31m,\\xc3\\xa9,a\\x2cb,,\
                         cr\\x0ddel\\x7f\\xef\\xbf\\xbd"
                    ),
                    ("rules", "kl-update|x=1,kl\\x2c2"),
                    ("vendor", HOSTILE_VENDOR),
                    ("afterCutoff", "true"),
                    ("event", "http"),
                    ("src", "10.0.0.5"),
                    ("dst", "192.0.2.7"),
                    ("dport", "80"),
                    ("mac", "aa:bb:cc:dd:ee:0f"),
                    ("hostname", "evil.com\\x0a<13>1 - fake|x=y]\"\\"),
                    ("vlan", "100,200"),
                    ("count", "3"),
                    ("sequence", "2"),
                    ("total", "12"),
                ])
            );
            // The body is carried unchanged (it is printable ASCII already).
            assert_eq!(m.msg.as_deref(), Some(body.as_str()));
        }
    }

    #[test]
    fn syslog_sd_single_characters_round_trip() {
        for (raw, want) in [
            ("]", "]"),
            ("\"", "\""),
            ("\\", "\\"),
            ("\\]", "\\]"),
            ("\"] [x@1 a=\"", "\"] [x@1 a=\""),
            ("\n", "\\x0a"),
            ("\u{0}", "\\x00"),
            ("\u{e9}", "\\xc3\\xa9"),
            ("", ""),
        ] {
            let mut a = benign();
            a.id = raw.to_string();
            a.vendor = raw.to_string();
            let line = to_syslog(&a, "", 1, "h", 1);
            let m = parse_syslog(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert_eq!(m.sd.len(), 1, "{line}");
            let get = |k: &str| m.sd[0].1.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
            assert_eq!((get("id"), get("vendor")), (Some(want), Some(want)), "{line}");
            assert_eq!(m.msg, None, "no MSG (nor its space) for an empty body");
        }
    }

    #[test]
    fn syslog_pri_and_severity() {
        for (sev, code) in [(Severity::High, 4u16), (Severity::Medium, 5), (Severity::Low, 6)] {
            let mut a = benign();
            a.severity = sev;
            for facility in [0u8, 1, 4, 10, 16, 23] {
                let m = parse_syslog(&to_syslog(&a, "x", facility, "h", 1)).unwrap();
                assert_eq!(m.pri, u16::from(facility) * 8 + code);
            }
            // Out of range facilities are taken as local7 (23).
            for facility in [24u8, 200, 255] {
                assert_eq!(parse_syslog(&to_syslog(&a, "x", facility, "h", 1)).unwrap().pri, 23 * 8 + code);
            }
        }
        assert!(to_syslog(&benign(), "", 16, "h", 1).starts_with("<132>1 "));
        assert!(to_syslog(&benign(), "", 1, "h", 1).starts_with("<12>1 "));
    }

    #[test]
    fn syslog_header_fields() {
        let mut a = benign();
        a.category = Category::Management;
        let m = parse_syslog(&to_syslog(&a, "b", 1, "", 0)).unwrap();
        assert_eq!(m.header, ["1", "2024-09-29T08:53:20.123456Z", "-", "kavwatch", "0", "MANAGEMENT"]);
        assert_eq!(m.msg.as_deref(), Some("b"));
        let m = parse_syslog(&to_syslog(&a, "", 1, "my host\u{7f}\u{e9}", u32::MAX)).unwrap();
        assert_eq!(m.header[2], "my\\x20host\\x7f\\xc3\\xa9");
        assert_eq!(m.header[4], "4294967295");
        // At most 255 characters, never cutting a \xHH group.
        assert_eq!(header_token(&"x".repeat(300), 255), "x".repeat(255));
        assert_eq!(header_token(&format!("{}\u{e9}", "x".repeat(250)), 255), "x".repeat(250));
        assert_eq!(header_token(&format!("{}\u{e9}", "x".repeat(247)), 255), format!("{}\\xc3\\xa9", "x".repeat(247)));
        assert_eq!(header_token(" ", 255), "\\x20");
        // Negative time (before 1970) still gives a valid TIMESTAMP.
        a.time_ns = -1;
        assert_eq!(parse_syslog(&to_syslog(&a, "", 1, "h", 1)).unwrap().header[1], "1969-12-31T23:59:59.999999Z");
    }

    #[test]
    fn syslog_body_is_kept_on_one_line() {
        let m = parse_syslog(&to_syslog(&benign(), "a\r\nb\u{1b}\u{e9} [x] \"\\", 1, "h", 1)).unwrap();
        assert_eq!(m.msg.as_deref(), Some("a\\x0d\\x0ab\\x1b\\xc3\\xa9 [x] \"\\"));
        assert_eq!(m.sd.len(), 1);
    }

    // -----------------------------------------------------------------------------------------
    // (4) JSON and ECS

    fn parse_json(s: &str) -> Value {
        assert!(!s.contains('\n'), "one line");
        serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
    }

    #[test]
    fn json_hostile_round_trips() {
        let a = hostile();
        let v = parse_json(&to_json(&a));
        assert_eq!(v["id"], HOSTILE_ID);
        assert_eq!(v["sensor"], HOSTILE_SENSOR);
        assert_eq!(v["vendor"], HOSTILE_VENDOR);
        assert_eq!(v["domains"], json!(HOSTILE_DOMAINS));
        assert_eq!(v["rule_ids"], json!(["kl-update|x=1", "kl,2"]));
        assert_eq!(v["vlan"], json!([100, 200]));
        assert_eq!(v["mac"], "aa:bb:cc:dd:ee:0f");
        assert_eq!(v["hostname"], EVIL);
        assert_eq!(v["host"], "10.0.0.5");
        assert_eq!((v["category"].as_str(), v["severity"].as_str()), (Some("update"), Some("high")));
        assert_eq!((v["sequence"].as_u64(), v["count"].as_u64(), v["total"].as_u64()), (Some(2), Some(3), Some(12)));
        assert_eq!(v["timestamp"], "2024-09-29T08:53:20.123456Z");
        assert_eq!(v["first_seen"], "2024-09-29T08:36:40.000000Z");
        assert_eq!(v["last_seen"], "2024-09-29T08:53:20.123456Z");
        assert_eq!(v["cutoff"], "2024-09-29T04:00:00.000000Z");
        assert_eq!(v["after_cutoff"], true);
        let e = &v["evidence"];
        assert_eq!(e["domain"], EVIL);
        assert_eq!(e["http_path"], HOSTILE_PATH);
        assert_eq!(e["input"], "eth0 \"x\"\\");
        assert_eq!((e["event_type"].as_str(), e["proto"].as_str()), (Some("http"), Some("TCP")));
        assert_eq!((e["src_ip"].as_str(), e["src_port"].as_u64()), (Some("10.0.0.5"), Some(51515)));
        assert_eq!((e["dest_ip"].as_str(), e["dest_port"].as_u64()), (Some("192.0.2.7"), Some(80)));
        // Every Alert field, times as strings instead of the *_ns fields.
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "after_cutoff",
                "category",
                "count",
                "cutoff",
                "domains",
                "evidence",
                "first_seen",
                "host",
                "hostname",
                "id",
                "last_seen",
                "mac",
                "rule_ids",
                "sensor",
                "sequence",
                "severity",
                "timestamp",
                "total",
                "vendor",
                "vlan"
            ]
        );
    }

    #[test]
    fn json_optional_fields() {
        let mut a = benign();
        a.vlan.clear();
        a.mac = None;
        a.evidence.input = None;
        let v = parse_json(&to_json(&a));
        let o = v.as_object().unwrap();
        assert!(!o.contains_key("vlan") && !o.contains_key("mac"));
        assert!(!v["evidence"].as_object().unwrap().contains_key("http_path"));
        assert!(!v["evidence"].as_object().unwrap().contains_key("input"));
    }

    #[test]
    fn json_escapes_non_ascii_as_unicode_escapes() {
        let mut a = benign();
        a.sensor = "\u{e9}\u{7f}\u{1f600}\u{2028}".into();
        let s = to_json(&a);
        assert!(s.contains(r#""sensor":"\u00e9\u007f\ud83d\ude00\u2028""#), "{s}");
        assert_eq!(parse_json(&s)["sensor"], a.sensor);
    }

    #[test]
    fn ecs_hostile_round_trips() {
        let a = hostile();
        let v = parse_json(&to_ecs(&a));
        assert_eq!(v["@timestamp"], "2024-09-29T08:53:20.123456Z");
        assert_eq!(v["ecs"]["version"], ECS_VERSION);
        assert_eq!(
            v["message"],
            format!("10.0.0.5: 3 {HOSTILE_VENDOR} update contacts (alert 2, 12 in total), last {EVIL} via http")
        );
        let ev = &v["event"];
        assert_eq!(ev["kind"], "alert");
        assert_eq!(ev["category"], json!(["network"]));
        assert_eq!(ev["type"], json!(["protocol"]));
        assert_eq!(ev["severity"], 73);
        assert_eq!(ev["id"], HOSTILE_ID);
        assert_eq!(ev["start"], "2024-09-29T08:36:40.000000Z");
        assert_eq!(ev["end"], "2024-09-29T08:53:20.123456Z");
        assert_eq!((ev["dataset"].as_str(), ev["module"].as_str()), (Some("kavwatch.alert"), Some("kavwatch")));
        assert_eq!(v["source"], json!({ "ip": "10.0.0.5", "port": 51515, "mac": "AA-BB-CC-DD-EE-0F" }));
        assert_eq!(v["destination"], json!({ "ip": "192.0.2.7", "port": 80, "domain": EVIL }));
        assert_eq!(
            v["network"],
            json!({ "transport": "tcp", "protocol": "http", "type": "ipv4", "vlan": { "id": "100" },
                    "inner": { "vlan": { "id": "200" } } })
        );
        assert_eq!(v["url"], json!({ "domain": EVIL, "path": HOSTILE_PATH }));
        assert!(v.get("dns").is_none() && v.get("tls").is_none());
        assert_eq!(
            v["rule"],
            json!({ "id": "kl-update|x=1", "name": format!("{HOSTILE_VENDOR} update contact after the US cutoff"),
                    "category": "update", "ruleset": HOSTILE_VENDOR })
        );
        assert_eq!(
            v["observer"],
            json!({ "name": HOSTILE_SENSOR, "product": "kavwatch", "vendor": "kavwatch", "type": "sensor" })
        );
        assert_eq!(v["host"], json!({ "ip": ["10.0.0.5"], "mac": ["AA-BB-CC-DD-EE-0F"], "hostname": EVIL }));
        assert_eq!(v["related"], json!({ "hosts": HOSTILE_DOMAINS, "ip": ["10.0.0.5", "192.0.2.7"] }));
        assert_eq!(v["labels"], json!({ "after_cutoff": "true" }));
        assert_eq!(
            v["kavwatch"],
            json!({
                "sequence": 2, "count": 3, "total": 12, "domains": HOSTILE_DOMAINS,
                "rule_ids": ["kl-update|x=1", "kl,2"], "cutoff": "2024-09-29T04:00:00.000000Z",
                "after_cutoff": true, "vendor": HOSTILE_VENDOR, "category": "update", "severity": "high",
                "host": "10.0.0.5", "vlan": [100, 200], "input": "eth0 \"x\"\\"
            })
        );
    }

    #[test]
    fn ecs_per_protocol_fields() {
        // DNS query from the host.
        let a = benign();
        let v = parse_json(&to_ecs(&a));
        assert_eq!(v["dns"], json!({ "question": { "name": "dnl-01.geo.kaspersky.com" }, "type": "query" }));
        assert_eq!(v["event"]["type"], json!(["protocol"]));
        assert_eq!(
            v["network"],
            json!({ "transport": "udp", "protocol": "dns", "type": "ipv4", "vlan": { "id": "100" } })
        );
        assert!(v.get("url").is_none() && v.get("tls").is_none());

        // DNS response to the host, over IPv6, untagged, MAC unknown.
        let mut r = benign();
        r.host = ip("2001:db8::5");
        r.evidence.src_ip = ip("2001:db8::53");
        r.evidence.dest_ip = ip("2001:db8::5");
        r.vlan.clear();
        let v = parse_json(&to_ecs(&r));
        assert_eq!(v["dns"]["type"], "answer");
        assert_eq!(v["destination"]["mac"], "00-11-22-AA-BB-CC");
        assert!(v["source"].get("mac").is_none());
        assert_eq!(v["network"], json!({ "transport": "udp", "protocol": "dns", "type": "ipv6" }));
        assert_eq!(v["related"]["ip"], json!(["2001:db8::5", "2001:db8::53"]));
        r.mac = None;
        let v = parse_json(&to_ecs(&r));
        assert!(v["destination"].get("mac").is_none() && v["host"].get("mac").is_none());
        assert!(v["kavwatch"].get("vlan").is_none());

        // TLS.
        let mut t = benign();
        t.evidence.event_type = "tls";
        t.evidence.proto = "TCP";
        t.evidence.dest_port = 443;
        let v = parse_json(&to_ecs(&t));
        assert_eq!(v["tls"], json!({ "client": { "server_name": "dnl-01.geo.kaspersky.com" } }));
        assert_eq!(v["event"]["type"], json!(["connection"]));
        assert_eq!(v["network"]["transport"], "tcp");
        assert!(v.get("dns").is_none() && v.get("url").is_none());

        // HTTP without a path.
        t.evidence.event_type = "http";
        let v = parse_json(&to_ecs(&t));
        assert_eq!(v["url"], json!({ "domain": "dnl-01.geo.kaspersky.com" }));
    }

    // -----------------------------------------------------------------------------------------
    // Severity in each format

    #[test]
    fn severity_mapping() {
        for (sev, cef, ecs, syslog) in
            [(Severity::High, "8", 73, 4u16), (Severity::Medium, "5", 47, 5), (Severity::Low, "3", 21, 6)]
        {
            let mut a = benign();
            a.severity = sev;
            let (h, _) = parse_cef(&to_cef(&a, "1")).unwrap();
            assert_eq!(h[6], cef);
            assert_eq!(parse_json(&to_ecs(&a))["event"]["severity"], ecs);
            assert_eq!(parse_json(&to_json(&a))["severity"], sev.as_str());
            let m = parse_syslog(&to_syslog(&a, "", 0, "h", 1)).unwrap();
            assert_eq!(m.pri, syslog);
            assert_eq!(m.sd[0].1[3], ("severity".to_string(), sev.as_str().to_string()));
        }
    }
}
