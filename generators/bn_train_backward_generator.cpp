// Training backward in one pass over memory: per channel block, the sums
// Σg and Σg·(x − mean), then dx (and d_addend) while the block's slab of x
// and dy is still in L2. The two-pass pipelines (bn_backward_reduce then
// bn_backward_apply) read x and dy from memory twice; this one reads them once.
// The runtime picks it when a block's slab fits in L2 and the sums need no
// cross-process reduction.
//
// The sums are bn_backward_reduce's, in the same order, and the coefficients
// bn_backward_finalize's (the same bn_math.h formula, grad_coefficients).
#include "bn_generator.h"
#include "bn_math.h"
#include "cpu_schedules.h"
#include "gpu_schedules.h"

namespace bnforge_gen {

class BnTrainBackward : public BnGenerator<BnTrainBackward> {
public:
    GeneratorParam<Layout> layout{"layout", Layout::NCHW, kLayoutNames};
    GeneratorParam<Type> dtype{"dtype", Float(32)};
    GeneratorParam<Fusion> fusion{"fusion", Fusion::none, kFusionNames};

    Input<Buffer<float, 1>> shift{arg::shift};  // the forward mean as shift + offset (see bn_apply)
    Input<Buffer<float, 1>> offset{arg::offset};
    Input<Buffer<float, 1>> weight{arg::weight};  // ones when affine=False
    Input<Buffer<double, 1>> invstd{arg::invstd};

    void configure() {
        if (fusion == Fusion::masked) throw CompileError("bn_train_backward: fusion is none, relu or add_relu");
        x = add_input<Buffer<>>(arg::x, dtype, 3);
        dy = add_input<Buffer<>>(arg::dy, dtype, 3);
        if (fusion != Fusion::none) mask = add_input<Buffer<uint8_t, 3>>(arg::mask);
        dx = add_output<Buffer<>>(arg::dx, dtype, 3);
        if (fusion == Fusion::add_relu) daddend = add_output<Buffer<>>(arg::daddend, dtype, 3);
        sums_out = add_output<Buffer<double, 2>>(arg::sums);  // (c, row): Σg, Σg·(x − mean)
    }

    void generate() {
        // Per-channel values over the channel Var of dx, so their loops fuse (cpu_schedules.h).
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
        sums = channel_sums(terms, spatial, batch, layout, sum_lanes());
        (*sums_out)(ch, row) = sum_row(row, Tuple(sums.total(ch)[0], sums.total(ch)[1]));
        sums_out->bound(row, 0, bnforge::abi::kSumRows);

        // bn_backward_apply's inputs as bn_backward_finalize forms them.
        Expr m = cast<double>(spatial) * cast<double>(batch);
        GradCoefficients k = grad_coefficients(weight(ch), invstd(ch), sums.total(ch)[0], sums.total(ch)[1], m, true);
        coefficients(ch) = Tuple(k.k_dy, k.k_xmu, k.k_bias);

        // bn_backward_apply
        Expr xmu = centred(widen_to_float((*x)(d0, d1, n)), shift(ch), offset(ch));
        Expr grad = input_grad(g(d0, d1, n), xmu, coefficients(ch)[0], coefficients(ch)[1], coefficients(ch)[2]);
        (*dx)(d0, d1, n) = narrow_from_float(dtype, grad, narrowing(get_target()));
        if (daddend) (*daddend)(d0, d1, n) = narrow_exact(dtype, g(d0, d1, n));

        set_batch_estimates(*x, layout);
        set_batch_estimates(*dy, layout);
        set_batch_estimates(*dx, layout);
        if (daddend) set_batch_estimates(*daddend, layout);
        if (mask) set_mask_estimates(*mask, layout);
        for (auto* p : {&shift, &offset, &weight}) set_channel_estimates(*p);
        set_channel_estimates(invstd);
        set_row_estimates(*sums_out, bnforge::abi::kSumRows);
    }

    void schedule_gpu() {
        OnePassGpu block = schedule_one_pass_gpu(*dx, layout, d0, d1, n);
        if (daddend) fuse_batch_output_one_pass_gpu(*daddend, block, d0, d1, n);
        fuse_channel_rows_one_pass_gpu(*sums_out, block, d1, row);
        schedule_channel_sums_one_pass_gpu(sums, block);
        schedule_per_channel_one_pass_gpu(coefficients, block);
    }

    void schedule_cpu() {
        const int vec = natural_vector_size<float>();
        ChannelLoop channels = schedule_channels_cpu(*dx, layout, d0, d1, n, vec);
        if (daddend) fuse_with_channels(*daddend, channels, d0, d1, n, vec);
        fuse_with_channels(*sums_out, channels, d0, d1, n, vec);
        schedule_channel_sums_cpu(sums, layout, vec, channels.level());
        coefficients.compute_at(channels.level());
    }

private:
    Var d0{"d0"}, d1{"d1"}, n{"n"}, row{"row"};
    Func g{"g"}, coefficients{"coefficients"};
    ChannelSums sums;
    Input<Buffer<>>* x = nullptr;
    Input<Buffer<>>* dy = nullptr;
    Input<Buffer<uint8_t, 3>>* mask = nullptr;
    Output<Buffer<>>* dx = nullptr;
    Output<Buffer<>>* daddend = nullptr;
    Output<Buffer<double, 2>>* sums_out = nullptr;
};

}  // namespace bnforge_gen

HALIDE_REGISTER_GENERATOR(bnforge_gen::BnTrainBackward, bn_train_backward)
