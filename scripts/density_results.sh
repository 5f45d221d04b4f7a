#!/bin/bash
# Usage: cargo build --release && scripts/density_results.sh   (logs and models in $OUT, default /tmp/pcc-density)
set -u
# HCLT on the density datasets: learn on train, EM on train, select on valid, report test.
cd "$(dirname "$0")/.."
P=${PCC:-./target/release/pcc}
D=../shared/data/density
for name in nltcs plants baudio jester bnetflix; do
  OUT=${OUT:-/tmp/pcc-density}
  mkdir -p $OUT
  out=$OUT/$name
  start=$(date +%s)
  $P learn hclt --data $D/$name/$name.train.data --latents 32 --seed 0 -o $out > $OUT/$name.log 2>&1
  $P train $out --data $D/$name/$name.train.data --valid $D/$name/$name.valid.data --epochs 80 --em full --pseudocount 1 --quiet --device cpu >> $OUT/$name.log 2>&1
  $P eval $out --data $D/$name/$name.test.data --json --device cpu >> $OUT/$name.log 2>/dev/null
  echo "seconds $(( $(date +%s) - start ))" >> $OUT/$name.log
done
