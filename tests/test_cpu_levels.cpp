// Every instruction-set level of the fat CPU library, called explicitly.
// Halide picks a sub-target once per kernel, so each level runs in its own
// process: ctest starts this binary once per level with
// BNFORGE_MAX_CPU_LEVEL=<level>, and this test checks that dispatch obeyed
// while the other selected suites check the results against the reference.
#include <gtest/gtest.h>

#include <cstdlib>

#include "test_util.h"

using namespace bnforge;
using namespace testutil;

namespace {

TEST(CpuLevel, DispatchRunsTheRequestedLevel) {
    const auto cap = max_cpu_level();
    if (!cap) GTEST_SKIP() << "runs under ctest with BNFORGE_MAX_CPU_LEVEL set";
    if (cpu_targets().size() < 2) GTEST_SKIP() << "single-target build (BNFORGE_CPU_TARGETS)";
    const CpuLevel expected = best_cpu_level(*cap);
    std::mt19937 rng(3);
    const std::vector<int64_t> shape{2, 5, 7, 9};
    const auto x = random_batch(rng, ref_shape(shape));
    BatchNorm2d bn(BatchNormOptions::pytorch(5));
    const Tensor y = bn.forward(tensor_from(x, shape));
    EXPECT_EQ(last_cpu_level(), expected) << "asked for at most " << to_string(*cap);
    const auto f = ref::forward(x, ref_shape(shape), std::vector<double>(5, 1), std::vector<double>(5, 0), true, {}, {}, 1e-5);
    EXPECT_LE(ref::rel_error(values(y), f.y), 1e-6);
    EXPECT_THROW(set_max_cpu_level(CpuLevel::Baseline), Error);  // too late: kernels have run
    // Under qemu, the emulated CPU model decides what the machine has (tests/CMakeLists.txt).
    if (const char* best = std::getenv("BNFORGE_EXPECT_BEST_CPU_LEVEL")) {
        EXPECT_STREQ(to_string(best_cpu_level()), best);
    }
}

TEST(CpuLevel, TargetsListedBestFirst) {
    const auto targets = cpu_targets();
    ASSERT_FALSE(targets.empty());
    if (targets.size() > 1) {
#if defined(__x86_64__)
        EXPECT_EQ(targets.back(), "x86-64-linux");
#elif defined(__aarch64__)
        EXPECT_EQ(targets.back(), "arm-64-linux");
#elif defined(__riscv)
        EXPECT_EQ(targets.back(), "riscv-64-linux");
#endif
    }
    EXPECT_GE(static_cast<int>(best_cpu_level()), static_cast<int>(CpuLevel::Baseline));
    EXPECT_EQ(best_cpu_level(CpuLevel::Baseline), CpuLevel::Baseline);
}

TEST(CpuLevel, LevelOfAnotherArchitectureIsAnError) {
#if defined(__x86_64__)
    const CpuLevel foreign = CpuLevel::Sve2;
#else
    const CpuLevel foreign = CpuLevel::AVX2;
#endif
    EXPECT_THROW(best_cpu_level(foreign), Error);
    try {
        set_max_cpu_level(foreign);
        FAIL() << "expected an Error";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("not a level of this CPU architecture"), std::string::npos) << e.what();
    }
}

}  // namespace
