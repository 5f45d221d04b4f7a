#!/usr/bin/env bash
# ncu kernel time, tensor-pipe use and DRAM traffic by kernel family of one training batch (512) of each of
# MODELS (built on the device by `pcc learn`), as far as DEADLINE allows. Environment switches
# (PCC_CAT_STATS_MMA, …) pass through. Logs and the raw CSV under $OUT.
# Usage: DEADLINE=400 bash bench/device_ncu_tc.sh hclt512,pd256
set -uo pipefail
SECONDS=0
for m in $(echo ${1:-hclt512} | tr , ' '); do
    [ $((SECONDS + ${NCU_TIMEOUT:-120} + 40)) -le ${DEADLINE:-400} ] || { echo "skipped (deadline): ncu $m"; continue; }
    [ -d /tmp/ncu-$m ] || timeout 150 carry/bin/pcc learn ${m%%[0-9]*} --data carry/data/images-idx3-ubyte --latents ${m##*[a-z]} -o /tmp/ncu-$m > /dev/null 2>&1
    timeout ${NCU_TIMEOUT:-120} ncu --csv --metrics gpu__time_duration.sum,sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_elapsed,launch__grid_size,dram__bytes.sum \
        carry/bin/pcc train /tmp/ncu-$m --data carry/data/images-idx3-ubyte --rows 0..512 --epochs 1 --em mini --batch-size 512 \
        --device cuda --precision bf16 --quiet > $OUT/ncu-tc-$m.csv 2> /tmp/ncu-tc-$m.err
    echo "ncu $m rc=$? at ${SECONDS}s"; tail -2 /tmp/ncu-tc-$m.err
    { python3 bench/ncu_families.py < $OUT/ncu-tc-$m.csv; python3 bench/ncu_launches.py < $OUT/ncu-tc-$m.csv; } | tee $OUT/ncu-$m.md | head -26
done
