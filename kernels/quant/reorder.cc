#include "kernels/quant/reorder.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace atomserve::quant {
namespace {

// Rows of H computed together, so each x row is read once per tile.
constexpr int64_t kHessianRowTile = 8;

}  // namespace

absl::Status ValidatePermutation(std::span<const int32_t> perm, int64_t k) {
  if (static_cast<int64_t>(perm.size()) != k) {
    return absl::InvalidArgumentError(
        absl::StrCat("permutation has ", perm.size(), " entries, expected K=", k));
  }
  std::vector<bool> seen(k, false);
  for (size_t j = 0; j < perm.size(); ++j) {
    const int32_t c = perm[j];
    if (c < 0 || c >= k || seen[c]) {
      return absl::InvalidArgumentError(absl::StrCat("permutation entry ", j, " = ", c,
                                                     " is out of range or repeated (K=", k, ")"));
    }
    seen[c] = true;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> SaliencePermutation(std::span<const double> salience) {
  if (salience.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return absl::InvalidArgumentError(absl::StrCat("too many channels: ", salience.size()));
  }
  for (size_t c = 0; c < salience.size(); ++c) {
    if (std::isnan(salience[c])) {
      return absl::InvalidArgumentError(absl::StrCat("salience of channel ", c, " is NaN"));
    }
  }
  std::vector<int32_t> perm(salience.size());
  std::iota(perm.begin(), perm.end(), 0);
  std::stable_sort(perm.begin(), perm.end(),
                   [&](int32_t a, int32_t b) { return salience[a] < salience[b]; });
  return perm;
}

std::vector<int32_t> InvertPermutation(std::span<const int32_t> perm) {
  std::vector<int32_t> inverse(perm.size());
  for (size_t j = 0; j < perm.size(); ++j) inverse[perm[j]] = static_cast<int32_t>(j);
  return inverse;
}

void AccumulateSalience(const float* x, int64_t tokens, int64_t k, double* salience) {
  for (int64_t t = 0; t < tokens; ++t) {
    const float* row = x + t * k;
    for (int64_t c = 0; c < k; ++c) salience[c] += static_cast<double>(row[c]) * row[c];
  }
}

void AccumulateHessian(const float* x, int64_t tokens, int64_t k, double* hessian, ThreadPool* pool) {
  const int64_t tiles = (k + kHessianRowTile - 1) / kHessianRowTile;
  auto run = [&](int64_t tile_begin, int64_t tile_end) {
    std::vector<double> row(k);
    for (int64_t tile = tile_begin; tile < tile_end; ++tile) {
      const int64_t i0 = tile * kHessianRowTile;
      const int64_t i1 = std::min(k, i0 + kHessianRowTile);
      for (int64_t t = 0; t < tokens; ++t) {
        const float* xt = x + t * k;
        for (int64_t j = 0; j < k; ++j) row[j] = xt[j];
        for (int64_t i = i0; i < i1; ++i) {
          const double xi = xt[i];
          double* h = hessian + i * k;
          for (int64_t j = 0; j < k; ++j) h[j] += xi * row[j];
        }
      }
    }
  };
  if (pool != nullptr) {
    pool->ParallelFor(tiles, run);
  } else {
    run(0, tiles);
  }
}

std::vector<double> HessianDiagonal(std::span<const double> hessian, int64_t k) {
  ATOMSERVE_CHECK(static_cast<int64_t>(hessian.size()) == k * k);
  std::vector<double> diag(k);
  for (int64_t i = 0; i < k; ++i) diag[i] = hessian[i * k + i];
  return diag;
}

void PermuteColumns(const float* w, int64_t rows, int64_t k, std::span<const int32_t> perm, float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* src = w + r * k;
    float* dst = out + r * k;
    for (int64_t j = 0; j < k; ++j) dst[j] = src[perm[j]];
  }
}

void PermuteRows(const float* w, int64_t cols, std::span<const int32_t> perm, float* out) {
  for (size_t j = 0; j < perm.size(); ++j) {
    std::copy_n(w + static_cast<int64_t>(perm[j]) * cols, cols, out + static_cast<int64_t>(j) * cols);
  }
}

void PermuteSymmetric(const double* h, int64_t k, std::span<const int32_t> perm, double* out) {
  for (int64_t i = 0; i < k; ++i) {
    const double* src = h + static_cast<int64_t>(perm[i]) * k;
    double* dst = out + i * k;
    for (int64_t j = 0; j < k; ++j) dst[j] = src[perm[j]];
  }
}

}  // namespace atomserve::quant
