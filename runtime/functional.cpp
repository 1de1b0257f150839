#include <bnforge/functional.h>

#include "check.h"
#include "device.h"
#include "kernels.h"
#include "one_pass.h"
#include "pipelines.h"

#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <tuple>

namespace bnforge::functional {

using detail::BatchView;

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

void check_addend(const Tensor* addend, Activation activation, const Tensor& x) {
    BNF_CHECK(!addend || activation == Activation::Relu,
              "addend: only supported with Activation::Relu (fused BN+add+ReLU)");
    if (addend) check_same_geometry(*addend, x, "addend", "x");
}

// Whether two tensors share memory: a common byte (detail::memory_overlaps),
// or the same storage even where the two views are disjoint — state written
// in place gets tensors of its own.
bool overlap(const Tensor& a, const Tensor& b) {
    return detail::memory_overlaps(a, b) || (a.same_storage(b) && a.numel() > 0 && b.numel() > 0);
}

// The tensors a step writes in place must not share memory with one another
// or with what it reads: the kernels would read values they had just written.
void check_disjoint(const std::vector<std::pair<const char*, const Tensor*>>& written,
                    const std::vector<std::pair<const char*, const Tensor*>>& read) {
    for (size_t i = 0; i < written.size(); i++) {
        for (size_t j = 0; j < i; j++)
            BNF_CHECK(!overlap(*written[i].second, *written[j].second),
                      written[i].first << " shares memory with " << written[j].first
                                       << "; both are written in place and must be separate tensors");
        for (const auto& [name, t] : read)
            BNF_CHECK(!overlap(*written[i].second, *t),
                      written[i].first << " shares memory with " << name << ", which the same step reads");
    }
}

int64_t per_channel_count(const Tensor& x) { return x.shape()[1] == 0 ? 0 : x.numel() / x.shape()[1]; }

Tensor filled(std::vector<int64_t> shape, DType dtype, double value, Device device) {
    Tensor t = Tensor::empty(std::move(shape), dtype, device);
    t.fill_(value);
    return t;
}

// C float32 copies of `value` on `device`, made once per (device, C, value)
// and kept: a module without weight or bias then makes no host copy per call
// (a GPU step stays free of host traffic, and capturable). Only ever read.
// Never destroyed: device runtimes may be gone by the time statics are.
const Tensor& constant_channels(double value, int64_t channels, Device device) {
    static std::mutex mutex;
    static auto* cache = new std::map<std::tuple<int, int, int64_t, double>, Tensor>;
    std::lock_guard<std::mutex> lock(mutex);
    Tensor& t = (*cache)[{static_cast<int>(device.kind), device.index, channels, value}];
    if (!t.defined()) t = filled({channels}, DType::Float32, value, device);
    return t;
}

// A per-channel parameter or statistic as the kernels take it: C float32
// values, dense, on `device`. The modules' own tensors are already so and are
// used as they are (not even the handle is copied: this is every call's fixed
// cost); anything else is converted once into `scratch`, and an undefined
// tensor is `fill` (constant_channels). Returns the tensor to pass.
const Tensor& kernel_channel(const Tensor& t, int64_t channels, double fill, Device device, const char* arg,
                             Tensor& scratch) {
    if (!t.defined()) return constant_channels(fill, channels, device);
    BNF_CHECK(t.numel() == channels, arg << ": expected " << channels << " values (one per channel), got shape "
                                         << detail::format_shape(t.shape()));
    BNF_CHECK(t.dtype() == DType::Float32 || t.dtype() == DType::Float16 || t.dtype() == DType::BFloat16,
              arg << ": expected a float tensor, got " << to_string(t.dtype()));
    if (t.dtype() == DType::Float32 && t.is_contiguous() && t.device() == device) return t;
    scratch = Tensor::empty(t.shape(), DType::Float32, device);
    scratch.copy_(t.device() == device ? t : t.to(device));
    return scratch;
}

// γ and β for the kernels: both undefined is affine=False (none); one of
// them undefined reads as ones / zeros.
struct Affine {
    const Tensor* weight = nullptr;
    const Tensor* bias = nullptr;
    Tensor weight_scratch, bias_scratch;
    Affine(const Tensor& w, const Tensor& b, int64_t channels, Device device) {
        if (!w.defined() && !b.defined()) return;
        weight = &kernel_channel(w, channels, 1.0, device, "weight", weight_scratch);
        bias = &kernel_channel(b, channels, 0.0, device, "bias", bias_scratch);
    }
    Affine(const Affine&) = delete;
    void set(detail::ForwardFinalizeArgs& args) const {
        args.weight = weight;
        args.bias = bias;
    }
};

// C zero moments or sums: an empty batch, which no kernel reduces.
Tensor zero_rows(int64_t rows, int64_t channels, Device device) {
    return filled({rows, channels}, DType::Float64, 0.0, device);
}

// One row of a (rows, C) float64 tensor, on the host.
std::vector<double> host_row(const Tensor& rows, int row) {
    if (!rows.defined()) return {};
    const Tensor h = rows.device().is_cpu() ? rows : rows.to(Device::cpu());
    const int64_t channels = h.shape()[1];
    const double* p = h.data<double>() + row * channels;
    return std::vector<double>(p, p + channels);
}

// What backward needs from a forward: its input, the ReLU mask, and the
// per-channel constants, moved out of `k`.
SavedContext saved_context(const Tensor& x, Tensor mask, detail::ApplyConstants&& k, Activation activation,
                           bool has_addend, bool batch_statistics, int64_t count) {
    SavedContext s;
    s.x = x;
    s.mask = std::move(mask);
    s.mean = std::move(k.saved_mean);
    s.invstd = std::move(k.saved_invstd);
    s.shift = std::move(k.shift);
    s.offset = std::move(k.offset);
    s.count = count;
    s.batch_statistics = batch_statistics;
    s.activation = activation;
    s.has_addend = has_addend;
    return s;
}

// y and the saved context from a forward's per-channel constants (an empty
// batch keeps them too: its backward still runs the per-channel step).
ForwardResult apply_constants(const Tensor& x, detail::ApplyConstants&& k, Activation activation,
                              const Tensor* addend, bool batch_statistics, int64_t count) {
    ForwardResult r;
    r.y = Tensor::empty(x.shape(), x.dtype(), x.device(), x.layout());
    Tensor mask;
    if (x.numel() > 0) {
        const Layout kl = detail::kernel_layout_for(x, "x");
        BatchView xv, yv, av;
        detail::make_batch_view(xv, x, kl, "x");
        detail::make_batch_view(yv, r.y, kl, "y");
        if (addend) detail::make_batch_view(av, *addend, kl, "addend");
        if (activation == Activation::Relu) mask = detail::empty_mask_for(xv, x.device());
        detail::call_apply(xv, addend ? &av : nullptr, k, yv, mask.defined() ? &mask : nullptr);
    }
    r.saved = saved_context(x, std::move(mask), std::move(k), activation, addend != nullptr, batch_statistics, count);
    return r;
}

// dweight/dbias of one backward alone: accumulators that start at zero.
GradAccumulators fresh_grads(int64_t channels, Device device) {
    return {filled({channels}, DType::Float32, 0.0, device), filled({channels}, DType::Float32, 0.0, device)};
}

}  // namespace

