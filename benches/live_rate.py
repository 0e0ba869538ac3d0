#!/usr/bin/env python3
"""Live capture benchmark (not a test): the reference workload replayed with tcpreplay onto a
veth pair in a network namespace made here, at rising rates, for each engine and worker count.

For each run it reads kavwatch's final report: packets the kernel handed over, kernel/ring
drops, detections; and the CPU seconds kavwatch used (user + system, from /proc). Prints a
Markdown table. Needs root, tcpreplay and a release build.

    python3 benches/live_rate.py [--packets 200000] [--rates 50000,100000,200000,400000,top]
    python3 benches/live_rate.py --soak 5 --packets 1000000   # one live run, the file replayed 5 times: RSS per loop
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "kavwatch")
GEN = os.path.join(ROOT, "benches", "workload", "gen_bench_pcap.py")
NS = f"kwbench-{os.getpid()}"


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw)


def in_ns(*args):
    return ["ip", "netns", "exec", NS, *args]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_run(pcap, truth_total, engine, workers, rate, tmp):
    report = os.path.join(tmp, f"r-{engine}-{workers}-{rate}.json")
    err = open(os.path.join(tmp, "live.err"), "w")
    live = subprocess.Popen(
        in_ns(BIN, "live", "-i", "c0", "--engine", engine, "--workers", str(workers), "--report", report,
              "--stats-interval", "600s", "--report-interval", "600s"),
        stderr=err, stdout=subprocess.DEVNULL)
    deadline = time.time() + 10
    while "live on" not in open(err.name).read():
        if time.time() > deadline:
            sys.exit("kavwatch live did not start: " + open(err.name).read())
        time.sleep(0.05)
    # Count from here: the CPU kavwatch spends waiting is part of the price.
    cpu0 = cpu_seconds(live.pid)
    speed = ["--topspeed"] if rate == "top" else ["--pps", str(rate)]
    t0 = time.time()
    out = sh(*in_ns("tcpreplay", "-q", "-K", "-i", "r0", *speed, pcap)).stdout
    wall = time.time() - t0
    time.sleep(1.0)
    cpu = cpu_seconds(live.pid) - cpu0
    live.terminate()
    live.wait(timeout=60)
    r = json.load(open(report))
    c0 = r["stats"]["capture"]["interfaces"]["c0"]
    sent = next((l for l in out.splitlines() if "Rated:" in l), "").strip()
    pps_sent = float(sent.split("Rated:")[1].split(",")[2].split()[0]) if sent else 0
    found = r["stats"]["observations"]
    return {
        "engine": engine, "workers": workers, "rate": rate, "sent_pps": pps_sent, "wall": wall,
        "packets": c0["packets"], "drops": c0["drops"], "cpu": cpu, "found": found, "truth": truth_total,
    }


def rss_kb(pid, key):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key):
            return int(line.split()[1])
    return 0


def soak(pcap, loops, tmp):
    """One AF_PACKET live run; the file replayed `loops` times at top speed; RSS after each loop."""
    report = os.path.join(tmp, "soak.json")
    err = open(os.path.join(tmp, "soak.err"), "w")
    live = subprocess.Popen(in_ns(BIN, "live", "-i", "c0", "--workers", "2", "--report", report,
                                  "--stats-interval", "600s"), stderr=err, stdout=subprocess.DEVNULL)
    while "live on" not in open(err.name).read():
        time.sleep(0.05)
    print("| loop | packets replayed | VmRSS MB | VmHWM MB |")
    print("|---|---|---|---|")
    for i in range(1, loops + 1):
        sh(*in_ns("tcpreplay", "-q", "-K", "--topspeed", "-i", "r0", pcap))
        time.sleep(3)  # flows idle for 60-120 s expire later; this shows the tables at their fullest
        print(f"| {i} | {i * a_packets} | {rss_kb(live.pid, 'VmRSS') / 1024:.1f} | {rss_kb(live.pid, 'VmHWM') / 1024:.1f} |",
              flush=True)
    live.terminate()
    live.wait(timeout=60)
    r = json.load(open(report))
    st = r["stats"]
    print(f"\nflows_evicted {st['flows_evicted']}, flows_expired {st['flows_expired']}, "
          f"drops {st['capture']['interfaces']['c0']['drops']}, observations {st['observations']}")


a_packets = 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--packets", type=int, default=200_000)
    ap.add_argument("--rates", default="50000,100000,200000,400000,top")
    ap.add_argument("--engines", default="afpacket,pcap")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--soak", type=int, default=0, help="replay the file this many times into one live run")
    a = ap.parse_args()
    global a_packets
    a_packets = a.packets
    tmp = tempfile.mkdtemp(prefix="kavwatch-live-bench-")
    pcap = os.path.join(tmp, "bench.pcap")
    sh(sys.executable, GEN, "--packets", str(a.packets), "--seed", "1", "--out", pcap)
    truth = json.load(open(pcap + ".truth.json"))
    truth_total = sum(x.get("count", 1) for x in truth["kaspersky"])
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    sh("ip", "netns", "add", NS)
    try:
        sh("ip", "-n", NS, "link", "add", "r0", "type", "veth", "peer", "name", "c0")
        sh(*in_ns("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"))
        for l in ("lo", "r0", "c0"):
            sh("ip", "-n", NS, "link", "set", l, "up")
        print(f"{a.packets} packets, {os.path.getsize(pcap) / 1e6:.0f} MB; {truth_total} observations in the truth file\n")
        if a.soak:
            soak(pcap, a.soak, tmp)
            return
        print("| engine | workers | asked | sent (pps) | received | drops | kavwatch CPU s | CPU % of wall | observations |")
        print("|---|---|---|---|---|---|---|---|---|")
        for engine in a.engines.split(","):
            for w in [int(x) for x in a.workers.split(",")]:
                for rate in a.rates.split(","):
                    rate = rate if rate == "top" else int(rate)
                    x = one_run(pcap, truth_total, engine, w, rate, tmp)
                    print(f"| {engine} | {w} | {rate} | {x['sent_pps']:.0f} | {x['packets']} | {x['drops']} | "
                          f"{x['cpu']:.2f} | {100 * x['cpu'] / max(x['wall'], 1e-3):.0f} | {x['found']} |", flush=True)
    finally:
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)
        for f in os.listdir(tmp):
            os.remove(os.path.join(tmp, f))
        os.rmdir(tmp)


if __name__ == "__main__":
    main()
