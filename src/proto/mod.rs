//! Protocol parsers: pure functions over `&[u8]` that know nothing of flows, rules or output.

pub mod dns;
pub mod http;
pub mod name;
pub mod tls;
