// Training backward in one pass over memory: per channel block, the sums
// Σg and Σg·(x − mean), then dx (and d_addend) while the block's slab of x
// and dy is still in L2. The two-pass pipelines (bn_backward_reduce then
// bn_backward_apply) read x and dy from memory twice; this one reads them once.
// The runtime picks it when a block's slab fits in L2 and the sums need no
// cross-process reduction.
//
// The sums are bn_backward_reduce's, in the same order, and the coefficients
// bn_backward_apply's inputs formed with the runtime's float64 formulas:
//   k_dy = γ·invstd, k_xmu = γ·invstd³·Σg(x − mean)/M, k_bias = γ·invstd·Σg/M.
#include "bn_common.h"

namespace bnforge_gen {

class BnTrainBackward : public BnGenerator<BnTrainBackward> {
public:
    GeneratorParam<Layout> layout{"layout", Layout::NCHW, kLayoutNames};
    GeneratorParam<Type> dtype{"dtype", Float(32)};
    GeneratorParam<Fusion> fusion{"fusion", Fusion::None, kFusionNames};

    Input<Buffer<float, 1>> shift{"shift"};     // the forward mean as shift + offset (see bn_apply)
    Input<Buffer<float, 1>> offset{"offset"};
    Input<Buffer<double, 1>> scale{"scale"};    // γ·invstd
    Input<Buffer<double, 1>> invstd{"invstd"};

    void configure() {
        x = add_input<Buffer<>>("x", dtype, 3);
        dy = add_input<Buffer<>>("dy", dtype, 3);
        if (fusion != Fusion::None) mask = add_input<Buffer<uint8_t, 3>>("mask");
        dx = add_output<Buffer<>>("dx", dtype, 3);
        if (fusion == Fusion::AddRelu) daddend = add_output<Buffer<>>("daddend", dtype, 3);
        sum_dy = add_output<Buffer<double, 1>>("sum_dy");
        sum_dy_xmu = add_output<Buffer<double, 1>>("sum_dy_xmu");
    }

    void generate() {
        // Per-channel values over the channel Var of dx, so their loops fuse (bn_common.h).
        const Var& ch = layout == Layout::NCHW ? d1 : d0;
        Var s("s"), c("c");

        // bn_backward_reduce
        Expr gv = widen_to_float((*dy)(d0, d1, n));
        if (mask) gv = select(mask_bit(*mask, d0, d1, n), gv, 0.0f);
        g(d0, d1, n) = gv;
        Func terms("terms");
        Expr gl = at(g, layout, s, c, n);
        Expr xmu_l = centred(widen_to_float(at(*x, layout, s, c, n)), shift(c), offset(c));
        terms(s, c, n) = Tuple(gl, gl * xmu_l);
        Expr spatial = spatial_extent(*x, layout), batch = x->dim(2).extent();
        sums = channel_sums(terms, spatial, batch, layout, manual_schedule());
        (*sum_dy)(ch) = sums.total(ch)[0];
        (*sum_dy_xmu)(ch) = sums.total(ch)[1];

        // bn_backward_apply's inputs as the runtime forms them, in IEEE order.
        Expr m = cast<double>(spatial) * cast<double>(batch);
        coefficients(ch) = Tuple(strict_float(cast<float>(scale(ch))),
                                 strict_float(cast<float>(scale(ch) * invstd(ch) * invstd(ch) * sums.total(ch)[1] / m)),
                                 strict_float(cast<float>(scale(ch) * sums.total(ch)[0] / m)));

        // bn_backward_apply
        Expr xmu = centred(widen_to_float((*x)(d0, d1, n)), shift(ch), offset(ch));
        Expr grad = input_grad(g(d0, d1, n), xmu, coefficients(ch)[0], coefficients(ch)[1], coefficients(ch)[2]);
        (*dx)(d0, d1, n) = narrow_from_float(dtype, grad);
        if (daddend) (*daddend)(d0, d1, n) = narrow_from_float(dtype, g(d0, d1, n));

        set_batch_estimates(*x, layout);
        set_batch_estimates(*dy, layout);
        set_batch_estimates(*dx, layout);
        if (daddend) set_batch_estimates(*daddend, layout);
        if (mask) set_mask_estimates(*mask, layout);
        for (auto* p : {&shift, &offset}) set_channel_estimates(*p);
        for (auto* p : {&scale, &invstd}) set_channel_estimates(*p);
        set_channel_estimates(*sum_dy);
        set_channel_estimates(*sum_dy_xmu);
    }

    void schedule() {
        if (using_autoscheduler()) {
            // Estimates above are all an autoscheduler needs (plus leave to unroll, see bn_common.h).
            permit_estimate_unrolls();
        } else if (get_target().has_gpu_feature()) {
            cpu_only_pipeline("bn_train_backward");
        } else if (has_saved_schedule()) {
            apply_saved_schedule();
        } else {
            const int vec = natural_vector_size<float>();
            ChannelLoop channels = schedule_channels_cpu(*dx, layout, d0, d1, n, vec);
            if (daddend) fuse_with_channels(*daddend, channels, d0, d1, n, vec);
            fuse_with_channels(*sum_dy, channels, d0, d1, n, vec);
            fuse_with_channels(*sum_dy_xmu, channels, d0, d1, n, vec);
            schedule_channel_sums_cpu(sums, layout, vec, channels.level());
            coefficients.compute_at(channels.level());
        }
    }

private:
    Var d0{"d0"}, d1{"d1"}, n{"n"};
    Func g{"g"}, coefficients{"coefficients"};
    ChannelSums sums;
    Input<Buffer<>>* x = nullptr;
    Input<Buffer<>>* dy = nullptr;
    Input<Buffer<uint8_t, 3>>* mask = nullptr;
    Output<Buffer<>>* dx = nullptr;
    Output<Buffer<>>* daddend = nullptr;
    Output<Buffer<double, 1>>* sum_dy = nullptr;
    Output<Buffer<double, 1>>* sum_dy_xmu = nullptr;
};

}  // namespace bnforge_gen

HALIDE_REGISTER_GENERATOR(bnforge_gen::BnTrainBackward, bn_train_backward)
