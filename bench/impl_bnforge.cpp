// bnforge through its functional API, as a framework integration calls it:
// outputs are returned per call (the host block cache makes that cheap).
// The autoscheduled variants are the same calls with another kernel set
// selected (set_kernel_schedule), so they differ in schedule only.
#include "bench_api.h"
#include "kernels.h"

#include <cstring>

namespace bench {

namespace {

using bnforge::functional::Activation;
namespace F = bnforge::functional;

class BnforgeRunner : public Runner {
public:
    BnforgeRunner(const CaseSpec& spec, const CaseData& data, std::string schedule)
        : spec_(spec), data_(data), schedule_(std::move(schedule)) {
        bnforge::set_kernel_schedule(schedule_);
        forward_.resize(data.slots);
        backward_.resize(data.slots);
        // The forward each backward differentiates, run once per slot, untimed.
        if (spec.op == Op::backward || spec.op == Op::fused_backward)
            for (int s = 0; s < data.slots; s++) forward_[s] = forward(s);
    }

    // Timed per call: nothing here but the call (the schedule was selected
    // above, and each benchmark prepares its own runner).
    void run(int slot) override {
        if (spec_.op == Op::backward || spec_.op == Op::fused_backward) {
            backward_[slot] = F::batch_norm_backward(data_.dy[slot], forward_[slot].result.saved, data_.weight);
        } else {
            forward_[slot] = forward(slot);
        }
        last_kernel_ = bnforge::detail::last_invoked_kernel();  // named in one_pass(), outside the timing
    }

    Outputs outputs(int slot) override {
        Outputs o;
        if (spec_.op == Op::backward || spec_.op == Op::fused_backward) {
            o.dx = backward_[slot].input.dx;
            o.daddend = backward_[slot].input.daddend;
            o.dweight = host_values(backward_[slot].dweight);
            o.dbias = host_values(backward_[slot].dbias);
        } else {
            o.y = forward_[slot].result.y;
            if (forward_[slot].moments) {
                o.mean = forward_[slot].moments->mean();
                o.var = forward_[slot].moments->biased_var();
            }
        }
        return o;
    }

    bool one_pass() const override { return last_kernel_ && std::strstr(last_kernel_->name, "_train_") != nullptr; }

private:
    // The C float32 values of a per-channel result (checked outside the timing).
    static std::vector<double> host_values(const bnforge::Tensor& t) {
        const bnforge::Tensor h = t.to(bnforge::Device::cpu());
        const float* p = h.data<float>();
        return std::vector<double>(p, p + h.numel());
    }

    F::BatchNormForward forward(int slot) const {
        const bool fused = spec_.op == Op::fused_forward || spec_.op == Op::fused_backward;
        const bool relu = fused || spec_.op == Op::relu_forward;
        if (spec_.op == Op::eval_forward)
            return F::batch_norm_forward(data_.x[slot], data_.running_mean, data_.running_var, data_.weight,
                                         data_.bias, false, kEps);
        return F::batch_norm_forward(data_.x[slot], bnforge::Tensor(), bnforge::Tensor(), data_.weight, data_.bias,
                                     true, kEps, relu ? Activation::Relu : Activation::Identity,
                                     fused ? &data_.addend[slot] : nullptr);
    }

    CaseSpec spec_;
    const CaseData& data_;
    std::string schedule_;
    std::vector<F::BatchNormForward> forward_;
    std::vector<F::BatchNormBackward> backward_;
    const bnforge::detail::KernelEntry* last_kernel_ = nullptr;
};

class Bnforge : public Implementation {
public:
    explicit Bnforge(std::string schedule) : schedule_(std::move(schedule)) {}
    std::string name() const override { return schedule_ == "manual" ? "bnforge" : "bnforge-" + schedule_; }
    std::string unsupported(const CaseSpec& spec) const override {
        if (schedule_ != "manual" && spec.dtype != bnforge::DType::Float32)
            return "the autoscheduled kernel sets are built for float32 only";
        return "";
    }
    void set_num_threads(int threads) override { bnforge::set_num_threads(threads); }
    std::unique_ptr<Runner> prepare(const CaseSpec& spec, const CaseData& data) override {
        return std::make_unique<BnforgeRunner>(spec, data, schedule_);
    }
    std::string notes() const override {
        return "bnforge::functional::batch_norm_forward / batch_norm_backward; outputs returned per call "
               "(host block cache on); kernel schedule " + schedule_;
    }

private:
    std::string schedule_;
};

}  // namespace

std::unique_ptr<Implementation> make_bnforge() { return std::make_unique<Bnforge>("manual"); }

std::vector<std::string> autoscheduled_schedules() {
    std::vector<std::string> out;
    for (const std::string& s : bnforge::kernel_schedules(bnforge::Device::cpu()))
        if (s != "manual") out.push_back(s);
    return out;
}

std::unique_ptr<Implementation> make_bnforge_autoscheduled(const std::string& schedule) {
    return std::make_unique<Bnforge>(schedule);
}

}  // namespace bench
