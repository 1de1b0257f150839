// Module semantics, row by row of the table in DESIGN.md, against the float64
// reference and the update formulas written out here.
#include <gtest/gtest.h>

#include "test_util.h"

using namespace bnforge;
using namespace testutil;

namespace {

constexpr int64_t N = 4, C = 3, H = 5, W = 6;
const std::vector<int64_t> kShape{N, C, H, W};
const ref::Shape kRef{N, C, H * W};

struct Step {
    std::vector<double> x, dy;
};

std::vector<Step> steps(int count, unsigned seed = 99) {
    std::mt19937 rng(seed);
    std::vector<Step> s;
    for (int i = 0; i < count; i++) s.push_back({random_batch(rng, kRef), random_batch(rng, kRef, 0.2, 1.0)});
    return s;
}

std::vector<double> channel(Tensor& t) { return values(t); }

// Runs `count` training steps and checks running stats after each against
// r ← (1 − f)·r + f·b with f from `factor(step)`.
void check_running_updates(BatchNorm2d& bn, const std::function<double(int)>& factor) {
    std::vector<double> rm(C, 0.0), rv(C, 1.0);
    int k = 0;
    for (const Step& s : steps(4)) {
        bn.forward(tensor_from(s.x, kShape));
        const auto f = ref::forward(s.x, kRef, std::vector<double>(C, 1), std::vector<double>(C, 0), true, {}, {}, 1e-5);
        ref::blend(rm, f.batch_mean, factor(k));
        ref::blend(rv, f.batch_var_unbiased, factor(k));
        EXPECT_LE(ref::rel_error(channel(bn.running_mean()), rm), 1e-6) << "step " << k;
        EXPECT_LE(ref::rel_error(channel(bn.running_var()), rv), 1e-6) << "step " << k;
        k++;
    }
}

TEST(Semantics, PyTorchMomentumWeightsTheBatch) {
    BatchNorm2d bn(BatchNormOptions::pytorch(C));
    EXPECT_DOUBLE_EQ(*bn.options().momentum(), 0.1);
    check_running_updates(bn, [](int) { return 0.1; });
    EXPECT_EQ(bn.num_batches_tracked(), 4);
}

TEST(Semantics, PyTorchMomentumNoneIsCumulativeAverage) {
    BatchNorm2d bn(BatchNormOptions::pytorch(C).momentum(std::nullopt));
    check_running_updates(bn, [](int k) { return 1.0 / (k + 1); });
    EXPECT_EQ(bn.num_batches_tracked(), 4);
}

TEST(Semantics, MegEngineMomentumWeightsTheRunningValue) {
    BatchNorm2d bn(BatchNormOptions::megengine(C).momentum(0.7));
    check_running_updates(bn, [](int) { return 0.3; });
    EXPECT_EQ(bn.num_batches_tracked(), 0);  // MegEngine has no such buffer
    EXPECT_EQ(bn.weight().shape(), (std::vector<int64_t>{1, C, 1, 1}));
    const StateDict sd = bn.state_dict();
    EXPECT_EQ(sd.size(), 4u);
    EXPECT_EQ(sd.count("num_batches_tracked"), 0u);
    EXPECT_EQ(sd.at("running_var").shape(), (std::vector<int64_t>{1, C, 1, 1}));
}

TEST(Semantics, MegEngineDefaultMomentumIsPointNine) {
    BatchNorm2d bn(BatchNormOptions::megengine(C));
    EXPECT_DOUBLE_EQ(*bn.options().momentum(), 0.9);
    check_running_updates(bn, [](int) { return 0.1; });
}

TEST(Semantics, OneFlowFollowsPyTorchRuleWithoutCounter) {
    BatchNorm2d bn(BatchNormOptions::oneflow(C));
    check_running_updates(bn, [](int) { return 0.1; });
    EXPECT_EQ(bn.state_dict().count("num_batches_tracked"), 0u);
    EXPECT_EQ(bn.weight().shape(), (std::vector<int64_t>{C}));
}

TEST(Semantics, EvalUsesRunningStatisticsForwardAndBackward) {
    BatchNorm2d bn(BatchNormOptions::pytorch(C));
    std::mt19937 rng(5);
    const auto rm = random_vector(rng, C, 1.0, 0.5), rv = random_vector(rng, C, 2.0, 0.5);
    const auto w = random_vector(rng, C, 1.0, 0.3), b = random_vector(rng, C, 0.0, 0.3);
    bn.load_state_dict({{"running_mean", channel_tensor(rm)}, {"running_var", channel_tensor(rv)},
                        {"weight", channel_tensor(w)}, {"bias", channel_tensor(b)}},
                       false);
    bn.eval();
    const Step s = steps(1)[0];
    Tensor y = bn.forward(tensor_from(s.x, kShape));
    const auto f = ref::forward(s.x, kRef, w, b, false, rm, rv, 1e-5);
    EXPECT_LE(ref::rel_error(values(y), f.y), 1e-6);
    Tensor dx = bn.backward(tensor_from(s.dy, kShape));
    const auto g = ref::backward(s.x, s.dy, f.y, kRef, w, f, false, 1e-5, false);
    EXPECT_LE(ref::rel_error(values(dx), g.dx), 1e-6);  // dx = dy·γ·rsqrt(rv + eps)
    EXPECT_LE(ref::rel_error(values(bn.weight_grad()), g.dweight), 1e-5);
    EXPECT_EQ(bn.num_batches_tracked(), 0);
    EXPECT_LE(ref::rel_error(values(bn.running_mean()), rm), 1e-7);  // unchanged
}

TEST(Semantics, FreezeUsesRunningStatsUpdatesNothingAndHasNoParamGrads) {
    BatchNorm2d bn(BatchNormOptions::megengine(C).freeze(true));
    std::mt19937 rng(6);
    const auto rm = random_vector(rng, C, 1.0, 0.5), rv = random_vector(rng, C, 2.0, 0.5);
    bn.load_state_dict({{"running_mean", channel_tensor(rm)}, {"running_var", channel_tensor(rv)}}, false);
    ASSERT_TRUE(bn.is_training());
    const Step s = steps(1)[0];
    Tensor y = bn.forward(tensor_from(s.x, kShape));
    const std::vector<double> ones(C, 1.0), zeros(C, 0.0);
    const auto f = ref::forward(s.x, kRef, ones, zeros, false, rm, rv, 1e-5);
    EXPECT_LE(ref::rel_error(values(y), f.y), 1e-6);
    EXPECT_LE(ref::rel_error(values(bn.running_mean()), rm), 1e-7);
    EXPECT_LE(ref::rel_error(values(bn.running_var()), rv), 1e-7);
    Tensor dx = bn.backward(tensor_from(s.dy, kShape));
    const auto g = ref::backward(s.x, s.dy, f.y, kRef, ones, f, false, 1e-5, false);
    EXPECT_LE(ref::rel_error(values(dx), g.dx), 1e-6);
    EXPECT_EQ(values(bn.weight_grad()), zeros);
    EXPECT_EQ(values(bn.bias_grad()), zeros);
}

TEST(Semantics, NoTrackingUsesBatchStatisticsInTrainAndEval) {
    BatchNorm2d bn(BatchNormOptions::pytorch(C).track_running_stats(false));
    EXPECT_FALSE(bn.running_mean().defined());
    EXPECT_TRUE(bn.named_buffers().empty());
    bn.eval();
    const Step s = steps(1)[0];
    Tensor y = bn.forward(tensor_from(s.x, kShape));
    const auto f = ref::forward(s.x, kRef, std::vector<double>(C, 1), std::vector<double>(C, 0), true, {}, {}, 1e-5);
    EXPECT_LE(ref::rel_error(values(y), f.y), 1e-6);
    EXPECT_EQ(bn.state_dict().size(), 2u);  // weight, bias
}

TEST(Semantics, AffineFalseHasNoParametersOrGrads) {
    BatchNorm2d bn(BatchNormOptions::pytorch(C).affine(false));
    EXPECT_TRUE(bn.named_parameters().empty());
    EXPECT_FALSE(bn.weight().defined());
    const Step s = steps(1)[0];
    Tensor y = bn.forward(tensor_from(s.x, kShape));
    const auto f = ref::forward(s.x, kRef, std::vector<double>(C, 1), std::vector<double>(C, 0), true, {}, {}, 1e-5);
    EXPECT_LE(ref::rel_error(values(y), f.y), 1e-6);
    Tensor dx = bn.backward(tensor_from(s.dy, kShape));
    const auto g = ref::backward(s.x, s.dy, f.y, kRef, std::vector<double>(C, 1), f, true, 1e-5, false);
    EXPECT_LE(ref::rel_error(values(dx), g.dx), 1e-6);
    const StateDict sd = bn.state_dict();
    EXPECT_EQ(sd.count("weight"), 0u);
    EXPECT_EQ(sd.count("running_mean"), 1u);
}

TEST(Semantics, ComputeModeFloat32MatchesDefaultForHalfInput) {
    const Step s = steps(1)[0];
    const Tensor x = tensor_from(s.x, kShape, DType::Float16);
    BatchNorm2d a(BatchNormOptions::megengine(C).dtype(DType::Float16));
    BatchNorm2d b(BatchNormOptions::megengine(C).dtype(DType::Float16).compute_mode(ComputeMode::Float32));
    EXPECT_EQ(values(a.forward(x)), values(b.forward(x)));
    const auto f = ref::forward(values(x), kRef, std::vector<double>(C, 1), std::vector<double>(C, 0), true, {}, {}, 1e-5);
    EXPECT_LE(ref::rel_error(values(b.forward(x)), f.y), 2e-3);
}

TEST(Semantics, EmptyBatchGivesEmptyOutputAndLeavesRunningStats) {
    BatchNorm2d bn(BatchNormOptions::pytorch(C));
    Tensor x = Tensor::empty({0, C, H, W}, DType::Float32);
    Tensor y = bn.forward(x);
    EXPECT_EQ(y.shape(), (std::vector<int64_t>{0, C, H, W}));
    EXPECT_EQ(values(bn.running_mean()), std::vector<double>(C, 0.0));
    EXPECT_EQ(values(bn.running_var()), std::vector<double>(C, 1.0));
    // PyTorch 1.13 still counts the (empty) batch; so do we.
    EXPECT_EQ(bn.num_batches_tracked(), 1);
    Tensor dx = bn.backward(Tensor::empty({0, C, H, W}, DType::Float32));
    EXPECT_EQ(dx.numel(), 0);
}

TEST(Semantics, OneValuePerChannelIsAnErrorOnlyWhenTraining) {
    BatchNorm2d bn(BatchNormOptions::pytorch(C));
    const Tensor x = tensor_from({1.0, 2.0, 3.0}, {1, C, 1, 1});
    try {
        bn.forward(x);
        FAIL() << "expected an error";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("Expected more than 1 value per channel when training"), std::string::npos);
        EXPECT_NE(std::string(e.what()).find("(1, 3, 1, 1)"), std::string::npos) << e.what();
    }
    EXPECT_EQ(bn.num_batches_tracked(), 0);
    bn.eval();
    EXPECT_NO_THROW(bn.forward(x));
}

