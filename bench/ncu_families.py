"""Kernel time by family from `ncu --csv --metrics gpu__time_duration.sum[,TENSOR]` (one row per
launch and metric on stdin): the shape suffixes (`_bs512_w512`, ...) are dropped, so e.g. every
tensor-core parameter flow kernel counts as `sum_bwd_bf16_pflow`. Prints a markdown table, largest
first. When the launches also carry `sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_elapsed`
(the share of the tensor pipes' peak issue rate a kernel used while it ran), the table adds its
time-weighted mean per family and the TFLOP/s it implies against `--peak` (dense bf16 TFLOP/s of
the card; 989 for the H100 SXM, the same for the H200)."""
import argparse
import csv
import re
import sys
from collections import defaultdict

TENSOR = "sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_elapsed"
ap = argparse.ArgumentParser()
ap.add_argument("--peak", type=float, default=989.0)
args = ap.parse_args()

launches = defaultdict(dict)  # (id, kernel) -> metric -> value
rows = [l for l in sys.stdin if l.startswith('"')]
for r in csv.DictReader(rows):
    key = (r.get("ID", ""), r["Kernel Name"])
    v = float(r["Metric Value"].replace(",", ""))
    if r.get("Metric Name") == "gpu__time_duration.sum":
        unit = r.get("Metric Unit", "ns")
        v *= {"ns": 1e-6, "usecond": 1e-3, "us": 1e-3, "msecond": 1.0, "ms": 1.0, "nsecond": 1e-6}.get(unit, 1e-6)
        launches[key]["ms"] = v
    elif r.get("Metric Name") == TENSOR:
        launches[key]["tc"] = v

total, calls, tc = defaultdict(float), defaultdict(int), defaultdict(float)
for (_, kernel), m in launches.items():
    if "ms" not in m:
        continue
    name = re.sub(r"_(bs|w|p)\d+", "", kernel.split("(")[0])
    total[name] += m["ms"]
    calls[name] += 1
    tc[name] += m.get("tc", 0.0) * m["ms"]
s = sum(total.values())
has_tc = any("tc" in m for m in launches.values())
head = "| kernel family | launches | ms | share |" + (" tensor pipe % of peak | ≈ TFLOP/s |" if has_tc else "")
print(head)
print("|" + " --- |" * (head.count("|") - 1))
for k, v in sorted(total.items(), key=lambda kv: -kv[1]):
    line = f"| {k} | {calls[k]} | {v:.2f} | {100 * v / s:.1f}% |"
    if has_tc:
        pct = tc[k] / v if v else 0.0
        line += f" {pct:.1f} | {pct / 100 * args.peak:.0f} |"
    print(line)
print(f"| all | {sum(calls.values())} | {s:.2f} | 100% |" + (f" {sum(tc.values()) / s:.1f} | {sum(tc.values()) / s / 100 * args.peak:.0f} |" if has_tc and s else ""))
