// Device memory for the CUDA kernels and tensors. bnforge replaces the block
// cache of Halide's CUDA runtime (halide_cuda_device_malloc/free, weak symbols
// in the runtime) with this one, because Halide's returns blocks to the
// driver whenever more than 32 are free and cannot keep a CUDA graph's blocks
// apart: a block baked into a captured graph must never be handed to another
// call, nor freed, while the graph can replay.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <unordered_map>

namespace bnforge::detail {

// The two driver calls the cache makes: CUDA's (cuda_context.cpp), or a test's fake.
class DeviceMemoryDriver {
public:
    virtual ~DeviceMemoryDriver() = default;
    virtual uint64_t allocate(size_t bytes, void* context) = 0;  // 0 when the device is out of memory
    virtual void release(uint64_t block, void* context) = 0;
};

// Where a free block may be reused: the same context, in stream order after its last use.
struct BlockKey {
    void* context = nullptr;
    void* stream = nullptr;
    size_t bytes = 0;  // the size class
    bool operator<(const BlockKey& o) const {
        return std::tie(context, stream, bytes) < std::tie(o.context, o.stream, o.bytes);
    }
};

// The blocks of one CudaGraphPool: handed out only to calls made under it.
struct GraphPoolState {
    bool open = true;                       // false once the CudaGraphPool is destroyed
    std::multimap<BlockKey, uint64_t> free;  // its free blocks
    size_t bytes = 0;                       // all its blocks, free and in use
};

// Sizes are rounded up to a class (the top three bits after the leading one:
// at most 12.5% slack), so that shapes that differ a little share blocks.
size_t device_size_class(size_t bytes);

class DeviceBlockCache {
public:
    explicit DeviceBlockCache(DeviceMemoryDriver& driver) : driver_(driver) {}

    // A block of at least `bytes` in `context`, for `stream`: a free one of the
    // size class (from `pool`'s blocks when given, else the cache's), else a new
    // one from the driver — unless `capturing`, when the driver must not be
    // called: then an Error, as it is when the device is out of memory.
    uint64_t allocate(size_t bytes, void* context, void* stream, const std::shared_ptr<GraphPoolState>& pool,
                      bool capturing);
    // Back to the free blocks of its pool (or the cache), reusable on `stream`;
    // to the driver when its pool is gone. Unknown blocks are an Error.
    void free(uint64_t block, void* stream);
    // The cache's free blocks back to the driver; pools keep theirs.
    void release_cached();
    // The pool's free blocks back to the driver; the ones still in use follow when freed.
    void close_pool(GraphPoolState& pool);

    struct Stats {
        size_t blocks = 0;        // every block the driver gave and the cache still holds
        size_t cached_bytes = 0;  // free, outside pools
    };
    Stats stats() const;
    size_t pool_bytes(const GraphPoolState& pool) const;

private:
    struct Block {
        size_t bytes = 0;
        void* context = nullptr;
        std::shared_ptr<GraphPoolState> pool;
    };
    uint64_t take_free(std::multimap<BlockKey, uint64_t>& list, const BlockKey& key);
    void release_cached_locked();

    DeviceMemoryDriver& driver_;
    mutable std::mutex mutex_;
    std::unordered_map<uint64_t, Block> blocks_;  // every block from the driver not yet given back
    std::multimap<BlockKey, uint64_t> free_;      // the cache's free blocks
};

}  // namespace bnforge::detail
