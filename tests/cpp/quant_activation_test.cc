// Tests of the row quantizer (error bounds, clipping, zero groups), the fused
// activation quantizers against their float-path twins, dequantization, and
// the salience reorder.
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
#include "kernels/quant/reorder.h"
#include "kernels/quant/w4a4_format.h"

#include "tests/cpp/test_random.h"

namespace atomserve::quant {
namespace {

using testing_util::RandomNormal;

// Activations with a few large outlier channels, like LLM hidden states.
std::vector<float> RandomActivations(int64_t tokens, int64_t k, uint32_t seed) {
  std::vector<float> x = RandomNormal(tokens * k, seed);
  std::mt19937 rng(seed + 1);
  std::uniform_int_distribution<int64_t> channel(0, k - 1);
  for (int i = 0; i < 6; ++i) {
    const int64_t c = channel(rng);
    for (int64_t t = 0; t < tokens; ++t) x[t * k + c] *= 30.0f;
  }
  return x;
}

std::vector<int32_t> RandomPermutation(int64_t k, uint32_t seed) {
  std::vector<int32_t> perm(k);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), std::mt19937(seed));
  return perm;
}

QuantRecipe RecipeWithKeeper(int keeper) {
  QuantRecipe r;
  r.keeper = keeper;
  return r;
}

void ExpectSameMatrix(const W4A4Matrix& a, const W4A4Matrix& b) {
  EXPECT_EQ(a.layout, b.layout);
  EXPECT_EQ(a.rows, b.rows);
  EXPECT_EQ(a.packed, b.packed);
  EXPECT_EQ(a.scales, b.scales);
  EXPECT_EQ(a.keeper_codes, b.keeper_codes);
  EXPECT_EQ(a.keeper_scales, b.keeper_scales);
}

struct Shape {
  int64_t k;
  int keeper;
  friend void PrintTo(const Shape& s, std::ostream* os) { *os << "K=" << s.k << " keeper=" << s.keeper; }
};
const Shape kShapes[] = {{576, 128}, {576, 0}, {1536, 128}, {1536, 64}, {200, 64}, {200, 0}, {128, 128}};

// Per element: unclipped values are within scale/2; clipped ones saturate.
void CheckRowQuantization(const float* row, const W4A4Matrix& q, int64_t r, float clip) {
  const QuantLayout& layout = q.layout;
  std::vector<int8_t> codes(layout.padded_normal_k());
  UnpackInt4(q.packed_row(r), layout.padded_normal_k(), codes.data());
  std::vector<float> deq(layout.k);
  DequantizeRow(q, r, deq.data());
  for (int64_t g = 0; g < layout.groups(); ++g) {
    const int64_t begin = g * kGroupSize;
    const int64_t end = std::min(begin + kGroupSize, layout.normal_k());
    const float amax = AbsMax(row + begin, end - begin);
    ASSERT_EQ(q.scale_row(r)[g], FloatToHalfBits((clip * amax) / 7.0f)) << "group " << g;
    const float s = HalfBitsToFloat(q.scale_row(r)[g]);
    for (int64_t i = begin; i < end; ++i) {
      const float ratio = row[i] / s;
      if (ratio > 7.5f) {
        ASSERT_EQ(codes[i], 7) << i;
      } else if (ratio < -8.5f) {
        ASSERT_EQ(codes[i], -8) << i;
      } else {
        ASSERT_LE(std::fabs(row[i] - deq[i]), 0.5f * s * (1.0f + 1e-6f)) << i;
      }
    }
    for (int64_t i = end; i < begin + kGroupSize; ++i) ASSERT_EQ(codes[i], 0) << "padding " << i;
  }
  if (layout.keeper == 0) return;
  const float kamax = AbsMax(row + layout.normal_k(), layout.keeper);
  ASSERT_EQ(q.keeper_scales[r], FloatToHalfBits(kamax / 127.0f));
  const float ks = HalfBitsToFloat(q.keeper_scales[r]);
  for (int64_t i = layout.normal_k(); i < layout.k; ++i) {
    ASSERT_LE(std::fabs(row[i] - deq[i]), 0.5f * ks * (1.0f + 1e-5f)) << "keeper " << i;
  }
}

