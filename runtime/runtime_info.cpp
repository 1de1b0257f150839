#include <bnforge/runtime.h>

#include "check.h"
#include "kernels.h"

#include <algorithm>
#include <cstdlib>
#include <thread>

namespace bnforge {

namespace {
int g_threads = 0;  // 0: Halide's default (one per core, or HL_NUM_THREADS)
}

int set_num_threads(int threads) {
    BNF_CHECK(threads >= 0, "set_num_threads: expected threads >= 0 (0 = one per core), got " << threads);
    const int previous = g_threads;
    halide_set_num_threads(threads);
    g_threads = threads;
    return previous;
}

int num_threads() {
    if (g_threads > 0) return g_threads;
    // Halide's default: HL_NUM_THREADS, else one per core.
    if (const char* env = std::getenv("HL_NUM_THREADS")) {
        if (const int n = std::atoi(env); n > 0) return n;
    }
    return std::max(1u, std::thread::hardware_concurrency());
}

std::vector<KernelVariant> kernel_variants() {
    std::vector<KernelVariant> out;
    for (const auto& k : detail::kernel_table()) {
        out.push_back({k.name, detail::to_string(k.pipeline), Device{k.device, 0}, k.dtype, k.layout,
                       detail::to_string(k.fusion), k.target()});
    }
    return out;
}

}  // namespace bnforge
