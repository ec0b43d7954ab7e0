// A second cache tier in host memory for prefix pages evicted from the page
// pool: the prefix cache offers each evicted page (its key and bytes) with
// Put(); when a later lookup misses in the pool, it asks Get() for the next
// page of the chain and, on a hit, swaps the bytes into a freshly allocated
// pool page ("swap in") and indexes it again.
//
// Keys are the prefix cache's: the page hash, its parent hash and its tokens
// (verified on Get, so a hash collision is a miss). Bytes are whole pages in
// the pool's PageLayout; a tier serves one pool (one layout).
//
// Today the copies are synchronous host memcpys on the engine thread. A
// device pool will want asynchronous copies on a stream, batched per step;
// the interface keeps that open: Put may copy lazily as long as it has the
// bytes before returning, Get fills `out` before returning.
//
// Thread safety: implementations are called from the KvManager's thread
// only (externally synchronized), like the rest of kvstore.
#pragma once

#include <cstdint>
#include <list>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace atomserve::kvstore {

struct HostTierStats {
  int64_t capacity_pages = 0;
  int64_t pages = 0;       // held now
  int64_t puts = 0;        // pages accepted
  int64_t hits = 0;        // Get() that copied a page out
  int64_t misses = 0;      // Get() that found nothing usable
  int64_t evictions = 0;   // pages dropped to make room
};

class HostTier {
 public:
  virtual ~HostTier() = default;
  // Offers an evicted page. Returns false when the tier declines it (wrong
  // size, zero capacity); a full tier makes room by its own policy.
  virtual bool Put(uint64_t hash, uint64_t parent_hash, std::span<const int32_t> tokens,
                   std::span<const uint8_t> page) = 0;
  // Copies the page stored under `hash` into `out` when its parent hash and
  // tokens match. The tier keeps its copy. False on a miss.
  virtual bool Get(uint64_t hash, uint64_t parent_hash, std::span<const int32_t> tokens,
                   std::span<uint8_t> out) = 0;
  // Whether Get() would hit; no side effects (admission estimates).
  virtual bool Contains(uint64_t hash, uint64_t parent_hash, std::span<const int32_t> tokens) const = 0;
  virtual HostTierStats stats() const = 0;
};

// Pages in ordinary host memory, at most `capacity_pages`, evicted LRU.
class InMemoryHostTier final : public HostTier {
 public:
  InMemoryHostTier(int64_t capacity_pages, int64_t page_bytes);

  bool Put(uint64_t hash, uint64_t parent_hash, std::span<const int32_t> tokens,
           std::span<const uint8_t> page) override;
  bool Get(uint64_t hash, uint64_t parent_hash, std::span<const int32_t> tokens, std::span<uint8_t> out) override;
  bool Contains(uint64_t hash, uint64_t parent_hash, std::span<const int32_t> tokens) const override;
  HostTierStats stats() const override;

 private:
  struct Entry {
    uint64_t hash = 0;
    uint64_t parent_hash = 0;
    std::vector<int32_t> tokens;
    std::vector<uint8_t> bytes;
  };
  using EntryList = std::list<Entry>;  // front = most recently used

  const Entry* Match(uint64_t hash, uint64_t parent_hash, std::span<const int32_t> tokens) const;

  int64_t capacity_pages_, page_bytes_;
  EntryList entries_;
  absl::flat_hash_map<uint64_t, EntryList::iterator> index_;
  HostTierStats stats_;
};

}  // namespace atomserve::kvstore
