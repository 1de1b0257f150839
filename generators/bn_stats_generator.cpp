// Per-channel batch statistics: mean and M2 (centred sum of squares) over N·S
// values, numerically stable far from zero.
//
// Values are shifted by a per-channel estimate of the mean before summing
// (see channel_shift), so the sums see x − s, small when the data sit far
// from zero; the float32 chunk sums are combined in float64, and
// M2 = Σd² − (Σd)²/M is formed in float64. The count M = N·S is known to the caller.
#include "bn_generator.h"
#include "bn_math.h"
#include "cpu_schedules.h"
#include "gpu_schedules.h"

namespace bnforge_gen {

class BnStats : public BnGenerator<BnStats> {
public:
    GeneratorParam<Layout> layout{"layout", Layout::NCHW, kLayoutNames};
    GeneratorParam<Type> dtype{"dtype", Float(32)};

    Output<Buffer<double, 2>> moments{arg::moments};  // (c, row): count, mean, M2

    void configure() { x = add_input<Buffer<>>(arg::x, dtype, 3); }

    void generate() {
        BatchSums stats = batch_sums(*x, spatial_extent(*x, layout), x->dim(2).extent(), layout, sum_lanes());
        shift = stats.shift;
        sums = stats.sums;
        moments(c, row) = moment_row(row, stats.count,
                                     channel_moments(shift(c), sums.total(c)[0], sums.total(c)[1], stats.count));
        moments.bound(row, 0, bnforge::abi::kMomentRows);

        set_batch_estimates(*x, layout);
        set_row_estimates(moments, bnforge::abi::kMomentRows);
    }

    void schedule_gpu() {
        schedule_channels_gpu(shift, shift.args()[0]);
        schedule_channel_sums_gpu(sums, layout, moments, c, row);
    }

    void schedule_cpu() {
        const int vec = natural_vector_size<float>();
        shift.compute_root();
        schedule_channel_sums_cpu(sums, layout, vec, x->dim(1).extent(), Type(dtype).bytes());
        moments.reorder(row, c).unroll(row);
        if (layout != Layout::NCHW) {
            // Channels are contiguous in x: the shift's samples load as vectors.
            shift.vectorize(shift.args()[0], vec, TailStrategy::GuardWithIf);
            moments.vectorize(c, vec, TailStrategy::GuardWithIf);
        }
    }

private:
    Var c{"c"}, row{"row"};
    Input<Buffer<>>* x = nullptr;
    Func shift;
    ChannelSums sums;
};

}  // namespace bnforge_gen

HALIDE_REGISTER_GENERATOR(bnforge_gen::BnStats, bn_stats)
