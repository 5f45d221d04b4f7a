#!/usr/bin/env bash
# One device call: gpu_selftest --fast of carry/bin (the categorical statistics by sorted
# segments, the default), then bench_gpu (pcc alone, bf16, batch 512) of each of AB_MODELS in
# each of AB_VARIANTS (default: carry/bin with PCC_CAT_STATS=mma, the tensor-core product, and
# with its defaults; `bin-old:` is the previous build), same call; then
# the fp32-vs-bf16 LL check of LL_MODELS as far as DEADLINE allows. Logs under $OUT.
# Usage: DEADLINE=560 AB_MODELS=hclt128,hclt512 AB_VARIANTS="bin-old: bin:" LL_MODELS=hclt512 bash bench/device_ab_cat.sh
set -uo pipefail
SECONDS=0
fits() { [ $((SECONDS + $1)) -le ${DEADLINE:-560} ] || { echo "skipped (deadline): $2"; return 1; }; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/card.txt
echo "bin $(cat carry/commit.txt)"
rm -rf /tmp/suite && cp -r carry/suite /tmp/suite
timeout ${SELFTEST_TIMEOUT:-120} carry/bin/gpu_selftest --fast carry/data > $OUT/selftest.txt 2>&1
echo "selftest rc=$? PASS $(grep -c PASS $OUT/selftest.txt) FAIL $(grep -c FAIL $OUT/selftest.txt) at ${SECONDS}s"
grep -E "FAIL|ALL PASS|Error|error|dense soft|leaf statistics" $OUT/selftest.txt | cut -c1-260 | head -12
for m in $(echo ${AB_MODELS:-hclt128,hclt512} | tr , ' '); do
    # Variants "binary:VAR=value,VAR=value" (space-separated), each run on every model.
    for v in ${AB_VARIANTS:-bin:PCC_CAT_STATS=mma bin:}; do
        b=${v%%:*}; vars=$(echo ${v#*:} | tr , ' ')
        fits ${BENCH_TIMEOUT:-70} "bench $m $v" || continue
        env $vars PCC_BENCH_STRUCTURE_ONLY=1 PCC_PRECISION=bf16 timeout ${BENCH_TIMEOUT:-70} carry/$b/bench_gpu carry/data /tmp/suite $m > /tmp/b.jsonl 2> /tmp/b.err
        echo "bench $m $v rc=$? at ${SECONDS}s"; tail -1 /tmp/b.err
        grep "^{" /tmp/b.jsonl | sed "s/^/$v /" | tee -a $OUT/bench.txt | cut -c1-260
    done
done
if [ -n "${LL_MODELS:-}" ] && fits ${LL_TIMEOUT:-200} "llcheck"; then
    PCC_BENCH_STRUCTURE_ONLY=1 PCC_PRECISION=fp32,bf16 timeout ${LL_TIMEOUT:-200} carry/bin/bench_gpu carry/data /tmp/suite "$LL_MODELS" > $OUT/llcheck.jsonl 2> $OUT/llcheck.err
    echo "llcheck rc=$? at ${SECONDS}s"
    python3 bench/llcheck_table.py "$OUT/llcheck.jsonl" | tee $OUT/llcheck.md
fi
echo "done at ${SECONDS}s"
