// The per-channel pipelines (forward_finalize, backward_finalize,
// merge_moments), called directly through the kernel table, every variant
// the build has, on the CPU and (bnforge_tests) on PoCL's OpenCL device,
// against a float64 evaluation written here from the definitions:
//   invstd = 1/sqrt(var + eps), var = M2/M (batch) or the running variance;
//   shift = float(mean), offset = float(mean − shift), scale = float(γ·invstd);
//   running ← f·batch + (1 − f)·running (unbiased variance), f = momentum or
//   1/num_batches_tracked; k_dy = γ·invstd, k_xmu = γ·invstd³·Σg(x−μ)/M,
//   k_bias = γ·invstd·Σg/M; dγ += Σg(x−μ)·invstd, dβ += Σg (float32 adds);
//   Chan's merge of the ranks' (M, mean, M2) in rank order.
// The float64 arithmetic is IEEE in both, so the results must agree to the
// bit. The module state is updated in place (the same tensor as input and
// output), as the runtime calls it. Outputs are poisoned first.
#include <gtest/gtest.h>

#include <bnforge/bnforge.h>

#include "kernels.h"
#include "test_util.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace {

using namespace bnforge;
using detail::KernelArg;
using detail::KernelEntry;
using detail::Pipeline;
namespace abi = bnforge::abi;

constexpr int64_t kChannels = 37;  // a partial warp tile and a vector tail

// A tensor's memory as a kernel argument: (C), (rows, C) as Halide (c, row), or a 0-D counter.
struct Arg {
    halide_dimension_t dims[3];
    halide_buffer_t buf;
    explicit Arg(const Tensor& t) {
        int d = 0;
        int32_t stride = 1;
        for (int64_t i = t.dim() - 1; i >= 0; i--, d++) {
            dims[d] = {0, static_cast<int32_t>(t.shape()[i]), stride, 0};
            stride *= static_cast<int32_t>(t.shape()[i]);
        }
        const halide_type_t type = t.dtype() == DType::Float64 ? halide_type_t{halide_type_float, 64, 1}
                                   : t.dtype() == DType::Int64 ? halide_type_t{halide_type_int, 64, 1}
                                                               : halide_type_t{halide_type_float, 32, 1};
        detail::init_buffer(buf, t.raw_data(), t.device(), type, static_cast<int>(t.dim()), dims);
    }
};

Tensor on(Device device, const std::vector<double>& v, std::vector<int64_t> shape, DType dtype) {
    Tensor host = Tensor::empty(shape, dtype);
    for (size_t i = 0; i < v.size(); i++) {
        std::vector<int64_t> index(shape.size(), 0);
        int64_t rest = static_cast<int64_t>(i);
        for (int64_t d = static_cast<int64_t>(shape.size()) - 1; d >= 0; d--) {
            index[d] = rest % shape[d];
            rest /= shape[d];
        }
        host.set_item(index, v[i]);
    }
    return host.to(device);
}

Tensor poisoned(Device device, int64_t channels, DType dtype = DType::Float32) {
    Tensor t = Tensor::empty({channels}, dtype, device);
    t.fill_(std::numeric_limits<double>::quiet_NaN());
    return t;
}

// The values of a dense tensor in row-major order, exactly (float64 included).
std::vector<double> host_values(const Tensor& t) {
    const Tensor h = t.to(Device::cpu());
    std::vector<double> out;
    std::vector<int64_t> index(h.dim(), 0);
    for (int64_t i = 0; i < h.numel(); i++) {
        int64_t rest = i;
        for (int64_t d = h.dim() - 1; d >= 0; d--) {
            index[d] = rest % h.shape()[d];
            rest /= h.shape()[d];
        }
        out.push_back(h.item(index));
    }
    return out;
}

std::vector<double> as_float(const std::vector<double>& v) {
    std::vector<double> out;
    for (double x : v) out.push_back(static_cast<float>(x));
    return out;
}

bool has(const std::string& label, const std::string& part) {
    return ("_" + label + "_").find("_" + part + "_") != std::string::npos;
}

struct FinalizeCase {
    Device device;
    const KernelEntry* kernel;
};

std::string case_name(const ::testing::TestParamInfo<FinalizeCase>& info) {
    return testutil::device_name(info.param.device) + "_" + info.param.kernel->variant;
}

std::vector<FinalizeCase> cases_of(Pipeline pipeline) {
    std::vector<FinalizeCase> cases;
    for (const KernelEntry& k : detail::kernel_table()) {
        if (k.pipeline != pipeline) continue;
        const Device device = k.device == Device::Kind::CPU ? Device::cpu()
                              : k.device == Device::Kind::OpenCL ? Device::opencl()
                                                                 : Device::cuda(0);
#if !BNFORGE_TEST_DEVICES
        if (!device.is_cpu()) continue;
#endif
        cases.push_back({device, &k});
    }
    return cases;
}

