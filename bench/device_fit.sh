#!/usr/bin/env bash
# One device call for issue 16: `pcc fit` on the five density datasets in parallel on the GPU
# machine's CPU cores (the CPU engine; RAYON_NUM_THREADS per fit), plus the GPU engine's
# entropy-regularized EM against the CPU engine's on nltcs (same settings, same seed).
# Logs and each fit.json under $OUT. Usage: BUDGET=420 THREADS=3 bash bench/device_fit.sh
set -uo pipefail
SECONDS=0
D=carry/data/density
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/card.txt
nproc | tee $OUT/nproc.txt
for d in ${DATASETS:-nltcs plants baudio jester bnetflix}; do
    RAYON_NUM_THREADS=${THREADS:-3} timeout $(( ${BUDGET:-420} + 120 )) carry/bin/pcc fit --data $D/$d/$d.train.data --valid $D/$d/$d.valid.data \
        --test $D/$d/$d.test.data -o $OUT/fit-$d --device cpu --quiet --budget ${BUDGET:-420} ${FIT_ARGS:-} > $OUT/fit-$d.log 2>&1 &
done
# GPU vs CPU, entropy regularization without softening (the GPU engine takes hard evidence).
for dev in cuda cpu; do
    RAYON_NUM_THREADS=1 timeout 200 carry/bin/pcc fit --data $D/nltcs/nltcs.train.data --valid $D/nltcs/nltcs.valid.data \
        --test $D/nltcs/nltcs.test.data -o $OUT/gpu-check-$dev --device $dev --quiet --latents 16 --soften 1 --entropy 0.001 --max-epochs 10 > $OUT/gpu-check-$dev.log 2>&1
    echo "gpu-check $dev rc=$? at ${SECONDS}s"; tail -2 $OUT/gpu-check-$dev.log
done
wait
for d in ${DATASETS:-nltcs plants baudio jester bnetflix}; do echo "== $d"; tail -3 $OUT/fit-$d.log; done
echo "done at ${SECONDS}s"
