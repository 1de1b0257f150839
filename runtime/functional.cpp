#include <bnforge/functional.h>

#include "channel_values.h"
#include "check.h"
#include "kernels.h"
#include "one_pass.h"

#include <cmath>
#include <optional>

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

// The ReLU bitmask as a 3-D kernel buffer (d0, d1, ceil(N / 8)): see empty_mask_for.
struct MaskView {
    halide_dimension_t dims[3];
    halide_buffer_t buf{};
    explicit MaskView(const Tensor& mask) {
        const int32_t d0 = static_cast<int32_t>(mask.shape()[2]), d1 = static_cast<int32_t>(mask.shape()[1]);
        dims[0] = {0, d0, 1, 0};
        dims[1] = {0, d1, d0, 0};
        dims[2] = {0, static_cast<int32_t>(mask.shape()[0]), d0 * d1, 0};
        detail::init_buffer(buf, mask.raw_data(), mask.device(), {halide_type_uint, 8, 1}, 3, dims);
    }
};

// What backward needs; the one-pass kernel forms the same invstd in-kernel.
SavedContext saved_context(const Tensor& x, const std::vector<double>& mean, const std::vector<double>& var,
                           double eps, Activation activation, bool has_addend, bool batch_statistics, int64_t count) {
    SavedContext s;
    s.x = x;
    s.mean = mean;
    s.invstd.resize(mean.size());
    for (size_t c = 0; c < mean.size(); c++) s.invstd[c] = 1.0 / std::sqrt(var[c] + eps);
    s.count = count;
    s.batch_statistics = batch_statistics;
    s.activation = activation;
    s.has_addend = has_addend;
    return s;
}

Fusion fusion_of(Activation activation, bool has_addend) {
    return activation == Activation::Identity ? Fusion::none : has_addend ? Fusion::add_relu : Fusion::relu;
}

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
    r.saved = saved_context(x, mean, var, eps, activation, addend != nullptr, batch_statistics, count);
    const SavedContext& s = r.saved;

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

    const Fusion fusion = fusion_of(activation, addend != nullptr);
    std::optional<MaskView> mv;
    if (fusion != Fusion::none) {
        r.saved.mask = detail::empty_mask_for(xv, x.device());
        mv.emplace(r.saved.mask);
    }
    detail::invoke(detail::find_kernel(Pipeline::apply, x.device(), x.dtype(), kl, fusion),
                   {{"x", &xv.buf}, {"addend", addend ? &av.buf : nullptr}, {"shift", &shift_b.buf},
                    {"offset", &offset_b.buf}, {"scale", &scale_b.buf}, {"beta", &beta_b.buf}, {"y", &yv.buf},
                    {"mask", mv ? &mv->buf : nullptr}});
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
    std::optional<MaskView> mv;
    if (masked) mv.emplace(saved.mask);
    detail::invoke(detail::find_kernel(Pipeline::backward_reduce, x.device(), x.dtype(), kl,
                                       masked ? Fusion::masked : Fusion::none),
                   {{"x", &xv.buf}, {"dy", &dyv.buf}, {"mask", mv ? &mv->buf : nullptr}, {"shift", &shift_b.buf},
                    {"offset", &offset_b.buf}, {"sum_dy", &sum_dy_b.buf}, {"sum_dy_xmu", &sum_dy_xmu_b.buf}});
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

    std::optional<MaskView> mv;
    if (saved.activation == Activation::Relu) mv.emplace(saved.mask);
    if (saved.has_addend) detail::make_batch_view(dav, g.daddend, kl, "daddend");
    detail::invoke(detail::find_kernel(Pipeline::backward_apply, x.device(), x.dtype(), kl,
                                       fusion_of(saved.activation, saved.has_addend)),
                   {{"x", &xv.buf}, {"dy", &dyv.buf}, {"mask", mv ? &mv->buf : nullptr}, {"shift", &shift_b.buf},
                    {"offset", &offset_b.buf}, {"k_dy", &k_dy_b.buf}, {"k_xmu", &k_xmu_b.buf},
                    {"k_bias", &k_bias_b.buf}, {"dx", &dxv.buf}, {"daddend", saved.has_addend ? &dav.buf : nullptr}});
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

namespace {

// The one-pass kernels (one_pass.h), when they apply; std::nullopt otherwise.
std::optional<BatchNormForward> train_forward_one_pass(const Tensor& x, double eps, const Tensor& weight,
                                                      const Tensor& bias, Activation activation, const Tensor* addend) {
    check_batch_tensor(x, "x");
    BNF_CHECK(!addend || activation == Activation::Relu, "addend: only supported with Activation::Relu (fused BN+add+ReLU)");
    if (addend) check_same_geometry(*addend, x, "addend", "x");
    const int64_t channels = x.shape()[1], count = per_channel_count(x);
    if (x.numel() == 0 || count < 2) return std::nullopt;  // the two-pass route owns these rules
    if (!x.device().is_cpu()) return std::nullopt;         // a GPU streams both passes from memory
    const Layout kl = detail::kernel_layout_for(x, "x");
    BatchView xv, yv, av;
    detail::make_batch_view(xv, x, kl, "x");
    if (!detail::one_pass_fits(xv, 1)) return std::nullopt;

    std::vector<float> w(channels), b(channels);
    {
        const auto wd = detail::channel_values(weight, channels, 1.0, "weight");
        const auto bd = detail::channel_values(bias, channels, 0.0, "bias");
        for (int64_t c = 0; c < channels; c++) {
            w[c] = static_cast<float>(wd[c]);
            b[c] = static_cast<float>(bd[c]);
        }
    }
    BatchNormForward out;
    Moments& m = out.moments.emplace();
    m.count = count;
    m.mean.assign(channels, 0.0);
    m.m2.assign(channels, 0.0);
    Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device(), x.layout());
    detail::make_batch_view(yv, y, kl, "y");
    if (addend) detail::make_batch_view(av, *addend, kl, "addend");
    ChannelBuffer w_b(w.data(), channels), b_b(b.data(), channels), mean_b(m.mean.data(), channels),
        m2_b(m.m2.data(), channels);
    halide_scalar_value_t eps_value;
    eps_value.u.f64 = eps;

