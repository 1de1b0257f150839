// Batch-norm modules: parameters, running statistics, train/eval, gradients,
// state dicts and hooks — the shape of libtorch's nn::BatchNorm2d.
#pragma once
#include <bnforge/functional.h>
#include <bnforge/options.h>
#include <bnforge/state_dict.h>
#include <bnforge/tensor.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace bnforge {

class BatchNormBase;
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;
using ForwardPreHook = std::function<void(BatchNormBase& module, const Tensor& input)>;
using ForwardHook = std::function<void(BatchNormBase& module, const Tensor& input, const Tensor& output)>;

// Returned by register_*_hook; remove() detaches the hook (safe after the module is gone).
class HookHandle {
public:
    HookHandle() = default;
    explicit HookHandle(std::function<void()> remover) : remover_(std::move(remover)) {}
    void remove() {
        if (remover_) remover_();
        remover_ = nullptr;
    }

private:
    std::function<void()> remover_;
};

// Everything the modules share. Parameters and buffers are float32 on the
// module's device, shaped (C) — or (1, C, 1, 1) under the MegEngine convention.
// Every call validates all of its arguments before it changes anything: a
// call that throws leaves the module exactly as it was.
class BatchNormBase {
public:
    virtual ~BatchNormBase();
    BatchNormBase(BatchNormBase&&) noexcept;
    BatchNormBase& operator=(BatchNormBase&&) noexcept;
    BatchNormBase(const BatchNormBase&) = delete;
    BatchNormBase& operator=(const BatchNormBase&) = delete;

    const BatchNormOptions& options() const { return options_; }
    const std::string& name() const { return name_; }

    void train(bool on = true) { training_ = on; }
    void eval() { training_ = false; }
    bool is_training() const { return training_; }

    Tensor& weight() { return weight_; }
    Tensor& bias() { return bias_; }
    Tensor& running_mean() { return running_mean_; }
    Tensor& running_var() { return running_var_; }
    Tensor& weight_grad() { return weight_grad_; }
    Tensor& bias_grad() { return bias_grad_; }
    int64_t num_batches_tracked() const;

    // Copies of the parameters and buffers under PyTorch/MegEngine names.
    StateDict state_dict() const;
    // Accepts (C) and (1, C, 1, 1) shapes under any convention and any float
    // dtype; with `strict`, missing and unexpected keys are an Error naming them.
    void load_state_dict(const StateDict& state, bool strict = true);

    void zero_grad();
    void reset_running_stats();  // running_mean = 0, running_var = 1, num_batches_tracked = 0
    void reset_parameters();     // the above, and weight = 1, bias = 0

    // Handles sharing storage with the module's tensors.
    NamedTensors named_parameters() const;
    NamedTensors named_buffers() const;

    HookHandle register_forward_pre_hook(ForwardPreHook hook);
    HookHandle register_forward_hook(ForwardHook hook);

protected:
    BatchNormBase(BatchNormOptions options, std::string name, std::vector<int64_t> ranks);

    Tensor forward_impl(const Tensor& x, const Tensor* addend, functional::Activation activation);
    functional::InputGrads backward_impl(const Tensor& dy);

    // Where SyncBatchNorm joins in: the batch moments of the whole group, and
    // the backward sums reduced over it. A single process uses its own.
    virtual functional::Moments global_moments(const functional::Moments& local) { return local; }
    virtual void reduce_backward_sums(functional::BackwardSums& /*sums*/) {}
    // Called instead of the two above when this process rejects its own
    // arguments, so that the processes already waiting in the exchange learn
    // of it and fail too, instead of waiting forever.
    virtual void abandon_forward_exchange() {}
    virtual void abandon_backward_exchange() {}
    // True when the hooks above combine several processes' batches. A module
    // that does not may run forward and backward in one pass over memory
    // (nothing has to happen between the statistics and the outputs).
    virtual bool synchronizes_statistics() const { return false; }

private:
    struct Hooks;
    struct Exclusive;
    friend class ExclusiveCall;
    void validate_input(const Tensor& x, const char* arg) const;
    bool uses_batch_statistics() const;
    // The running-statistics update of a training forward that tracks them, by this module's convention.
    functional::RunningUpdate running_update() const;

    BatchNormOptions options_;
    std::string name_;
    std::vector<int64_t> ranks_;
    bool training_ = true;
    Tensor weight_, bias_, running_mean_, running_var_, num_batches_tracked_;
    Tensor weight_grad_, bias_grad_;
    std::optional<functional::SavedContext> saved_;
    bool saved_synchronized_ = false;  // saved_ holds group statistics: backward reduces its sums
    std::shared_ptr<Hooks> hooks_;
    std::unique_ptr<Exclusive> exclusive_;  // which thread is inside a call (see ExclusiveCall)
};

// Ranks 2 and 3: (N, C) and (N, C, L).
class BatchNorm1d : public BatchNormBase {
public:
    explicit BatchNorm1d(BatchNormOptions options);
    Tensor forward(const Tensor& x) { return forward_impl(x, nullptr, functional::Activation::Identity); }
    // dx; accumulates weight_grad()/bias_grad() like .grad.
    Tensor backward(const Tensor& dy) { return backward_impl(dy).dx; }
};

// Rank 4: (N, C, H, W).
class BatchNorm2d : public BatchNormBase {
public:
    explicit BatchNorm2d(BatchNormOptions options);
    Tensor forward(const Tensor& x) { return forward_impl(x, nullptr, functional::Activation::Identity); }
    Tensor backward(const Tensor& dy) { return backward_impl(dy).dx; }
};

// Rank 5: (N, C, D, H, W).
class BatchNorm3d : public BatchNormBase {
public:
    explicit BatchNorm3d(BatchNormOptions options);
    Tensor forward(const Tensor& x) { return forward_impl(x, nullptr, functional::Activation::Identity); }
    Tensor backward(const Tensor& dy) { return backward_impl(dy).dx; }
};

// OneFlow's FusedBatchNorm2d: y = ReLU(BN(x) + addend), addend optional.
// A 1-bit mask of the positive outputs is kept for backward.
class FusedBatchNorm2d : public BatchNormBase {
public:
    explicit FusedBatchNorm2d(BatchNormOptions options);
    Tensor forward(const Tensor& x, const Tensor* addend = nullptr) {
        return forward_impl(x, addend, functional::Activation::Relu);
    }
    struct Grads {
        Tensor dx, daddend;  // daddend is undefined when forward had no addend
    };
    Grads backward(const Tensor& dy) {
        functional::InputGrads g = backward_impl(dy);
        return {g.dx, g.daddend};
    }
};

}  // namespace bnforge
