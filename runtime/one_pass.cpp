#include "one_pass.h"

#include "byte_limit.h"
#include "cpu_caches.h"
#include "device.h"

#include <bnforge/runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

namespace bnforge {

namespace {

// Half of L2 leaves room for the outputs streaming through it and for the
// prefetchers running ahead into the next slab.
size_t default_limit() {
    const size_t l2 = detail::cpu_cache_bytes(2);
    return (l2 > 0 ? l2 : size_t{1} << 20) / 2;
}

size_t gpu_default_limit() { return 48 * 1024; }

detail::ByteLimit g_limit("BNFORGE_ONE_PASS_BYTES", &default_limit);
// Half of the last-level cache: a smaller x (and dy) was likely still cached
// when it was written, and stays cached for a second pass.
detail::ByteLimit g_min_bytes("BNFORGE_ONE_PASS_MIN_BYTES", [] { return detail::last_level_cache_fraction(2); });
detail::ByteLimit g_gpu_limit("BNFORGE_GPU_ONE_PASS_BYTES", &gpu_default_limit);

}  // namespace

void set_gpu_one_pass_limit(std::optional<size_t> bytes) { g_gpu_limit.set(bytes); }
size_t gpu_one_pass_limit() { return g_gpu_limit.get(); }
void set_one_pass_limit(std::optional<size_t> bytes) { g_limit.set(bytes); }
size_t one_pass_limit() { return g_limit.get(); }
void set_one_pass_min_bytes(std::optional<size_t> bytes) { g_min_bytes.set(bytes); }
size_t one_pass_min_bytes() { return g_min_bytes.get(); }

namespace detail {

namespace {

// A block's slab and the block count of the GPU one-pass kernels
// (gpu_schedules.h): a block per channel, NCHW only.
bool gpu_one_pass_fits(const BatchView& x, int tensors, Device device) {
    if (x.kernel_layout != Layout::NCHW || selected_kernel_schedule() != "manual") return false;
    const halide_buffer_t& b = x.buf;
    const int64_t positions = int64_t{b.dim[0].extent} * b.dim[2].extent;
    const size_t slab = static_cast<size_t>(positions) * b.type.bytes() * static_cast<size_t>(tensors);
    const size_t limit = gpu_one_pass_limit();
    if (slab > limit) return false;
    if (limit == SIZE_MAX || !device.is_cuda()) return true;  // forced; OpenCL (PoCL) has no such rule
    // Fewer blocks than that leave multiprocessors idle for the whole kernel.
    return b.dim[1].extent >= 2 * int64_t{cuda_multiprocessor_count(device.index)};
}

}  // namespace

bool one_pass_fits(const BatchView& x, int tensors, Device device) {
    if (!device.is_cpu()) return gpu_one_pass_fits(x, tensors, device);
    // NCHW only (the only layout the one-pass kernels are built for): an NHWC
    // block walks one cache line per position, N·S strided lines, which the
    // prefetchers do not follow; its two passes over contiguous rows are faster.
    if (x.kernel_layout != Layout::NCHW) return false;
    const halide_buffer_t& b = x.buf;
    // Below this row length the per-channel work (statistics set-up, the
    // float64 combine, a vector tail per row) costs more than the second
    // read of x saves: 14x14 and 7x7 measured slower in one pass, 28x28 even
    // (bench/analysis.md).
    constexpr int kMinRow = 256;
    if (b.dim[0].extent < kMinRow) return false;
    const int64_t channels = b.dim[1].extent;
    const int64_t positions = int64_t{b.dim[0].extent} * b.dim[2].extent;
    const size_t slab = static_cast<size_t>(positions) * b.type.bytes() * static_cast<size_t>(tensors);
    const int64_t threads = std::max(1, num_threads());
    const size_t limit = one_pass_limit();
    const bool forced = limit == SIZE_MAX;  // one pass wherever the kernels apply (tests)
    if (slab > limit || channels < 2 * threads) return false;
    // Half-precision inputs take two passes unless forced: the read that one
    // pass saves is half as large, a channel's apply phase (widen, normalize,
    // narrow) is no shorter, and a thread runs its channel's two phases back
    // to back; two passes measured faster (bench/analysis.md, "Two passes
    // for half-precision inputs").
    if (b.type.bytes() < 4 && !forced) return false;
    // Inputs that fit in the cache's share stay there for a second pass, and
    // the two passes, parallel over the batch, were then as fast or faster
    // (bench/analysis.md).
    const size_t reads = slab * static_cast<size_t>(channels);
    return forced || reads > one_pass_min_bytes();
}

}  // namespace detail
}  // namespace bnforge
