#!/usr/bin/env bash
# Makes the captures in this folder from real programs: dnsmasq (DNS), openssl s_server
# (TLS), python3 http.server (HTTP) in a "server" network namespace; dig, curl and
# openssl s_client in client namespaces; a Linux bridge between them like a small office
# LAN; tcpdump recording; editcap moving each file to the date it stands for (before or
# after the 2024-09-29T04:00:00Z cutoff). Needs root, iproute2, tcpdump, tshark (editcap,
# mergecap), dnsmasq, dnsutils, curl, openssl, python3. Takes about a minute.
#
#   sudo captures/make-captures.sh        # rewrites captures/*.pcap* and tests/expected/captures.json
#
# Traffic stays inside the namespaces this script makes (10.99.0.0/24, fd99::/64); they are
# removed on exit.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d /tmp/kavwatch-captures.XXXXXX)
S=kw-srv
clients=(kw-c1 kw-c2 kw-c3 kw-c4 kw-c5 kw-c6 kw-c7 kw-c8)

cleanup() {
  for ns in "$S" "${clients[@]}"; do ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true; done
  sleep 0.2
  for ns in "$S" "${clients[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
cleanup 2>/dev/null; work=$(mktemp -d /tmp/kavwatch-captures.XXXXXX)

nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# --- the LAN -------------------------------------------------------------------------
ip netns add $S
nsx $S ip link add br0 type bridge
nsx $S ip link set br0 up
nsx $S ip addr add 10.99.0.1/24 dev br0
nsx $S ip -6 addr add fd99::1/64 dev br0 nodad
nsx $S ip link set lo up
n=10
for c in "${clients[@]}"; do
  n=$((n + 1))
  ip netns add "$c"
  ip link add "$c-e" type veth peer name "$c-b"
  ip link set "$c-e" netns "$c"
  ip link set "$c-b" netns $S
  nsx $S ip link set "$c-b" master br0 up
  nsx "$c" ip link set "$c-e" name eth0
  nsx "$c" ip link set eth0 up
  nsx "$c" ip link set lo up
  nsx "$c" ip addr add "10.99.0.$n/24" dev eth0
  # No segmentation offload: segments are cut to the MSS before the bridge sees them, as on a wire.
  nsx "$c" ethtool -K eth0 tso off gso off gro off >/dev/null 2>&1
  nsx $S ethtool -K "$c-b" tso off gso off gro off >/dev/null 2>&1
  nsx "$c" ip -6 addr add "fd99::$n/64" dev eth0 nodad
done
# kw-c7 stands for a host on VLAN 10 and kw-c8 for one behind QinQ (802.1ad 100, inner 20).
# This kernel has no 8021q module (no VLAN interfaces), so their frames are recorded untagged
# and the tags are inserted into the recordings afterwards (convert.py tag).

# --- servers -------------------------------------------------------------------------
cd "$work"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=kavwatch-test \
  -keyout key.pem -out cert.pem -days 2 2>/dev/null
mkdir -p www/diffs/bases/av/kdb/i386 && echo update > www/diffs/bases/av/kdb/i386/kdb-i386-0607g.xml.dif
echo index > www/index.html
names_v4=() names_v6=()
for d in kaspersky.com kaspersky-labs.com securelist.com example.com evil.test notkaspersky.com mykaspersky-labs.com; do
  names_v4+=("--address=/$d/10.99.0.1") names_v6+=("--address=/$d/fd99::1")
done
nsx $S dnsmasq --no-daemon --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces \
  --listen-address=10.99.0.1,fd99::1 --except-interface=lo \
  --pid-file="$work/dnsmasq.pid" "${names_v4[@]}" "${names_v6[@]}" \
  --host-record=edge.geo.kaspersky.com,10.99.0.1,fd99::1 --cname=ds.kaspersky.com,edge.geo.kaspersky.com \
  --log-facility=/dev/null >/dev/null 2>&1 &
nsx $S openssl s_server -4 -accept 443 -cert cert.pem -key key.pem -www -quiet >/dev/null 2>&1 &
nsx $S openssl s_server -6 -accept 443 -cert cert.pem -key key.pem -www -quiet >/dev/null 2>&1 &
(cd www && nsx $S python3 -m http.server 80 --bind :: >/dev/null 2>&1 &)
sleep 1.5

# --- recording helpers -----------------------------------------------------------------
TCPDUMP_PID=
record() { # record FILE [tcpdump options...]: start recording on the bridge
  local f=$1; shift
  ip netns exec $S tcpdump -Z root -i br0 -U --immediate-mode -s 0 "$@" -w "$work/$f" 'not arp and not icmp6' >/dev/null 2>&1 &
  TCPDUMP_PID=$!
  sleep 1
}
# record_client NS FILE: record on a client's own interface instead. The bridge's netfilter
# reassembles IP fragments before a capture on br0 sees them; the client's eth0 shows them
# as sent.
record_client() {
  ip netns exec "$1" tcpdump -Z root -i eth0 -U --immediate-mode -s 0 -w "$work/$2" 'not arp and not icmp6' >/dev/null 2>&1 &
  TCPDUMP_PID=$!
  sleep 1
}
stop() { sleep 0.5; kill -INT "$TCPDUMP_PID"; wait "$TCPDUMP_PID" 2>/dev/null || true; }

# shift FILE ISO-START: moves the capture so its first packet is at ISO-START (UTC).
shift_to() {
  local f=$1 start=$2 first target
  first=$(tshark -r "$f" -c 1 -T fields -e frame.time_epoch 2>/dev/null)
  target=$(date -u -d "$start" +%s.%N)
  # Keep the classic format (editcap writes pcapng by default), nanoseconds where recorded.
  local fmt=pcap
  case "$f" in *nanosecond*) fmt=nsecpcap ;; esac
  editcap -F $fmt -t "$(python3 -c "from decimal import Decimal as D; print(D('$target') - D('$first'))")" "$f" "$f.shifted" >/dev/null
  mv "$f.shifted" "$f"
}

