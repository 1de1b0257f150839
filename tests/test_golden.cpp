// Golden data made by real PyTorch 1.13 (tools/make_golden.py): every case is
// replayed through the bnforge modules in both layouts — y, dx, running
// statistics, num_batches_tracked and accumulated parameter grads per step,
// then an eval step. PyTorch/* runs on the CPU; OnDevice/* (in bnforge_tests,
// which defines BNFORGE_TEST_DEVICES) replays the same files on CUDA tensors
// (skipped without a GPU) and on OpenCL ones (PoCL, float32 files only).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <memory>

#include "test_util.h"

using namespace bnforge;
using namespace testutil;

namespace {

// The source tree's tests/golden, or $BNFORGE_GOLDEN_DIR where the binary
// runs without the tree it was built in (the GPU machine: bench/gpu/run.sh).
std::string golden_dir() {
    const char* env = std::getenv("BNFORGE_GOLDEN_DIR");
    return env && *env ? env : BNFORGE_GOLDEN_DIR;
}

std::vector<std::string> golden_cases() {
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(golden_dir())) {
        if (e.path().extension() == ".safetensors") names.push_back(e.path().stem().string());
    }
    std::sort(names.begin(), names.end());
    return names;
}

struct Module {
    std::unique_ptr<BatchNormBase> bn;
    std::string kind, fused;

    Tensor forward(const Tensor& x, const Tensor* addend) {
        if (fused != "none") return static_cast<FusedBatchNorm2d&>(*bn).forward(x, addend);
        if (kind == "BatchNorm1d") return static_cast<BatchNorm1d&>(*bn).forward(x);
        if (kind == "BatchNorm3d") return static_cast<BatchNorm3d&>(*bn).forward(x);
        return static_cast<BatchNorm2d&>(*bn).forward(x);
    }
    FusedBatchNorm2d::Grads backward(const Tensor& dy) {
        if (fused != "none") return static_cast<FusedBatchNorm2d&>(*bn).backward(dy);
        if (kind == "BatchNorm1d") return {static_cast<BatchNorm1d&>(*bn).backward(dy), {}};
        if (kind == "BatchNorm3d") return {static_cast<BatchNorm3d&>(*bn).backward(dy), {}};
        return {static_cast<BatchNorm2d&>(*bn).backward(dy), {}};
    }
};

using GoldenParam = std::tuple<std::string, Layout, Device>;
class Golden : public ::testing::TestWithParam<GoldenParam> {};

TEST_P(Golden, MatchesPyTorch) {
    const auto& [name, layout, device] = GetParam();
    const std::string path = golden_dir() + "/" + name + ".safetensors";
    const StateDict g = load_safetensors(path);
    auto meta = load_safetensors_metadata(path);
    const DType dtype = meta["dtype"] == "bfloat16" ? DType::BFloat16 : DType::Float32;
    SKIP_WITHOUT(device);
    if (device.kind == Device::Kind::OpenCL && dtype != DType::Float32) {
        GTEST_SKIP() << "the OpenCL kernels (PoCL checks) are float32 only";
    }
    const double act_tol = dtype == DType::Float32 ? 1e-5 : 1.6e-2;
    const double stat_tol = dtype == DType::Float32 ? 1e-5 : 1e-4;
    const int steps = std::stoi(meta["steps"]);
    const int64_t channels = g.at("x.0").shape()[1];

    BatchNormOptions o = BatchNormOptions::pytorch(channels)
                             .eps(std::stod(meta["eps"]))
                             .affine(meta["affine"] == "1")
                             .track_running_stats(meta["track_running_stats"] == "1")
                             .layout(layout)
                             .dtype(dtype)
                             .device(device);
    o.momentum(meta["momentum"] == "none" ? std::nullopt : std::optional<double>(std::stod(meta["momentum"])));
    Module m{nullptr, meta["module"], meta["fused"]};
    if (m.fused != "none") {
        m.bn = std::make_unique<FusedBatchNorm2d>(o);
    } else if (m.kind == "BatchNorm1d") {
        m.bn = std::make_unique<BatchNorm1d>(o);
    } else if (m.kind == "BatchNorm3d") {
        m.bn = std::make_unique<BatchNorm3d>(o);
    } else {
        m.bn = std::make_unique<BatchNorm2d>(o);
    }
    StateDict init;
    for (const char* key : {"weight", "bias", "running_mean", "running_var"}) {
        if (g.count(std::string(key) + ".init")) init[key] = g.at(std::string(key) + ".init");
    }
    m.bn->load_state_dict(init, /*strict=*/false);

    auto in_layout = [&](const std::string& key) { return g.at(key).contiguous(layout).to(device); };
    auto expect_close = [&](const Tensor& got, const std::string& key, double tol) {
        ASSERT_TRUE(got.defined()) << key;
        ASSERT_EQ(got.shape(), g.at(key).shape()) << key;
        ASSERT_EQ(got.device(), device) << key;
        EXPECT_LE(ref::rel_error(values(got), values(g.at(key))), tol) << key << " in " << name;
    };

    for (int k = 0; k <= steps; k++) {
        const bool eval = k == steps;
        const std::string sfx = eval ? ".eval" : "." + std::to_string(k);
        if (eval) m.bn->eval();
        const Tensor x = in_layout("x" + sfx);
        const Tensor addend = g.count("addend" + sfx) ? in_layout("addend" + sfx) : Tensor();
        expect_close(m.forward(x, addend.defined() ? &addend : nullptr), "y" + sfx, act_tol);
        const auto grads = m.backward(in_layout("dy" + sfx));
        expect_close(grads.dx, "dx" + sfx, act_tol);
        if (g.count("daddend" + sfx)) expect_close(grads.daddend, "daddend" + sfx, act_tol);
        if (g.count("weight_grad" + sfx)) {
            expect_close(m.bn->weight_grad(), "weight_grad" + sfx, stat_tol);
            expect_close(m.bn->bias_grad(), "bias_grad" + sfx, stat_tol);
        }
        if (!eval && g.count("running_mean" + sfx)) {
            expect_close(m.bn->running_mean(), "running_mean" + sfx, stat_tol);
            expect_close(m.bn->running_var(), "running_var" + sfx, stat_tol);
            EXPECT_EQ(m.bn->num_batches_tracked(), g.at("num_batches_tracked" + sfx).data<int64_t>()[0]);
        }
    }
}

std::string golden_name(const ::testing::TestParamInfo<GoldenParam>& info) {
    const auto& [name, layout, device] = info.param;
    const std::string base = name + "_" + to_string(layout);
    return device.is_cpu() ? base : base + "_" + device_name(device);
}

INSTANTIATE_TEST_SUITE_P(PyTorch, Golden,
                         ::testing::Combine(::testing::ValuesIn(golden_cases()),
                                            ::testing::Values(Layout::NCHW, Layout::NHWC),
                                            ::testing::Values(Device::cpu())),
                         golden_name);

#ifdef BNFORGE_TEST_DEVICES
INSTANTIATE_TEST_SUITE_P(OnDevice, Golden,
                         ::testing::Combine(::testing::ValuesIn(golden_cases()),
                                            ::testing::Values(Layout::NCHW, Layout::NHWC),
                                            ::testing::Values(Device::cuda(0), Device::opencl())),
                         golden_name);
#endif

TEST(GoldenFiles, AllCasesPresent) { EXPECT_GE(golden_cases().size(), 11u); }

}  // namespace
