//! The auditor's page: one self-contained HTML file (inline CSS, JS and SVG; nothing is
//! fetched). A Content-Security-Policy allows only this file's own style and script, by hash,
//! so even an escaping bug could not run code. Tables are plain HTML; the script only adds
//! sorting and filtering. Every name from the wire goes through [`esc`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use super::report::{HostRow, Report, VERDICTS, tunnel_text, vlan_text};
use crate::rules::load::parse_instant;
use crate::rules::model::Category;

/// Details shown per host (the JSON report has them all).
const DOMAINS_SHOWN: usize = 20;
const DOMAINS_SHOWN_LARGE: usize = 5;
/// Above this many hosts the page shows fewer details per host, to stay small.
const LARGE: usize = 1000;

/// HTML-escapes text for element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut o = String::new();
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                o.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                o.push('=');
            }
        }
    }
    o
}

fn csp_hash(text: &str) -> String {
    format!("'sha256-{}'", base64(&Sha256::digest(text.as_bytes())))
}

const CSS: &str = r#"
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1a1a1a}
h1{font-size:22px;margin:0 0 4px}
.answer{font-size:18px;margin:8px 0 16px}
.counts{display:flex;gap:12px;margin:12px 0}
.count{border:1px solid #ccc;border-radius:6px;padding:8px 12px;min-width:120px}
.count b{display:block;font-size:22px}
.v-active-after-cutoff b,.verdict.active-after-cutoff{color:#b00020}
.v-active-before-cutoff b,.verdict.active-before-cutoff{color:#9a6700}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:12px 0}
dl.facts dt{font-weight:600}
table{border-collapse:collapse;width:100%;margin:8px 0}
th,td{border-bottom:1px solid #e3e3e3;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f4f4f4;cursor:pointer;user-select:none}
td.n{text-align:right}
.controls{margin:12px 0;display:flex;gap:8px;flex-wrap:wrap}
details table{font-size:12px}
.muted{color:#666}
.warn{border-left:4px solid #b00020;background:#fdf0f2;padding:6px 10px;margin:8px 0}
.s-stale td{background:#fdf0f2;color:#b00020}
svg text{font:11px system-ui,sans-serif}
@media print{.controls{display:none}th{cursor:auto}tr{break-inside:avoid}details{display:block}body{margin:0}}
"#;

const JS: &str = r#"
(function(){
var t=document.getElementById('hosts');if(!t)return;
var body=t.tBodies[0],rows=Array.prototype.slice.call(body.rows);
function val(id){var e=document.getElementById(id);return e?e.value:''}
function apply(){var v=val('f-verdict'),c=val('f-category'),l=val('f-vlan'),q=val('f-text').toLowerCase(),shown=0;
rows.forEach(function(r){var ok=(!v||r.dataset.verdict===v)&&(!c||(' '+r.dataset.categories+' ').indexOf(' '+c+' ')>=0)&&(!l||(r.dataset.vlan||'-')===l)&&(!q||r.textContent.toLowerCase().indexOf(q)>=0);
r.hidden=!ok;if(ok)shown++});document.getElementById('shown').textContent=shown}
['f-verdict','f-category','f-vlan','f-text'].forEach(function(id){var e=document.getElementById(id);if(e)e.addEventListener('input',apply)});
var vl={};rows.forEach(function(r){vl[r.dataset.vlan||'-']=1});var sel=document.getElementById('f-vlan');
Object.keys(vl).sort().forEach(function(k){var o=document.createElement('option');o.value=k;o.textContent=k==='-'?'untagged':'VLAN '+k;sel.appendChild(o)});
var dir={};Array.prototype.forEach.call(t.tHead.rows[0].cells,function(th,i){th.addEventListener('click',function(){dir[i]=!dir[i];
rows.sort(function(a,b){var x=a.cells[i].dataset.k||a.cells[i].textContent,y=b.cells[i].dataset.k||b.cells[i].textContent;
var n=parseFloat(x)-parseFloat(y);var r=isNaN(n)||!/^[0-9.]+$/.test(x+y)?(x<y?-1:x>y?1:0):n;return dir[i]?r:-r});
rows.forEach(function(r){body.appendChild(r)})})});
document.documentElement.setAttribute('data-js','ready');apply();
})();
"#;

const COLORS: [(Category, &str); 6] = [
    (Category::Update, "#c62828"),
    (Category::Telemetry, "#ef6c00"),
    (Category::Activation, "#6a1b9a"),
    (Category::Management, "#1565c0"),
    (Category::Excluded, "#2e7d32"),
    (Category::Other, "#9e9e9e"),
];

fn human(ts: &str) -> String {
    // 2024-09-29T04:00:00.000000Z -> 2024-09-29 04:00 UTC
    format!("{} UTC", ts.get(..16).unwrap_or(ts).replace('T', " "))
}

/// Observations per day (or per hour when the captures span three days or less), stacked by
/// category, with the cutoff drawn where it falls.
fn timeline(r: &Report) -> String {
    let hours: Vec<(&String, &BTreeMap<Category, u64>)> = r.timeline.iter().collect();
    let Some(first) = hours.first().and_then(|(h, _)| parse_instant(&format!("{h}:00:00Z"))) else {
        return "<p class=\"muted\">No observations to draw.</p>".into();
    };
    let last = hours.last().and_then(|(h, _)| parse_instant(&format!("{h}:00:00Z"))).unwrap_or(first);
    let cutoff = parse_instant(&r.cutoff).unwrap_or(first);
    let hour = 3_600_000_000_000i64;
    // Saturating: a merged or fleet report may hold any hours a message carried.
    let by_day = last.saturating_sub(first) > 72 * hour;
    let step = if by_day { 24 * hour } else { hour };
    let start = first.min(cutoff).div_euclid(step).saturating_mul(step);
    let end = (last.max(cutoff).div_euclid(step) + 1).saturating_mul(step);
    let n = (end.saturating_sub(start) / step).clamp(1, 2000) as usize;
    let mut buckets = vec![BTreeMap::<Category, u64>::new(); n];
    for (h, cats) in &hours {
        let Some(t) = parse_instant(&format!("{h}:00:00Z")) else { continue };
        let i = ((t.saturating_sub(start) / step).max(0) as usize).min(n - 1);
        for (c, k) in cats.iter() {
            *buckets[i].entry(*c).or_default() += k;
        }
    }
    let max = buckets.iter().map(|b| b.values().sum::<u64>()).max().unwrap_or(1).max(1);
    let (w, h, left, bottom) = (900.0, 180.0, 40.0, 24.0);
    let bw = (w - left) / n as f64;
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg id=\"timeline\" viewBox=\"0 0 {w} {}\" width=\"100%\" role=\"img\" aria-label=\"Observations per {} by category\">",
        h + bottom + 20.0,
        if by_day { "day" } else { "hour" }
    );
    let _ = write!(s, "<text x=\"0\" y=\"12\">{max}</text><text x=\"0\" y=\"{h}\">0</text>");
    for (i, b) in buckets.iter().enumerate() {
        let mut y = h;
        let x = left + i as f64 * bw;
        let label = super::rfc3339(start.saturating_add((i as i64).saturating_mul(step)));
        for (c, color) in COLORS {
            let k = b.get(&c).copied().unwrap_or(0);
            if k == 0 {
                continue;
            }
            let bh = (h - 16.0) * k as f64 / max as f64;
            y -= bh;
            let _ = write!(
                s,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"{color}\"><title>{} {}: {k}</title></rect>",
                (bw - 1.0).max(0.5),
                &label[..if by_day { 10 } else { 13 }],
                c.as_str()
            );
        }
        if n <= 31 || i % (n / 15).max(1) == 0 {
            let _ =
                write!(s, "<text x=\"{x:.1}\" y=\"{}\">{}</text>", h + 14.0, &label[5..if by_day { 10 } else { 13 }]);
        }
    }
    let cx = left + cutoff.saturating_sub(start) as f64 / step as f64 * bw;
    let _ = write!(
        s,
        "<g class=\"cutoff\" data-cutoff=\"{}\"><line x1=\"{cx:.1}\" y1=\"0\" x2=\"{cx:.1}\" y2=\"{h}\" stroke=\"#000\" stroke-dasharray=\"4 3\"/><text x=\"{:.1}\" y=\"12\">cutoff {}</text></g>",
        esc(&r.cutoff),
        cx + 4.0,
        esc(&human(&super::rfc3339(cutoff)))
    );
    let mut lx = left;
    for (c, color) in COLORS {
        let _ = write!(
            s,
            "<rect x=\"{lx}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{color}\"/><text x=\"{}\" y=\"{}\">{}</text>",
            h + 22.0,
            lx + 14.0,
            h + 31.0,
            c.as_str()
        );
        lx += 100.0;
    }
    s.push_str("</svg>");
    s
}

/// The DHCP host name; earlier holders of the address below it.
fn hostname_cell(h: &HostRow) -> String {
    let Some(name) = &h.hostname else {
        return "<span class=\"muted\">&ndash;</span>".into();
    };
    let earlier: Vec<String> = h.hostnames.iter().filter(|n| *n != name).map(|n| esc(n)).collect();
    if earlier.is_empty() {
        esc(name)
    } else {
        format!("{}<br><small>before: {}</small>", esc(name), earlier.join(", "))
    }
}

fn host_row(s: &mut String, h: &HostRow, large: bool) {
    let vlan = vlan_text(h);
    let cats: Vec<String> = h.categories.iter().map(|(c, n)| format!("{} {n}", c.as_str())).collect();
    let cat_keys: Vec<&str> = h.categories.keys().map(|c| c.as_str()).collect();
    let _ = write!(
        s,
        "<tr class=\"host\" data-host=\"{}\" data-verdict=\"{}\" data-categories=\"{}\"{}>",
        esc(&h.ip.to_string()),
        esc(&h.verdict),
        cat_keys.join(" "),
        if vlan.is_empty() { String::new() } else { format!(" data-vlan=\"{}\"", esc(&vlan)) }
    );
    let top: Vec<String> = h.domains.iter().take(3).map(|d| format!("{} ({})", esc(&d.domain), d.count)).collect();
    let mut vlan_cell = if vlan.is_empty() { "&ndash;".into() } else { esc(&vlan) };
    if let Some(o) = h.overlay {
        let _ = write!(vlan_cell, "<br><small>overlay {o}</small>");
    }
    if let Some(t) = tunnel_text(h) {
        let _ = write!(vlan_cell, "<br><small data-tunnel>via {}</small>", esc(&t));
    }
    let _ = write!(
        s,
        "<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"verdict {v}\">{v}{}</td><td>{}</td><td data-k=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td>",
        esc(&h.ip.to_string()),
        vlan_cell,
        hostname_cell(h),
        h.mac.as_deref().map(esc).unwrap_or_else(|| "&ndash;".into()),
        h.flags
            .iter()
            .map(String::as_str)
            .chain(h.role.as_deref())
            .map(|f| format!("<br><small>{}</small>", esc(f)))
            .chain(h.ksc_role.as_deref().map(|r| format!("<br><small>KSC {}</small>", esc(r))))
            .collect::<String>(),
        cats.join(", "),
        esc(h.last_seen_after_cutoff.as_deref().unwrap_or("")),
        h.last_seen_after_cutoff.as_deref().map(|t| esc(&human(t))).unwrap_or_else(|| "&ndash;".into()),
        top.join("<br>"),
        esc(&human(&h.first_seen)),
        esc(&human(&h.last_seen)),
        v = esc(&h.verdict)
    );
    let shown = if large { DOMAINS_SHOWN_LARGE } else { DOMAINS_SHOWN };
    let _ = write!(
        s,
        "<td><details><summary>{} domain(s)</summary><table><tr><th>domain</th><th>category</th><th>count</th><th>first seen</th><th>last seen</th><th>seen in</th></tr>",
        h.domains.len()
    );
    for d in h.domains.iter().take(shown) {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&d.domain),
            d.category.as_str(),
            d.count,
            esc(&human(&d.first_seen)),
            esc(&human(&d.last_seen)),
            esc(&d.via.join(", "))
        );
    }
    s.push_str("</table>");
    if h.domains.len() > shown {
        let _ = write!(s, "<p class=\"muted\">{} more in the JSON report.</p>", h.domains.len() - shown);
    }
    if !large && !h.evidence.is_empty() {
        s.push_str("<table><tr><th>time</th><th>seen in</th><th>name</th><th>from</th><th>to</th><th>JA4</th></tr>");
        for e in &h.evidence {
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}:{}</td><td>{}:{}</td><td>{}</td></tr>",
                esc(&e.timestamp),
                esc(&e.event_type),
                esc(&e.domain),
                esc(&e.src_ip.to_string()),
                e.src_port,
                esc(&e.dest_ip.to_string()),
                e.dest_port,
                esc(e.ja4.as_deref().unwrap_or(""))
            );
        }
        s.push_str("</table>");
    }
    let _ = write!(s, "<p class=\"muted\">Sensors: {}</p></details></td></tr>", esc(&h.sensors.join(", ")));
}

/// The fleet collector's Sensors section: each sensor's last status.
fn sensors_table(s: &mut String, r: &Report) {
    s.push_str("<h2>Sensors</h2><table id=\"sensors\"><thead><tr><th>sensor</th><th>state</th><th>mode</th><th>last heard</th><th>inputs</th><th>packets</th><th>kernel drops</th><th>undecoded</th><th>hosts</th><th>observations</th><th>alerts</th><th>publisher at its last status (acked / spooled / dropped / waiting)</th><th>version</th></tr></thead><tbody>");
    for x in &r.fleet_sensors {
        let _ = write!(
            s,
            "<tr data-sensor=\"{}\" data-state=\"{}\" class=\"s-{}\"><td>{}</td><td><b>{}</b></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2} %</td><td>{}</td><td>{}</td><td>{}</td><td>{} / {} / {} / {}</td><td>{}</td></tr>",
            esc(&x.sensor),
            esc(&x.state),
            esc(&x.state),
            esc(&x.sensor),
            esc(&x.state),
            esc(&x.mode),
            esc(&human(&x.last_heard)),
            esc(&x.inputs.join(", ")),
            x.packets,
            x.kernel_drops,
            x.undecoded_share * 100.0,
            x.hosts,
            x.observations,
            x.alerts_raised,
            x.published_acked,
            x.publish_spooled,
            x.publish_dropped,
            x.publish_waiting,
            esc(&x.version)
        );
    }
    s.push_str("</tbody></table><p class=\"muted\">A sensor is stale when it has been silent for more than three of its stats intervals: what it would see is missing from this answer.</p>");
}

/// The whole page.
pub fn to_html(r: &Report) -> String {
    let large = r.hosts.len() > LARGE;
    let active = r.summary.get("active-after-cutoff").copied().unwrap_or(0);
    let csp = format!(
        "default-src 'none'; style-src {}; script-src {}; img-src data:; base-uri 'none'; form-action 'none'",
        csp_hash(CSS),
        csp_hash(JS)
    );
    let mut s = String::with_capacity(4096 + r.hosts.len() * 1500);
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta http-equiv=\"Content-Security-Policy\" content=\"{}\"><meta name=\"viewport\" content=\"width=device-width\"><title>kavwatch report: {active} host(s) active after the cutoff</title><style>{CSS}</style></head><body>",
        esc(&csp)
    );
    let _ = write!(
        s,
        "<h1>Kaspersky traffic after the US ban</h1><p class=\"answer\" id=\"answer\"><b>{active}</b> host(s) still contacted Kaspersky update, telemetry, activation or management servers after {}.</p>",
        esc(&human(&super::rfc3339(parse_instant(&r.cutoff).unwrap_or(0))))
    );
    if let Some(line) = r.stale_sensors_text() {
        let _ = write!(s, "<p class=\"warn\" data-stale-sensors>{}</p>", esc(&line));
    }
    if let Some(line) = r.undecoded_text() {
        let _ = write!(s, "<p class=\"warn\" data-undecoded=\"{:.4}\">{}</p>", r.undecoded_share(), esc(&line));
    }
    s.push_str("<div class=\"counts\">");
    for v in VERDICTS {
        let _ = write!(
            s,
            "<div class=\"count v-{v}\" data-verdict=\"{v}\"><b>{}</b>{v}</div>",
            r.summary.get(v).copied().unwrap_or(0)
        );
    }
    s.push_str("</div><dl class=\"facts\">");
    let legal: Vec<String> = r.rules.iter().map(|x| esc(&x.legal_reference)).filter(|x| !x.is_empty()).collect();
    let _ = write!(
        s,
        "<dt>Cutoff</dt><dd data-cutoff=\"{}\">{} &mdash; {}</dd>",
        esc(&r.cutoff),
        esc(&r.cutoff),
        legal.join("; ")
    );
    let _ = write!(
        s,
        "<dt>Period covered</dt><dd>{} to {}</dd>",
        esc(r.period.first.as_deref().map(human).as_deref().unwrap_or("-")),
        esc(r.period.last.as_deref().map(human).as_deref().unwrap_or("-"))
    );
    let names: Vec<String> = r.inputs.iter().take(20).map(|i| esc(&i.path)).collect();
    let more = r.inputs.len().saturating_sub(20);
    let _ = write!(
        s,
        "<dt>Inputs</dt><dd>{} capture file(s): {}{}</dd><dt>Sensors</dt><dd>{}</dd>",
        r.inputs.len(),
        names.join(", "),
        if more > 0 { format!(" and {more} more") } else { String::new() },
        esc(&r.sensors.join(", "))
    );
    let rules: Vec<String> = r
        .rules
        .iter()
        .map(|x| format!("{} ({}, version {}, {} rules)", esc(&x.file), esc(&x.vendor), esc(&x.version), x.rules))
        .collect();
    let _ = write!(s, "<dt>Rules</dt><dd>{}</dd>", rules.join("; "));
    let st = |p: &[&str]| r.stat(p);
    let _ = write!(
        s,
        "<dt>Limits of this answer</dt><dd>{} packets read, {} decoded; {} skipped (unsupported link types: {}), {} malformed, {} cut short by the snap length; {} flows evicted, {} streams given up before their ClientHello or request was whole, {} fragment sets evicted{}.{}</dd></dl>",
        st(&["packets"]),
        st(&["decoded"]),
        st(&["skipped", "not_ip"]) + st(&["skipped", "not_tcp_udp"]) + st(&["skipped", "unsupported_link"]),
        st(&["skipped", "unsupported_link"]),
        st(&["malformed"]),
        st(&["truncated"]),
        st(&["flows_evicted"]),
        st(&["reassembly_gave_up"]),
        st(&["fragments", "evicted"]),
        if r.errors.is_empty() { String::new() } else { format!("; errors: {}", esc(&r.errors.join("; "))) },
        r.undecoded_text().map(|t| format!(" <b data-undecoded-limit>{}</b>", esc(&t))).unwrap_or_default()
    );
    if let Some(line) = r.panics_text() {
        let _ = write!(s, "<p class=\"warn\" data-incomplete=\"parser-panics\">{}</p>", esc(&line));
    }
    if let Some(line) = r.evidence_dropped_text() {
        let _ = write!(s, "<p class=\"warn\" data-limit=\"evidence\">{}</p>", esc(&line));
    }
    if !r.fleet_sensors.is_empty() {
        sensors_table(&mut s, r);
    }
    s.push_str("<h2>Observations over time</h2>");
    s.push_str(&timeline(r));
    s.push_str("<h2>Hosts</h2><div class=\"controls\"><select id=\"f-verdict\" aria-label=\"verdict\"><option value=\"\">all verdicts</option>");
    for v in VERDICTS {
        let _ = write!(s, "<option>{v}</option>");
    }
    s.push_str("</select><select id=\"f-category\" aria-label=\"category\"><option value=\"\">all categories</option>");
    for c in Category::ALL {
        let _ = write!(s, "<option>{}</option>", c.as_str());
    }
    let _ = write!(
        s,
        "</select><select id=\"f-vlan\" aria-label=\"VLAN\"><option value=\"\">all VLANs</option></select><input id=\"f-text\" type=\"search\" placeholder=\"filter by text\"><span class=\"muted\"><span id=\"shown\">{}</span> of {} hosts shown</span></div>",
        r.hosts.len(),
        r.hosts.len()
    );
    s.push_str("<table id=\"hosts\"><thead><tr><th>IP</th><th>VLAN</th><th>hostname</th><th>MAC</th><th>verdict</th><th>categories</th><th>last seen after cutoff</th><th>top domains</th><th>first seen</th><th>last seen</th><th>details</th></tr></thead><tbody>");
    for h in &r.hosts {
        host_row(&mut s, h, large);
    }
    let _ = writeln!(
        s,
        "</tbody></table><p class=\"muted\">Details list up to {} domains per host{}; the JSON report has them all. Host names come from the DHCP lease the address was under at the host's latest observation; a MAC is the lease's, else the one the host's packets carry (never a router's). A KSC admin-server's \"domains\" are the agents it serves.</p><script>{JS}</script></body></html>",
        if large { DOMAINS_SHOWN_LARGE } else { DOMAINS_SHOWN },
        if large { " (a large report: evidence samples left out)" } else { " and the latest observations" }
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_base64() {
        assert_eq!(esc("<img src=x onerror=\"a\">&'"), "&lt;img src=x onerror=&quot;a&quot;&gt;&amp;&#39;");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"a"), "YQ==");
    }
}
