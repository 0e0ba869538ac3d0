//! Protocol parsers: pure functions over `&[u8]` that know nothing of flows, rules or output.

pub mod dhcp;
pub mod dns;
pub mod http;
pub mod ja3;
pub mod name;
pub mod quic;
pub mod tls;