TEST(Semantics, GradientsAccumulateUntilZeroGrad) {
    BatchNorm2d bn(BatchNormOptions::pytorch(C));
    std::vector<double> total_w(C, 0), total_b(C, 0);
    for (const Step& s : steps(3)) {
        bn.forward(tensor_from(s.x, kShape));
        bn.backward(tensor_from(s.dy, kShape));
        const auto f = ref::forward(s.x, kRef, std::vector<double>(C, 1), std::vector<double>(C, 0), true, {}, {}, 1e-5);
        const auto g = ref::backward(s.x, s.dy, f.y, kRef, std::vector<double>(C, 1), f, true, 1e-5, false);
        for (int64_t c = 0; c < C; c++) {
            total_w[c] += g.dweight[c];
            total_b[c] += g.dbias[c];
        }
        EXPECT_LE(ref::rel_error(values(bn.weight_grad()), total_w), 1e-5);
        EXPECT_LE(ref::rel_error(values(bn.bias_grad()), total_b), 1e-5);
    }
    bn.zero_grad();
    EXPECT_EQ(values(bn.weight_grad()), std::vector<double>(C, 0.0));
    EXPECT_EQ(values(bn.bias_grad()), std::vector<double>(C, 0.0));
}

TEST(Semantics, ResetParametersAndRunningStats) {
    BatchNorm2d bn(BatchNormOptions::pytorch(C));
    for (const Step& s : steps(2)) bn.forward(tensor_from(s.x, kShape));
    bn.weight().fill_(3.0);
    bn.reset_running_stats();
    EXPECT_EQ(values(bn.running_mean()), std::vector<double>(C, 0.0));
    EXPECT_EQ(values(bn.running_var()), std::vector<double>(C, 1.0));
    EXPECT_EQ(bn.num_batches_tracked(), 0);
    EXPECT_EQ(values(bn.weight()), std::vector<double>(C, 3.0));
    bn.reset_parameters();
    EXPECT_EQ(values(bn.weight()), std::vector<double>(C, 1.0));
    EXPECT_EQ(values(bn.bias()), std::vector<double>(C, 0.0));
}

