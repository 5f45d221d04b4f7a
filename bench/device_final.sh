#!/usr/bin/env bash
# The session's last device call: self-check the new build (carry/bin); if it fails, self-check and
# use the previous build (carry/bin-old); then the side-by-side suite with the build that passed.
set -uo pipefail
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/card.txt
rm -rf /tmp/suite && cp -r carry/suite /tmp/suite  # the structures, learned on the development machine
pick=""
for b in bin bin-old; do
    timeout ${SELFTEST_TIMEOUT:-100} carry/$b/gpu_selftest --fast carry/data > $OUT/selftest-$b.txt 2>&1
    echo "$b selftest rc=$? passed $(grep -c PASS $OUT/selftest-$b.txt) failed $(grep -c FAIL $OUT/selftest-$b.txt)"
    grep -E "FAIL|ALL PASS" $OUT/selftest-$b.txt | head -5
    if grep -q "ALL PASS" $OUT/selftest-$b.txt; then pick=$b; break; fi
done
[ -z "$pick" ] && { echo "no build passed its self-check: no suite"; exit 1; }
commit=carry/commit.txt; [ "$pick" = bin-old ] && commit=carry/commit-old.txt
# The persistent small-batch pass (off by default) self-checked too, when asked for.
if [ -n "${PERSISTENT_CHECK:-}" ]; then
    PCC_PERSISTENT=1 timeout ${SELFTEST_TIMEOUT:-100} carry/$pick/gpu_selftest --fast carry/data > $OUT/selftest-persistent.txt 2>&1
    echo "$pick PCC_PERSISTENT=1 selftest rc=$? passed $(grep -c PASS $OUT/selftest-persistent.txt) failed $(grep -c FAIL $OUT/selftest-persistent.txt)"
    grep -E "FAIL|ALL PASS|Error" $OUT/selftest-persistent.txt | head -5
fi
echo "suite with carry/$pick ($(cat $commit))"
PCC_BIN=carry/$pick PCC_COMMIT_FILE=$commit bash bench/run_suite.sh "$@" 2> $OUT/suite.err
