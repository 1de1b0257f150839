// bnforge::functional — batch norm as stateless functions with explicit
// buffers. The modules are built on it, and so can other frameworks' glue.
//
// Forward in training is stats → (optional cross-process merge) → per-channel
// finalize → apply; the backward is reduce → (optional all-reduce) →
// finalize → apply. Each step is public so SyncBatchNorm-style callers can
// put a collective between them. Every per-channel value (moments, sums, the
// saved context) is a small tensor on the device of the data, and the
// per-channel arithmetic runs there too: on a GPU nothing goes back to the host.
#pragma once
#include <bnforge/tensor.h>

#include <optional>
#include <string>
#include <vector>

namespace bnforge::functional {

enum class Activation { Identity, Relu };

// Per-channel (count, mean, M2) in float64 — the form that merges exactly
// across batches and processes (Chan et al.) — as the rows of one (3, C)
// tensor on the device of the batch it describes, so a collective carries it
// in one buffer and the next kernel reads it where it is.
struct Moments {
    Tensor rows;        // Float64 (3, C): the count, the mean, M2 = Σ(x − mean)² of each channel
    int64_t count = 0;  // the count, as the host knows it (from the shapes, or SyncBatchNorm's handshake)

    // Chan's parallel merge (the merge_moments kernel); `other` may have count 0.
    void merge(const Moments& other);
    // Host copies, for tests and tools (a device→host copy on a GPU).
    std::vector<double> mean() const;
    std::vector<double> m2() const;
    std::vector<double> biased_var() const;    // m2 / count
    std::vector<double> unbiased_var() const;  // m2 / (count - 1)
};

// Statistics of x (N, C, spatial...) per channel, on x's device.
Moments batch_moments(const Tensor& x);
// The moments of R parts gathered side by side, (R, 3, C) float64 (an
// all-gather of Moments::rows), merged in order on their device; `count` is
// their total count.
Moments merge_gathered(const Tensor& gathered, int64_t count);

// What backward needs from forward. Per-channel values stay on x's device.
struct SavedContext {
    Tensor x;
    Tensor mask;                  // UInt8 bitmask of positive outputs (Relu only), 8 batch rows a byte
    Tensor mean;                  // Float64 (C): the mean x was normalised with
    Tensor invstd;                // Float64 (C): 1 / sqrt(var + eps)
    Tensor shift, offset;         // Float32 (C): that mean as the kernels subtract it (float32 shift + rest)
    int64_t count = 0;            // values per channel over the whole (global) batch
    bool batch_statistics = true; // false: running statistics were used (eval, freeze)
    Activation activation = Activation::Identity;
    bool has_addend = false;
};

struct ForwardResult {
    Tensor y;
    SavedContext saved;
};

// The running-statistics update a training forward makes in its per-channel
// step, on the device of the statistics (no host round trip):
// running ← f·batch + (1 − f)·running, the variance unbiased; an empty batch
// leaves them. Tensors are updated in place: Float32 (C) statistics, an Int64
// scalar counter.
struct RunningUpdate {
    Tensor running_mean, running_var;
    Tensor num_batches_tracked;   // +1 per update; undefined: not counted (MegEngine)
    std::optional<double> factor; // the batch's weight f; nullopt: 1 / num_batches_tracked (cumulative average)
};

// y = act((x − mean)·invstd·weight + bias [+ addend]) with the batch statistics
// `moments` (which may cover more than x, e.g. a whole process group; M =
// moments.count; biased variance), updating `update` in the same step.
// weight/bias may be undefined tensors (affine=False). Training with M == 1
// is an Error ("Expected more than 1 value per channel when training").
ForwardResult normalize_with_batch_stats(const Tensor& x, const Moments& moments, double eps, const Tensor& weight,
                                         const Tensor& bias, Activation activation, const Tensor* addend,
                                         const RunningUpdate* update = nullptr);
// With running statistics (eval, freeze): backward treats them as constants.
ForwardResult normalize_with_running_stats(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                                           double eps, const Tensor& weight, const Tensor& bias, Activation activation,
                                           const Tensor* addend);

// Per-channel Σg and Σg·(x − mean), g = dy (masked by the ReLU for fused ops).
struct BackwardSums {
    Tensor sums;  // Float64 (2, C) on x's device: Σg, Σg·(x − mean)
};
BackwardSums backward_sums(const Tensor& dy, const SavedContext& saved);

// Gradient accumulators a backward adds dγ = Σg·(x − mean)·invstd and
// dβ = Σg to in its per-channel step (float32, as .grad accumulates; in
// place). `local`: the sums the parameter gradients come from when they are
// not the ones dx uses (SyncBatchNorm: this rank's own, PyTorch's rule).
// Undefined tensors: no parameter gradients at all (a frozen module).
struct GradAccumulators {
    Tensor weight_grad, bias_grad;
    const BackwardSums* local = nullptr;
};

struct InputGrads {
    Tensor dx;
    Tensor daddend;  // defined for fused ops with an addend
};
// dx from the (possibly globally reduced) sums; `saved.count` is the M of the
// formula. With `grads`, accumulates the parameter gradients in the same step.
InputGrads backward_input(const Tensor& dy, const SavedContext& saved, const Tensor& weight,
                          const BackwardSums& sums, const GradAccumulators* grads = nullptr);

// The whole thing, for one process. Training (batch statistics) when
// running_mean/var are undefined or `training` is true; the running buffers
// are updated only through `update` (the modules pass their own rule). In
// training, forward and backward run in one pass over memory when a channel
// block fits in cache (see set_one_pass_limit in runtime.h), with the same
// results as the steps above.
struct BatchNormForward {
    ForwardResult result;
    std::optional<Moments> moments;  // batch moments when batch statistics were used
};
BatchNormForward batch_norm_forward(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                                    const Tensor& weight, const Tensor& bias, bool training, double eps,
                                    Activation activation = Activation::Identity, const Tensor* addend = nullptr,
                                    const RunningUpdate* update = nullptr);

struct BatchNormBackward {
    InputGrads input;
    Tensor dweight, dbias;  // Float32 (C) on x's device, when `grads` is null: this backward's alone
};
// With `grads`, the parameter gradients are added to those accumulators and
// dweight/dbias are left undefined.
BatchNormBackward batch_norm_backward(const Tensor& dy, const SavedContext& saved, const Tensor& weight,
                                      const GradAccumulators* grads = nullptr);

}  // namespace bnforge::functional
