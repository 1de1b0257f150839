// The device block cache behind every CUDA allocation (runtime/device_memory.h),
// over a fake driver that records what it is asked: reuse in stream order,
// CudaGraphPool blocks kept apart, nothing from the driver inside a capture,
// and blocks given back exactly once. The CUDA graph tests (test_cuda_graph.cpp)
// run the same cache on a GPU.
#include <gtest/gtest.h>

#include "device_memory.h"
#include "test_util.h"

#include <map>
#include <random>

namespace {

using bnforge::detail::DeviceBlockCache;
using bnforge::detail::DeviceMemoryDriver;
using bnforge::detail::GraphPoolState;
using bnforge::detail::device_size_class;

// Hands out distinct addresses up to `limit` bytes; fails a release it did not allocate.
class FakeDriver final : public DeviceMemoryDriver {
public:
    uint64_t allocate(size_t bytes, void* context) override {
        if (limit && used + bytes > limit) return 0;
        next += uint64_t{1} << 32;
        live[next] = {bytes, context};
        used += bytes;
        allocations++;
        return next;
    }
    void release(uint64_t block, void* context) override {
        auto it = live.find(block);
        ASSERT_NE(it, live.end()) << "released a block twice, or one the driver never gave";
        EXPECT_EQ(it->second.second, context) << "released in another context";
        used -= it->second.first;
        live.erase(it);
        releases++;
    }
    std::map<uint64_t, std::pair<size_t, void*>> live;
    uint64_t next = 0;
    size_t used = 0, limit = 0;
    int allocations = 0, releases = 0;
};

void* const kContext = reinterpret_cast<void*>(0x100);
void* const kOtherContext = reinterpret_cast<void*>(0x200);
void* const kStream = reinterpret_cast<void*>(0x10);
void* const kOtherStream = reinterpret_cast<void*>(0x20);
const std::shared_ptr<GraphPoolState> kNoPool;

TEST(DeviceMemory, SizeClassesBoundTheSlack) {
    EXPECT_EQ(device_size_class(1), 512u);
    EXPECT_EQ(device_size_class(512), 512u);
    EXPECT_EQ(device_size_class(513), 576u);
    EXPECT_EQ(device_size_class(1000), 1024u);
    EXPECT_EQ(device_size_class(size_t{1} << 30), size_t{1} << 30);
    std::mt19937_64 rng(3);
    size_t previous_class = 0, previous = 0;
    for (int i = 0; i < 10000; i++) {
        const size_t bytes = 513 + rng() % (size_t{1} << (10 + i % 28));
        const size_t c = device_size_class(bytes);
        EXPECT_GE(c, bytes);
        EXPECT_LE(c, bytes + bytes / 8) << bytes;
        EXPECT_EQ(device_size_class(c), c) << "a class is its own class";
        if (bytes >= previous) {
            EXPECT_GE(c, previous_class);
        }
        previous = bytes;
        previous_class = c;
    }
}

TEST(DeviceMemory, AFreedBlockIsReusedOnItsStreamAndContextOnly) {
    FakeDriver driver;
    DeviceBlockCache cache(driver);
    const uint64_t a = cache.allocate(1000, kContext, kStream, kNoPool, false);
    cache.free(a, kStream);
    const uint64_t other_stream = cache.allocate(1000, kContext, kOtherStream, kNoPool, false);
    const uint64_t other_context = cache.allocate(1000, kOtherContext, kStream, kNoPool, false);
    EXPECT_NE(other_stream, a);
    EXPECT_NE(other_context, a);
    EXPECT_EQ(cache.allocate(1020, kContext, kStream, kNoPool, false), a) << "1000 and 1020 bytes share a class";
    EXPECT_EQ(driver.allocations, 3);
    EXPECT_EQ(driver.releases, 0) << "freeing never calls the driver";
}

TEST(DeviceMemory, ABlockFreedOnAnotherStreamIsReusedThere) {
    FakeDriver driver;
    DeviceBlockCache cache(driver);
    const uint64_t a = cache.allocate(4096, kContext, kStream, kNoPool, false);
    cache.free(a, kOtherStream);  // its last use was ordered on the other stream
    EXPECT_NE(cache.allocate(4096, kContext, kStream, kNoPool, false), a);
    EXPECT_EQ(cache.allocate(4096, kContext, kOtherStream, kNoPool, false), a);
}

TEST(DeviceMemory, CaptureWithoutAPoolIsAnErrorThatTouchesNothing) {
    FakeDriver driver;
    DeviceBlockCache cache(driver);
    const uint64_t cached = cache.allocate(1 << 20, kContext, kStream, kNoPool, false);
    cache.free(cached, kStream);
    const auto before = cache.stats();
    EXPECT_ERROR_CONTAINS(cache.allocate(1 << 20, kContext, kStream, kNoPool, true), "needs a bnforge::CudaGraphPool");
    EXPECT_EQ(driver.allocations, 1);
    EXPECT_EQ(cache.stats().cached_bytes, before.cached_bytes) << "the cached block stays cached";
    EXPECT_EQ(cache.allocate(1 << 20, kContext, kStream, kNoPool, false), cached);
}

TEST(DeviceMemory, APoolKeepsItsBlocksAndServesTheCaptureFromThem) {
    FakeDriver driver;
    DeviceBlockCache cache(driver);
    auto pool = std::make_shared<GraphPoolState>();
    // The warm-up under the pool: blocks from the driver, back to the pool when freed.
    const uint64_t a = cache.allocate(3000, kContext, kStream, pool, false);
    const uint64_t b = cache.allocate(70000, kContext, kStream, pool, false);
    cache.free(a, kStream);
    cache.free(b, kStream);
    EXPECT_EQ(pool->bytes, device_size_class(3000) + device_size_class(70000));
    EXPECT_EQ(cache.stats().cached_bytes, 0u) << "pool blocks are not the cache's";
    // Calls outside the pool never get them.
    const uint64_t outside = cache.allocate(3000, kContext, kStream, kNoPool, false);
    EXPECT_NE(outside, a);
    // The capture: the same sizes come from the pool, with no driver call.
    const int allocations = driver.allocations;
    EXPECT_EQ(cache.allocate(70000, kContext, kStream, pool, true), b);
    EXPECT_EQ(cache.allocate(3000, kContext, kStream, pool, true), a);
    EXPECT_EQ(driver.allocations, allocations);
    // A size the warm-up did not allocate (or one still in use) cannot be served.
    EXPECT_ERROR_CONTAINS(cache.allocate(3000, kContext, kStream, pool, true), "run the same step once under the pool");
    EXPECT_EQ(driver.allocations, allocations);
    // Freed after the capture, outside any guard: still the pool's.
    cache.free(a, kStream);
    cache.free(outside, kStream);
    EXPECT_EQ(cache.allocate(3000, kContext, kStream, kNoPool, false), outside);
    EXPECT_EQ(cache.allocate(3000, kContext, kStream, pool, false), a);
}

TEST(DeviceMemory, ClosingAPoolReturnsItsBlocksToTheDriverOnce) {
    FakeDriver driver;
    DeviceBlockCache cache(driver);
    auto pool = std::make_shared<GraphPoolState>();
    const uint64_t freed = cache.allocate(1 << 16, kContext, kStream, pool, false);
    const uint64_t held = cache.allocate(1 << 18, kOtherContext, kStream, pool, false);  // a tensor still holds it
    cache.free(freed, kStream);
    cache.close_pool(*pool);
    EXPECT_EQ(driver.releases, 1);
    EXPECT_EQ(driver.live.count(freed), 0u);
    EXPECT_EQ(pool->bytes, size_t{1} << 18);
    cache.free(held, kStream);  // the tensor goes: its block to the driver, in its own context
    EXPECT_EQ(driver.releases, 2);
    EXPECT_TRUE(driver.live.empty());
    EXPECT_EQ(pool->bytes, 0u);
    EXPECT_EQ(cache.stats().blocks, 0u);
    EXPECT_ERROR_CONTAINS(cache.allocate(100, kContext, kStream, pool, false), "has been destroyed");
}

TEST(DeviceMemory, EmptyingTheCacheLeavesPoolsAndLiveBlocks) {
    FakeDriver driver;
    DeviceBlockCache cache(driver);
    auto pool = std::make_shared<GraphPoolState>();
    const uint64_t cached = cache.allocate(5000, kContext, kStream, kNoPool, false);
    const uint64_t live = cache.allocate(5000, kContext, kStream, kNoPool, false);
    const uint64_t pooled = cache.allocate(5000, kContext, kStream, pool, false);
    cache.free(cached, kStream);
    cache.free(pooled, kStream);
    cache.release_cached();
    EXPECT_EQ(driver.releases, 1);
    EXPECT_EQ(driver.live.count(cached), 0u);
    EXPECT_EQ(cache.allocate(5000, kContext, kStream, pool, true), pooled);
    cache.free(live, kStream);
    EXPECT_EQ(cache.allocate(5000, kContext, kStream, kNoPool, false), live);
}

TEST(DeviceMemory, OutOfMemoryGivesBackTheCacheThenRetriesOnce) {
    FakeDriver driver;
    driver.limit = 10000;
    DeviceBlockCache cache(driver);
    const uint64_t a = cache.allocate(4096, kContext, kStream, kNoPool, false);
    const uint64_t b = cache.allocate(4096, kContext, kStream, kNoPool, false);
    cache.free(a, kOtherStream);
    // 8 KiB in use by the driver's count; 4 KiB more only fits once the cached block goes back.
    const uint64_t c = cache.allocate(4096, kContext, kStream, kNoPool, false);
    EXPECT_EQ(driver.releases, 1);
    EXPECT_NE(c, 0u);
    const auto before = cache.stats();
    EXPECT_ERROR_CONTAINS(cache.allocate(8192, kContext, kStream, kNoPool, false), "out of device memory");
    EXPECT_EQ(cache.stats().blocks, before.blocks);
    cache.free(b, kStream);
    cache.free(c, kStream);
}

TEST(DeviceMemory, FreeingAnUnknownBlockIsAnError) {
    FakeDriver driver;
    DeviceBlockCache cache(driver);
    EXPECT_ERROR_CONTAINS(cache.free(0x1234, kStream), "a device block this cache allocated");
    const uint64_t a = cache.allocate(100, kContext, kStream, kNoPool, false);
    cache.free(a, kStream);
    EXPECT_NO_THROW(cache.allocate(100, kContext, kStream, kNoPool, false));
}

}  // namespace
