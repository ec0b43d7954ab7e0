// Where page bytes live. The page pool does its bookkeeping on page ids and
// touches bytes only through this interface, so moving the pages to device
// memory means one more implementation (cudaMalloc'd, copies on a stream),
// not a change to the pool, the prefix cache or the block tables.
//
// Page p occupies bytes [p * page_bytes, (p + 1) * page_bytes) of one
// contiguous buffer (PageLayout describes the inside of a page). The buffer
// is kPoolAlignment-aligned and zero-filled at creation.
//
// Errors: the copy functions return kInvalidArgument for out-of-range pages
// or wrong buffer sizes (a device implementation adds kInternal for failed
// copies). Thread safety: none; the owner (the pool) serializes calls, and
// kernels access the bytes only between structural operations.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kvstore/page_layout.h"

namespace atomserve::kvstore {

class PageStorage {
 public:
  virtual ~PageStorage() = default;

  virtual int64_t num_pages() const = 0;
  virtual int64_t page_bytes() const = 0;

  // Base of the buffer in host memory, or nullptr when the pages are not
  // host-addressable (device memory): then use the copy functions.
  virtual uint8_t* host_data() = 0;
  virtual const uint8_t* host_data() const = 0;

  // dst := src, whole page (copy-on-write).
  virtual absl::Status CopyPage(PageId src, PageId dst) = 0;
  // Host staging for the host tier: out/in must be exactly page_bytes long.
  virtual absl::Status ReadPage(PageId page, std::span<uint8_t> out) const = 0;
  virtual absl::Status WritePage(PageId page, std::span<const uint8_t> in) = 0;
};

// Pages in one aligned host allocation. kInvalidArgument for non-positive
// sizes, kResourceExhausted when the allocation fails.
absl::StatusOr<std::unique_ptr<PageStorage>> NewHostPageStorage(int64_t num_pages, int64_t page_bytes);

}  // namespace atomserve::kvstore
