#!/usr/bin/env bash
# A DeadPeer case: runs tests/dead_peer.cpp under mpirun and checks that the
# job ends, with a failure status (the launcher passes on the killed rank's
# 128 + 9, or the survivors' MPI_Abort), within a bound, and how.
# Usage: dead_peer.sh <mpiexec> <dead_peer binary> <ranks> <kill|exit> <timeout ms> <bound s>
set -uo pipefail
mpiexec=$1 exe=$2 ranks=$3 how=$4 timeout_ms=$5 bound=$6
start=$(date +%s%N)
out=$(timeout -k 5 $((bound * 3)) "$mpiexec" -np "$ranks" --allow-run-as-root --oversubscribe "$exe" "$how" "$timeout_ms" 2>&1)
status=$?
elapsed_ms=$((($(date +%s%N) - start) / 1000000))
elapsed="$((elapsed_ms / 1000)).$(printf %03d $((elapsed_ms % 1000)))"
echo "$out" | grep -E '^rank [0-9]+:' | sort
echo "DeadPeer $how, $ranks ranks, timeout ${timeout_ms} ms: the job ended with status $status after ${elapsed} s (bound ${bound} s)"
if ((status == 0)); then echo "FAIL: the job reported success"; exit 1; fi
if ((elapsed_ms >= (bound * 3 - 1) * 1000)); then echo "FAIL: the job hung until the script's own limit"; exit 1; fi
if echo "$out" | grep -q "all steps done"; then echo "FAIL: a rank finished without noticing"; exit 1; fi
if ((elapsed_ms > bound * 1000)); then echo "FAIL: slower than the bound"; exit 1; fi
echo "PASS"
