#include "runtime/sampler.h"

#include <map>
#include <vector>

#include <gtest/gtest.h>

#include "runtime/generator.h"

namespace atomserve {
namespace {

TEST(SamplerTest, GreedyPicksArgmaxAndLowestIdOnTies) {
  Sampler s({});
  std::vector<float> logits = {0.1f, 3.0f, -1.0f, 3.0f};
  EXPECT_EQ(s.Sample(logits), 1);
}

TEST(SamplerTest, SameSeedSameSequence) {
  std::vector<float> logits = {1.0f, 1.2f, 0.9f, 1.1f, 0.5f};
  SamplingParams p{.temperature = 1.0f, .seed = 42};
  Sampler a(p), b(p);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(a.Sample(logits), b.Sample(logits));
}

TEST(SamplerTest, TopKRestrictsToKMostLikely) {
  std::vector<float> logits = {5.0f, 4.0f, 3.0f, 2.0f, 1.0f};
  Sampler s({.temperature = 2.0f, .top_k = 2, .seed = 1});
  for (int i = 0; i < 200; ++i) EXPECT_LT(s.Sample(logits), 2);
}

TEST(SamplerTest, TopPKeepsSmallestSetReachingMass) {
  // Probabilities ~ 0.64, 0.24, 0.09, 0.03: top_p 0.8 keeps ids 0 and 1.
  std::vector<float> logits = {3.0f, 2.0f, 1.0f, 0.0f};
  Sampler s({.temperature = 1.0f, .top_p = 0.8f, .seed = 3});
  std::map<int, int> counts;
  for (int i = 0; i < 2000; ++i) counts[s.Sample(logits)]++;
  EXPECT_EQ(counts.count(2) + counts.count(3), 0u);
  EXPECT_GT(counts[0], counts[1]);
}

TEST(SamplerTest, TemperatureFollowsSoftmax) {
  std::vector<float> logits = {0.0f, std::log(3.0f)};  // p = 0.25, 0.75
  Sampler s({.temperature = 1.0f, .seed = 9});
  int ones = 0;
  for (int i = 0; i < 20000; ++i) ones += s.Sample(logits);
  EXPECT_NEAR(ones / 20000.0, 0.75, 0.02);
}

TEST(SamplerTest, ValidateRejectsBadValues) {
  EXPECT_FALSE(SamplingParams{.temperature = -0.5f}.Validate().ok());
  EXPECT_FALSE(SamplingParams{.top_p = 0.0f}.Validate().ok());
  EXPECT_FALSE(SamplingParams{.top_p = 1.5f}.Validate().ok());
  EXPECT_TRUE((SamplingParams{.temperature = 0.7f, .top_p = 0.9f}.Validate().ok()));
}

TEST(Utf8Test, HoldsBackIncompleteTrailingSequence) {
  const std::string euro = "\xE2\x82\xAC";  // U+20AC
  EXPECT_EQ(CompleteUtf8Prefix("ab"), 2u);
  EXPECT_EQ(CompleteUtf8Prefix("a" + euro), 4u);
  EXPECT_EQ(CompleteUtf8Prefix("a" + euro.substr(0, 2)), 1u);
  EXPECT_EQ(CompleteUtf8Prefix("a" + euro.substr(0, 1)), 1u);
  EXPECT_EQ(CompleteUtf8Prefix("\xF0\x9F\x98"), 0u);  // 3 of 4 bytes of an emoji
  EXPECT_EQ(CompleteUtf8Prefix("\xF0\x9F\x98\x80"), 4u);
  EXPECT_EQ(CompleteUtf8Prefix(""), 0u);
}

}  // namespace
}  // namespace atomserve
