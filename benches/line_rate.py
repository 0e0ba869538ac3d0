#!/usr/bin/env python3
"""End-to-end line-rate benchmark: kavwatch against the libpcap read floor.

Generates the reference workload with benches/workload/gen_bench_pcap.py (unless it exists),
then runs, alternating and --runs times each (file in the page cache):
    tcpdump -r FILE -w /dev/null
    kavwatch analyze FILE --workers 1 --events EV -q
    kavwatch analyze FILE --workers 2 --events EV -q
and prints packets/s, Gbit/s, the ratio to tcpdump and peak RSS (medians), and checks that
the (client, domain, via) detections equal the workload's truth file exactly.

    python3 benches/line_rate.py                       # 2 M packets, seed 1
    python3 benches/line_rate.py --packets 10000000    # memory check
    python3 benches/line_rate.py --dense               # same traffic squeezed into ~1 s
    python3 benches/line_rate.py --wrap vxlan,erspan3  # also the workload in VXLAN and in ERSPAN III
                                                       # (captures/encap.py), with the ratio to plain
Standard library only. Never run from the tests: timings are not asserted anywhere.
"""

import argparse
import collections
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
GEN = os.path.join(HERE, "workload", "gen_bench_pcap.py")
GNU_TIME = "/usr/bin/time"  # Debian package "time"


def run_once(cmd):
    """Wall seconds and peak RSS (MB) of one run of cmd (stdout discarded)."""
    # Peak RSS from GNU time (getrusage of a child forked from Python would count Python's
    # own pages until exec).
    t0 = time.perf_counter()
    p = subprocess.run([GNU_TIME, "-f", "%M", "--"] + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t0
    lines = p.stderr.decode(errors="replace").strip().splitlines()
    err = "\n".join(lines[:-1])
    code = p.returncode
    if code not in (0,):
        sys.exit(f"{' '.join(cmd)} exited {code}: {err.strip()}")
    return wall, int(lines[-1]) / 1024.0


def detections(events_path):
    found = collections.Counter()
    with open(events_path) as f:
        for line in f:
            e = json.loads(line)
            found[(e["host"], e["domain"], e["event_type"])] += 1
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packets", type=int, default=2_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dense", action="store_true", help="--start 2024-10-01T12:00:00 --end 2024-10-01T12:00:01")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default=os.environ.get("KAVWATCH_BENCH_DIR", "/tmp/kavwatch-bench"))
    ap.add_argument("--rules", help="rules file for kavwatch (default: shipped)")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--wrap", default="", help="also run on the workload wrapped in these captures/encap.py kinds")
    args = ap.parse_args()

    os.makedirs(args.dir, exist_ok=True)
    tag = f"{args.packets}-s{args.seed}" + ("-dense" if args.dense else "")
    pcap = os.path.join(args.dir, f"bench-{tag}.pcap")
    if not (os.path.exists(pcap) and os.path.exists(pcap + ".truth.json")):
        gen = [sys.executable, GEN, "--packets", str(args.packets), "--seed", str(args.seed), "--out", pcap]
        if args.dense:
            gen += ["--start", "2024-10-01T12:00:00", "--end", "2024-10-01T12:00:01"]
        print("generating:", " ".join(gen), flush=True)
        subprocess.run(gen, check=True)
    truth = json.load(open(pcap + ".truth.json"))
    packets = truth["stats"]["packets"]
    size_bytes = truth["stats"].get("bytes") or os.path.getsize(pcap)

    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    kav = os.path.join(ROOT, "target", "release", "kavwatch")
    tcpdump = shutil.which("tcpdump")
    events = os.path.join(args.dir, f"events-{tag}.json")
    inputs = {"": pcap}
    for kind in filter(None, args.wrap.split(",")):
        wrapped = os.path.join(args.dir, f"bench-{tag}-{kind}.pcap")
        if not os.path.exists(wrapped):
            subprocess.run([sys.executable, os.path.join(ROOT, "captures", "encap.py"), "wrap", kind, pcap, wrapped], check=True)
        inputs[f" ({kind})"] = wrapped
    cmds = {}
    events_of = {}
    if tcpdump:
        cmds["tcpdump -r FILE -w /dev/null"] = [tcpdump, "-r", pcap, "-w", "/dev/null"]
    for suffix, path in inputs.items():
        for w in args.workers.split(","):
            ev = events if not suffix else os.path.join(args.dir, f"events-{tag}-{suffix.strip(' ()')}.json")
            c = [kav, "analyze", path, "--workers", w, "--events", ev, "-q"]
            if args.rules:
                c += ["--rules", args.rules]
            cmds[f"kavwatch --workers {w}{suffix}"] = c
            events_of[suffix] = ev

    # Warm the page cache, then alternate the commands run by run.
    for path in inputs.values():
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass
    results = collections.defaultdict(list)
    for _ in range(args.runs):
        for name, cmd in cmds.items():
            results[name].append(run_once(cmd))

    print(f"\nworkload: {pcap}: {packets} packets, {size_bytes} bytes, {os.cpu_count()} cores, {args.runs} runs each (medians)")
    print(f"{'command':32} {'wall s':>8} {'Mpps':>7} {'Gbit/s':>7} {'ratio':>6} {'peak RSS MB':>12}")
    floor = None
    plain = {}
    for name, rs in results.items():
        wall = statistics.median(r[0] for r in rs)
        rss = statistics.median(r[1] for r in rs)
        mpps = packets / wall / 1e6
        gbps = size_bytes * 8 / wall / 1e9
        if name.startswith("tcpdump"):
            floor = mpps
        ratio = f"{mpps / floor:.2f}" if floor else "-"
        base = name.split(" (")[0]
        vs_plain = ""
        if " (" in name and base in plain:
            vs_plain = f"  {mpps / plain[base]:.2f}x the plain workload's rate"
        else:
            plain[name] = mpps
        print(f"{name:40} {wall:8.3f} {mpps:7.2f} {gbps:7.2f} {ratio:>6} {rss:12.1f}{vs_plain}")

    # Detections: the last kavwatch run's events against the truth file (wrapped or not).
    want = collections.Counter({(r["client_ip"], r["domain"], r["via"]): r["count"] for r in truth["kaspersky"]})
    bad = 0
    for suffix, ev in events_of.items():
        bad |= check_detections(want, detections(ev), suffix or " (plain)")
    return bad


def check_detections(want, got, label):
    missing = set(want) - set(got)
    extra = set(got) - set(want)
    count_diff = {k: (want[k], got[k]) for k in set(want) & set(got) if want[k] != got[k]}
    print(f"\ndetections{label}: truth {len(want)} (client, domain, via) with {sum(want.values())} observations; "
          f"found {len(got)} with {sum(got.values())}; missing {len(missing)}, extra {len(extra)}, count differences {len(count_diff)}")
    for k in sorted(missing)[:10]:
        print("  missing", k)
    for k in sorted(extra)[:10]:
        print("  extra  ", k)
    for k, v in sorted(count_diff.items())[:10]:
        print("  count  ", k, "truth", v[0], "found", v[1])
    return 0 if not (missing or extra) else 1


if __name__ == "__main__":
    sys.exit(main())
