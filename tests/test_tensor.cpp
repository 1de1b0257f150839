// Tests for dtype conversions, Tensor construction, strides, DLPack exchange
// and the element-wise helpers.
#include <bnforge/runtime.h>
#include <bnforge/tensor.h>

#include <dlpack/dlpack.h>
#include <gtest/gtest.h>

#include "device.h"
#include "test_util.h"

#include <cmath>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

namespace bnforge {
namespace {

using Shape = std::vector<int64_t>;

float bits_to_float(uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

uint32_t float_to_bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}

uint16_t half_bits(float f) { return Half(f).bits; }
uint16_t bf16_bits(float f) { return BFloat16(f).bits; }

float from_half_bits(uint16_t b) {
    Half h;
    h.bits = b;
    return static_cast<float>(h);
}

float from_bf16_bits(uint16_t b) {
    BFloat16 h;
    h.bits = b;
    return static_cast<float>(h);
}


// ---- dtype -------------------------------------------------------------------

TEST(DType, ElementSizesAndNames) {
    EXPECT_EQ(element_size(DType::Float32), 4u);
    EXPECT_EQ(element_size(DType::Float16), 2u);
    EXPECT_EQ(element_size(DType::BFloat16), 2u);
    EXPECT_EQ(element_size(DType::Int64), 8u);
    EXPECT_EQ(element_size(DType::UInt8), 1u);
    EXPECT_STREQ(to_string(DType::Float32), "float32");
    EXPECT_STREQ(to_string(DType::Float16), "float16");
    EXPECT_STREQ(to_string(DType::BFloat16), "bfloat16");
    EXPECT_STREQ(to_string(DType::Int64), "int64");
    EXPECT_STREQ(to_string(DType::UInt8), "uint8");
    EXPECT_STREQ(to_string(Layout::NCHW), "NCHW");
    EXPECT_STREQ(to_string(Layout::NHWC), "NHWC");
}

TEST(DType, DeviceNames) {
    EXPECT_EQ(Device::cpu().str(), "cpu");
    EXPECT_EQ(Device::cuda().str(), "cuda:0");
    EXPECT_EQ(Device::cuda(3).str(), "cuda:3");
    EXPECT_TRUE(Device::cpu() == Device{});
    EXPECT_TRUE(Device::cuda(0) != Device::cuda(1));
}

TEST(Half, KnownBitPatterns) {
    EXPECT_EQ(half_bits(1.0f), 0x3C00);
    EXPECT_EQ(half_bits(-2.0f), 0xC000);
    EXPECT_EQ(half_bits(0.5f), 0x3800);
    EXPECT_EQ(half_bits(0.0f), 0x0000);
    EXPECT_EQ(half_bits(-0.0f), 0x8000);
    EXPECT_EQ(half_bits(65504.0f), 0x7BFF);          // largest finite
    EXPECT_EQ(half_bits(std::ldexp(1.0f, -14)), 0x0400);  // smallest normal
    EXPECT_EQ(half_bits(0.333251953125f), 0x3555);
    EXPECT_EQ(from_half_bits(0x3C00), 1.0f);
    EXPECT_EQ(from_half_bits(0xC000), -2.0f);
    EXPECT_EQ(from_half_bits(0x7BFF), 65504.0f);
    EXPECT_EQ(from_half_bits(0x3555), 0.333251953125f);
    EXPECT_EQ(float_to_bits(from_half_bits(0x8000)), 0x80000000u);
}

TEST(Half, RoundsToNearestEven) {
    const float ulp = std::ldexp(1.0f, -10);  // spacing of halves in [1, 2)
    EXPECT_EQ(half_bits(1.0f + ulp / 2), 0x3C00);      // tie, 0x3C00 is even
    EXPECT_EQ(half_bits(1.0f + 3 * ulp / 2), 0x3C02);  // tie, rounds up to even
    EXPECT_EQ(half_bits(std::nextafter(1.0f + ulp / 2, 2.0f)), 0x3C01);
    EXPECT_EQ(half_bits(std::nextafter(1.0f + ulp / 2, 0.0f)), 0x3C00);
    EXPECT_EQ(half_bits(-(1.0f + 3 * ulp / 2)), 0xBC02);
    // Rounding that carries out of the mantissa bumps the exponent.
    EXPECT_EQ(half_bits(std::nextafter(2.0f, 0.0f)), 0x4000);
}

TEST(Half, OverflowAndInfinity) {
    const float inf = std::numeric_limits<float>::infinity();
    EXPECT_EQ(half_bits(inf), 0x7C00);
    EXPECT_EQ(half_bits(-inf), 0xFC00);
    EXPECT_EQ(half_bits(65519.0f), 0x7BFF);  // below the midpoint to 65536
    EXPECT_EQ(half_bits(65520.0f), 0x7C00);  // tie with odd 0x7BFF goes to infinity
    EXPECT_EQ(half_bits(1e10f), 0x7C00);
    EXPECT_EQ(half_bits(-std::numeric_limits<float>::max()), 0xFC00);
    EXPECT_EQ(from_half_bits(0x7C00), inf);
    EXPECT_EQ(from_half_bits(0xFC00), -inf);
}

TEST(Half, Subnormals) {
    const float tiny = std::ldexp(1.0f, -24);  // smallest half subnormal
    EXPECT_EQ(half_bits(tiny), 0x0001);
    EXPECT_EQ(half_bits(1023 * tiny), 0x03FF);
    EXPECT_EQ(half_bits(tiny / 2), 0x0000);                                 // tie to even zero
    EXPECT_EQ(half_bits(std::nextafter(tiny / 2, 1.0f)), 0x0001);           // just above the tie
    EXPECT_EQ(half_bits(3 * tiny / 2), 0x0002);                             // tie to even 2
    EXPECT_EQ(half_bits(5 * tiny / 2), 0x0002);                             // tie to even 2
    EXPECT_EQ(half_bits(-tiny), 0x8001);
    EXPECT_EQ(half_bits(std::ldexp(1.0f, -30)), 0x0000);
    EXPECT_EQ(half_bits(-std::ldexp(1.0f, -30)), 0x8000);
    EXPECT_EQ(half_bits(std::numeric_limits<float>::denorm_min()), 0x0000);
    EXPECT_EQ(half_bits(1023.5f * tiny), 0x0400);  // rounds up into the smallest normal
    EXPECT_EQ(from_half_bits(0x0001), tiny);
    EXPECT_EQ(from_half_bits(0x03FF), 1023 * tiny);
    EXPECT_EQ(from_half_bits(0x8200), -512 * tiny);
}

TEST(Half, NaN) {
    const float qnan = std::numeric_limits<float>::quiet_NaN();
    EXPECT_TRUE(std::isnan(from_half_bits(half_bits(qnan))));
    EXPECT_EQ(half_bits(qnan) & 0x7C00, 0x7C00);
    // A NaN whose payload sits only in bits the conversion drops stays NaN.
    const float low_payload_nan = bits_to_float(0x7F800001u);
    ASSERT_TRUE(std::isnan(low_payload_nan));
    EXPECT_TRUE(std::isnan(from_half_bits(half_bits(low_payload_nan))));
    EXPECT_EQ(half_bits(-qnan) & 0x8000, 0x8000);
    EXPECT_TRUE(std::isnan(from_half_bits(0x7C01)));
    EXPECT_TRUE(std::isnan(from_half_bits(0xFE00)));
}

TEST(Half, EveryPatternRoundTrips) {
    for (uint32_t b = 0; b < 0x10000; ++b) {
        const float f = from_half_bits(static_cast<uint16_t>(b));
        if (std::isnan(f)) {
            EXPECT_TRUE(std::isnan(from_half_bits(half_bits(f)))) << std::hex << b;
        } else {
            ASSERT_EQ(half_bits(f), b) << std::hex << b;
        }
    }
}

// The compiler's half type is an independent IEEE reference: _Float16 on
// x86-64; on AArch64, where g++ 12 has no _Float16 in C++, __fp16 (IEEE
// format, converted by the FPU's round-to-nearest-even).
#if defined(__aarch64__)
#define BNFORGE_COMPILER_HALF __fp16
#elif defined(__FLT16_MANT_DIG__) && defined(__x86_64__)
#define BNFORGE_COMPILER_HALF _Float16
#endif
#ifdef BNFORGE_COMPILER_HALF
TEST(Half, MatchesCompilerFloat16) {
    for (uint64_t u = 0; u <= 0xFFFFFFFFull; u += 0x1FFF) {
        const float f = bits_to_float(static_cast<uint32_t>(u));
        if (std::isnan(f)) continue;
        const BNFORGE_COMPILER_HALF ref = static_cast<BNFORGE_COMPILER_HALF>(f);
        uint16_t ref_bits;
        std::memcpy(&ref_bits, &ref, 2);
        ASSERT_EQ(half_bits(f), ref_bits) << "float bits 0x" << std::hex << u;
    }
}
#endif

TEST(BFloat16, KnownBitPatterns) {
    EXPECT_EQ(bf16_bits(1.0f), 0x3F80);
    EXPECT_EQ(bf16_bits(-2.0f), 0xC000);
    EXPECT_EQ(bf16_bits(0.0f), 0x0000);
    EXPECT_EQ(bf16_bits(-0.0f), 0x8000);
    EXPECT_EQ(bf16_bits(3.140625f), 0x4049);
    EXPECT_EQ(from_bf16_bits(0x3F80), 1.0f);
    EXPECT_EQ(from_bf16_bits(0x4049), 3.140625f);
}

TEST(BFloat16, RoundsToNearestEven) {
    const float ulp = std::ldexp(1.0f, -7);
    EXPECT_EQ(bf16_bits(1.0f + ulp / 2), 0x3F80);      // tie to even
    EXPECT_EQ(bf16_bits(1.0f + 3 * ulp / 2), 0x3F82);  // tie to even, up
    EXPECT_EQ(bf16_bits(std::nextafter(1.0f + ulp / 2, 2.0f)), 0x3F81);
    EXPECT_EQ(bf16_bits(std::nextafter(2.0f, 0.0f)), 0x4000);
}

TEST(BFloat16, InfinityNaNAndSubnormals) {
    const float inf = std::numeric_limits<float>::infinity();
    EXPECT_EQ(bf16_bits(inf), 0x7F80);
    EXPECT_EQ(bf16_bits(-inf), 0xFF80);
    EXPECT_EQ(bf16_bits(std::numeric_limits<float>::max()), 0x7F80);  // rounds past the largest finite
    EXPECT_EQ(bf16_bits(bits_to_float(0x7F7F7FFFu)), 0x7F7F);          // just below the midpoint
    EXPECT_TRUE(std::isnan(from_bf16_bits(bf16_bits(std::numeric_limits<float>::quiet_NaN()))));
    // Plain truncation would turn this NaN into infinity.
    EXPECT_TRUE(std::isnan(from_bf16_bits(bf16_bits(bits_to_float(0x7F800001u)))));
    EXPECT_TRUE(std::isnan(from_bf16_bits(bf16_bits(bits_to_float(0xFF80FFFFu)))));
    EXPECT_EQ(bf16_bits(bits_to_float(0x00010000u)), 0x0001);  // float subnormals map directly
    EXPECT_EQ(bf16_bits(bits_to_float(0x00008000u)), 0x0000);  // tie to even zero
    EXPECT_EQ(bf16_bits(bits_to_float(0x00018000u)), 0x0002);  // tie to even 2
    EXPECT_EQ(bf16_bits(std::numeric_limits<float>::denorm_min()), 0x0000);
    EXPECT_EQ(from_bf16_bits(0x0001), bits_to_float(0x00010000u));
}

TEST(BFloat16, EveryPatternRoundTrips) {
    for (uint32_t b = 0; b < 0x10000; ++b) {
        const float f = from_bf16_bits(static_cast<uint16_t>(b));
        if (std::isnan(f)) {
            EXPECT_TRUE(std::isnan(from_bf16_bits(bf16_bits(f)))) << std::hex << b;
        } else {
            ASSERT_EQ(bf16_bits(f), b) << std::hex << b;
        }
    }
}

// ---- strides -------------------------------------------------------------------

TEST(Strides, NCHWIsRowMajorForEveryRank) {
    EXPECT_EQ(contiguous_strides({}, Layout::NCHW), Shape{});
    EXPECT_EQ(contiguous_strides({5}, Layout::NCHW), (Shape{1}));
    EXPECT_EQ(contiguous_strides({2, 3}, Layout::NCHW), (Shape{3, 1}));
    EXPECT_EQ(contiguous_strides({2, 3, 4}, Layout::NCHW), (Shape{12, 4, 1}));
    EXPECT_EQ(contiguous_strides({2, 3, 4, 5}, Layout::NCHW), (Shape{60, 20, 5, 1}));
    EXPECT_EQ(contiguous_strides({2, 3, 4, 5, 6}, Layout::NCHW), (Shape{360, 120, 30, 6, 1}));
}

TEST(Strides, NHWCIsChannelsLastFromRankThree) {
    EXPECT_EQ(contiguous_strides({}, Layout::NHWC), Shape{});
    EXPECT_EQ(contiguous_strides({5}, Layout::NHWC), (Shape{1}));
    EXPECT_EQ(contiguous_strides({2, 3}, Layout::NHWC), (Shape{3, 1}));
    EXPECT_EQ(contiguous_strides({2, 3, 4}, Layout::NHWC), (Shape{12, 1, 3}));           // NLC
    EXPECT_EQ(contiguous_strides({2, 3, 4, 5}, Layout::NHWC), (Shape{60, 1, 15, 3}));    // NHWC
    EXPECT_EQ(contiguous_strides({2, 3, 4, 5, 6}, Layout::NHWC), (Shape{360, 1, 90, 18, 3}));  // NDHWC
}

TEST(Strides, OverflowIsAnError) {
    const int64_t big = int64_t{1} << 40;
    EXPECT_ERROR_CONTAINS(contiguous_strides({big, big, big}, Layout::NCHW), "contiguous_strides: shape");
    EXPECT_ERROR_CONTAINS(contiguous_strides({2, big, big, big}, Layout::NHWC), "strides overflow int64");
    // The outermost extent never enters a stride.
    EXPECT_EQ(contiguous_strides({int64_t{1} << 62, 1}, Layout::NCHW), (Shape{1, 1}));
}

TEST(Strides, ZeroExtentsKeepStridesMeaningful) {
    EXPECT_EQ(contiguous_strides({0, 3, 4}, Layout::NCHW), (Shape{12, 4, 1}));
    EXPECT_EQ(contiguous_strides({2, 0, 4}, Layout::NCHW), (Shape{4, 4, 1}));
    EXPECT_EQ(contiguous_strides({2, 3, 0, 5}, Layout::NHWC), (Shape{15, 1, 15, 3}));
}

// ---- empty / from_blob ---------------------------------------------------------

TEST(TensorEmpty, AllocatesAlignedDenseStorage) {
    for (Layout layout : {Layout::NCHW, Layout::NHWC}) {
        Tensor t = Tensor::empty({2, 3, 4, 5}, DType::Float32, Device::cpu(), layout);
        EXPECT_TRUE(t.defined());
        EXPECT_EQ(t.shape(), (Shape{2, 3, 4, 5}));
        EXPECT_EQ(t.strides(), contiguous_strides({2, 3, 4, 5}, layout));
        EXPECT_EQ(t.layout(), layout);
        EXPECT_EQ(t.dtype(), DType::Float32);
        EXPECT_TRUE(t.device().is_cpu());
        EXPECT_EQ(t.numel(), 120);
        EXPECT_EQ(t.nbytes(), 480u);
        EXPECT_TRUE(t.is_contiguous());
        EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw_data()) % 64, 0u);
        std::memset(t.raw_data(), 0, t.nbytes());  // ASan checks the whole block is ours
    }
}

