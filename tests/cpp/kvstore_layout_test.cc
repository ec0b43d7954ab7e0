// Tests of the page byte layout (kvstore/page_layout.h), the prefix hashes
// (XXH64 against the reference library's outputs, the page hash chain) and
// the capacity report (prints the table pasted into docs/kvstore.md).
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kvstore/capacity.h"
#include "kvstore/page_layout.h"
#include "kvstore/page_pool.h"
#include "kvstore/prefix_hash.h"

namespace atomserve::kvstore {
namespace {

// The layout is usable in constant expressions (and so in CUDA code).
static_assert(PageLayout::Compute({.num_layers = 30, .num_kv_heads = 3, .head_dim = 64}).page_bytes == 103680);
static_assert(KvGeometryError({.num_layers = 1, .num_kv_heads = 1, .head_dim = 64}) == nullptr);

struct LayoutCase {
  int64_t layers, heads, head_dim, tokens_per_page;
  KvDtype dtype;
};

std::string Name(const LayoutCase& c) {
  return absl::StrCat("L", c.layers, "_H", c.heads, "_D", c.head_dim, "_T", c.tokens_per_page,
                      c.dtype == KvDtype::kInt4 ? "_int4" : "_fp16");
}

class PageLayoutTest : public testing::TestWithParam<LayoutCase> {};

// Every row and every (scale, zero) pair of every (layer, part, head, slot)
// has its own bytes inside the page; sections and tiles are 16-byte aligned.
TEST_P(PageLayoutTest, RowsAreDisjointAlignedAndInsideThePage) {
  const LayoutCase c = GetParam();
  const KvGeometry g{c.layers, c.heads, c.head_dim, c.tokens_per_page, c.dtype};
  ASSERT_EQ(KvGeometryError(g), nullptr);
  const PageLayout l = PageLayout::Compute(g);
  EXPECT_EQ(l.row_bytes, c.dtype == KvDtype::kInt4 ? (c.head_dim + 1) / 2 : 2 * c.head_dim);
  for (int64_t off : {l.k_codes, l.v_codes, l.k_meta, l.v_meta, l.layer_bytes, l.page_bytes, l.code_tile_bytes,
                      l.meta_tile_bytes}) {
    EXPECT_EQ(off % kPageAlignment, 0) << off;
  }
  std::vector<int> owner(l.page_bytes, 0);
  int64_t used = 0;
  auto claim = [&](int64_t begin, int64_t bytes) {
    ASSERT_GE(begin, 0);
    ASSERT_LE(begin + bytes, l.page_bytes);
    for (int64_t b = begin; b < begin + bytes; ++b) ASSERT_EQ(owner[b]++, 0) << "byte " << b << " used twice";
    used += bytes;
  };
  for (int64_t layer = 0; layer < c.layers; ++layer) {
    for (KvPart part : {KvPart::kKey, KvPart::kValue}) {
      for (int64_t h = 0; h < c.heads; ++h) {
        EXPECT_EQ(l.CodeOffset(layer, part, h, 0) % kPageAlignment, 0);  // tile start
        for (int64_t s = 0; s < c.tokens_per_page; ++s) {
          claim(l.CodeOffset(layer, part, h, s), l.row_bytes);
          if (c.dtype == KvDtype::kInt4) claim(l.MetaOffset(layer, part, h, s), 4);
        }
      }
    }
  }
  // Padding is only what 16-byte alignment of each tile requires.
  const int64_t tiles = 2 * c.layers * c.heads;
  EXPECT_LT(l.page_bytes - used, tiles * 2 * kPageAlignment);
  if (c.tokens_per_page == 16) {
    EXPECT_EQ(used, l.page_bytes);  // no padding at all
    const int64_t per_token = c.dtype == KvDtype::kInt4 ? (c.head_dim + 1) / 2 + 4 : 2 * c.head_dim;
    EXPECT_EQ(l.bytes_per_token(), 2.0 * c.layers * c.heads * per_token);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, PageLayoutTest,
    testing::Values(LayoutCase{1, 1, 64, 16, KvDtype::kInt4}, LayoutCase{3, 3, 64, 16, KvDtype::kInt4},
                    LayoutCase{2, 8, 128, 16, KvDtype::kInt4}, LayoutCase{2, 3, 40, 16, KvDtype::kInt4},
                    LayoutCase{2, 2, 41, 5, KvDtype::kInt4}, LayoutCase{1, 4, 1, 1, KvDtype::kInt4},
                    LayoutCase{2, 3, 80, 7, KvDtype::kInt4}, LayoutCase{2, 3, 64, 16, KvDtype::kFp16},
                    LayoutCase{1, 2, 41, 3, KvDtype::kFp16}),
    [](const testing::TestParamInfo<LayoutCase>& info) { return Name(info.param); });

TEST(PageLayout, SmolLm2PageIsHeadMajorWithKnownOffsets) {
  const PageLayout l = PageLayout::Compute({.num_layers = 30, .num_kv_heads = 3, .head_dim = 64});
  EXPECT_EQ(l.row_bytes, 32);
  EXPECT_EQ(l.code_tile_bytes, 16 * 32);
  EXPECT_EQ(l.meta_tile_bytes, 16 * 4);
  EXPECT_EQ(l.v_codes, 3 * 512);
  EXPECT_EQ(l.k_meta, 6 * 512);
  EXPECT_EQ(l.v_meta, 6 * 512 + 3 * 64);
  EXPECT_EQ(l.layer_bytes, 6 * 512 + 6 * 64);  // 3456
  EXPECT_EQ(l.page_bytes, 30 * 3456);
  // (layer 2, V, head 1, slot 5)
  EXPECT_EQ(l.CodeOffset(2, KvPart::kValue, 1, 5), 2 * 3456 + 3 * 512 + 512 + 5 * 32);
  EXPECT_EQ(l.MetaOffset(2, KvPart::kKey, 2, 15), 2 * 3456 + 6 * 512 + 2 * 64 + 15 * 4);
}

TEST(PageLayout, GeometryErrors) {
  EXPECT_NE(KvGeometryError({.num_layers = 0, .num_kv_heads = 1, .head_dim = 8}), nullptr);
  EXPECT_NE(KvGeometryError({.num_layers = 1, .num_kv_heads = 0, .head_dim = 8}), nullptr);
  EXPECT_NE(KvGeometryError({.num_layers = 1, .num_kv_heads = 1, .head_dim = 0}), nullptr);
  EXPECT_NE(KvGeometryError({.num_layers = 1, .num_kv_heads = 1, .head_dim = 8, .tokens_per_page = 0}), nullptr);
  EXPECT_NE(KvGeometryError({.num_layers = 1, .num_kv_heads = 1, .head_dim = 8, .tokens_per_page = 16,
                             .dtype = static_cast<KvDtype>(7)}),
            nullptr);
  EXPECT_EQ(MakePageLayout({.num_layers = 1, .num_kv_heads = 1, .head_dim = 2000}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Expected values from the reference xxHash 0.8.1 library (libxxhash.so,
// XXH64(data, len, seed)).
TEST(PrefixHash, XxHash64MatchesReference) {
  std::vector<uint8_t> seq(100);
  for (int i = 0; i < 100; ++i) seq[i] = static_cast<uint8_t>(i);
  EXPECT_EQ(XxHash64("", 0, 0), 0xef46db3751d8e999ULL);
  EXPECT_EQ(XxHash64("a", 1, 0), 0xd24ec4f1a98c6e5bULL);
  EXPECT_EQ(XxHash64("abc", 3, 0), 0x44bc2cf5ad770999ULL);
  EXPECT_EQ(XxHash64("abc", 3, 1), 0xbea9ca8199328908ULL);
  EXPECT_EQ(XxHash64(seq.data(), 40, 0), 0xf5da40f1b11741e9ULL);
  EXPECT_EQ(XxHash64(seq.data(), 100, 0x9e3779b97f4a7c15ULL), 0x3b97d91eba03e785ULL);
  const std::string fox = "The quick brown fox jumps over the lazy dog";
  EXPECT_EQ(XxHash64(fox.data(), fox.size(), 0), 0x0b242d361fda71bcULL);
}

TEST(PrefixHash, ChainDependsOnParentTokensAndOrder) {
  const uint64_t root = PrefixRootHash("model-a");
  EXPECT_NE(root, PrefixRootHash("model-b"));
  const std::vector<int32_t> a = {1, 2, 3, 4}, b = {1, 2, 4, 3};
  EXPECT_EQ(PageHash(root, a), PageHash(root, a));
  EXPECT_NE(PageHash(root, a), PageHash(root, b));
  EXPECT_NE(PageHash(root, a), PageHash(PrefixRootHash("model-b"), a));
  EXPECT_NE(PageHash(PageHash(root, a), b), PageHash(PageHash(root, b), a));
}

TEST(Capacity, Int4IsCloseToFourTimesFp16) {
  const int64_t gib = int64_t{1} << 30;
  // SmolLM2-135M: 2 * 30 * 3 * (32 + 4) = 6480 vs 2 * 30 * 3 * 128 = 23040 bytes/token.
  CapacityComparison smol = CompareCapacity({.num_layers = 30, .num_kv_heads = 3, .head_dim = 64}, gib);
  EXPECT_EQ(smol.int4.bytes_per_token, 6480);
  EXPECT_EQ(smol.fp16.bytes_per_token, 23040);
  EXPECT_NEAR(smol.bytes_ratio, 128.0 / 36.0, 1e-12);
  EXPECT_EQ(smol.int4.tokens, gib / (16 * 6480) * 16);
  EXPECT_EQ(smol.fp16.tokens, gib / (16 * 23040) * 16);
  // Llama-2-7B: 2 * 32 * 32 * (64 + 4) vs 2 * 32 * 32 * 256.
  CapacityComparison llama = CompareCapacity({.num_layers = 32, .num_kv_heads = 32, .head_dim = 128}, 40 * gib);
  EXPECT_EQ(llama.int4.bytes_per_token, 139264);
  EXPECT_EQ(llama.fp16.bytes_per_token, 524288);
  EXPECT_NEAR(llama.bytes_ratio, 256.0 / 68.0, 1e-12);
  EXPECT_NEAR(llama.token_ratio, llama.bytes_ratio, 0.01);
  EXPECT_EQ(CapacityForBudget({.num_layers = 0}, gib).tokens, 0);
  EXPECT_EQ(CapacityForBudget({.num_layers = 1, .num_kv_heads = 1, .head_dim = 64}, -1).tokens, 0);
}

TEST(Capacity, PrintTable) {
  for (int64_t gib : {1, 40}) {
    const std::string table = CapacityTableMarkdown(ReferenceModelShapes(), gib << 30);
    EXPECT_NE(table.find("SmolLM2-135M"), std::string::npos);
    std::printf("%s\n", table.c_str());
  }
}

}  // namespace
}  // namespace atomserve::kvstore
