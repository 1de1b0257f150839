// The base class of every bnforge generator. It owns what a generator has
// besides its algorithm and manual schedules:
//  - the estimate shape, as GeneratorParams, so that a build or `bnforge tune`
//    can autoschedule for the (N, C, S) that matters rather than one fixed guess;
//  - schedule(), once for all generators: an autoscheduler when one is
//    chosen, else saved_schedule=<name> (generators/schedules/<name>.schedule.h,
//    compiled into the generator, see autoschedule.h) on any target, else the
//    generator's manual schedule_gpu() or schedule_cpu() (as in Halide's
//    apps/conv_layer, one branch).
// A generator defines generate(), schedule_cpu() and, when it has a GPU
// schedule, schedule_gpu(); a CPU-only pipeline leaves the default, which
// rejects a GPU target.
#pragma once

#include "autoschedule.h"
#include "bn_vocabulary.h"

#include <limits>
#include <string>

namespace bnforge_gen {

// Applies the saved schedule `name` to `pipeline` and guards its tails; a
// name that was not compiled in is a CompileError listing those that were.
void apply_saved_schedule(const std::string& name, const Pipeline& pipeline, const Target& target);

// Adams2019 sometimes unrolls a loop whose extent it took as constant because
// it substituted an estimate for an input's size ("Can only unroll for loops
// over a constant extent"); HL_PERMIT_FAILED_UNROLL=1, Halide's documented
// escape hatch, leaves such a loop serial. Autoscheduled and saved schedules
// only (the manual ones never unroll); a value the user set wins.
void permit_estimate_unrolls();

// The GPU target of a CPU-only pipeline (the one-pass kernels keep a
// channel's slab in a CPU core's L2; a GPU runs the two passes): a
// configuration error rather than a silently unscheduled pipeline.
[[noreturn]] void cpu_only_pipeline(const std::string& generator);

template <class T>
class BnGenerator : public Generator<T> {
public:
    GeneratorParam<int> est_n{"est_n", kEstN, 1, std::numeric_limits<int>::max()};
    GeneratorParam<int> est_c{"est_c", kEstC, 1, std::numeric_limits<int>::max()};
    GeneratorParam<int> est_s{"est_s", kEstS, 1, std::numeric_limits<int>::max()};
    GeneratorParam<std::string> saved_schedule{"saved_schedule", ""};

    void schedule() {
        if (this->using_autoscheduler()) {
            // The estimates are all an autoscheduler needs (plus leave to unroll).
            permit_estimate_unrolls();
        } else if (has_saved_schedule()) {
            permit_estimate_unrolls();
            apply_saved_schedule(saved_schedule, this->get_pipeline(), this->get_target());
        } else if (this->get_target().has_gpu_feature()) {
            static_cast<T*>(this)->schedule_gpu();
        } else {
            static_cast<T*>(this)->schedule_cpu();
        }
    }

    // The default for CPU-only pipelines.
    void schedule_gpu() { cpu_only_pipeline(this->name()); }

protected:
    // Estimates for a batch tensor in memory order, a per-channel vector, a
    // per-channel row tensor (rows, C), and a ReLU mask (bits packed across the batch).
    template <class Buf>
    void set_batch_estimates(Buf& b, Layout layout) {
        const int n = est_n, c = est_c, s = est_s;
        if (layout == Layout::NCHW) {
            b.set_estimates({{0, s}, {0, c}, {0, n}});
        } else {
            b.set_estimates({{0, c}, {0, s}, {0, n}});
        }
    }
    template <class Buf>
    void set_channel_estimates(Buf& b) {
        const int c = est_c;
        b.set_estimates({{0, c}});
    }
    template <class Buf>
    void set_row_estimates(Buf& b, int rows) {
        const int c = est_c;
        b.set_estimates({{0, c}, {0, rows}});
    }
    template <class Buf>
    void set_mask_estimates(Buf& b, Layout layout) {
        const int n = est_n, c = est_c, s = est_s;
        const int inner = layout == Layout::NCHW ? s : c, outer = layout == Layout::NCHW ? c : s;
        b.set_estimates({{0, inner}, {0, outer}, {0, (n + kMaskRows - 1) / kMaskRows}});
    }

    bool has_saved_schedule() const { return !saved_schedule.value().empty(); }
    // The manual schedules, as opposed to an autoscheduled or saved one (the
    // algorithm's chunking depends on it, see channel_sums.h).
    bool manual_schedule() const { return !this->using_autoscheduler() && !has_saved_schedule(); }
    // The lane split of the manual schedules' NCHW channel sums (channel_sums.h):
    // two vectors on a CPU, whose chunks are cut to whole vectors of it; 1 on a
    // GPU, whose threads split the fused (row, position) index of any extent;
    // 0 for an autoscheduled or saved schedule (no split).
    int sum_lanes() const {
        if (!manual_schedule()) return 0;
        return this->get_target().has_gpu_feature() ? 1 : 2 * this->template natural_vector_size<float>();
    }
};

}  // namespace bnforge_gen
