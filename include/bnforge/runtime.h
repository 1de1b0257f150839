// Process-wide runtime settings and what the build contains.
#pragma once
#include <bnforge/dtype.h>

#include <string>
#include <vector>

namespace bnforge {

// Threads the CPU kernels use (Halide's thread pool); returns the previous value.
int set_num_threads(int threads);

// One AOT-compiled kernel variant and the Halide target it was compiled for.
struct KernelVariant {
    std::string name;      // e.g. "bnk_apply_cpu_f32_nchw_relu"
    std::string pipeline;  // stats, apply, backward_reduce, backward_apply
    Device device;
    DType dtype;
    Layout layout;
    std::string fusion;
    std::string target;    // e.g. "x86-64-linux-avx512-...-user_context"
};
std::vector<KernelVariant> kernel_variants();

// Testing aid: fill every tensor allocated from now on with 0xFF bytes (NaN
// for floats), so an output element a kernel failed to write cannot pass a
// comparison by accident. Off by default.
void poison_new_tensors(bool on);

}  // namespace bnforge
