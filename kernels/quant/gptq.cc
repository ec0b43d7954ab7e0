#include "kernels/quant/gptq.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/quant/quant_util.h"

namespace atomserve::quant {
namespace {

// Weight rows processed together by one work item: they share every pass over
// U, which is the large operand.
constexpr int64_t kGptqRowChunk = 16;
// Matrix rows per work item in the O(K³) factorization loops.
constexpr int64_t kMinMatrixRowsPerChunk = 32;

double Dot(const double* a, const double* b, int64_t n) {
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// In place: the lower triangle of a (row-major [k, k], symmetric) becomes L
// with a = L Lᵀ; the strict upper triangle is zeroed. Column by column; the
// entries below the diagonal of one column are independent and split over
// the pool.
absl::Status CholeskyLower(std::vector<double>& a, int64_t k, ThreadPool* pool) {
  for (int64_t j = 0; j < k; ++j) {
    double* row_j = &a[j * k];
    const double d = row_j[j] - Dot(row_j, row_j, j);
    if (!(d > 0.0) || !std::isfinite(d)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "GPTQ: Hessian is not positive definite after damping (pivot ", j, " = ", d, ")"));
    }
    const double l_jj = std::sqrt(d);
    row_j[j] = l_jj;
    internal::ParallelRows(
        pool, k - j - 1,
        [&](int64_t begin, int64_t end) {
          for (int64_t i = j + 1 + begin; i < j + 1 + end; ++i) {
            double* row_i = &a[i * k];
            row_i[j] = (row_i[j] - Dot(row_i, row_j, j)) / l_jj;
          }
        },
        kMinMatrixRowsPerChunk);
  }
  for (int64_t i = 0; i < k; ++i) std::fill(&a[i * k + i + 1], &a[(i + 1) * k], 0.0);
  return absl::OkStatus();
}

// (L⁻¹)ᵀ for lower-triangular L, as an upper-triangular row-major matrix:
// row c holds column c of L⁻¹ (forward substitution of L x = e_c), so both
// operands of every dot product are contiguous.
std::vector<double> InverseLowerTransposed(const std::vector<double>& l, int64_t k, ThreadPool* pool) {
  std::vector<double> xt(k * k, 0.0);
  internal::ParallelRows(pool, k, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      double* x = &xt[c * k];
      x[c] = 1.0 / l[c * k + c];
      for (int64_t i = c + 1; i < k; ++i) x[i] = -Dot(&l[i * k + c], x + c, i - c) / l[i * k + i];
    }
  });
  return xt;
}

// m = xt · xtᵀ for upper-triangular xt; here (L⁻¹)ᵀ L⁻¹ = H⁻¹.
std::vector<double> UpperTimesTranspose(const std::vector<double>& xt, int64_t k, ThreadPool* pool) {
  std::vector<double> m(k * k);
  internal::ParallelRows(
      pool, k,
      [&](int64_t begin, int64_t end) {
        for (int64_t a = begin; a < end; ++a) {
          for (int64_t b = a; b < k; ++b) m[a * k + b] = Dot(&xt[a * k + b], &xt[b * k + b], k - b);
        }
      },
      kMinMatrixRowsPerChunk);
  for (int64_t a = 0; a < k; ++a) {
    for (int64_t b = 0; b < a; ++b) m[a * k + b] = m[b * k + a];
  }
  return m;
}

std::vector<double> Transposed(const std::vector<double>& a, int64_t k) {
  std::vector<double> t(k * k);
  for (int64_t i = 0; i < k; ++i) {
    for (int64_t j = 0; j < k; ++j) t[j * k + i] = a[i * k + j];
  }
  return t;
}

