// Every bad input gets a bnforge::Error naming the argument with expected and
// actual values, and leaves the module exactly as it was.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "check.h"
#include "kernels.h"
#include "test_util.h"

using namespace bnforge;
using namespace testutil;

namespace {

constexpr int64_t C = 3;
const std::vector<int64_t> kShape{4, C, 5, 6};

// Everything observable about a module's state.
struct Snapshot {
    std::map<std::string, std::vector<double>> tensors;
    int64_t batches;
    bool training;
    explicit Snapshot(BatchNormBase& bn) : batches(bn.num_batches_tracked()), training(bn.is_training()) {
        for (const auto& [name, t] : bn.state_dict()) tensors[name] = values(t);
        if (bn.weight_grad().defined()) tensors["weight_grad"] = values(bn.weight_grad());
        if (bn.bias_grad().defined()) tensors["bias_grad"] = values(bn.bias_grad());
    }
    bool operator==(const Snapshot& o) const { return tensors == o.tensors && batches == o.batches && training == o.training; }
};

// A module that has trained a step, so its state is not the default one.
template <class M = BatchNorm2d>
M trained_module(BatchNormOptions o = BatchNormOptions::pytorch(C)) {
    M bn(o);
    std::mt19937 rng(1);
    const auto x = random_batch(rng, ref_shape(kShape));
    bn.forward(tensor_from(x, kShape, o.dtype(), o.layout()));
    bn.backward(tensor_from(random_batch(rng, ref_shape(kShape)), kShape, o.dtype(), o.layout()));
    return bn;
}

Tensor good_input(unsigned seed = 2) {
    std::mt19937 rng(seed);
    return tensor_from(random_batch(rng, ref_shape(kShape)), kShape);
}

// Runs `fn`, expects an Error whose message contains every fragment, and the
// module's state untouched.
template <class Fn>
void expect_error(BatchNormBase& bn, Fn fn, std::vector<std::string> fragments) {
    const Snapshot before(bn);
    try {
        fn();
        ADD_FAILURE() << "expected bnforge::Error";
    } catch (const Error& e) {
        for (const auto& f : fragments) EXPECT_NE(std::string(e.what()).find(f), std::string::npos) << e.what();
    }
    EXPECT_TRUE(Snapshot(bn) == before) << "module state changed by a failed call";
}

TEST(Errors, WrongRank) {
    auto bn = trained_module();
    expect_error(bn, [&] { bn.forward(Tensor::empty({4, C, 5}, DType::Float32)); },
                 {"BatchNorm2d", "input", "rank 4", "got rank 3"});
    BatchNorm1d bn1(BatchNormOptions::pytorch(C));
    expect_error(bn1, [&] { bn1.forward(Tensor::empty({4, C, 5, 6}, DType::Float32)); }, {"rank 2 or 3", "got rank 4"});
}

TEST(Errors, WrongChannelCount) {
    auto bn = trained_module();
    expect_error(bn, [&] { bn.forward(Tensor::empty({4, 5, 5, 6}, DType::Float32)); },
                 {"input", "3 channels (num_features)", "got 5"});
}

TEST(Errors, WrongDtypeDeviceLayout) {
    auto bn = trained_module();
    expect_error(bn, [&] { bn.forward(Tensor::empty(kShape, DType::BFloat16)); }, {"dtype float32", "got bfloat16"});
    expect_error(bn, [&] { bn.forward(Tensor::empty(kShape, DType::Float32, Device::cpu(), Layout::NHWC)); },
                 {"layout NCHW", "got NHWC"});
    // A module on a device that does not exist fails at construction.
    EXPECT_THROW(BatchNorm2d(BatchNormOptions::pytorch(C).device(Device::cuda(99))), Error);
}

TEST(Errors, NullDataIsRejected) {
    EXPECT_THROW(Tensor::from_blob(nullptr, kShape, DType::Float32, Device::cpu()), Error);
}

TEST(Errors, UnsupportedStrides) {
    auto bn = trained_module();
    std::vector<float> storage(4 * C * 5 * 12, 1.0f);
    // Every other element along W: neither NCHW- nor NHWC-dense.
    const Tensor x = Tensor::from_blob_strided(storage.data(), kShape, {C * 60, 60, 12, 2}, DType::Float32, Device::cpu());
    expect_error(bn, [&] { bn.forward(x); }, {"input", "strides"});
}

TEST(Errors, AddendShapeMismatch) {
    auto bn = trained_module<FusedBatchNorm2d>(BatchNormOptions::oneflow(C));
    const Tensor addend = Tensor::empty({4, C, 5, 7}, DType::Float32);
    expect_error(bn, [&] { bn.forward(good_input(), &addend); }, {"addend", "(4, 3, 5, 6)", "(4, 3, 5, 7)"});
}

TEST(Errors, BackwardBeforeForwardAndMismatchedDy) {
    BatchNorm2d fresh(BatchNormOptions::pytorch(C));
    expect_error(fresh, [&] { fresh.backward(good_input()); }, {"backward called before forward"});
    auto bn = trained_module();
    expect_error(bn, [&] { bn.backward(Tensor::empty({2, C, 5, 6}, DType::Float32)); }, {"dy", "(4, 3, 5, 6)", "(2, 3, 5, 6)"});
    expect_error(bn, [&] { bn.backward(Tensor::empty(kShape, DType::Float16)); }, {"dy", "float32", "float16"});
}

TEST(Errors, OneValuePerChannelInTraining) {
    auto bn = trained_module(BatchNormOptions::pytorch(C).momentum(std::nullopt));
    expect_error(bn, [&] { bn.forward(tensor_from({1, 2, 3}, {1, C, 1, 1})); },
                 {"Expected more than 1 value per channel when training", "(1, 3, 1, 1)"});
}

TEST(Errors, UnsupportedOptions) {
    EXPECT_THROW(BatchNorm2d(BatchNormOptions::megengine(C).momentum(std::nullopt)), Error);
    EXPECT_THROW(BatchNorm2d(BatchNormOptions::oneflow(C).momentum(std::nullopt)), Error);
    EXPECT_THROW(BatchNorm2d(BatchNormOptions::pytorch(C).freeze(true)), Error);
    EXPECT_THROW(BatchNorm2d(BatchNormOptions::megengine(C).freeze(true).track_running_stats(false)), Error);
    EXPECT_THROW(BatchNorm2d(BatchNormOptions::pytorch(0)), Error);
    EXPECT_THROW(BatchNorm2d(BatchNormOptions::pytorch(C).eps(0)), Error);
    EXPECT_THROW(BatchNorm2d(BatchNormOptions::pytorch(C).momentum(1.5)), Error);
    EXPECT_THROW(BatchNorm2d(BatchNormOptions::pytorch(C).compute_mode(ComputeMode::Float32)), Error);
    EXPECT_THROW(BatchNorm2d(BatchNormOptions::pytorch(C).dtype(DType::Int64)), Error);
    try {
        BatchNorm2d(BatchNormOptions::megengine(C).momentum(std::nullopt));
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("momentum=None"), std::string::npos);
        EXPECT_NE(std::string(e.what()).find("MegEngine"), std::string::npos);
    }
}

