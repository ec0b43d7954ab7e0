#include "runtime/dequant.h"

#include <algorithm>
#include <vector>

#include "common/thread_pool.h"

namespace atomserve {
namespace {

constexpr GgmlTypeInfo kTypes[] = {
    {GgmlType::kF32, "F32", 1, 4},
    {GgmlType::kF16, "F16", 1, 2},
    {GgmlType::kBF16, "BF16", 1, 2},
    {GgmlType::kQ4_0, "Q4_0", 32, 18},
    {GgmlType::kQ4_1, "Q4_1", 32, 20},
    {GgmlType::kQ8_0, "Q8_0", 32, 34},
};

// ggml_type names by id; empty entries are ids ggml has retired.
constexpr const char* kTypeNames[] = {
    "F32",     "F16",    "Q4_0",    "Q4_1",  "",       "",      "Q5_0",   "Q5_1",
    "Q8_0",    "Q8_1",   "Q2_K",    "Q3_K",  "Q4_K",   "Q5_K",  "Q6_K",   "Q8_K",
    "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S",  "IQ4_XS",
    "I8",      "I16",    "I32",     "I64",   "F64",    "IQ1_M", "BF16",   "",
    "",        "",       "TQ1_0",   "TQ2_0", "",       "",      "",       "MXFP4",
};

inline uint16_t LoadU16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

void DecodeF16(const uint8_t* src, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = HalfToFloat(LoadU16(src + 2 * i));
}

void DecodeBF16(const uint8_t* src, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = BFloat16ToFloat(LoadU16(src + 2 * i));
}

void DecodeQ4_0(const uint8_t* src, int64_t blocks, float* dst) {
  for (int64_t b = 0; b < blocks; ++b, src += 18, dst += 32) {
    const float d = HalfToFloat(LoadU16(src));
    const uint8_t* q = src + 2;
    for (int j = 0; j < 16; ++j) {
      dst[j] = static_cast<float>((q[j] & 0x0f) - 8) * d;
      dst[j + 16] = static_cast<float>((q[j] >> 4) - 8) * d;
    }
  }
}

void DecodeQ4_1(const uint8_t* src, int64_t blocks, float* dst) {
  for (int64_t b = 0; b < blocks; ++b, src += 20, dst += 32) {
    const float d = HalfToFloat(LoadU16(src));
    const float m = HalfToFloat(LoadU16(src + 2));
    const uint8_t* q = src + 4;
    for (int j = 0; j < 16; ++j) {
      dst[j] = static_cast<float>(q[j] & 0x0f) * d + m;
      dst[j + 16] = static_cast<float>(q[j] >> 4) * d + m;
    }
  }
}

void DecodeQ8_0(const uint8_t* src, int64_t blocks, float* dst) {
  for (int64_t b = 0; b < blocks; ++b, src += 34, dst += 32) {
    const float d = HalfToFloat(LoadU16(src));
    const int8_t* q = reinterpret_cast<const int8_t*>(src + 2);
    for (int j = 0; j < 32; ++j) dst[j] = static_cast<float>(q[j]) * d;
  }
}

// Decodes `blocks` whole blocks; src/dst already point at the first one.
void DecodeBlocks(GgmlType type, const uint8_t* src, int64_t blocks, float* dst) {
  switch (type) {
    case GgmlType::kF32: std::memcpy(dst, src, static_cast<size_t>(blocks) * 4); break;
    case GgmlType::kF16: DecodeF16(src, blocks, dst); break;
    case GgmlType::kBF16: DecodeBF16(src, blocks, dst); break;
    case GgmlType::kQ4_0: DecodeQ4_0(src, blocks, dst); break;
    case GgmlType::kQ4_1: DecodeQ4_1(src, blocks, dst); break;
    case GgmlType::kQ8_0: DecodeQ8_0(src, blocks, dst); break;
  }
}

}  // namespace

const GgmlTypeInfo* FindGgmlType(uint32_t id) {
  for (const GgmlTypeInfo& t : kTypes)
    if (static_cast<uint32_t>(t.type) == id) return &t;
  return nullptr;
}

const char* GgmlTypeName(uint32_t id) {
  constexpr uint32_t n = sizeof(kTypeNames) / sizeof(kTypeNames[0]);
  if (id < n && kTypeNames[id][0] != '\0') return kTypeNames[id];
  return "unknown";
}

void Dequantize(GgmlType type, const uint8_t* src, int64_t numel, float* dst) {
  const GgmlTypeInfo* info = FindGgmlType(static_cast<uint32_t>(type));
  const int64_t blocks = numel / info->block_elems;
  // Chunks of ~64K weights keep the per-chunk overhead negligible while
  // spreading a large tensor over every core.
  const int64_t min_chunk = std::max<int64_t>(1, (int64_t{1} << 16) / info->block_elems);
  ThreadPool::Default().ParallelFor(
      blocks,
      [&](int64_t b, int64_t e) {
        DecodeBlocks(type, src + b * info->block_bytes, e - b, dst + b * info->block_elems);
      },
      min_chunk);
}

void UnpermuteRopeRows(float* data, int64_t rows, int64_t cols, int64_t n_head) {
  const int64_t head_dim = rows / n_head;
  const int64_t half = head_dim / 2;
  std::vector<float> head(static_cast<size_t>(head_dim * cols));
  for (int64_t h = 0; h < n_head; ++h) {
    float* base = data + h * head_dim * cols;
    std::copy(base, base + head_dim * cols, head.begin());
    // Stored row 2j + t holds HF row t * half + j.
    for (int64_t j = 0; j < half; ++j) {
      for (int64_t t = 0; t < 2; ++t) {
        const float* from = head.data() + (2 * j + t) * cols;
        std::copy(from, from + cols, base + (t * half + j) * cols);
      }
    }
  }
}

}  // namespace atomserve
