// Which of the fat library's CPU sub-targets a kernel call runs, and a cap on it.
#pragma once

namespace bnforge::detail {

// Installs the Halide runtime hooks (error handler, target-feature check); idempotent.
void install_halide_hooks();
// Marks that a kernel ran: the dispatch level can no longer change.
void note_kernel_call();
// The error handler (kernels.cpp): appends the message to the call's context.
void halide_error_to_context(void* user_context, const char* message);

}  // namespace bnforge::detail
