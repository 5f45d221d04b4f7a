#!/usr/bin/env bash
# compute-sanitizer memcheck and racecheck of the tensor-core paths: `gpu_selftest --fast` (hclt16,
# merged PD blocks, HMM; bf16/tf32/fp32 forward, flows, EM against the CPU engine; batches whose
# size is and is not a multiple of 4). Logs under $OUT; prints each tool's summary.
# Usage: bash bench/device_sanitize.sh [memcheck,racecheck]
set -uo pipefail
for tool in $(echo ${1:-memcheck,racecheck} | tr , ' '); do
    timeout ${SANITIZE_TIMEOUT:-240} compute-sanitizer --tool $tool --print-limit 20 carry/bin/gpu_selftest --fast carry/data > $OUT/sanitize-$tool.txt 2>&1
    echo "$tool rc=$?"
    grep -E "ALL PASS|FAIL|ERROR SUMMARY|RACECHECK SUMMARY|Invalid|Race|hazard" $OUT/sanitize-$tool.txt | head -12
done
