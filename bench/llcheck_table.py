"""The training log-likelihood of one epoch of the fp32 path against the bf16 tensor-core path,
per model, from bench_gpu's JSON lines (PCC_PRECISION=fp32,bf16): a markdown table on stdout.
Usage: python3 bench/llcheck_table.py LLCHECK.jsonl"""
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
by = {}
for r in rows:
    by.setdefault(r["model"], {})[r["precision"]] = r
print("| model | train mean LL fp32 | bf16 | relative difference | train s fp32 / bf16 | fwd s fp32 / bf16 |")
print("| --- | --- | --- | --- | --- | --- |")
for m, p in by.items():
    if "fp32" in p and "bf16" in p:
        a, b = p["fp32"], p["bf16"]
        d = abs(b["train_mean_ll"] - a["train_mean_ll"]) / abs(a["train_mean_ll"])
        print(f"| {m} | {a['train_mean_ll']:.3f} | {b['train_mean_ll']:.3f} | {100 * d:.4f}% | {a['train_s']:.2f} / {b['train_s']:.2f} | {a['fwd_s']:.2f} / {b['fwd_s']:.2f} |")
