#include <bnforge/batch_norm.h>

#include "channel_values.h"
#include "check.h"
#include "conventions.h"
#include "device.h"
#include "kernels.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <thread>

namespace bnforge {

using functional::Activation;
using functional::Moments;

struct BatchNormBase::Hooks {
    int next_id = 0;
    std::map<int, ForwardPreHook> pre;
    std::map<int, ForwardHook> post;
};

// A module is not thread-safe (its calls change the saved context, the
// running statistics and the gradients), so a call from a second thread
// while one is running is refused with an Error instead of racing. The
// running thread may re-enter (a hook that calls state_dict()).
struct BatchNormBase::Exclusive {
    std::atomic<std::thread::id> owner{};
    int depth = 0;  // changed by the owner only
};

class ExclusiveCall {
public:
    ExclusiveCall(const BatchNormBase& module, const char* call) : e_(*module.exclusive_) {
        const std::thread::id me = std::this_thread::get_id();
        std::thread::id none{};
        const bool ours = e_.owner.load(std::memory_order_acquire) == me ||
                          e_.owner.compare_exchange_strong(none, me, std::memory_order_acquire);
        BNF_CHECK(ours, module.name() << "." << call << ": another thread is inside a call of this module; a "
                                      << "module's calls must not overlap (give each thread its own module, or "
                                      << "serialize the calls)");
        e_.depth++;
    }
    ~ExclusiveCall() {
        if (--e_.depth == 0) e_.owner.store(std::thread::id{}, std::memory_order_release);
    }
    ExclusiveCall(const ExclusiveCall&) = delete;
    ExclusiveCall& operator=(const ExclusiveCall&) = delete;

private:
    BatchNormBase::Exclusive& e_;
};

namespace {

Tensor filled(const std::vector<int64_t>& shape, double value, const BatchNormOptions& o) {
    Tensor t = Tensor::empty(shape, DType::Float32, o.device());
    t.fill_(value);
    return t;
}

std::vector<int64_t> param_shape(const BatchNormOptions& o) {
    if (detail::rules(o.convention()).params_are_4d) return {1, o.num_features(), 1, 1};
    return {o.num_features()};
}

void validate_options(const BatchNormOptions& o, const std::string& module) {
    const auto& r = detail::rules(o.convention());
    BNF_CHECK(o.num_features() > 0, module << ": num_features must be positive, got " << o.num_features());
    BNF_CHECK(o.eps() > 0, module << ": eps must be positive, got " << o.eps());
    BNF_CHECK(o.momentum() || r.supports_cumulative_average,
              module << ": momentum=None (cumulative average) is not supported by the " << r.name
                     << " convention; give a momentum (default " << r.default_momentum << ")");
    BNF_CHECK(!o.momentum() || (*o.momentum() >= 0 && *o.momentum() <= 1),
              module << ": momentum must be in [0, 1], got " << *o.momentum());
    BNF_CHECK(!o.freeze() || r.supports_freeze,
              module << ": freeze is a MegEngine option; not supported by the " << r.name << " convention");
    BNF_CHECK(!o.freeze() || o.track_running_stats(), module << ": freeze requires track_running_stats=true");
    BNF_CHECK(o.compute_mode() == ComputeMode::Default || o.convention() == Convention::MegEngine,
              module << ": compute_mode is a MegEngine option");
    BNF_CHECK(o.dtype() == DType::Float32 || o.dtype() == DType::Float16 || o.dtype() == DType::BFloat16,
              module << ": dtype must be float32, float16 or bfloat16, got " << to_string(o.dtype()));
    BNF_CHECK(detail::device_supported(o.device()),
              module << ": device " << o.device().str() << " is not supported by this build (no kernels for it)");
}

std::string ranks_string(const std::vector<int64_t>& ranks) {
    std::string s;
    for (size_t i = 0; i < ranks.size(); i++) s += (i ? " or " : "") + std::to_string(ranks[i]);
    return s;
}

}  // namespace

BatchNormBase::BatchNormBase(BatchNormOptions options, std::string name, std::vector<int64_t> ranks)
    : options_(std::move(options)), name_(std::move(name)), ranks_(std::move(ranks)), hooks_(std::make_shared<Hooks>()),
      exclusive_(std::make_unique<Exclusive>()) {
    validate_options(options_, name_);
    const auto shape = param_shape(options_);
    if (options_.affine()) {
        weight_ = filled(shape, 1.0, options_);
        bias_ = filled(shape, 0.0, options_);
        weight_grad_ = filled(shape, 0.0, options_);
        bias_grad_ = filled(shape, 0.0, options_);
    }
    if (options_.track_running_stats()) {
        running_mean_ = filled(shape, 0.0, options_);
        running_var_ = filled(shape, 1.0, options_);
        if (detail::rules(options_.convention()).has_num_batches_tracked) {
            num_batches_tracked_ = Tensor::empty({}, DType::Int64, options_.device());
            num_batches_tracked_.fill_(0);
        }
    }
}

BatchNormBase::~BatchNormBase() = default;
BatchNormBase::BatchNormBase(BatchNormBase&&) noexcept = default;
BatchNormBase& BatchNormBase::operator=(BatchNormBase&&) noexcept = default;

BatchNorm1d::BatchNorm1d(BatchNormOptions o) : BatchNormBase(std::move(o), "BatchNorm1d", {2, 3}) {}
BatchNorm2d::BatchNorm2d(BatchNormOptions o) : BatchNormBase(std::move(o), "BatchNorm2d", {4}) {}
BatchNorm3d::BatchNorm3d(BatchNormOptions o) : BatchNormBase(std::move(o), "BatchNorm3d", {5}) {}
FusedBatchNorm2d::FusedBatchNorm2d(BatchNormOptions o) : BatchNormBase(std::move(o), "FusedBatchNorm2d", {4}) {}

int64_t BatchNormBase::num_batches_tracked() const {
    return num_batches_tracked_.defined() ? static_cast<int64_t>(num_batches_tracked_.item({})) : 0;
}

void BatchNormBase::validate_input(const Tensor& x, const char* arg) const {
    BNF_CHECK(x.defined(), name_ << ": " << arg << " is undefined");
    BNF_CHECK(std::find(ranks_.begin(), ranks_.end(), x.dim()) != ranks_.end(),
              name_ << ": expected " << arg << " of rank " << ranks_string(ranks_) << ", got rank " << x.dim()
                    << " with shape " << detail::format_shape(x.shape()));
    BNF_CHECK(x.shape()[1] == options_.num_features(),
              name_ << ": expected " << arg << " with " << options_.num_features() << " channels (num_features), got "
                    << x.shape()[1] << " in shape " << detail::format_shape(x.shape()));
    BNF_CHECK(x.dtype() == options_.dtype(),
              name_ << ": expected " << arg << " of dtype " << to_string(options_.dtype()) << ", got " << to_string(x.dtype()));
    BNF_CHECK(x.device() == options_.device(),
              name_ << ": expected " << arg << " on device " << options_.device().str() << ", got " << x.device().str());
    BNF_CHECK(x.dim() <= 2 || x.layout() == options_.layout(),
              name_ << ": expected " << arg << " in layout " << to_string(options_.layout()) << ", got "
                    << to_string(x.layout()));
    BNF_CHECK(x.numel() == 0 || x.raw_data() != nullptr, name_ << ": " << arg << " has a null data pointer");
    detail::kernel_layout_for(x, arg);  // strides the kernels can take
}

bool BatchNormBase::uses_batch_statistics() const {
    return (training_ && !options_.freeze()) || !options_.track_running_stats();
}

Tensor BatchNormBase::forward_impl(const Tensor& x, const Tensor* addend, Activation activation) {
    const ExclusiveCall exclusive(*this, "forward");
    const bool synchronized = uses_batch_statistics() && synchronizes_statistics();
    try {
        validate_input(x, "input");
        if (addend) {
            validate_input(*addend, "addend");
            BNF_CHECK(addend->shape() == x.shape(), name_ << ": expected addend of shape "
                                                          << detail::format_shape(x.shape()) << " (as input), got "
                                                          << detail::format_shape(addend->shape()));
        }
    } catch (const Error&) {
        if (synchronized) abandon_forward_exchange();
        throw;
    }
    for (auto& [id, hook] : std::map<int, ForwardPreHook>(hooks_->pre)) hook(*this, x);

    // The running statistics move in the forward's per-channel step, on their
    // device; every check on the caller's input has run before it.
    const bool update_stats = training_ && options_.track_running_stats() && !options_.freeze();
    std::optional<functional::RunningUpdate> update;
    if (update_stats) update = running_update();
    const functional::RunningUpdate* up = update ? &*update : nullptr;
    functional::ForwardResult result;
    if (uses_batch_statistics() && !synchronized) {
        result = functional::batch_norm_forward(x, Tensor(), Tensor(), weight_, bias_, true, options_.eps(), activation,
                                                addend, up)
                     .result;
    } else if (uses_batch_statistics()) {
        const Moments moments = global_moments(functional::batch_moments(x));
        result = functional::normalize_with_batch_stats(x, moments, options_.eps(), weight_, bias_, activation, addend,
                                                        up);
    } else {
        result = functional::normalize_with_running_stats(x, running_mean_, running_var_, options_.eps(), weight_, bias_,
                                                          activation, addend);
    }
    saved_ = std::move(result.saved);
    saved_synchronized_ = synchronized;
    for (auto& [id, hook] : std::map<int, ForwardHook>(hooks_->post)) hook(*this, x, result.y);
    return result.y;
}

functional::RunningUpdate BatchNormBase::running_update() const {
    functional::RunningUpdate u;
    u.running_mean = running_mean_;
    u.running_var = running_var_;
    u.num_batches_tracked = num_batches_tracked_;
    // factor = the weight of the new batch statistic; none: 1 / num_batches_tracked, read on the device.
    if (options_.momentum()) {
        const auto& r = detail::rules(options_.convention());
        u.factor = r.momentum_weights_running ? 1.0 - *options_.momentum() : *options_.momentum();
    }
    return u;
}

functional::InputGrads BatchNormBase::backward_impl(const Tensor& dy) {
    const ExclusiveCall exclusive(*this, "backward");
    // Without a forward, this process cannot know whether the others reduce:
    // it joins when its module would synchronise now.
    const bool synchronized = saved_ ? saved_synchronized_ : uses_batch_statistics() && synchronizes_statistics();
    try {
        BNF_CHECK(saved_, name_ << ": backward called before forward");
        validate_input(dy, "dy");
        BNF_CHECK(dy.shape() == saved_->x.shape(), name_ << ": expected dy of shape "
                                                         << detail::format_shape(saved_->x.shape())
                                                         << " (as the forward input), got "
                                                         << detail::format_shape(dy.shape()));
    } catch (const Error&) {
        if (synchronized) abandon_backward_exchange();
        throw;
    }
    // dγ/dβ are added to weight_grad/bias_grad in the backward's per-channel
    // step, on their device (as float32 .grad accumulates).
    const bool parameter_grads = options_.affine() && !options_.freeze();
    functional::GradAccumulators accumulators;
    if (parameter_grads) accumulators = {weight_grad_, bias_grad_, nullptr};
    if (synchronized) {
        // Parameter gradients from this process's own sums (PyTorch's rule);
        // dx needs the group's, reduced into a copy.
        const functional::BackwardSums local = functional::backward_sums(dy, *saved_);
        functional::BackwardSums group{local.sums.clone()};
        reduce_backward_sums(group);
        accumulators.local = &local;
        return functional::backward_input(dy, *saved_, weight_, group, &accumulators);
    }
    return functional::batch_norm_backward(dy, *saved_, weight_, &accumulators).input;
}

NamedTensors BatchNormBase::named_parameters() const {
    NamedTensors out;
    if (options_.affine()) {
        out.emplace_back("weight", weight_);
        out.emplace_back("bias", bias_);
    }
    return out;
}

NamedTensors BatchNormBase::named_buffers() const {
    NamedTensors out;
    if (options_.track_running_stats()) {
        out.emplace_back("running_mean", running_mean_);
        out.emplace_back("running_var", running_var_);
        if (num_batches_tracked_.defined()) out.emplace_back("num_batches_tracked", num_batches_tracked_);
    }
    return out;
}

StateDict BatchNormBase::state_dict() const {
    const ExclusiveCall exclusive(*this, "state_dict");
    StateDict sd;
    for (const auto& [name, t] : named_parameters()) sd[name] = t.clone();
    for (const auto& [name, t] : named_buffers()) sd[name] = t.clone();
    return sd;
}

void BatchNormBase::load_state_dict(const StateDict& state, bool strict) {
    const ExclusiveCall exclusive(*this, "load_state_dict");
    NamedTensors expected = named_parameters();
    for (auto& b : named_buffers()) expected.push_back(b);

    std::vector<std::string> missing, unexpected;
    for (const auto& [name, t] : expected) {
        if (!state.count(name)) missing.push_back(name);
    }
    for (const auto& entry : state) {
        const std::string& name = entry.first;  // a lambda may not capture a structured binding before C++20
        const bool known = std::any_of(expected.begin(), expected.end(), [&](const auto& e) { return e.first == name; });
        if (!known) unexpected.push_back(name);
    }
    if (strict && (!missing.empty() || !unexpected.empty())) {
        std::string msg = "Error(s) in loading state_dict for " + name_ + ":";
        auto list = [](const std::vector<std::string>& keys) {
            std::string s;
            for (size_t i = 0; i < keys.size(); i++) s += (i ? ", \"" : " \"") + keys[i] + "\"";
            return s;
        };
        if (!missing.empty()) msg += " Missing key(s) in state_dict:" + list(missing) + ".";
        if (!unexpected.empty()) msg += " Unexpected key(s) in state_dict:" + list(unexpected) + ".";
        throw Error(msg);
    }

    // Validate everything first, then copy: a bad entry changes nothing.
    const int64_t channels = options_.num_features();
    for (const auto& [name, target] : expected) {
        auto it = state.find(name);
        if (it == state.end()) continue;
        const Tensor& src = it->second;
        BNF_CHECK(src.defined(), "load_state_dict: \"" << name << "\" is undefined");
        BNF_CHECK(src.device().is_cpu() || src.device() == target.device(),
                  "load_state_dict: \"" << name << "\" is on " << src.device().str());
        if (name == "num_batches_tracked") {
            BNF_CHECK(src.numel() == 1 && src.dtype() == DType::Int64,
                      "load_state_dict: \"num_batches_tracked\" expected one int64 value, got dtype "
                          << to_string(src.dtype()) << " shape " << detail::format_shape(src.shape()));
            continue;
        }
        const bool shape_ok = src.shape() == std::vector<int64_t>{channels} ||
                              src.shape() == std::vector<int64_t>{1, channels, 1, 1};
        BNF_CHECK(shape_ok, "load_state_dict: \"" << name << "\" expected shape (" << channels << ",) or (1, " << channels
                                                  << ", 1, 1), got " << detail::format_shape(src.shape()));
        BNF_CHECK(src.dtype() == DType::Float32 || src.dtype() == DType::Float16 || src.dtype() == DType::BFloat16,
                  "load_state_dict: \"" << name << "\" expected a float dtype, got " << to_string(src.dtype()));
    }
    for (auto& [name, target] : expected) {
        auto it = state.find(name);
        if (it == state.end()) continue;
        if (name == "num_batches_tracked") {
            target.set_item({}, it->second.item(std::vector<int64_t>(it->second.dim(), 0)));
        } else {
            detail::set_channel_values(target, detail::channel_values(it->second, channels, 0.0, name.c_str()));
        }
    }
}

void BatchNormBase::zero_grad() {
    const ExclusiveCall exclusive(*this, "zero_grad");
    if (weight_grad_.defined()) weight_grad_.fill_(0);
    if (bias_grad_.defined()) bias_grad_.fill_(0);
}

void BatchNormBase::reset_running_stats() {
    const ExclusiveCall exclusive(*this, "reset_running_stats");
    if (running_mean_.defined()) running_mean_.fill_(0);
    if (running_var_.defined()) running_var_.fill_(1);
    if (num_batches_tracked_.defined()) num_batches_tracked_.fill_(0);
}

void BatchNormBase::reset_parameters() {
    const ExclusiveCall exclusive(*this, "reset_parameters");
    reset_running_stats();
    if (weight_.defined()) weight_.fill_(1);
    if (bias_.defined()) bias_.fill_(0);
}

HookHandle BatchNormBase::register_forward_pre_hook(ForwardPreHook hook) {
    const int id = hooks_->next_id++;
    hooks_->pre.emplace(id, std::move(hook));
    std::weak_ptr<Hooks> weak = hooks_;
    return HookHandle([weak, id] {
        if (auto h = weak.lock()) h->pre.erase(id);
    });
}

HookHandle BatchNormBase::register_forward_hook(ForwardHook hook) {
    const int id = hooks_->next_id++;
    hooks_->post.emplace(id, std::move(hook));
    std::weak_ptr<Hooks> weak = hooks_;
    return HookHandle([weak, id] {
        if (auto h = weak.lock()) h->post.erase(id);
    });
}

}  // namespace bnforge
