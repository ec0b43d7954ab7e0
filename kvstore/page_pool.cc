#include "kvstore/page_pool.h"

#include <limits>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace atomserve::kvstore {

absl::StatusOr<PageLayout> MakePageLayout(const KvGeometry& geometry) {
  if (const char* error = KvGeometryError(geometry)) {
    return absl::InvalidArgumentError(absl::StrCat("KV geometry: ", error));
  }
  return PageLayout::Compute(geometry);
}

absl::StatusOr<std::unique_ptr<PagePool>> PagePool::Create(const KvGeometry& geometry, int64_t num_pages) {
  ATOMSERVE_ASSIGN_OR_RETURN(PageLayout layout, MakePageLayout(geometry));
  if (num_pages < 1 || num_pages * layout.tokens_per_page > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat("page pool: num_pages ", num_pages, " must be >= 1 with num_pages * tokens_per_page < 2^31"));
  }
  ATOMSERVE_ASSIGN_OR_RETURN(std::unique_ptr<PageStorage> storage, NewHostPageStorage(num_pages, layout.page_bytes));
  return std::make_unique<PagePool>(layout, std::move(storage));
}

PagePool::PagePool(const PageLayout& layout, std::unique_ptr<PageStorage> storage)
    : layout_(layout), storage_(std::move(storage)) {
  ATOMSERVE_CHECK(storage_ != nullptr && storage_->page_bytes() == layout_.page_bytes);
  const int64_t n = storage_->num_pages();
  ref_.assign(n, 0);
  state_.assign(n, PageState::kFree);
  cacheable_.assign(n, 0);
  lru_prev_.assign(n, kNoPage);
  lru_next_.assign(n, kNoPage);
  free_list_.reserve(n);
  for (int64_t p = n - 1; p >= 0; --p) free_list_.push_back(static_cast<PageId>(p));  // page 0 first
}

void PagePool::CheckPage(PageId page) const { ATOMSERVE_CHECK(page >= 0 && page < num_pages()); }

absl::StatusOr<PageId> PagePool::Allocate() {
  if (free_list_.empty() && !EvictOne()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("KV page pool: all ", num_pages(), " pages are in use"));
  }
  const PageId page = free_list_.back();
  free_list_.pop_back();
  state_[page] = PageState::kInUse;
  ref_[page] = 1;
  ++allocations_;
  return page;
}

void PagePool::Ref(PageId page) {
  CheckPage(page);
  ATOMSERVE_CHECK(state_[page] != PageState::kFree);
  if (state_[page] == PageState::kCached) {
    LruRemove(page);
    state_[page] = PageState::kInUse;
  }
  ++ref_[page];
}

void PagePool::Unref(PageId page) {
  CheckPage(page);
  ATOMSERVE_CHECK(ref_[page] > 0);  // an underflow is a bookkeeping bug
  if (--ref_[page] > 0) return;
  if (cacheable_[page]) {
    state_[page] = PageState::kCached;
    LruPushBack(page);
  } else {
    state_[page] = PageState::kFree;
    free_list_.push_back(page);
  }
}

int32_t PagePool::ref_count(PageId page) const {
  CheckPage(page);
  return ref_[page];
}

PageState PagePool::state(PageId page) const {
  CheckPage(page);
  return state_[page];
}

bool PagePool::cacheable(PageId page) const {
  CheckPage(page);
  return cacheable_[page] != 0;
}

void PagePool::SetCacheable(PageId page, bool cacheable) {
  CheckPage(page);
  ATOMSERVE_CHECK(!cacheable || state_[page] == PageState::kInUse);
  cacheable_[page] = cacheable ? 1 : 0;
  if (!cacheable && state_[page] == PageState::kCached) {
    LruRemove(page);
    state_[page] = PageState::kFree;
    free_list_.push_back(page);
  }
}

bool PagePool::EvictOne() {
  if (lru_head_ == kNoPage) return false;
  Evict(lru_head_);
  return true;
}

int64_t PagePool::EvictAllCached() {
  int64_t n = 0;
  while (EvictOne()) ++n;
  return n;
}

void PagePool::Evict(PageId page) {
  if (eviction_hook_) eviction_hook_(page);
  ATOMSERVE_CHECK(state_[page] == PageState::kCached);  // the hook must not have changed it
  LruRemove(page);
  cacheable_[page] = 0;
  state_[page] = PageState::kFree;
  free_list_.push_back(page);
  ++evictions_;
}

void PagePool::LruPushBack(PageId page) {
  lru_prev_[page] = lru_tail_;
  lru_next_[page] = kNoPage;
  if (lru_tail_ != kNoPage) lru_next_[lru_tail_] = page;
  lru_tail_ = page;
  if (lru_head_ == kNoPage) lru_head_ = page;
  ++num_cached_;
}

void PagePool::LruRemove(PageId page) {
  const PageId prev = lru_prev_[page], next = lru_next_[page];
  (prev != kNoPage ? lru_next_[prev] : lru_head_) = next;
  (next != kNoPage ? lru_prev_[next] : lru_tail_) = prev;
  lru_prev_[page] = lru_next_[page] = kNoPage;
  --num_cached_;
}

PagePoolStats PagePool::stats() const {
  PagePoolStats s;
  s.total_pages = num_pages();
  s.free_pages = num_free();
  s.in_use_pages = num_in_use();
  s.cached_pages = num_cached();
  s.allocations = allocations_;
  s.evictions = evictions_;
  s.page_bytes = layout_.page_bytes;
  return s;
}

absl::Status PagePool::Validate() const {
  auto fail = [](auto&&... parts) { return absl::InternalError(absl::StrCat("page pool: ", parts...)); };
  const int64_t n = num_pages();
  std::vector<uint8_t> seen(n, 0);  // bit 1: free list, bit 2: LRU list
  for (PageId p : free_list_) {
    if (p < 0 || p >= n) return fail("free list holds page ", p);
    if (seen[p] & 1) return fail("page ", p, " twice on the free list");
    seen[p] |= 1;
  }
  int64_t lru_count = 0;
  for (PageId p = lru_head_, prev = kNoPage; p != kNoPage; prev = p, p = lru_next_[p]) {
    if (p < 0 || p >= n) return fail("LRU list holds page ", p);
    if (seen[p] & 2) return fail("LRU list has a cycle at page ", p);
    if (lru_prev_[p] != prev) return fail("LRU back link of page ", p, " is broken");
    if (lru_next_[p] == kNoPage && lru_tail_ != p) return fail("LRU tail is not the last page");
    seen[p] |= 2;
    ++lru_count;
  }
  if (lru_count != num_cached_) return fail("LRU list has ", lru_count, " pages, counter says ", num_cached_);
  for (PageId p = 0; p < n; ++p) {
    const int32_t ref = ref_[p];
    if (ref < 0) return fail("page ", p, " has negative ref count ", ref);
    switch (state_[p]) {
      case PageState::kFree:
        if (seen[p] != 1 || ref != 0 || cacheable_[p]) return fail("free page ", p, " inconsistent (ref ", ref, ")");
        break;
      case PageState::kInUse:
        if (seen[p] != 0 || ref < 1) return fail("in-use page ", p, " inconsistent (ref ", ref, ")");
        break;
      case PageState::kCached:
        if (seen[p] != 2 || ref != 0 || !cacheable_[p]) return fail("cached page ", p, " inconsistent (ref ", ref, ")");
        break;
    }
  }
  return absl::OkStatus();
}

}  // namespace atomserve::kvstore
