#include "kernels/quant/w4a4_linear.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/quant/quant_util.h"

namespace atomserve::quant {
namespace {

// Output rows whose accumulators are computed together, so each activation
// group is reused from L1 for all of them.
constexpr int64_t kWeightTile = 4;
// Tokens swept per pass over a thread's weight rows, so their unpacked codes
// (kTokenBlock x K int16) stay in L2.
constexpr int64_t kTokenBlock = 64;

// Row codes unpacked to one int16 per channel: the padded INT4 part followed
// by the keeper part, `stride` = padded_normal_k + keeper per row. int16, not
// int8, because x86 has no signed int8 x int8 multiply-add: an int16 dot
// product compiles to vpmaddwd / vpdpwssd, an int8 one to a slow
// widen-multiply-widen sequence. Scales are converted from fp16 bits once.
struct UnpackedRows {
  int64_t stride = 0;
  std::vector<int16_t> codes;         // [rows][stride]
  std::vector<float> scales;          // [rows][groups]
  std::vector<float> keeper_scales;   // [rows]
};

int64_t UnpackedStride(const QuantLayout& layout) { return layout.padded_normal_k() + layout.keeper; }

void UnpackRowTo(const W4A4Matrix& m, int64_t r, int16_t* codes, float* scales, float* keeper_scale) {
  const QuantLayout& layout = m.layout;
  const uint8_t* packed = m.packed_row(r);
  for (int64_t i = 0; i < layout.packed_row_bytes(); ++i) {
    codes[2 * i] = UnpackInt4Low(packed[i]);
    codes[2 * i + 1] = UnpackInt4High(packed[i]);
  }
  std::copy_n(m.keeper_row(r), layout.keeper, codes + layout.padded_normal_k());
  const uint16_t* bits = m.scale_row(r);
  for (int64_t g = 0; g < layout.groups(); ++g) scales[g] = HalfBitsToFloat(bits[g]);
  *keeper_scale = HalfBitsToFloat(m.keeper_scale(r));
}

// Unpacks rows [begin, end) of m into u (rows numbered from 0).
void UnpackRows(const W4A4Matrix& m, int64_t begin, int64_t end, UnpackedRows* u, ThreadPool* pool) {
  const int64_t groups = m.layout.groups();
  u->stride = UnpackedStride(m.layout);
  u->codes.resize((end - begin) * u->stride);
  u->scales.resize((end - begin) * groups);
  u->keeper_scales.resize(end - begin);
  internal::ParallelRows(
      pool, end - begin,
      [&](int64_t i_begin, int64_t i_end) {
        for (int64_t i = i_begin; i < i_end; ++i) {
          UnpackRowTo(m, begin + i, &u->codes[i * u->stride], &u->scales[i * groups], &u->keeper_scales[i]);
        }
      },
      /*min_chunk=*/16);
}

// Exact int32 dot product (|product| <= 2^14, so exact for n < 2^17); with a
// constant n the compiler unrolls it into int16 pair multiply-adds.
inline int32_t DotInt16(const int16_t* a, const int16_t* b, int64_t n) {
  int32_t sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<int32_t>(a[i]) * static_cast<int32_t>(b[i]);
  return sum;
}

// acc[0 .. groups] for one activation row and one weight row (unpacked).
inline void GroupAccumulators(const int16_t* a, const int16_t* w, const QuantLayout& layout, int32_t* acc) {
  const int64_t groups = layout.groups();
  for (int64_t g = 0; g < groups; ++g) acc[g] = DotInt16(a + g * kGroupSize, w + g * kGroupSize, kGroupSize);
  const int64_t keeper_offset = layout.padded_normal_k();
  acc[groups] = DotInt16(a + keeper_offset, w + keeper_offset, layout.keeper);
}

absl::Status CheckOperands(const W4A4Matrix& act, const W4A4Matrix& weight) {
  if (absl::Status st = act.CheckConsistent(); !st.ok()) return st;
  if (absl::Status st = weight.CheckConsistent(); !st.ok()) return st;
  if (!(act.layout == weight.layout)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "W4A4 operand layouts differ: activations (K=", act.layout.k, ", keeper=", act.layout.keeper,
        ") vs weights (K=", weight.layout.k, ", keeper=", weight.layout.keeper, ")"));
  }
  return absl::OkStatus();
}

