#![no_main]
//! TCP reassembly and the worker's state machine, fed crafted segments of one flow:
//! each record is [flags, direction, seq (4 bytes), len, payload...].
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;

use kavwatch::decode::{Transport, VlanTags};
use kavwatch::flow::FlowKey;
use kavwatch::observation::Position;
use kavwatch::rules::{load::load, matcher::Rules};
use kavwatch::worker::{Limits, PacketMeta, Worker};

fn rules() -> Arc<Rules> {
    static R: OnceLock<Arc<Rules>> = OnceLock::new();
    R.get_or_init(|| Arc::new(Rules::new(load(None).unwrap()))).clone()
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_flows: 16, flow_idle_ns: 1_000, reassembly_bytes: 64 * 1024 };
    let mut w = Worker::new(rules(), limits);
    let client = ("10.0.0.1".parse().unwrap(), 40000);
    let server = ("10.0.0.2".parse().unwrap(), if data.first() == Some(&0) { 53 } else { 443 });
    let (key, _) = FlowKey::new(VlanTags::default(), client, server, 6);
    let mut rest = data.get(1..).unwrap_or(&[]);
    let mut ts = 0;
    while rest.len() >= 7 {
        let (flags, dir, seq, len) = (rest[0], rest[1] & 1 == 1, u32::from_be_bytes([rest[2], rest[3], rest[4], rest[5]]), rest[6] as usize);
        let payload = &rest[7..(7 + len).min(rest.len())];
        rest = &rest[(7 + len).min(rest.len())..];
        ts += 1;
        let meta = PacketMeta { ts_ns: ts, clock_ns: ts, pos: Position::default(), key, hash: key.hash64(), reverse: dir, src_mac: None, transport: Transport::Tcp { seq, flags }, attributable: true, payload_mapped: false, payload_start: 0, payload_len: payload.len() as u32 };
        w.process(&meta, payload);
    }
    w.finish();
});
