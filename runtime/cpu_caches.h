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

#include <cstddef>
#include <string>

namespace bnforge::detail {

// Bytes of the data or unified cache of `level` (1–4) that CPU 0 uses; 0 when
// the machine reports none.
size_t cpu_cache_bytes(int level);

// Bytes of the highest-level cache CPU 0 uses; 0 when none is reported.
size_t last_level_cache_bytes();

// cpu_cache_bytes() read from a sysfs-shaped directory: `cache_dir` holds
// index0, index1, … each with `level`, `type` and `size` ("32768K"); 0 when
// no data or unified cache of that level is listed. For the tests.
size_t sysfs_cache_bytes(const std::string& cache_dir, int level);

}  // namespace bnforge::detail