tls() { # tls NS NAME [s_client options...]
  local ns=$1 name=$2; shift 2
  echo Q | nsx "$ns" timeout 5 openssl s_client -connect 10.99.0.1:443 -servername "$name" "$@" >/dev/null 2>&1 || true
}
q() { nsx "$1" dig +tries=1 +time=2 @10.99.0.1 "${@:2}" >/dev/null || true; }

# --- the captures ---------------------------------------------------------------------
record dns-udp.pcap
q kw-c1 s05.upd.kaspersky.com A
q kw-c1 s05.upd.kaspersky.com AAAA
q kw-c1 -t TYPE65 dnl-01.geo.kaspersky.com
q kw-c1 DNL-02.GEO.Kaspersky.COM.
q kw-c1 ds.kaspersky.com
q kw-c1 ksn-info-geo.kaspersky-labs.com
q kw-c1 opentip.kaspersky.com
q kw-c1 kaspersky.com.evil.test
q kw-c1 notkaspersky.com
q kw-c1 mykaspersky-labs.com
q kw-c1 www.example.com
stop; shift_to "$work/dns-udp.pcap" 2024-10-15T09:00:00

record dns-tcp.pcap
q kw-c2 +tcp activation-v2.kaspersky.com
q kw-c2 +tcp +keepopen dc1.ksn.kaspersky-labs.com cm.k.kaspersky-labs.com
stop; shift_to "$work/dns-tcp.pcap" 2024-10-15T09:10:00

record tls13.pcap
tls kw-c3 dnl-01.geo.kaspersky.com -tls1_3 -alpn h2,http/1.1
tls kw-c3 agent.ksc.kaspersky.com -tls1_3
nsx kw-c3 curl -sk --max-time 5 --resolve ds.kaspersky.com:443:10.99.0.1 https://ds.kaspersky.com/ -o /dev/null || true
tls kw-c3 notkaspersky.com -tls1_3
stop; shift_to "$work/tls13.pcap" 2024-10-16T14:00:00

