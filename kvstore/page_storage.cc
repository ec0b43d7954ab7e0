#include "kvstore/page_storage.h"

#include <cstring>
#include <new>

#include "absl/strings/str_cat.h"

namespace atomserve::kvstore {
namespace {

struct AlignedDelete {
  void operator()(uint8_t* p) const { ::operator delete[](p, std::align_val_t(kPoolAlignment)); }
};

class HostPageStorage final : public PageStorage {
 public:
  HostPageStorage(int64_t num_pages, int64_t page_bytes, uint8_t* data)
      : num_pages_(num_pages), page_bytes_(page_bytes), data_(data) {}

  int64_t num_pages() const override { return num_pages_; }
  int64_t page_bytes() const override { return page_bytes_; }
  uint8_t* host_data() override { return data_.get(); }
  const uint8_t* host_data() const override { return data_.get(); }

  absl::Status CopyPage(PageId src, PageId dst) override {
    if (!InRange(src) || !InRange(dst))
      return absl::InvalidArgumentError(absl::StrCat("CopyPage: page out of range: ", src, " -> ", dst));
    if (src != dst) std::memcpy(Page(dst), Page(src), page_bytes_);
    return absl::OkStatus();
  }

  absl::Status ReadPage(PageId page, std::span<uint8_t> out) const override {
    if (!InRange(page) || static_cast<int64_t>(out.size()) != page_bytes_)
      return absl::InvalidArgumentError(absl::StrCat("ReadPage: page ", page, " or size ", out.size(), " invalid"));
    std::memcpy(out.data(), Page(page), page_bytes_);
    return absl::OkStatus();
  }

  absl::Status WritePage(PageId page, std::span<const uint8_t> in) override {
    if (!InRange(page) || static_cast<int64_t>(in.size()) != page_bytes_)
      return absl::InvalidArgumentError(absl::StrCat("WritePage: page ", page, " or size ", in.size(), " invalid"));
    std::memcpy(Page(page), in.data(), page_bytes_);
    return absl::OkStatus();
  }

 private:
  bool InRange(PageId p) const { return p >= 0 && p < num_pages_; }
  uint8_t* Page(PageId p) const { return data_.get() + static_cast<int64_t>(p) * page_bytes_; }

  int64_t num_pages_, page_bytes_;
  std::unique_ptr<uint8_t, AlignedDelete> data_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<PageStorage>> NewHostPageStorage(int64_t num_pages, int64_t page_bytes) {
  if (num_pages < 1 || page_bytes < 1)
    return absl::InvalidArgumentError(absl::StrCat("host page storage: bad size ", num_pages, " x ", page_bytes));
  const int64_t bytes = AlignUp(num_pages * page_bytes, kPoolAlignment);
  auto* data = static_cast<uint8_t*>(
      ::operator new[](static_cast<size_t>(bytes), std::align_val_t(kPoolAlignment), std::nothrow));
  if (data == nullptr)
    return absl::ResourceExhaustedError(absl::StrCat("host page storage: cannot allocate ", bytes, " bytes"));
  std::memset(data, 0, static_cast<size_t>(bytes));
  return std::make_unique<HostPageStorage>(num_pages, page_bytes, data);
}

}  // namespace atomserve::kvstore
