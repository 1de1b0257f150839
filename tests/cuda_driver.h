// The few CUDA driver calls the stream and device tests make themselves
// (streams, a current context), from libcuda loaded at run time: the tests
// build and skip on machines without the driver, as in CI.
#pragma once

#include <dlfcn.h>

namespace testutil {

class CudaDriver {
public:
    using CUresult = int;
    using CUcontext = void*;
    using CUstream = void*;
    static constexpr unsigned kStreamNonBlocking = 1;  // CU_STREAM_NON_BLOCKING

    // The driver, or nullptr where there is none (no libcuda, or cuInit fails).
    static const CudaDriver* get() {
        static const CudaDriver* d = [] () -> const CudaDriver* {
            static CudaDriver drv;
            return drv.load() ? &drv : nullptr;
        }();
        return d;
    }

    // Makes device `index`'s primary context (the one bnforge and the CUDA
    // runtime API use) current on this thread.
    bool make_primary_current(int index) const {
        int device = 0;
        CUcontext ctx = nullptr;
        return cuDeviceGet(&device, index) == 0 && cuDevicePrimaryCtxRetain(&ctx, device) == 0 &&
               cuCtxSetCurrent(ctx) == 0;
    }
    CUstream create_stream() const {
        CUstream s = nullptr;
        return cuStreamCreate(&s, kStreamNonBlocking) == 0 ? s : nullptr;
    }
    bool synchronize(CUstream s) const { return cuStreamSynchronize(s) == 0; }
    void destroy(CUstream s) const { cuStreamDestroy(s); }

private:
    template <class F>
    static bool resolve(void* lib, const char* name, F& f) {
        f = reinterpret_cast<F>(dlsym(lib, name));
        return f != nullptr;
    }
    bool load() {
        void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
        if (!lib) return false;
        CUresult (*cuInit)(unsigned) = nullptr;
        return resolve(lib, "cuInit", cuInit) && resolve(lib, "cuDeviceGet", cuDeviceGet) &&
               resolve(lib, "cuDevicePrimaryCtxRetain", cuDevicePrimaryCtxRetain) &&
               resolve(lib, "cuCtxSetCurrent", cuCtxSetCurrent) && resolve(lib, "cuStreamCreate", cuStreamCreate) &&
               resolve(lib, "cuStreamSynchronize", cuStreamSynchronize) &&
               resolve(lib, "cuStreamDestroy_v2", cuStreamDestroy) && cuInit(0) == 0;
    }
    CUresult (*cuDeviceGet)(int*, int) = nullptr;
    CUresult (*cuDevicePrimaryCtxRetain)(CUcontext*, int) = nullptr;
    CUresult (*cuCtxSetCurrent)(CUcontext) = nullptr;
    CUresult (*cuStreamCreate)(CUstream*, unsigned) = nullptr;
    CUresult (*cuStreamSynchronize)(CUstream) = nullptr;
    CUresult (*cuStreamDestroy)(CUstream) = nullptr;
};

}  // namespace testutil
