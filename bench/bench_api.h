// The contract between the benchmark driver and the implementations it times
// (bnforge and its autoscheduled variants, PyTorch, oneDNN).
//
// The driver owns the inputs; an implementation owns its outputs. Every
// implementation sees the same random data and is checked once against the
// float64 reference before it is timed. Inputs come in `slots` copies: timed
// iteration i uses slot i % slots, so when the working set is larger than the
// last-level cache each iteration reads its data from memory, as a network
// layer would, instead of from a cache the previous iteration warmed.
#pragma once
#include <bnforge/bnforge.h>

#include <memory>
#include <string>
#include <vector>

namespace bench {

enum class Op {
    train_forward,   // batch statistics; y (and the batch mean / biased variance)
    eval_forward,    // running statistics; y
    backward,        // after a training forward: dx, dweight, dbias
    fused_forward,   // training: y = ReLU(BN(x) + addend) (OneFlow's FusedBatchNorm2d)
    fused_backward,  // after fused_forward: dx, daddend, dweight, dbias
    relu_forward,    // training: y = ReLU(BN(x)) (oneDNN's fuse_norm_relu; PyTorch unfused)
};
const char* to_string(Op op);

struct Shape {
    int64_t n, c, h, w;
    int64_t numel() const { return n * c * h * w; }
    std::vector<int64_t> dims() const { return {n, c, h, w}; }
    std::string str() const;  // "32x64x56x56"
};

struct CaseSpec {
    Shape shape;
    bnforge::Layout layout;
    bnforge::DType dtype;  // of x, y, dy, dx, addend; parameters and statistics are float32
    Op op;
    std::string str() const;  // "train_forward/nchw/float32/32x64x56x56"
};

constexpr double kEps = 1e-5;

// Random inputs for one (shape, layout, dtype), shared by every op and implementation.
// Batch tensors are dense bnforge tensors in `layout`, so raw_data() with
// strides() describes their memory for any framework.
struct CaseData {
    Shape shape;
    bnforge::Layout layout;
    bnforge::DType dtype;
    int slots = 1;
    std::vector<bnforge::Tensor> x, dy, addend;  // `slots` copies each, identical contents
    bnforge::Tensor weight, bias;                // float32 (C), random
    bnforge::Tensor running_mean, running_var;   // float32 (C), random (var > 0), for eval
};

// What an implementation computed, for the one check before timing. Batch
// outputs are views of the implementation's own memory (any layout/dtype
// bnforge can describe); per-channel values in float64. Leave empty what the
// op does not produce or the implementation does not expose.
struct Outputs {
    bnforge::Tensor y;        // train/eval/fused forward
    bnforge::Tensor dx;       // backward ops
    bnforge::Tensor daddend;  // fused_backward (optional)
    std::vector<double> mean, var;        // train/fused forward: batch mean and biased variance
    std::vector<double> dweight, dbias;   // backward ops
};

// Random inputs in `slots` identical copies (bench_data.cpp).
std::shared_ptr<CaseData> make_case_data(const Shape& shape, bnforge::Layout layout, bnforge::DType dtype, int slots);

// Empty when `out` matches the float64 reference for `spec` (check.cpp);
// otherwise what differs, and by how much.
std::string check_outputs(const CaseSpec& spec, const CaseData& data, const Outputs& out);

class Runner {
public:
    virtual ~Runner() = default;
    // One timed call on inputs slot `slot` (0 <= slot < data.slots). Everything
    // a caller of the library would do per call happens here; one-off set-up
    // (primitive creation, the forward a backward needs) happens in prepare.
    virtual void run(int slot) = 0;
    // The outputs of the last run(slot).
    virtual Outputs outputs(int slot) = 0;
    // bnforge only: whether the last run took the one-pass (fused statistics
    // and outputs) kernels, which move fewer bytes (the report's "fused").
    virtual bool one_pass() const { return false; }
};

class Implementation {
public:
    virtual ~Implementation() = default;
    virtual std::string name() const = 0;  // "bnforge", "pytorch", "onednn", "bnforge-adams2019", ...
    // Empty when supported; otherwise why not (printed, and the case is skipped).
    virtual std::string unsupported(const CaseSpec& spec) const = 0;
    // Applied once before any case.
    virtual void set_num_threads(int threads) = 0;
    virtual std::unique_ptr<Runner> prepare(const CaseSpec& spec, const CaseData& data) = 0;
    // Free-form notes for the report (e.g. "at::native_batch_norm, outputs allocated per call").
    virtual std::string notes() const { return ""; }
};

// Each implementation file defines one factory; those whose library was not
// found at configure time are not compiled in (see bench/CMakeLists.txt).
std::unique_ptr<Implementation> make_bnforge();
std::unique_ptr<Implementation> make_pytorch();    // BNFORGE_BENCH_HAVE_TORCH
// BNFORGE_BENCH_HAVE_DNNL; named BNFORGE_BENCH_DNNL_NAME ("onednn", "onednn-omp"):
// each oneDNN build is linked into its own bench executable (their libdnnl.so.3 clash).
std::unique_ptr<Implementation> make_onednn();
// bnforge with the kernels of one autoscheduler ("adams2019", "mullapudi2016", "li2018"),
// for each autoscheduler the build contains.
std::vector<std::string> autoscheduled_schedules();
std::unique_ptr<Implementation> make_bnforge_autoscheduled(const std::string& scheduler);

}  // namespace bench
