#!/usr/bin/env bash
# Packs what bench/gpu/run.sh needs on the GPU machine into
# .gpu_carry/bundle.tar.xz (ignored by git; name `.gpu_carry` in the device
# tool's `carry`). The GPU machine has the NVIDIA driver, CUDA 13, cuDNN,
# NCCL and PyTorch but no Halide, no OpenMPI and no Debian libraries, so the
# bundle holds:
#   bin/  bnforge_tests, bnforge_sync_tests, bnforge_gpu_bench (built here,
#         stripped: the CUDA kernels are PTX inside them); bin/before/ the
#         bnforge_gpu_bench of an older build when one is named, whose
#         per-call numbers run.sh reports beside this build's
#   lib/  the Debian libraries they load that a CUDA image lacks: OpenMPI and
#         its dependencies (MPI is the NCCL bootstrap), found with ldd
#   ompi/ OpenMPI's and PMIx's plugin folders (run.sh points MCA at them)
# Usage: bench/gpu/pack.sh [build dir [older build dir]]   (after `make build`)
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
before=${2:-}
out=.gpu_carry
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib" "$stage/ompi" "$out"

for exe in tests/bnforge_tests tests/bnforge_sync_tests bench/gpu/bnforge_gpu_bench; do
    [[ -x $build/$exe ]] || { echo "pack.sh: $build/$exe is missing (make build first)" >&2; exit 1; }
    strip -o "$stage/bin/$(basename "$exe")" "$build/$exe"
done
if [[ -n $before ]]; then
    [[ -x $before/bench/gpu/bnforge_gpu_bench ]] || { echo "pack.sh: $before has no bnforge_gpu_bench" >&2; exit 1; }
    mkdir -p "$stage/bin/before"
    strip -o "$stage/bin/before/bnforge_gpu_bench" "$before/bench/gpu/bnforge_gpu_bench"
fi

multiarch=/usr/lib/x86_64-linux-gnu
cp -a "$multiarch/openmpi/lib/openmpi3" "$stage/ompi/openmpi"
[[ -d $multiarch/pmix2/lib/pmix ]] && cp -a "$multiarch/pmix2/lib/pmix" "$stage/ompi/pmix"

# Every library the binaries and plugins load, except the C/C++ runtime (the
# GPU machine's is newer) and what the CUDA stack brings itself.
skip='^(linux-vdso|ld-linux|libc\.|libm\.|libdl\.|librt\.|libpthread\.|libstdc\+\+|libgcc_s|libcuda\.|libcudart|libnccl|libcudnn|libcublas)'
{
    find "$stage/bin" -type f -exec ldd {} +
    find "$stage/ompi" -name '*.so' -exec ldd {} \;
} 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | sort -u | while read -r name path; do
    [[ $name =~ $skip ]] && continue
    cp -L "$path" "$stage/lib/$name"
done

tar -C "$stage" -cJf "$out/bundle.tar.xz" bin lib ompi
ls -l "$out/bundle.tar.xz"
