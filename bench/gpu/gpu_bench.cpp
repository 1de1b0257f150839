// bnforge on a CUDA GPU against cuDNN 9 (called in this process) and against
// the floor: a device-to-device copy of the same bytes, timed in the same run.
//
// Cases: the batch-norm shapes of ResNet-50 at N = 32 and 256, float32,
// float16 and bfloat16, NCHW and NHWC. Ops, each through the public module
// API for bnforge (what an application pays, the per-channel host step
// included) and through cudnnBatchNormalization* for cuDNN:
//   eval      y = BN(x) with running statistics          floor |x| + |y|
//   train     training forward (statistics, then apply)  floor 2|x| + |y|
//   backward  dx, dγ, dβ after a training forward        floor 2|x| + 2|dy| + |dx|
//   fused     y = ReLU(BN(x) + z), training forward      floor 2|x| + |z| + |y|
// cuDNN runs the fused op through cudnnBatchNormalizationForwardTrainingEx
// (CUDNN_BATCHNORM_OPS_BN_ADD_ACTIVATION) where it supports the case, and is
// reported as not supported elsewhere. Its training uses
// CUDNN_BATCHNORM_SPATIAL for NCHW and SPATIAL_PERSISTENT for NHWC, the
// modes PyTorch picks.
//
// Timing: CUDA events on the legacy stream around each call, 3 warm-up
// calls, the median of --reps. Inputs are random (never zeros) and rotate
// through enough copies to exceed the L2 three times, so each call reads
// DRAM. Output: one JSON object per line (bench/gpu/report.py makes the table).
//
// --per-call instead measures the fixed cost of a call where the kernels are
// short (ResNet's 7x7 and 14x14 at N=32, and N=1; or --shapes): float32 NCHW
// (or --nhwc), the same
// inputs every call (they stay in L2), wall-clock microseconds per call over
// blocks of back-to-back calls that end in a device sync, so a host-side
// cost (checks, launches, a synchronous copy) counts as much as kernel time.
// It uses only the module API, so an older bnforge builds it too (the
// before/after of a runtime change).
#include <bnforge/bnforge.h>

#include <cuda_runtime_api.h>
#include <cudnn.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using namespace bnforge;

void check_cuda(cudaError_t rc, const char* what) {
    if (rc != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(rc));
}

// cuDNN's status: an exception for errors, false for "not supported" (a case cuDNN does not cover).
bool cudnn_ok(cudnnStatus_t rc, const char* what) {
    if (rc == CUDNN_STATUS_SUCCESS) return true;
    if (rc == CUDNN_STATUS_NOT_SUPPORTED) return false;
    throw std::runtime_error(std::string(what) + ": " + cudnnGetErrorString(rc));
}
#define CUDNN(call) cudnn_ok((call), #call)

struct Shape {
    int64_t n, c, h, w;
    int64_t numel() const { return n * c * h * w; }
};

// ResNet-50's batch-norm inputs (channels, spatial side), each once.
const std::vector<std::pair<int64_t, int64_t>> kResNet50 = {
    {64, 112}, {64, 56}, {128, 56}, {256, 56}, {128, 28}, {256, 28}, {512, 28},
    {256, 14}, {512, 14}, {1024, 14}, {512, 7}, {2048, 7}};

cudnnDataType_t cudnn_type(DType d) {
    switch (d) {
        case DType::Float32: return CUDNN_DATA_FLOAT;
        case DType::Float16: return CUDNN_DATA_HALF;
        case DType::BFloat16: return CUDNN_DATA_BFLOAT16;
        default: throw std::runtime_error(std::string("no cuDNN type for ") + to_string(d));
    }
}

