// The cache sizes behind the runtime's size thresholds: sysfs parsed as the
// kernel writes it, those sizes against CPUID's deterministic cache leaves
// read here directly (the sysconf of Debian 12's glibc reads AMD's legacy
// leaf instead, and reports ten times the L3 of a Zen 4 VM), and the
// one-pass and streaming-store defaults derived from them.
#include <gtest/gtest.h>

#include "cpu_caches.h"

#include <bnforge/runtime.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#if defined(__x86_64__)
#include <cpuid.h>
#endif

using namespace bnforge;
namespace fs = std::filesystem;

namespace {

// A sysfs-shaped cache directory with the given (level, type, size) entries.
struct FakeCacheDir {
    struct Entry {
        int level;
        const char* type;
        const char* size;
    };
    explicit FakeCacheDir(std::initializer_list<Entry> entries) {
        std::string pattern = (fs::temp_directory_path() / "bnforge-caches-XXXXXX").string();
        const char* made = mkdtemp(pattern.data());
        if (!made) throw std::runtime_error("mkdtemp " + pattern + ": " + std::strerror(errno));
        root = made;
        int index = 0;
        for (const Entry& e : entries) {
            const fs::path dir = root / ("index" + std::to_string(index++));
            fs::create_directories(dir);
            std::ofstream(dir / "level") << e.level << "\n";
            std::ofstream(dir / "type") << e.type << "\n";
            std::ofstream(dir / "size") << e.size << "\n";
        }
    }
    ~FakeCacheDir() { fs::remove_all(root); }
    fs::path root;
};

TEST(CpuCaches, ParsesSysfs) {
    const FakeCacheDir dir({{1, "Data", "48K"},
                            {1, "Instruction", "32K"},
                            {2, "Unified", "2048K"},
                            {3, "Unified", "32M"}});
    const std::string root = dir.root.string();
    const std::array<size_t, 5> sizes = detail::sysfs_cache_sizes(root);
    EXPECT_EQ(sizes[1], size_t{48} << 10);  // the data cache, not the instruction one
    EXPECT_EQ(sizes[2], size_t{2} << 20);
    EXPECT_EQ(sizes[3], size_t{32} << 20);
    EXPECT_EQ(sizes[4], 0u);
    EXPECT_EQ(detail::sysfs_cache_sizes(root + "/absent")[1], 0u);

    const FakeCacheDir instruction_only({{1, "Instruction", "32K"}});
    EXPECT_EQ(detail::sysfs_cache_sizes(instruction_only.root.string())[1], 0u);
}

#if defined(__x86_64__)
// The data/unified cache of `level` from CPUID's deterministic cache leaf
// (AMD 0x8000001D, Intel 4): ways × partitions × line × sets; 0 if none.
size_t cpuid_cache_bytes(int level) {
    unsigned a, b, c, d;
    __cpuid(0, a, b, c, d);
    const bool amd = b == 0x68747541;  // "Auth"enticAMD
    const unsigned leaf = amd ? 0x8000001D : 4;
    if (amd) {
        __cpuid(0x80000001, a, b, c, d);
        if ((c & (1u << 22)) == 0) return 0;  // no TOPOEXT: no 0x8000001D
    } else if (a < 4) {
        return 0;
    }
    for (unsigned index = 0; index < 16; index++) {
        __cpuid_count(leaf, index, a, b, c, d);
        const unsigned type = a & 31;  // 1 data, 2 instruction, 3 unified
        if (type == 0) break;
        if (static_cast<int>((a >> 5) & 7) != level || type == 2) continue;
        return size_t{((b >> 22) & 0x3ff) + 1} * (((b >> 12) & 0x3ff) + 1) * ((b & 0xfff) + 1) * (size_t{c} + 1);
    }
    return 0;
}

TEST(CpuCaches, MatchCpuidDeterministicLeaves) {
    if (detail::sysfs_cache_sizes("/sys/devices/system/cpu/cpu0/cache")[1] == 0)
        GTEST_SKIP() << "no sysfs cache description here";
    for (int level = 1; level <= 3; level++) {
        const size_t expected = cpuid_cache_bytes(level);
        if (expected == 0) continue;
        EXPECT_EQ(detail::cpu_cache_bytes(level), expected) << "L" << level;
    }
}
#endif

TEST(CpuCaches, DefaultLimitsFollowThem) {
    set_one_pass_limit(123);
    set_one_pass_min_bytes(789);
    set_streaming_store_limit(456);
    EXPECT_EQ(one_pass_limit(), 123u);
    EXPECT_EQ(one_pass_min_bytes(), 789u);
    EXPECT_EQ(streaming_store_limit(), 456u);
    set_one_pass_limit(std::nullopt);
    set_one_pass_min_bytes(std::nullopt);
    set_streaming_store_limit(std::nullopt);
    if (std::getenv("BNFORGE_ONE_PASS_BYTES") || std::getenv("BNFORGE_ONE_PASS_MIN_BYTES") ||
        std::getenv("BNFORGE_STREAMING_STORE_BYTES"))
        GTEST_SKIP() << "a limit is set by the environment";
    if (detail::cpu_cache_bytes(2) == 0 || detail::last_level_cache_bytes() == 0)
        GTEST_SKIP() << "the CPU reports no cache size";
    EXPECT_EQ(one_pass_limit(), detail::cpu_cache_bytes(2) / 2);
    EXPECT_EQ(one_pass_min_bytes(), detail::last_level_cache_bytes() / 2);
    EXPECT_EQ(streaming_store_limit(), detail::last_level_cache_bytes() / 4);
}

}  // namespace
