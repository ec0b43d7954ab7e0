// Tests of the integer W4A4 linear reference: against a float64 computation
// over the dequantized operands, its int32 accumulators against a naive
// recomputation, residual handling, threading, and errors.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/thread_pool.h"
#include "gtest/gtest.h"
#include "kernels/quant/activation_quant.h"
#include "kernels/quant/quantize.h"
#include "kernels/quant/w4a4_linear.h"
#include "kernels/quant/weight_quant.h"

#include "tests/cpp/test_random.h"

namespace atomserve::quant {
namespace {

using testing_util::RandomNormal;

struct Shape {
  int64_t tokens, n, k;
  int keeper;
  friend void PrintTo(const Shape& s, std::ostream* os) {
    *os << "T=" << s.tokens << " N=" << s.n << " K=" << s.k << " keeper=" << s.keeper;
  }
};
const Shape kShapes[] = {{1, 64, 576, 128},  {7, 96, 576, 0},   {33, 40, 1536, 128},
                         {5, 17, 1536, 64},  {70, 9, 200, 64},  {3, 30, 200, 0},
                         {4, 8, 128, 128},   {130, 70, 576, 128}};

struct Operands {
  W4A4Matrix act, weight;
  std::vector<float> act_float, weight_float;  // dequantized, reordered order
};

Operands MakeOperands(const Shape& s, uint32_t seed) {
  QuantRecipe recipe;
  recipe.keeper = s.keeper;
  recipe.gptq = false;
  Operands o;
  std::vector<float> x = RandomNormal(s.tokens * s.k, seed, 2.0f);
  for (int64_t t = 0; t < s.tokens; ++t) x[t * s.k + s.k - 1] *= 50.0f;  // an outlier channel
  std::vector<float> w = RandomNormal(s.n * s.k, seed + 1, 0.05f);
  EXPECT_TRUE(ReorderQuantize(x.data(), s.tokens, s.k, {}, recipe, &o.act, nullptr).ok());
  o.weight = *QuantizeWeightsRtn(w.data(), s.n, s.k, recipe, nullptr);
  o.act_float.resize(s.tokens * s.k);
  o.weight_float.resize(s.n * s.k);
  EXPECT_TRUE(Dequantize(o.act, {}, o.act_float.data(), nullptr).ok());
  EXPECT_TRUE(Dequantize(o.weight, {}, o.weight_float.data(), nullptr).ok());
  return o;
}

std::string Name(const Shape& s) { return absl::StrCat("T", s.tokens, "_N", s.n, "_K", s.k, "_keeper", s.keeper); }

class W4A4LinearTest : public testing::TestWithParam<Shape> {};

TEST_P(W4A4LinearTest, MatchesFloat64OverDequantizedValues) {
  const Shape s = GetParam();
  const Operands o = MakeOperands(s, 1000 + s.k + s.n);
  ThreadPool pool(4);
  std::vector<float> residual = RandomNormal(s.tokens * s.n, 7);
  std::vector<float> y(s.tokens * s.n, std::nanf("")), y_res(s.tokens * s.n, std::nanf(""));
  ASSERT_TRUE(W4A4Linear(o.act, o.weight, nullptr, y.data(), &pool).ok());
  ASSERT_TRUE(W4A4Linear(o.act, o.weight, residual.data(), y_res.data(), &pool).ok());
  for (int64_t t = 0; t < s.tokens; ++t) {
    for (int64_t n = 0; n < s.n; ++n) {
      double exact = 0.0, magnitude = 0.0;
      for (int64_t i = 0; i < s.k; ++i) {
        const double p = double(o.act_float[t * s.k + i]) * o.weight_float[n * s.k + i];
        exact += p;
        magnitude += std::fabs(p);
      }
      const double tol = 1e-5 * magnitude + 1e-30;
      ASSERT_NEAR(y[t * s.n + n], exact, tol) << t << "," << n;
      ASSERT_NEAR(y_res[t * s.n + n], exact + residual[t * s.n + n],
                  tol + 1e-6 * std::fabs(residual[t * s.n + n]))
          << t << "," << n;
    }
  }
}

TEST_P(W4A4LinearTest, AccumulatorsEqualNaiveRecomputation) {
  const Shape s = GetParam();
  const Operands o = MakeOperands(s, 2000 + s.k);
  const QuantLayout& layout = o.act.layout;
  const int64_t per_output = layout.accumulators();
  // A tile away from the origin, clipped to the shape.
  const int64_t t0 = s.tokens / 3, t1 = std::min(s.tokens, t0 + 5);
  const int64_t n0 = s.n / 4, n1 = std::min(s.n, n0 + 6);
  std::vector<int32_t> acc((t1 - t0) * (n1 - n0) * per_output, -1);
  ASSERT_TRUE(W4A4Accumulators(o.act, o.weight, t0, t1, n0, n1, acc.data()).ok());
  for (int64_t t = t0; t < t1; ++t) {
    std::vector<int8_t> a(layout.padded_normal_k());
    UnpackInt4(o.act.packed_row(t), layout.padded_normal_k(), a.data());
    for (int64_t n = n0; n < n1; ++n) {
      std::vector<int8_t> w(layout.padded_normal_k());
      UnpackInt4(o.weight.packed_row(n), layout.padded_normal_k(), w.data());
      std::vector<int64_t> want(per_output, 0);
      for (int64_t i = 0; i < layout.normal_k(); ++i) want[i / 128] += int64_t(a[i]) * w[i];
      for (int64_t i = 0; i < layout.keeper; ++i) {
        want[layout.groups()] += int64_t(o.act.keeper_row(t)[i]) * o.weight.keeper_row(n)[i];
      }
      const int32_t* got = &acc[((t - t0) * (n1 - n0) + (n - n0)) * per_output];
      for (int64_t g = 0; g < per_output; ++g) ASSERT_EQ(got[g], want[g]) << t << "," << n << " g" << g;
    }
  }
}

TEST_P(W4A4LinearTest, ThreadedEqualsSingleThreadedBitwise) {
  const Shape s = GetParam();
  const Operands o = MakeOperands(s, 3000);
  ThreadPool pool(3);
  std::vector<float> y1(s.tokens * s.n), y2(s.tokens * s.n);
  ASSERT_TRUE(W4A4Linear(o.act, o.weight, nullptr, y1.data(), nullptr).ok());
  ASSERT_TRUE(W4A4Linear(o.act, o.weight, nullptr, y2.data(), &pool).ok());
  EXPECT_EQ(y1, y2);
}

INSTANTIATE_TEST_SUITE_P(Shapes, W4A4LinearTest, testing::ValuesIn(kShapes),
                         [](const testing::TestParamInfo<Shape>& info) { return Name(info.param); });

TEST(W4A4LinearTest, ApproximatesTheFloatLayer) {
  // End to end: W4A4 (RTN, keepers on the outlier channels) stays close to the
  // float layer; without keepers the outlier hurts much more.
  const int64_t tokens = 64, n = 128, k = 576;
  std::vector<float> x = RandomNormal(tokens * k, 41);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t c = k - 16; c < k; ++c) x[t * k + c] *= 40.0f;  // outliers, already last
  }
  std::vector<float> w = RandomNormal(n * k, 42, 0.05f);
  std::vector<double> exact(tokens * n, 0.0);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t j = 0; j < n; ++j) {
      for (int64_t i = 0; i < k; ++i) exact[t * n + j] += double(x[t * k + i]) * w[j * k + i];
    }
  }
  auto relative_error = [&](int keeper) {
    QuantRecipe recipe;
    recipe.keeper = keeper;
    recipe.gptq = false;
    W4A4Matrix xq;
    EXPECT_TRUE(ReorderQuantize(x.data(), tokens, k, {}, recipe, &xq, nullptr).ok());
    W4A4Matrix wq = *QuantizeWeightsRtn(w.data(), n, k, recipe, nullptr);
    std::vector<float> y(tokens * n);
    EXPECT_TRUE(W4A4Linear(xq, wq, nullptr, y.data(), nullptr).ok());
    double err = 0.0, norm = 0.0;
    for (int64_t i = 0; i < tokens * n; ++i) {
      err += (y[i] - exact[i]) * (y[i] - exact[i]);
      norm += exact[i] * exact[i];
    }
    return std::sqrt(err / norm);
  };
  const double with_keepers = relative_error(128);
  const double without_keepers = relative_error(0);
  EXPECT_LT(with_keepers, 0.2);
  EXPECT_LT(with_keepers, 0.7 * without_keepers);
}

