// Dynamic (per token) activation quantizers, fused into the op that produces
// the activation, as in Atom:
//
//   input_layernorm      -> RmsNormReorderQuantize -> q/k/v_proj  (W4A4Linear)
//   post_attention_norm  -> RmsNormReorderQuantize -> gate/up_proj
//   silu(gate) * up      -> SiluMulQuantize        -> down_proj
//   attention output     -> ReorderQuantize        -> o_proj
//
// Each writes a W4A4Matrix with rows = tokens in the layout
// QuantLayout::FromRecipe(recipe, k) (group 128, recipe.keeper INT8 keepers,
// INT4 scale = fp16(recipe.act_clip * amax / 7)); see w4a4_format.h.
//
// perm (length k) gathers channels: quantized position j holds the op's output
// channel perm[j]. An EMPTY perm means identity, e.g. for SiluMulQuantize when
// gate/up_proj rows were permuted offline so that their outputs already come
// in down_proj's reordered order.
//
// Float math (fp32, the definition a GPU kernel is compared against):
//   RMSNorm:  ss = Σ_c double(x_c)²  (double accumulation, channel order)
//             inv = float(1 / sqrt(ss / k + eps))       (computed in double)
//             y_c = (x_c * inv) * weight_c              (fp32)
//   SiLU·up:  y_c = (g_c / (1 + exp(-g_c))) * u_c       (fp32, std::exp)
// Each fused op has a *Reference twin that first materializes the float result
// [tokens, k], then gathers and quantizes it; the fused op equals its twin
// exactly (same codes, same scale bits). A GPU kernel using a different exp or
// reduction order may differ from these by one code at rounding boundaries.
//
// Errors: kInvalidArgument for an invalid recipe, keeper > k, or a perm that is
// neither empty nor a permutation of [0, k). Inputs must be finite.
// Thread safety: writes only *out; rows (tokens) are split over pool
// (nullptr: calling thread).
#pragma once

#include <cstdint>
#include <span>

#include "absl/status/status.h"
#include "common/thread_pool.h"
#include "kernels/quant/w4a4_format.h"

namespace atomserve::quant {

// out = quantize(x[t, perm[j]]) for x[tokens, k].
absl::Status ReorderQuantize(const float* x, int64_t tokens, int64_t k, std::span<const int32_t> perm,
                             const QuantRecipe& recipe, W4A4Matrix* out, ThreadPool* pool);

// out = quantize(rmsnorm(x)[t, perm[j]]); norm_weight[k].
absl::Status RmsNormReorderQuantize(const float* x, const float* norm_weight, float eps, int64_t tokens,
                                    int64_t k, std::span<const int32_t> perm, const QuantRecipe& recipe,
                                    W4A4Matrix* out, ThreadPool* pool);

// out = quantize((silu(gate) * up)[t, perm[j]]); gate, up [tokens, k].
absl::Status SiluMulQuantize(const float* gate, const float* up, int64_t tokens, int64_t k,
                             std::span<const int32_t> perm, const QuantRecipe& recipe, W4A4Matrix* out,
                             ThreadPool* pool);

// Unfused float-path twins: float result -> gather -> QuantizeRows.
absl::Status ReorderQuantizeReference(const float* x, int64_t tokens, int64_t k, std::span<const int32_t> perm,
                                      const QuantRecipe& recipe, W4A4Matrix* out);
absl::Status RmsNormReorderQuantizeReference(const float* x, const float* norm_weight, float eps,
                                             int64_t tokens, int64_t k, std::span<const int32_t> perm,
                                             const QuantRecipe& recipe, W4A4Matrix* out);
absl::Status SiluMulQuantizeReference(const float* gate, const float* up, int64_t tokens, int64_t k,
                                      std::span<const int32_t> perm, const QuantRecipe& recipe,
                                      W4A4Matrix* out);

}  // namespace atomserve::quant
