#!/usr/bin/env python3
"""Writes a rules directory with the shipped rules plus a second rules file of N extra names
(two rules reading name lists with `patterns_file`, exact and suffix, half the names each; none
matches the workload), for checking that matching cost does not grow with the number of names:

    python3 benches/make_big_rules.py /tmp/rules-100k 100000
    python3 benches/line_rate.py --rules /tmp/rules-100k
"""
import os
import shutil
import sys

out, n = sys.argv[1], int(sys.argv[2])
os.makedirs(out, exist_ok=True)
here = os.path.dirname(os.path.abspath(__file__))
shutil.copy(os.path.join(here, "..", "rules", "kaspersky.toml"), os.path.join(out, "a-kaspersky.toml"))
with open(os.path.join(out, "b-bulk.toml"), "w") as f:
    f.write('[vendor]\nid = "bulk"\nname = "Bulk test names"\ncutoff = "2024-09-29T04:00:00Z"\n')
    for kind, start in (("exact", 0), ("suffix", 1)):
        f.write(f'\n[[rule]]\nid = "bulk-{kind}"\ncategory = "other"\nmatch = "{kind}"\npatterns_file = "bulk-{kind}.txt"\n')
        with open(os.path.join(out, f"bulk-{kind}.txt"), "w") as names:
            for i in range(start, n, 2):
                names.write(f"host{i}.zone{i % 997}.bulk-test.example\n")
print(f"{out}: shipped rules + {n} names")
