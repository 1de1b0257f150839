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
#   3. benchmarks bnforge against cuDNN (in-process), PyTorch and a D2D copy;
#   4. writes the report, bench/results/<date>-<device>-gpu.md.
# Everything lands in $OUT (the device tool brings it back): tests.log,
# nccl.log, bnforge.jsonl, pytorch.jsonl and the report. Exit status: the
# number of failed steps. Options: --quick (a smoke run of the benches).
set -uo pipefail
cd "$(dirname "$0")/../.."
quick=""
[[ ${1:-} == --quick ]] && quick=--quick
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
step() {  # step <name> <log file> <command...>
    local name=$1 log=$2
    shift 2
    echo "== $name"
    if "$@" 2>&1 | tee "$log"; then echo "== $name: ok"; else echo "== $name: FAILED"; failed=$((failed + 1)); fi
}

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$OUT/device.txt"
step "CUDA tests" "$OUT/tests.log" "$root/bin/bnforge_tests" --gtest_brief=1 \
    --gtest_filter='*cuda*:*Cuda*'
step "NCCL world of one" "$OUT/nccl.log" "$root/bin/bnforge_sync_tests" --gtest_filter='NcclProcessGroup.*:ProcessGroup.*'
step "bnforge and cuDNN" "$OUT/bnforge.jsonl" "$root/bin/bnforge_gpu_bench" $quick
step "PyTorch" "$OUT/pytorch.jsonl" python3 bench/gpu/torch_bench.py "$OUT/bnforge.jsonl" ${quick:+--reps=3}

device=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr -c 'A-Za-z0-9\n' '-' | tr -s '-' | sed 's/-$//')
report="$OUT/$(date -u +%F)-${device:-gpu}-gpu${quick:+-quick}.md"
grep -h '^{' "$OUT/bnforge.jsonl" "$OUT/pytorch.jsonl" > "$root/all.jsonl"
step "report" "$root/report.log" python3 bench/gpu/report.py "$root/all.jsonl" --out "$report"
echo "run.sh: $failed step(s) failed; results in $OUT"
exit $failed
