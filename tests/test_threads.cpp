// set_num_threads takes effect in both directions. Halide's pool keeps the
// workers it has spawned, so lowering the count must restart it: before that
// fix a "1-thread" benchmark ran on two threads.
#include <gtest/gtest.h>

#include "test_util.h"

#include <bnforge/runtime.h>

#include <dirent.h>

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

TEST(Threads, LoweringTheCountStopsWorkers) {
    const int previous = set_num_threads(2);
    std::mt19937 rng(7);
    const std::vector<int64_t> shape{8, 16, 64};
    const Tensor x = tensor_from(random_batch(rng, ref_shape(shape)), shape);
    const Tensor w = channel_tensor(random_vector(rng, 16, 1.0, 0.5)), b = channel_tensor(random_vector(rng, 16, 0.0, 0.5));
    auto run = [&] { functional::batch_norm_forward(x, Tensor(), Tensor(), w, b, true, 1e-5); };

    run();  // a parallel kernel: Halide spawns one worker beside this thread
    const int with_two = threads_in_process();
    EXPECT_EQ(set_num_threads(1), 2);
    run();
    EXPECT_EQ(threads_in_process(), with_two - 1);
    set_num_threads(2);
    run();
    EXPECT_EQ(threads_in_process(), with_two);
    set_num_threads(previous);
}

}  // namespace
