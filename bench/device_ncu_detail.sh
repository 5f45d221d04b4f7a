#!/usr/bin/env bash
# ncu detail (speed of light, occupancy, warp stall reasons, launch statistics) of the tensor-core
# sum kernels of one training batch of a freshly built model; logs under $OUT.
# Usage: bash bench/device_ncu_detail.sh pd 256 [regex]
set -uo pipefail
kind=${1:-pd}; lat=${2:-256}; re=${3:-"regex:sum_(fwd|bwd)_bf16"}
m=/tmp/ncu-$kind$lat
[ -d $m ] || timeout 150 carry/bin/pcc learn $kind --data carry/data/images-idx3-ubyte --latents $lat -o $m > /dev/null
timeout ${NCU_TIMEOUT:-150} ncu --kernel-name "$re" --launch-count ${NCU_LAUNCHES:-40} \
    --section SpeedOfLight --section Occupancy --section WarpStateStats --section LaunchStats --section MemoryWorkloadAnalysis \
    carry/bin/pcc train $m --data carry/data/images-idx3-ubyte --rows 0..512 --epochs 1 --em mini --batch-size 512 \
    --device cuda --precision bf16 --quiet > $OUT/ncu-detail-$kind$lat.txt 2>&1
echo "ncu detail $kind$lat rc=$?"
grep -E "^  [a-z_]+.*\(|Duration|Compute \(SM\) Throughput|Memory Throughput|Achieved Occupancy|Registers Per|Stall|Theoretical Occupancy|DRAM Throughput|L2 Hit|Block Limit" $OUT/ncu-detail-$kind$lat.txt | head -40
