// The byte layout of one KV-cache page: the single source of truth shared by
// the page pool, the CPU paged-attention kernel and (later) the GPU kernels.
//
// A page holds `tokens_per_page` (T) consecutive token positions of one
// sequence, for every layer. Page p of a pool starts at byte p * page_bytes of
// the pool's buffer; inside it, layer l's block starts at l * layer_bytes.
// A layer block has four sections, each a multiple of 16 bytes long, so every
// section and every per-head tile starts 16-byte aligned (the pool base is
// 256-byte aligned), and a GPU thread can load a tile with 16-byte vectors:
//
//   page p ─┬─ layer 0 ─┬─ K codes  [H][code_tile_bytes]   tile = [T][row_bytes] + pad
//           │           ├─ V codes  [H][code_tile_bytes]
//           │           ├─ K meta   [H][meta_tile_bytes]   tile = [T][2] fp16 (scale, zero) + pad
//           │           └─ V meta   [H][meta_tile_bytes]
//           ├─ layer 1 ─ ...
//           └─ layer L-1
//
// H = kv heads stored by this pool (the heads of this tensor-parallel rank),
// D = head_dim. Inside a section the order is head-major ("HND"): one head's
// T rows of one page are contiguous, so an attention kernel that owns one kv
// head streams T * row_bytes contiguous bytes per page; a write of one token
// touches H short runs instead (writes are 1/T as frequent as reads in decode).
//
// kInt4 (the format of kernels/quant/kv_quant.h):
//   row_bytes      = ceil(D / 2)   codes, element 2i in the low nibble of byte
//                                  i, 2i+1 in the high nibble; odd D: last
//                                  high nibble 0
//   meta_row_bytes = 4             uint16 scale bits, then uint16 zero bits
//                                  (fp16; value = code * scale + zero)
// kFp16 (for capacity comparison and as an unquantized runtime option):
//   row_bytes      = 2 * D         uint16 fp16 bits of each element
//   meta_row_bytes = 0             (the meta sections are empty)
//
//   code_tile_bytes = AlignUp(T * row_bytes, 16)
//   meta_tile_bytes = AlignUp(T * meta_row_bytes, 16)
//   k_codes = 0, v_codes = H * code_tile_bytes,
//   k_meta  = 2 * H * code_tile_bytes, v_meta = k_meta + H * meta_tile_bytes
//   layer_bytes = 2 * H * (code_tile_bytes + meta_tile_bytes)
//   page_bytes  = L * layer_bytes
//
// With T = 16 there is no padding at all (16 * row_bytes and 16 * 4 are
// multiples of 16): kInt4 costs exactly 2 * L * H * (ceil(D/2) + 4) bytes per
// token, kFp16 2 * L * H * 2D.
//
// Slots: a (page, offset) pair is also written as one int32 slot
// = page * T + offset, the form kernels take for writes (like vLLM's
// slot_mapping). Pools are limited to num_pages * T < 2^31.
//
// Everything here is constexpr and depends on nothing but <cstdint>, so CUDA
// code can include it and pass a PageLayout (trivially copyable) by value to
// kernels. Inputs are assumed valid: KvGeometryError() says why a geometry is
// not (kvstore's constructors turn it into kInvalidArgument).
//
//   constexpr PageLayout layout = PageLayout::Compute({.num_layers = 30, .num_kv_heads = 3, .head_dim = 64});
//   uint8_t* page = pool_base + page_id * layout.page_bytes;
//   uint8_t* k_row = page + layout.CodeOffset(layer, KvPart::kKey, head, slot_in_page);
#pragma once

#include <cstdint>