TEST(Semantics, NamedParametersAndBuffersShareStorage) {
    BatchNorm2d bn(BatchNormOptions::pytorch(C));
    const auto params = bn.named_parameters();
    ASSERT_EQ(params.size(), 2u);
    EXPECT_EQ(params[0].first, "weight");
    EXPECT_EQ(params[1].first, "bias");
    Tensor w = params[0].second;
    w.fill_(2.5);
    EXPECT_EQ(values(bn.weight()), std::vector<double>(C, 2.5));
    const auto buffers = bn.named_buffers();
    ASSERT_EQ(buffers.size(), 3u);
    EXPECT_EQ(buffers[0].first, "running_mean");
    EXPECT_EQ(buffers[1].first, "running_var");
    EXPECT_EQ(buffers[2].first, "num_batches_tracked");
    EXPECT_TRUE(buffers[0].second.same_storage(bn.running_mean()));
}

TEST(Semantics, ForwardHooksSeeInputAndOutputAndCanBeRemoved) {
    BatchNorm2d bn(BatchNormOptions::pytorch(C));
    int pre_calls = 0, post_calls = 0;
    HookHandle pre = bn.register_forward_pre_hook([&](BatchNormBase& m, const Tensor& in) {
        EXPECT_EQ(&m, &bn);
        EXPECT_EQ(in.shape(), kShape);
        EXPECT_EQ(m.num_batches_tracked(), pre_calls);  // runs before the update
        pre_calls++;
    });
    HookHandle post = bn.register_forward_hook([&](BatchNormBase&, const Tensor& in, const Tensor& out) {
        EXPECT_EQ(in.shape(), out.shape());
        post_calls++;
    });
    const Tensor x = tensor_from(steps(1)[0].x, kShape);
    bn.forward(x);
    bn.forward(x);
    pre.remove();
    bn.forward(x);
    post.remove();
    post.remove();  // idempotent
    bn.forward(x);
    EXPECT_EQ(pre_calls, 2);
    EXPECT_EQ(post_calls, 3);
}

