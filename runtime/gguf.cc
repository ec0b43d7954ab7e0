// GGUF v2/v3 loader: container parsing (ParseGguf) and the mapping of
// llama.cpp's names, metadata and layouts onto a Hugging Face-style
// Checkpoint (LoadGguf).
#include <algorithm>
#include <cmath>
#include <limits>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/mapped_file.h"
#include "common/status.h"
#include "kernels/rope.h"
#include "runtime/checkpoint.h"
#include "runtime/dequant.h"
#include "runtime/gguf_internal.h"

namespace atomserve {
namespace loader_internal {
namespace {

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" little-endian
// Arrays nest only one level in practice; the cap keeps a crafted file from
// exhausting the stack through recursion.
constexpr int kMaxArrayDepth = 8;
constexpr int kMaxDims = 4;
// Caps on what a file may make us allocate: an in-memory GgufValue is ~100
// bytes, so a crafted 1-byte-per-element array could otherwise cost 100x the
// file size. Real files stay far below (Llama-3: ~0.5M array elements, ~300
// tensors).
constexpr uint64_t kMaxArrayElements = uint64_t{1} << 22;
constexpr uint64_t kMaxTensors = uint64_t{1} << 20;

absl::Status DataLoss(const std::string& name, uint64_t offset, absl::string_view what) {
  return absl::DataLossError(absl::StrCat(name, ": offset ", offset, ": ", what));
}

// Smallest encoding of one value of `type`; bounds array counts by the
// bytes left so a huge count fails before anything is allocated.
uint64_t MinEncodedSize(GgufValueType type) {
  switch (type) {
    case GgufValueType::kUint8: case GgufValueType::kInt8: case GgufValueType::kBool: return 1;
    case GgufValueType::kUint16: case GgufValueType::kInt16: return 2;
    case GgufValueType::kUint32: case GgufValueType::kInt32: case GgufValueType::kFloat32: return 4;
    case GgufValueType::kUint64: case GgufValueType::kInt64: case GgufValueType::kFloat64: return 8;
    case GgufValueType::kString: return 8;
    case GgufValueType::kArray: return 12;
  }
  return 1;
}

bool KnownValueType(uint32_t t) { return t <= static_cast<uint32_t>(GgufValueType::kFloat64); }

class Parser {
 public:
  Parser(const uint8_t* data, uint64_t size, const std::string& name) : r_(data, size, name) {}

  absl::StatusOr<GgufFile> Parse();

 private:
  absl::StatusOr<std::string> ReadString();
  absl::StatusOr<GgufValue> ReadValue(GgufValueType type, int depth);
  absl::Status ReadScalar(GgufValue* v);
  absl::Status ReadArray(GgufValue* v, int depth);
  absl::Status ReadMetadata(uint64_t count, GgufFile* f);
  absl::Status ReadTensorInfo(GgufTensorInfo* t);
  absl::Status SetAlignment(GgufFile* f);
  absl::Status PlaceTensors(GgufFile* f);

  const std::string& name() const { return r_.name(); }

