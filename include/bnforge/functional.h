// bnforge::functional — batch norm as stateless functions with explicit
// buffers. The modules are built on it, and so can other frameworks' glue.
//
// Forward in training is stats → (optional cross-process merge) → apply; the
// backward is reduce → (optional all-reduce) → apply. Each step is public so
// SyncBatchNorm-style callers can put a collective between them.
#pragma once
#include <bnforge/tensor.h>

#include <optional>
#include <string>
#include <vector>

namespace bnforge::functional {

enum class Activation { Identity, Relu };

// Per-channel (count, mean, M2) in float64 — the form that merges exactly
// across batches and processes (Chan et al.).
struct Moments {
    int64_t count = 0;
    std::vector<double> mean, m2;

    // Chan's parallel merge; `other` may have count 0.
    void merge(const Moments& other);
    std::vector<double> biased_var() const;    // m2 / count
    std::vector<double> unbiased_var() const;  // m2 / (count - 1)
};

// Statistics of x (N, C, spatial...) per channel.
Moments batch_moments(const Tensor& x);

// What backward needs from forward.
struct SavedContext {
    Tensor x;
    Tensor mask;                  // UInt8 bitmask of positive outputs (Relu only), 8 batch rows a byte
    std::vector<double> mean;     // the mean x was normalised with
    std::vector<double> invstd;   // 1 / sqrt(var + eps)
    int64_t count = 0;            // values per channel over the whole (global) batch
    bool batch_statistics = true; // false: running statistics were used (eval, freeze)
    Activation activation = Activation::Identity;
    bool has_addend = false;
};

struct ForwardResult {
    Tensor y;
    SavedContext saved;
};

// y = act((x − mean)·invstd·weight + bias [+ addend]) with the given per-channel
// mean and variance. weight/bias may be undefined tensors (affine=False).
ForwardResult normalize(const Tensor& x, const std::vector<double>& mean, const std::vector<double>& var,
                        double eps, const Tensor& weight, const Tensor& bias, Activation activation,
                        const Tensor* addend, bool batch_statistics, int64_t count);

// normalize() with batch statistics: biased variance of `moments` (which may
// cover more than x, e.g. a whole process group), M = moments.count. Training
// with M == 1 is an Error ("Expected more than 1 value per channel when training").
ForwardResult normalize_with_batch_stats(const Tensor& x, const Moments& moments, double eps, const Tensor& weight,
                                         const Tensor& bias, Activation activation, const Tensor* addend);
// normalize() with running statistics (eval, freeze): backward treats them as constants.
ForwardResult normalize_with_running_stats(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                                           double eps, const Tensor& weight, const Tensor& bias, Activation activation,
                                           const Tensor* addend);

// Per-channel Σg and Σg·(x − mean), g = dy (masked by the ReLU for fused ops).
struct BackwardSums {
    std::vector<double> sum_dy, sum_dy_xmu;
};
BackwardSums backward_sums(const Tensor& dy, const SavedContext& saved);

struct InputGrads {
    Tensor dx;
    Tensor daddend;  // defined for fused ops with an addend
};
// dx from the (possibly globally reduced) sums; `saved.count` is the M of the formula.
InputGrads backward_input(const Tensor& dy, const SavedContext& saved, const Tensor& weight,
                          const BackwardSums& sums);

// Parameter gradients from the sums: dweight = Σg·x̂ = sum_dy_xmu·invstd, dbias = sum_dy.
void parameter_grads(const SavedContext& saved, const BackwardSums& sums, std::vector<double>& dweight,
                     std::vector<double>& dbias);

// The whole thing, for one process. Training (batch statistics) when
// running_mean/var are undefined or `training` is true; the running buffers
// are NOT updated here (the modules own that rule). In training, forward and
// backward run in one pass over memory when a channel block fits in cache
// (see set_one_pass_limit in runtime.h), with the same results as the steps above.
struct BatchNormForward {
    ForwardResult result;
    std::optional<Moments> moments;  // batch moments when batch statistics were used
};
BatchNormForward batch_norm_forward(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                                    const Tensor& weight, const Tensor& bias, bool training, double eps,
                                    Activation activation = Activation::Identity, const Tensor* addend = nullptr);

struct BatchNormBackward {
    InputGrads input;
    std::vector<double> dweight, dbias;
};
BatchNormBackward batch_norm_backward(const Tensor& dy, const SavedContext& saved, const Tensor& weight);

}  // namespace bnforge::functional
