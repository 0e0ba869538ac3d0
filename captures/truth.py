#!/usr/bin/env python3
"""Ground truth for the tests, from tshark (an independent decoder), for every capture in
a folder: each DNS query name, TLS (and QUIC) ClientHello SNI and HTTP Host, with the client, the
VLAN tags, the count and whether it is after the 2024-09-29T04:00:00Z cutoff. All names,
Kaspersky or not: the tests decide which ones the rules must match.

    truth.py CAPTURES_DIR > tests/expected/captures.json
"""
import collections
import json
import os
import subprocess
import sys

CUTOFF = 1727582400  # 2024-09-29T04:00:00Z
FIELDS = ["frame.time_epoch", "ip.src", "ipv6.src", "ieee8021ad.id", "vlan.id", "dns.flags.response", "dns.qry.name",
          "tls.handshake.type", "tls.handshake.extensions_server_name", "http.request", "http.host", "quic.version"]


def norm(name):
    return name.lower().rstrip(".")


def rows(path):
    cmd = ["tshark", "-r", path, "-o", "tcp.desegment_tcp_streams:TRUE", "-o", "tcp.reassemble_out_of_order:TRUE", "-T", "fields",
           "-E", "separator=\t", "-E", "occurrence=a", "-E", "aggregator=|"]
    for f in FIELDS:
        cmd += ["-e", f]
    # tshark reassembles TCP and IP itself; "-2" two-pass so reassembled PDUs land on one frame.
    cmd.insert(1, "-2")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        yield dict(zip(FIELDS, line.split("\t")))


def truth(path):
    seen = collections.Counter()
    for r in rows(path):
        ts = float(r["frame.time_epoch"])
        client = (r["ip.src"] or r["ipv6.src"]).split("|")[-1]
        # Outer 802.1ad tag (its own field in tshark), then 802.1Q tags.
        vlan = tuple(int(v) for f in ("ieee8021ad.id", "vlan.id") for v in r[f].split("|") if v)
        after = ts >= CUTOFF
        if r["dns.qry.name"] and r["dns.flags.response"]:
            flags = r["dns.flags.response"].split("|")
            names = r["dns.qry.name"].split("|")
            for resp, name in zip(flags, names):
                if resp in ("0", "False"):
                    seen[(client, norm(name), "dns", after, vlan)] += 1
        if r["tls.handshake.extensions_server_name"] and "1" in r["tls.handshake.type"].split("|"):
            # tshark decrypts QUIC Initials too: a ClientHello inside QUIC is a "quic" event.
            via = "quic" if r["quic.version"] else "tls"
            seen[(client, norm(r["tls.handshake.extensions_server_name"].split("|")[0]), via, after, vlan)] += 1
        if r["http.request"] and r["http.host"]:
            for host in r["http.host"].split("|"):
                h = host.rsplit(":", 1)[0] if host.count(":") == 1 else host.strip("[]")
                seen[(client, norm(h), "http", after, vlan)] += 1
    return [{"client_ip": c, "domain": d, "via": v, "count": n, "after_cutoff": a, "vlan": list(vl) or None}
            for (c, d, v, a, vl), n in sorted(seen.items())]


def main():
    folder = sys.argv[1]
    out = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith((".pcap", ".pcapng", ".pcap.gz")):
            out[name] = truth(os.path.join(folder, name))
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
