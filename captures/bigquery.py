#!/usr/bin/env python3
"""Sends one DNS A query over UDP, made larger than the path MTU with a 1400-byte EDNS
option (code 65001), so the kernel fragments it; waits briefly for the answer.

    bigquery.py SERVER NAME
"""
import random
import socket
import struct
import sys

server, name = sys.argv[1], sys.argv[2]
qid = random.randrange(65536)
q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 1)
q += b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
opt = struct.pack(">HH", 65001, 1400) + bytes(1400)
q += b"\0" + struct.pack(">HHIH", 41, 4096, 0, len(opt)) + opt
family = socket.AF_INET6 if ":" in server else socket.AF_INET
s = socket.socket(family, socket.SOCK_DGRAM)
s.settimeout(2)
s.sendto(q, (server, 53))
try:
    s.recv(4096)
except OSError:
    pass
