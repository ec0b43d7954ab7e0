// SIMD building blocks shared by the CPU kernels. One definition of the float
// dot product keeps kernels that must agree bit for bit (dense and paged
// attention) on the same summation order.
#pragma once

#include <cstdint>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define ATOMSERVE_CPU_AVX2 1
#endif

namespace atomserve::cpu::internal {

#ifdef ATOMSERVE_CPU_AVX2
inline float HorizontalSum(__m256 v) {
  __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  __m128 shuf = _mm_movehdup_ps(lo);
  __m128 sums = _mm_add_ps(lo, shuf);
  shuf = _mm_movehl_ps(shuf, sums);
  return _mm_cvtss_f32(_mm_add_ss(sums, shuf));
}
#endif

// sum_i a[i] * b[i]: two 8-wide FMA accumulators, then a scalar tail.
inline float Dot(const float* a, const float* b, int64_t k) {
#ifdef ATOMSERVE_CPU_AVX2
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= k; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
  }
  for (; i + 8 <= k; i += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
  float s = HorizontalSum(_mm256_add_ps(acc0, acc1));
  for (; i < k; ++i) s += a[i] * b[i];
  return s;
#else
  float s = 0.0f;
  for (int64_t i = 0; i < k; ++i) s += a[i] * b[i];
  return s;
#endif
}

}  // namespace atomserve::cpu::internal
