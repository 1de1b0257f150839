#!/usr/bin/env bash
# Installs what bnforge needs to build and test, idempotently:
#   Debian packages with apt-get (only the missing ones; clang and its
#   compiler-rt for the libFuzzer harnesses; the aarch64 and riscv64 cross
#   compilers and qemu-user for the cross builds), then Halide 21 and
#   CMake >= 3.28 from PyPI into the project's virtual environment (.venv).
# Usage: tools/setup.sh [base|dev|bench]   (dev adds golden-data tools;
#   bench adds the peers from PyPI in .bench/: see the end of this file)
set -euo pipefail
cd "$(dirname "$0")/.."

profile=${1:-base}
pkgs=(g++ make ninja-build python3-venv libgtest-dev googletest libbenchmark-dev
      libopenmpi-dev openmpi-bin libdlpack-dev nlohmann-json3-dev
      pocl-opencl-icd ocl-icd-libopencl1 clang libclang-rt-14-dev
      g++-aarch64-linux-gnu g++-riscv64-linux-gnu qemu-user)
case "$profile" in
  dev)   pkgs+=(python3-torch python3-numpy) ;;
  bench) pkgs+=(libjemalloc-dev gnuplot-nox) ;;
esac

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  sudo=; [[ $(id -u) -eq 0 ]] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

venv=.venv
stamp=$venv/.bnforge-setup-v1
if [[ ! -f $stamp ]]; then
  echo "setup: creating $venv with Halide 21 and CMake >= 3.28"
  # Debian's interpreter: the Halide wheel needs a CPython 3.9-3.13, which Debian 12 ships.
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q 'halide==21.*' 'cmake>=3.28,<4.2' 'safetensors' 'numpy'
  touch "$stamp"
fi

# The bench's peers, newest releases from PyPI, outside .venv (a few GB):
#   .bench/venv        torch (its libtorch CPU libraries and headers) and
#                      onednn + onednn-devel (oneDNN 3.13, a SYCL/TBB build);
#   .bench/onednn-omp  onednn-cpu-gomp + onednn-devel-cpu-gomp (oneDNN 3.2,
#                      the newest OpenMP build on PyPI), a prefix of its own:
#                      both wheels install lib/libdnnl.so.3 and include/.
if [[ $profile == bench && ! -f .bench/.bnforge-setup-v1 ]]; then
  echo "setup: installing the bench peers (torch, oneDNN) from PyPI into .bench/"
  /usr/bin/python3 -m venv .bench/venv
  .bench/venv/bin/pip install -q --upgrade pip
  .bench/venv/bin/pip install -q 'torch==2.15.*' 'onednn==2026.1.*' 'onednn-devel==2026.1.*'
  .bench/venv/bin/pip install -q --no-deps --prefix .bench/onednn-omp \
      'onednn-cpu-gomp==2023.2.*' 'onednn-devel-cpu-gomp==2023.2.*'
  touch .bench/.bnforge-setup-v1
fi
