#!/usr/bin/env python3
"""Wraps real Ethernet recordings in tunnels and overlays, for the decapsulating decoder's tests.
Python standard library only; the inner frames are kept byte for byte as they were recorded.

    encap.py wrap KIND IN.pcap OUT.pcap
        rewrites every frame of IN.pcap (little-endian microsecond pcap, Ethernet) wrapped as KIND
        (see `encap.py kinds`), with the same timestamps. Outer addresses live only in the file:
        IPv4 192.0.2.1 <-> 192.0.2.2 (direction follows the inner packet: the side sending from
        the lower, well-known port is 192.0.2.2), IPv6 2001:db8::1 <-> 2001:db8::2, MACs
        02:00:5e:00:00:01 <-> 02:00:5e:00:00:02. Outer IPv4 checksums and UDP lengths are set;
        UDP checksums are 0 over IPv4 and computed over IPv6. Kinds that carry an IP packet (not
        a whole Ethernet frame) drop the inner Ethernet header and VLAN tags, and skip inner frames
        that are not IP (ARP).
    encap.py check OUT.pcap ORIG.pcap [--kind KIND] [--opt TSHARK-OPTION]...
        tshark's truth of both files (as captures/truth.py: DNS query names, TLS SNI, HTTP Host per
        client, count, side of the cutoff; the client is the source of the innermost IP header;
        VLAN tags left out) must be equal; prints OK or the difference, exit 1 on a difference.
        The tshark options a kind needs (decode-as) are added from the kind, found from OUT's
        name (KIND.pcap or KIND-SOURCE.pcap) unless --kind is given; kinds whose inner traffic is
        not meant to decode (gre-unknown, damage) must give an empty truth instead.
    encap.py truth FILE.pcap [--kind KIND]
        prints tshark's truth of one file (JSON), with the kind's options.
    encap.py index DIR TABLE
        JSON for DIR/truth.json: for each line "FILE KIND SOURCE" of TABLE, the kind, the source,
        the tshark options, what is expected, and tshark's truth of DIR/FILE.
    encap.py kinds
        lists the kinds, what each one is, and the tshark options it needs.
"""
import collections
import json
import os
import struct
import subprocess
import sys
import zlib

# --- pcap ----------------------------------------------------------------------------------------


# Reading and writing little-endian microsecond pcaps: the same as convert.py's.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convert import records, write  # noqa: E402


# --- the inner frame -----------------------------------------------------------------------------

ET_IP4, ET_IP6 = 0x0800, 0x86DD


def l3(frame):
    """(ethertype, IP packet) of an Ethernet frame, past any VLAN tags; None if it is not IP."""
    at = 12
    et = struct.unpack(">H", frame[at:at + 2])[0]
    while et in (0x8100, 0x88A8, 0x9100):
        at += 4
        et = struct.unpack(">H", frame[at:at + 2])[0]
    if et not in (ET_IP4, ET_IP6):
        return None
    return et, frame[at + 2:]


def ports(frame):
    """(sport, dport) of a TCP or UDP packet in the frame, else None."""
    x = l3(frame)
    if not x:
        return None
    et, ip = x
    if et == ET_IP4:
        proto, at = ip[9], (ip[0] & 15) * 4
        if struct.unpack(">H", ip[6:8])[0] & 0x1FFF:
            return None  # not a first fragment
    else:
        proto, at = ip[6], 40
        if proto == 44:  # fragment header: ports only in the first fragment
            if struct.unpack(">H", ip[42:44])[0] & 0xFFF8:
                return None
            proto, at = ip[40], 48
    if proto not in (6, 17) or len(ip) < at + 4:
        return None
    return struct.unpack(">HH", ip[at:at + 4])


def backwards(frame):
    """True for a frame from the server side: sent from the lower port, a well-known one."""
    p = ports(frame)
    return bool(p) and p[0] < p[1] and p[0] < 1024


