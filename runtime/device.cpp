#include "device.h"

#include "check.h"
#include "halide_hooks.h"
#include "kernels.h"
#include "traffic.h"

#include <bnforge/runtime.h>

#include <HalideRuntimeCuda.h>
#include <HalideRuntimeOpenCL.h>

#include <atomic>
#include <climits>
#include <string>

namespace bnforge::detail {

const halide_device_interface_t* device_interface(Device device) {
    switch (device.kind) {
        case Device::Kind::CUDA: return halide_cuda_device_interface();
        case Device::Kind::OpenCL: return halide_opencl_device_interface();
        case Device::Kind::CPU: break;
    }
    BNF_ASSERT(false, "a GPU device for device_interface, got " << device.str());
    return nullptr;
}

bool device_supported(Device device) {
    if (device.is_cpu()) return true;
    for (const KernelEntry& k : kernel_table())
        if (k.device == device.kind) return true;
    return false;
}

namespace {

// A 1-D byte buffer over `bytes` at (host, device); Halide's copies and
// allocations work on buffers, and a byte buffer copies any dense tensor.
struct ByteBuffer {
    halide_dimension_t dim{};
    halide_buffer_t buf{};
    ByteBuffer(Device device, size_t bytes, void* host, uint64_t handle) {
        BNF_CHECK(bytes <= static_cast<size_t>(INT32_MAX),
                  "device tensors are limited to 2 GiB each in this build, asked for " << bytes << " bytes");
        dim = {0, static_cast<int32_t>(bytes), 1, 0};
        buf.host = static_cast<uint8_t*>(host);
        buf.device = handle;
        buf.device_interface = handle ? device_interface(device) : nullptr;
        buf.type = {halide_type_uint, 8, 1};
        buf.dimensions = 1;
        buf.dim = &dim;
    }
};

void check(int rc, CallContext& context, const std::string& what, Device device) {
    if (rc == 0) return;
    throw Error(what + " on " + device.str() + " failed (Halide error " + std::to_string(rc) +
                "): " + (context.error.empty() ? "no message" : context.error));
}

template <class F>
void device_call(Device device, const std::string& what, F f) {
    install_halide_hooks();
    BNF_CHECK(device_supported(device), what << ": device " << device.str() << " is not supported by this build");
    if (device.is_cuda()) set_current_cuda_device(device.index);
    CallContext context;
    check(f(static_cast<void*>(&context)), context, what, device);
}

// Halide's CUDA copies run on the legacy stream and wait for it: never inside a graph capture.
void refuse_in_capture(Device device, const char* what) {
    if (!device.is_cuda()) return;
    set_current_cuda_device(device.index);
    BNF_CHECK(!cuda_stream_capturing(), what << " on " << device.str() << " cannot be captured into a CUDA graph "
                                              << "(a synchronous copy): do it before or after the capture");
}

}  // namespace

uint64_t device_malloc(Device device, size_t bytes) {
    ByteBuffer b(device, bytes, nullptr, 0);
    device_call(device, "allocating " + std::to_string(bytes) + " bytes",
                [&](void* uc) { return halide_device_malloc(uc, &b.buf, device_interface(device)); });
    return b.buf.device;
}

void device_free(Device device, uint64_t handle, size_t bytes) noexcept {
    try {
        ByteBuffer b(device, bytes, nullptr, handle);
        device_call(device, "freeing device memory", [&](void* uc) { return halide_device_free(uc, &b.buf); });
    } catch (const Error&) {
        // A destructor's release has no one to report to; the block is lost, as cudaFree's would be.
    }
}

namespace {
std::atomic<int64_t> g_host_to_device{0}, g_device_to_host{0};
}

void count_host_to_device() { g_host_to_device++; }
void count_device_to_host() { g_device_to_host++; }

void copy_to_device(Device device, uint64_t dst, const void* src, size_t bytes) {
    refuse_in_capture(device, "Copying to the device");
    count_host_to_device();
    ByteBuffer b(device, bytes, const_cast<void*>(src), dst);
    b.buf.set_host_dirty(true);
    device_call(device, "copying to the device",
                [&](void* uc) { return halide_copy_to_device(uc, &b.buf, device_interface(device)); });
}

void copy_to_host(Device device, void* dst, uint64_t src, size_t bytes) {
    refuse_in_capture(device, "Copying to the host");
    count_device_to_host();
    ByteBuffer b(device, bytes, dst, src);
    b.buf.set_device_dirty(true);
    device_call(device, "copying to the host", [&](void* uc) { return halide_copy_to_host(uc, &b.buf); });
}

void copy_within_device(Device device, uint64_t dst, uint64_t src, size_t bytes) {
    refuse_in_capture(device, "Copying within the device");
    ByteBuffer from(device, bytes, nullptr, src), to(device, bytes, nullptr, dst);
    from.buf.set_device_dirty(true);
    device_call(device, "copying within the device", [&](void* uc) {
        return halide_buffer_copy(uc, &from.buf, device_interface(device), &to.buf);
    });
}

}  // namespace bnforge::detail

namespace bnforge {

DeviceTraffic device_traffic() {
    const int64_t reads = detail::g_device_to_host;
    return {detail::g_host_to_device, reads, reads};
}

}  // namespace bnforge
