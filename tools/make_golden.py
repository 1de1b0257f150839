#!/usr/bin/python3
"""Generate bnforge's golden batch-norm data with real PyTorch.

Each case is one safetensors file under tests/golden/ (see
tests/golden/README.md for the naming scheme). The numbers come from
torch.nn.BatchNorm{1,2,3}d in train() mode (forward, then backward with a
random upstream gradient dy; parameter .grad accumulates across steps and is
never zeroed), followed by one eval() step with fresh inputs.

Interpreter: Debian's /usr/bin/python3 with Debian's python3-torch (1.13) and
numpy 1.24. The project venv (.venv) has numpy 2, which Debian's torch cannot
import, so safetensors is installed on its own into .venv/golden-deps and put
on PYTHONPATH (that directory holds ONLY safetensors):

    .venv/bin/pip install --no-deps --target .venv/golden-deps safetensors
    PYTHONPATH=.venv/golden-deps /usr/bin/python3 tools/make_golden.py

tools/make_golden.sh does both (the install only when it is missing), then
runs tools/check_golden.py. Reruns are bit-reproducible: every case has its
own torch.manual_seed and torch runs single-threaded.

Usage: make_golden.py [--out DIR] [CASE ...]   (default: all cases)
"""

import argparse
import json
import os
import struct
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(ROOT, "tests", "golden")

# name: (seed, module, C, x shape, steps, kwargs, fused, dtype)
#   kwargs go to the nn.BatchNormNd constructor; fused in none|relu|add_relu.
CASES = {
    "bn2d_momentum":     (101, "BatchNorm2d", 3, (4, 3, 5, 7), 3, dict(momentum=0.1, eps=1e-5), "none", torch.float32),
    "bn2d_cumulative":   (102, "BatchNorm2d", 3, (4, 3, 5, 7), 4, dict(momentum=None), "none", torch.float32),
    "bn2d_eps_momentum": (103, "BatchNorm2d", 5, (2, 5, 3, 3), 2, dict(momentum=0.3, eps=1e-3), "none", torch.float32),
    "bn1d_rank2":        (104, "BatchNorm1d", 5, (8, 5), 3, dict(), "none", torch.float32),
    "bn1d_rank3":        (105, "BatchNorm1d", 3, (4, 3, 9), 2, dict(), "none", torch.float32),
    "bn3d_rank5":        (106, "BatchNorm3d", 3, (2, 3, 3, 4, 5), 2, dict(), "none", torch.float32),
    "bn2d_no_affine":    (107, "BatchNorm2d", 3, (4, 3, 5, 7), 2, dict(affine=False), "none", torch.float32),
    "bn2d_no_track":     (108, "BatchNorm2d", 3, (4, 3, 5, 7), 2, dict(track_running_stats=False), "none", torch.float32),
    "bn2d_c1":           (109, "BatchNorm2d", 1, (3, 1, 6, 5), 2, dict(), "none", torch.float32),
    "fused_add_relu":    (110, "BatchNorm2d", 4, (3, 4, 5, 6), 3, dict(momentum=0.1), "add_relu", torch.float32),
    "fused_relu":        (111, "BatchNorm2d", 4, (3, 4, 5, 6), 2, dict(momentum=0.1), "relu", torch.float32),
    "bn2d_bf16":         (112, "BatchNorm2d", 3, (4, 3, 5, 7), 2, dict(), "none", torch.bfloat16),
}

DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16"}


def channel_view(v, ndim):
    """(C,) -> (1, C, 1, ...) for broadcasting over an (N, C, ...) tensor."""
    return v.view(1, -1, *([1] * (ndim - 2)))


def draw_input(shape, dtype):
    """randn * scale + offset with per-channel scale in [0.5, 2] and
    per-channel mean of magnitude [0.5, 3] with a random sign (never zero)."""
    c = shape[1]
    scale = 0.5 + 1.5 * torch.rand(c)
    sign = torch.where(torch.rand(c) < 0.5, -1.0, 1.0)
    offset = sign * (0.5 + 2.5 * torch.rand(c))
    x = torch.randn(shape) * channel_view(scale, len(shape)) + channel_view(offset, len(shape))
    return x.to(dtype)


def snap(t):
    """A contiguous, detached copy for saving."""
    return t.detach().clone().contiguous()