// Median of `reps` timed calls of f(i) (i counts calls, for rotating inputs), in ms.
double median_ms(const std::function<void(int)>& f, int reps) {
    cudaEvent_t start, stop;
    check_cuda(cudaEventCreate(&start), "cudaEventCreate");
    check_cuda(cudaEventCreate(&stop), "cudaEventCreate");
    int call = 0;
    for (int i = 0; i < 3; i++) f(call++);
    std::vector<double> ms;
    for (int i = 0; i < reps; i++) {
        check_cuda(cudaEventRecord(start, nullptr), "cudaEventRecord");
        f(call++);
        check_cuda(cudaEventRecord(stop, nullptr), "cudaEventRecord");
        check_cuda(cudaEventSynchronize(stop), "cudaEventSynchronize");
        float t = 0;
        check_cuda(cudaEventElapsedTime(&t, start, stop), "cudaEventElapsedTime");
        ms.push_back(t);
    }
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    std::nth_element(ms.begin(), ms.begin() + ms.size() / 2, ms.end());
    return ms[ms.size() / 2];
}

// `copies` device tensors of one shape, dtype and layout, filled with random
// values (a host pattern tiled at a different offset in each copy).
std::vector<Tensor> random_tensors(const Shape& s, DType dtype, Layout layout, int copies, double mean,
                                   std::mt19937& rng) {
    const int64_t pattern_len = std::min<int64_t>(s.numel(), int64_t{1} << 20);
    Tensor f32 = Tensor::empty({pattern_len}, DType::Float32);
    std::normal_distribution<float> normal(static_cast<float>(mean), 1.0f);
    for (int64_t i = 0; i < pattern_len; i++) f32.data<float>()[i] = normal(rng);
    Tensor pattern = Tensor::empty({pattern_len}, dtype);
    pattern.copy_(f32);
    const size_t es = element_size(dtype), total = static_cast<size_t>(s.numel()) * es;
    const size_t pattern_bytes = static_cast<size_t>(pattern_len) * es;
    std::vector<Tensor> out;
    for (int k = 0; k < copies; k++) {
        Tensor t = Tensor::empty({s.n, s.c, s.h, s.w}, dtype, Device::cuda(0), layout);
        auto* dst = static_cast<uint8_t*>(t.raw_data());
        const size_t shift = (static_cast<size_t>(k) * 4099 * es) % pattern_bytes;
        for (size_t done = 0; done < total;) {
            const size_t from = (done + shift) % pattern_bytes;
            const size_t len = std::min(pattern_bytes - from, total - done);
            check_cuda(cudaMemcpy(dst + done, static_cast<const uint8_t*>(pattern.raw_data()) + from, len,
                                  cudaMemcpyHostToDevice),
                       "cudaMemcpy");
            done += len;
        }
        out.push_back(std::move(t));
    }
    return out;
}

struct Result {
    std::string impl, op;
    double ms = 0;
    std::string unsupported;  // why there is no time
};

// One measurement as a JSON line; `copies` is the case's input rotation,
// which torch_bench.py reads with the cases, so both benches time the same.
void print_json(const Shape& s, DType dtype, Layout layout, const Result& r, double floor_bytes, double copy_gbs,
                int copies) {
    std::printf("{\"n\": %lld, \"c\": %lld, \"h\": %lld, \"w\": %lld, \"dtype\": \"%s\", \"layout\": \"%s\", "
                "\"impl\": \"%s\", \"op\": \"%s\", \"ms\": %s, \"floor_bytes\": %.0f, \"copy_gbs\": %.2f, "
                "\"copies\": %d, \"unsupported\": \"%s\"}\n",
                static_cast<long long>(s.n), static_cast<long long>(s.c), static_cast<long long>(s.h),
                static_cast<long long>(s.w), to_string(dtype), to_string(layout), r.impl.c_str(),
                r.op.c_str(), r.unsupported.empty() ? std::to_string(r.ms).c_str() : "null", floor_bytes, copy_gbs,
                copies, r.unsupported.c_str());
    std::fflush(stdout);
}

