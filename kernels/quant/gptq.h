// GPTQ (Frantar et al., 2022) for Atom's mixed-precision weight layout.
//
// Input: W[N, K] and H = XᵀX [K, K] (double, from calibration activations),
// both ALREADY in reordered channel order (reorder.h: PermuteColumns,
// PermuteSymmetric; or use QuantizeLinearWeight in weight_quant.h, which does
// it). The algorithm, as in the reference implementation:
//   1. dead columns (H_ii == 0): H_ii = 1, W[:, i] = 0
//   2. H += damp * mean(diag H) * I          (damp = recipe.gptq_damp)
//   3. U = upper Cholesky factor of H⁻¹      (H⁻¹ = UᵀU)
//   4. for the INT4 columns i = 0 .. K_n-1, in blocks of recipe.gptq_block:
//        at a group start (i % 128 == 0) the group scale of every row is
//        computed from the CURRENT (error-updated) weights of that group,
//        fp16(weight_clip * amax / 7), exactly as RTN would;
//        q = quantize(W[:, i]); err = (W[:, i] - dequant(q)) / U[i, i];
//        W[:, j] -= err * U[i, j] for every later column j, eagerly inside the
//        block and lazily (one rank-B update) for columns past the block —
//        INCLUDING the keeper columns [K_n, K);
//   5. the keeper columns are then quantized INT8 RTN (amax / 127) from their
//      updated values.
// Output rows are independent given U, so they are split over the pool.
// Cost: O(K³) for step 3 plus O(N·K²) for step 4, all in double.
//
// Thread safety: pure functions of their inputs.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "common/thread_pool.h"
#include "kernels/quant/w4a4_format.h"

namespace atomserve::quant {

// Steps 1-3: U (row-major [k, k], zero below the diagonal) with
// UᵀU = (H' + damp·mean(diag H')·I)⁻¹, H' = H with dead diagonal entries set
// to 1. dead_columns (optional) receives 1 for each dead column.
// Errors: kInvalidArgument when hessian has != k*k entries, contains NaN/inf,
// or is not positive definite after damping.
absl::StatusOr<std::vector<double>> GptqInverseHessianFactor(std::span<const double> hessian, int64_t k,
                                                             double damp, std::vector<char>* dead_columns,
                                                             ThreadPool* pool);

// The whole algorithm; returns weights in the W4A4Matrix format with layout
// QuantLayout::FromRecipe(recipe, k). recipe.gptq is ignored (this IS GPTQ).
// Errors: kInvalidArgument for a bad recipe/shape or from
// GptqInverseHessianFactor.
absl::StatusOr<W4A4Matrix> QuantizeWeightsGptq(const float* w, int64_t n, int64_t k,
                                               std::span<const double> hessian, const QuantRecipe& recipe,
                                               ThreadPool* pool);

}  // namespace atomserve::quant
