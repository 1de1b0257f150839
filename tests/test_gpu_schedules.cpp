// The GPU schedules, run through Halide's OpenCL backend on PoCL (a CPU
// OpenCL): the same generators and the same GPU schedules as the CUDA
// kernels, so the block/thread mapping, the rfactor'd partials, the fused
// mask stage and the guards are checked without a GPU. Every pipeline the GPU
// runs (stats, apply, backward reduce, backward apply; each fusion, both
// layouts) is compared with a float64 evaluation of the same data.
//
// Each schedule set the build has for the GPU runs: the manual schedules and
// the GPU autoschedulers' (BNFORGE_GPU_AUTOSCHEDULERS), so a tail an
// autoscheduler assumed away fails here rather than on a user's shape.
//
// The kernels are called directly, through their argv entry points (found in
// the runtime's kernel table) with arguments matched by name, so a failure
// here is the schedule's own.
#include <gtest/gtest.h>

#include <HalideBuffer.h>
#include <HalideRuntime.h>

#include <bnforge/runtime.h>

#include "bnk_test_saved_apply_opencl_nchw.h"
#include "kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <tuple>
#include <vector>

namespace {

using Halide::Runtime::Buffer;

std::string g_last_error;

// Halide's default handler aborts; keep the message for the test's failure.
void record_halide_error(void*, const char* msg) { g_last_error = msg; }

using bnforge::detail::Fusion;
using bnforge::detail::KernelEntry;
using bnforge::detail::Pipeline;



// Runs `k` with every argument its metadata lists taken from `args` by name,
// then copies every output back to the host.
void run(const KernelEntry& k, const std::map<std::string, halide_buffer_t*>& args) {
    halide_set_error_handler(record_halide_error);
    const halide_filter_metadata_t* md = k.metadata_fn();
    std::vector<void*> argv;
    void* user_context = nullptr;
    for (int i = 0; i < md->num_arguments; i++) {
        if (std::strcmp(md->arguments[i].name, "__user_context") == 0) {
            argv.push_back(&user_context);
            continue;
        }
        auto it = args.find(md->arguments[i].name);
        ASSERT_NE(it, args.end()) << "the test supplies no argument " << md->arguments[i].name;
        // Inputs were written on the host: have Halide upload them.
        if (md->arguments[i].kind == halide_argument_kind_input_buffer) it->second->set_host_dirty(true);
        argv.push_back(it->second);
    }
    g_last_error.clear();
    ASSERT_EQ(k.argv_fn(argv.data()), 0)
        << k.name << " failed (is PoCL installed? tools/setup.sh installs it): " << g_last_error;
    for (int i = 0; i < md->num_arguments; i++) {
        if (md->arguments[i].kind != halide_argument_kind_output_buffer) continue;
        ASSERT_EQ(halide_copy_to_host(nullptr, args.at(md->arguments[i].name)), 0) << g_last_error;
    }
}

struct Shape {
    bool nhwc;
    int n, c, s;
};

// A schedule set ("manual", or an autoscheduler's) and a shape.
using Param = std::tuple<std::string, Shape>;

std::string param_name(const ::testing::TestParamInfo<Param>& info) {
    const auto& [schedule, k] = info.param;
    return schedule + (k.nhwc ? "_nhwc_" : "_nchw_") + std::to_string(k.n) + "x" + std::to_string(k.c) + "x" +
           std::to_string(k.s);
}

// A batch tensor in the kernels' memory order, NCHW (s, c, n) or NHWC
// (c, s, n), addressed by logical (s, c, n).
struct Batch {
    Shape shape;
    Buffer<float> buf;
    explicit Batch(const Shape& k)
        : shape(k), buf(k.nhwc ? Buffer<float>(k.c, k.s, k.n) : Buffer<float>(k.s, k.c, k.n)) {}
    float& operator()(int s, int c, int n) { return shape.nhwc ? buf(c, s, n) : buf(s, c, n); }
};

// The ReLU mask in memory order (d0, d1, ceil(N / 8)); bit k of byte m is row 8m + k.
Buffer<uint8_t> make_mask(const Shape& k) {
    const int bytes = (k.n + 7) / 8;
    return k.nhwc ? Buffer<uint8_t>(k.c, k.s, bytes) : Buffer<uint8_t>(k.s, k.c, bytes);
}
uint8_t& mask_byte(Buffer<uint8_t>& mask, const Shape& k, int s, int c, int n) {
    return k.nhwc ? mask(c, s, n / 8) : mask(s, c, n / 8);
}
bool mask_bit(Buffer<uint8_t>& mask, const Shape& k, int s, int c, int n) {
    return (mask_byte(mask, k, s, c, n) >> (n % 8)) & 1;
}

std::vector<double> as_vector(const Buffer<float>& v) {
    std::vector<double> out(v.dim(0).extent());
    for (size_t i = 0; i < out.size(); i++) out[i] = v(static_cast<int>(i));
    return out;
}

class GpuSchedule : public ::testing::TestWithParam<Param> {
protected:
    const std::string& schedule() const { return std::get<0>(GetParam()); }
    const Shape& shape() const { return std::get<1>(GetParam()); }

