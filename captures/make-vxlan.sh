#!/usr/bin/env bash
# Makes captures/encap/vxlan-real.pcap: a real VXLAN recording, the Linux kernel's own encapsulation.
# Two network namespaces joined by a veth pair, the underlay (198.51.100.1/24 and .2/24); on each
# side a VXLAN device, vx0 (VNI 42, UDP 4789, outer UDP checksum 0), the overlay (10.42.0.1/24 and
# .2/24, fd42::1/64 and ::2/64):
#   server 10.42.0.1 / fd42::1 (kwx-srv): dnsmasq answering *.kaspersky.com and *.kaspersky-labs.com
#     with 10.42.0.1 / fd42::1, openssl s_server on 443, python3 -m http.server on 80;
#   client 10.42.0.2 / fd42::2 (kwx-cli): dig (A, AAAA over IPv6, a decoy name), openssl s_client
#     -servername dnl-01.geo.kaspersky.com, curl with Host s01.upd.kaspersky.com, curl to
#     ds.kaspersky.com over IPv6 (--resolve).
# tcpdump records the underlay veth (UDP 4789 only: every overlay frame, ARP and neighbour discovery
# included, inside VXLAN); offloads are off so frames are as on a wire. The recording is then moved
# with editcap to 2024-10-26T09:00:00Z (after the 2024-09-29T04:00:00Z cutoff) and checked with tshark.
# Needs root, iproute2 (a kernel with VXLAN), tcpdump, tshark (editcap, capinfos), dnsmasq, dnsutils,
# curl, openssl, python3 (ethtool if present). Everything stays in the two namespaces, removed on exit.
#
#   sudo captures/make-vxlan.sh [OUT-DIR]   # writes OUT-DIR/vxlan-real.pcap (default: captures/encap/)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(mkdir -p "${1:-$here/encap}" && cd "${1:-$here/encap}" && pwd)
. "$here/netns.sh"
S=kwx-srv C=kwx-cli
netns_init vxlan "$S" "$C"

# --- underlay and overlay --------------------------------------------------------------
netns_new "$S"
netns_new "$C"
nsx "$S" ip link add ul0 address 02:51:00:00:00:01 type veth peer name ul0 netns "$C" address 02:51:00:00:00:02
declare -A UL=([$S]=198.51.100.1 [$C]=198.51.100.2) PEER=([$S]=198.51.100.2 [$C]=198.51.100.1)
declare -A OV4=([$S]=10.42.0.1 [$C]=10.42.0.2) OV6=([$S]=fd42::1 [$C]=fd42::2) OMAC=([$S]=02:42:00:00:00:01 [$C]=02:42:00:00:00:02)
for ns in "$S" "$C"; do
  nsx "$ns" ip addr add "${UL[$ns]}/24" dev ul0
  nsx "$ns" ip link set ul0 up
  nsx "$ns" ip link add vx0 address "${OMAC[$ns]}" type vxlan id 42 dstport 4789 \
    local "${UL[$ns]}" remote "${PEER[$ns]}" dev ul0 noudpcsum
  nsx "$ns" ip addr add "${OV4[$ns]}/24" dev vx0
  nsx "$ns" ip addr add "${OV6[$ns]}/64" dev vx0 nodad
  nsx "$ns" ip link set vx0 up
  # No offloads: TCP cut to the MSS and checksums filled in before tcpdump sees the frames.
  for dev in ul0 vx0; do nsx "$ns" ethtool -K "$dev" tso off gso off gro off tx off >/dev/null 2>&1 || true; done
done

# --- servers ----------------------------------------------------------------------------
cd "$work"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=kavwatch-test \
  -keyout key.pem -out cert.pem -days 2 2>/dev/null
mkdir -p www && echo index > www/index.html
nsx "$S" dnsmasq --no-daemon --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces \
  --listen-address=10.42.0.1,fd42::1 --except-interface=lo --pid-file="$work/dnsmasq.pid" --local-ttl=300 \
  --address=/kaspersky.com/10.42.0.1 --address=/kaspersky.com/fd42::1 \
  --address=/kaspersky-labs.com/10.42.0.1 --address=/kaspersky-labs.com/fd42::1 \
  --address=/example.com/10.42.0.1 --log-facility=/dev/null >/dev/null 2>&1 &
nsx "$S" openssl s_server -accept 443 -cert cert.pem -key key.pem -www -quiet >/dev/null 2>&1 &
(cd www && nsx "$S" python3 -m http.server 80 --bind :: >/dev/null 2>&1 &)
sleep 1.5

# --- the recording ----------------------------------------------------------------------
# Not through nsx: $! must be tcpdump itself (ip netns exec execs it), to stop it cleanly with SIGINT.
ip netns exec "$C" tcpdump -Z root -i ul0 -U --immediate-mode -s 0 -w "$work/raw.pcap" 'udp port 4789' 2>/dev/null &
dump=$!
sleep 1
nsx "$C" dig +tries=1 +time=2 @10.42.0.1 s01.upd.kaspersky.com A >/dev/null || true
nsx "$C" dig +tries=1 +time=2 @fd42::1 dnl-01.geo.kaspersky.com AAAA >/dev/null || true
nsx "$C" dig +tries=1 +time=2 @10.42.0.1 www.example.com A >/dev/null || true
nsx "$C" timeout 5 openssl s_client -connect 10.42.0.1:443 -servername dnl-01.geo.kaspersky.com </dev/null >/dev/null 2>&1 || true
nsx "$C" curl -s --max-time 5 -H 'Host: s01.upd.kaspersky.com' http://10.42.0.1/index.html -o /dev/null || true
nsx "$C" curl -s --max-time 5 -g --resolve 'ds.kaspersky.com:80:[fd42::1]' http://ds.kaspersky.com/index.html -o /dev/null || true
sleep 1
stop_capture "$dump"

shift_to "$work/raw.pcap" "$out/vxlan-real.pcap" 2024-10-26T09:00:00Z >/dev/null
wrote "$out/vxlan-real.pcap"
# tshark's view: the overlay names, clients 10.42.0.2 / fd42::2.
python3 "$here/encap.py" truth --kind vxlan "$out/vxlan-real.pcap" | tee "$work/truth.json"
grep -q '"s01.upd.kaspersky.com"' "$work/truth.json" || { echo "tshark found no overlay names in vxlan-real.pcap" >&2; exit 1; }
