#!/usr/bin/env python3
"""Report generator for the bnforge CPU benchmark (bench/bench_main.cpp).

    python3 bench/report.py <bench.json> [<bench.json> ...] [--out-dir bench/results]
                            [--analysis bench/analysis.md] [--section <file.md>]
                            [--command "make bench"]

e.g. (what `make bench` runs)
    python3 bench/report.py dram.json dram-onednn-omp.json cache.json cache-onednn-omp.json

Reads Google Benchmark's JSON (--benchmark_out=<file> --benchmark_out_format=json),
one file per benchmark process and regime, and writes
  * stdout: one fixed-width table per op and regime (fits a 110-column
    terminal), and one summary line per target criterion;
  * <out-dir>/<date>-<machine>.md: context, tables per regime, target checks,
    autoscheduler comparison, optional hand-written analysis;
  * <out-dir>/<date>-<machine>.png: % of floor per case in the DRAM regime,
    one panel per op (gnuplot), with the data (.dat) and the gnuplot script
    (.gp) that remake it (`cd <out-dir> && gnuplot <date>-<machine>.gp`).

Files and regimes. Each file's context names its "regime": "dram" (inputs
rotated past 3× the LLC) or "cache" (one buffer); files without one are "dram".
Within a regime the primary file is the first one listed that has "bnforge"
and copy floor entries (bnforge_bench's); every other file of that regime
(bnforge_bench_onednn_omp's, whose oneDNN clashes with the primary's) adds
only its peers, and its own "bnforge" entries as "bnforge@<peer>", the
reference for that peer's ratio and nothing else. A measurement given twice:
the later file's is used, with a warning.

Benchmark names are "<op>/<layout>/<dtype>/<shape>/<impl>" plus Google
Benchmark's own suffixes ("/manual_time", "/real_time", "/repeats:3", ...),
which are ignored. With repetitions the "median" aggregate is used; without,
the iteration entry (the median of several iteration entries if there is no
aggregate). Times are real_time. Only the Python standard library is used.

Metrics (per op/layout/dtype/shape case and regime):
  copy bandwidth B   = floor_bytes / time of the "copy/.../floor" entry of the
                       same layout/dtype/shape ("floor-1thread" for the
                       single-threaded impls, e.g. bnforge-1thread);
  floor time         = floor_bytes(op entry) / B;
  % of floor         = floor time / time * 100;
  GB/s               = floor_bytes / time (1e9 bytes);
  vs <peer>          = peer time / bnforge time, bnforge timed in the peer's
                       own process (>1: bnforge faster); peers are oneDNN
                       (PyPI wheel), oneDNN OpenMP and PyTorch;
  vs strongest       = the least of the vs <peer> ratios, and which peer;
  ns/element         = time / elements.
Exit status: 0 on success, 2 when the input is unusable.
"""

import argparse
import copy
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys

OP_ORDER = ["train_forward", "eval_forward", "backward", "relu_forward", "fused_forward", "fused_backward", "copy"]
OP_ABBR = {"train_forward": "tf", "eval_forward": "ef", "backward": "bw", "relu_forward": "rf",
           "fused_forward": "ff", "fused_backward": "fb", "copy": "copy"}
LAYOUT_ORDER = ["nchw", "nhwc"]
DTYPE_ORDER = ["float32", "bfloat16"]
DTYPE_SHORT = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "float64": 8}
IMPL_ORDER = ["bnforge", "onednn", "onednn-omp", "pytorch", "bnforge-adams2019", "bnforge-mullapudi2016",
              "bnforge-li2018", "bnforge-1thread", "floor", "floor-1thread"]
IMPL_TITLE = {"bnforge": "bnforge", "onednn": "oneDNN", "onednn-omp": "oneDNN OpenMP", "pytorch": "PyTorch",
              "bnforge-adams2019": "Adams2019", "bnforge-mullapudi2016": "Mullapudi2016",
              "bnforge-li2018": "Li2018", "bnforge-1thread": "bnforge 1 thread",
              "floor": "copy", "floor-1thread": "copy 1 thread"}
IMPL_SHORT = {"bnforge-adams2019": "adams", "bnforge-mullapudi2016": "mull", "bnforge-li2018": "li18"}
# The peers, in column order; each one's short stdout header keeps the tables
# within ~110 columns with three peers and three autoschedulers.
PEERS = ["onednn", "onednn-omp", "pytorch"]
PEER_SHORT = {"onednn": "xDNNL", "onednn-omp": "xOMP", "pytorch": "xTorch"}
# Bar colours in the plot, fixed per impl so that every report looks the same.
IMPL_COLOR = {"bnforge": "#1f4e9c", "onednn": "#e69f00", "onednn-omp": "#b8860b", "pytorch": "#c0392b",
              "bnforge-adams2019": "#2ca02c", "bnforge-mullapudi2016": "#8e44ad",
              "bnforge-li2018": "#8c564b"}
EXTRA_COLORS = ["#17becf", "#7f7f7f", "#bcbd22", "#e377c2"]
TIME_TO_MS = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}
# Google Benchmark's own name suffixes.
GB_SUFFIX = re.compile(r"^(manual_time|real_time|process_time|[A-Za-z_]+:[^/]*)$")
SHAPE_RE = re.compile(r"^\d+(x\d+)*$")

REGIMES = ["dram", "cache"]
REGIME_TITLE = {"dram": "DRAM regime (inputs rotated past 3× the LLC)", "cache": "cache regime (one buffer)"}
REGIME_SHORT = {"dram": "DRAM", "cache": "cache"}
REGIME_NAME = {"dram": "DRAM regime", "cache": "cache regime"}  # in the target and later headings

# The targets (issue text: "≥ 1.05× the strongest peer ... in both regimes;
# training forward ≥ 85% of its floor, backward ≥ 85%, eval ≥ 92% of the copy,
# in the DRAM regime; bfloat16 ≥ 1.7× float32 in every op at shapes above the
# L2; per-call overhead at the smallest shape (and at N=1) no more than
# oneDNN's execute"). Ratios are peer time / bnforge time; pct is % of floor.
PEER_TARGET = 1.05
PEER_TARGET_OPS = ["train_forward", "eval_forward", "backward", "relu_forward", "fused_forward", "fused_backward"]
FLOOR_TARGET = {"train_forward": 85.0, "relu_forward": 85.0, "fused_forward": 85.0,
                "backward": 85.0, "fused_backward": 85.0, "eval_forward": 92.0}
BF16_SPEEDUP = 1.7
# Per-call overhead: the smallest N=32 shape and the N=1 shape of the cache
# regime, against both oneDNN builds (their execute is the bar).
PER_CALL_N = 32
PER_CALL_TINY = "1x64x7x7"
PER_CALL_PEERS = ["onednn", "onednn-omp"]
PER_CALL_TARGET = 1.0
# Ops whose bnforge entries carry the "fused" counter (x read once or twice).
FUSED_COUNTER_OPS = ("train_forward", "relu_forward", "fused_forward")
SCALING_FLAG = 1.25          # ns/element above this × the group median is flagged
THREAD_EFFICIENCY = 0.85     # N threads >= 0.85·N × 1 thread (1.7× at 2 threads)


class Unusable(Exception):
    pass


def die(msg):
    sys.stderr.write("report.py: error: %s\n" % msg)
    sys.exit(2)


def warn(msg):
    sys.stderr.write("report.py: warning: %s\n" % msg)


def order_key(value, order):
    return (order.index(value), "") if value in order else (len(order), value)


def shape_dims(shape):
    return [int(d) for d in shape.split("x")]


def shape_elems(shape):
    n = 1
    for d in shape_dims(shape):
        n *= d
    return n


def shape_key(shape):
    return (shape_elems(shape), shape_dims(shape))


def is_auto(impl):
    return impl.startswith("bnforge-") and not impl.endswith("1thread")


def is_single(impl):
    return impl.endswith("-1thread")


def is_ref(impl):
    """bnforge timed in a peer's process ("bnforge@onednn-omp"): only that peer's reference."""
    return "@" in impl


def is_peer_entry(key):
    """A peer's measurement: neither bnforge's (bnforge, bnforge-*, bnforge@*) nor the copy floor's."""
    return key[0] != "copy" and not key[4].startswith("bnforge") and not key[4].startswith("floor")


def impl_title(impl):
    if is_ref(impl):
        base, peer = impl.split("@", 1)
        return "%s (in %s's process)" % (IMPL_TITLE.get(base, base), IMPL_TITLE.get(peer, peer))
    return IMPL_TITLE.get(impl, impl)


