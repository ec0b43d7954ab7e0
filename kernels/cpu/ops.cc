#include "kernels/cpu/ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/cpu/internal/simd.h"

namespace atomserve::cpu {
namespace {

using internal::Dot;
using internal::HorizontalSum;

// Dot products of `rows` x-rows with 4 w-rows: out[r][j] = x_r . w_j.
// Register tile of up to 4x4 accumulators; the caller walks the matrix in
// tiles so each loaded weight vector is reused across x rows.
template <int R>
void Tile4(const float* const* x, const float* w0, const float* w1, const float* w2,
           const float* w3, int64_t k, float out[4][4]) {
#ifdef ATOMSERVE_CPU_AVX2
  __m256 acc[R][4];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < 4; ++j) acc[r][j] = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= k; i += 8) {
    __m256 b0 = _mm256_loadu_ps(w0 + i), b1 = _mm256_loadu_ps(w1 + i);
    __m256 b2 = _mm256_loadu_ps(w2 + i), b3 = _mm256_loadu_ps(w3 + i);
    for (int r = 0; r < R; ++r) {
      __m256 a = _mm256_loadu_ps(x[r] + i);
      acc[r][0] = _mm256_fmadd_ps(a, b0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(a, b1, acc[r][1]);
      acc[r][2] = _mm256_fmadd_ps(a, b2, acc[r][2]);
      acc[r][3] = _mm256_fmadd_ps(a, b3, acc[r][3]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < 4; ++j) out[r][j] = HorizontalSum(acc[r][j]);
#else
  int64_t i = 0;
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < 4; ++j) out[r][j] = 0.0f;
#endif
  for (; i < k; ++i) {
    for (int r = 0; r < R; ++r) {
      float a = x[r][i];
      out[r][0] += a * w0[i];
      out[r][1] += a * w1[i];
      out[r][2] += a * w2[i];
      out[r][3] += a * w3[i];
    }
  }
}

// Computes y[m0:m1, n0:n1] in register tiles.
void LinearBlock(const float* x, const float* w, float* y, int64_t m0, int64_t m1, int64_t n0,
                 int64_t n1, int64_t n, int64_t k, bool accumulate) {
  int64_t j = n0;
  for (; j + 4 <= n1; j += 4) {
    const float* w0 = w + j * k;
    for (int64_t r = m0; r < m1; r += 4) {
      const int rows = static_cast<int>(std::min<int64_t>(4, m1 - r));
      const float* xr[4];
      for (int q = 0; q < 4; ++q) xr[q] = x + std::min(r + q, m1 - 1) * k;
      float out[4][4];
      switch (rows) {
        case 1: Tile4<1>(xr, w0, w0 + k, w0 + 2 * k, w0 + 3 * k, k, out); break;
        case 2: Tile4<2>(xr, w0, w0 + k, w0 + 2 * k, w0 + 3 * k, k, out); break;
        case 3: Tile4<3>(xr, w0, w0 + k, w0 + 2 * k, w0 + 3 * k, k, out); break;
        default: Tile4<4>(xr, w0, w0 + k, w0 + 2 * k, w0 + 3 * k, k, out); break;
      }
      for (int q = 0; q < rows; ++q) {
        float* yr = y + (r + q) * n + j;
        for (int c = 0; c < 4; ++c) yr[c] = accumulate ? yr[c] + out[q][c] : out[q][c];
      }
    }
  }
  for (; j < n1; ++j) {
    for (int64_t r = m0; r < m1; ++r) {
      float v = Dot(x + r * k, w + j * k, k);
      float& dst = y[r * n + j];
      dst = accumulate ? dst + v : v;
    }
  }
}

}  // namespace

void Linear(const float* x, const float* w, float* y, int64_t m, int64_t n, int64_t k,
            ThreadPool* pool, bool accumulate) {
  // Work items are (row block, column block) pairs: column blocks of 64
  // weight rows keep a block's weights in L2 while all x rows stream past.
  constexpr int64_t kColBlock = 64;
  constexpr int64_t kRowBlock = 64;
  const int64_t col_blocks = (n + kColBlock - 1) / kColBlock;
  const int64_t row_blocks = (m + kRowBlock - 1) / kRowBlock;
  auto run = [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      int64_t cb = item % col_blocks, rb = item / col_blocks;
      LinearBlock(x, w, y, rb * kRowBlock, std::min(m, (rb + 1) * kRowBlock), cb * kColBlock,
                  std::min(n, (cb + 1) * kColBlock), n, k, accumulate);
    }
  };
  if (pool) {
    pool->ParallelFor(col_blocks * row_blocks, run);
  } else {
    run(0, col_blocks * row_blocks);
  }
}

