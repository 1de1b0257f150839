#!/usr/bin/env bash
# The whole GPU check, in one call of the device tool (README, "GPUs"):
#
#   here:        make build && bench/gpu/pack.sh
#   device tool: run  command "bench/gpu/run.sh"  carry [".gpu_carry"]
#
# On the GPU machine it unpacks the bundle, then
#   1. runs every CUDA test of bnforge_tests (device modules against the CPU,
#      the PyTorch golden replays on CUDA tensors, the GPU schedule sets, DLPack);
#   2. runs the NCCL world of one (SyncBatchNorm on CUDA tensors, issue 4);
#   3. measures the per-call cost on small shapes against cuDNN (and of the
#      older build packed beside this one, if any), and times each kernel of
#      a training step with Nsight Compute where ncu is installed;
#   4. benchmarks bnforge against cuDNN (in-process), PyTorch and a D2D copy;
#   5. writes the report, bench/results/<date>-<device>-gpu.md.
# Everything lands in $OUT (the device tool brings it back): tests.log,
# nccl.log, per_call.jsonl, kernels.csv, bnforge.jsonl, pytorch.jsonl and
# the report (8 files: the most the device tool brings back).
# Each step has a time limit so the whole run fits one call of the device
# tool with time to spare for a rerun (a task's GPU time is 15 minutes); a
# bench cut short keeps what it measured (one JSON line per measurement).
# Exit status: the number of failed steps. Options: --quick (a smoke run of
# the benches).
set -uo pipefail
cd "$(dirname "$0")/../.."
quick="" reps=--reps=10
[[ ${1:-} == --quick ]] && quick=--quick reps=--reps=3
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
root=$(mktemp -d)
tar -C "$root" -xJf .gpu_carry/bundle.tar.xz || { echo "run.sh: no bundle (bench/gpu/pack.sh)" >&2; exit 1; }

# The CUDA stack's libraries: the toolkit's, and those of the pip packages PyTorch brings.
nvidia_libs=$(python3 -c 'import glob, os, nvidia; print(":".join(sorted(glob.glob(os.path.join(list(nvidia.__path__)[0], "*", "lib")))))' 2>/dev/null || true)
export LD_LIBRARY_PATH="$root/lib:/usr/local/cuda/lib64:${nvidia_libs}:${LD_LIBRARY_PATH:-}"
# OpenMPI as a singleton (no mpirun, no daemon), its plugins from the bundle.
export OMPI_MCA_ess_singleton_isolated=1 OMPI_MCA_mca_base_component_path="$root/ompi/openmpi"
export PMIX_MCA_mca_base_component_path="$root/ompi/pmix" OMPI_MCA_mca_base_component_show_load_errors=0
export BNFORGE_GOLDEN_DIR=$PWD/tests/golden

failed=0
step() {  # step <name> <log file> <seconds> <command...>
    local name=$1 log=$2 limit=$3 start=$SECONDS
    shift 3
    echo "== $name"
    timeout -k 5 "$limit" "$@" 2>&1 | tee "$log"
    local rc=${PIPESTATUS[0]}
    if ((rc == 0)); then
        echo "== $name: ok ($((SECONDS - start)) s)"
    else
        ((rc == 124 || rc == 137)) && echo "== $name: cut at its limit of $limit s"
        echo "== $name: FAILED (exit $rc)"
        failed=$((failed + 1))
    fi
}

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$OUT/device.txt"
step "CUDA tests" "$OUT/tests.log" 120 "$root/bin/bnforge_tests" --gtest_brief=1 \
    --gtest_filter='*cuda*:*Cuda*'
step "NCCL world of one" "$OUT/nccl.log" 40 "$root/bin/bnforge_sync_tests" --gtest_filter='NcclProcessGroup.*:ProcessGroup.*'
step "per call" "$OUT/per_call.jsonl" 30 "$root/bin/bnforge_gpu_bench" --per-call
if [[ -x $root/bin/before/bnforge_gpu_bench ]]; then
    step "per call, older build" "$root/before.jsonl" 30 "$root/bin/before/bnforge_gpu_bench" --per-call
    sed 's/"impl": "bnforge"/"impl": "bnforge-before"/' "$root/before.jsonl" >> "$OUT/per_call.jsonl"
fi
# Where a step's time goes: each kernel of three training steps (forward +
# backward) timed by Nsight Compute, on the shapes that show launch-bound,
# NHWC and bandwidth-bound behaviour (skipped where ncu is missing).
if command -v ncu > /dev/null; then
    for shape in "32x2048x7x7" "32x256x56x56 --nhwc" "32x64x112x112"; do
        # shellcheck disable=SC2086  # the shape's options split on purpose
        step "kernel times $shape" "$root/ncu.log" 40 ncu --clock-control none --csv --print-units base \
            --metrics gpu__time_duration.sum,launch__grid_size,launch__block_size,launch__registers_per_thread \
            --launch-count 45 "$root/bin/bnforge_gpu_bench" --per-call --shapes=$shape
        { echo "# $shape"; grep '^"' "$root/ncu.log"; } >> "$OUT/kernels.csv"
    done
fi
step "bnforge and cuDNN" "$OUT/bnforge.jsonl" 200 "$root/bin/bnforge_gpu_bench" $quick $reps
step "PyTorch" "$OUT/pytorch.jsonl" 80 python3 bench/gpu/torch_bench.py "$OUT/bnforge.jsonl" $reps

device=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr -c 'A-Za-z0-9\n' '-' | tr -s '-' | sed 's/-$//')
report="$OUT/$(date -u +%F)-${device:-gpu}-gpu${quick:+-quick}.md"
grep -h '^{' "$OUT/bnforge.jsonl" "$OUT/pytorch.jsonl" "$OUT/per_call.jsonl" > "$root/all.jsonl"
step "report" "$root/report.log" 60 python3 bench/gpu/report.py "$root/all.jsonl" --out "$report"
echo "run.sh: $failed step(s) failed; results in $OUT"
exit $failed
