#!/usr/bin/env bash
# One device call: hclt1024 side by side at batch 512, then the batch-size sweep of issue 13
# (hclt256 and pd128, both systems, batches 64, 256, 2048, 8192; 512 is the suite's own run).
# Each run_suite.sh call writes its jsonl and markdown table under $OUT.
# Usage: bash bench/device_sweep.sh [sweep models] [batches]
set -uo pipefail
models=${1:-hclt256,pd128}
batches=${2:-"64 256 2048 8192"}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/card.txt
if [ "${BIG:-1}" = 1 ]; then
    PCC_TIMEOUT=150 PJ_TIMEOUT=120 bash bench/run_suite.sh hclt1024 512 2>&1 | tail -4
fi
for b in $batches; do
    PCC_TIMEOUT=${SWEEP_PCC_TIMEOUT:-90} PJ_TIMEOUT=${SWEEP_PJ_TIMEOUT:-90} bash bench/run_suite.sh "$models" $b 2>&1 | tail -5
done
