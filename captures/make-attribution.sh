#!/usr/bin/env bash
# Makes captures/attribution.pcap from real programs: connections that name nothing, after a DNS
# answer that does. A server namespace runs dnsmasq (dnl-01.geo.kaspersky.com -> 10.98.0.1),
# openssl s_server and python3 http.server on 10.98.0.1 and on 10.98.0.2 (an address no answer
# gives); two clients on a bridge:
#   10.98.0.11: dig the name, then openssl s_client -noservername to 10.98.0.1, curl http://10.98.0.1/...
#               (attributed), then the same to 10.98.0.2 (a decoy: never attributed);
#   10.98.0.12: no DNS, the same connections to 10.98.0.1 (the answer was not given to it: not attributed).
# Recorded with tcpdump on the bridge, then moved to 2024-10-20 (after the cutoff) with editcap.
# Needs root, iproute2, tcpdump, tshark (editcap), dnsmasq, dnsutils, curl, openssl, python3.
#
#   sudo captures/make-attribution.sh [OUT-DIR]   # writes OUT-DIR/attribution.pcap (default: captures/)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(mkdir -p "${1:-$here}" && cd "${1:-$here}" && pwd)
. "$here/netns.sh"
S=kwa-srv
netns_init attr $S kwa-c1 kwa-c2

add_bridge_ns $S 10.98.0.1/24,10.98.0.2/24
add_client kwa-c1 $S 10.98.0.11/24
add_client kwa-c2 $S 10.98.0.12/24

cd "$work"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=kavwatch-test \
  -keyout key.pem -out cert.pem -days 2 2>/dev/null
mkdir -p www/diffs/bases/av/kdb/i386 && echo update > www/diffs/bases/av/kdb/i386/kdb-i386-0607g.xml.dif
nsx $S dnsmasq --no-daemon --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces \
  --listen-address=10.98.0.1 --except-interface=lo --pid-file="$work/dnsmasq.pid" --local-ttl=300 \
  --address=/dnl-01.geo.kaspersky.com/10.98.0.1 --log-facility=/dev/null >/dev/null 2>&1 &
for a in 10.98.0.1 10.98.0.2; do
  nsx $S openssl s_server -accept "$a:443" -cert cert.pem -key key.pem -www -quiet >/dev/null 2>&1 &
  (cd www && nsx $S python3 -m http.server 80 --bind "$a" >/dev/null 2>&1 &)
done
sleep 1.5

# Not through nsx: $! must be tcpdump itself (ip netns exec execs it), to stop it cleanly with SIGINT.
ip netns exec $S tcpdump --immediate-mode -i br0 -w "$work/raw.pcap" 'ip and (udp port 53 or tcp)' 2>/dev/null &
dump=$!
sleep 1
path=/diffs/bases/av/kdb/i386/kdb-i386-0607g.xml.dif
connect() { # connect NS ADDR
  nsx "$1" openssl s_client -noservername -connect "$2:443" </dev/null >/dev/null 2>&1 || true
  nsx "$1" curl -s -o /dev/null -A '@hEKzPRNa0lItsGIjysY' "http://$2$path" || true
}
nsx kwa-c1 dig +short +tries=1 @10.98.0.1 dnl-01.geo.kaspersky.com >/dev/null
connect kwa-c1 10.98.0.1
connect kwa-c1 10.98.0.2
connect kwa-c2 10.98.0.1
sleep 2
stop_capture $dump
# Move to 2024-10-20T12:00:00Z, after the cutoff.
shift_to "$work/raw.pcap" "$out/attribution.pcap" 2024-10-20T12:00:00Z
wrote "$out/attribution.pcap"
