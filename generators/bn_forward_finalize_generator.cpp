// The forward's per-channel step, between the statistics and the apply pass:
// the moments (count, mean, M2) — or the running statistics, in eval and
// under freeze — become
//   - the apply constants (the mean as float32 shift + offset, γ·invstd, β),
//   - the saved mean and invstd that backward needs,
//   - with an update, the running statistics moved toward the batch's
//     (momentum: the convention's factor; cumulative: 1 / num_batches_tracked,
//     read on the device) and num_batches_tracked + 1.
// So the whole step stays where the data are, and a GPU forward never reads
// a value back to the host. The formulas are bn_math.h's, which the one-pass
// forward uses too.
//
// The running statistics and num_batches_tracked are updated in place: the
// runtime passes the same memory as `<name>` and `<name>_out`. Each such
// output reads only its own input at its own index, and the new count is
// formed into a buffer of its own (next_count) before anything writes it.
#include "bn_generator.h"
#include "bn_math.h"
#include "cpu_schedules.h"
#include "gpu_schedules.h"

namespace bnforge_gen {

using bnforge::abi::kMomentCount;
using bnforge::abi::kMomentM2;
using bnforge::abi::kMomentMean;
using bnforge::abi::kUpdatedSuffix;

enum class Statistics { batch, running };
enum class RunningUpdate { none, momentum, cumulative };

class BnForwardFinalize : public BnGenerator<BnForwardFinalize> {
public:
    GeneratorParam<Statistics> statistics{
        "statistics", Statistics::batch, {{"batch", Statistics::batch}, {"running", Statistics::running}}};
    GeneratorParam<RunningUpdate> update{"update",
                                         RunningUpdate::none,
                                         {{"none", RunningUpdate::none},
                                          {"momentum", RunningUpdate::momentum},
                                          {"cumulative", RunningUpdate::cumulative}}};
    GeneratorParam<bool> batches_tracked{"batches_tracked", false};
    GeneratorParam<bool> affine{"affine", true};

    void configure() {
        const bool batch = statistics == Statistics::batch, updates = update != RunningUpdate::none;
        if (!batch && updates) throw CompileError("bn_forward_finalize: running statistics are updated from batch ones");
        if (update == RunningUpdate::cumulative && !batches_tracked) {
            throw CompileError("bn_forward_finalize: a cumulative average counts its batches (batches_tracked=true)");
        }
        if (batches_tracked && !updates) throw CompileError("bn_forward_finalize: batches are counted by an update");
        if (batch) moments = add_input<Buffer<double, 2>>(arg::moments);
        if (!batch || updates) {
            running_mean = add_input<Buffer<float, 1>>(arg::running_mean);
            running_var = add_input<Buffer<float, 1>>(arg::running_var);
        }
        if (update == RunningUpdate::momentum) factor = add_input<double>(arg::factor);
        if (batches_tracked) num_batches_tracked = add_input<Buffer<int64_t, 0>>(arg::num_batches_tracked);
        if (affine) {
            weight = add_input<Buffer<float, 1>>(arg::weight);
            bias = add_input<Buffer<float, 1>>(arg::bias);
        }
        eps = add_input<double>(arg::eps);

        shift = add_output<Buffer<float, 1>>(arg::shift);
        offset = add_output<Buffer<float, 1>>(arg::offset);
        scale = add_output<Buffer<float, 1>>(arg::scale);
        beta = add_output<Buffer<float, 1>>(arg::beta);
        saved_mean = add_output<Buffer<double, 1>>(arg::saved_mean);
        saved_invstd = add_output<Buffer<double, 1>>(arg::saved_invstd);
        if (updates) {
            running_mean_out = add_output<Buffer<float, 1>>(std::string(arg::running_mean) + kUpdatedSuffix);
            running_var_out = add_output<Buffer<float, 1>>(std::string(arg::running_var) + kUpdatedSuffix);
        }
        if (batches_tracked) {
            num_batches_tracked_out =
                add_output<Buffer<int64_t, 0>>(std::string(arg::num_batches_tracked) + kUpdatedSuffix);
        }
    }

