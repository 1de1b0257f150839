// Every hook bnforge installs into Halide's runtime, installed in one place
// (install_halide_hooks, halide_hooks.cpp). Each hook is defined beside the
// state it keeps:
//  - the error handler: a kernel's message goes into its call's context and
//    becomes a bnforge::Error (Halide's default handler aborts) — halide_hooks.cpp;
//  - the parallel-for: inline for a call marked serial, else Halide's pool —
//    halide_hooks.cpp;
//  - the CPU-level check of the multi-target kernels: a cap for tests, and a
//    record of the level dispatch chose — cpu_dispatch.cpp;
//  - the CUDA context and stream: the application's — cuda_context.cpp;
//  - device-allocation reuse, so a training step on a GPU allocates nothing.
#pragma once

#include <HalideRuntime.h>

#include <cstdint>

namespace bnforge::detail {

// Installs every hook; idempotent, and called before any Halide call.
void install_halide_hooks();
// Marks that a kernel ran: the dispatch level can no longer change.
void note_kernel_call();

// The hooks.
void halide_error_to_context(void* user_context, const char* message);
int do_par_for(void* user_context, halide_task_t task, int min, int size, uint8_t* closure);
int cpu_can_use_target_features(int count, const uint64_t* features);
void read_cpu_level_cap_from_environment();  // BNFORGE_MAX_CPU_LEVEL
int cuda_acquire_context(void* user_context, void** ctx, bool create);
int cuda_release_context(void* user_context);
int cuda_get_stream(void* user_context, void* ctx, void** stream);

}  // namespace bnforge::detail
