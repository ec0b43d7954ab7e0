// Tests of the page pool (states, reference counts, free list, LRU eviction
// of cached pages, stats, Validate), the host page storage and the
// in-memory host tier.
#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>

#include "gtest/gtest.h"
#include "kvstore/host_tier.h"
#include "kvstore/page_pool.h"
#include "kvstore/page_storage.h"

namespace atomserve::kvstore {
namespace {

constexpr KvGeometry kTiny{.num_layers = 2, .num_kv_heads = 2, .head_dim = 8, .tokens_per_page = 4};

std::unique_ptr<PagePool> MakePool(int64_t pages) {
  auto pool = PagePool::Create(kTiny, pages);
  EXPECT_TRUE(pool.ok()) << pool.status();
  return std::move(pool).value();
}

TEST(PagePool, CreateRejectsBadSizes) {
  EXPECT_EQ(PagePool::Create(kTiny, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PagePool::Create({.num_layers = 0}, 4).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PagePool::Create(kTiny, int64_t{1} << 30).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(PagePool, AllocatesEveryPageThenReportsResourceExhausted) {
  auto pool = MakePool(4);
  std::vector<PageId> pages;
  for (int i = 0; i < 4; ++i) {
    auto p = pool->Allocate();
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(pool->ref_count(*p), 1);
    EXPECT_EQ(pool->state(*p), PageState::kInUse);
    pages.push_back(*p);
  }
  EXPECT_EQ(pages, (std::vector<PageId>{0, 1, 2, 3}));
  EXPECT_EQ(pool->Allocate().status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(pool->num_available(), 0);
  pool->Unref(2);
  EXPECT_EQ(pool->state(2), PageState::kFree);
  EXPECT_EQ(*pool->Allocate(), 2);
  EXPECT_TRUE(pool->Validate().ok());
}

TEST(PagePool, RefCountsShareAndRelease) {
  auto pool = MakePool(2);
  const PageId p = *pool->Allocate();
  pool->Ref(p);
  pool->Ref(p);
  EXPECT_EQ(pool->ref_count(p), 3);
  pool->Unref(p);
  pool->Unref(p);
  EXPECT_EQ(pool->state(p), PageState::kInUse);
  pool->Unref(p);
  EXPECT_EQ(pool->state(p), PageState::kFree);
  EXPECT_EQ(pool->num_free(), 2);
  EXPECT_TRUE(pool->Validate().ok());
}

TEST(PagePoolDeathTest, RefCountUnderflowAborts) {
  auto pool = MakePool(2);
  EXPECT_DEATH(pool->Unref(0), "check failed");
  EXPECT_DEATH(pool->Ref(1), "check failed");   // referencing a free page
  EXPECT_DEATH(pool->Unref(7), "check failed");  // out of range
}

TEST(PagePool, CachedPagesAreEvictedLeastRecentlyUsedFirst) {
  auto pool = MakePool(3);
  std::vector<PageId> evicted;
  pool->set_eviction_hook([&](PageId p) { evicted.push_back(p); });
  for (int i = 0; i < 3; ++i) {
    const PageId p = *pool->Allocate();
    pool->SetCacheable(p, true);
  }
  pool->Unref(1);  // LRU order: 1, 0, 2
  pool->Unref(0);
  pool->Unref(2);
  EXPECT_EQ(pool->num_cached(), 3);
  EXPECT_EQ(pool->num_free(), 0);
  EXPECT_EQ(pool->num_available(), 3);
  EXPECT_TRUE(pool->Validate().ok());
  pool->Ref(1);  // a cache hit: back in use, leaves the LRU list
  pool->Unref(1);  // now most recently used: 0, 2, 1
  EXPECT_EQ(*pool->Allocate(), 0);
  EXPECT_EQ(*pool->Allocate(), 2);
  EXPECT_EQ(evicted, (std::vector<PageId>{0, 2}));
  EXPECT_FALSE(pool->cacheable(0));  // eviction clears the flag
  EXPECT_EQ(pool->EvictAllCached(), 1);
  EXPECT_EQ(pool->num_free(), 1);
  EXPECT_EQ(pool->stats().evictions, 3);
  EXPECT_TRUE(pool->Validate().ok());
}

TEST(PagePool, UncacheableAndUnsetPagesGoStraightToTheFreeList) {
  auto pool = MakePool(2);
  const PageId p = *pool->Allocate();
  pool->SetCacheable(p, true);
  pool->Unref(p);
  EXPECT_EQ(pool->state(p), PageState::kCached);
  pool->SetCacheable(p, false);  // unindexed while cached: freed
  EXPECT_EQ(pool->state(p), PageState::kFree);
  EXPECT_TRUE(pool->Validate().ok());
}

TEST(PagePool, EvictionHookSeesIntactBytes) {
  auto pool = MakePool(1);
  const PageId p = *pool->Allocate();
  std::memset(pool->storage().host_data(), 0x5a, pool->layout().page_bytes);
  pool->SetCacheable(p, true);
  pool->Unref(p);
  bool saw = false;
  pool->set_eviction_hook([&](PageId page) {
    saw = pool->storage().host_data()[page * pool->layout().page_bytes + 3] == 0x5a;
  });
  EXPECT_EQ(*pool->Allocate(), p);
  EXPECT_TRUE(saw);
}

TEST(PagePool, StatsAddUp) {
  auto pool = MakePool(5);
  const PageId a = *pool->Allocate(), b = *pool->Allocate();
  pool->SetCacheable(b, true);
  pool->Unref(b);
  const PagePoolStats s = pool->stats();
  EXPECT_EQ(s.total_pages, 5);
  EXPECT_EQ(s.in_use_pages, 1);
  EXPECT_EQ(s.cached_pages, 1);
  EXPECT_EQ(s.free_pages, 3);
  EXPECT_EQ(s.allocations, 2);
  EXPECT_EQ(s.page_bytes, pool->layout().page_bytes);
  pool->Unref(a);
}

TEST(HostPageStorage, AlignedZeroedAndCopies) {
  auto storage = NewHostPageStorage(3, 48);
  ASSERT_TRUE(storage.ok());
  PageStorage& s = **storage;
  EXPECT_EQ(reinterpret_cast<uintptr_t>(s.host_data()) % kPoolAlignment, 0u);
  EXPECT_TRUE(std::all_of(s.host_data(), s.host_data() + 3 * 48, [](uint8_t b) { return b == 0; }));
  std::vector<uint8_t> in(48), out(48);
  std::iota(in.begin(), in.end(), 1);
  ASSERT_TRUE(s.WritePage(1, in).ok());
  ASSERT_TRUE(s.CopyPage(1, 2).ok());
  ASSERT_TRUE(s.ReadPage(2, out).ok());
  EXPECT_EQ(in, out);
  EXPECT_EQ(s.ReadPage(3, out).code(), absl::StatusCode::kInvalidArgument);
  std::vector<uint8_t> small(47);
  EXPECT_EQ(s.WritePage(0, small).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.CopyPage(-1, 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(NewHostPageStorage(0, 48).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(InMemoryHostTier, StoresVerifiesAndEvictsLru) {
  InMemoryHostTier tier(2, 8);
  const std::vector<int32_t> t1 = {1, 2}, t2 = {3, 4}, t3 = {5, 6};
  const std::vector<uint8_t> b1(8, 1), b2(8, 2), b3(8, 3);
  std::vector<uint8_t> out(8);
  EXPECT_TRUE(tier.Put(11, 0, t1, b1));
  EXPECT_TRUE(tier.Put(22, 11, t2, b2));
  EXPECT_FALSE(tier.Put(33, 0, t3, std::vector<uint8_t>(7)));  // wrong size
  EXPECT_TRUE(tier.Get(11, 0, t1, out));  // 11 is now most recent
  EXPECT_EQ(out, b1);
  EXPECT_FALSE(tier.Get(11, 5, t1, out));  // wrong parent: a miss
  EXPECT_FALSE(tier.Get(11, 0, t2, out));  // wrong tokens: a miss
  EXPECT_TRUE(tier.Put(33, 22, t3, b3));   // evicts 22
  EXPECT_FALSE(tier.Contains(22, 11, t2));
  EXPECT_TRUE(tier.Contains(11, 0, t1));
  EXPECT_TRUE(tier.Contains(33, 22, t3));
  const HostTierStats s = tier.stats();
  EXPECT_EQ(s.pages, 2);
  EXPECT_EQ(s.puts, 3);
  EXPECT_EQ(s.hits, 1);
  EXPECT_EQ(s.misses, 2);
  EXPECT_EQ(s.evictions, 1);
  InMemoryHostTier none(0, 8);
  EXPECT_FALSE(none.Put(1, 0, t1, b1));
}

}  // namespace
}  // namespace atomserve::kvstore
