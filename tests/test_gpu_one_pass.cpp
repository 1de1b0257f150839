// The one-pass training kernels on a GPU (a block per channel, NCHW;
// gpu_schedules.h): the route taken as the limits say (NHWC, and NCHW memory
// with one position per sample, keep two passes), and each route's
// statistics, outputs and gradients against the float64 reference and
// against each other, for every fusion and both layouts, with tails in every
// split (rows shorter than a warp and longer than a chunk, batches that are
// not a multiple of 8).
// OpenCL runs on PoCL in CI (float32); CUDA, all dtypes, skips without a GPU.
#include <gtest/gtest.h>

#include "one_pass_routes.h"

#include <bnforge/runtime.h>

#include <limits>

using namespace bnforge;
using namespace testutil;
using functional::Activation;

namespace {

struct GpuOnePassCase {
    Device device;
    VariantCase v;
};

std::string gpu_one_pass_name(const ::testing::TestParamInfo<GpuOnePassCase>& info) {
    return device_name(info.param.device) + "_" +
           variant_name(::testing::TestParamInfo<VariantCase>(info.param.v, info.index));
}

// ‖a − b‖ / ‖b‖.
double rel(const std::vector<double>& a, const std::vector<double>& b) { return ref::rel_error(a, b); }

class GpuOnePass : public ::testing::TestWithParam<GpuOnePassCase> {
protected:
    void TearDown() override { set_gpu_one_pass_limit(std::nullopt); }
};

TEST_P(GpuOnePass, MatchesTheReferenceAndTheTwoPasses) {
    const Device device = GetParam().device;
    const VariantCase& tc = GetParam().v;
    SKIP_WITHOUT(device);
    std::mt19937 rng(7 + tc.shape[1]);
    const ref::Shape sh = ref_shape(tc.shape);
    const bool relu = tc.activation == Activation::Relu;
    const std::vector<double> xv = rounded(random_batch(rng, sh), tc.shape, tc.dtype);
    const std::vector<double> dyv = rounded(random_batch(rng, sh, 0.3, 1.0), tc.shape, tc.dtype);
    const std::vector<double> av = rounded(random_batch(rng, sh, 0.5, 1.0), tc.shape, tc.dtype);
    const std::vector<double> wv = random_vector(rng, sh.c, 1.0, 0.5), bv = random_vector(rng, sh.c, 0.0, 0.5);
    auto on_device = [&](const std::vector<double>& v) {
        return tensor_from(v, tc.shape, tc.dtype, tc.layout).to(device);
    };
    const Tensor x = on_device(xv), dy = on_device(dyv), addend = on_device(av);
    const Tensor w = channel_tensor(wv).to(device), b = channel_tensor(bv).to(device);

    auto run = [&](size_t limit) {
        set_gpu_one_pass_limit(limit);
        return run_training_route(x, dy, w, b, tc, addend);
    };
    const TrainingRoute two = run(0), one = run(std::numeric_limits<size_t>::max());
    // NHWC, and NCHW memory with one position per sample (read as NHWC), keep two passes.
    expect_routes(two, one, tc.layout == Layout::NCHW && sh.s > 1);

    const ref::Forward rf = ref::forward(xv, sh, wv, bv, true, {}, {}, 1e-5, relu, tc.addend ? &av : nullptr);
    const ref::Backward rb = ref::backward(xv, dyv, rf.y, sh, wv, rf, true, 1e-5, relu);
    const double tol = dtype_tolerance(tc.dtype);
    for (const TrainingRoute* r : {&one, &two}) {
        const char* route = r == &one ? "one pass" : "two passes";
        EXPECT_LE(rel(values(r->fwd.result.y), rf.y), tol) << route << ": y";
        EXPECT_LE(rel(values(r->bwd.input.dx), rb.dx), 10 * tol) << route << ": dx";
        EXPECT_LE(rel(values(r->bwd.dweight), rb.dweight), 10 * tol) << route << ": dweight";
        EXPECT_LE(rel(values(r->bwd.dbias), rb.dbias), 10 * tol) << route << ": dbias";
        if (tc.addend) {
            EXPECT_LE(rel(values(r->bwd.input.daddend), rb.daddend), tol) << route << ": daddend";
        }
        EXPECT_LE(rel(values(r->fwd.result.saved.invstd), values(two.fwd.result.saved.invstd)), 1e-12)
            << route << ": invstd";
    }
    // The routes sum the same chunks in the same order: their moments agree to
    // the last bits (a contracted multiply-add may differ between kernels).
    ASSERT_TRUE(one.fwd.moments && two.fwd.moments);
    EXPECT_LE(rel(values(one.fwd.moments->rows), values(two.fwd.moments->rows)), 1e-12);
    EXPECT_LE(rel(values(one.fwd.result.y), values(two.fwd.result.y)), tc.dtype == DType::Float32 ? 1e-6 : tol);
    if (relu) {
        // Mask bits may differ only where the pre-activation is within rounding of zero.
        const std::vector<double> m1 = values(one.fwd.result.saved.mask), m2 = values(two.fwd.result.saved.mask);
        ASSERT_EQ(m1.size(), m2.size());
        size_t differ = 0;
        for (size_t i = 0; i < m1.size(); i++) differ += m1[i] != m2[i];
        EXPECT_LE(differ, m1.size() / 100) << "mask bytes";
    }
}

std::vector<GpuOnePassCase> gpu_one_pass_cases() {
    std::vector<GpuOnePassCase> out;
    const std::vector<std::vector<int64_t>> shapes = {
        {9, 40, 3, 3},   // 9 rows: a batch tail after 8; 40 channels: a tail after a warp (NHWC); rows of 9
        {2, 6, 47, 50},  // rows longer than one accumulation chunk (2048), with a tail
        {4, 33, 1, 1},   // one position per sample (NCHW memory reads as NHWC)
        {3, 5, 300},     // rank 3
        {16, 3, 7, 7},   // 7x7 rows: two warps, the second mostly idle
    };
    for (Device device : {Device::opencl(), Device::cuda(0)})
        for (const auto& shape : shapes)
            for (DType dtype : {DType::Float32, DType::BFloat16, DType::Float16}) {
                if (!device.is_cuda() && dtype != DType::Float32) continue;  // PoCL runs the float32 kernels
                for (Layout layout : {Layout::NCHW, Layout::NHWC})
                    for (int fusion = 0; fusion < 3; fusion++)
                        out.push_back({device, {shape, dtype, layout,
                                                fusion ? Activation::Relu : Activation::Identity, fusion == 2}});
            }
    return out;
}

INSTANTIATE_TEST_SUITE_P(Variants, GpuOnePass, ::testing::ValuesIn(gpu_one_pass_cases()), gpu_one_pass_name);

}  // namespace
