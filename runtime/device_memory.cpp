#include "device_memory.h"

#include "check.h"

namespace bnforge::detail {

size_t device_size_class(size_t bytes) {
    constexpr size_t kMinimum = 512;  // the driver aligns to 256 bytes anyway
    if (bytes <= kMinimum) return kMinimum;
    const int top = 63 - __builtin_clzll(bytes);
    const size_t unit = size_t{1} << (top - 3);
    return (bytes + unit - 1) / unit * unit;
}

uint64_t DeviceBlockCache::take_free(std::multimap<BlockKey, uint64_t>& list, const BlockKey& key) {
    auto it = list.find(key);
    if (it == list.end()) return 0;
    const uint64_t block = it->second;
    list.erase(it);
    return block;
}

uint64_t DeviceBlockCache::allocate(size_t bytes, void* context, void* stream,
                                    const std::shared_ptr<GraphPoolState>& pool, bool capturing) {
    const size_t size = device_size_class(bytes);
    const BlockKey key{context, stream, size};
    std::lock_guard<std::mutex> lock(mutex_);
    if (pool) {
        BNF_CHECK(pool->open, "the CudaGraphPool of this thread's CudaGraphPoolGuard has been destroyed");
        if (const uint64_t block = take_free(pool->free, key)) return block;
    } else {
        BNF_CHECK(!capturing,
                  "allocating " << bytes << " bytes of device memory while the stream is being captured into a CUDA "
                                << "graph needs a bnforge::CudaGraphPool: a cached block would be baked into the graph "
                                << "and handed to other calls; see the README, \"CUDA graphs\"");
        if (const uint64_t block = take_free(free_, key)) return block;
    }
    BNF_CHECK(!capturing, "no free block of " << size << " bytes (for " << bytes << ") in the CudaGraphPool, and "
                                              << "allocating from the driver would break the CUDA graph capture: run "
                                              << "the same step once under the pool before capturing, and release "
                                              << "its outputs (the capture reuses their memory)");
    uint64_t block = driver_.allocate(size, context);
    if (!block) {
        // As Halide's and PyTorch's caches do: give back what is cached, then try once more.
        release_cached_locked();
        block = driver_.allocate(size, context);
    }
    BNF_CHECK(block, "out of device memory allocating " << bytes << " bytes");
    blocks_[block] = Block{size, context, pool};
    if (pool) pool->bytes += size;
    return block;
}

void DeviceBlockCache::free(uint64_t block, void* stream) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = blocks_.find(block);
    BNF_ASSERT(it != blocks_.end(), "a device block this cache allocated");
    const Block& b = it->second;
    const BlockKey key{b.context, stream, b.bytes};
    if (!b.pool) {
        free_.emplace(key, block);
    } else if (b.pool->open) {
        b.pool->free.emplace(key, block);
    } else {
        b.pool->bytes -= b.bytes;
        driver_.release(block, b.context);
        blocks_.erase(it);
    }
}

void DeviceBlockCache::release_cached() {
    std::lock_guard<std::mutex> lock(mutex_);
    release_cached_locked();
}

void DeviceBlockCache::release_cached_locked() {
    for (auto& [key, block] : free_) {
        driver_.release(block, key.context);
        blocks_.erase(block);
    }
    free_.clear();
}

void DeviceBlockCache::close_pool(GraphPoolState& pool) {
    std::lock_guard<std::mutex> lock(mutex_);
    pool.open = false;
    for (auto& [key, block] : pool.free) {
        pool.bytes -= key.bytes;
        driver_.release(block, key.context);
        blocks_.erase(block);
    }
    pool.free.clear();
}

DeviceBlockCache::Stats DeviceBlockCache::stats() const {
    std::lock_guard<std::mutex> lock(mutex_);
    Stats s;
    s.blocks = blocks_.size();
    for (auto& [key, block] : free_) s.cached_bytes += key.bytes;
    return s;
}

size_t DeviceBlockCache::pool_bytes(const GraphPoolState& pool) const {
    std::lock_guard<std::mutex> lock(mutex_);
    return pool.bytes;
}

}  // namespace bnforge::detail
