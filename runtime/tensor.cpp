// bnforge::Tensor: storage ownership, strides, DLPack exchange and the
// element-wise helpers (copy_, fill_, item) used by modules, tests and tools.
#include <bnforge/runtime.h>
#include <bnforge/tensor.h>

#include "block_cache.h"
#include "device.h"

#include <dlpack/dlpack.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>

namespace bnforge {

// The bytes behind one or more Tensor handles. `release` runs exactly once,
// when the last handle goes away; borrowed memory (from_blob) has none.
struct Tensor::Storage {
    void* ptr = nullptr;
    void (*release)(void* ptr, void* context) = nullptr;
    void* context = nullptr;
    Device device;

    Storage() = default;
    Storage(const Storage&) = delete;
    Storage& operator=(const Storage&) = delete;
    ~Storage() {
        if (release) release(ptr, context);
    }
};

namespace {

[[noreturn]] void fail(const std::string& message) { throw Error(message); }

std::string shape_str(const std::vector<int64_t>& shape) {
    std::string s = "(";
    for (size_t i = 0; i < shape.size(); ++i) {
        if (i) s += ", ";
        s += std::to_string(shape[i]);
    }
    return s + (shape.size() == 1 ? ",)" : ")");
}

// The one place that knows which devices this build can hold memory on: the
// CPU, and each GPU API the build has kernels for.
void check_device_supported(Device device, const char* who) {
    if (!detail::device_supported(device))
        fail(std::string(who) + ": device " + device.str() + " is not supported by this build (no kernels for it)");
}

uint64_t device_handle(const void* data) { return reinterpret_cast<uint64_t>(data); }

std::atomic<bool> g_poison_allocations{false};

struct Allocation {
    void* ptr = nullptr;
    void (*release)(void* ptr, void* context) = nullptr;
    void* context = nullptr;
};

constexpr size_t kAlignment = 64;  // a cache line, and enough for any SIMD width Halide emits on CPU

// Device memory, poisoned like host memory when asked (through a host copy:
// poisoning is a testing aid, not a fast path).
Allocation allocate_device_bytes(size_t nbytes, Device device) {
    const size_t rounded = std::max<size_t>(kAlignment, (nbytes + kAlignment - 1) / kAlignment * kAlignment);
    const uint64_t handle = detail::device_malloc(device, rounded);
    if (g_poison_allocations.load(std::memory_order_relaxed)) {
        std::vector<unsigned char> poison(rounded, 0xFF);
        try {
            detail::copy_to_device(device, handle, poison.data(), rounded);
        } catch (const Error&) {
            detail::device_free(device, handle, rounded);
            throw;
        }
    }
    // The block's size and device travel in a heap context for the release.
    struct Block {
        Device device;
        size_t bytes;
    };
    return {reinterpret_cast<void*>(handle),
            [](void* p, void* context) {
                auto* block = static_cast<Block*>(context);
                detail::device_free(block->device, device_handle(p), block->bytes);
                delete block;
            },
            new Block{device, rounded}};
}

Allocation allocate_bytes(size_t nbytes, Device device, const char* who) {
    check_device_supported(device, who);
    if (!device.is_cpu()) return allocate_device_bytes(nbytes, device);
    // aligned_alloc needs a size that is a multiple of the alignment; an empty
    // tensor still gets a real (non-null) block so its data pointer is usable.
    const size_t rounded = std::max<size_t>(kAlignment, (nbytes + kAlignment - 1) / kAlignment * kAlignment);
    void* ptr = detail::take_cached_block(rounded);
    if (!ptr) ptr = std::aligned_alloc(kAlignment, rounded);
    if (!ptr) fail(std::string(who) + ": out of memory allocating " + std::to_string(nbytes) + " bytes");
    if (g_poison_allocations.load(std::memory_order_relaxed)) std::memset(ptr, 0xFF, rounded);
    // The size travels in the context pointer, so the release knows the block's cache key.
    return {ptr, [](void* p, void* size) { detail::return_block(p, reinterpret_cast<size_t>(size)); },
            reinterpret_cast<void*>(rounded)};
}

// Validates a shape and returns its element count. Zero extents count as 1 in
// the overflow check because dense strides treat them so (see
// contiguous_strides), and those strides must be representable too.
int64_t checked_numel(const std::vector<int64_t>& shape, DType dtype, const char* who) {
    for (size_t d = 0; d < shape.size(); ++d) {
        if (shape[d] < 0)
            fail(std::string(who) + ": shape[" + std::to_string(d) + "] = " + std::to_string(shape[d]) +
                 ", expected >= 0");
    }
    int64_t bytes = static_cast<int64_t>(element_size(dtype));
    bool empty = false;
    for (int64_t extent : shape) {
        empty = empty || extent == 0;
        if (__builtin_mul_overflow(bytes, std::max<int64_t>(extent, 1), &bytes))
            fail(std::string(who) + ": shape " + shape_str(shape) + " is too large (byte size overflows int64)");
    }
    return empty ? 0 : bytes / static_cast<int64_t>(element_size(dtype));
}

void check_strides(const std::vector<int64_t>& shape, const std::vector<int64_t>& strides, DType dtype,
                   const char* who) {
    if (strides.size() != shape.size())
        fail(std::string(who) + ": strides has " + std::to_string(strides.size()) + " entries, expected " +
             std::to_string(shape.size()) + " (one per dimension of shape " + shape_str(shape) + ")");
    for (size_t d = 0; d < strides.size(); ++d) {
        if (strides[d] < 0)
            fail(std::string(who) + ": strides[" + std::to_string(d) + "] = " + std::to_string(strides[d]) +
                 ", expected >= 0");
    }
    // The furthest element must be addressable without overflowing a byte offset.
    int64_t last = 0;
    for (size_t d = 0; d < shape.size(); ++d) {
        if (shape[d] == 0) return;
        int64_t step = 0;
        if (__builtin_mul_overflow(shape[d] - 1, strides[d], &step) || __builtin_add_overflow(last, step, &last))
            fail(std::string(who) + ": strides of shape " + shape_str(shape) + " overflow int64");
    }
    int64_t bytes = 0;
    if (__builtin_add_overflow(last, 1, &last) || __builtin_mul_overflow(last, static_cast<int64_t>(element_size(dtype)), &bytes))
        fail(std::string(who) + ": strides of shape " + shape_str(shape) + " overflow int64");
}

// Channels-last when the channel dimension is the innermost one in memory;
// for C == 1 the two layouts coincide and NCHW is the canonical answer.
Layout infer_layout(const std::vector<int64_t>& shape, const std::vector<int64_t>& strides) {
    if (shape.size() >= 3 && shape[1] > 1 && strides[1] == 1) return Layout::NHWC;
    return Layout::NCHW;
}

// The logical dimension at position `i` (0 = outermost) of `layout`'s memory
// order. (Computed, not listed: contiguity checks run on every call.)
size_t memory_dim(size_t i, size_t rank, Layout layout) {
    if (layout != Layout::NHWC || rank < 3) return i;
    if (i == 0) return 0;
    return i == rank - 1 ? 1 : i + 1;
}

// Whether addressing with `strides` reaches the same bytes as the dense
// strides of `layout`. Extent-1 dimensions are never stepped over, so their
// strides do not matter (as in PyTorch).
bool dense_in(const std::vector<int64_t>& shape, const std::vector<int64_t>& strides, Layout layout) {
    for (int64_t extent : shape)
        if (extent == 0) return true;
    int64_t running = 1;
    for (size_t i = shape.size(); i-- > 0;) {
        const size_t d = memory_dim(i, shape.size(), layout);
        if (shape[d] != 1 && strides[d] != running) return false;
        // Past int64 no tensor is dense (contiguous_strides refuses such shapes).
        if (__builtin_mul_overflow(running, shape[d], &running)) return i == 0;
    }
    return true;
}

// ---- element conversion -------------------------------------------------

template <class T> double to_double(T v) { return static_cast<double>(static_cast<float>(v)); }
template <> double to_double<float>(float v) { return v; }
template <> double to_double<int64_t>(int64_t v) { return static_cast<double>(v); }
template <> double to_double<uint8_t>(uint8_t v) { return v; }
template <> double to_double<double>(double v) { return v; }

// Float to integer casts are undefined outside the target range, so NaN maps
// to 0 and out-of-range values saturate; in range they truncate toward zero.
int64_t saturate_to_int64(double v) {
    if (std::isnan(v)) return 0;
    constexpr double kTwo63 = 9223372036854775808.0;
    if (v >= kTwo63) return std::numeric_limits<int64_t>::max();
    if (v < -kTwo63) return std::numeric_limits<int64_t>::min();
    return static_cast<int64_t>(v);
}

uint8_t saturate_to_uint8(double v) {
    if (std::isnan(v) || v <= 0) return 0;
    if (v >= 255) return 255;
    return static_cast<uint8_t>(v);
}

template <class T> T from_double(double v) { return T(static_cast<float>(v)); }
template <> float from_double<float>(double v) { return static_cast<float>(v); }
template <> int64_t from_double<int64_t>(double v) { return saturate_to_int64(v); }
template <> uint8_t from_double<uint8_t>(double v) { return saturate_to_uint8(v); }
template <> double from_double<double>(double v) { return v; }

template <class Dst, class Src> Dst convert(Src v) {
    if constexpr (std::is_same_v<Dst, Src>) {
        return v;
    } else if constexpr (std::is_same_v<Src, float> && !std::is_integral_v<Dst>) {
        return Dst(v);  // direct: one rounding step instead of going through double
    } else {
        return from_double<Dst>(to_double(v));
    }
}

template <class T> struct Tag { using type = T; };

template <class F> void dispatch(DType dtype, F&& f) {
    switch (dtype) {
        case DType::Float32: f(Tag<float>{}); return;
        case DType::Float16: f(Tag<Half>{}); return;
        case DType::BFloat16: f(Tag<BFloat16>{}); return;
        case DType::Int64: f(Tag<int64_t>{}); return;
        case DType::UInt8: f(Tag<uint8_t>{}); return;
        case DType::Float64: f(Tag<double>{}); return;
    }
    fail("bnforge: invalid DType value " + std::to_string(static_cast<int>(dtype)));
}

// Calls row(dst_offset, src_offset, n, dst_step, src_step) for every row of
// the innermost dimension, offsets in elements. A scalar is one row of one.
template <class Row>
void for_each_row(const std::vector<int64_t>& shape, const std::vector<int64_t>& dst_strides,
                  const std::vector<int64_t>& src_strides, Row&& row) {
    for (int64_t extent : shape)
        if (extent == 0) return;
    if (shape.empty()) {
        row(int64_t{0}, int64_t{0}, int64_t{1}, int64_t{0}, int64_t{0});
        return;
    }
    const size_t inner = shape.size() - 1;
    std::vector<int64_t> index(shape.size(), 0);
    int64_t dst_offset = 0, src_offset = 0;
    while (true) {
        row(dst_offset, src_offset, shape[inner], dst_strides[inner], src_strides[inner]);
        // Odometer over the outer dimensions, keeping both offsets incremental.
        size_t d = inner;
        while (d > 0) {
            --d;
            if (++index[d] < shape[d]) {
                dst_offset += dst_strides[d];
                src_offset += src_strides[d];
                break;
            }
            dst_offset -= (shape[d] - 1) * dst_strides[d];
            src_offset -= (shape[d] - 1) * src_strides[d];
            index[d] = 0;
            if (d == 0) return;
        }
        if (inner == 0) return;
    }
}

// Byte range [begin, end) that the elements of a (non-empty) view touch.
std::pair<const char*, const char*> byte_span(const void* data, const std::vector<int64_t>& shape,
                                              const std::vector<int64_t>& strides, DType dtype) {
    int64_t last = 0;
    for (size_t d = 0; d < shape.size(); ++d) last += (shape[d] - 1) * strides[d];
    const char* begin = static_cast<const char*>(data);
    return {begin, begin + (last + 1) * static_cast<int64_t>(element_size(dtype))};
}

int64_t element_offset(const std::vector<int64_t>& shape, const std::vector<int64_t>& strides,
                       const std::vector<int64_t>& index, const char* who) {
    if (index.size() != shape.size())
        fail(std::string(who) + ": index has " + std::to_string(index.size()) + " entries, expected " +
             std::to_string(shape.size()) + " for shape " + shape_str(shape));
    int64_t offset = 0;
    for (size_t d = 0; d < shape.size(); ++d) {
        if (index[d] < 0 || index[d] >= shape[d])
            fail(std::string(who) + ": index[" + std::to_string(d) + "] = " + std::to_string(index[d]) +
                 ", expected 0 <= index < " + std::to_string(shape[d]) + " for shape " + shape_str(shape));
        offset += index[d] * strides[d];
    }
    return offset;
}

// `d` as an index into a shape of `rank` dims, counting negative dims from the end.
size_t checked_dim(int64_t d, int64_t rank, const char* who) {
    if (d < -rank || d >= rank)
        fail(std::string(who) + ": dim " + std::to_string(d) + " is out of range for a tensor of rank " +
             std::to_string(rank) + " (expected " + std::to_string(-rank) + " <= dim < " + std::to_string(rank) + ")");
    return static_cast<size_t>(d < 0 ? d + rank : d);
}

void check_defined(bool defined, const char* who) {
    if (!defined) fail(std::string(who) + ": tensor is undefined");
}

// ---- DLPack ----------------------------------------------------------------

bool dtype_from_dlpack(DLDataType t, DType* out) {
    if (t.lanes != 1) return false;
    if (t.code == kDLFloat && t.bits == 32) *out = DType::Float32;
    else if (t.code == kDLFloat && t.bits == 16) *out = DType::Float16;
    else if (t.code == kDLBfloat && t.bits == 16) *out = DType::BFloat16;
    else if (t.code == kDLInt && t.bits == 64) *out = DType::Int64;
    else if (t.code == kDLUInt && t.bits == 8) *out = DType::UInt8;
    else return false;
    return true;
}

DLDataType dtype_to_dlpack(DType dtype) {
    switch (dtype) {
        case DType::Float32: return {kDLFloat, 32, 1};
        case DType::Float16: return {kDLFloat, 16, 1};
        case DType::BFloat16: return {kDLBfloat, 16, 1};
        case DType::Int64: return {kDLInt, 64, 1};
        case DType::UInt8: return {kDLUInt, 8, 1};
        case DType::Float64: fail("to_dlpack: float64 tensors are bnforge's per-channel internals, not exported");
    }
    fail("to_dlpack: invalid DType value " + std::to_string(static_cast<int>(dtype)));
}

// Host-visible memory only: pinned host memory is ordinary CPU memory to us.
// The device type is read as the integer a producer wrote: a value this
// dlpack.h does not list (a newer DLPack's device) is no DLDeviceType here.
Device device_from_dlpack(const DLDevice& device) {
    int32_t type = 0;
    static_assert(sizeof(device.device_type) == sizeof(type));
    std::memcpy(&type, &device.device_type, sizeof type);
    switch (type) {
        case kDLCPU:
        case kDLCUDAHost: return Device::cpu();
        case kDLCUDA: {
            if (device.device_id < 0)
                fail("from_dlpack: device_id " + std::to_string(device.device_id) + " is negative");
            const Device cuda = Device::cuda(device.device_id);
            check_device_supported(cuda, "from_dlpack");
            return cuda;
        }
        default:
            fail("from_dlpack: device_type " + std::to_string(type) +
                 " is not supported, expected kDLCPU (1), kDLCUDA (2) or kDLCUDAHost (3)");
    }
}

// Owns what the exported DLManagedTensor points at: a handle keeping the
// storage alive and the shape/strides arrays.
struct DLPackExport {
    Tensor tensor;
    std::vector<int64_t> shape;
    std::vector<int64_t> strides;
    DLManagedTensor managed{};
};

}  // namespace

namespace detail {

bool memory_overlaps(const Tensor& a, const Tensor& b) {
    if (!a.defined() || !b.defined() || a.numel() == 0 || b.numel() == 0 || a.device() != b.device()) return false;
    if (a.device().kind == Device::Kind::OpenCL) return a.same_storage(b);
    const auto sa = byte_span(a.raw_data(), a.shape(), a.strides(), a.dtype());
    const auto sb = byte_span(b.raw_data(), b.shape(), b.strides(), b.dtype());
    return sa.first < sb.second && sb.first < sa.second;
}

}  // namespace detail

// ---- construction ---------------------------------------------------------

std::vector<int64_t> contiguous_strides(const std::vector<int64_t>& shape, Layout layout) {
    std::vector<int64_t> strides(shape.size(), 0);
    int64_t running = 1;
    // Zero extents count as 1 so the strides stay meaningful (as PyTorch does).
    for (size_t i = shape.size(); i-- > 0;) {
        const size_t d = memory_dim(i, shape.size(), layout);
        strides[d] = running;
        if (i > 0 && __builtin_mul_overflow(running, std::max<int64_t>(shape[d], 1), &running))
            fail("contiguous_strides: shape " + shape_str(shape) + " is too large (strides overflow int64)");
    }
    return strides;
}

Tensor Tensor::empty(std::vector<int64_t> shape, DType dtype, Device device, Layout layout) {
    const int64_t numel = checked_numel(shape, dtype, "Tensor::empty");
    // The storage exists before the block so that nothing can throw between
    // allocating the block and handing it to its owner.
    auto storage = std::make_shared<Storage>();
    const Allocation block = allocate_bytes(static_cast<size_t>(numel) * element_size(dtype), device, "Tensor::empty");
    storage->ptr = block.ptr;
    storage->release = block.release;
    storage->context = block.context;
    storage->device = device;

    Tensor t;
    t.strides_ = contiguous_strides(shape, layout);
    t.shape_ = std::move(shape);
    t.storage_ = std::move(storage);
    t.data_ = block.ptr;
    t.dtype_ = dtype;
    t.device_ = device;
    t.layout_ = layout;
    return t;
}

Tensor Tensor::from_blob(void* data, std::vector<int64_t> shape, DType dtype, Device device, Layout layout) {
    std::vector<int64_t> strides = contiguous_strides(shape, layout);
    Tensor t = from_blob_strided(data, std::move(shape), std::move(strides), dtype, device);
    t.layout_ = layout;  // C == 1 cannot be told apart by strides; the caller's word wins
    return t;
}

Tensor Tensor::from_blob_strided(void* data, std::vector<int64_t> shape, std::vector<int64_t> strides, DType dtype,
                                 Device device) {
    check_device_supported(device, "from_blob");
    const int64_t numel = checked_numel(shape, dtype, "from_blob");
    check_strides(shape, strides, dtype, "from_blob");
    if (!data && numel > 0)
        fail("from_blob: data is null for shape " + shape_str(shape) + " (" + std::to_string(numel) +
             " elements), expected a valid pointer");

    auto storage = std::make_shared<Storage>();
    storage->ptr = data;
    storage->device = device;

    Tensor t;
    t.layout_ = infer_layout(shape, strides);
    t.shape_ = std::move(shape);
    t.strides_ = std::move(strides);
    t.storage_ = std::move(storage);
    t.data_ = data;
    t.dtype_ = dtype;
    t.device_ = device;
    return t;
}

Tensor Tensor::from_dlpack(DLManagedTensor* managed) {
    if (!managed) fail("from_dlpack: managed tensor is null");
    const DLTensor& dl = managed->dl_tensor;
    const Device device = device_from_dlpack(dl.device);
    DType dtype;
    if (!dtype_from_dlpack(dl.dtype, &dtype))
        fail("from_dlpack: dtype (code " + std::to_string(dl.dtype.code) + ", bits " + std::to_string(dl.dtype.bits) +
             ", lanes " + std::to_string(dl.dtype.lanes) +
             ") is not supported, expected float32, float16, bfloat16, int64 or uint8 with lanes 1");
    if (dl.ndim < 0) fail("from_dlpack: ndim = " + std::to_string(dl.ndim) + ", expected >= 0");
    if (dl.ndim > 0 && !dl.shape) fail("from_dlpack: shape is null for ndim " + std::to_string(dl.ndim));

    std::vector<int64_t> shape(dl.shape, dl.shape + dl.ndim);
    const int64_t numel = checked_numel(shape, dtype, "from_dlpack");
    std::vector<int64_t> strides =
        dl.strides ? std::vector<int64_t>(dl.strides, dl.strides + dl.ndim) : contiguous_strides(shape, Layout::NCHW);
    check_strides(shape, strides, dtype, "from_dlpack");
    if (!dl.data && numel > 0) fail("from_dlpack: data is null for shape " + shape_str(shape));
    // The view starts byte_offset bytes past data: that address must exist
    // (computing it as a pointer past the address space is undefined).
    uint64_t start = 0;
    if (dl.byte_offset > static_cast<uint64_t>(INT64_MAX) ||
        __builtin_add_overflow(static_cast<uint64_t>(reinterpret_cast<uintptr_t>(dl.data)), dl.byte_offset, &start))
        fail("from_dlpack: byte_offset " + std::to_string(dl.byte_offset) + " puts the data past the address space");

    // Ownership transfers only once nothing can throw any more, so a caller
    // whose import failed still owns `managed` and must release it itself.
    auto storage = std::make_shared<Storage>();
    storage->ptr = dl.data;
    storage->device = device;
    storage->context = managed;
    storage->release = [](void*, void* context) {
        auto* m = static_cast<DLManagedTensor*>(context);
        if (m->deleter) m->deleter(m);
    };

    Tensor t;
    t.layout_ = infer_layout(shape, strides);
    t.data_ = reinterpret_cast<void*>(static_cast<uintptr_t>(start));
    t.shape_ = std::move(shape);
    t.strides_ = std::move(strides);
    t.storage_ = std::move(storage);
    t.dtype_ = dtype;
    t.device_ = device;
    return t;
}

DLManagedTensor* Tensor::to_dlpack() const {
    check_defined(defined(), "to_dlpack");
    const DLDataType dtype = dtype_to_dlpack(dtype_);
    auto* ctx = new DLPackExport{*this, shape_, strides_, {}};
    DLTensor& dl = ctx->managed.dl_tensor;
    dl.data = data_;
    if (device_.kind == Device::Kind::OpenCL) fail("to_dlpack: OpenCL tensors hold Halide handles, not DLPack memory");
    dl.device = {device_.is_cuda() ? kDLCUDA : kDLCPU, device_.index};
    dl.ndim = static_cast<int>(shape_.size());
    dl.dtype = dtype;
    dl.shape = ctx->shape.data();
    dl.strides = ctx->strides.data();
    dl.byte_offset = 0;
    ctx->managed.manager_ctx = ctx;
    ctx->managed.deleter = [](DLManagedTensor* self) { delete static_cast<DLPackExport*>(self->manager_ctx); };
    return &ctx->managed;
}

// ---- queries -----------------------------------------------------------------

int64_t Tensor::size(int64_t d) const { return shape_[checked_dim(d, dim(), "Tensor::size")]; }

int64_t Tensor::numel() const {
    if (!defined()) return 0;
    int64_t n = 1;
    for (int64_t extent : shape_) n *= extent;
    return n;
}

bool Tensor::is_contiguous() const { return defined() && dense_in(shape_, strides_, layout_); }

Tensor Tensor::select(int64_t d, int64_t index) const {
    check_defined(defined(), "Tensor::select");
    const size_t k = checked_dim(d, dim(), "Tensor::select");
    if (index < -shape_[k] || index >= shape_[k])
        fail("Tensor::select: index " + std::to_string(index) + " is out of range for dim " + std::to_string(d) +
             " of size " + std::to_string(shape_[k]));
    if (device_.kind == Device::Kind::OpenCL) fail("Tensor::select: not supported for OpenCL tensors");
    if (index < 0) index += shape_[k];
    Tensor view = *this;
    view.data_ = static_cast<char*>(data_) + index * strides_[k] * static_cast<int64_t>(element_size(dtype_));
    view.shape_.erase(view.shape_.begin() + static_cast<std::ptrdiff_t>(k));
    view.strides_.erase(view.strides_.begin() + static_cast<std::ptrdiff_t>(k));
    view.layout_ = infer_layout(view.shape_, view.strides_);
    return view;
}

void Tensor::check_dtype(DType requested) const {
    if (defined() && requested == dtype_) return;  // (the message is built only for an error)
    const std::string who = std::string("Tensor::data<") + to_string(requested) + ">";
    check_defined(defined(), who.c_str());
    fail(who + ": tensor has dtype " + to_string(dtype_));
}

// ---- copies ------------------------------------------------------------------

Tensor Tensor::to(Device device) const {
    check_defined(defined(), "Tensor::to");
    if (device == device_) return *this;
    check_device_supported(device, "Tensor::to");
    Tensor out = empty(shape_, dtype_, device, layout_);
    out.copy_(*this);
    return out;
}

Tensor Tensor::clone() const {
    check_defined(defined(), "Tensor::clone");
    Tensor out = empty(shape_, dtype_, device_, layout_);
    out.copy_(*this);
    return out;
}

Tensor Tensor::contiguous(Layout layout) const {
    check_defined(defined(), "Tensor::contiguous");
    if (dense_in(shape_, strides_, layout)) {
        // Same bytes, so share them; canonical strides let kernels that demand
        // e.g. a unit channel stride accept an extent-1 dimension too.
        Tensor alias = *this;
        alias.layout_ = layout;
        alias.strides_ = contiguous_strides(shape_, layout);
        return alias;
    }
    Tensor out = empty(shape_, dtype_, device_, layout);
    out.copy_(*this);
    return out;
}

void Tensor::copy_(const Tensor& src) {
    check_defined(defined(), "Tensor::copy_ (destination)");
    check_defined(src.defined(), "Tensor::copy_ (source)");
    if (src.shape_ != shape_)
        fail("Tensor::copy_: source shape " + shape_str(src.shape_) + " does not match destination shape " +
             shape_str(shape_));
    if (numel() == 0) return;
    if (!device_.is_cpu() || !src.device_.is_cpu()) {
        copy_across_devices(src);
        return;
    }

    // Reading and writing overlapping memory element by element could read
    // already-overwritten values; go through a private copy of the source.
    const bool identical = data_ == src.data_ && strides_ == src.strides_ && dtype_ == src.dtype_;
    if (identical) return;
    if (detail::memory_overlaps(*this, src)) {
        Tensor staged = empty(src.shape_, src.dtype_, src.device_, src.layout_);
        staged.copy_(src);
        copy_(staged);
        return;
    }

    if (dtype_ == src.dtype_ && strides_ == src.strides_ && dense_in(shape_, strides_, layout_)) {
        std::memcpy(data_, src.data_, nbytes());
        return;
    }
    void* dst_data = data_;
    const void* src_data = src.data_;
    dispatch(dtype_, [&](auto dst_tag) {
        using Dst = typename decltype(dst_tag)::type;
        dispatch(src.dtype_, [&](auto src_tag) {
            using Src = typename decltype(src_tag)::type;
            Dst* d = static_cast<Dst*>(dst_data);
            const Src* s = static_cast<const Src*>(src_data);
            for_each_row(shape_, strides_, src.strides_,
                         [&](int64_t doff, int64_t soff, int64_t n, int64_t dstep, int64_t sstep) {
                             for (int64_t i = 0; i < n; ++i) d[doff + i * dstep] = convert<Dst>(s[soff + i * sstep]);
                         });
        });
    });
}

// Device memory moves as whole dense blocks; any conversion or restriding
// happens on the host, in a staging copy.
void Tensor::copy_across_devices(const Tensor& src) {
    auto check_dense = [](const Tensor& t, const char* which) {
        if (!t.device_.is_cpu() && !dense_in(t.shape_, t.strides_, t.layout_))
            fail(std::string("Tensor::copy_: the ") + which + " on " + t.device_.str() +
                 " must be dense (device copies move whole blocks)");
    };
    check_dense(*this, "destination");
    check_dense(src, "source");
    const bool same_bytes = dtype_ == src.dtype_ && layout_ == src.layout_ && dense_in(shape_, strides_, layout_) &&
                            dense_in(src.shape_, src.strides_, src.layout_);
    if (same_bytes && device_ == src.device_) {
        detail::copy_within_device(device_, device_handle(data_), device_handle(src.data_), nbytes());
    } else if (same_bytes && src.device_.is_cpu()) {
        detail::copy_to_device(device_, device_handle(data_), src.data_, nbytes());
    } else if (same_bytes && device_.is_cpu()) {
        detail::copy_to_host(src.device_, data_, device_handle(src.data_), nbytes());
    } else if (!src.device_.is_cpu()) {
        Tensor staged = empty(src.shape_, src.dtype_, Device::cpu(), src.layout_);
        staged.copy_(src);
        copy_(staged);
    } else {
        Tensor staged = empty(shape_, dtype_, Device::cpu(), layout_);
        staged.copy_(src);
        copy_(staged);
    }
}

void Tensor::fill_(double value) {
    check_defined(defined(), "Tensor::fill_");
    if (!device_.is_cpu()) {
        Tensor staged = empty(shape_, dtype_, Device::cpu(), layout_);
        staged.fill_(value);
        copy_(staged);
        return;
    }
    void* dst_data = data_;
    dispatch(dtype_, [&](auto tag) {
        using T = typename decltype(tag)::type;
        const T v = from_double<T>(value);
        T* d = static_cast<T*>(dst_data);
        for_each_row(shape_, strides_, strides_, [&](int64_t doff, int64_t, int64_t n, int64_t dstep, int64_t) {
            for (int64_t i = 0; i < n; ++i) d[doff + i * dstep] = v;
        });
    });
}

double Tensor::item(const std::vector<int64_t>& index) const {
    check_defined(defined(), "Tensor::item");
    if (!device_.is_cpu()) return to(Device::cpu()).item(index);  // a whole copy: for tests and tools
    const int64_t offset = element_offset(shape_, strides_, index, "Tensor::item");
    double result = 0;
    dispatch(dtype_, [&](auto tag) {
        using T = typename decltype(tag)::type;
        result = to_double(static_cast<const T*>(data_)[offset]);
    });
    return result;
}

void Tensor::set_item(const std::vector<int64_t>& index, double value) {
    check_defined(defined(), "Tensor::set_item");
    if (!device_.is_cpu()) {
        Tensor staged = to(Device::cpu());
        staged.set_item(index, value);
        copy_(staged);
        return;
    }
    const int64_t offset = element_offset(shape_, strides_, index, "Tensor::set_item");
    dispatch(dtype_, [&](auto tag) {
        using T = typename decltype(tag)::type;
        static_cast<T*>(data_)[offset] = from_double<T>(value);
    });
}

void poison_new_tensors(bool on) { g_poison_allocations.store(on, std::memory_order_relaxed); }

}  // namespace bnforge