record tls12.pcap
tls kw-c4 s05.upd.kaspersky.com -tls1_2
tls kw-c4 dc1.ksn.kaspersky-labs.com -tls1_2 -alpn http/1.1
stop; shift_to "$work/tls12.pcap" 2024-09-20T08:00:00

# ClientHellos over several segments (MTU 400: MSS 360) and over several records
# (-max_send_frag 512 with a ClientHello longer than 512 bytes, thanks to a long ALPN list).
alpn=h2,http/1.1,$(python3 -c "print(','.join('proto-%02d-padding-padding' % i for i in range(20)))")
nsx kw-c5 ip link set eth0 mtu 400
record tls-split.pcap
tls kw-c5 s07.upd.kaspersky.com -tls1_3 -alpn "$alpn"
tls kw-c5 ksn-file-geo.kaspersky-labs.com -max_send_frag 512 -alpn "$alpn"
nsx kw-c5 curl -sk --max-time 5 --resolve activation-v2.kaspersky.com:443:10.99.0.1 https://activation-v2.kaspersky.com/ -o /dev/null || true
stop; shift_to "$work/tls-split.pcap" 2024-10-17T10:00:00

# Split ClientHellos again, then (convert.py reorder) each flow's first two client data
# segments swapped and the second one sent twice, as a retransmission; and one flow's SYN
# removed. This kernel has no netem to do it on the wire.
record tcp-reorder.pcap
tls kw-c5 s08.upd.kaspersky.com -tls1_3 -alpn "$alpn"
tls kw-c5 s09.upd.kaspersky.com -tls1_3 -alpn "$alpn"
tls kw-c5 ksn-url-geo.kaspersky-labs.com -tls1_3 -alpn "$alpn"
stop
nsx kw-c5 ip link set eth0 mtu 1500
python3 "$here/convert.py" reorder "$work/tcp-reorder.pcap"
syn=$(tshark -r "$work/tcp-reorder.pcap" -Y 'tcp.flags.syn==1 && tcp.flags.ack==0' -T fields -e frame.number | tail -n 1)
editcap -F pcap "$work/tcp-reorder.pcap" "$work/tcp-reorder.tmp" "$syn" >/dev/null && mv "$work/tcp-reorder.tmp" "$work/tcp-reorder.pcap"
shift_to "$work/tcp-reorder.pcap" 2024-10-17T11:00:00

record http.pcap
nsx kw-c6 curl -s --max-time 5 -A '@hEKzPRNa0lItsGIjysY' --resolve dnl-01.geo.kaspersky.com:80:10.99.0.1 \
  http://dnl-01.geo.kaspersky.com/diffs/bases/av/kdb/i386/kdb-i386-0607g.xml.dif \
  http://dnl-01.geo.kaspersky.com/index.html -o /dev/null -o /dev/null || true
nsx kw-c6 curl -s --max-time 5 --resolve touch.kaspersky.com:80:10.99.0.1 http://touch.kaspersky.com/ -o /dev/null || true
nsx kw-c6 curl -s --max-time 5 --resolve kaspersky.com.evil.test:80:10.99.0.1 http://kaspersky.com.evil.test/ -o /dev/null || true
stop; shift_to "$work/http.pcap" 2024-10-18T16:00:00

record vlan.pcap
q kw-c7 s11.upd.kaspersky.com
tls kw-c7 s11.upd.kaspersky.com -tls1_3
q kw-c8 geoksn.kaspersky.com
tls kw-c8 ksn-verdict-geo.kaspersky-labs.com -tls1_3
stop; shift_to "$work/vlan.pcap" 2024-10-20T12:00:00
python3 "$here/convert.py" tag "$work/vlan.pcap" 10.99.0.17=10 10.99.0.18=100,20

