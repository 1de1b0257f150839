#!/usr/bin/env python3
"""Cross-checks bnforge's safetensors files against the reference Python package.

Run with the project's virtual environment (it has `safetensors` and `numpy`):

  .venv/bin/python tools/check_safetensors.py read FILE [--expect-known]
      Load FILE with safetensors.numpy and print one line per tensor:
      "<name> <dtype> <shape> sum=<float64 sum>". With --expect-known, also
      require exactly the contents `write` produces (exit 1 otherwise).

  .venv/bin/python tools/check_safetensors.py write FILE
      Write a file with known contents for bnforge's loader to check
      (tests/test_safetensors.cpp, SafetensorsInterop.LoadsFileWrittenByPython).

bfloat16 is left out: numpy has no such dtype.
"""
import argparse
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

# Keep in sync with known_contents() in tests/test_safetensors.cpp.
KNOWN_METADATA = {"format": "pt"}


def known_tensors():
    return {
        "a_float32": np.array([1.5, -2.0, 3.25], dtype=np.float32),
        "b_float16": np.array([[0.5, -1.0], [2.0, 1024.0]], dtype=np.float16),
        "c_int64": np.array(7, dtype=np.int64),
    }


def read(path, expect_known):
    tensors = load_file(path)
    for name in sorted(tensors):
        array = tensors[name]
        checksum = float(np.asarray(array, dtype=np.float64).sum())
        print(f"{name} {array.dtype} {tuple(array.shape)} sum={checksum!r}")
    if not expect_known:
        return 0
    return compare_with_known(path, tensors)


def compare_with_known(path, tensors):
    problems = []
    expected = known_tensors()
    if sorted(tensors) != sorted(expected):
        problems.append(f"names {sorted(tensors)}, expected {sorted(expected)}")
    for name, want in expected.items():
        got = tensors.get(name)
        if got is None:
            continue
        if got.dtype != want.dtype or got.shape != want.shape:
            problems.append(f"{name}: {got.dtype} {got.shape}, expected {want.dtype} {want.shape}")
        elif not np.array_equal(got, want):
            problems.append(f"{name}: values {got.tolist()}, expected {want.tolist()}")
    with safe_open(path, framework="numpy") as f:
        metadata = f.metadata() or {}
    if metadata != KNOWN_METADATA:
        problems.append(f"metadata {metadata}, expected {KNOWN_METADATA}")
    for problem in problems:
        print(f"check_safetensors: {path}: {problem}", file=sys.stderr)
    return 1 if problems else 0


def write(path):
    save_file(known_tensors(), path, metadata=KNOWN_METADATA)
    return 0


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    read_cmd = sub.add_parser("read", help="load FILE and print name, dtype, shape and checksum")
    read_cmd.add_argument("file")
    read_cmd.add_argument("--expect-known", action="store_true",
                          help="fail unless FILE holds exactly the contents `write` produces")
    write_cmd = sub.add_parser("write", help="write FILE with known contents")
    write_cmd.add_argument("file")
    args = parser.parse_args(argv)
    if args.command == "read":
        return read(args.file, args.expect_known)
    return write(args.file)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
