"""Kernel time by family from `ncu --csv --metrics gpu__time_duration.sum` (one row per launch on
stdin): the shape suffixes (`_bs512_w512`, ...) are dropped, so e.g. every tensor-core parameter
flow kernel counts as `sum_bwd_bf16_pflow`. Prints a markdown table, largest first."""
import csv
import re
import sys
from collections import defaultdict

total = defaultdict(float)
calls = defaultdict(int)
rows = [l for l in sys.stdin if l.startswith('"')]
for r in csv.DictReader(rows):
    if r.get("Metric Name") != "gpu__time_duration.sum":
        continue
    name = re.sub(r"_(bs|w|p)\d+", "", r["Kernel Name"].split("(")[0])
    v = float(r["Metric Value"].replace(",", ""))
    unit = r.get("Metric Unit", "ns")
    v *= {"ns": 1e-6, "usecond": 1e-3, "us": 1e-3, "msecond": 1.0, "ms": 1.0, "nsecond": 1e-6}.get(unit, 1e-6)
    total[name] += v
    calls[name] += 1
s = sum(total.values())
print(f"| kernel family | launches | ms | share |\n| --- | --- | --- | --- |")
for k, v in sorted(total.items(), key=lambda kv: -kv[1]):
    print(f"| {k} | {calls[k]} | {v:.2f} | {100 * v / s:.1f}% |")
print(f"| all | {sum(calls.values())} | {s:.2f} | 100% |")
