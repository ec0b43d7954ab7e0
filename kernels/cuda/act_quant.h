// Fused per-token activation quantization on the GPU (Atom's dynamic
// activation quantization), the CUDA twins of kernels/quant/activation_quant.h:
//
//   input_layernorm      -> RmsNormReorderQuantize -> q/k/v_proj  (W4A4Gemm)
//   post_attention_norm  -> RmsNormReorderQuantize -> gate/up_proj
//   silu(gate) * up      -> SiluMulQuantize        -> down_proj
//   attention output     -> ReorderQuantize        -> o_proj
//
// Each reads x[tokens][k] (InT = float, __nv_bfloat16 or __half; math in
// fp32 after conversion) and writes rows [0, tokens) of `out` in the W4A4
// layout of kernels/quant/w4a4_format.h: k = out.layout.k, keeper =
// out.layout.keeper, INT4 scale fp16(act_clip * amax / 7), INT8 keeper scale
// fp16(amax / 127), padding nibbles 0. perm is a DEVICE array of k int32
// (perm[j] = the input channel at quantized position j), or nullptr for the
// identity; it must be a permutation of [0, k) (out-of-range entries read
// channel 0 instead of faulting).
//
// Kernel: one block of 256 threads per token. The token's k values are
// computed once into shared memory (16-byte coalesced loads, the RMSNorm sum
// of squares and SiLU fused into that pass), then each warp quantizes
// 128-channel groups (4 channels per lane, warp-shuffle max, 2-byte packed
// stores) while the keeper channels get a block-wide max.
//
// Numerics against the CPU reference (quant::*Quantize, float inputs):
//   ReorderQuantize: identical codes and scales (same IEEE fp32 operations).
//   RmsNormReorderQuantize: sum of squares in double (a different order than
//     the CPU's channel order), 1 / sqrt in double rounded to float, then
//     (x * inv) * w in fp32 as on the CPU: identical except when the double
//     sums straddle a float rounding boundary of inv (not seen in practice).
//   SiluMulQuantize: device expf (<= 2 ulp) instead of glibc's, so a value can
//     differ by an ulp: a code may differ by 1 at a rounding boundary and a
//     group scale by one fp16 ulp (when its max element moved). Tests allow
//     |code difference| <= 1 and identical scales in >= 99.9% of groups.
//
// Errors: kInvalidArgument for missing pointers, out.rows < tokens, act_clip
// outside (0, 1], or k beyond the shared-memory budget (k <= ~50000);
// kInternal from the CUDA runtime. Launches are ordered on `stream`.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda/w4a4_gemm.h"

namespace atomserve::cuda {

// out = quantize(rmsnorm(x)[t, perm[j]]); norm_weight[k] in input order;
// RMSNorm y_c = (x_c * inv) * w_c with inv = 1 / sqrt(mean(x²) + eps).
template <typename InT>
absl::Status RmsNormReorderQuantize(const InT* x, const InT* norm_weight, float eps, int64_t tokens,
                                    const int32_t* perm, float act_clip, const DeviceW4A4Matrix& out,
                                    cudaStream_t stream);

// out = quantize((silu(gate) * up)[t, perm[j]]); gate and up rows are
// `row_stride` elements apart (k for separate [tokens][k] arrays; 2k with
// up = gate + k for one fused [tokens][2k] gate_up output).
template <typename InT>
absl::Status SiluMulQuantize(const InT* gate, const InT* up, int64_t row_stride, int64_t tokens,
                             const int32_t* perm, float act_clip, const DeviceW4A4Matrix& out, cudaStream_t stream);

// out = quantize(x[t, perm[j]]).
template <typename InT>
absl::Status ReorderQuantize(const InT* x, int64_t tokens, const int32_t* perm, float act_clip,
                             const DeviceW4A4Matrix& out, cudaStream_t stream);

#define ATOMSERVE_ACT_QUANT_EXTERN(T)                                                                           \
  extern template absl::Status RmsNormReorderQuantize<T>(const T*, const T*, float, int64_t, const int32_t*,   \
                                                         float, const DeviceW4A4Matrix&, cudaStream_t);        \
  extern template absl::Status SiluMulQuantize<T>(const T*, const T*, int64_t, int64_t, const int32_t*, float, \
                                                  const DeviceW4A4Matrix&, cudaStream_t);                      \
  extern template absl::Status ReorderQuantize<T>(const T*, int64_t, const int32_t*, float,                    \
                                                  const DeviceW4A4Matrix&, cudaStream_t);
ATOMSERVE_ACT_QUANT_EXTERN(float)
ATOMSERVE_ACT_QUANT_EXTERN(__nv_bfloat16)
ATOMSERVE_ACT_QUANT_EXTERN(__half)
#undef ATOMSERVE_ACT_QUANT_EXTERN

}  // namespace atomserve::cuda
