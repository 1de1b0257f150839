#!/usr/bin/env bash
# Regenerates tests/golden/*.safetensors with real PyTorch, then self-checks them.
#
# Runs Debian's /usr/bin/python3 (python3-torch 1.13 + numpy 1.24; install with
# `tools/setup.sh dev`). The project venv's numpy 2 cannot be imported by that
# torch, so safetensors alone is installed into .venv/golden-deps (idempotent:
# only when it is not importable yet) and that directory is the only PYTHONPATH.
#
# Usage: tools/make_golden.sh            generate every case, then check
#        tools/make_golden.sh CASE ...   generate only these cases, then check all
#        tools/make_golden.sh --check    check only
# Env:   PYTHON (default /usr/bin/python3), VENV (default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-/usr/bin/python3}
venv=${VENV:-.venv}
deps=$venv/golden-deps

if ! "$python" -c 'import torch' 2>/dev/null; then
  echo "make_golden: $python cannot import torch; run 'tools/setup.sh dev' (python3-torch)" >&2
  exit 1
fi

if ! PYTHONPATH=$deps "$python" -c 'import safetensors.torch' 2>/dev/null; then
  if [[ ! -x $venv/bin/pip ]]; then
    echo "make_golden: $venv/bin/pip missing; run 'tools/setup.sh' first" >&2
    exit 1
  fi
  echo "make_golden: installing safetensors into $deps"
  rm -rf "$deps"
  "$venv/bin/pip" install -q --no-deps --target "$deps" safetensors
fi

export PYTHONPATH=$deps
if [[ ${1:-} != --check ]]; then
  "$python" tools/make_golden.py "$@"
fi
"$python" tools/check_golden.py
