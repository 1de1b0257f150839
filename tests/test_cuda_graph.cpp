// Training steps captured into CUDA graphs and replayed (README, "CUDA
// graphs"): the replays of a captured forward+backward on new data (copied
// into the captured inputs) give the bits of the same module run eagerly, and
// the running statistics, the batch counter and the accumulated gradients
// advance per replay. A call that would break a capture is an Error that
// leaves the capture valid and the module untouched. Skipped without a GPU.
#include <gtest/gtest.h>

#include <bnforge/bnforge.h>

#include "cuda_driver.h"
#include "kernels.h"
#include "test_util.h"

#include <memory>
#include <random>
#include <string>
#include <vector>

namespace {

using namespace bnforge;
using testutil::values;

enum class Module { BatchNorm2d, Cumulative, FusedWithAddend };  // Cumulative: momentum=None

struct GraphCase {
    Module module;
    Layout layout;
    DType dtype;
};

std::string graph_case_name(const ::testing::TestParamInfo<GraphCase>& info) {
    const GraphCase& c = info.param;
    const char* module = c.module == Module::BatchNorm2d ? "bn2d" : c.module == Module::Cumulative ? "cumulative" : "fused_addend";
    return std::string(module) + "_" + to_string(c.layout) + "_" + to_string(c.dtype);
}

// One module and the outputs of its last step.
struct Stepper {
    std::unique_ptr<BatchNorm2d> plain;
    std::unique_ptr<FusedBatchNorm2d> fused;
    Tensor y, dx, daddend;

