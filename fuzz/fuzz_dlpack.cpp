// Tensor::from_dlpack on arbitrary DLTensors: ndim, shape, strides (or none),
// dtype code/bits/lanes, device type and id, byte_offset, null data. An import
// either throws bnforge::Error with the deleter not run (ownership stays with
// the caller) or returns a tensor that releases the DLManagedTensor exactly
// once. When the span the DLTensor describes is small, the harness gives a
// buffer of exactly that span and reads every element of an accepted CPU
// tensor through its strides (ASan checks each byte).
#include "fuzz_util.h"

#include <dlpack/dlpack.h>
#include <fuzzer/FuzzedDataProvider.h>

#include <cstring>

namespace {

int g_deleted = 0;
void count_deletion(DLManagedTensor*) { g_deleted++; }

int64_t fuzzed_extent(FuzzedDataProvider& in) {
    switch (in.ConsumeIntegralInRange(0, 9)) {
        case 0: return in.ConsumeIntegral<int64_t>();
        case 1: return int64_t{1} << in.ConsumeIntegralInRange(30, 62);
        case 2: return -in.ConsumeIntegralInRange<int64_t>(1, 4);
        default: return in.ConsumeIntegralInRange<int64_t>(0, 12);
    }
}

// The bytes [lowest, highest] a strided view reaches, or false when they do
// not fit in 1 MiB (the harness then lends no real buffer and reads nothing).
bool small_span(const std::vector<int64_t>& shape, const std::vector<int64_t>& strides, int64_t esize,
                __int128* low, __int128* high) {
    __int128 lo = 0, hi = 0;
    for (size_t d = 0; d < shape.size(); d++) {
        if (shape[d] <= 0) return shape[d] == 0 && (*low = 0, *high = -1, true);
        if (shape[d] > (1 << 30) || strides[d] > (1 << 30) || strides[d] < -(1 << 30)) return false;
        const __int128 reach = static_cast<__int128>(shape[d] - 1) * strides[d] * esize;
        (reach < 0 ? lo : hi) += reach;
    }
    *low = lo;
    *high = hi + esize - 1;
    return *high - *low < (1 << 20);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    FuzzedDataProvider in(data, size);
    const int ndim = in.ConsumeIntegralInRange(-2, 6);
    std::vector<int64_t> shape(std::max(ndim, 0)), strides(std::max(ndim, 0));
    for (int64_t& e : shape) e = fuzzed_extent(in);
    const bool with_strides = in.ConsumeBool();
    for (int64_t& s : strides) s = in.ConsumeBool() ? fuzzed_extent(in) : in.ConsumeIntegralInRange<int64_t>(0, 64);
    DLDataType dtype;
    dtype.code = in.ConsumeIntegralInRange<uint8_t>(0, 6);
    dtype.bits = in.PickValueInArray<uint8_t>({8, 16, 32, 64, 0, 1, 128});
    dtype.lanes = in.PickValueInArray<uint16_t>({1, 1, 1, 2, 0, 4});
    DLDevice device;
    device.device_type = static_cast<DLDeviceType>(in.PickValueInArray<int>({kDLCPU, kDLCPU, kDLCUDAHost, kDLCUDA, kDLOpenCL, 0, 99}));
    device.device_id = in.ConsumeIntegralInRange<int32_t>(-1, 2);
    const uint64_t byte_offset = in.ConsumeBool() ? 0 : in.PickValueInArray<uint64_t>({1, 4, 64, uint64_t{1} << 40, ~uint64_t{0}});
    const bool null_data = in.ConsumeIntegralInRange(0, 15) == 0;

    // A real buffer of exactly the view's span when it is small (data points
    // at the first byte the view reaches), else a token pointer never read.
    const int64_t esize = std::max<int64_t>(dtype.bits / 8, 1);
    // Without strides the view is row-major; its strides computed here, in
    // 128 bits, so that the harness itself never overflows.
    bool sane = ndim >= 0 && byte_offset < 4096;
    std::vector<int64_t> effective = strides;
    if (!with_strides) {
        __int128 step = 1;
        for (size_t d = shape.size(); d-- > 0;) {
            sane = sane && shape[d] >= 0 && shape[d] < (int64_t{1} << 40) && step < (__int128{1} << 40);
            effective[d] = sane ? static_cast<int64_t>(step) : 0;
            if (sane) step *= std::max<int64_t>(shape[d], 1);
        }
    }
    for (int64_t e : shape) sane = sane && e >= 0;
    __int128 low = 0, high = -1;
    const bool readable = sane && small_span(shape, effective, esize, &low, &high);
    std::vector<uint8_t> buffer(readable ? static_cast<size_t>(high - low + 1 + byte_offset) : 1);
    for (size_t i = 0; i < buffer.size(); i++) buffer[i] = static_cast<uint8_t>(i * 131);

    DLManagedTensor managed{};
    managed.dl_tensor.data = null_data ? nullptr : buffer.data() - (readable ? static_cast<int64_t>(low) : 0);
    managed.dl_tensor.device = device;
    managed.dl_tensor.ndim = ndim;
    managed.dl_tensor.dtype = dtype;
    managed.dl_tensor.shape = ndim > 0 ? shape.data() : (ndim == 0 ? nullptr : shape.data());
    managed.dl_tensor.strides = with_strides && ndim > 0 ? strides.data() : nullptr;
    managed.dl_tensor.byte_offset = byte_offset;
    managed.deleter = count_deletion;

    g_deleted = 0;
    try {
        bnforge::Tensor t = bnforge::Tensor::from_dlpack(&managed);
        if (readable && !null_data && (t.device().is_cpu())) fuzzutil::touch_elements(t);
        t = bnforge::Tensor();
        if (g_deleted != 1) std::abort();  // an accepted import releases the producer's tensor once
    } catch (const bnforge::Error&) {
        if (g_deleted != 0) std::abort();  // a refused import leaves it with the caller
    }
    return 0;
}
