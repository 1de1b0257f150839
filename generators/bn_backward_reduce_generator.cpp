// Backward reduction: per channel sum_dy = Σ g and sum_dy_xmu = Σ g·(x − mean),
// where g = dy, or dy masked by the forward ReLU mask for the fused op.
// The mean arrives as shift + offset (see bn_apply); sums as in bn_stats.
#include "bn_generator.h"
#include "bn_math.h"
#include "cpu_schedules.h"
#include "gpu_schedules.h"

namespace bnforge_gen {

class BnBackwardReduce : public BnGenerator<BnBackwardReduce> {
public:
    GeneratorParam<Layout> layout{"layout", Layout::NCHW, kLayoutNames};
    GeneratorParam<Type> dtype{"dtype", Float(32)};
    GeneratorParam<Fusion> fusion{"fusion", Fusion::none, kFusionNames};  // none or masked

    Input<Buffer<float, 1>> shift{arg::shift};
    Input<Buffer<float, 1>> offset{arg::offset};
    Output<Buffer<double, 2>> sums{arg::sums};  // (c, row): Σg, Σg·(x − mean)

    void configure() {
        if (fusion != Fusion::none && fusion != Fusion::masked) {
            throw CompileError("bn_backward_reduce: fusion is none or masked");
        }
        x = add_input<Buffer<>>(arg::x, dtype, 3);
        dy = add_input<Buffer<>>(arg::dy, dtype, 3);
        if (fusion == Fusion::masked) mask = add_input<Buffer<uint8_t, 3>>(arg::mask);
    }

    void generate() {
        Var s("s"), n("n"), d0("d0"), d1("d1");
        Func g_mem("g_mem");
        Expr g = widen_to_float((*dy)(d0, d1, n));
        if (mask) g = select(mask_bit(*mask, d0, d1, n), g, 0.0f);
        g_mem(d0, d1, n) = g;

        Func terms("terms");
        Expr gl = at(g_mem, layout, s, c, n);
        Expr xmu = centred(widen_to_float(at(*x, layout, s, c, n)), shift(c), offset(c));
        terms(s, c, n) = Tuple(gl, gl * xmu);

        channel = channel_sums(terms, spatial_extent(*x, layout), x->dim(2).extent(), layout, sum_lanes());
        sums(c, row) = sum_row(row, Tuple(channel.total(c)[0], channel.total(c)[1]));
        sums.bound(row, 0, bnforge::abi::kSumRows);

        set_batch_estimates(*x, layout);
        set_batch_estimates(*dy, layout);
        if (mask) set_mask_estimates(*mask, layout);
        set_channel_estimates(shift);
        set_channel_estimates(offset);
        set_row_estimates(sums, bnforge::abi::kSumRows);
    }

    void schedule_gpu() {
        schedule_channel_sums_gpu(channel, layout, sums, c, row);
    }

    void schedule_cpu() {
        const int vec = natural_vector_size<float>();
        schedule_channel_sums_cpu(channel, layout, vec, x->dim(1).extent(), Type(dtype).bytes());
        sums.reorder(row, c).unroll(row);
        if (layout != Layout::NCHW) sums.vectorize(c, vec, TailStrategy::GuardWithIf);
    }

private:
    Input<Buffer<>>* x = nullptr;
    Input<Buffer<>>* dy = nullptr;
    Input<Buffer<uint8_t, 3>>* mask = nullptr;
    Var c{"c"}, row{"row"};
    ChannelSums channel;
};

}  // namespace bnforge_gen

HALIDE_REGISTER_GENERATOR(bnforge_gen::BnBackwardReduce, bn_backward_reduce)
