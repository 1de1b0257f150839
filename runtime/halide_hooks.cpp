#include "halide_hooks.h"

#include "kernels.h"

#include <HalideRuntime.h>
#include <HalideRuntimeCuda.h>

#include <mutex>

namespace bnforge::detail {

void halide_error_to_context(void* user_context, const char* message) {
    if (user_context) static_cast<CallContext*>(user_context)->error += message;
}

int do_par_for(void* user_context, halide_task_t task, int min, int size, uint8_t* closure) {
    if (!user_context || !static_cast<const CallContext*>(user_context)->serial)
        return halide_default_do_par_for(user_context, task, min, size, closure);
    for (int i = min; i < min + size; i++) {
        if (const int result = task(user_context, i, closure)) return result;
    }
    return 0;
}

void install_halide_hooks() {
    static std::once_flag once;
    std::call_once(once, [] {
        read_cpu_level_cap_from_environment();
        halide_set_error_handler(&halide_error_to_context);
        halide_set_custom_do_par_for(&do_par_for);
        halide_set_custom_can_use_target_features(&cpu_can_use_target_features);
        halide_set_cuda_acquire_context(&cuda_acquire_context);
        halide_set_cuda_release_context(&cuda_release_context);
        halide_set_cuda_get_stream(&cuda_get_stream);
        // OpenCL tensors and intermediates come back to Halide's pool and are
        // reused (CUDA memory has bnforge's own cache: device_memory.h).
        halide_reuse_device_allocations(nullptr, true);
    });
}

}  // namespace bnforge::detail
