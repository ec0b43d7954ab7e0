#include "kvstore/prefix_cache.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "kvstore/prefix_hash.h"

namespace atomserve::kvstore {
namespace {

// Walks the hash chain over the full pages of `tokens` (at most max_pages,
// clamped to what tokens holds), calling visit(hash, parent_hash,
// page_tokens) until it returns false. Returns the clamped max_pages.
template <typename Visit>
int64_t WalkPageChain(std::span<const int32_t> tokens, int64_t max_pages, int64_t tokens_per_page,
                      uint64_t root_hash, Visit&& visit) {
  max_pages = std::clamp<int64_t>(max_pages, 0, static_cast<int64_t>(tokens.size()) / tokens_per_page);
  uint64_t parent = root_hash;
  for (int64_t i = 0; i < max_pages; ++i) {
    const auto page_tokens = tokens.subspan(i * tokens_per_page, tokens_per_page);
    const uint64_t hash = PageHash(parent, page_tokens);
    if (!visit(hash, parent, page_tokens)) break;
    parent = hash;
  }
  return max_pages;
}

}  // namespace

PrefixCache::PrefixCache(PagePool* pool, uint64_t root_hash, HostTier* host_tier)
    : pool_(pool),
      root_hash_(root_hash),
      host_tier_(host_tier),
      tokens_per_page_(pool->layout().tokens_per_page),
      indexed_(pool->num_pages(), 0),
      hash_(pool->num_pages(), 0),
      parent_hash_(pool->num_pages(), 0),
      tokens_(pool->num_pages() * pool->layout().tokens_per_page, 0) {
  pool_->set_eviction_hook([this](PageId page) { OnEvict(page); });
}

PrefixCache::~PrefixCache() { pool_->set_eviction_hook(nullptr); }

std::span<const int32_t> PrefixCache::page_tokens(PageId page) const {
  return std::span<const int32_t>(tokens_).subspan(static_cast<size_t>(page) * tokens_per_page_, tokens_per_page_);
}

PageId PrefixCache::Find(uint64_t hash, uint64_t parent_hash, std::span<const int32_t> tokens) const {
  auto it = index_.find(hash);
  if (it == index_.end()) return kNoPage;
  const PageId page = it->second;
  if (parent_hash_[page] != parent_hash || !std::ranges::equal(page_tokens(page), tokens)) return kNoPage;
  return page;
}

PageId PrefixCache::SwapIn(uint64_t hash, uint64_t parent_hash, std::span<const int32_t> tokens) {
  if (host_tier_ == nullptr || !host_tier_->Contains(hash, parent_hash, tokens)) return kNoPage;
  absl::StatusOr<PageId> page = pool_->Allocate();  // may evict (and re-offer) an LRU page
  if (!page.ok()) return kNoPage;
  staging_.resize(pool_->layout().page_bytes);
  if (!host_tier_->Get(hash, parent_hash, tokens, staging_) || !pool_->storage().WritePage(*page, staging_).ok()) {
    pool_->Unref(*page);
    return kNoPage;
  }
  // The chain was a miss in the index a moment ago, and an eviction cannot
  // have added the hash back, so the insert succeeds.
  ATOMSERVE_CHECK(Insert(*page, hash, parent_hash, tokens));
  return *page;
}

PrefixMatch PrefixCache::Acquire(std::span<const int32_t> tokens, int64_t max_pages) {
  const int64_t T = tokens_per_page_;
  PrefixMatch match;
  max_pages = WalkPageChain(tokens, max_pages, T, root_hash_,
                            [&](uint64_t hash, uint64_t parent, std::span<const int32_t> page_tokens) {
                              PageId page = Find(hash, parent, page_tokens);
                              if (page != kNoPage) {
                                pool_->Ref(page);
                              } else if ((page = SwapIn(hash, parent, page_tokens)) != kNoPage) {
                                ++match.host_pages;
                              } else {
                                return false;
                              }
                              match.pages.push_back(page);
                              match.hashes.push_back(hash);
                              return true;
                            });
  const int64_t hit = static_cast<int64_t>(match.pages.size());
  ++stats_.queries;
  stats_.query_tokens += max_pages * T;
  stats_.hit_pages += hit;
  stats_.hit_tokens += hit * T;
  stats_.host_hit_pages += match.host_pages;
  return match;
}

PrefixPeek PrefixCache::Peek(std::span<const int32_t> tokens, int64_t max_pages) const {
  PrefixPeek peek;
  WalkPageChain(tokens, max_pages, tokens_per_page_, root_hash_,
                [&](uint64_t hash, uint64_t parent, std::span<const int32_t> page_tokens) {
                  const PageId page = Find(hash, parent, page_tokens);
                  if (page != kNoPage) {
                    ++peek.device_pages;
                    if (pool_->state(page) == PageState::kCached) ++peek.evictable_pages;
                  } else if (host_tier_ != nullptr && host_tier_->Contains(hash, parent, page_tokens)) {
                    ++peek.host_pages;
                  } else {
                    return false;
                  }
                  return true;
                });
  return peek;
}

bool PrefixCache::Insert(PageId page, uint64_t hash, uint64_t parent_hash, std::span<const int32_t> tokens) {
  ATOMSERVE_CHECK(static_cast<int64_t>(tokens.size()) == tokens_per_page_);
  if (indexed_[page]) return false;
  if (!index_.try_emplace(hash, page).second) {
    ++stats_.duplicate_pages;
    return false;
  }
  indexed_[page] = 1;
  hash_[page] = hash;
  parent_hash_[page] = parent_hash;
  std::ranges::copy(tokens, tokens_.begin() + static_cast<int64_t>(page) * tokens_per_page_);
  pool_->SetCacheable(page, true);
  ++stats_.inserted_pages;
  return true;
}

void PrefixCache::OnEvict(PageId page) {
  if (!indexed_[page]) return;
  if (host_tier_ != nullptr) {
    staging_.resize(pool_->layout().page_bytes);
    if (pool_->storage().ReadPage(page, staging_).ok() &&
        host_tier_->Put(hash_[page], parent_hash_[page], page_tokens(page), staging_)) {
      ++stats_.host_put_pages;
    }
  }
  Unindex(page);
  ++stats_.evicted_pages;
}

void PrefixCache::Unindex(PageId page) {
  index_.erase(hash_[page]);
  indexed_[page] = 0;
}

PrefixCacheStats PrefixCache::stats() const {
  PrefixCacheStats s = stats_;
  s.indexed_pages = static_cast<int64_t>(index_.size());
  return s;
}

absl::Status PrefixCache::Validate() const {
  auto fail = [](auto&&... parts) { return absl::InternalError(absl::StrCat("prefix cache: ", parts...)); };
  int64_t indexed = 0;
  for (PageId p = 0; p < pool_->num_pages(); ++p) {
    if (indexed_[p] != static_cast<uint8_t>(pool_->cacheable(p)))
      return fail("page ", p, " indexed=", int{indexed_[p]}, " but pool cacheable=", pool_->cacheable(p));
    if (!indexed_[p]) continue;
    ++indexed;
    if (pool_->state(p) == PageState::kFree) return fail("indexed page ", p, " is free");
    auto it = index_.find(hash_[p]);
    if (it == index_.end() || it->second != p) return fail("page ", p, " is not indexed under its hash");
    if (PageHash(parent_hash_[p], page_tokens(p)) != hash_[p]) return fail("page ", p, " hash does not recompute");
  }
  if (indexed != static_cast<int64_t>(index_.size()))
    return fail(index_.size(), " index entries for ", indexed, " indexed pages");
  return absl::OkStatus();
}

}  // namespace atomserve::kvstore
