// Strided views (Tensor::from_blob_strided) and what the library does with
// them: arbitrary shapes and strides (zero, huge, overlapping, negative),
// dtypes and layouts. A view is either refused with bnforge::Error or, when
// its span is small enough for the harness to lend a buffer of exactly that
// span, read in full, copied densely in both layouts, and — a 4-D float view —
// normalized by an eval and a training forward (every kernel read lands in
// the buffer; ASan checks).
#include "fuzz_util.h"

#include <fuzzer/FuzzedDataProvider.h>

namespace {

int64_t fuzzed_value(FuzzedDataProvider& in) {
    switch (in.ConsumeIntegralInRange(0, 11)) {
        case 0: return in.ConsumeIntegral<int64_t>();
        case 1: return int64_t{1} << in.ConsumeIntegralInRange(31, 62);
        case 2: return -in.ConsumeIntegralInRange<int64_t>(1, 3);
        default: return in.ConsumeIntegralInRange<int64_t>(0, 7);
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace bnforge;
    FuzzedDataProvider in(data, size);
    const int dims = in.ConsumeIntegralInRange(0, 5);
    std::vector<int64_t> shape(dims), strides(in.ConsumeIntegralInRange(0, 12) == 0 ? dims + 1 : dims);
    for (int64_t& e : shape) e = fuzzed_value(in);
    for (int64_t& s : strides) s = fuzzed_value(in);
    const DType dtype = in.PickValueInArray({DType::Float32, DType::Float16, DType::BFloat16, DType::Int64, DType::UInt8});
    const int64_t esize = static_cast<int64_t>(element_size(dtype));

    // The span in elements, in 128 bits; a buffer of exactly that much when it is small.
    bool small = strides.size() == shape.size();
    __int128 last = 0;
    bool empty = false;
    for (size_t d = 0; d < shape.size() && small; d++) {
        small = shape[d] >= 0 && shape[d] <= (1 << 20) && strides[d] >= 0 && strides[d] <= (1 << 20);
        empty = empty || shape[d] == 0;
        if (small && shape[d] > 0) last += static_cast<__int128>(shape[d] - 1) * strides[d];
    }
    __int128 count = 1;
    for (size_t d = 0; d < shape.size() && small; d++) count *= shape[d];
    small = small && (empty || (last < (1 << 16) && count <= (1 << 16)));  // dense copies of it stay small too
    std::vector<uint8_t> buffer(small && !empty ? static_cast<size_t>((last + 1) * esize) : 1);
    for (size_t i = 0; i < buffer.size(); i++) buffer[i] = static_cast<uint8_t>(0x3c + (i % 7));  // finite in every float type

    try {
        const Tensor view = Tensor::from_blob_strided(buffer.data(), shape, strides, dtype, Device::cpu());
        if (!small) return 0;  // accepted, but the harness has no buffer of its span to lend
        fuzzutil::touch_elements(view);
        const Tensor nchw = view.contiguous(Layout::NCHW);
        const Tensor nhwc = view.dim() >= 3 ? view.contiguous(Layout::NHWC) : nchw;
        fuzzutil::touch_elements(nchw);
        fuzzutil::touch_elements(nhwc);
        if (view.dim() == 4 && dtype != DType::Int64 && dtype != DType::UInt8 && view.numel() > 0 && view.size(1) > 0) {
            BatchNorm2d bn(BatchNormOptions::pytorch(view.size(1)).dtype(dtype).layout(view.layout()));
            bn.eval();
            fuzzutil::touch_elements(bn.forward(view));
            bn.train();
            fuzzutil::touch_elements(bn.forward(view));
        }
    } catch (const Error&) {
    }
    return 0;
}
