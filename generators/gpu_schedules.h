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
// writes its rows.
void schedule_channel_rows_gpu(Func f, const Var& c, const Var& row);

// channel_sums: one block per chunk. NCHW: a chunk is read by a warp of 32
// threads along the row (coalesced), each keeping a float32 partial in a
// register (rfactor), then one thread adds the 32 partials. NHWC: threads run
// along the channels (coalesced), each summing its channel's chunk serially.
// The float64 pass over chunks is one thread per channel.
void schedule_channel_sums_gpu(ChannelSums& cs, Layout layout);

// An elementwise output in memory order (d0, d1, n). d0 and d1 are fused: one
// batch row of a dense tensor is contiguous in either layout, so consecutive
// threads touch consecutive elements whatever the shape (7x7 rows or
// 3-channel NHWC alike), and the channel is recovered by a division per
// element, free in a memory-bound kernel. Blocks of kGpuElementThreads
// threads; each thread handles 4 elements kGpuElementThreads apart
// (unrolled: independent loads in flight, each one coalesced across the
// warp). With `mask_rows`, the batch is taken kMaskRows rows at a time
// instead: each thread takes one position of the 8 rows that one ReLU-mask
// byte packs, so the mask's stage (schedule_mask_gpu) and any sibling output
// join its thread loop, which this returns, with compute_with.
Var schedule_elementwise_gpu(Func f, const Var& d0, const Var& d1, const Var& n, bool mask_rows = false);

// The ReLU mask (d0, d1, m) beside an output scheduled with mask_rows: the
// same blocks and threads, each thread packing the byte of the 8 rows it has
// just written.
void schedule_mask_gpu(Func mask, Func main, const Var& d0, const Var& d1, const Var& m, const Var& at);

}  // namespace bnforge_gen
