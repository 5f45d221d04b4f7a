"""Launch-size profile from `ncu --csv --metrics gpu__time_duration.sum,launch__grid_size`
(stdin): per kernel family, how much of its time went to launches with fewer CUDA blocks than
the card has SMs (`--sms`, 132 on the H100 SXM and H200) or fewer than 4 per SM. Small launches
are latency-bound whatever the kernel does: a depth with few sum blocks leaves most SMs idle."""
import argparse
import csv
import re
import sys
from collections import defaultdict

ap = argparse.ArgumentParser()
ap.add_argument("--sms", type=int, default=132)
args = ap.parse_args()
launch = defaultdict(dict)
for r in csv.DictReader(l for l in sys.stdin if l.startswith('"')):
    key = (r.get("ID", ""), r["Kernel Name"])
    v = float(r["Metric Value"].replace(",", ""))
    name = r.get("Metric Name")
    if name == "gpu__time_duration.sum":
        unit = r.get("Metric Unit", "ns")
        launch[key]["ms"] = v * {"ns": 1e-6, "nsecond": 1e-6, "usecond": 1e-3, "us": 1e-3, "msecond": 1.0, "ms": 1.0}.get(unit, 1e-6)
    elif name == "launch__grid_size":
        launch[key]["grid"] = v
fam = defaultdict(lambda: [0.0, 0.0, 0.0, 0])  # total ms, ms below 1 wave, ms below 4 blocks/SM, launches
for (_, kernel), m in launch.items():
    if "ms" not in m or "grid" not in m:
        continue
    f = fam[re.sub(r"_(bs|w|p)\d+", "", kernel.split("(")[0])]
    f[0] += m["ms"]
    f[3] += 1
    if m["grid"] < args.sms:
        f[1] += m["ms"]
    if m["grid"] < 4 * args.sms:
        f[2] += m["ms"]
print(f"| kernel family | launches | ms | ms in launches < {args.sms} blocks | ms in launches < {4 * args.sms} blocks |")
print("| --- | --- | --- | --- | --- |")
for k, (t, a, b, n) in sorted(fam.items(), key=lambda kv: -kv[1][0]):
    print(f"| {k} | {n} | {t:.2f} | {a:.2f} ({100 * a / t:.0f}%) | {b:.2f} ({100 * b / t:.0f}%) |")