TEST(StateDict, LoadsEitherParameterShapeUnderAnyConvention) {
    BatchNorm2d pt(BatchNormOptions::pytorch(C));
    BatchNorm2d mge(BatchNormOptions::megengine(C));
    for (const Step& s : steps(2)) {
        pt.forward(tensor_from(s.x, kShape));
        mge.forward(tensor_from(s.x, kShape));
    }
    pt.weight().fill_(1.5);
    BatchNorm2d mge2(BatchNormOptions::megengine(C));
    StateDict from_pt = pt.state_dict();
    from_pt.erase("num_batches_tracked");
    mge2.load_state_dict(from_pt);  // (C) into (1,C,1,1)
    EXPECT_EQ(values(mge2.running_mean()), values(pt.running_mean()));
    EXPECT_EQ(values(mge2.weight()), std::vector<double>(C, 1.5));

    BatchNorm2d pt2(BatchNormOptions::pytorch(C));
    StateDict from_mge = mge.state_dict();
    from_mge["num_batches_tracked"] = Tensor::empty({}, DType::Int64);
    from_mge["num_batches_tracked"].fill_(7);
    pt2.load_state_dict(from_mge);  // (1,C,1,1) into (C)
    EXPECT_EQ(values(pt2.running_var()), values(mge.running_var()));
    EXPECT_EQ(pt2.num_batches_tracked(), 7);
    EXPECT_EQ(pt2.running_var().shape(), (std::vector<int64_t>{C}));
}

TEST(StateDict, StrictReportsMissingAndUnexpectedKeysByName) {
    BatchNorm2d bn(BatchNormOptions::pytorch(C));
    StateDict sd = bn.state_dict();
    sd.erase("running_mean");
    sd["running_men"] = channel_tensor({1, 2, 3});
    try {
        bn.load_state_dict(sd);
        FAIL();
    } catch (const Error& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find("Missing key(s) in state_dict: \"running_mean\""), std::string::npos) << msg;
        EXPECT_NE(msg.find("Unexpected key(s) in state_dict: \"running_men\""), std::string::npos) << msg;
    }
    EXPECT_NO_THROW(bn.load_state_dict(sd, /*strict=*/false));
}

