// MegEngine's SyncBatchNorm: batch statistics over every rank of a process group.
#pragma once
#include <bnforge/batch_norm.h>
#include <bnforge/process_group.h>

#include <memory>

namespace bnforge {

// In training, each rank's batch statistics (count, mean, M2 per channel) are
// all-gathered over the group and merged (Chan et al.) in rank order, so every
// rank normalises with, and updates its running statistics from, the same
// global statistics, bit for bit. Uneven batches merge exactly; a rank with an
// empty batch (N = 0) contributes nothing but still joins every collective.
// The running variance is unbiased with the global count.
//
// Backward all-reduces the per-channel (Σdy, Σdy·(x − mean)) and forms dx with
// the global count. weight_grad()/bias_grad() accumulate this rank's LOCAL
// sums, as PyTorch's SyncBatchNorm does: summing (or averaging) parameter
// gradients over ranks is the data-parallel wrapper's job.
//
// Eval, freeze and groups of size 1 exchange nothing: they are BatchNorm2d.
// Options and conventions are BatchNorm2d's. Inputs of rank 2 to 5 (N, C, ...).
//
// Failures do not hang the group: the channel count is compared across ranks
// before any statistics travel, and a rank whose own arguments are rejected
// still joins the exchange, so every rank throws a bnforge::Error (the
// module's state untouched everywhere).
class SyncBatchNorm : public BatchNormBase {
public:
    // group == nullptr: ProcessGroup::world().
    explicit SyncBatchNorm(BatchNormOptions options, std::shared_ptr<ProcessGroup> group = nullptr);

    Tensor forward(const Tensor& x) { return forward_impl(x, nullptr, functional::Activation::Identity); }
    // dx; accumulates weight_grad()/bias_grad() with this rank's sums.
    Tensor backward(const Tensor& dy) { return backward_impl(dy).dx; }

    const std::shared_ptr<ProcessGroup>& group() const { return group_; }

protected:
    bool synchronizes_statistics() const override;
    functional::Moments global_moments(const functional::Moments& local) override;
    void reduce_backward_sums(functional::BackwardSums& sums) override;
    void abandon_forward_exchange() override;
    void abandon_backward_exchange() override;

private:
    functional::Moments exchange_moments(const functional::Moments* local);
    void exchange_backward_sums(functional::BackwardSums* sums);

    std::shared_ptr<ProcessGroup> group_;
};

}  // namespace bnforge
