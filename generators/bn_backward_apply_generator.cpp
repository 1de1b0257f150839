// Backward apply: dx = g·k_dy − (x − mean)·k_xmu − k_bias, with g = dy (masked
// by the ReLU mask for the fused op). The runtime folds the per-channel terms:
//   training: k_dy = γ·invstd, k_xmu = γ·invstd³·sum_dy_xmu/M, k_bias = γ·invstd·sum_dy/M
//   eval / frozen statistics: k_dy = γ·invstd, k_xmu = k_bias = 0.
// The fused op also writes d_addend = g.
#include "bn_generator.h"
#include "bn_math.h"
#include "cpu_schedules.h"
#include "gpu_schedules.h"

namespace bnforge_gen {

class BnBackwardApply : public BnGenerator<BnBackwardApply> {
public:
    GeneratorParam<Layout> layout{"layout", Layout::NCHW, kLayoutNames};
    GeneratorParam<Type> dtype{"dtype", Float(32)};
    GeneratorParam<Fusion> fusion{"fusion", Fusion::none, kFusionNames};

    Input<Buffer<float, 1>> shift{arg::shift};
    Input<Buffer<float, 1>> offset{arg::offset};
    Input<Buffer<float, 1>> k_dy{arg::k_dy};
    Input<Buffer<float, 1>> k_xmu{arg::k_xmu};
    Input<Buffer<float, 1>> k_bias{arg::k_bias};

    void configure() {
        if (fusion == Fusion::masked) throw CompileError("bn_backward_apply: fusion is none, relu or add_relu");
        x = add_input<Buffer<>>(arg::x, dtype, 3);
        dy = add_input<Buffer<>>(arg::dy, dtype, 3);
        if (fusion != Fusion::none) mask = add_input<Buffer<uint8_t, 3>>(arg::mask);
        dx = add_output<Buffer<>>(arg::dx, dtype, 3);
        if (fusion == Fusion::add_relu) daddend = add_output<Buffer<>>(arg::daddend, dtype, 3);
    }

    void generate() {
        Expr c = layout == Layout::NCHW ? d1 : d0;
        Expr gv = widen_to_float((*dy)(d0, d1, n));
        if (mask) gv = select(mask_bit(*mask, d0, d1, n), gv, 0.0f);
        g(d0, d1, n) = gv;
        Expr xmu = centred(widen_to_float((*x)(d0, d1, n)), shift(c), offset(c));
        (*dx)(d0, d1, n) = narrow_from_float(dtype, input_grad(g(d0, d1, n), xmu, k_dy(c), k_xmu(c), k_bias(c)),
                                             narrowing(get_target()));
        if (daddend) (*daddend)(d0, d1, n) = narrow_exact(dtype, g(d0, d1, n));

        set_batch_estimates(*x, layout);
        set_batch_estimates(*dy, layout);
        set_batch_estimates(*dx, layout);
        if (daddend) set_batch_estimates(*daddend, layout);
        if (mask) set_mask_estimates(*mask, layout);
        for (auto* p : channel_inputs()) set_channel_estimates(*p);
    }

    void schedule_gpu() {
        // With a mask, each thread takes the 8 rows of one mask byte, so it
        // loads the byte once.
        Var at = schedule_elementwise_gpu(*dx, d0, d1, n);
        if (daddend) {
            schedule_elementwise_gpu(*daddend, d0, d1, n);
            daddend->compute_with(Func(*dx), at);
        }
    }

    void schedule_cpu() {
        const int vec = natural_vector_size<float>();
        // (Halide's compute_with cannot follow a specialization's split, so
        // with d_addend the rows of 2048 channels are not grouped.)
        const int channel_operands = daddend ? 0 : static_cast<int>(channel_inputs().size());
        const Expr rows = dx->dim(1).extent() * dx->dim(2).extent();
        Var task_rows = schedule_rows_cpu(*dx, layout, d0, d1, n, dx->dim(0).extent(), rows, vec, channel_operands);
        if (daddend) {
            // Same loop nest as dx, so dy and the mask are read once.
            schedule_rows_cpu(*daddend, layout, d0, d1, n, dx->dim(0).extent(), rows, vec);
            daddend->compute_with(Func(*dx), task_rows);
        }
    }

private:
    // The per-channel operands each element reads.
    std::vector<Input<Buffer<float, 1>>*> channel_inputs() { return {&shift, &offset, &k_dy, &k_xmu, &k_bias}; }

    Var d0{"d0"}, d1{"d1"}, n{"n"};
    Func g{"g"};
    Input<Buffer<>>* x = nullptr;
    Input<Buffer<>>* dy = nullptr;
    Input<Buffer<uint8_t, 3>>* mask = nullptr;
    Output<Buffer<>>* dx = nullptr;
    Output<Buffer<>>* daddend = nullptr;
};

}  // namespace bnforge_gen

HALIDE_REGISTER_GENERATOR(bnforge_gen::BnBackwardApply, bn_backward_apply)