TEST(Errors, BadStateDictChangesNothing) {
    auto bn = trained_module();
    StateDict sd = bn.state_dict();
    sd["running_mean"].fill_(42);
    sd["running_var"] = channel_tensor({1, 2});  // wrong size, validated before anything is copied
    expect_error(bn, [&] { bn.load_state_dict(sd); }, {"running_var", "(3,)", "(2,)"});
    sd = bn.state_dict();
    sd["num_batches_tracked"] = channel_tensor({1});
    expect_error(bn, [&] { bn.load_state_dict(sd); }, {"num_batches_tracked", "int64"});
    sd = bn.state_dict();
    sd["weight"] = Tensor::empty({C}, DType::Int64);
    expect_error(bn, [&] { bn.load_state_dict(sd); }, {"weight", "float"});
}

TEST(Errors, FailedForwardKeepsWhatBackwardNeeds) {
    BatchNorm2d a(BatchNormOptions::pytorch(C)), b(BatchNormOptions::pytorch(C));
    const Tensor x = good_input(3), dy = good_input(4);
    a.forward(x);
    b.forward(x);
    EXPECT_THROW(b.forward(Tensor::empty({4, 5, 5, 6}, DType::Float32)), Error);
    EXPECT_EQ(values(a.backward(dy)), values(b.backward(dy)));
}

