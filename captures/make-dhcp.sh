#!/usr/bin/env bash
# Makes captures/dhcp.pcap from real programs: one address held by two hosts in turn, so that only
# the DHCP exchange tells who used it when. A server namespace (kwd-srv, br0 10.95.0.1 and fd95::1)
# runs dnsmasq as DHCPv4 server with a pool of ONE address (10.95.0.50, lease 1h), as stateful
# DHCPv6 server (fd95::50 only, lease 1h) and as DNS server (dnl-01.geo.kaspersky.com -> 10.95.0.1
# and fd95::1), and python3 http.server on 10.95.0.1:80 and [fd95::1]:80. Three clients on the
# bridge, each with ISC dhclient in its own namespace (its own config, lease, pid and script files):
#   kwd-alpha   02:95:00:00:00:11, host-name "alpha-laptop": DISCOVER/OFFER/REQUEST/ACK for
#               10.95.0.50, dig + curl http://dnl-01.geo.kaspersky.com/diffs/... from it, then
#               RELEASE (and the address removed);
#   kwd-bravo   02:95:00:00:00:12, host-name "bravo-desktop", 2 s later: the same 10.95.0.50 (the
#               only one in the pool), then the same dig + curl from it; its lease is not released;
#   kwd-charlie 02:95:00:00:00:13, IPv6 only, dhclient -6 -D LL (DUID-LL 00:03:00:01:02:95:00:00:00:13)
#               with client FQDN (option 39) "charlie-ws.example.test": SOLICIT/ADVERTISE/REQUEST/
#               REPLY for fd95::50, then dig AAAA @fd95::1 and curl to [fd95::1] from fd95::50.
# dhclient's script here is a small one written by this script (ip addr add/del only: the system's
# dhclient-script would rewrite this machine's /etc/resolv.conf); the DHCPv6 address is put on
# with /64 (there are no router advertisements). The curls name the host with --resolve, so the
# HTTP Host header is dnl-01.geo.kaspersky.com. Recorded with tcpdump on the bridge (DHCP, DNS,
# HTTP only), then moved so the first packet is at 2024-10-22T08:00:00Z (after the cutoff) with
# editcap. Transaction ids and ports differ from run to run; MACs, DUIDs and addresses do not.
# Needs root, iproute2, tcpdump, tshark (editcap), dnsmasq, isc-dhcp-client, dnsutils, curl, python3.
#
#   sudo captures/make-dhcp.sh [OUT-DIR]   # writes OUT-DIR/dhcp.pcap (default: captures/)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(mkdir -p "${1:-$here}" && cd "${1:-$here}" && pwd)
. "$here/netns.sh"
S=kwd-srv
netns_init dhcp $S kwd-alpha kwd-bravo kwd-charlie

# No addresses on the clients: dhclient puts them on. (No duplicate address detection anywhere, so
# addresses work at once, and no multicast snooping on br0: netns.sh.)
add_bridge_ns $S 10.95.0.1/24,fd95::1/64 02:95:00:00:00:01
add_client kwd-alpha $S - 02:95:00:00:00:11
add_client kwd-bravo $S - 02:95:00:00:00:12
add_client kwd-charlie $S - 02:95:00:00:00:13

cd "$work"
mkdir -p www/diffs/bases/av/kdb/i386 && echo update > www/diffs/bases/av/kdb/i386/kdb-i386-0607g.xml.dif
# dhclient's script: puts the leased address on (and takes it off), nothing else.
cat > dhclient-script <<'EOF'
#!/bin/sh
case "$reason" in
  BOUND|RENEW|REBIND|REBOOT)
    [ -n "${old_ip_address:-}" ] && [ "$old_ip_address" != "$new_ip_address" ] &&
      ip addr del "$old_ip_address/$old_subnet_mask" dev "$interface" 2>/dev/null
    ip addr replace "$new_ip_address/$new_subnet_mask" dev "$interface" ;;
  RELEASE|EXPIRE|FAIL|STOP)
    [ -n "${old_ip_address:-}" ] && ip addr del "$old_ip_address/$old_subnet_mask" dev "$interface" 2>/dev/null ;;
  BOUND6|RENEW6|REBIND6|REBOOT6)
    [ -n "${new_ip6_address:-}" ] && ip -6 addr replace "$new_ip6_address/64" dev "$interface" nodad ;;
  RELEASE6|EXPIRE6|STOP6)
    [ -n "${old_ip6_address:-}" ] && ip -6 addr del "$old_ip6_address/64" dev "$interface" 2>/dev/null ;;
