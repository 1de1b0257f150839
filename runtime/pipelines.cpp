#include "pipelines.h"

#include "check.h"
#include "device.h"
#include "streaming_stores.h"

#include <string>
#include <vector>

namespace bnforge::detail {

namespace arg = abi::arg;
using functional::SavedContext;

namespace {

// A dense per-channel tensor as a kernel buffer: (C) and (1, C, 1, 1) alike as
// 1-D; (rows, C) as 2-D (c, row); (ranks, rows, C) as 3-D; a scalar as 0-D.
struct ChannelView {
    halide_dimension_t dims[3];
    halide_buffer_t buf;
    ChannelView(const Tensor& t, int dimensions) {
        BNF_ASSERT(t.defined() && t.is_contiguous(), "a dense per-channel tensor");
        if (dimensions == 1) {
            dims[0] = {0, static_cast<int32_t>(t.numel()), 1, 0};
        } else {
            BNF_ASSERT(t.dim() == dimensions, "a rank-" << dimensions << " per-channel tensor");
            int32_t stride = 1;
            for (int d = 0; d < dimensions; d++) {
                const auto extent = static_cast<int32_t>(t.shape()[dimensions - 1 - d]);
                dims[d] = {0, extent, stride, 0};
                stride *= extent;
            }
        }
        init_buffer(buf, t.raw_data(), t.device(), halide_type_of(t.dtype()), dimensions, dims);
        // The CUDA context hooks run the next kernel on the device of its tensors.
        if (t.device().is_cuda()) set_current_cuda_device(t.device().index);
    }
};

// The ReLU bitmask as a 3-D kernel buffer (d0, d1, ceil(N / 8)): see empty_mask_for.
struct MaskView {
    halide_dimension_t dims[3];
    halide_buffer_t buf;
    explicit MaskView(const Tensor& mask) {
        const auto d0 = static_cast<int32_t>(mask.shape()[2]), d1 = static_cast<int32_t>(mask.shape()[1]);
        dims[0] = {0, d0, 1, 0};
        dims[1] = {0, d1, d0, 0};
        dims[2] = {0, static_cast<int32_t>(mask.shape()[0]), d0 * d1, 0};
        init_buffer(buf, mask.raw_data(), mask.device(), {halide_type_uint, 8, 1}, 3, dims);
    }
};

// A batch view as a kernel argument (nullptr: an argument the variant lacks).
halide_buffer_t* buffer(const BatchView& v) { return const_cast<halide_buffer_t*>(&v.buf); }
halide_buffer_t* buffer(const BatchView* v) { return v ? buffer(*v) : nullptr; }

// The kernel of `pipeline` that writes `out`: its streaming variant where
// streaming_kernel_for allows one (`second` and `mask` as there), else the ordinary one.
const KernelEntry& kernel_writing(const BatchView& out, Pipeline pipeline, Device device, Fusion fusion,
                                  const halide_buffer_t* second = nullptr, const halide_buffer_t* mask = nullptr) {
    if (const KernelEntry* streaming = streaming_kernel_for(out, pipeline, device, fusion, second, mask))
        return *streaming;
    return find_kernel(pipeline, device, out.dtype, out.kernel_layout, fusion);
}

// Several new C-vectors as rows of one allocation: one trip through the
// block cache instead of one each, a visible part of a small call. (Each on
// its own on OpenCL, whose buffers cannot be offset.)
void channel_vectors(int64_t channels, DType dtype, Device device, std::initializer_list<Tensor*> out) {
    if (device.kind == Device::Kind::OpenCL) {
        for (Tensor* t : out) *t = Tensor::empty({channels}, dtype, device);
        return;
    }
    const Tensor rows = Tensor::empty({static_cast<int64_t>(out.size()), channels}, dtype, device);
    int64_t row = 0;
    for (Tensor* t : out) *t = rows.select(0, row++);
}

Fusion fusion_of(functional::Activation activation, bool has_addend) {
    return activation == functional::Activation::Identity ? Fusion::none
           : has_addend                                    ? Fusion::add_relu
                                                           : Fusion::relu;
}

// The output that updates input `name` in place (kernel_abi.h).
std::string updated_name(const char* name) { return std::string(name) + abi::kUpdatedSuffix; }

// Every concatenation of one part from each list, the first list varying
// slowest: the names of a channel family's variants, spelled once (most are
// past std::string's inline capacity, so building one per call allocates).
std::vector<std::string> spellings(std::initializer_list<std::initializer_list<const char*>> parts) {
    std::vector<std::string> out{""};
    for (const auto& choices : parts) {
        std::vector<std::string> longer;
        for (const std::string& prefix : out)
            for (const char* choice : choices) longer.push_back(prefix + choice);
        out = std::move(longer);
    }
    return out;
}

// The forward_finalize variant for these options: generators/CMakeLists.txt's
// VARIANTS labels, <statistics>[_<update>][_nbt][_affine].
const std::string& finalize_variant(bool batch, const functional::RunningUpdate* update, bool affine) {
    static const std::vector<std::string> names =
        spellings({{"running", "batch"}, {"", "_momentum", "_cumulative"}, {"", "_nbt"}, {"", "_affine"}});
    const int u = !update ? 0 : update->factor ? 1 : 2;
    const int nbt = update && update->num_batches_tracked.defined() ? 1 : 0;
    return names[static_cast<size_t>(((batch ? 1 : 0) * 3 + u) * 4 + nbt * 2 + (affine ? 1 : 0))];
}

// The backward_finalize variant: <statistics>[_affine][_grads].
const std::string& backward_finalize_variant(bool batch, bool affine, bool grads) {
    static const std::vector<std::string> names = spellings({{"running", "batch"}, {"", "_affine"}, {"", "_grads"}});
    return names[static_cast<size_t>((batch ? 1 : 0) * 4 + (affine ? 1 : 0) * 2 + (grads ? 1 : 0))];
}

}  // namespace

Tensor channel_rows(int64_t rows, int64_t channels, Device device) {
    return Tensor::empty({rows, channels}, DType::Float64, device);
}

void call_stats(const BatchView& x, const Tensor& moments) {
    ChannelView m(moments, 2);
    invoke(find_kernel(Pipeline::stats, moments.device(), x.dtype, x.kernel_layout, Fusion::none),
           {{arg::x, buffer(x)}, {arg::moments, &m.buf}});
}

ApplyConstants call_forward_finalize(const ForwardFinalizeArgs& a, int64_t channels, Device device) {
    const bool batch = a.moments != nullptr, affine = a.weight != nullptr;
    const functional::RunningUpdate* u = a.update;
    BNF_ASSERT(batch || !u, "a running-statistics update from batch statistics");
    ApplyConstants k;
    channel_vectors(channels, DType::Float32, device, {&k.shift, &k.offset, &k.scale, &k.beta});
    channel_vectors(channels, DType::Float64, device, {&k.saved_mean, &k.saved_invstd});

    std::optional<ChannelView> moments, rm, rv, nbt, w, b;
    if (batch) moments.emplace(a.moments->rows, 2);
    if (u) {
        rm.emplace(u->running_mean, 1);
        rv.emplace(u->running_var, 1);
    } else if (!batch) {
        rm.emplace(*a.running_mean, 1);
        rv.emplace(*a.running_var, 1);
    }
    const bool counted = u && u->num_batches_tracked.defined();
    if (counted) nbt.emplace(u->num_batches_tracked, 0);
    if (affine) {
        w.emplace(*a.weight, 1);
        b.emplace(*a.bias, 1);
    }
    ChannelView shift(k.shift, 1), offset(k.offset, 1), scale(k.scale, 1), beta(k.beta, 1), mean(k.saved_mean, 1),
        invstd(k.saved_invstd, 1);
    halide_scalar_value_t eps, factor;
    eps.u.f64 = a.eps;
    factor.u.f64 = u && u->factor ? *u->factor : 0.0;
    static const std::string rm_out = updated_name(arg::running_mean), rv_out = updated_name(arg::running_var),
                             nbt_out = updated_name(arg::num_batches_tracked);
    invoke(find_channel_kernel(Pipeline::forward_finalize, device, finalize_variant(batch, u, affine)),
           {{arg::moments, moments ? &moments->buf : nullptr},
            {arg::running_mean, rm ? &rm->buf : nullptr},
            {arg::running_var, rv ? &rv->buf : nullptr},
            // In place: the same memory as input and output (see bn_forward_finalize).
            {rm_out.c_str(), u ? &rm->buf : nullptr},
            {rv_out.c_str(), u ? &rv->buf : nullptr},
            {arg::factor, nullptr, u && u->factor ? &factor : nullptr},
            {arg::num_batches_tracked, counted ? &nbt->buf : nullptr},
            {nbt_out.c_str(), counted ? &nbt->buf : nullptr},
            {arg::weight, w ? &w->buf : nullptr},
            {arg::bias, b ? &b->buf : nullptr},
            {arg::eps, nullptr, &eps},
            {arg::shift, &shift.buf},
            {arg::offset, &offset.buf},
            {arg::scale, &scale.buf},
            {arg::beta, &beta.buf},
            {arg::saved_mean, &mean.buf},
            {arg::saved_invstd, &invstd.buf}});
    return k;
}

void call_apply(const BatchView& x, const BatchView* addend, const ApplyConstants& k, const BatchView& y,
                const Tensor* mask) {
    ChannelView shift(k.shift, 1), offset(k.offset, 1), scale(k.scale, 1), beta(k.beta, 1);
    std::optional<MaskView> mv;
    if (mask) mv.emplace(*mask);
    const Fusion fusion = !mask ? Fusion::none : addend ? Fusion::add_relu : Fusion::relu;
    invoke(kernel_writing(y, Pipeline::apply, k.shift.device(), fusion, nullptr, mv ? &mv->buf : nullptr),
           {{arg::x, buffer(x)},
            {arg::addend, buffer(addend)},
            {arg::shift, &shift.buf},
            {arg::offset, &offset.buf},
            {arg::scale, &scale.buf},
            {arg::beta, &beta.buf},
            {arg::y, buffer(y)},
            {arg::mask, mv ? &mv->buf : nullptr}});
}

void call_train_forward(const BatchView& x, const BatchView* addend, const Tensor& weight, const Tensor& bias,
                        double eps, const BatchView& y, const Tensor* mask, const Tensor& moments) {
    ChannelView w(weight, 1), b(bias, 1), m(moments, 2);
    std::optional<MaskView> mv;
    if (mask) mv.emplace(*mask);
    halide_scalar_value_t eps_value;
    eps_value.u.f64 = eps;
    const Fusion fusion = !mask ? Fusion::none : addend ? Fusion::add_relu : Fusion::relu;
    invoke(kernel_writing(y, Pipeline::train_forward, moments.device(), fusion, nullptr, mv ? &mv->buf : nullptr),
           {{arg::x, buffer(x)},
            {arg::addend, buffer(addend)},
            {arg::weight, &w.buf},
            {arg::bias, &b.buf},
            {arg::eps, nullptr, &eps_value},
            {arg::y, buffer(y)},
            {arg::mask, mv ? &mv->buf : nullptr},
            {arg::moments, &m.buf}});
}

void call_backward_reduce(const BatchView& x, const BatchView& dy, const Tensor* mask, const SavedContext& saved,
                          const Tensor& sums) {
    ChannelView shift(saved.shift, 1), offset(saved.offset, 1), s(sums, 2);
    std::optional<MaskView> mv;
    if (mask) mv.emplace(*mask);
    invoke(find_kernel(Pipeline::backward_reduce, sums.device(), x.dtype, x.kernel_layout,
                       mask ? Fusion::masked : Fusion::none),
           {{arg::x, buffer(x)},
            {arg::dy, buffer(dy)},
            {arg::mask, mv ? &mv->buf : nullptr},
            {arg::shift, &shift.buf},
            {arg::offset, &offset.buf},
            {arg::sums, &s.buf}});
}

GradCoefficients call_backward_finalize(const SavedContext& saved, const Tensor& weight, const Tensor& sums,
                                        const functional::GradAccumulators* grads) {
    const Device device = sums.device();
    const int64_t channels = sums.shape()[1];
    GradCoefficients k;
    channel_vectors(channels, DType::Float32, device, {&k.k_dy, &k.k_xmu, &k.k_bias});
    const bool affine = weight.defined();
    if (grads && !grads->weight_grad.defined()) grads = nullptr;  // none wanted (frozen)
    BNF_ASSERT(!grads || affine, "parameter gradients of an affine module");
    ChannelView s(sums, 2), invstd(saved.invstd, 1), k_dy(k.k_dy, 1), k_xmu(k.k_xmu, 1), k_bias(k.k_bias, 1);
    std::optional<ChannelView> w, local, gw, gb;
    if (affine) w.emplace(weight, 1);
    if (grads) {
        local.emplace(grads->local ? grads->local->sums : sums, 2);
        gw.emplace(grads->weight_grad, 1);
        gb.emplace(grads->bias_grad, 1);
    }
    halide_scalar_value_t count;
    count.u.f64 = static_cast<double>(saved.count);
    const std::string& variant = backward_finalize_variant(saved.batch_statistics, affine, grads != nullptr);
    static const std::string gw_out = updated_name(arg::weight_grad), gb_out = updated_name(arg::bias_grad);
    invoke(find_channel_kernel(Pipeline::backward_finalize, device, variant),
           {{arg::sums, &s.buf},
            {arg::local_sums, local ? &local->buf : nullptr},
            {arg::saved_invstd, &invstd.buf},
            {arg::weight, w ? &w->buf : nullptr},
            {arg::count, nullptr, &count},
            {arg::weight_grad, gw ? &gw->buf : nullptr},
            {arg::bias_grad, gb ? &gb->buf : nullptr},
            // In place: the same memory as input and output (see bn_backward_finalize).
            {gw_out.c_str(), gw ? &gw->buf : nullptr},
            {gb_out.c_str(), gb ? &gb->buf : nullptr},
            {arg::k_dy, &k_dy.buf},
            {arg::k_xmu, &k_xmu.buf},
            {arg::k_bias, &k_bias.buf}});
    return k;
}

void call_backward_apply(const BatchView& x, const BatchView& dy, const Tensor* mask, const SavedContext& saved,
                         const GradCoefficients& k, const BatchView& dx, const BatchView* daddend) {
    ChannelView shift(saved.shift, 1), offset(saved.offset, 1), k_dy(k.k_dy, 1), k_xmu(k.k_xmu, 1),
        k_bias(k.k_bias, 1);
    std::optional<MaskView> mv;
    if (mask) mv.emplace(*mask);
    const Fusion fusion = fusion_of(saved.activation, saved.has_addend);
    invoke(kernel_writing(dx, Pipeline::backward_apply, k.k_dy.device(), fusion, buffer(daddend)),
           {{arg::x, buffer(x)},
            {arg::dy, buffer(dy)},
            {arg::mask, mv ? &mv->buf : nullptr},
            {arg::shift, &shift.buf},
            {arg::offset, &offset.buf},
            {arg::k_dy, &k_dy.buf},
            {arg::k_xmu, &k_xmu.buf},
            {arg::k_bias, &k_bias.buf},
            {arg::dx, buffer(dx)},
            {arg::daddend, buffer(daddend)}});
}

void call_train_backward(const BatchView& x, const BatchView& dy, const Tensor* mask, const SavedContext& saved,
                         const Tensor& weight, const BatchView& dx, const BatchView* daddend, const Tensor& sums) {
    ChannelView shift(saved.shift, 1), offset(saved.offset, 1), w(weight, 1), invstd(saved.invstd, 1), s(sums, 2);
    std::optional<MaskView> mv;
    if (mask) mv.emplace(*mask);
    invoke(kernel_writing(dx, Pipeline::train_backward, sums.device(), fusion_of(saved.activation, saved.has_addend),
                          buffer(daddend)),
           {{arg::x, buffer(x)},
            {arg::dy, buffer(dy)},
            {arg::mask, mv ? &mv->buf : nullptr},
            {arg::shift, &shift.buf},
            {arg::offset, &offset.buf},
            {arg::weight, &w.buf},
            {arg::invstd, &invstd.buf},
            {arg::dx, buffer(dx)},
            {arg::daddend, buffer(daddend)},
            {arg::sums, &s.buf}});
}

void call_merge_moments(const Tensor& gathered, const Tensor& moments) {
    ChannelView g(gathered, 3), m(moments, 2);
    invoke(find_channel_kernel(Pipeline::merge_moments, moments.device(), "chan"),
           {{arg::gathered, &g.buf}, {arg::moments, &m.buf}});
}

}  // namespace bnforge::detail
