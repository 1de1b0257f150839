#include "channel_values.h"

#include "check.h"

namespace bnforge::detail {

std::string format_shape(const std::vector<int64_t>& shape) {
    std::string s = "(";
    for (size_t i = 0; i < shape.size(); i++) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + (shape.size() == 1 ? ",)" : ")");
}

namespace {

// Logical index of the c-th channel value: the only non-unit dimension.
std::vector<int64_t> channel_index(const Tensor& t, int64_t c) {
    std::vector<int64_t> index(t.dim(), 0);
    for (int64_t d = 0; d < t.dim(); d++) {
        if (t.shape()[d] != 1) {
            index[d] = c;
            break;
        }
    }
    return index;
}

}  // namespace

std::vector<double> channel_values(const Tensor& t, int64_t channels, double fallback, const char* arg) {
    if (!t.defined()) return std::vector<double>(channels, fallback);
    BNF_CHECK(t.numel() == channels, arg << ": expected " << channels << " values (one per channel), got shape "
                                         << format_shape(t.shape()));
    // Per-channel parameters of a module on a GPU live there; the float64
    // per-channel arithmetic reads a host copy of their C values.
    if (!t.device().is_cpu()) return channel_values(t.to(Device::cpu()), channels, fallback, arg);
    std::vector<double> v(channels);
    if (t.dtype() == DType::Float32 && t.is_contiguous()) {
        const float* p = t.data<float>();
        for (int64_t c = 0; c < channels; c++) v[c] = p[c];
    } else {
        for (int64_t c = 0; c < channels; c++) v[c] = t.item(channel_index(t, c));
    }
    return v;
}

void set_channel_values(Tensor& t, const std::vector<double>& values) {
    const int64_t channels = static_cast<int64_t>(values.size());
    BNF_ASSERT(t.numel() == channels, channels << " values for a tensor of shape " << format_shape(t.shape()));
    if (!t.device().is_cpu()) {
        Tensor staged = t.to(Device::cpu());
        set_channel_values(staged, values);
        t.copy_(staged);
        return;
    }
    for (int64_t c = 0; c < channels; c++) t.set_item(channel_index(t, c), values[c]);
}

}  // namespace bnforge::detail
