// Tests of the CPU paged-attention kernel and the paged K/V encode/decode:
// equal to cpu::Attention over the dequantized dense K/V (within 1e-5)
// across page boundaries, partial last pages, shuffled block tables, GQA
// ratios 1, 3, 4, 8, head_dim 64/128/40, page sizes 16 and 5, int4 and fp16
// pages, pre-RoPE keys; thread-count independence; argument errors.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/thread_pool.h"
#include "gtest/gtest.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/paged_attention.h"
#include "kernels/quant/fp16.h"
#include "kernels/quant/kv_quant.h"

namespace atomserve::cpu {
namespace {

using kvstore::KvDtype;
using kvstore::PageLayout;

struct Case {
  int64_t head_dim, group, tokens_per_page;
  KvDtype dtype;
};

constexpr int64_t kKvHeads = 2;
constexpr int64_t kLayers = 2;
constexpr int64_t kLayer = 1;  // the layer under test; layer 0 holds other data

// Sequence lengths and how many trailing positions of each are queried
// (a whole prefill, a prefill chunk, decode).
const std::vector<int64_t> kLens = {1, 16, 17, 37, 5, 33};
const std::vector<int64_t> kQueries = {1, 16, 3, 37, 1, 8};

std::vector<float> Random(int64_t n, std::mt19937& rng, float stddev = 1.0f) {
  std::normal_distribution<float> dist(0.1f, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// What a page returns for x[rows, head_dim].
std::vector<float> Dequantized(const std::vector<float>& x, int64_t head_dim, KvDtype dtype) {
  std::vector<float> out(x.size());
  for (size_t r = 0; r < x.size() / head_dim; ++r) {
    const float* in = x.data() + r * head_dim;
    if (dtype == KvDtype::kFp16) {
      for (int64_t i = 0; i < head_dim; ++i) out[r * head_dim + i] = quant::RoundToHalf(in[i]);
      continue;
    }
    std::vector<uint8_t> codes(quant::KvPackedBytes(head_dim));
    uint16_t scale, zero;
    quant::QuantizeKvHead(in, head_dim, codes.data(), &scale, &zero);
    quant::DequantizeKvHead(codes.data(), head_dim, scale, zero, out.data() + r * head_dim);
  }
  return out;
}

// A pool with every sequence's K/V written at layer kLayer through shuffled
// block tables, and the batch description of the queries.
struct Fixture {
  PageLayout layout;
  std::vector<uint8_t> pool;
  std::vector<std::vector<float>> k, v;  // per sequence [len, kv_heads, head_dim]
  std::vector<int32_t> q_indptr{0}, q_pos, page_indptr{0}, page_ids;
  std::vector<float> q;
  int64_t num_heads = 0;

  PagedKvCache cache() { return {pool.data(), static_cast<int64_t>(pool.size() / layout.page_bytes), layout}; }
  PagedAttentionBatch batch() const {
    return {static_cast<int64_t>(kLens.size()), q_indptr.data(), q_pos.data(), page_indptr.data(),
            page_ids.data()};
  }
};

Fixture Build(const Case& c, uint32_t seed) {
  Fixture f;
  f.layout = PageLayout::Compute({kLayers, kKvHeads, c.head_dim, c.tokens_per_page, c.dtype});
  f.num_heads = kKvHeads * c.group;
  std::mt19937 rng(seed);
  int64_t pages = 0;
  for (int64_t len : kLens) pages += (len + c.tokens_per_page - 1) / c.tokens_per_page;
  pages += 3;  // unused pages in between
  f.pool.assign(pages * f.layout.page_bytes, 0xcd);
  std::vector<int32_t> order(pages);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  int64_t next = 0;
  const int64_t row = kKvHeads * c.head_dim;
  for (size_t s = 0; s < kLens.size(); ++s) {
    const int64_t len = kLens[s], n_pages = (len + c.tokens_per_page - 1) / c.tokens_per_page;
    for (int64_t i = 0; i < n_pages; ++i) f.page_ids.push_back(order[next++]);
    f.page_indptr.push_back(static_cast<int32_t>(f.page_ids.size()));
    f.k.push_back(Random(len * row, rng));
    f.v.push_back(Random(len * row, rng));
    std::vector<int32_t> slots(len);
    for (int64_t p = 0; p < len; ++p)
      slots[p] = f.page_ids[f.page_indptr[s] + p / c.tokens_per_page] * c.tokens_per_page + p % c.tokens_per_page;
    EXPECT_TRUE(WritePagedKv(f.cache(), kLayer, slots.data(), len, f.k[s].data(), f.v[s].data(), nullptr).ok());
    const std::vector<float> other = Random(len * row, rng, 5.0f);  // layer 0 must not leak in
    EXPECT_TRUE(WritePagedKv(f.cache(), 0, slots.data(), len, other.data(), other.data(), nullptr).ok());
    for (int64_t p = len - kQueries[s]; p < len; ++p) f.q_pos.push_back(static_cast<int32_t>(p));
    f.q_indptr.push_back(static_cast<int32_t>(f.q_pos.size()));
  }
  f.q = Random(static_cast<int64_t>(f.q_pos.size()) * f.num_heads * c.head_dim, rng);
  return f;
}

// cpu::Attention per sequence over the dequantized dense K/V.
std::vector<float> Reference(const Fixture& f, const Case& c, const RopeTable* k_rope) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  const int64_t q_row = f.num_heads * c.head_dim;
  std::vector<float> out(f.q.size());
  for (size_t s = 0; s < kLens.size(); ++s) {
    std::vector<float> kd = Dequantized(f.k[s], c.head_dim, c.dtype);
    const std::vector<float> vd = Dequantized(f.v[s], c.head_dim, c.dtype);
    if (k_rope != nullptr) {
      std::vector<int32_t> pos(kLens[s]);
      std::iota(pos.begin(), pos.end(), 0);
      ApplyRope(kd.data(), pos.data(), kLens[s], kKvHeads, c.head_dim, *k_rope);
    }
    const int64_t q0 = f.q_indptr[s], nq = f.q_indptr[s + 1] - q0;
    Attention(f.q.data() + q0 * q_row, kd.data(), vd.data(), out.data() + q0 * q_row, f.q_pos.data() + q0, nq,
              f.num_heads, kKvHeads, c.head_dim, scale, nullptr);
  }
  return out;
}

class PagedAttentionTest : public testing::TestWithParam<Case> {};

TEST_P(PagedAttentionTest, MatchesDenseAttentionOnDequantizedKv) {
  const Case c = GetParam();
  Fixture f = Build(c, 7 + static_cast<uint32_t>(c.head_dim * 10 + c.group));
  const std::vector<float> want = Reference(f, c, nullptr);
  std::vector<float> got(f.q.size(), std::nanf(""));
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  ASSERT_TRUE(PagedAttention(f.q.data(), f.cache(), kLayer, f.batch(), f.num_heads, scale, got.data(), nullptr).ok());
  float max_err = 0.0f;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_FALSE(std::isnan(got[i])) << i;
    max_err = std::max(max_err, std::fabs(got[i] - want[i]));
  }
  EXPECT_LE(max_err, 1e-5f);

  // Threads split the work differently; the result must not change at all.
  ThreadPool pool(3);
  std::vector<float> threaded(f.q.size(), std::nanf(""));
  ASSERT_TRUE(
      PagedAttention(f.q.data(), f.cache(), kLayer, f.batch(), f.num_heads, scale, threaded.data(), &pool).ok());
  EXPECT_EQ(threaded, got);
}

TEST_P(PagedAttentionTest, ReadPagedKvReturnsTheDequantizedRows) {
  const Case c = GetParam();
  Fixture f = Build(c, 99);
  const size_t s = 3;  // 37 tokens over several pages
  std::vector<int32_t> slots(kLens[s]);
  for (int64_t p = 0; p < kLens[s]; ++p)
    slots[p] = f.page_ids[f.page_indptr[s] + p / c.tokens_per_page] * c.tokens_per_page + p % c.tokens_per_page;
  std::vector<float> k(f.k[s].size()), v(f.v[s].size());
  ASSERT_TRUE(ReadPagedKv(f.cache(), kLayer, slots.data(), kLens[s], k.data(), v.data(), nullptr).ok());
  EXPECT_EQ(k, Dequantized(f.k[s], c.head_dim, c.dtype));
  EXPECT_EQ(v, Dequantized(f.v[s], c.head_dim, c.dtype));
}

std::vector<Case> Cases() {
  std::vector<Case> cases;
  for (int64_t d : {64, 128, 40})
    for (int64_t g : {1, 3, 4, 8})
      for (int64_t t : {16, 5}) cases.push_back({d, g, t, KvDtype::kInt4});
  cases.push_back({64, 3, 16, KvDtype::kFp16});
  cases.push_back({40, 4, 5, KvDtype::kFp16});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Shapes, PagedAttentionTest, testing::ValuesIn(Cases()),
                         [](const testing::TestParamInfo<Case>& info) {
                           const Case& c = info.param;
                           return absl::StrCat("D", c.head_dim, "_G", c.group, "_T", c.tokens_per_page,
                                               c.dtype == KvDtype::kInt4 ? "_int4" : "_fp16");
                         });

TEST(PagedAttention, PreRopeKeysAreRotatedAfterDequantizing) {
  const Case c{64, 3, 16, KvDtype::kInt4};
  Fixture f = Build(c, 5);
  const RopeTable rope = RopeTable::Build({.head_dim = 64, .theta = 10000.0f});
  const std::vector<float> want = Reference(f, c, &rope);
  std::vector<float> got(f.q.size());
  ASSERT_TRUE(PagedAttention(f.q.data(), f.cache(), kLayer, f.batch(), f.num_heads, 0.125f, got.data(), nullptr,
                             &rope)
                  .ok());
  for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want[i], 1e-5f) << i;
}

TEST(PagedAttention, RejectsMalformedBatches) {
  const Case c{64, 2, 16, KvDtype::kInt4};
  Fixture f = Build(c, 1);
  std::vector<float> out(f.q.size());
  auto run = [&](PagedAttentionBatch b, int64_t heads = 4, int64_t layer = kLayer) {
    return PagedAttention(f.q.data(), f.cache(), layer, b, heads, 0.125f, out.data(), nullptr).code();
  };
  EXPECT_EQ(run(f.batch()), absl::StatusCode::kOk);
  EXPECT_EQ(run(f.batch(), 3), absl::StatusCode::kInvalidArgument);  // 3 heads over 2 kv heads
  EXPECT_EQ(run(f.batch(), 4, 2), absl::StatusCode::kInvalidArgument);  // layer
  std::vector<int32_t> bad_pos = f.q_pos;
  bad_pos[0] = 16;  // sequence 0 has one page
  PagedAttentionBatch b = f.batch();
  b.q_pos = bad_pos.data();
  EXPECT_EQ(run(b), absl::StatusCode::kInvalidArgument);
  std::vector<int32_t> bad_pages = f.page_ids;
  bad_pages[2] = 1000;
  b = f.batch();
  b.page_ids = bad_pages.data();
  EXPECT_EQ(run(b), absl::StatusCode::kInvalidArgument);
  std::vector<int32_t> bad_indptr = f.q_indptr;
  std::swap(bad_indptr[1], bad_indptr[2]);
  b = f.batch();
  b.q_indptr = bad_indptr.data();
  EXPECT_EQ(run(b), absl::StatusCode::kInvalidArgument);
  const int32_t slot = -1;
  std::vector<float> row(kKvHeads * 64);
  EXPECT_EQ(WritePagedKv(f.cache(), 0, &slot, 1, row.data(), row.data(), nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace atomserve::cpu