esac
exit 0
EOF
chmod +x dhclient-script
for c in alpha-laptop bravo-desktop; do
  printf 'send host-name "%s";\nrequest subnet-mask, broadcast-address, routers, domain-name-servers;\n' "$c" > "${c%-*}.conf"
done
printf 'send fqdn.fqdn "charlie-ws.example.test";\nsend fqdn.server-update on;\n' > charlie.conf
dhc() { # dhc NS NAME ARGS...: dhclient in NS with its own files
  local ns=$1 n=$2; shift 2
  nsx "$ns" dhclient -q "$@" -cf "$work/$n.conf" -lf "$work/$n.leases" -pf "$work/$n.pid" \
    -sf "$work/dhclient-script" eth0
}

nsx $S dnsmasq --no-daemon --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces \
  --interface=br0 --except-interface=lo --pid-file="$work/dnsmasq.pid" --local-ttl=300 \
  --address=/dnl-01.geo.kaspersky.com/10.95.0.1 --address=/dnl-01.geo.kaspersky.com/fd95::1 \
  --dhcp-range=10.95.0.50,10.95.0.50,255.255.255.0,1h --dhcp-range=fd95::50,fd95::50,64,1h \
  --dhcp-option=option:router,10.95.0.1 --dhcp-option=option:dns-server,10.95.0.1 \
  --dhcp-option=option6:dns-server,[fd95::1] --dhcp-duid=32473,6b7764 --dhcp-authoritative \
  --no-ping --dhcp-leasefile="$work/dnsmasq.leases" --log-facility=/dev/null >/dev/null 2>&1 &
(cd www && nsx $S python3 -m http.server 80 --bind 10.95.0.1 >/dev/null 2>&1 &)
(cd www && nsx $S python3 -m http.server 80 --bind fd95::1 >/dev/null 2>&1 &)
sleep 1.5

# Not through nsx: $! must be tcpdump itself (ip netns exec execs it), to stop it cleanly with SIGINT.
ip netns exec $S tcpdump --immediate-mode -i br0 -w "$work/raw.pcap" \
  '(udp port 67 or udp port 68 or udp port 546 or udp port 547 or udp port 53 or tcp port 80)' 2>/dev/null &
dump=$!
sleep 1
path=/diffs/bases/av/kdb/i386/kdb-i386-0607g.xml.dif
fetch() { # fetch NS DNS-SERVER CURL-ADDRESS [dig options]
  local ns=$1 dns=$2 addr=$3; shift 3
  nsx "$ns" dig +short +tries=1 "$@" "@$dns" dnl-01.geo.kaspersky.com >/dev/null
  nsx "$ns" curl -s -o /dev/null --resolve "dnl-01.geo.kaspersky.com:80:$addr" \
    "http://dnl-01.geo.kaspersky.com$path"
}
# 1. alpha leases 10.95.0.50, uses it, gives it back.
dhc kwd-alpha alpha -4 -1
fetch kwd-alpha 10.95.0.1 10.95.0.1
sleep 0.5
dhc kwd-alpha alpha -4 -r 2>/dev/null # it says "Killed old client process"
sleep 2
# 2. bravo gets the same address.
dhc kwd-bravo bravo -4 -1
fetch kwd-bravo 10.95.0.1 10.95.0.1
sleep 1
# 3. charlie over DHCPv6.
dhc kwd-charlie charlie -6 -1 -D LL
fetch kwd-charlie fd95::1 '[fd95::1]' -6 AAAA
sleep 1
stop_capture $dump
# Move the first packet to 2024-10-22T08:00:00Z, after the cutoff.
shift_to "$work/raw.pcap" "$out/dhcp.pcap" 2024-10-22T08:00:00Z
wrote "$out/dhcp.pcap"
