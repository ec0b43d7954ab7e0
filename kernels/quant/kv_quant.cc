#include "kernels/quant/kv_quant.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "kernels/quant/fp16.h"
#include "kernels/quant/quant_util.h"
#include "kernels/quant/w4a4_format.h"

namespace atomserve::quant {
namespace {

constexpr int kKvCodeMax = 15;
constexpr int64_t kMinTokensPerChunk = 8;

int KvCode(float x, float zero, float scale) {
  return scale == 0.0f ? 0 : RoundClamp((x - zero) / scale, 0, kKvCodeMax);
}

absl::Status CheckKvShape(int64_t tokens, int64_t heads, int64_t head_dim) {
  if (tokens < 0 || heads < 0 || head_dim < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad KV shape [", tokens, ", ", heads, ", ", head_dim, "]"));
  }
  return absl::OkStatus();
}

}  // namespace

void QuantizeKvHead(const float* x, int64_t head_dim, uint8_t* codes, uint16_t* scale_bits, uint16_t* zero_bits) {
  float lo = std::numeric_limits<float>::infinity();
  float hi = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < head_dim; ++i) {  // comparisons with NaN are false: ignored
    if (x[i] < lo) lo = x[i];
    if (x[i] > hi) hi = x[i];
  }
  if (lo > hi) lo = hi = 0.0f;  // all NaN
  *zero_bits = FloatToHalfBitsDown(std::max(lo, -kHalfMax));
  const float zero = HalfBitsToFloat(*zero_bits);
  *scale_bits = FloatToHalfBitsUp(std::min((hi - zero) / static_cast<float>(kKvCodeMax), kHalfMax));
  const float scale = HalfBitsToFloat(*scale_bits);
  for (int64_t i = 0; i < KvPackedBytes(head_dim); ++i) {
    const int lo_code = KvCode(x[2 * i], zero, scale);
    const int hi_code = 2 * i + 1 < head_dim ? KvCode(x[2 * i + 1], zero, scale) : 0;
    codes[i] = static_cast<uint8_t>(lo_code | (hi_code << 4));
  }
}

void DequantizeKvHead(const uint8_t* codes, int64_t head_dim, uint16_t scale_bits, uint16_t zero_bits, float* out) {
  const float scale = HalfBitsToFloat(scale_bits);
  const float zero = HalfBitsToFloat(zero_bits);
  for (int64_t i = 0; i < head_dim; ++i) {
    const int code = (codes[i / 2] >> (4 * (i % 2))) & 0xf;
    out[i] = static_cast<float>(code) * scale + zero;
  }
}

absl::Status QuantizeKv(const float* x, int64_t tokens, int64_t heads, int64_t head_dim, QuantizedKv* out,
                        ThreadPool* pool) {
  if (absl::Status st = CheckKvShape(tokens, heads, head_dim); !st.ok()) return st;
  out->tokens = tokens;
  out->heads = heads;
  out->head_dim = head_dim;
  const int64_t bytes = KvPackedBytes(head_dim);
  out->codes.resize(tokens * heads * bytes);
  out->scales.resize(tokens * heads);
  out->zeros.resize(tokens * heads);
  internal::ParallelRows(
      pool, tokens,
      [&](int64_t begin, int64_t end) {
        for (int64_t v = begin * heads; v < end * heads; ++v) {  // v = token * heads + head
          QuantizeKvHead(x + v * head_dim, head_dim, &out->codes[v * bytes], &out->scales[v], &out->zeros[v]);
        }
      },
      kMinTokensPerChunk);
  return absl::OkStatus();
}

absl::Status DequantizeKv(const QuantizedKv& q, float* out, ThreadPool* pool) {
  if (absl::Status st = CheckKvShape(q.tokens, q.heads, q.head_dim); !st.ok()) return st;
  const int64_t vectors = q.tokens * q.heads;
  const int64_t bytes = KvPackedBytes(q.head_dim);
  if (static_cast<int64_t>(q.codes.size()) != vectors * bytes ||
      static_cast<int64_t>(q.scales.size()) != vectors || static_cast<int64_t>(q.zeros.size()) != vectors) {
    return absl::InvalidArgumentError(absl::StrCat("QuantizedKv storage does not match shape [", q.tokens, ", ",
                                                   q.heads, ", ", q.head_dim, "]"));
  }
  internal::ParallelRows(
      pool, q.tokens,
      [&](int64_t begin, int64_t end) {
        for (int64_t v = begin * q.heads; v < end * q.heads; ++v) {
          DequantizeKvHead(&q.codes[v * bytes], q.head_dim, q.scales[v], q.zeros[v], out + v * q.head_dim);
        }
      },
      kMinTokensPerChunk);
  return absl::OkStatus();
}

}  // namespace atomserve::quant
