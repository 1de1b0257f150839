// A bounded cache of large host blocks, reused by exact size.
//
// A training loop allocates the same activation-sized outputs every step.
// glibc serves blocks above its mmap threshold (at most 32 MiB) with fresh
// mappings whose first touch page-faults every page — for a memory-bound
// kernel, more time than the kernel itself. Keeping freed blocks for the next
// request of the same size removes that cost, as PyTorch's CUDA caching
// allocator does on the device. Small blocks go straight to malloc.
#pragma once
#include <cstddef>

namespace bnforge::detail {

// A cached block of exactly `bytes` (64-byte aligned), or nullptr.
void* take_cached_block(size_t bytes);
// Keeps `ptr` (from aligned_alloc, `bytes` long) for reuse, or frees it when
// the cache would exceed its limit.
void return_block(void* ptr, size_t bytes);

}  // namespace bnforge::detail
