// Halide's multi-target wrapper asks halide_can_use_target_features() about
// each compiled sub-target but the baseline, on a kernel's first call, and
// runs the best one granted. bnforge answers through a custom hook so that it can (a) cap the
// level — every lower variant is then reachable on a machine that has the
// higher ones, which is how the tests exercise them — and (b) remember which
// level dispatch chose, for the demo and the bench.
#include <bnforge/runtime.h>

#include "check.h"
#include "halide_hooks.h"

#include <HalideRuntime.h>

#include <atomic>
#include <cstdlib>
#include <initializer_list>
#include <mutex>
#include <sstream>

namespace bnforge {

namespace {

// Halide's multi-target wrapper decides once per kernel, on its first call,
// so the cap must be in place before any kernel runs: from the environment
// (BNFORGE_MAX_CPU_LEVEL, read when the hooks are installed) or from
// set_max_cpu_level() before the first call.
std::atomic<int> g_max_level{-1};  // -1: no cap
std::atomic<int> g_last_level{-1};
std::atomic<bool> g_kernels_called{false};

// One row per CpuLevel: its name and the features a CPU needs for it; the
// first feature is the one that marks a sub-target as being of that level.
struct LevelInfo {
    const char* name;
    std::initializer_list<halide_target_feature_t> needs;
};
const LevelInfo kLevels[] = {
    {"baseline", {}},
    {"sse41", {halide_target_feature_sse41}},
    {"avx2", {halide_target_feature_avx2, halide_target_feature_fma, halide_target_feature_f16c, halide_target_feature_sse41}},
    {"avx512_skylake", {halide_target_feature_avx512_skylake, halide_target_feature_avx2, halide_target_feature_fma,
                        halide_target_feature_f16c}},
    {"avx512_sapphirerapids", {halide_target_feature_avx512_sapphirerapids, halide_target_feature_avx512_skylake,
                               halide_target_feature_avx2, halide_target_feature_fma}},
};
constexpr int kLevelCount = sizeof(kLevels) / sizeof(kLevels[0]);

bool has(int count, const uint64_t* features, halide_target_feature_t f) {
    const int word = static_cast<int>(f) / 64;
    return word < count && (features[word] >> (static_cast<int>(f) % 64) & 1) != 0;
}

CpuLevel level_of(int count, const uint64_t* features) {
    // A custom target list may say plain "avx512"; it dispatches like the Skylake level.
    if (!has(count, features, halide_target_feature_avx512_sapphirerapids) &&
        has(count, features, halide_target_feature_avx512))
        return CpuLevel::AVX512Skylake;
    for (int level = kLevelCount - 1; level > 0; level--) {
        if (has(count, features, *kLevels[level].needs.begin())) return static_cast<CpuLevel>(level);
    }
    return CpuLevel::Baseline;
}

}  // namespace

namespace detail {

int cpu_can_use_target_features(int count, const uint64_t* features) {
    const int level = static_cast<int>(level_of(count, features));
    const int cap = g_max_level.load(std::memory_order_relaxed);
    const int ok = (cap < 0 || level <= cap) && halide_default_can_use_target_features(count, features);
    // The wrapper asks about every sub-target but the unconditional baseline
    // and runs the best one granted; under a fixed cap every kernel decides
    // alike, so the highest level granted so far is the one running.
    const int ran = ok ? level : static_cast<int>(CpuLevel::Baseline);
    int seen = g_last_level.load(std::memory_order_relaxed);
    while (ran > seen && !g_last_level.compare_exchange_weak(seen, ran)) {
    }
    return ok;
}

}  // namespace detail

namespace {

std::optional<CpuLevel> parse_level(const std::string& name) {
    for (int i = 0; i < kLevelCount; i++) {
        if (name == kLevels[i].name) return static_cast<CpuLevel>(i);
    }
    return std::nullopt;
}

}  // namespace

const char* to_string(CpuLevel level) { return kLevels[static_cast<int>(level)].name; }

void set_max_cpu_level(std::optional<CpuLevel> level) {
    detail::install_halide_hooks();
    BNF_CHECK(!g_kernels_called.load(), "set_max_cpu_level: must be called before the first kernel runs (Halide's "
                                        "multi-target dispatch is decided once per kernel); or set BNFORGE_MAX_CPU_LEVEL");
    g_max_level.store(level ? static_cast<int>(*level) : -1, std::memory_order_relaxed);
}

std::optional<CpuLevel> max_cpu_level() {
    detail::install_halide_hooks();
    const int cap = g_max_level.load();
    if (cap < 0) return std::nullopt;
    return static_cast<CpuLevel>(cap);
}

std::optional<CpuLevel> last_cpu_level() {
    const int level = g_last_level.load();
    if (level < 0) return std::nullopt;
    return static_cast<CpuLevel>(level);
}

CpuLevel best_cpu_level() {
    constexpr int words = (halide_target_feature_end + 63) / 64;
    int best = 0;
    for (int level = 1; level < kLevelCount; level++) {
        uint64_t mask[words] = {};
        for (halide_target_feature_t f : kLevels[level].needs) mask[f / 64] |= uint64_t(1) << (f % 64);
        if (halide_default_can_use_target_features(words, mask)) best = level;
    }
    return static_cast<CpuLevel>(best);
}

std::vector<std::string> cpu_targets() {
    std::vector<std::string> out;
    std::istringstream in(BNFORGE_CPU_TARGETS_STRING);
    for (std::string t; std::getline(in, t, ',');) out.push_back(t);
    return out;
}

namespace detail {

void read_cpu_level_cap_from_environment() {
    if (const char* env = std::getenv("BNFORGE_MAX_CPU_LEVEL")) {
        const auto level = parse_level(env);
        BNF_CHECK(level, "BNFORGE_MAX_CPU_LEVEL: expected one of baseline, sse41, avx2, avx512_skylake, "
                         "avx512_sapphirerapids, got '" << env << "'");
        g_max_level.store(static_cast<int>(*level));
    }
}

void note_kernel_call() { g_kernels_called.store(true, std::memory_order_relaxed); }

}  // namespace detail

}  // namespace bnforge
