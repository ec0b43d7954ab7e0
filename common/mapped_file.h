// Read-only memory map of a whole file, for checkpoint loaders.
//
// Every read through ByteReader is bounds-checked (in release builds too): a
// read past the end returns kDataLoss naming the file and the offset, so a
// truncated or crafted file can never make a loader touch memory outside it.
//
//   ATOMSERVE_ASSIGN_OR_RETURN(MappedFile f, MappedFile::Open(path));
//   ByteReader r(f.data(), f.size(), path);
//   ATOMSERVE_ASSIGN_OR_RETURN(uint32_t magic, r.Read<uint32_t>());
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>

#include "absl/status/statusor.h"

namespace atomserve {

class MappedFile {
 public:
  static absl::StatusOr<MappedFile> Open(const std::string& path);
  MappedFile() = default;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  std::string path_;
};

// Sequential little-endian reader over a byte range with checked bounds.
class ByteReader {
 public:
  ByteReader(const uint8_t* data, uint64_t size, std::string name)
      : data_(data), size_(size), name_(std::move(name)) {}

  uint64_t offset() const { return offset_; }
  uint64_t size() const { return size_; }
  uint64_t remaining() const { return size_ - offset_; }
  const std::string& name() const { return name_; }

  template <typename T>
  absl::StatusOr<T> Read() {
    static_assert(std::is_trivially_copyable_v<T>);
    if (remaining() < sizeof(T)) return Truncated(sizeof(T));
    T v;
    std::memcpy(&v, data_ + offset_, sizeof(T));
    offset_ += sizeof(T);
    return v;
  }

  // Returns a view of the next n bytes and advances past them.
  absl::StatusOr<std::string_view> ReadBytes(uint64_t n);
  absl::Status Skip(uint64_t n);
  absl::Status Seek(uint64_t offset);

 private:
  absl::Status Truncated(uint64_t wanted) const;

  const uint8_t* data_;
  uint64_t size_;
  uint64_t offset_ = 0;
  std::string name_;
};

// Reads a whole (small) file into a string: config.json, tokenizer.json.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

}  // namespace atomserve
