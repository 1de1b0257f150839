// Halide's CUDA runtime asks for a context and a stream before every
// allocation, copy and launch; by default it creates a context of its own
// and runs on the default stream, and loads "libcuda.so", which a driver-only
// install does not have (only libcuda.so.1). bnforge answers with the
// application's: the context current on the calling thread when it belongs
// to the tensor's device (PyTorch's, say), else that device's primary context
// (the CUDA runtime API's), and the stream set with set_cuda_stream.
#include <bnforge/runtime.h>

#include "check.h"
#include "device.h"
#include "device_memory.h"
#include "halide_hooks.h"
#include "traffic.h"


#include <HalideRuntimeCuda.h>

#include <dlfcn.h>

#include <mutex>

namespace bnforge {

namespace {

using CUresult = int;
using CUcontext = void*;
using CUdevice = int;

// The few driver entry points used here, from libcuda loaded once with
// RTLD_GLOBAL: Halide's runtime then finds its own symbols in the process too.
struct Driver {
    CUresult (*cuInit)(unsigned) = nullptr;
    CUresult (*cuDeviceGet)(CUdevice*, int) = nullptr;
    CUresult (*cuDeviceGetCount)(int*) = nullptr;
    CUresult (*cuCtxGetCurrent)(CUcontext*) = nullptr;
    CUresult (*cuCtxGetDevice)(CUdevice*) = nullptr;
    CUresult (*cuCtxPushCurrent)(CUcontext) = nullptr;
    CUresult (*cuCtxPopCurrent)(CUcontext*) = nullptr;
    CUresult (*cuDevicePrimaryCtxRetain)(CUcontext*, CUdevice) = nullptr;
    CUresult (*cuMemAlloc)(uint64_t*, size_t) = nullptr;
    CUresult (*cuMemFree)(uint64_t) = nullptr;
    CUresult (*cuStreamIsCapturing)(void*, int*) = nullptr;
    CUresult (*cuDeviceGetAttribute)(int*, int, CUdevice) = nullptr;
};

template <class F>
bool resolve(void* lib, const char* name, F& f) {
    f = reinterpret_cast<F>(dlsym(lib, name));
    return f != nullptr;
}

// nullptr when there is no usable driver (no libcuda, or cuInit fails: no GPU).
const Driver* driver() {
    static const Driver* d = [] () -> const Driver* {
        void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
        if (!lib) lib = dlopen("libcuda.so", RTLD_NOW | RTLD_GLOBAL);
        if (!lib) return nullptr;
        static Driver drv;
        const bool ok = resolve(lib, "cuInit", drv.cuInit) && resolve(lib, "cuDeviceGet", drv.cuDeviceGet) &&
                        resolve(lib, "cuDeviceGetCount", drv.cuDeviceGetCount) &&
                        resolve(lib, "cuCtxGetCurrent", drv.cuCtxGetCurrent) &&
                        resolve(lib, "cuCtxGetDevice", drv.cuCtxGetDevice) &&
                        resolve(lib, "cuCtxPushCurrent_v2", drv.cuCtxPushCurrent) &&
                        resolve(lib, "cuCtxPopCurrent_v2", drv.cuCtxPopCurrent) &&
                        resolve(lib, "cuDevicePrimaryCtxRetain", drv.cuDevicePrimaryCtxRetain) &&
                        resolve(lib, "cuMemAlloc_v2", drv.cuMemAlloc) && resolve(lib, "cuMemFree_v2", drv.cuMemFree) &&
                        resolve(lib, "cuStreamIsCapturing", drv.cuStreamIsCapturing) &&
                        resolve(lib, "cuDeviceGetAttribute", drv.cuDeviceGetAttribute);
        if (!ok || drv.cuInit(0) != 0) return nullptr;
        return &drv;
    }();
    return d;
}

thread_local int t_device = 0;
thread_local void* t_stream = nullptr;
thread_local bool t_pushed = false;

void report(void* user_context, const char* message) { halide_error(user_context, message); }

int acquire_context(void* user_context, void** ctx, bool create) {
    const Driver* d = driver();
    if (!d) {
        report(user_context, "bnforge: no CUDA driver or device (libcuda.so.1 not found, or cuInit failed)");
        return halide_error_code_generic_error;
    }
    CUcontext current = nullptr;
    CUdevice current_device = -1, wanted = -1;
    if (d->cuDeviceGet(&wanted, t_device) != 0) {
        report(user_context, "bnforge: CUDA device index out of range");
        return halide_error_code_generic_error;
    }
    if (d->cuCtxGetCurrent(&current) == 0 && current && d->cuCtxGetDevice(&current_device) == 0 &&
        current_device == wanted) {
        *ctx = current;  // the application's context
        return 0;
    }
    if (!create) {
        *ctx = nullptr;
        return 0;
    }
    // The primary context is retained once per device and kept for the
    // process, as the CUDA runtime API keeps it; made current for this call only.
    static std::mutex mutex;
    static CUcontext primary[64] = {};
    CUcontext p = nullptr;
    {
        std::lock_guard<std::mutex> lock(mutex);
        if (wanted < 0 || wanted >= 64) return halide_error_code_generic_error;
        if (!primary[wanted] && d->cuDevicePrimaryCtxRetain(&primary[wanted], wanted) != 0) {
            report(user_context, "bnforge: cuDevicePrimaryCtxRetain failed");
            return halide_error_code_generic_error;
        }
        p = primary[wanted];
    }
    if (d->cuCtxPushCurrent(p) != 0) {
        report(user_context, "bnforge: cuCtxPushCurrent failed");
        return halide_error_code_generic_error;
    }
    t_pushed = true;
    *ctx = p;
    return 0;
}

int release_context(void*) {
    if (t_pushed) {
        CUcontext popped = nullptr;
        driver()->cuCtxPopCurrent(&popped);
        t_pushed = false;
    }
    return 0;
}

int get_stream(void*, void*, void** stream) {
    *stream = t_stream;
    return 0;
}

// Device memory from the driver, in the context the cache names.
class CudaMemoryDriver final : public detail::DeviceMemoryDriver {
public:
    uint64_t allocate(size_t bytes, void*) override {
        // The caller (halide_cuda_device_malloc below) has made the context current.
        uint64_t block = 0;
        return driver()->cuMemAlloc(&block, bytes) == 0 ? block : 0;
    }
    void release(uint64_t block, void* context) override {
        const Driver* d = driver();
        if (d->cuCtxPushCurrent(context) != 0) return;  // the application destroyed its context: nothing to free
        d->cuMemFree(block);
        CUcontext popped = nullptr;
        d->cuCtxPopCurrent(&popped);
    }
};

// Never destroyed: tensors released by other static destructors still return their blocks.
detail::DeviceBlockCache& device_memory() {
    static auto* cache = new detail::DeviceBlockCache(*new CudaMemoryDriver);
    return *cache;
}

thread_local std::shared_ptr<detail::GraphPoolState> t_pool;

constexpr CUresult kCaptureImplicit = 906;  // CUDA_ERROR_STREAM_CAPTURE_IMPLICIT
enum CaptureStatus { kCaptureNone = 0, kCaptureActive = 1, kCaptureInvalidated = 2 };

}  // namespace

// bnforge's replacements for the weak definitions in Halide's CUDA runtime:
// every device allocation of the kernels and of tensors goes through the
// block cache above (device_memory.h says why).
extern "C" int halide_cuda_device_malloc(void* user_context, halide_buffer_t* buf) {
    if (buf->device) return 0;
    void* ctx = nullptr;
    if (const int rc = acquire_context(user_context, &ctx, true)) return rc;
    int result = 0;
    try {
        const bool capturing = detail::cuda_stream_capturing();
        buf->device = device_memory().allocate(buf->size_in_bytes(), ctx, t_stream, t_pool, capturing);
        buf->device_interface = halide_cuda_device_interface();
    } catch (const std::exception& e) {
        report(user_context, e.what());
        result = halide_error_code_device_malloc_failed;
    }
    release_context(user_context);
    return result;
}

extern "C" int halide_cuda_device_free(void* user_context, halide_buffer_t* buf) {
    if (!buf->device) return 0;
    int result = 0;
    try {
        device_memory().free(buf->device, t_stream);
    } catch (const std::exception& e) {
        report(user_context, e.what());
        result = halide_error_code_device_free_failed;
    }
    buf->device = 0;
    buf->device_interface = nullptr;
    return result;
}

CudaGraphPool::CudaGraphPool() : state_(std::make_shared<detail::GraphPoolState>()) {}
CudaGraphPool::~CudaGraphPool() { device_memory().close_pool(*state_); }
size_t CudaGraphPool::bytes() const { return device_memory().pool_bytes(*state_); }

CudaGraphPoolGuard::CudaGraphPoolGuard(CudaGraphPool& pool) : previous_(t_pool) { t_pool = pool.state_; }
CudaGraphPoolGuard::~CudaGraphPoolGuard() { t_pool = previous_; }

void empty_cuda_cache() { device_memory().release_cached(); }

void* set_cuda_stream(void* stream) {
    void* previous = t_stream;
    t_stream = stream;
    return previous;
}

void* cuda_stream() { return t_stream; }

int cuda_device_count() {
    const Driver* d = driver();
    int count = 0;
    if (!d || d->cuDeviceGetCount(&count) != 0) return 0;
    return count;
}

namespace detail {

void set_current_cuda_device(int index) {
    driver();  // loads libcuda.so.1 before Halide looks for "libcuda.so"
    t_device = index;
}

int cuda_acquire_context(void* user_context, void** ctx, bool create) {
    return acquire_context(user_context, ctx, create);
}
int cuda_release_context(void* user_context) { return release_context(user_context); }
int cuda_get_stream(void* user_context, void* ctx, void** stream) { return get_stream(user_context, ctx, stream); }

int current_cuda_device() { return t_device; }

int cuda_multiprocessor_count(int index) {
    constexpr int kMultiprocessorCount = 16;  // CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT
    static std::mutex mutex;
    static int counts[64] = {};
    if (index < 0 || index >= 64) return 1;
    std::lock_guard<std::mutex> lock(mutex);
    if (!counts[index]) {
        const Driver* d = driver();
        CUdevice device = -1;
        int count = 0;
        if (d && d->cuDeviceGet(&device, index) == 0 &&
            d->cuDeviceGetAttribute(&count, kMultiprocessorCount, device) == 0 && count > 0) {
            counts[index] = count;
        } else {
            return 1;
        }
    }
    return counts[index];
}

bool cuda_stream_capturing() {
    const Driver* d = driver();
    if (!d) return false;
    int status = kCaptureNone;
    const CUresult rc = d->cuStreamIsCapturing(t_stream, &status);
    BNF_CHECK(rc != kCaptureImplicit,
              "a CUDA graph is being captured and this thread's bnforge stream is the legacy default stream, "
              "which would break the capture: set_cuda_stream() to the capturing stream");
    // Other failures (no context current yet for the legacy stream) mean nothing is captured here.
    if (rc != 0) return false;
    BNF_CHECK(status != kCaptureInvalidated,
              "the CUDA graph capture on this thread's stream has been invalidated by an earlier call");
    return status == kCaptureActive;
}

}  // namespace detail

}  // namespace bnforge
