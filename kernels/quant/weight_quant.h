// Offline weight quantization into the Atom W4A4 format: round-to-nearest
// (RTN) and the full per-layer entry point (reorder + GPTQ or RTN) that model
// integration calls once per linear layer.
//
//   // Calibration produced H [K, K] (original channel order) and perm.
//   ATOMSERVE_ASSIGN_OR_RETURN(W4A4Matrix wq,
//       QuantizeLinearWeight(w, N, K, perm, h, recipe, pool));
//   // At run time: W4A4Linear(xq, wq, ...), with xq quantized through the
//   // same perm (activation_quant.h).
//
// Thread safety: pure functions; rows are split over pool (nullptr: calling
// thread).
#pragma once

#include <cstdint>
#include <span>

#include "absl/status/statusor.h"
#include "common/thread_pool.h"
#include "kernels/quant/w4a4_format.h"

namespace atomserve::quant {

// RTN: each row of w[n, k] (already reordered) quantized independently,
// INT4 groups with recipe.weight_clip, INT8 keepers unclipped.
// Errors: kInvalidArgument for a bad recipe or keeper > k.
absl::StatusOr<W4A4Matrix> QuantizeWeightsRtn(const float* w, int64_t n, int64_t k, const QuantRecipe& recipe,
                                              ThreadPool* pool);

// The per-layer entry point. w[n, k] and hessian [k, k] are in the ORIGINAL
// channel order; perm (reorder.h; empty = identity) reorders both, then GPTQ
// (recipe.gptq; gptq.h) or RTN quantizes. hessian may be empty when
// recipe.gptq is false.
// Errors: kInvalidArgument for a bad recipe, perm, or Hessian (missing when
// recipe.gptq, wrong size, not positive definite after damping).
absl::StatusOr<W4A4Matrix> QuantizeLinearWeight(const float* w, int64_t n, int64_t k,
                                                std::span<const int32_t> perm, std::span<const double> hessian,
                                                const QuantRecipe& recipe, ThreadPool* pool);

}  // namespace atomserve::quant
