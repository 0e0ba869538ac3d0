//! `kavwatch fleet init|collect`, and `--publish` for `live` and `analyze`: options to
//! [`kavwatch::fleet`].

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};

use super::args::*;
use super::*;
use kavwatch::fleet::collect::{CollectConfig, Collector};
use kavwatch::fleet::nats::{ConnState, NatsConfig, connect, runtime};
use kavwatch::fleet::publish::{PublishConfig, Publisher};
use kavwatch::fleet::stream::{InitOutcome, StreamSpec, init as init_stream};

fn nats_config(urls: &str, auth: &NatsArgs, name: &str) -> Result<NatsConfig> {
    Ok(NatsConfig::new(urls, auth.nats_creds.clone(), auth.nats_ca.clone(), name)?)
}

/// `--publish`: the publisher, its spool under the alert spool directory (`SPOOL/nats`).
pub(crate) fn start_publisher(
    p: &PublishArgs,
    alerts: &AlertArgs,
    sensor: &str,
    state_dir: Option<&Path>,
) -> Result<Option<Publisher>> {
    let Some(urls) = &p.publish else { return Ok(None) };
    let nats = nats_config(urls, &p.nats, &format!("kavwatch sensor {sensor}"))?;
    let spool_dir = alerts
        .spool_dir
        .clone()
        .unwrap_or_else(|| state_dir.map_or_else(default_state_dir, Path::to_path_buf).join("spool"));
    Ok(Some(Publisher::start(PublishConfig {
        nats,
        sensor: sensor.to_string(),
        spool_dir,
        spool_max_bytes: alerts.spool_max_bytes,
        drain_timeout: p.publish_drain_timeout,
    })?))
}

pub(crate) fn init(a: FleetInitArgs) -> Result<ExitCode> {
    let nats = nats_config(&a.nats, &a.auth, "kavwatch fleet init")?;
    let spec = StreamSpec {
        replicas: a.replicas as usize,
        max_age: a.max_age,
        max_bytes: i64::try_from(a.max_bytes).unwrap_or(i64::MAX),
        duplicate_window: a.duplicate_window,
    };
    let rt = runtime()?;
    let outcome = rt.block_on(async {
        let client = connect(&nats, Arc::new(ConnState::default()), true).await?;
        let js = async_nats::jetstream::new(client.clone());
        let r = init_stream(&js, &spec).await;
        let _ = client.drain().await;
        r
    })?;
    let name = kavwatch::fleet::STREAM;
    match outcome {
        InitOutcome::Created => {
            println!("kavwatch: stream {name} created (subjects kavwatch.>, {} replica(s))", spec.replicas);
            Ok(ExitCode::SUCCESS)
        }
        InitOutcome::Same => {
            println!("kavwatch: stream {name} exists, as asked");
            Ok(ExitCode::SUCCESS)
        }
        InitOutcome::Differs(d) => {
            eprintln!("kavwatch: stream {name} exists with other settings (left as it is):");
            for line in d {
                eprintln!("  {line}");
            }
            Ok(ExitCode::from(1))
        }
    }
}

pub(crate) fn collect(a: FleetCollectArgs) -> Result<ExitCode> {
    let (stop, _) = stop_on_signals()?;
    let rules = Arc::new(load_rules(a.rules.rules.as_deref())?);
    let cutoff_override = parse_cutoff(a.cutoff.as_deref())?;
    let name = a.name.clone().unwrap_or_else(default_sensor_name);
    let nats = nats_config(&a.nats, &a.auth, &format!("kavwatch collector {name}"))?;
    let state_dir = a.state_dir.clone().unwrap_or_else(|| default_state_dir().join("fleet"));
    for p in &a.report {
        // A directory that cannot take the report fails now, not at the first interval.
        let dir = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if !dir.is_dir() {
            anyhow::bail!("--report {}: no directory {}", p.display(), dir.display());
        }
    }
    let delivery = start_alerts(&a.alerts, &name, Some(&state_dir))?;
    let alerts = delivery.map(|d| {
        let e = alert_engine(&a.alerts, &name, cutoff_override);
        (e, d)
    });
    let cfg = CollectConfig {
        nats,
        name: name.clone(),
        state_dir: state_dir.clone(),
        fresh: a.fresh,
        report_interval: a.report_interval.max(std::time::Duration::from_secs(1)),
        max_hosts: a.max_hosts,
        cutoff_ns: cutoff_override.unwrap_or(rules.set.vendors[0].cutoff_ns),
        rules,
        cutoff_override,
        duration: a.duration,
    };
    let collector = Collector::new(cfg, alerts)?;
    if collector.last_seq > 0 {
        eprintln!(
            "kavwatch: fleet collect: resuming after stream sequence {} ({} hosts, checkpoint read in {} ms)",
            collector.last_seq,
            collector.table.len(),
            collector.stats.resume_ms
        );
    }
    let reports = a.report.clone();
    let write = |r: &kavwatch::output::report::Report| -> Result<(), String> {
        for p in &reports {
            write_atomic(p, &render(r, p))?;
        }
        Ok(())
    };
    eprintln!("kavwatch: fleet collect from {} (state in {})", a.nats, state_dir.display());
    let report = kavwatch::fleet::collect::run(collector, &write, &stop).context("fleet collect")?;
    if reports.iter().any(|p| p.as_os_str() == "-") {
        print!("{}", report.to_json());
    }
    eprintln!(
        "kavwatch: fleet collect: {} hosts from {} sensor(s), stream sequence {}",
        report.hosts.len(),
        report.fleet_sensors.len(),
        report.stats["collector"]["last_sequence"]
    );
    Ok(ExitCode::SUCCESS)
}
