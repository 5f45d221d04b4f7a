#!/usr/bin/env bash
# One device call: gpu_selftest --fast of carry/bin; the side-by-side suite (bench/run_suite.sh)
# with carry/bin if it passed, else with carry/bin-old's bench_gpu; then, as far as DEADLINE
# allows, the AB runs of bench_gpu (pcc alone, bf16; default: carry/bin-old, the previous build,
# on hclt512 and pd256), same call, for A/Bs against the suite's rows. Logs under $OUT.
# Usage: DEADLINE=585 AB="hclt512:bin-old: hclt512:bin:PCC_CAT_STATS=mma" bash bench/device_check_suite.sh [models] [batch]
set -uo pipefail
SECONDS=0
fits() { [ $((SECONDS + $1)) -le ${DEADLINE:-585} ] || { echo "skipped (deadline): $2"; return 1; }; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/card.txt
echo "bin $(cat carry/commit.txt), bin-old $(cat carry/commit-old.txt)"
rm -rf /tmp/suite && cp -r carry/suite /tmp/suite
timeout ${SELFTEST_TIMEOUT:-130} carry/bin/gpu_selftest --fast carry/data > $OUT/selftest.txt 2>&1
echo "selftest rc=$? PASS $(grep -c PASS $OUT/selftest.txt) FAIL $(grep -c FAIL $OUT/selftest.txt) at ${SECONDS}s"
grep -E "FAIL|ALL PASS|Error|error|dense soft|hclt64" $OUT/selftest.txt | cut -c1-240 | head -12
bin=bin; commit=carry/commit.txt
grep -q "ALL PASS" $OUT/selftest.txt || { bin=bin-old; commit=carry/commit-old.txt; echo "self-check failed: the suite runs carry/bin-old"; }
PCC_BIN=carry/$bin PCC_COMMIT_FILE=$commit PCC_TIMEOUT=${PCC_TIMEOUT:-200} PJ_TIMEOUT=${PJ_TIMEOUT:-300} bash bench/run_suite.sh "$@" 2> $OUT/suite.err
echo "suite done at ${SECONDS}s"; tail -3 $OUT/suite.err
# AB: "model:binary:VAR=value,VAR=value" runs (space-separated), in order, as far as DEADLINE allows.
for run in ${AB:-hclt512:bin-old: pd256:bin-old:}; do
    m=${run%%:*}; rest=${run#*:}; b=${rest%%:*}; vars=$(echo ${rest#*:} | tr , ' ')
    fits 45 "$run" || continue
    env $vars PCC_BENCH_STRUCTURE_ONLY=1 PCC_PRECISION=bf16 timeout 45 carry/$b/bench_gpu carry/data /tmp/suite $m 2>/dev/null | grep "^{" | sed "s/^/$run /" | tee -a $OUT/ab.txt | cut -c1-300
done
echo "done at ${SECONDS}s"
