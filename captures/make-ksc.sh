#!/usr/bin/env bash
# Makes captures/ksc.pcap from real programs: Kaspersky Security Center (KSC) port usage with no name in it
# (docs: docs/kaspersky-indicators.md section 3). Network Agents reach the Administration Server on
# TCP 13000 with TLS and on legacy TCP 14000 without TLS, send UDP to the server's 13000/udp; the server wakes
# agents with UDP datagrams to their 15000/udp; the KSN proxy listens on TCP 13111. A server namespace holds a
# bridge with 10.96.0.1 (the Administration Server: openssl s_server on 13000, socat on 14000, 13111 and
# 13000/udp) and 10.96.0.2 (not KSC: the same ports, other programs); seven clients on the bridge:
#   10.96.0.21: agent: 3 TLS connections to 10.96.0.1:13000 about 1 s apart (openssl s_client -noservername,
#               a few bytes each), 2 TCP connections to 10.96.0.1:14000 with binary bytes (socat), and one
#               UDP datagram to 10.96.0.1:13000 (KSC);
#   10.96.0.22: agent: ONE TLS connection to 10.96.0.1:13000, and 10.96.0.1 sends it 2 UDP wake-ups to its
#               15000 (socat listens there): KSC by both directions, not by repetition;
#   10.96.0.23: agent: 2 TCP connections to 10.96.0.1:13111 with binary bytes (KSN proxy; KSC);
# decoys, to 10.96.0.2 (the same ports, never KSC):
#   10.96.0.31: ONE TLS connection to 10.96.0.2:13000 (s_server there) and nothing else: too little;
#   10.96.0.32: 3 plain HTTP requests, curl http://10.96.0.2:13000/ (python3 http.server there, started after
#               the s_server of 10.96.0.31 is stopped): repeated but not TLS;
#   10.96.0.33: 10.96.0.2 sends it 3 UDP datagrams to its 15000 (socat listens); it never connects anywhere:
#               wake-ups alone, never confirmed;
#   10.96.0.34: 3 TCP connections to 10.96.0.2:14000 (socat there) sending GET / HTTP/1.1: HTTP, not KSC.
# Recorded with tcpdump on the bridge ('ip and (tcp or udp)'), then moved so that the first packet is at
# 2024-10-21T09:00:00Z (after the cutoff) with editcap.
# Needs root, iproute2, tcpdump, tshark (editcap, capinfos), openssl, socat, python3, curl.
#
#   sudo captures/make-ksc.sh [OUT-DIR]   # writes OUT-DIR/ksc.pcap (default: captures/)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(mkdir -p "${1:-$here}" && cd "${1:-$here}" && pwd)
. "$here/netns.sh"
S=kwk-srv
C=(kwk-a21 kwk-a22 kwk-a23 kwk-d31 kwk-d32 kwk-d33 kwk-d34) # the last two digits are the host: 10.96.0.NN
netns_init ksc $S "${C[@]}"

# Waits until NS has a socket bound to ADDR:PORT (tcp listening, or udp), at most 5 s.
bound() { # bound NS tcp|udp ADDR:PORT
  local i opt=-ltn; [ "$2" = udp ] && opt=-lun
  for i in $(seq 50); do nsx "$1" ss -H $opt "src $3" | grep -q . && return 0; sleep 0.1; done
  echo "nothing bound to $2 $3 in $1" >&2; return 1
}

add_bridge_ns $S 10.96.0.1/24,10.96.0.2/24
nsx $S ethtool -K br0 tso off gso off >/dev/null 2>&1 || true
for c in "${C[@]}"; do add_client "$c" $S "10.96.0.${c: -2}/24"; done

cd "$work"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=kavwatch-test \
  -keyout key.pem -out cert.pem -days 2 2>/dev/null
mkdir www && echo ok > www/index.html
# The Administration Server, 10.96.0.1. s_server -rev answers each connection's bytes (reversed) and takes
# the next connection; socat reads and drops what agents send.
nsx $S openssl s_server -accept 10.96.0.1:13000 -cert cert.pem -key key.pem -rev </dev/null >/dev/null 2>&1 &
for p in 14000 13111; do
  nsx $S socat TCP-LISTEN:$p,bind=10.96.0.1,fork,reuseaddr SYSTEM:'cat >/dev/null' >/dev/null 2>&1 &
