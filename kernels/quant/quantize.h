// Round-to-nearest quantization of rows into the Atom W4A4 format, and the
// inverse (dequantization). The same row quantizer serves weights (RTN, clip
// 0.85) and activations (dynamic per token, clip 0.9); the rules are in
// w4a4_format.h.
//
//   W4A4Matrix q;
//   ATOMSERVE_ASSIGN_OR_RETURN(QuantLayout layout, QuantLayout::Make(576, 128));
//   QuantizeRows(x_reordered, tokens, layout, 0.9f, &q, pool);
//   std::vector<float> back(tokens * 576);
//   ATOMSERVE_RETURN_IF_ERROR(Dequantize(q, {}, back.data(), pool));
//
// Thread safety: functions write only their outputs; a pool argument splits
// rows over it (nullptr runs on the calling thread).
#pragma once

#include <cstdint>
#include <span>

#include "absl/status/status.h"
#include "common/thread_pool.h"
#include "kernels/quant/w4a4_format.h"

namespace atomserve::quant {

// Quantizes one row of out->layout.k values, already in reordered order, into
// row r of *out (which must already be sized: Resize). INT4 groups use
// scale = fp16(clip * amax / 7); keepers are unclipped INT8. Writes every byte
// of the row, padding nibbles included.
void QuantizeRow(const float* row, float clip, int64_t r, W4A4Matrix* out);

// Resizes *out to (layout, rows) and quantizes x[rows, layout.k] row by row.
void QuantizeRows(const float* x, int64_t rows, const QuantLayout& layout, float clip, W4A4Matrix* out,
                  ThreadPool* pool);

// Row r of m as floats, reordered order: out[j] = float(code) * scale for the
// layout.k real channels (padding dropped).
void DequantizeRow(const W4A4Matrix& m, int64_t r, float* out);

// All rows of m into out[m.rows, m.layout.k]. With an empty perm the columns
// stay in reordered order; otherwise perm (length k, see reorder.h) restores
// the original order: out[r, perm[j]] = value at reordered position j.
// Errors: kInvalidArgument when m is inconsistent or perm is not a
// permutation of [0, k).
absl::Status Dequantize(const W4A4Matrix& m, std::span<const int32_t> perm, float* out, ThreadPool* pool);

}  // namespace atomserve::quant
