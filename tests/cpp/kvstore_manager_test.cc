// Tests of KvManager: the write/commit/read path, all-or-nothing
// reservations, forks with copy-on-write, truncation, freeing, prefix caching
// (hits, the min_uncached limit, duplicates, LRU eviction, collisions), the
// host tier swap-in, the scheduling queries and the error codes.
#include <algorithm>
#include <cmath>
#include <span>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/ops.h"
#include "kernels/quant/kv_quant.h"
#include "kvstore/kv_manager.h"
#include "kvstore/prefix_hash.h"

namespace atomserve::kvstore {
namespace {

constexpr KvGeometry kGeom{.num_layers = 2, .num_kv_heads = 2, .head_dim = 8, .tokens_per_page = 4};
constexpr int64_t kRow = 2 * 8;  // num_kv_heads * head_dim

uint64_t SplitMix(uint64_t& s) {
  uint64_t z = (s += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// What a model would produce at `pos` for `layer`: a function of tokens[0..pos]
// only, as real K/V is; so cached prefixes must read back the same values.
void ModelKv(std::span<const int32_t> tokens, int64_t pos, int64_t layer, float* k, float* v) {
  uint64_t h = 0x5eed + static_cast<uint64_t>(layer);
  for (int64_t i = 0; i <= pos; ++i) h = h * 0x100000001B3ULL + static_cast<uint32_t>(tokens[i]) + 1;
  for (int64_t i = 0; i < kRow; ++i) {
    k[i] = static_cast<float>(SplitMix(h) % 4001) / 1000.0f - 2.0f;
    v[i] = static_cast<float>(SplitMix(h) % 4001) / 1000.0f - 2.0f;
  }
}

// Quantize-dequantize, what a 4-bit page returns.
std::vector<float> RoundTrip(const float* x) {
  std::vector<float> out(kRow);
  for (int64_t h = 0; h < 2; ++h) {
    uint8_t codes[4];
    uint16_t scale, zero;
    quant::QuantizeKvHead(x + h * 8, 8, codes, &scale, &zero);
    quant::DequantizeKvHead(codes, 8, scale, zero, out.data() + h * 8);
  }
  return out;
}

// One engine step for `seq`: reserve n positions, write every layer, commit.
absl::Status Step(KvManager& kv, SeqId seq, int64_t n) {
  ATOMSERVE_RETURN_IF_ERROR(kv.Reserve(seq, n));
  ATOMSERVE_ASSIGN_OR_RETURN(SequenceView view, kv.sequence(seq));
  const std::vector<int32_t> tokens(view.tokens.begin(), view.tokens.end());
  const int64_t start = view.num_computed;
  for (int64_t layer = 0; layer < kGeom.num_layers; ++layer) {
    std::vector<float> k(n * kRow), v(n * kRow);
    for (int64_t i = 0; i < n; ++i) ModelKv(tokens, start + i, layer, &k[i * kRow], &v[i * kRow]);
    ATOMSERVE_RETURN_IF_ERROR(kv.WriteKv(seq, layer, start, n, k.data(), v.data()));
  }
  return kv.Commit(seq, n);
}

// Every computed position reads back as the quantized model K/V.
void ExpectKv(const KvManager& kv, SeqId seq) {
  SequenceView view = *kv.sequence(seq);
  const std::vector<int32_t> tokens(view.tokens.begin(), view.tokens.end());
  for (int64_t layer = 0; layer < kGeom.num_layers; ++layer) {
    for (int64_t pos = 0; pos < view.num_computed; ++pos) {
      std::vector<float> k(kRow), v(kRow), want_k(kRow), want_v(kRow);
      ASSERT_TRUE(kv.ReadKv(seq, layer, pos, 1, k.data(), v.data()).ok());
      ModelKv(tokens, pos, layer, want_k.data(), want_v.data());
      ASSERT_EQ(k, RoundTrip(want_k.data())) << "seq " << seq << " layer " << layer << " pos " << pos;
      ASSERT_EQ(v, RoundTrip(want_v.data())) << "seq " << seq << " layer " << layer << " pos " << pos;
    }
  }
}

std::vector<int32_t> Tokens(int n, int first = 100) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = first + i;
  return t;
}

std::unique_ptr<KvManager> MakeKv(int64_t pages, bool prefix = true, HostTier* tier = nullptr,
                                  KvDtype dtype = KvDtype::kInt4) {
  KvGeometry g = kGeom;
  g.dtype = dtype;
  auto kv = KvManager::Create({.geometry = g,
                               .num_pages = pages,
                               .model_identity = "test-model",
                               .enable_prefix_caching = prefix,
                               .host_tier = tier});
  EXPECT_TRUE(kv.ok()) << kv.status();
  return std::move(kv).value();
}

#define ASSERT_OK(expr)                  \
  do {                                   \
    const absl::Status st_ = (expr);     \
    ASSERT_TRUE(st_.ok()) << st_;        \
  } while (0)

TEST(KvManager, WriteCommitReadRoundTrip) {
  auto kv = MakeKv(8);
  const SeqId s = *kv->AddSequence(Tokens(10));
  EXPECT_EQ(*kv->PagesNeeded(s, 10), 3);
  ASSERT_OK(Step(*kv, s, 6));  // chunked prefill: 6 + 4
  ASSERT_OK(Step(*kv, s, 4));
  SequenceView view = *kv->sequence(s);
  EXPECT_EQ(view.num_computed, 10);
  EXPECT_EQ(view.block_table.size(), 3u);
  ExpectKv(*kv, s);
  std::vector<int32_t> slots(3);
  ASSERT_OK(kv->GetSlots(s, 3, 3, slots.data()));
  EXPECT_EQ(slots[0], view.block_table[0] * 4 + 3);
  EXPECT_EQ(slots[1], view.block_table[1] * 4 + 0);
  ASSERT_OK(kv->AppendTokens(s, std::vector<int32_t>{7}));  // decode
  ASSERT_OK(Step(*kv, s, 1));
  ExpectKv(*kv, s);
  ASSERT_OK(kv->Free(s));
  EXPECT_EQ(kv->available_pages(), 8);
  ASSERT_OK(kv->Validate());
}

TEST(KvManager, Fp16PagesRoundTripExactlyInHalfPrecision) {
  auto kv = MakeKv(4, true, nullptr, KvDtype::kFp16);
  const SeqId s = *kv->AddSequence(Tokens(5));
  ASSERT_OK(kv->Reserve(s, 5));
  std::vector<float> k(5 * kRow), v(5 * kRow), back_k(5 * kRow), back_v(5 * kRow);
  for (size_t i = 0; i < k.size(); ++i) {
    k[i] = 0.25f * static_cast<float>(i) - 3.0f;  // fp16-exact values
    v[i] = -k[i];
  }
  ASSERT_OK(kv->WriteKv(s, 1, 0, 5, k.data(), v.data()));
  ASSERT_OK(kv->ReadKv(s, 1, 0, 5, back_k.data(), back_v.data()));
  EXPECT_EQ(back_k, k);
  EXPECT_EQ(back_v, v);
}

TEST(KvManager, ReserveIsAllOrNothing) {
  auto kv = MakeKv(3);
  const SeqId a = *kv->AddSequence(Tokens(8));
  ASSERT_OK(Step(*kv, a, 8));
  const SeqId b = *kv->AddSequence(Tokens(8, 500));
  EXPECT_EQ(*kv->PagesNeeded(b, 8), 2);
  const absl::Status st = kv->Reserve(b, 8);
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;
  EXPECT_EQ(kv->sequence(b)->block_table.size(), 0u);  // nothing half-allocated
  EXPECT_EQ(kv->available_pages(), 1);
  ASSERT_OK(kv->Reserve(b, 4));
  ASSERT_OK(kv->Free(a));  // preemption frees pages at once (they stay cached)
  EXPECT_EQ(kv->available_pages(), 2);
  ASSERT_OK(kv->Reserve(b, 8));  // evicts a cached page of a
  ASSERT_OK(kv->Validate());
}

TEST(KvManager, ForkSharesPagesAndCopiesOnWrite) {
  auto kv = MakeKv(8);
  const SeqId parent = *kv->AddSequence(Tokens(6));
  ASSERT_OK(Step(*kv, parent, 6));  // pages: [0..3] full, [4..5] partial
  const SeqId child = *kv->Fork(parent);
  SequenceView pv = *kv->sequence(parent), cv = *kv->sequence(child);
  ASSERT_TRUE(std::ranges::equal(pv.block_table, cv.block_table));
  EXPECT_EQ(kv->pool().ref_count(pv.block_table[1]), 2);
  EXPECT_EQ(*kv->PagesReleasedByFree(child), 0);
  const std::vector<PageId> parent_pages(pv.block_table.begin(), pv.block_table.end());

  ASSERT_OK(kv->AppendTokens(child, std::vector<int32_t>{1}));
  ASSERT_OK(kv->AppendTokens(parent, std::vector<int32_t>{2}));
  EXPECT_EQ(*kv->PagesNeeded(child, 1), 1);  // the shared partial page
  const SeqId grandchild = *kv->Fork(child);
  ASSERT_OK(kv->Free(grandchild));  // cancelled at once
  ASSERT_OK(Step(*kv, child, 1));
  EXPECT_EQ(kv->stats().cow_copies, 1);
  cv = *kv->sequence(child);
  EXPECT_EQ(cv.block_table[0], parent_pages[0]);  // the full page stays shared
  EXPECT_NE(cv.block_table[1], parent_pages[1]);  // the partial one was copied
  EXPECT_EQ(kv->pool().ref_count(parent_pages[1]), 1);
  EXPECT_EQ(*kv->PagesNeeded(parent, 1), 0);  // the parent now owns it alone
  ASSERT_OK(Step(*kv, parent, 1));
  EXPECT_EQ(kv->stats().cow_copies, 1);
  ExpectKv(*kv, parent);  // different token at position 6, both correct
  ExpectKv(*kv, child);
  ASSERT_OK(kv->Validate());
  ASSERT_OK(kv->Free(parent));
  ASSERT_OK(kv->Free(child));
  kv->EvictAllCached();
  EXPECT_EQ(kv->pool().num_free(), 8);
}

TEST(KvManager, ForkManyThenFreeAllReturnsEveryPage) {
  auto kv = MakeKv(16, /*prefix=*/false);
  const SeqId root = *kv->AddSequence(Tokens(9));
  ASSERT_OK(Step(*kv, root, 9));
  std::vector<SeqId> kids;
  for (int i = 0; i < 4; ++i) {
    kids.push_back(*kv->Fork(root));
    ASSERT_OK(kv->AppendTokens(kids.back(), std::vector<int32_t>{i}));
    ASSERT_OK(Step(*kv, kids.back(), 1));
  }
  EXPECT_EQ(kv->pool().ref_count(kv->sequence(root)->block_table[0]), 5);
  for (SeqId k : kids) ExpectKv(*kv, k);
  ASSERT_OK(kv->Validate());
  for (SeqId k : kids) ASSERT_OK(kv->Free(k));
  ASSERT_OK(kv->Free(root));
  EXPECT_EQ(kv->pool().num_free(), 16);  // no prefix caching: nothing cached
}

TEST(KvManager, TruncateRollsBackAndCopiesAnIndexedPage) {
  auto kv = MakeKv(8);
  const SeqId s = *kv->AddSequence(Tokens(12));
  ASSERT_OK(Step(*kv, s, 12));  // three full pages, all indexed
  const PageId second = kv->sequence(s)->block_table[1];
  EXPECT_TRUE(kv->prefix_cache()->indexed(second));
  ASSERT_OK(kv->Truncate(s, 6));  // rejected draft: back to 6 tokens
  SequenceView view = *kv->sequence(s);
  EXPECT_EQ(view.num_computed, 6);
  EXPECT_EQ(view.block_table.size(), 2u);
  EXPECT_EQ(kv->pool().state(second), PageState::kInUse);
  EXPECT_EQ(kv->pool().num_cached(), 1);  // the released third page stays cached
  ASSERT_OK(kv->AppendTokens(s, std::vector<int32_t>{42, 43}));
  EXPECT_EQ(*kv->PagesNeeded(s, 2), 1);  // the indexed page is immutable: COW
  ASSERT_OK(Step(*kv, s, 2));
  EXPECT_NE(kv->sequence(s)->block_table[1], second);
  EXPECT_EQ(kv->pool().state(second), PageState::kCached);
  ExpectKv(*kv, s);
  ASSERT_OK(kv->Validate());
  EXPECT_EQ(kv->Truncate(s, 9).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_OK(kv->Truncate(s, 0));
  EXPECT_EQ(kv->sequence(s)->block_table.size(), 0u);
  ASSERT_OK(kv->Validate());
}

TEST(KvManager, PrefixHitReusesFullPages) {
  auto kv = MakeKv(8);
  std::vector<int32_t> prompt = Tokens(10);
  const SeqId a = *kv->AddSequence(prompt);
  EXPECT_EQ(kv->sequence(a)->cached_prefix_tokens, 0);
  ASSERT_OK(Step(*kv, a, 10));
  const std::vector<PageId> a_pages(kv->sequence(a)->block_table.begin(), kv->sequence(a)->block_table.end());
  ASSERT_OK(kv->Free(a));
  EXPECT_EQ(kv->pool().num_cached(), 2);  // the two full pages; the partial one is free

  std::vector<int32_t> b_prompt(prompt.begin(), prompt.begin() + 8);
  b_prompt.insert(b_prompt.end(), {9, 9, 9});
  EXPECT_EQ(kv->CachedPrefixTokens(b_prompt), 8);
  EXPECT_EQ(kv->PagesToAdmit(b_prompt, 3), 2 + 1);  // pins 2 cached pages, 1 new
  const int64_t before = kv->available_pages();
  const SeqId b = *kv->AddSequence(b_prompt);
  SequenceView view = *kv->sequence(b);
  EXPECT_EQ(view.cached_prefix_tokens, 8);
  EXPECT_EQ(view.num_computed, 8);
  EXPECT_EQ(view.block_table[0], a_pages[0]);
  EXPECT_EQ(view.block_table[1], a_pages[1]);
  ASSERT_OK(Step(*kv, b, 3));
  EXPECT_EQ(before - kv->available_pages(), 3);
  ExpectKv(*kv, b);  // the reused pages hold exactly what a computed
  const PrefixCacheStats stats = kv->stats().prefix;
  EXPECT_EQ(stats.queries, 2);
  EXPECT_EQ(stats.hit_pages, 2);
  EXPECT_EQ(stats.hit_tokens, 8);
  EXPECT_EQ(stats.query_tokens, 8 + 8);  // full pages each lookup could match
  ASSERT_OK(kv->Validate());
}

TEST(KvManager, AtLeastOnePromptTokenIsLeftToCompute) {
  auto kv = MakeKv(8);
  const SeqId a = *kv->AddSequence(Tokens(8));
  ASSERT_OK(Step(*kv, a, 8));
  const SeqId b = *kv->AddSequence(Tokens(8));  // identical prompt, a still running
  EXPECT_EQ(kv->sequence(b)->num_computed, 4);  // not 8: logits need a computed token
  const SeqId c = *kv->AddSequence(Tokens(8), {.use_prefix_cache = true, .min_uncached_tokens = 0});
  EXPECT_EQ(kv->sequence(c)->num_computed, 8);
  const SeqId d = *kv->AddSequence(Tokens(8), {.use_prefix_cache = false});
  EXPECT_EQ(kv->sequence(d)->num_computed, 0);
  ASSERT_OK(kv->Validate());
}

TEST(KvManager, DuplicateContentIsNotIndexedTwice) {
  auto kv = MakeKv(8);
  const SeqId a = *kv->AddSequence(Tokens(4));
  const SeqId b = *kv->AddSequence(Tokens(4));  // both miss: computed side by side
  ASSERT_OK(Step(*kv, a, 4));
  ASSERT_OK(Step(*kv, b, 4));
  EXPECT_EQ(kv->stats().prefix.duplicate_pages, 1);
  EXPECT_EQ(kv->stats().prefix.indexed_pages, 1);
  ASSERT_OK(kv->Validate());
  ASSERT_OK(kv->Free(a));
  ASSERT_OK(kv->Free(b));
  EXPECT_EQ(kv->pool().num_cached(), 1);
  EXPECT_EQ(kv->pool().num_free(), 7);
}

TEST(KvManager, CachedPagesAreEvictedLruAndTailFirst) {
  auto kv = MakeKv(4);
  const SeqId a = *kv->AddSequence(Tokens(13));
  ASSERT_OK(Step(*kv, a, 12));  // three full pages
  ASSERT_OK(kv->Free(a));
  EXPECT_EQ(kv->pool().num_cached(), 3);
  // Need 2 pages: 1 free + evict 1 cached, the sequence's last page first.
  const SeqId b = *kv->AddSequence(Tokens(8, 900));
  ASSERT_OK(Step(*kv, b, 8));
  EXPECT_EQ(kv->stats().pool.evictions, 1);
  EXPECT_EQ(kv->CachedPrefixTokens(Tokens(13)), 8);  // pages 0 and 1 survive
  ASSERT_OK(kv->Validate());
}

TEST(KvManager, HostTierSwapsEvictedPrefixPagesBackIn) {
  const int64_t page_bytes = PageLayout::Compute(kGeom).page_bytes;
  InMemoryHostTier tier(16, page_bytes);
  auto kv = MakeKv(4, true, &tier);
  const SeqId a = *kv->AddSequence(Tokens(13));
  ASSERT_OK(Step(*kv, a, 13));
  ASSERT_OK(kv->Free(a));
  EXPECT_EQ(kv->EvictAllCached(), 3);
  EXPECT_EQ(tier.stats().pages, 3);
  EXPECT_EQ(kv->CachedPrefixTokens(Tokens(13)), 12);
  EXPECT_EQ(kv->PagesToAdmit(Tokens(13), 1), 3 + 1);
  const SeqId b = *kv->AddSequence(Tokens(13));
  EXPECT_EQ(kv->sequence(b)->num_computed, 12);
  EXPECT_EQ(kv->stats().prefix.host_hit_pages, 3);
  ExpectKv(*kv, b);  // byte-identical after the round trip through host memory
  ASSERT_OK(Step(*kv, b, 1));
  ASSERT_OK(kv->Validate());
}

TEST(KvManager, HashCollisionIsAMissNotWrongKv) {
  auto kv = MakeKv(4);
  const SeqId a = *kv->AddSequence(Tokens(4));
  ASSERT_OK(kv->Reserve(a, 4));
  const PageId page = kv->sequence(a)->block_table[0];
  ASSERT_OK(kv->Free(a));
  // Forge an entry whose hash is that of Tokens(4, 7) but whose tokens differ.
  PagePool* pool = const_cast<PagePool*>(&kv->pool());
  PrefixCache* cache = const_cast<PrefixCache*>(kv->prefix_cache());
  ASSERT_EQ(*pool->Allocate(), page);
  const std::vector<int32_t> real = Tokens(4, 7), fake = Tokens(4, 8);
  ASSERT_TRUE(cache->Insert(page, PageHash(cache->root_hash(), real), cache->root_hash(), fake));
  pool->Unref(page);
  std::vector<int32_t> prompt = real;
  prompt.push_back(1);
  EXPECT_EQ(kv->CachedPrefixTokens(prompt), 0);
  EXPECT_EQ(kv->sequence(*kv->AddSequence(prompt))->num_computed, 0);
}

TEST(KvManager, ErrorCodes) {
  auto kv = MakeKv(4);
  EXPECT_EQ(kv->Free(99).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(kv->Fork(99).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(kv->Reserve(99, 1).code(), absl::StatusCode::kNotFound);
  const SeqId s = *kv->AddSequence(Tokens(5));
  EXPECT_EQ(kv->Reserve(s, 6).code(), absl::StatusCode::kInvalidArgument);  // beyond known tokens
  EXPECT_EQ(kv->Reserve(s, -1).code(), absl::StatusCode::kInvalidArgument);
  std::vector<float> k(5 * kRow), v(5 * kRow);
  EXPECT_EQ(kv->WriteKv(s, 0, 0, 1, k.data(), v.data()).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_OK(kv->Reserve(s, 5));
  EXPECT_EQ(kv->WriteKv(s, 2, 0, 1, k.data(), v.data()).code(), absl::StatusCode::kInvalidArgument);  // layer
  ASSERT_OK(Step(*kv, s, 0));
  ASSERT_OK(kv->WriteKv(s, 0, 0, 5, k.data(), v.data()));
  ASSERT_OK(kv->Commit(s, 5));
  EXPECT_EQ(kv->WriteKv(s, 0, 0, 1, k.data(), v.data()).code(), absl::StatusCode::kInvalidArgument);  // computed
  EXPECT_EQ(kv->Commit(s, 1).code(), absl::StatusCode::kInvalidArgument);
  const SeqId f = *kv->Fork(s);
  ASSERT_OK(kv->AppendTokens(f, std::vector<int32_t>{1}));
  EXPECT_EQ(kv->WriteKv(f, 0, 5, 1, k.data(), v.data()).code(), absl::StatusCode::kFailedPrecondition);  // shared
  ASSERT_OK(kv->AppendTokens(f, std::vector<int32_t>{2, 3}));
  ASSERT_OK(kv->Truncate(f, 6));
  std::vector<int32_t> slots(1);
  EXPECT_EQ(kv->GetSlots(f, 8, 1, slots.data()).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(kv->ReadKv(f, 0, 0, 9, k.data(), v.data()).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_OK(kv->Validate());
  EXPECT_EQ(KvManager::Create({.geometry = kGeom, .num_pages = 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(KvManager, SharedPartialPageRefusesUnreservedWrites) {
  auto kv = MakeKv(4);
  const SeqId s = *kv->AddSequence(Tokens(6));
  ASSERT_OK(Step(*kv, s, 5));
  const SeqId f = *kv->Fork(s);
  std::vector<float> k(kRow), v(kRow);
  EXPECT_EQ(kv->WriteKv(f, 0, 5, 1, k.data(), v.data()).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(kv->Commit(f, 1).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_OK(Step(*kv, f, 1));
  ExpectKv(*kv, s);
  ExpectKv(*kv, f);
}

// The engine's path: forked sequences share pages, one batched paged
// attention call reads all of them, and each matches dense attention over
// its own dequantized K/V.
TEST(KvManager, PagedAttentionOverForkedSequencesMatchesDense) {
  auto kv = MakeKv(16);
  const SeqId root = *kv->AddSequence(Tokens(7));
  ASSERT_OK(Step(*kv, root, 7));
  std::vector<SeqId> seqs = {root};
  for (int i = 0; i < 2; ++i) {
    seqs.push_back(*kv->Fork(root));
    ASSERT_OK(kv->AppendTokens(seqs.back(), std::vector<int32_t>{10 + i, 20 + i, 30 + i}));
    ASSERT_OK(Step(*kv, seqs.back(), 3));  // crosses into the shared partial page: COW
  }
  std::vector<int32_t> page_indptr, page_ids, q_indptr = {0}, q_pos;
  ASSERT_OK(kv->BlockTablesCsr(seqs, &page_indptr, &page_ids));
  ASSERT_EQ(page_indptr.size(), 4u);
  for (SeqId s : seqs) {  // the last two positions of each sequence query
    const int64_t len = kv->sequence(s)->num_computed;
    q_pos.insert(q_pos.end(), {static_cast<int32_t>(len - 2), static_cast<int32_t>(len - 1)});
    q_indptr.push_back(static_cast<int32_t>(q_pos.size()));
  }
  const int64_t num_heads = 4, head_dim = 8, q_row = num_heads * head_dim;
  std::vector<float> q(q_pos.size() * q_row);
  for (size_t i = 0; i < q.size(); ++i) q[i] = std::sin(0.37f * static_cast<float>(i));
  std::vector<float> out(q.size());
  const cpu::PagedAttentionBatch batch{3, q_indptr.data(), q_pos.data(), page_indptr.data(), page_ids.data()};
  ASSERT_OK(cpu::PagedAttention(q.data(), kv->paged_kv(), 1, batch, num_heads, 0.35f, out.data(), nullptr));
  for (size_t i = 0; i < seqs.size(); ++i) {
    const int64_t len = kv->sequence(seqs[i])->num_computed;
    std::vector<float> k(len * kRow), v(len * kRow), want(2 * q_row);
    ASSERT_OK(kv->ReadKv(seqs[i], 1, 0, len, k.data(), v.data()));
    cpu::Attention(q.data() + 2 * i * q_row, k.data(), v.data(), want.data(), q_pos.data() + 2 * i, 2, num_heads,
                   2, head_dim, 0.35f, nullptr);
    for (int64_t j = 0; j < 2 * q_row; ++j) ASSERT_NEAR(out[2 * i * q_row + j], want[j], 1e-5f) << i << "," << j;
  }
  std::vector<int32_t> indptr, ids;
  EXPECT_EQ(kv->BlockTablesCsr(std::vector<SeqId>{root, 999}, &indptr, &ids).code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace atomserve::kvstore
