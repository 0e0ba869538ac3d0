#!/usr/bin/env bash
# Makes captures/encap/*.pcap: real recordings of this folder (dns-udp, http, tls13, ipv6, vlan)
# wrapped in tunnels and overlays by captures/encap.py, for the decapsulating decoder's tests. Each
# file's inner frames are the original's bytes and timestamps; then tshark checks that it finds the
# same names in the wrapped file as in the original (`encap.py check`, with decode-as options where
# tshark needs them), and writes captures/encap/truth.json: per file, its kind, source, tshark
# options, what is expected and tshark's truth (client = innermost IP source; no VLAN field).
# Deterministic: the same sources give the same bytes. Needs python3 and tshark; no root.
# captures/encap/vxlan-real.pcap is a real VXLAN recording, made by make-vxlan.sh (root), and kept.
#
#   captures/make-encap.sh [OUT-DIR]     # default: captures/encap/
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(mkdir -p "${1:-$here/encap}" && cd "${1:-$here/encap}" && pwd)
table=$(mktemp /tmp/kavwatch-encap.XXXXXX)
trap 'rm -f "$table"' EXIT

# FILE KIND SOURCE
cat > "$table" <<'EOF'
gre-ip.pcap             gre-ip              http.pcap
gre-ip-tls13.pcap       gre-ip              tls13.pcap
gre-ip-ipv6.pcap        gre-ip              ipv6.pcap
gre-key.pcap            gre-key             dns-udp.pcap
gre-teb.pcap            gre-teb             http.pcap
gre-ip6.pcap            gre-ip6             dns-udp.pcap
erspan1.pcap            erspan1             http.pcap
erspan2.pcap            erspan2             tls13.pcap
erspan2-vlan.pcap       erspan2             vlan.pcap
erspan3.pcap            erspan3             dns-udp.pcap
vxlan.pcap              vxlan               http.pcap
vxlan-dns-udp.pcap      vxlan               dns-udp.pcap
vxlan-tls13.pcap        vxlan               tls13.pcap
vxlan-vlan.pcap         vxlan               vlan.pcap
vxlan8472.pcap          vxlan8472           dns-udp.pcap
vxlan-custom.pcap       vxlan-custom        http.pcap
vxlan-ip6.pcap          vxlan-ip6           dns-udp.pcap
geneve.pcap             geneve              http.pcap
ipip.pcap               ipip                http.pcap
ipip-ipv6.pcap          ipip                ipv6.pcap
ip6ip6.pcap             ip6ip6              ipv6.pcap
4in6.pcap               4in6                dns-udp.pcap
teredo.pcap             teredo              ipv6.pcap
mpls.pcap               mpls                http.pcap
mpls-ipv6.pcap          mpls                ipv6.pcap
mpls-pw.pcap            mpls-pw             http.pcap
mpls-pw-cw.pcap         mpls-pw-cw          dns-udp.pcap
pppoe.pcap              pppoe               http.pcap
pppoe-ipv6.pcap         pppoe               ipv6.pcap
vntag.pcap              vntag               dns-udp.pcap
etag.pcap               etag                dns-udp.pcap
pbb.pcap                pbb                 http.pcap
nsh.pcap                nsh                 http.pcap
nsh-ip.pcap             nsh-ip              dns-udp.pcap
ppp.pcap                ppp                 http.pcap
ppp-hdlc.pcap           ppp-hdlc            dns-udp.pcap
chdlc.pcap              chdlc               http.pcap
ppp-ether.pcap          ppp-ether           dns-udp.pcap
erspan3-vlan-vxlan.pcap erspan3-vlan-vxlan  http.pcap
mpls-pppoe.pcap         mpls-pppoe          dns-udp.pcap
deep8.pcap              deep8               dns-udp.pcap
deep9.pcap              deep9               dns-udp.pcap
gre-unknown.pcap        gre-unknown         http.pcap
gre-lying.pcap          gre-lying           dns-udp.pcap
vxlan-short.pcap        vxlan-short         dns-udp.pcap
mpls-nobos.pcap         mpls-nobos          dns-udp.pcap
EOF

find "$out" -maxdepth 1 -name '*.pcap' ! -name vxlan-real.pcap -delete
fail=0
while read -r file kind src; do
  python3 "$here/encap.py" wrap "$kind" "$here/$src" "$out/$file" >/dev/null
  python3 "$here/encap.py" check --kind "$kind" "$out/$file" "$here/$src" || fail=1
done < "$table"
if [ -f "$out/vxlan-real.pcap" ]; then echo "vxlan-real.pcap vxlan make-vxlan.sh" >> "$table"; fi
python3 "$here/encap.py" index "$out" "$table" > "$out/truth.json"
echo "wrote $(find "$out" -maxdepth 1 -name '*.pcap' | wc -l) captures in $out ($(du -sh "$out" | cut -f1)), $out/truth.json"
exit $fail