namespace atomserve::kvstore {

// Index of a page in its pool. kNoPage marks "none".
using PageId = int32_t;
inline constexpr PageId kNoPage = -1;

enum class KvDtype : int32_t {
  kInt4 = 0,  // 4-bit asymmetric codes + fp16 (scale, zero) per token per head
  kFp16 = 1,  // fp16 values, no metadata
};

enum class KvPart : int32_t { kKey = 0, kValue = 1 };

inline constexpr int64_t kPageAlignment = 16;       // every section and tile
inline constexpr int64_t kPoolAlignment = 256;      // the pool's base address
inline constexpr int64_t kDefaultTokensPerPage = 16;
inline constexpr int64_t kMaxTokensPerPage = 1024;
inline constexpr int64_t kMaxHeadDim = 1024;

constexpr int64_t AlignUp(int64_t x, int64_t a) { return (x + a - 1) / a * a; }

// What a pool stores: the model's per-rank KV shape and the page format.
struct KvGeometry {
  int64_t num_layers = 0;
  int64_t num_kv_heads = 0;  // kv heads held by this pool (per TP rank)
  int64_t head_dim = 0;
  int64_t tokens_per_page = kDefaultTokensPerPage;
  KvDtype dtype = KvDtype::kInt4;
};

// nullptr when g is usable, else a static description of the first problem.
constexpr const char* KvGeometryError(const KvGeometry& g) {
  if (g.num_layers < 1) return "num_layers must be >= 1";
  if (g.num_kv_heads < 1) return "num_kv_heads must be >= 1";
  if (g.head_dim < 1 || g.head_dim > kMaxHeadDim) return "head_dim must be in [1, 1024]";
  if (g.tokens_per_page < 1 || g.tokens_per_page > kMaxTokensPerPage)
    return "tokens_per_page must be in [1, 1024]";
  if (g.dtype != KvDtype::kInt4 && g.dtype != KvDtype::kFp16) return "unknown KV dtype";
  return nullptr;
}

struct PageLayout {
  int64_t num_layers = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t tokens_per_page = 0;
  KvDtype dtype = KvDtype::kInt4;

  int64_t row_bytes = 0;        // codes (or fp16 values) of one (token, head)
  int64_t meta_row_bytes = 0;   // (scale, zero) of one (token, head); 0 for fp16
  int64_t code_tile_bytes = 0;  // one head's rows in one page, padded to 16
  int64_t meta_tile_bytes = 0;  // one head's metadata in one page, padded to 16
  int64_t k_codes = 0;          // section offsets inside a layer block
  int64_t v_codes = 0;
  int64_t k_meta = 0;
  int64_t v_meta = 0;
  int64_t layer_bytes = 0;
  int64_t page_bytes = 0;

  static constexpr PageLayout Compute(const KvGeometry& g) {
    PageLayout l;
    l.num_layers = g.num_layers;
    l.num_kv_heads = g.num_kv_heads;
    l.head_dim = g.head_dim;
    l.tokens_per_page = g.tokens_per_page;
    l.dtype = g.dtype;
    const bool int4 = g.dtype == KvDtype::kInt4;
    l.row_bytes = int4 ? (g.head_dim + 1) / 2 : 2 * g.head_dim;
    l.meta_row_bytes = int4 ? 4 : 0;
    l.code_tile_bytes = AlignUp(g.tokens_per_page * l.row_bytes, kPageAlignment);
    l.meta_tile_bytes = AlignUp(g.tokens_per_page * l.meta_row_bytes, kPageAlignment);
    const int64_t code_section = g.num_kv_heads * l.code_tile_bytes;
    const int64_t meta_section = g.num_kv_heads * l.meta_tile_bytes;
    l.k_codes = 0;
    l.v_codes = code_section;
    l.k_meta = 2 * code_section;
    l.v_meta = 2 * code_section + meta_section;
    l.layer_bytes = 2 * (code_section + meta_section);
    l.page_bytes = g.num_layers * l.layer_bytes;
    return l;
  }

  constexpr KvGeometry geometry() const {
    return {num_layers, num_kv_heads, head_dim, tokens_per_page, dtype};
  }

  // Byte offsets relative to the start of a page. slot_in_page in [0, T).
  constexpr int64_t LayerOffset(int64_t layer) const { return layer * layer_bytes; }
  constexpr int64_t CodeOffset(int64_t layer, KvPart part, int64_t head, int64_t slot_in_page) const {
    return LayerOffset(layer) + (part == KvPart::kKey ? k_codes : v_codes) + head * code_tile_bytes +
           slot_in_page * row_bytes;
  }
  // Offset of the uint16 pair (scale bits, zero bits); meaningless for kFp16.
  constexpr int64_t MetaOffset(int64_t layer, KvPart part, int64_t head, int64_t slot_in_page) const {
    return LayerOffset(layer) + (part == KvPart::kKey ? k_meta : v_meta) + head * meta_tile_bytes +
           slot_in_page * meta_row_bytes;
  }

  // Bytes of cache per token position when pages are full (padding included).
  constexpr double bytes_per_token() const {
    return static_cast<double>(page_bytes) / static_cast<double>(tokens_per_page);
  }
};

}  // namespace atomserve::kvstore
