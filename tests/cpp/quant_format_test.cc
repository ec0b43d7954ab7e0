// Tests of the W4A4 storage format: fp16 scale conversions, recipe and layout
// validation, nibble packing.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/quant/fp16.h"
#include "kernels/quant/w4a4_format.h"

namespace atomserve::quant {
namespace {

bool IsHalfNan(uint16_t h) { return (h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0; }

TEST(Fp16Test, EveryHalfValueRoundTrips) {
  for (uint32_t h = 0; h <= 0xffff; ++h) {
    const uint16_t bits = static_cast<uint16_t>(h);
    const float f = HalfBitsToFloat(bits);
    if (IsHalfNan(bits)) {
      EXPECT_TRUE(std::isnan(f)) << h;
      EXPECT_TRUE(IsHalfNan(FloatToHalfBits(f))) << h;
      continue;
    }
    EXPECT_EQ(FloatToHalfBits(f), bits) << h;
    EXPECT_EQ(FloatToHalfBitsUp(f), bits) << h;
    EXPECT_EQ(FloatToHalfBitsDown(f), bits) << h;
  }
}

TEST(Fp16Test, KnownValues) {
  EXPECT_EQ(FloatToHalfBits(1.0f), 0x3c00);
  EXPECT_EQ(FloatToHalfBits(-2.0f), 0xc000);
  EXPECT_EQ(FloatToHalfBits(65504.0f), 0x7bff);
  EXPECT_EQ(FloatToHalfBits(65519.0f), 0x7bff);   // below the midpoint to 65536
  EXPECT_EQ(FloatToHalfBits(65520.0f), 0x7c00);   // midpoint: ties to even = inf
  EXPECT_EQ(FloatToHalfBits(1e6f), 0x7c00);
  EXPECT_EQ(FloatToHalfBits(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(FloatToHalfBits(std::ldexp(1.0f, -25)), 0x0000);  // tie -> even (0)
  EXPECT_EQ(FloatToHalfBits(std::ldexp(3.0f, -25)), 0x0002);  // tie -> even (2)
  // 1 + 2^-11 is the midpoint between 1 and 1 + 2^-10: ties to even.
  EXPECT_EQ(FloatToHalfBits(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  EXPECT_EQ(FloatToHalfBits(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  EXPECT_EQ(HalfBitsToFloat(0x7c00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(FloatToHalfBits(-0.0f), 0x8000);
}

TEST(Fp16Test, DirectedRoundingBracketsTheValue) {
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> mantissa(-1.0f, 1.0f);
  std::uniform_int_distribution<int> exponent(-26, 15);
  for (int i = 0; i < 200000; ++i) {
    const float f = std::ldexp(mantissa(rng), exponent(rng));
    const float up = HalfBitsToFloat(FloatToHalfBitsUp(f));
    const float down = HalfBitsToFloat(FloatToHalfBitsDown(f));
    const float nearest = RoundToHalf(f);
    ASSERT_LE(down, f);
    ASSERT_GE(up, f);
    ASSERT_TRUE(nearest == up || nearest == down) << f;
    if (up != down) {
      // Adjacent fp16 values: nothing representable strictly between them.
      const uint16_t bu = FloatToHalfBitsUp(f), bd = FloatToHalfBitsDown(f);
      ASSERT_TRUE(std::abs(static_cast<int>(bu) - static_cast<int>(bd)) == 1 ||
                  (bu == 0x0001 && bd == 0x8001) || (bu == 0x0001 && bd == 0x0000) ||
                  (bu == 0x8000 && bd == 0x8001))
          << f << " " << bu << " " << bd;
    }
  }
}

#ifdef __FLT16_MAX__
// The compiler's _Float16 conversion (F16C with -march=native) is an
// independent round-to-nearest-even oracle.
TEST(Fp16Test, MatchesCompilerFloat16) {
  std::mt19937 rng(12);
  std::uniform_int_distribution<uint32_t> bits(0, 0xffffffffu);
  for (int i = 0; i < 1000000; ++i) {
    const float f = std::bit_cast<float>(bits(rng));
    if (std::isnan(f)) continue;
    const _Float16 h = static_cast<_Float16>(f);
    uint16_t want;
    std::memcpy(&want, &h, sizeof(want));
    ASSERT_EQ(FloatToHalfBits(f), want) << f;
  }
}
#endif

TEST(RecipeTest, DefaultsAreAtoms) {
  QuantRecipe r;
  EXPECT_TRUE(r.Validate().ok());
  EXPECT_EQ(r.group_size, 128);
  EXPECT_EQ(r.keeper, 128);
  EXPECT_FLOAT_EQ(r.weight_clip, 0.85f);
  EXPECT_FLOAT_EQ(r.act_clip, 0.9f);
  EXPECT_FLOAT_EQ(r.gptq_damp, 0.01f);
  EXPECT_EQ(r.gptq_block, 128);
}

TEST(RecipeTest, InvalidRecipesAreRejected) {
  auto invalid = [](auto mutate) {
    QuantRecipe r;
    mutate(r);
    return r.Validate().code() == absl::StatusCode::kInvalidArgument;
  };
  EXPECT_TRUE(invalid([](QuantRecipe& r) { r.keeper = 100; }));  // not a multiple of 16
  EXPECT_TRUE(invalid([](QuantRecipe& r) { r.keeper = -16; }));
  EXPECT_TRUE(invalid([](QuantRecipe& r) { r.group_size = 64; }));
  EXPECT_TRUE(invalid([](QuantRecipe& r) { r.weight_clip = 0.0f; }));
  EXPECT_TRUE(invalid([](QuantRecipe& r) { r.act_clip = 1.5f; }));
  EXPECT_TRUE(invalid([](QuantRecipe& r) { r.gptq_damp = -0.1f; }));
  EXPECT_TRUE(invalid([](QuantRecipe& r) { r.gptq_block = 64; }));
  EXPECT_FALSE(invalid([](QuantRecipe& r) { r.keeper = 0; }));
  EXPECT_FALSE(invalid([](QuantRecipe& r) { r.gptq_block = 256; }));
}

TEST(LayoutTest, GroupsAndPadding) {
  struct Case {
    int64_t k, keeper, groups, padded_bytes;
  };
  for (const Case& c : {Case{576, 128, 4, 256}, Case{576, 0, 5, 320}, Case{1536, 128, 11, 704},
                        Case{1536, 64, 12, 768}, Case{200, 64, 2, 128}, Case{128, 128, 0, 0},
                        Case{1, 0, 1, 64}}) {
    absl::StatusOr<QuantLayout> layout = QuantLayout::Make(c.k, c.keeper);
    ASSERT_TRUE(layout.ok()) << layout.status();
    EXPECT_EQ(layout->normal_k(), c.k - c.keeper);
    EXPECT_EQ(layout->groups(), c.groups) << c.k << " " << c.keeper;
    EXPECT_EQ(layout->packed_row_bytes(), c.padded_bytes);
    EXPECT_EQ(layout->accumulators(), c.groups + 1);
  }
}

TEST(LayoutTest, InvalidKeepersAreRejected) {
  EXPECT_EQ(QuantLayout::Make(576, 100).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(QuantLayout::Make(576, 592).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(QuantLayout::Make(64, 128).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(QuantLayout::Make(0, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(QuantLayout::Make(576, 128, 64).status().code(), absl::StatusCode::kInvalidArgument);
  QuantRecipe recipe;
  recipe.keeper = 256;
  EXPECT_EQ(QuantLayout::FromRecipe(recipe, 200).status().code(), absl::StatusCode::kInvalidArgument);
  recipe.keeper = 24;
  EXPECT_EQ(QuantLayout::FromRecipe(recipe, 576).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(MatrixTest, ResizeAndConsistency) {
  W4A4Matrix m;
  m.Resize(*QuantLayout::Make(576, 128), 3);
  EXPECT_TRUE(m.CheckConsistent().ok());
  EXPECT_EQ(m.packed.size(), 3u * 256);
  EXPECT_EQ(m.scales.size(), 3u * 4);
  EXPECT_EQ(m.keeper_codes.size(), 3u * 128);
  EXPECT_EQ(m.keeper_scales.size(), 3u);
  EXPECT_EQ(m.bytes(), 3u * (256 + 8 + 128 + 2));
  m.scales.pop_back();
  EXPECT_EQ(m.CheckConsistent().code(), absl::StatusCode::kInvalidArgument);

  W4A4Matrix no_keepers;
  no_keepers.Resize(*QuantLayout::Make(200, 0), 2);
  EXPECT_TRUE(no_keepers.keeper_scales.empty());
  EXPECT_EQ(no_keepers.keeper_scale(1), 0);
  EXPECT_TRUE(no_keepers.CheckConsistent().ok());
}

TEST(PackTest, NibbleOrderIsLowFirstTwosComplement) {
  EXPECT_EQ(PackInt4Pair(1, 2), 0x21);
  EXPECT_EQ(PackInt4Pair(-1, 0), 0x0f);
  EXPECT_EQ(PackInt4Pair(0, -8), 0x80);
  EXPECT_EQ(PackInt4Pair(7, -1), 0xf7);
  EXPECT_EQ(UnpackInt4Low(0xf7), 7);
  EXPECT_EQ(UnpackInt4High(0xf7), -1);
  EXPECT_EQ(UnpackInt4High(0x80), -8);
  const int8_t codes[5] = {-8, 7, 3, -3, -1};
  uint8_t packed[3];
  PackInt4(codes, 5, packed);
  EXPECT_EQ(packed[0], 0x78);
  EXPECT_EQ(packed[1], 0xd3);
  EXPECT_EQ(packed[2], 0x0f);  // odd count: high nibble 0
}

TEST(PackTest, RoundTripsEveryPairAndRandomRows) {
  for (int lo = kInt4Min; lo <= kInt4Max; ++lo) {
    for (int hi = kInt4Min; hi <= kInt4Max; ++hi) {
      const uint8_t b = PackInt4Pair(lo, hi);
      EXPECT_EQ(UnpackInt4Low(b), lo);
      EXPECT_EQ(UnpackInt4High(b), hi);
    }
  }
  std::mt19937 rng(3);
  std::uniform_int_distribution<int> code(kInt4Min, kInt4Max);
  for (int64_t n : {1, 2, 63, 128, 448, 1537}) {
    std::vector<int8_t> codes(n), back(n);
    for (auto& c : codes) c = static_cast<int8_t>(code(rng));
    std::vector<uint8_t> packed((n + 1) / 2);
    PackInt4(codes.data(), n, packed.data());
    UnpackInt4(packed.data(), n, back.data());
    EXPECT_EQ(codes, back) << n;
  }
}

// The definition RoundClamp implements without branches.
int RoundClampReference(float q, int qmin, int qmax) {
  if (std::isnan(q)) return 0;
  return static_cast<int>(std::clamp(std::round(q), static_cast<float>(qmin), static_cast<float>(qmax)));
}

TEST(ScaleRulesTest, RoundClampEqualsClampedStdRound) {
  for (float v : {0.5f, -0.5f, 1.5f, -2.5f, 0.49999997f, -0.49999997f, 6.5f, 7.49999f, 7.5f, -8.5f, -8.50001f,
                  8388607.5f, -0.0f, 1e30f, -1e30f, std::numeric_limits<float>::infinity(),
                  -std::numeric_limits<float>::infinity(), std::nanf("")}) {
    EXPECT_EQ(RoundClamp(v, -8, 7), RoundClampReference(v, -8, 7)) << v;
    EXPECT_EQ(RoundClamp(v, 0, 15), RoundClampReference(v, 0, 15)) << v;
    EXPECT_EQ(RoundClamp(v, -128, 127), RoundClampReference(v, -128, 127)) << v;
  }
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> dist(-200.0f, 200.0f);
  for (int i = 0; i < 1000000; ++i) {
    const float v = i % 2 ? dist(rng) : std::floor(dist(rng)) + 0.5f;  // half the samples are ties
    ASSERT_EQ(RoundClamp(v, -128, 127), RoundClampReference(v, -128, 127)) << v;
    ASSERT_EQ(RoundClamp(v * 0.05f, -8, 7), RoundClampReference(v * 0.05f, -8, 7)) << v;
  }
}

TEST(ScaleRulesTest, AbsMaxIgnoresNan) {
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> v = {1.0f, -3.5f, std::nanf(""), 2.0f, -0.0f};
  EXPECT_EQ(AbsMax(v.data(), 5), 3.5f);
  EXPECT_EQ(AbsMax(v.data(), 0), 0.0f);
  const std::vector<float> w = {-inf, 1.0f};
  EXPECT_EQ(AbsMax(w.data(), 2), inf);
  std::mt19937 rng(6);
  std::normal_distribution<float> dist;
  std::vector<float> x(1001);
  for (float& f : x) f = dist(rng);
  float want = 0.0f;
  for (float f : x) want = std::max(want, std::fabs(f));
  EXPECT_EQ(AbsMax(x.data(), 1001), want);
}

TEST(ScaleRulesTest, QuantizeSymmetricSpanMatchesScalar) {
  std::mt19937 rng(8);
  std::normal_distribution<float> dist(0.0f, 3.0f);
  std::vector<float> x(333);
  for (float& f : x) f = dist(rng);
  std::vector<int8_t> codes(333, 99);
  QuantizeSymmetricSpan(x.data(), 333, 0.37f, -8, 7, codes.data());
  for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(codes[i], QuantizeSymmetric(x[i], 0.37f, -8, 7));
  QuantizeSymmetricSpan(x.data(), 333, 0.0f, -8, 7, codes.data());
  for (int8_t c : codes) EXPECT_EQ(c, 0);
}

TEST(ScaleRulesTest, QuantizeSymmetricRoundsHalfAwayAndClamps) {
  EXPECT_EQ(QuantizeSymmetric(2.5f, 1.0f, -8, 7), 3);
  EXPECT_EQ(QuantizeSymmetric(-2.5f, 1.0f, -8, 7), -3);
  EXPECT_EQ(QuantizeSymmetric(0.49f, 1.0f, -8, 7), 0);
  EXPECT_EQ(QuantizeSymmetric(100.0f, 1.0f, -8, 7), 7);
  EXPECT_EQ(QuantizeSymmetric(-100.0f, 1.0f, -8, 7), -8);
  EXPECT_EQ(QuantizeSymmetric(5.0f, 0.0f, -8, 7), 0);
  EXPECT_EQ(QuantizeSymmetric(std::nanf(""), 1.0f, -8, 7), 0);
  EXPECT_EQ(QuantizeSymmetric(std::numeric_limits<float>::infinity(), 1.0f, -128, 127), 127);
  // Scales are fp16-rounded and saturate at the fp16 maximum.
  EXPECT_EQ(Int4ScaleBits(1.0f, 0.85f), FloatToHalfBits((0.85f * 1.0f) / 7.0f));
  EXPECT_EQ(Int8ScaleBits(0.0f), 0);
  EXPECT_EQ(HalfBitsToFloat(Int8ScaleBits(1e30f)), kHalfMax);
}

TEST(EpilogueTest, PromotesInGroupOrderThenKeeper) {
  const int32_t acc[3] = {100, -7, 5};
  const float sa[2] = {0.5f, 0.25f};
  const float sw[2] = {2.0f, 4.0f};
  // 100*0.5*2 - 7*0.25*4 + 5*0.125*8
  EXPECT_FLOAT_EQ(PromoteAccumulators(acc, sa, sw, 2, 0.125f, 8.0f), 100.0f - 7.0f + 5.0f);
  const int32_t no_keeper[2] = {3, 0};
  EXPECT_FLOAT_EQ(PromoteAccumulators(no_keeper, sa, sw, 1, 0.0f, 0.0f), 3.0f);
}

}  // namespace
}  // namespace atomserve::quant
