// Internals of the checkpoint loaders, shared by gguf.cc, safetensors.cc and
// checkpoint.cc and exposed for the loader tests. Not a stable interface.
//
// ParseGguf reads the container only (header, metadata, tensor directory) and
// bounds-checks everything against the mapping; LoadGguf interprets it.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/model_config.h"

namespace atomserve::loader_internal {

// GGUF metadata value type ids (gguf_type in ggml).
enum class GgufValueType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};

// One metadata value; which field holds it depends on `type`.
struct GgufValue {
  GgufValueType type = GgufValueType::kUint8;
  uint64_t u = 0;     // unsigned integers and bool
  int64_t i = 0;      // signed integers
  double f = 0;       // float32/float64
  std::string s;      // string
  GgufValueType elem_type = GgufValueType::kUint8;  // array element type
  std::vector<GgufValue> array;                     // array elements (may nest)
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> ne;  // dims as stored: fastest-varying first
  uint32_t type = 0;        // ggml type id; always one FindGgmlType knows
  uint64_t offset = 0;      // absolute byte offset of the data in the file
  uint64_t nbytes = 0;      // verified to lie inside the file
  int64_t numel = 0;
};

struct GgufFile {
  uint32_t version = 0;
  uint64_t alignment = 32;
  uint64_t data_offset = 0;  // start of the (aligned) tensor data section
  std::map<std::string, GgufValue> metadata;
  std::vector<GgufTensorInfo> tensors;
};

// Parses a GGUF v2/v3 image of `size` bytes. `name` prefixes error messages.
// kDataLoss: bad magic, truncation, lengths/counts/offsets that do not fit,
// duplicate keys or tensors, bad dims. kInvalidArgument: unsupported version
// or tensor type (naming the tensor and the type).
absl::StatusOr<GgufFile> ParseGguf(const uint8_t* data, uint64_t size, const std::string& name);

// The Hugging Face tensor names and shapes a Llama model with `config` has
// (lm_head.weight only when the embeddings are not tied). config.head_dim
// must be filled in.
std::map<std::string, std::vector<int64_t>> ExpectedTensorShapes(const ModelConfig& config);

// "[576, 49152]".
std::string ShapeToString(const std::vector<int64_t>& shape);

// kInvalidArgument "<source>: tensor '<name>' has shape [..], expected [..]"
// unless the shapes are equal.
absl::Status CheckTensorShape(const std::string& source, const std::string& name,
                              const std::vector<int64_t>& got, const std::vector<int64_t>& expected);

// Product of dims, or -1 when a dim is negative or the product overflows.
int64_t CheckedNumel(const std::vector<int64_t>& dims);

}  // namespace atomserve::loader_internal
