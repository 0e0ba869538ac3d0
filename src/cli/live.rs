//! `kavwatch live`: options to [`kavwatch::live::run`].

use std::cell::RefCell;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use super::args::*;
use super::config::{Reread, changed_keys, remerge};
use super::*;
use anyhow::{Context, Result};

use kavwatch::live::{Control, Engine, LiveOptions, LiveOutputs, Reload, open_sources};
use kavwatch::output::files::EventsOut;
use kavwatch::output::report::Report;
use kavwatch::rules::load::load;
use kavwatch::rules::matcher::Rules;
use kavwatch::worker::Limits;
use kavwatch::worker::contain;

/// Options a SIGHUP applies; a change to any other needs a restart.
const RELOADABLE: [&str; 5] = ["rules", "report-interval", "stats-interval", "alert-interval", "alert-all"];

pub(crate) fn live(a: LiveArgs, reread: Option<Reread>) -> Result<ExitCode> {
    let control = Control::default();
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, control.stop.clone()).context("installing signal handlers")?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, control.reload.clone())
        .context("installing signal handlers")?;
    let rules_started = std::time::Instant::now();
    let rules = Arc::new(load_rules(a.rules.rules.as_deref())?);
    let rules_load = rules_started.elapsed();
    let cutoff_override = parse_cutoff(a.cutoff.as_deref())?;
    let sensor = a.sensor_name.clone().unwrap_or_else(default_sensor_name);
    contain::set_sample_dir(a.state_dir.clone().unwrap_or_else(contain::default_state_dir));
    let workers =
        a.workers.map(usize::from).unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let opts = LiveOptions {
        interfaces: a.interfaces.clone(),
        engine: if a.engine == "pcap" { Engine::Pcap } else { Engine::AfPacket },
        bpf: a.bpf.clone(),
        workers,
        snaplen: a.snaplen,
        promisc: !a.no_promisc,
        ring_block_size: a.ring_block_size,
        ring_blocks: a.ring_blocks,
        limits: Limits { max_flows: a.max_flows.max(1024), ..Limits::default() },
        max_hosts: a.max_hosts,
        resolvers: a.resolvers.clone(),
        cutoff_override,
        cutoff_ns: cutoff_override.unwrap_or(rules.set.vendors[0].cutoff_ns),
        sensor: sensor.clone(),
        stats_interval: a.stats_interval.max(std::time::Duration::from_secs(1)),
        report_interval: a.report_interval.max(std::time::Duration::from_secs(1)),
        duration: a.duration,
        decode: a.decap.config()?,
        state: Some(kavwatch::state::StateConfig {
            dir: a.state_dir.clone().unwrap_or_else(default_state_dir),
            fresh: a.fresh,
        }),
    };
    let events = a
        .events
        .as_deref()
        .map(|p| {
            EventsOut::open(p, a.events_max_bytes, a.events_keep)
                .with_context(|| format!("cannot create {}", p.display()))
        })
        .transpose()?;
    let delivery = start_alerts(&a.alerts, &sensor, a.state_dir.as_deref())?;
    let publish = super::fleet::start_publisher(&a.publish, &a.alerts, &sensor, a.state_dir.as_deref())?;
    // Before capture starts: a port in use ends the command here.
    let metrics = a
        .metrics
        .map(|addr| {
            let published = Arc::new(kavwatch::metrics::Published::default());
            let bound = kavwatch::metrics::serve(addr, published.clone())
                .with_context(|| format!("--metrics {addr}: cannot listen"))?;
            Ok::<_, anyhow::Error>((bound, kavwatch::metrics::Exporter::new(published, rules_load)))
        })
        .transpose()?;
    let sources = open_sources(&opts)?;
    if let Some(user) = &a.user {
        drop_privileges(user)?;
    }
    let engine = delivery.map(|d| {
        let e = alert_engine(&a.alerts, &sensor, cutoff_override);
        (e, d)
    });
    let report_path = a.report.clone();
    let write_report = |r: &Report| -> Result<(), String> {
        match &report_path {
            Some(p) => write_atomic(p, &render(r, p)),
            None => Ok(()),
        }
    };
    let current = RefCell::new((a.rules.rules.clone(), reread.as_ref().map(|r| r.matches.clone())));
    let reload = || -> Reload { reload(&current, reread.as_ref()) };
    let out = LiveOutputs {
        events,
        write_report: Some(&write_report),
        alerts: engine,
        reload: (a.rules.rules.is_some() || reread.is_some()).then_some(&reload as &dyn Fn() -> Reload),
        metrics: metrics.map(|(bound, exporter)| {
            eprintln!("kavwatch: metrics on http://{bound}/metrics");
            exporter
        }),
        publish,
    };
    eprintln!(
        "kavwatch: live on {} ({} engine, {} workers){}",
        a.interfaces.join(", "),
        opts.engine.as_str(),
        workers,
        a.bpf.as_deref().map(|b| format!(", filter {b:?}")).unwrap_or_default()
    );
    let report = kavwatch::live::run(sources, rules, &opts, out, &control).map_err(anyhow::Error::msg)?;
    if a.report.as_deref().is_some_and(|p| p.as_os_str() == "-") {
        print!("{}", report.to_json());
    }
    if let Some(dests) = report.stats.get("alerts").and_then(|a| a.get("destinations")).and_then(|d| d.as_object()) {
        for (url, d) in dests {
            let (waiting, dropped) = (d["waiting"].as_u64().unwrap_or(0), d["dropped"].as_u64().unwrap_or(0));
            if waiting > 0 || dropped > 0 {
                eprintln!("kavwatch: alerts to {url}: {waiting} waiting in the spool, {dropped} dropped");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// SIGHUP: the configuration file again (when there is one), then the rules from the path it
/// names now. `current` holds the rules path and the merged options in force.
fn reload(current: &RefCell<(Option<PathBuf>, Option<clap::ArgMatches>)>, reread: Option<&Reread>) -> Reload {
    let mut r = Reload::default();
    let mut cur = current.borrow_mut();
    if let Some(reread) = reread {
        match remerge(reread) {
            Err(e) => r.notes.push(format!(
                "configuration NOT reloaded, the old one stays: {}",
                format!("{e:#}").replace("\nkavwatch: ", "; ")
            )),
            Ok((Cli { command: Command::Live(new) }, matches)) => {
                let changed = cur.1.as_ref().map(|old| changed_keys(old, &matches)).unwrap_or_default();
                let path = reread.path.display();
                for key in &changed {
                    if RELOADABLE.contains(&key.as_str()) {
                        r.notes.push(format!("{key} changed in {path}: applied"));
                    } else {
                        r.notes.push(format!("{key} changed in {path}: NOT applied, it needs a restart"));
                    }
                }
                if changed.is_empty() {
                    r.notes.push(format!("{path}: no option changed"));
                }
                let has = |k: &str| changed.iter().any(|c| c == k);
                if has("report-interval") {
                    r.report_interval = Some(new.report_interval.max(std::time::Duration::from_secs(1)));
                }
                if has("stats-interval") {
                    r.stats_interval = Some(new.stats_interval.max(std::time::Duration::from_secs(1)));
                }
                if has("alert-interval") || has("alert-all") {
                    let interval = new.alerts.alert_interval.as_nanos().min(i64::MAX as u128) as i64;
                    r.alerts = Some((interval, new.alerts.alert_all));
                }
                cur.0 = new.rules.rules;
                cur.1 = Some(matches);
            }
            Ok(_) => unreachable!("the same arguments name the same subcommand"),
        }
    }
    r.rules = match &cur.0 {
        Some(p) => Some(load(Some(p)).map(Rules::new).map_err(|e| format!("{e:#}"))),
        None => {
            r.notes.push("the built-in rules cannot change; set `rules` to reload rules".into());
            None
        }
    };
    r
}