// Bit-exact comparison, NaN-aware (a poisoned output left unwritten fails);
// `ulps` > 0 allows that many units in the last place.
void expect_bitwise(const std::vector<double>& got, const std::vector<double>& want, const char* what,
                    int64_t ulps = 0) {
    ASSERT_EQ(got.size(), want.size()) << what;
    for (size_t i = 0; i < got.size(); i++) {
        int64_t g, w;
        std::memcpy(&g, &got[i], sizeof g);
        std::memcpy(&w, &want[i], sizeof w);
        const bool same_sign = (g < 0) == (w < 0) && !std::isnan(got[i]);
        EXPECT_TRUE(g == w || (same_sign && std::llabs(g - w) <= ulps))
            << what << "[" << i << "]: got " << got[i] << ", expected " << want[i] << " (" << ulps << " ulps allowed)";
    }
}

// Halide's PTX backend contracts a*b + c into an fma whatever strict_float
// says (CodeGen_PTX_Dev compiles with AllowFPOpFusion = Fast, and ptxas fuses
// an add that has no explicit rounding mode), so a CUDA kernel's float64 may
// differ from the formula written out on the host in the last bits (seen on
// an H200: Chan's M2, 1 ulp). Every rank runs the same kernel on the same rows,
// which is what SyncBatchNorm's "the same bits on every rank" needs.
int64_t contraction_ulps(Device device) { return device.is_cuda() ? 4 : 0; }

// One forward_finalize call: its tensors (outputs poisoned; the inputs set
// by the test) and the call, which passes the module state as input and
// output alike, as the runtime does.
struct ForwardFinalizeCall {
    Tensor moments, running_mean, running_var, weight, bias, tracked;
    Tensor shift, offset, scale, beta, saved_mean, saved_invstd;

    ForwardFinalizeCall(Device device, int64_t channels)
        : shift(poisoned(device, channels)),
          offset(poisoned(device, channels)),
          scale(poisoned(device, channels)),
          beta(poisoned(device, channels)),
          saved_mean(poisoned(device, channels, DType::Float64)),
          saved_invstd(poisoned(device, channels, DType::Float64)) {}

    void run(const KernelEntry& kernel, double eps, double factor) {
        const std::string label = kernel.variant;
        const bool batch = has(label, "batch"), affine = has(label, "affine"), nbt = has(label, "nbt");
        const bool momentum = has(label, "momentum"), updates = momentum || has(label, "cumulative");
        const bool reads_running = !batch || updates;
        std::optional<Arg> a_moments, a_rm, a_rv, a_w, a_b, a_nbt;
        if (batch) a_moments.emplace(moments);
        if (reads_running) {
            a_rm.emplace(running_mean);
            a_rv.emplace(running_var);
        }
        if (affine) {
            a_w.emplace(weight);
            a_b.emplace(bias);
        }
        if (nbt) a_nbt.emplace(tracked);
        Arg a_shift(shift), a_offset(offset), a_scale(scale), a_beta(beta), a_mean(saved_mean), a_invstd(saved_invstd);
        halide_scalar_value_t eps_v, factor_v;
        eps_v.u.f64 = eps;
        factor_v.u.f64 = factor;
        auto buf = [](std::optional<Arg>& a) { return a ? &a->buf : nullptr; };
        detail::invoke(kernel, {{abi::arg::moments, buf(a_moments)},
                                {abi::arg::running_mean, buf(a_rm)},
                                {abi::arg::running_var, buf(a_rv)},
                                {"running_mean_out", updates ? buf(a_rm) : nullptr},
                                {"running_var_out", updates ? buf(a_rv) : nullptr},
                                {abi::arg::factor, nullptr, momentum ? &factor_v : nullptr},
                                {abi::arg::num_batches_tracked, buf(a_nbt)},
                                {"num_batches_tracked_out", buf(a_nbt)},
                                {abi::arg::weight, buf(a_w)},
                                {abi::arg::bias, buf(a_b)},
                                {abi::arg::eps, nullptr, &eps_v},
                                {abi::arg::shift, &a_shift.buf},
                                {abi::arg::offset, &a_offset.buf},
                                {abi::arg::scale, &a_scale.buf},
                                {abi::arg::beta, &a_beta.buf},
                                {abi::arg::saved_mean, &a_mean.buf},
                                {abi::arg::saved_invstd, &a_invstd.buf}});
    }
};

