// The few CUDA driver calls the stream, device and graph tests make
// themselves (streams, a current context, graph capture and replay), from
// libcuda loaded at run time: the tests build and skip on machines without
// the driver, as in CI.
#pragma once

#include <dlfcn.h>

namespace testutil {

class CudaDriver {
public:
    using CUresult = int;
    using CUcontext = void*;
    using CUstream = void*;
    using CUgraph = void*;
    using CUgraphExec = void*;
    static constexpr unsigned kStreamNonBlocking = 1;  // CU_STREAM_NON_BLOCKING
    static constexpr int kCaptureModeGlobal = 0;       // CU_STREAM_CAPTURE_MODE_GLOBAL, the default of cudaStreamBeginCapture

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

    // Graphs: capture in global mode (what PyTorch and cudaStreamBeginCapture
    // default to); end_capture returns the driver's result (0: a valid graph).
    bool begin_capture(CUstream s) const { return cuStreamBeginCapture(s, kCaptureModeGlobal) == 0; }
    CUresult end_capture(CUstream s, CUgraph* graph) const { return cuStreamEndCapture(s, graph); }
    CUgraphExec instantiate(CUgraph graph) const {
        CUgraphExec exec = nullptr;
        return cuGraphInstantiateWithFlags(&exec, graph, 0) == 0 ? exec : nullptr;
    }
    bool launch(CUgraphExec exec, CUstream s) const { return cuGraphLaunch(exec, s) == 0; }
    void destroy_graph(CUgraph graph, CUgraphExec exec) const {
        if (exec) cuGraphExecDestroy(exec);
        if (graph) cuGraphDestroy(graph);
    }

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
               resolve(lib, "cuStreamDestroy_v2", cuStreamDestroy) &&
               resolve(lib, "cuStreamBeginCapture_v2", cuStreamBeginCapture) &&
               resolve(lib, "cuStreamEndCapture", cuStreamEndCapture) &&
               resolve(lib, "cuGraphInstantiateWithFlags", cuGraphInstantiateWithFlags) &&
               resolve(lib, "cuGraphLaunch", cuGraphLaunch) && resolve(lib, "cuGraphExecDestroy", cuGraphExecDestroy) &&
               resolve(lib, "cuGraphDestroy", cuGraphDestroy) && cuInit(0) == 0;
    }
    CUresult (*cuDeviceGet)(int*, int) = nullptr;
    CUresult (*cuDevicePrimaryCtxRetain)(CUcontext*, int) = nullptr;
    CUresult (*cuCtxSetCurrent)(CUcontext) = nullptr;
    CUresult (*cuStreamCreate)(CUstream*, unsigned) = nullptr;
    CUresult (*cuStreamSynchronize)(CUstream) = nullptr;
    CUresult (*cuStreamDestroy)(CUstream) = nullptr;
    CUresult (*cuStreamBeginCapture)(CUstream, int) = nullptr;
    CUresult (*cuStreamEndCapture)(CUstream, CUgraph*) = nullptr;
    CUresult (*cuGraphInstantiateWithFlags)(CUgraphExec*, CUgraph, unsigned long long) = nullptr;
    CUresult (*cuGraphLaunch)(CUgraphExec, CUstream) = nullptr;
    CUresult (*cuGraphExecDestroy)(CUgraphExec) = nullptr;
    CUresult (*cuGraphDestroy)(CUgraph) = nullptr;
};

}  // namespace testutil
