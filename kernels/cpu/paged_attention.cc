#include "kernels/cpu/paged_attention.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/internal/simd.h"
#include "kernels/cpu/ops.h"
#include "kernels/quant/fp16.h"
#include "kernels/quant/kv_quant.h"


namespace atomserve::cpu {
namespace {

using kvstore::KvDtype;
using kvstore::KvPart;
using kvstore::PageLayout;

// Queries of one sequence handled per work item: the item dequantizes its kv
// head's context once and reuses it for every query and q-head of the block.
constexpr int64_t kQueryBlock = 8;

// The same dot product as cpu::Attention (one definition, internal/simd.h),
// so the two agree to the last bit.
using internal::Dot;

absl::Status CheckCache(const PagedKvCache& cache, int64_t layer) {
  if (cache.base == nullptr || cache.num_pages < 1)
    return absl::InvalidArgumentError("paged KV: null base or no pages");
  if (layer < 0 || layer >= cache.layout.num_layers)
    return absl::InvalidArgumentError(absl::StrCat("paged KV: layer ", layer, " out of range"));
  return absl::OkStatus();
}

absl::Status CheckSlots(const PagedKvCache& cache, const int32_t* slots, int64_t tokens) {
  const int64_t limit = cache.num_pages * cache.layout.tokens_per_page;
  for (int64_t t = 0; t < tokens; ++t) {
    if (slots[t] < 0 || slots[t] >= limit)
      return absl::InvalidArgumentError(absl::StrCat("paged KV: slot ", slots[t], " outside [0, ", limit, ")"));
  }
  return absl::OkStatus();
}

absl::Status CheckIndptr(const int32_t* indptr, int64_t n, const char* name) {
  if (indptr == nullptr || indptr[0] != 0) return absl::InvalidArgumentError(absl::StrCat(name, "[0] must be 0"));
  for (int64_t i = 0; i < n; ++i) {
    if (indptr[i + 1] < indptr[i]) return absl::InvalidArgumentError(absl::StrCat(name, " decreases at ", i));
  }
  return absl::OkStatus();
}

absl::Status CheckBatch(const PagedKvCache& cache, const PagedAttentionBatch& b, int64_t num_heads) {
  const PageLayout& l = cache.layout;
  if (num_heads < 1 || num_heads % l.num_kv_heads != 0)
    return absl::InvalidArgumentError(
        absl::StrCat("paged attention: ", num_heads, " heads is not a multiple of ", l.num_kv_heads, " kv heads"));
  if (b.num_seqs < 0) return absl::InvalidArgumentError("paged attention: negative num_seqs");
  if (absl::Status st = CheckIndptr(b.q_indptr, b.num_seqs, "q_indptr"); !st.ok()) return st;
  if (absl::Status st = CheckIndptr(b.page_indptr, b.num_seqs, "page_indptr"); !st.ok()) return st;
  for (int64_t i = 0; i < b.page_indptr[b.num_seqs]; ++i) {
    if (b.page_ids[i] < 0 || b.page_ids[i] >= cache.num_pages)
      return absl::InvalidArgumentError(absl::StrCat("paged attention: page id ", b.page_ids[i], " out of range"));
  }
  for (int64_t s = 0; s < b.num_seqs; ++s) {
    const int64_t capacity = static_cast<int64_t>(b.page_indptr[s + 1] - b.page_indptr[s]) * l.tokens_per_page;
    for (int64_t t = b.q_indptr[s]; t < b.q_indptr[s + 1]; ++t) {
      if (b.q_pos[t] < 0 || b.q_pos[t] >= capacity)
        return absl::InvalidArgumentError(absl::StrCat("paged attention: query ", t, " of sequence ", s,
                                                       " at position ", b.q_pos[t], " beyond its ", capacity,
                                                       " cached positions"));
    }
  }
  return absl::OkStatus();
}

struct WorkItem {
  int32_t seq;
  int32_t kv_head;
  int32_t q_begin, q_end;
};

std::vector<WorkItem> MakeWorkItems(const PagedAttentionBatch& b, int64_t kv_heads) {
  std::vector<WorkItem> items;
  for (int64_t s = 0; s < b.num_seqs; ++s) {
    for (int64_t g = 0; g < kv_heads; ++g) {
      for (int64_t q = b.q_indptr[s]; q < b.q_indptr[s + 1]; q += kQueryBlock) {
        const int64_t end = std::min<int64_t>(q + kQueryBlock, b.q_indptr[s + 1]);
        items.push_back({static_cast<int32_t>(s), static_cast<int32_t>(g), static_cast<int32_t>(q),
                         static_cast<int32_t>(end)});
      }
    }
  }
  return items;
}

// rows x head_dim values of one int4 tile: the arithmetic of DequantizeKvHead
// (float(code) * scale + zero), in a loop the compiler vectorizes.
void DecodeInt4Tile(const uint8_t* codes, const uint8_t* meta, int64_t rows, int64_t head_dim, int64_t row_bytes,
                    float* out) {
  const int64_t pairs = head_dim / 2;
  for (int64_t r = 0; r < rows; ++r, codes += row_bytes, meta += 4, out += head_dim) {
    uint16_t bits[2];
    std::memcpy(bits, meta, sizeof(bits));
    const float scale = quant::HalfBitsToFloat(bits[0]), zero = quant::HalfBitsToFloat(bits[1]);
    for (int64_t i = 0; i < pairs; ++i) {
      out[2 * i] = static_cast<float>(codes[i] & 0xf) * scale + zero;
      out[2 * i + 1] = static_cast<float>(codes[i] >> 4) * scale + zero;
    }
    if (head_dim % 2 == 1) out[head_dim - 1] = static_cast<float>(codes[pairs] & 0xf) * scale + zero;
  }
}

// Decodes positions [0, len) of one kv head of one sequence into out [len, D],
// a page tile at a time (a head's rows of a page are contiguous).
void GatherPart(const PagedKvCache& cache, int64_t layer, const int32_t* table, int64_t kv_head, KvPart part,
                int64_t len, float* out) {
  const PageLayout& l = cache.layout;
  const int64_t T = l.tokens_per_page;
  for (int64_t start = 0; start < len; start += T) {
    const uint8_t* page = cache.base + static_cast<int64_t>(table[start / T]) * l.page_bytes;
    const int64_t rows = std::min(T, len - start);
    float* dst = out + start * l.head_dim;
    if (l.dtype == KvDtype::kInt4) {
      DecodeInt4Tile(page + l.CodeOffset(layer, part, kv_head, 0), page + l.MetaOffset(layer, part, kv_head, 0), rows,
                     l.head_dim, l.row_bytes, dst);
    } else {
      for (int64_t r = 0; r < rows; ++r) DecodeKvRow(l, page, layer, part, kv_head, r, dst + r * l.head_dim);
    }
  }
}

void GatherHead(const PagedKvCache& cache, int64_t layer, const int32_t* table, int64_t kv_head, int64_t len,
                float* k, float* v) {
  GatherPart(cache, layer, table, kv_head, KvPart::kKey, len, k);
  GatherPart(cache, layer, table, kv_head, KvPart::kValue, len, v);
}

void AttendOne(const float* qv, const float* k, const float* v, int64_t len, int64_t head_dim, float scale,
               std::vector<float>& scores, float* o) {
  scores.resize(len);
  for (int64_t s = 0; s < len; ++s) scores[s] = Dot(qv, k + s * head_dim, head_dim) * scale;
  SoftmaxRows(scores.data(), 1, len);
  std::fill(o, o + head_dim, 0.0f);
  for (int64_t s = 0; s < len; ++s) {
    const float p = scores[s];
    const float* vv = v + s * head_dim;
    for (int64_t d = 0; d < head_dim; ++d) o[d] += p * vv[d];
  }
}

void RunItem(const WorkItem& item, const float* q, const PagedKvCache& cache, int64_t layer,
             const PagedAttentionBatch& b, int64_t num_heads, float scale, const RopeTable* k_rope, float* out,
             std::vector<float>& k, std::vector<float>& v, std::vector<float>& scores, std::vector<int32_t>& pos) {
  const int64_t d = cache.layout.head_dim;
  const int64_t group = num_heads / cache.layout.num_kv_heads;
  int64_t len = 0;
  for (int64_t t = item.q_begin; t < item.q_end; ++t) len = std::max<int64_t>(len, b.q_pos[t] + 1);
  k.resize(len * d);
  v.resize(len * d);
  GatherHead(cache, layer, b.page_ids + b.page_indptr[item.seq], item.kv_head, len, k.data(), v.data());
  if (k_rope != nullptr) {
    pos.resize(len);
    for (int64_t s = 0; s < len; ++s) pos[s] = static_cast<int32_t>(s);
    ApplyRope(k.data(), pos.data(), len, 1, d, *k_rope);
  }
  for (int64_t t = item.q_begin; t < item.q_end; ++t) {
    for (int64_t h = item.kv_head * group; h < (item.kv_head + 1) * group; ++h) {
      AttendOne(q + (t * num_heads + h) * d, k.data(), v.data(), b.q_pos[t] + 1, d, scale, scores,
                out + (t * num_heads + h) * d);
    }
  }
}

void ParallelOver(ThreadPool* pool, int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
  if (pool != nullptr) {
    pool->ParallelFor(n, fn);
  } else {
    fn(0, n);
  }
}

}  // namespace

void EncodeKvRow(const PageLayout& layout, uint8_t* page, int64_t layer, KvPart part, int64_t head,
                 int64_t slot_in_page, const float* x) {
  uint8_t* codes = page + layout.CodeOffset(layer, part, head, slot_in_page);
  if (layout.dtype == KvDtype::kFp16) {
    for (int64_t i = 0; i < layout.head_dim; ++i) {
      const uint16_t h = quant::FloatToHalfBits(x[i]);
      std::memcpy(codes + 2 * i, &h, sizeof(h));
    }
    return;
  }
  uint16_t meta[2];
  quant::QuantizeKvHead(x, layout.head_dim, codes, &meta[0], &meta[1]);
  std::memcpy(page + layout.MetaOffset(layer, part, head, slot_in_page), meta, sizeof(meta));
}

void DecodeKvRow(const PageLayout& layout, const uint8_t* page, int64_t layer, KvPart part, int64_t head,
                 int64_t slot_in_page, float* out) {
  const uint8_t* codes = page + layout.CodeOffset(layer, part, head, slot_in_page);
  if (layout.dtype == KvDtype::kFp16) {
    for (int64_t i = 0; i < layout.head_dim; ++i) {
      uint16_t h;
      std::memcpy(&h, codes + 2 * i, sizeof(h));
      out[i] = quant::HalfBitsToFloat(h);
    }
    return;
  }
  uint16_t meta[2];
  std::memcpy(meta, page + layout.MetaOffset(layer, part, head, slot_in_page), sizeof(meta));
  quant::DequantizeKvHead(codes, layout.head_dim, meta[0], meta[1], out);
}

absl::Status WritePagedKv(const PagedKvCache& cache, int64_t layer, const int32_t* slots, int64_t tokens,
                          const float* k, const float* v, ThreadPool* pool) {
  if (absl::Status st = CheckCache(cache, layer); !st.ok()) return st;
  if (absl::Status st = CheckSlots(cache, slots, tokens); !st.ok()) return st;
  const PageLayout& l = cache.layout;
  const int64_t row = l.num_kv_heads * l.head_dim;
  ParallelOver(pool, tokens, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      uint8_t* page = cache.base + static_cast<int64_t>(slots[t] / l.tokens_per_page) * l.page_bytes;
      const int64_t off = slots[t] % l.tokens_per_page;
      for (int64_t h = 0; h < l.num_kv_heads; ++h) {
        EncodeKvRow(l, page, layer, KvPart::kKey, h, off, k + t * row + h * l.head_dim);
        EncodeKvRow(l, page, layer, KvPart::kValue, h, off, v + t * row + h * l.head_dim);
      }
    }
  });
  return absl::OkStatus();
}