// GPTQ over weight rows [r_begin, r_end): the per-row state is independent,
// so a chunk of rows runs the column loop together against the shared U.
class GptqRowChunk {
 public:
  GptqRowChunk(const float* w, const std::vector<double>& u, const std::vector<char>& dead,
               const QuantRecipe& recipe, int64_t r_begin, int64_t r_end, W4A4Matrix* out)
      : u_(u), recipe_(recipe), layout_(out->layout), k_(layout_.k), r_begin_(r_begin),
        rows_(r_end - r_begin), out_(out), work_(rows_ * k_), codes_(rows_ * layout_.padded_normal_k(), 0),
        err_(rows_ * recipe.gptq_block), scales_(rows_) {
    for (int64_t r = 0; r < rows_; ++r) {
      for (int64_t j = 0; j < k_; ++j) work_[r * k_ + j] = dead[j] ? 0.0 : w[(r_begin + r) * k_ + j];
    }
  }

  void Run() {
    const int64_t normal_k = layout_.normal_k();
    for (int64_t i1 = 0; i1 < normal_k; i1 += recipe_.gptq_block) {
      const int64_t i2 = std::min(normal_k, i1 + static_cast<int64_t>(recipe_.gptq_block));
      for (int64_t i = i1; i < i2; ++i) {
        if (i % kGroupSize == 0) StartGroup(i);
        QuantizeColumn(i, i1, i2);
      }
      PropagateBlock(i1, i2);
    }
    QuantizeKeepers();
    for (int64_t r = 0; r < rows_; ++r) {
      PackInt4(&codes_[r * layout_.padded_normal_k()], layout_.padded_normal_k(), out_->packed_row(r_begin_ + r));
    }
  }

 private:
  // Group scales from the current weights; gptq_block % 128 == 0 keeps the
  // whole group inside the block, so all its pending updates are applied.
  void StartGroup(int64_t i) {
    const int64_t len = std::min(kGroupSize, layout_.normal_k() - i);
    for (int64_t r = 0; r < rows_; ++r) {
      float amax = 0.0f;
      for (int64_t j = i; j < i + len; ++j) amax = std::max(amax, std::fabs(static_cast<float>(work_[r * k_ + j])));
      const uint16_t bits = Int4ScaleBits(amax, recipe_.weight_clip);
      out_->scale_row(r_begin_ + r)[i / kGroupSize] = bits;
      scales_[r] = HalfBitsToFloat(bits);
    }
  }

  // Quantizes column i and applies its error eagerly to columns (i, i2).
  void QuantizeColumn(int64_t i, int64_t i1, int64_t i2) {
    const double* u_row = &u_[i * k_];
    const double d = u_row[i];
    for (int64_t r = 0; r < rows_; ++r) {
      double* w = &work_[r * k_];
      const int q = QuantizeSymmetric(static_cast<float>(w[i]), scales_[r], kInt4Min, kInt4Max);
      codes_[r * layout_.padded_normal_k() + i] = static_cast<int8_t>(q);
      const double e = (w[i] - static_cast<double>(q) * scales_[r]) / d;
      err_[r * recipe_.gptq_block + (i - i1)] = e;
      for (int64_t j = i + 1; j < i2; ++j) w[j] -= e * u_row[j];
    }
  }

  // The lazy rank-(i2 - i1) update of every column past the block, keepers
  // included.
  void PropagateBlock(int64_t i1, int64_t i2) {
    for (int64_t r = 0; r < rows_; ++r) {
      double* w = &work_[r * k_];
      for (int64_t i = i1; i < i2; ++i) {
        const double e = err_[r * recipe_.gptq_block + (i - i1)];
        const double* u_row = &u_[i * k_];
        for (int64_t j = i2; j < k_; ++j) w[j] -= e * u_row[j];
      }
    }
  }

