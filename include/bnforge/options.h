// BatchNormOptions: the three frameworks' presets and builder-style setters,
// in the manner of libtorch's options structs.
#pragma once
#include <bnforge/dtype.h>

#include <cstdint>
#include <optional>

namespace bnforge {

// Whose rules a module follows (see the semantics table in the README).
enum class Convention { PyTorch, MegEngine, OneFlow };
const char* to_string(Convention);

// MegEngine's compute_mode. bnforge always accumulates in float32 or wider,
// so Float32 and Default compute the same; Float32 is accepted for parity.
enum class ComputeMode { Default, Float32 };

class BatchNormOptions {
public:
    // The framework's defaults: momentum 0.1 (PyTorch, OneFlow) or 0.9 (MegEngine), eps 1e-5.
    static BatchNormOptions pytorch(int64_t num_features) { return {num_features, Convention::PyTorch}; }
    static BatchNormOptions megengine(int64_t num_features) { return {num_features, Convention::MegEngine}; }
    static BatchNormOptions oneflow(int64_t num_features) { return {num_features, Convention::OneFlow}; }
    BatchNormOptions(int64_t num_features, Convention convention = Convention::PyTorch);

#define BNFORGE_OPTION(type, name)                       \
    BatchNormOptions& name(type value) {                 \
        name##_ = std::move(value);                      \
        return *this;                                    \
    }                                                    \
    const type& name() const { return name##_; }

    BNFORGE_OPTION(double, eps)
    // std::nullopt = cumulative moving average (PyTorch only). The meaning of
    // the number follows the convention: PyTorch/OneFlow weight the batch
    // statistic by it, MegEngine weights the running statistic.
    BNFORGE_OPTION(std::optional<double>, momentum)
    BNFORGE_OPTION(bool, affine)
    BNFORGE_OPTION(bool, track_running_stats)
    // MegEngine: training forward uses the running statistics, updates nothing, no dγ/dβ.
    BNFORGE_OPTION(bool, freeze)
    BNFORGE_OPTION(ComputeMode, compute_mode)
    BNFORGE_OPTION(Device, device)
    // Layout and element type the module's inputs must have.
    BNFORGE_OPTION(Layout, layout)
    BNFORGE_OPTION(DType, dtype)
#undef BNFORGE_OPTION

    int64_t num_features() const { return num_features_; }
    Convention convention() const { return convention_; }

private:
    int64_t num_features_;
    Convention convention_;
    double eps_ = 1e-5;
    std::optional<double> momentum_;
    bool affine_ = true;
    bool track_running_stats_ = true;
    bool freeze_ = false;
    ComputeMode compute_mode_ = ComputeMode::Default;
    Device device_ = Device::cpu();
    Layout layout_ = Layout::NCHW;
    DType dtype_ = DType::Float32;
};

}  // namespace bnforge
