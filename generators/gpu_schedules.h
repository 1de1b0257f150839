// The manual GPU schedules: coalesced along the contiguous dimension, no
// atomics (results are deterministic), every loop guarded for any size.
#pragma once

#include "bn_math.h"
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
// the byte of the 8 rows it has just written (its `bits` in registers).
void schedule_mask_gpu(Func mask, const MaskBits& bits, Func main, const Var& d0, const Var& d1, const Var& m,
                       const Var& at);

// One-pass training kernels (bn_train_forward, bn_train_backward) on a GPU,
// NCHW only: one block per channel computes the channel's statistics, then
// its outputs, re-reading its slab while it is still on chip (L1/L2) instead
// of from memory, in one launch. The batch output `f` gets kGpuElementThreads
// threads per block, coalesced along the row and looping over the rest of the
// slab; the per-channel stages are computed at the block, each in a thread
// loop of its own (one barrier per stage); the other outputs join the block
// with compute_with. (NHWC is not built: a block per warp of channels leaves
// most SMs idle, and PoCL miscompiles it; bench/analysis.md.)
struct OnePassGpu {
    Func main;
    Var block;   // the channel (block) loop of `main`
    Var thread;  // its thread loop, the same name in every stage of the block
    LoopLevel level() const { return LoopLevel(main, block); }
};
OnePassGpu schedule_one_pass_gpu(Func f, Layout layout, const Var& d0, const Var& d1, const Var& n);
// Another batch output (d_addend; the mask goes through fuse_mask_one_pass_gpu) in the same block.
void fuse_batch_output_one_pass_gpu(Func g, const OnePassGpu& b, const Var& d0, const Var& d1, const Var& n);
// The ReLU mask (d0, d1, m) in the same block, each thread computing its byte's bits in registers.
void fuse_mask_one_pass_gpu(Func mask, const MaskBits& bits, const OnePassGpu& b, const Var& d0, const Var& d1,
                            const Var& m);
// A per-channel rows output (c, row) in the same block.
void fuse_channel_rows_one_pass_gpu(Func rows_out, const OnePassGpu& b, const Var& c, const Var& row);
// A per-channel Func (c) at the block, in a one-thread loop.
void schedule_per_channel_one_pass_gpu(Func f, const OnePassGpu& b);
// The block's channel sums at the block: kGpuReduceLanes lanes per chunk as
// in schedule_channel_sums_gpu, all chunks in one stage, then a thread per chunk.
void schedule_channel_sums_one_pass_gpu(ChannelSums& cs, const OnePassGpu& b);

}  // namespace bnforge_gen
