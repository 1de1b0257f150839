// The one-pass training kernels (train_forward, train_backward) against the
// two-pass pipelines they replace when a channel's slab fits in cache: the
// same statistics, outputs and gradients, to the bit, for every dtype and
// fusion, with rows longer than one accumulation chunk. NCHW rows of 256 and
// more only: NHWC, shorter rows, and NCHW with one position per sample (which
// runs the NHWC kernels) must keep the two passes.
#include <gtest/gtest.h>

#include "one_pass_routes.h"

#include <bnforge/runtime.h>

#include <cstring>
#include <limits>
#include <optional>
#include <random>

using namespace bnforge;
using namespace testutil;
using functional::Activation;

namespace {

bool same_bytes(const Tensor& a, const Tensor& b) {
    return a.nbytes() == b.nbytes() && std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

class OnePass : public ::testing::TestWithParam<VariantCase> {
protected:
    // One thread, so even a few channels count as enough parallel work.
    void SetUp() override { previous_threads_ = set_num_threads(1); }
    void TearDown() override {
        set_num_threads(previous_threads_);
        set_one_pass_limit(std::nullopt);
    }
    int previous_threads_ = 0;
};

TEST_P(OnePass, MatchesTwoPass) {
    const VariantCase& tc = GetParam();
    std::mt19937 rng(99 + tc.shape[1]);
    const ref::Shape sh = ref_shape(tc.shape);
    const Tensor x = tensor_from(rounded(random_batch(rng, sh), tc.shape, tc.dtype), tc.shape, tc.dtype, tc.layout);
    const Tensor dy = tensor_from(rounded(random_batch(rng, sh, 0.3, 1.0), tc.shape, tc.dtype), tc.shape, tc.dtype, tc.layout);
    const Tensor addend = tensor_from(rounded(random_batch(rng, sh, 0.5, 1.0), tc.shape, tc.dtype), tc.shape, tc.dtype, tc.layout);
    const Tensor w = channel_tensor(random_vector(rng, sh.c, 1.0, 0.5));
    const Tensor b = channel_tensor(random_vector(rng, sh.c, 0.0, 0.5));

    auto run = [&](size_t limit) {
        set_one_pass_limit(limit);
        return run_training_route(x, dy, w, b, tc, addend);
    };
    const TrainingRoute two = run(0), one = run(std::numeric_limits<size_t>::max());
    expect_routes(two, one, tc.layout == Layout::NCHW && sh.s >= 256);

    ASSERT_TRUE(one.fwd.moments && two.fwd.moments);
    EXPECT_EQ(one.fwd.moments->count, two.fwd.moments->count);
    EXPECT_TRUE(same_bytes(one.fwd.moments->rows, two.fwd.moments->rows));
    EXPECT_TRUE(same_bytes(one.fwd.result.saved.invstd, two.fwd.result.saved.invstd));
    EXPECT_TRUE(same_bytes(one.fwd.result.y, two.fwd.result.y));
    if (tc.activation == Activation::Relu) {
        EXPECT_TRUE(same_bytes(one.fwd.result.saved.mask, two.fwd.result.saved.mask));
    }

    EXPECT_TRUE(same_bytes(one.bwd.dbias, two.bwd.dbias));
    EXPECT_TRUE(same_bytes(one.bwd.dweight, two.bwd.dweight));
    EXPECT_TRUE(same_bytes(one.bwd.input.dx, two.bwd.input.dx));
    if (tc.addend) {
        EXPECT_TRUE(same_bytes(one.bwd.input.daddend, two.bwd.input.daddend));
    }
}

std::vector<VariantCase> cases() {
    std::vector<VariantCase> out;
    const std::vector<std::vector<int64_t>> shapes = {
        {3, 5, 16, 16},   // the shortest rows that take one pass (256)
        {2, 6, 47, 50},   // rows longer than one accumulation chunk (2048), with a tail
        {4, 33, 1, 1},    // one position per sample: the NHWC kernels, two passes
        {2, 7, 300},      // rank 3
        {2, 9, 5, 7},     // rows too short for one pass
    };
    for (const auto& shape : shapes)
        for (DType dtype : {DType::Float32, DType::Float16, DType::BFloat16})
            for (Layout layout : {Layout::NCHW, Layout::NHWC})
                for (int fusion = 0; fusion < 3; fusion++)
                    out.push_back({shape, dtype, layout, fusion ? Activation::Relu : Activation::Identity, fusion == 2});
    return out;
}

INSTANTIATE_TEST_SUITE_P(Variants, OnePass, ::testing::ValuesIn(cases()), variant_name);

// Under the default slab limit, the route follows the inputs' size: one pass
// only when what it reads (x forward; x and dy backward) exceeds
// one_pass_min_bytes(), whose default keeps these small tensors in two passes.
TEST(OnePassRoute, InputsAboveTheMinimumOnly) {
    const int previous_threads = set_num_threads(1);
    const VariantCase tc{{2, 4, 16, 16}, DType::Float32, Layout::NCHW, Activation::Identity, false};
    std::mt19937 rng(7);
    const ref::Shape sh = ref_shape(tc.shape);
    const Tensor x = tensor_from(random_batch(rng, sh), tc.shape);
    const Tensor dy = tensor_from(random_batch(rng, sh, 0.3, 1.0), tc.shape);
    const Tensor w = channel_tensor(random_vector(rng, sh.c, 1.0, 0.5));
    const Tensor b = channel_tensor(random_vector(rng, sh.c, 0.0, 0.5));
    const size_t bytes = x.nbytes();  // 8 KiB: read once forward, twice (x and dy) backward
    struct Expected {
        std::optional<size_t> min_bytes;
        bool forward_one_pass, backward_one_pass;
    };
    for (const Expected& e : {Expected{std::nullopt, false, false}, Expected{bytes - 1, true, true},
                              Expected{bytes, false, true}, Expected{2 * bytes, false, false}}) {
        SCOPED_TRACE(e.min_bytes ? std::to_string(*e.min_bytes) + " bytes" : "default");
        set_one_pass_min_bytes(e.min_bytes);
        expect_route(run_training_route(x, dy, w, b, tc, Tensor()), e.forward_one_pass, e.backward_one_pass);
    }
    set_one_pass_min_bytes(std::nullopt);
    set_num_threads(previous_threads);
}

// Half-precision inputs take two passes under any limit but SIZE_MAX, where
// float32 of the same shape takes one.
TEST(OnePassRoute, HalfPrecisionOnlyWhenForced) {
    const int previous_threads = set_num_threads(1);
    set_one_pass_min_bytes(0);
    for (DType dtype : {DType::Float32, DType::Float16, DType::BFloat16}) {
        const VariantCase tc{{2, 4, 16, 16}, dtype, Layout::NCHW, Activation::Identity, false};
        std::mt19937 rng(11);
        const ref::Shape sh = ref_shape(tc.shape);
        const Tensor x = tensor_from(rounded(random_batch(rng, sh), tc.shape, dtype), tc.shape, dtype);
        const Tensor dy = tensor_from(rounded(random_batch(rng, sh, 0.3, 1.0), tc.shape, dtype), tc.shape, dtype);
        const Tensor w = channel_tensor(random_vector(rng, sh.c, 1.0, 0.5));
        const Tensor b = channel_tensor(random_vector(rng, sh.c, 0.0, 0.5));
        const std::optional<size_t> forced = std::numeric_limits<size_t>::max();
        for (const std::optional<size_t> limit : {std::optional<size_t>{}, forced}) {
            SCOPED_TRACE(std::string(to_string(dtype)) + (limit ? ", forced" : ", default limit"));
            set_one_pass_limit(limit);
            const bool one_pass = dtype == DType::Float32 || limit;
            expect_route(run_training_route(x, dy, w, b, tc, Tensor()), one_pass, one_pass);
        }
    }
    set_one_pass_limit(std::nullopt);
    set_one_pass_min_bytes(std::nullopt);
    set_num_threads(previous_threads);
}

}  // namespace
