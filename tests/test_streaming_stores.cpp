// The kernels that write with streaming stores (<library>_streaming, built by
// cmake/streaming_stores.py on x86, float32 and bfloat16) against the
// ordinary ones: the same bits in eval forward, training forward and
// backward, with and without the ReLU/add fusions, both layouts, by two
// passes and by the one-pass kernels, and the float64 reference.
// They run only where every output row starts on a 64-byte boundary — a
// non-temporal store elsewhere faults — so shapes whose rows do not must take
// the ordinary kernels. ctest also runs this suite at every CPU level of the
// fat library (cpu_level.*).
#include <gtest/gtest.h>

#include "kernels.h"
#include "test_util.h"

#include <bnforge/runtime.h>

#include <cstring>
#include <limits>

using namespace bnforge;
using namespace testutil;

namespace {

struct StreamCase {
    std::vector<int64_t> shape;
    Layout layout;
    DType dtype;
    bool rows_aligned;  // every row of the kernels' view is a multiple of 64 bytes
};

// The training route under test: the one-pass kernels (one_pass.h) where they
// apply, or the two passes (statistics, then the apply kernels) everywhere.
enum class Route { TwoPasses, OnePass };

using Param = std::tuple<StreamCase, Route>;

std::string case_name(const ::testing::TestParamInfo<Param>& info) {
    const StreamCase& tc = std::get<0>(info.param);
    std::string name = std::string(to_string(tc.dtype)) + (tc.layout == Layout::NCHW ? "_nchw" : "_nhwc");
    for (int64_t d : tc.shape) name += "_" + std::to_string(d);
    return name + (std::get<1>(info.param) == Route::OnePass ? "_one_pass" : "_two_passes");
}

// The one-pass kernels' own rules with an unlimited slab (one_pass.cpp): NCHW,
// rows of at least 256 values, two channels per thread.
bool takes_one_pass(const StreamCase& tc, Route route) {
    return route == Route::OnePass && tc.layout == Layout::NCHW && tc.shape[2] * tc.shape[3] >= 256 &&
           tc.shape[1] >= 2 * num_threads();
}

// A training kernel must be the route's: a one-pass kernel, or an apply kernel of the two passes.
void expect_route(const std::string& kernel, bool one_pass) {
    EXPECT_EQ(kernel.rfind("bnk_train_", 0) == 0, one_pass) << kernel;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
    return a.nbytes() == b.nbytes() && std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

// A random batch input, rounded to the case's dtype: the float64 values and the tensor.
struct BatchInput {
    std::vector<double> values;
    Tensor tensor;
};

BatchInput batch_input(std::mt19937& rng, const StreamCase& tc, double mean_scale = 2.0, double std_base = 0.5) {
    std::vector<double> v = rounded(random_batch(rng, ref_shape(tc.shape), mean_scale, std_base), tc.shape, tc.dtype);
    Tensor t = tensor_from(v, tc.shape, tc.dtype, tc.layout);
    return {std::move(v), std::move(t)};
}

bool streaming_kernels_built(DType dtype) {
    return detail::find_streaming_kernel(detail::Pipeline::apply, dtype, Layout::NCHW, detail::Fusion::none) != nullptr;
}

// eval forward, training forward and backward; the apply-kernel names each ran.
struct Outputs {
    Tensor eval_y, train_y, dx;
    std::string eval_kernel, train_kernel, backward_kernel;
};

class StreamingStores : public ::testing::TestWithParam<Param> {
protected:
    void SetUp() override {
        set_one_pass_limit(std::get<1>(GetParam()) == Route::OnePass ? std::numeric_limits<size_t>::max() : 0);
    }
    void TearDown() override {
        set_one_pass_limit(std::nullopt);
        set_streaming_store_limit(std::nullopt);
    }
};

TEST_P(StreamingStores, SameBitsAsTheOrdinaryKernels) {
    const StreamCase& tc = std::get<0>(GetParam());
    const bool one_pass = takes_one_pass(tc, std::get<1>(GetParam()));
    std::mt19937 rng(7 + tc.shape[1]);
    const ref::Shape sh = ref_shape(tc.shape);
    const BatchInput xin = batch_input(rng, tc), dyin = batch_input(rng, tc, 0.3, 1.0);
    const std::vector<double>&xv = xin.values, &dyv = dyin.values;
    const Tensor &x = xin.tensor, &dy = dyin.tensor;
    const auto wv = random_vector(rng, sh.c, 1.0, 0.5), bv = random_vector(rng, sh.c, 0.0, 0.5);
    const auto rmv = random_vector(rng, sh.c, 0.5, 0.5), rvv = random_vector(rng, sh.c, 1.5, 0.4);
    const Tensor w = channel_tensor(wv), b = channel_tensor(bv), rm = channel_tensor(rmv), rv = channel_tensor(rvv);

    auto run = [&](size_t limit) {
        set_streaming_store_limit(limit);
        Outputs r;
        r.eval_y = functional::batch_norm_forward(x, rm, rv, w, b, false, 1e-5).result.y;
        r.eval_kernel = detail::last_invoked_kernel()->name;
        const auto fwd = functional::batch_norm_forward(x, Tensor(), Tensor(), w, b, true, 1e-5);
        r.train_y = fwd.result.y;
        r.train_kernel = detail::last_invoked_kernel()->name;
        r.dx = functional::batch_norm_backward(dy, fwd.result.saved, w).input.dx;
        r.backward_kernel = detail::last_invoked_kernel()->name;
        return r;
    };
    const Outputs streamed = run(0), ordinary = run(std::numeric_limits<size_t>::max());

    const bool streams = tc.rows_aligned && streaming_kernels_built(tc.dtype);
    for (const std::string* name : {&streamed.eval_kernel, &streamed.train_kernel, &streamed.backward_kernel}) {
        EXPECT_EQ(name->find("_streaming") != std::string::npos, streams) << *name;
    }
    for (const std::string* name : {&ordinary.eval_kernel, &ordinary.train_kernel, &ordinary.backward_kernel}) {
        EXPECT_EQ(name->find("_streaming"), std::string::npos) << *name;
    }
    for (const Outputs* r : {&streamed, &ordinary}) {
        expect_route(r->train_kernel, one_pass);
        expect_route(r->backward_kernel, one_pass);
    }
    EXPECT_TRUE(same_bytes(streamed.eval_y, ordinary.eval_y));
    EXPECT_TRUE(same_bytes(streamed.train_y, ordinary.train_y));
    EXPECT_TRUE(same_bytes(streamed.dx, ordinary.dx));

    // And right, not merely the same: against the float64 reference.
    const auto eval = ref::forward(xv, sh, wv, bv, false, rmv, rvv, 1e-5);
    const auto train = ref::forward(xv, sh, wv, bv, true, {}, {}, 1e-5);
    const auto grads = ref::backward(xv, dyv, train.y, sh, wv, train, true, 1e-5, false);
    const double tol = dtype_tolerance(tc.dtype);
    EXPECT_LE(ref::rel_error(values(streamed.eval_y), eval.y), tol);
    EXPECT_LE(ref::rel_error(values(streamed.train_y), train.y), tol);
    EXPECT_LE(ref::rel_error(values(streamed.dx), grads.dx), 10 * tol);
}

// The fused kernels stream every output: y and the ReLU mask forward, dx and
// daddend backward (which reads the mask). Training forward with an addend,
// and with ReLU alone, then the fused backward; same bits, same masks.
TEST_P(StreamingStores, FusionsSameBitsAsTheOrdinaryKernels) {
    const StreamCase& tc = std::get<0>(GetParam());
    const bool one_pass = takes_one_pass(tc, std::get<1>(GetParam()));
    std::mt19937 rng(11 + tc.shape[1]);
    const ref::Shape sh = ref_shape(tc.shape);
    const BatchInput xin = batch_input(rng, tc), ain = batch_input(rng, tc, 0.5, 1.0),
                     dyin = batch_input(rng, tc, 0.3, 1.0);
    const std::vector<double>&xv = xin.values, &av = ain.values, &dyv = dyin.values;
    const Tensor &x = xin.tensor, &addend = ain.tensor, &dy = dyin.tensor;
    const auto wv = random_vector(rng, sh.c, 1.0, 0.5), bv = random_vector(rng, sh.c, 0.0, 0.5);
    const Tensor w = channel_tensor(wv), b = channel_tensor(bv);
    using functional::Activation;

    struct Fused {
        Tensor relu_y, relu_mask, y, mask, dx, daddend;
        std::vector<std::string> kernels;  // relu forward's apply, fused forward's, fused backward's
    };
    auto run = [&](size_t limit) {
        set_streaming_store_limit(limit);
        Fused r;
        const auto relu = functional::batch_norm_forward(x, Tensor(), Tensor(), w, b, true, 1e-5, Activation::Relu);
        r.kernels.push_back(detail::last_invoked_kernel()->name);
        const auto fused =
            functional::batch_norm_forward(x, Tensor(), Tensor(), w, b, true, 1e-5, Activation::Relu, &addend);
        r.kernels.push_back(detail::last_invoked_kernel()->name);
        const auto grads = functional::batch_norm_backward(dy, fused.result.saved, w);
        r.kernels.push_back(detail::last_invoked_kernel()->name);
        r.relu_y = relu.result.y, r.relu_mask = relu.result.saved.mask;
        r.y = fused.result.y, r.mask = fused.result.saved.mask;
        r.dx = grads.input.dx, r.daddend = grads.input.daddend;
        return r;
    };
    const Fused streamed = run(0), ordinary = run(std::numeric_limits<size_t>::max());

    const bool streams = tc.rows_aligned && streaming_kernels_built(tc.dtype);
    for (const std::string& name : streamed.kernels) EXPECT_EQ(name.find("_streaming") != std::string::npos, streams) << name;
    for (const std::string& name : ordinary.kernels) EXPECT_EQ(name.find("_streaming"), std::string::npos) << name;
    for (const Fused* r : {&streamed, &ordinary}) {
        for (const std::string& name : r->kernels) expect_route(name, one_pass);
    }
    EXPECT_TRUE(same_bytes(streamed.relu_y, ordinary.relu_y));
    EXPECT_TRUE(same_bytes(streamed.relu_mask, ordinary.relu_mask));
    EXPECT_TRUE(same_bytes(streamed.y, ordinary.y));
    EXPECT_TRUE(same_bytes(streamed.mask, ordinary.mask));
    EXPECT_TRUE(same_bytes(streamed.dx, ordinary.dx));
    EXPECT_TRUE(same_bytes(streamed.daddend, ordinary.daddend));

    const auto relu = ref::forward(xv, sh, wv, bv, true, {}, {}, 1e-5, true);
    const auto fused = ref::forward(xv, sh, wv, bv, true, {}, {}, 1e-5, true, &av);
    const auto grads = ref::backward(xv, dyv, fused.y, sh, wv, fused, true, 1e-5, true);
    const double tol = dtype_tolerance(tc.dtype);
    EXPECT_LE(ref::rel_error(values(streamed.relu_y), relu.y), tol);
    EXPECT_LE(ref::rel_error(values(streamed.y), fused.y), tol);
    EXPECT_LE(ref::rel_error(values(streamed.dx), grads.dx), 10 * tol);
    EXPECT_LE(ref::rel_error(values(streamed.daddend), grads.daddend), tol);
}

// NCHW rows are H·W values, NHWC rows C values: 64 bytes are 16 floats or 32 bfloat16.
constexpr DType f32 = DType::Float32, bf16 = DType::BFloat16;
INSTANTIATE_TEST_SUITE_P(Shapes, StreamingStores,
                         ::testing::Combine(::testing::Values(StreamCase{{2, 3, 4, 4}, Layout::NCHW, f32, true},
                                                             StreamCase{{3, 5, 16, 20}, Layout::NCHW, f32, true},
                                                             StreamCase{{2, 4, 56, 56}, Layout::NCHW, f32, true},
                                                             StreamCase{{2, 3, 7, 7}, Layout::NCHW, f32, false},
                                                             StreamCase{{2, 6, 14, 14}, Layout::NCHW, f32, false},
                                                             StreamCase{{2, 16, 3, 5}, Layout::NHWC, f32, true},
                                                             StreamCase{{3, 48, 2, 3}, Layout::NHWC, f32, true},
                                                             StreamCase{{2, 64, 7, 7}, Layout::NHWC, f32, true},
                                                             StreamCase{{2, 40, 3, 3}, Layout::NHWC, f32, false},
                                                             StreamCase{{2, 7, 5, 5}, Layout::NHWC, f32, false},
                                                             // rows grouped per channel vector (cpu_schedules.h)
                                                             StreamCase{{2, 1600, 3, 5}, Layout::NHWC, f32, true},
                                                             StreamCase{{2, 1544, 2, 3}, Layout::NHWC, f32, false},
                                                             StreamCase{{2, 3, 8, 8}, Layout::NCHW, bf16, true},
                                                             StreamCase{{2, 4, 56, 56}, Layout::NCHW, bf16, true},
                                                             StreamCase{{2, 3, 4, 4}, Layout::NCHW, bf16, false},
                                                             StreamCase{{2, 5, 28, 28}, Layout::NCHW, bf16, false},
                                                             StreamCase{{2, 32, 3, 5}, Layout::NHWC, bf16, true},
                                                             StreamCase{{3, 96, 2, 3}, Layout::NHWC, bf16, true},
                                                             StreamCase{{2, 16, 3, 3}, Layout::NHWC, bf16, false},
                                                             StreamCase{{2, 40, 5, 5}, Layout::NHWC, bf16, false},
                                                             StreamCase{{2, 1600, 3, 5}, Layout::NHWC, bf16, true},
                                                             // one pass too (takes_one_pass), rows not on 64 bytes
                                                             StreamCase{{2, 6, 17, 17}, Layout::NCHW, f32, false}),
                                            ::testing::Values(Route::TwoPasses, Route::OnePass)),
                         case_name);

}  // namespace
