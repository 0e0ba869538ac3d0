#!/usr/bin/env bash
# Makes captures/resolver.pcap from real programs: a corporate resolver between clients and an
# upstream, the capture seeing both legs. On one bridge: an "upstream" dnsmasq (10.97.0.1)
# answering Kaspersky names, a "corporate" dnsmasq (10.97.0.53) forwarding everything to it with
# its cache off, and two clients:
#   10.97.0.11 asks the corporate resolver for dnl-01.geo.kaspersky.com (and www.example.com);
#   10.97.0.12 asks it for ksn-info-geo.kaspersky-labs.com;
# the corporate resolver forwards each query upstream (relays: not its own traffic); then the
# resolver host itself asks upstream for s01.upd.kaspersky.com, a name no client asked (its own).
# Recorded with tcpdump on the bridge, moved to 2024-10-21 (after the cutoff) with editcap.
# Needs root, iproute2, tcpdump, tshark (editcap), dnsmasq, dnsutils.
#
#   sudo captures/make-resolver.sh [OUT-DIR]   # writes OUT-DIR/resolver.pcap (default: captures/)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(mkdir -p "${1:-$here}" && cd "${1:-$here}" && pwd)
. "$here/netns.sh"
U=kwr-up
netns_init resolver $U kwr-res kwr-c1 kwr-c2

add_bridge_ns $U 10.97.0.1/24
add_client kwr-res $U 10.97.0.53/24
add_client kwr-c1 $U 10.97.0.11/24
add_client kwr-c2 $U 10.97.0.12/24

nsx $U dnsmasq --no-daemon --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces \
  --listen-address=10.97.0.1 --except-interface=lo --pid-file="$work/up.pid" \
  --address=/kaspersky.com/10.97.0.200 --address=/kaspersky-labs.com/10.97.0.201 \
  --address=/example.com/10.97.0.202 --log-facility=/dev/null >/dev/null 2>&1 &
nsx kwr-res dnsmasq --no-daemon --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces \
  --listen-address=10.97.0.53 --except-interface=lo --pid-file="$work/res.pid" --cache-size=0 \
  --server=10.97.0.1 --log-facility=/dev/null >/dev/null 2>&1 &
sleep 1.5

# Not through nsx: $! must be tcpdump itself, to stop it cleanly with SIGINT.
ip netns exec $U tcpdump --immediate-mode -i br0 -w "$work/raw.pcap" 'udp port 53' 2>/dev/null &
dump=$!
sleep 1
nsx kwr-c1 dig +short +tries=1 @10.97.0.53 dnl-01.geo.kaspersky.com >/dev/null
nsx kwr-c1 dig +short +tries=1 @10.97.0.53 www.example.com >/dev/null
sleep 0.2
nsx kwr-c2 dig +short +tries=1 @10.97.0.53 ksn-info-geo.kaspersky-labs.com >/dev/null
sleep 0.2
# The resolver host's own lookup, straight upstream: nobody asked it this name.
nsx kwr-res dig +short +tries=1 @10.97.0.1 s01.upd.kaspersky.com >/dev/null
sleep 1
stop_capture $dump
shift_to "$work/raw.pcap" "$out/resolver.pcap" 2024-10-21T12:00:00Z
wrote "$out/resolver.pcap"
