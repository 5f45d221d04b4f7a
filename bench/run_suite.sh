#!/usr/bin/env bash
# The side-by-side suite (../shared/bench/README.md) in one command on the GPU machine: pcc
# (examples/bench_gpu, bf16 tensor-core path, data on the device) and PyJuice 2.6.3 (Triton path)
# on identical structures, same card, same run. Writes $OUT/<date>-<card>-suite[-b<batch>].jsonl
# (one JSON object per system and model) and the markdown table of ratios next to it.
#
# Needs (in the repository copy on the GPU machine): carry/bin/bench_gpu (cargo build --release
# --examples), carry/data/images-idx3-ubyte (mnist10k), carry/pyjuice-2.6.3-py3-none-any.whl,
# carry/commit.txt (git rev-parse HEAD).
# Usage: bash bench/run_suite.sh [models] [batch]   e.g. bash bench/run_suite.sh hclt32,pd64 512
set -uo pipefail
models=${1:-hclt32,hclt128,hclt256,hclt512,hclt1024,pd64,pd128,pd256}
batch=${2:-512}
out=${OUT:-bench-out}
mkdir -p "$out"
card=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr ' ' '-')
suffix=$([ "$batch" = 512 ] && echo "" || echo "-b$batch")
base="$out/$(date +%F)-$card-suite$suffix"
bin=${PCC_BIN:-carry/bin}
commit=$(cat ${PCC_COMMIT_FILE:-carry/commit.txt} 2>/dev/null || echo unknown)
python3 -m pip install -q --no-index --no-deps --target /tmp/site carry/pyjuice-2.6.3-py3-none-any.whl 2>/dev/null
export PYTHONPATH=/tmp/site PYJUICE_DISABLE_CUDA_KERNELS=1 PYTHONUNBUFFERED=1
# Structures are learned once (by pcc) and kept in /tmp/suite for PyJuice and later calls.
PCC_BENCH_STRUCTURE_ONLY=1 PCC_BATCH=$batch PCC_PRECISION=${PCC_PRECISION:-bf16} timeout ${PCC_TIMEOUT:-400} $bin/bench_gpu carry/data /tmp/suite "$models" \
    | python3 bench/suite_table.py --tag "$commit" "$batch" >> "$base.jsonl"
PJ_BATCH=$batch timeout ${PJ_TIMEOUT:-400} python3 bench/pyjuice_bench.py carry/data/images-idx3-ubyte /tmp/suite "$models" \
    | python3 bench/suite_table.py --tag "$commit" "$batch" >> "$base.jsonl"
python3 bench/suite_table.py --table "$base.jsonl" | tee "$base.md"
