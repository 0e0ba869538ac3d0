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
    python3 benches/line_rate.py --kaspersky-rate 1.0 --packets 20000000 --workers 2 --runs 1
                                                       # dense: every connection Kaspersky's; peak RSS
                                                       # against the observation count
    python3 benches/line_rate.py --split 4             # also the workload cut into a directory of 4
                                                       # files, against tcpdump reading them in turn
    python3 benches/line_rate.py --stages              # each stage's rate on one thread, and the
                                                       # estimate for 4, 8 and 16 cores
Standard library only. Never run from the tests: timings are not asserted anywhere.
"""

import argparse
import collections
import json
import math
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
    ap.add_argument("--decoders", default="", help="also these --decoders values (with each --workers)")
    ap.add_argument("--kaspersky-rate", type=float, help="the generator's --kaspersky-rate (1.0: dense)")
    ap.add_argument("--split", type=int, default=0, help="also the workload as a directory of this many files")
    ap.add_argument("--stages", action="store_true", help="per-stage rates and the scaling estimate")
    ap.add_argument("--wrap", default="", help="also run on the workload wrapped in these captures/encap.py kinds")
    args = ap.parse_args()

    os.makedirs(args.dir, exist_ok=True)
    tag = f"{args.packets}-s{args.seed}" + ("-dense" if args.dense else "")
    if args.kaspersky_rate is not None:
        tag += f"-k{args.kaspersky_rate:g}"
    pcap = os.path.join(args.dir, f"bench-{tag}.pcap")
    if not (os.path.exists(pcap) and os.path.exists(pcap + ".truth.json")):
        gen = [sys.executable, GEN, "--packets", str(args.packets), "--seed", str(args.seed), "--out", pcap]
        if args.dense:
            gen += ["--start", "2024-10-01T12:00:00", "--end", "2024-10-01T12:00:01"]
        if args.kaspersky_rate is not None:
            gen += ["--kaspersky-rate", str(args.kaspersky_rate), "--jobs", str(os.cpu_count() or 1)]
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
    if args.split:
        split_dir = os.path.join(args.dir, f"bench-{tag}-split{args.split}")
        if not os.path.isdir(split_dir):
            split_pcap(pcap, split_dir, args.split)
        inputs[f" (dir of {args.split})"] = split_dir
        if tcpdump:
            parts = " ".join(sorted(os.path.join(split_dir, f) for f in os.listdir(split_dir)))
            cmds[f"tcpdump on the {args.split} files in turn (dir of {args.split})"] = [
                "sh", "-c", f"for f in {parts}; do {tcpdump} -r $f -w /dev/null 2>/dev/null; done"]
    for suffix, path in inputs.items():
        for w in args.workers.split(","):
            for dec in [""] + [d for d in args.decoders.split(",") if d]:
                ev = events if not suffix else os.path.join(args.dir, f"events-{tag}-{suffix.strip(' ()').replace(' ', '-')}.json")
                c = [kav, "analyze", path, "--workers", w, "--events", ev, "-q"]
                if dec:
                    c += ["--decoders", dec]
                if args.rules:
                    c += ["--rules", args.rules]
                cmds[f"kavwatch --workers {w}{' --decoders ' + dec if dec else ''}{suffix}"] = c
                events_of[suffix] = ev

    # Warm the page cache, then alternate the commands run by run. Each file is first dropped
    # from the cache and read back, so that every input is cached as a file read from disk is
    # (large folios by readahead); a file just written by this script (the split and wrapped
    # ones) is otherwise cached in the small pieces it was written in, which makes mapping it
    # measurably slower than the others.
    for path in inputs.values():
        for p in [os.path.join(path, f) for f in os.listdir(path)] if os.path.isdir(path) else [path]:
            with open(p, "rb") as f:
                os.fsync(f.fileno())
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
                while f.read(1 << 24):
                    pass
    results = collections.defaultdict(list)
    for _ in range(args.runs):
        for name, cmd in cmds.items():
            results[name].append(run_once(cmd))

    print(f"\nworkload: {pcap}: {packets} packets, {size_bytes} bytes, {os.cpu_count()} cores, {args.runs} runs each (medians)")
    print(f"{'command':52} {'wall s':>8} {'Mpps':>7} {'Gbit/s':>7} {'ratio':>6} {'peak RSS MB':>12} {'observations':>12}")
    floor = {}
    plain = {}
    for name, rs in results.items():
        wall = statistics.median(r[0] for r in rs)
        rss = statistics.median(r[1] for r in rs)
        mpps = packets / wall / 1e6
        gbps = size_bytes * 8 / wall / 1e9
        suffix = name[name.index(" ("):] if " (" in name else ""
        if name.startswith("tcpdump"):
            floor[suffix] = mpps
        ratio = f"{mpps / floor[suffix]:.2f}" if suffix in floor else "-"
        base = name.split(" (")[0]
        vs_plain = ""
        if " (" in name and base in plain:
            vs_plain = f"  {mpps / plain[base]:.2f}x the plain workload's rate"
        elif not name.startswith("tcpdump"):
            plain[name] = mpps
        obs = "-"
        if name.startswith("kavwatch"):
            with open(cmds[name][cmds[name].index("--events") + 1]) as f:
                obs = sum(1 for _ in f)
        print(f"{name:52} {wall:8.3f} {mpps:7.2f} {gbps:7.2f} {ratio:>6} {rss:12.1f} {obs:>12}")

    if args.stages:
        stages(pcap, args.rules)

    # Detections: the last kavwatch run's events against the truth file (wrapped or not).
    want = collections.Counter({(r["client_ip"], r["domain"], r["via"]): r["count"] for r in truth["kaspersky"]})
    bad = 0
    for suffix, ev in events_of.items():
        bad |= check_detections(want, detections(ev), suffix or " (plain)")
    return bad


def split_pcap(pcap, out_dir, n):
    """Cuts a classic pcap into n files of about equal packet counts (rotated captures)."""
    os.makedirs(out_dir)
    with open(pcap, "rb") as f:
        header = f.read(24)
        big = header[:4] == b"\xa1\xb2\xc3\xd4"
        records = []
        while True:
            h = f.read(16)
            if len(h) < 16:
                break
            caplen = int.from_bytes(h[8:12], "big" if big else "little")
            records.append(h + f.read(caplen))
    per = (len(records) + n - 1) // n
    for i in range(n):
        with open(os.path.join(out_dir, f"part-{i:02}.pcap"), "wb") as out:
            out.write(header)
            out.writelines(records[i * per:(i + 1) * per])


def stages(pcap, rules):
    """Each stage's rate on one thread (benches/stages.rs), and what they give on more cores."""
    cmd = ["cargo", "bench", "--quiet", "--bench", "stages", "--", pcap] + ([rules] if rules else [])
    runs = [json.loads(subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout) for _ in range(3)]
    t = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    packets = t["packets"]
    rate = {s: packets / t[f"{s}_s"] / 1e6 for s in ("framing", "decoding", "sequencing", "worker")}
    print(f"\nstages on one thread (median of 3; {packets} packets, {t['passed_on']} passed on to workers, "
          f"{t['observations']} observations):")
    for s, r in rate.items():
        print(f"  {s:11} {r:8.2f} Mpps   {1000 / r:6.1f} ns per packet")
    print(f"  {'sink':11} {t['sink_s']:8.3f} s for {t['observations']} observations")
    # On c cores, one reading thread (--decoders 1) cannot go past framing + decoding on one
    # core; split (--decoders 2 or more), framing and sequencing are one thread each and cannot
    # go past their own rates. Either way all stages together cannot use more than c cores.
    # Cross-core costs are not in the model: compare the 2-core row with the measured rates.
    cost = {s: 1 / r for s, r in rate.items()}  # microseconds per packet
    total = sum(cost.values())
    print("\nestimate for c cores (Mpps): one reading thread | split into stages; the limit of the better one")
    for cores in (2, 4, 8, 16):
        inline = {"reading thread": 1 / (cost["framing"] + cost["decoding"]), "cores": cores / total}
        split = {"framing": rate["framing"], "sequencing": rate["sequencing"], "cores": cores / total}
        best_inline, best_split = min(inline.values()), min(split.values())
        shape, limits = ("split", split) if best_split > best_inline else ("one reading thread", inline)
        mpps = max(best_inline, best_split)
        limit = min(limits, key=limits.get)
        dec = 1 if shape != "split" else max(2, math.ceil(mpps * cost["decoding"]))
        wrk = max(1, math.ceil(mpps * cost["worker"]))
        print(f"  {cores:2} cores: {best_inline:6.2f} | {best_split:6.2f}   {shape}, limit: {limit:15} "
              f"--decoders {dec} --workers {wrk}")


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