# ---------------------------------------------------------------- input

class Entry:
    """One (op, layout, dtype, shape, impl) measurement, or a skipped one."""

    def __init__(self, key):
        self.op, self.layout, self.dtype, self.shape, self.impl = key
        self.time_ms = None       # None when skipped
        self.skipped = None       # message when skipped
        self.floor_bytes = None
        self.elements = None
        self.threads = None
        self.fused = None
        self.pct = None           # % of floor
        self.gbps = None

    @property
    def ok(self):
        return self.time_ms is not None

    @property
    def case(self):
        return (self.layout, self.dtype, self.shape)


def num(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def parse_name(raw):
    parts = raw.split("/")
    if len(parts) < 5:
        return None
    op, layout, dtype, shape, impl = parts[:5]
    if not SHAPE_RE.match(shape) or not all(GB_SUFFIX.match(p) for p in parts[5:]):
        return None
    if not (op and layout and dtype and impl):
        return None
    return (op, layout, dtype, shape, impl)


def load(path):
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)  # duplicate keys: the last wins (the "threads" counter
                                # comes after Google Benchmark's own "threads" field)
    except OSError as e:
        raise Unusable("cannot read %s: %s" % (path, e.strerror or e))
    except ValueError as e:
        raise Unusable("%s is not valid JSON (%s); was the benchmark interrupted?" % (path, e))
    if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list):
        raise Unusable("%s has no \"benchmarks\" array: not Google Benchmark JSON output "
                       "(run with --benchmark_out=<file> --benchmark_out_format=json)" % path)
    ctx = doc.get("context") if isinstance(doc.get("context"), dict) else {}

    groups = {}  # key -> {"median": [...], "iter": [...]}
    ignored = []
    for b in doc["benchmarks"]:
        if not isinstance(b, dict):
            continue
        run_type = b.get("run_type", "iteration")
        agg = b.get("aggregate_name")
        if run_type == "aggregate" and agg != "median":
            continue
        raw = b.get("run_name") or b.get("name") or ""
        if run_type == "aggregate" and not b.get("run_name") and raw.endswith("_" + str(agg)):
            raw = raw[: -len(agg) - 1]
        key = parse_name(raw)
        if key is None:
            ignored.append(b.get("name", "?"))
            continue
        g = groups.setdefault(key, {"median": [], "iter": []})
        g["median" if run_type == "aggregate" else "iter"].append(b)
    if ignored:
        warn("ignored %d entr%s whose name is not <op>/<layout>/<dtype>/<shape>/<impl>: %s"
             % (len(ignored), "y" if len(ignored) == 1 else "ies", ", ".join(sorted(set(ignored))[:5])))
    if not groups:
        raise Unusable("%s has no benchmark named <op>/<layout>/<dtype>/<shape>/<impl>" % path)

    entries = {}
    for key in sorted(groups):
        g = groups[key]
        e = Entry(key)
        errs = [b for b in g["iter"] + g["median"]
                if b.get("error_occurred") is True
                or (b.get("error_message") and not (num(b.get("real_time")) or 0) > 0)]
        good = [b for b in (g["median"] or g["iter"]) if b not in errs]
        if not good:
            msg = errs[0].get("error_message") if errs else None
            e.skipped = str(msg or "skipped (no message)")
        else:
            times = []
            for b in good:
                t = num(b.get("real_time"))
                unit = b.get("time_unit", "ns")
                if t is not None and t > 0 and unit in TIME_TO_MS:
                    times.append(t * TIME_TO_MS[unit])
            if not times:
                e.skipped = "no valid real_time in the JSON"
            else:
                e.time_ms = statistics.median(times)
                b = good[0]
                e.floor_bytes = num(b.get("floor_bytes"))
                e.elements = num(b.get("elements")) or float(shape_elems(e.shape))
                # "bench_threads" in today's JSON; older files had a "threads"
                # counter (which overrode Google Benchmark's own field)
                e.threads = num(b.get("bench_threads")) or num(b.get("threads"))
                e.fused = num(b.get("fused"))
        entries[key] = e
    if not any(e.ok for e in entries.values()):
        raise Unusable("%s: every benchmark was skipped or has no time" % path)
    return ctx, entries


def regime_of(ctx):
    """The file's regime; files from before the regimes timed DRAM."""
    return str(ctx.get("regime") or "dram").strip().lower()


def is_primary(entries):
    """A file that can carry a regime: bnforge and the copy floor, measured together."""
    return (any(k[4] == "bnforge" for k in entries)
            and any(k[0] == "copy" and k[4] == "floor" for k in entries))


def peers_entries(entries):
    """What a secondary file adds: its peers' entries, and its bnforge entries
    renamed "bnforge@<peer>" for each of those peers (a peer is compared with
    bnforge timed in the same process, under the same runtime and allocator)."""
    peers = sorted({k[4] for k in entries if is_peer_entry(k)}, key=lambda i: order_key(i, IMPL_ORDER))
    kept = {k: e for k, e in entries.items() if is_peer_entry(k)}
    for k, e in entries.items():
        if k[4] != "bnforge":
            continue
        for p in peers:
            ref = copy.copy(e)
            ref.impl = "bnforge@" + p
            kept[k[:4] + (ref.impl,)] = ref
    return peers, kept


def merge_regime(regime, runs):
    """runs: [(path, ctx, entries)] of one regime in command-line order.
    Returns (ctx, entries, sources); sources: one line per file saying what of it is used."""
    primary = next((i for i, r in enumerate(runs) if is_primary(r[2])), None)
    if primary is None:
        primary = 0
        warn("%s regime: no file has both bnforge and copy floor entries; %s is taken as the primary"
             % (regime, runs[0][0]))
    ctx = dict(runs[primary][1])
    entries, sources = {}, []
    for i in range(len(runs)):  # command-line order: a measurement given twice, the later one wins
        path, c, es = runs[i]
        name = os.path.basename(path)
        if i == primary:
            kept, role = dict(es), "primary"
        else:
            peers, kept = peers_entries(es)
            if not peers:
                warn("%s (%s regime): no peer entries besides the primary's; nothing of it is used" % (path, regime))
                sources.append("`%s`: no peers, not used" % name)
                continue
            role = ", ".join(IMPL_TITLE.get(p, p) for p in peers) + ", bnforge as the reference"
            for key, v in c.items():  # the peers' own notes; the primary's otherwise
                if key.startswith("notes_") and (key[len("notes_"):] in peers or key not in ctx):
                    ctx[key] = v
        dup = sorted(k for k in kept if k in entries)
        if dup:
            warn("%d measurement%s of %s also in an earlier file; %s's are used (e.g. %s)"
                 % (len(dup), "" if len(dup) == 1 else "s", name, name, "/".join(dup[0])))
        entries.update(kept)
        real = [e for e in kept.values() if not is_ref(e.impl)]
        sources.append("`%s` (%s: %d measurements, %d skipped)"
                       % (name, role, sum(e.ok for e in real), sum(not e.ok for e in real)))
    return ctx, entries, sources


def load_all(paths):
    """Loads every file and merges them per regime: {regime: Data}, in REGIMES order."""
    by_regime = {}
    for path in paths:
        try:
            ctx, entries = load(path)
        except Unusable as e:
            die(str(e))
        regime = regime_of(ctx)
        if regime not in REGIMES:
            warn("%s: unknown regime %r (expected %s); file left out" % (path, regime, " or ".join(REGIMES)))
            continue
        by_regime.setdefault(regime, []).append((path, ctx, entries))
    if not by_regime:
        die("no input file has a known regime")
    runs = {}
    for regime in REGIMES:
        if regime in by_regime:
            ctx, entries, sources = merge_regime(regime, by_regime[regime])
            runs[regime] = Data(ctx, entries, regime, sources)
    return runs


# ---------------------------------------------------------------- model

