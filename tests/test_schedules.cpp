// Kernel schedules: the manual set, the autoscheduled sets the runtime can
// select (a tuning aid), and a fat library built from a saved schedule.
//
// ctest also runs the reference suites once per autoscheduled set
// (autoschedule.<name>, with BNFORGE_KERNEL_SCHEDULE=<name>), and the
// saved-schedule test once per CPU level (cpu_level.<level>).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <limits>

#include "bnk_test_saved_stats_nchw.h"
#include "check.h"
#include "kernels.h"
#include "test_util.h"

using namespace bnforge;
using namespace testutil;

namespace {

TEST(KernelSchedule, ManualFirstThenEachAutoschedulerWithTheFullFloat32Set) {
    const auto schedules = kernel_schedules();
    ASSERT_FALSE(schedules.empty());
    EXPECT_EQ(schedules.front(), "manual");
    const auto variants = kernel_variants();
    // The GPU one-pass kernels are hand-scheduled only (no autoscheduler set has them).
    auto manual_only = [](const KernelVariant& v) {
        return !v.device.is_cpu() && (v.pipeline == "train_forward" || v.pipeline == "train_backward");
    };
    auto count = [&](const std::string& schedule, Device device) {
        return std::count_if(variants.begin(), variants.end(), [&](const KernelVariant& v) {
            return v.schedule == schedule && v.dtype == DType::Float32 && v.device.kind == device.kind &&
                   !manual_only(v) && v.variant != "streaming_stores";
        });
    };
    for (const auto& v : variants) {
        EXPECT_NE(std::find(schedules.begin(), schedules.end(), v.schedule), schedules.end()) << v.name;
        if (v.schedule != "manual") {
            EXPECT_EQ(v.dtype, DType::Float32) << v.name;
            EXPECT_EQ(v.name.substr(v.name.size() - v.schedule.size()), v.schedule) << v.name;
        }
    }
    // Every autoscheduler built every float32 kernel the manual set has on each device it schedules
    // (but the GPU one-pass ones).
    for (Device device : {Device::cpu(), Device::cuda(), Device::opencl()}) {
        const auto on_device = kernel_schedules(device);
        if (on_device.empty()) continue;  // a build without that device
        EXPECT_EQ(on_device.front(), "manual") << device.str();
        for (const auto& s : on_device) EXPECT_EQ(count(s, device), count("manual", device)) << s << " on " << device.str();
    }
}

TEST(KernelSchedule, UnknownScheduleIsAnErrorNamingTheAvailableOnes) {
    KeepSchedule keep;
    const std::string before = kernel_schedule();
    for (const auto& s : kernel_schedules()) EXPECT_ERROR_CONTAINS(set_kernel_schedule("nope"), s);
    EXPECT_ERROR_CONTAINS(set_kernel_schedule("nope"), "unknown kernel schedule 'nope'");
    EXPECT_EQ(kernel_schedule(), before);  // unchanged
}

TEST(KernelSchedule, EachSetRunsItsOwnKernelsAndHasNoFallback) {
    KeepSchedule keep;
    std::mt19937 rng(5);
    const std::vector<int64_t> shape{3, 4, 5, 6};
    const auto x = random_batch(rng, ref_shape(shape));
    const auto expect = ref::forward(x, ref_shape(shape), std::vector<double>(4, 1), std::vector<double>(4, 0), true,
                                     {}, {}, 1e-5);
    for (const auto& s : kernel_schedules(Device::cpu())) {
        set_kernel_schedule(s);
        EXPECT_EQ(kernel_schedule(), s);
        const auto& kernel = detail::find_kernel(detail::Pipeline::apply, Device::cpu(), DType::Float32, Layout::NCHW,
                                                 detail::Fusion::none);
        EXPECT_EQ(kernel.schedule, s);
        BatchNorm2d bn(BatchNormOptions::pytorch(4));
        EXPECT_LE(ref::rel_error(values(bn.forward(tensor_from(x, shape))), expect.y), 1e-5) << s;
        if (s != "manual") {
            // bfloat16 was not autoscheduled: an Error, never the manual kernel in disguise.
            const Tensor xb = tensor_from(x, shape, DType::BFloat16);
            EXPECT_ERROR_CONTAINS(functional::batch_moments(xb), "kernel was built with the " + s + " schedule");
            EXPECT_ERROR_CONTAINS(functional::batch_moments(xb), "float32 only");
        }
    }
    set_kernel_schedule("Manual");  // names are case-insensitive
    EXPECT_EQ(kernel_schedule(), "manual");
}

TEST(KernelSchedule, EnvironmentSelectsTheInitialSet) {
    const char* env = std::getenv("BNFORGE_KERNEL_SCHEDULE");
    if (!env) GTEST_SKIP() << "runs under ctest with BNFORGE_KERNEL_SCHEDULE set (autoschedule.*)";
    EXPECT_EQ(kernel_schedule(), env);
    const auto& kernel = detail::find_kernel(detail::Pipeline::stats, Device::cpu(), DType::Float32, Layout::NHWC,
                                             detail::Fusion::none);
    EXPECT_EQ(kernel.schedule, std::string(env));
}

// bnk_test_saved_stats_nchw: bn_stats (float32, NCHW) built for every CPU
// target from the saved schedule tests/schedules/bnk_test_saved_stats_nchw.schedule.h
// (an Adams2019 schedule written by bnforge tune), so the build's
// saved-schedule path runs, at every level, against the reference. The
// shapes are smaller than the schedule's tiles and longer than a chunk.
TEST(SavedSchedule, FatStatsKernelFromASavedScheduleMatchesTheReference) {
    const detail::KernelEntry kernel{detail::Pipeline::stats,
                                     Device::Kind::CPU,
                                     DType::Float32,
                                     Layout::NCHW,
                                     detail::Fusion::none,
                                     "saved",
                                     "bnk_test_saved_stats_nchw",
                                     &bnk_test_saved_stats_nchw_argv,
                                     &bnk_test_saved_stats_nchw_metadata};
    std::mt19937 rng(9);
    for (const std::vector<int64_t>& shape : std::vector<std::vector<int64_t>>{{2, 3, 5, 7}, {1, 3, 67, 71},
                                                                               {17, 37, 9, 11}}) {
        const ref::Shape sh = ref_shape(shape);
        const auto x = random_batch(rng, sh);
        const Tensor xt = tensor_from(x, shape);
        detail::BatchView view;
        detail::make_batch_view(view, xt, Layout::NCHW, "x");
        // moments (c, row): count, mean, M2 (kernel_abi.h)
        std::vector<double> rows(bnforge::abi::kMomentRows * sh.c, std::numeric_limits<double>::quiet_NaN());
        halide_dimension_t dims[2] = {{0, static_cast<int32_t>(sh.c), 1, 0},
                                      {0, bnforge::abi::kMomentRows, static_cast<int32_t>(sh.c), 0}};
        halide_buffer_t moments;
        detail::init_buffer(moments, rows.data(), Device::cpu(), {halide_type_float, 64, 1}, 2, dims);
        detail::invoke(kernel, {{"x", &view.buf}, {"moments", &moments}});
        const std::vector<double> mean(rows.begin() + bnforge::abi::kMomentMean * sh.c, rows.begin() + (bnforge::abi::kMomentMean + 1) * sh.c),
            m2(rows.begin() + bnforge::abi::kMomentM2 * sh.c, rows.begin() + (bnforge::abi::kMomentM2 + 1) * sh.c);
        const auto expect = ref::forward(x, sh, std::vector<double>(sh.c, 1), std::vector<double>(sh.c, 0), true, {},
                                         {}, 1e-5);
        std::vector<double> var(sh.c);
        for (int64_t c = 0; c < sh.c; c++) var[c] = m2[c] / static_cast<double>(sh.n * sh.s - 1);
        EXPECT_LE(ref::rel_error(mean, expect.batch_mean), 1e-6) << detail::format_shape(shape);
        EXPECT_LE(ref::rel_error(var, expect.batch_var_unbiased), 1e-6) << detail::format_shape(shape);
    }
}

}  // namespace
