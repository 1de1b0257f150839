// The generators' vocabulary: layouts, fusions, sizes, and the logical
// (s, c, n) view of a memory-order buffer.
//
// Every batch tensor reaches a generator as a 3-D buffer in memory order:
//   NCHW: (s, c, n)  — spatial innermost (all spatial dims merged into s)
//   NHWC: (c, s, n)  — channels innermost
// The algorithms are written once against logical coordinates (s, c, n);
// only the schedules look at the memory order.
#pragma once

#include "Halide.h"
#include "kernel_abi.h"

#include <map>
#include <string>

namespace bnforge_gen {

using namespace Halide;
using bnforge::abi::Fusion;
using bnforge::abi::kMaskRows;
namespace arg = bnforge::abi::arg;

enum class Layout { NCHW, NHWC };
inline const std::map<std::string, Layout> kLayoutNames = {{"nchw", Layout::NCHW}, {"nhwc", Layout::NHWC}};

// The `fusion` GeneratorParam takes the ABI's names. With ReLU a 1-bit mask
// records which outputs were positive, so backward never needs y.
inline const std::map<std::string, Fusion> kFusionNames = {{"none", Fusion::none},
                                                           {"relu", Fusion::relu},
                                                           {"add_relu", Fusion::add_relu},
                                                           {"masked", Fusion::masked}};

// Values are shifted by a per-channel estimate of the mean before summing
// (the mean of up to 8 of the channel's first values), so the sums see small
// numbers when the data sit far from zero, and M2 = Σd² − (Σd)²/M loses
// little to cancellation.
constexpr int kShiftSamples = 8;

// Threads along the coalesced dimension of a GPU schedule: one warp.
constexpr int kGpuWarp = 32;
// Threads of a block of an elementwise GPU kernel (see schedule_elementwise_gpu).
constexpr int kGpuElementThreads = 256;
// Threads that share one chunk of a GPU channel sum (see schedule_channel_sums_gpu).
constexpr int kGpuReduceLanes = 256;

// Typical ResNet-50 stage sizes: the default estimates (autoschedulers need them).
constexpr int kEstN = 32, kEstC = 256, kEstS = 56 * 56;

// Memory-order <-> logical coordinates.
Expr at(const Func& f, Layout layout, const Expr& s, const Expr& c, const Expr& n);

template <class Buf>
Expr spatial_extent(const Buf& b, Layout layout) {
    return b.dim(layout == Layout::NCHW ? 0 : 1).extent();
}
template <class Buf>
Expr channel_extent(const Buf& b, Layout layout) {
    return b.dim(layout == Layout::NCHW ? 1 : 0).extent();
}

}  // namespace bnforge_gen
