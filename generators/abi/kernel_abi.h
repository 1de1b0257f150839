// The kernel ABI: what the generators, the runtime and the tools must agree
// on, in one Halide-free header (as Halide's apps/hannk/halide/constants.h is
// for its generators and interpreter). Kernels are called with arguments
// matched by these names against their own metadata, so a drift between two
// sides is an Error at the call, never a crash.
#pragma once

#include <cstdint>

namespace bnforge::abi {

// Rows of the batch packed into one byte of the ReLU mask: bit k of byte
// (d0, d1, m) is element (d0, d1, 8m + k) of the memory-order view.
constexpr int kMaskRows = 8;
// The widest mask vector a CPU kernel stores, in bytes, for outputs of
// `value_bytes`: the ReLU apply runs one vector of its output type (AVX-512:
// 16 float32 or 32 half-precision lanes), and a mask vector has a byte per
// lane. The streaming variants' whole-vector mask stores need rows aligned to it.
constexpr int max_mask_vector_bytes(int value_bytes) { return 64 / value_bytes; }

// The kernel families. stats → apply and backward_reduce → backward_apply are
// the two-pass pipelines; train_forward / train_backward do both passes per
// channel block while its slab is in L2 (CPU only). The per-channel pipelines
// turn the reductions' float64 sums into what the next pass needs:
// forward_finalize (moments → apply constants, saved mean/invstd, running
// statistics), backward_finalize (sums → dx coefficients, dγ/dβ) and
// merge_moments (Chan's merge of the rows SyncBatchNorm gathers).
enum class Pipeline {
    stats,
    apply,
    backward_reduce,
    backward_apply,
    train_forward,
    train_backward,
    forward_finalize,
    backward_finalize,
    merge_moments,
};

// What a batch pipeline fuses: nothing, ReLU, or addend then ReLU (OneFlow's
// FusedBatchNorm2d); `masked` is a backward reduction that applies the forward
// ReLU mask to dy. Per-channel pipelines have `none`.
enum class Fusion { none, relu, add_relu, masked };

inline const char* to_string(Pipeline p) {
    switch (p) {
        case Pipeline::stats: return "stats";
        case Pipeline::apply: return "apply";
        case Pipeline::backward_reduce: return "backward_reduce";
        case Pipeline::backward_apply: return "backward_apply";
        case Pipeline::train_forward: return "train_forward";
        case Pipeline::train_backward: return "train_backward";
        case Pipeline::forward_finalize: return "forward_finalize";
        case Pipeline::backward_finalize: return "backward_finalize";
        case Pipeline::merge_moments: return "merge_moments";
    }
    return "?";
}

inline const char* to_string(Fusion f) {
    switch (f) {
        case Fusion::none: return "none";
        case Fusion::relu: return "relu";
        case Fusion::add_relu: return "add_relu";
        case Fusion::masked: return "masked";
    }
    return "?";
}

// Rows of the per-channel float64 tensors that travel between kernels (and,
// for SyncBatchNorm, between processes). Memory is (row, channel): each row is
// C contiguous values, so a row is a dense vector and a whole tensor is one
// collective's buffer.
//   moments: (kMomentRows, C) = the count M, the mean, M2 = Σ(x − mean)²
//   sums:    (kSumRows, C)    = Σg, Σg·(x − mean)
enum MomentRow { kMomentCount, kMomentMean, kMomentM2, kMomentRows };
enum SumRow { kSumDy, kSumDyXmu, kSumRows };

// Argument names, as the generators declare them and the runtime passes them.
namespace arg {
constexpr const char* x = "x";
constexpr const char* dy = "dy";
constexpr const char* addend = "addend";
constexpr const char* y = "y";
constexpr const char* dx = "dx";
constexpr const char* daddend = "daddend";
constexpr const char* mask = "mask";
// the apply constants: the mean as float32 shift + offset, γ·invstd, β
constexpr const char* shift = "shift";
constexpr const char* offset = "offset";
constexpr const char* scale = "scale";
constexpr const char* beta = "beta";
// backward
constexpr const char* k_dy = "k_dy";
constexpr const char* k_xmu = "k_xmu";
constexpr const char* k_bias = "k_bias";
constexpr const char* invstd = "invstd";
// parameters, module state, scalars
constexpr const char* weight = "weight";
constexpr const char* bias = "bias";
constexpr const char* eps = "eps";
constexpr const char* factor = "factor";  // the weight of the batch statistic in a running update
constexpr const char* count = "count";
constexpr const char* running_mean = "running_mean";
constexpr const char* running_var = "running_var";
constexpr const char* num_batches_tracked = "num_batches_tracked";
constexpr const char* weight_grad = "weight_grad";
constexpr const char* bias_grad = "bias_grad";
// per-channel rows (MomentRow / SumRow above) and the per-channel pipelines
constexpr const char* moments = "moments";
constexpr const char* gathered = "gathered";
constexpr const char* sums = "sums";
constexpr const char* local_sums = "local_sums";
constexpr const char* saved_mean = "saved_mean";
constexpr const char* saved_invstd = "saved_invstd";
}  // namespace arg

// An in-place state update (running statistics, num_batches_tracked, the
// gradient accumulators) is an input and an output of the same name plus
// this suffix; the runtime passes the same memory to both. Safe because each
// such output reads only its own input at its own index (see the finalize
// generators).
constexpr const char* kUpdatedSuffix = "_out";

}  // namespace bnforge::abi
