// Randomized property test of the KV store: thousands of random operation
// mixes (new sequences with shared prefixes, chunked prefill and decode steps,
// forks, copy-on-write writes, truncations, frees/cancellations, preemption
// on exhaustion, prefix lookups, evictions, host-tier swaps) against tiny
// pools. After every operation:
//  - KvManager::Validate() holds (every page in exactly one state, ref counts
//    equal block-table references and never negative, prefix index coherent);
//  - every computed position of every live sequence holds, byte for byte, the
//    encoding of the K/V a model would produce for its token prefix, whether
//    the page was written by the sequence, inherited by a fork, copied on
//    write, reused from the prefix cache or swapped in from the host tier;
//  - capacity failures are kResourceExhausted and change nothing, and the
//    scheduling queries predict what the operations do.
// At the end, freeing everything and dropping the cache leaves the pool full.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/cpu/paged_attention.h"
#include "kvstore/kv_manager.h"

namespace atomserve::kvstore {
namespace {

constexpr int64_t kLayers = 2, kHeads = 2, kHeadDim = 8, kRow = kHeads * kHeadDim;
constexpr int kMaxLive = 8;

struct Config {
  int64_t tokens_per_page;
  int64_t pages;
  KvDtype dtype;
  bool prefix_caching;
  int64_t host_tier_pages;  // 0: no host tier
  uint32_t seed;
  int ops;
};

std::string Name(const Config& c) {
  return absl::StrCat("T", c.tokens_per_page, "_P", c.pages, c.dtype == KvDtype::kInt4 ? "_int4" : "_fp16",
                      c.prefix_caching ? "_prefix" : "_noprefix", "_host", c.host_tier_pages, "_s", c.seed);
}

uint64_t SplitMix(uint64_t& s) {
  uint64_t z = (s += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// Running hash of each prefix tokens[0..p]: K/V at p is a function of it.
std::vector<uint64_t> PrefixHashes(std::span<const int32_t> tokens) {
  std::vector<uint64_t> h(tokens.size());
  uint64_t acc = 0x5eed;
  for (size_t p = 0; p < tokens.size(); ++p) h[p] = acc = acc * 0x100000001B3ULL + static_cast<uint32_t>(tokens[p]) + 1;
  return h;
}

void ModelKv(uint64_t prefix_hash, int64_t layer, float* k, float* v) {
  uint64_t s = prefix_hash ^ (0xabcdef12345ULL * static_cast<uint64_t>(layer + 1));
  for (int64_t i = 0; i < kRow; ++i) {
    k[i] = static_cast<float>(SplitMix(s) % 8001) / 1000.0f - 4.0f;
    v[i] = static_cast<float>(SplitMix(s) % 8001) / 1000.0f - 4.0f;
  }
}

struct Coverage {
  int64_t adds = 0, steps = 0, forks = 0, truncates = 0, frees = 0, evict_alls = 0, exhausted = 0;
  int64_t preemptions = 0, rows_checked = 0;
};

class Harness {
 public:
  explicit Harness(const Config& c) : c_(c), rng_(c.seed) {
    const KvGeometry g{kLayers, kHeads, kHeadDim, c.tokens_per_page, c.dtype};
    if (c.host_tier_pages > 0)
      tier_ = std::make_unique<InMemoryHostTier>(c.host_tier_pages, PageLayout::Compute(g).page_bytes);
    kv_ = *KvManager::Create({.geometry = g,
                              .num_pages = c.pages,
                              .model_identity = "property",
                              .enable_prefix_caching = c.prefix_caching,
                              .host_tier = tier_.get()});
    std::uniform_int_distribution<int32_t> vocab(0, 49);
    for (auto& doc : docs_) {
      doc.resize(40);
      for (int32_t& t : doc) t = vocab(rng_);
    }
    scratch_.assign(kv_->layout().page_bytes, 0);
  }

  void Run() {
    for (int op = 0; op < c_.ops; ++op) {
      ASSERT_NO_FATAL_FAILURE(RandomOp()) << "op " << op;
      const absl::Status st = kv_->Validate();
      ASSERT_TRUE(st.ok()) << "op " << op << ": " << st;
      ASSERT_NO_FATAL_FAILURE(CheckAllKv()) << "op " << op;
    }
    for (SeqId s : live_) ASSERT_TRUE(kv_->Free(s).ok());
    live_.clear();
    kv_->EvictAllCached();
    ASSERT_TRUE(kv_->Validate().ok());
    EXPECT_EQ(kv_->pool().num_free(), c_.pages) << "pages leaked";
  }

  const Coverage& coverage() const { return cov_; }
  KvManagerStats stats() const { return kv_->stats(); }

 private:
  int Uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  SeqId PickLive() { return live_[Uniform(0, static_cast<int>(live_.size()) - 1)]; }

  std::vector<int32_t> RandomPrompt() {
    const auto& doc = docs_[Uniform(0, 2)];
    std::vector<int32_t> p(doc.begin(), doc.begin() + Uniform(0, 30));
    for (int i = Uniform(0, 4); i > 0; --i) p.push_back(Uniform(0, 3));
    return p;
  }

  void RandomOp() {
    const int r = Uniform(0, 99);
    if (live_.empty() || (r < 16 && static_cast<int>(live_.size()) < kMaxLive)) return Add();
    if (r < 62) return Step(PickLive());
    if (r < 72 && static_cast<int>(live_.size()) < kMaxLive) return Fork(PickLive());
    if (r < 78) return Truncate(PickLive());
    if (r < 88) return Free(PickLive());
    if (r < 90) {
      ++cov_.evict_alls;
      kv_->EvictAllCached();
      EXPECT_EQ(kv_->pool().num_cached(), 0);
      return;
    }
    return Peek();
  }

  void Add() {
    ++cov_.adds;
    const std::vector<int32_t> prompt = RandomPrompt();
    const int64_t chunk = Uniform(0, 2 * static_cast<int>(c_.tokens_per_page) + 1);
    const int64_t cached = kv_->CachedPrefixTokens(prompt);
    const int64_t admit = kv_->PagesToAdmit(prompt, chunk);
    const int64_t before = kv_->available_pages();
    const SeqId s = *kv_->AddSequence(prompt);
    live_.push_back(s);
    const SequenceView view = *kv_->sequence(s);
    if (tier_ == nullptr) {
      ASSERT_EQ(view.num_computed, cached);
    } else {
      ASSERT_LE(view.num_computed, cached);  // a swap-in may find no page
    }
    const int64_t n = std::min<int64_t>(chunk, static_cast<int64_t>(prompt.size()) - view.num_computed);
    const absl::Status st = Reserve(s, n);
    if (st.ok() && tier_ == nullptr) {
      EXPECT_EQ(before - kv_->available_pages(), admit);
    }
    if (st.ok()) WriteAndCommit(s, n);
  }

  // Reserve with its contract checked: on failure kResourceExhausted and no
  // change; on success at most PagesNeeded pages taken.
  absl::Status Reserve(SeqId s, int64_t n) {
    const int64_t needed = *kv_->PagesNeeded(s, n);
    const int64_t before = kv_->available_pages();
    const SequenceView old_view = *kv_->sequence(s);
    const std::vector<PageId> old_table(old_view.block_table.begin(), old_view.block_table.end());
    const absl::Status st = kv_->Reserve(s, n);
    if (!st.ok()) {
      ++cov_.exhausted;
      EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;
      EXPECT_GT(needed, before);
      EXPECT_EQ(kv_->available_pages(), before);
      const SequenceView view = *kv_->sequence(s);
      EXPECT_TRUE(std::ranges::equal(view.block_table, old_table));
      EXPECT_EQ(view.num_computed, old_view.num_computed);
      return st;
    }
    EXPECT_LE(before - kv_->available_pages(), needed);
    EXPECT_EQ(*kv_->PagesNeeded(s, n), 0);
    return st;
  }

  void WriteAndCommit(SeqId s, int64_t n) {
    const SequenceView view = *kv_->sequence(s);
    const std::vector<uint64_t> h = PrefixHashes(view.tokens);
    const int64_t start = view.num_computed;
    std::vector<float> k(n * kRow), v(n * kRow);
    for (int64_t layer = 0; layer < kLayers; ++layer) {
      for (int64_t i = 0; i < n; ++i) ModelKv(h[start + i], layer, &k[i * kRow], &v[i * kRow]);
      ASSERT_TRUE(kv_->WriteKv(s, layer, start, n, k.data(), v.data()).ok());
    }
    ASSERT_TRUE(kv_->Commit(s, n).ok());
  }

  void Step(SeqId s) {
    ++cov_.steps;
    SequenceView view = *kv_->sequence(s);
    int64_t remaining = static_cast<int64_t>(view.tokens.size()) - view.num_computed;
    if (remaining == 0) {  // decode: the sampled token is known before its K/V
      ASSERT_TRUE(kv_->AppendTokens(s, std::vector<int32_t>{Uniform(0, 3)}).ok());
      remaining = 1;
    }
    const int64_t n = Uniform(1, static_cast<int>(std::min<int64_t>(remaining, 2 * c_.tokens_per_page + 1)));
    if (Reserve(s, n).ok()) return WriteAndCommit(s, n);
    if (live_.size() > 1 && Uniform(0, 1) == 0) {  // the engine preempts another request
      ++cov_.preemptions;
      SeqId victim = PickLive();
      while (victim == s) victim = PickLive();
      Free(victim);
    }
  }

  void Fork(SeqId s) {
    ++cov_.forks;
    const int64_t before = kv_->available_pages();
    live_.push_back(*kv_->Fork(s));
    EXPECT_EQ(kv_->available_pages(), before);  // sharing costs nothing
  }

  void Truncate(SeqId s) {
    ++cov_.truncates;
    const int64_t len = static_cast<int64_t>(kv_->sequence(s)->tokens.size());
    ASSERT_TRUE(kv_->Truncate(s, Uniform(0, static_cast<int>(len))).ok());
  }

  void Free(SeqId s) {
    ++cov_.frees;
    const int64_t released = *kv_->PagesReleasedByFree(s);
    const int64_t before = kv_->available_pages();
    ASSERT_TRUE(kv_->Free(s).ok());
    EXPECT_EQ(kv_->available_pages() - before, released);
    live_.erase(std::ranges::find(live_, s));
    EXPECT_EQ(kv_->sequence(s).status().code(), absl::StatusCode::kNotFound);
  }

  void Peek() {
    const KvManagerStats before = kv_->stats();
    kv_->CachedPrefixTokens(RandomPrompt());
    kv_->PagesToAdmit(RandomPrompt(), 5);
    const KvManagerStats after = kv_->stats();
    EXPECT_EQ(after.prefix.queries, before.prefix.queries);
    EXPECT_EQ(after.pool.free_pages, before.pool.free_pages);
    EXPECT_EQ(after.pool.cached_pages, before.pool.cached_pages);
  }

  // Byte-exact check of every computed (layer, position, head) row.
  void CheckAllKv() {
    const PageLayout& l = kv_->layout();
    const uint8_t* base = kv_->pool().storage().host_data();
    std::vector<float> k(kRow), v(kRow);
    for (SeqId s : live_) {
      const SequenceView view = *kv_->sequence(s);
      const std::vector<uint64_t> h = PrefixHashes(view.tokens);
      for (int64_t p = 0; p < view.num_computed; ++p) {
        const uint8_t* page = base + static_cast<int64_t>(view.block_table[p / l.tokens_per_page]) * l.page_bytes;
        const int64_t slot = p % l.tokens_per_page;
        for (int64_t layer = 0; layer < kLayers; ++layer) {
          ModelKv(h[p], layer, k.data(), v.data());
          for (int64_t head = 0; head < kHeads; ++head) {
            for (KvPart part : {KvPart::kKey, KvPart::kValue}) {
              const float* x = (part == KvPart::kKey ? k.data() : v.data()) + head * kHeadDim;
              cpu::EncodeKvRow(l, scratch_.data(), layer, part, head, slot, x);
              const int64_t code = l.CodeOffset(layer, part, head, slot);
              ASSERT_EQ(std::memcmp(page + code, scratch_.data() + code, l.row_bytes), 0)
                  << "seq " << s << " pos " << p << " layer " << layer << " head " << head;
              if (l.dtype == KvDtype::kInt4) {
                const int64_t meta = l.MetaOffset(layer, part, head, slot);
                ASSERT_EQ(std::memcmp(page + meta, scratch_.data() + meta, l.meta_row_bytes), 0)
                    << "seq " << s << " pos " << p << " layer " << layer << " head " << head << " (scale/zero)";
              }
              ++cov_.rows_checked;
            }
          }
        }
      }
    }
  }

  Config c_;
  std::mt19937 rng_;
  std::unique_ptr<InMemoryHostTier> tier_;
  std::unique_ptr<KvManager> kv_;
  std::vector<int32_t> docs_[3];
  std::vector<SeqId> live_;
  std::vector<uint8_t> scratch_;
  Coverage cov_;
};

class KvStorePropertyTest : public testing::TestWithParam<Config> {};

TEST_P(KvStorePropertyTest, RandomOperationMixesKeepEveryInvariant) {
  const Config c = GetParam();
  Harness harness(c);
  ASSERT_NO_FATAL_FAILURE(harness.Run());
  const Coverage& cov = harness.coverage();
  const KvManagerStats s = harness.stats();
  std::printf(
      "%s: %d ops: adds %ld steps %ld forks %ld truncates %ld frees %ld preemptions %ld exhausted %ld | "
      "prefix hits %ld pages (%ld from host) of %ld queries, duplicates %ld, evictions %ld, cow %ld | %ld rows "
      "checked\n",
      Name(c).c_str(), c.ops, cov.adds, cov.steps, cov.forks, cov.truncates, cov.frees, cov.preemptions,
      cov.exhausted, s.prefix.hit_pages, s.prefix.host_hit_pages, s.prefix.queries, s.prefix.duplicate_pages,
      s.pool.evictions, s.cow_copies, cov.rows_checked);
  // The mix must actually reach the interesting paths.
  EXPECT_GT(cov.exhausted, 0);
  if (c.tokens_per_page > 1) {  // T = 1 has no partial pages to copy
    EXPECT_GT(s.cow_copies, 0);
  }
  if (c.prefix_caching) {
    EXPECT_GT(s.prefix.hit_pages, 0);
    EXPECT_GT(s.pool.evictions, 0);
  }
  if (c.host_tier_pages > 0) {
    EXPECT_GT(s.prefix.host_hit_pages, 0);
  }
}

INSTANTIATE_TEST_SUITE_P(
    TinyPools, KvStorePropertyTest,
    testing::Values(Config{4, 12, KvDtype::kInt4, true, 0, 1, 4000}, Config{4, 12, KvDtype::kInt4, true, 0, 2, 4000},
                    Config{4, 12, KvDtype::kInt4, true, 8, 3, 4000}, Config{1, 24, KvDtype::kInt4, true, 0, 4, 4000},
                    Config{3, 10, KvDtype::kInt4, true, 6, 5, 4000}, Config{5, 9, KvDtype::kInt4, true, 0, 6, 4000},
                    Config{2, 16, KvDtype::kFp16, true, 8, 7, 4000}, Config{4, 6, KvDtype::kInt4, true, 0, 8, 4000},
                    Config{4, 12, KvDtype::kInt4, false, 0, 9, 4000},
                    Config{16, 5, KvDtype::kInt4, true, 4, 10, 4000}),
    [](const testing::TestParamInfo<Config>& info) { return Name(info.param); });

}  // namespace
}  // namespace atomserve::kvstore