TEST(StateDict, SafetensorsRoundTripRestoresTheModule) {
    BatchNorm2d a(BatchNormOptions::pytorch(C));
    for (const Step& s : steps(3)) a.forward(tensor_from(s.x, kShape));
    const std::string path = ::testing::TempDir() + "/bn_state.safetensors";
    save_safetensors(path, a.state_dict());
    BatchNorm2d b(BatchNormOptions::pytorch(C));
    b.load_state_dict(load_safetensors(path));
    EXPECT_EQ(values(b.running_mean()), values(a.running_mean()));
    EXPECT_EQ(values(b.running_var()), values(a.running_var()));
    EXPECT_EQ(b.num_batches_tracked(), 3);
}

TEST(Fused, ReluOfBatchNormPlusAddendForwardAndBackward) {
    FusedBatchNorm2d bn(BatchNormOptions::oneflow(C));
    std::mt19937 rng(3);
    const auto addend = random_batch(rng, kRef, 0.5, 1.0);
    for (bool with_addend : {true, false}) {
        const Step s = steps(1, with_addend ? 1 : 2)[0];
        const Tensor at = tensor_from(addend, kShape);
        Tensor y = bn.forward(tensor_from(s.x, kShape), with_addend ? &at : nullptr);
        const std::vector<double> ones(C, 1), zeros(C, 0);
        const auto f = ref::forward(s.x, kRef, ones, zeros, true, {}, {}, 1e-5, true, with_addend ? &addend : nullptr);
        EXPECT_LE(ref::rel_error(values(y), f.y), 1e-6);
        const auto grads = bn.backward(tensor_from(s.dy, kShape));
        const auto g = ref::backward(s.x, s.dy, f.y, kRef, ones, f, true, 1e-5, true);
        EXPECT_LE(ref::rel_error(values(grads.dx), g.dx), 1e-5);
        EXPECT_EQ(grads.daddend.defined(), with_addend);
        if (with_addend) {
            EXPECT_LE(ref::rel_error(values(grads.daddend), g.daddend), 1e-7);
        }
    }
}

TEST(Ranks, EachModuleTakesItsRanks) {
    std::mt19937 rng(4);
    BatchNorm1d bn1(BatchNormOptions::pytorch(C));
    for (const std::vector<int64_t>& shape : {std::vector<int64_t>{5, C}, std::vector<int64_t>{2, C, 7}}) {
        const auto x = random_batch(rng, ref_shape(shape));
        const auto f = ref::forward(x, ref_shape(shape), std::vector<double>(C, 1), std::vector<double>(C, 0), true, {}, {}, 1e-5);
        EXPECT_LE(ref::rel_error(values(bn1.forward(tensor_from(x, shape))), f.y), 1e-6);
    }
    BatchNorm3d bn3(BatchNormOptions::pytorch(C).layout(Layout::NHWC));
    const std::vector<int64_t> shape{2, C, 3, 2, 5};
    const auto x = random_batch(rng, ref_shape(shape));
    const auto f = ref::forward(x, ref_shape(shape), std::vector<double>(C, 1), std::vector<double>(C, 0), true, {}, {}, 1e-5);
    EXPECT_LE(ref::rel_error(values(bn3.forward(tensor_from(x, shape, DType::Float32, Layout::NHWC))), f.y), 1e-6);
}

TEST(Layouts, NhwcAndNchwModulesAgree) {
    BatchNorm2d a(BatchNormOptions::pytorch(C));
    BatchNorm2d b(BatchNormOptions::pytorch(C).layout(Layout::NHWC));
    for (const Step& s : steps(2)) {
        const auto ya = values(a.forward(tensor_from(s.x, kShape)));
        const Tensor yb = b.forward(tensor_from(s.x, kShape, DType::Float32, Layout::NHWC));
        EXPECT_EQ(yb.layout(), Layout::NHWC);
        EXPECT_LE(ref::rel_error(values(yb), ya), 1e-6);
    }
    EXPECT_LE(ref::rel_error(values(b.running_var()), values(a.running_var())), 1e-6);
}

}  // namespace
