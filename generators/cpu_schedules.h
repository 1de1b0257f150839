// The manual CPU schedules: vectorised along the contiguous dimension,
// parallel over rows or channel blocks.
#pragma once

#include "bn_math.h"
#include "channel_sums.h"

#include <optional>

namespace bnforge_gen {

// Rotated past the LLC, bfloat16 applies in tasks of 32 KiB (16K values, the
// float32 size) took 5-15% longer than in tasks of 128 KiB; float32 was level
// (bench/analysis.md, "Tasks of 128 KiB").
constexpr int kTaskBytes = 128 * 1024;
constexpr int kMinTasks = 16;              // about the 13 that 16K-value tasks gave 1x64x56x56
constexpr int kMinTaskValues = 16 * 1024;  // the earlier size: a small call stays one task

// channel_sums vectorised (rfactor across lanes for NCHW, across channels for
// NHWC); the float64 pass over chunks is O(C·N·S/chunk).
//  - at root: the chunk sums run in parallel over the batch (the two-pass
//    pipelines, whatever the size);
//  - at a channel loop of a one-pass pipeline (`at` = that loop): the
//    channel's sums are computed inside it, serially, just before its
//    elementwise outputs re-read the same slab from cache.
// Both orders add the same float32 values in the same order, so one-pass and
// two-pass pipelines give bitwise identical statistics.
// At root, `channels` and `input_bytes` (the size of x's type) size the NCHW
// tasks (units_per_task over (channel, group) pairs).
void schedule_channel_sums_cpu(ChannelSums& cs, Layout layout, int vec, const Expr& channels, int input_bytes);
void schedule_channel_sums_cpu(ChannelSums& cs, Layout layout, int vec, const LoopLevel& at);

// How many units of `unit_values` values of `value_bytes` one parallel task
// takes out of `units`: kTaskBytes, less where that would leave fewer than
// kMinTasks tasks, but never under kMinTaskValues values (and at least one).
Expr units_per_task(const Expr& units, const Expr& unit_values, int value_bytes);

// Rows (d1, outer) of `f` cut into parallel tasks of up to `rows_per_task`
// rows of d1 within one `outer`, each row vectorised along d0. Returns the
// per-task row loop, where siblings can be fused with compute_with, and the
// vector lanes of d0.
struct TaskRows {
    Var rows, lanes;
};
TaskRows split_rows_into_tasks(Func f, const Var& d0, const Var& d1, const Var& outer, const Expr& rows_per_task,
                               int vec);

// An elementwise output in memory order (d0, d1, n): each parallel task takes
// whole d0 rows of several d1 of one n, units_per_task of the `rows` (the
// extent of d1 times that of n) in the output's type. `channel_operands`: the
// float32 per-channel vectors each element reads (NHWC: shift, offset, ...,
// as long as a row). When they come to kRowGroupOperandBytes per row, they no
// longer stay in L1 beside the rows' data, and the loop takes kRowGroup rows
// per channel vector instead of one. Returns the task's row loop (ungrouped),
// for compute_with.
constexpr int kRowGroup = 8;
constexpr int kRowGroupOperandBytes = 24 * 1024;  // half of a 48 KiB L1d
Var schedule_rows_cpu(Func f, Layout layout, const Var& d0, const Var& d1, const Var& n, const Expr& row_length,
                      const Expr& rows, int vec, int channel_operands = 0);

// schedule_rows_cpu for an output `f` and its ReLU mask (d0, d1, m), whose
// `bits` are computed per mask vector: rows taken kMaskRows batch rows at a
// time, each vector of d0 for all kMaskRows rows (unrolled), and the mask
// that packs them: in NCHW its row after theirs, its inputs still in L1 or
// L2; in NHWC each mask vector after theirs. `f` is a pipeline output, whose
// shape sizes the tasks.
void schedule_masked_rows_cpu(Func f, Func mask, const MaskBits& bits, Layout layout, const Var& d0, const Var& d1,
                              const Var& n, const Var& m, int vec);

// A one-pass pipeline's elementwise output `f` (NCHW, memory order d0, d1, n):
// one parallel task per channel, its batch and spatial loops inside. Whatever
// is computed at level() sees one channel, which the runtime only sends here
// when the channel's N·S slab fits in L2: the statistics read it from memory,
// the outputs re-read it from cache. Sibling outputs join the same loops with
// fuse_with_channels.
struct ChannelLoop {
    Func func;  // the output whose loop nest the others join
    LoopLevel level() const { return LoopLevel(func, Var("d1")); }
};
ChannelLoop schedule_channels_cpu(Func f, Layout layout, const Var& d0, const Var& d1, const Var& n, int vec);

// Puts `g` — another output over (d0, d1, n), or a per-channel output over d1
// alone or rows (d1, row) with a bounded row — in the loop nest of `channels`: per-channel outputs once per
// channel, batch outputs row by row beside the main output. Halide matches
// fused loops by name, which is why per-channel outputs are defined over d1 too.
void fuse_with_channels(Func g, const ChannelLoop& channels, const Var& d0, const Var& d1, const Var& n, int vec);

// Puts the ReLU mask (d0, d1, m) in the loop nest of `channels`: the main
// output's batch loop is taken kMaskRows rows at a time, and each mask row is
// computed right after the rows it packs, which it re-reads from L1.
void fuse_mask_with_channels(Func mask, const MaskBits& bits, const ChannelLoop& channels, const Var& d0,
                             const Var& d1, const Var& n, const Var& m, int vec);

// Per-channel outputs of a finalize pipeline: vectorised along the channels.
void schedule_channel_outputs_cpu(Func f, int vec);

}  // namespace bnforge_gen
