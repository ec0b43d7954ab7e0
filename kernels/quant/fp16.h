// IEEE-754 binary16 ("fp16", "half") conversions on raw bits.
//
// Quantization scales are stored as fp16 bit patterns (uint16_t) so that the
// CPU reference, the checkpoint file and the GPU kernels all use the very same
// scale value: every computation converts the stored bits back with
// HalfBitsToFloat, never reuses the fp32 value it was rounded from.
//
// Conversions are exact software implementations (no dependence on F16C or
// compiler _Float16 support): FloatToHalfBits rounds to nearest, ties to even,
// like a hardware cvt; the directed variants round toward +inf / -inf. Values
// beyond the fp16 range become +-inf (round-to-nearest) and NaN stays NaN.
// All functions are pure and thread-safe.
#pragma once

#include <cstdint>

namespace atomserve::quant {

// Largest finite fp16 value.
inline constexpr float kHalfMax = 65504.0f;

// Round to nearest even; |f| >= 65520 gives inf; NaN gives a quiet NaN.
uint16_t FloatToHalfBits(float f);
// The nearest fp16 value >= f (toward +inf).
uint16_t FloatToHalfBitsUp(float f);
// The nearest fp16 value <= f (toward -inf).
uint16_t FloatToHalfBitsDown(float f);
// Exact: every fp16 value is representable in fp32.
float HalfBitsToFloat(uint16_t h);

// f rounded to fp16 precision and back (round to nearest even).
inline float RoundToHalf(float f) { return HalfBitsToFloat(FloatToHalfBits(f)); }

}  // namespace atomserve::quant
