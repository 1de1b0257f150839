#!/usr/bin/python3
"""Self-check of tests/golden/*.safetensors (run like make_golden.py:
PYTHONPATH=.venv/golden-deps /usr/bin/python3 tools/check_golden.py, or
tools/make_golden.sh --check).

For every file: reloads it with safetensors.torch.load_file, checks the
metadata, the exact set of tensor names, dtypes, shapes and sizes, then
replays the whole case (train steps with accumulating grads, then eval) with
torch.nn.functional.batch_norm from the stored init state and inputs and
compares every stored output. For bn2d_momentum step 0 it also recomputes y
and the running stats by hand from the DESIGN.md formulas (biased variance
for normalization, unbiased for running_var). Prints OK per case; exits 1 on
any mismatch.

Usage: check_golden.py [--dir DIR]
"""

import argparse
import glob
import os
import sys

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

sys.dont_write_bytecode = True  # no tools/__pycache__ from importing make_golden
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_golden import CASES, DEFAULT_OUT  # noqa: E402

MAX_FILE = 100 * 1024
MAX_TOTAL = 1024 * 1024
META_KEYS = {"case", "module", "momentum", "eps", "affine", "track_running_stats",
             "steps", "fused", "torch_version"}
RANK = {"BatchNorm1d": (2, 3), "BatchNorm2d": (4,), "BatchNorm3d": (5,)}


class Mismatch(Exception):
    pass


def expect(cond, msg):
    if not cond:
        raise Mismatch(msg)


def close(name, got, want, dtype):
    expect(got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}")
    expect(got.dtype == want.dtype, f"{name}: dtype {got.dtype} != {want.dtype}")
    if got.dtype == torch.int64:
        expect(torch.equal(got, want), f"{name}: {got} != {want}")
        return
    rtol, atol = (1e-5, 1e-6) if dtype == torch.float32 else (1e-2, 1e-2)
    g, w = got.double(), want.double()
    if not torch.allclose(g, w, rtol=rtol, atol=atol):
        err = (g - w).abs().max().item()
        raise Mismatch(f"{name}: max abs diff {err:g}")


def expected_names(meta, steps):
    affine = meta["affine"] == "1"
    track = meta["track_running_stats"] == "1"
    fused = meta["fused"]
    names = set()
    if affine:
        names |= {"weight.init", "bias.init"}
    if track:
        names |= {"running_mean.init", "running_var.init"}
    for tag in [str(k) for k in range(steps)] + ["eval"]:
        names |= {f"x.{tag}", f"dy.{tag}", f"y.{tag}", f"dx.{tag}"}
        if affine:
            names |= {f"weight_grad.{tag}", f"bias_grad.{tag}"}
        if fused == "add_relu":
            names |= {f"addend.{tag}", f"daddend.{tag}"}
        if track and tag != "eval":
            names |= {f"running_mean.{tag}", f"running_var.{tag}", f"num_batches_tracked.{tag}"}
    return names


def replay(t, meta, steps):
    """Recompute every stored output with F.batch_norm from the stored inputs."""
    affine = meta["affine"] == "1"
    track = meta["track_running_stats"] == "1"
    fused = meta["fused"]
    eps = float(meta["eps"])
    momentum = None if meta["momentum"] == "none" else float(meta["momentum"])
    x0 = t["x.0"]
    c = x0.shape[1]
    act_dtype = x0.dtype

    weight = t["weight.init"].clone().requires_grad_() if affine else None
    bias = t["bias.init"].clone().requires_grad_() if affine else None
    rm = t["running_mean.init"].clone() if track else None
    rv = t["running_var.init"].clone() if track else None
    nbt = torch.tensor(0, dtype=torch.int64)
    if affine:
        expect(weight.shape == (c,) and bias.shape == (c,), "param shape")
    if track:
        expect(rm.shape == (c,) and rv.shape == (c,), "running stat shape")
        expect(bool((rv > 0).all()), "running_var.init not positive")

    for tag in [str(k) for k in range(steps)] + ["eval"]:
        training = tag != "eval"
        x = t[f"x.{tag}"].clone().requires_grad_()
        expect(x.dtype == act_dtype, f"x.{tag} dtype")
        if training and track:
            nbt += 1
            factor = 1.0 / float(nbt) if momentum is None else momentum
        else:
            factor = 0.0
        # PyTorch: batch statistics in eval too when there are no running buffers
        use_batch = training or not track
        y = F.batch_norm(x, rm, rv, weight, bias, use_batch, factor, eps)
        addend = None
        if fused == "add_relu":
            addend = t[f"addend.{tag}"].clone().requires_grad_()
            y = F.relu(y + addend)
        elif fused == "relu":
            y = F.relu(y)
        y.backward(t[f"dy.{tag}"])
        close(f"y.{tag}", y.detach(), t[f"y.{tag}"], act_dtype)
        close(f"dx.{tag}", x.grad, t[f"dx.{tag}"], act_dtype)
        if addend is not None:
            close(f"daddend.{tag}", addend.grad, t[f"daddend.{tag}"], act_dtype)
        if affine:
            close(f"weight_grad.{tag}", weight.grad, t[f"weight_grad.{tag}"], torch.float32)
            close(f"bias_grad.{tag}", bias.grad, t[f"bias_grad.{tag}"], torch.float32)
        if track and training:
            close(f"running_mean.{tag}", rm, t[f"running_mean.{tag}"], torch.float32)
            close(f"running_var.{tag}", rv, t[f"running_var.{tag}"], torch.float32)
            close(f"num_batches_tracked.{tag}", nbt, t[f"num_batches_tracked.{tag}"], torch.float32)


