#include "one_pass.h"

#include <bnforge/runtime.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <string>
#include <unistd.h>

namespace bnforge {

namespace {

constexpr size_t kCacheLine = 64;

// Half of L2 leaves room for the outputs streaming through it and for the
// prefetchers running ahead into the next slab.
size_t default_limit() {
    const long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
    return (l2 > 0 ? static_cast<size_t>(l2) : size_t{1} << 20) / 2;
}

size_t initial_limit() {
    if (const char* env = std::getenv("BNFORGE_ONE_PASS_BYTES")) return std::strtoull(env, nullptr, 10);
    return default_limit();
}

std::mutex g_mutex;
size_t g_limit = initial_limit();

}  // namespace

void set_one_pass_limit(std::optional<size_t> bytes) {
    std::lock_guard<std::mutex> lock(g_mutex);
    g_limit = bytes ? *bytes : default_limit();
}

size_t one_pass_limit() {
    std::lock_guard<std::mutex> lock(g_mutex);
    return g_limit;
}

namespace detail {

bool one_pass_fits(const BatchView& x, int tensors) {
    const halide_buffer_t& b = x.buf;
    const size_t elem = b.type.bytes();
    const int64_t channels = b.dim[x.kernel_layout == Layout::NCHW ? 1 : 0].extent;
    const int64_t positions = int64_t{b.dim[x.kernel_layout == Layout::NCHW ? 0 : 1].extent} * b.dim[2].extent;
    // A block's slab: N·S values of one channel (NCHW), or N·S cache lines of
    // channels (NHWC: lines are what memory moves, however few channels they hold).
    const bool nchw = x.kernel_layout == Layout::NCHW;
    const size_t row = nchw ? elem : std::min<size_t>(kCacheLine, static_cast<size_t>(channels) * elem);
    const size_t slab = static_cast<size_t>(positions) * row * static_cast<size_t>(tensors);
    const int64_t block_channels = nchw ? 1 : static_cast<int64_t>(kCacheLine / elem);
    const int64_t blocks = (channels + block_channels - 1) / block_channels;
    const int64_t threads = std::max(1, num_threads());
    return slab <= one_pass_limit() && blocks >= 2 * threads;
}

}  // namespace detail
}  // namespace bnforge
