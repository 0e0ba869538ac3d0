#!/bin/bash
# Records the QUIC test captures: aioquic's example HTTP/3 server and client on loopback in a
# network namespace of our own, the client asking for https://dnl-01.geo.kaspersky.com:4433/
# (the name resolves to 127.0.0.1 through /etc/netns/$NS/hosts), then cuts out the client's
# first Initial datagrams as .bin files.
# Needs: root, tcpdump, tshark, openssl, and (not committed) a venv and aioquic's source distribution here:
#   python3 -m venv venv && venv/bin/pip install aioquic==1.7.2 wsproto starlette jinja2
#   mkdir -p sdist && venv/bin/pip download --no-binary :all: --no-deps aioquic==1.7.2 -d sdist \
#     && tar -xzf sdist/aioquic-1.7.2.tar.gz -C sdist
# Writes src/proto/testdata/quic-aioquic*.{pcap,bin} and captures/quic-h3.pcap.
set -euo pipefail
cd "$(dirname "$0")"
HERE=$PWD
PY=$HERE/venv/bin/python
EX=$HERE/sdist/aioquic-1.7.2/examples
OUT=$HERE/../../src/proto/testdata
NS=kavquic
ip netns list | grep -qw $NS || { ip netns add $NS; ip -n $NS link set lo up; }
mkdir -p /etc/netns/$NS
printf '127.0.0.1 localhost\n127.0.0.1 dnl-01.geo.kaspersky.com\n' >/etc/netns/$NS/hosts
[ -f cert.pem ] || openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout key.pem \
    -out cert.pem -days 30 -subj /CN=dnl-01.geo.kaspersky.com -addext subjectAltName=DNS:dnl-01.geo.kaspersky.com
cp client.py "$EX/"

# record NAME CLIENT-COMMAND...
record() {
    local name=$1
    shift
    ip netns exec $NS tcpdump --immediate-mode -i lo -w "$HERE/$name.pcap" udp port 4433 2>/dev/null &
    local td=$!
    sleep 1
    (cd "$EX" && exec ip netns exec $NS timeout 10 "$PY" http3_server.py --host 127.0.0.1 --port 4433 \
        -c "$HERE/cert.pem" -k "$HERE/key.pem") >"$HERE/$name.server.log" 2>&1 &
    local sv=$!
    sleep 2
    (cd "$EX" && ip netns exec $NS timeout 10 "$PY" "$@" https://dnl-01.geo.kaspersky.com:4433/) >"$HERE/$name.client.log" 2>&1
    wait $sv || true # the server ends at its timeout
    kill $td
    wait $td || true
    grep -q "HTTP request GET /" "$HERE/$name.server.log"
}
payload() { tshark -r "$HERE/$1.pcap" -Y "frame.number==$2" -T fields -e udp.payload | xxd -r -p >"$OUT/$3"; }

record quic-aioquic http3_client.py --insecure
record quic-aioquic-split client.py --pad-alpn
record quic-aioquic-v2 client.py --v2
payload quic-aioquic 1 quic-aioquic-initial.bin
payload quic-aioquic-split 1 quic-aioquic-split-1.bin
payload quic-aioquic-split 2 quic-aioquic-split-2.bin
payload quic-aioquic-v2 1 quic-aioquic-v2-initial.bin
cp quic-aioquic.pcap quic-aioquic-split.pcap quic-aioquic-v2.pcap "$OUT/"
cp quic-aioquic-split.pcap "$HERE/../quic-h3.pcap"
rm -f ./*.log ./*.pcap
ls -l "$OUT"
