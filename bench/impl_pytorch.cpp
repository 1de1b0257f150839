// The PyTorch peer: ATen's CPU batch norm from the torch wheel's libtorch (its
// CPU libraries only), called the way a C++ PyTorch user (or
// torch.nn.functional underneath) calls it.
//
// Outputs are allocated by every call, as they are for every PyTorch user
// (torch.nn.functional.batch_norm has no out=); the process runs on jemalloc
// (bench/CMakeLists.txt), the caching allocator PyTorch CPU deployments use,
// so a call reuses memory instead of page-faulting fresh pages from glibc's
// mmap threshold. threshold_backward has an out= kernel and add_/relu_ work in place.
#include "bench_api.h"

#include <ATen/ATen.h>
#include <ATen/Config.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <torch/version.h>

#include <cmath>
#include <map>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace bench {
namespace {

constexpr double kMomentum = 0.1;  // has no effect: training calls pass no running statistics

at::ScalarType to_torch(bnforge::DType dtype) {
    switch (dtype) {
        case bnforge::DType::Float32: return at::kFloat;
        case bnforge::DType::Float16: return at::kHalf;
        case bnforge::DType::BFloat16: return at::kBFloat16;
        default: throw std::runtime_error("pytorch peer: unexpected dtype");
    }
}

bnforge::DType to_bnforge(at::ScalarType type) {
    switch (type) {
        case at::kFloat: return bnforge::DType::Float32;
        case at::kHalf: return bnforge::DType::Float16;
        case at::kBFloat16: return bnforge::DType::BFloat16;
        default: throw std::runtime_error("pytorch peer: unexpected torch dtype");
    }
}

// Zero-copy: the driver's tensor with its own strides (channels_last for NHWC).
at::Tensor wrap(const bnforge::Tensor& t) {
    return at::from_blob(t.raw_data(), t.shape(), t.strides(), at::TensorOptions().dtype(to_torch(t.dtype())));
}

// A bnforge view of a torch tensor's memory (valid while the torch tensor lives).
bnforge::Tensor view(const at::Tensor& t) {
    if (!t.defined()) return {};
    return bnforge::Tensor::from_blob_strided(t.data_ptr(), t.sizes().vec(), t.strides().vec(),
                                              to_bnforge(t.scalar_type()), bnforge::Device::cpu());
}

std::vector<double> to_vector(const at::Tensor& t) {
    if (!t.defined()) return {};
    at::Tensor d = t.to(at::kDouble).contiguous();
    const double* p = d.data_ptr<double>();
    return std::vector<double>(p, p + d.numel());
}

// Biased variance from ATen's saved 1/sqrt(var + eps).
std::vector<double> var_from_invstd(const at::Tensor& invstd) {
    std::vector<double> v = to_vector(invstd);
    for (double& x : v) x = 1.0 / (x * x) - kEps;
    return v;
}

c10::optional<at::Tensor> opt(const at::Tensor& t) { return c10::optional<at::Tensor>(t); }

class TorchRunner : public Runner {
public:
    TorchRunner(const CaseSpec& spec, const CaseData& data) : op_(spec.op) {
        c10::InferenceMode guard;
        weight_ = wrap(data.weight);
        bias_ = wrap(data.bias);
        running_mean_ = wrap(data.running_mean);
        running_var_ = wrap(data.running_var);
        const int slots = data.slots;
        s_.resize(slots);
        for (int i = 0; i < slots; ++i) {
            Slot& s = s_[i];
            s.x = wrap(data.x.at(i));
            if (op_ == Op::backward || op_ == Op::fused_backward) s.dy = wrap(data.dy.at(i));
            if (op_ == Op::fused_forward || op_ == Op::fused_backward) s.addend = wrap(data.addend.at(i));
            // The training forward a backward needs, once, untimed.
            if (op_ == Op::backward) {
                std::tie(std::ignore, s.save_mean, s.save_invstd) =
                    at::native_batch_norm(s.x, opt(weight_), opt(bias_), {}, {}, true, kMomentum, kEps);
            } else if (op_ == Op::fused_backward) {
                std::tie(s.y, s.save_mean, s.save_invstd) =
                    at::native_batch_norm(s.x, opt(weight_), opt(bias_), {}, {}, true, kMomentum, kEps);
                s.y.add_(s.addend).relu_();
                // The one output ATen can write into caller memory: the ReLU's input gradient.
                s.g = at::empty_like(s.dy);  // same strides as dy (preserve_format on a dense tensor)
                s.g.zero_();
            }
        }
    }

