#!/usr/bin/env bash
# A/B of two builds in one device call: self-check of carry/bin (--fast), then pcc alone
# (bench_gpu, bf16, data on the device) with carry/bin-old and carry/bin on the same models, then
# ncu kernel time by family of two training batches (NCU_MODELS, default the last model) with carry/bin.
# Usage: NCU_MODELS=hclt32,pd256 bash bench/device_ab.sh "hclt32,hclt128,pd256"
set -uo pipefail
models=${1:-hclt128,pd256}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/card.txt
timeout ${SELFTEST_TIMEOUT:-120} carry/bin/gpu_selftest --fast carry/data > $OUT/selftest.txt 2>&1
echo "selftest rc=$? passed $(grep -c PASS $OUT/selftest.txt) failed $(grep -c FAIL $OUT/selftest.txt)"
grep -E "FAIL|ALL PASS|Error|error" $OUT/selftest.txt | head -8
for b in bin-old bin; do
    PCC_BENCH_STRUCTURE_ONLY=1 PCC_PRECISION=bf16 timeout ${BENCH_TIMEOUT:-150} carry/$b/bench_gpu carry/data /tmp/bench-$b "$models" > $OUT/bench-$b.jsonl 2> $OUT/bench-$b.err
    echo "$b rc=$?"
    python3 -c "
import json,sys
for l in open('$OUT/bench-$b.jsonl'):
    if l.startswith('{'):
        r=json.loads(l); print('$b', r['model'], 'train', round(r['train_s'],3), 'fwd', round(r['fwd_s'],3), 'peak', round(r['peak_mem_gib'],2), 'cold', round(r['ready_cold_s'],2), 'b8', round(r['latency_us']['lat_b8_graph_us']), 'll', round(r['train_mean_ll'],2))"
done
# ncu: kernel time by family of two training batches, for each model of NCU_MODELS (default: the
# last of the list), with carry/bin.
for m in $(echo ${NCU_MODELS:-${models##*,}} | tr , ' '); do
    [ "${NCU:-1}" = 0 ] && break
    [ -d /tmp/ncu-$m ] || carry/bin/pcc learn ${m%%[0-9]*} --data carry/data/images-idx3-ubyte --latents ${m##*[a-z]} -o /tmp/ncu-$m > /dev/null 2>&1
    timeout ${NCU_TIMEOUT:-100} ncu --csv --metrics gpu__time_duration.sum carry/bin/pcc train /tmp/ncu-$m --data carry/data/images-idx3-ubyte \
        --rows 0..1024 --epochs 1 --em mini --batch-size 512 --device cuda --precision bf16 --quiet > $OUT/ncu-$m.csv 2> $OUT/ncu-$m.err
    echo "ncu $m"
    python3 bench/ncu_families.py < $OUT/ncu-$m.csv | tee $OUT/ncu-$m-families.md
done
