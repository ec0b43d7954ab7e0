// 4-bit asymmetric KV-cache quantization: one (scale, zero) pair per token
// per head, any head_dim (64 for SmolLM2; odd sizes such as 41 work too).
//
// Rule, for one head vector v[0 .. D) (fp32 arithmetic):
//   lo = min v, hi = max v                      (NaN ignored)
//   zero  = fp16_round_down(max(lo, -65504))    -> zero <= lo
//   scale = fp16_round_up(min((hi - zero) / 15, 65504))
//                                               -> zero + 15 * scale >= hi
//   code  = clamp(round_half_away((v - zero) / scale), 0, 15); 0 if scale == 0
//   v'    = float(code) * scale + zero          (the compiler may use an FMA)
// The directed roundings keep [lo, hi] inside the representable range, so
// |v - v'| <= scale / 2 plus fp32 rounding for every element (values must lie
// within the fp16 range, as K/V of fp16 models do). A constant vector whose
// value is an fp16 number gets scale 0, zero = that value, and is exact.
//
// Storage (row-major, outermost first), per (token, head):
//   codes  uint8  [tokens][heads][ceil(D / 2)]   element 2i in the LOW nibble
//                                                of byte i, 2i+1 in the HIGH;
//                                                for odd D the last high
//                                                nibble is 0
//   scales uint16 [tokens][heads]                fp16 bits
//   zeros  uint16 [tokens][heads]                fp16 bits
// fp16 metadata costs 4 bytes per (token, head) (D = 64: 36 bytes instead of
// 128 in fp16). Where K is quantized (before or after RoPE) is the model's
// choice; this module only sees vectors.
//
// Thread safety: pure functions; QuantizeKv/DequantizeKv split tokens over the
// pool (nullptr: calling thread).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "common/thread_pool.h"

namespace atomserve::quant {

// Bytes of packed codes for one (token, head).
inline int64_t KvPackedBytes(int64_t head_dim) { return (head_dim + 1) / 2; }

// One head vector x[head_dim] -> codes[KvPackedBytes(head_dim)], scale, zero.
void QuantizeKvHead(const float* x, int64_t head_dim, uint8_t* codes, uint16_t* scale_bits, uint16_t* zero_bits);
// The inverse: out[head_dim].
void DequantizeKvHead(const uint8_t* codes, int64_t head_dim, uint16_t scale_bits, uint16_t zero_bits, float* out);

// A quantized [tokens, heads, head_dim] block, storage as above.
struct QuantizedKv {
  int64_t tokens = 0;
  int64_t heads = 0;
  int64_t head_dim = 0;
  std::vector<uint8_t> codes;    // [tokens][heads][KvPackedBytes(head_dim)]
  std::vector<uint16_t> scales;  // [tokens][heads]
  std::vector<uint16_t> zeros;   // [tokens][heads]
};

// x[tokens, heads, head_dim] -> *out (resized). kInvalidArgument for negative
// sizes or head_dim == 0.
absl::Status QuantizeKv(const float* x, int64_t tokens, int64_t heads, int64_t head_dim, QuantizedKv* out,
                        ThreadPool* pool);
// q -> out[tokens, heads, head_dim]. kInvalidArgument when q's vectors do not
// match its sizes.
absl::Status DequantizeKv(const QuantizedKv& q, float* out, ThreadPool* pool);

}  // namespace atomserve::quant
