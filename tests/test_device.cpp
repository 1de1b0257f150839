// Modules and tensors on a GPU device, checked against the same module on
// the CPU (itself checked against float64 references and PyTorch's goldens):
// training steps, backward, running statistics, parameter gradients, eval,
// both layouts, plain and fused (addend + ReLU).
//
// CUDA cases skip without a GPU; the OpenCL cases run the same GPU kernels
// on PoCL (float32), so CI exercises the whole device path — device memory,
// device views, per-channel uploads, the kernel table's device dispatch.
#include <gtest/gtest.h>

#include <bnforge/bnforge.h>

#include <dlpack/dlpack.h>

#include "cuda_driver.h"
#include "kernels.h"
#include "test_util.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <string>

namespace {

using namespace bnforge;
using testutil::values;

struct DeviceCase {
    Device device;
    DType dtype;
    Layout layout;
    bool fused;  // FusedBatchNorm2d with an addend, else BatchNorm2d
};

std::string device_case_name(const ::testing::TestParamInfo<DeviceCase>& info) {
    const DeviceCase& c = info.param;
    return testutil::device_name(c.device) + "_" + to_string(c.dtype) + "_" + to_string(c.layout) + (c.fused ? "_fused" : "_plain");
}

// ‖a − b‖ / ‖b‖.
double relative_error(const std::vector<double>& a, const std::vector<double>& b) {
    double diff = 0, norm = 0;
    for (size_t i = 0; i < a.size(); i++) {
        diff += (a[i] - b[i]) * (a[i] - b[i]);
        norm += b[i] * b[i];
    }
    return norm == 0 ? std::sqrt(diff) : std::sqrt(diff / norm);
}

#define EXPECT_CLOSE(a, b, tol) EXPECT_LE(relative_error(values(a), values(b)), tol) << #a " vs " #b

class OnDevice : public ::testing::TestWithParam<DeviceCase> {};

TEST_P(OnDevice, TrainingAndEvalMatchTheCpu) {
    const DeviceCase& p = GetParam();
    SKIP_WITHOUT(p.device);
    const std::vector<int64_t> shape = {5, 6, 7, 9};
    // Data far from zero: the statistics' shift must work on the device too.
    auto options = BatchNormOptions::pytorch(shape[1]).dtype(p.dtype).layout(p.layout);
    FusedBatchNorm2d cpu(options), dev(BatchNormOptions(options).device(p.device));
    BatchNorm2d cpu_plain(options), dev_plain(BatchNormOptions(options).device(p.device));
    BatchNormBase& ref = p.fused ? static_cast<BatchNormBase&>(cpu) : cpu_plain;
    BatchNormBase& mod = p.fused ? static_cast<BatchNormBase&>(dev) : dev_plain;

    std::mt19937 rng(77);
    const auto w = testutil::random_vector(rng, shape[1], 1.0, 0.5);
    const auto b = testutil::random_vector(rng, shape[1], 0.0, 0.5);
    ref.weight().copy_(testutil::channel_tensor(w));
    ref.bias().copy_(testutil::channel_tensor(b));
    mod.weight().copy_(testutil::channel_tensor(w));
    mod.bias().copy_(testutil::channel_tensor(b));
    ASSERT_EQ(mod.weight().device(), p.device);
    ASSERT_EQ(mod.running_mean().device(), p.device);

    const double tol = testutil::dtype_tolerance(p.dtype);
    auto step = [&](bool training) {
        ref.train(training);
        mod.train(training);
        const auto sh = testutil::ref_shape(shape);
        Tensor x = testutil::tensor_from(testutil::random_batch(rng, sh, 50.0), shape, p.dtype, p.layout);
        Tensor addend = testutil::tensor_from(testutil::random_batch(rng, sh, 0.5), shape, p.dtype, p.layout);
        Tensor dy = testutil::tensor_from(testutil::random_batch(rng, sh, 0.5), shape, p.dtype, p.layout);
        Tensor xd = x.to(p.device), ad = addend.to(p.device), dyd = dy.to(p.device);

        Tensor y_ref = p.fused ? cpu.forward(x, &addend) : cpu_plain.forward(x);
        Tensor y = p.fused ? dev.forward(xd, &ad) : dev_plain.forward(xd);
        ASSERT_EQ(y.device(), p.device);
        ASSERT_EQ(detail::last_invoked_kernel()->device, p.device.kind) << "the device kernel must have run";
        EXPECT_CLOSE(y, y_ref, tol);

        if (p.fused) {
            FusedBatchNorm2d::Grads g_ref = cpu.backward(dy), g = dev.backward(dyd);
            ASSERT_EQ(g.dx.device(), p.device);
            EXPECT_CLOSE(g.dx, g_ref.dx, tol);
            EXPECT_CLOSE(g.daddend, g_ref.daddend, tol);
        } else {
            Tensor dx_ref = cpu_plain.backward(dy), dx = dev_plain.backward(dyd);
            ASSERT_EQ(dx.device(), p.device);
            EXPECT_CLOSE(dx, dx_ref, tol);
        }
        EXPECT_CLOSE(mod.weight_grad(), ref.weight_grad(), tol);
        EXPECT_CLOSE(mod.bias_grad(), ref.bias_grad(), tol);
        EXPECT_CLOSE(mod.running_mean(), ref.running_mean(), 1e-6);
        EXPECT_CLOSE(mod.running_var(), ref.running_var(), 1e-6);
        EXPECT_EQ(mod.num_batches_tracked(), ref.num_batches_tracked());
    };
    for (int i = 0; i < 3; i++) ASSERT_NO_FATAL_FAILURE(step(true));
    ASSERT_NO_FATAL_FAILURE(step(false));
    EXPECT_EQ(mod.num_batches_tracked(), 3);
}

TEST_P(OnDevice, TensorsMoveOnlyWhenAsked) {
    const DeviceCase& p = GetParam();
    SKIP_WITHOUT(p.device);
    std::mt19937 rng(5);
    const std::vector<int64_t> shape = {2, 3, 4, 5};
    const auto v = testutil::random_batch(rng, testutil::ref_shape(shape));
    Tensor host = testutil::tensor_from(v, shape, p.dtype, p.layout);
    Tensor dev = host.to(p.device);
    EXPECT_EQ(dev.device(), p.device);
    EXPECT_EQ(dev.layout(), p.layout);
    EXPECT_EQ(values(dev.to(Device::cpu())), values(host));  // exact: a byte copy each way
    EXPECT_EQ(values(dev.clone()), values(host));           // within the device
    Tensor f32 = Tensor::empty(shape, DType::Float32, p.device);
    f32.copy_(dev);  // a conversion goes through the host
    EXPECT_EQ(values(f32), values(host));
    dev.fill_(2.5);
    EXPECT_EQ(dev.item({1, 2, 3, 4}), 2.5);

    // A module on the device rejects host input, and the reverse, with its state untouched.
    BatchNorm2d mod(BatchNormOptions::pytorch(3).dtype(p.dtype).layout(p.layout).device(p.device));
    EXPECT_THROW(mod.forward(host), Error);
    EXPECT_EQ(mod.num_batches_tracked(), 0);
    BatchNorm2d on_cpu(BatchNormOptions::pytorch(3).dtype(p.dtype).layout(p.layout));
    EXPECT_THROW(on_cpu.forward(dev), Error);
}

// A training step on the device — forward and backward, running statistics,
// num_batches_tracked, gradient accumulation — and an eval forward make no
// host↔device copy and no host synchronisation once the first call has run:
// the per-channel arithmetic runs on the device too (the finalize kernels).
// Counted through the runtime's own copy path (device_traffic), which every
// host↔device move goes through: Tensor copies, per-channel host buffers given
// to a GPU kernel. Modules: BatchNorm2d with momentum 0.1 and with momentum=None
// (the cumulative average reads num_batches_tracked on the device),
// FusedBatchNorm2d with and without an addend, MegEngine's BatchNorm2d.
struct RoundTripCase {
    Device device;
    Layout layout;
    const char* module;  // "bn2d", "bn2d_cumulative", "fused_relu", "fused_add_relu", "megengine"
};

class NoHostRoundTrip : public ::testing::TestWithParam<RoundTripCase> {};

TEST_P(NoHostRoundTrip, TrainingStepsAndEvalStayOnTheDevice) {
    const RoundTripCase& p = GetParam();
    SKIP_WITHOUT(p.device);
    const testutil::NoPoisoning no_poisoning;  // itself a host copy
    const std::string kind = p.module;
    const std::vector<int64_t> shape = {6, 5, 7, 9};
    BatchNormOptions options = kind == "megengine" ? BatchNormOptions::megengine(shape[1])
                                                   : BatchNormOptions::pytorch(shape[1]);
    options.layout(p.layout).device(p.device);
    if (kind == "bn2d_cumulative") options.momentum(std::nullopt);
    BatchNorm2d plain(options);
    FusedBatchNorm2d fused(options);
    const bool is_fused = kind.rfind("fused", 0) == 0, with_addend = kind == "fused_add_relu";
    BatchNormBase& mod = is_fused ? static_cast<BatchNormBase&>(fused) : plain;

    std::mt19937 rng(3);
    const auto sh = testutil::ref_shape(shape);
    const Tensor x = testutil::tensor_from(testutil::random_batch(rng, sh, 5.0), shape, DType::Float32, p.layout)
                         .to(p.device);
    const Tensor addend = testutil::tensor_from(testutil::random_batch(rng, sh, 0.5), shape, DType::Float32, p.layout)
                              .to(p.device);
    const Tensor dy = testutil::tensor_from(testutil::random_batch(rng, sh, 0.5), shape, DType::Float32, p.layout)
                          .to(p.device);
    Tensor y, dx;
    auto step = [&] {
        if (is_fused) {
            y = fused.forward(x, with_addend ? &addend : nullptr);
            dx = fused.backward(dy).dx;
        } else {
            y = plain.forward(x);
            dx = plain.backward(dy);
        }
    };
    mod.train(true);
    step();  // the first call: kernels loaded, device allocations made
    const DeviceTraffic before = device_traffic();
    for (int i = 0; i < 3; i++) step();
    mod.train(false);
    y = is_fused ? fused.forward(x, with_addend ? &addend : nullptr) : plain.forward(x);
    const DeviceTraffic after = device_traffic();
    EXPECT_EQ(after.host_to_device - before.host_to_device, 0) << "host→device copies in 3 steps and an eval forward";
    EXPECT_EQ(after.device_to_host - before.device_to_host, 0) << "device→host copies in 3 steps and an eval forward";
    EXPECT_EQ(after.synchronizations - before.synchronizations, 0) << "host synchronisations";
    ASSERT_EQ(detail::last_invoked_kernel()->device, p.device.kind);

    // And the steps did what they should (the counters cannot pass a step that did nothing).
    if (kind != "megengine") {
        EXPECT_EQ(mod.num_batches_tracked(), 4);
    }
    EXPECT_NE(values(mod.running_mean()), std::vector<double>(shape[1], 0.0));
    EXPECT_NE(values(mod.weight_grad()), std::vector<double>(shape[1], 0.0));
    for (double v : values(y)) ASSERT_TRUE(std::isfinite(v));
    for (double v : values(dx)) ASSERT_TRUE(std::isfinite(v));
}

std::vector<RoundTripCase> round_trip_cases() {
    std::vector<RoundTripCase> cases;
    for (Device device : {Device::opencl(), Device::cuda(0)})
        for (Layout layout : {Layout::NCHW, Layout::NHWC})
            for (const char* module : {"bn2d", "bn2d_cumulative", "fused_relu", "fused_add_relu", "megengine"})
                cases.push_back({device, layout, module});
    return cases;
}

INSTANTIATE_TEST_SUITE_P(Gpu, NoHostRoundTrip, ::testing::ValuesIn(round_trip_cases()),
                         [](const ::testing::TestParamInfo<RoundTripCase>& info) {
                             return testutil::device_name(info.param.device) + "_" + to_string(info.param.layout) +
                                    "_" + info.param.module;
                         });

std::vector<DeviceCase> device_cases() {
    std::vector<DeviceCase> cases;
    for (Layout layout : {Layout::NCHW, Layout::NHWC}) {
        for (bool fused : {false, true}) {
            cases.push_back({Device::opencl(), DType::Float32, layout, fused});
            for (DType dtype : {DType::Float32, DType::Float16, DType::BFloat16})
                cases.push_back({Device::cuda(0), dtype, layout, fused});
        }
    }
    return cases;
}

INSTANTIATE_TEST_SUITE_P(Gpu, OnDevice, ::testing::ValuesIn(device_cases()), device_case_name);

// The GPU schedule sets — manual, and each of BNFORGE_GPU_AUTOSCHEDULERS —
// selected through set_kernel_schedule as on the CPU: each runs its own
// device kernels and matches the CPU's manual kernels; a set without CPU
// kernels (anderson2021) is an Error on CPU tensors, never a fall back.
class GpuScheduleSets : public ::testing::TestWithParam<Device> {};

TEST_P(GpuScheduleSets, EachRunsItsOwnKernels) {
    const Device device = GetParam();
    SKIP_WITHOUT(device);
    testutil::KeepSchedule keep;
    set_kernel_schedule("manual");
    const std::vector<int64_t> shape = {9, 5, 7, 8};
    std::mt19937 rng(31);
    const auto sh = testutil::ref_shape(shape);
    Tensor x = testutil::tensor_from(testutil::random_batch(rng, sh, 20.0), shape);
    Tensor addend = testutil::tensor_from(testutil::random_batch(rng, sh, 0.5), shape);
    Tensor dy = testutil::tensor_from(testutil::random_batch(rng, sh, 0.5), shape);
    FusedBatchNorm2d cpu(BatchNormOptions::pytorch(shape[1]));
    Tensor y_ref = cpu.forward(x, &addend);
    FusedBatchNorm2d::Grads g_ref = cpu.backward(dy);

    const auto cpu_sets = kernel_schedules(Device::cpu());
    const auto sets = kernel_schedules(device);
    ASSERT_FALSE(sets.empty());
    for (const std::string& s : sets) {
        SCOPED_TRACE("schedule " + s);
        set_kernel_schedule(s);
        FusedBatchNorm2d mod(BatchNormOptions::pytorch(shape[1]).device(device));
        Tensor ad = addend.to(device);
        Tensor y = mod.forward(x.to(device), &ad);
        ASSERT_EQ(detail::last_invoked_kernel()->schedule, s);
        ASSERT_EQ(detail::last_invoked_kernel()->device, device.kind);
        EXPECT_CLOSE(y, y_ref, 1e-5);
        FusedBatchNorm2d::Grads g = mod.backward(dy.to(device));
        EXPECT_EQ(detail::last_invoked_kernel()->schedule, s);
        EXPECT_CLOSE(g.dx, g_ref.dx, 1e-5);
        EXPECT_CLOSE(g.daddend, g_ref.daddend, 1e-5);
        EXPECT_CLOSE(mod.weight_grad(), cpu.weight_grad(), 1e-5);
        EXPECT_CLOSE(mod.running_var(), cpu.running_var(), 1e-6);
        if (std::find(cpu_sets.begin(), cpu_sets.end(), s) == cpu_sets.end()) {
            FusedBatchNorm2d on_cpu(BatchNormOptions::pytorch(shape[1]));
            EXPECT_ERROR_CONTAINS(on_cpu.forward(x, &addend), "kernel was built with the " + s + " schedule for device cpu");
            EXPECT_EQ(on_cpu.num_batches_tracked(), 0);
        }
    }
}

INSTANTIATE_TEST_SUITE_P(Gpu, GpuScheduleSets, ::testing::Values(Device::opencl(), Device::cuda(0)),
                         [](const ::testing::TestParamInfo<Device>& info) { return testutil::device_name(info.param); });

TEST(CudaTensor, DLPackKeepsTheDevice) {
    SKIP_WITHOUT(Device::cuda(0));
    Tensor t = Tensor::empty({2, 3}, DType::Float32, Device::cuda(0));
    DLManagedTensor* m = t.to_dlpack();
    EXPECT_EQ(m->dl_tensor.device.device_type, kDLCUDA);
    Tensor back = Tensor::from_dlpack(m);  // zero-copy: the same device address
    EXPECT_EQ(back.raw_data(), t.raw_data());
    EXPECT_EQ(back.device(), Device::cuda(0));
}

// Two modules whose calls are interleaved on two CUDA streams (set_cuda_stream
// before each call, as a framework with one stream per branch would) give the
// bits of the same modules run one after the other on the default stream:
// forward, backward, running statistics and parameter gradients over 3 steps.
// Non-blocking streams: nothing orders them against each other or the legacy
// stream, so a kernel that ran on the wrong stream, or a buffer reused across
// streams before its reader finished, would show as a race.
struct StreamResults {
    std::vector<std::vector<double>> values;
    bool operator==(const StreamResults& o) const { return values == o.values; }
};

StreamResults interleaved_steps(void* stream_a, void* stream_b) {
    const Device cuda = Device::cuda(0);
    const std::vector<int64_t> shape_a = {8, 16, 14, 14}, shape_b = {4, 32, 7, 7};
    BatchNorm2d a(BatchNormOptions::pytorch(shape_a[1]).device(cuda));
    FusedBatchNorm2d b(BatchNormOptions::oneflow(shape_b[1]).layout(Layout::NHWC).device(cuda));
    std::mt19937 rng(17);
    auto batch = [&](const std::vector<int64_t>& shape, double scale, Layout layout) {
        return testutil::tensor_from(testutil::random_batch(rng, testutil::ref_shape(shape), scale), shape,
                                     DType::Float32, layout)
            .to(cuda);
    };
    const Tensor xa = batch(shape_a, 3.0, Layout::NCHW), dya = batch(shape_a, 0.5, Layout::NCHW);
    const Tensor xb = batch(shape_b, 3.0, Layout::NHWC), zb = batch(shape_b, 0.5, Layout::NHWC),
                 dyb = batch(shape_b, 0.5, Layout::NHWC);
    Tensor ya, dxa, yb, dxb;
    for (int step = 0; step < 3; step++) {
        set_cuda_stream(stream_a);
        ya = a.forward(xa);
        set_cuda_stream(stream_b);
        yb = b.forward(xb, &zb);
        set_cuda_stream(stream_a);
        dxa = a.backward(dya);
        set_cuda_stream(stream_b);
        dxb = b.backward(dyb).dx;
    }
    const testutil::CudaDriver* drv = testutil::CudaDriver::get();
    EXPECT_TRUE(drv->synchronize(stream_a) && drv->synchronize(stream_b));
    set_cuda_stream(nullptr);
    StreamResults r;
    for (const Tensor* t : {&ya, &dxa, &a.running_mean(), &a.running_var(), &a.weight_grad(), &a.bias_grad(), &yb,
                            &dxb, &b.running_mean(), &b.running_var(), &b.weight_grad(), &b.bias_grad()})
        r.values.push_back(values(*t));
    return r;
}

TEST(CudaStreams, TwoModulesOnTwoStreamsMatchOneAfterTheOther) {
    SKIP_WITHOUT(Device::cuda(0));
    const testutil::CudaDriver* drv = testutil::CudaDriver::get();
    ASSERT_NE(drv, nullptr);
    ASSERT_TRUE(drv->make_primary_current(0));
    const testutil::NoPoisoning no_poisoning;
    void* s1 = drv->create_stream();
    void* s2 = drv->create_stream();
    ASSERT_TRUE(s1 && s2);
    const StreamResults one_after_the_other = interleaved_steps(nullptr, nullptr);
    const StreamResults two_streams = interleaved_steps(s1, s2);
    drv->destroy(s1);
    drv->destroy(s2);
    ASSERT_EQ(two_streams.values.size(), 12u);
    for (size_t i = 0; i < two_streams.values.size(); i++) {
        EXPECT_EQ(two_streams.values[i], one_after_the_other.values[i]) << "result " << i;
        for (double v : two_streams.values[i]) ASSERT_TRUE(std::isfinite(v)) << "result " << i;
    }
}

// A module on device 1 while device 0's context is current on the thread:
// bnforge makes device 1 current for its own calls only.
TEST(CudaDevices, ModuleOnDevice1WhileDevice0IsCurrent) {
    if (cuda_device_count() < 2) GTEST_SKIP() << "needs two CUDA devices, the machine has " << cuda_device_count();
    const testutil::CudaDriver* drv = testutil::CudaDriver::get();
    ASSERT_TRUE(drv && drv->make_primary_current(0));
    const std::vector<int64_t> shape = {4, 8, 5, 5};
    std::mt19937 rng(5);
    const Tensor x = testutil::tensor_from(testutil::random_batch(rng, testutil::ref_shape(shape), 2.0), shape);
    const Tensor dy = testutil::tensor_from(testutil::random_batch(rng, testutil::ref_shape(shape), 0.5), shape);
    BatchNorm2d on_cpu(BatchNormOptions::pytorch(shape[1]));
    BatchNorm2d on_1(BatchNormOptions::pytorch(shape[1]).device(Device::cuda(1)));
    const std::vector<double> y_cpu = values(on_cpu.forward(x)), dx_cpu = values(on_cpu.backward(dy));
    const Tensor y1 = on_1.forward(x.to(Device::cuda(1)));
    const Tensor dx1 = on_1.backward(dy.to(Device::cuda(1)));
    EXPECT_EQ(y1.device(), Device::cuda(1));
    EXPECT_LT(relative_error(values(y1), y_cpu), 1e-5);
    EXPECT_LT(relative_error(values(dx1), dx_cpu), 1e-4);
    EXPECT_LT(relative_error(values(on_1.running_var()), values(on_cpu.running_var())), 1e-6);
}

}  // namespace