void RmsNorm(const float* x, const float* weight, float* y, int64_t rows, int64_t dim, float eps) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* yr = y + r * dim;
    double ss = 0.0;
    for (int64_t i = 0; i < dim; ++i) ss += static_cast<double>(xr[i]) * xr[i];
    const float inv = 1.0f / std::sqrt(static_cast<float>(ss / dim) + eps);
    for (int64_t i = 0; i < dim; ++i) yr[i] = xr[i] * inv * weight[i];
  }
}

void SiluMul(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void ApplyRope(float* x, const int32_t* positions, int64_t tokens, int64_t heads, int64_t head_dim,
               const RopeTable& rope) {
  const int64_t half = head_dim / 2;
  std::vector<float> cos_t(half), sin_t(half);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t i = 0; i < half; ++i) {
      // Angles in double: positions up to 128K times frequencies near 1 lose
      // too much precision in float before the reduction inside cos/sin.
      const double angle = static_cast<double>(positions[t]) * rope.inv_freq[i];
      cos_t[i] = static_cast<float>(std::cos(angle));
      sin_t[i] = static_cast<float>(std::sin(angle));
    }
    for (int64_t h = 0; h < heads; ++h) {
      float* v = x + (t * heads + h) * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const float a = v[i], b = v[i + half];
        v[i] = a * cos_t[i] - b * sin_t[i];
        v[i + half] = b * cos_t[i] + a * sin_t[i];
      }
    }
  }
}

void Embed(const float* table, const int32_t* ids, float* out, int64_t tokens, int64_t dim) {
  for (int64_t t = 0; t < tokens; ++t)
    std::memcpy(out + t * dim, table + static_cast<int64_t>(ids[t]) * dim, dim * sizeof(float));
}

void SoftmaxRows(float* x, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    float* xr = x + r * cols;
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t i = 0; i < cols; ++i) mx = std::max(mx, xr[i]);
    double sum = 0.0;
    for (int64_t i = 0; i < cols; ++i) {
      xr[i] = std::exp(xr[i] - mx);
      sum += xr[i];
    }
    const float inv = static_cast<float>(1.0 / sum);
    for (int64_t i = 0; i < cols; ++i) xr[i] *= inv;
  }
}

void Attention(const float* q, const float* k_cache, const float* v_cache, float* out,
               const int32_t* q_pos, int64_t tokens, int64_t num_heads, int64_t num_kv_heads,
               int64_t head_dim, float scale, ThreadPool* pool) {
  const int64_t group = num_heads / num_kv_heads;
  const int64_t kv_stride = num_kv_heads * head_dim;
  auto run = [&](int64_t begin, int64_t end) {
    std::vector<float> scores;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t t = item / num_heads, h = item % num_heads;
      const int64_t kvh = h / group;
      const int64_t len = static_cast<int64_t>(q_pos[t]) + 1;
      const float* qv = q + (t * num_heads + h) * head_dim;
      scores.resize(len);
      for (int64_t s = 0; s < len; ++s)
        scores[s] = Dot(qv, k_cache + s * kv_stride + kvh * head_dim, head_dim) * scale;
      SoftmaxRows(scores.data(), 1, len);
      float* o = out + (t * num_heads + h) * head_dim;
      std::fill(o, o + head_dim, 0.0f);
      for (int64_t s = 0; s < len; ++s) {
        const float p = scores[s];
        const float* vv = v_cache + s * kv_stride + kvh * head_dim;
        for (int64_t d = 0; d < head_dim; ++d) o[d] += p * vv[d];
      }
    }
  };
  if (pool) {
    pool->ParallelFor(tokens * num_heads, run);
  } else {
    run(0, tokens * num_heads);
  }
}

}  // namespace atomserve::cpu