def flow_port(frame):
    """An outer UDP source port from a hash of the inner flow, as VXLAN/Geneve endpoints do."""
    x = l3(frame)
    if not x:
        return 49152
    et, ip = x
    addrs = ip[12:20] if et == ET_IP4 else ip[8:40]
    half = len(addrs) // 2
    sp, dp = ports(frame) or (0, 0)
    # the same port both ways: the endpoints sorted
    ends = sorted([(addrs[:half], sp), (addrs[half:], dp)])
    key = b"".join(a + struct.pack(">H", p) for a, p in ends)
    return 49152 + zlib.crc32(key) % 16384


# --- outer headers -------------------------------------------------------------------------------

MAC = (bytes.fromhex("02005e000001"), bytes.fromhex("02005e000002"))
IP4 = (bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2]))
IP6 = (bytes.fromhex("20010db8000000000000000000000001"), bytes.fromhex("20010db8000000000000000000000002"))


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


class Out:
    """Outer header builders; holds the IPv4 identification and sequence counters of one file."""

    def __init__(self):
        self.ident = 0
        self.seq = collections.Counter()

    def next_seq(self, what):
        self.seq[what] += 1
        return self.seq[what]

    def eth(self, payload, et, back=False, macs=MAC):
        src, dst = (macs[1], macs[0]) if back else (macs[0], macs[1])
        return dst + src + struct.pack(">H", et) + payload

    def ipv4(self, payload, proto, back=False, addrs=IP4, ttl=64):
        src, dst = (addrs[1], addrs[0]) if back else (addrs[0], addrs[1])
        self.ident = (self.ident + 1) & 0xFFFF
        h = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), self.ident, 0x4000, ttl, proto, 0, src, dst)
        return h[:10] + struct.pack(">H", csum(h)) + h[12:] + payload

    def ipv6(self, payload, nh, back=False, addrs=IP6):
        src, dst = (addrs[1], addrs[0]) if back else (addrs[0], addrs[1])
        return struct.pack(">IHBB", 6 << 28, len(payload), nh, 64) + src + dst + payload

    def udp4(self, payload, sport, dport, back=False, addrs=IP4):
        if back:
            sport, dport = dport, sport
        u = struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload
        return self.ipv4(u, 17, back, addrs)

    def udp6(self, payload, sport, dport, back=False):
        if back:
            sport, dport = dport, sport
        src, dst = (IP6[1], IP6[0]) if back else (IP6[0], IP6[1])
        u = struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload
        pseudo = src + dst + struct.pack(">II", len(u), 17)
        c = csum(pseudo + u) or 0xFFFF
        return self.ipv6(u[:6] + struct.pack(">H", c) + u[8:], 17, back)

    def gre(self, proto, payload, checksum=False, key=None, seq=None):
        flags = (0x8000 if checksum else 0) | (0x2000 if key is not None else 0) | (0x1000 if seq is not None else 0)
        opt = b""
        if checksum:
            opt += b"\0\0\0\0"
        if key is not None:
            opt += struct.pack(">I", key)
        if seq is not None:
            opt += struct.pack(">I", seq)
        g = struct.pack(">HH", flags, proto) + opt + payload
        if checksum:
            g = g[:4] + struct.pack(">H", csum(g)) + g[6:]
        return g


def mpls(labels, payload, bos=True, ttl=64):
    out = b""
    for n, label in enumerate(labels):
        s = 1 if bos and n == len(labels) - 1 else 0
        out += struct.pack(">I", (label << 12) | (s << 8) | ttl)
    return out + payload


def ppp_proto(et):
    return 0x0021 if et == ET_IP4 else 0x0057


def pppoe(session, ppp):
    return struct.pack(">BBHH", 0x11, 0x00, session, len(ppp)) + ppp