TEST(TensorEmpty, ZeroElementsAndScalarsAreDefined) {
    Tensor none = Tensor::empty({0, 3}, DType::Float16);
    EXPECT_TRUE(none.defined());
    EXPECT_EQ(none.numel(), 0);
    EXPECT_EQ(none.nbytes(), 0u);
    EXPECT_NE(none.raw_data(), nullptr);
    EXPECT_TRUE(none.is_contiguous());

    Tensor scalar = Tensor::empty({}, DType::Int64);
    EXPECT_TRUE(scalar.defined());
    EXPECT_EQ(scalar.dim(), 0);
    EXPECT_EQ(scalar.numel(), 1);
    EXPECT_EQ(scalar.nbytes(), 8u);
    scalar.set_item({}, 42);
    EXPECT_EQ(scalar.item({}), 42.0);
}

TEST(TensorEmpty, Errors) {
    EXPECT_ERROR_CONTAINS(Tensor::empty({2, 3, -1}, DType::Float32), "Tensor::empty: shape[2] = -1, expected >= 0");
    // No such device anywhere (no driver here, or index 99 on a GPU machine).
    EXPECT_ERROR_CONTAINS(Tensor::empty({2, 3}, DType::Float32, Device::cuda(99)), "cuda:99");
    EXPECT_ERROR_CONTAINS(Tensor::empty({int64_t{1} << 40, int64_t{1} << 40}, DType::Float32), "too large");
    EXPECT_ERROR_CONTAINS(Tensor::empty({int64_t{1} << 62}, DType::Float32), "too large");
    EXPECT_ERROR_CONTAINS(Tensor::empty({0, int64_t{1} << 40, int64_t{1} << 40}, DType::Float32), "too large");
}

