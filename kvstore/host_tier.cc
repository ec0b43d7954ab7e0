#include "kvstore/host_tier.h"

#include <algorithm>
#include <cstring>

namespace atomserve::kvstore {

InMemoryHostTier::InMemoryHostTier(int64_t capacity_pages, int64_t page_bytes)
    : capacity_pages_(std::max<int64_t>(capacity_pages, 0)), page_bytes_(page_bytes) {
  stats_.capacity_pages = capacity_pages_;
}

const InMemoryHostTier::Entry* InMemoryHostTier::Match(uint64_t hash, uint64_t parent_hash,
                                                       std::span<const int32_t> tokens) const {
  auto it = index_.find(hash);
  if (it == index_.end()) return nullptr;
  const Entry& e = *it->second;
  if (e.parent_hash != parent_hash || !std::ranges::equal(e.tokens, tokens)) return nullptr;
  return &e;
}

bool InMemoryHostTier::Put(uint64_t hash, uint64_t parent_hash, std::span<const int32_t> tokens,
                           std::span<const uint8_t> page) {
  if (capacity_pages_ == 0 || static_cast<int64_t>(page.size()) != page_bytes_) return false;
  if (auto it = index_.find(hash); it != index_.end()) {  // replace (same key or a collision)
    entries_.erase(it->second);
    index_.erase(it);
  } else if (static_cast<int64_t>(entries_.size()) >= capacity_pages_) {
    index_.erase(entries_.back().hash);
    entries_.pop_back();
    ++stats_.evictions;
  }
  entries_.push_front(Entry{hash, parent_hash, {tokens.begin(), tokens.end()}, {page.begin(), page.end()}});
  index_[hash] = entries_.begin();
  ++stats_.puts;
  return true;
}

bool InMemoryHostTier::Get(uint64_t hash, uint64_t parent_hash, std::span<const int32_t> tokens,
                           std::span<uint8_t> out) {
  const Entry* e = Match(hash, parent_hash, tokens);
  if (e == nullptr || static_cast<int64_t>(out.size()) != page_bytes_) {
    ++stats_.misses;
    return false;
  }
  std::memcpy(out.data(), e->bytes.data(), e->bytes.size());
  entries_.splice(entries_.begin(), entries_, index_.at(hash));  // now most recently used
  ++stats_.hits;
  return true;
}

bool InMemoryHostTier::Contains(uint64_t hash, uint64_t parent_hash, std::span<const int32_t> tokens) const {
  return Match(hash, parent_hash, tokens) != nullptr;
}

HostTierStats InMemoryHostTier::stats() const {
  HostTierStats s = stats_;
  s.pages = static_cast<int64_t>(entries_.size());
  return s;
}

}  // namespace atomserve::kvstore
