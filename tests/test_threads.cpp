// Threads: set_num_threads takes effect in both directions (Halide's pool
// keeps the workers it has spawned, so lowering the count must restart it:
// before that fix a "1-thread" benchmark ran on two threads); separate
// modules in separate threads give the bits of the same calls made serially;
// a module shared by two threads refuses the second one's overlapping call;
// a call below kSerialBelowElements runs on the calling thread alone.
#include <gtest/gtest.h>

#include "test_util.h"

#include <bnforge/runtime.h>

#include "kernels.h"

#include <dirent.h>

#include <atomic>
#include <chrono>
#include <thread>

using namespace bnforge;
using namespace testutil;

namespace {

int threads_in_process() {
    int n = 0;
    if (DIR* d = opendir("/proc/self/task")) {
        while (const dirent* e = readdir(d)) n += e->d_name[0] != '.';
        closedir(d);
    }
    return n;
}

// The thread count once it settles at `expected` (or after 2 s): a joined
// worker can stay listed in /proc/self/task for a moment after pthread_join
// returns (seen under qemu-user), so one snapshot would race with its exit.
int threads_settling_at(int expected) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    int n = threads_in_process();
    while (n != expected && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        n = threads_in_process();
    }
    return n;
}

// The thread count once two readings 20 ms apart agree (or after 2 s).
int threads_when_steady() {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    int n = threads_in_process();
    for (;;) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        const int again = threads_in_process();
        if (again == n || std::chrono::steady_clock::now() > deadline) return again;
        n = again;
    }
}

TEST(Threads, LoweringTheCountStopsWorkers) {
    const int previous = set_num_threads(2);
    std::mt19937 rng(7);
    const std::vector<int64_t> shape{8, 16, 2 * detail::kSerialBelowElements / 128};  // parallel
    const Tensor x = tensor_from(random_batch(rng, ref_shape(shape)), shape);
    const Tensor w = channel_tensor(random_vector(rng, 16, 1.0, 0.5)), b = channel_tensor(random_vector(rng, 16, 0.0, 0.5));
    auto run = [&] { functional::batch_norm_forward(x, Tensor(), Tensor(), w, b, true, 1e-5); };

    run();  // a parallel kernel: Halide spawns one worker beside this thread
    const int with_two = threads_in_process();
    EXPECT_EQ(set_num_threads(1), 2);
    run();
    EXPECT_EQ(threads_settling_at(with_two - 1), with_two - 1);
    set_num_threads(2);
    run();
    EXPECT_EQ(threads_settling_at(with_two), with_two);
    set_num_threads(previous);
}

// Waking a worker costs more than a small call's work: such calls spawn none,
// and give the same bits as on one thread.
TEST(Threads, SmallCallsRunOnTheCallingThread) {
    const int previous = set_num_threads(2);
    std::mt19937 rng(8);
    const std::vector<int64_t> small{4, 16, detail::kSerialBelowElements / 64 - 1}, large{8, 16, 2 * detail::kSerialBelowElements / 128};
    const Tensor xs = tensor_from(random_batch(rng, ref_shape(small)), small);
    const Tensor xl = tensor_from(random_batch(rng, ref_shape(large)), large);
    const Tensor w = channel_tensor(random_vector(rng, 16, 1.0, 0.5)), b = channel_tensor(random_vector(rng, 16, 0.0, 0.5));
    auto run = [&](const Tensor& x) { return values(functional::batch_norm_forward(x, Tensor(), Tensor(), w, b, true, 1e-5).result.y); };

    set_num_threads(1);  // lowering the count stops any worker an earlier test spawned
    const int before = threads_when_steady();
    set_num_threads(2);
    const std::vector<double> two = run(xs);
    EXPECT_EQ(threads_in_process(), before);
    set_num_threads(1);
    EXPECT_EQ(run(xs), two);
    set_num_threads(2);
    EXPECT_EQ(run(xs), two);
    run(xl);  // above the threshold: the pool starts a worker
    EXPECT_EQ(threads_settling_at(before + 1), before + 1);
    set_num_threads(previous);
}

