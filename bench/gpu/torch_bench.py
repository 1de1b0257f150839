#!/usr/bin/env python3
"""PyTorch's batch norm on the GPU, on the cases bnforge_gpu_bench measured.

Reads bnforge_gpu_bench's JSON lines and times each of its cases (shape,
dtype, layout, input rotation) and ops with its floors, the same way (CUDA
events, 3 warm-ups, the median of --reps), through torch.nn.functional:
batch_norm (eval and training), its backward (autograd of one training
forward, replayed with retain_graph), and the fused op as PyTorch's unfused
sequence relu(batch_norm(x) + z). One JSON object per line.

usage: torch_bench.py BNFORGE_JSONL [--reps N]
"""
import argparse
import json
import statistics
import sys

import torch
import torch.nn.functional as F

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def median_ms(f, reps):
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    call = 0
    for _ in range(3):
        f(call)
        call += 1
    times = []
    for _ in range(reps):
        start.record()
        f(call)
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
        call += 1
    return statistics.median(times)


def cases_of(path):
    """The cases (the copy rows, in order) and each op's floor, from bnforge_gpu_bench's output."""
    cases, floors = [], {}
    with open(path) as f:
        for line in f:
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            if "op" not in r:
                continue
            case = (r["n"], r["c"], r["h"], r["w"], r["dtype"], r["layout"])
            if r["impl"] == "copy":
                cases.append((case, r["copies"]))
            else:
                floors[(case, r["op"])] = r["floor_bytes"]
    return cases, floors


def run_case(case, copies, floors, reps, gen):
    n, c, h, w, dtype_name, layout = case
    dtype = DTYPES[dtype_name]
    fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format

    def rand(mean):
        return [(torch.randn(n, c, h, w, device="cuda", generator=gen) + mean).to(dtype)
                .contiguous(memory_format=fmt) for _ in range(copies)]

    x, dy, z = rand(3.0), rand(0.0), rand(0.0)
    weight = torch.ones(c, device="cuda")
    bias = torch.zeros(c, device="cuda")
    rm, rv = torch.zeros(c, device="cuda"), torch.ones(c, device="cuda")
    base = {"n": n, "c": c, "h": h, "w": w, "dtype": dtype_name, "layout": layout, "impl": "pytorch"}

    def emit(op, ms):
        print(json.dumps(dict(base, op=op, ms=ms, floor_bytes=floors[(case, op)], unsupported="")), flush=True)

    with torch.no_grad():
        emit("eval", median_ms(lambda i: F.batch_norm(x[i % copies], rm, rv, weight, bias, False, 0.1, 1e-5), reps))
        emit("train", median_ms(lambda i: F.batch_norm(x[i % copies], rm, rv, weight, bias, True, 0.1, 1e-5), reps))
        emit("fused", median_ms(
            lambda i: F.relu(F.batch_norm(x[i % copies], rm, rv, weight, bias, True, 0.1, 1e-5) + z[i % copies]),
            reps))
    xg = x[0].detach().requires_grad_(True)
    wg, bg = weight.clone().requires_grad_(True), bias.clone().requires_grad_(True)
    y = F.batch_norm(xg, rm, rv, wg, bg, True, 0.1, 1e-5)
    emit("backward", median_ms(
        lambda i: torch.autograd.grad(y, (xg, wg, bg), dy[i % copies], retain_graph=True), reps))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bnforge_jsonl", help="bnforge_gpu_bench's output: the cases to time")
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    cases, floors = cases_of(args.bnforge_jsonl)
    if not cases:
        sys.exit(f"torch_bench.py: no cases in {args.bnforge_jsonl}")
    torch.backends.cudnn.benchmark = False
    gen = torch.Generator(device="cuda").manual_seed(2026)
    print(json.dumps({"pytorch": torch.__version__, "cudnn_torch": torch.backends.cudnn.version()}), flush=True)
    for case, copies in cases:
        print("  {}x{}x{}x{} {} {}".format(*case), file=sys.stderr, flush=True)
        run_case(case, copies, floors, args.reps, gen)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
