// Tests of weight quantization: GPTQ (its Hessian factor, its advantage over
// RTN on correlated inputs, error propagation into the INT8 keepers, dead
// columns), the per-layer entry point, and the fake-quant ablation paths.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "common/thread_pool.h"
#include "gtest/gtest.h"
#include "kernels/quant/activation_quant.h"
#include "kernels/quant/fake_quant.h"
#include "kernels/quant/gptq.h"
#include "kernels/quant/quantize.h"
#include "kernels/quant/reorder.h"
#include "kernels/quant/w4a4_linear.h"
#include "kernels/quant/weight_quant.h"

#include "tests/cpp/test_random.h"

namespace atomserve::quant {
namespace {

using testing_util::RandomNormal;

// A synthetic layer input with correlated channels, X = Z A, and a few
// channels scaled up as outliers.
std::vector<float> CorrelatedInputs(int64_t tokens, int64_t k, uint32_t seed) {
  const std::vector<float> z = RandomNormal(tokens * k, seed);
  const std::vector<float> a = RandomNormal(k * k, seed + 1, 1.0f / std::sqrt(static_cast<float>(k)));
  std::vector<float> x(tokens * k, 0.0f);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t p = 0; p < k; ++p) {
      const float zp = z[t * k + p];
      for (int64_t c = 0; c < k; ++c) x[t * k + c] += zp * a[p * k + c];
    }
  }
  for (int64_t c = 0; c < k; c += k / 8) {
    for (int64_t t = 0; t < tokens; ++t) x[t * k + c] *= 12.0f;
  }
  return x;
}

// ||X Wᵀ - X Ŵᵀ||² = Σ_n (w_n - ŵ_n)ᵀ H (w_n - ŵ_n), all in original order.
double OutputError(const std::vector<float>& w, const std::vector<float>& w_hat, const std::vector<double>& h,
                   int64_t n, int64_t k) {
  double total = 0.0;
  std::vector<double> d(k);
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t i = 0; i < k; ++i) d[i] = double(w[r * k + i]) - w_hat[r * k + i];
    for (int64_t i = 0; i < k; ++i) {
      double hd = 0.0;
      for (int64_t j = 0; j < k; ++j) hd += h[i * k + j] * d[j];
      total += d[i] * hd;
    }
  }
  return total;
}

struct GptqFixture : testing::Test {
  static constexpr int64_t kTokens = 2048, kK = 256, kN = 64;
  void SetUp() override {
    x = CorrelatedInputs(kTokens, kK, 7);
    w = RandomNormal(kN * kK, 8, 0.05f);
    h.assign(kK * kK, 0.0);
    AccumulateHessian(x.data(), kTokens, kK, h.data(), &pool);
    perm = *SaliencePermutation(HessianDiagonal(h, kK));
  }
  // Dequantized weights (original order) for a recipe; perm used when keeper > 0.
  std::vector<float> FakeQuant(bool gptq, int keeper) {
    QuantRecipe recipe;
    recipe.gptq = gptq;
    recipe.keeper = keeper;
    std::vector<float> out(kN * kK);
    const std::span<const int32_t> p = keeper > 0 ? std::span<const int32_t>(perm) : std::span<const int32_t>();
    EXPECT_TRUE(FakeQuantWeightsAtom(w.data(), kN, kK, p, h, recipe, out.data(), &pool).ok());
    return out;
  }
  double Error(const std::vector<float>& w_hat) { return OutputError(w, w_hat, h, kN, kK); }

  ThreadPool pool{4};
  std::vector<float> x, w;
  std::vector<double> h;
  std::vector<int32_t> perm;
};

TEST_F(GptqFixture, BeatsRtnOnCorrelatedInputs) {
  const double rtn = Error(FakeQuant(false, 0));
  const double gptq = Error(FakeQuant(true, 0));
  EXPECT_LT(gptq, 0.9 * rtn) << "gptq " << gptq << " rtn " << rtn;
  const double rtn_keep = Error(FakeQuant(false, 64));
  const double gptq_keep = Error(FakeQuant(true, 64));
  EXPECT_LT(gptq_keep, 0.9 * rtn_keep) << "gptq " << gptq_keep << " rtn " << rtn_keep;
}

TEST_F(GptqFixture, KeepersReduceError) {
  // K_n = 192: one full group and one half group, keepers last.
  const double without = Error(FakeQuant(true, 0));
  const double with = Error(FakeQuant(true, 64));
  EXPECT_LT(with, 0.8 * without) << "with " << with << " without " << without;
}

