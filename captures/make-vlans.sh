#!/usr/bin/env bash
# Makes captures/vlans.pcap from real programs: the same address on two VLANs, one side of the
# cutoff (2024-09-29T04:00:00Z) each. Two separate networks, A and B, each a server namespace with
# a bridge and one client, built the same way and never joined:
#   server 10.93.0.53: dnsmasq answering dnl-01.geo.kaspersky.com and ds.kaspersky.com -> 10.93.0.80;
#   server 10.93.0.80: openssl s_server on port 443;
#   client 10.93.0.10 on both: MAC 02:93:00:00:00:0a on A, 02:93:00:00:00:0b on B.
#   A: dig dnl-01.geo.kaspersky.com, openssl s_client -servername dnl-01.geo.kaspersky.com;
#   B: dig ds.kaspersky.com, openssl s_client -servername ds.kaspersky.com.
# Each network is recorded with tcpdump on its own bridge. This kernel has no 8021q module (no VLAN
# interfaces), so tcprewrite adds the tags afterwards: A's frames 802.1Q VLAN 10, moved with editcap
# to 2024-09-20T12:00:00Z (before the cutoff); B's VLAN 20, moved to 2024-10-20T12:00:00Z (after);
# mergecap joins the two.
# Needs root, iproute2, tcpdump, tshark (editcap, mergecap, capinfos), tcpreplay (tcprewrite),
# dnsmasq, dnsutils, openssl, python3.
#
#   sudo captures/make-vlans.sh [OUT-DIR]   # writes OUT-DIR/vlans.pcap (default: captures/)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(mkdir -p "${1:-$here}" && cd "${1:-$here}" && pwd)
. "$here/netns.sh"
NETS=(a b)
netns_init vlans kwv-a-srv kwv-a-c kwv-b-srv kwv-b-c

cd "$work"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=kavwatch-test \
  -keyout key.pem -out cert.pem -days 2 2>/dev/null
declare -A MAC=([a]=02:93:00:00:00:0a [b]=02:93:00:00:00:0b)
for x in "${NETS[@]}"; do
  s=kwv-$x-srv c=kwv-$x-c
  add_bridge_ns "$s" 10.93.0.53/24,10.93.0.80/24
  add_client "$c" "$s" 10.93.0.10/24 "${MAC[$x]}"
  nsx "$s" dnsmasq --no-daemon --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces \
    --listen-address=10.93.0.53 --except-interface=lo --pid-file="$work/dnsmasq-$x.pid" --local-ttl=300 \
    --address=/dnl-01.geo.kaspersky.com/10.93.0.80 --address=/ds.kaspersky.com/10.93.0.80 \
    --log-facility=/dev/null >/dev/null 2>&1 &
  nsx "$s" openssl s_server -accept 10.93.0.80:443 -cert cert.pem -key key.pem -www -quiet >/dev/null 2>&1 &
done
sleep 1.5

# Not through nsx: $! must be tcpdump itself (ip netns exec execs it), to stop it cleanly with SIGINT.
declare -A dump
for x in "${NETS[@]}"; do
  ip netns exec "kwv-$x-srv" tcpdump --immediate-mode -i br0 -w "$work/raw-$x.pcap" 'ip and (udp port 53 or tcp)' 2>/dev/null &
  dump[$x]=$!
done
sleep 1
visit() { # visit NS NAME: look the name up, then a TLS handshake to its address naming it
  nsx "$1" dig +short +tries=1 @10.93.0.53 "$2" >/dev/null
  nsx "$1" openssl s_client -connect 10.93.0.80:443 -servername "$2" </dev/null >/dev/null 2>&1 || true
  sleep 0.2
}
visit kwv-a-c dnl-01.geo.kaspersky.com
visit kwv-b-c ds.kaspersky.com
sleep 2
stop_capture "${dump[@]}"

# Tag and move each network: A on VLAN 10 before the cutoff, B on VLAN 20 after it.
declare -A VLAN=([a]=10 [b]=20) WHEN=([a]=2024-09-20T12:00:00Z [b]=2024-10-20T12:00:00Z)
for x in "${NETS[@]}"; do
  tcprewrite --enet-vlan=add --enet-vlan-tag="${VLAN[$x]}" --enet-vlan-cfi=0 --enet-vlan-pri=0 --fixcsum \
    -i "$work/raw-$x.pcap" -o "$work/tag-$x.pcap"
  shift_to "$work/tag-$x.pcap" "$work/when-$x.pcap" "${WHEN[$x]}"
done
mergecap -F pcap -w "$out/vlans.pcap" "$work/when-a.pcap" "$work/when-b.pcap"
wrote "$out/vlans.pcap"