TEST(QuantizeRowsTest, ErrorWithinHalfScaleAndClippedValuesSaturate) {
  for (const Shape& shape : kShapes) {
    for (float clip : {0.85f, 0.9f, 1.0f}) {
      const int64_t rows = 9;
      std::vector<float> x = RandomActivations(rows, shape.k, 100 + shape.k);
      W4A4Matrix q;
      QuantizeRows(x.data(), rows, *QuantLayout::Make(shape.k, shape.keeper), clip, &q, nullptr);
      ASSERT_TRUE(q.CheckConsistent().ok());
      for (int64_t r = 0; r < rows; ++r) {
        SCOPED_TRACE(testing::Message() << "K=" << shape.k << " keeper=" << shape.keeper << " clip=" << clip);
        CheckRowQuantization(&x[r * shape.k], q, r, clip);
      }
    }
  }
}

TEST(QuantizeRowsTest, ValuesAboveClipTimesMaxSaturate) {
  // One group: max 1.0, clip 0.85 -> scale 0.85/7; everything >= 0.85 is code 7.
  std::vector<float> row(128, 0.0f);
  row[0] = 1.0f;
  row[1] = 0.9f;
  row[2] = 0.86f;
  row[3] = -1.0f;
  row[4] = 0.5f;
  W4A4Matrix q;
  QuantizeRows(row.data(), 1, *QuantLayout::Make(128, 0), 0.85f, &q, nullptr);
  std::vector<int8_t> codes(128);
  UnpackInt4(q.packed_row(0), 128, codes.data());
  EXPECT_EQ(codes[0], 7);
  EXPECT_EQ(codes[1], 7);
  EXPECT_EQ(codes[2], 7);
  EXPECT_EQ(codes[3], -8);  // -1/s = -8.24 rounds to -8 (in range)
  EXPECT_EQ(codes[4], 4);   // 0.5/s = 4.12
  EXPECT_EQ(q.scales[0], FloatToHalfBits(0.85f / 7.0f));
}

TEST(QuantizeRowsTest, AllZeroGroupsGiveZeroScalesAndCodes) {
  const QuantLayout layout = *QuantLayout::Make(576, 128);
  std::vector<float> x(2 * 576, 0.0f);
  // Row 1: only the second group is nonzero.
  for (int64_t i = 128; i < 256; ++i) x[576 + i] = 0.25f;
  W4A4Matrix q;
  QuantizeRows(x.data(), 2, layout, 0.9f, &q, nullptr);
  EXPECT_TRUE(std::all_of(q.packed_row(0), q.packed_row(0) + 256, [](uint8_t b) { return b == 0; }));
  EXPECT_EQ(q.scale_row(0)[0], 0);
  EXPECT_EQ(q.keeper_scales[0], 0);
  EXPECT_EQ(q.scale_row(1)[0], 0);
  EXPECT_NE(q.scale_row(1)[1], 0);
  std::vector<float> back(2 * 576);
  ASSERT_TRUE(Dequantize(q, {}, back.data(), nullptr).ok());
  for (int64_t i = 0; i < 576; ++i) EXPECT_EQ(back[i], 0.0f);
  for (float v : back) EXPECT_FALSE(std::isnan(v));
}

TEST(QuantizeRowsTest, ThreadedEqualsSingleThreaded) {
  ThreadPool pool(4);
  std::vector<float> x = RandomActivations(67, 1536, 5);
  const QuantLayout layout = *QuantLayout::Make(1536, 128);
  W4A4Matrix single, threaded;
  QuantizeRows(x.data(), 67, layout, 0.9f, &single, nullptr);
  QuantizeRows(x.data(), 67, layout, 0.9f, &threaded, &pool);
  ExpectSameMatrix(single, threaded);
}

TEST(DequantizeTest, PermutationRestoresOriginalOrder) {
  const int64_t k = 200, rows = 5;
  const std::vector<int32_t> perm = RandomPermutation(k, 9);
  std::vector<float> x = RandomNormal(rows * k, 10);
  std::vector<float> gathered(rows * k);
  PermuteColumns(x.data(), rows, k, perm, gathered.data());
  W4A4Matrix q;
  QuantizeRows(gathered.data(), rows, *QuantLayout::Make(k, 64), 1.0f, &q, nullptr);
  std::vector<float> reordered(rows * k), original(rows * k);
  ASSERT_TRUE(Dequantize(q, {}, reordered.data(), nullptr).ok());
  ASSERT_TRUE(Dequantize(q, perm, original.data(), nullptr).ok());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < k; ++j) EXPECT_EQ(original[r * k + perm[j]], reordered[r * k + j]);
  }
  std::vector<int32_t> bad = perm;
  bad[3] = bad[4];
  EXPECT_EQ(Dequantize(q, bad, original.data(), nullptr).code(), absl::StatusCode::kInvalidArgument);
}

