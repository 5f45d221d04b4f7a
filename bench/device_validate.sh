#!/usr/bin/env bash
# One device call that self-checks a new build and the switches still off by default, then
# measures them against the previous build: gpu_selftest --fast of carry/bin as built and with
# PCC_FWD_GEMM=all (staged forward/backward for shared children too) and with
# PCC_CAT_STATS=scalar PCC_PERSISTENT=0 (the scalar statistics and per-layer small-batch pass); bench_gpu (pcc alone, bf16, batch 512) of AB_VARIANTS (default: carry/bin-old,
# carry/bin, carry/bin with PCC_CAT_STATS=mma) on AB_MODELS, as far as DEADLINE allows. Logs
# under $OUT.
# Usage: DEADLINE=560 AB_MODELS=hclt512,pd256 AB_VARIANTS="bin: bin:PCC_FWD_GEMM=excl" bash bench/device_validate.sh
set -uo pipefail
SECONDS=0
fits() { [ $((SECONDS + $1)) -le ${DEADLINE:-560} ] || { echo "skipped (deadline): $2"; return 1; }; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/card.txt
echo "bin $(cat carry/commit.txt), bin-old $(cat carry/commit-old.txt)"
rm -rf /tmp/suite && cp -r carry/suite /tmp/suite
selftest() {  # name, env...
    local name=$1; shift
    env "$@" timeout ${SELFTEST_TIMEOUT:-120} carry/bin/gpu_selftest --fast carry/data > $OUT/selftest-$name.txt 2>&1
    echo "selftest $name ($*) rc=$? PASS $(grep -c PASS $OUT/selftest-$name.txt) FAIL $(grep -c FAIL $OUT/selftest-$name.txt) at ${SECONDS}s"
    grep -E "FAIL|ALL PASS|Error|error" $OUT/selftest-$name.txt | head -6
}
selftest default PCC_NONE=1
selftest gemm-all PCC_FWD_GEMM=all
selftest switches-off PCC_CAT_STATS=scalar PCC_PERSISTENT=0
# Variants: "binary:VAR=value,VAR=value" (space-separated), each run on every model.
for m in $(echo ${AB_MODELS:-hclt512} | tr , ' '); do
    for v in ${AB_VARIANTS:-bin-old: bin: bin:PCC_CAT_STATS=mma}; do
        b=${v%%:*}; vars=$(echo ${v#*:} | tr , ' ')
        fits ${BENCH_TIMEOUT:-60} "bench $m $v" || continue
        env $vars PCC_BENCH_STRUCTURE_ONLY=1 PCC_PRECISION=bf16 timeout ${BENCH_TIMEOUT:-60} carry/$b/bench_gpu carry/data /tmp/suite $m > /tmp/b.jsonl 2> /tmp/b.err
        echo "bench $m $v rc=$? at ${SECONDS}s"; tail -1 /tmp/b.err
        grep "^{" /tmp/b.jsonl | sed "s/^/$v /" | tee -a $OUT/bench.txt | cut -c1-300
    done
done
echo "done at ${SECONDS}s"