TEST(Errors, HalideRuntimeErrorsBecomeBnforgeErrors) {
    // Call a kernel directly with a per-channel input one channel short: the
    // kernel's own bounds check fires; it must surface as an Error, not abort.
    const Tensor x = good_input();
    Tensor y = Tensor::empty(kShape, DType::Float32);
    detail::BatchView xv, yv;
    detail::make_batch_view(xv, x, Layout::NCHW, "x");
    detail::make_batch_view(yv, y, Layout::NCHW, "y");
    std::vector<float> shift(C - 1), rest(C);
    detail::ChannelBuffer shift_b(shift.data(), C - 1), offset_b(rest.data(), C), scale_b(rest.data(), C),
        beta_b(rest.data(), C);
    const auto& kernel = detail::find_kernel(detail::Pipeline::apply, Device::cpu(), DType::Float32, Layout::NCHW,
                                             detail::Fusion::none);
    try {
        detail::invoke(kernel, {{"x", &xv.buf}, {"shift", &shift_b.buf}, {"offset", &offset_b.buf},
                                {"scale", &scale_b.buf}, {"beta", &beta_b.buf}, {"y", &yv.buf}});
        FAIL() << "expected an error";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("bnk_apply_cpu_f32_nchw_none"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("shift"), std::string::npos) << e.what();
    }
}

TEST(Errors, KernelArgumentsBoundByNameOnEveryCall) {
    // invoke remembers where a kernel's arguments were in the last list it
    // was given; a list in another order, other buffers under the same names,
    // or an argument the kernel does not take must still bind by name.
    const Tensor x = good_input();
    const float* xp = x.data<float>();
    const int64_t S = kShape[2] * kShape[3];
    Tensor y = Tensor::empty(kShape, DType::Float32);
    detail::BatchView xv, yv;
    detail::make_batch_view(xv, x, Layout::NCHW, "x");
    detail::make_batch_view(yv, y, Layout::NCHW, "y");
    const std::vector<float> shift{0.5f, -1.0f, 2.0f}, offset{0.25f, 0.125f, -0.5f}, scale{3.0f, -2.0f, 0.75f},
        beta{-4.0f, 1.5f, 8.0f}, scale2{-0.5f, 5.0f, 1.25f};
    detail::ChannelBuffer shift_b(shift.data(), C), offset_b(offset.data(), C), scale_b(scale.data(), C),
        beta_b(beta.data(), C), scale2_b(scale2.data(), C);
    const auto& kernel = detail::find_kernel(detail::Pipeline::apply, Device::cpu(), DType::Float32, Layout::NCHW,
                                             detail::Fusion::none);
    auto expect_y = [&](const std::vector<float>& sc, const char* what) {
        const float* yp = y.data<float>();
        for (int64_t i = 0; i < x.numel(); i++) {
            const int64_t c = (i / S) % C;
            const float want = ((xp[i] - shift[c]) - offset[c]) * sc[c] + beta[c];
            ASSERT_NEAR(yp[i], want, 1e-5f * (1.0f + std::fabs(want))) << what << ", element " << i;
        }
    };
    auto poison = [&] { y.fill_(std::nan("")); };

    poison();
    detail::invoke(kernel, {{"x", &xv.buf}, {"addend", nullptr}, {"shift", &shift_b.buf}, {"offset", &offset_b.buf},
                            {"scale", &scale_b.buf}, {"beta", &beta_b.buf}, {"y", &yv.buf}, {"mask", nullptr}});
    expect_y(scale, "the kernel's order");
    poison();
    detail::invoke(kernel, {{"x", &xv.buf}, {"addend", nullptr}, {"shift", &shift_b.buf}, {"offset", &offset_b.buf},
                            {"scale", &scale2_b.buf}, {"beta", &beta_b.buf}, {"y", &yv.buf}, {"mask", nullptr}});
    expect_y(scale2, "another buffer under the same name");
    poison();
    detail::invoke(kernel, {{"y", &yv.buf}, {"addend", nullptr}, {"scale", &scale_b.buf}, {"beta", &beta_b.buf},
                            {"shift", &shift_b.buf}, {"offset", &offset_b.buf}, {"x", &xv.buf}, {"mask", nullptr}});
    expect_y(scale, "the same names in other places");
    detail::BatchView mv = yv;  // present under a name this variant does not take
    EXPECT_THROW(detail::invoke(kernel, {{"y", &yv.buf}, {"addend", nullptr}, {"scale", &scale_b.buf},
                                         {"beta", &beta_b.buf}, {"shift", &shift_b.buf}, {"offset", &offset_b.buf},
                                         {"x", &xv.buf}, {"mask", &mv.buf}}),
                 Error);
    EXPECT_THROW(detail::invoke(kernel, {{"x", &xv.buf}, {"shift", &shift_b.buf}, {"offset", &offset_b.buf},
                                         {"scale", &scale_b.buf}, {"beta", &beta_b.buf}}),
                 Error);  // y missing
}

