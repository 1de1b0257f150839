#include "bn_math.h"

#include <cmath>

namespace bnforge_gen {

Expr at(const Func& f, Layout layout, const Expr& s, const Expr& c, const Expr& n) {
    return layout == Layout::NCHW ? f(s, c, n) : f(c, s, n);
}

Expr widen_to_float(const Expr& v) {
    if (!v.type().is_bfloat()) return cast<float>(v);
    return reinterpret<float>(cast<uint32_t>(reinterpret<uint16_t>(v)) << 16);
}

Expr narrow_from_float(const Type& type, const Expr& v, Narrowing how) {
    if (!type.is_bfloat()) return cast(type, v);
    if (how == Narrowing::Native) {
        // A call Halide vectorizes into its x86 runtime's vcvtne2ps2bf16x32
        // (Halide 21 disabled its own pattern for the cast, halide/Halide#7219).
        // Every narrowing here is vectorized; a scalar one would fail to link.
        Expr bits = Internal::Call::make(UInt(16), "vcvtne2ps2bf16", {strict_float(v)}, Internal::Call::PureExtern);
        return reinterpret(BFloat(16), bits);
    }
    Expr bits = reinterpret<uint32_t>(strict_float(v));
    Expr bias = ((bits >> 16) & 1) + 0x7fff;
    // Rounding a NaN with low payload bits would carry it into the sign or out of the word.
    bits = how == Narrowing::ExactNanPayloads ? select(is_nan(v), bits, bits + bias) : bits + bias;
    return reinterpret(BFloat(16), cast<uint16_t>(bits >> 16));
}

Narrowing narrowing(const Target& target) {
    if (target.has_gpu_feature()) return Narrowing::ExactNanPayloads;
    const bool bf16 = target.arch == Target::X86 &&
                      (target.has_feature(Target::AVX512_Zen4) || target.has_feature(Target::AVX512_SapphireRapids));
    return bf16 ? Narrowing::Native : Narrowing::Exact;
}

Expr channel_constant(const Expr& v) {
    // Tested on the bits: Halide 21 lets LLVM assume float math yields no NaN
    // and fold a float is_nan away.
    Expr bits = reinterpret<uint32_t>(v);
    return reinterpret<float>(select((bits & 0x7fffffff) > 0x7f800000, cast<uint32_t>(0x7fc00000), bits));
}

Expr narrow_exact(const Type& type, const Expr& v) {
    if (!type.is_bfloat()) return cast(type, v);
    return reinterpret(BFloat(16), cast<uint16_t>(reinterpret<uint32_t>(v) >> 16));
}

Expr centred(const Expr& x, const Expr& shift, const Expr& offset) { return strict_float((x - shift) - offset); }

Expr normalized(const Expr& x, const Expr& shift, const Expr& offset, const Expr& scale, const Expr& beta,
                const Expr& addend) {
    Expr v = (x - shift - offset) * scale + beta;
    if (addend.defined()) v = v + addend;
    return strict_float(v);
}

Expr input_grad(const Expr& g, const Expr& xmu, const Expr& k_dy, const Expr& k_xmu, const Expr& k_bias) {
    return strict_float(g * k_dy - xmu * k_xmu - k_bias);
}

Expr relu(const Expr& v) { return select(v < 0.0f, 0.0f, v); }

Expr stored_positive(const Type& type, const Expr& v, Narrowing how) {
    // Exact: 2^-134 (bfloat16: float32's exponent range, 7 fraction bits; a
    // float32 subnormal) or 2^-25 (float16). Native: the largest float32
    // subnormal, 2^-126 less one float32 ulp. Float32 is stored as is.
    float limit = 0.0f;
    if (type.is_bfloat()) {
        limit = how == Narrowing::Native ? std::nextafter(std::ldexp(1.0f, -126), 0.0f) : std::ldexp(1.0f, -134);
    } else if (type.is_float() && type.bits() == 16) {
        limit = std::ldexp(1.0f, -25);
    }
    return v > limit;
}

MaskBits mask_bits(const Func& pre, const Type& type, Narrowing how, const Var& d0, const Var& d1, const Var& m,
                   const Expr& batch, bool predicated) {
    // The row clamped in both forms: bounds inference does not see the predicate.
    auto positive = [&](const Expr& row) { return stored_positive(type, pre(d0, d1, min(row, batch - 1)), how); };
    MaskBits b;
    if (!predicated) {
        Expr byte = cast<uint8_t>(0);
        for (int k = 0; k < kMaskRows; k++) {
            Expr row = m * kMaskRows + k;
            byte = byte | (cast<uint8_t>(positive(row) && row < batch) << k);
        }
        b.func(d0, d1, m) = byte;
        return b;
    }
    b.k = RDom(0, kMaskRows, "k");
    Expr row = m * kMaskRows + b.k;
    b.k.where(row < batch);
    b.func(d0, d1, m) = cast<uint8_t>(0);
    b.func(d0, d1, m) = b.func(d0, d1, m) | (cast<uint8_t>(positive(row)) << cast<uint8_t>(b.k));
    return b;
}

Expr mask_bit(const Func& mask, const Expr& d0, const Expr& d1, const Expr& n) {
    return ((mask(d0, d1, n / kMaskRows) >> cast<uint8_t>(n % kMaskRows)) & cast<uint8_t>(1)) != cast<uint8_t>(0);
}

Expr channel_shift(const Func& xf, const Expr& c, const Expr& spatial, const Expr& batch) {
    Expr samples = min(spatial * batch, kShiftSamples);
    Expr sum = 0.0f;
    for (int i = 0; i < kShiftSamples; i++) {
        Expr s = min(i, samples - 1) % spatial, n = min(i, samples - 1) / spatial;
        sum += select(i < samples, xf(s, c, n), 0.0f);
    }
    // Strict: the statistics must see one shift whatever schedule evaluates it
    // (a reassociated sum would differ by an ulp of the data, an error in the mean).
    return strict_float(sum / cast<float>(samples));
}

Tuple channel_moments(const Expr& shift, const Expr& sum_d, const Expr& sum_d2, const Expr& count) {
    return Tuple(strict_float(cast<double>(shift) + sum_d / count),
                 strict_float(max(sum_d2 - sum_d * (sum_d / count), cast<double>(0))));
}

Expr moment_row(const Expr& row, const Expr& count, const Tuple& mean_m2) {
    using namespace bnforge::abi;
    static_assert(kMomentCount == 0 && kMomentMean == 1 && kMomentM2 == 2 && kMomentRows == 3);
    return mux(row, {count, mean_m2[0], mean_m2[1]});
}

Expr sum_row(const Expr& row, const Tuple& sums) {
    using namespace bnforge::abi;
    static_assert(kSumDy == 0 && kSumDyXmu == 1 && kSumRows == 2);
    return mux(row, {sums[0], sums[1]});
}

Tuple merge_moments(const Tuple& acc, const Expr& count, const Expr& mean, const Expr& m2) {
    const Expr &na = acc[0], &mean_a = acc[1], &m2_a = acc[2];
    Expr n = na + count;
    Expr delta = mean - mean_a;
    Expr merged_mean = mean_a + delta * (count / n);
    Expr merged_m2 = m2_a + (m2 + delta * delta * (na * count / n));
    // An empty part changes nothing; a first part is taken as it is.
    return Tuple(strict_float(n), strict_float(select(count == 0, mean_a, na == 0, mean, merged_mean)),
                 strict_float(select(count == 0, m2_a, na == 0, m2, merged_m2)));
}

Expr inverse_std(const Expr& var, const Expr& eps) { return strict_float(cast<double>(1) / sqrt(var + eps)); }

Expr batch_variance(const Expr& m2, const Expr& count) {
    return strict_float(select(count > 0, m2 / count, cast<double>(1)));
}

ApplyConstants apply_constants(const Expr& mean, const Expr& invstd, const Expr& weight, const Expr& bias) {
    Expr shift = cast<float>(mean);
    return {channel_constant(strict_float(shift)),
            channel_constant(strict_float(cast<float>(mean - cast<double>(shift)))),
            channel_constant(strict_float(cast<float>(cast<double>(weight) * invstd))),
            channel_constant(cast<float>(bias))};
}

GradCoefficients grad_coefficients(const Expr& weight, const Expr& invstd, const Expr& sum_dy,
                                   const Expr& sum_dy_xmu, const Expr& count, bool batch_statistics) {
    Expr scale = cast<double>(weight) * invstd;
    GradCoefficients k;
    k.k_dy = channel_constant(strict_float(cast<float>(scale)));
    if (batch_statistics) {
        k.k_xmu = channel_constant(strict_float(cast<float>(scale * invstd * invstd * sum_dy_xmu / count)));
        k.k_bias = channel_constant(strict_float(cast<float>(scale * sum_dy / count)));
    } else {
        k.k_xmu = k.k_bias = 0.0f;
    }
    return k;
}

Expr running_update(const Expr& running, const Expr& batch, const Expr& factor) {
    return strict_float(cast<float>(factor * batch + (cast<double>(1) - factor) * cast<double>(running)));
}

Expr unbiased_variance(const Expr& m2, const Expr& count) { return strict_float(m2 / (count - 1)); }

Expr accumulate_grad(const Expr& accumulated, const Expr& term) {
    return strict_float(cast<float>(accumulated) + cast<float>(term));
}

}  // namespace bnforge_gen
