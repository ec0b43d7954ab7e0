// A pool of fixed-size KV pages with reference counts, a free list and an LRU
// list of cached (unreferenced but still indexed) pages.
//
// Every page is in exactly one state:
//   kFree    ref 0, on the free list, content meaningless
//   kInUse   ref >= 1 (held by block tables; shared when > 1)
//   kCached  ref 0, cacheable (indexed by the prefix cache), on the LRU list;
//            its content is kept until it is evicted
//
//   Allocate():  kFree -> kInUse(1); with no free page the least recently
//                cached page is evicted first (eviction hook, then reuse)
//   Ref():       kInUse(n) -> kInUse(n+1); kCached -> kInUse(1)
//   Unref():     kInUse(n>1) -> kInUse(n-1); kInUse(1) -> kCached if cacheable
//                else kFree (the page becomes the most recently used)
//   SetCacheable(): only the prefix cache calls it (index / unindex)
//
// Reference counts never go negative: Unref() of an unreferenced page is a
// programmer bug and aborts (ATOMSERVE_CHECK), as do Ref() of a free page and
// out-of-range page ids. Capacity errors are values: Allocate() returns
// kResourceExhausted when every page is in use.
//
// Thread safety: none. The pool belongs to one KvManager, which the engine
// drives from its scheduler thread (externally synchronized); read stats()
// on that thread.
//
//   ATOMSERVE_ASSIGN_OR_RETURN(auto pool, PagePool::Create(geometry, 1024));
//   ATOMSERVE_ASSIGN_OR_RETURN(PageId p, pool->Allocate());
//   pool->Unref(p);  // back to the free list
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kvstore/page_layout.h"
#include "kvstore/page_storage.h"

namespace atomserve::kvstore {

// PageLayout::Compute after KvGeometryError: kInvalidArgument on a bad geometry.
absl::StatusOr<PageLayout> MakePageLayout(const KvGeometry& geometry);

enum class PageState : uint8_t { kFree, kInUse, kCached };

struct PagePoolStats {
  int64_t total_pages = 0;
  int64_t free_pages = 0;
  int64_t in_use_pages = 0;
  int64_t cached_pages = 0;    // evictable
  int64_t allocations = 0;     // since creation
  int64_t evictions = 0;       // cached pages dropped (to reuse or on request)
  int64_t page_bytes = 0;
};

class PagePool {
 public:
  // Host storage sized for `num_pages` pages of `geometry`. kInvalidArgument
  // for a bad geometry, num_pages < 1 or num_pages * T >= 2^31.
  static absl::StatusOr<std::unique_ptr<PagePool>> Create(const KvGeometry& geometry, int64_t num_pages);
  // Any storage whose page size matches the layout (checked by the caller).
  PagePool(const PageLayout& layout, std::unique_ptr<PageStorage> storage);
  PagePool(const PagePool&) = delete;
  PagePool& operator=(const PagePool&) = delete;

  const PageLayout& layout() const { return layout_; }
  PageStorage& storage() { return *storage_; }
  const PageStorage& storage() const { return *storage_; }

  int64_t num_pages() const { return static_cast<int64_t>(ref_.size()); }
  int64_t num_free() const { return static_cast<int64_t>(free_list_.size()); }
  int64_t num_cached() const { return num_cached_; }
  int64_t num_in_use() const { return num_pages() - num_free() - num_cached(); }
  // Pages Allocate() can still hand out: free + evictable cached.
  int64_t num_available() const { return num_free() + num_cached(); }

  // A page with ref count 1, from the free list, else by evicting the least
  // recently used cached page. kResourceExhausted when none is available.
  absl::StatusOr<PageId> Allocate();
  void Ref(PageId page);
  void Unref(PageId page);

  int32_t ref_count(PageId page) const;
  PageState state(PageId page) const;
  bool cacheable(PageId page) const;
  // A cacheable page goes to the LRU list rather than the free list when its
  // last reference drops. Clearing the flag of a kCached page frees it.
  void SetCacheable(PageId page, bool cacheable);

  // Evicts the least recently used cached page (hook, then kFree); false if none.
  bool EvictOne();
  // Evicts every cached page; returns how many.
  int64_t EvictAllCached();
  // Called with a cached page right before eviction, while its bytes are
  // intact (the prefix cache unindexes it and may copy it to a host tier).
  // The hook must not call back into the pool's state-changing functions.
  void set_eviction_hook(std::function<void(PageId)> hook) { eviction_hook_ = std::move(hook); }

  PagePoolStats stats() const;
  // Debug check of every invariant (O(num_pages)): each page in exactly one
  // state, list memberships, counters. kInternal describing the first breach.
  absl::Status Validate() const;

 private:
  void CheckPage(PageId page) const;
  void LruPushBack(PageId page);
  void LruRemove(PageId page);
  void Evict(PageId page);

  PageLayout layout_;
  std::unique_ptr<PageStorage> storage_;
  std::vector<int32_t> ref_;
  std::vector<PageState> state_;
  std::vector<uint8_t> cacheable_;
  std::vector<PageId> free_list_;  // stack; back is handed out next
  // Intrusive doubly linked LRU list of kCached pages: head = oldest.
  std::vector<PageId> lru_prev_, lru_next_;
  PageId lru_head_ = kNoPage, lru_tail_ = kNoPage;
  int64_t num_cached_ = 0;
  int64_t allocations_ = 0;
  int64_t evictions_ = 0;
  std::function<void(PageId)> eviction_hook_;
};

}  // namespace atomserve::kvstore
