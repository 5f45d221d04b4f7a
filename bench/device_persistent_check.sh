#!/usr/bin/env bash
# One device call: self-check of carry/bin with the persistent small-batch pass off (default) and on
# (PCC_PERSISTENT=1), the batch 1/2/4/8 latency of the carried hclt128 structure both ways (each
# line checked against the CPU engine), then ncu detail of PD's flow kernels. Logs under $OUT.
# Usage: bash bench/device_persistent_check.sh [latency models]
set -uo pipefail
SECONDS=0
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
echo "commit $(cat carry/commit.txt)"
rm -rf /tmp/suite && cp -r carry/suite /tmp/suite
for p in 0 1; do
    PCC_PERSISTENT=$p timeout ${SELFTEST_TIMEOUT:-120} carry/bin/gpu_selftest --fast carry/data > $OUT/selftest-persistent$p.txt 2>&1
    echo "selftest PCC_PERSISTENT=$p rc=$? PASS $(grep -c PASS $OUT/selftest-persistent$p.txt) FAIL $(grep -c FAIL $OUT/selftest-persistent$p.txt)"
    grep -E "FAIL|ALL PASS" $OUT/selftest-persistent$p.txt | head -5
done
for m in $(echo ${1:-hclt128} | tr , ' '); do
    for p in 1 0; do
        echo "== $m PCC_PERSISTENT=$p" >> $OUT/latency.txt
        PCC_PERSISTENT=$p PCC_STRUCTURE_DIR=/tmp/suite PCC_PRECISION=bf16 timeout 60 carry/bin/latency carry/data $m 200 1,2,4,8 >> $OUT/latency.txt 2>&1
        echo "latency $m PCC_PERSISTENT=$p rc=$?"
    done
done
grep -E "==|batch|FAIL|max rel" $OUT/latency.txt | head -40
echo "at ${SECONDS}s"
# A/B of carry/bin-old and carry/bin, pcc alone (bench_gpu, bf16, data on the device), AB_MODELS.
for b in bin-old bin; do
    [ -n "${AB_MODELS:-}" ] && [ -d carry/$b ] || break
    PCC_BENCH_STRUCTURE_ONLY=1 PCC_PRECISION=bf16 timeout ${AB_TIMEOUT:-90} carry/$b/bench_gpu carry/data /tmp/suite "$AB_MODELS" > /tmp/ab-$b.jsonl 2> /tmp/ab-$b.err
    echo "$b rc=$?"
    python3 -c "
import json
for l in open('/tmp/ab-$b.jsonl'):
    if l.startswith('{'):
        r=json.loads(l); print('$b', r['model'], 'train', round(r['train_s'],3), 'fwd', round(r['fwd_s'],3), 'peak', round(r['peak_mem_gib'],2), 'warm', round(r['ready_warm_s'],3), r['warm_breakdown_ms'], 'b1', round(r['latency_us']['lat_b1_graph_us']), 'b8', round(r['latency_us']['lat_b8_graph_us']), 'll', round(r['train_mean_ll'],3))" | tee -a $OUT/ab.txt
done
echo "at ${SECONDS}s"
# ncu kernel time and tensor-pipe use by family of one training batch of each of NCU_MODELS.
for m in $(echo ${NCU_MODELS:-} | tr , ' '); do
    [ $((SECONDS + ${NCU_TIMEOUT:-100} + 30)) -le ${DEADLINE:-570} ] || { echo "skipped (deadline): ncu $m"; continue; }
    [ -d /tmp/ncu-$m ] || timeout 150 carry/bin/pcc learn ${m%%[0-9]*} --data carry/data/images-idx3-ubyte --latents ${m##*[a-z]} -o /tmp/ncu-$m > /dev/null 2>&1
    timeout ${NCU_TIMEOUT:-100} ncu --csv --metrics gpu__time_duration.sum,sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_elapsed,launch__grid_size \
        carry/bin/pcc train /tmp/ncu-$m --data carry/data/images-idx3-ubyte --rows 0..512 --epochs 1 --em mini --batch-size 512 \
        --device cuda --precision bf16 --quiet > /tmp/ncu-tc-$m.csv 2> /tmp/ncu-tc-$m.err
    echo "ncu $m rc=$?"
    { python3 bench/ncu_families.py < /tmp/ncu-tc-$m.csv; python3 bench/ncu_launches.py < /tmp/ncu-tc-$m.csv; } | tee $OUT/ncu-$m.md | head -24
done
# ncu detail (stall reasons, occupancy, memory) of chosen kernels: NCU_DETAIL="kind:latents:regex ..."
for d in ${NCU_DETAIL:-}; do
    [ $((SECONDS + ${NCU_DETAIL_TIMEOUT:-90} + 30)) -le ${DEADLINE:-570} ] || { echo "skipped (deadline): ncu detail $d"; continue; }
    IFS=: read -r kind lat re <<< "$d"
    NCU_LAUNCHES=${NCU_LAUNCHES:-8} NCU_TIMEOUT=${NCU_DETAIL_TIMEOUT:-90} bash bench/device_ncu_detail.sh $kind $lat "regex:$re"
done
echo "done at ${SECONDS}s"