class FusedQuantizeTest : public testing::TestWithParam<Shape> {};

TEST_P(FusedQuantizeTest, RmsNormReorderQuantizeEqualsFloatPath) {
  const Shape shape = GetParam();
  const int64_t tokens = 13;
  ThreadPool pool(3);
  std::vector<float> x = RandomActivations(tokens, shape.k, 21);
  std::vector<float> weight = RandomNormal(shape.k, 22);
  const QuantRecipe recipe = RecipeWithKeeper(shape.keeper);
  for (const std::vector<int32_t>& perm : {RandomPermutation(shape.k, 23), std::vector<int32_t>{}}) {
    W4A4Matrix fused, reference;
    ASSERT_TRUE(RmsNormReorderQuantize(x.data(), weight.data(), 1e-5f, tokens, shape.k, perm, recipe, &fused,
                                       &pool).ok());
    ASSERT_TRUE(RmsNormReorderQuantizeReference(x.data(), weight.data(), 1e-5f, tokens, shape.k, perm, recipe,
                                                &reference).ok());
    ExpectSameMatrix(fused, reference);
    EXPECT_EQ(fused.layout.keeper, shape.keeper);
  }
}

TEST_P(FusedQuantizeTest, SiluMulQuantizeEqualsFloatPath) {
  const Shape shape = GetParam();
  const int64_t tokens = 11;
  ThreadPool pool(3);
  std::vector<float> gate = RandomNormal(tokens * shape.k, 31, 3.0f);
  std::vector<float> up = RandomActivations(tokens, shape.k, 32);
  const QuantRecipe recipe = RecipeWithKeeper(shape.keeper);
  for (const std::vector<int32_t>& perm : {RandomPermutation(shape.k, 33), std::vector<int32_t>{}}) {
    W4A4Matrix fused, reference;
    ASSERT_TRUE(SiluMulQuantize(gate.data(), up.data(), tokens, shape.k, perm, recipe, &fused, &pool).ok());
    ASSERT_TRUE(SiluMulQuantizeReference(gate.data(), up.data(), tokens, shape.k, perm, recipe, &reference).ok());
    ExpectSameMatrix(fused, reference);
  }
}

