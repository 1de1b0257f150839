// Normalise and activate: y = act(((x − shift) − offset)·scale + beta [+ addend]).
//
// The per-channel mean arrives split as shift + offset (shift = the mean
// rounded to float32, offset = the rounding error), so x − shift is exact for
// data near the mean and no precision is lost when the data sit far from
// zero — unlike the folded x·scale + (beta − mean·scale).
// With ReLU the pipeline also writes a 1-bit mask of the positive outputs
// (packed across the batch, see mask_bits).
#include "bn_generator.h"
#include "bn_math.h"
#include "cpu_schedules.h"
#include "gpu_schedules.h"

namespace bnforge_gen {

class BnApply : public BnGenerator<BnApply> {
public:
    GeneratorParam<Layout> layout{"layout", Layout::NCHW, kLayoutNames};
    GeneratorParam<Type> dtype{"dtype", Float(32)};
    GeneratorParam<Fusion> fusion{"fusion", Fusion::none, kFusionNames};

    Input<Buffer<float, 1>> shift{arg::shift};
    Input<Buffer<float, 1>> offset{arg::offset};
    Input<Buffer<float, 1>> scale{arg::scale};
    Input<Buffer<float, 1>> beta{arg::beta};

    void configure() {
        if (fusion == Fusion::masked) throw CompileError("bn_apply: fusion is none, relu or add_relu");
        x = add_input<Buffer<>>(arg::x, dtype, 3);
        if (fusion == Fusion::add_relu) addend = add_input<Buffer<>>(arg::addend, dtype, 3);
        y = add_output<Buffer<>>(arg::y, dtype, 3);
        if (fusion != Fusion::none) mask = add_output<Buffer<uint8_t, 3>>(arg::mask);
    }

    void generate() {
        Expr c = layout == Layout::NCHW ? d1 : d0;
        pre(d0, d1, n) = normalized(widen_to_float((*x)(d0, d1, n)), shift(c), offset(c), scale(c), beta(c),
                                    addend ? widen_to_float((*addend)(d0, d1, n)) : Expr());
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
        for (auto* p : channel_inputs()) set_channel_estimates(*p);
        if (mask) set_mask_estimates(*mask, layout);
    }

    void schedule_gpu() {
        Var at = schedule_elementwise_gpu(*y, d0, d1, n);
        if (mask) schedule_mask_gpu(*mask, bits, *y, d0, d1, m, at);
    }

    void schedule_cpu() {
        // A vector of the stored type: in half precision two float vectors
        // per step, so one narrowing fills a register and the masked apply's
        // row guards and reloads are paid once per 32 lanes (bench/analysis.md,
        // "The apply a vector of its output type").
        const int vec = natural_vector_size(dtype);
        if (mask) {
            schedule_masked_rows_cpu(*y, *mask, bits, layout, d0, d1, n, m, vec);
        } else {
            const int channel_operands = static_cast<int>(channel_inputs().size());
            schedule_rows_cpu(*y, layout, d0, d1, n, y->dim(0).extent(), y->dim(1).extent() * y->dim(2).extent(), vec,
                              channel_operands);
        }
    }

private:
    // The per-channel operands each element reads.
    std::vector<Input<Buffer<float, 1>>*> channel_inputs() { return {&shift, &offset, &scale, &beta}; }

    Var d0{"d0"}, d1{"d1"}, n{"n"}, m{"m"};
    Func pre{"pre"};
    MaskBits bits;
    Input<Buffer<>>* x = nullptr;
    Input<Buffer<>>* addend = nullptr;
    Output<Buffer<>>* y = nullptr;
    Output<Buffer<uint8_t, 3>>* mask = nullptr;
};

}  // namespace bnforge_gen

HALIDE_REGISTER_GENERATOR(bnforge_gen::BnApply, bn_apply)