    void run(int slot) override {
        c10::InferenceMode guard;
        Slot& s = s_[slot];
        switch (op_) {
            case Op::train_forward:
                std::tie(s.y, s.save_mean, s.save_invstd) =
                    at::native_batch_norm(s.x, opt(weight_), opt(bias_), {}, {}, true, kMomentum, kEps);
                break;
            case Op::eval_forward:
                s.y = std::get<0>(at::native_batch_norm(s.x, opt(weight_), opt(bias_), opt(running_mean_),
                                                        opt(running_var_), false, kMomentum, kEps));
                break;
            case Op::backward:
                std::tie(s.dx, s.dweight, s.dbias) =
                    at::native_batch_norm_backward(s.dy, s.x, opt(weight_), {}, {}, opt(s.save_mean),
                                                   opt(s.save_invstd), true, kEps, {true, true, true});
                break;
            case Op::fused_forward:
                std::tie(s.y, s.save_mean, s.save_invstd) =
                    at::native_batch_norm(s.x, opt(weight_), opt(bias_), {}, {}, true, kMomentum, kEps);
                s.y.add_(s.addend);
                s.y.relu_();
                break;
            case Op::relu_forward:
                std::tie(s.y, s.save_mean, s.save_invstd) =
                    at::native_batch_norm(s.x, opt(weight_), opt(bias_), {}, {}, true, kMomentum, kEps);
                s.y.relu_();
                break;
            case Op::fused_backward:
                at::threshold_backward_out(s.g, s.dy, s.y, 0);
                std::tie(s.dx, s.dweight, s.dbias) =
                    at::native_batch_norm_backward(s.g, s.x, opt(weight_), {}, {}, opt(s.save_mean),
                                                   opt(s.save_invstd), true, kEps, {true, true, true});
                break;
        }
    }

    Outputs outputs(int slot) override {
        Slot& s = s_[slot];
        Outputs o;
        switch (op_) {
            case Op::train_forward:
            case Op::fused_forward:
            case Op::relu_forward:
                o.y = view(s.y);
                o.mean = to_vector(s.save_mean);
                o.var = var_from_invstd(s.save_invstd);
                break;
            case Op::eval_forward: o.y = view(s.y); break;
            case Op::backward:
            case Op::fused_backward:
                o.dx = view(s.dx);
                if (op_ == Op::fused_backward) o.daddend = view(s.g);
                o.dweight = to_vector(s.dweight);
                o.dbias = to_vector(s.dbias);
                break;
        }
        return o;
    }

private:
    struct Slot {
        at::Tensor x, dy, addend;              // the driver's memory
        at::Tensor y, save_mean, save_invstd;  // forward outputs (allocated by ATen)
        at::Tensor g;                          // fused backward: dy masked by y > 0 (= daddend), preallocated
        at::Tensor dx, dweight, dbias;         // backward outputs (allocated by ATen)
    };
    Op op_;
    at::Tensor weight_, bias_, running_mean_, running_var_;
    std::vector<Slot> s_;
};

class TorchImplementation : public Implementation {
public:
    std::string name() const override { return "pytorch"; }

    // Decided by trying: the op runs once on a tiny tensor of the case's dtype
    // and layout, and ATen's own error (if any) is the reason.
    std::string unsupported(const CaseSpec& spec) const override {
        if (spec.dtype != bnforge::DType::Float32 && spec.dtype != bnforge::DType::BFloat16 &&
            spec.dtype != bnforge::DType::Float16)
            return std::string("pytorch peer: dtype ") + bnforge::to_string(spec.dtype) + " is not an activation dtype";
        const auto key = std::make_tuple(static_cast<int>(spec.op), static_cast<int>(spec.layout),
                                         static_cast<int>(spec.dtype));
        auto it = probed_.find(key);
        if (it != probed_.end()) return it->second;
        std::string reason;
        try {
            probe(spec);
        } catch (const std::exception& e) {
            reason = "ATen " + version() + " CPU: " + first_line(e.what());
        }
        probed_.emplace(key, reason);
        return reason;
    }