TEST(Tensor, UndefinedHandle) {
    Tensor t;
    EXPECT_FALSE(t.defined());
    EXPECT_EQ(t.numel(), 0);
    EXPECT_EQ(t.dim(), 0);
    EXPECT_FALSE(t.is_contiguous());
    EXPECT_FALSE(t.same_storage(Tensor()));
    EXPECT_ERROR_CONTAINS(t.data<float>(), "Tensor::data<float32>: tensor is undefined");
    EXPECT_ERROR_CONTAINS(t.clone(), "Tensor::clone: tensor is undefined");
    EXPECT_ERROR_CONTAINS(t.contiguous(Layout::NCHW), "Tensor::contiguous: tensor is undefined");
    EXPECT_ERROR_CONTAINS(t.to(Device::cpu()), "Tensor::to: tensor is undefined");
    EXPECT_ERROR_CONTAINS(t.fill_(1), "Tensor::fill_: tensor is undefined");
    EXPECT_ERROR_CONTAINS(t.item({}), "Tensor::item: tensor is undefined");
    EXPECT_ERROR_CONTAINS(t.set_item({}, 1), "Tensor::set_item: tensor is undefined");
    EXPECT_ERROR_CONTAINS(t.to_dlpack(), "to_dlpack: tensor is undefined");
    Tensor x = Tensor::empty({2}, DType::Float32);
    EXPECT_ERROR_CONTAINS(t.copy_(x), "Tensor::copy_ (destination): tensor is undefined");
    EXPECT_ERROR_CONTAINS(x.copy_(t), "Tensor::copy_ (source): tensor is undefined");
}

TEST(Tensor, SizeAcceptsNegativeDims) {
    Tensor t = Tensor::empty({2, 3, 4, 5}, DType::Float32);
    EXPECT_EQ(t.size(0), 2);
    EXPECT_EQ(t.size(3), 5);
    EXPECT_EQ(t.size(-1), 5);
    EXPECT_EQ(t.size(-4), 2);
    EXPECT_ERROR_CONTAINS(t.size(4), "Tensor::size: dim 4 is out of range for a tensor of rank 4");
    EXPECT_ERROR_CONTAINS(t.size(-5), "dim -5 is out of range");
    EXPECT_ERROR_CONTAINS(Tensor::empty({}, DType::Float32).size(0), "rank 0");
}

TEST(Tensor, SelectIsAViewOneRankLower) {
    Tensor t = Tensor::empty({2, 3, 4, 5}, DType::Float32, Device::cpu(), Layout::NHWC);
    for (int64_t i = 0; i < t.numel(); i++) t.data<float>()[i] = static_cast<float>(i) * 0.5f + 1.0f;
    Tensor c = t.select(1, 2);  // (N, H, W) at channel 2: stride C along W
    EXPECT_EQ(c.shape(), (std::vector<int64_t>{2, 4, 5}));
    EXPECT_EQ(c.strides(), (std::vector<int64_t>{60, 15, 3}));
    EXPECT_TRUE(c.same_storage(t));
    for (int64_t n = 0; n < 2; n++)
        for (int64_t h = 0; h < 4; h++)
            for (int64_t w = 0; w < 5; w++) EXPECT_EQ(c.item({n, h, w}), t.item({n, 2, h, w}));
    c.set_item({1, 3, 4}, -7.0);
    EXPECT_EQ(t.item({1, 2, 3, 4}), -7.0);
    // Negative dims and indices count from the end; the view outlives the original handle.
    Tensor last = t.select(-4, -1).select(0, -1);
    t = Tensor();
    EXPECT_EQ(last.shape(), (std::vector<int64_t>{4, 5}));
    EXPECT_EQ(last.item({3, 4}), -7.0);
    EXPECT_EQ(last.select(1, 4).select(0, 3).dim(), 0);
    EXPECT_ERROR_CONTAINS(last.select(2, 0), "Tensor::select: dim 2 is out of range for a tensor of rank 2");
    EXPECT_ERROR_CONTAINS(last.select(0, 4), "Tensor::select: index 4 is out of range for dim 0 of size 4");
    EXPECT_ERROR_CONTAINS(last.select(1, -6), "index -6 is out of range");
    EXPECT_ERROR_CONTAINS(Tensor().select(0, 0), "Tensor::select: tensor is undefined");
}

