#![no_main]
//! UDP datagrams between a few hosts (DNS, DHCPv4/v6, Security Center ports, QUIC) through a
//! worker and then the sink's time-ordered pass (DNS-answer map, resolvers, Security Center
//! pairs, DHCP lease book), the host table and the events writer. Each record is
//! [port pair, addresses and direction, len, payload...].
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;

use kavwatch::attribution::Attributor;
use kavwatch::decode::{Transport, VlanTags};
use kavwatch::flow::FlowKey;
use kavwatch::host::HostTable;
use kavwatch::observation::Position;
use kavwatch::output::events::{Inputs, write_events};
use kavwatch::rules::{load::load, matcher::Rules};
use kavwatch::worker::{Limits, PacketMeta, Worker};

fn rules() -> Arc<Rules> {
    static R: OnceLock<Arc<Rules>> = OnceLock::new();
    R.get_or_init(|| Arc::new(Rules::new(load(None).unwrap()))).clone()
}

const PORTS: [(u16, u16); 8] = [(40000, 53), (68, 67), (546, 547), (40001, 13000), (40002, 15000), (40003, 15111), (40004, 443), (67, 68)];
const V4: [&str; 3] = ["10.0.0.1", "10.0.0.2", "10.0.0.3"];
const V6: [&str; 3] = ["fe80::1", "fd00::2", "fd00::3"];

fuzz_target!(|data: &[u8]| {
    let rules = rules();
    let mut w = Worker::new(rules.clone(), Limits { max_flows: 16, flow_idle_ns: 1_000_000, reassembly_bytes: 64 * 1024 });
    let mut rest = data;
    let mut ts = 0;
    while rest.len() >= 3 {
        let (ports, who, len) = (PORTS[usize::from(rest[0] & 7)], rest[1], usize::from(rest[2]) * 4);
        let payload = &rest[3..(3 + len).min(rest.len())];
        rest = &rest[(3 + len).min(rest.len())..];
        let table = if who & 0x80 != 0 { &V6 } else { &V4 };
        let (a, b): (IpAddr, IpAddr) = (table[usize::from(who & 3) % 3].parse().unwrap(), table[usize::from(who >> 2 & 3) % 3].parse().unwrap());
        let (key, reverse) = FlowKey::new(VlanTags::default(), (a, ports.0), (b, ports.1), 17);
        let reverse = reverse ^ (who & 0x40 != 0);
        ts += 1_000_000;
        let meta = PacketMeta { ts_ns: ts, clock_ns: ts, pos: Position::default(), key, hash: key.hash64(), reverse, src_mac: Some([2, 0, 0, 0, 0, who]), transport: Transport::Udp, attributable: true, payload_mapped: false, payload_start: 0, payload_len: payload.len() as u32 };
        w.process(&meta, payload);
    }
    w.finish();
    let mut obs = w.take_observations();
    obs.sort_by_key(|o| o.sort_key());
    let mut attributor = Attributor::default();
    let mut obs = attributor.process(obs, &rules, 0);
    obs.extend(attributor.finish(&rules));
    let mut table = HostTable::new(4);
    for o in &obs {
        table.add(o, &rules, None);
    }
    let _ = table.hosts();
    write_events(&mut std::io::sink(), &obs, &rules, Inputs::Files(&["fuzz".to_string()]), None).unwrap();
});