  void QuantizeKeepers() {
    const int64_t keeper = layout_.keeper;
    if (keeper == 0) return;
    std::vector<float> values(keeper);
    for (int64_t r = 0; r < rows_; ++r) {
      const double* w = &work_[r * k_ + layout_.normal_k()];
      for (int64_t j = 0; j < keeper; ++j) values[j] = static_cast<float>(w[j]);
      const uint16_t bits = Int8ScaleBits(AbsMax(values.data(), keeper));
      out_->keeper_scales[r_begin_ + r] = bits;
      const float scale = HalfBitsToFloat(bits);
      int8_t* codes = out_->keeper_row(r_begin_ + r);
      QuantizeSymmetricSpan(values.data(), keeper, scale, kInt8Min, kInt8Max, codes);
    }
  }

  const std::vector<double>& u_;
  const QuantRecipe& recipe_;
  const QuantLayout layout_;
  const int64_t k_;
  const int64_t r_begin_;
  const int64_t rows_;
  W4A4Matrix* out_;
  std::vector<double> work_;   // [rows][k] current weights
  std::vector<int8_t> codes_;  // [rows][padded_normal_k] INT4 codes, padding 0
  std::vector<double> err_;    // [rows][gptq_block] scaled errors of the block
  std::vector<float> scales_;  // [rows] current group scale
};

}  // namespace

absl::StatusOr<std::vector<double>> GptqInverseHessianFactor(std::span<const double> hessian, int64_t k,
                                                             double damp, std::vector<char>* dead_columns,
                                                             ThreadPool* pool) {
  if (k < 1 || static_cast<int64_t>(hessian.size()) != k * k) {
    return absl::InvalidArgumentError(
        absl::StrCat("GPTQ: Hessian has ", hessian.size(), " entries, expected ", k, "^2"));
  }
  if (!std::all_of(hessian.begin(), hessian.end(), [](double v) { return std::isfinite(v); })) {
    return absl::InvalidArgumentError("GPTQ: Hessian has NaN or infinite entries");
  }
  std::vector<double> h(hessian.begin(), hessian.end());
  std::vector<char> dead(k, 0);
  double diag_sum = 0.0;
  for (int64_t i = 0; i < k; ++i) {
    double& hii = h[i * k + i];
    if (hii == 0.0) {
      hii = 1.0;
      dead[i] = 1;
    }
    diag_sum += hii;
  }
  const double damping = damp * diag_sum / static_cast<double>(k);
  for (int64_t i = 0; i < k; ++i) h[i * k + i] += damping;

  if (absl::Status st = CholeskyLower(h, k, pool); !st.ok()) return st;
  std::vector<double> h_inverse = UpperTimesTranspose(InverseLowerTransposed(h, k, pool), k, pool);
  if (absl::Status st = CholeskyLower(h_inverse, k, pool); !st.ok()) return st;
  if (dead_columns != nullptr) *dead_columns = std::move(dead);
  return Transposed(h_inverse, k);  // upper factor U = Lᵀ of H⁻¹ = L Lᵀ
}

absl::StatusOr<W4A4Matrix> QuantizeWeightsGptq(const float* w, int64_t n, int64_t k,
                                               std::span<const double> hessian, const QuantRecipe& recipe,
                                               ThreadPool* pool) {
  absl::StatusOr<QuantLayout> layout = QuantLayout::FromRecipe(recipe, k);
  if (!layout.ok()) return layout.status();
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat("GPTQ: N must be >= 0, got ", n));
  std::vector<char> dead;
  absl::StatusOr<std::vector<double>> u = GptqInverseHessianFactor(hessian, k, recipe.gptq_damp, &dead, pool);
  if (!u.ok()) return u.status();

  W4A4Matrix out;
  out.Resize(*layout, n);
  const int64_t chunks = (n + kGptqRowChunk - 1) / kGptqRowChunk;
  internal::ParallelRows(pool, chunks, [&](int64_t c_begin, int64_t c_end) {
    for (int64_t c = c_begin; c < c_end; ++c) {
      GptqRowChunk chunk(w, *u, dead, recipe, c * kGptqRowChunk, std::min(n, (c + 1) * kGptqRowChunk), &out);
      chunk.Run();
    }
  });
  return out;
}

}  // namespace atomserve::quant
