#include "block_cache.h"

#include <bnforge/runtime.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <unistd.h>
#include <vector>

namespace bnforge {

namespace {

// Blocks of every size are kept. Tensors take 64-byte aligned blocks, and
// glibc 2.36's aligned_alloc bypasses its per-thread cache: each small block
// (a 256-byte per-channel vector) went through the arena's search and lock,
// and with 1.5 KB blocks the arena first consolidated the small chunks freed
// since (a third of a BN+ReLU call at 1x64x7x7, bench/analysis.md).
// An eighth of physical memory, at least 1 GiB: enough for the outputs of one
// batch-norm layer at batch 256 (a backward's dx and d_addend at 822 MB each).
size_t default_limit() {
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    const size_t physical = pages > 0 && page > 0 ? static_cast<size_t>(pages) * static_cast<size_t>(page) : 0;
    return std::max(size_t{1} << 30, physical / 8);
}

size_t initial_limit() {
    if (const char* env = std::getenv("BNFORGE_HOST_CACHE_BYTES")) return std::strtoull(env, nullptr, 10);
    return default_limit();
}

struct Cache {
    std::mutex mutex;
    // Free blocks by size, each list oldest first. A size's list stays when
    // it empties, so a call that takes and returns the same sizes allocates
    // nothing here (a multimap node per release was a tenth of a small
    // call's allocations).
    std::map<size_t, std::vector<void*>> blocks;
    size_t cached = 0;
    size_t limit = initial_limit();

    // Frees blocks (largest first; of equal size, the longest unused) until
    // `cached` + `incoming` fits the limit.
    void trim(size_t incoming) {
        for (auto size = blocks.rbegin(); size != blocks.rend() && cached + incoming > limit; ++size) {
            std::vector<void*>& free_blocks = size->second;
            size_t dropped = 0;
            while (dropped < free_blocks.size() && cached + incoming > limit) {
                std::free(free_blocks[dropped++]);
                cached -= size->first;
            }
            free_blocks.erase(free_blocks.begin(), free_blocks.begin() + static_cast<std::ptrdiff_t>(dropped));
        }
    }
};

Cache& cache() {
    static Cache* c = new Cache;  // never destroyed: tensors may be released during static destruction
    return *c;
}

}  // namespace

void set_host_cache_limit(size_t bytes) {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    c.limit = bytes;
    c.trim(0);
}

size_t host_cache_limit() {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    return c.limit;
}

void empty_host_cache() {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    for (auto& [bytes, free_blocks] : c.blocks)
        for (void* ptr : free_blocks) std::free(ptr);
    c.blocks.clear();
    c.cached = 0;
}

namespace detail {

void* take_cached_block(size_t bytes) {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    // The block released last: the one most likely still in cache.
    const auto it = c.blocks.find(bytes);
    if (it == c.blocks.end() || it->second.empty()) return nullptr;
    void* ptr = it->second.back();
    it->second.pop_back();
    c.cached -= bytes;
    return ptr;
}

void return_block(void* ptr, size_t bytes) {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    if (bytes <= c.limit) {
        c.trim(bytes);
        c.blocks[bytes].push_back(ptr);
        c.cached += bytes;
        return;
    }
    std::free(ptr);
}

}  // namespace detail
}  // namespace bnforge