    Stepper(const GraphCase& c, int64_t channels, const Tensor& weight, const Tensor& bias) {
        BatchNormOptions options = c.module == Module::FusedWithAddend ? BatchNormOptions::oneflow(channels)
                                                                       : BatchNormOptions::pytorch(channels);
        options.dtype(c.dtype).layout(c.layout).device(Device::cuda(0));
        if (c.module == Module::Cumulative) options.momentum(std::nullopt);
        if (c.module == Module::FusedWithAddend) {
            fused = std::make_unique<FusedBatchNorm2d>(options);
        } else {
            plain = std::make_unique<BatchNorm2d>(options);
        }
        module().weight().copy_(weight);
        module().bias().copy_(bias);
    }
    BatchNormBase& module() { return plain ? static_cast<BatchNormBase&>(*plain) : *fused; }
    void step(const Tensor& x, const Tensor& addend, const Tensor& dy) {
        if (plain) {
            y = plain->forward(x);
            dx = plain->backward(dy);
        } else {
            y = fused->forward(x, &addend);
            FusedBatchNorm2d::Grads g = fused->backward(dy);
            dx = g.dx;
            daddend = g.daddend;
        }
    }
    void release_outputs() { y = dx = daddend = Tensor(); }
    // Everything a step changes, as float64 values.
    std::vector<std::vector<double>> results() {
        std::vector<std::vector<double>> r;
        for (const Tensor* t : {&y, &dx, &daddend, &module().running_mean(), &module().running_var(),
                                &module().weight_grad(), &module().bias_grad()})
            r.push_back(t->defined() ? values(*t) : std::vector<double>{});
        r.push_back({static_cast<double>(module().num_batches_tracked())});
        return r;
    }
};

// The thread's bnforge stream while alive; a non-blocking stream of the test's own.
class OnStream {
public:
    explicit OnStream(const testutil::CudaDriver& drv) : drv_(drv), stream_(drv.create_stream()) {
        previous_ = set_cuda_stream(stream_);
    }
    ~OnStream() {
        drv_.synchronize(stream_);
        set_cuda_stream(previous_);
        drv_.destroy(stream_);
    }
    void* stream() const { return stream_; }
    bool sync() const { return drv_.synchronize(stream_); }

private:
    const testutil::CudaDriver& drv_;
    void* stream_;
    void* previous_ = nullptr;
};

const testutil::CudaDriver* driver_with_context() {
    const testutil::CudaDriver* drv = testutil::CudaDriver::get();
    return drv && drv->make_primary_current(0) ? drv : nullptr;
}

class CudaGraph : public ::testing::TestWithParam<GraphCase> {};

TEST_P(CudaGraph, ReplaysOfATrainingStepMatchEagerSteps) {
    const GraphCase& p = GetParam();
    SKIP_WITHOUT(Device::cuda(0));
    const testutil::CudaDriver* drv = driver_with_context();
    ASSERT_NE(drv, nullptr);
    const testutil::NoPoisoning no_poisoning;  // a host copy, which no capture may contain
    const std::vector<int64_t> shape = {6, 24, 9, 11};
    const int64_t c = shape[1];
    std::mt19937 rng(41);
    auto host = [&](double scale) {
        return testutil::tensor_from(testutil::random_batch(rng, testutil::ref_shape(shape), scale), shape, p.dtype,
                                     p.layout);
    };
    const Tensor weight = testutil::tensor_from(testutil::random_batch(rng, {c, 1, 1}, 1.0), {c}).to(Device::cuda(0));
    const Tensor bias = testutil::tensor_from(testutil::random_batch(rng, {c, 1, 1}, 1.0), {c}).to(Device::cuda(0));
    constexpr int kWarmUp = 2, kSteps = 5;
    struct Data {
        Tensor x, addend, dy;
    };
    std::vector<Data> data, on_device;  // uploaded before any kernel runs on the test's stream
    for (int i = 0; i < kSteps; i++) {
        data.push_back({host(3.0), host(1.0), host(0.5)});
        on_device.push_back({data[i].x.to(Device::cuda(0)), data[i].addend.to(Device::cuda(0)),
                             data[i].dy.to(Device::cuda(0))});
    }

    OnStream on(*drv);
    Stepper eager(p, c, weight, bias), graphed(p, c, weight, bias);
    // The captured step reads its inputs from these, and writes its outputs where the capture put them.
    Tensor x = Tensor::empty(shape, p.dtype, Device::cuda(0), p.layout);
    Tensor addend = Tensor::empty(shape, p.dtype, Device::cuda(0), p.layout);
    Tensor dy = Tensor::empty(shape, p.dtype, Device::cuda(0), p.layout);
    auto load = [&](const Data& d) {
        ASSERT_TRUE(on.sync());  // the last replay has read the inputs
        x.copy_(d.x);
        addend.copy_(d.addend);
        dy.copy_(d.dy);
    };
    CudaGraphPool pool;
    void* graph = nullptr;
    void* exec = nullptr;
    {
        const CudaGraphPoolGuard guard(pool);
        // Two eager steps under the pool: the second frees the first's saved
        // statistics, whose blocks the captured forward then reuses.
        for (int i = 0; i < kWarmUp; i++) {
            load(data[i]);
            graphed.step(x, addend, dy);
        }
        ASSERT_TRUE(on.sync());
        graphed.release_outputs();
        const DeviceTraffic before = device_traffic();
        ASSERT_TRUE(drv->begin_capture(on.stream()));
        graphed.step(x, addend, dy);
        ASSERT_EQ(drv->end_capture(on.stream(), &graph), 0) << "the capture was broken";
        const DeviceTraffic after = device_traffic();
        EXPECT_EQ(after.host_to_device, before.host_to_device);
        EXPECT_EQ(after.device_to_host, before.device_to_host);
        exec = drv->instantiate(graph);
        ASSERT_NE(exec, nullptr);
    }
    EXPECT_GT(pool.bytes(), 0u);
    for (int i = 0; i < kSteps; i++) {
        eager.step(on_device[i].x, on_device[i].addend, on_device[i].dy);
        if (i < kWarmUp) continue;
        load(data[i]);
        ASSERT_TRUE(drv->launch(exec, on.stream()));
        ASSERT_TRUE(on.sync());
        const auto want = eager.results(), got = graphed.results();
        ASSERT_EQ(got.size(), want.size());
        for (size_t k = 0; k < want.size(); k++) {
            EXPECT_EQ(got[k], want[k]) << "step " << i << ", result " << k << " (y, dx, daddend, running mean, "
                                       << "running var, weight grad, bias grad, batches tracked)";
            for (double v : got[k]) ASSERT_TRUE(std::isfinite(v)) << "step " << i << ", result " << k;
        }
    }
    EXPECT_EQ(graphed.module().num_batches_tracked(), kSteps);
    drv->destroy_graph(graph, exec);
}

std::vector<GraphCase> graph_cases() {
    std::vector<GraphCase> cases;
    for (Module m : {Module::BatchNorm2d, Module::Cumulative, Module::FusedWithAddend})
        for (Layout layout : {Layout::NCHW, Layout::NHWC})
            for (DType dtype : {DType::Float32, DType::BFloat16}) cases.push_back({m, layout, dtype});
    return cases;
}

INSTANTIATE_TEST_SUITE_P(Steps, CudaGraph, ::testing::ValuesIn(graph_cases()), graph_case_name);

// Begins a capture on the thread's stream, runs `call`, which must throw an
// Error containing `needle`, and checks that the capture is still valid: the
// Error came before any driver call that would have broken it.
template <class F>
void expect_refused_in_capture(const testutil::CudaDriver& drv, void* stream, F call, const std::string& needle) {
    ASSERT_TRUE(drv.begin_capture(stream));
    EXPECT_ERROR_CONTAINS(call(), needle);
    void* graph = nullptr;
    EXPECT_EQ(drv.end_capture(stream, &graph), 0) << "the refused call broke the capture";
    drv.destroy_graph(graph, nullptr);
}

TEST(CudaGraphErrors, CallsThatWouldBreakACaptureAreErrorsThatChangeNothing) {
    SKIP_WITHOUT(Device::cuda(0));
    const testutil::CudaDriver* drv = driver_with_context();
    ASSERT_NE(drv, nullptr);
    const testutil::NoPoisoning no_poisoning;
    const std::vector<int64_t> shape = {4, 8, 5, 5};
    std::mt19937 rng(43);
    const Tensor x = testutil::tensor_from(testutil::random_batch(rng, testutil::ref_shape(shape), 2.0), shape)
                         .to(Device::cuda(0));
    OnStream on(*drv);
    BatchNorm2d bn(BatchNormOptions::pytorch(shape[1]).device(Device::cuda(0)));
    bn.forward(x);  // modules loaded
    ASSERT_TRUE(on.sync());
    const std::vector<double> mean = values(bn.running_mean()), var = values(bn.running_var());
    const int64_t batches = bn.num_batches_tracked();

    // Without a pool: its outputs would be cached blocks baked into the graph.
    expect_refused_in_capture(*drv, on.stream(), [&] { bn.forward(x); }, "needs a bnforge::CudaGraphPool");
    // Host<->device copies (Tensor::to, copy_, fill_) wait on the host.
    expect_refused_in_capture(*drv, on.stream(), [&] { (void)x.to(Device::cpu()); }, "cannot be captured");
    {
        // A pool with nothing free for this step: the driver would have to allocate.
        CudaGraphPool pool;
        const CudaGraphPoolGuard guard(pool);
        expect_refused_in_capture(*drv, on.stream(), [&] { bn.forward(x); }, "run the same step once under the pool");
    }
    {
        // The legacy default stream while another stream is being captured.
        CudaGraphPool pool;
        const CudaGraphPoolGuard guard(pool);
        ASSERT_TRUE(drv->begin_capture(on.stream()));
        void* const capturing = set_cuda_stream(nullptr);
        EXPECT_ERROR_CONTAINS(bn.forward(x), "legacy default stream");
        set_cuda_stream(capturing);
        void* graph = nullptr;
        EXPECT_EQ(drv->end_capture(on.stream(), &graph), 0);
        drv->destroy_graph(graph, nullptr);
    }
    ASSERT_TRUE(on.sync());
    EXPECT_EQ(values(bn.running_mean()), mean);
    EXPECT_EQ(values(bn.running_var()), var);
    EXPECT_EQ(bn.num_batches_tracked(), batches);
    {
        // A kernel whose module may not be loaded yet (forget_cuda_kernel_runs
        // makes bnforge assume so); the pool is warm from two eager forwards.
        CudaGraphPool pool;
        const CudaGraphPoolGuard guard(pool);
        bn.forward(x);
        bn.forward(x);
        ASSERT_TRUE(on.sync());
        detail::forget_cuda_kernel_runs();
        expect_refused_in_capture(*drv, on.stream(), [&] { bn.forward(x); }, "has not run on cuda:0 yet");
    }
    ASSERT_TRUE(on.sync());
    EXPECT_EQ(bn.num_batches_tracked(), batches + 2) << "only the eager forwards count";
}

}  // namespace
