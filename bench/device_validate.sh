#!/usr/bin/env bash
# One device call that validates the switches still off by default, then measures them:
# gpu_selftest --fast of carry/bin as built, with PCC_CAT_STATS_MMA=1 (categorical statistics on
# tensor cores) and with PCC_PERSISTENT=1 (persistent small-batch pass); pcc alone on AB_MODELS
# with the categorical statistics off and on; then compute-sanitizer memcheck/racecheck of the
# self-check with both switches on, as far as DEADLINE allows. Logs under $OUT.
# Usage: DEADLINE=560 AB_MODELS=hclt512,pd256 bash bench/device_validate.sh
set -uo pipefail
SECONDS=0
fits() { [ $((SECONDS + $1)) -le ${DEADLINE:-560} ] || { echo "skipped (deadline): $2"; return 1; }; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/card.txt
echo "commit $(cat carry/commit.txt)"
rm -rf /tmp/suite && cp -r carry/suite /tmp/suite
selftest() {  # name, env...
    local name=$1; shift
    env "$@" timeout ${SELFTEST_TIMEOUT:-110} carry/bin/gpu_selftest --fast carry/data > $OUT/selftest-$name.txt 2>&1
    echo "selftest $name ($*) rc=$? PASS $(grep -c PASS $OUT/selftest-$name.txt) FAIL $(grep -c FAIL $OUT/selftest-$name.txt) at ${SECONDS}s"
    grep -E "FAIL|ALL PASS|Error|error" $OUT/selftest-$name.txt | head -5
}
selftest default PCC_NONE=1
selftest cat-mma PCC_CAT_STATS_MMA=1
selftest persistent PCC_PERSISTENT=1
for m in $(echo ${AB_MODELS:-hclt512} | tr , ' '); do
    for v in 0 1; do
        fits ${BENCH_TIMEOUT:-60} "bench $m PCC_CAT_STATS_MMA=$v" || continue
        PCC_CAT_STATS_MMA=$v PCC_BENCH_STRUCTURE_ONLY=1 PCC_PRECISION=bf16 timeout ${BENCH_TIMEOUT:-60} carry/bin/bench_gpu carry/data /tmp/suite $m > /tmp/b.jsonl 2> /tmp/b.err
        echo "bench $m PCC_CAT_STATS_MMA=$v rc=$?"; tail -2 /tmp/b.err
        grep "^{" /tmp/b.jsonl | sed "s/^/PCC_CAT_STATS_MMA=$v /" | tee -a $OUT/bench.txt | cut -c1-300
    done
done
for tool in memcheck racecheck; do
    fits ${SANITIZE_TIMEOUT:-150} "sanitizer $tool" || continue
    PCC_CAT_STATS_MMA=1 PCC_PERSISTENT=1 timeout ${SANITIZE_TIMEOUT:-150} compute-sanitizer --tool $tool --report-api-errors no --print-limit 20 \
        carry/bin/gpu_selftest --fast carry/data > $OUT/sanitize-$tool.txt 2>&1
    echo "$tool rc=$? at ${SECONDS}s"
    grep -E "ALL PASS|FAIL|ERROR SUMMARY|RACECHECK SUMMARY|Invalid|Race|hazard" $OUT/sanitize-$tool.txt | head -8
done
echo "done at ${SECONDS}s"
