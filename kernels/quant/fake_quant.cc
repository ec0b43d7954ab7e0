#include "kernels/quant/fake_quant.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kernels/quant/activation_quant.h"
#include "kernels/quant/quant_util.h"
#include "kernels/quant/quantize.h"
#include "kernels/quant/weight_quant.h"

namespace atomserve::quant {

absl::Status FakeQuantWeightsAtom(const float* w, int64_t n, int64_t k, std::span<const int32_t> perm,
                                  std::span<const double> hessian, const QuantRecipe& recipe, float* out,
                                  ThreadPool* pool) {
  absl::StatusOr<W4A4Matrix> q = QuantizeLinearWeight(w, n, k, perm, hessian, recipe, pool);
  if (!q.ok()) return q.status();
  return Dequantize(*q, perm, out, pool);
}

absl::Status FakeQuantActivationsAtom(const float* x, int64_t tokens, int64_t k, std::span<const int32_t> perm,
                                      const QuantRecipe& recipe, float* out, ThreadPool* pool) {
  W4A4Matrix q;
  if (absl::Status st = ReorderQuantize(x, tokens, k, perm, recipe, &q, pool); !st.ok()) return st;
  return Dequantize(q, perm, out, pool);
}

absl::Status FakeQuantPerRow(const float* x, int64_t rows, int64_t k, int bits, float clip, float* out,
                             ThreadPool* pool) {
  if (bits < 2 || bits > 8) return absl::InvalidArgumentError(absl::StrCat("bits must be in [2, 8], got ", bits));
  if (!(clip > 0.0f && clip <= 1.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("clip must be in (0, 1], got ", clip));
  }
  if (rows < 0 || k < 0) return absl::InvalidArgumentError(absl::StrCat("bad shape [", rows, ", ", k, "]"));
  const int qmax = (1 << (bits - 1)) - 1;
  internal::ParallelRows(
      pool, rows,
      [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
          const float* src = x + r * k;
          float* dst = out + r * k;
          const float scale =
              HalfBitsToFloat(FloatToHalfBits(std::min((clip * AbsMax(src, k)) / static_cast<float>(qmax), kHalfMax)));
          for (int64_t i = 0; i < k; ++i) {
            dst[i] = static_cast<float>(QuantizeSymmetric(src[i], scale, -qmax - 1, qmax)) * scale;
          }
        }
      },
      /*min_chunk=*/4);
  return absl::OkStatus();
}

}  // namespace atomserve::quant
