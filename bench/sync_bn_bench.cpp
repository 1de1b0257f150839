// The cost of SyncBatchNorm's synchronisation on CPU, run under mpirun:
//   mpirun -np R sync_bn_bench --threads T --shape N,C,H,W [--steps S]
// The global batch N is split evenly over the R ranks; each rank runs T
// threads. Rank 0 prints one Markdown table row per shape:
//   ranks x threads | rows/rank | SyncBatchNorm step | BatchNorm2d step (same
//   rows, no exchange) | exchange share | the three collectives alone
// A step is forward + backward in training; every time is the median over
// steps of the slowest rank's time (a step ends when the last rank does).
#include <bnforge/distributed.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <sstream>
#include <string>
#include <vector>

using namespace bnforge;

namespace {

using Clock = std::chrono::steady_clock;

struct Args {
    int threads = 1, steps = 30;
    std::vector<std::vector<int64_t>> shapes;
};

[[noreturn]] void usage(const char* why) {
    std::fprintf(stderr, "sync_bn_bench: %s\nusage: mpirun -np R sync_bn_bench --threads T --shape N,C,H,W ... [--steps S]\n",
                 why);
    std::exit(2);
}

Args parse(int argc, char** argv) {
    Args a;
    for (int i = 1; i < argc; i++) {
        const std::string arg = argv[i];
        if (i + 1 >= argc) usage(("missing value after " + arg).c_str());
        const std::string value = argv[++i];
        if (arg == "--threads") {
            a.threads = std::stoi(value);
        } else if (arg == "--steps") {
            a.steps = std::stoi(value);
        } else if (arg == "--shape") {
            std::vector<int64_t> shape;
            std::stringstream ss(value);
            for (std::string d; std::getline(ss, d, ',');) shape.push_back(std::stoll(d));
            if (shape.size() != 4) usage("--shape takes N,C,H,W");
            a.shapes.push_back(shape);
        } else {
            usage(("unknown argument " + arg).c_str());
        }
    }
    if (a.shapes.empty()) usage("no --shape");
    return a;
}

Tensor random_tensor(const std::vector<int64_t>& shape, std::mt19937& rng) {
    Tensor t = Tensor::empty(shape, DType::Float32);
    std::normal_distribution<float> normal(1.0f, 2.0f);
    for (int64_t i = 0; i < t.numel(); i++) t.data<float>()[i] = normal(rng);
    return t;
}

// Median over `steps` of the slowest rank's time of step(), in ms.
template <class Step>
double median_ms(ProcessGroup& group, int steps, Step step) {
    step();  // warm-up: first-touch pages, thread pool
    std::vector<double> times;
    for (int i = 0; i < steps; i++) {
        std::vector<double> t(group.size()), mine(1);
        group.all_reduce_sum(mine.data(), 1);  // a barrier
        const auto start = Clock::now();
        step();
        mine[0] = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
        group.all_gather(mine.data(), t.data(), 1);
        times.push_back(*std::max_element(t.begin(), t.end()));
    }
    std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
    return times[times.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
    const Args args = parse(argc, argv);
    auto world = ProcessGroup::world();
    set_num_threads(args.threads);
    const int ranks = world->size();
    for (const auto& global : args.shapes) {
        if (global[0] % ranks != 0) usage("N must divide evenly over the ranks");
        std::vector<int64_t> local = global;
        local[0] /= ranks;
        std::mt19937 rng(7 + world->rank());
        const Tensor x = random_tensor(local, rng), dy = random_tensor(local, rng);
        const int64_t channels = global[1];

        SyncBatchNorm sync(BatchNormOptions::pytorch(channels), world);
        BatchNorm2d plain(BatchNormOptions::pytorch(channels));
        const double sync_ms = median_ms(*world, args.steps, [&] {
            sync.forward(x);
            sync.backward(dy);
        });
        const double plain_ms = median_ms(*world, args.steps, [&] {
            plain.forward(x);
            plain.backward(dy);
        });
        // What SyncBatchNorm sends per step: a 3-value handshake and the 2C
        // statistics gathered, and 1 + 2C sums reduced.
        std::vector<double> small(3), stats(2 * channels), sums(1 + 2 * channels);
        std::vector<double> small_all(3 * ranks), stats_all(2 * channels * ranks);
        const double comm_ms = median_ms(*world, args.steps, [&] {
            world->all_gather(small.data(), small_all.data(), small.size());
            world->all_gather(stats.data(), stats_all.data(), stats.size());
            world->all_reduce_sum(sums.data(), sums.size());
        });
        if (world->rank() == 0) {
            std::printf("| %lldx%lldx%lldx%lld | %d x %d | %lld | %.3f | %.3f | %+.1f%% | %.3f |\n",
                        static_cast<long long>(global[0]), static_cast<long long>(global[1]),
                        static_cast<long long>(global[2]), static_cast<long long>(global[3]), ranks, args.threads,
                        static_cast<long long>(local[0]), sync_ms, plain_ms, 100.0 * (sync_ms - plain_ms) / plain_ms,
                        comm_ms);
            std::fflush(stdout);
        }
    }
    return 0;
}