// A device buffer of floats (cuDNN's per-channel parameters and statistics).
struct DeviceFloats {
    float* p = nullptr;
    explicit DeviceFloats(int64_t count, float value) {
        check_cuda(cudaMalloc(reinterpret_cast<void**>(&p), count * sizeof(float)), "cudaMalloc");
        std::vector<float> host(count, value);
        check_cuda(cudaMemcpy(p, host.data(), count * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy");
    }
    ~DeviceFloats() { cudaFree(p); }
    DeviceFloats(const DeviceFloats&) = delete;
    DeviceFloats& operator=(const DeviceFloats&) = delete;
};

// cuDNN's four ops on one case.
class Cudnn {
public:
    Cudnn(cudnnHandle_t handle, const Shape& s, DType dtype, Layout layout)
        : handle_(handle),
          train_mode_(layout == Layout::NHWC ? CUDNN_BATCHNORM_SPATIAL_PERSISTENT : CUDNN_BATCHNORM_SPATIAL),
          scale_(s.c, 1.0f), bias_(s.c, 0.0f), running_mean_(s.c, 0.0f), running_var_(s.c, 1.0f),
          save_mean_(s.c, 0.0f), save_inv_var_(s.c, 1.0f), dscale_(s.c, 0.0f), dbias_(s.c, 0.0f) {
        cudnnCreateTensorDescriptor(&x_);
        cudnnCreateTensorDescriptor(&bn_);
        cudnnCreateActivationDescriptor(&relu_);
        const cudnnTensorFormat_t format = layout == Layout::NHWC ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW;
        try {  // a descriptor cuDNN rejects makes every op of the case "not supported", not the end of the run
            supported_ = CUDNN(cudnnSetTensor4dDescriptor(x_, format, cudnn_type(dtype), static_cast<int>(s.n),
                                                          static_cast<int>(s.c), static_cast<int>(s.h),
                                                          static_cast<int>(s.w))) &&
                         CUDNN(cudnnDeriveBNTensorDescriptor(bn_, x_, CUDNN_BATCHNORM_SPATIAL)) &&
                         CUDNN(cudnnSetActivationDescriptor(relu_, CUDNN_ACTIVATION_RELU, CUDNN_NOT_PROPAGATE_NAN, 0.0));
        } catch (const std::exception& e) {
            std::fprintf(stderr, "  cuDNN rejects the case: %s\n", e.what());
            supported_ = false;
        }
    }
    ~Cudnn() {
        cudnnDestroyTensorDescriptor(x_);
        cudnnDestroyTensorDescriptor(bn_);
        cudnnDestroyActivationDescriptor(relu_);
        cudaFree(workspace_);
        cudaFree(reserve_);
    }

    bool eval(const Tensor& x, Tensor& y) {
        return supported_ && CUDNN(cudnnBatchNormalizationForwardInference(
                                 handle_, CUDNN_BATCHNORM_SPATIAL, &one_, &zero_, x_, x.raw_data(), x_, y.raw_data(),
                                 bn_, scale_.p, bias_.p, running_mean_.p, running_var_.p, kEps));
    }
    bool train(const Tensor& x, Tensor& y) {
        return supported_ && CUDNN(cudnnBatchNormalizationForwardTraining(
                                 handle_, train_mode_, &one_, &zero_, x_, x.raw_data(), x_, y.raw_data(), bn_, scale_.p,
                                 bias_.p, kMomentum, running_mean_.p, running_var_.p, kEps, save_mean_.p,
                                 save_inv_var_.p));
    }
    bool backward(const Tensor& x, const Tensor& dy, Tensor& dx) {
        return supported_ && CUDNN(cudnnBatchNormalizationBackward(
                                 handle_, train_mode_, &one_, &zero_, &one_, &zero_, x_, x.raw_data(), x_,
                                 dy.raw_data(), x_, dx.raw_data(), bn_, scale_.p, dscale_.p, dbias_.p, kEps,
                                 save_mean_.p, save_inv_var_.p));
    }
    bool fused(const Tensor& x, const Tensor& z, Tensor& y) {
        if (!supported_) return false;
        const cudnnBatchNormOps_t ops = CUDNN_BATCHNORM_OPS_BN_ADD_ACTIVATION;
        if (!workspace_checked_) {
            workspace_checked_ = true;
            fused_supported_ = CUDNN(cudnnGetBatchNormalizationForwardTrainingExWorkspaceSize(
                                   handle_, CUDNN_BATCHNORM_SPATIAL_PERSISTENT, ops, x_, x_, x_, bn_, relu_,
                                   &workspace_bytes_)) &&
                               CUDNN(cudnnGetBatchNormalizationTrainingExReserveSpaceSize(
                                   handle_, CUDNN_BATCHNORM_SPATIAL_PERSISTENT, ops, relu_, x_, &reserve_bytes_));
            if (fused_supported_) {
                check_cuda(cudaMalloc(&workspace_, std::max<size_t>(workspace_bytes_, 1)), "cudaMalloc");
                check_cuda(cudaMalloc(&reserve_, std::max<size_t>(reserve_bytes_, 1)), "cudaMalloc");
            }
        }
        return fused_supported_ &&
               CUDNN(cudnnBatchNormalizationForwardTrainingEx(
                   handle_, CUDNN_BATCHNORM_SPATIAL_PERSISTENT, ops, &one_, &zero_, x_, x.raw_data(), x_,
                   z.raw_data(), x_, y.raw_data(), bn_, scale_.p, bias_.p, kMomentum, running_mean_.p,
                   running_var_.p, kEps, save_mean_.p, save_inv_var_.p, relu_, workspace_, workspace_bytes_,
                   reserve_, reserve_bytes_));
    }

private:
    static constexpr double kEps = 1e-5, kMomentum = 0.1;
    cudnnHandle_t handle_;
    cudnnBatchNormMode_t train_mode_;
    cudnnTensorDescriptor_t x_ = nullptr, bn_ = nullptr;
    cudnnActivationDescriptor_t relu_ = nullptr;
    DeviceFloats scale_, bias_, running_mean_, running_var_, save_mean_, save_inv_var_, dscale_, dbias_;
    const float one_ = 1.0f, zero_ = 0.0f;
    bool supported_ = false, workspace_checked_ = false, fused_supported_ = false;
    void *workspace_ = nullptr, *reserve_ = nullptr;
    size_t workspace_bytes_ = 0, reserve_bytes_ = 0;
};

struct Options {
    std::vector<int64_t> batches = {32, 256};
    std::vector<DType> dtypes = {DType::Float32, DType::Float16, DType::BFloat16};
    std::vector<Layout> layouts = {Layout::NCHW, Layout::NHWC};
    int reps = 20;
    bool quick = false;     // two small shapes: a smoke run of the bench itself
    bool per_call = false;  // the fixed cost of a call on small shapes instead
    std::vector<Shape> per_call_shapes = {{32, 2048, 7, 7}, {32, 1024, 14, 14}, {32, 512, 7, 7}, {32, 256, 14, 14},
                                          {1, 512, 7, 7}};
    Layout per_call_layout = Layout::NCHW;
};

// "32x2048x7x7,1x512x7x7" -> shapes.
std::vector<Shape> parse_shapes(const std::string& list) {
    std::vector<Shape> shapes;
    size_t at = 0;
    while (at < list.size()) {
        const size_t end = std::min(list.find(',', at), list.size());
        Shape s{};
        if (std::sscanf(list.substr(at, end - at).c_str(), "%ldx%ldx%ldx%ld", &s.n, &s.c, &s.h, &s.w) != 4) {
            std::fprintf(stderr, "bnforge_gpu_bench: bad shape list %s (NxCxHxW,...)\n", list.c_str());
            std::exit(2);
        }
        shapes.push_back(s);
        at = end + 1;
    }
    return shapes;
}

Options parse(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; i++) {
        const std::string a = argv[i];
        if (a == "--quick") {
            o.quick = true;
            o.batches = {8};
            o.reps = 3;
        } else if (a == "--per-call") {
            o.per_call = true;
        } else if (a.rfind("--shapes=", 0) == 0) {
            o.per_call_shapes = parse_shapes(a.substr(9));
        } else if (a == "--nhwc") {
            o.per_call_layout = Layout::NHWC;
        } else if (a.rfind("--reps=", 0) == 0) {
            o.reps = std::max(1, std::atoi(a.c_str() + 7));
        } else if (a == "--help") {
            std::printf("usage: bnforge_gpu_bench [--quick | --per-call [--shapes=NxCxHxW,...] [--nhwc]] [--reps=N]   (JSON lines on stdout; exit 77 without a GPU)\n");
            std::exit(0);
        } else {
            std::fprintf(stderr, "bnforge_gpu_bench: unknown argument %s\n", a.c_str());
            std::exit(2);
        }
    }
    return o;
}

void run_case(cudnnHandle_t handle, const Shape& s, DType dtype, Layout layout, const Options& o, std::mt19937& rng) {
    const double bytes = static_cast<double>(s.numel()) * element_size(dtype);
    constexpr double kL2Bytes = 50e6;  // an H100's L2; an H200 has 60 MB, which three copies of 50 MB also exceed
    const int copies = static_cast<int>(std::clamp(std::ceil(3 * kL2Bytes / bytes), 1.0, 64.0));
    auto x = random_tensors(s, dtype, layout, copies, 3.0, rng);
    auto dy = random_tensors(s, dtype, layout, copies, 0.0, rng);
    auto z = random_tensors(s, dtype, layout, copies, 0.0, rng);
    Tensor y = Tensor::empty({s.n, s.c, s.h, s.w}, dtype, Device::cuda(0), layout);
    Tensor dx = Tensor::empty({s.n, s.c, s.h, s.w}, dtype, Device::cuda(0), layout);

    // The floor's bandwidth: the same bytes copied device to device, counted read + written.
    const double copy_ms = median_ms(
        [&](int i) {
            check_cuda(cudaMemcpyAsync(y.raw_data(), x[i % copies].raw_data(), static_cast<size_t>(bytes),
                                       cudaMemcpyDeviceToDevice, nullptr),
                       "cudaMemcpyAsync");
        },
        o.reps);
    const double copy_gbs = 2 * bytes / copy_ms / 1e6;
    const double floors[] = {2 * bytes, 3 * bytes, 5 * bytes, 4 * bytes};  // eval, train, backward, fused
    const char* ops[] = {"eval", "train", "backward", "fused"};
    print_json(s, dtype, layout, {"copy", "copy", copy_ms, ""}, 2 * bytes, copy_gbs, copies);

    auto report = [&](const std::string& impl, int op, const std::function<bool(int)>& f) {
        Result r{impl, ops[op], 0, ""};
        bool ok = true;
        try {
            ok = f(0);
            if (ok) r.ms = median_ms([&](int i) { f(i); }, o.reps);
        } catch (const std::exception& e) {
            r.unsupported = e.what();
        }
        if (!ok) r.unsupported = "not supported by " + impl + " for this case";
        for (char& ch : r.unsupported) ch = ch == '"' || ch == '\n' ? '\'' : ch;
        print_json(s, dtype, layout, r, floors[op], copy_gbs, copies);
    };

    // bnforge: the manual schedules, and (float32) each GPU autoscheduler's.
    std::vector<std::string> schedules = {"manual"};
    if (dtype == DType::Float32) {
        for (const auto& sch : kernel_schedules(Device::cuda(0)))
            if (sch != "manual") schedules.push_back(sch);
    }
    for (const std::string& sch : schedules) {
        set_kernel_schedule(sch);
        const std::string impl = sch == "manual" ? "bnforge" : "bnforge-" + sch;
        auto options = BatchNormOptions::pytorch(s.c).dtype(dtype).layout(layout).device(Device::cuda(0));
        BatchNorm2d bn(options);
        FusedBatchNorm2d fused(options);
        bn.eval();
        report(impl, 0, [&](int i) { return bn.forward(x[i % copies]).defined(); });
        bn.train();
        report(impl, 1, [&](int i) { return bn.forward(x[i % copies]).defined(); });
        report(impl, 2, [&](int i) {
            if (i == 0) bn.forward(x[0]);  // the saved statistics the backwards read (untimed: f(0) is the check call)
            return bn.backward(dy[i % copies]).defined();
        });
        report(impl, 3, [&](int i) { return fused.forward(x[i % copies], &z[i % copies]).defined(); });
    }
    set_kernel_schedule("manual");
    // The manual kernels with the route forced each way (the "bnforge" rows take the default routing).
    for (const size_t limit : {std::numeric_limits<size_t>::max(), size_t{0}}) {
        set_gpu_one_pass_limit(limit);
        const std::string impl = limit ? "bnforge-one-pass" : "bnforge-two-pass";
        auto options = BatchNormOptions::pytorch(s.c).dtype(dtype).layout(layout).device(Device::cuda(0));
        BatchNorm2d bn(options);
        FusedBatchNorm2d fused(options);
        report(impl, 1, [&](int i) { return bn.forward(x[i % copies]).defined(); });
        report(impl, 2, [&](int i) {
            if (i == 0) bn.forward(x[0]);
            return bn.backward(dy[i % copies]).defined();
        });
        report(impl, 3, [&](int i) { return fused.forward(x[i % copies], &z[i % copies]).defined(); });
    }
    set_gpu_one_pass_limit(std::nullopt);

    Cudnn cudnn(handle, s, dtype, layout);
    report("cudnn", 0, [&](int i) { return cudnn.eval(x[i % copies], y); });
    report("cudnn", 1, [&](int i) { return cudnn.train(x[i % copies], y); });
    try {
        cudnn.train(x[0], y);  // the saved statistics the backward reads
    } catch (const std::exception&) {
    }
    report("cudnn", 2, [&](int i) { return cudnn.backward(x[0], dy[i % copies], dx); });
    report("cudnn", 3, [&](int i) { return cudnn.fused(x[i % copies], z[i % copies], y); });
}

// Wall-clock microseconds per call of f: 7 blocks of 100 back-to-back calls,
// each ended by a device sync, after 20 warm-up calls; the median block.
double per_call_us(const std::function<void()>& f) {
    for (int i = 0; i < 20; i++) f();
    check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    std::vector<double> blocks;
    for (int b = 0; b < 7; b++) {
        constexpr int kCalls = 100;
        const auto start = std::chrono::steady_clock::now();
        for (int i = 0; i < kCalls; i++) f();
        check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
        const std::chrono::duration<double, std::micro> took = std::chrono::steady_clock::now() - start;
        blocks.push_back(took.count() / kCalls);
    }
    std::nth_element(blocks.begin(), blocks.begin() + blocks.size() / 2, blocks.end());
    return blocks[blocks.size() / 2];
}

// --per-call: one shape, bnforge's modules and cuDNN, one JSON line per (impl, op).
void run_per_call(cudnnHandle_t handle, const Shape& s, Layout layout, std::mt19937& rng) {
    const DType dtype = DType::Float32;
    const Tensor x = random_tensors(s, dtype, layout, 1, 3.0, rng)[0];
    const Tensor dy = random_tensors(s, dtype, layout, 1, 0.0, rng)[0];
    const Tensor z = random_tensors(s, dtype, layout, 1, 0.0, rng)[0];
    Tensor y = Tensor::empty({s.n, s.c, s.h, s.w}, dtype, Device::cuda(0), layout);
    Tensor dx = Tensor::empty({s.n, s.c, s.h, s.w}, dtype, Device::cuda(0), layout);
    auto emit = [&](const char* impl, const char* op, const std::function<bool()>& f) {
        std::string unsupported;
        double us = 0;
        try {
            if (f())
                us = per_call_us([&] { f(); });
            else
                unsupported = std::string("not supported by ") + impl;
        } catch (const std::exception& e) {
            unsupported = e.what();
        }
        for (char& ch : unsupported) ch = ch == '"' || ch == '\n' ? '\'' : ch;
        std::printf("{\"per_call\": 1, \"n\": %lld, \"c\": %lld, \"h\": %lld, \"w\": %lld, \"layout\": \"%s\", "
                    "\"impl\": \"%s\", \"op\": \"%s\", \"us\": %s, \"unsupported\": \"%s\"}\n",
                    static_cast<long long>(s.n), static_cast<long long>(s.c), static_cast<long long>(s.h),
                    static_cast<long long>(s.w), to_string(layout), impl, op,
                    unsupported.empty() ? std::to_string(us).c_str() : "null", unsupported.c_str());
        std::fflush(stdout);
    };
    BatchNorm2d bn(BatchNormOptions::pytorch(s.c).layout(layout).device(Device::cuda(0)));
    FusedBatchNorm2d fused(BatchNormOptions::oneflow(s.c).layout(layout).device(Device::cuda(0)));
    emit("bnforge", "train+backward", [&] { return bn.forward(x).defined() && bn.backward(dy).defined(); });
    emit("bnforge", "fused+backward", [&] { return fused.forward(x, &z).defined() && fused.backward(dy).dx.defined(); });
    bn.eval();
    emit("bnforge", "eval", [&] { return bn.forward(x).defined(); });
    bn.train();
    {
        // The same training step captured into a CUDA graph (README, "CUDA graphs"): one launch per step.
        cudaStream_t stream = nullptr;
        check_cuda(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
        void* const previous = set_cuda_stream(stream);
        cudaGraphExec_t exec = nullptr;
        cudaGraph_t graph = nullptr;
        {
            CudaGraphPool pool;
            try {
                const CudaGraphPoolGuard guard(pool);
                for (int i = 0; i < 2; i++) (void)(bn.forward(x).defined() && bn.backward(dy).defined());
                check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
                check_cuda(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), "cudaStreamBeginCapture");
                Tensor gy = bn.forward(x), gdx = bn.backward(dy);
                check_cuda(cudaStreamEndCapture(stream, &graph), "cudaStreamEndCapture");
                check_cuda(cudaGraphInstantiate(&exec, graph, 0), "cudaGraphInstantiate");
                emit("bnforge-graph", "train+backward", [&] { return cudaGraphLaunch(exec, stream) == cudaSuccess; });
            } catch (const std::exception& e) {
                emit("bnforge-graph", "train+backward", [&]() -> bool { throw Error(e.what()); });
            }
            check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
            if (exec) cudaGraphExecDestroy(exec);
            if (graph) cudaGraphDestroy(graph);
        }
        set_cuda_stream(previous);
        cudaStreamDestroy(stream);
    }
    Cudnn cudnn(handle, s, dtype, layout);
    emit("cudnn", "train+backward", [&] { return cudnn.train(x, y) && cudnn.backward(x, dy, dx); });
    emit("cudnn", "eval", [&] { return cudnn.eval(x, y); });
}

// The exit status without a GPU: ctest's "skipped" (bench/gpu/CMakeLists.txt).
constexpr int kNoDevice = 77;

}  // namespace