done
nsx $S socat -u UDP-RECV:13000,bind=10.96.0.1 - >/dev/null 2>&1 &
# Not KSC, 10.96.0.2: TLS on 13000 first (replaced by http.server later), socat on 14000.
ip netns exec $S openssl s_server -accept 10.96.0.2:13000 -cert cert.pem -key key.pem -rev </dev/null >/dev/null 2>&1 &
decoy_tls=$!
nsx $S socat TCP-LISTEN:14000,bind=10.96.0.2,fork,reuseaddr SYSTEM:'cat >/dev/null' >/dev/null 2>&1 &
# Agents' wake-up port.
for c in kwk-a22 kwk-d33; do nsx "$c" socat -u UDP-RECV:15000 - >/dev/null 2>&1 & done
bound $S tcp 10.96.0.1:13000; bound $S tcp 10.96.0.1:14000; bound $S tcp 10.96.0.1:13111
bound $S udp 10.96.0.1:13000; bound $S tcp 10.96.0.2:13000; bound $S tcp 10.96.0.2:14000
bound kwk-a22 udp 0.0.0.0:15000; bound kwk-d33 udp 0.0.0.0:15000

# Not through nsx: $! must be tcpdump itself (ip netns exec execs it), to stop it cleanly with SIGINT.
ip netns exec $S tcpdump --immediate-mode -i br0 -w "$work/raw.pcap" 'ip and (tcp or udp)' 2>/dev/null &
dump=$!
sleep 1
tls() { # tls NS ADDR: one TLS connection to ADDR:13000 without SNI, a few bytes, then close
  printf '\x00\x00\x00\x10KLNAG-sync\x01\x02\x03\x04\x05\x06' |
    nsx "$1" openssl s_client -connect "$2:13000" -noservername >/dev/null 2>&1
}
tcp() { # tcp NS ADDR:PORT BYTES: one TCP connection that sends BYTES (printf format), then close
  printf "$3" | nsx "$1" socat - "TCP:$2"
}
udp() { # udp NS [FROM] TO:PORT BYTES: one datagram (FROM: source address, for the two on br0)
  if [ $# = 4 ]; then printf "$4" | nsx "$1" socat -u - "UDP-SENDTO:$3,bind=$2"
  else printf "$3" | nsx "$1" socat -u - "UDP-SENDTO:$2"; fi
}

# 10.96.0.21: a Network Agent on all three of its channels.
for i in 1 2 3; do tls kwk-a21 10.96.0.1; [ $i = 3 ] || sleep 1; done
sleep 0.5
for i in 1 2; do tcp kwk-a21 10.96.0.1:14000 '\x00\x00\x00\x1cKLNAG\x00\x01\x00\x00\x00\x02\xa5\x5a\x00\x10legacy-sync\x00'; sleep 0.5; done
udp kwk-a21 10.96.0.1:13000 '\x00\x00\x00\x0cKLNAG\x00\x03shutdown'
sleep 0.5
# 10.96.0.22: one connection, two wake-ups from the server.
tls kwk-a22 10.96.0.1
sleep 0.5
for i in 1 2; do udp $S 10.96.0.1 10.96.0.22:15000 '\x01\x00\x00\x20KLWAKE\x00\x00\x5a\xa5\xde\xad\xbe\xef\x00\x01\x02\x03'; sleep 0.5; done
# 10.96.0.23: the KSN proxy.
for i in 1 2; do tcp kwk-a23 10.96.0.1:13111 '\x00\x00\x00\x18KSNP\x01\x00\x00\x00\x9c\x3e\x11\x42\x00\x00\x00\x00\xff\xee'; sleep 0.5; done

# Decoys, all to 10.96.0.2.
tls kwk-d31 10.96.0.2
sleep 0.5
kill $decoy_tls; wait $decoy_tls 2>/dev/null || true
(cd www && nsx $S python3 -m http.server 13000 --bind 10.96.0.2 >/dev/null 2>&1 &)
bound $S tcp 10.96.0.2:13000
for i in 1 2 3; do nsx kwk-d32 curl -s -o /dev/null http://10.96.0.2:13000/; sleep 0.5; done
for i in 1 2 3; do udp $S 10.96.0.2 10.96.0.33:15000 '\x01\x00\x00\x20KLWAKE\x00\x00\x5a\xa5\xde\xad\xbe\xef\x00\x01\x02\x03'; sleep 0.5; done
for i in 1 2 3; do tcp kwk-d34 10.96.0.2:14000 'GET / HTTP/1.1\r\nHost: x\r\n\r\n'; sleep 0.5; done
sleep 1.5
stop_capture $dump
# Move the first packet to 2024-10-21T09:00:00Z, after the cutoff.
shift_to "$work/raw.pcap" "$out/ksc.pcap" 2024-10-21T09:00:00Z
wrote "$out/ksc.pcap"
