// The CPU's cache sizes, for the runtime's size thresholds (the one-pass
// limit, the streaming-store limit) and the bench's regimes.
//
// Read from the kernel's sysfs (/sys/devices/system/cpu/cpu0/cache), which
// describes each cache instance from CPUID's deterministic cache leaves
// (Intel leaf 4, AMD 0x8000001D). glibc 2.36's sysconf reads AMD's legacy leaf
// 0x80000006 instead, which on Zen reports the L3 of the whole package: 320
// MiB on a Genoa VM whose two cores share 32 MiB. sysconf is the fallback
// where sysfs says nothing.
#pragma once

#include <array>
#include <cstddef>
#include <string>

namespace bnforge::detail {

// Bytes of the data or unified cache of `level` (1–4) that CPU 0 uses; 0 when
// the machine reports none.
size_t cpu_cache_bytes(int level);

// Bytes of the highest-level cache CPU 0 uses; 0 when none is reported.
size_t last_level_cache_bytes();

// last_level_cache_bytes() / divisor (of 32 MiB where none is reported): the
// defaults of the streaming-store limit and the one-pass minimum.
size_t last_level_cache_fraction(size_t divisor);

// The sizes cpu_cache_bytes() reads, from a sysfs-shaped directory in one
// pass: `cache_dir` holds index0, index1, … each with `level`, `type` and
// `size` ("32768K"); element `level` (1–4) is the first data or unified
// cache of that level listed, 0 where none is. For the tests.
std::array<size_t, 5> sysfs_cache_sizes(const std::string& cache_dir);

}  // namespace bnforge::detail
