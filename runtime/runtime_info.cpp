#include <bnforge/runtime.h>

#include "check.h"
#include "kernels.h"

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

std::vector<KernelVariant> kernel_variants() {
    static const char* pipelines[] = {"stats", "apply", "backward_reduce", "backward_apply"};
    static const char* fusions[] = {"none", "relu", "add_relu", "masked"};
    std::vector<KernelVariant> out;
    for (const auto& k : detail::kernel_table()) {
        out.push_back({k.name, pipelines[static_cast<int>(k.pipeline)], Device{k.device, 0}, k.dtype, k.layout,
                       fusions[static_cast<int>(k.fusion)], k.target()});
    }
    return out;
}

}  // namespace bnforge
