#!/usr/bin/env bash
# One device call: self-check of carry/bin (--fast); the training log-likelihood of one epoch of
# the fp32 path against the bf16 tensor-core path (same structure, same seed-0 parameters, same
# data; issue 13's 0.5% point); then ncu kernel time and tensor-pipe use by family of one
# training batch of each of NCU_MODELS. Logs under $OUT.
# Usage: NCU_MODELS=hclt512,pd256 bash bench/device_llcheck.sh hclt32,hclt128,pd64
set -uo pipefail
# DEADLINE (seconds from the start): a step whose timeout would pass it is skipped.
deadline=${DEADLINE:-580}
fits() { [ $((SECONDS + $1)) -le $deadline ] || { echo "skipped (deadline): $2"; return 1; }; }
models=${1:-hclt32,hclt128,hclt256,hclt512,pd64,pd128,pd256}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/card.txt
echo "commit $(cat carry/commit.txt)"
timeout ${SELFTEST_TIMEOUT:-120} carry/bin/gpu_selftest --fast carry/data > $OUT/selftest.txt 2>&1
echo "selftest rc=$? passed $(grep -c PASS $OUT/selftest.txt) failed $(grep -c FAIL $OUT/selftest.txt)"
grep -E "FAIL|ALL PASS|Error|error" $OUT/selftest.txt | head -8
PCC_BENCH_STRUCTURE_ONLY=1 PCC_PRECISION=fp32,bf16 timeout ${LL_TIMEOUT:-260} carry/bin/bench_gpu carry/data /tmp/suite "$models" > $OUT/llcheck.jsonl 2> $OUT/llcheck.err
echo "llcheck rc=$?"
python3 bench/llcheck_table.py "$OUT/llcheck.jsonl" | tee $OUT/llcheck.md
# Models too large for the fp32 path in one call: bf16 only (memory, times, warm start).
if [ -n "${BIG_MODELS:-hclt1024}" ] && fits ${BIG_TIMEOUT:-100} "big models"; then
    PCC_LARGEST_BATCH=1 PCC_BENCH_STRUCTURE_ONLY=1 PCC_PRECISION=bf16 timeout ${BIG_TIMEOUT:-100} carry/bin/bench_gpu carry/data /tmp/suite "${BIG_MODELS:-hclt1024}" > $OUT/big.jsonl 2> $OUT/big.err
    echo "big rc=$?"
fi
python3 - $OUT/llcheck.jsonl $OUT/big.jsonl <<'PY' | tee $OUT/bf16-summary.md
import json, sys
print("| model | train s | fwd s | peak GiB | ready cold / warm s | warm breakdown ms | b1 / b8 µs (graph) |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for f in sys.argv[1:]:
    try:
        rows = [json.loads(l) for l in open(f) if l.startswith("{")]
    except OSError:
        continue
    for r in rows:
        if r["precision"] != "bf16":
            continue
        w = r["warm_breakdown_ms"]; lat = r["latency_us"]
        wb = " ".join(f"{k} {v:.0f}" for k, v in w.items())
        if r.get("largest_batch"):
            print(f"<!-- {r['model']} largest batch: {json.dumps(r['largest_batch'])} -->")
        print(f"| {r['model']} | {r['train_s']:.3f} | {r['fwd_s']:.3f} | {r['peak_mem_gib']:.2f} | {r['ready_cold_s']:.2f} / {r['ready_warm_s']:.3f} | {wb} | {lat['lat_b1_graph_us']:.0f} / {lat['lat_b8_graph_us']:.0f} |")
PY
for m in $(echo ${NCU_MODELS:-hclt512,pd256} | tr , ' '); do
    fits $((${NCU_TIMEOUT:-100} + 20)) "ncu $m" || continue
    [ -d /tmp/ncu-$m ] || carry/bin/pcc learn ${m%%[0-9]*} --data carry/data/images-idx3-ubyte --latents ${m##*[a-z]} -o /tmp/ncu-$m > /dev/null 2>&1
    timeout ${NCU_TIMEOUT:-100} ncu --csv --metrics gpu__time_duration.sum,sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_elapsed,launch__grid_size \
        carry/bin/pcc train /tmp/ncu-$m --data carry/data/images-idx3-ubyte --rows 0..512 --epochs 1 --em mini --batch-size 512 \
        --device cuda --precision bf16 --quiet > $OUT/ncu-tc-$m.csv 2> $OUT/ncu-tc-$m.err
    echo "ncu $m rc=$?"
    python3 bench/ncu_families.py < $OUT/ncu-tc-$m.csv | tee $OUT/ncu-tc-$m-families.md | head -14
    python3 bench/ncu_launches.py < $OUT/ncu-tc-$m.csv | tee $OUT/ncu-tc-$m-launches.md | head -10
done
# Batch 8: the small-batch variants (fp32, warp per node) against the batch kernels (bf16 tensor
# cores), same model, same call.
for m in $(echo ${LAT_MODELS:-pd256} | tr , ' '); do
    for s in 8 0; do
        fits ${LAT_TIMEOUT:-45} "latency $m $s" || continue
        PCC_SMALL_MAX=$s PCC_PRECISION=bf16 PCC_CUDA_GRAPHS=1 timeout ${LAT_TIMEOUT:-45} carry/bin/latency carry/data $m 100 4,8 > $OUT/latency-$m-small$s.txt 2>&1
        echo "latency $m PCC_SMALL_MAX=$s rc=$?"; grep -E "batch|FAIL" $OUT/latency-$m-small$s.txt | head -8
    done
done
