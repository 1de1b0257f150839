// Data-parallel training of one SyncBatchNorm layer: each rank sees its own
// batch (of its own size), the layer normalises with the statistics of all of
// them, and SGD applies gradients averaged over the ranks, as a data-parallel
// wrapper would. Run with `mpirun -np 2 sync_bn`.
#include <bnforge/distributed.h>

#include <cstdio>
#include <random>
#include <vector>

using namespace bnforge;

namespace {

Tensor random_tensor(std::vector<int64_t> shape, std::mt19937& rng, float mean, float stddev) {
    Tensor t = Tensor::empty(std::move(shape), DType::Float32);
    std::normal_distribution<float> normal(mean, stddev);
    for (int64_t i = 0; i < t.numel(); i++) t.data<float>()[i] = normal(rng);
    return t;
}

std::vector<double> values(const Tensor& t) {
    const float* p = t.data<float>();
    return std::vector<double>(p, p + t.numel());
}

// Parameter gradients averaged over the group, then one SGD step.
void sgd_step(SyncBatchNorm& bn, ProcessGroup& group, float lr) {
    for (auto [param, grad] : {std::pair{&bn.weight(), &bn.weight_grad()}, std::pair{&bn.bias(), &bn.bias_grad()}}) {
        std::vector<double> g = values(*grad);
        group.all_reduce_sum(g.data(), g.size());
        for (size_t c = 0; c < g.size(); c++) param->data<float>()[c] -= lr * static_cast<float>(g[c] / group.size());
    }
    bn.zero_grad();
}

}  // namespace

int main() {
    std::shared_ptr<ProcessGroup> world = ProcessGroup::world();  // initialises MPI
    const int rank = world->rank(), size = world->size();
    const int64_t C = 16, H = 14, W = 14;
    const int64_t N = 4 + 2 * rank;  // uneven batches: the merge is exact anyway

    SyncBatchNorm bn(BatchNormOptions::megengine(C));  // momentum 0.9, (1, C, 1, 1) parameters
    std::mt19937 rng(1234 + rank);                       // each rank its own data
    for (int step = 0; step < 5; step++) {
        Tensor x = random_tensor({N, C, H, W}, rng, 3.0f + rank, 2.0f);
        Tensor y = bn.forward(x);
        Tensor dy = random_tensor({N, C, H, W}, rng, 0.0f, 1.0f);
        bn.backward(dy);
        sgd_step(bn, *world, 0.05f);
    }

    // Every rank merged the same statistics in the same order: identical, bit for bit.
    std::vector<double> mine = values(bn.running_mean());
    for (double v : values(bn.running_var())) mine.push_back(v);
    for (double v : values(bn.weight())) mine.push_back(v);
    std::vector<double> all(mine.size() * size);
    world->all_gather(mine.data(), all.data(), mine.size());
    bool identical = true;
    for (int r = 1; r < size; r++) {
        identical = identical && std::equal(mine.begin(), mine.end(), all.begin() + r * mine.size());
    }

    std::printf("rank %d/%d: batch %lld, running_mean[0] %.6f, running_var[0] %.6f, weight[0] %.6f\n", rank, size,
                static_cast<long long>(N), mine[0], mine[C], mine[2 * C]);
    std::fflush(stdout);
    if (rank == 0) {
        std::printf(identical ? "sync_bn: all %d ranks hold identical running statistics and parameters\n"
                              : "sync_bn: FAILED: the %d ranks' running statistics differ\n",
                    size);
    }
    return identical ? 0 : 1;
}
