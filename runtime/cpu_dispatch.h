// The runtime hooks bnforge installs into Halide: error reporting and CPU-level dispatch.
#pragma once

namespace bnforge::detail {

// Installs the Halide runtime hooks (error handler, target-feature check); idempotent.
void install_halide_hooks();
// Marks that a kernel ran: the dispatch level can no longer change.
void note_kernel_call();
// The error handler (kernels.cpp): appends the message to the call's context.
void halide_error_to_context(void* user_context, const char* message);

}  // namespace bnforge::detail
