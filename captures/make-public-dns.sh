#!/usr/bin/env bash
# Makes captures/public-dns.pcap from real programs: the public DNS fallback. When the corporate
# resolver refuses Kaspersky names, KES/KSK ask 8.8.8.8, 1.1.1.1, 223.6.6.6, 9.9.9.9, 185.228.168.168
# directly (docs/kaspersky-indicators.md section 4). On one bridge: a "corporate" dnsmasq
# (10.94.0.53, its own namespace) answering NXDOMAIN for kaspersky.com and all its subdomains and
# www.example.test -> 10.94.0.80; two stand-in "public resolvers", dnsmasq on 10.94.0.8 and 10.94.0.9
# (the bridge's namespace), answering ds.kaspersky.com, dnl-01.geo.kaspersky.com and www.example.test
# with 10.94.0.80; two clients:
#   10.94.0.11 asks the corporate resolver for ds.kaspersky.com (NXDOMAIN), then 10.94.0.8 for
#              ds.kaspersky.com and 10.94.0.9 for dnl-01.geo.kaspersky.com (answered): the fallback;
#   10.94.0.12 (a decoy) asks 10.94.0.8 for www.example.test (a public resolver, but no Kaspersky
#              name), then the corporate resolver for the same name.
# Recorded with tcpdump on the bridge; then tcprewrite moves the stand-ins to the real public
# addresses, 10.94.0.8 -> 8.8.8.8 and 10.94.0.9 -> 1.1.1.1 (sources and destinations, checksums
# recomputed), and editcap moves the first packet to 2024-10-23T10:00:00Z (after the cutoff).
# Needs root, iproute2, tcpdump, tshark (editcap, capinfos), tcpreplay (tcprewrite), dnsmasq,
# dnsutils, python3.
#
#   sudo captures/make-public-dns.sh [OUT-DIR]   # writes OUT-DIR/public-dns.pcap (default: captures/)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(mkdir -p "${1:-$here}" && cd "${1:-$here}" && pwd)
. "$here/netns.sh"
S=kwp-srv
netns_init pubdns $S kwp-corp kwp-c1 kwp-c2

add_bridge_ns $S 10.94.0.8/24,10.94.0.9/24
add_client kwp-corp $S 10.94.0.53/24
add_client kwp-c1 $S 10.94.0.11/24
add_client kwp-c2 $S 10.94.0.12/24

# The corporate resolver: --address=/kaspersky.com/ with no address is NXDOMAIN for the domain
# and all its subdomains (dnsmasq(8)).
nsx kwp-corp dnsmasq --no-daemon --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces \
  --listen-address=10.94.0.53 --except-interface=lo --pid-file="$work/corp.pid" --local-ttl=300 \
  --address=/kaspersky.com/ --address=/example.test/10.94.0.80 --log-facility=/dev/null >/dev/null 2>&1 &
# The stand-in public resolvers, rewritten to 8.8.8.8 and 1.1.1.1 after the recording.
for a in 10.94.0.8 10.94.0.9; do
  nsx $S dnsmasq --no-daemon --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces \
    --listen-address=$a --except-interface=lo --pid-file="$work/pub-$a.pid" --local-ttl=300 \
    --address=/ds.kaspersky.com/10.94.0.80 --address=/dnl-01.geo.kaspersky.com/10.94.0.80 \
    --address=/example.test/10.94.0.80 --log-facility=/dev/null >/dev/null 2>&1 &
done
sleep 1.5

# Not through nsx: $! must be tcpdump itself (ip netns exec execs it), to stop it cleanly with SIGINT.
ip netns exec $S tcpdump --immediate-mode -i br0 -w "$work/raw.pcap" 'ip and port 53' 2>/dev/null &
dump=$!
sleep 1
q() { nsx "$1" dig +short +tries=1 "@$2" "$3" >/dev/null; sleep 0.2; } # q NS SERVER NAME
q kwp-c1 10.94.0.53 ds.kaspersky.com          # NXDOMAIN at the corporate resolver
q kwp-c1 10.94.0.8 ds.kaspersky.com           # the fallback: 8.8.8.8
q kwp-c1 10.94.0.9 dnl-01.geo.kaspersky.com   # and 1.1.1.1
q kwp-c2 10.94.0.8 www.example.test           # decoy: a public resolver, no Kaspersky name
q kwp-c2 10.94.0.53 www.example.test
sleep 1
stop_capture $dump
tcprewrite --pnat=10.94.0.8/32:8.8.8.8/32,10.94.0.9/32:1.1.1.1/32 --fixcsum \
  -i "$work/raw.pcap" -o "$work/nat.pcap"
# Move to 2024-10-23T10:00:00Z, after the cutoff.
shift_to "$work/nat.pcap" "$out/public-dns.pcap" 2024-10-23T10:00:00Z
wrote "$out/public-dns.pcap"
