// KV-cache capacity: how many token positions fit in a byte budget, for the
// 4-bit page format versus fp16 pages, per model shape.
//
// tokens(budget) = floor(budget / page_bytes) * tokens_per_page, with
// page_bytes from kvstore/page_layout.h (so scales, zeros and alignment
// padding are counted). For T = 16 the ratio of bytes per token is exactly
//   fp16 / int4 = 2D / (ceil(D/2) + 4)
// e.g. 128 / 36 = 3.56x for D = 64 (SmolLM2) and 256 / 68 = 3.76x for
// D = 128 (Llama-2-7B); the token ratio for a finite budget differs from it
// only by whole-page rounding.
//
// Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "kvstore/page_layout.h"

namespace atomserve::kvstore {

struct KvCapacity {
  KvDtype dtype = KvDtype::kInt4;
  int64_t page_bytes = 0;
  int64_t tokens_per_page = 0;
  int64_t pages = 0;           // whole pages in the budget
  int64_t tokens = 0;          // pages * tokens_per_page
  double bytes_per_token = 0;  // page_bytes / tokens_per_page
};

// Capacity of `budget_bytes` for geometry (its dtype decides the format).
// A geometry rejected by KvGeometryError or a negative budget gives zeros.
KvCapacity CapacityForBudget(const KvGeometry& geometry, int64_t budget_bytes);

struct CapacityComparison {
  KvCapacity fp16;
  KvCapacity int4;
  double token_ratio = 0;  // int4.tokens / fp16.tokens
  double bytes_ratio = 0;  // fp16.bytes_per_token / int4.bytes_per_token
};
// Both formats for the same shape (geometry.dtype is ignored).
CapacityComparison CompareCapacity(const KvGeometry& geometry, int64_t budget_bytes);

struct ModelKvShape {
  std::string name;
  int64_t num_layers = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
};

// The shapes the docs report: SmolLM2-135M, Llama-2-7B, Llama-3-8B.
std::span<const ModelKvShape> ReferenceModelShapes();

// A Markdown table: one row per model, fp16 and int4 bytes per token, tokens
// in `budget_bytes`, and the ratios.
std::string CapacityTableMarkdown(std::span<const ModelKvShape> models, int64_t budget_bytes,
                                  int64_t tokens_per_page = kDefaultTokensPerPage);

}  // namespace atomserve::kvstore