void Moments::merge(const Moments& other) {
    if (other.count == 0) return;
    if (count == 0) {
        *this = other;
        return;
    }
    const int64_t channels = rows.shape()[1];
    BNF_CHECK(other.rows.shape()[1] == channels,
              "Moments::merge: channel count " << other.rows.shape()[1] << " != " << channels);
    BNF_CHECK(other.rows.device() == rows.device(), "Moments::merge: moments on " << other.rows.device().str()
                                                                                  << " and " << rows.device().str());
    // The two parts side by side as merge_moments' (ranks, rows, C) input;
    // assembled on the host (SyncBatchNorm gathers its rows on the device).
    const size_t part = static_cast<size_t>(detail::kMomentRows * channels);
    Tensor gathered = Tensor::empty({2, detail::kMomentRows, channels}, DType::Float64);
    std::memcpy(gathered.data<double>(), rows.to(Device::cpu()).data<double>(), part * sizeof(double));
    std::memcpy(gathered.data<double>() + part, other.rows.to(Device::cpu()).data<double>(), part * sizeof(double));
    Tensor merged = detail::channel_rows(detail::kMomentRows, channels, rows.device());
    detail::call_merge_moments(gathered.to(rows.device()), merged);
    rows = merged;
    count += other.count;
}

Moments merge_gathered(const Tensor& gathered, int64_t count) {
    BNF_CHECK(gathered.defined() && gathered.dim() == 3 && gathered.shape()[1] == detail::kMomentRows &&
                  gathered.dtype() == DType::Float64 && gathered.is_contiguous(),
              "merge_gathered: expected a dense float64 (ranks, " << detail::kMomentRows << ", C) tensor");
    Moments m;
    m.count = count;
    m.rows = detail::channel_rows(detail::kMomentRows, gathered.shape()[2], gathered.device());
    detail::call_merge_moments(gathered, m.rows);
    return m;
}

