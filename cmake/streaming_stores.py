#!/usr/bin/env python3
"""Turns a Halide kernel's full-vector stores into streaming (non-temporal) stores.

Halide 21 cannot emit them (the stream_stores() directive came after it,
halide/Halide#9207), and without them every output cache line is read from
memory before it is written: a third of the traffic of an elementwise kernel
over data larger than the last-level cache.

Usage: streaming_stores.py --cc <C compiler> <x86 assembly>:<object> ...

Each assembly file is one x86 target of one kernel, as Halide's generator
writes it (-e assembly). In its parallel task functions (the loop bodies; the
entry function only checks arguments and fills stack structures), every
unmasked vector store to a non-stack address (not %rsp-relative, nor
%rbp-relative where %rbp is the frame pointer) becomes its non-temporal form,
and the result is assembled into the object. AVX-512's narrowing store
(`vpmovdw %zmm, mem`, bfloat16's) has none: it becomes a narrowing into
%ymm31, where the function names no register 31 itself, then a non-temporal
store of that. Masked stores (the tails of GuardWithIf loops) and scalar
stores are left as they are.

A non-temporal store faults unless its address is aligned to the vector, so
the kernels built this way may only be called on outputs whose rows start on
64-byte boundaries; the runtime checks that before it picks one
(runtime/streaming_stores.cpp). A kernel none of whose targets had anything
rewritten is an error: it would silently be the ordinary one.
"""
import argparse
import re
import subprocess
import sys

# store mnemonic -> its non-temporal form (same operands)
NON_TEMPORAL = {
    "movups": "movntps", "movaps": "movntps",
    "vmovups": "vmovntps", "vmovaps": "vmovntps",
    "movdqu": "movntdq", "movdqa": "movntdq",
    "vmovdqu": "vmovntdq", "vmovdqa": "vmovntdq",
    "vmovdqu32": "vmovntdq", "vmovdqu64": "vmovntdq", "vmovdqa32": "vmovntdq", "vmovdqa64": "vmovntdq",
}
# "<tab>vmovups<tab>%zmm3, 64(%r14,%rdx)" — register source, memory destination, no {%k} mask
STORE = re.compile(r"^\t(\w+)\t(%[xyz]mm\d+), (-?\w*\([^)]*\))\s*$")
# 16 dwords narrowed to 16 words in memory -> the register they are narrowed into instead
NARROWING = {"vpmovdw": "%ymm31"}
SCRATCH_USE = re.compile(r"%[xyz]mm31\b")
TASK_LABEL = re.compile(r"^\"?[\w.$-]*_par_for_[\w.$-]*\"?:")
FUNCTION_END = re.compile(r"^\.Lfunc_end\d+:")
FRAME_POINTER = re.compile(r"^\tmovq\t%rsp, %rbp")


def scratch_free(lines):
    """Per line: whether the function holding it never names the narrowing's scratch register."""
    free, start, used = [True] * len(lines), 0, False
    for i, line in enumerate(lines):
        used = used or bool(SCRATCH_USE.search(line))
        if FUNCTION_END.match(line) or i == len(lines) - 1:
            free[start:i + 1] = [not used] * (i + 1 - start)
            start, used = i + 1, False
    return free


def rewrite(lines):
    out, in_task, count = [], False, 0
    stack_registers = ("%rsp",)
    free = scratch_free(lines)
    for i, line in enumerate(lines):
        if TASK_LABEL.match(line):
            in_task, stack_registers = True, ("%rsp",)
        elif FUNCTION_END.match(line):
            in_task = False
        elif in_task and FRAME_POINTER.match(line):
            stack_registers = ("%rsp", "%rbp")  # %rbp is a frame pointer here, not a general register
        m = STORE.match(line) if in_task else None
        if m and not any(r in m.group(3) for r in stack_registers):
            if m.group(1) in NON_TEMPORAL:
                line = "\t%s\t%s, %s\n" % (NON_TEMPORAL[m.group(1)], m.group(2), m.group(3))
                count += 1
            elif m.group(1) in NARROWING and free[i]:
                scratch = NARROWING[m.group(1)]
                line = "\t%s\t%s, %s\n\tvmovntdq\t%s, %s\n" % (m.group(1), m.group(2), scratch, scratch, m.group(3))
                count += 1
        out.append(line)
    return out, count


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cc", required=True)
    parser.add_argument("pairs", nargs="+", help="<assembly>:<object>")
    args = parser.parse_args()
    total = 0
    for pair in args.pairs:
        asm, obj = pair.rsplit(":", 1)
        with open(asm) as f:
            lines, count = rewrite(f.readlines())
        total += count
        streamed = asm[:-2] + ".streaming.s"
        with open(streamed, "w") as f:
            f.writelines(lines)
        subprocess.run([args.cc, "-c", "-o", obj, streamed], check=True)
    if total == 0:
        sys.exit("%s: no vector store to rewrite in a parallel task of any target (has Halide's output changed?)"
                 % args.pairs[0].rsplit(":", 1)[0])


if __name__ == "__main__":
    main()