absl::Status ReadPagedKv(const PagedKvCache& cache, int64_t layer, const int32_t* slots, int64_t tokens, float* k,
                         float* v, ThreadPool* pool) {
  if (absl::Status st = CheckCache(cache, layer); !st.ok()) return st;
  if (absl::Status st = CheckSlots(cache, slots, tokens); !st.ok()) return st;
  const PageLayout& l = cache.layout;
  const int64_t row = l.num_kv_heads * l.head_dim;
  ParallelOver(pool, tokens, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const uint8_t* page = cache.base + static_cast<int64_t>(slots[t] / l.tokens_per_page) * l.page_bytes;
      const int64_t off = slots[t] % l.tokens_per_page;
      for (int64_t h = 0; h < l.num_kv_heads; ++h) {
        DecodeKvRow(l, page, layer, KvPart::kKey, h, off, k + t * row + h * l.head_dim);
        DecodeKvRow(l, page, layer, KvPart::kValue, h, off, v + t * row + h * l.head_dim);
      }
    }
  });
  return absl::OkStatus();
}

absl::Status PagedAttention(const float* q, const PagedKvCache& cache, int64_t layer,
                            const PagedAttentionBatch& batch, int64_t num_heads, float scale, float* out,
                            ThreadPool* pool, const RopeTable* k_rope) {
  if (absl::Status st = CheckCache(cache, layer); !st.ok()) return st;
  if (absl::Status st = CheckBatch(cache, batch, num_heads); !st.ok()) return st;
  if (k_rope != nullptr && static_cast<int64_t>(k_rope->inv_freq.size()) != cache.layout.head_dim / 2)
    return absl::InvalidArgumentError("paged attention: RoPE table does not match head_dim");
  const std::vector<WorkItem> items = MakeWorkItems(batch, cache.layout.num_kv_heads);
  ParallelOver(pool, static_cast<int64_t>(items.size()), [&](int64_t begin, int64_t end) {
    std::vector<float> k, v, scores;
    std::vector<int32_t> pos;
    for (int64_t i = begin; i < end; ++i)
      RunItem(items[i], q, cache, layer, batch, num_heads, scale, k_rope, out, k, v, scores, pos);
  });
  return absl::OkStatus();
}

}  // namespace atomserve::cpu