std::vector<double> Moments::mean() const { return host_row(rows, abi::kMomentMean); }
std::vector<double> Moments::m2() const { return host_row(rows, abi::kMomentM2); }

std::vector<double> Moments::biased_var() const {
    std::vector<double> v = m2();
    for (double& e : v) e /= static_cast<double>(count);
    return v;
}

std::vector<double> Moments::unbiased_var() const {
    std::vector<double> v = m2();
    for (double& e : v) e /= static_cast<double>(count - 1);
    return v;
}

Moments batch_moments(const Tensor& x) {
    check_batch_tensor(x, "x");
    const int64_t channels = x.shape()[1];
    Moments m;
    m.count = per_channel_count(x);
    if (x.numel() == 0) {
        m.rows = zero_rows(detail::kMomentRows, channels, x.device());
        return m;
    }
    const Layout kl = detail::kernel_layout_for(x, "x");
    BatchView xv;
    detail::make_batch_view(xv, x, kl, "x");
    m.rows = detail::channel_rows(detail::kMomentRows, channels, x.device());
    detail::call_stats(xv, m.rows);
    return m;
}

ForwardResult normalize_with_batch_stats(const Tensor& x, const Moments& moments, double eps, const Tensor& weight,
                                         const Tensor& bias, Activation activation, const Tensor* addend,
                                         const RunningUpdate* update) {
    check_batch_tensor(x, "x");
    check_addend(addend, activation, x);
    const int64_t channels = x.shape()[1];
    BNF_CHECK(moments.count != 1, "Expected more than 1 value per channel when training, got input size "
                                      << detail::format_shape(x.shape()));
    const std::vector<int64_t> moments_shape = {detail::kMomentRows, channels};
    BNF_CHECK(!moments.rows.defined() || (moments.rows.shape() == moments_shape && moments.rows.device() == x.device()),
              "normalize_with_batch_stats: expected moments of " << channels << " channels on " << x.device().str());
    if (update)
        check_disjoint({{"running_mean", &update->running_mean},
                        {"running_var", &update->running_var},
                        {"num_batches_tracked", &update->num_batches_tracked}},
                       {{"x", &x}, {"weight", &weight}, {"bias", &bias}, {"moments", &moments.rows}});
    const Affine a(weight, bias, channels, x.device());
    Moments empty;
    if (!moments.rows.defined()) empty.rows = zero_rows(detail::kMomentRows, channels, x.device());
    detail::ForwardFinalizeArgs args;
    args.moments = moments.rows.defined() ? &moments : &empty;
    args.update = update;
    a.set(args);
    args.eps = eps;
    return apply_constants(x, detail::call_forward_finalize(args, channels, x.device()), activation, addend, true,
                           moments.count);
}

ForwardResult normalize_with_running_stats(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                                           double eps, const Tensor& weight, const Tensor& bias, Activation activation,
                                           const Tensor* addend) {
    check_batch_tensor(x, "x");
    check_addend(addend, activation, x);
    const int64_t channels = x.shape()[1];
    const Affine a(weight, bias, channels, x.device());
    Tensor rm_scratch, rv_scratch;
    detail::ForwardFinalizeArgs args;
    args.running_mean = &kernel_channel(running_mean, channels, 0.0, x.device(), "running_mean", rm_scratch);
    args.running_var = &kernel_channel(running_var, channels, 1.0, x.device(), "running_var", rv_scratch);
    a.set(args);
    args.eps = eps;
    return apply_constants(x, detail::call_forward_finalize(args, channels, x.device()), activation, addend, false,
                           per_channel_count(x));
}