TEST_F(GptqFixture, ErrorPropagationIntoKeepersHelps) {
  // Same GPTQ INT4 columns, but keepers quantized from the ORIGINAL weights
  // (what GPTQ without propagation into the keepers would produce).
  QuantRecipe recipe;
  recipe.keeper = 64;
  W4A4Matrix propagated = *QuantizeLinearWeight(w.data(), kN, kK, perm, h, recipe, &pool);
  recipe.gptq = false;
  const W4A4Matrix rtn = *QuantizeLinearWeight(w.data(), kN, kK, perm, {}, recipe, &pool);
  W4A4Matrix unpropagated = propagated;
  unpropagated.keeper_codes = rtn.keeper_codes;
  unpropagated.keeper_scales = rtn.keeper_scales;
  std::vector<float> a(kN * kK), b(kN * kK);
  ASSERT_TRUE(Dequantize(propagated, perm, a.data(), nullptr).ok());
  ASSERT_TRUE(Dequantize(unpropagated, perm, b.data(), nullptr).ok());
  EXPECT_NE(propagated.keeper_codes, unpropagated.keeper_codes);
  EXPECT_LT(Error(a), 0.9 * Error(b)) << Error(a) << " vs " << Error(b);
}

TEST_F(GptqFixture, EntryPointEqualsGptqOnPermutedInputs) {
  QuantRecipe recipe;
  recipe.keeper = 64;
  const W4A4Matrix via_entry = *QuantizeLinearWeight(w.data(), kN, kK, perm, h, recipe, &pool);
  std::vector<float> wp(kN * kK);
  std::vector<double> hp(kK * kK);
  PermuteColumns(w.data(), kN, kK, perm, wp.data());
  PermuteSymmetric(h.data(), kK, perm, hp.data());
  const W4A4Matrix direct = *QuantizeWeightsGptq(wp.data(), kN, kK, hp, recipe, nullptr);  // single thread
  EXPECT_EQ(via_entry.packed, direct.packed);
  EXPECT_EQ(via_entry.scales, direct.scales);
  EXPECT_EQ(via_entry.keeper_codes, direct.keeper_codes);
  EXPECT_EQ(via_entry.keeper_scales, direct.keeper_scales);
}

TEST_F(GptqFixture, GroupScalesComeFromUpdatedWeights) {
  // The first group sees the original weights, so its scales equal RTN's;
  // later groups are computed after error updates and generally differ.
  QuantRecipe recipe;
  recipe.keeper = 0;
  const W4A4Matrix gptq = *QuantizeWeightsGptq(w.data(), kN, kK, h, recipe, &pool);
  const W4A4Matrix rtn = *QuantizeWeightsRtn(w.data(), kN, kK, recipe, &pool);
  int later_differ = 0;
  for (int64_t r = 0; r < kN; ++r) {
    EXPECT_EQ(gptq.scale_row(r)[0], rtn.scale_row(r)[0]);
    later_differ += gptq.scale_row(r)[1] != rtn.scale_row(r)[1];
  }
  EXPECT_GT(later_differ, kN / 2);
}

// Unblocked GPTQ, one row at a time, straight from the paper: the blocked,
// lazily-updated implementation must agree with it.
std::vector<float> NaiveGptqDequantized(const std::vector<float>& w, const std::vector<double>& u, int64_t n,
                                        int64_t k, int64_t keeper, float clip) {
  const int64_t normal_k = k - keeper;
  std::vector<float> out(n * k);
  for (int64_t r = 0; r < n; ++r) {
    std::vector<double> row(w.begin() + r * k, w.begin() + (r + 1) * k);
    float scale = 0.0f;
    for (int64_t i = 0; i < normal_k; ++i) {
      if (i % 128 == 0) {
        float amax = 0.0f;
        for (int64_t j = i; j < std::min(normal_k, i + 128); ++j) amax = std::max(amax, std::fabs(float(row[j])));
        scale = RoundToHalf((clip * amax) / 7.0f);
      }
      const int q = QuantizeSymmetric(static_cast<float>(row[i]), scale, -8, 7);
      out[r * k + i] = q * scale;
      const double err = (row[i] - double(q) * scale) / u[i * k + i];
      for (int64_t j = i + 1; j < k; ++j) row[j] -= err * u[i * k + j];
    }
    float amax = 0.0f;
    for (int64_t j = normal_k; j < k; ++j) amax = std::max(amax, std::fabs(float(row[j])));
    const float kscale = RoundToHalf(amax / 127.0f);
    for (int64_t j = normal_k; j < k; ++j) {
      out[r * k + j] = QuantizeSymmetric(static_cast<float>(row[j]), kscale, -128, 127) * kscale;
    }
  }
  return out;
}

