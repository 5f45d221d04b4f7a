"""PyJuice's side of the benchmark protocol (../shared/bench/README.md), on circuits rebuilt from
pcc's structure files so both systems run identical structures.

Usage: python3 bench/pyjuice_bench.py MNIST_IMAGES OUT_DIR hclt128,pd128
(OUT_DIR holds MODEL/structure.json written by examples/bench_gpu.rs)
"""
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from pyjuice_rebuild import load, rebuild  # noqa: E402


def images(path):
    with open(path, "rb") as f:
        raw = f.read()
    n, r, c = (int.from_bytes(raw[i:i + 4], "big") for i in (4, 8, 12))
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, r * c)


def main():
    import pyjuice as juice
    imgs, out, names = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
    x = torch.from_numpy(np.tile(images(imgs), (6, 1))[:59904].astype(np.int64)).cuda()
    batch = int(os.environ.get("PJ_BATCH", "512"))
    for name in names:
        t = time.time()
        root = rebuild(load(os.path.join(out, name, "structure.json")))
        pc = juice.compile(root)
        pc.to(torch.device("cuda:0"))
        torch.cuda.synchronize()
        ready = time.time() - t
        torch.cuda.reset_peak_memory_stats()

        def step(xb):
            pc.init_param_flows(flows_memory=0.0)
            lls = pc(xb)
            lls.mean().backward()
            pc.mini_batch_em(step_size=0.1, pseudocount=0.1)
            return lls

        for k in range(3):
            step(x[k * batch:(k + 1) * batch])
        torch.cuda.synchronize()
        t = time.time()
        total = 0.0
        for s in range(0, x.shape[0], batch):
            total += step(x[s:s + batch]).sum().item()
        torch.cuda.synchronize()
        train_s = time.time() - t
        t = time.time()
        with torch.no_grad():
            for s in range(0, x.shape[0], batch):
                pc(x[s:s + batch])
        torch.cuda.synchronize()
        fwd_s = time.time() - t
        peak = torch.cuda.max_memory_allocated() / 2**30
        # Forward latency at batch 1 and 8: median of 50 synchronized calls, eager and after
        # record_cudagraph=True (replayed by later calls with the same batch size).
        lat = {}
        with torch.no_grad():
            for b in (1, 8):
                xb = x[:b]
                for mode in ("eager", "graph"):
                    if mode == "graph":
                        for _ in range(4):
                            pc(xb, record_cudagraph=True)
                    times = []
                    for i in range(60):
                        torch.cuda.synchronize()
                        t = time.perf_counter()
                        pc(xb)
                        torch.cuda.synchronize()
                        if i >= 10:
                            times.append((time.perf_counter() - t) * 1e6)
                    lat[f"lat_b{b}_{mode}_us"] = sorted(times)[len(times) // 2]
        print(json.dumps({"system": "pyjuice", "model": name, "nodes": int(pc.num_nodes), "edges": int(pc.num_edges),
                          "sum_params": int(pc.num_sum_params), "train_s": train_s, "fwd_s": fwd_s,
                          "peak_gib": peak, "ready_s": ready,
                          "train_mean_ll": total / x.shape[0], "latency_us": lat}), flush=True)


if __name__ == "__main__":
    main()