class ForwardFinalize : public ::testing::TestWithParam<FinalizeCase> {};

TEST_P(ForwardFinalize, MatchesFloat64AndUpdatesStateInPlace) {
    const Device device = GetParam().device;
    SKIP_WITHOUT(device);
    const std::string label = GetParam().kernel->variant;
    const bool batch = has(label, "batch"), affine = has(label, "affine"), nbt = has(label, "nbt");
    const bool momentum = has(label, "momentum"), cumulative = has(label, "cumulative");
    const bool updates = momentum || cumulative;

    std::mt19937 rng(17);
    const int64_t C = kChannels;
    const double count = 98, eps = 1e-5, factor = 0.1;
    const int64_t batches = 5;
    // Means far from zero, so the shift/offset split carries real bits.
    const auto mean = testutil::random_vector(rng, C, 50.0, 10.0);
    auto m2 = testutil::random_vector(rng, C, 30.0, 20.0);
    for (double& v : m2) v = std::abs(v);
    const auto rm = as_float(testutil::random_vector(rng, C, 1.0, 0.5));
    auto rv = as_float(testutil::random_vector(rng, C, 2.0, 0.5));
    for (double& v : rv) v = std::abs(v);
    const auto w = as_float(testutil::random_vector(rng, C, 1.0, 0.5));
    const auto b = as_float(testutil::random_vector(rng, C, 0.0, 0.5));

    std::vector<double> rows(abi::kMomentRows * C);
    for (int64_t c = 0; c < C; c++) {
        rows[abi::kMomentCount * C + c] = count;
        rows[abi::kMomentMean * C + c] = mean[c];
        rows[abi::kMomentM2 * C + c] = m2[c];
    }
    ForwardFinalizeCall call(device, C);
    call.moments = on(device, rows, {abi::kMomentRows, C}, DType::Float64);
    call.running_mean = on(device, rm, {C}, DType::Float32);
    call.running_var = on(device, rv, {C}, DType::Float32);
    call.weight = on(device, w, {C}, DType::Float32);
    call.bias = on(device, b, {C}, DType::Float32);
    call.tracked = on(device, {static_cast<double>(batches)}, {}, DType::Int64);
    call.run(*GetParam().kernel, eps, factor);

    std::vector<double> want_shift(C), want_offset(C), want_scale(C), want_beta(C), want_mean(C), want_invstd(C),
        want_rm = rm, want_rv = rv;
    const double f = cumulative ? 1.0 / static_cast<double>(batches + 1) : factor;
    for (int64_t c = 0; c < C; c++) {
        const double mu = batch ? mean[c] : rm[c];
        const double var = batch ? m2[c] / count : rv[c];
        const double invstd = 1.0 / std::sqrt(var + eps);
        const float s = static_cast<float>(mu);
        want_shift[c] = s;
        want_offset[c] = static_cast<float>(mu - static_cast<double>(s));
        want_scale[c] = static_cast<float>((affine ? w[c] : 1.0) * invstd);
        want_beta[c] = affine ? b[c] : 0.0;
        want_mean[c] = mu;
        want_invstd[c] = invstd;
        if (updates) {
            want_rm[c] = static_cast<float>(f * mean[c] + (1.0 - f) * rm[c]);
            want_rv[c] = static_cast<float>(f * (m2[c] / (count - 1)) + (1.0 - f) * rv[c]);
        }
    }
    expect_bitwise(host_values(call.shift), want_shift, "shift");
    expect_bitwise(host_values(call.offset), want_offset, "offset");
    expect_bitwise(host_values(call.scale), want_scale, "scale");
    expect_bitwise(host_values(call.beta), want_beta, "beta");
    expect_bitwise(host_values(call.saved_mean), want_mean, "saved_mean");
    expect_bitwise(host_values(call.saved_invstd), want_invstd, "saved_invstd");
    expect_bitwise(host_values(call.running_mean), want_rm, "running_mean");
    expect_bitwise(host_values(call.running_var), want_rv, "running_var");
    EXPECT_EQ(call.tracked.to(Device::cpu()).item({}), static_cast<double>(nbt ? batches + 1 : batches));
}

