#include "kernels/quant/weight_quant.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/quant/gptq.h"
#include "kernels/quant/quantize.h"
#include "kernels/quant/reorder.h"

namespace atomserve::quant {

absl::StatusOr<W4A4Matrix> QuantizeWeightsRtn(const float* w, int64_t n, int64_t k, const QuantRecipe& recipe,
                                              ThreadPool* pool) {
  absl::StatusOr<QuantLayout> layout = QuantLayout::FromRecipe(recipe, k);
  if (!layout.ok()) return layout.status();
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat("N must be >= 0, got ", n));
  W4A4Matrix out;
  QuantizeRows(w, n, *layout, recipe.weight_clip, &out, pool);
  return out;
}

absl::StatusOr<W4A4Matrix> QuantizeLinearWeight(const float* w, int64_t n, int64_t k,
                                                std::span<const int32_t> perm, std::span<const double> hessian,
                                                const QuantRecipe& recipe, ThreadPool* pool) {
  if (absl::Status st = recipe.Validate(); !st.ok()) return st;
  if (n < 0 || k < 1) return absl::InvalidArgumentError(absl::StrCat("bad weight shape [", n, ", ", k, "]"));
  if (!perm.empty()) {
    if (absl::Status st = ValidatePermutation(perm, k); !st.ok()) return st;
  }
  if (recipe.gptq && static_cast<int64_t>(hessian.size()) != k * k) {
    return absl::InvalidArgumentError(absl::StrCat("GPTQ needs a [", k, ", ", k, "] Hessian, got ",
                                                   hessian.size(), " entries"));
  }
  std::vector<float> w_reordered(w, w + n * k);
  if (!perm.empty()) PermuteColumns(w, n, k, perm, w_reordered.data());
  if (!recipe.gptq) return QuantizeWeightsRtn(w_reordered.data(), n, k, recipe, pool);
  if (perm.empty()) return QuantizeWeightsGptq(w_reordered.data(), n, k, hessian, recipe, pool);
  std::vector<double> h_reordered(k * k);
  PermuteSymmetric(hessian.data(), k, perm, h_reordered.data());
  return QuantizeWeightsGptq(w_reordered.data(), n, k, h_reordered, recipe, pool);
}

}  // namespace atomserve::quant
