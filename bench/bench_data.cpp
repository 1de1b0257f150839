// Case names, and the random inputs every implementation shares.
#include "bench_api.h"

#include <cmath>
#include <cstring>
#include <random>
#include <thread>

namespace bench {

const char* to_string(Op op) {
    switch (op) {
        case Op::train_forward: return "train_forward";
        case Op::eval_forward: return "eval_forward";
        case Op::backward: return "backward";
        case Op::fused_forward: return "fused_forward";
        case Op::fused_backward: return "fused_backward";
        case Op::relu_forward: return "relu_forward";
    }
    return "?";
}

std::string Shape::str() const {
    return std::to_string(n) + "x" + std::to_string(c) + "x" + std::to_string(h) + "x" + std::to_string(w);
}

std::string CaseSpec::str() const {
    return std::string(to_string(op)) + "/" + (layout == bnforge::Layout::NCHW ? "nchw" : "nhwc") + "/" +
           bnforge::to_string(dtype) + "/" + shape.str();
}

namespace {

// splitmix64: fast, and plenty random for benchmark data (hundreds of
// millions of values for the largest case; std::normal_distribution would
// take longer than the benchmark).
struct Rng {
    uint64_t state;
    uint64_t next() {
        uint64_t z = (state += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    double uniform() { return (next() >> 11) * 0x1.0p-53; }
    // Sum of four uniforms, centred and scaled to unit variance: near enough to
    // normal for data, and never zero-filled.
    float normal(float mean, float stddev) {
        const double s = uniform() + uniform() + uniform() + uniform() - 2.0;
        return static_cast<float>(mean + stddev * s * std::sqrt(3.0));
    }
};

// Fills a tensor with random values in parallel (each thread its own stream).
void fill_random(bnforge::Tensor& t, uint64_t seed, float mean, float stddev) {
    const int64_t n = t.numel();
    const unsigned threads = std::max(1u, std::thread::hardware_concurrency());
    std::vector<std::thread> pool;
    for (unsigned k = 0; k < threads; k++) {
        pool.emplace_back([&, k] {
            Rng rng{seed * 1000003 + k};
            const int64_t begin = n * k / threads, end = n * (k + 1) / threads;
            if (t.dtype() == bnforge::DType::Float32) {
                float* p = t.data<float>();
                for (int64_t i = begin; i < end; i++) p[i] = rng.normal(mean, stddev);
            } else if (t.dtype() == bnforge::DType::BFloat16) {
                auto* p = t.data<bnforge::BFloat16>();
                for (int64_t i = begin; i < end; i++) p[i] = bnforge::BFloat16(rng.normal(mean, stddev));
            } else {
                auto* p = t.data<bnforge::Half>();
                for (int64_t i = begin; i < end; i++) p[i] = bnforge::Half(rng.normal(mean, stddev));
            }
        });
    }
    for (auto& th : pool) th.join();
}

bnforge::Tensor random_channels(int64_t c, uint64_t seed, float mean, float stddev, bool positive) {
    bnforge::Tensor t = bnforge::Tensor::empty({c}, bnforge::DType::Float32);
    Rng rng{seed};
    for (int64_t i = 0; i < c; i++) {
        float v = rng.normal(mean, stddev);
        t.data<float>()[i] = positive ? std::fabs(v) + 0.1f : v;
    }
    return t;
}

}  // namespace

std::shared_ptr<CaseData> make_case_data(const Shape& shape, bnforge::Layout layout, bnforge::DType dtype, int slots) {
    auto d = std::make_shared<CaseData>();
    d->shape = shape;
    d->layout = layout;
    d->dtype = dtype;
    d->slots = slots;
    auto batch = [&](std::vector<bnforge::Tensor>& v, uint64_t seed, float mean, float stddev) {
        bnforge::Tensor first = bnforge::Tensor::empty(shape.dims(), dtype, bnforge::Device::cpu(), layout);
        fill_random(first, seed, mean, stddev);
        v.push_back(first);
        for (int s = 1; s < slots; s++) v.push_back(first.clone());  // same values, separate memory
    };
    batch(d->x, 1, 0.5f, 2.0f);
    batch(d->dy, 2, 0.0f, 1.0f);
    batch(d->addend, 3, 0.2f, 1.0f);
    d->weight = random_channels(shape.c, 4, 1.0f, 0.3f, false);
    d->bias = random_channels(shape.c, 5, 0.0f, 0.3f, false);
    d->running_mean = random_channels(shape.c, 6, 0.5f, 1.0f, false);
    d->running_var = random_channels(shape.c, 7, 4.0f, 1.0f, true);
    return d;
}

}  // namespace bench
