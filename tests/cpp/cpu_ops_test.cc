// CPU kernels against straightforward float64 references on random data,
// including awkward sizes that exercise every tail path of the tiled code.
#include <cmath>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "common/thread_pool.h"
#include "kernels/cpu/ops.h"
#include "tests/cpp/test_random.h"

namespace atomserve {
namespace {

std::vector<float> Random(int64_t n, uint32_t seed) { return testing_util::RandomNormal(n, seed); }

double RelErr(const std::vector<float>& a, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - ref[i]) * (a[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

TEST(LinearTest, MatchesFloat64ReferenceOnAwkwardShapes) {
  ThreadPool pool(3);
  const int64_t shapes[][3] = {{1, 1, 1}, {1, 7, 13}, {3, 5, 17}, {5, 67, 33}, {9, 130, 64}, {70, 9, 200}, {1, 576, 576}};
  uint64_t seed = 1;
  for (auto [m, n, k] : shapes) {
    auto x = Random(m * k, seed++), w = Random(n * k, seed++);
    std::vector<double> ref(m * n);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double s = 0;
        for (int64_t t = 0; t < k; ++t) s += double(x[i * k + t]) * w[j * k + t];
        ref[i * n + j] = s;
      }
    std::vector<float> y(m * n, NAN);  // poisoned: every element must be written
    cpu::Linear(x.data(), w.data(), y.data(), m, n, k, &pool);
    EXPECT_LT(RelErr(y, ref), 1e-5) << m << "x" << n << "x" << k;
    // Accumulate mode adds onto the existing values.
    std::vector<float> acc(m * n, 1.0f);
    cpu::Linear(x.data(), w.data(), acc.data(), m, n, k, nullptr, /*accumulate=*/true);
    for (auto& r : ref) r += 1.0;
    EXPECT_LT(RelErr(acc, ref), 1e-5);
  }
}

TEST(RmsNormTest, MatchesDefinition) {
  const int64_t rows = 3, dim = 37;
  auto x = Random(rows * dim, 7), w = Random(dim, 8);
  std::vector<float> y(rows * dim);
  cpu::RmsNorm(x.data(), w.data(), y.data(), rows, dim, 1e-5f);
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < dim; ++i) ss += double(x[r * dim + i]) * x[r * dim + i];
    double inv = 1.0 / std::sqrt(ss / dim + 1e-5);
    for (int64_t i = 0; i < dim; ++i) EXPECT_NEAR(y[r * dim + i], x[r * dim + i] * inv * w[i], 1e-5);
  }
}

TEST(RopeTest, RotatesHalvesByPositionTimesFrequency) {
  RopeParams p;
  p.head_dim = 8;
  p.theta = 10000.0f;
  RopeTable t = RopeTable::Build(p);
  ASSERT_EQ(t.inv_freq.size(), 4u);
  EXPECT_FLOAT_EQ(t.inv_freq[0], 1.0f);
  EXPECT_NEAR(t.inv_freq[1], std::pow(10000.0, -2.0 / 8), 1e-7);
  auto x = Random(2 * 8, 3);
  auto orig = x;
  int32_t pos[2] = {0, 5};
  cpu::ApplyRope(x.data(), pos, 1, 2, 8, t);  // one token, two heads, position 0
  for (int i = 0; i < 16; ++i) EXPECT_FLOAT_EQ(x[i], orig[i]);
  cpu::ApplyRope(x.data() + 8, pos + 1, 1, 1, 8, t);
  for (int i = 0; i < 4; ++i) {
    double a = 5.0 * t.inv_freq[i];
    EXPECT_NEAR(x[8 + i], orig[8 + i] * std::cos(a) - orig[12 + i] * std::sin(a), 1e-5);
    EXPECT_NEAR(x[12 + i], orig[12 + i] * std::cos(a) + orig[8 + i] * std::sin(a), 1e-5);
  }
}

TEST(RopeTest, Llama3ScalingKeepsHighFrequenciesAndDividesLowOnes) {
  RopeParams p;
  p.head_dim = 128;
  p.theta = 500000.0f;
  RopeTable plain = RopeTable::Build(p);
  p.scaling_type = 2;
  p.factor = 8.0f;
  RopeTable scaled = RopeTable::Build(p);
  EXPECT_FLOAT_EQ(scaled.inv_freq[0], plain.inv_freq[0]);              // short wavelength
  EXPECT_NEAR(scaled.inv_freq[63], plain.inv_freq[63] / 8.0f, 1e-12);  // long wavelength
}

TEST(AttentionTest, CausalGqaMatchesNaiveSoftmax) {
  ThreadPool pool(2);
  const int64_t heads = 6, kv_heads = 2, hd = 12, len = 9;
  auto q = Random(len * heads * hd, 11), k = Random(len * kv_heads * hd, 12), v = Random(len * kv_heads * hd, 13);
  std::vector<int32_t> pos(len);
  for (int i = 0; i < len; ++i) pos[i] = i;
  std::vector<float> out(len * heads * hd, NAN);
  const float scale = 1.0f / std::sqrt(float(hd));
  cpu::Attention(q.data(), k.data(), v.data(), out.data(), pos.data(), len, heads, kv_heads, hd, scale, &pool);
  for (int64_t t = 0; t < len; ++t)
    for (int64_t h = 0; h < heads; ++h) {
      int64_t g = h / (heads / kv_heads);
      std::vector<double> s(t + 1);
      double mx = -1e300, sum = 0;
      for (int64_t j = 0; j <= t; ++j) {
        double d = 0;
        for (int64_t c = 0; c < hd; ++c) d += double(q[(t * heads + h) * hd + c]) * k[(j * kv_heads + g) * hd + c];
        s[j] = d * scale;
        mx = std::max(mx, s[j]);
      }
      for (auto& e : s) sum += (e = std::exp(e - mx));
      for (int64_t c = 0; c < hd; ++c) {
        double o = 0;
        for (int64_t j = 0; j <= t; ++j) o += s[j] / sum * v[(j * kv_heads + g) * hd + c];
        EXPECT_NEAR(out[(t * heads + h) * hd + c], o, 1e-5);
      }
    }
}

TEST(ThreadPoolTest, CoversRangeExactlyOnce) {
  ThreadPool pool(4);
  for (int64_t n : {0, 1, 3, 100, 1001}) {
    std::vector<int> hits(n, 0);
    pool.ParallelFor(n, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) hits[i]++;
    });
    for (int h : hits) EXPECT_EQ(h, 1);
  }
}

}  // namespace
}  // namespace atomserve
