// load_state_dict with arbitrary state: names (the module's own, prefixed,
// unknown, empty), shapes ((C,), PyTorch's; (1,C,1,1), MegEngine's; any
// other), dtypes, strided or undefined tensors, strict or not, on the three
// conventions' modules. Each call loads or throws bnforge::Error; after an
// Error the module's state is bit-identical to what it was (state_dict()
// before and after), and a module that loaded runs an eval and a training
// forward on its state.
#include "fuzz_util.h"

#include <fuzzer/FuzzedDataProvider.h>

#include <cstring>
#include <iterator>
#include <memory>

namespace {

using namespace bnforge;

// Every value of every tensor of a state dict, as raw bytes by name.
std::map<std::string, std::vector<uint8_t>> snapshot(const StateDict& sd) {
    std::map<std::string, std::vector<uint8_t>> out;
    for (const auto& [name, t] : sd) {
        const Tensor dense = t.contiguous(t.layout());
        const auto* p = static_cast<const uint8_t*>(dense.raw_data());
        out[name].assign(p, p + dense.nbytes());
    }
    return out;
}

Tensor fuzzed_tensor(FuzzedDataProvider& in, int64_t channels) {
    std::vector<int64_t> shape;
    switch (in.ConsumeIntegralInRange(0, 5)) {
        case 0: shape = {channels}; break;
        case 1: shape = {1, channels, 1, 1}; break;
        case 2: shape = {}; break;
        case 3: shape = {channels + in.ConsumeIntegralInRange<int64_t>(-1, 1)}; break;
        default: {
            shape.resize(in.ConsumeIntegralInRange(0, 4));
            for (int64_t& e : shape) e = in.ConsumeIntegralInRange<int64_t>(0, 9);
        }
    }
    const DType dtype = in.PickValueInArray({DType::Float32, DType::Float32, DType::Float16, DType::BFloat16,
                                             DType::Int64, DType::UInt8});
    Tensor t = Tensor::empty(shape, dtype);
    const std::vector<uint8_t> bytes = in.ConsumeBytes<uint8_t>(t.nbytes());
    if (!bytes.empty()) std::memcpy(t.raw_data(), bytes.data(), bytes.size());
    if (bytes.size() < t.nbytes()) std::memset(static_cast<uint8_t*>(t.raw_data()) + bytes.size(), 0x3c, t.nbytes() - bytes.size());
    if (in.ConsumeIntegralInRange(0, 9) == 0 && t.dim() == 4) t = t.contiguous(Layout::NHWC);  // same values, other strides
    return t;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    FuzzedDataProvider in(data, size);
    const int64_t channels = in.ConsumeIntegralInRange<int64_t>(1, 6);
    BatchNormOptions options = in.PickValueInArray({BatchNormOptions::pytorch(channels),
                                                    BatchNormOptions::megengine(channels),
                                                    BatchNormOptions::oneflow(channels)});
    options.affine(in.ConsumeIntegralInRange(0, 4) != 0).track_running_stats(in.ConsumeIntegralInRange(0, 4) != 0);
    std::unique_ptr<BatchNormBase> module;
    try {
        if (in.ConsumeBool())
            module = std::make_unique<BatchNorm2d>(options);
        else
            module = std::make_unique<FusedBatchNorm2d>(options);
    } catch (const Error&) {
        return 0;
    }
    static const char* names[] = {"weight", "bias", "running_mean", "running_var", "num_batches_tracked",
                                  "bn.weight", "module.running_var", "", "weight "};
    StateDict state = module->state_dict();  // the module's own, then edited
    const int edits = in.ConsumeIntegralInRange(0, 6);
    for (int e = 0; e < edits; e++) {
        const std::string name = in.ConsumeBool() ? names[in.ConsumeIntegralInRange<size_t>(0, std::size(names) - 1)]
                                                  : in.ConsumeRandomLengthString(10);
        switch (in.ConsumeIntegralInRange(0, 3)) {
            case 0: state.erase(name); break;
            case 1: state[name] = Tensor(); break;  // undefined
            default: state[name] = fuzzed_tensor(in, channels);
        }
    }
    const bool strict = in.ConsumeBool();
    const auto before = snapshot(module->state_dict());
    try {
        module->load_state_dict(state, strict);
    } catch (const Error&) {
        if (snapshot(module->state_dict()) != before) std::abort();  // a refused load changed the module
        return 0;
    }
    const std::vector<int64_t> shape = {2, channels, 3, 2};
    Tensor x = Tensor::empty(shape, DType::Float32);
    for (int64_t i = 0; i < x.numel(); i++) x.data<float>()[i] = static_cast<float>((i * 37) % 11) - 5.0f;
    auto forward = [&](const Tensor& input) {
        if (auto* plain = dynamic_cast<BatchNorm2d*>(module.get())) return plain->forward(input);
        return static_cast<FusedBatchNorm2d*>(module.get())->forward(input);
    };
    try {
        module->eval();
        fuzzutil::touch_elements(forward(x));
        module->train();
        fuzzutil::touch_elements(forward(x));
    } catch (const Error&) {
    }
    return 0;
}
