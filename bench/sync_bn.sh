#!/usr/bin/env bash
# The SyncBatchNorm section of the bench report: the same global batches on
# 1 rank x 2 threads and on 2 ranks x 1 thread (the machine's 2 cores either
# way), through OpenMPI. Usage: bench/sync_bn.sh <build dir> <output .md>
set -euo pipefail
build=$1 out=$2
bench=$build/bench/sync_bn_bench
shapes=(--shape 32,64,56,56 --shape 32,256,14,14 --shape 32,2048,7,7)
mpirun=(mpirun --allow-run-as-root --oversubscribe --bind-to none)
{
  echo "## SyncBatchNorm: the cost of the synchronisation"
  echo
  echo "One training step (forward + backward, float32, NCHW) of the same global batch, split evenly"
  echo "over 1 or 2 MPI ranks (\`bench/sync_bn.sh\`, OpenMPI over shared memory). ms: median over 30"
  echo "steps of the slowest rank. *BatchNorm2d, same rows*: each rank's rows without any exchange."
  echo "*Collectives alone*: the three messages of a step (handshake, statistics, backward sums)."
  echo
  echo "| global batch | ranks x threads | rows/rank | SyncBatchNorm step ms | BatchNorm2d, same rows ms | sync cost | collectives alone ms |"
  echo "|---|---|---|---|---|---|---|"
  "${mpirun[@]}" -np 1 "$bench" --threads 2 "${shapes[@]}"
  "${mpirun[@]}" -np 2 "$bench" --threads 1 "${shapes[@]}"
} > "$out"
cat "$out"
