#include "kvstore/dense_kv_cache.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace atomserve {

DenseKvCache::DenseKvCache(int64_t num_layers, int64_t num_kv_heads, int64_t head_dim,
                           int64_t capacity)
    : num_layers_(num_layers), num_kv_heads_(num_kv_heads), head_dim_(head_dim), capacity_(capacity) {
  k_.resize(num_layers);
  v_.resize(num_layers);
  for (int64_t l = 0; l < num_layers; ++l) {
    k_[l].assign(capacity * row_size(), 0.0f);
    v_[l].assign(capacity * row_size(), 0.0f);
  }
}

absl::Status DenseKvCache::Write(int64_t layer, int64_t start, int64_t tokens, const float* k,
                                 const float* v) {
  if (layer < 0 || layer >= num_layers_)
    return absl::InvalidArgumentError(absl::StrCat("KV cache: layer ", layer, " out of range"));
  if (start < 0 || tokens < 0 || start + tokens > capacity_)
    return absl::ResourceExhaustedError(absl::StrCat("KV cache: positions [", start, ", ",
                                                     start + tokens, ") exceed capacity ", capacity_));
  std::memcpy(k_[layer].data() + start * row_size(), k, tokens * row_size() * sizeof(float));
  std::memcpy(v_[layer].data() + start * row_size(), v, tokens * row_size() * sizeof(float));
  return absl::OkStatus();
}

absl::Status DenseKvCache::SetLength(int64_t new_length) {
  if (new_length < 0 || new_length > capacity_)
    return absl::ResourceExhaustedError(absl::StrCat("KV cache: length ", new_length, " exceeds capacity ", capacity_));
  length_ = new_length;
  return absl::OkStatus();
}

void DenseKvCache::Truncate(int64_t new_length) { length_ = std::clamp<int64_t>(new_length, 0, length_); }

uint64_t DenseKvCache::bytes() const {
  return static_cast<uint64_t>(num_layers_) * 2 * capacity_ * row_size() * sizeof(float);
}

}  // namespace atomserve
