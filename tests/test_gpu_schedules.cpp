// The GPU schedules, run through Halide's OpenCL backend on PoCL (a CPU
// OpenCL): the same generators and the same GPU schedule as the CUDA kernels,
// so the block/thread mapping, the rfactor'd partials and the guards are
// checked without a GPU. Compared with float64 sums of the same data.
//
// This binary links the OpenCL kernels and their Halide runtime only (never
// the CPU kernels' runtime), so it calls the kernels directly.
#include <gtest/gtest.h>

#include <HalideBuffer.h>
#include <HalideRuntime.h>

#include "bnk_stats_opencl_f32_nchw_none.h"
#include "bnk_stats_opencl_f32_nhwc_none.h"

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace {

using Halide::Runtime::Buffer;

std::string g_last_error;

// Halide's default handler aborts; keep the message for the test's failure.
void record_halide_error(void*, const char* msg) { g_last_error = msg; }

struct StatsCase {
    bool nhwc;
    int n, c, s;
    double mean_scale;  // data far from zero exercise the shifted sums
};

std::string case_name(const ::testing::TestParamInfo<StatsCase>& info) {
    const StatsCase& k = info.param;
    return std::string(k.nhwc ? "nhwc_" : "nchw_") + std::to_string(k.n) + "x" + std::to_string(k.c) + "x" +
           std::to_string(k.s) + (k.mean_scale > 100 ? "_far" : "");
}

class GpuStats : public ::testing::TestWithParam<StatsCase> {};

TEST_P(GpuStats, MatchesFloat64Sums) {
    const StatsCase k = GetParam();
    halide_set_error_handler(record_halide_error);
    // Memory order: NCHW (s, c, n), NHWC (c, s, n).
    Buffer<float> x = k.nhwc ? Buffer<float>(k.c, k.s, k.n) : Buffer<float>(k.s, k.c, k.n);
    std::mt19937 rng(1234 + k.n * 7 + k.c * 13 + k.s);
    std::normal_distribution<double> normal(0.0, 1.0);
    std::vector<double> offset(k.c), scale(k.c);
    for (int c = 0; c < k.c; c++) {
        offset[c] = k.mean_scale * normal(rng);
        scale[c] = 0.5 + c % 3;
    }
    auto value = [&](int s, int c, int n) -> float& { return k.nhwc ? x(c, s, n) : x(s, c, n); };
    for (int n = 0; n < k.n; n++)
        for (int c = 0; c < k.c; c++)
            for (int s = 0; s < k.s; s++) value(s, c, n) = static_cast<float>(offset[c] + scale[c] * normal(rng));
    x.set_host_dirty();

    Buffer<double> mean(k.c), m2(k.c);
    mean.fill(std::numeric_limits<double>::quiet_NaN());
    m2.fill(std::numeric_limits<double>::quiet_NaN());
    g_last_error.clear();
    const int rc = k.nhwc ? bnk_stats_opencl_f32_nhwc_none(nullptr, x, mean, m2)
                          : bnk_stats_opencl_f32_nchw_none(nullptr, x, mean, m2);
    ASSERT_EQ(rc, 0) << "OpenCL kernel failed (is PoCL installed? tools/setup.sh installs it): " << g_last_error;
    ASSERT_EQ(mean.copy_to_host(), 0) << g_last_error;
    ASSERT_EQ(m2.copy_to_host(), 0) << g_last_error;

    const double count = static_cast<double>(k.n) * k.s;
    for (int c = 0; c < k.c; c++) {
        double sum = 0, m2_ref = 0;
        for (int n = 0; n < k.n; n++)
            for (int s = 0; s < k.s; s++) sum += value(s, c, n);
        const double mu = sum / count;
        for (int n = 0; n < k.n; n++)
            for (int s = 0; s < k.s; s++) m2_ref += (value(s, c, n) - mu) * (value(s, c, n) - mu);
        // The mean to 1e-6 of the spread (not of its distance from zero), M2 to 1e-5.
        EXPECT_NEAR(mean(c), mu, 1e-6 * std::sqrt(m2_ref / count) + 1e-12) << "channel " << c;
        EXPECT_NEAR(m2(c), m2_ref, 1e-5 * m2_ref) << "channel " << c;
    }
}

// Rows shorter and longer than a chunk (2048 NCHW values; whole short rows are
// grouped), a tail chunk, channel counts off the 32-thread tiles, N = 1, S = 1.
INSTANTIATE_TEST_SUITE_P(PoCL, GpuStats,
                         ::testing::Values(StatsCase{false, 2, 3, 35, 2.0}, StatsCase{false, 5, 7, 3136, 2.0},
                                           StatsCase{false, 33, 4, 49, 2.0}, StatsCase{false, 1, 40, 1, 2.0},
                                           StatsCase{false, 3, 70, 2100, 2.0}, StatsCase{false, 4, 5, 196, 1e4},
                                           StatsCase{true, 2, 3, 35, 2.0}, StatsCase{true, 5, 7, 3136, 2.0},
                                           StatsCase{true, 33, 4, 49, 2.0}, StatsCase{true, 1, 40, 1, 2.0},
                                           StatsCase{true, 3, 70, 300, 2.0}, StatsCase{true, 4, 5, 196, 1e4}),
                         case_name);

}  // namespace