int main(int argc, char** argv) {
    const Options o = parse(argc, argv);
    try {
        if (cuda_device_count() == 0) {
            std::fprintf(stderr, "bnforge_gpu_bench: no CUDA device\n");
            return kNoDevice;
        }
        cudaDeviceProp prop{};
        check_cuda(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
        std::fprintf(stderr, "bnforge_gpu_bench: %s, %d SMs, cuDNN %zu, %d reps\n", prop.name,
                     prop.multiProcessorCount, cudnnGetVersion(), o.reps);
        std::printf("{\"device\": \"%s\", \"sms\": %d, \"cudnn\": %zu}\n", prop.name, prop.multiProcessorCount,
                    cudnnGetVersion());
        cudnnHandle_t handle;
        if (!CUDNN(cudnnCreate(&handle))) throw std::runtime_error("cudnnCreate: not supported");
        std::mt19937 rng(2026);
        if (o.per_call) {
            for (const Shape& s : o.per_call_shapes) run_per_call(handle, s, o.per_call_layout, rng);
            cudnnDestroy(handle);
            return 0;
        }
        auto shapes = kResNet50;
        if (o.quick) shapes = {{64, 28}, {512, 7}};
        for (int64_t n : o.batches)
            for (const auto& [c, side] : shapes)
                for (DType dtype : o.dtypes)
                    for (Layout layout : o.layouts) {
                        std::fprintf(stderr, "  %lldx%lldx%lldx%lld %s %s\n", static_cast<long long>(n),
                                     static_cast<long long>(c), static_cast<long long>(side),
                                     static_cast<long long>(side), to_string(dtype),
                                     to_string(layout));
                        try {  // a case that fails outside one measurement is reported; the others still run
                            run_case(handle, {n, c, side, side}, dtype, layout, o, rng);
                        } catch (const std::exception& e) {
                            std::fprintf(stderr, "bnforge_gpu_bench: case failed: %s\n", e.what());
                        }
                    }
        cudnnDestroy(handle);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bnforge_gpu_bench: %s\n", e.what());
        return 1;
    }
    return 0;
}
