#!/usr/bin/env python3
"""PyTorch's batch norm on the GPU, on the cases of bnforge_gpu_bench.

The same shapes, dtypes, layouts, ops, timing (CUDA events, 3 warm-ups, the
median of --reps) and input rotation as bench/gpu/gpu_bench.cpp, through
torch.nn.functional: batch_norm (eval and training), its backward (autograd
of one training forward, replayed with retain_graph), and the fused op as
PyTorch's unfused sequence relu(batch_norm(x) + z). One JSON object per line.
"""
import argparse
import json
import math
import statistics
import sys

import torch
import torch.nn.functional as F

RESNET50 = [(64, 112), (64, 56), (128, 56), (256, 56), (128, 28), (256, 28), (512, 28),
            (256, 14), (512, 14), (1024, 14), (512, 7), (2048, 7)]
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
L2_BYTES = 50e6


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


def run_case(n, c, side, dtype_name, layout, reps, gen):
    dtype = DTYPES[dtype_name]
    fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format
    numel = n * c * side * side
    nbytes = numel * torch.tensor([], dtype=dtype).element_size()
    copies = int(min(64, max(1, math.ceil(3 * L2_BYTES / nbytes))))

    def rand(mean):
        return [(torch.randn(n, c, side, side, device="cuda", generator=gen) + mean).to(dtype)
                .contiguous(memory_format=fmt) for _ in range(copies)]

    x, dy, z = rand(3.0), rand(0.0), rand(0.0)
    weight = torch.ones(c, device="cuda")
    bias = torch.zeros(c, device="cuda")
    rm, rv = torch.zeros(c, device="cuda"), torch.ones(c, device="cuda")
    base = {"n": n, "c": c, "h": side, "w": side, "dtype": dtype_name, "layout": layout, "impl": "pytorch"}
    floors = {"eval": 2 * nbytes, "train": 3 * nbytes, "backward": 5 * nbytes, "fused": 4 * nbytes}

    def emit(op, ms):
        print(json.dumps(dict(base, op=op, ms=ms, floor_bytes=floors[op], unsupported="")), flush=True)

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
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    torch.backends.cudnn.benchmark = False
    gen = torch.Generator(device="cuda").manual_seed(2026)
    batches, shapes, reps = ([8], [(64, 28), (512, 7)], 3) if args.quick else ([32, 256], RESNET50, args.reps)
    print(json.dumps({"pytorch": torch.__version__, "cudnn_torch": torch.backends.cudnn.version()}), flush=True)
    for n in batches:
        for c, side in shapes:
            for dtype_name in DTYPES:
                for layout in ("nchw", "nhwc"):
                    print(f"  {n}x{c}x{side}x{side} {dtype_name} {layout}", file=sys.stderr, flush=True)
                    run_case(n, c, side, dtype_name, layout, reps, gen)
                    torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
