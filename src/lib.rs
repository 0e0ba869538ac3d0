//! kavwatch: finds the hosts that still talk to Kaspersky's update, telemetry, activation and
//! management servers after the US ban, from the names in their DNS queries, TLS ClientHellos
//! and HTTP requests.
//!
//! Pipeline, one module per stage: [`capture`] -> [`decode`] -> [`flow`] hash ->
//! [`pipeline`] workers ([`worker`], parsers in [`proto`], [`rules`]) -> [`observation`]s ->
//! [`host`] verdicts -> [`output`].

pub mod alert;
pub mod attribution;
pub mod bounded;
pub mod capture;
pub mod config;
pub mod decode;
pub mod fleet;
pub mod flow;
pub mod fuzzing;
pub mod host;
pub mod ksc;
pub mod leases;
pub mod live;
pub mod metrics;
pub mod observation;
pub mod output;
pub mod pipeline;
pub mod proto;
pub mod rules;
pub mod spill;
pub mod state;
pub mod worker;