    // The OpenCL float32 kernel of this test's schedule set, from the runtime's kernel table.
    const KernelEntry& kernel(Pipeline pipeline, Fusion fusion) const {
        return bnforge::detail::find_kernel(pipeline, bnforge::Device::opencl(), bnforge::DType::Float32,
                                            shape().nhwc ? bnforge::Layout::NHWC : bnforge::Layout::NCHW, fusion,
                                            schedule());
    }

    std::mt19937 rng{1234u + static_cast<unsigned>(shape().n * 7 + shape().c * 13 + shape().s)};
    std::normal_distribution<double> normal{0.0, 1.0};

    // Random values around a per-channel centre.
    Batch random_batch(double spread, const std::vector<double>* centre = nullptr) {
        const Shape& k = shape();
        Batch b(k);
        for_each_element([&](int s, int c, int n) {
            b(s, c, n) = static_cast<float>((centre ? (*centre)[c] : 0.0) + spread * normal(rng));
        });
        return b;
    }
    Buffer<float> channel_values(double centre, double spread) {
        Buffer<float> v(shape().c);
        for (int c = 0; c < shape().c; c++) v(c) = static_cast<float>(centre + spread * normal(rng));
        return v;
    }
    Buffer<uint8_t> random_mask() {
        Buffer<uint8_t> mask = make_mask(shape());
        std::uniform_int_distribution<int> byte(0, 255);
        mask.for_each_value([&](uint8_t& v) { v = static_cast<uint8_t>(byte(rng)); });
        return mask;
    }
    void check_apply(const KernelEntry& kernel, Fusion fusion);