  ByteReader r_;
  uint64_t array_elements_ = 0;  // across all metadata arrays
};

absl::StatusOr<std::string> Parser::ReadString() {
  const uint64_t at = r_.offset();
  ATOMSERVE_ASSIGN_OR_RETURN(uint64_t len, r_.Read<uint64_t>());
  if (len > r_.remaining())
    return DataLoss(name(), at, absl::StrCat("string length ", len, " exceeds the ", r_.remaining(),
                                             " bytes left"));
  ATOMSERVE_ASSIGN_OR_RETURN(std::string_view bytes, r_.ReadBytes(len));
  return std::string(bytes);
}

absl::Status Parser::ReadScalar(GgufValue* v) {
  switch (v->type) {
#define ATOMSERVE_GGUF_READ_(enumerator, ctype, field)          \
  case GgufValueType::enumerator: {                             \
    ATOMSERVE_ASSIGN_OR_RETURN(ctype x, r_.Read<ctype>());      \
    v->field = x;                                               \
    return absl::OkStatus();                                    \
  }
    ATOMSERVE_GGUF_READ_(kUint8, uint8_t, u)
    ATOMSERVE_GGUF_READ_(kUint16, uint16_t, u)
    ATOMSERVE_GGUF_READ_(kUint32, uint32_t, u)
    ATOMSERVE_GGUF_READ_(kUint64, uint64_t, u)
    ATOMSERVE_GGUF_READ_(kBool, uint8_t, u)
    ATOMSERVE_GGUF_READ_(kInt8, int8_t, i)
    ATOMSERVE_GGUF_READ_(kInt16, int16_t, i)
    ATOMSERVE_GGUF_READ_(kInt32, int32_t, i)
    ATOMSERVE_GGUF_READ_(kInt64, int64_t, i)
    ATOMSERVE_GGUF_READ_(kFloat32, float, f)
    ATOMSERVE_GGUF_READ_(kFloat64, double, f)
#undef ATOMSERVE_GGUF_READ_
    case GgufValueType::kString: {
      ATOMSERVE_ASSIGN_OR_RETURN(v->s, ReadString());
      return absl::OkStatus();
    }
    case GgufValueType::kArray: break;
  }
  return absl::InternalError("ReadScalar called on an array");
}

absl::Status Parser::ReadArray(GgufValue* v, int depth) {
  const uint64_t at = r_.offset();
  if (depth >= kMaxArrayDepth)
    return DataLoss(name(), at, absl::StrCat("arrays nested deeper than ", kMaxArrayDepth));
  ATOMSERVE_ASSIGN_OR_RETURN(uint32_t elem, r_.Read<uint32_t>());
  if (!KnownValueType(elem)) return DataLoss(name(), at, absl::StrCat("unknown array element type ", elem));
  ATOMSERVE_ASSIGN_OR_RETURN(uint64_t count, r_.Read<uint64_t>());
  v->elem_type = static_cast<GgufValueType>(elem);
  if (count > r_.remaining() / MinEncodedSize(v->elem_type))
    return DataLoss(name(), at, absl::StrCat("array count ", count, " exceeds the ", r_.remaining(),
                                             " bytes left"));
  array_elements_ += count;
  if (array_elements_ > kMaxArrayElements)
    return DataLoss(name(), at, absl::StrCat("metadata arrays hold more than ", kMaxArrayElements,
                                             " elements in total"));
  v->array.reserve(count);
  for (uint64_t k = 0; k < count; ++k) {
    ATOMSERVE_ASSIGN_OR_RETURN(GgufValue e, ReadValue(v->elem_type, depth + 1));
    v->array.push_back(std::move(e));
  }
  return absl::OkStatus();
}

absl::StatusOr<GgufValue> Parser::ReadValue(GgufValueType type, int depth) {
  GgufValue v;
  v.type = type;
  if (type == GgufValueType::kArray) {
    ATOMSERVE_RETURN_IF_ERROR(ReadArray(&v, depth));
  } else {
    ATOMSERVE_RETURN_IF_ERROR(ReadScalar(&v));
  }
  return v;
}

absl::Status Parser::ReadMetadata(uint64_t count, GgufFile* f) {
  for (uint64_t k = 0; k < count; ++k) {
    const uint64_t at = r_.offset();
    ATOMSERVE_ASSIGN_OR_RETURN(std::string key, ReadString());
    ATOMSERVE_ASSIGN_OR_RETURN(uint32_t type, r_.Read<uint32_t>());
    if (!KnownValueType(type))
      return DataLoss(name(), at, absl::StrCat("key '", key, "' has unknown value type ", type));
    ATOMSERVE_ASSIGN_OR_RETURN(GgufValue v, ReadValue(static_cast<GgufValueType>(type), 0));
    if (!f->metadata.emplace(key, std::move(v)).second)
      return DataLoss(name(), at, absl::StrCat("duplicate metadata key '", key, "'"));
  }
  return absl::OkStatus();
}

absl::Status Parser::ReadTensorInfo(GgufTensorInfo* t) {
  const uint64_t at = r_.offset();
  ATOMSERVE_ASSIGN_OR_RETURN(t->name, ReadString());
  ATOMSERVE_ASSIGN_OR_RETURN(uint32_t n_dims, r_.Read<uint32_t>());
  if (n_dims < 1 || n_dims > kMaxDims)
    return DataLoss(name(), at, absl::StrCat("tensor '", t->name, "' has n_dims ", n_dims,
                                             " (must be 1..", kMaxDims, ")"));
  for (uint32_t d = 0; d < n_dims; ++d) {
    ATOMSERVE_ASSIGN_OR_RETURN(uint64_t dim, r_.Read<uint64_t>());
    if (dim == 0 || dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      return DataLoss(name(), at, absl::StrCat("tensor '", t->name, "' has dimension ", dim));
    t->ne.push_back(static_cast<int64_t>(dim));
  }
  t->numel = CheckedNumel(t->ne);
  if (t->numel < 0)
    return DataLoss(name(), at, absl::StrCat("tensor '", t->name, "': element count overflows"));
  ATOMSERVE_ASSIGN_OR_RETURN(t->type, r_.Read<uint32_t>());
  const GgmlTypeInfo* info = FindGgmlType(t->type);
  if (info == nullptr)
    return absl::InvalidArgumentError(absl::StrCat(name(), ": tensor '", t->name, "' has unsupported type ",
                                                   GgmlTypeName(t->type), " (id ", t->type,
                                                   "); supported: F32, F16, BF16, Q4_0, Q4_1, Q8_0"));
  if (t->ne[0] % info->block_elems != 0)
    return DataLoss(name(), at, absl::StrCat("tensor '", t->name, "': row length ", t->ne[0],
                                             " is not a multiple of the ", info->name, " block"));
  // The byte size can overflow even when numel does not (F32 is 4x numel).
  int64_t nbytes = 0;
  if (__builtin_mul_overflow(t->numel / info->block_elems, info->block_bytes, &nbytes))
    return DataLoss(name(), at, absl::StrCat("tensor '", t->name, "': byte size overflows"));
  t->nbytes = static_cast<uint64_t>(nbytes);
  ATOMSERVE_ASSIGN_OR_RETURN(t->offset, r_.Read<uint64_t>());
  return absl::OkStatus();
}

absl::Status Parser::SetAlignment(GgufFile* f) {
  auto it = f->metadata.find("general.alignment");
  if (it == f->metadata.end()) return absl::OkStatus();
  const GgufValue& v = it->second;
  const bool is_uint = v.type == GgufValueType::kUint32 || v.type == GgufValueType::kUint64 ||
                       v.type == GgufValueType::kUint16 || v.type == GgufValueType::kUint8;
  if (!is_uint || v.u == 0 || (v.u & (v.u - 1)) != 0 || v.u > (uint64_t{1} << 30))
    return absl::DataLossError(absl::StrCat(name(), ": general.alignment must be a power of two"));
  f->alignment = v.u;
  return absl::OkStatus();
}

// Turns relative offsets into absolute ones and checks each tensor's bytes lie
// inside the file.
absl::Status Parser::PlaceTensors(GgufFile* f) {
  const uint64_t size = r_.size();
  const uint64_t pad = (f->alignment - r_.offset() % f->alignment) % f->alignment;
  if (pad > r_.remaining())
    return DataLoss(name(), r_.offset(), "truncated before the tensor data section");
  f->data_offset = r_.offset() + pad;
  const uint64_t data_size = size - f->data_offset;
  for (GgufTensorInfo& t : f->tensors) {
    if (t.offset % f->alignment != 0)
      return absl::DataLossError(absl::StrCat(name(), ": tensor '", t.name, "' offset ", t.offset,
                                              " is not aligned to ", f->alignment));
    if (t.offset > data_size || t.nbytes > data_size - t.offset)
      return absl::DataLossError(absl::StrCat(
          name(), ": tensor '", t.name, "' data [", t.offset, ", +", t.nbytes,
          ") lies outside the data section (", data_size, " bytes; file truncated?)"));
    t.offset += f->data_offset;
  }
  return absl::OkStatus();
}

absl::StatusOr<GgufFile> Parser::Parse() {
  GgufFile f;
  ATOMSERVE_ASSIGN_OR_RETURN(uint32_t magic, r_.Read<uint32_t>());
  if (magic != kGgufMagic) return absl::DataLossError(absl::StrCat(name(), ": not a GGUF file (bad magic)"));
  ATOMSERVE_ASSIGN_OR_RETURN(f.version, r_.Read<uint32_t>());
  if (f.version != 2 && f.version != 3)
    return absl::InvalidArgumentError(absl::StrCat(
        name(), ": GGUF version ", f.version, " is not supported (2 and 3 little-endian are)"));
  ATOMSERVE_ASSIGN_OR_RETURN(uint64_t n_tensors, r_.Read<uint64_t>());
  ATOMSERVE_ASSIGN_OR_RETURN(uint64_t n_kv, r_.Read<uint64_t>());
  // A key-value pair takes >= 13 bytes, a tensor info >= 32.
  if (n_kv > r_.remaining() / 13 || n_tensors > r_.remaining() / 32 || n_tensors > kMaxTensors)
    return DataLoss(name(), 8, absl::StrCat("counts (", n_tensors, " tensors, ", n_kv,
                                            " metadata keys) exceed the file size"));
  ATOMSERVE_RETURN_IF_ERROR(ReadMetadata(n_kv, &f));
  ATOMSERVE_RETURN_IF_ERROR(SetAlignment(&f));
  std::set<std::string> seen;
  f.tensors.resize(n_tensors);
  for (GgufTensorInfo& t : f.tensors) {
    ATOMSERVE_RETURN_IF_ERROR(ReadTensorInfo(&t));
    if (!seen.insert(t.name).second)
      return absl::DataLossError(absl::StrCat(name(), ": duplicate tensor '", t.name, "'"));
  }
  ATOMSERVE_RETURN_IF_ERROR(PlaceTensors(&f));
  return f;
}

}  // namespace

absl::StatusOr<GgufFile> ParseGguf(const uint8_t* data, uint64_t size, const std::string& name) {
  return Parser(data, size, name).Parse();
}

}  // namespace loader_internal

namespace {

using loader_internal::GgufFile;
using loader_internal::GgufTensorInfo;
using loader_internal::GgufValue;
using loader_internal::GgufValueType;
using Metadata = std::map<std::string, GgufValue>;

absl::Status BadKey(const std::string& path, const std::string& key, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": metadata key '", key, "' ", what));
}

const GgufValue* Find(const Metadata& md, const std::string& key) {
  auto it = md.find(key);
  return it == md.end() ? nullptr : &it->second;
}

bool IsUnsigned(GgufValueType t) {
  return t == GgufValueType::kUint8 || t == GgufValueType::kUint16 || t == GgufValueType::kUint32 ||
         t == GgufValueType::kUint64;
}

bool IsSigned(GgufValueType t) {
  return t == GgufValueType::kInt8 || t == GgufValueType::kInt16 || t == GgufValueType::kInt32 ||
         t == GgufValueType::kInt64;
}

// Any integer type whose value fits int64.
absl::StatusOr<int64_t> AsInt(const GgufValue& v, const std::string& path, const std::string& key) {
  if (IsSigned(v.type)) return v.i;
  if (IsUnsigned(v.type) && v.u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    return static_cast<int64_t>(v.u);
  return BadKey(path, key, "must be an integer");
}

absl::StatusOr<int64_t> GetInt(const Metadata& md, const std::string& key, const std::string& path) {
  const GgufValue* v = Find(md, key);
  if (v == nullptr) return BadKey(path, key, "is missing");
  return AsInt(*v, path, key);
}

absl::StatusOr<int64_t> GetIntOr(const Metadata& md, const std::string& key, int64_t def,
                                 const std::string& path) {
  return Find(md, key) == nullptr ? def : GetInt(md, key, path);
}

absl::StatusOr<float> GetFloatOr(const Metadata& md, const std::string& key, float def,
                                 const std::string& path) {
  const GgufValue* v = Find(md, key);
  if (v == nullptr) return def;
  if (v->type == GgufValueType::kFloat32 || v->type == GgufValueType::kFloat64)
    return static_cast<float>(v->f);
  ATOMSERVE_ASSIGN_OR_RETURN(int64_t i, AsInt(*v, path, key));
  return static_cast<float>(i);
}

absl::StatusOr<std::string> GetStringOr(const Metadata& md, const std::string& key,
                                        const std::string& def, const std::string& path) {
  const GgufValue* v = Find(md, key);
  if (v == nullptr) return def;
  if (v->type != GgufValueType::kString) return BadKey(path, key, "must be a string");
  return v->s;
}

absl::StatusOr<bool> GetBoolOr(const Metadata& md, const std::string& key, bool def,
                               const std::string& path) {
  const GgufValue* v = Find(md, key);
  if (v == nullptr) return def;
  if (v->type != GgufValueType::kBool) return BadKey(path, key, "must be a bool");
  return v->u != 0;
}

// The array under `key` with elements of `elem` (nullptr when absent).
absl::StatusOr<const GgufValue*> GetArray(const Metadata& md, const std::string& key,
                                          bool (*elem_ok)(GgufValueType), const std::string& path) {
  const GgufValue* v = Find(md, key);
  if (v == nullptr) return nullptr;
  if (v->type != GgufValueType::kArray || !elem_ok(v->elem_type))
    return BadKey(path, key, "has the wrong type");
  return v;
}

bool IsStringType(GgufValueType t) { return t == GgufValueType::kString; }
bool IsIntType(GgufValueType t) { return IsSigned(t) || IsUnsigned(t); }

// ---------------------------------------------------------------- tokenizer

absl::StatusOr<std::string> PreTokenizerFamily(const Metadata& md, const std::string& path) {
  ATOMSERVE_ASSIGN_OR_RETURN(std::string pre, GetStringOr(md, "tokenizer.ggml.pre", "default", path));
  if (pre == "smollm") return std::string("smollm");
  if (pre == "llama-bpe" || pre == "llama3") return std::string("llama3");
  if (pre == "gpt2" || pre == "default") return std::string("gpt2");
  return BadKey(path, "tokenizer.ggml.pre", absl::StrCat("'", pre, "' is not supported (smollm, llama-bpe, gpt2)"));
}

absl::Status ReadTokens(const Metadata& md, const std::string& path, TokenizerSpec* spec) {
  ATOMSERVE_ASSIGN_OR_RETURN(const GgufValue* tokens, GetArray(md, "tokenizer.ggml.tokens", IsStringType, path));
  if (tokens == nullptr || tokens->array.empty()) return BadKey(path, "tokenizer.ggml.tokens", "is missing or empty");
  if (tokens->array.size() > (size_t{1} << 24)) return BadKey(path, "tokenizer.ggml.tokens", "is too large");
  spec->tokens.reserve(tokens->array.size());
  for (const GgufValue& t : tokens->array) spec->tokens.push_back(t.s);
  spec->token_types.assign(spec->tokens.size(), TokenType::kNormal);
  ATOMSERVE_ASSIGN_OR_RETURN(const GgufValue* types, GetArray(md, "tokenizer.ggml.token_type", IsIntType, path));
  if (types != nullptr) {
    if (types->array.size() != spec->tokens.size())
      return BadKey(path, "tokenizer.ggml.token_type", "length differs from tokenizer.ggml.tokens");
    for (size_t k = 0; k < types->array.size(); ++k) {
      ATOMSERVE_ASSIGN_OR_RETURN(int64_t t, AsInt(types->array[k], path, "tokenizer.ggml.token_type"));
      if (t < 0 || t > static_cast<int64_t>(TokenType::kByte))
        return BadKey(path, "tokenizer.ggml.token_type", absl::StrCat("has invalid type ", t, " at ", k));
      // 0 is llama.cpp's "undefined"; treat it as an ordinary token.
      spec->token_types[k] = t == 0 ? TokenType::kNormal : static_cast<TokenType>(t);
    }
  }
  ATOMSERVE_ASSIGN_OR_RETURN(const GgufValue* merges, GetArray(md, "tokenizer.ggml.merges", IsStringType, path));
  if (merges != nullptr) {
    spec->merges.reserve(merges->array.size());
    for (const GgufValue& m : merges->array) spec->merges.push_back(m.s);
  }
  return absl::OkStatus();
}

absl::Status ReadSpecialIds(const Metadata& md, const std::string& path, TokenizerSpec* spec) {
  const int64_t n = static_cast<int64_t>(spec->tokens.size());
  for (auto [key, out] : {std::pair{"tokenizer.ggml.bos_token_id", &spec->bos_id},
                          std::pair{"tokenizer.ggml.eos_token_id", &spec->eos_id},
                          std::pair{"tokenizer.ggml.unknown_token_id", &spec->unk_id},
                          std::pair{"tokenizer.ggml.padding_token_id", &spec->pad_id}}) {
    ATOMSERVE_ASSIGN_OR_RETURN(int64_t id, GetIntOr(md, key, -1, path));
    if (id < -1 || id >= n) return BadKey(path, key, absl::StrCat("=", id, " is outside the vocabulary of ", n));
    *out = static_cast<int32_t>(id);
  }
  for (const char* t : {"<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>"}) {
    auto it = std::find(spec->tokens.begin(), spec->tokens.end(), t);
    const int32_t id = static_cast<int32_t>(it - spec->tokens.begin());
    if (it != spec->tokens.end() && id != spec->eos_id) spec->extra_eos_ids.push_back(id);
  }
  return absl::OkStatus();
}

absl::StatusOr<TokenizerSpec> TokenizerFromGguf(const Metadata& md, const std::string& path) {
  TokenizerSpec spec;
  ATOMSERVE_ASSIGN_OR_RETURN(std::string model, GetStringOr(md, "tokenizer.ggml.model", "", path));
  if (model != "gpt2")
    return BadKey(path, "tokenizer.ggml.model",
                  absl::StrCat("'", model, "' is not supported (only byte-level BPE, 'gpt2')"));
  spec.model = model;
  ATOMSERVE_ASSIGN_OR_RETURN(spec.pre, PreTokenizerFamily(md, path));
  ATOMSERVE_RETURN_IF_ERROR(ReadTokens(md, path, &spec));
  ATOMSERVE_RETURN_IF_ERROR(ReadSpecialIds(md, path, &spec));
  ATOMSERVE_ASSIGN_OR_RETURN(spec.add_bos, GetBoolOr(md, "tokenizer.ggml.add_bos_token", false, path));
  ATOMSERVE_ASSIGN_OR_RETURN(spec.chat_template, GetStringOr(md, "tokenizer.chat_template", "", path));
  return spec;
}

// ---------------------------------------------------------------- config

absl::Status ReadRopeScaling(const Metadata& md, const std::string& path, ModelConfig* c) {
  ATOMSERVE_ASSIGN_OR_RETURN(c->rope_scaling.original_max_position,
                             GetIntOr(md, "llama.rope.scaling.original_context_length",
                                      c->rope_scaling.original_max_position, path));
  ATOMSERVE_ASSIGN_OR_RETURN(std::string type, GetStringOr(md, "llama.rope.scaling.type", "none", path));
  if (type == "none") return absl::OkStatus();
  if (type != "linear")
    return BadKey(path, "llama.rope.scaling.type", absl::StrCat("'", type, "' is not supported (none, linear)"));
  c->rope_scaling.type = RopeScalingType::kLinear;
  ATOMSERVE_ASSIGN_OR_RETURN(c->rope_scaling.factor, GetFloatOr(md, "llama.rope.scaling.factor", 1.0f, path));
  return absl::OkStatus();
}

// head_dim: attention.key_length when given, else rope.dimension_count (they
// agree for Llama; partial rotary embeddings are not supported).
absl::Status ReadHeadDim(const Metadata& md, const std::string& path, ModelConfig* c) {
  ATOMSERVE_ASSIGN_OR_RETURN(int64_t key_len, GetIntOr(md, "llama.attention.key_length", 0, path));
  ATOMSERVE_ASSIGN_OR_RETURN(int64_t rot, GetIntOr(md, "llama.rope.dimension_count", 0, path));
  if (key_len != 0 && rot != 0 && key_len != rot)
    return BadKey(path, "llama.rope.dimension_count",
                  absl::StrCat("=", rot, " differs from llama.attention.key_length=", key_len,
                               " (partial RoPE is not supported)"));
  c->head_dim = key_len != 0 ? key_len : rot;
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> ConfigFromGguf(const GgufFile& f, int64_t n_tokens, const std::string& path) {
  const Metadata& md = f.metadata;
  ModelConfig c;
  ATOMSERVE_ASSIGN_OR_RETURN(c.name, GetStringOr(md, "general.name", "", path));
  ATOMSERVE_ASSIGN_OR_RETURN(c.num_layers, GetInt(md, "llama.block_count", path));
  ATOMSERVE_ASSIGN_OR_RETURN(c.hidden_size, GetInt(md, "llama.embedding_length", path));
  ATOMSERVE_ASSIGN_OR_RETURN(c.intermediate_size, GetInt(md, "llama.feed_forward_length", path));
  ATOMSERVE_ASSIGN_OR_RETURN(c.num_heads, GetInt(md, "llama.attention.head_count", path));
  ATOMSERVE_ASSIGN_OR_RETURN(c.num_kv_heads, GetIntOr(md, "llama.attention.head_count_kv", c.num_heads, path));
  ATOMSERVE_ASSIGN_OR_RETURN(c.max_position, GetIntOr(md, "llama.context_length", c.max_position, path));
  ATOMSERVE_ASSIGN_OR_RETURN(c.vocab_size, GetIntOr(md, "llama.vocab_size", n_tokens, path));
  ATOMSERVE_ASSIGN_OR_RETURN(c.rope_theta, GetFloatOr(md, "llama.rope.freq_base", 10000.0f, path));
  ATOMSERVE_ASSIGN_OR_RETURN(c.rms_norm_eps,
                             GetFloatOr(md, "llama.attention.layer_norm_rms_epsilon", c.rms_norm_eps, path));
  ATOMSERVE_RETURN_IF_ERROR(ReadHeadDim(md, path, &c));
  ATOMSERVE_RETURN_IF_ERROR(ReadRopeScaling(md, path, &c));
  c.tie_word_embeddings = std::none_of(f.tensors.begin(), f.tensors.end(),
                                       [](const GgufTensorInfo& t) { return t.name == "output.weight"; });
  ATOMSERVE_RETURN_IF_ERROR(c.Validate(path));
  if (c.head_dim == 0) c.head_dim = c.hidden_size / c.num_heads;
  if (n_tokens > c.vocab_size)
    return BadKey(path, "llama.vocab_size",
                  absl::StrCat("=", c.vocab_size, " is smaller than the tokenizer's ", n_tokens, " tokens"));
  return c;
}

// ---------------------------------------------------------------- tensors

// llama.cpp tensor name -> HF name; "" when the name is not a Llama weight.
std::string HfName(const std::string& name) {
  if (name == "token_embd.weight") return "model.embed_tokens.weight";
  if (name == "output_norm.weight") return "model.norm.weight";
  if (name == "output.weight") return "lm_head.weight";
  if (!absl::StartsWith(name, "blk.")) return "";
  const size_t dot = name.find('.', 4);
  int layer = 0;
  if (dot == std::string::npos || dot - 4 > 6 || !absl::SimpleAtoi(name.substr(4, dot - 4), &layer) ||
      layer < 0)
    return "";
  static const std::pair<const char*, const char*> kParts[] = {
      {"attn_q.weight", "self_attn.q_proj.weight"},   {"attn_k.weight", "self_attn.k_proj.weight"},
      {"attn_v.weight", "self_attn.v_proj.weight"},   {"attn_output.weight", "self_attn.o_proj.weight"},
      {"ffn_gate.weight", "mlp.gate_proj.weight"},    {"ffn_up.weight", "mlp.up_proj.weight"},
      {"ffn_down.weight", "mlp.down_proj.weight"},    {"attn_norm.weight", "input_layernorm.weight"},
      {"ffn_norm.weight", "post_attention_layernorm.weight"},
  };
  const std::string part = name.substr(dot + 1);
  for (const auto& [gguf, hf] : kParts)
    if (part == gguf) return absl::StrCat("model.layers.", layer, ".", hf);
  return "";
}

std::vector<int64_t> RowMajorShape(const GgufTensorInfo& t) {
  return std::vector<int64_t>(t.ne.rbegin(), t.ne.rend());
}

std::vector<float> DecodeTensor(const MappedFile& file, const GgufTensorInfo& t) {
  std::vector<float> out(static_cast<size_t>(t.numel));
  Dequantize(FindGgmlType(t.type)->type, file.data() + t.offset, t.numel, out.data());
  return out;
}

// llama.cpp stores Llama-3.1 style RoPE scaling as per-frequency divisors in
// rope_freqs.weight. The model code only knows the parametric form, so accept
// the tensor when it matches Llama-3 scaling with the standard low/high
// frequency factors (1, 4) and the original context length from
// rope.scaling.original_context_length (default 8192); reject anything else
// rather than silently ignore it.
absl::Status ApplyRopeFreqs(const MappedFile& file, const GgufTensorInfo& t, const std::string& path,
                            ModelConfig* c) {
  const int64_t half = c->head_dim / 2;
  if (t.ne.size() != 1 || t.ne[0] != half)
    return absl::InvalidArgumentError(absl::StrCat(path, ": tensor 'rope_freqs.weight' has shape ",
                                                   loader_internal::ShapeToString(RowMajorShape(t)),
                                                   ", expected [", half, "]"));
  if (c->rope_scaling.type != RopeScalingType::kNone)
    return BadKey(path, "llama.rope.scaling.type", "conflicts with the rope_freqs.weight tensor");
  const std::vector<float> divisors = DecodeTensor(file, t);
  RopeParams p;
  p.head_dim = c->head_dim;
  p.theta = c->rope_theta;
  const RopeTable plain = RopeTable::Build(p);
  p.scaling_type = 2;
  p.factor = *std::max_element(divisors.begin(), divisors.end());
  p.original_max_position = c->rope_scaling.original_max_position;
  const RopeTable scaled = RopeTable::Build(p);
  for (int64_t k = 0; k < half; ++k) {
    const float want = plain.inv_freq[k] / scaled.inv_freq[k];
    if (!(std::fabs(divisors[k] - want) <= 1e-3f * want))
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": rope_freqs.weight does not match Llama-3 RoPE scaling (entry ", k, " is ",
          divisors[k], ", expected ", want, "); per-frequency RoPE factors are not supported"));
  }
  c->rope_scaling.type = RopeScalingType::kLlama3;
  c->rope_scaling.factor = p.factor;
  c->rope_scaling.low_freq_factor = p.low_freq_factor;
  c->rope_scaling.high_freq_factor = p.high_freq_factor;
  c->rope_scaling.original_max_position = p.original_max_position;
  return absl::OkStatus();
}

struct PlannedTensor {
  const GgufTensorInfo* info;
  std::string hf_name;
  std::vector<int64_t> shape;
};

// Maps every tensor to its HF name and checks names and shapes against the
// config before any dequantization work.
absl::StatusOr<std::vector<PlannedTensor>> PlanTensors(const GgufFile& f, const MappedFile& file,
                                                       const std::string& path, ModelConfig* c) {
  std::map<std::string, std::vector<int64_t>> expected = loader_internal::ExpectedTensorShapes(*c);
  std::vector<PlannedTensor> plan;
  for (const GgufTensorInfo& t : f.tensors) {
    if (t.name == "rope_freqs.weight") {
      ATOMSERVE_RETURN_IF_ERROR(ApplyRopeFreqs(file, t, path, c));
      continue;
    }
    PlannedTensor p{&t, HfName(t.name), RowMajorShape(t)};
    auto it = expected.find(p.hf_name);
    if (p.hf_name.empty() || it == expected.end())
      return absl::InvalidArgumentError(absl::StrCat(path, ": unexpected tensor '", t.name, "' for a ",
                                                     c->num_layers, "-layer llama model"));
    ATOMSERVE_RETURN_IF_ERROR(loader_internal::CheckTensorShape(path, t.name, p.shape, it->second));
    expected.erase(it);
    plan.push_back(std::move(p));
  }
  if (!expected.empty())
    return absl::NotFoundError(absl::StrCat(path, ": missing tensor '", expected.begin()->first, "'"));
  return plan;
}

absl::Status LoadTensors(const MappedFile& file, const std::vector<PlannedTensor>& plan,
                         const ModelConfig& c, const ProgressFn& progress,
                         std::map<std::string, HostTensor>* out) {
  uint64_t total = 0, done = 0;
  for (const PlannedTensor& p : plan) total += p.info->nbytes;
  for (const PlannedTensor& p : plan) {
    HostTensor t;
    t.shape = p.shape;
    t.data = DecodeTensor(file, *p.info);
    if (absl::EndsWith(p.hf_name, "q_proj.weight"))
      UnpermuteRopeRows(t.data.data(), t.shape[0], t.shape[1], c.num_heads);
    else if (absl::EndsWith(p.hf_name, "k_proj.weight"))
      UnpermuteRopeRows(t.data.data(), t.shape[0], t.shape[1], c.num_kv_heads);
    (*out)[p.hf_name] = std::move(t);
    done += p.info->nbytes;
    if (progress) progress(done, total, p.hf_name);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Checkpoint> LoadGguf(const std::string& path, const ProgressFn& progress) {
  ATOMSERVE_ASSIGN_OR_RETURN(MappedFile file, MappedFile::Open(path));
  ATOMSERVE_ASSIGN_OR_RETURN(GgufFile f, loader_internal::ParseGguf(file.data(), file.size(), path));
  ATOMSERVE_ASSIGN_OR_RETURN(std::string arch, GetStringOr(f.metadata, "general.architecture", "", path));
  if (arch != "llama")
    return BadKey(path, "general.architecture", absl::StrCat("'", arch, "' is not supported (llama only)"));
  Checkpoint ckpt;
  ckpt.path = path;
  ckpt.format = "gguf";
  ATOMSERVE_ASSIGN_OR_RETURN(ckpt.tokenizer, TokenizerFromGguf(f.metadata, path));
  ATOMSERVE_ASSIGN_OR_RETURN(ckpt.config,
                             ConfigFromGguf(f, static_cast<int64_t>(ckpt.tokenizer.tokens.size()), path));
  ATOMSERVE_ASSIGN_OR_RETURN(std::vector<PlannedTensor> plan, PlanTensors(f, file, path, &ckpt.config));
  ATOMSERVE_RETURN_IF_ERROR(LoadTensors(file, plan, ckpt.config, progress, &ckpt.tensors));
  return ckpt;
}

}  // namespace atomserve
