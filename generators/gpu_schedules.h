// The manual GPU schedules: coalesced along the contiguous dimension, no
// atomics (results are deterministic), every loop guarded for any size.
#pragma once

#include "channel_sums.h"

#include <vector>

namespace bnforge_gen {

// One thread per channel, a warp of channels per block: per-channel outputs,
// small per-channel Funcs, and every update definition of them. A 0-D Func
// (a counter) runs on one GPU thread.
void schedule_channels_gpu(Func f, const Var& c);
void schedule_scalar_gpu(Func f);
// Several per-channel outputs over the same c in one kernel: a thread per
// channel computes all of them (compute_with the first), one launch instead of one each.
void schedule_channel_outputs_gpu(const std::vector<Func>& outputs, const Var& c);
// A per-channel rows output (c, row) with a bounded row: a thread per channel
// writes its rows, computing `per_thread` (a per-channel Func, if defined) first.
void schedule_channel_rows_gpu(Func f, const Var& c, const Var& row, Func per_thread = Func());

// channel_sums feeding a rows output `rows_out` (c, row). One block per chunk.
// NCHW: kGpuReduceLanes threads read a chunk (its rows and positions as one
// index, coalesced), each keeping a float32 partial in a register (rfactor),
// then one thread adds the partials. NHWC: threads run along the channels
// (coalesced), each summing its channel's chunk serially. The float64 pass
// over the chunks runs in rows_out's kernel, a thread per channel.
void schedule_channel_sums_gpu(ChannelSums& cs, Layout layout, Func rows_out, const Var& c, const Var& row);

// An elementwise output in memory order (d0, d1, n), in 3-D tiles: a warp of
// threads along d0 (the contiguous dimension, so every load and store is
// coalesced), 8 warps along d1, and each thread unrolled over kMaskRows batch
// rows (independent loads in flight). No index is recovered by a division per
// element (the fused 1-D schedule it replaces was bound by those divisions at
// 30% of the copy bandwidth on an H200): the tile comes from the block index,
// divided once per thread. A thread covers the 8 rows that one ReLU-mask byte
// packs, so the mask's stage (schedule_mask_gpu) and any sibling output join
// its thread loop, which this returns, with compute_with. Short rows (7x7
// NCHW) leave some lanes of the last d0 tile idle.
Var schedule_elementwise_gpu(Func f, const Var& d0, const Var& d1, const Var& n);

// The ReLU mask (d0, d1, m) beside an output scheduled by
// schedule_elementwise_gpu: the same blocks and threads, each thread packing
// the byte of the 8 rows it has just written.
void schedule_mask_gpu(Func mask, Func main, const Var& d0, const Var& d1, const Var& m, const Var& at);

}  // namespace bnforge_gen