def canonicalize_header(path):
    """save_file writes __metadata__ in Rust HashMap order, which changes from
    run to run; rewrite the header with the metadata keys sorted so that reruns
    are byte-identical. Tensor entries and data are left exactly as written."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    raw = blob[8:8 + n]
    header = json.loads(raw, object_pairs_hook=dict)
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":")).encode("ascii")
    assert len(text) == len(raw.rstrip(b" ")), "header length changed"
    text += b" " * (n - len(text))
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(blob[:8] + text + blob[8 + n:])
    os.replace(tmp, path)


def supports_bf16_train():
    """Does this torch's CPU batch_norm do training forward+backward with a
    bfloat16 input and float32 weight/bias/running stats?"""
    try:
        x = torch.randn(2, 3, 2, 2).to(torch.bfloat16).requires_grad_()
        m = nn.BatchNorm2d(3)
        y = m(x)
        y.backward(torch.randn_like(y))
        return (y.dtype == torch.bfloat16 and x.grad is not None
                and x.grad.dtype == torch.bfloat16
                and m.weight.grad.dtype == torch.float32
                and m.running_mean.dtype == torch.float32)
    except Exception as e:  # noqa: BLE001 - any failure means "unsupported"
        print(f"make_golden: bfloat16 batch_norm unsupported here: {e}", file=sys.stderr)
        return False


def run_case(name, spec):
    seed, module_name, c, shape, steps, kwargs, fused, dtype = spec
    torch.manual_seed(seed)
    bn = getattr(nn, module_name)(c, **kwargs)
    affine = bn.affine
    track = bn.track_running_stats
    out = {}

    with torch.no_grad():
        if affine:
            bn.weight.copy_(1.0 + (torch.rand(c) - 0.5))  # 1 +- 0.5
            bn.bias.copy_(torch.randn(c) * 0.3)
            out["weight.init"] = snap(bn.weight)
            out["bias.init"] = snap(bn.bias)
        if track:
            bn.running_mean.copy_(torch.randn(c) * 0.5)
            bn.running_var.copy_(0.5 + 1.5 * torch.rand(c))  # positive
            out["running_mean.init"] = snap(bn.running_mean)
            out["running_var.init"] = snap(bn.running_var)

    def step(tag):
        x = draw_input(shape, dtype).requires_grad_()
        addend = None
        if fused == "add_relu":
            addend = draw_input(shape, dtype).requires_grad_()
        z = bn(x)
        if fused == "add_relu":
            z = F.relu(z + addend)
        elif fused == "relu":
            z = F.relu(z)
        dy = torch.randn(shape).to(dtype)
        z.backward(dy)
        out[f"x.{tag}"] = snap(x)
        out[f"dy.{tag}"] = snap(dy)
        out[f"y.{tag}"] = snap(z)
        out[f"dx.{tag}"] = snap(x.grad)
        if addend is not None:
            out[f"addend.{tag}"] = snap(addend)
            out[f"daddend.{tag}"] = snap(addend.grad)
        if affine:
            out[f"weight_grad.{tag}"] = snap(bn.weight.grad)
            out[f"bias_grad.{tag}"] = snap(bn.bias.grad)

    bn.train()
    for k in range(steps):
        step(str(k))
        if track:
            out[f"running_mean.{k}"] = snap(bn.running_mean)
            out[f"running_var.{k}"] = snap(bn.running_var)
            out[f"num_batches_tracked.{k}"] = snap(bn.num_batches_tracked)
    bn.eval()
    step("eval")

    momentum = bn.momentum
    metadata = {
        "case": name,
        "module": module_name,
        "momentum": "none" if momentum is None else repr(float(momentum)),
        "eps": repr(float(bn.eps)),
        "affine": "1" if affine else "0",
        "track_running_stats": "1" if track else "0",
        "steps": str(steps),
        "fused": fused,
        "dtype": DTYPE_NAMES[dtype],
        "torch_version": torch.__version__,
    }
    for k, t in out.items():
        assert t.is_contiguous(), k
        assert t.dtype in (torch.float32, torch.bfloat16, torch.int64), (k, t.dtype)
    return out, metadata


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=DEFAULT_OUT, help="output directory (default: tests/golden)")
    ap.add_argument("cases", nargs="*", help="case names (default: all)")
    args = ap.parse_args()

    unknown = [c for c in args.cases if c not in CASES]
    if unknown:
        ap.error(f"unknown case(s): {', '.join(unknown)}; known: {', '.join(CASES)}")
    names = args.cases or list(CASES)

    torch.set_num_threads(1)  # bit-reproducible reductions
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)

    bf16_ok = None
    for name in names:
        spec = CASES[name]
        if spec[7] == torch.bfloat16:
            if bf16_ok is None:
                bf16_ok = supports_bf16_train()
            if not bf16_ok:
                print(f"make_golden: SKIP {name}: bfloat16 batch_norm training unsupported by torch {torch.__version__}")
                continue
        tensors, metadata = run_case(name, spec)
        path = os.path.join(args.out, f"{name}.safetensors")
        save_file(tensors, path, metadata=metadata)
        canonicalize_header(path)
        print(f"make_golden: wrote {os.path.relpath(path, ROOT)} "
              f"({len(tensors)} tensors, {os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
