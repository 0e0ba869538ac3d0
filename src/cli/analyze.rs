//! `kavwatch analyze`: options to the pipeline, then the sorted pass building the host table,
//! events and alerts.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::args::*;
use super::*;
use anyhow::{Context, Result, bail};

use kavwatch::alert::AlertStats;
use kavwatch::attribution::{Attributor, mark_resolvers};
use kavwatch::capture::expand_inputs;
use kavwatch::fleet::message::SensorStatus;
use kavwatch::host::{HostTable, Verdict};
use kavwatch::output::events::{Inputs, write_event};
use kavwatch::output::report::{Report, RunInfo};
use kavwatch::pipeline::{self, Options};
use kavwatch::spill::{self, Merged, Sorter, SpillArea, SpillError};
use kavwatch::worker::Limits;
use kavwatch::worker::contain;

pub(crate) fn analyze(a: AnalyzeArgs) -> Result<ExitCode> {
    let rules = Arc::new(load_rules(a.rules.rules.as_deref())?);
    let cutoff_override = parse_cutoff(a.cutoff.as_deref())?;
    let cutoff_ns = cutoff_override.unwrap_or(rules.set.vendors[0].cutoff_ns);
    if a.inputs.iter().filter(|p| p.as_os_str() == "-").count() > 1 {
        bail!("standard input (-) can be given only once");
    }
    let inputs = expand_inputs(&a.inputs).map_err(anyhow::Error::msg)?;
    // Open outputs before the long part, so a bad path fails at once.
    let mut events_out = a.events.as_deref().map(create).transpose()?;
    let sensor = a.sensor_name.clone().unwrap_or_else(default_sensor_name);
    contain::set_sample_dir(a.state_dir.clone().unwrap_or_else(contain::default_state_dir));
    let delivery = start_alerts(&a.alerts, &sensor, a.state_dir.as_deref())?;
    let publisher = super::fleet::start_publisher(&a.publish, &a.alerts, &sensor, a.state_dir.as_deref())?;
    let workers =
        a.workers.map(usize::from).unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let spill = SpillArea::new(a.spill_dir.clone().unwrap_or_else(std::env::temp_dir));
    // A directory the spill cannot use fails now, not an hour into the run.
    tempfile::tempfile_in(spill.dir())
        .map_err(|e| anyhow::anyhow!(SpillError { dir: spill.dir().into(), source: e }))?;
    let budget = usize::try_from(a.memory_budget).unwrap_or(usize::MAX);
    let (stop, signal) = stop_on_signals()?;
    let decoders = a.decoders.map(usize::from).unwrap_or(if workers <= 2 { 1 } else { workers / 2 });
    let opts = Options {
        workers,
        decoders,
        limits: Limits { max_flows: a.max_flows.max(1024), ..Limits::default() },
        progress: !a.quiet,
        decode: a.decap.config()?,
        spill: spill.clone(),
        memory_budget: budget,
        stop,
    };
    let mut analysis = pipeline::run(&inputs, rules.clone(), &opts);
    // Connections that named nothing: a DNS answer to the same client may. In time order, as
    // the workers' observations come out of the merge.
    let mut attributor = Attributor::default();
    attributor.set_configured(a.resolvers.clone());
    // Security Center contacts wait for their pair's pattern: sorted again.
    let mut kept = Sorter::new(spill.clone(), budget);
    let mut out = Vec::new();
    for o in std::mem::replace(&mut analysis.observations, Merged::empty(spill.clone())) {
        attributor.process_one(o, &rules, &mut out);
        out.drain(..).for_each(|o| kept.push(o));
    }
    attributor.finish(&rules).into_iter().for_each(|o| kept.push(o));
    analysis.stats.observations = kept.len();
    let input_names: Vec<String> = analysis.inputs.iter().map(|i| i.path.clone()).collect();
    let mut engine = delivery.as_ref().map(|_| alert_engine(&a.alerts, &sensor, cutoff_override));
    // One pass over the sorted observations: host table, events and alerts.
    let mut table = HostTable::new(usize::MAX);
    for o in spill::merge(vec![kept], spill.clone()) {
        table.add(&o, &rules, cutoff_override);
        if let Some(out) = events_out.as_mut() {
            write_event(out, &o, &rules, Inputs::Files(&input_names), cutoff_override).context("writing events")?;
        }
        if let Some(p) = &publisher {
            p.observation(&o, &rules, Inputs::Files(&input_names), cutoff_override);
        }
        if let (Some(engine), Some(delivery)) = (engine.as_mut(), delivery.as_ref())
            && let Some(mut alert) = engine.observe(&o, &rules)
        {
            alert.evidence.input = input_names.get(o.pos.input as usize).cloned();
            delivery.send(&alert);
        }
    }
    if let Some(out) = events_out.as_mut() {
        out.flush().context("writing events")?;
    }
    drop(events_out);
    if let Some(e) = spill.error()
        && !analysis.errors.iter().any(|x| x.starts_with(&e))
    {
        analysis.errors.push(e);
    }
    let spilled = spill.runs.load(Ordering::Relaxed);
    if spilled > 0 && !a.quiet {
        eprintln!(
            "kavwatch: {} observations waited on disk in {} ({:.1} MB in {spilled} sorted runs)",
            spill.items.load(Ordering::Relaxed),
            spill.dir().display(),
            spill.bytes.load(Ordering::Relaxed) as f64 / 1e6
        );
    }
    let mut hosts = table.hosts();
    mark_resolvers(&mut hosts, &attributor);
    let mut report = Report::build(&RunInfo::of(&analysis), &hosts, &table.timeline, &rules, cutoff_ns, &sensor);
    report.stats["attribution"] = serde_json::to_value(&attributor.stats).expect("stats serialise");
    report.stats["ksc"] = serde_json::to_value(&attributor.ksc.stats).expect("stats serialise");
    report.stats["dhcp"] = serde_json::to_value(&attributor.leases.stats).expect("stats serialise");
    let mut alerts_undelivered = false;
    if let (Some(delivery), Some(mut engine)) = (delivery, engine) {
        engine.finish();
        let dests = delivery.finish();
        if !a.quiet {
            eprintln!("kavwatch: {}", kavwatch::alert::summary_line(&engine.stats, &dests));
        }
        for d in &dests {
            if d.waiting > 0 || d.dropped > 0 {
                alerts_undelivered = true;
                eprintln!(
                    "kavwatch: alerts to {}: {} waiting in the spool, {} dropped{}",
                    d.destination,
                    d.waiting,
                    d.dropped,
                    d.last_error.as_deref().map(|e| format!(" (last error: {e})")).unwrap_or_default()
                );
            }
        }
        let stats = AlertStats {
            engine: engine.stats,
            destinations: dests.into_iter().map(|d| (d.destination.clone(), d)).collect(),
        };
        report.stats["alerts"] = serde_json::to_value(&stats).expect("alert stats serialise");
    }
    let mut publish_undelivered = false;
    if let Some(p) = publisher {
        let status = SensorStatus::of(&report, "analyze", input_names.clone(), 0, true, p.stats());
        p.status(&status);
        let ps = p.finish();
        if !a.quiet {
            eprintln!("kavwatch: {}", kavwatch::fleet::publish::summary_line(&ps));
        }
        if ps.waiting > 0 || ps.dropped > 0 {
            publish_undelivered = true;
            eprintln!(
                "kavwatch: publish to {}: {} waiting in the spool (sent by the next run with this spool), {} dropped{}",
                ps.servers,
                ps.waiting,
                ps.dropped,
                ps.last_error.as_deref().map(|e| format!(" (last error: {e})")).unwrap_or_default()
            );
        }
        report.stats["publish"] = serde_json::to_value(&ps).expect("stats serialise");
    }
    if let Some(path) = &a.report {
        write_file(path, &render(&report, path))?;
    }
    if !a.quiet {
        if let Some(w) = report.undecoded_text() {
            eprintln!("kavwatch: warning: {w}");
        }
        let table = report.to_text();
        // With events on stdout, the table goes to stderr so the JSON stays clean.
        if a.events.as_deref().is_some_and(|p| p.as_os_str() == "-")
            || a.report.as_deref().is_some_and(|p| p.as_os_str() == "-")
        {
            eprint!("{table}");
        } else {
            print!("{table}");
        }
    }
    // The process ends here: freeing the rules (perhaps 100,000 names) would only cost time.
    std::mem::forget(rules);
    for e in &analysis.errors {
        eprintln!("kavwatch: {}", e.replace('\n', " "));
    }
    if analysis.interrupted {
        let signal = signal.load(Ordering::Relaxed);
        eprintln!(
            "kavwatch: interrupted by signal {signal}: the report covers the {} packets read before it",
            analysis.stats.packets
        );
        return Ok(ExitCode::from(128u8.saturating_add(signal as u8)));
    }
    if !analysis.errors.is_empty() {
        return Ok(ExitCode::from(2));
    }
    let (panics, restarts) = (report.stat(&["parser_panics", "total"]), report.stat(&["worker_restarts"]));
    if panics + restarts > 0 {
        eprintln!(
            "kavwatch: the run is incomplete: {panics} packet(s) skipped after a contained panic ({restarts} worker restart(s)); see stats.parser_panics"
        );
        return Ok(ExitCode::from(5));
    }
    if alerts_undelivered || publish_undelivered {
        return Ok(ExitCode::from(4));
    }
    if a.fail_on_active && hosts.iter().any(|h| h.verdict() == Verdict::ActiveAfterCutoff) {
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}
