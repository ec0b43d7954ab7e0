// A dense float32 KV cache for one sequence: the simplest store, used by the
// single-request CPU path and as the reference the 4-bit paged store is
// checked against.
//
// Layout per layer: k[capacity, num_kv_heads, head_dim], same for v. Rows are
// written at token positions; Truncate() rewinds (e.g. to drop a rejected
// suffix). Errors: kResourceExhausted when a write would pass capacity.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"

namespace atomserve {

class DenseKvCache {
 public:
  DenseKvCache(int64_t num_layers, int64_t num_kv_heads, int64_t head_dim, int64_t capacity);

  int64_t capacity() const { return capacity_; }
  int64_t length() const { return length_; }
  int64_t row_size() const { return num_kv_heads_ * head_dim_; }

  // Copies `tokens` rows of k and v for `layer` at positions [start, start+tokens).
  absl::Status Write(int64_t layer, int64_t start, int64_t tokens, const float* k, const float* v);
  // Marks positions [0, new_length) as valid after all layers were written.
  absl::Status SetLength(int64_t new_length);
  void Truncate(int64_t new_length);

  const float* keys(int64_t layer) const { return k_[layer].data(); }
  const float* values(int64_t layer) const { return v_[layer].data(); }
  uint64_t bytes() const;

 private:
  int64_t num_layers_, num_kv_heads_, head_dim_, capacity_;
  int64_t length_ = 0;
  std::vector<std::vector<float>> k_, v_;
};

}  // namespace atomserve
