// Rounding-exact math: every formula of batch norm, written once and used by
// every pipeline that evaluates it (two-pass, one-pass, per-channel finalize),
// so that routes which schedule it differently round it the same way. Strict
// (IEEE order, no FMA contraction) where two routes must agree to the bit.
#pragma once

#include "bn_vocabulary.h"

namespace bnforge_gen {

// ---- element types ----

// A stored activation widened to float32 (bfloat16 by its bits: exact, and it
// sidesteps Halide 21's PTX bfloat16 conversion, which fails an LLVM assertion).
Expr widen_to_float(const Expr& v);
// How a kernel rounds float32 to bfloat16 (narrowing() picks it per target).
// Exact: to nearest even on the bits, subnormals kept, as c10::BFloat16.
// ExactNanPayloads: the same where a NaN may carry low payload bits (PTX's
// arithmetic returns 0x7fffffff for any NaN), which are truncated instead of
// rounded into the sign; on a CPU no NaN has them (bfloat16 inputs, the FPU's
// own NaN, channel_constant's). Native: AVX512-BF16's vcvtne2ps2bf16, one
// instruction for Exact's six; also to nearest even, but subnormal values
// (below 2^-126) become ±0, as in oneDNN's kernels and in the GPU kernels,
// whose float32 arithmetic flushes them.
enum class Narrowing { Exact, ExactNanPayloads, Native };
Narrowing narrowing(const Target& target);
// A float32 value stored as `type`: bfloat16 as `how` says (Halide's own cast
// would be Exact in six instructions everywhere), NaNs staying NaN
// (c10::BFloat16 stores 0x7fc0; the tests ask for a NaN, not which).
Expr narrow_from_float(const Type& type, const Expr& v, Narrowing how);
// A float32 value that `type` holds exactly (a widened input, or zero), stored
// as `type`: bfloat16 by its top half, no rounding to pay for.
Expr narrow_exact(const Type& type, const Expr& v);

// ---- elementwise ----

// x − mean with the mean split as shift + offset: x − shift is exact for data
// near the mean, and strict keeps it from being reassociated away.
Expr centred(const Expr& x, const Expr& shift, const Expr& offset);
// The pre-activation ((x − shift) − offset)·scale + beta [+ addend], in IEEE order.
Expr normalized(const Expr& x, const Expr& shift, const Expr& offset, const Expr& scale, const Expr& beta,
                const Expr& addend = Expr());
// dx = g·k_dy − (x − mean)·k_xmu − k_bias, in IEEE order.
Expr input_grad(const Expr& g, const Expr& xmu, const Expr& k_dy, const Expr& k_xmu, const Expr& k_bias);
// ReLU as select(v < 0, 0, v) rather than max(): NaN propagates, as in PyTorch.
Expr relu(const Expr& v);

// ---- the ReLU mask ----
// One bit per element, packed across the batch: bit k of byte (d0, d1, m) is
// element (d0, d1, 8m + k), in memory order. Packed along a row instead, each
// byte vector would need 8 stride-8 reads of the row and the row's partial
// last byte a clamped index (shuffles or gathers, which cost the fused
// forward half its speed); across the batch a byte vector lines up with one
// dense vector of each of 8 rows, and only a batch that is not a multiple of
// 8 leaves a partial byte, guarded by a scalar test on the row.

// The mask of `pre` (memory order): bit k of byte (d0, d1, m) where
// pre(d0, d1, 8m + k) stored as `type` is above zero (stored_positive).
// `predicated` (the manual schedules): the bits are an update over the
// byte's rows, each under a test that the row is in the batch, so a batch
// under 8 evaluates only its real rows (the pure expression over clamped
// rows evaluates all 8: a third of a BN+ReLU call at N = 1); the schedules
// compute `func` in the mask's vector or thread loop
// (compute_mask_bits_cpu/_gpu), its rows `k` unrolled. Otherwise `func` is
// that pure expression, for the autoschedulers: Anderson2021's schedule of
// the update wrote wrong bits on PoCL (test_gpu_schedules).
struct MaskBits {
    Func func{"mask_bits"};
    RDom k;  // the byte's rows, when predicated
};
MaskBits mask_bits(const Func& pre, const Type& type, Narrowing how, const Var& d0, const Var& d1, const Var& m,
                   const Expr& batch, bool predicated);
// Whether float32 `v` stored as `type` (narrow_from_float) is above zero,
// without the rounding: v above the largest value that rounds to zero —
// half the type's smallest subnormal (ties to even), or the largest float32
// subnormal under Narrowing::Native. A positive value that rounds to zero is
// not positive: PyTorch's ReLU backward tests its own rounded output.
Expr stored_positive(const Type& type, const Expr& v, Narrowing how);
// Whether element (d0, d1, n) was positive.
Expr mask_bit(const Func& mask, const Expr& d0, const Expr& d1, const Expr& n);

// ---- statistics ----

// The per-channel shift: a float32 mean of the first kShiftSamples values of
// channel c in (s, n) order (`xf` in logical coordinates, widened).
Expr channel_shift(const Func& xf, const Expr& c, const Expr& spatial, const Expr& batch);
// (mean, M2) from the shifted sums (Σd, Σd²), d = x − shift:
// mean = shift + Σd/M, M2 = max(Σd² − Σd·(Σd/M), 0).
Tuple channel_moments(const Expr& shift, const Expr& sum_d, const Expr& sum_d2, const Expr& count);
// Row `row` of a (count, mean, M2) moments tensor (kernel_abi.h's MomentRow
// order), from the count and channel_moments' (mean, M2).
Expr moment_row(const Expr& row, const Expr& count, const Tuple& mean_m2);
// Row `row` of a (Σg, Σg·(x − mean)) sums tensor (kernel_abi.h's SumRow order).
Expr sum_row(const Expr& row, const Tuple& sums);
// Chan's merge of (count, mean, M2) with another part (either count may be 0),
// as the ranks' rows are folded in rank order: (count, mean, M2) of the union.
Tuple merge_moments(const Tuple& acc, const Expr& count, const Expr& mean, const Expr& m2);

// ---- per-channel coefficients (float64 in, float32 kernel constants out) ----

// 1 / sqrt(var + eps).
Expr inverse_std(const Expr& var, const Expr& eps);
// The biased variance M2 / M the forward normalises with; 1 for an empty
// (global) batch, which normalises nothing.
Expr batch_variance(const Expr& m2, const Expr& count);

// A per-channel float32 constant of the elementwise kernels, its NaNs made
// float32's quiet NaN without payload (see Narrowing).
Expr channel_constant(const Expr& v);

// What the apply pass takes: the mean as float32 shift + offset (mean − shift),
// scale = γ·invstd and β, each rounded once from float64 (channel constants).
struct ApplyConstants {
    Expr shift, offset, scale, beta;
};
ApplyConstants apply_constants(const Expr& mean, const Expr& invstd, const Expr& weight, const Expr& bias);

// What the backward apply pass takes (float32 channel constants) from the
// float64 sums over M values: k_dy = γ·invstd, k_xmu = γ·invstd³·Σg(x − mean)/M,
// k_bias = γ·invstd·Σg/M; with constant (running) statistics only k_dy.
struct GradCoefficients {
    Expr k_dy, k_xmu, k_bias;
};
GradCoefficients grad_coefficients(const Expr& weight, const Expr& invstd, const Expr& sum_dy,
                                   const Expr& sum_dy_xmu, const Expr& count, bool batch_statistics);

// ---- module state ----

// A running statistic moved toward the batch's: factor·batch + (1 − factor)·running,
// in float64, stored as float32. `factor` is the new batch's weight.
Expr running_update(const Expr& running, const Expr& batch, const Expr& factor);
// The unbiased variance M2 / (M − 1) the running variance tracks.
Expr unbiased_variance(const Expr& m2, const Expr& count);
// A float32 gradient accumulator plus a float64 term, as .grad accumulates: the
// term rounded to float32, then added in float32.
Expr accumulate_grad(const Expr& accumulated, const Expr& term);

}  // namespace bnforge_gen
