// Element sizes, names, and the float16/bfloat16 conversions.
//
// The conversions work on the bit patterns with integer arithmetic only, so
// they round to nearest even regardless of the FPU rounding mode or of
// fast-math flags a consumer might compile with.
#include <bnforge/dtype.h>

#include <cstring>
#include <string>

namespace bnforge {

size_t element_size(DType dtype) {
    switch (dtype) {
        case DType::Float32: return 4;
        case DType::Float16: return 2;
        case DType::BFloat16: return 2;
        case DType::Int64: return 8;
        case DType::UInt8: return 1;
        case DType::Float64: return 8;
    }
    return 0;
}

const char* to_string(DType dtype) {
    switch (dtype) {
        case DType::Float32: return "float32";
        case DType::Float16: return "float16";
        case DType::BFloat16: return "bfloat16";
        case DType::Int64: return "int64";
        case DType::UInt8: return "uint8";
        case DType::Float64: return "float64";
    }
    return "unknown";
}

const char* to_string(Layout layout) {
    switch (layout) {
        case Layout::NCHW: return "NCHW";
        case Layout::NHWC: return "NHWC";
    }
    return "unknown";
}

std::string Device::str() const {
    if (kind == Kind::CPU) return "cpu";
    if (kind == Kind::OpenCL) return "opencl";
    return "cuda:" + std::to_string(index);
}

namespace {

uint32_t float_bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}

float bits_float(uint32_t u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

// Shifts `value` right by `shift` (1..31) bits, rounding to nearest even.
uint32_t shift_right_rne(uint32_t value, int shift) {
    const uint32_t quotient = value >> shift;
    const uint32_t remainder = value & ((1u << shift) - 1u);
    const uint32_t halfway = 1u << (shift - 1);
    const bool round_up = remainder > halfway || (remainder == halfway && (quotient & 1u));
    return quotient + (round_up ? 1u : 0u);
}

constexpr uint32_t kF32AbsMask = 0x7fffffffu;
constexpr uint32_t kF32Inf = 0x7f800000u;

uint16_t float_to_half_bits(float f) {
    const uint32_t x = float_bits(f);
    const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
    const uint32_t abs = x & kF32AbsMask;

    if (abs > kF32Inf) {
        // Keep the top payload bits and force the quiet bit so the result can
        // never collapse into the infinity pattern.
        return static_cast<uint16_t>(sign | 0x7e00u | ((abs >> 13) & 0x03ffu));
    }
    if (abs == kF32Inf) return static_cast<uint16_t>(sign | 0x7c00u);

    const int exponent = static_cast<int>(abs >> 23);  // biased by 127
    if (exponent >= 113) {
        // Normal in half precision (before rounding). Re-bias the exponent and
        // round the 23-bit mantissa to 10 bits; a carry out of the mantissa
        // correctly bumps the exponent, up to the infinity pattern 0x7c00.
        const uint32_t rebased = abs - (112u << 23);
        const uint32_t rounded = shift_right_rne(rebased, 13);
        return static_cast<uint16_t>(sign | (rounded >= 0x7c00u ? 0x7c00u : rounded));
    }
    // Subnormal or zero in half precision: the result counts units of 2^-24.
    // A float with biased exponent e and implicit-bit mantissa m is m * 2^(e-150),
    // i.e. m >> (126 - e) units. Below 2^-25 everything rounds to zero.
    if (exponent < 102) return sign;
    const uint32_t mantissa = (abs & 0x007fffffu) | 0x00800000u;
    return static_cast<uint16_t>(sign | shift_right_rne(mantissa, 126 - exponent));
}

float half_bits_to_float(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    const uint32_t exponent = (h >> 10) & 0x1fu;
    uint32_t mantissa = h & 0x03ffu;

    if (exponent == 0x1fu) return bits_float(sign | kF32Inf | (mantissa << 13));
    if (exponent != 0) return bits_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
    if (mantissa == 0) return bits_float(sign);
    // Subnormal half: every subnormal is a normal float, so normalise.
    uint32_t float_exponent = 113;  // 2^-14 in float bias
    while ((mantissa & 0x0400u) == 0) {
        mantissa <<= 1;
        --float_exponent;
    }
    return bits_float(sign | (float_exponent << 23) | ((mantissa & 0x03ffu) << 13));
}

uint16_t float_to_bfloat16_bits(float f) {
    const uint32_t x = float_bits(f);
    if ((x & kF32AbsMask) > kF32Inf) {
        // Truncating a NaN whose payload lives only in the low 16 bits would
        // yield infinity; set the quiet bit so a NaN stays a NaN.
        return static_cast<uint16_t>((x >> 16) | 0x0040u);
    }
    // bfloat16 is the top half of a float, so rounding is a plain RNE shift;
    // overflow past the largest finite value correctly lands on infinity.
    const uint32_t lsb = (x >> 16) & 1u;
    return static_cast<uint16_t>((x + 0x7fffu + lsb) >> 16);
}

}  // namespace

Half::Half(float f) : bits(float_to_half_bits(f)) {}
Half::operator float() const { return half_bits_to_float(bits); }

BFloat16::BFloat16(float f) : bits(float_to_bfloat16_bits(f)) {}
BFloat16::operator float() const { return bits_float(static_cast<uint32_t>(bits) << 16); }

}  // namespace bnforge
