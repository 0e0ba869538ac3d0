#!/usr/bin/env bash
# Makes captures/public-dns.pcap from real programs: the public DNS fallback. When the corporate
# resolver refuses Kaspersky names, KES/KSK ask 8.8.8.8, 1.1.1.1, 223.6.6.6, 9.9.9.9, 185.228.168.168
# directly (shared/kaspersky-indicators.md section 4). On one bridge: a "corporate" dnsmasq
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
#   sudo captures/make-public-dns.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
S=kwp-srv
N=(kwp-corp kwp-c1 kwp-c2)
A=(10.94.0.53 10.94.0.11 10.94.0.12)
cleanup() {
  for ns in "$S" "${N[@]}"; do ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true; done
  sleep 0.2
  for ns in "$S" "${N[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "${work:-/nonexistent}"
}
trap cleanup EXIT
cleanup 2>/dev/null
work=$(mktemp -d /tmp/kavwatch-pubdns.XXXXXX)
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

ip netns add $S
nsx $S ip link add br0 type bridge
nsx $S ip link set br0 up
nsx $S ip addr add 10.94.0.8/24 dev br0
nsx $S ip addr add 10.94.0.9/24 dev br0
nsx $S ip link set lo up
for i in 0 1 2; do
  ns=${N[$i]}
  ip netns add "$ns"
  ip link add "$ns-e" type veth peer name "$ns-b"
  ip link set "$ns-e" netns "$ns"
  ip link set "$ns-b" netns $S
  nsx $S ip link set "$ns-b" master br0 up
  nsx "$ns" ip link set "$ns-e" name eth0
  nsx "$ns" ip link set eth0 up
  nsx "$ns" ip link set lo up
  nsx "$ns" ip addr add "${A[$i]}/24" dev eth0
done

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
kill -INT $dump; wait $dump 2>/dev/null || true
tcprewrite --pnat=10.94.0.8/32:8.8.8.8/32,10.94.0.9/32:1.1.1.1/32 --fixcsum \
  -i "$work/raw.pcap" -o "$work/nat.pcap"
# Move to 2024-10-23T10:00:00Z, after the cutoff.
first=$(tshark -r "$work/nat.pcap" -T fields -e frame.time_epoch -c 1)
shift=$(python3 -c "from decimal import Decimal as D; print(D(1729677600) - D('$first'))")
editcap -F pcap -t "$shift" "$work/nat.pcap" "$here/public-dns.pcap"
echo "wrote $here/public-dns.pcap: $(capinfos -c -M "$here/public-dns.pcap" | tail -1)"
