#include "kernels/quant/fp16.h"

#include <bit>
#include <cmath>

namespace atomserve::quant {
namespace {

constexpr uint16_t kHalfSign = 0x8000;
constexpr uint16_t kHalfQuietNan = 0x7e00;
constexpr uint16_t kHalfInf = 0x7c00;

// The fp16 value adjacent to h in the direction of +inf (h must not be NaN).
uint16_t NextHalfUp(uint16_t h) {
  if (h == kHalfSign) return 0x0001;         // -0 -> smallest positive subnormal
  if (h & kHalfSign) return h - 1;           // negative: magnitude shrinks
  return h == kHalfInf ? h : h + 1;          // positive: magnitude grows
}

uint16_t NextHalfDown(uint16_t h) {
  if (h == 0x0000) return kHalfSign | 0x0001;
  if (h & kHalfSign) return h == (kHalfSign | kHalfInf) ? h : h + 1;
  return h - 1;
}

}  // namespace

// Follows F. Giesen's float_to_half_fast3_rtne: the subnormal range is
// rounded by the FPU itself (adding a magic constant aligns the mantissa), the
// normal range by integer round-half-even on the dropped 13 mantissa bits.
uint16_t FloatToHalfBits(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & kHalfSign);
  u &= 0x7fffffffu;
  constexpr uint32_t kF32Inf = 0xffu << 23;
  constexpr uint32_t kF16Overflow = (127u + 16u) << 23;  // 65536.0f
  if (u >= kF16Overflow) {
    return sign | (u > kF32Inf ? kHalfQuietNan : kHalfInf);
  }
  if (u < (113u << 23)) {  // below 2^-14: fp16 subnormal or zero
    constexpr uint32_t kDenormMagic = ((127u - 15u) + (23u - 10u) + 1u) << 23;  // 0.5f
    const float shifted = std::bit_cast<float>(u) + std::bit_cast<float>(kDenormMagic);
    return sign | static_cast<uint16_t>(std::bit_cast<uint32_t>(shifted) - kDenormMagic);
  }
  const uint32_t mantissa_odd = (u >> 13) & 1u;
  u += (static_cast<uint32_t>(15 - 127) << 23) + 0xfffu;  // rebias exponent, round
  u += mantissa_odd;                                      // ties to even
  return sign | static_cast<uint16_t>(u >> 13);
}

uint16_t FloatToHalfBitsUp(float f) {
  const uint16_t h = FloatToHalfBits(f);
  if (std::isnan(f)) return h;
  return HalfBitsToFloat(h) < f ? NextHalfUp(h) : h;
}

uint16_t FloatToHalfBitsDown(float f) {
  const uint16_t h = FloatToHalfBits(f);
  if (std::isnan(f)) return h;
  return HalfBitsToFloat(h) > f ? NextHalfDown(h) : h;
}

float HalfBitsToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & kHalfSign) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, exact in fp32
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 0x1f) {  // inf or NaN
    return std::bit_cast<float>(sign | 0x7f800000u | (mantissa << 13));
  }
  return std::bit_cast<float>(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

}  // namespace atomserve::quant
