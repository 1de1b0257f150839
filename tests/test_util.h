// Helpers shared by the tests: random tensors, poisoning, conversions.
#pragma once
#include <bnforge/bnforge.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "reference.h"

// Expects `statement` to throw bnforge::Error whose message contains `needle`.
#define EXPECT_ERROR_CONTAINS(statement, needle)                                          \
    do {                                                                                  \
        try {                                                                             \
            statement;                                                                    \
            ADD_FAILURE() << "expected bnforge::Error containing \"" << (needle) << "\""; \
        } catch (const ::bnforge::Error& e) {                                             \
            EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)              \
                << "message: " << e.what() << "\nexpected to contain: " << (needle);      \
        }                                                                                 \
    } while (0)

namespace testutil {

using namespace bnforge;

// Logical row-major float64 values of any tensor.
inline std::vector<double> values(const Tensor& t) {
    Tensor f = Tensor::empty(t.shape(), DType::Float32);
    f.copy_(t);
    const float* p = f.data<float>();
    return std::vector<double>(p, p + f.numel());
}

// A tensor holding `v` (logical row-major) in the given dtype and layout.
inline Tensor tensor_from(const std::vector<double>& v, const std::vector<int64_t>& shape, DType dtype = DType::Float32,
                          Layout layout = Layout::NCHW) {
    Tensor f = Tensor::empty(shape, DType::Float32);
    float* p = f.data<float>();
    for (size_t i = 0; i < v.size(); i++) p[i] = static_cast<float>(v[i]);
    Tensor t = Tensor::empty(shape, dtype, Device::cpu(), layout);
    t.copy_(f);
    return t;
}

// Values rounded through `dtype`, so the reference sees exactly what the kernels see.
inline std::vector<double> rounded(const std::vector<double>& v, const std::vector<int64_t>& shape, DType dtype) {
    return values(tensor_from(v, shape, dtype));
}

// Per-channel offsets and scales differ, so channel mix-ups show.
inline std::vector<double> random_batch(std::mt19937& rng, ref::Shape sh, double mean_scale = 2.0,
                                        double std_base = 0.5) {
    std::normal_distribution<double> normal(0.0, 1.0);
    std::uniform_real_distribution<double> uni(0.5, 1.5);
    std::vector<double> offsets(sh.c), scales(sh.c);
    for (int64_t c = 0; c < sh.c; c++) {
        offsets[c] = mean_scale * normal(rng);
        scales[c] = std_base * uni(rng) * (1 + c % 3);
    }
    std::vector<double> x(sh.size());
    for (int64_t n = 0; n < sh.n; n++)
        for (int64_t c = 0; c < sh.c; c++)
            for (int64_t s = 0; s < sh.s; s++) x[sh.at(n, c, s)] = offsets[c] + scales[c] * normal(rng);
    return x;
}

inline std::vector<double> random_vector(std::mt19937& rng, int64_t size, double center, double spread) {
    std::uniform_real_distribution<double> uni(-spread, spread);
    std::vector<double> v(size);
    for (auto& e : v) e = center + uni(rng);
    return v;
}

inline ref::Shape ref_shape(const std::vector<int64_t>& shape) {
    int64_t s = 1;
    for (size_t d = 2; d < shape.size(); d++) s *= shape[d];
    return {shape[0], shape[1], s};
}

// Fill with NaN so an element a kernel forgot to write fails every comparison.
inline void poison(Tensor& t) { t.fill_(std::numeric_limits<double>::quiet_NaN()); }

inline Tensor channel_tensor(const std::vector<double>& v) { return tensor_from(v, {static_cast<int64_t>(v.size())}); }

inline double dtype_tolerance(DType dtype) {
    switch (dtype) {
        case DType::Float16: return 2e-3;
        case DType::BFloat16: return 1.6e-2;
        default: return 1e-5;
    }
}

// One kernel variant on one shape: the parameter of the variant sweeps
// (functional vs reference, one pass vs two).
struct VariantCase {
    std::vector<int64_t> shape;
    DType dtype;
    Layout layout;
    functional::Activation activation;
    bool addend;
    bool training = true;
};

// "2x3x5x7_float32_nchw_addrelu_train": a test name per variant.
inline std::string variant_name(const ::testing::TestParamInfo<VariantCase>& info) {
    const VariantCase& c = info.param;
    std::string s;
    for (auto d : c.shape) s += std::to_string(d) + "x";
    s.pop_back();
    s += std::string("_") + to_string(c.dtype) + "_" + to_string(c.layout);
    s += c.activation == functional::Activation::Relu ? (c.addend ? "_addrelu" : "_relu") : "";
    s += c.training ? "_train" : "_eval";
    return s;
}

// A device in a test name: "cpu", "cuda" (any index) or "opencl".
inline std::string device_name(Device device) {
    return device.is_cpu() ? "cpu" : device.is_cuda() ? "cuda" : "opencl";
}

// Skips a test on a CUDA device when the machine has none. A macro: GTEST_SKIP
// only leaves the function it is written in.
#define SKIP_WITHOUT(device) \
    if ((device).is_cuda() && ::bnforge::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device on this machine"

// Turns off the poisoning of new tensors (test_environment.cpp) while alive: on
// a device it is a host copy on the legacy stream, which neither a non-blocking
// stream nor a CUDA graph capture may meet.
struct NoPoisoning {
    NoPoisoning() { poison_new_tensors(false); }
    ~NoPoisoning() { poison_new_tensors(true); }
};

// Restores the process-wide kernel schedule set when a test that changes it ends, however it ends.
class KeepSchedule {
public:
    KeepSchedule() : saved_(kernel_schedule()) {}
    ~KeepSchedule() { set_kernel_schedule(saved_); }

private:
    std::string saved_;
};

}  // namespace testutil
