// Tests of 4-bit asymmetric KV-cache quantization: error bound, range
// coverage, packing for odd head dims, constant and all-zero vectors.
#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/thread_pool.h"
#include "gtest/gtest.h"
#include "kernels/quant/fp16.h"
#include "kernels/quant/kv_quant.h"
#include "tests/cpp/test_random.h"

namespace atomserve::quant {
namespace {

std::vector<float> RandomKv(int64_t n, uint32_t seed) {
  return testing_util::RandomNormal(n, seed, /*stddev=*/2.0f, /*mean=*/0.3f);
}

class KvQuantTest : public testing::TestWithParam<int64_t> {};

TEST_P(KvQuantTest, ErrorWithinHalfScale) {
  const int64_t head_dim = GetParam(), tokens = 19, heads = 3;
  std::vector<float> x = RandomKv(tokens * heads * head_dim, 100 + head_dim);
  x[5] = 40.0f;  // an outlier widens one vector's range
  ThreadPool pool(3);
  QuantizedKv q;
  ASSERT_TRUE(QuantizeKv(x.data(), tokens, heads, head_dim, &q, &pool).ok());
  EXPECT_EQ(q.codes.size(), static_cast<size_t>(tokens * heads * ((head_dim + 1) / 2)));
  std::vector<float> back(x.size(), std::nanf(""));
  ASSERT_TRUE(DequantizeKv(q, back.data(), &pool).ok());
  for (int64_t v = 0; v < tokens * heads; ++v) {
    const float* row = &x[v * head_dim];
    const float lo = *std::min_element(row, row + head_dim);
    const float hi = *std::max_element(row, row + head_dim);
    const float scale = HalfBitsToFloat(q.scales[v]);
    const float zero = HalfBitsToFloat(q.zeros[v]);
    EXPECT_LE(zero, lo);
    EXPECT_GE(zero + 15.0f * scale, hi - 1e-6f * std::fabs(hi));
    // Not needlessly coarse: only the fp16 round-up on top of the exact range.
    EXPECT_LE(scale, (hi - zero) / 15.0f * (1.0f + 1e-3f) + 1e-7f);
    for (int64_t i = 0; i < head_dim; ++i) {
      const float err = std::fabs(back[v * head_dim + i] - row[i]);
      ASSERT_LE(err, 0.5f * scale + 1e-6f * (std::fabs(row[i]) + std::fabs(zero))) << v << "," << i;
    }
  }
}

TEST_P(KvQuantTest, PackingIsLowNibbleFirstAndOddTailIsZero) {
  const int64_t head_dim = GetParam();
  std::vector<float> x(head_dim);
  for (int64_t i = 0; i < head_dim; ++i) x[i] = static_cast<float>(i % 16);  // codes = values
  std::vector<uint8_t> codes((head_dim + 1) / 2, 0xaa);
  uint16_t scale, zero;
  QuantizeKvHead(x.data(), head_dim, codes.data(), &scale, &zero);
  if (head_dim == 1) {
    EXPECT_EQ(scale, 0);  // a single element is a constant vector
    EXPECT_EQ(codes[0], 0x00);
    return;
  }
  EXPECT_EQ(HalfBitsToFloat(zero), 0.0f);
  EXPECT_EQ(HalfBitsToFloat(scale), 1.0f);
  for (int64_t i = 0; i < head_dim; ++i) {
    const int code = (codes[i / 2] >> (4 * (i % 2))) & 0xf;
    EXPECT_EQ(code, i % 16) << i;
  }
  if (head_dim % 2 == 1) {
    EXPECT_EQ(codes.back() >> 4, 0);
  }
  std::vector<float> back(head_dim);
  DequantizeKvHead(codes.data(), head_dim, scale, zero, back.data());
  EXPECT_EQ(back, x);
}

INSTANTIATE_TEST_SUITE_P(HeadDims, KvQuantTest, testing::Values(64, 40, 80, 128, 41, 1),
                         [](const testing::TestParamInfo<int64_t>& info) {
                           return absl::StrCat("D", info.param);
                         });

TEST(KvQuantTest, ConstantVectors) {
  const int64_t d = 64;
  uint16_t scale, zero;
  std::vector<uint8_t> codes(d / 2);
  std::vector<float> back(d);
  // An fp16-representable constant: scale 0 and exact.
  std::vector<float> x(d, -1.25f);
  QuantizeKvHead(x.data(), d, codes.data(), &scale, &zero);
  EXPECT_EQ(scale, 0);
  DequantizeKvHead(codes.data(), d, scale, zero, back.data());
  EXPECT_EQ(back, x);
  // A constant fp16 cannot represent: still reproduced to far below fp16 precision.
  x.assign(d, 0.1f);
  QuantizeKvHead(x.data(), d, codes.data(), &scale, &zero);
  DequantizeKvHead(codes.data(), d, scale, zero, back.data());
  for (float v : back) EXPECT_NEAR(v, 0.1f, 0.1f * 1e-4f);
  // All zeros.
  x.assign(d, 0.0f);
  QuantizeKvHead(x.data(), d, codes.data(), &scale, &zero);
  EXPECT_EQ(scale, 0);
  EXPECT_EQ(HalfBitsToFloat(zero), 0.0f);
  DequantizeKvHead(codes.data(), d, scale, zero, back.data());
  for (float v : back) {
    EXPECT_EQ(v, 0.0f);
    EXPECT_FALSE(std::isnan(v));
  }
}

TEST(KvQuantTest, BadShapesAreRejected) {
  QuantizedKv q;
  std::vector<float> x(10);
  EXPECT_EQ(QuantizeKv(x.data(), 1, 1, 0, &q, nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(QuantizeKv(x.data(), -1, 1, 8, &q, nullptr).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(QuantizeKv(x.data(), 1, 1, 10, &q, nullptr).ok());
  q.zeros.clear();
  EXPECT_EQ(DequantizeKv(q, x.data(), nullptr).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace atomserve::quant
