#!/usr/bin/env bash
# Prints the directory of HalideConfig.cmake inside the venv's Halide wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(.venv/bin/python -c 'import halide; print(halide.install_dir())')
dirname "$(find "$root" -name HalideConfig.cmake -print -quit)"