TEST_F(GptqFixture, MatchesUnblockedNaiveGptq) {
  std::vector<float> wp(kN * kK);
  std::vector<double> hp(kK * kK);
  PermuteColumns(w.data(), kN, kK, perm, wp.data());
  PermuteSymmetric(h.data(), kK, perm, hp.data());
  const std::vector<double> u = *GptqInverseHessianFactor(hp, kK, 0.01, nullptr, nullptr);
  const std::vector<float> want = NaiveGptqDequantized(wp, u, kN, kK, 64, 0.85f);
  QuantRecipe recipe;
  recipe.keeper = 64;
  const W4A4Matrix q = *QuantizeWeightsGptq(wp.data(), kN, kK, hp, recipe, &pool);
  std::vector<float> got(kN * kK);
  ASSERT_TRUE(Dequantize(q, {}, got.data(), nullptr).ok());
  // Summation order differs (lazy block updates), so a value sitting exactly
  // on a rounding boundary may flip; allow a handful.
  int64_t mismatches = 0;
  for (int64_t i = 0; i < kN * kK; ++i) mismatches += got[i] != want[i];
  EXPECT_LE(mismatches, kN * kK / 1000) << mismatches;
}

TEST(GptqTest, InverseHessianFactor) {
  const int64_t k = 48;
  std::vector<float> x = CorrelatedInputs(200, k, 3);
  std::vector<double> h(k * k, 0.0);
  AccumulateHessian(x.data(), 200, k, h.data(), nullptr);
  ThreadPool pool(3);
  std::vector<char> dead;
  absl::StatusOr<std::vector<double>> u = GptqInverseHessianFactor(h, k, 0.01, &dead, &pool);
  ASSERT_TRUE(u.ok()) << u.status();
  double mean_diag = 0.0;
  for (int64_t i = 0; i < k; ++i) mean_diag += h[i * k + i] / k;
  // (UᵀU)(H + damp·I) = I, and U is upper triangular with a positive diagonal.
  for (int64_t i = 0; i < k; ++i) {
    EXPECT_GT((*u)[i * k + i], 0.0);
    for (int64_t j = 0; j < i; ++j) EXPECT_EQ((*u)[i * k + j], 0.0);
  }
  for (int64_t i = 0; i < k; ++i) {
    for (int64_t j = 0; j < k; ++j) {
      double v = 0.0;
      for (int64_t p = 0; p < k; ++p) {
        double utu = 0.0;
        for (int64_t q = 0; q < k; ++q) utu += (*u)[q * k + i] * (*u)[q * k + p];
        v += utu * (h[p * k + j] + (p == j ? 0.01 * mean_diag : 0.0));
      }
      EXPECT_NEAR(v, i == j ? 1.0 : 0.0, 1e-8) << i << "," << j;
    }
  }
  EXPECT_EQ(std::count(dead.begin(), dead.end(), 1), 0);
}

TEST(GptqTest, DiagonalHessianReducesToRtn) {
  // With uncorrelated inputs U is diagonal: no error is propagated.
  const int64_t n = 16, k = 576;
  std::vector<float> w = RandomNormal(n * k, 4, 0.1f);
  std::vector<double> h(k * k, 0.0);
  for (int64_t i = 0; i < k; ++i) h[i * k + i] = 1.0 + (i % 7);
  QuantRecipe recipe;
  const W4A4Matrix gptq = *QuantizeWeightsGptq(w.data(), n, k, h, recipe, nullptr);
  const W4A4Matrix rtn = *QuantizeWeightsRtn(w.data(), n, k, recipe, nullptr);
  EXPECT_EQ(gptq.packed, rtn.packed);
  EXPECT_EQ(gptq.scales, rtn.scales);
  EXPECT_EQ(gptq.keeper_codes, rtn.keeper_codes);
  EXPECT_EQ(gptq.keeper_scales, rtn.keeper_scales);
}

