// Channel reordering for Atom: salience statistics, the permutation that puts
// the most salient input channels last (where they become INT8 keepers), and
// helpers that apply a permutation to weights and Hessians.
//
// Convention everywhere: perm[j] = the ORIGINAL channel placed at reordered
// position j (a gather: reordered[j] = original[perm[j]]). See w4a4_format.h.
//
// Typical calibration flow for one layer input (e.g. the input of q/k/v_proj):
//   std::vector<double> h(K * K, 0.0);               // or only a diagonal
//   for each calibration batch x[T, K]: AccumulateHessian(x, T, K, h.data(), pool);
//   ATOMSERVE_ASSIGN_OR_RETURN(auto perm, SaliencePermutation(HessianDiagonal(h, K)));
//   ... QuantizeLinearWeight(w, N, K, perm, h.data(), recipe, pool)   (weight_quant.h)
//
// All functions are thread-safe on distinct outputs.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/thread_pool.h"

namespace atomserve::quant {

// kInvalidArgument unless perm has k entries forming a permutation of [0, k).
// An empty perm is NOT accepted here; functions that allow "identity" say so.
absl::Status ValidatePermutation(std::span<const int32_t> perm, int64_t k);

// perm sorted ascending by salience[perm[j]] (stable: ties keep channel
// order), so the largest-salience channels are last. salience is typically
// diag(XᵀX). kInvalidArgument on NaN entries or more than INT32_MAX channels.
absl::StatusOr<std::vector<int32_t>> SaliencePermutation(std::span<const double> salience);

// inverse[perm[j]] = j. perm must be valid.
std::vector<int32_t> InvertPermutation(std::span<const int32_t> perm);

// salience[c] += Σ_t x[t, c]²  (x[tokens, k]; salience has k entries).
void AccumulateSalience(const float* x, int64_t tokens, int64_t k, double* salience);

// hessian[i, j] += Σ_t x[t, i] * x[t, j]  (H = XᵀX, [k, k] row-major, double
// accumulation; both triangles are written). Splits rows of H over pool
// (nullptr: calling thread).
void AccumulateHessian(const float* x, int64_t tokens, int64_t k, double* hessian, ThreadPool* pool);

// diag(H) of a [k, k] matrix.
std::vector<double> HessianDiagonal(std::span<const double> hessian, int64_t k);

// out[r, j] = w[r, perm[j]] for w[rows, k]. perm must be valid; out must not
// alias w.
void PermuteColumns(const float* w, int64_t rows, int64_t k, std::span<const int32_t> perm, float* out);

// out[j, :] = w[perm[j], :] for w[rows = perm.size(), cols]: reorders OUTPUT
// channels. Used for Atom's free reorder of the MLP: permuting the rows of
// gate_proj and up_proj by down_proj's input perm makes silu(gate) * up come
// out already reordered, so SiluMulQuantize runs with an empty perm. perm must
// be valid; out must not alias w.
void PermuteRows(const float* w, int64_t cols, std::span<const int32_t> perm, float* out);

// out[i, j] = h[perm[i], perm[j]] for h[k, k]. perm must be valid; out must
// not alias h.
void PermuteSymmetric(const double* h, int64_t k, std::span<const int32_t> perm, double* out);

}  // namespace atomserve::quant