TEST(Tensor, DataChecksDtype) {
    Tensor t = Tensor::empty({3}, DType::Float32);
    EXPECT_EQ(t.data<float>(), t.raw_data());
    const Tensor& ct = t;
    EXPECT_EQ(ct.data<float>(), t.raw_data());
    EXPECT_ERROR_CONTAINS(t.data<Half>(), "Tensor::data<float16>: tensor has dtype float32");
    EXPECT_ERROR_CONTAINS(ct.data<int64_t>(), "Tensor::data<int64>: tensor has dtype float32");
    Tensor b = Tensor::empty({3}, DType::BFloat16);
    EXPECT_NE(b.data<BFloat16>(), nullptr);
    EXPECT_ERROR_CONTAINS(b.data<float>(), "Tensor::data<float32>: tensor has dtype bfloat16");
}

TEST(FromBlob, BorrowsMemoryInTheGivenLayout) {
    std::vector<float> buf(24);
    std::iota(buf.begin(), buf.end(), 0.0f);
    Tensor nchw = Tensor::from_blob(buf.data(), {1, 2, 3, 4}, DType::Float32, Device::cpu());
    EXPECT_EQ(nchw.raw_data(), buf.data());
    EXPECT_EQ(nchw.layout(), Layout::NCHW);
    EXPECT_EQ(nchw.strides(), (Shape{24, 12, 4, 1}));
    EXPECT_EQ(nchw.item({0, 1, 2, 3}), 23.0);

    Tensor nhwc = Tensor::from_blob(buf.data(), {1, 2, 3, 4}, DType::Float32, Device::cpu(), Layout::NHWC);
    EXPECT_EQ(nhwc.layout(), Layout::NHWC);
    EXPECT_EQ(nhwc.strides(), (Shape{24, 1, 8, 2}));
    EXPECT_EQ(nhwc.item({0, 1, 0, 0}), 1.0);  // channels are adjacent in memory
    EXPECT_EQ(nhwc.item({0, 0, 0, 1}), 2.0);
    EXPECT_TRUE(nhwc.is_contiguous());

    // With one channel both layouts coincide; the caller's layout is kept.
    Tensor one_c = Tensor::from_blob(buf.data(), {2, 1, 3, 4}, DType::Float32, Device::cpu(), Layout::NHWC);
    EXPECT_EQ(one_c.layout(), Layout::NHWC);

    buf[5] = -7;  // borrowed, so writes through the original are visible
    EXPECT_EQ(nchw.item({0, 0, 1, 1}), -7.0);
}

TEST(FromBlob, StridedInfersLayout) {
    std::vector<float> buf(2 * 3 * 4 * 5);
    auto layout_of = [&](Shape shape, Shape strides) {
        return Tensor::from_blob_strided(buf.data(), shape, strides, DType::Float32, Device::cpu()).layout();
    };
    EXPECT_EQ(layout_of({2, 3, 4, 5}, {60, 20, 5, 1}), Layout::NCHW);
    EXPECT_EQ(layout_of({2, 3, 4, 5}, {60, 1, 15, 3}), Layout::NHWC);
    EXPECT_EQ(layout_of({2, 3, 4}, {12, 1, 3}), Layout::NHWC);                // NLC
    EXPECT_EQ(layout_of({2, 3, 2, 2, 5}, {60, 1, 30, 15, 3}), Layout::NHWC);  // NDHWC
    EXPECT_EQ(layout_of({2, 1, 4, 5}, {20, 1, 5, 1}), Layout::NCHW);          // C == 1
    EXPECT_EQ(layout_of({4, 3}, {1, 4}), Layout::NCHW);                       // rank 2: no channels-last
    EXPECT_EQ(layout_of({6}, {1}), Layout::NCHW);
    EXPECT_EQ(layout_of({}, {}), Layout::NCHW);

    Tensor gappy = Tensor::from_blob_strided(buf.data(), {2, 3}, {20, 2}, DType::Float32, Device::cpu());
    EXPECT_FALSE(gappy.is_contiguous());
    // Extent-1 dimensions may have any stride and still be contiguous.
    Tensor odd = Tensor::from_blob_strided(buf.data(), {1, 3, 1, 5}, {999, 5, 777, 1}, DType::Float32, Device::cpu());
    EXPECT_TRUE(odd.is_contiguous());
}

TEST(FromBlob, Errors) {
    float x[4] = {};
    EXPECT_ERROR_CONTAINS(Tensor::from_blob(nullptr, {2, 2}, DType::Float32, Device::cpu()),
                          "from_blob: data is null");
    EXPECT_NO_THROW(Tensor::from_blob(nullptr, {0, 2}, DType::Float32, Device::cpu()));
    EXPECT_ERROR_CONTAINS(Tensor::from_blob(x, {2, 2, -1}, DType::Float32, Device::cpu()),
                          "from_blob: shape[2] = -1, expected >= 0");
    // Borrowed device memory is the caller's promise: nothing is touched until a kernel runs.
    // A build without CUDA kernels (a cross build) refuses the device.
    if (detail::device_supported(Device::cuda())) {
        EXPECT_EQ(Tensor::from_blob(x, {2, 2}, DType::Float32, Device::cuda()).device(), Device::cuda());
    } else {
        EXPECT_ERROR_CONTAINS(Tensor::from_blob(x, {2, 2}, DType::Float32, Device::cuda()),
                              "device cuda:0 is not supported by this build");
    }
    EXPECT_ERROR_CONTAINS(Tensor::from_blob_strided(x, {2, 2}, {2, -1}, DType::Float32, Device::cpu()),
                          "from_blob: strides[1] = -1, expected >= 0");
    EXPECT_ERROR_CONTAINS(Tensor::from_blob_strided(x, {2, 2}, {2}, DType::Float32, Device::cpu()),
                          "from_blob: strides has 1 entries, expected 2");
    EXPECT_ERROR_CONTAINS(
        Tensor::from_blob_strided(x, {2, 2}, {int64_t{1} << 62, 1}, DType::Float32, Device::cpu()), "overflow");
    // Found by fuzz/fuzz_strided: the furthest element exactly at INT64_MAX (its count overflowed by one).
    EXPECT_ERROR_CONTAINS(Tensor::from_blob_strided(x, {2, 2}, {INT64_MAX, 0}, DType::UInt8, Device::cpu()),
                          "overflow");
}