// An empty global batch (SyncBatchNorm with every rank empty): variance 1,
// running statistics untouched, the batch still counted.
TEST_P(ForwardFinalize, EmptyBatchLeavesRunningStatistics) {
    const Device device = GetParam().device;
    SKIP_WITHOUT(device);
    const std::string label = GetParam().kernel->variant;
    if (!has(label, "batch")) GTEST_SKIP() << "running statistics have no batch";
    const bool nbt = has(label, "nbt");
    const int64_t C = 3;
    ForwardFinalizeCall call(device, C);
    call.moments = on(device, std::vector<double>(abi::kMomentRows * C, 0.0), {abi::kMomentRows, C}, DType::Float64);
    call.running_mean = on(device, {0.5, -1.5, 2.0}, {C}, DType::Float32);
    call.running_var = on(device, {1.5, 0.25, 3.0}, {C}, DType::Float32);
    call.weight = on(device, {1, 1, 1}, {C}, DType::Float32);
    call.bias = on(device, {0, 0, 0}, {C}, DType::Float32);
    call.tracked = on(device, {2}, {}, DType::Int64);
    call.run(*GetParam().kernel, 1e-5, 0.1);
    const double invstd = 1.0 / std::sqrt(1.0 + 1e-5);
    expect_bitwise(host_values(call.saved_invstd), {invstd, invstd, invstd}, "saved_invstd");
    expect_bitwise(host_values(call.running_mean), {0.5, -1.5, 2.0}, "running_mean");
    expect_bitwise(host_values(call.running_var), {1.5, 0.25, 3.0}, "running_var");
    EXPECT_EQ(call.tracked.to(Device::cpu()).item({}), nbt ? 3.0 : 2.0);
}

INSTANTIATE_TEST_SUITE_P(Variants, ForwardFinalize, ::testing::ValuesIn(cases_of(Pipeline::forward_finalize)),
                         case_name);

class BackwardFinalize : public ::testing::TestWithParam<FinalizeCase> {};

TEST_P(BackwardFinalize, MatchesFloat64AndAccumulatesGradsInPlace) {
    const Device device = GetParam().device;
    SKIP_WITHOUT(device);
    const std::string label = GetParam().kernel->variant;
    const bool batch = has(label, "batch"), affine = has(label, "affine"), grads = has(label, "grads");

    std::mt19937 rng(29);
    const int64_t C = kChannels;
    const double count = 3 * 49;
    const auto sum_dy = testutil::random_vector(rng, C, 3.0, 20.0);
    const auto sum_dy_xmu = testutil::random_vector(rng, C, -2.0, 20.0);
    // SyncBatchNorm's local sums differ from the group's.
    const auto local_dy = testutil::random_vector(rng, C, 1.0, 5.0);
    const auto local_dy_xmu = testutil::random_vector(rng, C, -1.0, 5.0);
    auto invstd = testutil::random_vector(rng, C, 2.0, 0.7);
    for (double& v : invstd) v = std::abs(v);
    const auto w = as_float(testutil::random_vector(rng, C, 1.0, 0.5));
    const auto gw = as_float(testutil::random_vector(rng, C, 0.3, 1.0));
    const auto gb = as_float(testutil::random_vector(rng, C, -0.3, 1.0));

    std::vector<double> sum_rows(abi::kSumRows * C), local_rows(abi::kSumRows * C);
    for (int64_t c = 0; c < C; c++) {
        sum_rows[abi::kSumDy * C + c] = sum_dy[c];
        sum_rows[abi::kSumDyXmu * C + c] = sum_dy_xmu[c];
        local_rows[abi::kSumDy * C + c] = local_dy[c];
        local_rows[abi::kSumDyXmu * C + c] = local_dy_xmu[c];
    }
    Tensor sums = on(device, sum_rows, {abi::kSumRows, C}, DType::Float64);
    Tensor local = on(device, local_rows, {abi::kSumRows, C}, DType::Float64);
    Tensor saved_invstd = on(device, invstd, {C}, DType::Float64);
    Tensor weight = on(device, w, {C}, DType::Float32);
    Tensor weight_grad = on(device, gw, {C}, DType::Float32), bias_grad = on(device, gb, {C}, DType::Float32);
    Tensor k_dy = poisoned(device, C), k_xmu = poisoned(device, C), k_bias = poisoned(device, C);
    Arg a_sums(sums), a_local(local), a_invstd(saved_invstd), a_w(weight), a_gw(weight_grad), a_gb(bias_grad),
        a_kdy(k_dy), a_kxmu(k_xmu), a_kbias(k_bias);
    halide_scalar_value_t count_v;
    count_v.u.f64 = count;
    detail::invoke(*GetParam().kernel, {{abi::arg::sums, &a_sums.buf},
                                        {abi::arg::local_sums, grads ? &a_local.buf : nullptr},
                                        {abi::arg::saved_invstd, &a_invstd.buf},
                                        {abi::arg::weight, affine ? &a_w.buf : nullptr},
                                        {abi::arg::count, nullptr, &count_v},
                                        {abi::arg::weight_grad, grads ? &a_gw.buf : nullptr},
                                        {abi::arg::bias_grad, grads ? &a_gb.buf : nullptr},
                                        {"weight_grad_out", grads ? &a_gw.buf : nullptr},
                                        {"bias_grad_out", grads ? &a_gb.buf : nullptr},
                                        {abi::arg::k_dy, &a_kdy.buf},
                                        {abi::arg::k_xmu, &a_kxmu.buf},
                                        {abi::arg::k_bias, &a_kbias.buf}});

    std::vector<double> want_kdy(C), want_kxmu(C, 0.0), want_kbias(C, 0.0), want_gw = gw, want_gb = gb;
    for (int64_t c = 0; c < C; c++) {
        const double scale = (affine ? w[c] : 1.0) * invstd[c];
        want_kdy[c] = static_cast<float>(scale);
        if (batch) {
            want_kxmu[c] = static_cast<float>(scale * invstd[c] * invstd[c] * sum_dy_xmu[c] / count);
            want_kbias[c] = static_cast<float>(scale * sum_dy[c] / count);
        }
        if (grads) {
            want_gw[c] = static_cast<float>(gw[c]) + static_cast<float>(local_dy_xmu[c] * invstd[c]);
            want_gb[c] = static_cast<float>(gb[c]) + static_cast<float>(local_dy[c]);
        }
    }
    expect_bitwise(host_values(k_dy), want_kdy, "k_dy");
    expect_bitwise(host_values(k_xmu), want_kxmu, "k_xmu");
    expect_bitwise(host_values(k_bias), want_kbias, "k_bias");
    expect_bitwise(host_values(weight_grad), want_gw, "weight_grad");
    expect_bitwise(host_values(bias_grad), want_gb, "bias_grad");
}

