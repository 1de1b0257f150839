// Device memory for tensors on GPUs, through Halide's device interfaces: the
// same interface the kernels use, so a tensor's memory is a Halide device
// allocation (CUDA: a CUdeviceptr; OpenCL: Halide's cl_mem handle) that any
// kernel accepts without a copy.
#pragma once
#include <bnforge/dtype.h>
#include <bnforge/tensor.h>

#include <HalideRuntime.h>

#include <cstddef>
#include <cstdint>

namespace bnforge::detail {

// Whether two non-empty tensors on one device reach a common byte: by address
// range on the host and CUDA; OpenCL handles are not addresses, so there only
// the same storage counts.
bool memory_overlaps(const Tensor& a, const Tensor& b);

// Halide's interface for `device` (CUDA or OpenCL); an Error for the CPU or a
// device kind this build has no kernels for.
const halide_device_interface_t* device_interface(Device device);
// Whether the build can hold memory on `device` and run its kernels.
bool device_supported(Device device);

// A device block of `bytes` (> 0), returned as the device handle; freed by device_free.
uint64_t device_malloc(Device device, size_t bytes);
void device_free(Device device, uint64_t handle, size_t bytes) noexcept;

// Dense byte copies between host and device memory, or within one device.
void copy_to_device(Device device, uint64_t dst, const void* src, size_t bytes);
void copy_to_host(Device device, void* dst, uint64_t src, size_t bytes);
void copy_within_device(Device device, uint64_t dst, uint64_t src, size_t bytes);

// The CUDA device the calling thread's next Halide calls run on (the context
// hooks in cuda_context.cpp read it).
void set_current_cuda_device(int index);
int current_cuda_device();
// The multiprocessors of CUDA device `index` (1 when the driver cannot say).
int cuda_multiprocessor_count(int index);

}  // namespace bnforge::detail