BackwardSums backward_sums(const Tensor& dy, const SavedContext& saved) {
    const Tensor& x = saved.x;
    check_same_geometry(dy, x, "dy", "the forward input");
    const int64_t channels = x.shape()[1];
    BackwardSums sums;
    if (x.numel() == 0) {
        sums.sums = zero_rows(detail::kSumRows, channels, x.device());
        return sums;
    }
    const Layout kl = detail::kernel_layout_for(x, "x");
    BatchView xv, dyv;
    detail::make_batch_view(xv, x, kl, "x");
    detail::make_batch_view(dyv, dy, kl, "dy");
    sums.sums = detail::channel_rows(detail::kSumRows, channels, x.device());
    const bool masked = saved.activation == Activation::Relu;
    detail::call_backward_reduce(xv, dyv, masked ? &saved.mask : nullptr, saved, sums.sums);
    return sums;
}

InputGrads backward_input(const Tensor& dy, const SavedContext& saved, const Tensor& weight,
                          const BackwardSums& sums, const GradAccumulators* grads) {
    const Tensor& x = saved.x;
    check_same_geometry(dy, x, "dy", "the forward input");
    const int64_t channels = x.shape()[1];
    const std::vector<int64_t> sums_shape = {detail::kSumRows, channels};
    BNF_CHECK(sums.sums.defined() && sums.sums.shape() == sums_shape,
              "backward_input: expected sums of " << channels << " channels");
    const bool accumulates = grads && grads->weight_grad.defined();
    if (accumulates)
        check_disjoint({{"weight_grad", &grads->weight_grad}, {"bias_grad", &grads->bias_grad}},
                       {{"dy", &dy}, {"weight", &weight}, {"sums", &sums.sums}, {"x", &x}});
    static const Tensor none;
    Tensor w_scratch;
    const Tensor& w = weight.defined() || accumulates
                          ? kernel_channel(weight, channels, 1.0, x.device(), "weight", w_scratch)
                          : none;
    const detail::GradCoefficients k = detail::call_backward_finalize(saved, w, sums.sums, grads);

    InputGrads g;
    g.dx = Tensor::empty(x.shape(), x.dtype(), x.device(), x.layout());
    if (saved.has_addend) g.daddend = Tensor::empty(x.shape(), x.dtype(), x.device(), x.layout());
    if (x.numel() == 0) return g;
    const Layout kl = detail::kernel_layout_for(x, "x");
    BatchView xv, dyv, dxv, dav;
    detail::make_batch_view(xv, x, kl, "x");
    detail::make_batch_view(dyv, dy, kl, "dy");
    detail::make_batch_view(dxv, g.dx, kl, "dx");
    if (saved.has_addend) detail::make_batch_view(dav, g.daddend, kl, "daddend");
    detail::call_backward_apply(xv, dyv, saved.activation == Activation::Relu ? &saved.mask : nullptr, saved, k, dxv,
                                saved.has_addend ? &dav : nullptr);
    return g;
}

namespace {

// The one-pass kernels (one_pass.h), when they apply; std::nullopt otherwise.
std::optional<BatchNormForward> train_forward_one_pass(const Tensor& x, double eps, const Tensor& weight,
                                                      const Tensor& bias, Activation activation, const Tensor* addend,
                                                      const RunningUpdate* update) {
    check_batch_tensor(x, "x");
    check_addend(addend, activation, x);
    const int64_t channels = x.shape()[1], count = per_channel_count(x);
    if (x.numel() == 0 || count < 2) return std::nullopt;  // the two-pass route owns these rules
    const Layout kl = detail::kernel_layout_for(x, "x");
    BatchView xv, yv, av;
    detail::make_batch_view(xv, x, kl, "x");
    if (!detail::one_pass_fits(xv, 1, x.device())) return std::nullopt;

    const Affine a(weight, bias, channels, x.device());
    const Tensor& w = a.weight ? *a.weight : constant_channels(1.0, channels, x.device());
    const Tensor& b = a.bias ? *a.bias : constant_channels(0.0, channels, x.device());
    BatchNormForward out;
    Moments& m = out.moments.emplace();
    m.count = count;
    m.rows = detail::channel_rows(detail::kMomentRows, channels, x.device());
    Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device(), x.layout());
    detail::make_batch_view(yv, y, kl, "y");
    if (addend) detail::make_batch_view(av, *addend, kl, "addend");
    Tensor mask;
    if (activation == Activation::Relu) mask = detail::empty_mask_for(xv, x.device());
    detail::call_train_forward(xv, addend ? &av : nullptr, w, b, eps, yv, mask.defined() ? &mask : nullptr, m.rows);