INSTANTIATE_TEST_SUITE_P(Variants, BackwardFinalize, ::testing::ValuesIn(cases_of(Pipeline::backward_finalize)),
                         case_name);

class MergeMoments : public ::testing::TestWithParam<FinalizeCase> {};

// Four ranks, one of them empty, folded in rank order: the same bits as
// Chan's formula written out here (the host merge SyncBatchNorm used).
TEST_P(MergeMoments, FoldsRanksInOrderLikeChan) {
    const Device device = GetParam().device;
    SKIP_WITHOUT(device);
    std::mt19937 rng(41);
    const int64_t C = kChannels, ranks = 4;
    const double counts[ranks] = {98, 0, 49, 147};
    std::vector<double> gathered(ranks * abi::kMomentRows * C);
    double n = 0;
    std::vector<double> mean(C, 0.0), m2(C, 0.0);
    for (int64_t r = 0; r < ranks; r++) {
        const auto part_mean = testutil::random_vector(rng, C, 10.0 * static_cast<double>(r), 3.0);
        const auto part_m2 = testutil::random_vector(rng, C, 50.0, 10.0);
        for (int64_t c = 0; c < C; c++) {
            double* row = gathered.data() + r * abi::kMomentRows * C;
            row[abi::kMomentCount * C + c] = counts[r];
            row[abi::kMomentMean * C + c] = part_mean[c];
            row[abi::kMomentM2 * C + c] = part_m2[c];
            if (counts[r] == 0) continue;
            if (n == 0) {
                mean[c] = part_mean[c];
                m2[c] = part_m2[c];
            } else {
                const double nb = counts[r], total = n + nb, delta = part_mean[c] - mean[c];
                mean[c] += delta * (nb / total);
                m2[c] += part_m2[c] + delta * delta * (n * nb / total);
            }
        }
        n += counts[r];
    }
    Tensor in = on(device, gathered, {ranks, abi::kMomentRows, C}, DType::Float64);
    Tensor out = Tensor::empty({abi::kMomentRows, C}, DType::Float64, device);
    out.fill_(std::numeric_limits<double>::quiet_NaN());
    Arg a_in(in), a_out(out);
    detail::invoke(*GetParam().kernel, {{abi::arg::gathered, &a_in.buf}, {abi::arg::moments, &a_out.buf}});
    const std::vector<double> got = host_values(out);
    const std::vector<double> got_count(got.begin(), got.begin() + C), got_mean(got.begin() + C, got.begin() + 2 * C),
        got_m2(got.begin() + 2 * C, got.end());
    expect_bitwise(got_count, std::vector<double>(C, n), "count");
    expect_bitwise(got_mean, mean, "mean", contraction_ulps(device));
    expect_bitwise(got_m2, m2, "m2", contraction_ulps(device));
}

INSTANTIATE_TEST_SUITE_P(Variants, MergeMoments, ::testing::ValuesIn(cases_of(Pipeline::merge_moments)), case_name);

}  // namespace