TEST(Errors, MissingKernelVariantIsAnError) {
    // The OpenCL kernels are float32 only; the one-pass pipelines are NCHW only.
    EXPECT_THROW(detail::find_kernel(detail::Pipeline::stats, Device::opencl(), DType::Float16, Layout::NCHW,
                                     detail::Fusion::none),
                 Error);
    EXPECT_THROW(detail::find_kernel(detail::Pipeline::train_forward, Device::cuda(0), DType::Float32, Layout::NHWC,
                                     detail::Fusion::none),
                 Error);
}

TEST(Errors, NanAndInfPropagateWithoutCrashing) {
    BatchNorm2d bn(BatchNormOptions::pytorch(C));
    Tensor x = good_input();
    x.set_item({0, 0, 0, 0}, std::numeric_limits<double>::quiet_NaN());
    x.set_item({0, 1, 0, 0}, std::numeric_limits<double>::infinity());
    Tensor y = bn.forward(x);
    EXPECT_TRUE(std::isnan(y.item({1, 0, 2, 2})));  // channel 0's statistics are NaN, as in PyTorch
    EXPECT_TRUE(std::isfinite(y.item({1, 2, 2, 2})));  // channel 2 untouched
}

// Every NaN stays a NaN when rounded to bfloat16, whatever its payload: on the
// bits, rounding a NaN whose mantissa is nearly all ones carries into the sign
// or out of the word (0xffffffff + 0x8000 wraps to +0). Here a NaN weight,
// bias or running mean passes its payload to the per-channel constants of y
// and, for the weight, of dx, by the two-pass kernels and (rows of 256) the
// one-pass ones.
TEST(Errors, NanOfAnyPayloadStaysNanInBFloat16) {
    for (const std::vector<int64_t>& shape : {kShape, std::vector<int64_t>{2, C, 16, 16}}) {
        std::mt19937 rng(3);
        const std::vector<double> xv = random_batch(rng, ref_shape(shape)), dyv = random_batch(rng, ref_shape(shape));
        const int64_t n = shape[0] - 1, h = shape[2] - 1, w = shape[3] - 1;
        set_one_pass_limit(std::numeric_limits<size_t>::max());  // one pass where rows allow
        const int threads = set_num_threads(1);                   // and C = 3 channels suffice
        const bool one_pass_rows = shape[2] * shape[3] >= 256;
        for (const Layout layout : {Layout::NCHW, Layout::NHWC}) {
            const Tensor x = tensor_from(xv, shape, DType::BFloat16, layout);
            const Tensor dy = tensor_from(dyv, shape, DType::BFloat16, layout);
            for (const uint32_t bits : {0x7fffffffu, 0xffffffffu, 0x7fff8000u, 0x7fc00000u}) {
                for (const char* where : {"weight", "bias", "running_mean"}) {
                    const bool in_weight = where == std::string("weight");
                    for (const bool training : {true, false}) {
                        if (training && where == std::string("running_mean")) continue;  // read in eval only
                        SCOPED_TRACE(std::string(to_string(layout)) + ", rows of " + std::to_string(shape[2] * shape[3]) +
                                     ", NaN bits " + std::to_string(bits) + " in " + where +
                                     (training ? ", train" : ", eval"));
                        BatchNorm2d bn(BatchNormOptions::pytorch(C).dtype(DType::BFloat16).layout(layout));
                        if (!training) bn.eval();
                        Tensor& param = in_weight ? bn.weight()
                                        : where == std::string("bias") ? bn.bias()
                                                                       : bn.running_mean();
                        std::memcpy(&param.data<float>()[1], &bits, sizeof bits);  // channel 1's
                        const Tensor y = bn.forward(x);
                        const bool one_pass = training && layout == Layout::NCHW && one_pass_rows;
                        EXPECT_EQ(std::string(detail::last_invoked_kernel()->name).find("_train_forward_") != std::string::npos,
                                  one_pass);
                        EXPECT_TRUE(std::isnan(y.item({0, 1, 0, 0})));
                        EXPECT_TRUE(std::isnan(y.item({n, 1, h, w})));
                        EXPECT_TRUE(std::isfinite(y.item({0, 0, 0, 0})));  // channel 0 untouched
                        if (!training || !in_weight) continue;
                        const Tensor dx = bn.backward(dy);
                        EXPECT_TRUE(std::isnan(dx.item({0, 1, 0, 0})));
                        EXPECT_TRUE(std::isnan(dx.item({n, 1, h, w})));
                        EXPECT_TRUE(std::isfinite(dx.item({0, 0, 0, 0})));
                    }
                }
            }
        }
        set_one_pass_limit(std::nullopt);
        set_num_threads(threads);
    }
}

}  // namespace