TEST_P(FusedQuantizeTest, ReorderQuantizeEqualsFloatPath) {
  const Shape shape = GetParam();
  const int64_t tokens = 7;
  ThreadPool pool(3);
  std::vector<float> x = RandomActivations(tokens, shape.k, 41);
  const QuantRecipe recipe = RecipeWithKeeper(shape.keeper);
  const std::vector<int32_t> perm = RandomPermutation(shape.k, 42);
  W4A4Matrix fused, reference;
  ASSERT_TRUE(ReorderQuantize(x.data(), tokens, shape.k, perm, recipe, &fused, &pool).ok());
  ASSERT_TRUE(ReorderQuantizeReference(x.data(), tokens, shape.k, perm, recipe, &reference).ok());
  ExpectSameMatrix(fused, reference);
  // And it is the plain row quantizer applied to the gathered rows.
  std::vector<float> gathered(tokens * shape.k);
  PermuteColumns(x.data(), tokens, shape.k, perm, gathered.data());
  for (int64_t t = 0; t < tokens; ++t) {
    CheckRowQuantization(&gathered[t * shape.k], fused, t, recipe.act_clip);
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, FusedQuantizeTest, testing::ValuesIn(kShapes),
                         [](const testing::TestParamInfo<Shape>& info) {
                           return absl::StrCat("K", info.param.k, "_keeper", info.param.keeper);
                         });

TEST(FusedQuantizeTest, PermutedGateUpRowsMakeSiluMulReorderFree) {
  // Atom's free MLP reorder: permuting gate/up_proj rows by down_proj's perm
  // lets SiluMulQuantize run with an identity perm and give the same result.
  const int64_t tokens = 5, hidden = 64, inter = 1536;
  const std::vector<float> x = RandomNormal(tokens * hidden, 81);
  const std::vector<float> wg = RandomNormal(inter * hidden, 82, 0.2f);
  const std::vector<float> wu = RandomNormal(inter * hidden, 83, 0.2f);
  const std::vector<int32_t> perm = RandomPermutation(inter, 84);
  auto matmul = [&](const std::vector<float>& w) {
    std::vector<float> y(tokens * inter, 0.0f);
    for (int64_t t = 0; t < tokens; ++t) {
      for (int64_t n = 0; n < inter; ++n) {
        for (int64_t i = 0; i < hidden; ++i) y[t * inter + n] += x[t * hidden + i] * w[n * hidden + i];
      }
    }
    return y;
  };
  std::vector<float> wg_perm(wg.size()), wu_perm(wu.size());
  PermuteRows(wg.data(), hidden, perm, wg_perm.data());
  PermuteRows(wu.data(), hidden, perm, wu_perm.data());
  const std::vector<float> gate = matmul(wg), up = matmul(wu);
  const std::vector<float> gate_perm = matmul(wg_perm), up_perm = matmul(wu_perm);
  W4A4Matrix online, offline;
  ASSERT_TRUE(SiluMulQuantize(gate.data(), up.data(), tokens, inter, perm, QuantRecipe{}, &online, nullptr).ok());
  ASSERT_TRUE(
      SiluMulQuantize(gate_perm.data(), up_perm.data(), tokens, inter, {}, QuantRecipe{}, &offline, nullptr).ok());
  ExpectSameMatrix(online, offline);
}

TEST(FusedQuantizeTest, RmsNormMatchesDirectFormula) {
  // Dequantized output tracks the fp32 RMSNorm of the input.
  const int64_t k = 576, tokens = 4;
  std::vector<float> x = RandomNormal(tokens * k, 51, 4.0f);
  std::vector<float> weight = RandomNormal(k, 52);
  W4A4Matrix q;
  QuantRecipe recipe = RecipeWithKeeper(128);
  recipe.act_clip = 1.0f;
  ASSERT_TRUE(RmsNormReorderQuantize(x.data(), weight.data(), 1e-6f, tokens, k, {}, recipe, &q, nullptr).ok());
  std::vector<float> back(tokens * k);
  ASSERT_TRUE(Dequantize(q, {}, back.data(), nullptr).ok());
  for (int64_t t = 0; t < tokens; ++t) {
    double ss = 0.0;
    for (int64_t c = 0; c < k; ++c) ss += double(x[t * k + c]) * x[t * k + c];
    const double inv = 1.0 / std::sqrt(ss / k + 1e-6);
    for (int64_t c = 0; c < k; ++c) {
      const double want = x[t * k + c] * inv * weight[c];
      const int64_t g = c / 128;
      const float s = c < 448 ? HalfBitsToFloat(q.scale_row(t)[g]) : HalfBitsToFloat(q.keeper_scales[t]);
      EXPECT_NEAR(back[t * k + c], want, 0.5 * s + 1e-5 * std::fabs(want));
    }
  }
}

TEST(FusedQuantizeTest, AllZeroInputGivesZerosWithoutNan) {
  const int64_t k = 576, tokens = 3;
  std::vector<float> zeros(tokens * k, 0.0f), weight(k, 1.0f);
  W4A4Matrix q;
  ASSERT_TRUE(RmsNormReorderQuantize(zeros.data(), weight.data(), 1e-5f, tokens, k, {}, QuantRecipe{}, &q, nullptr).ok());
  std::vector<float> back(tokens * k, 1.0f);
  ASSERT_TRUE(Dequantize(q, {}, back.data(), nullptr).ok());
  for (float v : back) EXPECT_EQ(v, 0.0f);
  ASSERT_TRUE(SiluMulQuantize(zeros.data(), zeros.data(), tokens, k, {}, QuantRecipe{}, &q, nullptr).ok());
  EXPECT_TRUE(std::all_of(q.scales.begin(), q.scales.end(), [](uint16_t s) { return s == 0; }));
  EXPECT_TRUE(std::all_of(q.packed.begin(), q.packed.end(), [](uint8_t b) { return b == 0; }));
}

TEST(FusedQuantizeTest, InvalidArgumentsAreRejected) {
  std::vector<float> x(2 * 576, 1.0f);
  W4A4Matrix q;
  QuantRecipe bad_keeper = RecipeWithKeeper(100);
  EXPECT_EQ(ReorderQuantize(x.data(), 2, 576, {}, bad_keeper, &q, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  QuantRecipe too_many = RecipeWithKeeper(640);
  EXPECT_EQ(ReorderQuantize(x.data(), 2, 576, {}, too_many, &q, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<int32_t> short_perm(575);
  std::iota(short_perm.begin(), short_perm.end(), 0);
  EXPECT_EQ(ReorderQuantize(x.data(), 2, 576, short_perm, QuantRecipe{}, &q, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SiluMulQuantize(x.data(), x.data(), -1, 576, {}, QuantRecipe{}, &q, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ReorderTest, SaliencePermutationPutsLargestLast) {
  const int64_t k = 576;
  std::vector<float> x = RandomActivations(64, k, 61);
  std::vector<double> salience(k, 0.0);
  AccumulateSalience(x.data(), 64, k, salience.data());
  absl::StatusOr<std::vector<int32_t>> perm = SaliencePermutation(salience);
  ASSERT_TRUE(perm.ok());
  ASSERT_TRUE(ValidatePermutation(*perm, k).ok());
  for (int64_t j = 1; j < k; ++j) EXPECT_LE(salience[(*perm)[j - 1]], salience[(*perm)[j]]);
  // The 128 keepers are exactly the 128 largest-salience channels.
  std::vector<double> sorted = salience;
  std::sort(sorted.begin(), sorted.end());
  const double threshold = sorted[k - 128];
  for (int64_t j = k - 128; j < k; ++j) EXPECT_GE(salience[(*perm)[j]], threshold);
  for (int64_t j = 0; j < k - 128; ++j) EXPECT_LE(salience[(*perm)[j]], threshold);
  const std::vector<int32_t> inverse = InvertPermutation(*perm);
  for (int64_t j = 0; j < k; ++j) EXPECT_EQ(inverse[(*perm)[j]], j);
}

TEST(ReorderTest, TiesAreStableAndNanIsRejected) {
  const std::vector<double> salience = {3.0, 1.0, 3.0, 0.0, 1.0};
  absl::StatusOr<std::vector<int32_t>> perm = SaliencePermutation(salience);
  ASSERT_TRUE(perm.ok());
  EXPECT_EQ(*perm, (std::vector<int32_t>{3, 1, 4, 0, 2}));
  EXPECT_EQ(SaliencePermutation(std::vector<double>{1.0, std::nan("")}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidatePermutation(std::vector<int32_t>{0, 2, 2}, 3).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidatePermutation(std::vector<int32_t>{0, 1, 3}, 3).code(), absl::StatusCode::kInvalidArgument);
}

TEST(ReorderTest, HessianAccumulationMatchesNaive) {
  const int64_t k = 37, tokens = 50;
  ThreadPool pool(3);
  std::vector<float> x = RandomNormal(tokens * k, 71);
  std::vector<double> h(k * k, 1.0);  // accumulates onto existing values
  AccumulateHessian(x.data(), tokens, k, h.data(), &pool);
  for (int64_t i = 0; i < k; ++i) {
    for (int64_t j = 0; j < k; ++j) {
      double want = 1.0;
      for (int64_t t = 0; t < tokens; ++t) want += double(x[t * k + i]) * x[t * k + j];
      EXPECT_NEAR(h[i * k + j], want, 1e-9 * (1 + std::fabs(want)));
    }
  }
  const std::vector<double> diag = HessianDiagonal(h, k);
  std::vector<double> salience(k, 1.0);
  AccumulateSalience(x.data(), tokens, k, salience.data());
  for (int64_t i = 0; i < k; ++i) EXPECT_NEAR(diag[i], salience[i], 1e-9 * salience[i]);
  const std::vector<int32_t> perm = RandomPermutation(k, 72);
  std::vector<double> hp(k * k);
  PermuteSymmetric(h.data(), k, perm, hp.data());
  for (int64_t i = 0; i < k; ++i) {
    for (int64_t j = 0; j < k; ++j) EXPECT_EQ(hp[i * k + j], h[perm[i] * k + perm[j]]);
  }
}

}  // namespace
}  // namespace atomserve::quant
