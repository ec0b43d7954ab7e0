#include "kvstore/capacity.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace atomserve::kvstore {

KvCapacity CapacityForBudget(const KvGeometry& geometry, int64_t budget_bytes) {
  KvCapacity c;
  c.dtype = geometry.dtype;
  if (KvGeometryError(geometry) != nullptr || budget_bytes < 0) return c;
  const PageLayout layout = PageLayout::Compute(geometry);
  c.page_bytes = layout.page_bytes;
  c.tokens_per_page = layout.tokens_per_page;
  c.pages = budget_bytes / layout.page_bytes;
  c.tokens = c.pages * layout.tokens_per_page;
  c.bytes_per_token = layout.bytes_per_token();
  return c;
}

CapacityComparison CompareCapacity(const KvGeometry& geometry, int64_t budget_bytes) {
  KvGeometry g = geometry;
  CapacityComparison r;
  g.dtype = KvDtype::kFp16;
  r.fp16 = CapacityForBudget(g, budget_bytes);
  g.dtype = KvDtype::kInt4;
  r.int4 = CapacityForBudget(g, budget_bytes);
  if (r.fp16.tokens > 0) r.token_ratio = static_cast<double>(r.int4.tokens) / static_cast<double>(r.fp16.tokens);
  if (r.int4.bytes_per_token > 0) r.bytes_ratio = r.fp16.bytes_per_token / r.int4.bytes_per_token;
  return r;
}

std::span<const ModelKvShape> ReferenceModelShapes() {
  static const std::vector<ModelKvShape> shapes = {
      {"SmolLM2-135M", 30, 3, 64},
      {"Llama-2-7B", 32, 32, 128},
      {"Llama-3-8B", 32, 8, 128},
  };
  return shapes;
}

std::string CapacityTableMarkdown(std::span<const ModelKvShape> models, int64_t budget_bytes,
                                  int64_t tokens_per_page) {
  std::string out = absl::StrCat(
      "| model | layers x kv heads x head_dim | fp16 bytes/token | int4 bytes/token | fp16 tokens in ",
      absl::StrFormat("%.3g", static_cast<double>(budget_bytes) / (1 << 30)), " GiB | int4 tokens | ratio |\n",
      "| --- | --- | ---: | ---: | ---: | ---: | ---: |\n");
  for (const ModelKvShape& m : models) {
    const KvGeometry g{m.num_layers, m.num_kv_heads, m.head_dim, tokens_per_page, KvDtype::kInt4};
    const CapacityComparison c = CompareCapacity(g, budget_bytes);
    absl::StrAppend(&out, "| ", m.name, " | ", m.num_layers, " x ", m.num_kv_heads, " x ", m.head_dim, " | ",
                    absl::StrFormat("%.0f", c.fp16.bytes_per_token), " | ",
                    absl::StrFormat("%.0f", c.int4.bytes_per_token), " | ", c.fp16.tokens, " | ", c.int4.tokens,
                    " | ", absl::StrFormat("%.3fx", c.token_ratio), " |\n");
  }
  return out;
}

}  // namespace atomserve::kvstore
