#!/usr/bin/env bash
# One device call: self-check of the GPU engine, pcc alone on the given models (bf16 path, data on
# the device) and the kernel time by family of two training batches of the last model (ncu);
# logs under $OUT. Binaries and mnist10k travel in carry/ (see docs/perf-log.md).
# Usage: bash bench/device_quick.sh "hclt128,hclt512,pd256" [selftest]
set -uo pipefail
models=${1:-hclt128}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee $OUT/card.txt
if [ "${2:-}" = selftest ]; then
    timeout 240 carry/bin/gpu_selftest --quick carry/data 2>&1 | tee $OUT/selftest.txt | grep -E "FAIL|ALL PASS|flows \(|device-resident|Error|error" | head -70
fi
PCC_PRECISION=${PCC_PRECISION:-bf16} timeout 300 carry/bin/bench_gpu carry/data /tmp/bench-out "$models" 2>&1 | tee $OUT/bench.jsonl
last=${models##*,}
if [ -n "${NCU:-1}" ] && [ "${NCU:-1}" != 0 ]; then
    timeout 150 ncu --csv --metrics gpu__time_duration.sum carry/bin/pcc train /tmp/bench-out/$last --data carry/data/images-idx3-ubyte \
        --rows 0..1024 --epochs 1 --em mini --batch-size 512 --device cuda --precision bf16 --quiet > $OUT/ncu-$last.csv 2> $OUT/ncu-$last.err
    python3 bench/ncu_families.py < $OUT/ncu-$last.csv | tee $OUT/ncu-$last-families.md
fi
