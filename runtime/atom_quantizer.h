// Whole-model Atom W4A4 quantization (the offline quantizer) and the float
// simulations used for accuracy ablations.
//
// QuantizeModelWeights turns fp32 weights plus calibration statistics
// (calibration.h) into W4A4 weights that LlamaModel runs on the integer path:
//   per layer, site perms = SaliencePermutation(diag XᵀX) (keepers last);
//   q, k, v: one QuantizeLinearWeight call on their stacked rows (one GPTQ
//            Cholesky for the shared Hessian), split afterwards;
//   o_proj, down_proj: their own perm and Hessian;
//   gate, up: rows permuted by down_proj's perm (the free MLP reorder), then
//            stacked and quantized with the mlp_in perm and Hessian.
// GPTQ (recipe.gptq) needs CalibrationStats with Hessians; RTN only the
// salience.
//
// Float twins (fake quantization), for measuring accuracy without, or
// against, the integer path:
//   DequantizeModelWeights + AtomFakeQuantHook: the same quantized values as
//     the integer path, run as fp32 matmuls; differs from the integer path
//     only by fp32 summation order and RMSNorm rounding.
//   FakeQuantizeLinearsPerRow + PerRowFakeQuantHook: naive baselines
//     (W8A8: 8 bits, clip 1; naive W4A4: 4 bits per output channel / per
//     token over the whole K, no groups, no reorder, no keepers).
//
// Thread safety: pure functions (rows split over ThreadPool::Default()); the
// hooks returned are thread-safe.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "common/progress.h"
#include "kernels/quant/w4a4_format.h"
#include "runtime/calibration.h"
#include "runtime/llama_model.h"

namespace atomserve {

// Errors: kInvalidArgument for a bad recipe, float weights that do not match
// the config, statistics of another model, or recipe.gptq without Hessians;
// GPTQ errors (Hessian not positive definite).
absl::StatusOr<ModelWeights> QuantizeModelWeights(const ModelConfig& config, const ModelWeights& fp32,
                                                  const CalibrationStats& stats, const quant::QuantRecipe& recipe,
                                                  const ProgressFn& progress = nullptr);

// Calibration (CollectCalibrationStats; Hessians only when recipe.gptq) then
// QuantizeModelWeights, for an fp32 model. stats_out (optional) receives the
// token and sequence counts (its per-layer statistics are dropped).
absl::StatusOr<ModelWeights> CalibrateAndQuantize(LlamaModel& fp32, std::span<const int32_t> calibration_ids,
                                                  const quant::QuantRecipe& recipe, int64_t seq_len,
                                                  const ProgressFn& calibration_progress = nullptr,
                                                  const ProgressFn& quantize_progress = nullptr,
                                                  CalibrationStats* stats_out = nullptr);

// Rows [begin, end) of a quantized matrix (same layout).
quant::W4A4Matrix SliceRows(const quant::W4A4Matrix& m, int64_t begin, int64_t end);

// fp32 weights holding the dequantized W4A4 values. Input columns are in the
// original order except down_proj's, which stay in its reordered order to
// match gate/up rows (still permuted by down_proj's perm). perms are dropped.
// Errors: kInvalidArgument for weights that are not W4A4.
absl::StatusOr<ModelWeights> DequantizeModelWeights(const ModelWeights& w4a4);

// Atom's dynamic activation quantization as a float hook for the twin of
// w4a4 (perms copied): attn_in, attn_out, mlp_in through their perms,
// mlp_hidden through the identity.
ActivationHook AtomFakeQuantHook(const ModelWeights& w4a4, const quant::QuantRecipe& recipe);

// Replaces every float linear weight by its per-output-channel fake
// quantization with `bits` bits. Errors: kInvalidArgument for bits outside
// [2, 8], clip outside (0, 1], or W4A4 weights.
absl::Status FakeQuantizeLinearsPerRow(ModelWeights& weights, int bits, float clip);

// Per-token fake quantization of every site's activations. Errors as above.
absl::StatusOr<ActivationHook> PerRowFakeQuantHook(int bits, float clip);

}  // namespace atomserve
