#!/usr/bin/env bash
# Data-parallel checks that one GPU allows (issue 17): the NCCL path with world size 1
# (`--gpus 0`) against the plain GPU run (a one-rank all-reduce is the identity; the GPU engine's
# atomic flow sums still vary in the last bits from run to run, so the LLs agree to ~1e-8), the
# parameter checksum every step, sharded eval, and the CPU ranks through
# the torchrun variables against one CPU process. Logs under $OUT/dp.
set -uo pipefail
P=carry/bin/pcc
D=carry/data/density/nltcs
W=$(mktemp -d)
mkdir -p $OUT/dp
# NCCL: pcc's own search first; PyTorch's copy as the fallback.
if ! $P train --help >/dev/null 2>&1; then echo "pcc does not run"; exit 1; fi
NCCL_PY=$(python3 -c "import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], 'lib', 'libnccl.so.2'))" 2>/dev/null)
echo "python's NCCL: ${NCCL_PY:-none}" | tee $OUT/dp/nccl.txt
$P learn hclt --data $D/nltcs.train.data --latents 16 --seed 0 -o $W/m > /dev/null 2>&1
for m in single gpus0 cpu1 cpu2; do cp -r $W/m $W/$m; done
T="--data $D/nltcs.train.data --epochs 3 --em mini --batch-size 1024 --step-size 0.5 --quiet"
$P train $W/single $T --device cuda > $OUT/dp/single.log 2>&1
$P train $W/gpus0 $T --gpus 0 --check-every 1 > $OUT/dp/gpus0.log 2>&1 || PCC_NCCL_LIB=$NCCL_PY $P train $W/gpus0 $T --gpus 0 --check-every 1 >> $OUT/dp/gpus0.log 2>&1
echo "rc=$?" >> $OUT/dp/gpus0.log
# The tensors' bytes (the header's metadata order varies from save to save).
same() { python3 -c "
import struct, sys
def body(p):
    b = open(p, 'rb').read(); return b[8 + struct.unpack('<Q', b[:8])[0]:]
print('bit-identical parameters' if body(sys.argv[1]) == body(sys.argv[2]) else 'parameters DIFFER')" $1/params.safetensors $2/params.safetensors; }
echo "gpus0 vs single: $(same $W/single $W/gpus0)" | tee -a $OUT/dp/summary.txt
for m in single gpus0; do echo "$m $($P eval $W/$m --data $D/nltcs.test.data --device cuda --json 2>/dev/null)" | tee -a $OUT/dp/summary.txt; done
echo "eval --gpus 0 $(PCC_NCCL_LIB=${NCCL_PY:-} $P eval $W/gpus0 --data $D/nltcs.test.data --gpus 0 --json 2>>$OUT/dp/eval.log)" | tee -a $OUT/dp/summary.txt
# CPU ranks through the torchrun variables vs one CPU process.
$P train $W/cpu1 $T --device cpu > $OUT/dp/cpu1.log 2>&1
export MASTER_ADDR=127.0.0.1 MASTER_PORT=29555 WORLD_SIZE=2
RANK=1 LOCAL_RANK=1 $P train $W/cpu2 $T --device cpu --check-every 1 > $OUT/dp/cpu2-r1.log 2>&1 &
RANK=0 LOCAL_RANK=0 $P train $W/cpu2 $T --device cpu --check-every 1 > $OUT/dp/cpu2-r0.log 2>&1; wait
unset MASTER_ADDR MASTER_PORT WORLD_SIZE
echo "cpu2 (2 ranks) vs cpu1: $(same $W/cpu1 $W/cpu2)" | tee -a $OUT/dp/summary.txt
for m in cpu1 cpu2; do echo "$m $($P eval $W/$m --data $D/nltcs.test.data --device cpu --json 2>/dev/null)" | tee -a $OUT/dp/summary.txt; done
tail -n 3 $OUT/dp/*.log
rm -rf $W
