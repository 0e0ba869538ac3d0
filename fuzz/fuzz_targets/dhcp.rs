#![no_main]
use libfuzzer_sys::fuzz_target;

fn printable(s: &str) -> bool {
    s.bytes().all(|b| (0x21..0x7f).contains(&b))
}

fuzz_target!(|data: &[u8]| {
    // Every payload is tried both ways: the sensor picks the parser by port, which the sender chooses.
    if let Ok(m) = kavwatch::proto::dhcp::parse_dhcpv4(data) {
        // Names that come out are printable ASCII, whatever went in.
        assert!(m.host_name.as_deref().is_none_or(printable));
        assert!(m.fqdn.as_ref().is_none_or(|f| printable(&f.name)));
        assert!(m.client_id.as_ref().is_none_or(|c| c.len() <= 255));
    }
    if let Ok(m) = kavwatch::proto::dhcp::parse_dhcpv6(data) {
        assert!(m.fqdn.as_ref().is_none_or(|f| printable(&f.name)));
        assert!(m.ia_na.len() <= 8 && m.ia_na.iter().all(|ia| ia.addresses.len() <= 8));
        assert!(m.client_duid.as_ref().is_none_or(|d| d.len() <= 130));
        assert!(m.relay.is_none_or(|r| (1..=9).contains(&r.depth)));
    }
});