record_client kw-c1 ipv6.pcap
nsx kw-c1 dig +tries=1 +time=2 @fd99::1 s12.upd.kaspersky.com AAAA >/dev/null || true
echo Q | nsx kw-c1 timeout 5 openssl s_client -connect '[fd99::1]:443' -servername s12.upd.kaspersky.com >/dev/null 2>&1 || true
nsx kw-c1 curl -s --max-time 5 -g -H 'Host: dnl-03.geo.kaspersky.com' 'http://[fd99::1]/index.html' -o /dev/null || true
# A query made longer than the IPv6 minimum MTU with a 1400-byte EDNS option: the kernel
# sends it as fragments (a fragment extension header).
nsx kw-c1 ip link set eth0 mtu 1280
nsx kw-c1 python3 "$here/bigquery.py" fd99::1 p03.upd.kaspersky.com || true
nsx kw-c1 ip link set eth0 mtu 1500
stop; shift_to "$work/ipv6.pcap" 2024-10-21T07:00:00

record_client kw-c2 fragments.pcap
nsx kw-c2 ip link set eth0 mtu 576
# dig sends queries this large over TCP, so a stdlib Python client sends them over UDP:
# the query dig would send, with a 1400-byte EDNS option, fragmented by the kernel.
for name in crl.kaspersky.com edge.geo.kaspersky.com; do
  nsx kw-c2 python3 "$here/bigquery.py" 10.99.0.1 "$name" || true
done
nsx kw-c2 ip link set eth0 mtu 1500
stop; shift_to "$work/fragments.pcap" 2024-10-22T07:00:00

# Linux cooked captures: tcpdump -i any inside a client namespace.
sll() { # sll FILE LINKTYPE NS NAME
  ip netns exec "$3" tcpdump -Z root -i any -U --immediate-mode -y "$2" -w "$work/$1" 'not arp and not icmp6' >/dev/null 2>&1 &
  local p=$!; sleep 1
  q "$3" "$4"; tls "$3" "$4" -tls1_3
  sleep 0.5; kill -INT $p; wait $p 2>/dev/null || true
}
sll sll.pcap LINUX_SLL kw-c3 s13.upd.kaspersky.com
shift_to "$work/sll.pcap" 2024-09-21T10:00:00
sll sll2.pcap LINUX_SLL2 kw-c4 dnl-04.geo.kaspersky.com
shift_to "$work/sll2.pcap" 2024-10-23T10:00:00

record nanosecond.pcap --time-stamp-precision=nano
q kw-c2 s14.upd.kaspersky.com
stop; shift_to "$work/nanosecond.pcap" 2024-10-24T10:00:00.123456789

record base.pcap
q kw-c3 s15.upd.kaspersky.com
tls kw-c3 s15.upd.kaspersky.com -tls1_3
stop; shift_to "$work/base.pcap" 2024-10-25T10:00:00

# --- mixed.pcap.gz: one host per verdict that the other files do not show --------------
record mixed-a.pcap   # before the cutoff only
q kw-c6 s16.upd.kaspersky.com; tls kw-c6 s16.upd.kaspersky.com -tls1_2
stop; shift_to "$work/mixed-a.pcap" 2024-09-10T10:00:00
record mixed-b.pcap   # excluded-only, other-only, decoy-only
q kw-c1 opentip.kaspersky.com; tls kw-c1 securelist.com -tls1_3
q kw-c2 usa.kaspersky.com; tls kw-c2 usa.kaspersky.com -tls1_3
q kw-c4 notkaspersky.com; tls kw-c4 mykaspersky-labs.com -tls1_3
stop; shift_to "$work/mixed-b.pcap" 2024-11-05T10:00:00
mergecap -F pcap -w "$work/mixed.pcap" "$work/mixed-a.pcap" "$work/mixed-b.pcap"