// ---- DLPack ------------------------------------------------------------------

// A producer-side tensor as another framework would hand it over.
struct Producer {
    std::vector<float> data;
    std::vector<int64_t> shape;
    std::vector<int64_t> strides;
    DLManagedTensor managed{};
    int* deleted = nullptr;

    static DLManagedTensor* make(std::vector<float> data, Shape shape, Shape strides, int* deleted) {
        auto* p = new Producer{std::move(data), std::move(shape), std::move(strides), {}, deleted};
        DLTensor& dl = p->managed.dl_tensor;
        dl.data = p->data.data();
        dl.device = {kDLCPU, 0};
        dl.ndim = static_cast<int>(p->shape.size());
        dl.dtype = {kDLFloat, 32, 1};
        dl.shape = p->shape.data();
        dl.strides = p->strides.empty() ? nullptr : p->strides.data();
        dl.byte_offset = 0;
        p->managed.manager_ctx = p;
        p->managed.deleter = [](DLManagedTensor* self) {
            auto* owner = static_cast<Producer*>(self->manager_ctx);
            ++*owner->deleted;
            delete owner;
        };
        return &p->managed;
    }
};

TEST(DLPack, ImportSharesMemoryAndCallsDeleterOnce) {
    int deleted = 0;
    DLManagedTensor* m = Producer::make({0, 1, 2, 3, 4, 5}, {2, 3}, {}, &deleted);
    void* producer_data = m->dl_tensor.data;
    {
        Tensor a = Tensor::from_dlpack(m);
        EXPECT_EQ(a.raw_data(), producer_data);
        EXPECT_EQ(a.shape(), (Shape{2, 3}));
        EXPECT_EQ(a.strides(), (Shape{3, 1}));  // null strides mean row-major
        EXPECT_EQ(a.dtype(), DType::Float32);
        EXPECT_EQ(a.item({1, 2}), 5.0);
        Tensor b = a;  // a second handle keeps the storage alive
        a = Tensor();
        EXPECT_EQ(deleted, 0);
        EXPECT_EQ(b.item({1, 0}), 3.0);
    }
    EXPECT_EQ(deleted, 1);
}

TEST(DLPack, ImportHonoursStridesByteOffsetAndPinnedMemory) {
    int deleted = 0;
    std::vector<float> data(1 + 2 * 3 * 2 * 2);
    std::iota(data.begin(), data.end(), 0.0f);
    // Channels-last (N=2, C=3, H=2, W=2) starting one element in.
    DLManagedTensor* m = Producer::make(data, {2, 3, 2, 2}, {12, 1, 6, 3}, &deleted);
    m->dl_tensor.byte_offset = sizeof(float);
    m->dl_tensor.device = {kDLCUDAHost, 0};
    {
        Tensor t = Tensor::from_dlpack(m);
        EXPECT_TRUE(t.device().is_cpu());
        EXPECT_EQ(t.layout(), Layout::NHWC);
        EXPECT_TRUE(t.is_contiguous());
        EXPECT_EQ(t.item({0, 0, 0, 0}), 1.0);
        EXPECT_EQ(t.item({0, 2, 0, 0}), 3.0);
        EXPECT_EQ(t.item({1, 1, 1, 1}), 1.0 + 12 + 1 + 6 + 3);
    }
    EXPECT_EQ(deleted, 1);
}

TEST(DLPack, ImportAcceptsEverySupportedDtype) {
    struct Case {
        DLDataType dl;
        DType expected;
    };
    const Case cases[] = {{{kDLFloat, 32, 1}, DType::Float32},
                          {{kDLFloat, 16, 1}, DType::Float16},
                          {{kDLBfloat, 16, 1}, DType::BFloat16},
                          {{kDLInt, 64, 1}, DType::Int64},
                          {{kDLUInt, 8, 1}, DType::UInt8}};
    for (const Case& c : cases) {
        int deleted = 0;
        DLManagedTensor* m = Producer::make({0, 0}, {2}, {}, &deleted);
        m->dl_tensor.dtype = c.dl;
        EXPECT_EQ(Tensor::from_dlpack(m).dtype(), c.expected);
        EXPECT_EQ(deleted, 1);
    }
}

TEST(DLPack, FailedImportLeavesOwnershipWithCaller) {
    struct Case {
        const char* name;
        void (*corrupt)(DLTensor&);
        const char* message;
    };
    const Case cases[] = {
        {"opencl", [](DLTensor& t) { t.device = {kDLOpenCL, 0}; }, "from_dlpack: device_type 4 is not supported"},
        {"float64", [](DLTensor& t) { t.dtype = {kDLFloat, 64, 1}; }, "dtype (code 2, bits 64, lanes 1)"},
        {"uint16", [](DLTensor& t) { t.dtype = {kDLUInt, 16, 1}; }, "dtype (code 1, bits 16, lanes 1)"},
        {"int32", [](DLTensor& t) { t.dtype = {kDLInt, 32, 1}; }, "dtype (code 0, bits 32, lanes 1)"},
        {"complex", [](DLTensor& t) { t.dtype = {kDLComplex, 64, 1}; }, "dtype (code 5, bits 64, lanes 1)"},
        {"lanes", [](DLTensor& t) { t.dtype = {kDLFloat, 32, 4}; }, "dtype (code 2, bits 32, lanes 4)"},
        {"ndim", [](DLTensor& t) { t.ndim = -1; }, "from_dlpack: ndim = -1, expected >= 0"},
        {"null shape", [](DLTensor& t) { t.shape = nullptr; }, "from_dlpack: shape is null"},
        {"negative shape", [](DLTensor& t) { t.shape[1] = -3; }, "from_dlpack: shape[1] = -3, expected >= 0"},
        {"negative stride", [](DLTensor& t) { t.strides[0] = -2; }, "from_dlpack: strides[0] = -2, expected >= 0"},
        {"null data", [](DLTensor& t) { t.data = nullptr; }, "from_dlpack: data is null"},
        // Found by fuzz/fuzz_dlpack: a device type this dlpack.h does not list
        // (read as an integer, not loaded as an invalid enum), and offsets
        // that put the data past the address space.
        {"device type 99", [](DLTensor& t) { int32_t v = 99; std::memcpy(&t.device.device_type, &v, sizeof v); },
         "from_dlpack: device_type 99 is not supported"},
        {"negative device id", [](DLTensor& t) { t.device = {kDLCUDA, -1}; }, "from_dlpack: device_id -1 is negative"},
        {"huge byte offset", [](DLTensor& t) { t.byte_offset = ~uint64_t{0}; }, "past the address space"},
    };
    for (const Case& c : cases) {
        SCOPED_TRACE(c.name);
        int deleted = 0;
        DLManagedTensor* m = Producer::make({0, 1, 2, 3}, {2, 2}, {2, 1}, &deleted);
        c.corrupt(m->dl_tensor);
        EXPECT_ERROR_CONTAINS(Tensor::from_dlpack(m), c.message);
        EXPECT_EQ(deleted, 0);
        m->deleter(m);  // still ours
        EXPECT_EQ(deleted, 1);
    }
    EXPECT_ERROR_CONTAINS(Tensor::from_dlpack(nullptr), "from_dlpack: managed tensor is null");
}

