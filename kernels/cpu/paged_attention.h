// CPU kernels over the paged KV cache: encode K/V rows into pages, decode
// them, and causal GQA attention that reads K/V straight from 4-bit (or fp16)
// pages through per-sequence block tables. This is the reference the GPU
// paged-attention kernel is tested against, and the CPU backend's kernel.
//
// Page format: kvstore/page_layout.h (header-only; the one place the byte
// layout is defined). A PagedKvCache is a view of a whole pool: page p starts
// at base + p * layout.page_bytes.
//
// Math: for each query row, the same as cpu::Attention over the dequantized
// cache (kernels/quant/kv_quant.h DequantizeKvHead for kInt4, exact fp16 ->
// fp32 for kFp16): scores = (q . k_s) * scale for s in [0, q_pos], a softmax
// (cpu::SoftmaxRows), out = sum_s p_s v_s. Equal to cpu::Attention on the
// dequantized dense K/V up to fp32 summation order (tests: 1e-5).
// With k_rope set, stored K rows are taken to be pre-RoPE (Atom quantizes K
// before RoPE) and are rotated at their positions after dequantizing.
//
// Batch description (FlashInfer-style CSR over sequences):
//   q        [tokens, num_heads, head_dim]; rows of sequence i are
//            [q_indptr[i], q_indptr[i+1]) (non-decreasing, q_indptr[0] = 0)
//   q_pos    [tokens] position of each query in its sequence; it attends to
//            positions [0, q_pos] of that sequence (causal)
//   page_ids [page_indptr[num_seqs]]; sequence i's block table is
//            page_ids[page_indptr[i] .. page_indptr[i+1]); position s lives
//            in page table[s / T] at offset s % T
//   out      [tokens, num_heads, head_dim]
// K/V of every attended position must have been written (WritePagedKv)
// before the call; positions written in the same step are fine.
//
// Errors (kInvalidArgument, nothing written): malformed indptr arrays, a
// query position beyond its block table, page ids outside [0, num_pages),
// num_heads not a multiple of num_kv_heads, layer out of range, a null base.
// Thread safety: pure apart from the outputs; work is split over `pool`
// (nullptr: the calling thread). Results do not depend on the thread count.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "common/thread_pool.h"
#include "kernels/rope.h"
#include "kvstore/page_layout.h"

namespace atomserve::cpu {

// A pool's pages as kernels see them.
struct PagedKvCache {
  uint8_t* base = nullptr;  // page 0 (host memory)
  int64_t num_pages = 0;
  kvstore::PageLayout layout;
};

// One (token, head) row: x[head_dim] -> page bytes at (layer, part, head,
// slot_in_page) of `page` (the page's first byte). kInt4: QuantizeKvHead.
void EncodeKvRow(const kvstore::PageLayout& layout, uint8_t* page, int64_t layer, kvstore::KvPart part,
                 int64_t head, int64_t slot_in_page, const float* x);
// The inverse: out[head_dim].
void DecodeKvRow(const kvstore::PageLayout& layout, const uint8_t* page, int64_t layer, kvstore::KvPart part,
                 int64_t head, int64_t slot_in_page, float* out);

// k, v: [tokens, num_kv_heads, head_dim] -> slots (slot = page * T + offset,
// kvstore/page_layout.h) of `layer`. Slots must be distinct.
absl::Status WritePagedKv(const PagedKvCache& cache, int64_t layer, const int32_t* slots, int64_t tokens,
                          const float* k, const float* v, ThreadPool* pool);
// Decodes slots back to k, v: [tokens, num_kv_heads, head_dim].
absl::Status ReadPagedKv(const PagedKvCache& cache, int64_t layer, const int32_t* slots, int64_t tokens, float* k,
                         float* v, ThreadPool* pool);

struct PagedAttentionBatch {
  int64_t num_seqs = 0;
  const int32_t* q_indptr = nullptr;     // [num_seqs + 1]
  const int32_t* q_pos = nullptr;        // [q_indptr[num_seqs]]
  const int32_t* page_indptr = nullptr;  // [num_seqs + 1]
  const int32_t* page_ids = nullptr;     // [page_indptr[num_seqs]]
};

absl::Status PagedAttention(const float* q, const PagedKvCache& cache, int64_t layer,
                            const PagedAttentionBatch& batch, int64_t num_heads, float scale, float* out,
                            ThreadPool* pool, const RopeTable* k_rope = nullptr);

}  // namespace atomserve::cpu
