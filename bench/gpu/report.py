#!/usr/bin/env python3
"""The GPU bench's report: bnforge_gpu_bench's and torch_bench.py's JSON lines
into one markdown file, with the targets of issue 16 checked case by case.

Per case (shape, dtype, layout) and op: bnforge's time, its share of the
floor (the op's fewest bytes at the measured device-to-device copy
bandwidth), and its speed-up over cuDNN, PyTorch and each autoscheduled
bnforge set (time of the other / time of bnforge; > 1 means bnforge is faster).
"""
import argparse
import json
import statistics
from collections import defaultdict

OPS = ("eval", "train", "backward", "fused")


def load(paths):
    rows, per_call, meta = [], [], {}
    for path in paths:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line.startswith("{"):
                    continue
                obj = json.loads(line)
                if "per_call" in obj:
                    per_call.append(obj)
                elif "op" in obj:
                    rows.append(obj)
                else:
                    meta.update(obj)
    return rows, per_call, meta


def key(r):
    return (r["n"], r["c"], r["h"], r["dtype"], r["layout"])


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def per_call_table(per_call, check):
    """bnforge_gpu_bench --per-call: microseconds per call on small shapes, every impl side by side."""
    us = defaultdict(dict)  # (shape, op) -> impl -> us
    for r in per_call:
        us[((r["n"], r["c"], r["h"], r["w"]), r.get("layout", "NCHW"), r["op"])][r["impl"]] = r["us"]
    impls = sorted({r["impl"] for r in per_call}, key=lambda i: (i != "bnforge", i))
    out = ["## per call", "",
           "float32, the same inputs every call (in L2): wall-clock µs per call over blocks of 100 calls "
           "ended by a device sync (`bnforge_gpu_bench --per-call`); host-side costs count.", ""]
    out.append("| shape | op | " + " | ".join(f"{i} µs" for i in impls) + " |")
    out.append("|" + "---|" * (len(impls) + 2))
    for (shape, layout, op), t in sorted(us.items(), key=lambda kv: (kv[0][0][0] != 32, -kv[0][0][1], kv[0][1:])):
        label = "x".join(map(str, shape)) + " " + layout
        out.append(f"| {label} | {op} | " + " | ".join(fmt(t.get(i), ".1f") for i in impls) + " |")
        if shape == (32, 2048, 7, 7) and layout == "NCHW" and t.get("bnforge") and t.get("cudnn"):
            extra = t["bnforge"] - t["cudnn"]
            check("per-call at 32x2048x7x7 within 5 µs of cuDNN", extra <= 5, f"{label} {op}", f"+{extra:.1f} µs")
    return out + [""]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("jsonl", nargs="+")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    rows, per_call, meta = load(args.jsonl)

    times = defaultdict(dict)  # (case, op) -> impl -> ms (None: unsupported)
    copy_gbs, floor = {}, {}
    for r in rows:
        times[(key(r), r["op"])][r["impl"]] = r["ms"]
        if r["impl"] == "copy":
            copy_gbs[key(r)] = r["copy_gbs"]
        elif r["op"] in OPS:
            floor[(key(r), r["op"])] = r["floor_bytes"]
    autoscheduled = sorted({r["impl"] for r in rows if r["impl"].startswith("bnforge-")})

    out = [f"# bnforge on {meta.get('device', '?')}: GPU batch norm vs cuDNN, PyTorch and the copy floor", ""]
    out.append(f"{meta.get('sms', '?')} SMs; cuDNN {meta.get('cudnn', '?')} in-process; "
               f"PyTorch {meta.get('pytorch', '?')} (its cuDNN {meta.get('cudnn_torch', meta.get('cudnn', '?'))}). "
               "Made by `bench/gpu/run.sh` (one call of the device tool); medians of CUDA-event timings, "
               "inputs rotated past 3x the L2.")
    out.append("")
    out.append("Floor: eval |x|+|y|, train 2|x|+|y|, backward 2|x|+2|dy|+|dx|, fused 2|x|+|z|+|y|, at the copy "
               "bandwidth of the same case. `vs X` = X's time / bnforge's (> 1: bnforge faster).")
    out.append("")

    checks = defaultdict(lambda: [0, 0, []])  # target -> [met, total, misses]

    def check(name, ok, case_label, detail):
        c = checks[name]
        c[1] += 1
        if ok:
            c[0] += 1
        else:
            c[2].append(f"{case_label}: {detail}")

    for op in OPS:
        out.append(f"## {op}")
        out.append("")
        header = ["case", "copy GB/s", "bnforge ms", "% floor", "vs cuDNN", "vs PyTorch"] + \
                 [f"vs {a}" for a in autoscheduled]
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "---|" * len(header))
        for (case, o), impls in sorted(times.items()):
            if o != op or "bnforge" not in impls:
                continue
            n, c, h, dtype, layout = case
            label = f"{n}x{c}x{h}x{h} {dtype} {layout}"
            ms = impls.get("bnforge")
            gbs = copy_gbs.get(case)
            pct = floor[(case, op)] / (gbs * 1e6) / ms * 100 if ms and gbs else None
            ratio = {i: (impls[i] / ms if ms and impls.get(i) else None) for i in impls}
            cells = [label, fmt(gbs, ".0f"), fmt(ms, ".3f"), fmt(pct, ".0f"), fmt(ratio.get("cudnn"), ".2f"),
                     fmt(ratio.get("pytorch"), ".2f")] + [fmt(ratio.get(a), ".2f") for a in autoscheduled]
            out.append("| " + " | ".join(cells) + " |")
            if pct is None:
                continue
            if op == "eval":
                check("eval >= 85% of copy bandwidth", pct >= 85, label, f"{pct:.0f}%")
            elif op in ("train", "backward"):
                check(f"{op} >= 80% of floor", pct >= 80, label, f"{pct:.0f}%")
                if ratio.get("cudnn") is not None:
                    check(f"{op} >= 1.1x cuDNN", ratio["cudnn"] >= 1.1, label, f"{ratio['cudnn']:.2f}x")
            elif op == "fused":
                if ratio.get("cudnn") is not None:
                    check("fused >= 1.3x cuDNN (where cuDNN fuses)", ratio["cudnn"] >= 1.3, label,
                          f"{ratio['cudnn']:.2f}x")
                elif ratio.get("pytorch") is not None:
                    check("fused >= 2x PyTorch's unfused sequence (elsewhere)", ratio["pytorch"] >= 2, label,
                          f"{ratio['pytorch']:.2f}x")
        out.append("")

    if per_call:
        out += per_call_table(per_call, check)

    out.append("## Targets")
    out.append("")
    out.append("| target | met | worst misses |")
    out.append("|---|---|---|")
    for name, (met, total, misses) in checks.items():
        out.append(f"| {name} | {met}/{total} | {'; '.join(misses[:4])}{' …' if len(misses) > 4 else ''} |")
    out.append("")
    speedups = [times[k]["cudnn"] / times[k]["bnforge"] for k in times
                if times[k].get("cudnn") and times[k].get("bnforge")]
    if speedups:
        out.append(f"Median speed-up over cuDNN across all ops and cases: {statistics.median(speedups):.2f}x.")
    with open(args.out, "w") as f:
        f.write("\n".join(out) + "\n")
    print("\n".join(out[-(len(checks) + 6):]))


if __name__ == "__main__":
    main()