    // The per-channel step still runs: the saved context for backward, and the update.
    detail::ForwardFinalizeArgs args;
    args.moments = &m;
    args.update = update;
    a.set(args);
    args.eps = eps;
    out.result.saved = saved_context(x, mask, detail::call_forward_finalize(args, channels, x.device()), activation,
                                     addend != nullptr, true, count);
    out.result.y = y;
    return out;
}

std::optional<BatchNormBackward> train_backward_one_pass(const Tensor& dy, const SavedContext& saved,
                                                         const Tensor& weight, const GradAccumulators* grads) {
    const Tensor& x = saved.x;
    check_same_geometry(dy, x, "dy", "the forward input");
    const int64_t channels = x.shape()[1];
    // Only a forward with this batch's own statistics: a cross-process M needs
    // its sums reduced between the passes.
    if (!saved.batch_statistics || x.numel() == 0 || saved.count != per_channel_count(x)) return std::nullopt;
    const Layout kl = detail::kernel_layout_for(x, "x");
    BatchView xv, dyv, dxv, dav;
    detail::make_batch_view(xv, x, kl, "x");
    if (!detail::one_pass_fits(xv, 2, x.device())) return std::nullopt;
    detail::make_batch_view(dyv, dy, kl, "dy");

    Tensor w_scratch;
    const Tensor& w = kernel_channel(weight, channels, 1.0, x.device(), "weight", w_scratch);
    BatchNormBackward out;
    out.input.dx = Tensor::empty(x.shape(), x.dtype(), x.device(), x.layout());
    detail::make_batch_view(dxv, out.input.dx, kl, "dx");
    if (saved.has_addend) {
        out.input.daddend = Tensor::empty(x.shape(), x.dtype(), x.device(), x.layout());
        detail::make_batch_view(dav, out.input.daddend, kl, "daddend");
    }
    BackwardSums sums;
    sums.sums = detail::channel_rows(detail::kSumRows, channels, x.device());
    detail::call_train_backward(xv, dyv, saved.activation == Activation::Relu ? &saved.mask : nullptr, saved, w, dxv,
                                saved.has_addend ? &dav : nullptr, sums.sums);
    // dγ/dβ from the per-channel step (its dx coefficients are the kernel's own, unused).
    if (grads) {
        detail::call_backward_finalize(saved, w, sums.sums, grads);
    } else if (weight.defined()) {
        const GradAccumulators fresh = fresh_grads(channels, x.device());
        detail::call_backward_finalize(saved, w, sums.sums, &fresh);
        out.dweight = fresh.weight_grad;
        out.dbias = fresh.bias_grad;
    }
    return out;
}

}  // namespace

BatchNormForward batch_norm_forward(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                                    const Tensor& weight, const Tensor& bias, bool training, double eps,
                                    Activation activation, const Tensor* addend, const RunningUpdate* update) {
    const bool batch_statistics = training || !running_mean.defined() || !running_var.defined();
    BNF_CHECK(batch_statistics || !update, "batch_norm_forward: a running-statistics update needs batch statistics");
    if (batch_statistics) {
        if (auto one_pass = train_forward_one_pass(x, eps, weight, bias, activation, addend, update)) {
            return std::move(*one_pass);
        }
    }
    BatchNormForward out;
    if (batch_statistics) {
        out.moments = batch_moments(x);
        out.result = normalize_with_batch_stats(x, *out.moments, eps, weight, bias, activation, addend, update);
    } else {
        out.result = normalize_with_running_stats(x, running_mean, running_var, eps, weight, bias, activation, addend);
    }
    return out;
}

BatchNormBackward batch_norm_backward(const Tensor& dy, const SavedContext& saved, const Tensor& weight,
                                      const GradAccumulators* grads) {
    if (auto one_pass = train_backward_one_pass(dy, saved, weight, grads)) return std::move(*one_pass);
    BatchNormBackward out;
    const BackwardSums sums = backward_sums(dy, saved);
    if (grads || !weight.defined()) {
        out.input = backward_input(dy, saved, weight, sums, grads);
    } else {
        const GradAccumulators fresh = fresh_grads(saved.x.shape()[1], saved.x.device());
        out.input = backward_input(dy, saved, weight, sums, &fresh);
        out.dweight = fresh.weight_grad;
        out.dbias = fresh.bias_grad;
    }
    return out;
}

}  // namespace bnforge::functional
