// What the harnesses share: a file in memory for readers that take a path,
// and reading every element of a tensor through its strides (so ASan sees
// any byte a view claims but does not own).
#pragma once

#include <bnforge/bnforge.h>

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

namespace fuzzutil {

// A memfd, rewritten per input: no disk, and /proc/self/fd/N is a path.
inline const std::string& write_memory_file(const void* data, size_t size) {
    static const int fd = memfd_create("bnforge-fuzz", 0);
    static const std::string path = "/proc/self/fd/" + std::to_string(fd);
    if (fd < 0 || ftruncate(fd, 0) != 0 ||
        (size > 0 && pwrite(fd, data, size, 0) != static_cast<ssize_t>(size)))
        std::abort();  // the harness's own failure, not bnforge's
    return path;
}

// Sums every byte of the first 2^20 elements of a host tensor (all of them,
// unless a zero stride makes billions of one), walking its strides.
inline uint64_t touch_elements(const bnforge::Tensor& t) {
    const int64_t n = std::min<int64_t>(t.numel(), int64_t{1} << 20);
    if (n == 0) return 0;
    const auto* base = static_cast<const uint8_t*>(t.raw_data());
    const size_t es = bnforge::element_size(t.dtype());
    std::vector<int64_t> index(t.shape().size(), 0);
    uint64_t sum = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t offset = 0;
        for (size_t d = 0; d < index.size(); d++) offset += index[d] * t.strides()[d];
        for (size_t b = 0; b < es; b++) sum += base[offset * static_cast<int64_t>(es) + static_cast<int64_t>(b)];
        for (size_t d = index.size(); d-- > 0;) {
            if (++index[d] < t.shape()[d]) break;
            index[d] = 0;
        }
    }
    return sum;
}

}  // namespace fuzzutil
