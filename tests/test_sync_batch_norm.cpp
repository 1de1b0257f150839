// SyncBatchNorm over MPI, run by ctest under mpirun with 2 and 3 ranks.
//
// Every rank draws the same whole batch from the same seed, runs SyncBatchNorm
// on its own rows, and compares with a single-process BatchNorm2d on the whole
// batch: y and dx (its rows), the running statistics after every step, and
// dγ/dβ summed over the ranks. Every rank runs every test, in the same order:
// a test that skipped a collective on one rank would hang the others (ctest's
// timeout catches that).
#include <bnforge/distributed.h>

#include "test_util.h"

#if BNFORGE_TEST_NCCL
#include <cuda_runtime_api.h>
#endif

#include <atomic>
#include <chrono>
#include <numeric>
#include <thread>

namespace {

using namespace bnforge;
using ref::rel_error;

// This rank's rows [begin, begin + count[rank]) of a batch split by `counts`.
struct Split {
    std::vector<int64_t> counts;
    int64_t total() const { return std::accumulate(counts.begin(), counts.end(), int64_t{0}); }
    int64_t begin(int rank) const { return std::accumulate(counts.begin(), counts.begin() + rank, int64_t{0}); }
};

struct Case {
    BatchNormOptions options;
    int64_t channels, height, width;
    int steps = 3;
    Device device = Device::cpu();  // where the SyncBatchNorm and its tensors live; the reference stays on the CPU
};

std::vector<int64_t> shape_of(const Case& c, int64_t n) { return {n, c.channels, c.height, c.width}; }

// Rows [begin, begin + n) of a logical (N, C, H, W) batch: N is outermost.
std::vector<double> rows(const std::vector<double>& all, const Case& c, int64_t begin, int64_t n) {
    const int64_t row = c.channels * c.height * c.width;
    return std::vector<double>(all.begin() + begin * row, all.begin() + (begin + n) * row);
}

double tolerance(const Case& c) { return testutil::dtype_tolerance(c.options.dtype()); }

std::vector<double> channels_of(const Tensor& t) { return testutil::values(t); }

// The per-channel values of `t` summed over the group.
std::vector<double> summed(ProcessGroup& group, const Tensor& t) {
    std::vector<double> v = testutil::values(t);
    group.all_reduce_sum(v.data(), v.size());
    return v;
}

// True when every rank of the group holds exactly these values.
bool identical_on_all_ranks(ProcessGroup& group, const std::vector<double>& v) {
    std::vector<double> all(v.size() * group.size());
    group.all_gather(v.data(), all.data(), v.size());
    for (int r = 0; r < group.size(); r++) {
        if (!std::equal(v.begin(), v.end(), all.begin() + r * v.size())) return false;
    }
    return true;
}

// SyncBatchNorm on `group` (this rank: group->rank()) against BatchNorm2d on
// the concatenated batch, over c.steps steps of forward and backward.
void expect_matches_whole_batch(const std::shared_ptr<ProcessGroup>& group, const Split& split, const Case& c,
                                uint32_t seed) {
    ASSERT_EQ(static_cast<int>(split.counts.size()), group->size());
    const int rank = group->rank();
    const int64_t n = split.counts[rank], begin = split.begin(rank), total = split.total();
    const DType dtype = c.options.dtype();
    const Layout layout = c.options.layout();
    std::mt19937 rng(seed);

    SyncBatchNorm sync(BatchNormOptions(c.options).device(c.device), group);
    BatchNorm2d whole(c.options);
    // The same random affine parameters in both.
    const auto w = testutil::random_vector(rng, c.channels, 1.0, 0.5);
    const auto b = testutil::random_vector(rng, c.channels, 0.0, 0.5);
    StateDict params{{"weight", testutil::channel_tensor(w)}, {"bias", testutil::channel_tensor(b)}};
    if (c.options.affine()) {
        sync.load_state_dict(params, false);
        whole.load_state_dict(params, false);
    }

    for (int step = 0; step < c.steps; step++) {
        SCOPED_TRACE("step " + std::to_string(step));
        const auto x_all = testutil::rounded(testutil::random_batch(rng, testutil::ref_shape(shape_of(c, total))),
                                             shape_of(c, total), dtype);
        const auto dy_all = testutil::rounded(testutil::random_batch(rng, testutil::ref_shape(shape_of(c, total)), 0.3),
                                              shape_of(c, total), dtype);
        Tensor x = testutil::tensor_from(rows(x_all, c, begin, n), shape_of(c, n), dtype, layout).to(c.device);
        Tensor dy = testutil::tensor_from(rows(dy_all, c, begin, n), shape_of(c, n), dtype, layout).to(c.device);

        Tensor y = sync.forward(x);
        ASSERT_EQ(y.device(), c.device);
        Tensor y_whole = whole.forward(testutil::tensor_from(x_all, shape_of(c, total), dtype, layout));
        ASSERT_EQ(y.shape(), shape_of(c, n));
        EXPECT_LT(rel_error(testutil::values(y), rows(testutil::values(y_whole), c, begin, n)), tolerance(c));

        if (c.options.track_running_stats()) {
            const auto rm = channels_of(sync.running_mean()), rv = channels_of(sync.running_var());
            EXPECT_LT(rel_error(rm, channels_of(whole.running_mean())), 1e-5);
            EXPECT_LT(rel_error(rv, channels_of(whole.running_var())), 1e-5);
            EXPECT_EQ(sync.num_batches_tracked(), whole.num_batches_tracked());
            EXPECT_TRUE(identical_on_all_ranks(*group, rm)) << "running_mean differs across ranks";
            EXPECT_TRUE(identical_on_all_ranks(*group, rv)) << "running_var differs across ranks";
        }

        Tensor dx = sync.backward(dy);
        Tensor dx_whole = whole.backward(testutil::tensor_from(dy_all, shape_of(c, total), dtype, layout));
        ASSERT_EQ(dx.shape(), shape_of(c, n));
        EXPECT_LT(rel_error(testutil::values(dx), rows(testutil::values(dx_whole), c, begin, n)), tolerance(c));
        if (c.options.affine()) {
            // Each rank holds its own sums; over the group they are the whole batch's.
            EXPECT_LT(rel_error(summed(*group, sync.weight_grad()), channels_of(whole.weight_grad())), 1e-5);
            EXPECT_LT(rel_error(summed(*group, sync.bias_grad()), channels_of(whole.bias_grad())), 1e-5);
        }
    }
}

std::shared_ptr<ProcessGroup> world() { return ProcessGroup::world(); }

// A split of `total` rows over the world, uneven unless `equal`.
Split world_split(const std::vector<int64_t>& for2, const std::vector<int64_t>& for3) {
    const int size = world()->size();
    if (size == 2) return {for2};
    if (size == 3) return {for3};
    return {std::vector<int64_t>(size, 3)};
}

TEST(ProcessGroup, WorldIsMpiCommWorld) {
    int rank = 0, size = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    EXPECT_EQ(world()->rank(), rank);
    EXPECT_EQ(world()->size(), size);
    EXPECT_EQ(world()->backend(), "mpi");
    EXPECT_EQ(world(), world()) << "world() is one shared group";
}

TEST(ProcessGroup, CollectivesOnAnotherCommunicator) {
    auto group = ProcessGroup::mpi(MPI_COMM_SELF);
    EXPECT_EQ(group->size(), 1);
    double v[2] = {1.5, -2.0}, gathered[2];
    group->all_gather(v, gathered, 2);
    EXPECT_EQ(gathered[1], -2.0);

    std::vector<double> r = {double(world()->rank() + 1), 1.0};
    world()->all_reduce_sum(r.data(), r.size());
    const int s = world()->size();
    EXPECT_EQ(r[0], s * (s + 1) / 2.0);
    EXPECT_EQ(r[1], s);
}

TEST(ProcessGroup, SplitRejectsBadRankLists) {
    EXPECT_ERROR_CONTAINS(world()->split({0, 0}), "listed twice");
    EXPECT_ERROR_CONTAINS(world()->split({world()->size()}), "is not in this group");
    EXPECT_ERROR_CONTAINS(world()->split({}), "empty");
}

TEST(ProcessGroup, NcclBuildIsReported) {
    if (ProcessGroup::nccl_available()) GTEST_SKIP() << "built with NCCL: NcclProcessGroup.* run where a GPU is";
    EXPECT_ERROR_CONTAINS(ProcessGroup::nccl(world()), "built without NCCL");
}

// NCCL's collectives and split on a world of one rank (one GPU cannot host
// two NCCL ranks; the multi-rank logic above is the same for both backends).
// Run by ctest with 1 rank; skips without NCCL or without a GPU.
TEST(NcclProcessGroup, WorldOfOneOnTheGpu) {
    if (!ProcessGroup::nccl_available()) GTEST_SKIP() << "built without NCCL";
    if (world()->size() != 1) GTEST_SKIP() << "one NCCL rank per GPU: run with 1 rank";
    std::shared_ptr<ProcessGroup> nccl;
    try {
        nccl = ProcessGroup::nccl(world());
    } catch (const Error& e) {
        GTEST_SKIP() << "no usable GPU: " << e.what();
    }
    EXPECT_EQ(nccl->backend(), "nccl");
    EXPECT_EQ(nccl->size(), 1);
    std::vector<double> v = {1.25, -3.5, 7.0}, gathered(3, 0.0);
    nccl->all_gather(v.data(), gathered.data(), v.size());
    EXPECT_EQ(gathered, v);
    nccl->all_reduce_sum(v.data(), v.size());
    EXPECT_EQ(v, (std::vector<double>{1.25, -3.5, 7.0}));
    auto sub = nccl->split({0});
    ASSERT_NE(sub, nullptr);
    EXPECT_EQ(sub->backend(), "nccl");
    expect_matches_whole_batch(sub, {{6}}, {BatchNormOptions::pytorch(4), 4, 3, 5}, 111);
    // SyncBatchNorm on CUDA tensors over the NCCL world: forward and backward
    // run the GPU kernels and match BatchNorm2d on the CPU.
    for (const Layout layout : {Layout::NCHW, Layout::NHWC}) {
        SCOPED_TRACE(to_string(layout));
        expect_matches_whole_batch(nccl, {{7}},
                                   {BatchNormOptions::megengine(6).layout(layout), 6, 5, 9, 3, Device::cuda(0)}, 112);
    }
}

#if BNFORGE_TEST_NCCL
// The NCCL group's deadline and abort on one GPU: a host function holds the
// kernels' stream, so a collective ordered after it cannot run; the host
// collective queued behind it must time out, abort the communicator, and
// leave the group refusing further calls — as when a peer dies mid-step.
void CUDART_CB hold_until_released(void* flag) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!static_cast<std::atomic<bool>*>(flag)->load() && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

TEST(NcclProcessGroup, StuckCollectiveTimesOutAndAborts) {
    if (world()->size() != 1) GTEST_SKIP() << "one NCCL rank per GPU: run with 1 rank";
    std::shared_ptr<ProcessGroup> nccl;
    try {
        nccl = ProcessGroup::nccl(world(), {0, std::chrono::milliseconds(300)});
    } catch (const Error& e) {
        GTEST_SKIP() << "no usable GPU: " << e.what();
    }
    cudaStream_t held = nullptr;
    ASSERT_EQ(cudaStreamCreateWithFlags(&held, cudaStreamNonBlocking), cudaSuccess);
    std::atomic<bool> released{false};
    ASSERT_EQ(cudaLaunchHostFunc(held, hold_until_released, &released), cudaSuccess);
    void* previous = set_cuda_stream(held);
    Tensor on_device = Tensor::empty({4}, DType::Float64, Device::cuda(0));
    nccl->all_reduce_sum(on_device);  // ordered after the held stream: queued, not run
    std::vector<double> host = {1.0, 2.0};
    const auto start = std::chrono::steady_clock::now();
    EXPECT_ERROR_CONTAINS(nccl->all_reduce_sum(host.data(), host.size()), "timed out after 300 ms");
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_LT(waited, 5.0) << "the deadline was 0.3 s";
    EXPECT_ERROR_CONTAINS(nccl->all_reduce_sum(host.data(), host.size()), "the communicator was aborted");
    released = true;
    EXPECT_EQ(cudaStreamSynchronize(held), cudaSuccess);
    set_cuda_stream(previous);
    cudaStreamDestroy(held);
}
#endif

TEST(SyncBatchNorm, EqualBatchesPyTorchConvention) {
    expect_matches_whole_batch(world(), world_split({4, 4}, {3, 3, 3}),
                               {BatchNormOptions::pytorch(6), 6, 5, 7}, 101);
}

TEST(SyncBatchNorm, UnevenBatchesMegEngineConventionNhwc) {
    expect_matches_whole_batch(world(), world_split({3, 7}, {1, 6, 4}),
                               {BatchNormOptions::megengine(5).layout(Layout::NHWC), 5, 6, 3}, 202);
}

TEST(SyncBatchNorm, EmptyBatchOnOneRankCumulativeAverage) {
    expect_matches_whole_batch(world(), world_split({5, 0}, {3, 0, 4}),
                               {BatchNormOptions::pytorch(4).momentum(std::nullopt), 4, 3, 3, 4}, 303);
}

// On device tensors (OpenCL on PoCL) over MPI: the ranks' moments are merged,
// and the running statistics and gradients updated, by kernels on the device.
// MPI carries host memory, so a step stages exactly the moments (forward) and
// the sums (backward) through the host, one copy each way each, and nothing
// else; with NCCL they stay in device memory (NcclProcessGroup.*, on a GPU).
TEST(SyncBatchNorm, DeviceTensorsOverMpiStageOnlyTheStatistics) {
    if (kernel_schedules(Device::opencl()).empty()) GTEST_SKIP() << "no OpenCL kernels in this build";
    const Case c{BatchNormOptions::pytorch(6), 6, 5, 7, 3, Device::opencl()};
    expect_matches_whole_batch(world(), world_split({4, 4}, {3, 3, 3}), c, 505);

    SyncBatchNorm sync(BatchNormOptions(c.options).device(c.device), world());
    std::mt19937 rng(7);
    const auto shape = shape_of(c, 4);
    const Tensor x = testutil::tensor_from(testutil::random_batch(rng, testutil::ref_shape(shape)), shape).to(c.device);
    const Tensor dy = testutil::tensor_from(testutil::random_batch(rng, testutil::ref_shape(shape)), shape).to(c.device);
    sync.forward(x);
    sync.backward(dy);
    const DeviceTraffic before = device_traffic();
    const int steps = 2;
    for (int i = 0; i < steps; i++) {
        sync.forward(x);
        sync.backward(dy);
    }
    const DeviceTraffic after = device_traffic();
    const int64_t staged = world()->size() > 1 ? 2 * steps : 0;  // a group of one exchanges nothing
    EXPECT_EQ(after.host_to_device - before.host_to_device, staged);
    EXPECT_EQ(after.device_to_host - before.device_to_host, staged);
    EXPECT_EQ(sync.num_batches_tracked(), steps + 1);
}

TEST(SyncBatchNorm, Float16WithoutAffine) {
    expect_matches_whole_batch(world(), world_split({2, 5}, {2, 2, 3}),
                               {BatchNormOptions::pytorch(3).dtype(DType::Float16).affine(false), 3, 4, 4}, 404);
}

TEST(SyncBatchNorm, Rank2Input) {
    // (N, C): H = W = 1, the BatchNorm1d shape.
    Case c{BatchNormOptions::megengine(8), 8, 1, 1};
    const int size = world()->size(), rank = world()->rank();
    std::mt19937 rng(505);
    const std::vector<int64_t> counts = size == 3 ? std::vector<int64_t>{4, 2, 5} : std::vector<int64_t>(size, 4);
    const Split split{counts};
    const auto x_all = testutil::random_batch(rng, {split.total(), 8, 1});
    SyncBatchNorm sync(c.options);
    BatchNorm1d whole(c.options);
    Tensor y = sync.forward(testutil::tensor_from(rows(x_all, c, split.begin(rank), counts[rank]), {counts[rank], 8}));
    Tensor y_whole = whole.forward(testutil::tensor_from(x_all, {split.total(), 8}));
    EXPECT_LT(rel_error(testutil::values(y), rows(testutil::values(y_whole), c, split.begin(rank), counts[rank])),
              1e-5);
    EXPECT_LT(rel_error(channels_of(sync.running_var()), channels_of(whole.running_var())), 1e-5);
}

// Ranks 2, 0 of three (in that order: sub-rank 0 is world rank 2) run their
// own SyncBatchNorm; world rank 1 takes no part and trains on its own.
TEST(SyncBatchNorm, SubGroupOfTwoOutOfThree) {
    if (world()->size() < 3) GTEST_SKIP() << "needs 3 ranks";
    auto sub = world()->split({2, 0});
    const int rank = world()->rank();
    if (rank == 1) {
        EXPECT_EQ(sub, nullptr);
        // Steps of its own, while the others exchange: nothing waits for it.
        BatchNorm2d alone(BatchNormOptions::pytorch(4));
        std::mt19937 rng(606);
        for (int i = 0; i < 3; i++) alone.forward(testutil::tensor_from(testutil::random_batch(rng, {2, 4, 9}), {2, 4, 3, 3}));
        EXPECT_EQ(alone.num_batches_tracked(), 3);
    } else {
        ASSERT_NE(sub, nullptr);
        EXPECT_EQ(sub->size(), 2);
        EXPECT_EQ(sub->rank(), rank == 2 ? 0 : 1);
        expect_matches_whole_batch(sub, {{4, 3}}, {BatchNormOptions::megengine(4), 4, 3, 3}, 707);
    }
}

// A group of one exchanges nothing: plain BatchNorm2d on the local batch.
TEST(SyncBatchNorm, GroupOfOneIsBatchNorm2d) {
    auto alone = world()->split({world()->size() - 1});
    if (!alone) return;
    expect_matches_whole_batch(alone, {{5}}, {BatchNormOptions::pytorch(3), 3, 4, 2}, 808);
}

// Eval and freeze use the running statistics: no exchange, so ranks may call
// forward different numbers of times without waiting for each other.
TEST(SyncBatchNorm, EvalAndFreezeExchangeNothing) {
    const int rank = world()->rank();
    std::mt19937 rng(909 + rank);
    for (bool freeze : {false, true}) {
        auto options = BatchNormOptions::megengine(3).freeze(freeze);
        SyncBatchNorm sync(options);
        BatchNorm2d local(options);
        StateDict stats{{"running_mean", testutil::channel_tensor(testutil::random_vector(rng, 3, 0.5, 0.5))},
                        {"running_var", testutil::channel_tensor(testutil::random_vector(rng, 3, 2.0, 0.5))}};
        sync.load_state_dict(stats, false);
        local.load_state_dict(stats, false);
        if (!freeze) {
            sync.eval();
            local.eval();
        }
        for (int i = 0; i <= rank; i++) {
            Tensor x = testutil::tensor_from(testutil::random_batch(rng, {2 + rank, 3, 4}), {2 + rank, 3, 2, 2});
            EXPECT_LT(rel_error(testutil::values(sync.forward(x)), testutil::values(local.forward(x))), 1e-6);
            Tensor dy = testutil::tensor_from(testutil::random_batch(rng, {2 + rank, 3, 4}), {2 + rank, 3, 2, 2});
            EXPECT_LT(rel_error(testutil::values(sync.backward(dy)), testutil::values(local.backward(dy))), 1e-6);
        }
        EXPECT_EQ(channels_of(sync.running_mean()), channels_of(local.running_mean()));
    }
}

// A channel count that differs across ranks is an error on every rank, and
// changes nothing; the group still works afterwards.
TEST(SyncBatchNorm, MismatchedChannelsFailOnEveryRank) {
    if (world()->size() < 2) GTEST_SKIP() << "needs 2 ranks";
    const int rank = world()->rank();
    const int64_t channels = 4 + (rank == 1 ? 1 : 0);
    SyncBatchNorm sync(BatchNormOptions::pytorch(channels));
    std::mt19937 rng(1001);
    Tensor x = testutil::tensor_from(testutil::random_batch(rng, {3, channels, 4}), {3, channels, 2, 2});
    EXPECT_ERROR_CONTAINS(sync.forward(x), "channel count differs across the process group");
    EXPECT_EQ(sync.num_batches_tracked(), 0);
    EXPECT_EQ(channels_of(sync.running_mean()), std::vector<double>(channels, 0.0));
    EXPECT_EQ(channels_of(sync.running_var()), std::vector<double>(channels, 1.0));

    expect_matches_whole_batch(world(), world_split({2, 2}, {2, 2, 2}), {BatchNormOptions::pytorch(4), 4, 2, 2, 1},
                               1002);
}

// One rank's own bad argument: it throws its own error, the others learn of it
// from the exchange and throw too (instead of waiting forever), and no state changes.
TEST(SyncBatchNorm, OneRankRejectingItsInputFailsEveryRank) {
    const int rank = world()->rank(), last = world()->size() - 1;
    SyncBatchNorm sync(BatchNormOptions::pytorch(3));
    std::mt19937 rng(1101);
    const DType dtype = rank == last ? DType::Float16 : DType::Float32;
    Tensor x = testutil::tensor_from(testutil::random_batch(rng, {2, 3, 4}), {2, 3, 2, 2}, dtype);
    if (rank == last) {
        EXPECT_ERROR_CONTAINS(sync.forward(x), "expected input of dtype float32");
    } else {
        EXPECT_ERROR_CONTAINS(sync.forward(x), "rank(s) " + std::to_string(last) + " of the process group");
    }
    EXPECT_EQ(sync.num_batches_tracked(), 0);
    EXPECT_EQ(channels_of(sync.running_mean()), std::vector<double>(3, 0.0));

    // Backward: rank 0 gives a dy of the wrong shape.
    Tensor good = testutil::tensor_from(testutil::random_batch(rng, {2, 3, 4}), {2, 3, 2, 2});
    sync.forward(good);
    Tensor dy = rank == 0 ? testutil::tensor_from(testutil::random_batch(rng, {1, 3, 4}), {1, 3, 2, 2})
                          : testutil::tensor_from(testutil::random_batch(rng, {2, 3, 4}), {2, 3, 2, 2});
    if (rank == 0) {
        EXPECT_ERROR_CONTAINS(sync.backward(dy), "expected dy of shape");
    } else {
        EXPECT_ERROR_CONTAINS(sync.backward(dy), "rejected their backward arguments");
    }
    EXPECT_EQ(channels_of(sync.weight_grad()), std::vector<double>(3, 0.0));
}

// One value per channel over the whole group is PyTorch's training error, on every rank.
TEST(SyncBatchNorm, OneValuePerChannelOverTheGroupIsAnError) {
    const int rank = world()->rank();
    SyncBatchNorm sync(BatchNormOptions::pytorch(2));
    const int64_t n = rank == 0 ? 1 : 0;
    Tensor x = testutil::tensor_from(std::vector<double>(2 * n, 0.5), {n, 2, 1, 1});
    EXPECT_ERROR_CONTAINS(sync.forward(x), "Expected more than 1 value per channel when training");
    EXPECT_EQ(sync.num_batches_tracked(), 0);
}

}  // namespace

// MPI around GoogleTest; the exit status is the group's, so mpirun fails when any rank does.
int main(int argc, char** argv) {
    MPI_Init(&argc, &argv);
    ::testing::InitGoogleTest(&argc, argv);
    int failed = RUN_ALL_TESTS() != 0, any_failed = 0;
    MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Finalize();
    return any_failed;
}