TEST(W4A4LinearTest, AllZeroInputsGiveZeros) {
  QuantRecipe recipe;
  recipe.gptq = false;
  std::vector<float> x(3 * 576, 0.0f), w = RandomNormal(10 * 576, 5);
  W4A4Matrix xq;
  ASSERT_TRUE(ReorderQuantize(x.data(), 3, 576, {}, recipe, &xq, nullptr).ok());
  W4A4Matrix wq = *QuantizeWeightsRtn(w.data(), 10, 576, recipe, nullptr);
  std::vector<float> y(30, std::nanf(""));
  ASSERT_TRUE(W4A4Linear(xq, wq, nullptr, y.data(), nullptr).ok());
  for (float v : y) EXPECT_EQ(v, 0.0f);
  std::vector<float> zero_w(10 * 576, 0.0f);
  W4A4Matrix zq = *QuantizeWeightsRtn(zero_w.data(), 10, 576, recipe, nullptr);
  ASSERT_TRUE(ReorderQuantize(w.data(), 3, 576, {}, recipe, &xq, nullptr).ok());
  ASSERT_TRUE(W4A4Linear(xq, zq, nullptr, y.data(), nullptr).ok());
  for (float v : y) EXPECT_EQ(v, 0.0f);
}

TEST(W4A4LinearTest, InPlaceResidual) {
  const Operands o = MakeOperands({6, 20, 576, 128}, 77);
  std::vector<float> residual = RandomNormal(6 * 20, 78);
  std::vector<float> y_separate(6 * 20), y_inplace = residual;
  ASSERT_TRUE(W4A4Linear(o.act, o.weight, residual.data(), y_separate.data(), nullptr).ok());
  ASSERT_TRUE(W4A4Linear(o.act, o.weight, y_inplace.data(), y_inplace.data(), nullptr).ok());
  EXPECT_EQ(y_separate, y_inplace);
}

TEST(W4A4LinearTest, MismatchedOrInconsistentOperandsAreRejected) {
  const Operands a = MakeOperands({2, 8, 576, 128}, 1);
  const Operands b = MakeOperands({2, 8, 576, 64}, 2);
  std::vector<float> y(16);
  EXPECT_EQ(W4A4Linear(a.act, b.weight, nullptr, y.data(), nullptr).code(), absl::StatusCode::kInvalidArgument);
  W4A4Matrix broken = a.weight;
  broken.packed.resize(broken.packed.size() - 1);
  EXPECT_EQ(W4A4Linear(a.act, broken, nullptr, y.data(), nullptr).code(), absl::StatusCode::kInvalidArgument);
  std::vector<int32_t> acc(1000);
  EXPECT_EQ(W4A4Accumulators(a.act, a.weight, 0, 3, 0, 1, acc.data()).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(W4A4Accumulators(a.act, a.weight, 0, 1, 5, 9, acc.data()).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace atomserve::quant