def erspan3(o, frame, sec, usec, session=7):
    """GRE-less ERSPAN III header (12 bytes) and, with the O flag, the 8-byte platform sub-header."""
    ts = (sec * 10000 + usec // 100) & 0xFFFFFFFF  # 100 us granularity (Gra=00)
    vlan = 0
    h = struct.pack(">HHI", (2 << 12) | vlan, (0 << 13) | (0 << 11) | (0 << 10) | session, ts)
    # SGT(16) P(1) FT(5) HW ID(6) D(1) Gra(2) O(1); P=1: an Ethernet frame, FT=0
    last = (0 << 16) | (1 << 15) | (0 << 10) | (1 << 4) | (0 << 3) | (0 << 1) | (1 if o else 0)
    h += struct.pack(">I", last)
    if o:
        # Platform ID 3: Reserved(10) Port ID(16), then the upper 32 bits of the timestamp (seconds)
        h += struct.pack(">II", (3 << 26) | (0 << 16) | 1, sec)
    return h


# --- the kinds -----------------------------------------------------------------------------------
# Each wrapper: (out, index, inner frame, sec, usec) -> outer frame bytes, or None to leave the frame out.

def need_ip(fn):
    def wrapped(o, i, f, sec, usec):
        x = l3(f)
        if not x:
            return None
        return fn(o, i, f, x[0], x[1], sec, usec)
    wrapped.__doc__ = fn.__doc__
    return wrapped


def over_gre4(o, proto, payload, back, **kw):
    return o.eth(o.ipv4(o.gre(proto, payload, **kw), 47, back), ET_IP4, back)


@need_ip
def k_gre_ip(o, i, f, et, ip, sec, usec):
    """Ethernet/IPv4/GRE (0x0800 or 0x86DD)/inner IP packet, inner Ethernet removed"""
    return over_gre4(o, et, ip, backwards(f))


@need_ip
def k_gre_key(o, i, f, et, ip, sec, usec):
    """as gre-ip with the C (checksum), K (key 1234) and S (sequence number) flags"""
    return over_gre4(o, et, ip, backwards(f), checksum=True, key=1234, seq=o.next_seq("gre"))


def k_gre_teb(o, i, f, sec, usec):
    """Ethernet/IPv4/GRE 0x6558 (transparent Ethernet bridging)/inner Ethernet frame"""
    return over_gre4(o, 0x6558, f, backwards(f))


@need_ip
def k_gre_ip6(o, i, f, et, ip, sec, usec):
    """Ethernet/IPv6 (next header 47)/GRE/inner IP packet"""
    b = backwards(f)
    return o.eth(o.ipv6(o.gre(et, ip), 47, b), ET_IP6, b)


def k_erspan1(o, i, f, sec, usec):
    """ERSPAN type I: GRE 0x88BE without the S flag and without an ERSPAN header; inner Ethernet
    frame. Mirrored traffic: always 192.0.2.1 (switch) -> 192.0.2.2 (collector)"""
    return over_gre4(o, 0x88BE, f, False)


def k_erspan2(o, i, f, sec, usec):
    """ERSPAN type II: GRE with S flag, 0x88BE, 8-byte header ver=1 vlan=0 session 5 (En=3 for
    frames that keep their VLAN tag); inner Ethernet frame; always 192.0.2.1 -> 192.0.2.2"""
    tagged = struct.unpack(">H", f[12:14])[0] in (0x8100, 0x88A8)
    en = 3 if tagged else 0
    h = struct.pack(">HHI", (1 << 12) | 0, (0 << 13) | (en << 11) | (0 << 10) | 5, 0)
    return over_gre4(o, 0x88BE, h + f, False, seq=o.next_seq("gre"))


def k_erspan3(o, i, f, sec, usec):
    """ERSPAN type III: GRE with S flag, 0x22EB, 12-byte header ver=2 session 7; the O flag and
    the 8-byte platform sub-header (platform id 3) on odd-numbered frames (2nd, 4th, ...)"""
    return over_gre4(o, 0x22EB, erspan3(i % 2 == 1, f, sec, usec) + f, False, seq=o.next_seq("gre"))


def vxlan_hdr(vni):
    return struct.pack(">II", 0x08000000, vni << 8)


def k_vxlan(o, i, f, sec, usec, port=4789, vni=42):
    """Ethernet/IPv4/UDP dst 4789/VXLAN VNI 42/inner Ethernet frame"""
    return o.eth(o.udp4(vxlan_hdr(vni) + f, flow_port(f), port, backwards(f)), ET_IP4, backwards(f))


def k_vxlan8472(o, i, f, sec, usec):
    """VXLAN VNI 42 on UDP 8472 (Linux's old default port)"""
    return k_vxlan(o, i, f, sec, usec, port=8472)


def k_vxlan_custom(o, i, f, sec, usec):
    """VXLAN VNI 42 on UDP 9999, for a --vxlan-port test"""
    return k_vxlan(o, i, f, sec, usec, port=9999)


def k_vxlan_ip6(o, i, f, sec, usec):
    """Ethernet/IPv6/UDP dst 4789 (checksum computed)/VXLAN VNI 42/inner Ethernet frame"""
    b = backwards(f)
    return o.eth(o.udp6(vxlan_hdr(42) + f, flow_port(f), 4789, b), ET_IP6, b)


def k_geneve(o, i, f, sec, usec):
    """Ethernet/IPv4/UDP 6081/Geneve VNI 77 protocol 0x6558/inner Ethernet frame; one 8-byte option
    TLV (class 0xff01 experimental, type 1, 4 bytes of data) on odd-numbered frames"""
    opt = struct.pack(">HBBI", 0xFF01, 0x01, 1, 0x4B415657) if i % 2 == 1 else b""
    h = struct.pack(">BBHI", len(opt) // 4, 0, 0x6558, 77 << 8) + opt
    b = backwards(f)
    return o.eth(o.udp4(h + f, flow_port(f), 6081, b), ET_IP4, b)


@need_ip
def k_ipip(o, i, f, et, ip, sec, usec):
    """Ethernet/IPv4 (protocol 4 for an inner IPv4 packet, 41 = 6in4 for IPv6)/inner IP packet"""
    b = backwards(f)
    return o.eth(o.ipv4(ip, 4 if et == ET_IP4 else 41, b), ET_IP4, b)


@need_ip
def k_ip6ip6(o, i, f, et, ip, sec, usec):
    """Ethernet/IPv6 (next header 41 for an inner IPv6 packet, 4 for IPv4)/inner IP packet"""
    b = backwards(f)
    return o.eth(o.ipv6(ip, 41 if et == ET_IP6 else 4, b), ET_IP6, b)


@need_ip
def k_teredo(o, i, f, et, ip, sec, usec):
    """Ethernet/IPv4/UDP 3544/Teredo/inner IPv6 packet (IPv6 inner frames only). Frame i%4: 0 and 2
    an origin indication; 1 an authentication indication (client id 2 bytes, auth value 4 bytes);
    3 an authentication indication (no id, no value) followed by an origin indication"""
    if et != ET_IP6:
        return None
    origin = struct.pack(">HH4s", 0x0000, 40000 ^ 0xFFFF, bytes(b ^ 0xFF for b in IP4[0]))
    if i % 4 == 1:
        pre = struct.pack(">HBB", 0x0001, 2, 4) + b"kw" + b"\x01\x02\x03\x04" + struct.pack(">Q", i) + b"\0"
    elif i % 4 == 3:
        pre = struct.pack(">HBB", 0x0001, 0, 0) + struct.pack(">Q", i) + b"\0" + origin
    else:
        pre = origin
    b = backwards(f)
    # client 192.0.2.1:40000, Teredo relay 192.0.2.2:3544
    return o.eth(o.udp4(pre + ip, 40000, 3544, b), ET_IP4, b)


@need_ip
def k_mpls(o, i, f, et, ip, sec, usec):
    """Ethernet 0x8847/MPLS labels 100, 200 (bottom)/inner IP packet"""
    b = backwards(f)
    return o.eth(mpls([100, 200], ip), 0x8847, b)


def k_mpls_pw(o, i, f, sec, usec):
    """Ethernet 0x8847/MPLS label 300 (bottom)/inner Ethernet frame, no control word"""
    return o.eth(mpls([300], f), 0x8847, backwards(f))


def k_mpls_pw_cw(o, i, f, sec, usec):
    """Ethernet 0x8847/MPLS label 300 (bottom)/4-byte zero control word/inner Ethernet frame"""
    return o.eth(mpls([300], b"\0\0\0\0" + f), 0x8847, backwards(f))


@need_ip
def k_pppoe(o, i, f, et, ip, sec, usec):
    """Ethernet 0x8864/PPPoE session 0x1234/PPP 0x0021 or 0x0057/inner IP packet"""
    return o.eth(pppoe(0x1234, struct.pack(">H", ppp_proto(et)) + ip), 0x8864, backwards(f))


def k_vntag(o, i, f, sec, usec):
    """the inner frame with a VN-Tag (0x8926; dst vif 5, src vif 9) after its MAC addresses"""
    tag = struct.pack(">HHH", 0x8926, (0 << 15) | (0 << 14) | 5, (0 << 15) | (0 << 14) | (0 << 12) | 9)
    return f[:12] + tag + f[12:]


def k_etag(o, i, f, sec, usec):
    """the inner frame with an 802.1BR E-TAG (0x893F; E-CID base 100) after its MAC addresses"""
    tag = struct.pack(">HHHBB", 0x893F, 0, 100, 0, 0)
    return f[:12] + tag + f[12:]


def k_pbb(o, i, f, sec, usec):
    """802.1ah: outer B-DA/B-SA, an 802.1ad B-TAG (0x88A8, VLAN 200) on odd-numbered frames, I-TAG
    0x88E7 with I-SID 5000, then the whole inner Ethernet frame"""
    b = backwards(f)
    src, dst = (MAC[1], MAC[0]) if b else (MAC[0], MAC[1])
    btag = struct.pack(">HH", 0x88A8, 200) if i % 2 == 1 else b""
    return dst + src + btag + struct.pack(">HI", 0x88E7, 5000) + f


def nsh(next_proto, payload, spi=10, si=255):
    # Ver 0, O 0, U 0, TTL 63, Length 2 (words: no metadata), MD type 2, next protocol
    base = (0 << 30) | (0 << 29) | (0 << 28) | (63 << 22) | (2 << 16) | (0 << 12) | (2 << 8) | next_proto
    return struct.pack(">II", base, (spi << 8) | si) + payload


def k_nsh(o, i, f, sec, usec):
    """Ethernet 0x894F/NSH (MD type 2, no metadata, SPI 10, SI 255, next protocol 3)/inner Ethernet frame"""
    return o.eth(nsh(3, f), 0x894F, backwards(f))


@need_ip
def k_nsh_ip(o, i, f, et, ip, sec, usec):
    """Ethernet 0x894F/NSH (MD type 2, no metadata, next protocol 1 IPv4 or 2 IPv6)/inner IP packet"""
    return o.eth(nsh(1 if et == ET_IP4 else 2, ip), 0x894F, backwards(f))


@need_ip
def k_ppp(o, i, f, et, ip, sec, usec):
    """link type 9 (PPP): FF 03, protocol 0x0021/0x0057, inner IP packet"""
    return b"\xff\x03" + struct.pack(">H", ppp_proto(et)) + ip


@need_ip
def k_chdlc(o, i, f, et, ip, sec, usec):
    """link type 104 (Cisco HDLC): 0x0F 0x00, ethertype, inner IP packet"""
    return b"\x0f\x00" + struct.pack(">H", et) + ip


@need_ip
def k_ppp_ether(o, i, f, et, ip, sec, usec):
    """link type 51 (PPPoE without Ethernet): PPPoE session header 0x1234, PPP protocol, inner IP packet"""
    return pppoe(0x1234, struct.pack(">H", ppp_proto(et)) + ip)


def k_erspan3_vlan_vxlan(o, i, f, sec, usec):
    """ERSPAN III (as erspan3) carrying an Ethernet frame with an 802.1Q tag 30, carrying
    IPv4 198.51.100.1 <-> .2/UDP 4789/VXLAN VNI 9/the inner Ethernet frame"""
    b = backwards(f)
    macs = (bytes.fromhex("02001e000001"), bytes.fromhex("02001e000002"))
    addrs = (bytes([198, 51, 100, 1]), bytes([198, 51, 100, 2]))
    mid = o.udp4(vxlan_hdr(9) + f, flow_port(f), 4789, b, addrs)
    src, dst = (macs[1], macs[0]) if b else (macs[0], macs[1])
    mid = dst + src + struct.pack(">HHH", 0x8100, 30, ET_IP4) + mid
    return over_gre4(o, 0x22EB, erspan3(i % 2 == 1, mid, sec, usec) + mid, False, seq=o.next_seq("gre"))


@need_ip
def k_mpls_pppoe(o, i, f, et, ip, sec, usec):
    """Ethernet 0x8864/PPPoE session 0x1234/PPP 0x0281 (MPLS unicast)/MPLS label 500 (bottom)/inner IP"""
    return o.eth(pppoe(0x1234, struct.pack(">H", 0x0281) + mpls([500], ip)), 0x8864, backwards(f))


def deep(n):
    @need_ip
    def k(o, i, f, et, ip, sec, usec):
        b = backwards(f)
        pkt, proto = ip, et
        for layer in reversed(range(n)):  # innermost GRE first; layer 0 is the outermost
            addrs = (bytes([192, 0, 2, 1 + 2 * layer]), bytes([192, 0, 2, 2 + 2 * layer]))
            pkt = o.ipv4(o.gre(proto, pkt), 47, b, addrs)
            proto = ET_IP4
        return o.eth(pkt, ET_IP4, b)
    k.__doc__ = ("%d GRE-in-IPv4 layers: Ethernet/(IPv4/GRE) x %d/inner IP packet; the outermost layer "
                 "192.0.2.1 <-> .2, the next .3 <-> .4, and so on" % (n, n))
    return k


def k_gre_unknown(o, i, f, sec, usec):
    """Ethernet/IPv4/GRE protocol 0x9999 (unknown)/the inner Ethernet frame: not decodable"""
    return over_gre4(o, 0x9999, f, backwards(f))


def k_gre_lying(o, i, f, sec, usec):
    """damage: Ethernet/IPv4/GRE with the K flag, protocol 0x0800, and the IP packet ending 2 bytes
    into the 4-byte key (IP total length says so: the GRE header lies, the capture is whole)"""
    b = backwards(f)
    return o.eth(o.ipv4(struct.pack(">HH", 0x2000, ET_IP4) + struct.pack(">H", 1234 >> 16), 47, b), ET_IP4, b)


def k_vxlan_short(o, i, f, sec, usec):
    """damage: Ethernet/IPv4/UDP dst 4789 with only 4 bytes of payload (08 00 00 00: half a VXLAN header)"""
    b = backwards(f)
    return o.eth(o.udp4(b"\x08\0\0\0", flow_port(f), 4789, b), ET_IP4, b)


def k_mpls_nobos(o, i, f, sec, usec):
    """damage: Ethernet 0x8847 and 1 + i%20 MPLS labels (1000, 1001, ...), none with the bottom-of-stack
    bit, then the frame ends"""
    return o.eth(mpls([1000 + n for n in range(1 + i % 20)], b"", bos=False), 0x8847, backwards(f))


# kind: (wrapper, link type, tshark options, expectation)
# expectation: "same" (tshark's truth equals the unwrapped original's), "none" (nothing decodable),
# "too-deep" (tshark has no depth limit and decodes the original's names; a decoder that stops at 8
# layers of encapsulation rejects it)
KINDS = {
    "gre-ip": (k_gre_ip, 1, [], "same"),
    "gre-key": (k_gre_key, 1, [], "same"),
    "gre-teb": (k_gre_teb, 1, [], "same"),
    "gre-ip6": (k_gre_ip6, 1, [], "same"),
    "erspan1": (k_erspan1, 1, [], "same"),
    "erspan2": (k_erspan2, 1, [], "same"),
    "erspan3": (k_erspan3, 1, [], "same"),
    "vxlan": (k_vxlan, 1, [], "same"),
    "vxlan8472": (k_vxlan8472, 1, ["-d", "udp.port==8472,vxlan"], "same"),
    "vxlan-custom": (k_vxlan_custom, 1, ["-d", "udp.port==9999,vxlan"], "same"),
    "vxlan-ip6": (k_vxlan_ip6, 1, [], "same"),
    "geneve": (k_geneve, 1, [], "same"),
    "ipip": (k_ipip, 1, [], "same"),
    "ip6ip6": (k_ip6ip6, 1, [], "same"),
    "4in6": (k_ip6ip6, 1, [], "same"),
    "teredo": (k_teredo, 1, [], "same"),
    "mpls": (k_mpls, 1, [], "same"),
    "mpls-pw": (k_mpls_pw, 1, ["-d", "mpls.label==300,pwethnocw"], "same"),
    "mpls-pw-cw": (k_mpls_pw_cw, 1, ["-d", "mpls.label==300,pwethcw"], "same"),
    "pppoe": (k_pppoe, 1, [], "same"),
    "vntag": (k_vntag, 1, [], "same"),
    "etag": (k_etag, 1, [], "same"),
    "pbb": (k_pbb, 1, [], "same"),
    "nsh": (k_nsh, 1, [], "same"),
    "nsh-ip": (k_nsh_ip, 1, [], "same"),
    "ppp": (k_ppp, 9, [], "same"),
    "ppp-hdlc": (k_ppp, 50, [], "same"),
    "chdlc": (k_chdlc, 104, [], "same"),
    "ppp-ether": (k_ppp_ether, 51, [], "same"),
    "erspan3-vlan-vxlan": (k_erspan3_vlan_vxlan, 1, [], "same"),
    "mpls-pppoe": (k_mpls_pppoe, 1, [], "same"),
    "deep8": (deep(8), 1, [], "same"),
    "deep9": (deep(9), 1, [], "too-deep"),
    "gre-unknown": (k_gre_unknown, 1, [], "none"),
    "gre-lying": (k_gre_lying, 1, [], "none"),
    "vxlan-short": (k_vxlan_short, 1, [], "none"),
    "mpls-nobos": (k_mpls_nobos, 1, [], "none"),
}


def wrap(kind, src, dst):
    fn, linktype, _, _ = KINDS[kind]
    o = Out()
    out = []
    for i, (sec, usec, f, origlen) in enumerate(records(src)):
        w = fn(o, len(out), f, sec, usec)
        if w is None:
            continue
        out.append((sec, usec, w, len(w) + (origlen - len(f)) if kind not in DAMAGE else len(w)))
    if not out:
        sys.exit(f"encap.py: {src} has no frame that {kind} can carry"
                 + (" (Teredo carries IPv6 only: use captures/ipv6.pcap)" if kind == "teredo" else ""))
    write(dst, linktype, out)
    return len(out)


DAMAGE = ("gre-lying", "vxlan-short", "mpls-nobos")


# --- tshark's truth ------------------------------------------------------------------------------

CUTOFF = 1727582400  # 2024-09-29T04:00:00Z
FIELDS = ["frame.time_epoch", "frame.protocols", "ip.src", "ipv6.src", "dns.flags.response", "dns.qry.name",
          "tls.handshake.type", "tls.handshake.extensions_server_name", "http.request", "http.host", "quic.version"]


def norm(name):
    return name.lower().rstrip(".")


def rows(path, opts=()):
    cmd = ["tshark", "-2", "-r", path, "-o", "tcp.desegment_tcp_streams:TRUE", "-o", "tcp.reassemble_out_of_order:TRUE",
           *opts, "-T", "fields", "-E", "separator=\t", "-E", "occurrence=a", "-E", "aggregator=|"]
    for f in FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        yield dict(zip(FIELDS, line.split("\t")))


def innermost_src(r):
    """The source of the innermost IP header: the family of the last ip/ipv6 in frame.protocols."""
    layers = [p for p in r["frame.protocols"].split(":") if p in ("ip", "ipv6")]
    fam = layers[-1] if layers else "ip"
    v4 = [a for a in r["ip.src"].split("|") if a]
    v6 = [a for a in r["ipv6.src"].split("|") if a]
    pick = v6 if fam == "ipv6" else v4
    return (pick or v4 or v6 or [""])[-1]


def truth(path, opts=()):
    """Same rules as captures/truth.py, without VLAN tags and with the innermost IP source as client."""
    seen = collections.Counter()
    for r in rows(path, opts):
        client = innermost_src(r)
        after = float(r["frame.time_epoch"]) >= CUTOFF
        if r["dns.qry.name"] and r["dns.flags.response"]:
            for resp, name in zip(r["dns.flags.response"].split("|"), r["dns.qry.name"].split("|")):
                if resp in ("0", "False"):
                    seen[(client, norm(name), "dns", after)] += 1
        if r["tls.handshake.extensions_server_name"] and "1" in r["tls.handshake.type"].split("|"):
            via = "quic" if r["quic.version"] else "tls"
            seen[(client, norm(r["tls.handshake.extensions_server_name"].split("|")[0]), via, after)] += 1
        if r["http.request"] and r["http.host"]:
            for host in r["http.host"].split("|"):
                h = host.rsplit(":", 1)[0] if host.count(":") == 1 else host.strip("[]")
                seen[(client, norm(h), "http", after)] += 1
    return [{"client_ip": c, "domain": d, "via": v, "count": n, "after_cutoff": a}
            for (c, d, v, a), n in sorted(seen.items())]


def kind_of(path):
    base = os.path.basename(path)
    for suffix in (".pcap", ".pcapng"):
        if base.endswith(suffix):
            base = base[:-len(suffix)]
    best = None
    for k in KINDS:
        if (base == k or base.startswith(k + "-")) and (best is None or len(k) > len(best)):
            best = k
    return best


def check(out, orig, kind=None, extra=()):
    kind = kind or kind_of(out)
    if kind is None:
        sys.exit(f"encap.py: cannot tell the kind of {out} from its name; give --kind")
    _, _, opts, expect = KINDS[kind]
    got = truth(out, list(opts) + list(extra))
    want = truth(orig) if expect in ("same", "too-deep") else []
    if got == want:
        print(f"OK {out} ({kind}{', tshark ' + ' '.join(opts) if opts else ''}): "
              + (summary(got) if got else "no names, as expected"))
        return True
    print(f"DIFFERENT {out} ({kind}, tshark options {' '.join(opts) or 'none'}), expected "
          + ("no names" if expect == "none" else "the truth of " + orig))
    g = {json.dumps(x, sort_keys=True) for x in got}
    w = {json.dumps(x, sort_keys=True) for x in want}
    for x in sorted(w - g):
        print("  missing:", x)
    for x in sorted(g - w):
        print("  extra:  ", x)
    return False


def summary(t):
    c = collections.Counter()
    for x in t:
        c[x["via"]] += x["count"]
    return ", ".join(f"{v} {n}" for v, n in sorted(c.items())) + f" ({len(t)} distinct)"


def main():
    a = sys.argv[1:]
    if not a or a[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    cmd = a.pop(0)
    kind, extra, pos = None, [], []
    while a:
        x = a.pop(0)
        if x == "--kind":
            kind = a.pop(0)
        elif x == "--opt":
            extra.append(a.pop(0))
        else:
            pos.append(x)
    if cmd == "wrap":
        n = wrap(pos[0], pos[1], pos[2])
        print(f"wrote {pos[2]}: {n} frames ({pos[0]} of {pos[1]})")
        return 0
    if cmd == "check":
        return 0 if check(pos[0], pos[1], kind, extra) else 1
    if cmd == "truth":
        k = kind or kind_of(pos[0])
        opts = list(KINDS[k][2]) if k else []
        json.dump(truth(pos[0], opts + extra), sys.stdout, indent=1)
        print()
        return 0
    if cmd == "index":
        out = {}
        with open(pos[1]) as table:
            for line in table:
                if not line.strip() or line.startswith("#"):
                    continue
                name, k, src = line.split()[:3]
                fn, lt, opts, expect = KINDS[k]
                made_by = src.endswith(".sh")
                out[name] = {"kind": k, "source": src, "linktype": lt, "tshark_options": opts,
                             "expect": "decodes: a real recording, its names as tshark finds them" if made_by else
                                       {"same": "decodes to the names of " + src,
                                        "none": "nothing decodable: no names",
                                        "too-deep": "too deep to decode (tshark, with no limit, finds the names of " + src + ")"}[expect],
                             "about": " ".join((fn.__doc__ or "").split()),
                             "truth": truth(os.path.join(pos[0], name), opts)}
        json.dump(out, sys.stdout, indent=1)
        print()
        return 0
    if cmd == "kinds":
        for k, (fn, lt, opts, expect) in KINDS.items():
            print(f"{k}\tlinktype {lt}\ttshark {' '.join(opts) or '-'}\t{expect}\t{' '.join((fn.__doc__ or '').split())}")
        return 0
    sys.exit(f"encap.py: unknown command {cmd}")


if __name__ == "__main__":
    sys.exit(main())
