#!/usr/bin/env bash
# One device call: self-check of carry/bin (--fast), then forward latency at batches 4 and 8 of
# the small-batch variants (PCC_SMALL_MAX=8) against the batch kernels (PCC_SMALL_MAX=0), bf16
# manifest, for MODELS; OLD_MODELS also with the previous build (carry/bin-old) on the small
# variants; then the fp32-vs-bf16 training log-likelihood check of LL_MODELS. Logs under $OUT.
# Usage: DEADLINE=560 bash bench/device_small_ab.sh hclt128,hclt256,pd64,pd128,hclt512,pd256 hclt128,pd128 hclt128,pd64
set -uo pipefail
deadline=${DEADLINE:-570}
fits() { [ $((SECONDS + $1)) -le $deadline ] || { echo "skipped (deadline): $2"; return 1; }; }
models=${1:-hclt128,pd128}
old_models=${2:-hclt128}
ll_models=${3:-}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/card.txt
echo "commit $(cat carry/commit.txt), old $(cat carry/commit-old.txt)"
timeout ${SELFTEST_TIMEOUT:-110} carry/bin/gpu_selftest --fast carry/data > $OUT/selftest.txt 2>&1
echo "selftest rc=$? passed $(grep -c PASS $OUT/selftest.txt) failed $(grep -c FAIL $OUT/selftest.txt)"
grep -E "FAIL|ALL PASS|rror" $OUT/selftest.txt | head -8
run() {  # bin model small_max
    fits ${LAT_TIMEOUT:-40} "latency $1 $2 $3" || return
    PCC_SMALL_MAX=$3 PCC_PRECISION=bf16 timeout ${LAT_TIMEOUT:-40} carry/$1/latency carry/data $2 100 1,4,8 > $OUT/latency-$1-$2-small$3.txt 2>&1
    echo "$1 $2 PCC_SMALL_MAX=$3 rc=$?"; grep -E "batch|FAIL|rror" $OUT/latency-$1-$2-small$3.txt | head -8
}
for m in $(echo $models | tr , ' '); do run bin $m 8; run bin $m 0; done
for m in $(echo $old_models | tr , ' '); do run bin-old $m 8; done
if [ -n "$ll_models" ] && fits ${LL_TIMEOUT:-150} "llcheck"; then
    PCC_BENCH_STRUCTURE_ONLY=1 PCC_PRECISION=fp32,bf16 timeout ${LL_TIMEOUT:-150} carry/bin/bench_gpu carry/data /tmp/suite "$ll_models" > $OUT/llcheck.jsonl 2> $OUT/llcheck.err
    echo "llcheck rc=$?"
    python3 bench/llcheck_table.py "$OUT/llcheck.jsonl" | tee $OUT/llcheck.md
fi
