// The functional layer (and so every generated kernel variant it reaches)
// against the float64 reference: dtypes x layouts x ranks x activations,
// training and eval, forward and backward.
#include <gtest/gtest.h>

#include "test_util.h"

#include <cmath>
#include <tuple>

using namespace bnforge;
using namespace testutil;
using functional::Activation;

namespace {

class FunctionalVsReference : public ::testing::TestWithParam<VariantCase> {};

TEST_P(FunctionalVsReference, ForwardAndBackward) {
    const VariantCase& tc = GetParam();
    std::mt19937 rng(1234 + tc.shape[1] * 7 + static_cast<int>(tc.dtype));
    const ref::Shape sh = ref_shape(tc.shape);
    const bool relu = tc.activation == Activation::Relu;
    const double eps = 1e-5, tol = dtype_tolerance(tc.dtype);

    const auto x = rounded(random_batch(rng, sh), tc.shape, tc.dtype);
    const auto dy = rounded(random_batch(rng, sh, 0.3, 1.0), tc.shape, tc.dtype);
    const auto addend = rounded(random_batch(rng, sh, 0.5, 1.0), tc.shape, tc.dtype);
    const auto w = random_vector(rng, sh.c, 1.0, 0.5), b = random_vector(rng, sh.c, 0.0, 0.5);
    const auto rm = random_vector(rng, sh.c, 0.5, 1.0), rv = random_vector(rng, sh.c, 2.0, 1.0);

    const Tensor xt = tensor_from(x, tc.shape, tc.dtype, tc.layout);
    const Tensor at = tensor_from(addend, tc.shape, tc.dtype, tc.layout);
    const Tensor wt = channel_tensor(w), bt = channel_tensor(b), rmt = channel_tensor(rm), rvt = channel_tensor(rv);

    auto fwd = functional::batch_norm_forward(xt, rmt, rvt, wt, bt, tc.training, eps, tc.activation,
                                              tc.addend ? &at : nullptr);
    const auto expect = ref::forward(x, sh, w, b, tc.training, rm, rv, eps, relu, tc.addend ? &addend : nullptr);
    ASSERT_EQ(fwd.result.y.shape(), tc.shape);
    ASSERT_EQ(fwd.result.y.dtype(), tc.dtype);
    EXPECT_LE(ref::rel_error(values(fwd.result.y), expect.y), tol);
    if (tc.training) {
        ASSERT_TRUE(fwd.moments.has_value());
        EXPECT_LE(ref::rel_error(fwd.moments->mean(), expect.batch_mean), 1e-6);
        EXPECT_LE(ref::rel_error(fwd.moments->unbiased_var(), expect.batch_var_unbiased), 1e-6);
    }

    const Tensor dyt = tensor_from(dy, tc.shape, tc.dtype, tc.layout);
    auto bwd = functional::batch_norm_backward(dyt, fwd.result.saved, wt);
    const auto expect_b = ref::backward(x, dy, expect.y, sh, w, expect, tc.training, eps, relu);
    EXPECT_LE(ref::rel_error(values(bwd.input.dx), expect_b.dx), tol);
    // Parameter grads are float64 sums over low-precision inputs: only input rounding remains.
    EXPECT_LE(ref::rel_error(values(bwd.dweight), expect_b.dweight), tc.dtype == DType::Float32 ? 1e-5 : tol);
    EXPECT_LE(ref::rel_error(values(bwd.dbias), expect_b.dbias), tc.dtype == DType::Float32 ? 1e-5 : tol);
    if (tc.addend) {
        ASSERT_TRUE(bwd.input.daddend.defined());
        EXPECT_LE(ref::rel_error(values(bwd.input.daddend), expect_b.daddend), tol);
    } else {
        EXPECT_FALSE(bwd.input.daddend.defined());
    }
}

std::vector<VariantCase> all_cases() {
    const std::vector<std::vector<int64_t>> shapes = {
        {2, 3, 5, 7},     // odd spatial
        {3, 1, 4, 4},     // C = 1
        {6, 5},           // rank 2
        {2, 5, 9},        // rank 3
        {2, 3, 3, 4, 5},  // rank 5
        {2, 20, 5, 37},   // C not a multiple of any vector width, long odd rows
        {1, 3, 67, 71},   // S > the 4096-element chunk, N = 1
        {2, 1544, 3, 5},  // NHWC rows grouped per channel vector (cpu_schedules.h): a lane tail, 10-row tasks
        // Elementwise tasks (schedule_rows_cpu) cut to leave kMinTasks: 7 rows
        // of 61x67 (NCHW) or 766 of 40 channels (NHWC), each with a tail.
        {3, 40, 61, 67},
        // Tasks of kTaskBytes, with a tail: NCHW 10 (float32) or 20 (16-bit)
        // rows of 53x59, NHWC 1170 or 2340 rows of 28 channels.
        {12, 28, 53, 59},
    };
    std::vector<VariantCase> cases;
    for (const auto& shape : shapes)
        for (DType dt : {DType::Float32, DType::Float16, DType::BFloat16})
            for (Layout l : {Layout::NCHW, Layout::NHWC})
                for (int fusion = 0; fusion < 3; fusion++)
                    for (bool training : {true, false}) {
                        if (dt != DType::Float32 && fusion == 1) continue;  // keep the matrix modest
                        if (shape.size() == 4 && shape[0] * shape[1] * shape[2] * shape[3] > 400000 &&
                            (dt == DType::Float16 || fusion == 1))
                            continue;  // the large shapes test task sizes: bf16 is float16's size
                        cases.push_back({shape, dt, l, fusion ? Activation::Relu : Activation::Identity, fusion == 2,
                                         training});
                    }
    return cases;
}

INSTANTIATE_TEST_SUITE_P(AllVariants, FunctionalVsReference, ::testing::ValuesIn(all_cases()), variant_name);

// The ReLU mask itself (the backward only reads the bits of real rows): bit
// (d0, d1, n) set exactly where float32 y > 0, and the last byte's bits past
// the batch clear. Batches under 8 have only a partial byte, whose rows the
// kernels evaluate under a test (mask_bits in generators/bn_math.h). The mask
// starts poisoned, as every tensor in the tests (test_environment.cpp),
// reused blocks included.
class ReluMask : public ::testing::TestWithParam<std::tuple<int64_t, Layout, bool, bool>> {};

TEST_P(ReluMask, BitsAreThePositiveOutputs) {
    const auto [batch, layout, with_addend, training] = GetParam();
    const std::vector<int64_t> shape = {batch, 20, 5, 7};
    std::mt19937 rng(77 + static_cast<int>(batch));
    const ref::Shape sh = ref_shape(shape);
    const Tensor x = tensor_from(random_batch(rng, sh), shape, DType::Float32, layout);
    const Tensor addend = tensor_from(random_batch(rng, sh, 0.0, 1.0), shape, DType::Float32, layout);
    const Tensor w = channel_tensor(random_vector(rng, sh.c, 1.0, 0.5));
    const Tensor b = channel_tensor(random_vector(rng, sh.c, 0.0, 0.5));
    const Tensor rm = channel_tensor(random_vector(rng, sh.c, 0.5, 1.0));
    const Tensor rv = channel_tensor(random_vector(rng, sh.c, 2.0, 1.0));

    const int64_t d0 = layout == Layout::NCHW ? sh.s : sh.c, d1 = layout == Layout::NCHW ? sh.c : sh.s;
    const int64_t bytes = d0 * d1 * ((batch + 7) / 8);
    const auto fwd = functional::batch_norm_forward(x, rm, rv, w, b, training, 1e-5, Activation::Relu,
                                                    with_addend ? &addend : nullptr);
    const Tensor& mask = fwd.result.saved.mask;
    ASSERT_EQ(mask.nbytes(), static_cast<size_t>(bytes));
    const auto* bits = static_cast<const uint8_t*>(mask.raw_data());
    const float* y = fwd.result.y.data<float>();
    for (int64_t n = 0; n < (batch + 7) / 8 * 8; n++)
        for (int64_t i1 = 0; i1 < d1; i1++)
            for (int64_t i0 = 0; i0 < d0; i0++) {
                const bool bit = (bits[i0 + d0 * (i1 + d1 * (n / 8))] >> (n % 8)) & 1;
                const bool positive = n < batch && y[i0 + d0 * (i1 + d1 * n)] > 0.0f;
                ASSERT_EQ(bit, positive) << "n " << n << ", d1 " << i1 << ", d0 " << i0;
            }
}

INSTANTIATE_TEST_SUITE_P(Batches, ReluMask,
                         ::testing::Combine(::testing::Values(1, 3, 8, 11),
                                            ::testing::Values(Layout::NCHW, Layout::NHWC), ::testing::Bool(),
                                            ::testing::Bool()));

// In half precision the mask marks the outputs as stored: a positive
// pre-activation that rounds to zero is not positive, as in PyTorch, whose
// ReLU backward tests its own (rounded) output. Weights near the dtype's
// smallest subnormal make such outputs common; the batch of 11 a partial byte.
class ReluMaskHalf : public ::testing::TestWithParam<std::tuple<DType, Layout, bool>> {};

std::string relu_mask_half_name(const ::testing::TestParamInfo<std::tuple<DType, Layout, bool>>& info) {
    return std::string(to_string(std::get<0>(info.param))) + "_" + to_string(std::get<1>(info.param)) +
           (std::get<2>(info.param) ? "_train" : "_eval");
}

TEST_P(ReluMaskHalf, BitsAreTheStoredOutputsAboveZero) {
    const auto [dtype, layout, training] = GetParam();
    const std::vector<int64_t> shape = {11, 20, 5, 7};
    std::mt19937 rng(91 + static_cast<int>(dtype));
    const ref::Shape sh = ref_shape(shape);
    const auto xv = rounded(random_batch(rng, sh), shape, dtype);
    // Weights falling channel by channel through the values that round to zero
    // (float16 below 2^-25; bfloat16 below 2^-134, or 2^-126 where the AVX512-BF16
    // levels flush subnormals), so that some outputs round to zero and some do not.
    std::vector<double> w(sh.c), b(sh.c, 0.0);
    for (int64_t c = 0; c < sh.c; c++)
        w[c] = dtype == DType::Float16 ? 1e-5 * std::pow(10.0, -0.2 * c) : 1e-36 * std::pow(10.0, -0.3 * c);
    const auto rm = random_vector(rng, sh.c, 0.5, 1.0), rv = random_vector(rng, sh.c, 2.0, 1.0);
    const auto fwd = functional::batch_norm_forward(tensor_from(xv, shape, dtype, layout), channel_tensor(rm),
                                                    channel_tensor(rv), channel_tensor(w), channel_tensor(b),
                                                    training, 1e-5, Activation::Relu, nullptr);
    const auto expect = ref::forward(xv, sh, w, b, training, rm, rv, 1e-5, true);
    const auto y = values(fwd.result.y);  // logical (n, c, s) order
    const auto* bits = static_cast<const uint8_t*>(fwd.result.saved.mask.raw_data());
    const int64_t d0 = layout == Layout::NCHW ? sh.s : sh.c, d1 = layout == Layout::NCHW ? sh.c : sh.s;
    int64_t rounded_to_zero = 0, kept = 0;
    for (int64_t n = 0; n < sh.n; n++)
        for (int64_t c = 0; c < sh.c; c++)
            for (int64_t s = 0; s < sh.s; s++) {
                const int64_t i0 = layout == Layout::NCHW ? s : c, i1 = layout == Layout::NCHW ? c : s;
                const bool bit = (bits[i0 + d0 * (i1 + d1 * (n / 8))] >> (n % 8)) & 1;
                const double stored = y[sh.at(n, c, s)];
                rounded_to_zero += expect.y[sh.at(n, c, s)] > 0 && stored == 0;
                kept += stored > 0;
                ASSERT_EQ(bit, stored > 0) << "n " << n << ", c " << c << ", s " << s << ", pre "
                                           << expect.y[sh.at(n, c, s)];
            }
    EXPECT_GT(rounded_to_zero, 0);  // the case this test is about occurs
    EXPECT_GT(kept, 0);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, ReluMaskHalf,
                         ::testing::Combine(::testing::Values(DType::Float16, DType::BFloat16),
                                            ::testing::Values(Layout::NCHW, Layout::NHWC), ::testing::Bool()),
                         relu_mask_half_name);

TEST(Moments, ChanMergeIsExactForUnevenSplits) {
    std::mt19937 rng(7);
    const ref::Shape sh{7, 3, 10};
    const auto x = random_batch(rng, sh);
    const Tensor all = tensor_from(x, {7, 3, 10});
    const Tensor first = tensor_from(std::vector<double>(x.begin(), x.begin() + 2 * 30), {2, 3, 10});
    const Tensor rest = tensor_from(std::vector<double>(x.begin() + 2 * 30, x.end()), {5, 3, 10});
    functional::Moments merged = functional::batch_moments(first);
    merged.merge(functional::batch_moments(rest));
    functional::Moments empty;
    merged.merge(empty);
    const auto whole = functional::batch_moments(all);
    EXPECT_EQ(merged.count, 70);
    // Equal up to the kernels' own float32 chunk rounding.
    EXPECT_LE(ref::rel_error(merged.mean(), whole.mean()), 1e-6);
    EXPECT_LE(ref::rel_error(merged.m2(), whole.m2()), 1e-6);
    const auto expect = ref::forward(x, sh, {1, 1, 1}, {0, 0, 0}, true, {}, {}, 1e-5);
    EXPECT_LE(ref::rel_error(merged.unbiased_var(), expect.batch_var_unbiased), 1e-6);
}

TEST(Functional, StridedBatchSliceIsRead) {
    // A view of every other sample: batch stride twice the dense one.
    std::mt19937 rng(11);
    const ref::Shape full{6, 3, 12};
    const auto x = random_batch(rng, full);
    Tensor big = tensor_from(x, {6, 3, 12});
    Tensor view = Tensor::from_blob_strided(big.raw_data(), {3, 3, 12}, {72, 12, 1}, DType::Float32, Device::cpu());
    std::vector<double> picked;
    for (int n = 0; n < 6; n += 2) picked.insert(picked.end(), x.begin() + n * 36, x.begin() + n * 36 + 36);
    const auto m = functional::batch_moments(view);
    const auto expect = ref::forward(picked, {3, 3, 12}, {1, 1, 1}, {0, 0, 0}, true, {}, {}, 1e-5);
    EXPECT_LE(ref::rel_error(m.mean(), expect.batch_mean), 1e-6);
}

}  // namespace