// ---- Hostile sizes (issue 15, point 4) --------------------------------------

// Extents and strides past the kernels' 32-bit range are refused before any
// output is allocated or any kernel runs, naming the argument and the value.
TEST(HostileSizes, ExtentsAndStridesPastTheKernelsRangeAreErrors) {
    std::vector<float> storage(8, 1.5f);
    BatchNorm2d bn = trained_module();
    bn.eval();
    const int64_t big = int64_t{1} << 31;
    // Views over 8 floats that claim far more: the checks run before any element is read.
    auto view = [&](std::vector<int64_t> shape, std::vector<int64_t> strides) {
        return Tensor::from_blob_strided(storage.data(), std::move(shape), std::move(strides), DType::Float32,
                                         Device::cpu());
    };
    // (1, 3, 2^16, 2^15), rows contiguous: 2^31 positions per channel.
    expect_error(bn, [&] { bn.forward(view({1, C, int64_t{1} << 16, int64_t{1} << 15}, {0, 0, int64_t{1} << 15, 1})); },
                 {"input", "spatial size 2147483648", "32-bit"});
    // A channel stride of 2^31 elements.
    expect_error(bn, [&] { bn.forward(view({1, C, 1, 2}, {0, big, 2, 1})); }, {"input", "2147483648", "32-bit"});
    // A batch stride of 2^31 elements.
    expect_error(bn, [&] { bn.forward(view({2, C, 1, 2}, {big, 2, 2, 1})); }, {"input", "2147483648", "32-bit"});
    bn.train();
    expect_error(bn, [&] { bn.forward(view({2, C, 1, 2}, {big, 2, 2, 1})); }, {"input", "2147483648", "32-bit"});
    // Overlapping inputs are read-only like any other: two batch rows on the same memory.
    const std::vector<double> y = values(bn.forward(view({2, C, 1, 2}, {0, 2, 2, 1})));
    ASSERT_EQ(y.size(), static_cast<size_t>(2 * C * 2));
    EXPECT_EQ(std::vector<double>(y.begin(), y.begin() + C * 2), std::vector<double>(y.begin() + C * 2, y.end()));
}

// Element counts past int64_t or size_t: refused where the tensor is made.
TEST(HostileSizes, CountsThatOverflowAreErrors) {
    const int64_t half = int64_t{1} << 32;
    EXPECT_ERROR_CONTAINS(Tensor::empty({half, half}, DType::Float32), "overflows int64");
    EXPECT_ERROR_CONTAINS(Tensor::empty({half, int64_t{1} << 30, 2}, DType::UInt8), "overflows int64");
    std::vector<float> storage(4);
    EXPECT_ERROR_CONTAINS(Tensor::from_blob_strided(storage.data(), {3, 3}, {INT64_MAX / 2, 1}, DType::Float32,
                                                    Device::cpu()),
                          "overflow");
}

