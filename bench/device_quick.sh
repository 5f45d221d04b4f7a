#!/usr/bin/env bash
# One device call: self-check of the GPU engine, then pcc alone on the given models (bf16 path),
# logs under $OUT. Binaries and mnist10k travel in carry/ (see docs/perf-log.md).
# Usage: bash bench/device_quick.sh "hclt128,hclt512,pd256" [selftest]
set -uo pipefail
models=${1:-hclt128}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee $OUT/card.txt
if [ "${2:-}" = selftest ]; then
    timeout 240 carry/bin/gpu_selftest --quick carry/data 2>&1 | tee $OUT/selftest.txt | grep -E "FAIL|ALL PASS|flows \(|Error|error" | head -60
fi
PCC_PRECISION=${PCC_PRECISION:-bf16} timeout 400 carry/bin/bench_gpu carry/data /tmp/bench-out "$models" 2>&1 | tee $OUT/bench.jsonl
