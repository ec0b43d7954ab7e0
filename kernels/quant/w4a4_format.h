// Atom W4A4 quantization formats: the single source of truth for layouts,
// scale rules and the integer/float contract of the W4A4 linear layer.
// docs/quant-format.md is the prose version; when they disagree, this header
// (and its implementation) wins and the doc is a bug.
//
// ── The layer ───────────────────────────────────────────────────────────────
// A linear layer y[T, N] = x[T, K] · W[N, K]ᵀ (+ residual). Its K input
// channels are reordered by a permutation `perm` (length K; perm[j] = the
// original channel that sits at reordered position j), ascending by
// calibration salience, so the `keeper` most salient channels come last:
//
//   reordered position:  0 ............................ K_n-1 | K_n ...... K-1
//                        "normal" channels, INT4, groups of 128 | keepers, INT8
//
// with K_n = K - keeper and G = ceil(K_n / 128) groups. A partial last group
// is zero-padded to 128 channels: padding codes are 0 in both weights and
// activations, so integer sums are unchanged (hidden 576 with keeper 128 gives
// K_n = 448 = 3·128 + 64, i.e. G = 4 with 64 padded channels).
// keeper may be 0 (pure INT4) or K (pure INT8); it must be a multiple of 16
// (16-byte vector loads of keeper codes on the GPU).
//
// Weights are stored already reordered (column j of the stored matrix is
// original column perm[j]); activations are reordered by the op that produces
// them (see activation_quant.h). perm itself is not part of W4A4Matrix: one
// permutation is shared by every layer that reads the same activation
// (q/k/v_proj, gate/up_proj).
//
// ── Scales and codes (identical for weights and activations) ────────────────
// Per row (an output channel n of W, or a token t of x), per group g:
//   amax  = max |v| over the group's real (unpadded) channels
//   scale = fp16( min((clip * amax) / 7, 65504) )             Int4ScaleBits()
//   code  = clamp(round_half_away(v / scale), -8, 7)          QuantizeSymmetric()
//           (code = 0 for every element when scale == 0, e.g. an all-zero group)
// clip = QuantRecipe::weight_clip (0.85) for weights, act_clip (0.9) for
// activations. Keeper channels, per row, unclipped:
//   scale = fp16( min(amax / 127, 65504) )                    Int8ScaleBits()
//   code  = clamp(round_half_away(v / scale), -128, 127)
// All arithmetic is fp32 (v / scale is an IEEE division, not a reciprocal
// multiply) and ALWAYS uses the fp16-rounded scale. Dequantized value:
// float(code) * scale (exact in fp32).
//
// ── Storage (row-major, outermost first) ─────────────────────────────────────
//   packed        uint8  [rows][G * 64]   INT4 codes, two's complement nibbles;
//                                         element 2i of the row in the LOW
//                                         nibble of byte i, 2i+1 in the HIGH.
//   scales        uint16 [rows][G]        fp16 bits
//   keeper_codes  int8   [rows][keeper]
//   keeper_scales uint16 [rows]           fp16 bits (empty when keeper == 0)
// Weights: rows = N (output channels). Activations: rows = T (tokens).
//
// ── The linear contract (w4a4_linear.h) ─────────────────────────────────────
// For token t and output n:
//   acc[g] = Σ_{i in group g} a_code[t, i] * w_code[n, i]       int32, exact
//   acc[G] = Σ_{keeper i}     a_kcode[t, i] * w_kcode[n, i]     int32, exact
//   y = 0; for g in 0..G-1: y += (float(acc[g]) * s_a[t, g]) * s_w[n, g]
//   y += (float(acc[G]) * s_ak[t]) * s_k[n]
//   y += residual[t, n]                               (when given)
// This is PromoteAccumulators(), in fp32; the compiler may contract a
// multiply-add into an FMA, so the float result is reproducible only within
// one build. The int32 accumulators are the bit-exact target for GPU kernels;
// GPU float outputs (any summation order, FMA or not) are compared with
//   |y_gpu - y_ref| <= 1e-5 * Σ_i |â[t, i] · ŵ[n, i]|  (+ 1e-5 * |residual|)
// where â, ŵ are the dequantized values (the fp32 epilogue's own error is
// below (G + 3) · 2^-24 of that sum).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/quant/fp16.h"

