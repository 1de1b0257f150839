// The backward's per-channel step, between the reduction and the apply pass:
// the sums (Σg, Σg·(x − mean)) over M values become the dx coefficients
// (k_dy, k_xmu, k_bias; only k_dy under constant running statistics), and,
// with parameter_grads, dγ = Σg·(x − mean)·invstd and dβ = Σg are added to
// the float32 gradient accumulators as .grad adds them (updated in place: the
// runtime passes the same memory as weight_grad and weight_grad_out).
//
// SyncBatchNorm's dx needs the group's sums while dγ/dβ take this rank's own
// (PyTorch's rule): `sums` and `local_sums`, the same tensor without a group.
#include "bn_generator.h"
#include "bn_math.h"
#include "cpu_schedules.h"
#include "gpu_schedules.h"

namespace bnforge_gen {

using bnforge::abi::kSumDy;
using bnforge::abi::kSumDyXmu;
using bnforge::abi::kSumRows;
using bnforge::abi::kUpdatedSuffix;

class BnBackwardFinalize : public BnGenerator<BnBackwardFinalize> {
public:
    GeneratorParam<bool> batch_statistics{"batch_statistics", true};  // false: running statistics (constants)
    GeneratorParam<bool> affine{"affine", true};
    GeneratorParam<bool> parameter_grads{"parameter_grads", true};

    void configure() {
        if (parameter_grads && !affine) throw CompileError("bn_backward_finalize: parameter_grads needs affine=true");
        sums = add_input<Buffer<double, 2>>(arg::sums);
        if (parameter_grads) local_sums = add_input<Buffer<double, 2>>(arg::local_sums);
        saved_invstd = add_input<Buffer<double, 1>>(arg::saved_invstd);
        if (affine) weight = add_input<Buffer<float, 1>>(arg::weight);
        count = add_input<double>(arg::count);
        if (parameter_grads) {
            weight_grad = add_input<Buffer<float, 1>>(arg::weight_grad);
            bias_grad = add_input<Buffer<float, 1>>(arg::bias_grad);
        }
        k_dy = add_output<Buffer<float, 1>>(arg::k_dy);
        k_xmu = add_output<Buffer<float, 1>>(arg::k_xmu);
        k_bias = add_output<Buffer<float, 1>>(arg::k_bias);
        if (parameter_grads) {
            weight_grad_out = add_output<Buffer<float, 1>>(std::string(arg::weight_grad) + kUpdatedSuffix);
            bias_grad_out = add_output<Buffer<float, 1>>(std::string(arg::bias_grad) + kUpdatedSuffix);
        }
    }

    void generate() {
        GradCoefficients k = grad_coefficients(affine ? Expr((*weight)(c)) : Expr(1.0f), (*saved_invstd)(c),
                                               (*sums)(c, kSumDy), (*sums)(c, kSumDyXmu), *count,
                                               batch_statistics);
        (*k_dy)(c) = k.k_dy;
        (*k_xmu)(c) = k.k_xmu;
        (*k_bias)(c) = k.k_bias;
        if (parameter_grads) {
            (*weight_grad_out)(c) =
                accumulate_grad((*weight_grad)(c), (*local_sums)(c, kSumDyXmu) * (*saved_invstd)(c));
            (*bias_grad_out)(c) = accumulate_grad((*bias_grad)(c), (*local_sums)(c, kSumDy));
        }

        set_row_estimates(*sums, kSumRows);
        if (local_sums) set_row_estimates(*local_sums, kSumRows);
        set_channel_estimates(*saved_invstd);
        count->set_estimate(kEstN * kEstS);
        for (auto* b : {weight, weight_grad, bias_grad}) {
            if (b) set_channel_estimates(*b);
        }
        for (auto* b : {k_dy, k_xmu, k_bias, weight_grad_out, bias_grad_out}) {
            if (b) set_channel_estimates(*b);
        }
    }

    void schedule_gpu() { schedule_channel_outputs_gpu(outputs(), c); }

    void schedule_cpu() {
        for (Func f : outputs()) schedule_channel_outputs_cpu(f, natural_vector_size<float>());
    }

private:
    std::vector<Func> outputs() {
        std::vector<Func> fs = {*k_dy, *k_xmu, *k_bias};
        if (parameter_grads) {
            fs.push_back(*weight_grad_out);
            fs.push_back(*bias_grad_out);
        }
        return fs;
    }

    Var c{"c"};
    Input<Buffer<double, 2>>* sums = nullptr;
    Input<Buffer<double, 2>>* local_sums = nullptr;
    Input<Buffer<double, 1>>* saved_invstd = nullptr;
    Input<Buffer<float, 1>>* weight = nullptr;
    Input<double>* count = nullptr;
    Input<Buffer<float, 1>>* weight_grad = nullptr;
    Input<Buffer<float, 1>>* bias_grad = nullptr;
    Output<Buffer<float, 1>>* k_dy = nullptr;
    Output<Buffer<float, 1>>* k_xmu = nullptr;
    Output<Buffer<float, 1>>* k_bias = nullptr;
    Output<Buffer<float, 1>>* weight_grad_out = nullptr;
    Output<Buffer<float, 1>>* bias_grad_out = nullptr;
};

}  // namespace bnforge_gen

HALIDE_REGISTER_GENERATOR(bnforge_gen::BnBackwardFinalize, bn_backward_finalize)
