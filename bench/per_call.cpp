// Per-call cost of a module on small shapes, where the fixed cost of a call
// (argument checks, per-channel steps, kernel dispatch, allocations) is a
// visible part of the time: BatchNorm2d and FusedBatchNorm2d (addend + ReLU),
// a training forward + backward, and an eval forward, in microseconds per
// call (the median of 7 blocks). Data stays in cache: this measures overhead,
// not bandwidth (bnforge_bench does that).
//
//   bnforge_per_call [--threads=N] [--layout=nchw|nhwc] [N C H W ...]
//   default: the pool's threads, nchw, 32 512 7 7  1 512 7 7  32 256 14 14
#include <bnforge/bnforge.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

namespace {

using namespace bnforge;

Tensor random_tensor(const std::vector<int64_t>& shape, Layout layout, std::mt19937& rng) {
    Tensor t = Tensor::empty(shape, DType::Float32, Device::cpu(), layout);
    std::normal_distribution<float> normal(0.5f, 1.0f);
    float* p = t.data<float>();
    for (int64_t i = 0; i < t.numel(); i++) p[i] = normal(rng);
    return t;
}

template <class F>
double microseconds_per_call(F&& call) {
    for (int i = 0; i < 50; i++) call();  // warm-up: kernels loaded, caches and allocator filled
    std::vector<double> blocks;
    for (int b = 0; b < 7; b++) {
        const int calls = 200;
        const auto start = std::chrono::steady_clock::now();
        for (int i = 0; i < calls; i++) call();
        const std::chrono::duration<double, std::micro> took = std::chrono::steady_clock::now() - start;
        blocks.push_back(took.count() / calls);
    }
    std::sort(blocks.begin(), blocks.end());
    return blocks[blocks.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<int64_t> dims;
    Layout layout = Layout::NCHW;
    for (int i = 1; i < argc; i++) {
        const std::string a = argv[i];
        if (a.rfind("--threads=", 0) == 0) {
            set_num_threads(std::atoi(a.c_str() + 10));
        } else if (a == "--layout=nhwc" || a == "--layout=nchw") {
            layout = a == "--layout=nhwc" ? Layout::NHWC : Layout::NCHW;
        } else if (!a.empty() && a[0] != '-') {
            dims.push_back(std::atoll(a.c_str()));
        } else {
            std::fprintf(stderr, "usage: %s [--threads=N] [--layout=nchw|nhwc] [N C H W ...]\n", argv[0]);
            return 2;
        }
    }
    if (dims.empty()) dims = {32, 512, 7, 7, 1, 512, 7, 7, 32, 256, 14, 14};
    std::mt19937 rng(1);
    std::printf("%d thread(s), %s\n", num_threads(), layout == Layout::NHWC ? "nhwc" : "nchw");
    std::printf("%-16s %14s %14s %14s\n", "shape", "train fwd+bwd", "fused fwd+bwd", "eval fwd");
    for (size_t i = 0; i + 3 < dims.size(); i += 4) {
        const std::vector<int64_t> shape(dims.begin() + static_cast<long>(i), dims.begin() + static_cast<long>(i) + 4);
        const Tensor x = random_tensor(shape, layout, rng), addend = random_tensor(shape, layout, rng),
                     dy = random_tensor(shape, layout, rng);
        BatchNorm2d bn(BatchNormOptions::pytorch(shape[1]).layout(layout));
        FusedBatchNorm2d fused(BatchNormOptions::oneflow(shape[1]).layout(layout));
        const double train = microseconds_per_call([&] {
            bn.forward(x);
            bn.backward(dy);
        });
        const double fused_train = microseconds_per_call([&] {
            fused.forward(x, &addend);
            fused.backward(dy);
        });
        bn.eval();
        const double eval = microseconds_per_call([&] { bn.forward(x); });
        char name[64];
        std::snprintf(name, sizeof name, "%lldx%lldx%lldx%lld", static_cast<long long>(shape[0]),
                      static_cast<long long>(shape[1]), static_cast<long long>(shape[2]),
                      static_cast<long long>(shape[3]));
        std::printf("%-16s %11.1f us %11.1f us %11.1f us\n", name, train, fused_train, eval);
    }
    return 0;
}