namespace atomserve::quant {

// The only group size the formats support (GPU kernels hard-code it).
inline constexpr int64_t kGroupSize = 128;
// Keeper counts must be multiples of this.
inline constexpr int64_t kKeeperAlign = 16;
inline constexpr int kInt4Min = -8;
inline constexpr int kInt4Max = 7;
inline constexpr int kInt8Min = -128;
inline constexpr int kInt8Max = 127;

// How a model is quantized. Validate() is called by every entry point that
// takes a recipe; it returns kInvalidArgument naming the bad field.
struct QuantRecipe {
  int group_size = 128;       // must equal kGroupSize
  int keeper = 128;           // INT8 outlier channels per layer input
  float weight_clip = 0.85f;  // INT4 weight scale = clip * max|w| / 7, in (0, 1]
  float act_clip = 0.9f;      // INT4 activation scale = clip * max|x| / 7, in (0, 1]
  bool gptq = true;           // GPTQ for weights (needs a Hessian); false = RTN
  float gptq_damp = 0.01f;    // damping as a fraction of mean(diag H), >= 0
  int gptq_block = 128;       // GPTQ lazy-update block; a multiple of group_size

  absl::Status Validate() const;
};

// Geometry of one quantized K dimension. Construct with Make(); fields are
// public for reading, and a layout built by hand must satisfy Make's checks.
struct QuantLayout {
  int64_t k = 0;       // total input channels
  int64_t keeper = 0;  // INT8 channels at reordered positions [k - keeper, k)
  int64_t group_size = kGroupSize;

  // Errors: kInvalidArgument when k < 1, keeper < 0, keeper > k, keeper not a
  // multiple of 16, or group_size != 128.
  static absl::StatusOr<QuantLayout> Make(int64_t k, int64_t keeper,
                                          int64_t group_size = kGroupSize);
  // Make(k, recipe.keeper, recipe.group_size) after recipe.Validate().
  static absl::StatusOr<QuantLayout> FromRecipe(const QuantRecipe& recipe, int64_t k);

  int64_t normal_k() const { return k - keeper; }
  int64_t groups() const { return (normal_k() + group_size - 1) / group_size; }
  int64_t padded_normal_k() const { return groups() * group_size; }
  int64_t packed_row_bytes() const { return padded_normal_k() / 2; }
  // Int32 accumulators per (token, output) pair: one per group, then keeper.
  int64_t accumulators() const { return groups() + 1; }

  bool operator==(const QuantLayout&) const = default;
};

// A quantized matrix: weights (rows = output channels) or activations
// (rows = tokens), in reordered channel order. Storage as in the header
// comment. Plain data; not synchronized.
struct W4A4Matrix {
  QuantLayout layout;
  int64_t rows = 0;
  std::vector<uint8_t> packed;          // [rows][layout.packed_row_bytes()]
  std::vector<uint16_t> scales;         // [rows][layout.groups()], fp16 bits
  std::vector<int8_t> keeper_codes;     // [rows][layout.keeper]
  std::vector<uint16_t> keeper_scales;  // [rows] fp16 bits; empty if keeper == 0

  // Sizes every vector for (layout, rows). Existing storage is reused and its
  // contents are unspecified until a quantizer overwrites them.
  void Resize(const QuantLayout& new_layout, int64_t new_rows);
  // kInvalidArgument when the layout is invalid or a vector's size does not
  // match (layout, rows), e.g. for data read from a file.
  absl::Status CheckConsistent() const;

  const uint8_t* packed_row(int64_t r) const { return packed.data() + r * layout.packed_row_bytes(); }
  const uint16_t* scale_row(int64_t r) const { return scales.data() + r * layout.groups(); }
  const int8_t* keeper_row(int64_t r) const { return keeper_codes.data() + r * layout.keeper; }
  uint8_t* packed_row(int64_t r) { return packed.data() + r * layout.packed_row_bytes(); }
  uint16_t* scale_row(int64_t r) { return scales.data() + r * layout.groups(); }
  int8_t* keeper_row(int64_t r) { return keeper_codes.data() + r * layout.keeper; }
  // fp16 bits of row r's keeper scale; 0 (= +0.0) when keeper == 0.
  uint16_t keeper_scale(int64_t r) const { return keeper_scales.empty() ? 0 : keeper_scales[r]; }

