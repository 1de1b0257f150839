#include "streaming_stores.h"

#include "byte_limit.h"
#include "cpu_caches.h"

#include <bnforge/runtime.h>

#include <cstdint>

namespace bnforge {

namespace {

// A quarter of the last-level cache: a smaller output is likely still cached
// when the next layer reads it, so it is written through the caches. With
// that read timed (bnforge_bench --read-output), streaming won at outputs of
// 12.8 MB on a 32 MiB L3 and lost at 3.2 MB (bench/analysis.md).
detail::ByteLimit g_limit("BNFORGE_STREAMING_STORE_BYTES", [] { return detail::last_level_cache_fraction(4); });

}  // namespace

void set_streaming_store_limit(std::optional<size_t> bytes) { g_limit.set(bytes); }
size_t streaming_store_limit() { return g_limit.get(); }

namespace detail {

namespace {

constexpr int64_t kLineBytes = 64;

// Every row of `b` starts on an `alignment`-byte boundary (the kernels' vector
// loops then store whole aligned vectors from each row's start; tails are
// masked stores).
bool rows_aligned(const halide_buffer_t& b, int64_t alignment) {
    if (reinterpret_cast<uintptr_t>(b.host) % static_cast<uintptr_t>(alignment) != 0) return false;
    const int64_t bytes = b.type.bytes();
    for (int d = 1; d < b.dimensions; d++) {
        if (b.dim[d].extent > 1 && (b.dim[d].stride * bytes) % alignment != 0) return false;
    }
    return b.dim[0].stride == 1;
}

}  // namespace

const KernelEntry* streaming_kernel_for(const BatchView& out, Pipeline pipeline, Device device, Fusion fusion,
                                        const halide_buffer_t* second, const halide_buffer_t* mask) {
    if (!device.is_cpu() || selected_kernel_schedule() != "manual") return nullptr;
    const size_t bytes = static_cast<size_t>(out.dims[0].extent) * out.dims[1].extent * out.dims[2].extent *
                         out.buf.type.bytes();
    if (bytes < streaming_store_limit() || !rows_aligned(out.buf, kLineBytes)) return nullptr;
    if (second && !rows_aligned(*second, kLineBytes)) return nullptr;
    if (mask && !rows_aligned(*mask, abi::max_mask_vector_bytes(out.buf.type.bytes()))) return nullptr;
    return find_streaming_kernel(pipeline, out.dtype, out.kernel_layout, fusion);
}

}  // namespace detail
}  // namespace bnforge
