#!/usr/bin/env python3
"""Fleet rates on this machine, with a real nats-server (JetStream, file storage) on loopback:

1. observations per second one sensor publishes (each acknowledged by JetStream): the same
   `analyze` run with and without --publish, the difference in wall time (medians of --runs);
2. messages per second `fleet collect` ingests (its own "caught up" line, from --fresh);
3. as root: the delay from a packet on the wire of a `live` sensor to the host in the
   collector's report (--report-interval 1s), in a network namespace made here.

Prints one table; nothing is asserted. Needs nats-server (apt-get install nats-server), and for
3 iproute2 and tcpreplay.
"""
import argparse
import json
import os
import re
import shutil
import socket
import statistics
import struct
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "kavwatch")
DEMO = os.path.join(ROOT, "captures", "demo.pcapng")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def start_nats(d, port, prefix=()):
    conf = os.path.join(d, f"nats-{port}.conf")
    with open(conf, "w") as f:
        f.write(f'listen: 127.0.0.1:{port}\njetstream {{ store_dir: "{d}/js-{port}" }}\n')
    log = open(os.path.join(d, f"nats-{port}.log"), "w")
    p = subprocess.Popen([*prefix, "nats-server", "-c", conf], stdout=subprocess.DEVNULL, stderr=log)
    for _ in range(200):
        if "Server is ready" in open(log.name).read():
            return p
        time.sleep(0.05)
    raise SystemExit("nats-server did not start")


def timed(cmd):
    t = time.monotonic()
    o = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True)
    dt = time.monotonic() - t
    if o.returncode != 0:
        raise SystemExit(f"{cmd[:4]}: {o.stderr}")
    return dt, int(o.stderr.strip().splitlines()[-1]), o.stderr


def dns_frames(src, name):
    """A query and its answer (a query alone waits up to 10 s for one before it is reported)."""
    resolver = bytes([10, 9, 0, 1])
    qname = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
    out = []
    for flags, an, a, b, sport, dport in ((0x0100, 0, bytes(src), resolver, 40000, 53),
                                          (0x8180, 1, resolver, bytes(src), 53, 40000)):
        m = struct.pack(">HHHHHH", 0x1234, flags, 1, an, 0, 0) + qname
        if an:
            m += b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + bytes([203, 0, 113, 7])
        udp = struct.pack(">HHHH", sport, dport, 8 + len(m), 0) + m
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, a, b)
        out.append(b"\x02\0\0\0\0\x01\x02\0\0\0\0\x02\x08\x00" + ip + udp)
    return out


def pcap(path, frames):
    now = time.time()
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, frame in enumerate(frames):
            f.write(struct.pack("<IIII", int(now), i * 1000, len(frame), len(frame)) + frame)


def delay(d, runs):
    ns = f"kwbench-{os.getpid()}"
    sh = lambda *a: subprocess.run(a, check=True, capture_output=True)
    sh("ip", "netns", "add", ns)
    procs = []
    try:
        sh("ip", "-n", ns, "link", "add", "r0", "type", "veth", "peer", "name", "c0")
        for l in ("lo", "r0", "c0"):
            sh("ip", "-n", ns, "link", "set", l, "up")
        inns = ["ip", "netns", "exec", ns]
        procs.append(start_nats(d, 4222, inns))
        url = "nats://127.0.0.1:4222"
        sh(*inns, BIN, "fleet", "init", "--nats", url)
        report = os.path.join(d, "delay.json")
        procs.append(subprocess.Popen([*inns, BIN, "fleet", "collect", "--nats", url, "--report", report,
                                       "--report-interval", "1s", "--state-dir", f"{d}/cs"],
                                      stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen([*inns, BIN, "live", "-i", "c0", "--publish", url, "--state-dir", f"{d}/ls",
                                       "--sensor-name", "bench"], stderr=subprocess.DEVNULL))
        time.sleep(3)
        out = []
        for i in range(runs):
            ip = f"10.9.1.{i + 10}"
            cap = os.path.join(d, f"q{i}.pcap")
            pcap(cap, dns_frames([10, 9, 1, i + 10], "dnl-01.geo.kaspersky.com"))
            t = time.monotonic()
            sh(*inns, "tcpreplay", "-q", "-i", "r0", cap)
            while time.monotonic() - t < 20:
                try:
                    if any(h["ip"] == ip for h in json.load(open(report))["hosts"]):
                        break
                except (OSError, ValueError, KeyError):
                    pass
                time.sleep(0.01)
            out.append(time.monotonic() - t)
        return out
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        subprocess.run(["ip", "netns", "del", ns])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=400, help="demo.pcapng given this many times (38 observations each)")
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    if not shutil.which("nats-server"):
        raise SystemExit("apt-get install -y nats-server")
    d = tempfile.mkdtemp(prefix="kavwatch-fleet-bench-")
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    server = start_nats(d, port)
    try:
        subprocess.run([BIN, "fleet", "init", "--nats", url], check=True, capture_output=True)
        inputs = [DEMO] * a.copies
        plain, pub, rss_plain, rss_pub, obs = [], [], [], [], 0
        for r in range(a.runs):
            dt, rss, _ = timed([BIN, "analyze", "-q", "--state-dir", f"{d}/s", *inputs])
            plain.append(dt)
            rss_plain.append(rss)
            rep = f"{d}/pub{r}.json"
            dt, rss, _ = timed([BIN, "analyze", "-q", "--state-dir", f"{d}/s", "--sensor-name", f"bench{r}",
                                "--publish", url, "--report", rep, *inputs])
            pub.append(dt)
            rss_pub.append(rss)
            p = json.load(open(rep))["stats"]["publish"]
            obs = p["acked"]
            assert p["dropped"] == 0 and p["waiting"] == 0, p
        extra = statistics.median(pub) - statistics.median(plain)
        print(f"analyze of {a.copies} x demo.pcapng: {statistics.median(plain):.2f} s, "
              f"with --publish {statistics.median(pub):.2f} s ({obs} messages acknowledged): "
              f"{obs / max(extra, 1e-3):,.0f} observations/s published; peak RSS "
              f"{statistics.median(rss_plain) / 1024:.1f} -> {statistics.median(rss_pub) / 1024:.1f} MB")
        rates, rss_c = [], []
        for r in range(a.runs):
            _, rss, err = timed([BIN, "fleet", "collect", "--nats", url, "--report", f"{d}/fleet.json", "--fresh",
                                 "--state-dir", f"{d}/c", "--duration", "20s", "--report-interval", "10s"])
            m = re.search(r"caught up at stream sequence (\d+): (\d+) messages in ([\d.]+) s", err)
            rates.append(int(m.group(2)) / float(m.group(3)))
            rss_c.append(rss)
        size = os.path.getsize(f"{d}/c/fleet.checkpoint")
        print(f"fleet collect from the start of the stream ({m.group(1)} messages): "
              f"{statistics.median(rates):,.0f} messages/s ingested (runs: {', '.join(f'{x:,.0f}' for x in rates)}); "
              f"peak RSS {statistics.median(rss_c) / 1024:.1f} MB; checkpoint {size / 1e3:.0f} kB")
        if os.geteuid() == 0 and shutil.which("tcpreplay"):
            ds = delay(d, 5)
            print(f"packet on the wire -> host in the collector's report (--report-interval 1s): "
                  f"median {statistics.median(ds):.2f} s, max {max(ds):.2f} s ({len(ds)} packets)")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
