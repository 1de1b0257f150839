// Typed kernel calls: one function per pipeline, owning its halide_buffer_t
// plumbing, so the functional layer holds only the choice of route. Every
// tensor argument is on the kernel's device (the batch tensors as memory-order
// views, the per-channel ones as they are); nothing is copied.
#pragma once
#include <bnforge/functional.h>

#include "kernels.h"

#include <optional>

namespace bnforge::detail {

using abi::kMomentRows;
using abi::kSumRows;

// The apply constants of a forward, and what backward keeps of them.
struct ApplyConstants {
    Tensor shift, offset, scale, beta;  // Float32 (C)
    Tensor saved_mean, saved_invstd;    // Float64 (C)
};

// What a forward's per-channel step reads besides the moments.
// (Pointers: the caller's tensors, not handle copies — this is every step's fixed cost.)
struct ForwardFinalizeArgs {
    const functional::Moments* moments = nullptr;  // batch statistics; nullptr: the running ones
    const Tensor* running_mean = nullptr;           // Float32 (C), read (eval); an update carries its own
    const Tensor* running_var = nullptr;
    const functional::RunningUpdate* update = nullptr;
    const Tensor* weight = nullptr;                 // Float32 (C), both or neither (affine=False)
    const Tensor* bias = nullptr;
    double eps = 1e-5;
};

// A new (rows, C) float64 tensor on `device`.
Tensor channel_rows(int64_t rows, int64_t channels, Device device);

// x → moments (kMomentRows, C).
void call_stats(const BatchView& x, const Tensor& moments);
// The per-channel step of a forward: constants (and the update in place).
ApplyConstants call_forward_finalize(const ForwardFinalizeArgs& args, int64_t channels, Device device);
// y [and mask] = act(BN(x) [+ addend]).
void call_apply(const BatchView& x, const BatchView* addend, const ApplyConstants& k, const BatchView& y,
                const Tensor* mask);
// One pass: moments and y [and mask]; weight/bias Float32 (C) on the CPU.
void call_train_forward(const BatchView& x, const BatchView* addend, const Tensor& weight, const Tensor& bias,
                        double eps, const BatchView& y, const Tensor* mask, const Tensor& moments);
// (Σg, Σg·(x − mean)) into sums (kSumRows, C).
void call_backward_reduce(const BatchView& x, const BatchView& dy, const Tensor* mask,
                          const functional::SavedContext& saved, const Tensor& sums);
// The per-channel step of a backward: dx coefficients (Float32 (C) each) and,
// with `grads`, dγ/dβ of `grads->local` (or `sums`) added in place.
struct GradCoefficients {
    Tensor k_dy, k_xmu, k_bias;
};
GradCoefficients call_backward_finalize(const functional::SavedContext& saved, const Tensor& weight,
                                        const Tensor& sums, const functional::GradAccumulators* grads);
// dx [and daddend] from the coefficients.
void call_backward_apply(const BatchView& x, const BatchView& dy, const Tensor* mask,
                         const functional::SavedContext& saved, const GradCoefficients& k, const BatchView& dx,
                         const BatchView* daddend);
// One pass: sums and dx [and daddend]; weight Float32 (C) on the CPU.
void call_train_backward(const BatchView& x, const BatchView& dy, const Tensor* mask,
                         const functional::SavedContext& saved, const Tensor& weight, const BatchView& dx,
                         const BatchView* daddend, const Tensor& sums);
// Chan's merge of gathered (ranks, kMomentRows, C) rows into moments (kMomentRows, C).
void call_merge_moments(const Tensor& gathered, const Tensor& moments);

}  // namespace bnforge::detail
