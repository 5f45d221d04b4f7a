#!/usr/bin/env bash
# Issue 17's must-show, for a machine with several GPUs (kinds nvidia-h100-x2/-x4): the train
# epoch of `pcc train --gpus 0,1` (and 0,1,2,3 where there are 4) against `--gpus 0` at the same
# global batch (2048, mini-batch EM) for hclt512 and pd256 on MNIST replicated to 60,000 rows,
# the parameters after the epochs against the one-GPU run, and two processes started with the
# torchrun variables against `--gpus 0,1`. Writes $OUT/mg/table.md and the logs.
# Usage: bash bench/device_multi_gpu.sh [MODELS] [EPOCHS]
set -uo pipefail
P=carry/bin/pcc
W=${TMPDIR:-/tmp}/mg
MODELS=${1:-hclt512 pd256}
EPOCHS=${2:-2}
mkdir -p $W $OUT/mg
NG=$(nvidia-smi -L | wc -l)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/mg/cards.txt
echo "bin $(cat carry/commit.txt), $NG GPUs" | tee -a $OUT/mg/cards.txt
# NCCL: pcc's own search, else PyTorch's copy.
export PCC_NCCL_LIB=${PCC_NCCL_LIB:-$(python3 -c "import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], 'lib', 'libnccl.so.2'))" 2>/dev/null)}
python3 - "$W/mnist60k" <<'PY'
import sys
b = open('carry/data/images-idx3-ubyte', 'rb').read()
n = int.from_bytes(b[4:8], 'big'); body = b[16:]
open(sys.argv[1], 'wb').write(b[:4] + (6 * n).to_bytes(4, 'big') + b[8:16] + body * 6)
PY
SETS="0"; [ $NG -ge 2 ] && SETS="$SETS 0,1"; [ $NG -ge 4 ] && SETS="$SETS 0,1,2,3"
T="--data $W/mnist60k --em mini --batch-size 2048 --step-size 0.1 --pseudocount 0.1 --epochs $EPOCHS --quiet"
echo "| model | GPUs | train epoch $EPOCHS (s) | speed-up | max abs param diff vs 1 GPU | max rel |" > $OUT/mg/table.md
echo "| --- | --- | --- | --- | --- | --- |" >> $OUT/mg/table.md
diff_params() { python3 - "$1" "$2" <<'PY'
import json, struct, sys, numpy as np
def load(p):
    b = open(p + '/params.safetensors', 'rb').read(); n = struct.unpack('<Q', b[:8])[0]
    h = json.loads(b[8:8 + n]); d = b[8 + n:]
    return {k: np.frombuffer(d[v['data_offsets'][0]:v['data_offsets'][1]], np.float32) for k, v in h.items() if k != '__metadata__'}
a, b = load(sys.argv[1]), load(sys.argv[2])
ab = max(float(np.abs(a[k] - b[k]).max()) for k in a)
rel = max(float((np.abs(a[k] - b[k]) / np.maximum(np.abs(a[k]), 1e-30)).max()) for k in a)
print(f"{ab:.3g} | {rel:.3g}")
PY
}
for m in $MODELS; do
    case $m in hclt*) $P learn hclt --data $W/mnist60k --latents ${m#hclt} --mi-samples 10000 -o $W/$m/base > $OUT/mg/learn-$m.log 2>&1 ;;
               pd*) $P learn pd --data $W/mnist60k --latents ${m#pd} -o $W/$m/base > $OUT/mg/learn-$m.log 2>&1 ;; esac
    base=""
    for g in $SETS; do
        rm -rf $W/$m/g$g; cp -r $W/$m/base $W/$m/g$g
        $P train $W/$m/g$g $T --gpus $g > $OUT/mg/$m-gpus$g.log 2>&1; echo "rc=$?" >> $OUT/mg/$m-gpus$g.log
        s=$(grep "^epoch *$EPOCHS:" $OUT/mg/$m-gpus$g.log | sed 's/.*(\([0-9.]*\) s).*/\1/')
        [ -z "$base" ] && base=$s
        d=$( [ "$g" = 0 ] && echo "0 | 0" || diff_params $W/$m/g0 $W/$m/g$g)
        echo "| $m | $g | $s | $(python3 -c "print(f'{$base/$s:.2f}x')" 2>/dev/null) | $d |" | tee -a $OUT/mg/table.md
    done
    if [ $NG -ge 2 ]; then
        rm -rf $W/$m/torchrun; cp -r $W/$m/base $W/$m/torchrun
        export MASTER_ADDR=127.0.0.1 MASTER_PORT=29577 WORLD_SIZE=2
        RANK=1 LOCAL_RANK=1 $P train $W/$m/torchrun $T > $OUT/mg/$m-torchrun-r1.log 2>&1 &
        RANK=0 LOCAL_RANK=0 $P train $W/$m/torchrun $T > $OUT/mg/$m-torchrun-r0.log 2>&1; wait
        unset MASTER_ADDR MASTER_PORT WORLD_SIZE
        echo "$m: two torchrun-style processes vs --gpus 0,1: $(diff_params $W/$m/g0,1 $W/$m/torchrun) (abs | rel)" | tee -a $OUT/mg/table.md
    fi
    rm -rf $W/$m
done
tail -n 4 $OUT/mg/*.log