TEST(DLPack, ImportWithoutDeleterIsAllowed) {
    float data[3] = {1, 2, 3};
    int64_t shape[1] = {3};
    DLManagedTensor m{};
    m.dl_tensor = {data, {kDLCPU, 0}, 1, {kDLFloat, 32, 1}, shape, nullptr, 0};
    Tensor t = Tensor::from_dlpack(&m);
    EXPECT_EQ(t.item({2}), 3.0);
}

TEST(DLPack, ExportDescribesTheTensorAndKeepsItAlive) {
    Tensor t = Tensor::empty({2, 3, 4, 5}, DType::BFloat16, Device::cpu(), Layout::NHWC);
    t.fill_(1.5);
    DLManagedTensor* m = t.to_dlpack();
    const void* data = t.raw_data();
    t = Tensor();  // the export alone must keep the storage alive
    const DLTensor& dl = m->dl_tensor;
    EXPECT_EQ(dl.data, data);
    EXPECT_EQ(dl.device.device_type, kDLCPU);
    EXPECT_EQ(dl.device.device_id, 0);
    EXPECT_EQ(dl.ndim, 4);
    EXPECT_EQ(dl.dtype.code, kDLBfloat);
    EXPECT_EQ(dl.dtype.bits, 16);
    EXPECT_EQ(dl.dtype.lanes, 1);
    EXPECT_EQ(Shape(dl.shape, dl.shape + 4), (Shape{2, 3, 4, 5}));
    EXPECT_EQ(Shape(dl.strides, dl.strides + 4), (Shape{60, 1, 15, 3}));
    EXPECT_EQ(dl.byte_offset, 0u);
    EXPECT_EQ(static_cast<const BFloat16*>(dl.data)[119].bits, 0x3FC0);
    m->deleter(m);
}

TEST(DLPack, RoundTripBothWays) {
    // bnforge -> DLPack -> bnforge shares the storage and keeps the layout.
    Tensor t = Tensor::empty({2, 3, 4}, DType::Float16, Device::cpu(), Layout::NHWC);
    for (int64_t i = 0; i < 24; ++i) t.set_item({i / 12, i % 3, (i / 3) % 4}, static_cast<double>(i));
    Tensor back = Tensor::from_dlpack(t.to_dlpack());
    EXPECT_EQ(back.raw_data(), t.raw_data());
    EXPECT_EQ(back.shape(), t.shape());
    EXPECT_EQ(back.strides(), t.strides());
    EXPECT_EQ(back.dtype(), DType::Float16);
    EXPECT_EQ(back.layout(), Layout::NHWC);
    EXPECT_EQ(back.item({1, 2, 3}), t.item({1, 2, 3}));
    t = Tensor();
    EXPECT_EQ(back.item({0, 1, 0}), 1.0);  // still alive through the import

    // DLPack -> bnforge -> DLPack: the producer's deleter runs once, after the
    // last consumer lets go.
    int deleted = 0;
    DLManagedTensor* m = Producer::make({1, 2, 3, 4}, {4}, {}, &deleted);
    DLManagedTensor* re = Tensor::from_dlpack(m).to_dlpack();
    EXPECT_EQ(deleted, 0);
    EXPECT_EQ(static_cast<float*>(re->dl_tensor.data)[3], 4.0f);
    Tensor again = Tensor::from_dlpack(re);
    EXPECT_EQ(deleted, 0);
    again = Tensor();
    EXPECT_EQ(deleted, 1);

    Tensor scalar = Tensor::empty({}, DType::Int64);
    scalar.set_item({}, -9);
    Tensor scalar_back = Tensor::from_dlpack(scalar.to_dlpack());
    EXPECT_EQ(scalar_back.dim(), 0);
    EXPECT_EQ(scalar_back.item({}), -9.0);
}

// ---- copies ------------------------------------------------------------------

Tensor iota_tensor(Shape shape, DType dtype, Layout layout) {
    Tensor t = Tensor::empty(shape, dtype, Device::cpu(), layout);
    Tensor src = Tensor::empty(shape, DType::Float32);
    float* p = src.data<float>();
    for (int64_t i = 0; i < src.numel(); ++i) p[i] = static_cast<float>(i);
    t.copy_(src);
    return t;
}

TEST(Copy, AcrossLayoutsKeepsLogicalValues) {
    for (const Shape& shape : {Shape{4}, Shape{2, 3}, Shape{2, 3, 4}, Shape{2, 3, 4, 5}, Shape{2, 3, 2, 3, 2}}) {
        Tensor nchw = iota_tensor(shape, DType::Float32, Layout::NCHW);
        Tensor nhwc = Tensor::empty(shape, DType::Float32, Device::cpu(), Layout::NHWC);
        nhwc.copy_(nchw);
        Tensor roundtrip = Tensor::empty(shape, DType::Float32);
        roundtrip.copy_(nhwc);
        EXPECT_EQ(std::memcmp(roundtrip.raw_data(), nchw.raw_data(), nchw.nbytes()), 0);
        if (shape.size() == 4) {
            // Channel is innermost in memory for the NHWC copy.
            EXPECT_EQ(nhwc.data<float>()[1], nchw.item({0, 1, 0, 0}));
            EXPECT_EQ(nhwc.item({1, 2, 3, 4}), nchw.item({1, 2, 3, 4}));
        }
    }
}

TEST(Copy, ConvertsBetweenDtypes) {
    const DType all[] = {DType::Float32, DType::Float16, DType::BFloat16, DType::Int64, DType::UInt8};
    const std::vector<float> values = {0, 1, 2, 3, 100, 255, 0.5f, 0.25f};
    Tensor src = Tensor::from_blob(const_cast<float*>(values.data()), {2, 4}, DType::Float32, Device::cpu());
    for (DType from : all) {
        for (DType to : all) {
            SCOPED_TRACE(std::string(to_string(from)) + " -> " + to_string(to));
            Tensor a = Tensor::empty({2, 4}, from, Device::cpu(), Layout::NCHW);
            a.copy_(src);
            Tensor b = Tensor::empty({2, 4}, to, Device::cpu(), Layout::NCHW);
            b.copy_(a);
            const bool integral = from == DType::Int64 || to == DType::Int64 || from == DType::UInt8 ||
                                  to == DType::UInt8;
            for (int64_t i = 0; i < 8; ++i) {
                const double expected = integral ? std::trunc(values[i]) : values[i];
                EXPECT_EQ(b.item({i / 4, i % 4}), expected) << i;
            }
        }
    }
}