    void set_num_threads(int threads) override { at::set_num_threads(threads); }

    std::unique_ptr<Runner> prepare(const CaseSpec& spec, const CaseData& data) override {
        return std::make_unique<TorchRunner>(spec, data);
    }

    std::string notes() const override {
        std::string backend = AT_PARALLEL_OPENMP ? "OpenMP" : "native pool";
        return "libtorch " + version() + " (the PyPI torch wheel, CPU libraries), ATen intra-op parallel backend " +
               backend +
               " (" + std::to_string(at::get_num_threads()) +
               " threads via at::set_num_threads), calls under c10::InferenceMode. "
               "train_forward: at::native_batch_norm(training=true, no running stats); eval_forward: "
               "at::native_batch_norm(training=false, running stats); backward: at::native_batch_norm_backward "
               "(saved mean/invstd from one untimed forward); fused_forward: native_batch_norm, then y.add_(addend), "
               "y.relu_() in place; fused_backward: at::threshold_backward_out(g, dy, y, 0) into a preallocated g "
               "(= daddend), then native_batch_norm_backward(g). Allocated per call, as torch.nn.functional does: "
               "y, save_mean, save_invstd, dx, dweight, dbias, through ATen's CPU allocator over jemalloc. "
               "var reported = 1/invstd^2 - eps.";
    }

private:
    static std::string version() {
        return std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
               std::to_string(TORCH_VERSION_PATCH);
    }

    static std::string first_line(const std::string& s) {
        const auto nl = s.find('\n');
        return nl == std::string::npos ? s : s.substr(0, nl);
    }

    static void probe(const CaseSpec& spec) {
        c10::InferenceMode guard;
        const auto dt = to_torch(spec.dtype);
        const auto fmt = spec.layout == bnforge::Layout::NHWC ? at::MemoryFormat::ChannelsLast
                                                              : at::MemoryFormat::Contiguous;
        const auto f32 = at::TensorOptions().dtype(at::kFloat);
        at::Tensor x = at::randn({2, 3, 4, 5}, f32).to(dt).contiguous(fmt);
        at::Tensor dy = at::randn({2, 3, 4, 5}, f32).to(dt).contiguous(fmt);
        at::Tensor addend = at::randn({2, 3, 4, 5}, f32).to(dt).contiguous(fmt);
        at::Tensor w = at::rand({3}, f32) + 0.5, b = at::randn({3}, f32);
        at::Tensor rm = at::randn({3}, f32), rv = at::rand({3}, f32) + 0.5;
        switch (spec.op) {
            case Op::train_forward: at::native_batch_norm(x, opt(w), opt(b), {}, {}, true, kMomentum, kEps); break;
            case Op::relu_forward:
                std::get<0>(at::native_batch_norm(x, opt(w), opt(b), {}, {}, true, kMomentum, kEps)).relu_();
                break;
            case Op::eval_forward:
                at::native_batch_norm(x, opt(w), opt(b), opt(rm), opt(rv), false, kMomentum, kEps);
                break;
            case Op::backward: {
                auto f = at::native_batch_norm(x, opt(w), opt(b), {}, {}, true, kMomentum, kEps);
                at::native_batch_norm_backward(dy, x, opt(w), {}, {}, opt(std::get<1>(f)), opt(std::get<2>(f)), true,
                                               kEps, {true, true, true});
                break;
            }
            case Op::fused_forward:
            case Op::fused_backward: {
                auto f = at::native_batch_norm(x, opt(w), opt(b), {}, {}, true, kMomentum, kEps);
                at::Tensor y = std::get<0>(f);
                y.add_(addend).relu_();
                if (spec.op == Op::fused_backward) {
                    at::Tensor g = at::empty_like(dy);
                    at::threshold_backward_out(g, dy, y, 0);
                    at::native_batch_norm_backward(g, x, opt(w), {}, {}, opt(std::get<1>(f)), opt(std::get<2>(f)),
                                                   true, kEps, {true, true, true});
                }
                break;
            }
        }
    }

    mutable std::map<std::tuple<int, int, int>, std::string> probed_;
};

}  // namespace

std::unique_ptr<Implementation> make_pytorch() { return std::make_unique<TorchImplementation>(); }

}  // namespace bench