// y for output rows [n_begin, n_end) and every token: the weight rows are
// unpacked once, then swept per block of kTokenBlock tokens, kWeightTile
// outputs at a time.
void LinearOutputRows(const UnpackedRows& a, const W4A4Matrix& weight, int64_t tokens, const float* residual,
                      float* y, int64_t n_begin, int64_t n_end) {
  const QuantLayout& layout = weight.layout;
  const int64_t groups = layout.groups();
  const int64_t n_total = weight.rows;
  UnpackedRows w;
  UnpackRows(weight, n_begin, n_end, &w, nullptr);
  std::vector<int32_t> acc(layout.accumulators());
  for (int64_t t0 = 0; t0 < tokens; t0 += kTokenBlock) {
    const int64_t t1 = std::min(tokens, t0 + kTokenBlock);
    for (int64_t n0 = n_begin; n0 < n_end; n0 += kWeightTile) {
      const int64_t n1 = std::min(n_end, n0 + kWeightTile);
      for (int64_t t = t0; t < t1; ++t) {
        const int16_t* a_codes = &a.codes[t * a.stride];
        const float* a_scales = &a.scales[t * groups];
        for (int64_t n = n0; n < n1; ++n) {
          const int64_t i = n - n_begin;
          GroupAccumulators(a_codes, &w.codes[i * w.stride], layout, acc.data());
          float out = PromoteAccumulators(acc.data(), a_scales, &w.scales[i * groups], groups,
                                          a.keeper_scales[t], w.keeper_scales[i]);
          if (residual != nullptr) out += residual[t * n_total + n];
          y[t * n_total + n] = out;
        }
      }
    }
  }
}

}  // namespace

absl::Status W4A4Linear(const W4A4Matrix& act, const W4A4Matrix& weight, const float* residual, float* y,
                        ThreadPool* pool) {
  if (absl::Status st = CheckOperands(act, weight); !st.ok()) return st;
  UnpackedRows a;
  UnpackRows(act, 0, act.rows, &a, pool);
  // Work items are tiles of output rows; each chunk of tiles unpacks its
  // weight rows once.
  const int64_t tiles = (weight.rows + kWeightTile - 1) / kWeightTile;
  internal::ParallelRows(pool, tiles, [&](int64_t tile_begin, int64_t tile_end) {
    LinearOutputRows(a, weight, act.rows, residual, y, tile_begin * kWeightTile,
                     std::min(weight.rows, tile_end * kWeightTile));
  });
  return absl::OkStatus();
}

absl::Status W4A4Accumulators(const W4A4Matrix& act, const W4A4Matrix& weight, int64_t t_begin, int64_t t_end,
                              int64_t n_begin, int64_t n_end, int32_t* acc) {
  if (absl::Status st = CheckOperands(act, weight); !st.ok()) return st;
  if (t_begin < 0 || t_begin > t_end || t_end > act.rows || n_begin < 0 || n_begin > n_end ||
      n_end > weight.rows) {
    return absl::InvalidArgumentError(absl::StrCat("accumulator tile t[", t_begin, ", ", t_end, ") n[", n_begin,
                                                   ", ", n_end, ") outside ", act.rows, " x ", weight.rows));
  }
  UnpackedRows a, w;
  UnpackRows(act, t_begin, t_end, &a, nullptr);
  UnpackRows(weight, n_begin, n_end, &w, nullptr);
  const int64_t per_output = act.layout.accumulators();
  for (int64_t t = t_begin; t < t_end; ++t) {
    for (int64_t n = n_begin; n < n_end; ++n) {
      int32_t* out = acc + ((t - t_begin) * (n_end - n_begin) + (n - n_begin)) * per_output;
      GroupAccumulators(&a.codes[(t - t_begin) * a.stride], &w.codes[(n - n_begin) * w.stride], act.layout, out);
    }
  }
  return absl::OkStatus();
}

}  // namespace atomserve::quant
