// Element types, the device a tensor lives on, and its memory layout.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace bnforge {

// Float16/BFloat16 are storage types for activations; parameters, statistics
// and accumulation are always float32 (or wider). Float64 holds the
// per-channel moments and sums that pass between kernels, Int64 the
// num_batches_tracked buffer of state dicts, UInt8 the fused ops' ReLU bitmasks.
enum class DType { Float32, Float16, BFloat16, Int64, UInt8, Float64 };

size_t element_size(DType);
const char* to_string(DType);

// Logical shape is always (N, C, spatial...); the layout says how it sits in
// memory: NCHW is channel-major, NHWC is channels-last (NLC / NDHWC for other ranks).
enum class Layout { NCHW, NHWC };
const char* to_string(Layout);

// Where a tensor's memory lives. CUDA tensors hold a CUdeviceptr as their
// data pointer (as PyTorch's do). OpenCL runs the same GPU kernels through
// Halide's OpenCL backend, float32 only; it exists so that the GPU path runs
// on any OpenCL device, a CPU one (PoCL) included, which is how CI tests it.
// Its tensors' data pointer is Halide's opaque device handle (no offsets).
struct Device {
    enum class Kind { CPU, CUDA, OpenCL };
    Kind kind = Kind::CPU;
    int index = 0;

    static Device cpu() { return {Kind::CPU, 0}; }
    static Device cuda(int index = 0) { return {Kind::CUDA, index}; }
    static Device opencl() { return {Kind::OpenCL, 0}; }
    bool is_cpu() const { return kind == Kind::CPU; }
    bool is_cuda() const { return kind == Kind::CUDA; }
    std::string str() const;
    friend bool operator==(const Device& a, const Device& b) { return a.kind == b.kind && a.index == b.index; }
    friend bool operator!=(const Device& a, const Device& b) { return !(a == b); }
};

// IEEE binary16 and bfloat16 storage types; conversions round to nearest even.
struct Half {
    uint16_t bits = 0;
    Half() = default;
    explicit Half(float f);
    explicit operator float() const;
};
struct BFloat16 {
    uint16_t bits = 0;
    BFloat16() = default;
    explicit BFloat16(float f);
    explicit operator float() const;
};

template <class T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::Float32; };
template <> struct dtype_of<Half> { static constexpr DType value = DType::Float16; };
template <> struct dtype_of<BFloat16> { static constexpr DType value = DType::BFloat16; };
template <> struct dtype_of<int64_t> { static constexpr DType value = DType::Int64; };
template <> struct dtype_of<uint8_t> { static constexpr DType value = DType::UInt8; };
template <> struct dtype_of<double> { static constexpr DType value = DType::Float64; };

}  // namespace bnforge