// Three training steps and an eval forward of one module on its own data:
// every output, running statistic and gradient, as doubles.
std::vector<std::vector<double>> steps_of(int which) {
    std::mt19937 rng(100 + which);
    const std::vector<int64_t> shape{4 + which, 6, 5, 3};
    const Tensor x = tensor_from(random_batch(rng, ref_shape(shape), 3.0), shape);
    const Tensor dy = tensor_from(random_batch(rng, ref_shape(shape), 0.5), shape);
    const Tensor z = tensor_from(random_batch(rng, ref_shape(shape), 0.5), shape);
    std::vector<std::vector<double>> out;
    if (which % 2 == 0) {
        BatchNorm2d bn(BatchNormOptions::pytorch(shape[1]).momentum(std::nullopt));
        for (int i = 0; i < 3; i++) {
            out.push_back(values(bn.forward(x)));
            out.push_back(values(bn.backward(dy)));
        }
        bn.eval();
        out.push_back(values(bn.forward(x)));
        for (Tensor* t : {&bn.running_mean(), &bn.running_var(), &bn.weight_grad(), &bn.bias_grad()})
            out.push_back(values(*t));
    } else {
        FusedBatchNorm2d bn(BatchNormOptions::oneflow(shape[1]));
        for (int i = 0; i < 3; i++) {
            out.push_back(values(bn.forward(x, &z)));
            out.push_back(values(bn.backward(dy).dx));
        }
        for (Tensor* t : {&bn.running_mean(), &bn.running_var(), &bn.weight_grad(), &bn.bias_grad()})
            out.push_back(values(*t));
    }
    return out;
}

TEST(Threads, SeparateModulesInSeparateThreadsMatchSerial) {
    constexpr int kModules = 4;
    std::vector<std::vector<std::vector<double>>> serial, parallel(kModules);
    for (int m = 0; m < kModules; m++) serial.push_back(steps_of(m));
    std::vector<std::thread> threads;
    for (int m = 0; m < kModules; m++) threads.emplace_back([&parallel, m] { parallel[m] = steps_of(m); });
    for (std::thread& t : threads) t.join();
    for (int m = 0; m < kModules; m++) {
        ASSERT_EQ(parallel[m].size(), serial[m].size()) << "module " << m;
        for (size_t i = 0; i < serial[m].size(); i++) EXPECT_EQ(parallel[m][i], serial[m][i]) << "module " << m << ", result " << i;
    }
}

// One module, two threads: while the first is inside forward (held in a
// pre-hook), the second's forward, backward and state_dict are refused with
// an Error naming the call, and the module is left as the first call makes it.
// The thread inside may re-enter (the hook reads state_dict()).
TEST(Threads, ASharedModuleRefusesAnOverlappingCallFromAnotherThread) {
    std::mt19937 rng(9);
    const std::vector<int64_t> shape{4, 3, 2, 2};
    const Tensor x = tensor_from(random_batch(rng, ref_shape(shape), 2.0), shape);
    BatchNorm2d reference(BatchNormOptions::pytorch(shape[1]));
    const std::vector<double> y_reference = values(reference.forward(x));

    BatchNorm2d shared(BatchNormOptions::pytorch(shape[1]));
    std::atomic<int> phase{0};  // 1: the first thread is inside forward; 2: the second has tried
    shared.register_forward_pre_hook([&](BatchNormBase& m, const Tensor&) {
        EXPECT_EQ(m.state_dict().count("running_mean"), 1u);  // re-entry from the thread inside
        phase = 1;
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
        while (phase != 2 && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
    });
    std::vector<double> y_first;
    std::thread first([&] { y_first = values(shared.forward(x)); });
    while (phase != 1) std::this_thread::yield();
    EXPECT_ERROR_CONTAINS(shared.forward(x), "BatchNorm2d.forward: another thread is inside a call of this module");
    EXPECT_ERROR_CONTAINS(shared.backward(x), "BatchNorm2d.backward: another thread");
    EXPECT_ERROR_CONTAINS(shared.state_dict(), "BatchNorm2d.state_dict: another thread");
    phase = 2;
    first.join();
    EXPECT_EQ(y_first, y_reference);
    EXPECT_EQ(values(shared.running_mean()), values(reference.running_mean()));
    EXPECT_EQ(shared.num_batches_tracked(), 1);
    EXPECT_NO_THROW(shared.backward(x));  // the first call has ended: the module is free again
}

}  // namespace
