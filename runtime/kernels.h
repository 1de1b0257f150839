// The AOT kernel table and the one way to call a kernel.
//
// Every variant the build generated is listed in kernel_registry.inc (written
// by cmake/BnforgeKernels.cmake); lookup is by (pipeline, device, dtype,
// layout, fusion) and, for CPU kernels, the selected schedule
// (set_kernel_schedule). Kernels are called through Halide's uniform argv entry
// point with arguments matched by name against the kernel's own metadata, so
// a mismatch between the runtime and a generator is an Error, not a crash.
#pragma once
#include <bnforge/tensor.h>

#include <HalideRuntime.h>

#include "kernel_abi.h"

#include <string>
#include <utility>
#include <vector>

namespace bnforge::detail {

// The kernel families and fusions (kernel_abi.h, shared with the generators).
using abi::Fusion;
using abi::Pipeline;
using abi::to_string;

struct KernelEntry {
    Pipeline pipeline;
    Device::Kind device;
    DType dtype;
    Layout layout;
    Fusion fusion;
    const char* schedule;  // "manual", or the autoscheduler that built it: "adams2019", "anderson2021", ...
    const char* name;
    int (*argv_fn)(void**);
    const halide_filter_metadata_t* (*metadata_fn)();
    // per-channel pipelines: the module options it serves; batch pipelines: ""
    // or kStreamingVariant
    const char* variant = "";
    std::string target() const { return metadata_fn()->target; }
};

const std::vector<KernelEntry>& kernel_table();
// Testing aid: bnforge assumes no kernel has run on any CUDA device yet, so
// that a capture refuses them all as if their modules were still to load.
void forget_cuda_kernel_runs();
const KernelEntry& find_kernel(Pipeline, Device, DType, Layout, Fusion);  // of the selected schedule set
const KernelEntry& find_kernel(Pipeline, Device, DType, Layout, Fusion, const std::string& schedule);
// A per-channel pipeline's kernel (forward_finalize, backward_finalize,
// merge_moments) for `variant` (their CMake VARIANTS labels); always manual.
const KernelEntry& find_channel_kernel(Pipeline, Device, const std::string& variant);
// The manual kernel's variant with streaming stores, if the build has one
// (float32, no fusion, x86: see streaming_stores.h); else nullptr.
const KernelEntry* find_streaming_kernel(Pipeline, DType, Layout, Fusion);
// The variant label of those kernels in the table.
constexpr const char* kStreamingVariant = "streaming_stores";
// The schedule whose kernels find_kernel returns (runtime_info.cpp).
const std::string& selected_kernel_schedule();

// A batch tensor as the generators see it: 3-D in memory order, (s, c, n)
// for the NCHW kernels and (c, s, n) for the NHWC kernels.
struct BatchView {
    Layout kernel_layout;
    DType dtype;
    halide_dimension_t dims[3];
    halide_buffer_t buf;
};
// Picks the kernel layout for `x` (a tensor whose memory is the same in both,
// e.g. rank 2, uses the faster one) and checks that its strides can be
// expressed as such a view. `arg` names the tensor in error messages.
Layout kernel_layout_for(const Tensor& x, const char* arg);
void make_batch_view(BatchView& view, const Tensor& x, Layout kernel_layout, const char* arg);
// The mask of a relu kernel: one bit per element, packed across the batch
// (bit k of byte (m, d1, d0) is element (8m + k, d1, d0) of the memory-order
// view), so that the kernels read and write it in dense vectors; a UInt8
// tensor (ceil(N / 8), d1, d0).
constexpr int64_t kMaskBatchRows = abi::kMaskRows;
Tensor empty_mask_for(const BatchView& view, Device device);

// The Halide element type of a dtype.
halide_type_t halide_type_of(DType dtype);

// A Halide buffer over a tensor's memory: host memory, or a device tensor's
// allocation on its device's interface, which the kernels use in place.
void init_buffer(halide_buffer_t& buf, void* data, Device device, halide_type_t type, int dims,
                 halide_dimension_t* dim);

// A per-channel float32 or float64 vector as a 1-D Halide buffer.
struct ChannelBuffer {
    halide_dimension_t dim;
    halide_buffer_t buf;
    ChannelBuffer(const float* data, int64_t channels);
    ChannelBuffer(const double* data, int64_t channels);
};

// One named kernel argument: a buffer, or a scalar. An entry with neither is
// absent (an optional input or output the called variant does not have), so
// one argument list can serve every fusion of a pipeline. Names live as long
// as the program (kernel_abi.h constants, static strings): invoke remembers
// them by address.
struct KernelArg {
    const char* name;
    halide_buffer_t* buffer;
    const halide_scalar_value_t* scalar = nullptr;
};
// Halide reports errors through a handler (install_halide_hooks) that
// appends them to the CallContext passed as the user context, so concurrent
// calls keep their messages apart. `serial` makes the call's parallel loops
// run inline on the calling thread (the do_par_for hook): below a few tens of
// thousands of elements, waking the pool costs more than the work.
struct CallContext {
    std::string error;
    bool serial = false;
};
// The crossover measured on 2 cores (bench/per_call.cpp, bench/analysis.md):
// a training step of 1x64x28x28 ran 2x faster on one thread; at 2x64x28x28
// two threads were level or faster. (PyTorch's at::parallel_for grain is
// 32768 elements.)
constexpr int64_t kSerialBelowElements = 65536;
// Whether a CPU call over `elements` (its largest buffer) runs serially:
// below kSerialBelowElements, or when the pool has one thread.
bool run_serially(int64_t elements);

// Runs `kernel` with the named arguments; every argument of the kernel must be
// supplied exactly once, and no present one may be left over. Halide errors
// become bnforge::Error. For a GPU kernel, batch buffers are device views
// (make_batch_view of a device tensor); per-channel host buffers go up and
// come back through Halide's device-allocation cache (C values each way).
void invoke(const KernelEntry& kernel, std::initializer_list<KernelArg> args);
// The batch kernel this thread invoked last, the per-channel steps aside (tests
// check which route ran); nullptr before any.
const KernelEntry* last_invoked_kernel();

}  // namespace bnforge::detail