    void generate() {
        Expr mean, var, count;
        if (moments) {
            count = (*moments)(c, kMomentCount);
            mean = (*moments)(c, kMomentMean);
            var = batch_variance((*moments)(c, kMomentM2), count);
        } else {
            mean = cast<double>((*running_mean)(c));
            var = cast<double>((*running_var)(c));
        }
        Expr invstd = inverse_std(var, *eps);
        ApplyConstants k = apply_constants(mean, invstd, affine ? Expr((*weight)(c)) : Expr(1.0f),
                                           affine ? Expr((*bias)(c)) : Expr(0.0f));
        (*shift)(c) = k.shift;
        (*offset)(c) = k.offset;
        (*scale)(c) = k.scale;
        (*beta)(c) = k.beta;
        (*saved_mean)(c) = mean;
        (*saved_invstd)(c) = invstd;

        if (num_batches_tracked) {
            next_count() = (*num_batches_tracked)() + cast<int64_t>(1);
            (*num_batches_tracked_out)() = next_count();
        }
        if (running_mean_out) {
            Expr f = update == RunningUpdate::cumulative ? cast<double>(1) / cast<double>(next_count())
                                                         : Expr(*factor);
            // An empty (global) batch leaves them as they were.
            Expr m2 = (*moments)(c, kMomentM2);
            (*running_mean_out)(c) = select(count > 0, running_update((*running_mean)(c), mean, f), (*running_mean)(c));
            (*running_var_out)(c) =
                select(count > 0, running_update((*running_var)(c), unbiased_variance(m2, count), f), (*running_var)(c));
        }

        if (moments) set_row_estimates(*moments, bnforge::abi::kMomentRows);
        for (auto* b : {running_mean, running_var, weight, bias}) {
            if (b) set_channel_estimates(*b);
        }
        if (factor) factor->set_estimate(0.1);
        eps->set_estimate(1e-5);
        for (auto* b : {shift, offset, scale, beta, running_mean_out, running_var_out}) {
            if (b) set_channel_estimates(*b);
        }
        set_channel_estimates(*saved_mean);
        set_channel_estimates(*saved_invstd);
    }

    void schedule_gpu() {
        schedule_channel_outputs_gpu(channel_output_funcs(), c);
        if (num_batches_tracked) {
            schedule_scalar_gpu(next_count);
            schedule_scalar_gpu(*num_batches_tracked_out);
        }
    }

    void schedule_cpu() {
        if (num_batches_tracked) next_count.compute_root();
        for (Func f : channel_output_funcs()) schedule_channel_outputs_cpu(f, natural_vector_size<float>());
    }

private:
    // The per-channel outputs, the first being the one the others join on a GPU.
    std::vector<Func> channel_output_funcs() {
        std::vector<Func> fs = {*shift, *offset, *scale, *beta, *saved_mean, *saved_invstd};
        if (running_mean_out) {
            fs.push_back(*running_mean_out);
            fs.push_back(*running_var_out);
        }
        return fs;
    }

    Var c{"c"};
    Func next_count{"next_count"};
    Input<Buffer<double, 2>>* moments = nullptr;
    Input<Buffer<float, 1>>* running_mean = nullptr;
    Input<Buffer<float, 1>>* running_var = nullptr;
    Input<double>* factor = nullptr;
    Input<Buffer<int64_t, 0>>* num_batches_tracked = nullptr;
    Input<Buffer<float, 1>>* weight = nullptr;
    Input<Buffer<float, 1>>* bias = nullptr;
    Input<double>* eps = nullptr;
    Output<Buffer<float, 1>>* shift = nullptr;
    Output<Buffer<float, 1>>* offset = nullptr;
    Output<Buffer<float, 1>>* scale = nullptr;
    Output<Buffer<float, 1>>* beta = nullptr;
    Output<Buffer<double, 1>>* saved_mean = nullptr;
    Output<Buffer<double, 1>>* saved_invstd = nullptr;
    Output<Buffer<float, 1>>* running_mean_out = nullptr;
    Output<Buffer<float, 1>>* running_var_out = nullptr;
    Output<Buffer<int64_t, 0>>* num_batches_tracked_out = nullptr;
};

}  // namespace bnforge_gen

HALIDE_REGISTER_GENERATOR(bnforge_gen::BnForwardFinalize, bn_forward_finalize)
