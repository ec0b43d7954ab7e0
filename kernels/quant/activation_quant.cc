#include "kernels/quant/activation_quant.h"

#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/quant/quant_util.h"
#include "kernels/quant/quantize.h"
#include "kernels/quant/reorder.h"

namespace atomserve::quant {
namespace {

constexpr int64_t kMinTokensPerChunk = 2;

// The float definitions of the fused ops (see the header). Fused and
// reference paths call exactly these, which is what makes them equal.
float RmsNormInverse(const float* x, int64_t k, float eps) {
  double sum_squares = 0.0;
  for (int64_t c = 0; c < k; ++c) sum_squares += static_cast<double>(x[c]) * x[c];
  return static_cast<float>(1.0 / std::sqrt(sum_squares / static_cast<double>(k) + eps));
}

float RmsNormValue(float x, float inv_rms, float weight) { return (x * inv_rms) * weight; }

float SiluMulValue(float gate, float up) { return (gate / (1.0f + std::exp(-gate))) * up; }

int64_t Channel(std::span<const int32_t> perm, int64_t j) { return perm.empty() ? j : perm[j]; }

// Layout for (recipe, k) after checking tokens and perm; the common preamble
// of every op.
absl::StatusOr<QuantLayout> PrepareLayout(const QuantRecipe& recipe, int64_t tokens, int64_t k,
                                          std::span<const int32_t> perm) {
  if (tokens < 0) return absl::InvalidArgumentError(absl::StrCat("tokens must be >= 0, got ", tokens));
  absl::StatusOr<QuantLayout> layout = QuantLayout::FromRecipe(recipe, k);
  if (!layout.ok()) return layout.status();
  if (!perm.empty()) {
    if (absl::Status st = ValidatePermutation(perm, k); !st.ok()) return st;
  }
  return layout;
}

// Fused driver: for each token, make_row(t, buffer) writes the k reordered
// float values, which are quantized straight into row t.
template <typename MakeRow>
absl::Status FusedQuantize(int64_t tokens, int64_t k, std::span<const int32_t> perm, const QuantRecipe& recipe,
                           W4A4Matrix* out, ThreadPool* pool, const MakeRow& make_row) {
  absl::StatusOr<QuantLayout> layout = PrepareLayout(recipe, tokens, k, perm);
  if (!layout.ok()) return layout.status();
  out->Resize(*layout, tokens);
  internal::ParallelRows(
      pool, tokens,
      [&](int64_t begin, int64_t end) {
        std::vector<float> row(k);
        for (int64_t t = begin; t < end; ++t) {
          make_row(t, row.data());
          QuantizeRow(row.data(), recipe.act_clip, t, out);
        }
      },
      kMinTokensPerChunk);
  return absl::OkStatus();
}

}  // namespace

absl::Status ReorderQuantize(const float* x, int64_t tokens, int64_t k, std::span<const int32_t> perm,
                             const QuantRecipe& recipe, W4A4Matrix* out, ThreadPool* pool) {
  return FusedQuantize(tokens, k, perm, recipe, out, pool, [&](int64_t t, float* row) {
    const float* src = x + t * k;
    for (int64_t j = 0; j < k; ++j) row[j] = src[Channel(perm, j)];
  });
}

absl::Status RmsNormReorderQuantize(const float* x, const float* norm_weight, float eps, int64_t tokens,
                                    int64_t k, std::span<const int32_t> perm, const QuantRecipe& recipe,
                                    W4A4Matrix* out, ThreadPool* pool) {
  return FusedQuantize(tokens, k, perm, recipe, out, pool, [&](int64_t t, float* row) {
    const float* src = x + t * k;
    const float inv_rms = RmsNormInverse(src, k, eps);
    for (int64_t j = 0; j < k; ++j) {
      const int64_t c = Channel(perm, j);
      row[j] = RmsNormValue(src[c], inv_rms, norm_weight[c]);
    }
  });
}

absl::Status SiluMulQuantize(const float* gate, const float* up, int64_t tokens, int64_t k,
                             std::span<const int32_t> perm, const QuantRecipe& recipe, W4A4Matrix* out,
                             ThreadPool* pool) {
  return FusedQuantize(tokens, k, perm, recipe, out, pool, [&](int64_t t, float* row) {
    const float* g = gate + t * k;
    const float* u = up + t * k;
    for (int64_t j = 0; j < k; ++j) {
      const int64_t c = Channel(perm, j);
      row[j] = SiluMulValue(g[c], u[c]);
    }
  });
}

absl::Status ReorderQuantizeReference(const float* x, int64_t tokens, int64_t k, std::span<const int32_t> perm,
                                      const QuantRecipe& recipe, W4A4Matrix* out) {
  absl::StatusOr<QuantLayout> layout = PrepareLayout(recipe, tokens, k, perm);
  if (!layout.ok()) return layout.status();
  std::vector<float> gathered(x, x + tokens * k);
  if (!perm.empty()) PermuteColumns(x, tokens, k, perm, gathered.data());
  QuantizeRows(gathered.data(), tokens, *layout, recipe.act_clip, out, nullptr);
  return absl::OkStatus();
}

absl::Status RmsNormReorderQuantizeReference(const float* x, const float* norm_weight, float eps,
                                             int64_t tokens, int64_t k, std::span<const int32_t> perm,
                                             const QuantRecipe& recipe, W4A4Matrix* out) {
  std::vector<float> normed(tokens * k);
  for (int64_t t = 0; t < tokens; ++t) {
    const float inv_rms = RmsNormInverse(x + t * k, k, eps);
    for (int64_t c = 0; c < k; ++c) normed[t * k + c] = RmsNormValue(x[t * k + c], inv_rms, norm_weight[c]);
  }
  return ReorderQuantizeReference(normed.data(), tokens, k, perm, recipe, out);
}

absl::Status SiluMulQuantizeReference(const float* gate, const float* up, int64_t tokens, int64_t k,
                                      std::span<const int32_t> perm, const QuantRecipe& recipe,
                                      W4A4Matrix* out) {
  std::vector<float> product(tokens * k);
  for (int64_t i = 0; i < tokens * k; ++i) product[i] = SiluMulValue(gate[i], up[i]);
  return ReorderQuantizeReference(product.data(), tokens, k, perm, recipe, out);
}

}  // namespace atomserve::quant
