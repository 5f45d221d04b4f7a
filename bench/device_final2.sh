#!/usr/bin/env bash
# One device call: self-check of carry/bin, the side-by-side suite for SUITE_MODELS, then the
# latency of the small-batch variants against the batch kernels for LAT_MODELS (carried structures).
# Few files under $OUT (the device returns a limited number): selftest.txt, latency.txt, the suite's.
# Usage: bash bench/device_final2.sh hclt128,hclt256,hclt512 hclt128,hclt256,pd64,pd128,pd256,hclt512
set -uo pipefail
SECONDS=0
fits() { [ $((SECONDS + $1)) -le ${DEADLINE:-560} ] || { echo "skipped (deadline): $2"; return 1; }; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/card.txt
echo "commit $(cat carry/commit.txt)"
rm -rf /tmp/suite && cp -r carry/suite /tmp/suite
timeout ${SELFTEST_TIMEOUT:-110} carry/bin/gpu_selftest --fast carry/data > $OUT/selftest.txt 2>&1
echo "selftest rc=$? PASS lines $(grep -c PASS $OUT/selftest.txt) FAIL lines $(grep -c FAIL $OUT/selftest.txt)"
grep -E "FAIL|ALL PASS" $OUT/selftest.txt | head -5
PCC_TIMEOUT=120 PJ_TIMEOUT=180 bash bench/run_suite.sh ${2:-hclt128} 512 2> /dev/null
for m in $(echo ${1:-hclt128} | tr , ' '); do
    for s in 8 0; do
        fits 40 "latency $m $s" || continue
        echo "== $m PCC_SMALL_MAX=$s" >> $OUT/latency.txt
        PCC_STRUCTURE_DIR=/tmp/suite PCC_SMALL_MAX=$s PCC_PRECISION=bf16 timeout 40 carry/bin/latency carry/data $m 100 1,4,8 >> $OUT/latency.txt 2>&1
        echo "latency $m PCC_SMALL_MAX=$s rc=$?"
    done
done
grep -E "==|graph|FAIL" $OUT/latency.txt
echo "done at ${SECONDS}s"
