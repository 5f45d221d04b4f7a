#!/usr/bin/env bash
# A short device call for the end of a session with little device time: the self-check of
# carry/bin with the categorical statistics on tensor cores switched on (PCC_CAT_STATS_MMA=1),
# then pcc alone on MODELS with them off and on (same binary). Logs under $OUT.
# Usage: DEADLINE=190 bash bench/device_last.sh hclt512
set -uo pipefail
SECONDS=0
fits() { [ $((SECONDS + $1)) -le ${DEADLINE:-190} ] || { echo "skipped (deadline): $2"; return 1; }; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
echo "commit $(cat carry/commit.txt)"
rm -rf /tmp/suite && cp -r carry/suite /tmp/suite
PCC_CAT_STATS_MMA=1 timeout ${SELFTEST_TIMEOUT:-110} carry/bin/gpu_selftest --fast carry/data > $OUT/selftest-cat-mma.txt 2>&1
echo "selftest PCC_CAT_STATS_MMA=1 rc=$? PASS $(grep -c PASS $OUT/selftest-cat-mma.txt) FAIL $(grep -c FAIL $OUT/selftest-cat-mma.txt)"
grep -E "FAIL|ALL PASS|Error" $OUT/selftest-cat-mma.txt | head -5
for v in 0 1; do
    fits ${BENCH_TIMEOUT:-45} "bench PCC_CAT_STATS_MMA=$v" || continue
    PCC_CAT_STATS_MMA=$v PCC_BENCH_STRUCTURE_ONLY=1 PCC_PRECISION=bf16 timeout ${BENCH_TIMEOUT:-45} carry/bin/bench_gpu carry/data /tmp/suite "${1:-hclt512}" > /tmp/b$v.jsonl 2> /tmp/b$v.err
    echo "bench PCC_CAT_STATS_MMA=$v rc=$?"
    grep "^{" /tmp/b$v.jsonl | sed "s/^/PCC_CAT_STATS_MMA=$v /" | tee -a $OUT/bench.txt | cut -c1-400
done
echo "done at ${SECONDS}s"
