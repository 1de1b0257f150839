// When training forward/backward may run in one pass over memory.
//
// The one-pass kernels (train_forward, train_backward; NCHW only) run one
// channel per parallel task: its statistics, then its outputs, re-reading the
// channel's slab of the inputs from L2 instead of from memory. They pay off
// while a slab fits comfortably in L2, rows are long enough to amortise the
// per-channel work, there are enough channels to keep every thread busy, and
// the inputs are too large to stay cached for a second pass; otherwise the
// two-pass pipelines, parallel over the batch, are used.
#pragma once
#include "kernels.h"

namespace bnforge::detail {

// `tensors`: how many batch tensors of x's geometry the slab holds (forward
// 1: x; backward 2: x and dy). On a GPU, only with the manual kernel set
// (the one-pass GPU kernels have no autoscheduled variants).
bool one_pass_fits(const BatchView& x, int tensors, Device device);

}  // namespace bnforge::detail