TEST(Copy, RoundsAndSaturates) {
    Tensor src = Tensor::empty({6}, DType::Float32);
    const float values[6] = {1.0f + std::ldexp(1.0f, -11), std::nanf(""), INFINITY, -INFINITY, 1e30f, -2.75f};
    std::memcpy(src.raw_data(), values, sizeof values);

    Tensor half = Tensor::empty({6}, DType::Float16);
    half.copy_(src);
    EXPECT_EQ(half.data<Half>()[0].bits, 0x3C00);  // tie to even
    EXPECT_TRUE(std::isnan(half.item({1})));
    EXPECT_EQ(half.item({2}), INFINITY);
    EXPECT_EQ(half.item({4}), INFINITY);

    Tensor ints = Tensor::empty({6}, DType::Int64);
    ints.copy_(src);
    const int64_t* p = ints.data<int64_t>();
    EXPECT_EQ(p[0], 1);
    EXPECT_EQ(p[1], 0);  // NaN has no integer value
    EXPECT_EQ(p[2], std::numeric_limits<int64_t>::max());
    EXPECT_EQ(p[3], std::numeric_limits<int64_t>::min());
    EXPECT_EQ(p[4], std::numeric_limits<int64_t>::max());
    EXPECT_EQ(p[5], -2);  // truncation toward zero

    Tensor bytes = Tensor::empty({6}, DType::UInt8);
    bytes.copy_(src);
    EXPECT_EQ(std::vector<uint8_t>(bytes.data<uint8_t>(), bytes.data<uint8_t>() + 6),
              (std::vector<uint8_t>{1, 0, 255, 0, 255, 0}));
    bytes.copy_(ints);  // int64 extremes saturate too
    EXPECT_EQ(std::vector<uint8_t>(bytes.data<uint8_t>(), bytes.data<uint8_t>() + 6),
              (std::vector<uint8_t>{1, 0, 255, 0, 255, 0}));
    bytes.set_item({0}, 254.9);
    EXPECT_EQ(bytes.item({0}), 254.0);
    bytes.set_item({0}, 300);
    EXPECT_EQ(bytes.item({0}), 255.0);

    // Large integers survive an int64 -> int64 copy exactly.
    Tensor big = Tensor::empty({1}, DType::Int64);
    big.data<int64_t>()[0] = (int64_t{1} << 62) + 1;
    Tensor big2 = Tensor::empty({1}, DType::Int64, Device::cpu(), Layout::NHWC);
    big2.copy_(big);
    EXPECT_EQ(big2.data<int64_t>()[0], (int64_t{1} << 62) + 1);
}

TEST(Copy, StridedViewsAndOverlap) {
    std::vector<float> buf(12);
    std::iota(buf.begin(), buf.end(), 0.0f);
    // Every other element of the buffer, as a (2, 3) view.
    Tensor evens = Tensor::from_blob_strided(buf.data(), {2, 3}, {6, 2}, DType::Float32, Device::cpu());
    Tensor dense = evens.clone();
    EXPECT_TRUE(dense.is_contiguous());
    EXPECT_FALSE(dense.same_storage(evens));
    EXPECT_EQ(std::vector<float>(dense.data<float>(), dense.data<float>() + 6),
              (std::vector<float>{0, 2, 4, 6, 8, 10}));

    // Overlapping source and destination: shift a window by one element.
    Tensor head = Tensor::from_blob(buf.data(), {11}, DType::Float32, Device::cpu());
    Tensor tail = Tensor::from_blob(buf.data() + 1, {11}, DType::Float32, Device::cpu());
    head.copy_(tail);
    for (int i = 0; i < 11; ++i) EXPECT_EQ(buf[i], static_cast<float>(i + 1));
    std::iota(buf.begin(), buf.end(), 0.0f);
    tail.copy_(head);
    for (int i = 1; i < 12; ++i) EXPECT_EQ(buf[i], static_cast<float>(i - 1));

    // Copying a tensor onto itself is a no-op.
    dense.copy_(dense);
    EXPECT_EQ(dense.item({1, 2}), 10.0);

    // Broadcast-like zero strides read the same element repeatedly.
    float one = 3.5f;
    Tensor repeated = Tensor::from_blob_strided(&one, {2, 2}, {0, 0}, DType::Float32, Device::cpu());
    Tensor out = Tensor::empty({2, 2}, DType::Float16);
    out.copy_(repeated);
    EXPECT_EQ(out.item({1, 1}), 3.5);
}

TEST(Copy, ScalarsEmptyAndErrors) {
    Tensor a = Tensor::empty({}, DType::Float32);
    a.fill_(2.5);
    Tensor b = Tensor::empty({}, DType::BFloat16);
    b.copy_(a);
    EXPECT_EQ(b.item({}), 2.5);

    Tensor e1 = Tensor::empty({0, 4}, DType::Float32);
    Tensor e2 = Tensor::empty({0, 4}, DType::Int64);
    EXPECT_NO_THROW(e2.copy_(e1));

    Tensor c = Tensor::empty({2, 3}, DType::Float32);
    Tensor d = Tensor::empty({3, 2}, DType::Float32);
    EXPECT_ERROR_CONTAINS(c.copy_(d), "Tensor::copy_: source shape (3, 2) does not match destination shape (2, 3)");
    EXPECT_ERROR_CONTAINS(c.copy_(Tensor::empty({6}, DType::Float32)), "source shape (6,)");
}

TEST(Fill, WritesEveryElementOfAStridedView) {
    std::vector<float> buf(8, 0.0f);
    Tensor odds = Tensor::from_blob_strided(buf.data() + 1, {2, 2}, {4, 2}, DType::Float32, Device::cpu());
    odds.fill_(-1.25);
    EXPECT_EQ(buf, (std::vector<float>{0, -1.25f, 0, -1.25f, 0, -1.25f, 0, -1.25f}));

    Tensor h = Tensor::empty({3, 2, 2, 2}, DType::Float16, Device::cpu(), Layout::NHWC);
    h.fill_(1.0 / 3.0);
    for (int64_t i = 0; i < h.numel(); ++i) EXPECT_EQ(h.data<Half>()[i].bits, 0x3555);
    Tensor i64 = Tensor::empty({3}, DType::Int64);
    i64.fill_(7.9);
    EXPECT_EQ(i64.item({2}), 7.0);
    EXPECT_NO_THROW(Tensor::empty({0}, DType::Float32).fill_(1));
}