TEST(GptqTest, DeadColumnsAreZeroed) {
  const int64_t tokens = 300, n = 8, k = 200;
  std::vector<float> x = CorrelatedInputs(tokens, k, 5);
  for (int64_t t = 0; t < tokens; ++t) x[t * k + 17] = x[t * k + 190] = 0.0f;  // 190 is a keeper
  std::vector<double> h(k * k, 0.0);
  AccumulateHessian(x.data(), tokens, k, h.data(), nullptr);
  std::vector<float> w = RandomNormal(n * k, 6);
  QuantRecipe recipe;
  recipe.keeper = 64;
  std::vector<float> w_hat(n * k);
  ASSERT_TRUE(FakeQuantWeightsAtom(w.data(), n, k, {}, h, recipe, w_hat.data(), nullptr).ok());
  for (int64_t r = 0; r < n; ++r) {
    EXPECT_EQ(w_hat[r * k + 17], 0.0f);
    EXPECT_EQ(w_hat[r * k + 190], 0.0f);
    for (float v : std::span<const float>(&w_hat[r * k], k)) EXPECT_FALSE(std::isnan(v));
  }
  std::vector<char> dead;
  ASSERT_TRUE(GptqInverseHessianFactor(h, k, 0.01, &dead, nullptr).ok());
  EXPECT_EQ(dead[17], 1);
  EXPECT_EQ(dead[190], 1);
  EXPECT_EQ(std::count(dead.begin(), dead.end(), 1), 2);
}

TEST(GptqTest, ThreadedEqualsSingleThreaded) {
  const int64_t tokens = 500, n = 45, k = 576;
  std::vector<float> x = CorrelatedInputs(tokens, k, 9);
  std::vector<double> h(k * k, 0.0);
  AccumulateHessian(x.data(), tokens, k, h.data(), nullptr);
  std::vector<float> w = RandomNormal(n * k, 10);
  ThreadPool pool(4);
  QuantRecipe recipe;
  recipe.gptq_block = 256;
  const W4A4Matrix a = *QuantizeWeightsGptq(w.data(), n, k, h, recipe, nullptr);
  const W4A4Matrix b = *QuantizeWeightsGptq(w.data(), n, k, h, recipe, &pool);
  EXPECT_EQ(a.packed, b.packed);
  EXPECT_EQ(a.scales, b.scales);
  EXPECT_EQ(a.keeper_codes, b.keeper_codes);
  EXPECT_EQ(a.keeper_scales, b.keeper_scales);
}

