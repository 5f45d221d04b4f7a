"""Kernel time by family from `ncu --csv --metrics gpu__time_duration.sum[,TENSOR]` (one row per
launch and metric on stdin): the shape suffixes (`_bs512_w512`, ...) are dropped, so e.g. every
tensor-core parameter flow kernel counts as `sum_bwd_bf16_pflow`. Prints a markdown table, largest
first. When the launches also carry `sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_elapsed`
(the share of the tensor pipes' peak issue rate a kernel used while it ran), the table adds its
time-weighted mean per family and the TFLOP/s it implies against `--peak` (dense bf16 TFLOP/s of
the card; 989 for the H100 SXM, the same for the H200). When they carry `dram__bytes.sum`, it adds
the DRAM traffic per family and its rate (GB/s; ~3,350 is the H100 SXM's peak, ~4,800 the
H200's): a family near the peak is memory-bound, one far below both peaks is neither."""
import argparse
import csv
import re
import sys
from collections import defaultdict

TENSOR = "sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_elapsed"
DRAM = "dram__bytes.sum"
BYTES = {"byte": 1.0, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9, "KB": 1e3, "MB": 1e6, "GB": 1e9}
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
    elif r.get("Metric Name") == DRAM:
        launches[key]["bytes"] = v * BYTES.get(r.get("Metric Unit", "byte"), 1.0)

total, calls, tc, dram = defaultdict(float), defaultdict(int), defaultdict(float), defaultdict(float)
for (_, kernel), m in launches.items():
    if "ms" not in m:
        continue
    name = re.sub(r"_(bs|w|p)\d+", "", kernel.split("(")[0])
    total[name] += m["ms"]
    calls[name] += 1
    tc[name] += m.get("tc", 0.0) * m["ms"]
    dram[name] += m.get("bytes", 0.0)
s = sum(total.values())
has_tc = any("tc" in m for m in launches.values())
has_dram = any("bytes" in m for m in launches.values())
head = "| kernel family | launches | ms | share |" + (" tensor pipe % of peak | ≈ TFLOP/s |" if has_tc else "") + (" DRAM MB | GB/s |" if has_dram else "")
print(head)
print("|" + " --- |" * (head.count("|") - 1))
for k, v in sorted(total.items(), key=lambda kv: -kv[1]):
    line = f"| {k} | {calls[k]} | {v:.2f} | {100 * v / s:.1f}% |"
    if has_tc:
        pct = tc[k] / v if v else 0.0
        line += f" {pct:.1f} | {pct / 100 * args.peak:.0f} |"
    if has_dram:
        line += f" {dram[k] / 1e6:.0f} | {dram[k] / 1e6 / v if v else 0.0:.0f} |"
    print(line)
tail = f" {sum(tc.values()) / s:.1f} | {sum(tc.values()) / s / 100 * args.peak:.0f} |" if has_tc and s else ""
tail += f" {sum(dram.values()) / 1e6:.0f} | {sum(dram.values()) / 1e6 / s:.0f} |" if has_dram and s else ""
print(f"| all | {sum(calls.values())} | {s:.2f} | 100% |" + tail)