    const Fusion fusion = fusion_of(activation, addend != nullptr);
    const auto& kernel = detail::find_kernel(Pipeline::train_forward, x.device(), x.dtype(), kl, fusion);
    Tensor mask;
    std::optional<MaskView> mv;
    if (fusion != Fusion::none) {
        mask = detail::empty_mask_for(xv, x.device());
        mv.emplace(mask);
    }
    detail::invoke(kernel, {{"x", &xv.buf}, {"addend", addend ? &av.buf : nullptr}, {"weight", &w_b.buf},
                            {"bias", &b_b.buf}, {"eps", nullptr, &eps_value}, {"y", &yv.buf},
                            {"mask", mv ? &mv->buf : nullptr}, {"mean", &mean_b.buf}, {"m2", &m2_b.buf}});

    out.result.y = y;
    out.result.saved = saved_context(x, m.mean, m.biased_var(), eps, activation, addend != nullptr, true, count);
    out.result.saved.mask = mask;
    return out;
}

std::optional<BatchNormBackward> train_backward_one_pass(const Tensor& dy, const SavedContext& saved,
                                                         const Tensor& weight) {
    const Tensor& x = saved.x;
    check_same_geometry(dy, x, "dy", "the forward input");
    const int64_t channels = x.shape()[1];
    // Only a forward with this batch's own statistics: a cross-process M needs
    // its sums reduced between the passes.
    if (!saved.batch_statistics || x.numel() == 0 || saved.count != per_channel_count(x)) return std::nullopt;
    if (!x.device().is_cpu()) return std::nullopt;
    const Layout kl = detail::kernel_layout_for(x, "x");
    BatchView xv, dyv, dxv, dav;
    detail::make_batch_view(xv, x, kl, "x");
    if (!detail::one_pass_fits(xv, 2)) return std::nullopt;
    detail::make_batch_view(dyv, dy, kl, "dy");

    std::vector<float> w(channels);
    {
        const std::vector<double> wd = detail::channel_values(weight, channels, 1.0, "weight");
        for (int64_t c = 0; c < channels; c++) w[c] = static_cast<float>(wd[c]);
    }
    BatchNormBackward out;
    BackwardSums sums;
    sums.sum_dy.assign(channels, 0.0);
    sums.sum_dy_xmu.assign(channels, 0.0);
    out.input.dx = Tensor::empty(x.shape(), x.dtype(), x.device(), x.layout());
    detail::make_batch_view(dxv, out.input.dx, kl, "dx");
    if (saved.has_addend) {
        out.input.daddend = Tensor::empty(x.shape(), x.dtype(), x.device(), x.layout());
        detail::make_batch_view(dav, out.input.daddend, kl, "daddend");
    }
    SplitMean split(saved.mean);
    ChannelBuffer shift_b(split.shift.data(), channels), offset_b(split.offset.data(), channels),
        w_b(w.data(), channels), invstd_b(saved.invstd.data(), channels),
        sum_dy_b(sums.sum_dy.data(), channels), sum_dy_xmu_b(sums.sum_dy_xmu.data(), channels);
    std::optional<MaskView> mv;
    if (saved.activation == Activation::Relu) mv.emplace(saved.mask);

    const auto& kernel = detail::find_kernel(Pipeline::train_backward, x.device(), x.dtype(), kl,
                                             fusion_of(saved.activation, saved.has_addend));
    detail::invoke(kernel, {{"x", &xv.buf}, {"dy", &dyv.buf}, {"mask", mv ? &mv->buf : nullptr},
                            {"shift", &shift_b.buf}, {"offset", &offset_b.buf}, {"weight", &w_b.buf},
                            {"invstd", &invstd_b.buf}, {"dx", &dxv.buf},
                            {"daddend", saved.has_addend ? &dav.buf : nullptr}, {"sum_dy", &sum_dy_b.buf},
                            {"sum_dy_xmu", &sum_dy_xmu_b.buf}});
    parameter_grads(saved, sums, out.dweight, out.dbias);
    return out;
}

}  // namespace

BatchNormForward batch_norm_forward(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                                    const Tensor& weight, const Tensor& bias, bool training, double eps,
                                    Activation activation, const Tensor* addend) {
    const bool batch_statistics = training || !running_mean.defined() || !running_var.defined();
    if (batch_statistics) {
        if (auto one_pass = train_forward_one_pass(x, eps, weight, bias, activation, addend)) return std::move(*one_pass);
    }
    BatchNormForward out;
    if (batch_statistics) {
        out.moments = batch_moments(x);
        out.result = normalize_with_batch_stats(x, *out.moments, eps, weight, bias, activation, addend);
    } else {
        out.result = normalize_with_running_stats(x, running_mean, running_var, eps, weight, bias, activation, addend);
    }
    return out;
}

BatchNormBackward batch_norm_backward(const Tensor& dy, const SavedContext& saved, const Tensor& weight) {
    if (auto one_pass = train_backward_one_pass(dy, saved, weight)) return std::move(*one_pass);
    BatchNormBackward out;
    const BackwardSums sums = backward_sums(dy, saved);
    out.input = backward_input(dy, saved, weight, sums);
    parameter_grads(saved, sums, out.dweight, out.dbias);
    return out;
}

}  // namespace bnforge::functional