TEST(GptqTest, BadInputsAreRejected) {
  const int64_t k = 64;
  std::vector<float> w(4 * k, 1.0f);
  std::vector<double> h(k * k, 0.0);
  for (int64_t i = 0; i < k; ++i) h[i * k + i] = -1.0;  // negative definite
  QuantRecipe recipe;
  recipe.keeper = 0;
  EXPECT_EQ(QuantizeWeightsGptq(w.data(), 4, k, h, recipe, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<double> short_h(k * k - 1, 1.0);
  EXPECT_EQ(QuantizeWeightsGptq(w.data(), 4, k, short_h, recipe, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(QuantizeLinearWeight(w.data(), 4, k, {}, {}, recipe, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);  // gptq without a Hessian
  h.assign(k * k, 0.0);
  h[5] = std::nan("");
  EXPECT_EQ(QuantizeWeightsGptq(w.data(), 4, k, h, recipe, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  recipe.keeper = 80;  // > K
  EXPECT_EQ(QuantizeWeightsRtn(w.data(), 4, k, recipe, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  recipe.keeper = 8;  // not a multiple of 16
  EXPECT_EQ(QuantizeWeightsRtn(w.data(), 4, k, recipe, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(GptqTest, AllZeroHessianAndWeights) {
  // Every column dead: H becomes I, weights become 0, no NaN anywhere.
  const int64_t n = 3, k = 200;
  std::vector<float> w = RandomNormal(n * k, 12);
  std::vector<double> h(k * k, 0.0);
  QuantRecipe recipe;
  recipe.keeper = 64;
  std::vector<float> w_hat(n * k, 1.0f);
  ASSERT_TRUE(FakeQuantWeightsAtom(w.data(), n, k, {}, h, recipe, w_hat.data(), nullptr).ok());
  for (float v : w_hat) EXPECT_EQ(v, 0.0f);
}

TEST(FakeQuantTest, AtomFloatPathEqualsIntegerLinear) {
  const int64_t tokens = 9, n = 24, k = 576;
  std::vector<float> x = CorrelatedInputs(tokens, k, 20);
  std::vector<float> w = RandomNormal(n * k, 21, 0.05f);
  std::vector<double> h(k * k, 0.0);
  AccumulateHessian(x.data(), tokens, k, h.data(), nullptr);
  const std::vector<int32_t> perm = *SaliencePermutation(HessianDiagonal(h, k));
  QuantRecipe recipe;
  recipe.gptq = false;
  std::vector<float> x_fake(tokens * k), w_fake(n * k);
  ASSERT_TRUE(FakeQuantActivationsAtom(x.data(), tokens, k, perm, recipe, x_fake.data(), nullptr).ok());
  ASSERT_TRUE(FakeQuantWeightsAtom(w.data(), n, k, perm, {}, recipe, w_fake.data(), nullptr).ok());
  W4A4Matrix xq;
  ASSERT_TRUE(ReorderQuantize(x.data(), tokens, k, perm, recipe, &xq, nullptr).ok());
  const W4A4Matrix wq = *QuantizeLinearWeight(w.data(), n, k, perm, {}, recipe, nullptr);
  std::vector<float> y(tokens * n);
  ASSERT_TRUE(W4A4Linear(xq, wq, nullptr, y.data(), nullptr).ok());
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t j = 0; j < n; ++j) {
      double exact = 0.0, magnitude = 0.0;
      for (int64_t i = 0; i < k; ++i) {
        const double p = double(x_fake[t * k + i]) * w_fake[j * k + i];
        exact += p;
        magnitude += std::fabs(p);
      }
      EXPECT_NEAR(y[t * n + j], exact, 1e-5 * magnitude);
    }
  }
}

TEST(FakeQuantTest, PerRowBounds) {
  const int64_t rows = 6, k = 1536;
  std::vector<float> x = RandomNormal(rows * k, 30, 3.0f);
  for (int bits : {4, 8}) {
    std::vector<float> out(rows * k);
    ThreadPool pool(2);
    ASSERT_TRUE(FakeQuantPerRow(x.data(), rows, k, bits, 1.0f, out.data(), &pool).ok());
    const float qmax = static_cast<float>((1 << (bits - 1)) - 1);
    for (int64_t r = 0; r < rows; ++r) {
      const float scale = RoundToHalf(AbsMax(&x[r * k], k) / qmax);
      for (int64_t i = 0; i < k; ++i) {
        ASSERT_LE(std::fabs(out[r * k + i] - x[r * k + i]), 0.5f * scale * 1.001f) << bits;
        ASSERT_EQ(std::fmod(std::fabs(out[r * k + i]), scale), 0.0f);  // a multiple of the scale
      }
    }
    std::vector<float> in_place = x;
    ASSERT_TRUE(FakeQuantPerRow(in_place.data(), rows, k, bits, 1.0f, in_place.data(), nullptr).ok());
    EXPECT_EQ(in_place, out);
  }
  // Per-row INT4 over all of K is much worse than Atom's grouped format with keepers.
  std::vector<float> y = CorrelatedInputs(32, 576, 31);
  std::vector<float> naive(y.size()), atom(y.size());
  ASSERT_TRUE(FakeQuantPerRow(y.data(), 32, 576, 4, 1.0f, naive.data(), nullptr).ok());
  std::vector<double> salience(576, 0.0);
  AccumulateSalience(y.data(), 32, 576, salience.data());
  const std::vector<int32_t> perm = *SaliencePermutation(salience);
  ASSERT_TRUE(FakeQuantActivationsAtom(y.data(), 32, 576, perm, QuantRecipe{}, atom.data(), nullptr).ok());
  double e_naive = 0.0, e_atom = 0.0;
  for (size_t i = 0; i < y.size(); ++i) {
    e_naive += (naive[i] - y[i]) * (naive[i] - y[i]);
    e_atom += (atom[i] - y[i]) * (atom[i] - y[i]);
  }
  EXPECT_LT(e_atom, 0.5 * e_naive);
  std::vector<float> out(rows * k);
  EXPECT_EQ(FakeQuantPerRow(x.data(), rows, k, 1, 1.0f, out.data(), nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FakeQuantPerRow(x.data(), rows, k, 4, 0.0f, out.data(), nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace atomserve::quant
