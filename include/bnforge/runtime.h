// Process-wide runtime settings and what the build contains.
#pragma once
#include <bnforge/dtype.h>

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace bnforge {

// Threads the CPU kernels use (Halide's thread pool); returns the previous value.
// Lowering it restarts the pool, so call it between kernels, not during one.
int set_num_threads(int threads);
// The threads the kernels use now (resolving 0 to Halide's default).
int num_threads();

// Float32 training forward and backward run in one pass over memory — a
// channel block's statistics, then its outputs while its slab is still in L2
// — when that slab (x, plus dy for backward) fits in this many bytes, there
// are at least two blocks per thread and the inputs are larger than
// one_pass_min_bytes(); otherwise, and for float16 and bfloat16, in two passes
// parallel over the batch. Both give the same results. Default: half the L2
// cache. 0 forces two passes; SIZE_MAX one pass wherever the kernels apply,
// whatever the inputs' size and type.
// BNFORGE_ONE_PASS_BYTES=<bytes> sets it for a whole process; nullopt restores the default.
void set_one_pass_limit(std::optional<size_t> bytes);
size_t one_pass_limit();

// The one-pass route's other bound: inputs (x, plus dy for backward) of at
// most this many bytes take two passes, since the second pass finds them in
// the cache. Default: half the last-level cache; 0 removes the bound.
// BNFORGE_ONE_PASS_MIN_BYTES=<bytes> sets it for a whole process; nullopt
// restores the default.
void set_one_pass_min_bytes(std::optional<size_t> bytes);
size_t one_pass_min_bytes();

// The CPU kernels that write a batch output (y and the ReLU mask of eval and
// training forward, dx and daddend of backward, in one pass or two; float32
// and bfloat16, on x86) write it with streaming stores — whole cache lines,
// not read first, not kept in the caches — when it has at least this many
// bytes and its rows start on 64-byte boundaries. Same results either way.
// Default: a quarter of the last-level cache (a smaller output is likely still
// cached when the next layer reads it). 0 streams every such output; SIZE_MAX none.
// BNFORGE_STREAMING_STORE_BYTES=<bytes> sets it for a whole process; nullopt
// restores the default.
void set_streaming_store_limit(std::optional<size_t> bytes);
size_t streaming_store_limit();

// On a GPU the same one-pass pipelines (NCHW) give a block a channel: its
// statistics, then its outputs, re-reading the channel's slab from L1/L2
// rather than memory, in one launch. Used when that slab (x, plus dy for
// backward) is at most this many bytes and, on CUDA, there are at least two
// channels per multiprocessor. Default 48 KiB (a block's share of an SM's L1
// and, over all resident blocks, well inside an H100's L2). 0 forces two
// passes; SIZE_MAX forces one pass wherever the kernels apply, whatever the
// channel count (testing, benchmarking). On OpenCL only the size counts.
// BNFORGE_GPU_ONE_PASS_BYTES=<bytes> sets it for a whole process; nullopt
// restores the default.
void set_gpu_one_pass_limit(std::optional<size_t> bytes);
size_t gpu_one_pass_limit();

// One AOT-compiled kernel variant and the Halide target it was compiled for.
struct KernelVariant {
    std::string name;      // e.g. "bnk_apply_cpu_f32_nchw_relu"
    std::string pipeline;  // "stats", "apply", "train_forward", ..., or a per-channel step ("forward_finalize", ...)
    Device device;
    DType dtype;
    Layout layout;
    std::string fusion;
    std::string schedule;  // "manual", or the autoscheduler that built it: "adams2019", "anderson2021", ...
    std::string target;    // e.g. "x86-64-linux-avx512-...-user_context"
    // A per-channel kernel's module options (e.g. "batch_momentum_affine");
    // "streaming_stores" for a kernel that writes its output with streaming
    // stores (see set_streaming_store_limit); "" for the others.
    std::string variant;
};
std::vector<KernelVariant> kernel_variants();

// Tuning and benchmarking aid: which schedule's kernels are called, on every
// device. "manual" (the default) is the hand-written schedules (or saved
// ones, see the README's "Tuning schedules"), built for every dtype, fat over
// cpu_targets() on the CPU; each autoscheduler in the build adds a
// float32-only set: BNFORGE_AUTOSCHEDULERS for one CPU target,
// BNFORGE_GPU_AUTOSCHEDULERS (anderson2021, li2018) for the GPU targets.
// Once an autoscheduler's set is selected, a call it has no kernel for (e.g.
// bfloat16, or a CPU tensor under a GPU-only autoscheduler) is an Error, never
// a silent fall back. The environment variable BNFORGE_KERNEL_SCHEDULE=<name>
// sets the initial choice for a whole process.
void set_kernel_schedule(const std::string& schedule);  // Error naming the available ones if unknown
std::string kernel_schedule();
std::vector<std::string> kernel_schedules();               // "manual" first, then those built
std::vector<std::string> kernel_schedules(Device device);  // those with kernels for the device's kind

// The CPU kernels are fat libraries: one sub-target per instruction-set
// level (BNFORGE_CPU_TARGETS), chosen per call by Halide's runtime dispatch
// as the best the CPU supports.
// The instruction-set levels of the fat CPU library, each architecture's
// worst first: x86-64 Baseline < SSE41 < AVX2 < AVX512Skylake < AVX512Zen4
// (AVX512-BF16 on AMD Zen 4 and 5, which Halide does not grant the next) <
// AVX512SapphireRapids; aarch64 Baseline (NEON) < ArmDotProdFp16 < Sve2
// (at the width it was compiled for); riscv64 Baseline < Rvv (likewise).
enum class CpuLevel {
    Baseline,
    SSE41,
    AVX2,
    AVX512Skylake,
    AVX512Zen4,
    AVX512SapphireRapids,
    ArmDotProdFp16,
    Sve2,
    Rvv
};
// "baseline", "sse41", "avx2", "avx512_skylake", "avx512_zen4", "avx512_sapphirerapids", "arm_dot_prod_fp16",
// "sve2", "rvv"
const char* to_string(CpuLevel);
// Caps the level dispatch may choose (std::nullopt: no cap; a level of another
// architecture is an Error), for tests and
// benchmarks that must run the lower variants on a machine with the higher.
// Halide decides once per kernel, so this must come before the first kernel
// call (an Error after); the environment variable BNFORGE_MAX_CPU_LEVEL=<name>
// sets it for a whole process.
void set_max_cpu_level(std::optional<CpuLevel> level);
std::optional<CpuLevel> max_cpu_level();
// The level dispatch chose for the kernels run so far; std::nullopt before
// any kernel call, or when the build has a single target.
std::optional<CpuLevel> last_cpu_level();
// The best level this CPU supports; with `at_most`, the best one not above it
// (what dispatch runs under that cap: on some CPUs a level's features are not
// a superset of the one below, so this need not be min(at_most, best)).
CpuLevel best_cpu_level();
CpuLevel best_cpu_level(CpuLevel at_most);  // Error for a level of another architecture
// The Halide targets the CPU kernels were compiled for, best first.
std::vector<std::string> cpu_targets();

// CUDA. Kernels and copies that the calling thread starts run on this stream
// (a CUstream / cudaStream_t, e.g. torch.cuda.current_stream().cuda_stream),
// in the context current on the thread when it belongs to the tensors'
// device (else that device's primary context, the CUDA runtime API's);
// nullptr, the default, is the legacy default stream. Per thread; returns
// the previous stream. libcuda.so.1 is found by the loader's usual search.
void* set_cuda_stream(void* stream);
void* cuda_stream();
// CUDA devices usable by this process: 0 without a driver or a GPU.
int cuda_device_count();

// CUDA graphs (README, "CUDA graphs"). While a CudaGraphPoolGuard is alive on
// a thread, the device memory bnforge allocates there (outputs, saved
// statistics, the kernels' intermediates) comes from its pool, and what is
// freed goes back to that pool only: a captured graph's blocks are never
// handed to other calls nor returned to the driver while the pool lives.
// Inside a capture bnforge never calls the driver to allocate, load a module
// or synchronise; a call that would is an Error. Prepare by running the same
// step once under the pool, outside the capture, and releasing its outputs.
// Destroy a pool after the graphs that use it; blocks that tensors still hold
// go back to the driver when those tensors are released.
namespace detail {
struct GraphPoolState;
}
class CudaGraphPool {
public:
    CudaGraphPool();
    ~CudaGraphPool();
    CudaGraphPool(const CudaGraphPool&) = delete;
    CudaGraphPool& operator=(const CudaGraphPool&) = delete;
    size_t bytes() const;  // the device memory the pool holds, free and in use

private:
    friend class CudaGraphPoolGuard;
    std::shared_ptr<detail::GraphPoolState> state_;
};
class CudaGraphPoolGuard {
public:
    explicit CudaGraphPoolGuard(CudaGraphPool& pool);
    ~CudaGraphPoolGuard();  // the thread's previous pool (or none) again
    CudaGraphPoolGuard(const CudaGraphPoolGuard&) = delete;
    CudaGraphPoolGuard& operator=(const CudaGraphPoolGuard&) = delete;

private:
    std::shared_ptr<detail::GraphPoolState> previous_;
};
// Device blocks that tensors and kernels released are kept for reuse on the
// stream that released them; this gives those back to the driver (pools keep theirs).
void empty_cuda_cache();

// Host↔device traffic since the process started: copies each way, and the
// host synchronisations that reads back imply (Tensor::to/copy_/item across
// devices, per-channel host buffers given to a GPU kernel, the handshakes of
// an NCCL process group). A training step of a module on a GPU makes none
// after its first call (tests: *NoHostRoundTrip*).
struct DeviceTraffic {
    int64_t host_to_device = 0, device_to_host = 0, synchronizations = 0;
};
DeviceTraffic device_traffic();

// Host blocks that tensors release are kept, up to this many bytes, and
// reused for the next tensor of exactly the same size: a training loop then
// stops paying, on every step, the page faults of fresh mappings (large
// tensors) and malloc's search of its bins (small ones).
// Default: an eighth of physical memory, at least 1 GiB; BNFORGE_HOST_CACHE_BYTES=<bytes>
// sets it for a process, 0 disables.
void set_host_cache_limit(size_t bytes);
size_t host_cache_limit();
void empty_host_cache();  // frees every cached block

// Testing aid: fill every tensor allocated from now on with 0xFF bytes (NaN
// for floats), so an output element a kernel failed to write cannot pass a
// comparison by accident. Off by default.
void poison_new_tensors(bool on);

}  // namespace bnforge
