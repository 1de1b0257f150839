// bnforge demo: trains the two BN layers of a small residual block
//   h = ReLU(BN1(x)) · W (1x1 conv),  y = ReLU(BN2(h) + x)
// for a few SGD steps on random data under each framework's convention, and
// shows the statistics, the kernels used, parity with a float64 reference and
// the speed of one larger forward/backward.
#include <bnforge/bnforge.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>

#include "reference.h"

using namespace bnforge;

namespace {

constexpr int64_t N = 8, C = 16, H = 12, W = 12, S = H * W;

std::vector<double> to_vec(const Tensor& t) {
    Tensor f = Tensor::empty(t.shape(), DType::Float32);
    f.copy_(t);
    return {f.data<float>(), f.data<float>() + f.numel()};
}

Tensor from_vec(const std::vector<double>& v) {
    Tensor t = Tensor::empty({N, C, H, W}, DType::Float32);
    for (size_t i = 0; i < v.size(); i++) t.data<float>()[i] = static_cast<float>(v[i]);
    return t;
}

// out[n, co, s] = Σ_ci in[n, ci, s]·w[ci][co]  (transpose: w[co][ci])
std::vector<double> conv1x1(const std::vector<double>& in, const std::vector<double>& w, bool transpose) {
    std::vector<double> out(in.size(), 0.0);
    for (int64_t n = 0; n < N; n++)
        for (int64_t ci = 0; ci < C; ci++)
            for (int64_t co = 0; co < C; co++) {
                const double k = transpose ? w[co * C + ci] : w[ci * C + co];
                for (int64_t s = 0; s < S; s++) out[(n * C + co) * S + s] += in[(n * C + ci) * S + s] * k;
            }
    return out;
}

std::vector<double> channels(Tensor& t) {
    std::vector<double> v(C);
    for (int64_t c = 0; c < C; c++) v[c] = t.data<float>()[c];
    return v;
}

void sgd(BatchNormBase& bn, double lr) {
    for (int64_t c = 0; c < C; c++) {
        bn.weight().data<float>()[c] -= static_cast<float>(lr * bn.weight_grad().data<float>()[c]);
        bn.bias().data<float>()[c] -= static_cast<float>(lr * bn.bias_grad().data<float>()[c]);
    }
    bn.zero_grad();
}

// Batch mean of channel c of an (N, C, S) batch.
double channel_mean(const std::vector<double>& v, int64_t c) {
    double s = 0;
    for (int64_t n = 0; n < N; n++)
        for (int64_t i = 0; i < S; i++) s += v[(n * C + c) * S + i];
    return s / static_cast<double>(N * S);
}

void train(const BatchNormOptions& options, const char* title) {
    std::printf("\n== %s: momentum %s, running stats update %s\n", title,
                options.momentum() ? std::to_string(*options.momentum()).substr(0, 4).c_str() : "None",
                options.convention() == Convention::MegEngine ? "r = m*r + (1-m)*batch" : "r = (1-m)*r + m*batch");
    BatchNorm2d bn1(options);
    FusedBatchNorm2d bn2(options);
    std::mt19937 rng(2024);
    std::normal_distribution<double> normal(0.0, 1.0);
    std::vector<double> w(C * C), target(N * C * S);
    for (auto& e : w) e = normal(rng) / std::sqrt(static_cast<double>(C));
    for (auto& e : target) e = std::fabs(normal(rng));

    std::printf("step   loss      BN1 batch mean[0]  BN1 running_mean[0]  BN1 running_var[0]  BN2 |dgamma|\n");
    for (int step = 0; step < 5; step++) {
        std::vector<double> xv(N * C * S);
        for (int64_t i = 0; i < N * C * S; i++) xv[i] = 1.5 + 2.0 * normal(rng);
        const Tensor x = from_vec(xv);

        // forward
        const std::vector<double> h1 = to_vec(bn1.forward(x));
        std::vector<double> r1(h1.size());
        for (size_t i = 0; i < h1.size(); i++) r1[i] = h1[i] > 0 ? h1[i] : 0;
        const Tensor h2 = from_vec(conv1x1(r1, w, false));
        const Tensor yt = bn2.forward(h2, &x);
        const std::vector<double> y = to_vec(yt);

        // loss = ½·mean((y − target)²)
        std::vector<double> dy(y.size());
        double loss = 0;
        for (size_t i = 0; i < y.size(); i++) {
            loss += 0.5 * (y[i] - target[i]) * (y[i] - target[i]);
            dy[i] = (y[i] - target[i]) / static_cast<double>(y.size());
        }
        loss /= static_cast<double>(y.size());

        // backward through BN2, the 1x1 conv, ReLU and BN1
        const FusedBatchNorm2d::Grads g2 = bn2.backward(from_vec(dy));
        std::vector<double> dr1 = conv1x1(to_vec(g2.dx), w, true);
        for (size_t i = 0; i < dr1.size(); i++) dr1[i] = h1[i] > 0 ? dr1[i] : 0;
        const Tensor dx1 = bn1.backward(from_vec(dr1));

        // float64 reference for BN1 on this step
        if (step == 0) {
            std::vector<double> w1 = channels(bn1.weight()), b1 = channels(bn1.bias());
            const ref::Shape sh{N, C, S};
            const auto rf = ref::forward(xv, sh, w1, b1, true, {}, {}, options.eps());
            const auto rb = ref::backward(xv, dr1, rf.y, sh, w1, rf, true, options.eps(), false);
            std::printf("       parity vs float64 reference (BN1): y %.1e, dx %.1e, dgamma %.1e (relative L2)\n",
                        ref::rel_error(h1, rf.y), ref::rel_error(to_vec(dx1), rb.dx),
                        ref::rel_error(channels(bn1.weight_grad()), rb.dweight));
        }
        double dgamma = 0;
        for (double e : channels(bn2.weight_grad())) dgamma += e * e;
        std::printf("%4d  %.5f   %+.4f            %+.4f              %.4f              %.2e\n", step, loss,
                    channel_mean(xv, 0), bn1.running_mean().data<float>()[0],
                    bn1.running_var().data<float>()[0], std::sqrt(dgamma));
        sgd(bn1, 0.5);
        sgd(bn2, 0.5);
    }
    const StateDict sd = bn1.state_dict();
    std::printf("state_dict:");
    for (const auto& [name, t] : sd) {
        std::printf(" %s", name.c_str());
        std::string shape = "(";
        for (size_t i = 0; i < t.shape().size(); i++) shape += (i ? "," : "") + std::to_string(t.shape()[i]);
        std::printf("%s)", shape.c_str());
    }
    std::printf("\n");
}

void timing() {
    const int64_t n = 32, c = 64, s = 56 * 56;
    Tensor x = Tensor::empty({n, c, 56, 56}, DType::Float32), dy = Tensor::empty({n, c, 56, 56}, DType::Float32);
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(1.0f, 2.0f);
    for (int64_t i = 0; i < x.numel(); i++) {
        x.data<float>()[i] = normal(rng);
        dy.data<float>()[i] = normal(rng);
    }
    BatchNorm2d bn(BatchNormOptions::pytorch(c));
    // Warm-up lets the allocator settle: the first few 26 MB outputs are fresh pages.
    auto time_ms = [](auto&& fn) {
        for (int i = 0; i < 3; i++) fn();
        double best = 1e30;
        for (int i = 0; i < 10; i++) {
            auto t0 = std::chrono::steady_clock::now();
            fn();
            best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
        }
        return best;
    };
    const double fwd = time_ms([&] { bn.forward(x); });
    const double bwd = time_ms([&] { bn.backward(dy); });
    bn.eval();
    const double ev = time_ms([&] { bn.forward(x); });
    const double mb = static_cast<double>(x.nbytes()) / 1e6;
    std::printf("\ntiming (32x64x56x56 float32 NCHW, %.0f MB, best of 10): train forward %.2f ms (%.1f GB/s of x+y), "
                "backward %.2f ms, eval forward %.2f ms (%.1f GB/s). Full comparison: bench/.\n",
                mb, fwd, 2 * mb / fwd, bwd, ev, 2 * mb / ev);
    (void)s;
}

int write_state(const char* path) {
    BatchNorm2d bn(BatchNormOptions::pytorch(3));
    Tensor x = Tensor::empty({4, 3, 2, 2}, DType::Float32);
    for (int64_t i = 0; i < x.numel(); i++) x.data<float>()[i] = static_cast<float>(i % 7) * 0.5f;
    bn.forward(x);
    save_safetensors(path, bn.state_dict(), {{"format", "pt"}});
    std::printf("wrote %s\n", path);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        if (argc == 3 && std::strcmp(argv[1], "--write-state") == 0) return write_state(argv[2]);
        std::printf("bnforge demo: batch norm compiled ahead of time by Halide\n");
        size_t manual = 0, autoscheduled = 0, streaming = 0, gpu = 0;
        for (const auto& k : kernel_variants()) {
            if (!k.device.is_cpu()) {
                gpu++;
                continue;
            }
            if (k.variant == "streaming_stores") {
                streaming++;
                continue;
            }
            (k.schedule == "manual" ? manual : autoscheduled)++;
            if (k.pipeline == "apply" && k.dtype == DType::Float32 && k.layout == Layout::NCHW && k.fusion == "none" &&
                k.schedule == "manual" && k.variant.empty()) {
                std::printf("kernel variant for float32 NCHW apply: %s\n  Halide target (base): %s\n", k.name.c_str(),
                            k.target.c_str());
            }
        }
        std::printf("%zu CPU kernel variants built (pipelines x dtypes x layouts x fusions), each a fat library for:\n",
                    manual);
        for (const auto& t : cpu_targets()) std::printf("  %s\n", t.c_str());
        if (streaming) {
            std::printf("and %zu of them again with streaming stores, for outputs of %zu bytes and more "
                        "(bnforge::set_streaming_store_limit)\n", streaming, streaming_store_limit());
        }
        if (autoscheduled) {
            std::printf("and %zu float32 variants by Halide's autoschedulers (bnforge::set_kernel_schedule):", autoscheduled);
            for (const auto& s : kernel_schedules(Device::cpu()))
                if (s != "manual") std::printf(" %s", s.c_str());
            std::printf("\n");
        }
        if (gpu) {
            std::printf("and %zu GPU variants (CUDA, and OpenCL for the PoCL checks), schedules:", gpu);
            for (const auto& s : kernel_schedules(Device::cuda())) std::printf(" %s", s.c_str());
            std::printf("\n");
        }
        train(BatchNormOptions::pytorch(C), "PyTorch BatchNorm2d");
        if (const auto level = last_cpu_level()) {
            std::printf("\nHalide's runtime dispatch chose the %s variants on this CPU%s\n", to_string(*level),
                        max_cpu_level() ? " (capped by BNFORGE_MAX_CPU_LEVEL)" : "");
        }
        train(BatchNormOptions::pytorch(C).momentum(std::nullopt), "PyTorch BatchNorm2d, momentum=None (cumulative)");
        train(BatchNormOptions::megengine(C), "MegEngine BatchNorm2d (its 0.9 under the opposite rule = PyTorch's 0.1)");
        train(BatchNormOptions::oneflow(C), "OneFlow conventions");
        timing();
        return 0;
    } catch (const Error& e) {
        std::fprintf(stderr, "bnforge error: %s\n", e.what());
        return 1;
    }
}
