#!/usr/bin/env bash
# One device call for issue 16: the GPU self-check (softening and entropy-regularized EM lines
# included), the GPU engine's fit against the CPU engine's on nltcs (same settings and seed), and
# `pcc fit` on the five density datasets at once (DEVICE=cuda: all on the GPU; DEVICE=cpu: the
# host's CPU cores, RAYON_NUM_THREADS=THREADS per fit). Logs and each fit.json under $OUT.
# Usage: DEVICE=cuda BUDGET=300 [MNIST=1 MNIST_ARGS=...] bash bench/device_fit.sh
set -uo pipefail
SECONDS=0
D=carry/data/density
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/card.txt
echo "bin $(cat carry/commit.txt)"
# Everything at once (the device time is short): the self-check, the GPU-vs-CPU check, the fits.
if [ -z "${NO_SELFTEST:-}" ]; then
    (timeout 200 carry/bin/gpu_selftest --fast carry/data > $OUT/selftest.txt 2>&1; echo "rc=$?" >> $OUT/selftest.txt) &
fi
for dev in cuda cpu; do
    (RAYON_NUM_THREADS=2 timeout 200 carry/bin/pcc fit --data $D/nltcs/nltcs.train.data --valid $D/nltcs/nltcs.valid.data \
        --test $D/nltcs/nltcs.test.data -o $OUT/gpu-check-$dev --device $dev --quiet --latents 16 --soften 0.998 --entropy 0.001 --max-epochs 10 > $OUT/gpu-check-$dev.log 2>&1; echo "rc=$?" >> $OUT/gpu-check-$dev.log) &
done
for d in ${DATASETS:-nltcs plants baudio jester bnetflix}; do
    RAYON_NUM_THREADS=${THREADS:-3} timeout $(( ${BUDGET:-300} + 120 )) carry/bin/pcc fit --data $D/$d/$d.train.data --valid $D/$d/$d.valid.data \
        --test $D/$d/$d.test.data -o $OUT/fit-$d --device ${DEVICE:-cuda} --quiet --budget ${BUDGET:-300} ${FIT_ARGS:-} > $OUT/fit-$d.log 2>&1 &
done
# mnist10k (MNIST=1): one IDX file, split by rows 0..8000 / 8000..9000 / 9000..10000.
if [ -n "${MNIST:-}" ]; then
    M=carry/data/images-idx3-ubyte
    RAYON_NUM_THREADS=${THREADS:-3} timeout $(( ${BUDGET:-300} + 120 )) carry/bin/pcc fit --data $M --rows 0..8000 --valid $M --valid-rows 8000..9000 \
        --test $M --test-rows 9000..10000 -o $OUT/fit-mnist10k --device ${DEVICE:-cuda} --quiet --budget ${BUDGET:-300} ${MNIST_ARGS:-} > $OUT/fit-mnist10k.log 2>&1 &
fi
wait
if [ -z "${NO_SELFTEST:-}" ]; then
    echo "selftest $(tail -1 $OUT/selftest.txt) PASS $(grep -c PASS $OUT/selftest.txt) FAIL $(grep -c FAIL $OUT/selftest.txt)"
    grep -E "FAIL|softened" $OUT/selftest.txt | head -8
fi
for dev in cuda cpu; do echo "gpu-check $dev:"; tail -3 $OUT/gpu-check-$dev.log; done
for d in ${DATASETS:-nltcs plants baudio jester bnetflix} ${MNIST:+mnist10k}; do echo "== $d"; tail -2 $OUT/fit-$d.log; cp $OUT/fit-$d/fit.json $OUT/fit-$d.json 2>/dev/null; rm -rf $OUT/fit-$d; done
rm -rf $OUT/gpu-check-cuda $OUT/gpu-check-cpu
echo "done at ${SECONDS}s"
