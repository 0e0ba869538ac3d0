#!/usr/bin/env python3
"""Rewrites real Ethernet recordings where Linux (or this sandbox) cannot record the real thing.

    convert.py formats IN.pcap OUTDIR
        null-loop.pcap (LINKTYPE_NULL, 4-byte host-order address family, as BSD/macOS lo0),
        raw-ip.pcap (LINKTYPE_RAW, bare IP), bigendian.pcap (classic pcap written big-endian).
    convert.py tag FILE.pcap IP=VLAN[,INNER] ...
        inserts VLAN tags into the frames to or from IP, in place: one id gives an 802.1Q tag,
        two give QinQ (802.1ad outer tag 0x88a8, 802.1Q inner). The sandbox kernel that makes
        these captures has no 8021q module, so tagged frames cannot be recorded from interfaces.
    convert.py reorder FILE.pcap
        in each TCP flow, swaps the client's first two data segments and repeats the second
        one after them (a retransmission), in place. The sandbox kernel has no netem.
Packet bytes above the link layer are kept as they were recorded.
"""
import struct
import sys


def records(path):
    with open(path, "rb") as f:
        head = f.read(24)
        assert head[:4] == b"\xd4\xc3\xb2\xa1", "expects a little-endian microsecond pcap"
        assert struct.unpack("<I", head[20:24])[0] == 1, "expects Ethernet"
        while True:
            h = f.read(16)
            if len(h) < 16:
                return
            sec, usec, caplen, origlen = struct.unpack("<IIII", h)
            yield sec, usec, f.read(caplen), origlen


def write(path, linktype, recs, endian="<"):
    with open(path, "wb") as f:
        f.write(struct.pack(endian + "IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, linktype))
        for sec, usec, data, origlen in recs:
            f.write(struct.pack(endian + "IIII", sec, usec, len(data), origlen))
            f.write(data)


def ip_of(frame, at):
    et = struct.unpack(">H", frame[12:14])[0]
    if et == 0x0800:
        return ".".join(str(b) for b in frame[14 + at:14 + at + 4])
    return None


def tag(path, specs):
    want = {}
    for spec in specs:
        ip, ids = spec.split("=")
        want[ip] = [int(i) for i in ids.split(",")]
    out = []
    for sec, usec, d, origlen in records(path):
        ids = want.get(ip_of(d, 12)) or want.get(ip_of(d, 16))
        if ids:
            tags = b""
            for n, vid in enumerate(ids):
                tpid = 0x88A8 if len(ids) > 1 and n == 0 else 0x8100
                tags += struct.pack(">HH", tpid, vid)
            # Ethernet: dst(6) src(6) [TPID TCI]... ethertype
            d = d[:12] + tags + d[12:]
            origlen += len(tags)
        out.append((sec, usec, d, origlen))
    write(path, 1, out)


def tcp_client_data(d):
    """(flow key, has payload, is from the client side) for IPv4 TCP frames, else None."""
    if struct.unpack(">H", d[12:14])[0] != 0x0800 or d[23] != 6:
        return None
    ihl = (d[14] & 15) * 4
    tot = struct.unpack(">H", d[16:18])[0]
    t = 14 + ihl
    sport, dport = struct.unpack(">HH", d[t:t + 4])
    doff = (d[t + 12] >> 4) * 4
    payload = tot - ihl - doff
    return (d[26:30], sport, d[30:34], dport), payload > 0, dport == 443


def reorder(path):
    recs = list(records(path))
    by_flow = {}
    for i, (_, _, d, _) in enumerate(recs):
        info = tcp_client_data(d)
        if info and info[1] and info[2]:
            by_flow.setdefault(info[0], []).append(i)
    order = list(range(len(recs)))
    extra = {}
    for idx in by_flow.values():
        if len(idx) >= 2:
            a, b = idx[0], idx[1]
            order[a], order[b] = order[b], order[a]
            extra[b] = a  # after position b (now segment a), repeat segment b... see below
    out = []
    for pos, i in enumerate(order):
        out.append(recs[i])
        if pos in extra:
            # position pos now holds the first segment; resend the second one after it
            sec, usec, d, o = recs[order[extra[pos]]]
            out.append((recs[i][0], recs[i][1], d, o))
    write(path, 1, out)


def main():
    if sys.argv[1] == "reorder":
        return reorder(sys.argv[2])
    if sys.argv[1] == "tag":
        return tag(sys.argv[2], sys.argv[3:])
    src, out = sys.argv[2], sys.argv[3]
    recs = list(records(src))
    null, raw = [], []
    for sec, usec, d, origlen in recs:
        et = struct.unpack(">H", d[12:14])[0]
        if et not in (0x0800, 0x86DD):
            continue
        family = 2 if et == 0x0800 else 24  # AF_INET, AF_INET6 (NetBSD/OpenBSD value)
        null.append((sec, usec, struct.pack("<I", family) + d[14:], origlen - 10))
        raw.append((sec, usec, d[14:], origlen - 14))
    write(f"{out}/null-loop.pcap", 0, null)
    write(f"{out}/raw-ip.pcap", 101, raw)
    write(f"{out}/bigendian.pcap", 1, recs, endian=">")


if __name__ == "__main__":
    main()