def by_hand_first_step(t, meta):
    """bn2d_momentum step 0 from the DESIGN.md formulas, float64."""
    x = t["x.0"].double()
    m = float(meta["momentum"])
    eps = float(meta["eps"])
    dims = [0] + list(range(2, x.dim()))
    count = x.numel() // x.shape[1]
    mean = x.mean(dim=dims)
    var_biased = ((x - mean.view(1, -1, 1, 1)) ** 2).mean(dim=dims)
    var_unbiased = var_biased * count / (count - 1)
    w, b = t["weight.init"].double(), t["bias.init"].double()
    y = ((x - mean.view(1, -1, 1, 1)) / torch.sqrt(var_biased.view(1, -1, 1, 1) + eps)
         * w.view(1, -1, 1, 1) + b.view(1, -1, 1, 1))
    rm = (1 - m) * t["running_mean.init"].double() + m * mean
    rv = (1 - m) * t["running_var.init"].double() + m * var_unbiased
    for name, got, want in (("y.0", y, t["y.0"]), ("running_mean.0", rm, t["running_mean.0"]),
                            ("running_var.0", rv, t["running_var.0"])):
        err = (got - want.double()).abs().max().item()
        expect(err < 1e-5, f"by-hand {name}: max abs diff {err:g}")


def check_file(path):
    t = load_file(path)
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
    missing = META_KEYS - set(meta)
    expect(not missing, f"metadata missing {sorted(missing)}")
    expect(all(isinstance(v, str) for v in meta.values()), "non-string metadata")
    name = meta["case"]
    expect(os.path.basename(path) == f"{name}.safetensors", f"file name vs case {name!r}")
    expect(meta["fused"] in ("none", "relu", "add_relu"), "fused value")
    expect(meta["affine"] in ("0", "1") and meta["track_running_stats"] in ("0", "1"), "flags")
    steps = int(meta["steps"])
    expect(steps >= 1, "steps")

    want = expected_names(meta, steps)
    got = set(t)
    expect(got == want, f"tensor names: missing {sorted(want - got)}, unexpected {sorted(got - want)}")
    for k, v in t.items():
        expect(v.is_contiguous(), f"{k} not contiguous")
        if k.startswith("num_batches_tracked."):
            expect(v.dtype == torch.int64 and v.shape == (), f"{k}: {v.dtype} {tuple(v.shape)}")
        else:
            expect(v.dtype in (torch.float32, torch.bfloat16), f"{k}: dtype {v.dtype}")
    x0 = t["x.0"]
    expect(x0.dim() in RANK[meta["module"]], f"x rank {x0.dim()} for {meta['module']}")
    for k, v in t.items():
        if k.split(".")[0] in ("x", "dy", "y", "dx", "addend", "daddend"):
            expect(v.shape == x0.shape, f"{k} shape {tuple(v.shape)} != {tuple(x0.shape)}")

    replay(t, meta, steps)
    if name == "bn2d_momentum":
        by_hand_first_step(t, meta)
    return name


def main():
    ap = argparse.ArgumentParser(description="self-check of the golden files")
    ap.add_argument("--dir", default=DEFAULT_OUT)
    args = ap.parse_args()
    torch.set_num_threads(1)

    paths = sorted(glob.glob(os.path.join(args.dir, "*.safetensors")))
    if not paths:
        print(f"check_golden: no .safetensors files in {args.dir}")
        return 1
    failed = 0
    total = 0
    seen = set()
    for path in paths:
        size = os.path.getsize(path)
        total += size
        try:
            expect(size < MAX_FILE, f"{size} bytes >= {MAX_FILE}")
            name = check_file(path)
            seen.add(name)
            print(f"OK   {name} ({size} bytes)")
        except Mismatch as e:
            failed += 1
            print(f"FAIL {os.path.basename(path)}: {e}")
    for name in CASES:
        if name not in seen:
            print(f"note: no file for case {name} (skipped by make_golden?)")
    if "bn2d_momentum" not in seen:
        failed += 1
        print("FAIL bn2d_momentum.safetensors is required")
    if total >= MAX_TOTAL:
        failed += 1
        print(f"FAIL total size {total} bytes >= {MAX_TOTAL}")
    print(f"check_golden: {len(seen)}/{len(paths)} files OK, {total} bytes total")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