    template <class F>
    void for_each_element(F f) {
        const Shape& k = shape();
        for (int n = 0; n < k.n; n++)
            for (int c = 0; c < k.c; c++)
                for (int s = 0; s < k.s; s++) f(s, c, n);
    }
};

TEST_P(GpuSchedule, StatsMatchFloat64) {
    const Shape& k = shape();
    for (double mean_scale : {2.0, 1e4}) {  // far from zero exercises the shifted sums
        SCOPED_TRACE("means of scale " + std::to_string(mean_scale));
        std::vector<double> centre(k.c);
        for (double& v : centre) v = mean_scale * normal(rng);
        Batch x = random_batch(1.0, &centre);
        Buffer<double> moments(k.c, bnforge::abi::kMomentRows);
        moments.fill(std::numeric_limits<double>::quiet_NaN());
        ASSERT_NO_FATAL_FAILURE(run(kernel(Pipeline::stats, Fusion::none), {{"x", x.buf}, {"moments", moments}}));
        auto mean = [&](int c) { return moments(c, bnforge::abi::kMomentMean); };
        auto m2 = [&](int c) { return moments(c, bnforge::abi::kMomentM2); };

        const double count = static_cast<double>(k.n) * k.s;
        for (int c = 0; c < k.c; c++) {
            EXPECT_EQ(moments(c, bnforge::abi::kMomentCount), count) << "channel " << c;
            double sum = 0, m2_ref = 0;
            for (int n = 0; n < k.n; n++)
                for (int s = 0; s < k.s; s++) sum += x(s, c, n);
            const double mu = sum / count;
            for (int n = 0; n < k.n; n++)
                for (int s = 0; s < k.s; s++) m2_ref += (x(s, c, n) - mu) * (x(s, c, n) - mu);
            // The mean to 1e-6 of the spread (not of its distance from zero), M2 to 1e-5.
            EXPECT_NEAR(mean(c), mu, 1e-6 * std::sqrt(m2_ref / count) + 1e-12) << "channel " << c;
            EXPECT_NEAR(m2(c), m2_ref, 1e-5 * m2_ref + 1e-12) << "channel " << c;
        }
    }
}

TEST_P(GpuSchedule, ApplyMatchesFloat64) {
    for (Fusion fusion : {Fusion::none, Fusion::relu, Fusion::add_relu}) {
        SCOPED_TRACE(std::string("fusion ") + bnforge::detail::to_string(fusion));
        ASSERT_NO_FATAL_FAILURE(check_apply(kernel(Pipeline::apply, fusion), fusion));
    }
}

// bn_apply built from a saved OpenCL schedule (tests/schedules/, an
// Anderson2021 schedule written by `bnforge tune --target host-opencl`): a
// saved schedule replaces the manual one on a GPU target too.
TEST_P(GpuSchedule, SavedOpenclApplyScheduleMatchesFloat64) {
    if (shape().nhwc || schedule() != "manual") GTEST_SKIP() << "the saved schedule is bn_apply NCHW's";
    const KernelEntry saved{Pipeline::apply,
                            bnforge::Device::Kind::OpenCL,
                            bnforge::DType::Float32,
                            bnforge::Layout::NCHW,
                            Fusion::none,
                            "saved",
                            "bnk_test_saved_apply_opencl_nchw",
                            &bnk_test_saved_apply_opencl_nchw_argv,
                            &bnk_test_saved_apply_opencl_nchw_metadata};
    check_apply(saved, Fusion::none);
}

// The apply kernel `kernel` (of `fusion`) on random data against float64.
void GpuSchedule::check_apply(const KernelEntry& kernel, Fusion fusion) {
    const Shape& k = shape();
    Buffer<float> shift = channel_values(0.0, 3.0), offset = channel_values(0.0, 1e-6),
                  scale = channel_values(1.0, 0.5), beta = channel_values(0.0, 0.5);
    const std::vector<double> centre = as_vector(shift);
    Batch x = random_batch(1.0, &centre), addend = random_batch(0.5), y(k);
    Buffer<uint8_t> mask = make_mask(k);
    y.buf.fill(std::numeric_limits<float>::quiet_NaN());
    mask.fill(0xA5);
    std::map<std::string, halide_buffer_t*> args = {{"shift", shift}, {"offset", offset}, {"scale", scale},
                                                    {"beta", beta},   {"x", x.buf},       {"y", y.buf}};
    if (fusion != Fusion::none) args["mask"] = mask;
    if (fusion == Fusion::add_relu) args["addend"] = addend.buf;
    ASSERT_NO_FATAL_FAILURE(run(kernel, args));

    for_each_element([&](int s, int c, int n) {
        double pre = (static_cast<double>(x(s, c, n)) - shift(c) - offset(c)) * scale(c) + beta(c);
        if (fusion == Fusion::add_relu) pre += addend(s, c, n);
        const double ref = fusion == Fusion::none ? pre : std::max(pre, 0.0);
        ASSERT_NEAR(y(s, c, n), ref, 1e-6 * (1 + std::abs(pre))) << "(s, c, n) = " << s << ", " << c << ", " << n;
        // A bit is set exactly where the stored output is positive (y = relu(pre)).
        if (fusion != Fusion::none) {
            ASSERT_EQ(mask_bit(mask, k, s, c, n), y(s, c, n) > 0) << s << ", " << c << ", " << n;
        }
    });
    if (fusion != Fusion::none && k.n % 8) {  // the last byte's bits past the batch are clear
        for (int c = 0; c < k.c; c++)
            for (int s = 0; s < k.s; s++) ASSERT_EQ(mask_byte(mask, k, s, c, k.n - 1) >> (k.n % 8), 0);
    }
}

TEST_P(GpuSchedule, BackwardReduceMatchesFloat64) {
    const Shape& k = shape();
    for (bool masked : {false, true}) {
        SCOPED_TRACE(masked ? "masked" : "plain");
        Buffer<float> shift = channel_values(5.0, 3.0), offset = channel_values(0.0, 1e-6);
        const std::vector<double> centre = as_vector(shift);
        Batch x = random_batch(1.0, &centre), dy = random_batch(1.0);
        Buffer<uint8_t> mask = random_mask();
        Buffer<double> sums(k.c, bnforge::abi::kSumRows);
        sums.fill(std::numeric_limits<double>::quiet_NaN());
        auto sum_dy = [&](int c) { return sums(c, bnforge::abi::kSumDy); };
        auto sum_dy_xmu = [&](int c) { return sums(c, bnforge::abi::kSumDyXmu); };
        std::map<std::string, halide_buffer_t*> args = {{"shift", shift}, {"offset", offset}, {"x", x.buf},
                                                        {"dy", dy.buf},   {"sums", sums}};
        if (masked) args["mask"] = mask;
        ASSERT_NO_FATAL_FAILURE(run(kernel(Pipeline::backward_reduce, masked ? Fusion::masked : Fusion::none), args));

        std::vector<double> ref_dy(k.c), ref_xmu(k.c), abs_dy(k.c), abs_xmu(k.c);
        for_each_element([&](int s, int c, int n) {
            const double g = masked && !mask_bit(mask, k, s, c, n) ? 0.0 : dy(s, c, n);
            const double xmu = static_cast<double>(x(s, c, n)) - shift(c) - offset(c);
            ref_dy[c] += g, abs_dy[c] += std::abs(g);
            ref_xmu[c] += g * xmu, abs_xmu[c] += std::abs(g * xmu);
        });
        for (int c = 0; c < k.c; c++) {
            EXPECT_NEAR(sum_dy(c), ref_dy[c], 1e-6 * abs_dy[c] + 1e-12) << "channel " << c;
            EXPECT_NEAR(sum_dy_xmu(c), ref_xmu[c], 1e-6 * abs_xmu[c] + 1e-12) << "channel " << c;
        }
    }
}

TEST_P(GpuSchedule, BackwardApplyMatchesFloat64) {
    const Shape& k = shape();
    for (Fusion fusion : {Fusion::none, Fusion::relu, Fusion::add_relu}) {
        SCOPED_TRACE(std::string("fusion ") + bnforge::detail::to_string(fusion));
        Buffer<float> shift = channel_values(5.0, 3.0), offset = channel_values(0.0, 1e-6),
                      k_dy = channel_values(1.0, 0.5), k_xmu = channel_values(0.0, 0.1),
                      k_bias = channel_values(0.0, 0.1);
        const std::vector<double> centre = as_vector(shift);
        Batch x = random_batch(1.0, &centre), dy = random_batch(1.0), dx(k), daddend(k);
        Buffer<uint8_t> mask = random_mask();
        dx.buf.fill(std::numeric_limits<float>::quiet_NaN());
        daddend.buf.fill(std::numeric_limits<float>::quiet_NaN());
        std::map<std::string, halide_buffer_t*> args = {{"shift", shift}, {"offset", offset}, {"k_dy", k_dy},
                                                        {"k_xmu", k_xmu}, {"k_bias", k_bias}, {"x", x.buf},
                                                        {"dy", dy.buf},   {"dx", dx.buf}};
        if (fusion != Fusion::none) args["mask"] = mask;
        if (fusion == Fusion::add_relu) args["daddend"] = daddend.buf;
        ASSERT_NO_FATAL_FAILURE(run(kernel(Pipeline::backward_apply, fusion), args));

        for_each_element([&](int s, int c, int n) {
            const float g = fusion != Fusion::none && !mask_bit(mask, k, s, c, n) ? 0.0f : dy(s, c, n);
            const double xmu = static_cast<double>(x(s, c, n)) - shift(c) - offset(c);
            const double ref = g * static_cast<double>(k_dy(c)) - xmu * k_xmu(c) - k_bias(c);
            const double size = std::abs(g * k_dy(c)) + std::abs(xmu * k_xmu(c)) + std::abs(k_bias(c));
            ASSERT_NEAR(dx(s, c, n), ref, 1e-6 * size + 1e-30) << "(s, c, n) = " << s << ", " << c << ", " << n;
            if (fusion == Fusion::add_relu) {
                ASSERT_EQ(daddend(s, c, n), g) << s << ", " << c << ", " << n;
            }
        });
    }
}

// Every GPU schedule set, on rows shorter and longer than a statistics chunk
// (2048 NCHW values; whole short rows are grouped), tails of the 256-thread
// element blocks and of the 32-thread channel tiles, batches off the 8-row
// mask bytes, N = 1, S = 1.
INSTANTIATE_TEST_SUITE_P(PoCL, GpuSchedule,
                         ::testing::Combine(::testing::ValuesIn(bnforge::kernel_schedules(bnforge::Device::opencl())),
                                            ::testing::Values(Shape{false, 2, 3, 35}, Shape{false, 5, 7, 3136},
                                                              Shape{false, 33, 4, 49}, Shape{false, 1, 40, 1},
                                                              Shape{false, 11, 70, 300}, Shape{true, 2, 3, 35},
                                                              Shape{true, 5, 7, 3136}, Shape{true, 33, 4, 49},
                                                              Shape{true, 1, 40, 1}, Shape{true, 11, 70, 300})),
                         param_name);

}  // namespace