// A zero-sized dimension in each position of (N, C, H, W), both layouts,
// training and eval: C = 0 is an Error naming the channel count; any other
// is an empty batch with PyTorch's behaviour (an empty output and dx, running
// statistics kept, the batch counted in training), never a kernel on a
// degenerate buffer.
TEST(HostileSizes, ZeroSizedDimensionsInEveryPosition) {
    for (Layout layout : {Layout::NCHW, Layout::NHWC})
        for (int zero = 0; zero < 4; zero++)
            for (bool training : {true, false}) {
                std::vector<int64_t> shape = kShape;
                shape[zero] = 0;
                SCOPED_TRACE(std::string(to_string(layout)) + " shape " + detail::format_shape(shape) +
                             (training ? " train" : " eval"));
                BatchNorm2d bn = trained_module(BatchNormOptions::pytorch(C).layout(layout));
                bn.train(training);
                const Tensor x = Tensor::empty(shape, DType::Float32, Device::cpu(), layout);
                if (zero == 1) {
                    expect_error(bn, [&] { bn.forward(x); }, {"expected input with 3 channels", "got 0"});
                    continue;
                }
                const Snapshot before(bn);
                const Tensor y = bn.forward(x);
                EXPECT_EQ(y.shape(), shape);
                EXPECT_EQ(y.numel(), 0);
                const Snapshot after(bn);
                EXPECT_EQ(after.tensors.at("running_mean"), before.tensors.at("running_mean"));
                EXPECT_EQ(after.tensors.at("running_var"), before.tensors.at("running_var"));
                EXPECT_EQ(after.batches, before.batches + (training ? 1 : 0));
                if (training) {
                    const Tensor dx = bn.backward(Tensor::empty(shape, DType::Float32, Device::cpu(), layout));
                    EXPECT_EQ(dx.shape(), shape);
                    EXPECT_EQ(Snapshot(bn).tensors.at("weight"), before.tensors.at("weight"));
                }
            }
}

// State a step writes in place (running statistics, the batch counter,
// gradient accumulators) sharing memory with another such tensor or with
// what the step reads: an Error naming both, the tensors untouched.
TEST(HostileSizes, StateWrittenInPlaceMustNotAliasAnything) {
    using namespace functional;
    const Tensor x = good_input();
    const Moments moments = batch_moments(x);
    const Tensor weight = channel_tensor({1.5, 0.5, 2.0}), bias = channel_tensor({0.1, -0.2, 0.3});
    Tensor rm = channel_tensor({0.0, 0.0, 0.0}), rv = channel_tensor({1.0, 1.0, 1.0});
    auto normalize = [&](RunningUpdate u) {
        return normalize_with_batch_stats(x, moments, 1e-5, weight, bias, Activation::Identity, nullptr, &u);
    };
    EXPECT_ERROR_CONTAINS(normalize({rm, rm, Tensor(), 0.1}), "running_var shares memory with running_mean");
    std::vector<float> memory(2 * C, 1.0f);  // two views, one float apart
    const Tensor first = Tensor::from_blob(memory.data(), {C}, DType::Float32, Device::cpu());
    const Tensor shifted = Tensor::from_blob(memory.data() + 1, {C}, DType::Float32, Device::cpu());
    EXPECT_ERROR_CONTAINS(normalize({first, shifted, Tensor(), 0.1}), "running_var shares memory with running_mean");
    EXPECT_ERROR_CONTAINS(normalize({weight, rv, Tensor(), 0.1}), "running_mean shares memory with weight");
    EXPECT_EQ(values(weight), (std::vector<double>{1.5, 0.5, 2.0}));
    EXPECT_EQ(values(rv), std::vector<double>(C, 1.0));
    EXPECT_EQ(memory, std::vector<float>(2 * C, 1.0f));

    const ForwardResult fwd = normalize({rm, rv, Tensor(), 0.1});  // separate tensors: fine
    const Tensor dy = good_input(5);
    const BackwardSums sums = backward_sums(dy, fwd.saved);
    Tensor grad = channel_tensor({0.0, 0.0, 0.0});
    const GradAccumulators same{grad, grad, nullptr};
    EXPECT_ERROR_CONTAINS(backward_input(dy, fwd.saved, weight, sums, &same), "bias_grad shares memory with weight_grad");
    const GradAccumulators onto_weight{weight, grad, nullptr};
    EXPECT_ERROR_CONTAINS(backward_input(dy, fwd.saved, weight, sums, &onto_weight),
                          "weight_grad shares memory with weight");
    EXPECT_EQ(values(grad), std::vector<double>(C, 0.0));
}
