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
#   sudo captures/make-attribution.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d /tmp/kavwatch-attr.XXXXXX)
S=kwa-srv
C=(kwa-c1 kwa-c2)
cleanup() {
  for ns in "$S" "${C[@]}"; do ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true; done
  sleep 0.2
  for ns in "$S" "${C[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
cleanup 2>/dev/null; work=$(mktemp -d /tmp/kavwatch-attr.XXXXXX)
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

ip netns add $S
nsx $S ip link add br0 type bridge
nsx $S ip link set br0 up
nsx $S ip addr add 10.98.0.1/24 dev br0
nsx $S ip addr add 10.98.0.2/24 dev br0
nsx $S ip link set lo up
n=10
for c in "${C[@]}"; do
  n=$((n + 1))
  ip netns add "$c"
  ip link add "$c-e" type veth peer name "$c-b"
  ip link set "$c-e" netns "$c"
  ip link set "$c-b" netns $S
  nsx $S ip link set "$c-b" master br0 up
  nsx "$c" ip link set "$c-e" name eth0
  nsx "$c" ip link set eth0 up
  nsx "$c" ip link set lo up
  nsx "$c" ip addr add "10.98.0.$n/24" dev eth0
  nsx "$c" ethtool -K eth0 tso off gso off gro off >/dev/null 2>&1 || true
done

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
kill -INT $dump; wait $dump 2>/dev/null || true
# Move to 2024-10-20T12:00:00Z, after the cutoff.
first=$(tshark -r "$work/raw.pcap" -T fields -e frame.time_epoch -c 1)
shift=$(python3 -c "print(1729425600 - int(float('$first')))")
editcap -F pcap -t "$shift" "$work/raw.pcap" "$here/attribution.pcap"
echo "wrote $here/attribution.pcap: $(capinfos -c -M "$here/attribution.pcap" | tail -1)"
