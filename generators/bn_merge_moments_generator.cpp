// SyncBatchNorm's merge: the (count, mean, M2) rows that R ranks gathered,
// folded in rank order with Chan's formula (bn_math.h, merge_moments), so
// every rank forms the same global moments to the bit, on the device that
// holds them.
#include "bn_generator.h"
#include "bn_math.h"
#include "gpu_schedules.h"

namespace bnforge_gen {

using bnforge::abi::kMomentCount;
using bnforge::abi::kMomentM2;
using bnforge::abi::kMomentMean;
using bnforge::abi::kMomentRows;

class BnMergeMoments : public BnGenerator<BnMergeMoments> {
public:
    Input<Buffer<double, 3>> gathered{arg::gathered};  // (c, row, rank)
    Output<Buffer<double, 2>> moments{arg::moments};   // (c, row)

    void generate() {
        RDom r(0, gathered.dim(2).extent(), "rank");
        merged(c) = Tuple(cast<double>(0), cast<double>(0), cast<double>(0));
        merged(c) = merge_moments(Tuple(merged(c)[0], merged(c)[1], merged(c)[2]), gathered(c, kMomentCount, r),
                                  gathered(c, kMomentMean, r), gathered(c, kMomentM2, r));
        moments(c, row) = mux(row, {merged(c)[0], merged(c)[1], merged(c)[2]});

        gathered.set_estimates({{0, kEstC}, {0, kMomentRows}, {0, 8}});
        moments.set_estimates({{0, kEstC}, {0, kMomentRows}});
    }

    // A thread per channel folds the ranks serially and writes its three rows.
    void schedule_gpu() {
        Var co("co"), ci("ci");
        moments.bound(row, 0, kMomentRows).reorder(row, c).unroll(row);
        moments.gpu_tile(c, co, ci, kGpuWarp, TailStrategy::GuardWithIf);
        merged.compute_at(moments, ci);
    }

    void schedule_cpu() {
        moments.bound(row, 0, kMomentRows).reorder(row, c).unroll(row);
        merged.compute_at(moments, c);
    }

private:
    Var c{"c"}, row{"row"};
    Func merged{"merged"};
};

}  // namespace bnforge_gen

HALIDE_REGISTER_GENERATOR(bnforge_gen::BnMergeMoments, bn_merge_moments)
