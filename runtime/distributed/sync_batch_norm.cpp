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

    // Every rank merges the same values in rank order: identical statistics
    // on every rank, to the bit.
    const size_t channels = static_cast<size_t>(options().num_features());
    std::vector<double> send(2 * channels), gathered(2 * channels * size);
    std::copy(local->mean.begin(), local->mean.end(), send.begin());
    std::copy(local->m2.begin(), local->m2.end(), send.begin() + channels);
    group_->all_gather(send.data(), gathered.data(), send.size());

    Moments global;
    for (int r = 0; r < size; r++) {
        Moments part;
        part.count = static_cast<int64_t>(field(r, kCount));
        const double* p = gathered.data() + 2 * channels * r;
        part.mean.assign(p, p + channels);
        part.m2.assign(p + channels, p + 2 * channels);
        global.merge(part);
    }
    if (global.count == 0) {  // every rank's batch is empty
        global.mean.assign(channels, 0.0);
        global.m2.assign(channels, 0.0);
    }
    return global;
}

void SyncBatchNorm::reduce_backward_sums(BackwardSums& sums) { exchange_backward_sums(&sums); }
void SyncBatchNorm::abandon_backward_exchange() { exchange_backward_sums(nullptr); }

// One all-reduce of [rejections, Σdy (C), Σdy·(x − mean) (C)]: the count of
// ranks that rejected their arguments rides along with the sums.
void SyncBatchNorm::exchange_backward_sums(BackwardSums* sums) {
    const size_t channels = static_cast<size_t>(options().num_features());
    std::vector<double> buffer(1 + 2 * channels, 0.0);
    if (sums) {
        std::copy(sums->sum_dy.begin(), sums->sum_dy.end(), buffer.begin() + 1);
        std::copy(sums->sum_dy_xmu.begin(), sums->sum_dy_xmu.end(), buffer.begin() + 1 + channels);
    } else {
        buffer[0] = 1;
    }
    group_->all_reduce_sum(buffer.data(), buffer.size());
    if (!sums) return;
    BNF_CHECK(buffer[0] == 0, name() << ": " << static_cast<int64_t>(buffer[0]) << " rank(s) of the process group (size "
                                     << group_->size() << ") rejected their backward arguments; "
                                     << "no gradients were computed (the error is on those ranks)");
    std::copy(buffer.begin() + 1, buffer.begin() + 1 + channels, sums->sum_dy.begin());
    std::copy(buffer.begin() + 1 + channels, buffer.end(), sums->sum_dy_xmu.begin());
}

}  // namespace bnforge