class Data:
    """The measurements of one regime (the primary file plus the secondaries' peers)."""

    def __init__(self, ctx, entries, regime="dram", sources=()):
        self.ctx = ctx
        self.entries = entries
        self.regime = regime
        self.sources = list(sources)
        self.ops = sorted({k[0] for k in entries}, key=lambda o: order_key(o, OP_ORDER))
        # "bnforge@<peer>" is a reference for one ratio, never a column of its own
        self.impls = sorted({k[4] for k in entries if not is_ref(k[4])}, key=lambda i: order_key(i, IMPL_ORDER))
        self.op_impls = {(k[0], k[4]) for k in entries}
        self.autos = [i for i in self.impls if is_auto(i)]
        # copy bandwidth, bytes/ms, per (layout, dtype, shape) and impl
        self.bw = {}
        for e in entries.values():
            if e.op == "copy" and e.ok and e.floor_bytes:
                self.bw[(e.case, e.impl)] = e.floor_bytes / e.time_ms
        for e in entries.values():
            if not e.ok or not e.floor_bytes:
                continue
            e.gbps = e.floor_bytes / (e.time_ms * 1e-3) / 1e9
            b = self.bw.get((e.case, "floor-1thread" if is_single(e.impl) else "floor"))
            if b:
                e.pct = (e.floor_bytes / b) / e.time_ms * 100.0
        self.threads = self._threads()
        self.same_n = len({shape_dims(k[3])[0] for k in entries}) == 1

    def _threads(self):
        t = self.ctx.get("threads")
        try:
            if t is not None and int(str(t).strip()) > 0:
                return int(str(t).strip())
        except ValueError:
            pass
        counts = {}
        for e in self.entries.values():
            if e.ok and e.threads and not is_single(e.impl):
                counts[int(e.threads)] = counts.get(int(e.threads), 0) + 1
        if counts:
            return max(sorted(counts), key=lambda k: counts[k])
        return None

    def get(self, op, case, impl):
        layout, dtype, shape = case
        return self.entries.get((op, layout, dtype, shape, impl))

    def ok(self, op, case, impl):
        e = self.get(op, case, impl)
        return e if e is not None and e.ok else None

    def cases(self, op):
        cs = {(k[1], k[2], k[3]) for k in self.entries if k[0] == op}
        return sorted(cs, key=lambda c: (order_key(c[1], DTYPE_ORDER), order_key(c[0], LAYOUT_ORDER),
                                         shape_key(c[2])))

    def impls_of(self, op):
        return [i for i in self.impls if (op, i) in self.op_impls]

    def peers_of(self, op):
        """The peers this run measured for op (skipped or not), in column order."""
        return [p for p in PEERS if (op, p) in self.op_impls]

    def reference(self, op, case, peer):
        """bnforge as timed in the peer's process: "bnforge@<peer>" where that
        process timed it (even if skipped there: another process's time would
        compare across runtimes), else the primary's "bnforge"."""
        e = self.get(op, case, "bnforge@" + peer)
        if e is None:
            e = self.get(op, case, "bnforge")
        return e if e is not None and e.ok else None

    def ratio(self, op, case, peer):
        b, p = self.reference(op, case, peer), self.ok(op, case, peer)
        return p.time_ms / b.time_ms if b and p else None

    def strongest(self, op, case):
        """(least ratio over the peers present, that peer), or (None, None)."""
        best = (None, None)
        for peer in PEERS:
            r = self.ratio(op, case, peer)
            if r is not None and (best[0] is None or r < best[0]):
                best = (r, peer)
        return best

    def skipped(self):
        return [e for k, e in sorted(self.entries.items(), key=lambda kv: self.sort_key(kv[0]))
                if not e.ok]

    def sort_key(self, key):
        op, layout, dtype, shape, impl = key
        return (order_key(op, OP_ORDER), order_key(dtype, DTYPE_ORDER), order_key(layout, LAYOUT_ORDER),
                shape_key(shape), order_key(impl, IMPL_ORDER))

    # context -------------------------------------------------------
    def llc_bytes(self):
        v = self.ctx.get("llc_bytes")
        try:
            n = int(str(v).strip())
        except ValueError:
            return None
        return n if n > 0 else None

    def num_cpus(self):
        n = self.ctx.get("num_cpus")
        return int(n) if isinstance(n, (int, float)) and n > 0 else None

    def l2_total(self):
        """Total L2 bytes of the machine: the largest unified level-2 cache
        times the number of such caches (num_cpus / num_sharing); 2 MiB per
        CPU when the context lists none."""
        ncpu = self.num_cpus() or self.threads or 1
        best = None  # (total, size, count)
        for c in self.ctx.get("caches") or []:
            if not isinstance(c, dict) or c.get("level") != 2 or c.get("type") not in ("Unified", None):
                continue
            size = num(c.get("size"))
            if not size:
                continue
            sharing = int(num(c.get("num_sharing")) or 1) or 1
            count = max(1, ncpu // sharing)
            if best is None or size * count > best[0]:
                best = (size * count, size, count)
        if best is None:
            return 2 * 1024 * 1024 * ncpu, "no L2 in the context: 2 MiB × %d CPUs assumed" % ncpu
        return best[0], "L2 %s × %d" % (fmt_bytes(best[1]), best[2])


def fmt_bytes(n):
    for unit, f in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= f:
            v = n / f
            return ("%d %s" % (v, unit)) if v == int(v) else ("%.1f %s" % (v, unit))
    return "%d B" % n


def fmt_ms(t):
    if t is None:
        return None
    if t >= 100:
        return "%.1f" % t
    if t >= 10:
        return "%.2f" % t
    if t >= 1:
        return "%.3f" % t
    return "%.4f" % t


def fmt_us(t_ms):
    """A per-call time in µs (the per-call overhead cases take microseconds)."""
    if t_ms is None:
        return None
    us = t_ms * 1e3
    return "%.1f" % us if us >= 10 else "%.2f" % us


def f1(v):
    return None if v is None else "%.1f" % v


def f2(v):
    return None if v is None else "%.2f" % v


def fx(v):
    return None if v is None else "%.2f×" % v


def shape_label(shape, same_n):
    d = shape_dims(shape)
    if len(d) == 4:
        n, c, h, w = d
        hw = ("%d²" % h) if h == w else ("%dx%d" % (h, w))
        return ("%dx%s" % (c, hw)) if same_n else ("%dx%dx%s" % (n, c, hw))
    return shape


def case_str(case, short=False):
    layout, dtype, shape = case
    return "%s/%s/%s" % (layout, DTYPE_SHORT.get(dtype, dtype) if short else dtype, shape)


# ---------------------------------------------------------------- tables

def op_table(d, op, markdown):
    """Rows of the per-op table: (header, rows). Cells are strings or None (missing)."""
    impls = d.impls_of(op)
    if op == "copy":
        hdr = ["case", "copy ms", "GB/s", "1-thread ms", "1-thread GB/s", "speed-up"]
        rows = []
        for c in d.cases(op):
            f, f1t = d.ok(op, c, "floor"), d.ok(op, c, "floor-1thread")
            rows.append([case_str(c, not markdown),
                         fmt_ms(f.time_ms) if f else None, f1(f.gbps) if f else None,
                         fmt_ms(f1t.time_ms) if f1t else None, f1(f1t.gbps) if f1t else None,
                         fx(f1t.time_ms / f.time_ms) if f and f1t else None])
        return hdr, rows
    autos = [i for i in d.autos if i in impls]
    peers = d.peers_of(op)
    best = len(peers) > 1  # with one peer "vs strongest" would repeat its column
    has_fused = op in FUSED_COUNTER_OPS
    if markdown:
        hdr = ["case", "bnforge ms", "GB/s", "% of floor"]
        if has_fused:
            hdr.append("fused")
        hdr.append("ns/elem")
        hdr += ["vs %s" % IMPL_TITLE.get(p, p) for p in peers]
        if best:
            hdr.append("vs strongest")
        hdr += ["%s %% floor" % IMPL_TITLE.get(p, p) for p in peers]
        hdr += ["%s %% floor" % IMPL_TITLE.get(a, a) for a in autos]
    else:
        hdr = ["case", "ms", "GB/s", "%flr"]
        if has_fused:
            hdr.append("fused")
        hdr += [PEER_SHORT.get(p, "x" + p) for p in peers]
        if best:
            hdr.append("xBest")
        hdr += ["%" + IMPL_SHORT.get(a, a.replace("bnforge-", "")) for a in autos]
    rows = []
    for c in d.cases(op):
        b = d.get(op, c, "bnforge")
        bo = b if b is not None and b.ok else None
        row = [case_str(c, not markdown)]
        if b is not None and not b.ok:
            row.append("skipped")
        else:
            row.append(fmt_ms(bo.time_ms) if bo else None)
        row += [f1(bo.gbps) if bo else None, f1(bo.pct) if bo else None]
        if has_fused:
            fu = bo.fused if bo else None
            row.append(None if fu is None else ("yes" if fu >= 0.5 else "no"))
        if markdown:
            row.append(f2(bo.time_ms * 1e6 / bo.elements) if bo else None)
        row += [fx(d.ratio(op, c, p)) for p in peers]
        if best:
            r, who = d.strongest(op, c)
            if r is None:
                row.append(None)
            else:
                row.append("%s (%s)" % (fx(r), IMPL_TITLE.get(who, who)) if markdown else fx(r))
        if markdown:
            for peer in peers:
                p = d.ok(op, c, peer)
                row.append(f1(p.pct) if p else None)
        for a in autos:
            p = d.ok(op, c, a)
            row.append(f1(p.pct) if p else None)
        if not markdown:
            row = [x.replace("×", "") if x else x for x in row]
        rows.append(row)
    return hdr, rows


def ascii_text(s):
    return (s.replace("×", "x").replace("≥", ">=").replace("≤", "<=").replace("—", "-").replace("²", "^2")
            .replace("µ", "u"))


def render_text(hdr, rows):
    cells = [[ascii_text(x) if x is not None else "-" for x in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(hdr)]
    lines = ["  ".join((h.ljust(w) if i == 0 else h.rjust(w)) for i, (h, w) in enumerate(zip(hdr, widths)))]
    lines.append("  ".join("-" * w for w in widths))
    for r in cells:
        lines.append("  ".join((x.ljust(w) if i == 0 else x.rjust(w)) for i, (x, w) in enumerate(zip(r, widths))))
    return "\n".join(lines)


def render_md(hdr, rows, left=1):
    """Markdown table; the first `left` columns are left-aligned, the rest right-aligned."""
    out = ["| " + " | ".join(hdr) + " |",
           "|" + "|".join(":---" if i < left else "---:" for i in range(len(hdr))) + "|"]
    for r in rows:
        out.append("| " + " | ".join(x if x is not None else "—" for x in r) + " |")
    return "\n".join(out)


# ---------------------------------------------------------------- targets

class Check:
    """One criterion on one case: value against target (>= passes).
    label names the case in the stdout summary; note follows the value (e.g. which peer)."""

    def __init__(self, value, target, kind, counted=True, label=None, note=None):
        self.value, self.target, self.kind, self.counted = value, target, kind, counted
        self.label, self.note = label, note

    @property
    def passed(self):
        return self.value is not None and self.value >= self.target

    def cell(self):
        if self.value is None:
            return "n/a"
        tag = "PASS" if self.passed else "MISS"
        if not self.counted:
            tag = "(info) " + tag
        if self.kind == "pct":
            s = "%s %.1f%%" % (tag, self.value)
            if self.note:
                s += " " + self.note
            if not self.passed:
                short = self.target - self.value
                s += " (%s pts short)" % ("<0.1" if short < 0.05 else "%.1f" % short)
        else:
            s = "%s %.2f×" % (tag, self.value)
            if self.note:
                s += " " + self.note
            if not self.passed:
                short = self.target - self.value
                s += " (%s× short, %.1f%%)" % ("<0.01" if short < 0.005 else "%.2f" % short,
                                               short / self.target * 100)
        return s


def target_name(kind, target):
    if kind == "pct":
        return "≥ %g%% of floor" % target
    peer = IMPL_TITLE.get(kind, kind)
    return "≥ %.1f× %s" % (target, peer)


class Targets:
    """The checks of every criterion, their Markdown, and one summary row per
    criterion: (label, passed, evaluated, worst cell)."""

    def __init__(self):
        self.md, self.checks, self.summary = [], [], []

    def tally(self, label, cs):
        """Counts a criterion's checks (the uncounted and n/a ones are left out)
        and adds its summary row; call once per criterion."""
        cs = [c for c in cs if c.counted and c.value is not None]
        self.checks += cs
        if not cs:
            self.summary.append((label, 0, 0, "not evaluated"))
            return
        worst = min(cs, key=lambda c: c.value / c.target)
        self.summary.append((label, sum(c.passed for c in cs), len(cs),
                             ("%s: %s" % (worst.label, worst.cell())) if worst.label else worst.cell()))

    def count(self, label, cs):
        """'n of m cases pass' for the Markdown, or why none was evaluated."""
        evaluated = [c for c in cs if c.counted and c.value is not None]
        if not evaluated:
            return "- %s: not evaluated." % label
        return "- %s: %d of %d cases pass." % (label, sum(c.passed for c in evaluated), len(evaluated))

    @property
    def passed(self):
        return sum(c.passed for c in self.checks)

    @property
    def total(self):
        return len(self.checks)


def fused_lines(d, op, cases):
    """Which cases ran bnforge's one-pass (fused) kernel, from its "fused" counter."""
    bs = [(c, d.ok(op, c, "bnforge")) for c in cases]
    fused = [case_str(c) for c, b in bs if b and b.fused is not None and b.fused >= 0.5]
    unfused = [case_str(c) for c, b in bs if b and b.fused is not None and b.fused < 0.5]
    unknown = [case_str(c) for c, b in bs if b and b.fused is None]
    out = ["- Ran fused (x read once): %s." % (", ".join(fused) if fused else "none"),
           "- Ran unfused (x read twice): %s." % (", ".join(unfused) if unfused else "none")]
    if unknown:
        out.append("- No \"fused\" counter: %s." % ", ".join(unknown))
    return out


def bnforge_cases(d, op):
    """(cases with a bnforge time, 'not evaluated' notes for those where bnforge was skipped)."""
    ok, not_eval = [], []
    for c in d.cases(op):
        b = d.get(op, c, "bnforge")
        if b is None:
            continue
        if b.ok:
            ok.append(c)
        else:
            not_eval.append("%s (bnforge skipped: %s)" % (case_str(c), b.skipped))
    return ok, not_eval


def peer_section(t, regime, d):
    """≥ PEER_TARGET × the strongest peer: every op, both dtypes and layouts, one regime."""
    t.md.append("### ≥ %.2f× the strongest peer — %s\n" % (PEER_TARGET, REGIME_NAME[regime]))
    ops = [o for o in PEER_TARGET_OPS if d is not None and o in d.ops]
    if not ops:
        t.md.append("Not evaluated: %s.\n" % ("no %s-regime file given" % REGIME_SHORT[regime] if d is None
                                              else "the %s-regime files time no op" % REGIME_SHORT[regime]))
    else:
        t.md.append("Peer time / bnforge time, bnforge timed in the peer's own process; the least over the "
                    "peers is checked. Every case, float32 and bfloat16, both layouts; a case no peer ran "
                    "is n/a and not counted.\n")
    for op in PEER_TARGET_OPS:
        label = "%s %s ≥ %.2f× strongest peer" % (REGIME_SHORT[regime], OP_ABBR[op], PEER_TARGET)
        if op not in ops:  # still a summary row, so that a missing regime or op shows
            t.tally(label, [])
            continue
        peers = d.peers_of(op)
        cases, not_eval = bnforge_cases(d, op)
        t.md.append("#### %s\n" % op)
        rows, cs = [], []
        for c in cases:
            r, who = d.strongest(op, c)
            ch = Check(r, PEER_TARGET, "ratio", label=case_str(c, True),
                       note=("vs %s" % IMPL_TITLE.get(who, who)) if who else None)
            cs.append(ch)
            rows.append([case_str(c), fmt_ms(d.ok(op, c, "bnforge").time_ms)]
                        + [fx(d.ratio(op, c, p)) for p in peers] + [ch.cell()])
        if rows and peers:
            t.md.append(render_md(["case", "bnforge ms"] + ["vs %s" % IMPL_TITLE.get(p, p) for p in peers]
                                  + ["≥ %.2f× strongest" % PEER_TARGET], rows))
            t.md.append("")
        if not peers:
            t.md.append("- Not evaluated: no peer entries for %s." % op)
        else:
            t.md.append(t.count("≥ %.2f× the strongest peer" % PEER_TARGET, cs))
            each = []
            for p in peers:  # which peer stands in the way
                rs = [d.ratio(op, c, p) for c in cases]
                rs = [x for x in rs if x is not None]
                each.append("%s %d of %d" % (IMPL_TITLE.get(p, p), sum(x >= PEER_TARGET for x in rs), len(rs)))
            t.md.append("- Against each peer alone: %s." % ", ".join(each))
        if not_eval:
            t.md.append("- Not evaluated: %s." % "; ".join(not_eval))
        t.md.append("")
        t.tally(label, cs)


def floor_section(t, d):
    """% of floor per op (FLOOR_TARGET), both dtypes and layouts, DRAM regime."""
    t.md.append("### %% of floor — %s\n" % REGIME_NAME["dram"])
    t.md.append("bnforge's floor time / time, float32 and bfloat16, both layouts: training forward (plain, "
                "with ReLU, with add + ReLU) and backward (plain and fused) ≥ 85%, eval ≥ 92% (its "
                "floor is the copy itself).\n")
    for op in [o for o in OP_ORDER if o in FLOOR_TARGET]:
        goal = FLOOR_TARGET[op]
        label = "DRAM %s ≥ %g%% of floor" % (OP_ABBR[op], goal)
        if op not in d.ops:
            t.tally(label, [])
            continue
        cases, not_eval = bnforge_cases(d, op)
        has_fused = op in FUSED_COUNTER_OPS
        t.md.append("#### %s (≥ %g%% of floor)\n" % (op, goal))
        rows, cs = [], []
        for c in cases:
            b = d.ok(op, c, "bnforge")
            ch = Check(b.pct, goal, "pct", label=case_str(c, True))
            cs.append(ch)
            row = [case_str(c), fmt_ms(b.time_ms), f1(b.gbps)]
            if has_fused:
                row.append(None if b.fused is None else ("yes" if b.fused >= 0.5 else "no"))
            rows.append(row + [ch.cell()])
        if rows:
            t.md.append(render_md(["case", "bnforge ms", "GB/s"] + (["fused"] if has_fused else [])
                                  + [target_name("pct", goal)], rows))
            t.md.append("")
        if cases and all(ch.value is None for ch in cs):
            t.md.append("- %s: not evaluated (no copy floor)." % target_name("pct", goal))
        else:
            t.md.append(t.count(target_name("pct", goal), cs))
        if has_fused and cases:
            t.md += fused_lines(d, op, cases)
        if not_eval:
            t.md.append("- Not evaluated: %s." % "; ".join(not_eval))
        t.md.append("")
        t.tally(label, cs)


def bf16_section(t, d):
    """bfloat16 ≥ BF16_SPEEDUP × float32, every op and layout, counted above the total L2."""
    l2, l2_src = d.l2_total()
    t.md.append("### bfloat16 ≥ %g× float32 (bnforge) — %s\n" % (BF16_SPEEDUP, REGIME_NAME["dram"]))
    t.md.append("bnforge float32 time / bfloat16 time, every op, both layouts. Counted where the float32 "
                "|x| is above the total L2 (%s; %s); smaller shapes are shown for information.\n"
                % (fmt_bytes(l2), l2_src))
    rows, cs = [], []
    for op in d.ops:
        if op == "copy":
            continue
        for c in d.cases(op):
            layout, dtype, shape = c
            if dtype != "bfloat16":
                continue
            b16, b32 = d.ok(op, c, "bnforge"), d.ok(op, (layout, "float32", shape), "bnforge")
            if not (b16 and b32):
                continue
            size = b32.elements * DTYPE_BYTES["float32"]
            ch = Check(b32.time_ms / b16.time_ms, BF16_SPEEDUP, "ratio", counted=size > l2,
                       label="%s %s/%s" % (OP_ABBR.get(op, op), layout, shape))
            cs.append(ch)
            cell = ch.cell() if ch.counted else "(below L2) %.2f×" % ch.value
            rows.append([OP_ABBR.get(op, op), "%s/%s" % (layout, shape), fmt_bytes(size),
                         fmt_ms(b32.time_ms), fmt_ms(b16.time_ms), cell])
    if rows:
        t.md.append(render_md(["op", "case", "float32 size of x", "float32 ms", "bfloat16 ms",
                               "float32 / bfloat16"], rows, left=2))
        t.md.append("")
        t.md.append(t.count("bfloat16 ≥ %g× float32 above the L2" % BF16_SPEEDUP, cs))
        cr = []
        for c in d.cases("copy"):
            if c[1] == "bfloat16":
                f16, f32 = d.ok("copy", c, "floor"), d.ok("copy", (c[0], "float32", c[2]), "floor")
                if f16 and f32:
                    cr.append("%s/%s %.2f×" % (c[0], c[2], f32.time_ms / f16.time_ms))
        if cr:
            t.md.append("- For context, the copy floor's float32 / bfloat16 time ratio: %s." % ", ".join(cr))
    else:
        t.md.append("No case has bnforge timings in both float32 and bfloat16.")
    t.md.append("")
    t.tally("DRAM bf16 ≥ %g× f32 (above L2)" % BF16_SPEEDUP, cs)


def per_call_shapes(d):
    """(shapes, note): the smallest N=PER_CALL_N shape by element count, and
    PER_CALL_TINY; the smallest shape of all stands in when no N=32 shape ran
    (a quick run), said in note."""
    shapes = {c[2] for op in d.ops if op != "copy" for c in d.cases(op)}
    n32 = [s for s in shapes if shape_dims(s)[0] == PER_CALL_N]
    note = None
    picked = []
    if n32:
        picked.append(min(n32, key=shape_key))
    elif shapes:
        picked.append(min(shapes, key=shape_key))
        note = "no N=%d shape in this run: its smallest shape, %s, stands in" % (PER_CALL_N, picked[0])
    if PER_CALL_TINY in shapes and PER_CALL_TINY not in picked:
        picked.append(PER_CALL_TINY)
    return sorted(picked, key=shape_key), note


def per_call_section(t, d):
    """Per-call overhead, cache regime: at the smallest shapes bnforge must not
    be slower than either oneDNN build (ratio ≥ PER_CALL_TARGET), every op, float32."""
    t.md.append("### Per-call overhead no more than oneDNN's — %s\n" % REGIME_NAME["cache"])
    labels = ["cache per-call ≥ %.1f× %s" % (PER_CALL_TARGET, IMPL_TITLE.get(p, p)) for p in PER_CALL_PEERS]
    if d is None:
        t.md.append("Not evaluated: no cache-regime file given.\n")
        for label in labels:
            t.tally(label, [])
        return
    shapes, note = per_call_shapes(d)
    peers = [p for p in PER_CALL_PEERS if p in d.impls]
    t.md.append("At the smallest N=%d shape and at N=1 (%s), inputs in cache: peer time / bnforge time, "
                "bnforge timed in the peer's process, every op, float32, both layouts; ≥ %.1f means "
                "bnforge's call costs no more than oneDNN's execute. µs per call.%s\n"
                % (PER_CALL_N, PER_CALL_TINY, PER_CALL_TARGET, (" Here %s." % note) if note else ""))
    rows, per_peer = [], {p: [] for p in PER_CALL_PEERS}
    for op in [o for o in d.ops if o != "copy"]:
        for c in d.cases(op):
            if c[1] != "float32" or c[2] not in shapes or d.get(op, c, "bnforge") is None:
                continue
            b = d.ok(op, c, "bnforge")
            row = [OP_ABBR.get(op, op), "%s/%s" % (c[0], c[2]), fmt_us(b.time_ms) if b else "skipped"]
            for p in peers:
                e = d.ok(op, c, p)
                ch = Check(d.ratio(op, c, p), PER_CALL_TARGET, "ratio",
                           label="%s %s/%s" % (OP_ABBR.get(op, op), c[0], c[2]))
                per_peer[p].append(ch)
                row += [fmt_us(e.time_ms) if e else None, ch.cell()]
            rows.append(row)
    if rows and peers:
        hdr = ["op", "case", "bnforge µs"]
        for p in peers:
            hdr += ["%s µs" % IMPL_TITLE.get(p, p), "≥ %.1f× %s" % (PER_CALL_TARGET, IMPL_TITLE.get(p, p))]
        t.md.append(render_md(hdr, rows, left=2))
        t.md.append("")
    elif not rows:
        t.md.append("No float32 bnforge entries at these shapes (%s)." % ", ".join(shapes))
    for p, label in zip(PER_CALL_PEERS, labels):
        if p in peers:
            t.md.append(t.count("≥ %.1f× %s" % (PER_CALL_TARGET, IMPL_TITLE.get(p, p)), per_peer[p]))
        else:
            t.md.append("- ≥ %.1f× %s: not evaluated (no %s entries in the cache regime)."
                        % (PER_CALL_TARGET, IMPL_TITLE.get(p, p), IMPL_TITLE.get(p, p)))
        t.tally(label, per_peer[p])
    t.md.append("")


def scaling_section(t, d):
    """Linear scaling across shapes: bnforge ns/element within SCALING_FLAG of the group median."""
    t.md.append("### Linear scaling across shapes (bnforge ns/element) — %s\n" % REGIME_NAME[d.regime])
    t.md.append("Per op/layout/dtype: the spread of ns/element across shapes, and any shape whose "
                "ns/element is above %g× the group's median. Counted for float32; bfloat16 is shown "
                "for information.\n" % SCALING_FLAG)
    rows, cs = [], []
    for op in d.ops:
        if op == "copy":
            continue
        groups = {}
        for c in d.cases(op):
            b = d.ok(op, c, "bnforge")
            if b:
                groups.setdefault((c[0], c[1]), []).append((c[2], b.time_ms * 1e6 / b.elements))
        for (layout, dtype), vals in sorted(groups.items(), key=lambda kv: (order_key(kv[0][1], DTYPE_ORDER),
                                                                            order_key(kv[0][0], LAYOUT_ORDER))):
            if len(vals) < 2:
                continue
            nse = [v for _, v in vals]
            med = statistics.median(nse)
            worst = max(nse) / med
            flagged = ["%s (%.2f×)" % (s, v / med) for s, v in vals if v > SCALING_FLAG * med]
            # a check passes when the worst shape is within SCALING_FLAG of the median
            ch = Check(SCALING_FLAG / worst if worst > 0 else None, 1.0, "scaling", counted=(dtype == "float32"),
                       label="%s %s/%s" % (OP_ABBR.get(op, op), layout, DTYPE_SHORT.get(dtype, dtype)))
            cs.append(ch)
            status = "PASS" if ch.passed else "MISS"
            if not ch.counted:
                status = "(info) " + status
            rows.append([OP_ABBR.get(op, op), "%s/%s" % (layout, dtype), str(len(vals)), "%.3f" % min(nse),
                         "%.3f" % max(nse), "%.3f" % med, "%.2f×" % (max(nse) / min(nse)),
                         status + (": " + ", ".join(flagged) if flagged else "")])
    if rows:
        t.md.append(render_md(["op", "layout/dtype", "shapes", "min ns/el", "max ns/el", "median", "max/min",
                               "> %g× median" % SCALING_FLAG], rows, left=2))
    else:
        t.md.append("No op/layout/dtype has bnforge timings for two or more shapes.")
    t.tally("DRAM linear scaling (≤ %g× median)" % SCALING_FLAG, cs)
    t.md.append("")


def thread_section(t, d):
    """N threads ≥ THREAD_EFFICIENCY·N × 1 thread for tensors above the L2, float32."""
    nthreads = d.threads
    l2, l2_src = d.l2_total()
    if not (nthreads and nthreads > 1):
        t.md.append("### Thread scaling — %s\n" % REGIME_NAME[d.regime])
        t.md.append("Not evaluated: the benchmark's thread count is %s." % (nthreads if nthreads else "unknown"))
        t.md.append("")
        return
    want = THREAD_EFFICIENCY * nthreads
    t.md.append("### %d threads ≥ %.2g× 1 thread (tensors above L2) — %s\n"
                % (nthreads, want, REGIME_NAME[d.regime]))
    t.md.append("bnforge time with 1 thread / with %d threads, for cases whose |x| is above the total L2 "
                "(%s; %s); smaller cases are shown for information. The copy floor's own speed-up is "
                "given for context. Counted for float32.\n" % (nthreads, fmt_bytes(l2), l2_src))
    rows, cs = [], []
    for op in d.ops:
        if op == "copy":
            continue
        for c in d.cases(op):
            bN, b1 = d.ok(op, c, "bnforge"), d.ok(op, c, "bnforge-1thread")
            if not (bN and b1):
                continue
            size = bN.elements * DTYPE_BYTES.get(c[1], 4)
            ch = Check(b1.time_ms / bN.time_ms, want, "ratio", counted=(size > l2 and c[1] == "float32"),
                       label="%s %s" % (OP_ABBR.get(op, op), case_str(c, True)))
            cs.append(ch)
            fN, f1t = d.ok("copy", c, "floor"), d.ok("copy", c, "floor-1thread")
            cell = ch.cell()
            if size <= l2:
                cell = "(below L2) %.2f×" % ch.value
            rows.append([OP_ABBR.get(op, op), case_str(c), fmt_bytes(size), fmt_ms(b1.time_ms), fmt_ms(bN.time_ms),
                         cell, fx(f1t.time_ms / fN.time_ms) if fN and f1t else None])
    if rows:
        t.md.append(render_md(["op", "case", "size of x", "1-thread ms", "%d-thread ms" % nthreads, "speed-up",
                               "copy speed-up"], rows, left=2))
    else:
        t.md.append("No case has both bnforge and bnforge-1thread timings.")
    t.tally("DRAM %d thr ≥ %.2g× 1 thr (above L2)" % (nthreads, want), cs)
    t.md.append("")


def targets(runs):
    """runs: {regime: Data}. Returns (markdown lines, passed, total, summary rows)."""
    t = Targets()
    dram, cache = runs.get("dram"), runs.get("cache")
    for regime in REGIMES:
        peer_section(t, regime, runs.get(regime))
    if dram is not None:
        floor_section(t, dram)
        bf16_section(t, dram)
    else:
        t.md += ["### DRAM-regime targets\n", "Not evaluated (% of floor, bfloat16): no DRAM-regime file given.", ""]
        for op in [o for o in OP_ORDER if o in FLOOR_TARGET]:
            t.tally("DRAM %s ≥ %g%% of floor" % (OP_ABBR[op], FLOOR_TARGET[op]), [])
        t.tally("DRAM bf16 ≥ %g× f32 (above L2)" % BF16_SPEEDUP, [])
    per_call_section(t, cache)
    if dram is not None:
        scaling_section(t, dram)
        thread_section(t, dram)
    return t.md, t.passed, t.total, t.summary


# ---------------------------------------------------------------- plot

def plot(d, out_dir, stem):
    """Writes <stem>.dat and <stem>.gp and runs gnuplot. Returns an error string or None."""
    png = os.path.join(out_dir, stem + ".png")
    if os.path.exists(png):
        os.remove(png)  # never leave a stale plot next to a new report
    ops = [o for o in d.ops if o != "copy" and any(d.ok(o, c, i) and d.ok(o, c, i).pct is not None
                                                  for c in d.cases(o) for i in d.impls_of(o))]
    if not ops:
        return "no % of floor to plot (no copy floor entries?)"
    series = [i for i in d.impls if i == "bnforge" or i in PEERS or is_auto(i)]
    series = [i for i in series if any(d.ok(o, c, i) and d.ok(o, c, i).pct is not None
                                       for o in ops for c in d.cases(o))]
    dat = ["# % of floor (floor = op floor_bytes / copy bandwidth of the same layout/dtype/shape)",
           "# one block per op (gnuplot index 0..%d): %s" % (len(ops) - 1, ", ".join(ops)),
           "# missing or skipped: ?"]
    ymax, ncases, groups = 110.0, [], []
    for k, op in enumerate(ops):
        if k:
            dat += ["", ""]
        dat.append("# %s: case %s layout/dtype" % (op, " ".join(series)))
        cases = d.cases(op)
        ncases.append(len(cases))
        bounds, prev = [], None
        for j, c in enumerate(cases):
            lab = "%s %s %s" % (c[0], DTYPE_SHORT.get(c[1], c[1]), shape_label(c[2], d.same_n))
            vals = []
            for i in series:
                e = d.ok(op, c, i)
                if e and e.pct is not None:
                    vals.append("%.2f" % e.pct)
                    ymax = max(ymax, e.pct * 1.05)
                else:
                    vals.append("?")
            dat.append('"%s" %s %s/%s' % (lab, " ".join(vals), c[0], c[1]))
            if prev is not None and (c[0], c[1]) != prev:
                bounds.append(j - 0.5)
            prev = (c[0], c[1])
        groups.append(bounds)
    ymax = math.ceil(ymax / 10.0) * 10
    with open(os.path.join(out_dir, stem + ".dat"), "w", encoding="utf-8") as f:
        f.write("\n".join(dat) + "\n")

    term = "pngcairo size %d,%d font 'DejaVu Sans,15'"
    try:
        terms = subprocess.run(["gnuplot", "-e", "set terminal"], capture_output=True, text=True, timeout=30)
        if "pngcairo" not in terms.stdout + terms.stderr:
            term = "png size %d,%d font 'DejaVuSans,13'"
    except (OSError, subprocess.SubprocessError):
        pass
    height = max(900, 620 * len(ops) + 120)
    width = max(2400, 60 * max(ncases) + 600)  # keeps the rotated case labels apart
    colors, extra = {}, 0
    for i in series:
        if i in IMPL_COLOR:
            colors[i] = IMPL_COLOR[i]
        else:
            colors[i] = EXTRA_COLORS[extra % len(EXTRA_COLORS)]
            extra += 1
    title = "bnforge CPU benchmark: %% of floor (copy bandwidth), %s — %s, %s" % (
        REGIME_TITLE.get(d.regime, d.regime), stem, d.ctx.get("cpu_model") or d.ctx.get("host_name") or "")
    if d.same_n:
        title += ", N=%d" % shape_dims(d.cases(ops[0])[0][2])[0]
    gp = ["# Remake with: gnuplot %s.gp (in this directory)" % stem,
          "set terminal " + (term % (width, height)),
          "set encoding utf8",
          "set output '%s.png'" % stem,
          "set datafile missing '?'",
          "set style data histograms",
          "set style histogram clustered gap 1",
          "set style fill solid 1.0 border rgb '#333333'",
          "set boxwidth 0.9 relative",
          "set key outside right top vertical Left reverse noenhanced samplen 2",
          "set xtics rotate by 50 right nomirror scale 0 noenhanced font ',13'",
          "set ytics nomirror",
          "set grid ytics lc rgb '#dddddd'",
          "set ylabel '% of floor'",
          "set yrange [0:%d]" % ymax,
          "set lmargin 10",
          "set rmargin 28",
          "set multiplot layout %d,1 title \"%s\" font ',18' noenhanced" % (len(ops), title.replace('"', "'"))]
    for k, op in enumerate(ops):
        gp.append("unset arrow")
        gp.append("set arrow from graph 0, first 100 to graph 1, first 100 nohead lw 2 lc rgb '#000000' front")
        t = FLOOR_TARGET.get(op)
        if t:
            gp.append("set arrow from graph 0, first %g to graph 1, first %g nohead lw 1.5 dt 2 lc rgb '#2e7d32' front"
                      % (t, t))
        for x in groups[k]:
            gp.append("set arrow from first %g, graph 0 to first %g, graph 1 nohead lw 1 dt 3 lc rgb '#888888'" % (x, x))
        gp.append("set xrange [-0.6:%g]" % (ncases[k] - 0.4))
        gp.append("set title '%s%s' font ',16' noenhanced" % (op, "  (dashed: %g%% target)" % t if t else ""))
        parts = []
        present = [(col, i) for col, i in enumerate(series, start=2)
                   if any(d.ok(op, c, i) and d.ok(op, c, i).pct is not None for c in d.cases(op))]
        for n, (col, i) in enumerate(present):
            parts.append("'%s.dat' index %d using %d%s title '%s' lc rgb '%s'"
                         % (stem, k, col, ":xtic(1)" if n == 0 else "", IMPL_TITLE.get(i, i), colors[i]))
        gp.append("plot " + ", \\\n     ".join(parts))
    gp.append("unset multiplot")
    with open(os.path.join(out_dir, stem + ".gp"), "w", encoding="utf-8") as f:
        f.write("\n".join(gp) + "\n")
    if not shutil.which("gnuplot"):
        return "gnuplot not found; wrote %s.dat and %s.gp only" % (stem, stem)
    r = subprocess.run(["gnuplot", stem + ".gp"], cwd=out_dir, capture_output=True, text=True)
    if r.returncode != 0:
        return "gnuplot failed: %s" % r.stderr.strip()[-800:]
    return None


# ---------------------------------------------------------------- main

def slug(text):
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", text.lower())).strip("-")


def machine_slug(d):
    ctx = d.ctx
    model = str(ctx.get("cpu_model") or "")
    m = re.sub(r"\((r|tm|c)\)", " ", model, flags=re.I)
    m = re.sub(r"@.*$", " ", m)
    m = re.sub(r"\b\d+(\.\d+)?\s*ghz\b", " ", m, flags=re.I)
    noise = {"intel", "amd", "cpu", "processor", "genuine", "authentic", "core-processor", "with", "radeon",
             "graphics", "gen", "th", "nd", "rd", "st", "eng", "sample"}
    words = [w for w in slug(m).split("-") if w and w not in noise]
    variant = str(ctx.get("bnforge_cpu_variant") or "")
    vwords = [w for w in slug(re.sub(r"^avx512_", "", variant)).split("-") if w]
    for w in vwords:
        if w not in words:
            words.append(w)
    if not words:
        words = [w for w in slug(str(ctx.get("host_name") or "")).split("-") if w] or ["unknown"]
    words = words[:5]
    ncpu = d.num_cpus()
    if ncpu:
        words.append("%dc" % ncpu)
    if d.threads and d.threads != ncpu:
        words.append("%dt" % d.threads)
    return "-".join(words)


def report_date(ctx):
    date = str(ctx.get("date") or "")
    m = re.match(r"(\d{4}-\d{2}-\d{2})", date)
    if m:
        return m.group(1)
    m = re.match(r"(\d{2})/(\d{2})/(\d{2})\b", date)  # older Google Benchmark: mm/dd/yy
    if m:
        return "20%s-%s-%s" % (m.group(3), m.group(1), m.group(2))
    return "undated"


def caches_str(d):
    out = []
    ncpu = d.num_cpus()
    for c in d.ctx.get("caches") or []:
        if not isinstance(c, dict):
            continue
        kind = {"Data": "d", "Instruction": "i"}.get(c.get("type"), "")
        size = num(c.get("size"))
        if size is None:
            continue
        sharing = int(num(c.get("num_sharing")) or 1) or 1
        s = "L%s%s %s" % (c.get("level", "?"), kind, fmt_bytes(size))
        if ncpu and sharing <= ncpu:
            count = max(1, ncpu // sharing)
            s += " × %d" % count if count > 1 else ""
            if sharing > 1:
                s += " (shared by %d CPUs)" % sharing
        out.append(s)
    return ", ".join(out) if out else "unknown"


def peer_version(notes):
    """The version clause that opens a peer's notes: up to the first "), " (with
    its ")"), else the first sentence, at most 80 characters."""
    text = " ".join(str(notes).split())
    i = text.find("), ")
    if 0 <= i < 200:
        return text[:i + 1]
    j = text.find(". ")
    text = text[:j] if j >= 0 else text
    return text if len(text) <= 80 else text[:79].rstrip() + "…"


def peer_rows(runs):
    """Header rows: one per peer measured in any regime (or described in a context)."""
    rows = []
    for p in PEERS:
        notes = next((d.ctx.get("notes_" + p) for d in runs.values() if d.ctx.get("notes_" + p)), None)
        measured = [REGIME_SHORT[r] for r, d in runs.items() if p in d.impls]
        if not notes and not measured:
            continue
        v = peer_version(notes) if notes else "version unknown (no notes_%s in the context)" % p
        if not measured:
            v += " (no measurements)"
        rows.append((IMPL_TITLE.get(p, p), v))
    return rows


def print_tables(d):
    """The stdout tables of one regime, each followed by its skipped entries."""
    skipped = d.skipped()
    for op in d.ops:
        hdr, rows = op_table(d, op, markdown=False)
        print("\n== %s%s ==" % (op, "" if d.regime == "dram" else " (%s)" % d.regime))
        print(render_text(hdr, rows))
        by_msg = {}
        for e in skipped:
            if e.op == op:
                by_msg.setdefault((order_key(e.impl, IMPL_ORDER), e.impl, e.skipped), []).append(case_str(e.case, True))
        for (_, impl, msg), cases in sorted(by_msg.items()):
            where = cases[0] if len(cases) == 1 else "%d cases" % len(cases)
            print(ascii_text("  skipped %s (%s): %s" % (impl, where, msg)))


def skipped_md(d):
    """The Markdown table of one regime's skipped entries (empty list when none)."""
    skipped = d.skipped()
    if not skipped:
        return []
    grouped = {}
    for e in skipped:  # already in report order
        grouped.setdefault((e.op, e.impl, e.skipped), []).append(case_str(e.case))
    return [render_md(["op", "impl", "message", "cases"],
                      [[op, impl_title(impl), msg.replace("|", "\\|"),
                        ("all %d cases" % len(cs)) if len(cs) == len(d.cases(op)) > 1 else ", ".join(cs)]
                       for (op, impl, msg), cs in grouped.items()], left=4), ""]


def autoscheduler_md(d):
    """bnforge's manual schedule against the autoschedulers, per op."""
    md = ["## Autoschedulers — %s\n" % REGIME_NAME.get(d.regime, d.regime)]
    if not d.autos:
        md.append("No autoscheduled variants in this run.\n")
        return md
    md.append("bnforge's manual schedule against Halide's autoschedulers: time, and autoscheduled time / "
              "manual time (> 1: the manual schedule is faster).\n")
    for op in d.ops:
        autos = [a for a in d.autos if a in d.impls_of(op)]
        if not autos:
            continue
        hdr = ["case", "manual ms"] + ["%s ms (ratio)" % IMPL_TITLE.get(a, a) for a in autos]
        rows = []
        for c in d.cases(op):
            if all(d.get(op, c, a) is None for a in autos):
                continue
            b = d.ok(op, c, "bnforge")
            row = [case_str(c), fmt_ms(b.time_ms) if b else None]
            for a in autos:
                e = d.get(op, c, a)
                if e is None:
                    row.append(None)
                elif not e.ok:
                    row.append("skipped")
                else:
                    row.append("%s (%.2f×)" % (fmt_ms(e.time_ms), e.time_ms / b.time_ms) if b else fmt_ms(e.time_ms))
            rows.append(row)
        md.append("### %s\n" % op)
        md.append(render_md(hdr, rows))
        md.append("")
    return md


def main(argv=None):
    ap = argparse.ArgumentParser(description="Report for the bnforge CPU benchmark (Google Benchmark JSON).")
    ap.add_argument("json", nargs="+",
                    help="the benchmark's --benchmark_out files (JSON format): one or more per regime; "
                         "per regime the first with bnforge and the copy floor is the primary, the "
                         "others add their peers")
    ap.add_argument("--out-dir", default="bench/results", help="where the .md/.png/.dat/.gp go (default: %(default)s)")
    ap.add_argument("--analysis", help="Markdown file with hand-written explanations, included verbatim if it exists")
    ap.add_argument("--section", action="append", default=[],
                    help="Markdown file of a further section (e.g. bench/sync_bn.sh's), included verbatim before the analysis")
    ap.add_argument("--command", default="make bench", help="the command that produced the JSON (default: %(default)s)")
    args = ap.parse_args(argv)

    runs = load_all(args.json)
    dram = runs.get("dram")
    d = dram or runs["cache"]  # names the report and describes the machine
    ctx = d.ctx
    stem = "%s-%s" % (report_date(ctx), machine_slug(d))
    try:
        os.makedirs(args.out_dir, exist_ok=True)
    except OSError as e:
        die("cannot create %s: %s" % (args.out_dir, e.strerror))

    # stdout ------------------------------------------------------
    print("bnforge CPU benchmark  %s  (%s, %s threads)" % (stem, ctx.get("cpu_model") or ctx.get("host_name") or "?",
                                                         d.threads if d.threads else "?"))
    print("ms: real time; %flr: % of floor (copy bandwidth); xDNNL/xOMP/xTorch: oneDNN/oneDNN OpenMP/PyTorch")
    print("time / bnforge time (bnforge timed in the peer's process); xBest: the least of them")
    for regime, rd in runs.items():
        print("\n=== %s ===" % ascii_text(REGIME_TITLE[regime]))
        print_tables(rd)

    tmd, passed, total, summary = targets(runs)
    print("\n== targets (details in the .md) ==")
    for label, n_ok, n_all, worst in summary:
        if n_all:
            print(ascii_text("%-36s %3d/%-3d worst %s" % (label, n_ok, n_all, worst)))
        else:
            print(ascii_text("%-36s   -      not evaluated" % label))
    print("%d of %d checks passed" % (passed, total))

    # plot (DRAM regime) ------------------------------------------
    if dram is not None:
        plot_err = plot(dram, args.out_dir, stem)
    else:
        plot_err = "no DRAM-regime file given (the plot shows that regime)"
    if plot_err:
        warn(plot_err)

    # markdown ----------------------------------------------------
    md = ["# bnforge CPU benchmark — %s" % stem, ""]
    ncpu = d.num_cpus()
    llc = d.llc_bytes()
    info = [
        ("CPU", "%s%s" % (ctx.get("cpu_model") or "unknown",
                          (" (%s MHz)" % ctx["mhz_per_cpu"]) if ctx.get("mhz_per_cpu") else "")),
        ("Logical CPUs", str(ncpu) if ncpu else "unknown"),
        ("Threads used", str(d.threads) if d.threads else "unknown"),
        ("Caches", caches_str(d)),
        ("Last-level cache", fmt_bytes(llc) if llc else "unknown"),
        ("Allocator", str(ctx.get("allocator") or "unknown")),
        ("bnforge CPU variant", str(ctx.get("bnforge_cpu_variant") or "unknown")),
        ("bnforge version", str(ctx.get("bnforge_version") or "unknown")),
    ]
    info += peer_rows(runs)
    info += [
        ("Host", str(ctx.get("host_name") or "unknown")),
        ("Date", str(ctx.get("date") or "unknown")),
        ("Command", "`%s`" % args.command),
    ]
    for regime, rd in runs.items():
        info.append(("Input (%s)" % REGIME_SHORT[regime], "; ".join(rd.sources)))
    if any(rd.ctx.get("cpu_scaling_enabled") is True for rd in runs.values()):
        info.append(("Note", "CPU frequency scaling was enabled: timings may be noisy"))
    md += ["| | |", "|:---|:---|"] + ["| %s | %s |" % (k, v.replace("|", "\\|")) for k, v in info]
    md += ["", "Times are Google Benchmark real time (the median aggregate when repeated). "
           "**DRAM regime**: every call reads inputs rotated through copies that exceed the last-level "
           "cache three times; **cache regime**: one buffer, so the inputs stay in cache and per-call "
           "overhead shows. **Floor**: the op's `floor_bytes` (the least it must move) at the copy bandwidth "
           "of the same layout/dtype/shape and regime (`copy/…/floor`, which reads |x| and writes |x| by the "
           "faster, per case, of memcpy and a copy with non-temporal stores; "
           "`floor-1thread` for the single-threaded entries); **% of floor** = floor time / time. "
           "**GB/s** = floor_bytes / time. **vs oneDNN / vs oneDNN OpenMP / vs PyTorch** = peer time / "
           "bnforge time, bnforge timed in the peer's own process (oneDNN's OpenMP build runs in a "
           "process of its own) (> 1: bnforge faster); **vs strongest**: the least of them, and whose; "
           "— where the peer is missing or skipped.", ""]
    if plot_err:
        md += ["Plot not rendered: %s." % plot_err, ""]
    else:
        md += ["![%% of floor per case, DRAM regime](%s.png)" % stem, "",
               "Plot (DRAM regime) data: `%s.dat`; remake with `gnuplot %s.gp` in this directory." % (stem, stem), ""]

    for regime, rd in runs.items():
        md.append("## Results — %s\n" % REGIME_TITLE[regime])
        for op in rd.ops:
            hdr, rows = op_table(rd, op, markdown=True)
            md.append("### %s\n" % op)
            md.append(render_md(hdr, rows))
            md.append("")

    md.append("## Targets\n")
    md.append("A check is one criterion on one case (one op/layout/dtype group for linear scaling); "
              "n/a (peer or floor missing) and (info) cells are not counted. Each ratio compares "
              "bnforge with a peer timed in the same process.\n")
    md.append(render_md(["criterion", "pass", "worst"],
                        [[label, "%d / %d" % (n_ok, n_all) if n_all else "—", worst if n_all else "not evaluated"]
                         for label, n_ok, n_all, worst in summary], left=3))
    md.append("")
    md += tmd
    md.append("**%d of %d checks passed.**\n" % (passed, total))

    md += autoscheduler_md(d)

    if any(rd.skipped() for rd in runs.values()):
        md.append("## Skipped\n")
        for regime, rd in runs.items():
            lines = skipped_md(rd)
            if lines:
                md.append("### %s\n" % REGIME_NAME[regime])
                md += lines

    for section in args.section:
        if os.path.isfile(section):
            with open(section, encoding="utf-8") as f:
                md += [f.read().rstrip("\n"), ""]
        else:
            warn("--section %s does not exist; left out" % section)

    if args.analysis:
        if os.path.isfile(args.analysis):
            with open(args.analysis, encoding="utf-8") as f:
                text = f.read().rstrip("\n")
            md += ["## Analysis", "", text, ""]
        else:
            warn("--analysis %s does not exist; no Analysis section" % args.analysis)

    md_path = os.path.join(args.out_dir, stem + ".md")
    with open(md_path, "w", encoding="utf-8") as f:
        f.write("\n".join(md).rstrip("\n") + "\n")
    print("\nwrote %s" % md_path)
    if not plot_err:
        print("wrote %s" % os.path.join(args.out_dir, stem + ".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
