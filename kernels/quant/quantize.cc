#include "kernels/quant/quantize.h"

#include <algorithm>
#include <vector>

#include "common/status.h"
#include "kernels/quant/quant_util.h"
#include "kernels/quant/reorder.h"

namespace atomserve::quant {
namespace {

// Rows per parallel work item: a row is only ~K operations.
constexpr int64_t kMinRowsPerChunk = 4;

void QuantizeGroupInt4(const float* v, int64_t len, float clip, uint16_t* scale_bits, uint8_t* packed) {
  *scale_bits = Int4ScaleBits(AbsMax(v, len), clip);
  const float scale = HalfBitsToFloat(*scale_bits);
  int8_t codes[kGroupSize] = {};  // zero padding past len
  QuantizeSymmetricSpan(v, len, scale, kInt4Min, kInt4Max, codes);
  PackInt4(codes, kGroupSize, packed);
}

void QuantizeKeepersInt8(const float* v, int64_t len, uint16_t* scale_bits, int8_t* codes) {
  *scale_bits = Int8ScaleBits(AbsMax(v, len));
  const float scale = HalfBitsToFloat(*scale_bits);
  QuantizeSymmetricSpan(v, len, scale, kInt8Min, kInt8Max, codes);
}

}  // namespace

void QuantizeRow(const float* row, float clip, int64_t r, W4A4Matrix* out) {
  const QuantLayout& layout = out->layout;
  ATOMSERVE_CHECK(layout.group_size == kGroupSize && r >= 0 && r < out->rows);
  const int64_t normal_k = layout.normal_k();
  uint8_t* packed = out->packed_row(r);
  uint16_t* scales = out->scale_row(r);
  for (int64_t g = 0; g < layout.groups(); ++g) {
    const int64_t begin = g * kGroupSize;
    const int64_t len = std::min(kGroupSize, normal_k - begin);
    QuantizeGroupInt4(row + begin, len, clip, &scales[g], packed + begin / 2);
  }
  if (layout.keeper > 0) {
    QuantizeKeepersInt8(row + normal_k, layout.keeper, &out->keeper_scales[r], out->keeper_row(r));
  }
}

void QuantizeRows(const float* x, int64_t rows, const QuantLayout& layout, float clip, W4A4Matrix* out,
                  ThreadPool* pool) {
  out->Resize(layout, rows);
  internal::ParallelRows(
      pool, rows,
      [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) QuantizeRow(x + r * layout.k, clip, r, out);
      },
      kMinRowsPerChunk);
}

void DequantizeRow(const W4A4Matrix& m, int64_t r, float* out) {
  const QuantLayout& layout = m.layout;
  const int64_t normal_k = layout.normal_k();
  int8_t codes[kGroupSize];
  for (int64_t g = 0; g < layout.groups(); ++g) {
    const int64_t begin = g * kGroupSize;
    const int64_t len = std::min(kGroupSize, normal_k - begin);
    UnpackInt4(m.packed_row(r) + begin / 2, len, codes);
    const float scale = HalfBitsToFloat(m.scale_row(r)[g]);
    for (int64_t i = 0; i < len; ++i) out[begin + i] = static_cast<float>(codes[i]) * scale;
  }
  const float keeper_scale = HalfBitsToFloat(m.keeper_scale(r));
  const int8_t* keeper_codes = m.keeper_row(r);
  for (int64_t i = 0; i < layout.keeper; ++i) {
    out[normal_k + i] = static_cast<float>(keeper_codes[i]) * keeper_scale;
  }
}

absl::Status Dequantize(const W4A4Matrix& m, std::span<const int32_t> perm, float* out, ThreadPool* pool) {
  if (absl::Status st = m.CheckConsistent(); !st.ok()) return st;
  const int64_t k = m.layout.k;
  if (!perm.empty()) {
    if (absl::Status st = ValidatePermutation(perm, k); !st.ok()) return st;
  }
  internal::ParallelRows(
      pool, m.rows,
      [&](int64_t begin, int64_t end) {
        std::vector<float> row(k);
        for (int64_t r = begin; r < end; ++r) {
          float* dst = out + r * k;
          if (perm.empty()) {
            DequantizeRow(m, r, dst);
            continue;
          }
          DequantizeRow(m, r, row.data());
          for (int64_t j = 0; j < k; ++j) dst[perm[j]] = row[j];
        }
      },
      kMinRowsPerChunk);
  return absl::OkStatus();
}

}  // namespace atomserve::quant