# --- demo.pcapng: a week around the cutoff on a small office LAN ------------------------
demo_day() { # demo_day FILE ISO-START: one recording of the office
  record "$1"
  shift
  "$@"
  stop
}
day_before() {
  q kw-c1 s01.upd.kaspersky.com; tls kw-c1 s01.upd.kaspersky.com -tls1_3   # still updating
  q kw-c2 s02.upd.kaspersky.com; tls kw-c2 dnl-05.geo.kaspersky.com -tls1_2 # stops before the cutoff
  q kw-c3 ksn-info-geo.kaspersky-labs.com; tls kw-c3 ksn-info-geo.kaspersky-labs.com -tls1_3
  q kw-c4 www.example.com; tls kw-c4 www.example.com -tls1_3                 # clean host
  q kw-c7 s03.upd.kaspersky.com; tls kw-c7 s03.upd.kaspersky.com -tls1_3      # VLAN 10
}
day_after() {
  q kw-c1 s01.upd.kaspersky.com; tls kw-c1 s01.upd.kaspersky.com -tls1_3
  nsx kw-c1 curl -s --max-time 5 -A '@hEKzPRNa0lItsGIjysY' --resolve dnl-01.geo.kaspersky.com:80:10.99.0.1 \
    http://dnl-01.geo.kaspersky.com/diffs/bases/av/kdb/i386/kdb-i386-0607g.xml.dif -o /dev/null || true
  q kw-c3 ksn-info-geo.kaspersky-labs.com; tls kw-c3 dc1.ksn.kaspersky-labs.com -tls1_3  # KSN telemetry
  q kw-c4 www.example.com; tls kw-c4 notkaspersky.com -tls1_3                              # decoy
  q kw-c5 opentip.kaspersky.com; tls kw-c5 opentip.kaspersky.com -tls1_3                   # excluded only
  q kw-c6 usa.kaspersky.com; tls kw-c6 support.kaspersky.com -tls1_3                       # web site only
  q kw-c7 s03.upd.kaspersky.com; tls kw-c7 s03.upd.kaspersky.com -tls1_3
}
demo_day demo-1.pcap day_before; shift_to "$work/demo-1.pcap" 2024-09-26T09:00:00
demo_day demo-2.pcap day_before; shift_to "$work/demo-2.pcap" 2024-09-28T09:00:00
demo_day demo-3.pcap day_after;  shift_to "$work/demo-3.pcap" 2024-09-30T09:00:00
demo_day demo-4.pcap day_after;  shift_to "$work/demo-4.pcap" 2024-10-02T09:00:00

# --- conversions of real recordings into formats Linux does not write ------------------
python3 "$here/convert.py" formats "$work/base.pcap" "$work"
mergecap -F pcapng -w "$work/multi-if.pcapng" "$work/base.pcap" "$work/sll2.pcap"
for f in "$work"/demo-[1-4].pcap; do python3 "$here/convert.py" tag "$f" 10.99.0.17=10; done
mergecap -F pcapng -w "$work/demo.pcapng" "$work"/demo-[1-4].pcap

# --- install ---------------------------------------------------------------------------
for f in dns-udp dns-tcp tls13 tls12 tls-split tcp-reorder http vlan ipv6 fragments sll sll2 nanosecond; do
  cp "$work/$f.pcap" "$here/$f.pcap"
done
cp "$work/null-loop.pcap" "$work/raw-ip.pcap" "$work/bigendian.pcap" "$here/"
cp "$work/multi-if.pcapng" "$work/demo.pcapng" "$here/"
# The demo split at the cutoff, for the report merge test.
editcap -B 2024-09-29T04:00:00Z "$here/demo.pcapng" "$here/demo-before-cutoff.pcapng"
editcap -A 2024-09-29T04:00:00Z "$here/demo.pcapng" "$here/demo-after-cutoff.pcapng"
gzip -9 -n -c "$work/mixed.pcap" > "$here/mixed.pcap.gz"
python3 "$here/truth.py" "$here" > "$here/../tests/expected/captures.json"
echo "captures written to $here"
