#include "streaming_stores.h"

#include "byte_limit.h"
#include "cpu_caches.h"

#include <bnforge/runtime.h>

#include <cstdint>

namespace bnforge {

namespace {

// Half of the last-level cache: an output up to that size is likely still
// cached when the next layer reads it, so it is written through the caches.
size_t default_limit() {
    const size_t llc = detail::last_level_cache_bytes();
    return (llc > 0 ? llc : size_t{32} << 20) / 2;
}

detail::ByteLimit g_limit("BNFORGE_STREAMING_STORE_BYTES", &default_limit);

}  // namespace

void set_streaming_store_limit(std::optional<size_t> bytes) { g_limit.set(bytes); }
size_t streaming_store_limit() { return g_limit.get(); }

namespace detail {

namespace {

constexpr int64_t kLineBytes = 64;

// Every row of `out` starts on a cache line (the kernels' vector loops then
// store whole aligned vectors from each row's start; tails are masked stores).
bool rows_line_aligned(const BatchView& out) {
    if (reinterpret_cast<uintptr_t>(out.buf.host) % kLineBytes != 0) return false;
    const int64_t bytes = out.buf.type.bytes();
    for (int d = 1; d < 3; d++) {
        if (out.dims[d].extent > 1 && (out.dims[d].stride * bytes) % kLineBytes != 0) return false;
    }
    return out.dims[0].stride == 1;
}

}  // namespace

const KernelEntry* streaming_kernel_for(const BatchView& out, Pipeline pipeline, Device device, Fusion fusion) {
    if (!device.is_cpu() || selected_kernel_schedule() != "manual") return nullptr;
    const size_t bytes = static_cast<size_t>(out.dims[0].extent) * out.dims[1].extent * out.dims[2].extent *
                         out.buf.type.bytes();
    if (bytes < streaming_store_limit() || !rows_line_aligned(out)) return nullptr;
    return find_streaming_kernel(pipeline, out.dtype, out.kernel_layout, fusion);
}

}  // namespace detail
}  // namespace bnforge