TEST(Item, ReadsAndWritesByLogicalIndex) {
    Tensor t = Tensor::empty({2, 3, 2, 2}, DType::Float32, Device::cpu(), Layout::NHWC);
    t.fill_(0);
    t.set_item({1, 2, 1, 0}, 4.5);
    EXPECT_EQ(t.item({1, 2, 1, 0}), 4.5);
    EXPECT_EQ(t.data<float>()[12 + 6 + 2], 4.5f);  // n*HWC + h*WC + c

    Tensor h = Tensor::empty({2}, DType::Float16);
    h.set_item({0}, 1.0 + 1.0 / 2048);  // tie rounds to even
    EXPECT_EQ(h.data<Half>()[0].bits, 0x3C00);
    h.set_item({1}, 70000);
    EXPECT_EQ(h.item({1}), INFINITY);

    Tensor b = Tensor::empty({1}, DType::BFloat16);
    b.set_item({0}, NAN);
    EXPECT_TRUE(std::isnan(b.item({0})));

    EXPECT_ERROR_CONTAINS(t.item({0, 0, 0}), "Tensor::item: index has 3 entries, expected 4");
    EXPECT_ERROR_CONTAINS(t.item({0, 3, 0, 0}), "Tensor::item: index[1] = 3, expected 0 <= index < 3");
    EXPECT_ERROR_CONTAINS(t.item({0, 0, -1, 0}), "index[2] = -1");
    EXPECT_ERROR_CONTAINS(t.set_item({2, 0, 0, 0}, 1), "Tensor::set_item: index[0] = 2, expected 0 <= index < 2");
    EXPECT_ERROR_CONTAINS(t.set_item({}, 1), "Tensor::set_item: index has 0 entries, expected 4");
}

TEST(Clone, CopiesIntoNewStorageWithSameLayout) {
    Tensor t = iota_tensor({2, 3, 2, 2}, DType::BFloat16, Layout::NHWC);
    Tensor c = t.clone();
    EXPECT_FALSE(c.same_storage(t));
    EXPECT_EQ(c.layout(), Layout::NHWC);
    EXPECT_EQ(c.strides(), t.strides());
    EXPECT_EQ(c.dtype(), DType::BFloat16);
    EXPECT_EQ(std::memcmp(c.raw_data(), t.raw_data(), t.nbytes()), 0);
    c.fill_(0);
    EXPECT_EQ(t.item({1, 2, 1, 1}), 23.0);
}

TEST(Contiguous, AliasesWhenDenseCopiesOtherwise) {
    Tensor t = iota_tensor({2, 3, 4, 5}, DType::Float32, Layout::NCHW);
    Tensor same = t.contiguous(Layout::NCHW);
    EXPECT_TRUE(same.same_storage(t));
    EXPECT_EQ(same.raw_data(), t.raw_data());

    Tensor last = t.contiguous(Layout::NHWC);
    EXPECT_FALSE(last.same_storage(t));
    EXPECT_EQ(last.layout(), Layout::NHWC);
    EXPECT_EQ(last.strides(), (Shape{60, 1, 15, 3}));
    EXPECT_TRUE(last.is_contiguous());
    EXPECT_EQ(last.item({1, 2, 3, 4}), t.item({1, 2, 3, 4}));
    EXPECT_EQ(last.contiguous(Layout::NHWC).raw_data(), last.raw_data());

    // One channel: the bytes are already channels-last, so only the label and
    // the canonical strides change.
    Tensor one = iota_tensor({2, 1, 3, 3}, DType::Float32, Layout::NCHW);
    Tensor relabelled = one.contiguous(Layout::NHWC);
    EXPECT_TRUE(relabelled.same_storage(one));
    EXPECT_EQ(relabelled.layout(), Layout::NHWC);
    EXPECT_EQ(relabelled.strides(), (Shape{9, 1, 3, 1}));
    EXPECT_EQ(relabelled.item({1, 0, 2, 1}), one.item({1, 0, 2, 1}));

    std::vector<float> buf(12, 1.0f);
    Tensor gappy = Tensor::from_blob_strided(buf.data(), {2, 3}, {6, 2}, DType::Float32, Device::cpu());
    Tensor packed = gappy.contiguous(Layout::NCHW);
    EXPECT_FALSE(packed.same_storage(gappy));
    EXPECT_EQ(packed.strides(), (Shape{3, 1}));
}

TEST(To, SameDeviceAliasesOthersAreUnsupported) {
    Tensor t = Tensor::empty({2}, DType::Float32);
    Tensor u = t.to(Device::cpu());
    EXPECT_TRUE(u.same_storage(t));
    EXPECT_ERROR_CONTAINS(t.to(Device::cuda(99)), "cuda:99");  // no such device (or no driver at all)
}

}  // namespace
}  // namespace bnforge

namespace {

TEST(HostCache, ReusesReleasedBlocksOfTheSameSizeWithinTheLimit) {
    using namespace bnforge;
    // The test environment poisons every new tensor (test_environment.cpp).
    const size_t previous = host_cache_limit();
    // The default holds a layer's outputs at batch 256 (two 822 MB tensors where RAM allows).
    if (!std::getenv("BNFORGE_HOST_CACHE_BYTES")) {
        EXPECT_GE(previous, size_t{1} << 30);
    }
    const std::vector<int64_t> shape{4, 64, 32, 32};  // 1 MiB of float32
    void* first = nullptr;
    {
        Tensor t = Tensor::empty(shape, DType::Float32);
        first = t.raw_data();
        t.fill_(3.0);
    }
    {
        Tensor again = Tensor::empty(shape, DType::Float32);
        EXPECT_EQ(again.raw_data(), first);
        // Reused blocks are poisoned too: last step's output cannot pass for a kernel's.
        EXPECT_TRUE(std::isnan(again.item({1, 2, 3, 4})));
        Tensor other = Tensor::empty(shape, DType::Float32);
        EXPECT_NE(other.raw_data(), first);
    }
    {
        // Of two free blocks of one size, the one released last comes back first:
        // its lines are the ones still in cache (the oldest would be the coldest).
        void* a = nullptr;
        void* b = nullptr;
        {
            Tensor ta = Tensor::empty(shape, DType::Float32);
            Tensor tb = Tensor::empty(shape, DType::Float32);
            a = ta.raw_data();
            b = tb.raw_data();
            ta = Tensor();  // released first
        }                   // then tb
        Tensor next = Tensor::empty(shape, DType::Float32);
        EXPECT_EQ(next.raw_data(), b);
        EXPECT_NE(next.raw_data(), a);
    }
    {
        // Small blocks too (a call's per-channel tensors). Without the cache,
        // malloc would hand the freed block to the next request of its size.
        void* small = nullptr;
        { small = Tensor::empty({3, 64}, DType::Float64).raw_data(); }
        void* taken = std::aligned_alloc(64, 3 * 64 * sizeof(double));
        Tensor again = Tensor::empty({3, 64}, DType::Float64);
        EXPECT_EQ(again.raw_data(), small);
        EXPECT_NE(taken, small);
        std::free(taken);
        // And blocks below glibc's per-thread cache size (a 256-byte channel
        // vector): 64-byte aligned requests bypass that cache.
        void* vector = nullptr;
        { vector = Tensor::empty({64}, DType::Float32).raw_data(); }
        void* taken_vector = std::aligned_alloc(64, 64 * sizeof(float));
        Tensor again_vector = Tensor::empty({64}, DType::Float32);
        EXPECT_EQ(again_vector.raw_data(), vector);
        EXPECT_NE(taken_vector, vector);
        std::free(taken_vector);
    }
    set_host_cache_limit(0);  // trims everything, and keeps nothing from now on
    { Tensor t = Tensor::empty(shape, DType::Float32); }
    EXPECT_EQ(host_cache_limit(), 0u);
    set_host_cache_limit(previous);
    empty_host_cache();
}

}  // namespace
