#include <bnforge/functional.h>

#include "channel_values.h"
#include "check.h"
#include "kernels.h"

#include <cmath>

namespace bnforge::functional {

using detail::BatchView;
using detail::ChannelBuffer;
using detail::Fusion;
using detail::Pipeline;

void Moments::merge(const Moments& other) {
    if (other.count == 0) return;
    if (count == 0) {
        *this = other;
        return;
    }
    BNF_CHECK(other.mean.size() == mean.size(),
              "Moments::merge: channel count " << other.mean.size() << " != " << mean.size());
    const double na = static_cast<double>(count), nb = static_cast<double>(other.count), n = na + nb;
    for (size_t c = 0; c < mean.size(); c++) {
        const double delta = other.mean[c] - mean[c];
        mean[c] += delta * (nb / n);
        m2[c] += other.m2[c] + delta * delta * (na * nb / n);
    }
    count += other.count;
}

std::vector<double> Moments::biased_var() const {
    std::vector<double> v(m2.size());
    for (size_t c = 0; c < v.size(); c++) v[c] = m2[c] / static_cast<double>(count);
    return v;
}

std::vector<double> Moments::unbiased_var() const {
    std::vector<double> v(m2.size());
    for (size_t c = 0; c < v.size(); c++) v[c] = m2[c] / static_cast<double>(count - 1);
    return v;
}

namespace {

void check_batch_tensor(const Tensor& x, const char* arg) {
    BNF_CHECK(x.defined(), arg << ": tensor is undefined");
    BNF_CHECK(x.dim() >= 2 && x.dim() <= 5, arg << ": expected rank 2 to 5 (N, C, spatial...), got rank " << x.dim()
                                                << " with shape " << detail::format_shape(x.shape()));
    BNF_CHECK(x.dtype() == DType::Float32 || x.dtype() == DType::Float16 || x.dtype() == DType::BFloat16,
              arg << ": expected dtype float32, float16 or bfloat16, got " << to_string(x.dtype()));
    BNF_CHECK(x.numel() == 0 || x.raw_data() != nullptr, arg << ": data pointer is null");
}

void check_same_geometry(const Tensor& t, const Tensor& x, const char* arg, const char* x_arg) {
    check_batch_tensor(t, arg);
    BNF_CHECK(t.shape() == x.shape(), arg << ": expected shape " << detail::format_shape(x.shape()) << " (as "
                                          << x_arg << "), got " << detail::format_shape(t.shape()));
    BNF_CHECK(t.dtype() == x.dtype(),
              arg << ": expected dtype " << to_string(x.dtype()) << " (as " << x_arg << "), got " << to_string(t.dtype()));
    BNF_CHECK(t.device() == x.device(),
              arg << ": expected device " << x.device().str() << " (as " << x_arg << "), got " << t.device().str());
}

int64_t per_channel_count(const Tensor& x) { return x.shape()[1] == 0 ? 0 : x.numel() / x.shape()[1]; }

// The mean as float32 shift plus float32 offset (mean − shift): the kernels
// subtract them one after the other, so x − mean keeps its precision when
// the data sit far from zero.
struct SplitMean {
    std::vector<float> shift, offset;
    explicit SplitMean(const std::vector<double>& mean) : shift(mean.size()), offset(mean.size()) {
        for (size_t c = 0; c < mean.size(); c++) {
            shift[c] = static_cast<float>(mean[c]);
            offset[c] = static_cast<float>(mean[c] - static_cast<double>(shift[c]));
        }
    }
};

// The ReLU bitmask as a 3-D kernel buffer (bytes, d1, n).
struct MaskView {
    halide_dimension_t dims[3];
    halide_buffer_t buf{};
    explicit MaskView(const Tensor& mask) {
        const int32_t bytes = static_cast<int32_t>(mask.shape()[2]), rows = static_cast<int32_t>(mask.shape()[1]);
        dims[0] = {0, bytes, 1, 0};
        dims[1] = {0, rows, bytes, 0};
        dims[2] = {0, static_cast<int32_t>(mask.shape()[0]), bytes * rows, 0};
        buf.host = static_cast<uint8_t*>(mask.raw_data());
        buf.type = {halide_type_uint, 8, 1};
        buf.dimensions = 3;
        buf.dim = dims;
    }
};

}  // namespace

Moments batch_moments(const Tensor& x) {
    check_batch_tensor(x, "x");
    const int64_t channels = x.shape()[1];
    Moments m;
    m.count = per_channel_count(x);
    m.mean.assign(channels, 0.0);
    m.m2.assign(channels, 0.0);
    if (x.numel() == 0) return m;
    const Layout kl = detail::kernel_layout_for(x, "x");
    BatchView xv;
    detail::make_batch_view(xv, x, kl, "x");
    ChannelBuffer mean(m.mean.data(), channels), m2(m.m2.data(), channels);
    detail::invoke(detail::find_kernel(Pipeline::stats, x.device(), x.dtype(), kl, Fusion::none),
                   {{"x", &xv.buf}, {"mean", &mean.buf}, {"m2", &m2.buf}});
    return m;
}

ForwardResult normalize(const Tensor& x, const std::vector<double>& mean, const std::vector<double>& var,
                        double eps, const Tensor& weight, const Tensor& bias, Activation activation,
                        const Tensor* addend, bool batch_statistics, int64_t count) {
    check_batch_tensor(x, "x");
    const int64_t channels = x.shape()[1];
    BNF_CHECK(static_cast<int64_t>(mean.size()) == channels && static_cast<int64_t>(var.size()) == channels,
              "normalize: expected " << channels << " per-channel mean/var values, got " << mean.size() << "/"
                                     << var.size());
    BNF_CHECK(!addend || activation == Activation::Relu, "addend: only supported with Activation::Relu (fused BN+add+ReLU)");
    if (addend) check_same_geometry(*addend, x, "addend", "x");

    ForwardResult r;
    SavedContext& s = r.saved;
    s.x = x;
    s.mean = mean;
    s.invstd.resize(channels);
    for (int64_t c = 0; c < channels; c++) s.invstd[c] = 1.0 / std::sqrt(var[c] + eps);
    s.count = count;
    s.batch_statistics = batch_statistics;
    s.activation = activation;
    s.has_addend = addend != nullptr;

    const std::vector<double> w = detail::channel_values(weight, channels, 1.0, "weight");
    const std::vector<double> b = detail::channel_values(bias, channels, 0.0, "bias");
    r.y = Tensor::empty(x.shape(), x.dtype(), x.device(), x.layout());
    if (x.numel() == 0) return r;

    const Layout kl = detail::kernel_layout_for(x, "x");
    BatchView xv, yv, av;
    detail::make_batch_view(xv, x, kl, "x");
    detail::make_batch_view(yv, r.y, kl, "y");
    if (addend) detail::make_batch_view(av, *addend, kl, "addend");

    SplitMean split(mean);
    std::vector<float> scale(channels), beta(channels);
    for (int64_t c = 0; c < channels; c++) {
        scale[c] = static_cast<float>(w[c] * s.invstd[c]);
        beta[c] = static_cast<float>(b[c]);
    }
    ChannelBuffer shift_b(split.shift.data(), channels), offset_b(split.offset.data(), channels),
        scale_b(scale.data(), channels), beta_b(beta.data(), channels);

    const Fusion fusion = activation == Activation::Identity ? Fusion::none : addend ? Fusion::add_relu : Fusion::relu;
    const auto& kernel = detail::find_kernel(Pipeline::apply, x.device(), x.dtype(), kl, fusion);
    if (fusion == Fusion::none) {
        detail::invoke(kernel, {{"x", &xv.buf}, {"shift", &shift_b.buf}, {"offset", &offset_b.buf},
                                {"scale", &scale_b.buf}, {"beta", &beta_b.buf}, {"y", &yv.buf}});
        return r;
    }
    s.mask = detail::empty_mask_for(xv, x.device());
    MaskView mv(s.mask);
    if (fusion == Fusion::relu) {
        detail::invoke(kernel, {{"x", &xv.buf}, {"shift", &shift_b.buf}, {"offset", &offset_b.buf},
                                {"scale", &scale_b.buf}, {"beta", &beta_b.buf}, {"y", &yv.buf}, {"mask", &mv.buf}});
    } else {
        detail::invoke(kernel, {{"x", &xv.buf}, {"addend", &av.buf}, {"shift", &shift_b.buf},
                                {"offset", &offset_b.buf}, {"scale", &scale_b.buf}, {"beta", &beta_b.buf},
                                {"y", &yv.buf}, {"mask", &mv.buf}});
    }
    return r;
}

BackwardSums backward_sums(const Tensor& dy, const SavedContext& saved) {
    const Tensor& x = saved.x;
    check_same_geometry(dy, x, "dy", "the forward input");
    const int64_t channels = x.shape()[1];
    BackwardSums sums;
    sums.sum_dy.assign(channels, 0.0);
    sums.sum_dy_xmu.assign(channels, 0.0);
    if (x.numel() == 0) return sums;

    const Layout kl = detail::kernel_layout_for(x, "x");
    BatchView xv, dyv;
    detail::make_batch_view(xv, x, kl, "x");
    detail::make_batch_view(dyv, dy, kl, "dy");
    SplitMean split(saved.mean);
    ChannelBuffer shift_b(split.shift.data(), channels), offset_b(split.offset.data(), channels);
    ChannelBuffer sum_dy_b(sums.sum_dy.data(), channels), sum_dy_xmu_b(sums.sum_dy_xmu.data(), channels);

    const bool masked = saved.activation == Activation::Relu;
    const auto& kernel = detail::find_kernel(Pipeline::backward_reduce, x.device(), x.dtype(), kl,
                                             masked ? Fusion::masked : Fusion::none);
    if (masked) {
        MaskView mv(saved.mask);
        detail::invoke(kernel, {{"x", &xv.buf}, {"dy", &dyv.buf}, {"mask", &mv.buf}, {"shift", &shift_b.buf},
                                {"offset", &offset_b.buf}, {"sum_dy", &sum_dy_b.buf}, {"sum_dy_xmu", &sum_dy_xmu_b.buf}});
    } else {
        detail::invoke(kernel, {{"x", &xv.buf}, {"dy", &dyv.buf}, {"shift", &shift_b.buf}, {"offset", &offset_b.buf},
                                {"sum_dy", &sum_dy_b.buf}, {"sum_dy_xmu", &sum_dy_xmu_b.buf}});
    }
    return sums;
}

InputGrads backward_input(const Tensor& dy, const SavedContext& saved, const Tensor& weight,
                          const BackwardSums& sums) {
    const Tensor& x = saved.x;
    check_same_geometry(dy, x, "dy", "the forward input");
    const int64_t channels = x.shape()[1];
    const std::vector<double> w = detail::channel_values(weight, channels, 1.0, "weight");

    InputGrads g;
    g.dx = Tensor::empty(x.shape(), x.dtype(), x.device(), x.layout());
    if (saved.has_addend) g.daddend = Tensor::empty(x.shape(), x.dtype(), x.device(), x.layout());
    if (x.numel() == 0) return g;

    std::vector<float> k_dy(channels), k_xmu(channels, 0.0f), k_bias(channels, 0.0f);
    const double m = static_cast<double>(saved.count);
    for (int64_t c = 0; c < channels; c++) {
        const double scale = w[c] * saved.invstd[c];
        k_dy[c] = static_cast<float>(scale);
        if (saved.batch_statistics) {
            k_xmu[c] = static_cast<float>(scale * saved.invstd[c] * saved.invstd[c] * sums.sum_dy_xmu[c] / m);
            k_bias[c] = static_cast<float>(scale * sums.sum_dy[c] / m);
        }
    }

    const Layout kl = detail::kernel_layout_for(x, "x");
    BatchView xv, dyv, dxv, dav;
    detail::make_batch_view(xv, x, kl, "x");
    detail::make_batch_view(dyv, dy, kl, "dy");
    detail::make_batch_view(dxv, g.dx, kl, "dx");
    SplitMean split(saved.mean);
    ChannelBuffer shift_b(split.shift.data(), channels), offset_b(split.offset.data(), channels),
        k_dy_b(k_dy.data(), channels), k_xmu_b(k_xmu.data(), channels), k_bias_b(k_bias.data(), channels);

    const Fusion fusion = saved.activation == Activation::Identity ? Fusion::none
                          : saved.has_addend                       ? Fusion::add_relu
                                                                   : Fusion::relu;
    const auto& kernel = detail::find_kernel(Pipeline::backward_apply, x.device(), x.dtype(), kl, fusion);
    if (fusion == Fusion::none) {
        detail::invoke(kernel, {{"x", &xv.buf}, {"dy", &dyv.buf}, {"shift", &shift_b.buf}, {"offset", &offset_b.buf},
                                {"k_dy", &k_dy_b.buf}, {"k_xmu", &k_xmu_b.buf}, {"k_bias", &k_bias_b.buf},
                                {"dx", &dxv.buf}});
        return g;
    }
    MaskView mv(saved.mask);
    if (fusion == Fusion::relu) {
        detail::invoke(kernel, {{"x", &xv.buf}, {"dy", &dyv.buf}, {"mask", &mv.buf}, {"shift", &shift_b.buf},
                                {"offset", &offset_b.buf}, {"k_dy", &k_dy_b.buf}, {"k_xmu", &k_xmu_b.buf},
                                {"k_bias", &k_bias_b.buf}, {"dx", &dxv.buf}});
    } else {
        detail::make_batch_view(dav, g.daddend, kl, "daddend");
        detail::invoke(kernel, {{"x", &xv.buf}, {"dy", &dyv.buf}, {"mask", &mv.buf}, {"shift", &shift_b.buf},
                                {"offset", &offset_b.buf}, {"k_dy", &k_dy_b.buf}, {"k_xmu", &k_xmu_b.buf},
                                {"k_bias", &k_bias_b.buf}, {"dx", &dxv.buf}, {"daddend", &dav.buf}});
    }
    return g;
}

void parameter_grads(const SavedContext& saved, const BackwardSums& sums, std::vector<double>& dweight,
                     std::vector<double>& dbias) {
    const size_t channels = saved.invstd.size();
    dweight.resize(channels);
    dbias.resize(channels);
    for (size_t c = 0; c < channels; c++) {
        dweight[c] = sums.sum_dy_xmu[c] * saved.invstd[c];
        dbias[c] = sums.sum_dy[c];
    }
}

ForwardResult normalize_with_batch_stats(const Tensor& x, const Moments& moments, double eps, const Tensor& weight,
                                         const Tensor& bias, Activation activation, const Tensor* addend) {
    check_batch_tensor(x, "x");
    BNF_CHECK(moments.count != 1, "Expected more than 1 value per channel when training, got input size "
                                      << detail::format_shape(x.shape()));
    // An empty (global) batch normalises nothing; any finite variance will do.
    const auto var = moments.count == 0 ? std::vector<double>(x.shape()[1], 1.0) : moments.biased_var();
    return normalize(x, moments.mean, var, eps, weight, bias, activation, addend, true, moments.count);
}

ForwardResult normalize_with_running_stats(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                                           double eps, const Tensor& weight, const Tensor& bias, Activation activation,
                                           const Tensor* addend) {
    check_batch_tensor(x, "x");
    const int64_t channels = x.shape()[1];
    const auto mean = detail::channel_values(running_mean, channels, 0.0, "running_mean");
    const auto var = detail::channel_values(running_var, channels, 1.0, "running_var");
    return normalize(x, mean, var, eps, weight, bias, activation, addend, false, per_channel_count(x));
}

BatchNormForward batch_norm_forward(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                                    const Tensor& weight, const Tensor& bias, bool training, double eps,
                                    Activation activation, const Tensor* addend) {
    BatchNormForward out;
    if (training || !running_mean.defined() || !running_var.defined()) {
        out.moments = batch_moments(x);
        out.result = normalize_with_batch_stats(x, *out.moments, eps, weight, bias, activation, addend);
    } else {
        out.result = normalize_with_running_stats(x, running_mean, running_var, eps, weight, bias, activation, addend);
    }
    return out;
}

BatchNormBackward batch_norm_backward(const Tensor& dy, const SavedContext& saved, const Tensor& weight) {
    BatchNormBackward out;
    const BackwardSums sums = backward_sums(dy, saved);
    out.input = backward_input(dy, saved, weight, sums);
    parameter_grads(saved, sums, out.dweight, out.dbias);
    return out;
}

}  // namespace bnforge::functional
