// When an elementwise pass writes its output with streaming stores.
//
// A streaming (non-temporal) store writes a whole cache line without reading
// it first, and leaves it out of the caches: for an output larger than the
// last-level cache it saves a third of an elementwise pass's memory traffic
// (oneDNN's CPU batch normalization streams its outputs the same way). For an
// output that fits, it would evict what the next layer is about to read.
// The kernels that do it are the <library>_streaming variants
// (cmake/streaming_stores.py); they fault on rows that do not start on a
// 64-byte boundary, so they are only ever called on outputs that do.
#pragma once
#include "kernels.h"

namespace bnforge::detail {

// The streaming variant of a CPU kernel for `out` when one was built, `out`
// has at least streaming_store_limit() bytes and every row of it starts on a
// 64-byte boundary; else nullptr (call the ordinary kernel). A fused kernel
// streams its other outputs too: `second` (backward's daddend, rows on 64
// bytes as well) and the ReLU `mask` (rows on abi::max_mask_vector_bytes).
const KernelEntry* streaming_kernel_for(const BatchView& out, Pipeline pipeline, Device device, Fusion fusion,
                                        const halide_buffer_t* second = nullptr,
                                        const halide_buffer_t* mask = nullptr);

}  // namespace bnforge::detail
