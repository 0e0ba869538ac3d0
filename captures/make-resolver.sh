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
#   sudo captures/make-resolver.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
U=kwr-up
N=(kwr-res kwr-c1 kwr-c2)
A=(10.97.0.53 10.97.0.11 10.97.0.12)
cleanup() {
  for ns in "$U" "${N[@]}"; do ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true; done
  sleep 0.2
  for ns in "$U" "${N[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "${work:-/nonexistent}"
}
trap cleanup EXIT
cleanup 2>/dev/null
work=$(mktemp -d /tmp/kavwatch-resolver.XXXXXX)
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

ip netns add $U
nsx $U ip link add br0 type bridge
nsx $U ip link set br0 up
nsx $U ip addr add 10.97.0.1/24 dev br0
nsx $U ip link set lo up
for i in 0 1 2; do
  ns=${N[$i]}
  ip netns add "$ns"
  ip link add "$ns-e" type veth peer name "$ns-b"
  ip link set "$ns-e" netns "$ns"
  ip link set "$ns-b" netns $U
  nsx $U ip link set "$ns-b" master br0 up
  nsx "$ns" ip link set "$ns-e" name eth0
  nsx "$ns" ip link set eth0 up
  nsx "$ns" ip link set lo up
  nsx "$ns" ip addr add "${A[$i]}/24" dev eth0
done

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
kill -INT $dump
wait $dump 2>/dev/null || true
first=$(tshark -r "$work/raw.pcap" -T fields -e frame.time_epoch -c 1)
shift=$(python3 -c "print(1729512000 - int(float('$first')))")
editcap -F pcap -t "$shift" "$work/raw.pcap" "$here/resolver.pcap"
echo "wrote $here/resolver.pcap: $(capinfos -c -M "$here/resolver.pcap" | tail -1)"
