//! `kavwatch live`: options to [`kavwatch::live::run`].

use std::process::ExitCode;
use std::sync::Arc;

use super::args::*;
use super::*;
use anyhow::{Context, Result};

use kavwatch::alert::engine::{AlertEngine, EngineConfig};
use kavwatch::live::{Control, Engine, LiveOptions, LiveOutputs, open_sources};
use kavwatch::output::report::Report;
use kavwatch::rules::load::load;
use kavwatch::rules::matcher::Rules;
use kavwatch::worker::Limits;
use kavwatch::worker::contain;

pub(crate) fn live(a: LiveArgs) -> Result<ExitCode> {
    let control = Control::default();
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, control.stop.clone()).context("installing signal handlers")?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, control.reload.clone())
        .context("installing signal handlers")?;
    let rules = Arc::new(load_rules(a.rules.rules.as_deref())?);
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
    let events = a.events.as_deref().map(create).transpose()?;
    let delivery = start_alerts(&a.alerts, &sensor, a.state_dir.as_deref())?;
    let sources = open_sources(&opts)?;
    if let Some(user) = &a.user {
        drop_privileges(user)?;
    }
    let engine = delivery.map(|d| {
        let e = AlertEngine::new(EngineConfig {
            interval_ns: a.alerts.alert_interval.as_nanos().min(i64::MAX as u128) as i64,
            alert_all: a.alerts.alert_all,
            sensor: sensor.clone(),
            cutoff_override,
        });
        (e, d)
    });
    let report_path = a.report.clone();
    let write_report = |r: &Report| -> Result<(), String> {
        match &report_path {
            Some(p) => write_atomic(p, &render(r, p)),
            None => Ok(()),
        }
    };
    let rules_path = a.rules.rules.clone();
    let reload = || -> Result<Rules, String> {
        let p = rules_path.as_deref().expect("reload is offered only with --rules");
        load(Some(p)).map(Rules::new).map_err(|e| format!("{e:#}"))
    };
    let out = LiveOutputs {
        events,
        write_report: Some(&write_report),
        alerts: engine,
        reload: rules_path.is_some().then_some(&reload as &dyn Fn() -> Result<Rules, String>),
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
