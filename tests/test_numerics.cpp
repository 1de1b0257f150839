// Numerics from DESIGN.md: data far from zero, large per-channel counts,
// low-precision storage types.
#include <gtest/gtest.h>

#include "test_util.h"

#include <cmath>
#include <limits>
#include <string>

using namespace bnforge;
using namespace testutil;

namespace {

// y error of a training forward on data with the given per-channel mean and std.
double far_from_zero_error(double mean, double stdev, Layout layout) {
    const std::vector<int64_t> shape{8, 4, 16, 16};
    const ref::Shape sh = ref_shape(shape);
    std::mt19937 rng(77);
    std::normal_distribution<double> normal(0.0, 1.0);
    std::vector<double> x(sh.size());
    for (auto& e : x) e = mean + stdev * normal(rng);
    x = rounded(x, shape, DType::Float32);
    BatchNorm2d bn(BatchNormOptions::pytorch(4).layout(layout));
    const Tensor y = bn.forward(tensor_from(x, shape, DType::Float32, layout));
    const auto f = ref::forward(x, sh, std::vector<double>(4, 1), std::vector<double>(4, 0), true, {}, {}, 1e-5);
    EXPECT_LE(ref::rel_error(values(bn.running_mean()), std::vector<double>(4, 0.1 * mean)), 1e-2);
    return ref::rel_error(values(y), f.y);
}

TEST(Numerics, MeanTenThousandStdOne) {
    for (Layout l : {Layout::NCHW, Layout::NHWC}) EXPECT_LE(far_from_zero_error(1e4, 1.0, l), 1e-5);
}

TEST(Numerics, MeanTenThousandStdOneHundredth) {
    for (Layout l : {Layout::NCHW, Layout::NHWC}) EXPECT_LE(far_from_zero_error(1e4, 1e-2, l), 1e-3);
}

TEST(Numerics, TenMillionValuesPerChannel) {
    // N·S = 1e7 for each of two channels; statistics, y and gradients within 1e-5.
    const std::vector<int64_t> shape{10, 2, 1000, 1000};
    const ref::Shape sh = ref_shape(shape);
    std::mt19937 rng(5);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    Tensor x = Tensor::empty(shape, DType::Float32), dy = Tensor::empty(shape, DType::Float32);
    std::vector<double> xv(sh.size()), dyv(sh.size());
    for (int64_t i = 0; i < sh.size(); i++) {
        const int64_t c = (i / sh.s) % 2;
        x.data<float>()[i] = static_cast<float>(3.0 + c + (0.5 + c) * normal(rng));
        dy.data<float>()[i] = normal(rng);
        xv[i] = x.data<float>()[i];
        dyv[i] = dy.data<float>()[i];
    }
    BatchNorm2d bn(BatchNormOptions::pytorch(2));
    const Tensor y = bn.forward(x);
    const auto f = ref::forward(xv, sh, {1, 1}, {0, 0}, true, {}, {}, 1e-5);
    std::vector<double> rv{0.9, 0.9};
    for (int c = 0; c < 2; c++) rv[c] += 0.1 * f.batch_var_unbiased[c];
    EXPECT_LE(ref::rel_error(values(bn.running_var()), rv), 1e-5);
    EXPECT_LE(ref::rel_error(values(y), f.y), 1e-5);
    const Tensor dx = bn.backward(dy);
    const auto g = ref::backward(xv, dyv, f.y, sh, {1, 1}, f, true, 1e-5, false);
    EXPECT_LE(ref::rel_error(values(dx), g.dx), 1e-5);
    EXPECT_LE(ref::rel_error(values(bn.weight_grad()), g.dweight), 1e-5);
    EXPECT_LE(ref::rel_error(values(bn.bias_grad()), g.dbias), 1e-5);
}

// The NCHW statistics cut each row into whole vectors (the last one overlapping
// the one before, its repeated lanes masked), chunks of up to 2048 values and
// groups of short rows: every value must be summed exactly once at row lengths
// just below, at and above a vector (32 lanes with AVX-512, 16 with AVX2) and
// a chunk, with a last group of fewer rows (43 rows, 41 to a group at 7x7),
// in one pass and in two; and no row read past its end.
TEST(Numerics, EveryValueSummedOnceAtVectorAndChunkEdges) {
    for (int64_t s : {7, 15, 16, 17, 31, 32, 33, 49, 64, 65, 196, 2047, 2048, 2049, 4160}) {
        const std::vector<int64_t> shape{43, 3, 1, s};
        const ref::Shape sh = ref_shape(shape);
        std::mt19937 rng(static_cast<unsigned>(s));
        const std::vector<double> xv = rounded(random_batch(rng, sh), shape, DType::Float32);
        const std::vector<double> dyv = rounded(random_batch(rng, sh, 0.3, 1.0), shape, DType::Float32);
        const auto f = ref::forward(xv, sh, {1, 1, 1}, {0, 0, 0}, true, {}, {}, 1e-5);
        const auto g = ref::backward(xv, dyv, f.y, sh, {1, 1, 1}, f, true, 1e-5, false);
        for (size_t limit : {size_t{0}, std::numeric_limits<size_t>::max()}) {
            SCOPED_TRACE("row of " + std::to_string(s) + (limit ? ", one pass allowed" : ", two passes"));
            set_one_pass_limit(limit);
            BatchNorm2d bn(BatchNormOptions::pytorch(3));
            // x in a buffer of exactly its size: under ASan, a read past the
            // last row fails (as fuzz.strided once found at rows under a vector).
            std::vector<float> xbuf(xv.begin(), xv.end());
            const Tensor y = bn.forward(Tensor::from_blob(xbuf.data(), shape, DType::Float32, Device::cpu()));
            std::vector<double> rm(3);
            for (int c = 0; c < 3; c++) rm[c] = 0.1 * f.batch_mean[c];
            EXPECT_LE(ref::rel_error(values(bn.running_mean()), rm), 1e-5);
            EXPECT_LE(ref::rel_error(values(y), f.y), 1e-5);
            const Tensor dx = bn.backward(tensor_from(dyv, shape));
            EXPECT_LE(ref::rel_error(values(dx), g.dx), 1e-5);
            EXPECT_LE(ref::rel_error(values(bn.weight_grad()), g.dweight), 1e-5);
            EXPECT_LE(ref::rel_error(values(bn.bias_grad()), g.dbias), 1e-5);
        }
        set_one_pass_limit(std::nullopt);
    }
}

TEST(Numerics, HalfAndBFloat16WithinTheirRounding) {
    const std::vector<int64_t> shape{4, 6, 9, 11};
    const ref::Shape sh = ref_shape(shape);
    for (DType dt : {DType::Float16, DType::BFloat16}) {
        for (Layout l : {Layout::NCHW, Layout::NHWC}) {
            std::mt19937 rng(9);
            const auto x = rounded(random_batch(rng, sh), shape, dt);
            const auto dy = rounded(random_batch(rng, sh, 0.1, 1.0), shape, dt);
            BatchNorm2d bn(BatchNormOptions::pytorch(6).dtype(dt).layout(l));
            const Tensor y = bn.forward(tensor_from(x, shape, dt, l));
            EXPECT_EQ(y.dtype(), dt);
            const std::vector<double> ones(6, 1), zeros(6, 0);
            const auto f = ref::forward(x, sh, ones, zeros, true, {}, {}, 1e-5);
            EXPECT_LE(ref::rel_error(values(y), f.y), dtype_tolerance(dt)) << to_string(dt);
            // Statistics and parameter grads are float32+ whatever the storage type.
            EXPECT_LE(ref::rel_error(values(bn.running_mean()), [&] {
                          std::vector<double> v(6);
                          for (int c = 0; c < 6; c++) v[c] = 0.1 * f.batch_mean[c];
                          return v;
                      }()),
                      1e-5);
            const Tensor dx = bn.backward(tensor_from(dy, shape, dt, l));
            const auto g = ref::backward(x, dy, f.y, sh, ones, f, true, 1e-5, false);
            EXPECT_LE(ref::rel_error(values(dx), g.dx), dtype_tolerance(dt)) << to_string(dt);
            EXPECT_LE(ref::rel_error(values(bn.weight_grad()), g.dweight), 1e-5) << to_string(dt);
        }
    }
}

// bfloat16 outputs below float32's smallest normal (2^-126): rounded exactly
// (to a bfloat16 subnormal, as c10::BFloat16) at the levels that narrow on the
// bits, flushed to ±0 at the AVX512-BF16 levels, whose vcvtne2ps2bf16 treats
// subnormal inputs as zero (oneDNN's kernels store the same). Run at every
// level by the cpu_level.* tests.
TEST(Numerics, BFloat16SubnormalOutputsPerLevel) {
    const std::vector<int64_t> shape{8, 4, 6, 10};
    const ref::Shape sh = ref_shape(shape);
    for (Layout l : {Layout::NCHW, Layout::NHWC}) {
        std::mt19937 rng(13);
        const auto x = rounded(random_batch(rng, sh), shape, DType::BFloat16);
        // |y| = 1e-39·|x̂|: subnormal up to |x̂| = 11, above bfloat16's rounding to zero (2^-134) from |x̂| = 0.05.
        const std::vector<double> w(sh.c, 1e-39), b(sh.c, 0.0), unused(sh.c, 1.0);
        const auto fwd = functional::batch_norm_forward(
            tensor_from(x, shape, DType::BFloat16, l), channel_tensor(unused), channel_tensor(unused),
            channel_tensor(w), channel_tensor(b), true, 1e-5, functional::Activation::Identity, nullptr);
        const auto level = last_cpu_level();
        ASSERT_TRUE(level.has_value());
        const bool flushes = *level == CpuLevel::AVX512Zen4 || *level == CpuLevel::AVX512SapphireRapids;
        const auto expect = ref::forward(x, sh, w, b, true, {}, {}, 1e-5);
        const auto y = values(fwd.result.y);
        int64_t checked = 0;
        for (size_t i = 0; i < y.size(); i++) {
            const double r = expect.y[i];
            if (std::fabs(r) < std::ldexp(1.0, -132) || std::fabs(r) > std::ldexp(1.0, -127)) continue;
            checked++;
            if (flushes) {
                ASSERT_EQ(y[i], 0.0) << "at " << i << ", level " << to_string(*level) << ", reference " << r;
            } else {  // within half a bfloat16 subnormal step (2^-133), plus float32's own rounding
                ASSERT_LE(std::fabs(y[i] - r), std::ldexp(1.0, -133) * 1.01)
                    << "at " << i << ", level " << to_string(*level) << ", reference " << r;
            }
        }
        EXPECT_GT(checked, static_cast<int64_t>(y.size() / 4)) << to_string(l);
    }
}

}  // namespace
