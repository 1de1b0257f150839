// Training forward in one pass over memory: per channel block, the batch
// statistics, then y = act(BN(x) [+ addend]) while the block's slab is still
// in L2. The two-pass pipelines (bn_stats then bn_apply) read x from memory
// twice; this one reads it once, so it moves |x| + |y| bytes instead of
// 2|x| + |y|. The runtime picks it when a block's slab fits in L2.
//
// The statistics are bn_stats's, summed in the same order, and the per-channel
// coefficients bn_forward_finalize's (the same bn_math.h formulas), so both
// routes give bitwise identical y, mean and M2.
#include "bn_generator.h"
#include "bn_math.h"
#include "cpu_schedules.h"
#include "gpu_schedules.h"

namespace bnforge_gen {

class BnTrainForward : public BnGenerator<BnTrainForward> {
public:
    GeneratorParam<Layout> layout{"layout", Layout::NCHW, kLayoutNames};
    GeneratorParam<Type> dtype{"dtype", Float(32)};
    GeneratorParam<Fusion> fusion{"fusion", Fusion::none, kFusionNames};

    Input<Buffer<float, 1>> weight{arg::weight};  // ones when affine=False
    Input<Buffer<float, 1>> bias{arg::bias};      // zeros when affine=False
    Input<double> eps{arg::eps};

    void configure() {
        if (fusion == Fusion::masked) throw CompileError("bn_train_forward: fusion is none, relu or add_relu");
        x = add_input<Buffer<>>(arg::x, dtype, 3);
        if (fusion == Fusion::add_relu) addend = add_input<Buffer<>>(arg::addend, dtype, 3);
        y = add_output<Buffer<>>(arg::y, dtype, 3);
        if (fusion != Fusion::none) mask = add_output<Buffer<uint8_t, 3>>(arg::mask);
        moments_out = add_output<Buffer<double, 2>>(arg::moments);  // (c, row): count, mean, M2
    }

    void generate() {
        // Per-channel values are defined over the same Var as the channel
        // dimension of y, so the schedule can fuse their loops (see cpu_schedules.h).
        const Var& ch = layout == Layout::NCHW ? d1 : d0;
        BatchSums stats = batch_sums(*x, spatial_extent(*x, layout), x->dim(2).extent(), layout,
                                     sum_lanes());  // bn_stats's
        shift = stats.shift;
        sums = stats.sums;
        const Expr count = stats.count;
        moments(ch) = channel_moments(shift(ch), sums.total(ch)[0], sums.total(ch)[1], count);
        (*moments_out)(ch, row) = moment_row(row, count, Tuple(moments(ch)[0], moments(ch)[1]));
        moments_out->bound(row, 0, bnforge::abi::kMomentRows);

        // bn_apply's inputs as bn_forward_finalize forms them.
        Expr invstd = inverse_std(batch_variance(moments(ch)[1], count), eps);
        ApplyConstants k = apply_constants(moments(ch)[0], invstd, weight(ch), bias(ch));
        coefficients(ch) = Tuple(k.shift, k.offset, k.scale, k.beta);

        // bn_apply
        Expr added = addend ? widen_to_float((*addend)(d0, d1, n)) : Expr();
        pre(d0, d1, n) = normalized(widen_to_float((*x)(d0, d1, n)), coefficients(ch)[0], coefficients(ch)[1],
                                    coefficients(ch)[2], coefficients(ch)[3], added);
        Expr out = fusion == Fusion::none ? Expr(pre(d0, d1, n)) : relu(pre(d0, d1, n));
        // The mask's limit follows the narrowing y is stored with.
        const Narrowing how = narrowing(get_target());
        (*y)(d0, d1, n) = narrow_from_float(dtype, out, how);
        if (mask) {
            bits = mask_bits(pre, dtype, how, d0, d1, m, x->dim(2).extent(), manual_schedule());
            (*mask)(d0, d1, m) = bits.func(d0, d1, m);
        }

        set_batch_estimates(*x, layout);
        if (addend) set_batch_estimates(*addend, layout);
        set_batch_estimates(*y, layout);
        if (mask) set_mask_estimates(*mask, layout);
        set_channel_estimates(weight);
        set_channel_estimates(bias);
        eps.set_estimate(1e-5);
        set_row_estimates(*moments_out, bnforge::abi::kMomentRows);
    }

    void schedule_gpu() {
        OnePassGpu block = schedule_one_pass_gpu(*y, layout, d0, d1, n);
        if (mask) fuse_mask_one_pass_gpu(*mask, bits, block, d0, d1, m);
        fuse_channel_rows_one_pass_gpu(*moments_out, block, d1, row);
        schedule_per_channel_one_pass_gpu(shift, block);
        schedule_channel_sums_one_pass_gpu(sums, block);
        schedule_per_channel_one_pass_gpu(moments, block);
        schedule_per_channel_one_pass_gpu(coefficients, block);
    }

    void schedule_cpu() {
        const int vec = natural_vector_size<float>();
        ChannelLoop channels = schedule_channels_cpu(*y, layout, d0, d1, n, vec);
        if (mask) fuse_mask_with_channels(*mask, bits, channels, d0, d1, n, m, vec);
        fuse_with_channels(*moments_out, channels, d0, d1, n, vec);
        shift.compute_at(channels.level());
        schedule_channel_sums_cpu(sums, layout, vec, channels.level());
        moments.compute_at(channels.level());
        coefficients.compute_at(channels.level());
    }

private:
    Var d0{"d0"}, d1{"d1"}, n{"n"}, m{"m"}, row{"row"};
    Func shift, moments{"moments"}, coefficients{"coefficients"}, pre{"pre"};
    MaskBits bits;
    ChannelSums sums;
    Input<Buffer<>>* x = nullptr;
    Input<Buffer<>>* addend = nullptr;
    Output<Buffer<>>* y = nullptr;
    Output<Buffer<uint8_t, 3>>* mask = nullptr;
    Output<Buffer<double, 2>>* moments_out = nullptr;
};

}  // namespace bnforge_gen

HALIDE_REGISTER_GENERATOR(bnforge_gen::BnTrainForward, bn_train_forward)