  // Bytes of quantized storage (codes + scales).
  uint64_t bytes() const;
};

// ── Scale and code rules ────────────────────────────────────────────────────

// max |x[i]| over n values; NaNs are ignored, 0 for n == 0, inf counts.
float AbsMax(const float* x, int64_t n);

// fp16 bits of the INT4 group scale for a group whose max |v| is amax.
inline uint16_t Int4ScaleBits(float amax, float clip) {
  return FloatToHalfBits(std::min((clip * amax) / 7.0f, kHalfMax));
}

// fp16 bits of the INT8 (keeper / per-channel) scale.
inline uint16_t Int8ScaleBits(float amax) {
  return FloatToHalfBits(std::min(amax / 127.0f, kHalfMax));
}

// clamp(round_half_away(q), qmin, qmax), and 0 for NaN (+-inf saturates).
// Branch-free so that loops over it vectorize (std::round and std::trunc do
// not, under GCC's default -ftrapping-math): clamping to [qmin-1, qmax+1]
// first changes nothing after the final clamp and keeps the int conversion in
// range; q - trunc(q) is exact.
inline int RoundClamp(float q, int qmin, int qmax) {
  q = q == q ? q : 0.0f;
  q = std::clamp(q, static_cast<float>(qmin - 1), static_cast<float>(qmax + 1));
  int t = static_cast<int>(q);  // truncates toward zero
  const float frac = q - static_cast<float>(t);
  t += static_cast<int>(frac >= 0.5f) - static_cast<int>(frac <= -0.5f);
  return std::clamp(t, qmin, qmax);
}

// clamp(round_half_away(x / scale), qmin, qmax); 0 when scale == 0 or when x
// is NaN (inputs are expected finite; +-inf saturates).
inline int QuantizeSymmetric(float x, float scale, int qmin, int qmax) {
  return scale == 0.0f ? 0 : RoundClamp(x / scale, qmin, qmax);
}

// codes[i] = QuantizeSymmetric(x[i], scale, qmin, qmax) for i < n (vectorized).
void QuantizeSymmetricSpan(const float* x, int64_t n, float scale, int qmin, int qmax, int8_t* codes);

// ── Nibble packing ──────────────────────────────────────────────────────────

// Byte holding two INT4 codes in [-8, 7]: lo in bits 0-3, hi in bits 4-7.
inline uint8_t PackInt4Pair(int lo, int hi) {
  return static_cast<uint8_t>((lo & 0xf) | ((hi & 0xf) << 4));
}
// Sign-extends the low / high nibble.
inline int8_t UnpackInt4Low(uint8_t b) {
  return static_cast<int8_t>(static_cast<int8_t>(static_cast<uint8_t>(b << 4)) >> 4);
}
inline int8_t UnpackInt4High(uint8_t b) { return static_cast<int8_t>(static_cast<int8_t>(b) >> 4); }

// Packs n codes (each in [-8, 7]) into ceil(n / 2) bytes; for odd n the last
// high nibble is 0.
void PackInt4(const int8_t* codes, int64_t n, uint8_t* packed);
// Unpacks n codes from ceil(n / 2) bytes.
void UnpackInt4(const uint8_t* packed, int64_t n, int8_t* codes);

// ── The fp32 epilogue ───────────────────────────────────────────────────────

// y = Σ_g (float(acc[g]) * act_scales[g]) * weight_scales[g], g ascending from
// y = 0, then + (float(acc[groups]) * act_keeper_scale) * weight_keeper_scale.
// acc has groups + 1 entries (QuantLayout::accumulators()); scales are fp32
// values of the stored fp16 bits. With keeper == 0 pass acc[groups] = 0 and
// keeper scales 0.
inline float PromoteAccumulators(const int32_t* acc, const float* act_scales,
                                 const float* weight_scales, int64_t groups,
                                 float act_keeper_scale, float weight_keeper_scale) {
  float y = 0.0f;
  for (int64_t g = 0; g < groups; ++g) {
    y += (static_cast<float>(acc[g]) * act_scales[g]) * weight_scales[g];
  }
  y += (static_cast<float>(acc[groups]) * act_keeper_scale) * weight_keeper_scale;
  return y;
}

}  // namespace atomserve::quant
