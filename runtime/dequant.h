// Weight-format conversions for the checkpoint loaders: GGML block
// quantizations and 16-bit floats to float32, plus the RoPE row permutation
// llama.cpp applies to q_proj/k_proj.
//
// Block layouts follow ggml (ggml-common.h); all values little-endian:
//   Q4_0: fp16 d, 16 bytes of nibbles (32 weights). Low nibbles are elements
//         0..15, high nibbles 16..31; value = (q - 8) * d.
//   Q4_1: fp16 d, fp16 m, 16 bytes of nibbles; value = q * d + m.
//   Q8_0: fp16 d, 32 int8; value = q * d.
//
//   const GgmlTypeInfo* info = FindGgmlType(type_id);   // nullptr: unsupported
//   Dequantize(info->type, src, numel, dst.data());
#pragma once

#include <cstdint>
#include <cstring>

namespace atomserve {

// ggml's type ids (enum ggml_type) for the formats we decode.
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ8_0 = 8,
  kBF16 = 30,
};

struct GgmlTypeInfo {
  GgmlType type;
  const char* name;
  int64_t block_elems;  // weights per block (1 for plain floats)
  int64_t block_bytes;  // bytes per block
};

// Returns the layout of a supported type id, or nullptr.
const GgmlTypeInfo* FindGgmlType(uint32_t id);

// ggml's name for any type id ("Q4_K", ...), or "unknown"; for error
// messages about unsupported types.
const char* GgmlTypeName(uint32_t id);

// IEEE half -> float, exact (subnormals, inf and NaN included).
inline float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);  // rebias 15 -> 127
  } else {
    // Zero or subnormal: mant * 2^-24 is exact in float.
    const float f = static_cast<float>(mant) * 5.9604644775390625e-08f;
    return sign ? -f : f;
  }
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

// bfloat16 is the top half of a float32.
inline float BFloat16ToFloat(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

// Decodes `numel` weights (a multiple of the type's block_elems) from `src`
// (numel / block_elems * block_bytes bytes, any alignment) into `dst`. Large
// inputs are split over ThreadPool::Default().
void Dequantize(GgmlType type, const uint8_t* src, int64_t numel, float* dst);

// Undoes llama.cpp's q/k permutation in place. The converter stored
//   w.reshape(n_head, 2, head_dim/2, cols).swapaxes(1, 2).reshape(rows, cols)
// (interleaved RoPE pairs); this restores the Hugging Face row order, where
// row d pairs with row d + head_dim/2 of the same head. Requires rows to be
// n_head * head_dim with head_dim even.
void UnpermuteRopeRows(float* data, int64_t rows, int64_t cols, int64_t n_head);

}  // namespace atomserve
