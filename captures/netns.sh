# shellcheck shell=bash
# Sourced by captures/make-{attribution,resolver,ksc,dhcp,public-dns,vlans}.sh: the network-namespace
# scaffolding they share. Each builds a small LAN of its own: a "server" namespace holding a Linux
# bridge, br0, and client namespaces joined to it by veth pairs; tcpdump records on br0; the recording
# is then moved in time to the date it stands for. Every interface is made inside the namespaces (none
# ever exists outside them), and the namespaces, their processes and the work directory are removed on
# exit. Runs under the caller's `set -euo pipefail`; needs root, iproute2, tshark (editcap, capinfos)
# and python3 (ethtool if present).
#
# tcpdump itself is started by each script, directly (`ip netns exec NS tcpdump ... &`, never through
# a shell function), so that $! is tcpdump's pid and stop_capture can stop it cleanly.

# nsx NS CMD...: CMD in namespace NS; short, for the many commands that run in one.
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# netns_init TAG NS...: removes namespaces NS... (and $work) on exit, even on failure, after clearing
# what an interrupted earlier run left; then makes $work, a fresh /tmp/kavwatch-TAG.XXXXXX.
netns_init() {
  local tag=$1; shift
  NETNS_NAMES=("$@")
  work=
  trap netns_cleanup EXIT
  netns_cleanup 2>/dev/null
  work=$(mktemp -d "/tmp/kavwatch-$tag.XXXXXX")
}

# netns_cleanup: the EXIT trap; stops the namespaces' processes first, or deleting them would leave those running.
netns_cleanup() {
  local ns
  for ns in "${NETNS_NAMES[@]}"; do ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true; done
  sleep 0.2
  for ns in "${NETNS_NAMES[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  if [ -n "${work:-}" ]; then rm -rf "$work"; fi
}

# netns_new NS: namespace NS with lo up and no IPv6 duplicate address detection, so addresses (a DHCPv6
# lease's too) work at once; it comes before any interface, which takes the namespace's defaults when made.
netns_new() {
  ip netns add "$1"
  nsx "$1" sysctl -qw net.ipv6.conf.default.accept_dad=0 net.ipv6.conf.all.accept_dad=0
  nsx "$1" ip link set lo up
}

# add_bridge_ns NS ADDR/PREFIX[,ADDR/PREFIX...] [MAC]: the server side, namespace NS with bridge br0 up
# holding the addresses; MAC fixes br0's (and so its IPv6 link-local) address from run to run. Multicast
# snooping is off so that br0 floods multicast (DHCPv6 to ff02::1:2) to every port.
add_bridge_ns() {
  local ns=$1 addrs=$2 mac=${3:-} a
  local opts=()
  if [ -n "$mac" ]; then opts=(address "$mac"); fi
  netns_new "$ns"
  nsx "$ns" ip link add br0 "${opts[@]}" type bridge mcast_snooping 0
  nsx "$ns" ip link set br0 up
  for a in ${addrs//,/ }; do
    case $a in
      *:*) nsx "$ns" ip addr add "$a" dev br0 nodad ;;
      *) nsx "$ns" ip addr add "$a" dev br0 ;;
    esac
  done
}

# add_client NS BRIDGE_NS ADDR/PREFIX[,ADDR/PREFIX...]|- [MAC]: a client, namespace NS whose eth0 is a
# veth to br0 in BRIDGE_NS (port NS-b), with the addresses (- for none: DHCP gives it one) and MAC (a
# fixed one, for recordings whose hosts are told apart by MAC). Offloads are off on eth0 so that TCP is
# cut into MSS-sized segments before the bridge sees it, as on a wire.
add_client() {
  local ns=$1 br=$2 addrs=$3 mac=${4:-} a
  netns_new "$ns"
  nsx "$br" ip link add "$ns-b" type veth peer name eth0 netns "$ns"
  nsx "$br" ip link set "$ns-b" master br0 up
  if [ -n "$mac" ]; then nsx "$ns" ip link set eth0 address "$mac"; fi
  nsx "$ns" ip link set eth0 up
  if [ "$addrs" != - ]; then
    for a in ${addrs//,/ }; do nsx "$ns" ip addr add "$a" dev eth0; done
  fi
  nsx "$ns" ethtool -K eth0 tso off gso off gro off >/dev/null 2>&1 || true
}

# stop_capture PID...: SIGINT makes tcpdump write out what it holds and close its file; waits until it has.
stop_capture() {
  local pid
  for pid in "$@"; do kill -INT "$pid"; wait "$pid" 2>/dev/null || true; done
}

# shift_to IN OUT INSTANT: OUT is IN, as pcap, moved in time so its first packet is exactly at INSTANT
# (RFC 3339 in UTC, like 2024-10-20T12:00:00Z), the date the recording stands for around the cutoff.
shift_to() {
  local first shift
  first=$(tshark -r "$1" -T fields -e frame.time_epoch -c 1 2>/dev/null)
  shift=$(python3 -c '
import sys
from datetime import datetime
from decimal import Decimal as D
to = int(datetime.fromisoformat(sys.argv[1].replace("Z", "+00:00")).timestamp())
print(D(to) - D(sys.argv[2]).quantize(D("0.000001")))' "$3" "$first")
  editcap -F pcap -t "$shift" "$1" "$2"
}

# wrote FILE: says what was made, with its packet count, as the last line of a run.
wrote() { echo "wrote $1: $(capinfos -c -M "$1" | tail -1)"; }
