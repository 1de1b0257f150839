#include <bnforge/sync_batch_norm.h>

#include "check.h"

#include <string>
#include <vector>

namespace bnforge {

using functional::BackwardSums;
using functional::Moments;

namespace {

// The forward handshake every rank sends before any statistics: whether its
// input was accepted, its channel count and its per-channel count. Statistics
// of mismatched sizes cannot travel in one all-gather, so this comes first.
enum Handshake { kAccepted, kChannels, kCount, kHandshakeValues };

std::string rejected_ranks(const std::vector<int>& ranks) {
    std::string s;
    for (size_t i = 0; i < ranks.size(); i++) s += (i ? ", " : "") + std::to_string(ranks[i]);
    return s;
}

}  // namespace

SyncBatchNorm::SyncBatchNorm(BatchNormOptions options, std::shared_ptr<ProcessGroup> group)
    : BatchNormBase(std::move(options), "SyncBatchNorm", {2, 3, 4, 5}),
      group_(group ? std::move(group) : ProcessGroup::world()) {}

bool SyncBatchNorm::synchronizes_statistics() const { return is_training() && group_->size() > 1; }

Moments SyncBatchNorm::global_moments(const Moments& local) { return exchange_moments(&local); }
void SyncBatchNorm::abandon_forward_exchange() { exchange_moments(nullptr); }

Moments SyncBatchNorm::exchange_moments(const Moments* local) {
    const int size = group_->size();
    const double mine[kHandshakeValues] = {local ? 1.0 : 0.0, static_cast<double>(options().num_features()),
                                           local ? static_cast<double>(local->count) : 0.0};
    std::vector<double> all(kHandshakeValues * size);
    group_->all_gather(mine, all.data(), kHandshakeValues);
    auto field = [&](int r, Handshake f) { return all[kHandshakeValues * r + f]; };

    std::vector<int> rejected;
    for (int r = 0; r < size; r++) {
        if (field(r, kAccepted) == 0) rejected.push_back(r);
    }
    if (!local) return {};  // this rank's own error is on its way up
    BNF_CHECK(rejected.empty(), name() << ": rank(s) " << rejected_ranks(rejected) << " of the process group (size "
                                       << size << ") rejected their input; no statistics were exchanged "
                                       << "(the error is on those ranks)");
    for (int r = 0; r < size; r++) {
        BNF_CHECK(field(r, kChannels) == mine[kChannels],
                  name() << ": channel count differs across the process group: rank " << group_->rank() << " has "
                         << options().num_features() << " (num_features), rank " << r << " has "
                         << static_cast<int64_t>(field(r, kChannels)));
    }

    // The (count, mean, M2) rows travel where they are (device memory with
    // NCCL) and every rank merges the same values in rank order, on that
    // device: identical statistics on every rank, to the bit. The global
    // count is the handshake's.
    const int64_t channels = options().num_features();
    const Device device = local->rows.device();
    Tensor gathered = Tensor::empty({size, local->rows.shape()[0], channels}, DType::Float64, device);
    group_->all_gather(local->rows, gathered);
    int64_t count = 0;
    for (int r = 0; r < size; r++) count += static_cast<int64_t>(field(r, kCount));
    return functional::merge_gathered(gathered, count);
}

void SyncBatchNorm::reduce_backward_sums(BackwardSums& sums) { exchange_backward_sums(&sums); }
void SyncBatchNorm::abandon_backward_exchange() { exchange_backward_sums(nullptr); }

// First the count of ranks that rejected their arguments, on the host (the
// backward's one small host read), so that no rank is left waiting in the
// all-reduce of the sums; then the sums themselves, where they are.
void SyncBatchNorm::exchange_backward_sums(BackwardSums* sums) {
    double rejected = sums ? 0.0 : 1.0;
    group_->all_reduce_sum(&rejected, 1);
    if (!sums) return;
    BNF_CHECK(rejected == 0, name() << ": " << static_cast<int64_t>(rejected) << " rank(s) of the process group (size "
                                    << group_->size() << ") rejected their backward arguments; "
                                    << "no gradients were computed (the error is on those ranks)");
    group_->all_reduce_sum(sums->sums);
}

}  // namespace bnforge
