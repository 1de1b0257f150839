// bnforge against the bandwidth floor, in one process: each op is timed next
// to a copy of the bytes it must move (a memcpy of x into y reads |x| and
// writes |y|), once per kernel schedule the build has (manual, then each
// autoscheduler: bnforge::kernel_schedules()). Peers (PyTorch, oneDNN) and
// the full case list come with the CPU-speed work; this is the measurement
// skeleton they plug into.
#include <benchmark/benchmark.h>
#include <bnforge/bnforge.h>

#include <cstring>
#include <random>

using namespace bnforge;

namespace {

struct Case {
    Tensor x, dy, y;
};

Case make_case(const benchmark::State& state, Layout layout) {
    const std::vector<int64_t> shape{state.range(0), state.range(1), state.range(2), state.range(2)};
    Case c{Tensor::empty(shape, DType::Float32, Device::cpu(), layout),
           Tensor::empty(shape, DType::Float32, Device::cpu(), layout),
           Tensor::empty(shape, DType::Float32, Device::cpu(), layout)};
    std::mt19937 rng(1);
    std::normal_distribution<float> normal(0.5f, 2.0f);  // never time on zeros
    for (int64_t i = 0; i < c.x.numel(); i++) {
        c.x.data<float>()[i] = normal(rng);
        c.dy.data<float>()[i] = normal(rng);
    }
    std::memcpy(c.y.raw_data(), c.x.raw_data(), c.x.nbytes());
    return c;
}

void report(benchmark::State& state, const Tensor& x, double tensors_moved) {
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * tensors_moved * static_cast<double>(x.nbytes())));
}

void BM_copy_floor(benchmark::State& state) {
    Case c = make_case(state, Layout::NCHW);
    for (auto _ : state) {
        std::memcpy(c.y.raw_data(), c.x.raw_data(), c.x.nbytes());
        benchmark::ClobberMemory();
    }
    report(state, c.x, 2);
}

template <Layout L>
void BM_train_forward(benchmark::State& state) {
    Case c = make_case(state, L);
    BatchNorm2d bn(BatchNormOptions::pytorch(state.range(1)).layout(L));
    for (auto _ : state) benchmark::DoNotOptimize(bn.forward(c.x));
    report(state, c.x, 3);  // stats read x, apply reads x and writes y
}

template <Layout L>
void BM_eval_forward(benchmark::State& state) {
    Case c = make_case(state, L);
    BatchNorm2d bn(BatchNormOptions::pytorch(state.range(1)).layout(L));
    bn.eval();
    for (auto _ : state) benchmark::DoNotOptimize(bn.forward(c.x));
    report(state, c.x, 2);
}

template <Layout L>
void BM_backward(benchmark::State& state) {
    Case c = make_case(state, L);
    BatchNorm2d bn(BatchNormOptions::pytorch(state.range(1)).layout(L));
    bn.forward(c.x);
    for (auto _ : state) benchmark::DoNotOptimize(bn.backward(c.dy));
    report(state, c.x, 5);  // reduce reads x, dy; apply reads x, dy, writes dx
}

// N, C, H(=W): two ResNet-50 shapes.
void shapes(benchmark::internal::Benchmark* b) {
    b->Args({32, 64, 56})->Args({32, 256, 14})->Unit(benchmark::kMillisecond)->UseRealTime();
}

BENCHMARK(BM_copy_floor)->Apply(shapes);

// The ops, each registered once per kernel schedule (see main).
struct Op {
    const char* name;
    void (*run)(benchmark::State&);
};
const Op kOps[] = {
    {"BM_train_forward<NCHW>", BM_train_forward<Layout::NCHW>}, {"BM_train_forward<NHWC>", BM_train_forward<Layout::NHWC>},
    {"BM_eval_forward<NCHW>", BM_eval_forward<Layout::NCHW>},   {"BM_eval_forward<NHWC>", BM_eval_forward<Layout::NHWC>},
    {"BM_backward<NCHW>", BM_backward<Layout::NCHW>},           {"BM_backward<NHWC>", BM_backward<Layout::NHWC>},
};

// <op>/<schedule>/N/C/H: manual next to each autoscheduler, case by case.
void register_ops() {
    for (const Op& op : kOps) {
        for (const std::string& schedule : kernel_schedules()) {
            benchmark::RegisterBenchmark((std::string(op.name) + "/" + schedule).c_str(),
                                         [op, schedule](benchmark::State& state) {
                                             set_kernel_schedule(schedule);
                                             op.run(state);
                                         })
                ->Apply(shapes);
        }
    }
}

}  // namespace

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    // Run one kernel so dispatch has chosen, then say which CPU variant is timed.
    BatchNorm2d probe(BatchNormOptions::pytorch(2));
    Tensor x = Tensor::empty({2, 2, 2, 2}, DType::Float32);
    x.fill_(1.0);
    x.set_item({0, 0, 0, 0}, 2.0);
    probe.forward(x);
    if (const auto level = last_cpu_level()) benchmark::AddCustomContext("bnforge_cpu_variant", to_string(*level));
    register_ops();
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
