// Prefix caching: an index from page hash (kvstore/prefix_hash.h chain) to the
// pool page holding that full page of K/V, so a new sequence reuses the pages
// of its longest cached prefix and only prefills the rest.
//
// Contract:
//  - Only full pages whose K/V is completely written are indexed (Insert);
//    an indexed page is immutable: writers copy it first (KvManager's COW).
//  - An indexed page is cacheable in the pool: when its last reference drops
//    it stays in the pool (kCached, LRU) instead of being freed; the pool
//    evicts the least recently used cached page when it runs short and calls
//    this cache's hook, which unindexes it and offers it to the host tier.
//  - A lookup walks the chain from the first page and stops at the first
//    miss; a hit needs equal hash, equal parent hash and equal tokens, so a
//    hash collision is a miss, never wrong K/V. When the pool misses and a
//    host tier holds the page, it is swapped in (a page is allocated, the
//    bytes copied, the page indexed again).
//  - Hashes are unique in the index: inserting content that is already
//    indexed under another page is declined (the duplicate page stays a
//    private page and is freed normally).
//
// Thread safety: none; owned by KvManager (externally synchronized).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "kvstore/host_tier.h"
#include "kvstore/page_pool.h"

namespace atomserve::kvstore {

struct PrefixCacheStats {
  int64_t queries = 0;         // Acquire() calls
  int64_t query_tokens = 0;    // tokens those calls could have matched (full pages only)
  int64_t hit_tokens = 0;      // tokens served from cache (device + host)
  int64_t hit_pages = 0;       // pages served from cache (device + host)
  int64_t host_hit_pages = 0;  // of those, swapped in from the host tier
  int64_t inserted_pages = 0;
  int64_t duplicate_pages = 0;  // Insert() declined: content already indexed
  int64_t evicted_pages = 0;
  int64_t host_put_pages = 0;  // evicted pages the host tier accepted
  int64_t indexed_pages = 0;   // now
};

// Pages matched by Acquire(), each holding one reference for the caller.
struct PrefixMatch {
  std::vector<PageId> pages;
  std::vector<uint64_t> hashes;  // hashes[i] = chain hash of pages[i]
  int64_t host_pages = 0;        // of pages, swapped in from the host tier
};

// Side-effect-free estimate of what Acquire() would do now.
struct PrefixPeek {
  int64_t device_pages = 0;     // chain pages found in the pool
  int64_t evictable_pages = 0;  // of those, currently kCached (reusing them removes them from the LRU)
  int64_t host_pages = 0;       // further chain pages the host tier holds (each needs a fresh page)
  int64_t pages() const { return device_pages + host_pages; }
};

class PrefixCache {
 public:
  // Installs itself as the pool's eviction hook (the pool must outlive it).
  // host_tier may be null (no second tier); it is not owned.
  PrefixCache(PagePool* pool, uint64_t root_hash, HostTier* host_tier);
  ~PrefixCache();
  PrefixCache(const PrefixCache&) = delete;
  PrefixCache& operator=(const PrefixCache&) = delete;

  uint64_t root_hash() const { return root_hash_; }

  // Matches the first max_pages full pages of `tokens`; takes a reference on
  // each matched page. Counts one query.
  PrefixMatch Acquire(std::span<const int32_t> tokens, int64_t max_pages);
  PrefixPeek Peek(std::span<const int32_t> tokens, int64_t max_pages) const;

  // Indexes `page` (in use, full, K/V written) as the page with chain hash
  // `hash` after `parent_hash`, holding `tokens` (T of them). Returns false,
  // changing nothing, when the page is already indexed or another page holds
  // `hash`.
  bool Insert(PageId page, uint64_t hash, uint64_t parent_hash, std::span<const int32_t> tokens);

  bool indexed(PageId page) const { return indexed_[page] != 0; }
  uint64_t page_hash(PageId page) const { return hash_[page]; }
  std::span<const int32_t> page_tokens(PageId page) const;

  PrefixCacheStats stats() const;
  // Debug check: index <-> per-page keys <-> pool cacheable flags agree and
  // every key's hash recomputes from its parent and tokens. kInternal.
  absl::Status Validate() const;

 private:
  PageId Find(uint64_t hash, uint64_t parent_hash, std::span<const int32_t> tokens) const;
  PageId SwapIn(uint64_t hash, uint64_t parent_hash, std::span<const int32_t> tokens);
  void OnEvict(PageId page);
  void Unindex(PageId page);

  PagePool* pool_;
  uint64_t root_hash_;
  HostTier* host_tier_;
  int64_t tokens_per_page_;
  absl::flat_hash_map<uint64_t, PageId> index_;
  std::vector<uint8_t> indexed_;
  std::vector<uint64_t> hash_, parent_hash_;  // per page, valid when indexed
  std::vector<int32_t> tokens_;               // [num_pages][T], valid when indexed
  std::vector<uint8_t> staging_;              // one page, for host-tier copies
  PrefixCacheStats stats_;
};

}  // namespace atomserve::kvstore
