// One sequence's block table: the pool pages that hold its token positions,
// in order. Position s lives in page pages()[s / T] at offset s % T, i.e. in
// slot pages()[s / T] * T + s % T (kvstore/page_layout.h).
//
// A plain container: it does not touch reference counts (KvManager does).
// Thread safety: none (owned by KvManager).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/status.h"
#include "kvstore/page_layout.h"

namespace atomserve::kvstore {

// Pages needed to hold `tokens` positions.
constexpr int64_t PagesForTokens(int64_t tokens, int64_t tokens_per_page) {
  return (tokens + tokens_per_page - 1) / tokens_per_page;
}

class BlockTable {
 public:
  explicit BlockTable(int64_t tokens_per_page = kDefaultTokensPerPage) : tokens_per_page_(tokens_per_page) {}

  int64_t tokens_per_page() const { return tokens_per_page_; }
  std::span<const PageId> pages() const { return pages_; }
  int64_t num_pages() const { return static_cast<int64_t>(pages_.size()); }
  // Token positions the table can hold.
  int64_t capacity() const { return num_pages() * tokens_per_page_; }

  PageId page(int64_t index) const {
    ATOMSERVE_CHECK(index >= 0 && index < num_pages());
    return pages_[index];
  }
  PageId PageOf(int64_t position) const { return page(position / tokens_per_page_); }
  int32_t SlotOf(int64_t position) const {
    return static_cast<int32_t>(static_cast<int64_t>(PageOf(position)) * tokens_per_page_ +
                                position % tokens_per_page_);
  }

  void Append(PageId p) { pages_.push_back(p); }
  void Set(int64_t index, PageId p) {
    ATOMSERVE_CHECK(index >= 0 && index < num_pages());
    pages_[index] = p;
  }
  PageId PopBack() {
    ATOMSERVE_CHECK(!pages_.empty());
    const PageId p = pages_.back();
    pages_.pop_back();
    return p;
  }

 private:
  int64_t tokens_per_page_;
  std::vector<PageId> pages_;
};

}  // namespace atomserve::kvstore
