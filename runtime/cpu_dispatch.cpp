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
#include <string>
#if defined(__aarch64__)
#include <sys/prctl.h>
#elif defined(__riscv)
#include <sys/auxv.h>
#endif
#include <initializer_list>
#include <mutex>
#include <sstream>

namespace bnforge {

namespace {

// Halide's multi-target wrapper decides once per kernel, on its first call,
// so the cap must be in place before any kernel runs: from the environment
// (BNFORGE_MAX_CPU_LEVEL, read when the hooks are installed) or from
// set_max_cpu_level() before the first call. Levels are held as their rank
// in this architecture's table below.
std::atomic<int> g_max_rank{-1};  // -1: no cap
std::atomic<int> g_last_rank{-1};
std::atomic<bool> g_kernels_called{false};

// Every CpuLevel's name, in enum order.
const char* const kLevelNames[] = {"baseline", "sse41", "avx2", "avx512_skylake", "avx512_zen4",
                                   "avx512_sapphirerapids", "arm_dot_prod_fp16", "sve2", "rvv"};

// This architecture's levels, worst first: the features a CPU needs for
// each; the first one marks a sub-target as being of that level.
struct LevelInfo {
    CpuLevel level;
    std::initializer_list<halide_target_feature_t> needs;
};
const LevelInfo kLevels[] = {
    {CpuLevel::Baseline, {}},
#if defined(__x86_64__)
    {CpuLevel::SSE41, {halide_target_feature_sse41}},
    {CpuLevel::AVX2, {halide_target_feature_avx2, halide_target_feature_fma, halide_target_feature_f16c,
                      halide_target_feature_sse41}},
    {CpuLevel::AVX512Skylake, {halide_target_feature_avx512_skylake, halide_target_feature_avx2,
                               halide_target_feature_fma, halide_target_feature_f16c}},
    {CpuLevel::AVX512Zen4, {halide_target_feature_avx512_zen4, halide_target_feature_avx2, halide_target_feature_fma,
                            halide_target_feature_f16c}},
    {CpuLevel::AVX512SapphireRapids, {halide_target_feature_avx512_sapphirerapids, halide_target_feature_avx512_skylake,
                                      halide_target_feature_avx2, halide_target_feature_fma}},
#elif defined(__aarch64__)
    {CpuLevel::ArmDotProdFp16, {halide_target_feature_arm_dot_prod, halide_target_feature_arm_fp16}},
    {CpuLevel::Sve2, {halide_target_feature_sve2, halide_target_feature_arm_dot_prod, halide_target_feature_arm_fp16}},
#elif defined(__riscv)
    {CpuLevel::Rvv, {halide_target_feature_rvv}},
#endif
};
constexpr int kLevelCount = sizeof(kLevels) / sizeof(kLevels[0]);

bool has(int count, const uint64_t* features, halide_target_feature_t f) {
    const int word = static_cast<int>(f) / 64;
    return word < count && (features[word] >> (static_cast<int>(f) % 64) & 1) != 0;
}

int rank_of(int count, const uint64_t* features) {
#if defined(__x86_64__)
    // A custom target list may say plain "avx512"; it dispatches like the Skylake level.
    if (!has(count, features, halide_target_feature_avx512_sapphirerapids) &&
        !has(count, features, halide_target_feature_avx512_zen4) && has(count, features, halide_target_feature_avx512))
        return 3;  // AVX512Skylake's rank
#endif
    for (int rank = kLevelCount - 1; rank > 0; rank--) {
        if (has(count, features, *kLevels[rank].needs.begin())) return rank;
    }
    return 0;
}

// The vector width (bits) the scalable-vector sub-target was compiled for:
// "vector_bits_<n>" in BNFORGE_CPU_TARGETS; 0 when none says. (Unused on x86.)
[[maybe_unused]] int compiled_vector_bits() {
    static const int bits = [] {
        const std::string targets = BNFORGE_CPU_TARGETS_STRING;
        const size_t at = targets.find("vector_bits_");
        return at == std::string::npos ? 0 : std::atoi(targets.c_str() + at + 12);
    }();
    return bits;
}

// What Halide's own check leaves out. Its SVE2 and RVV code is compiled for
// one vector width (vector_bits_<n>) and is wrong on any other, and its RISC-V
// runtime detects no feature at all (every sub-target "fits").
bool machine_runs(int rank) {
#if defined(__aarch64__)
    if (kLevels[rank].level == CpuLevel::Sve2) {
        const int vl_bytes = prctl(PR_SVE_GET_VL);
        return vl_bytes >= 0 && (vl_bytes & PR_SVE_VL_LEN_MASK) * 8 == compiled_vector_bits();
    }
#elif defined(__riscv)
    if (kLevels[rank].level == CpuLevel::Rvv) {
        constexpr unsigned long kHwcapV = 1ul << ('V' - 'A');
        if ((getauxval(AT_HWCAP) & kHwcapV) == 0) return false;
        unsigned long vlenb;
        asm volatile("csrr %0, 0xc22" : "=r"(vlenb));  // vlenb: VLEN in bytes (readable only with V)
        return static_cast<int>(vlenb * 8) == compiled_vector_bits();
    }
#endif
    (void)rank;
    return true;
}

}  // namespace

namespace detail {

int cpu_can_use_target_features(int count, const uint64_t* features) {
    const int rank = rank_of(count, features);
    const int cap = g_max_rank.load(std::memory_order_relaxed);
    const int ok = (cap < 0 || rank <= cap) && halide_default_can_use_target_features(count, features) &&
                   machine_runs(rank);
    // The wrapper asks about every sub-target but the unconditional baseline
    // and runs the best one granted; under a fixed cap every kernel decides
    // alike, so the highest level granted so far is the one running.
    const int ran = ok ? rank : 0;
    int seen = g_last_rank.load(std::memory_order_relaxed);
    while (ran > seen && !g_last_rank.compare_exchange_weak(seen, ran)) {
    }
    return ok;
}

}  // namespace detail

namespace {

// The rank of the level called `name` on this architecture.
std::optional<int> parse_rank(const std::string& name) {
    for (int rank = 0; rank < kLevelCount; rank++) {
        if (name == kLevelNames[static_cast<int>(kLevels[rank].level)]) return rank;
    }
    return std::nullopt;
}

std::string level_names() {
    std::string out;
    for (const LevelInfo& info : kLevels) out += std::string(out.empty() ? "" : ", ") + to_string(info.level);
    return out;
}

// The rank of `level` on this architecture; an Error naming `caller` for a level of another.
int checked_rank(CpuLevel level, const char* caller) {
    int rank = 0;
    while (rank < kLevelCount && kLevels[rank].level != level) rank++;
    BNF_CHECK(rank < kLevelCount, caller << ": " << to_string(level) << " is not a level of this CPU architecture ("
                                         << level_names() << ")");
    return rank;
}

}  // namespace

const char* to_string(CpuLevel level) { return kLevelNames[static_cast<int>(level)]; }

void set_max_cpu_level(std::optional<CpuLevel> level) {
    detail::install_halide_hooks();
    const int rank = level ? checked_rank(*level, "set_max_cpu_level") : -1;
    BNF_CHECK(!g_kernels_called.load(), "set_max_cpu_level: must be called before the first kernel runs (Halide's "
                                        "multi-target dispatch is decided once per kernel); or set BNFORGE_MAX_CPU_LEVEL");
    g_max_rank.store(rank, std::memory_order_relaxed);
}

std::optional<CpuLevel> max_cpu_level() {
    detail::install_halide_hooks();
    const int cap = g_max_rank.load();
    if (cap < 0) return std::nullopt;
    return kLevels[cap].level;
}

std::optional<CpuLevel> last_cpu_level() {
    const int rank = g_last_rank.load();
    if (rank < 0) return std::nullopt;
    return kLevels[rank].level;
}

CpuLevel best_cpu_level() { return best_cpu_level(kLevels[kLevelCount - 1].level); }

CpuLevel best_cpu_level(CpuLevel at_most) {
    const int cap = checked_rank(at_most, "best_cpu_level");
    constexpr int words = (halide_target_feature_end + 63) / 64;
    int best = 0;
    for (int rank = 1; rank <= cap; rank++) {
        uint64_t mask[words] = {};
        for (halide_target_feature_t f : kLevels[rank].needs) mask[f / 64] |= uint64_t(1) << (f % 64);
        if (halide_default_can_use_target_features(words, mask) && machine_runs(rank)) best = rank;
    }
    return kLevels[best].level;
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
        const auto rank = parse_rank(env);
        BNF_CHECK(rank, "BNFORGE_MAX_CPU_LEVEL: expected one of " << level_names() << ", got '" << env << "'");
        g_max_rank.store(*rank);
    }
}

void note_kernel_call() { g_kernels_called.store(true, std::memory_order_relaxed); }

}  // namespace detail

}  // namespace bnforge
