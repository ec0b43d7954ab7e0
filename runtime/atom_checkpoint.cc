#include "runtime/atom_checkpoint.h"

#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/mapped_file.h"
#include "common/status.h"

namespace atomserve {
namespace {

using nlohmann::json;

constexpr uint64_t kAlign = 64;
constexpr uint64_t kFnvPrime = 0x100000001b3ull;
constexpr uint64_t kMaxHeaderBytes = uint64_t{1} << 30;

uint64_t AlignUp(uint64_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

std::string Hex(uint64_t v) { return absl::StrFormat("%016x", v); }

// ── Writing ────────────────────────────────────────────────────────────────

struct OutTensor {
  std::string name, dtype;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  uint64_t bytes = 0;
  uint64_t offset = 0;
};

class PayloadBuilder {
 public:
  template <typename T>
  void Add(const std::string& name, const char* dtype, std::vector<int64_t> shape, const std::vector<T>& v) {
    tensors_.push_back({name, dtype, std::move(shape), v.data(), v.size() * sizeof(T)});
  }
  void AddStrings(const std::string& name, const std::vector<std::string>& strings) {
    std::string& blob = blobs_.emplace_back();
    for (const std::string& s : strings) {
      const uint32_t len = static_cast<uint32_t>(s.size());
      blob.append(reinterpret_cast<const char*>(&len), sizeof(len));
      blob.append(s);
    }
    tensors_.push_back({name, "str", {static_cast<int64_t>(strings.size())}, blob.data(), blob.size()});
  }
  void AddMatrix(const std::string& name, const quant::W4A4Matrix& m) {
    const int64_t rows = m.rows;
    Add(name + ".packed", "u8", {rows, m.layout.packed_row_bytes()}, m.packed);
    Add(name + ".scales", "u16", {rows, m.layout.groups()}, m.scales);
    if (m.layout.keeper == 0) return;
    Add(name + ".keeper_codes", "i8", {rows, m.layout.keeper}, m.keeper_codes);
    Add(name + ".keeper_scales", "u16", {rows}, m.keeper_scales);
  }
  // Assigns aligned offsets; returns the payload size.
  uint64_t Layout() {
    uint64_t off = 0;
    for (OutTensor& t : tensors_) {
      t.offset = AlignUp(off);
      off = t.offset + t.bytes;
    }
    return off;
  }
  const std::vector<OutTensor>& tensors() const { return tensors_; }

 private:
  std::vector<OutTensor> tensors_;
  std::deque<std::string> blobs_;  // stable addresses
};

const char* RopeTypeName(RopeScalingType t) {
  switch (t) {
    case RopeScalingType::kNone: return "none";
    case RopeScalingType::kLinear: return "linear";
    case RopeScalingType::kLlama3: return "llama3";
  }
  return "none";
}

json RecipeJson(const quant::QuantRecipe& r) {
  return {{"group_size", r.group_size}, {"keeper", r.keeper},         {"weight_clip", r.weight_clip},
          {"act_clip", r.act_clip},     {"gptq", r.gptq},             {"gptq_damp", r.gptq_damp},
          {"gptq_block", r.gptq_block}};
}

json ConfigJson(const ModelConfig& c) {
  const RopeScaling& r = c.rope_scaling;
  return {{"architecture", c.architecture},
          {"name", c.name},
          {"vocab_size", c.vocab_size},
          {"hidden_size", c.hidden_size},
          {"intermediate_size", c.intermediate_size},
          {"num_layers", c.num_layers},
          {"num_heads", c.num_heads},
          {"num_kv_heads", c.num_kv_heads},
          {"head_dim", c.head_dim},
          {"max_position", c.max_position},
          {"rope_theta", c.rope_theta},
          {"rope_scaling",
           {{"type", RopeTypeName(r.type)},
            {"factor", r.factor},
            {"low_freq_factor", r.low_freq_factor},
            {"high_freq_factor", r.high_freq_factor},
            {"original_max_position", r.original_max_position}}},
          {"rms_norm_eps", c.rms_norm_eps},
          {"tie_word_embeddings", c.tie_word_embeddings}};
}

json TokenizerJson(const TokenizerSpec& t) {
  return {{"model", t.model},   {"pre", t.pre},       {"bos_id", t.bos_id},    {"eos_id", t.eos_id},
          {"unk_id", t.unk_id}, {"pad_id", t.pad_id}, {"add_bos", t.add_bos}};
}

std::string LinearName(int64_t layer, const char* which) {
  return absl::StrCat("model.layers.", layer, ".", which);
}

constexpr const char* kLinearNames[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                         "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                         "mlp.down_proj"};
constexpr ActivationSite kPermSites[3] = {ActivationSite::kAttnIn, ActivationSite::kAttnOut,
                                          ActivationSite::kMlpIn};

std::array<const LinearWeight*, 7> Linears(const LayerWeights& L) {
  return {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down};
}
std::array<LinearWeight*, 7> Linears(LayerWeights& L) { return {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down}; }

std::vector<int32_t> TokenTypesAsInts(const TokenizerSpec& t) {
  std::vector<int32_t> out;
  for (TokenType tt : t.token_types) out.push_back(static_cast<int32_t>(tt));
  return out;
}

void AddWeights(const AtomCheckpoint& ck, PayloadBuilder& p) {
  const ModelWeights& w = ck.weights;
  p.Add("model.embed_tokens.weight", "f32", w.embed.shape, w.embed.data);
  p.Add("model.norm.weight", "f32", w.final_norm.shape, w.final_norm.data);
  if (!ck.config.tie_word_embeddings) p.Add("lm_head.weight", "f32", w.lm_head.shape, w.lm_head.data);
  for (int64_t i = 0; i < static_cast<int64_t>(w.layers.size()); ++i) {
    const LayerWeights& L = w.layers[i];
    p.Add(LinearName(i, "input_layernorm.weight"), "f32", L.input_norm.shape, L.input_norm.data);
    p.Add(LinearName(i, "post_attention_layernorm.weight"), "f32", L.post_norm.shape, L.post_norm.data);
    const auto linears = Linears(L);
    for (int j = 0; j < 7; ++j) p.AddMatrix(LinearName(i, kLinearNames[j]), linears[j]->packed);
    for (ActivationSite s : kPermSites) {
      const std::vector<int32_t>& perm = L.perms[static_cast<int>(s)];
      p.Add(absl::StrCat(LinearName(i, SiteName(s)), ".perm"), "i32", {static_cast<int64_t>(perm.size())}, perm);
    }
  }
}

json HeaderJson(const AtomCheckpoint& ck, const PayloadBuilder& p) {
  json tensors = json::array();
  for (const OutTensor& t : p.tensors()) {
    tensors.push_back({{"name", t.name}, {"dtype", t.dtype}, {"shape", t.shape}, {"offset", t.offset},
                       {"bytes", t.bytes}});
  }
  const AtomCalibrationInfo& c = ck.calibration;
  return {{"format", "atomserve-w4a4"},
          {"version", kAtomFormatVersion},
          {"recipe", RecipeJson(ck.recipe)},
          {"config", ConfigJson(ck.config)},
          {"tokenizer", TokenizerJson(ck.tokenizer)},
          {"source",
           {{"file", ck.source.file}, {"bytes", ck.source.bytes}, {"tensors_fnv1a64", Hex(ck.source.tensors_fnv1a64)}}},
          {"calibration",
           {{"file", c.file},
            {"file_bytes", c.file_bytes},
            {"file_fnv1a64", Hex(c.file_fnv1a64)},
            {"tokens", c.tokens},
            {"sequences", c.sequences},
            {"seq_len", c.seq_len}}},
          {"quantize_seconds", ck.quantize_seconds},
          {"tensors", std::move(tensors)}};
}

// Writes bytes and folds them into the running checksum.
class HashingWriter {
 public:
  explicit HashingWriter(std::ofstream& out) : out_(out) {}
  void Write(const void* data, uint64_t n) {
    out_.write(static_cast<const char*>(data), static_cast<std::streamsize>(n));
    hash_ = Fnv1a64(data, n, hash_);
    written_ += n;
  }
  void PadTo(uint64_t position) {
    static const char zeros[kAlign] = {};
    while (written_ < position) Write(zeros, std::min<uint64_t>(kAlign, position - written_));
  }
  uint64_t hash() const { return hash_; }
  uint64_t written() const { return written_; }

 private:
  std::ofstream& out_;
  uint64_t hash_ = kFnv1a64Offset;
  uint64_t written_ = 0;  // bytes after the prelude
};

void WritePrelude(std::ofstream& out, uint64_t header_bytes, uint64_t payload_bytes, uint64_t checksum) {
  const uint32_t version = kAtomFormatVersion, flags = 0;
  out.write(kAtomMagic, sizeof(kAtomMagic));
  out.write(reinterpret_cast<const char*>(&version), 4);
  out.write(reinterpret_cast<const char*>(&flags), 4);
  out.write(reinterpret_cast<const char*>(&header_bytes), 8);
  out.write(reinterpret_cast<const char*>(&payload_bytes), 8);
  out.write(reinterpret_cast<const char*>(&checksum), 8);
}

// ── Reading ────────────────────────────────────────────────────────────────

struct InTensor {
  std::string dtype;
  std::vector<int64_t> shape;
  uint64_t offset = 0, bytes = 0;
  bool used = false;
};

uint64_t DtypeSize(const std::string& dtype) {
  if (dtype == "f32" || dtype == "i32") return 4;
  if (dtype == "u16") return 2;
  if (dtype == "u8" || dtype == "i8" || dtype == "str") return 1;
  return 0;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) absl::StrAppend(&s, i ? ", " : "", shape[i]);
  return s + "]";
}

// The tensor directory over the payload; every access is bounds-checked.
class TensorDirectory {
 public:
  TensorDirectory(std::string path, const uint8_t* payload, uint64_t payload_bytes)
      : path_(std::move(path)), payload_(payload), payload_bytes_(payload_bytes) {}

  absl::Status Parse(const json& tensors) {
    if (!tensors.is_array()) return Corrupt("\"tensors\" is not an array");
    for (const json& t : tensors) {
      InTensor e;
      const std::string name = t.at("name").get<std::string>();
      e.dtype = t.at("dtype").get<std::string>();
      e.shape = t.at("shape").get<std::vector<int64_t>>();
      e.offset = t.at("offset").get<uint64_t>();
      e.bytes = t.at("bytes").get<uint64_t>();
      ATOMSERVE_RETURN_IF_ERROR(CheckEntry(name, e));
      if (!entries_.emplace(name, std::move(e)).second) return Corrupt(absl::StrCat("duplicate tensor ", name));
    }
    return absl::OkStatus();
  }

  template <typename T>
  absl::StatusOr<std::vector<T>> Get(const std::string& name, const char* dtype, const std::vector<int64_t>& shape) {
    ATOMSERVE_ASSIGN_OR_RETURN(InTensor * e, Find(name, dtype));
    if (e->shape != shape) {
      return absl::InvalidArgumentError(absl::StrCat(path_, ": tensor ", name, " has shape ", ShapeString(e->shape),
                                                     ", expected ", ShapeString(shape),
                                                     " for this config and recipe"));
    }
    std::vector<T> out(e->bytes / sizeof(T));
    ByteReader r(payload_, payload_bytes_, path_);
    ATOMSERVE_RETURN_IF_ERROR(r.Seek(e->offset));
    ATOMSERVE_ASSIGN_OR_RETURN(std::string_view bytes, r.ReadBytes(e->bytes));
    if (!out.empty()) std::memcpy(out.data(), bytes.data(), bytes.size());
    return out;
  }

  // A 1-D tensor of any length.
  template <typename T>
  absl::StatusOr<std::vector<T>> GetVector(const std::string& name, const char* dtype) {
    auto it = entries_.find(name);
    if (it == entries_.end() || it->second.shape.size() != 1) return Get<T>(name, dtype, {-1});
    return Get<T>(name, dtype, it->second.shape);
  }

  absl::StatusOr<std::vector<std::string>> GetStrings(const std::string& name) {
    ATOMSERVE_ASSIGN_OR_RETURN(InTensor * e, Find(name, "str"));
    ByteReader r(payload_, e->offset + e->bytes, path_);
    ATOMSERVE_RETURN_IF_ERROR(r.Seek(e->offset));
    std::vector<std::string> out(e->shape[0]);
    for (std::string& s : out) {
      ATOMSERVE_ASSIGN_OR_RETURN(uint32_t len, r.Read<uint32_t>());
      ATOMSERVE_ASSIGN_OR_RETURN(std::string_view bytes, r.ReadBytes(len));
      s = std::string(bytes);
    }
    if (r.remaining() != 0) return Corrupt(absl::StrCat("string tensor ", name, " has trailing bytes"));
    return out;
  }

  absl::StatusOr<HostTensor> GetFloat(const std::string& name, const std::vector<int64_t>& shape) {
    HostTensor t;
    t.shape = shape;
    ATOMSERVE_ASSIGN_OR_RETURN(t.data, Get<float>(name, "f32", shape));
    return t;
  }

  absl::Status CheckAllUsed() const {
    for (const auto& [name, e] : entries_) {
      if (!e.used) return Corrupt(absl::StrCat("unexpected tensor ", name));
    }
    return absl::OkStatus();
  }

  absl::Status Corrupt(const std::string& what) const {
    return absl::DataLossError(absl::StrCat(path_, ": corrupt tensor directory: ", what));
  }

 private:
  absl::Status CheckEntry(const std::string& name, const InTensor& e) const {
    const uint64_t size = DtypeSize(e.dtype);
    if (size == 0) return Corrupt(absl::StrCat(name, ": unknown dtype '", e.dtype, "'"));
    uint64_t numel = 1;
    for (int64_t d : e.shape) {
      if (d < 0 || (d > 0 && numel > (uint64_t{1} << 40) / static_cast<uint64_t>(d)))
        return Corrupt(absl::StrCat(name, ": bad shape ", ShapeString(e.shape)));
      numel *= static_cast<uint64_t>(d);
    }
    if (e.dtype == "str" ? e.shape.size() != 1 : e.bytes != numel * size)
      return Corrupt(absl::StrCat(name, ": ", e.bytes, " bytes do not match ", e.dtype, " ", ShapeString(e.shape)));
    if (e.offset > payload_bytes_ || e.bytes > payload_bytes_ - e.offset)
      return Corrupt(absl::StrCat(name, ": bytes [", e.offset, ", +", e.bytes, ") lie outside the payload of ",
                                  payload_bytes_));
    return absl::OkStatus();
  }

  absl::StatusOr<InTensor*> Find(const std::string& name, const char* dtype) {
    auto it = entries_.find(name);
    if (it == entries_.end()) return absl::InvalidArgumentError(absl::StrCat(path_, ": missing tensor ", name));
    if (it->second.dtype != dtype)
      return absl::InvalidArgumentError(
          absl::StrCat(path_, ": tensor ", name, " is ", it->second.dtype, ", expected ", dtype));
    it->second.used = true;
    return &it->second;
  }

  std::string path_;
  const uint8_t* payload_;
  uint64_t payload_bytes_;
  std::map<std::string, InTensor> entries_;
};

RopeScalingType RopeTypeFromName(const std::string& s) {
  if (s == "linear") return RopeScalingType::kLinear;
  if (s == "llama3") return RopeScalingType::kLlama3;
  return RopeScalingType::kNone;
}

quant::QuantRecipe RecipeFromJson(const json& j) {
  quant::QuantRecipe r;
  r.group_size = j.at("group_size").get<int>();
  r.keeper = j.at("keeper").get<int>();
  r.weight_clip = j.at("weight_clip").get<float>();
  r.act_clip = j.at("act_clip").get<float>();
  r.gptq = j.at("gptq").get<bool>();
  r.gptq_damp = j.at("gptq_damp").get<float>();
  r.gptq_block = j.at("gptq_block").get<int>();
  return r;
}

ModelConfig ConfigFromJson(const json& j) {
  ModelConfig c;
  c.architecture = j.at("architecture").get<std::string>();
  c.name = j.at("name").get<std::string>();
  c.vocab_size = j.at("vocab_size").get<int64_t>();
  c.hidden_size = j.at("hidden_size").get<int64_t>();
  c.intermediate_size = j.at("intermediate_size").get<int64_t>();
  c.num_layers = j.at("num_layers").get<int64_t>();
  c.num_heads = j.at("num_heads").get<int64_t>();
  c.num_kv_heads = j.at("num_kv_heads").get<int64_t>();
  c.head_dim = j.at("head_dim").get<int64_t>();
  c.max_position = j.at("max_position").get<int64_t>();
  c.rope_theta = j.at("rope_theta").get<float>();
  const json& r = j.at("rope_scaling");
  c.rope_scaling.type = RopeTypeFromName(r.at("type").get<std::string>());
  c.rope_scaling.factor = r.at("factor").get<float>();
  c.rope_scaling.low_freq_factor = r.at("low_freq_factor").get<float>();
  c.rope_scaling.high_freq_factor = r.at("high_freq_factor").get<float>();
  c.rope_scaling.original_max_position = r.at("original_max_position").get<int64_t>();
  c.rms_norm_eps = j.at("rms_norm_eps").get<float>();
  c.tie_word_embeddings = j.at("tie_word_embeddings").get<bool>();
  return c;
}

uint64_t ParseHex(const json& j) { return std::stoull(j.get<std::string>(), nullptr, 16); }

void ReadHeaderScalars(const json& h, AtomCheckpoint* ck) {
  ck->recipe = RecipeFromJson(h.at("recipe"));
  ck->config = ConfigFromJson(h.at("config"));
  const json& t = h.at("tokenizer");
  ck->tokenizer.model = t.at("model").get<std::string>();
  ck->tokenizer.pre = t.at("pre").get<std::string>();
  ck->tokenizer.bos_id = t.at("bos_id").get<int32_t>();
  ck->tokenizer.eos_id = t.at("eos_id").get<int32_t>();
  ck->tokenizer.unk_id = t.at("unk_id").get<int32_t>();
  ck->tokenizer.pad_id = t.at("pad_id").get<int32_t>();
  ck->tokenizer.add_bos = t.at("add_bos").get<bool>();
  const json& s = h.at("source");
  ck->source.file = s.at("file").get<std::string>();
  ck->source.bytes = s.at("bytes").get<uint64_t>();
  ck->source.tensors_fnv1a64 = ParseHex(s.at("tensors_fnv1a64"));
  const json& c = h.at("calibration");
  ck->calibration.file = c.at("file").get<std::string>();
  ck->calibration.file_bytes = c.at("file_bytes").get<uint64_t>();
  ck->calibration.file_fnv1a64 = ParseHex(c.at("file_fnv1a64"));
  ck->calibration.tokens = c.at("tokens").get<int64_t>();
  ck->calibration.sequences = c.at("sequences").get<int64_t>();
  ck->calibration.seq_len = c.at("seq_len").get<int64_t>();
  ck->quantize_seconds = h.at("quantize_seconds").get<double>();
}

absl::StatusOr<quant::W4A4Matrix> ReadMatrix(TensorDirectory& dir, const std::string& name, int64_t rows, int64_t k,
                                             const quant::QuantRecipe& recipe) {
  quant::W4A4Matrix m;
  ATOMSERVE_ASSIGN_OR_RETURN(m.layout, quant::QuantLayout::FromRecipe(recipe, k));
  m.rows = rows;
  const quant::QuantLayout& l = m.layout;
  ATOMSERVE_ASSIGN_OR_RETURN(m.packed, dir.Get<uint8_t>(name + ".packed", "u8", {rows, l.packed_row_bytes()}));
  ATOMSERVE_ASSIGN_OR_RETURN(m.scales, dir.Get<uint16_t>(name + ".scales", "u16", {rows, l.groups()}));
  if (l.keeper > 0) {
    ATOMSERVE_ASSIGN_OR_RETURN(m.keeper_codes, dir.Get<int8_t>(name + ".keeper_codes", "i8", {rows, l.keeper}));
    ATOMSERVE_ASSIGN_OR_RETURN(m.keeper_scales, dir.Get<uint16_t>(name + ".keeper_scales", "u16", {rows}));
  }
  return m;
}

absl::StatusOr<LayerWeights> ReadLayer(TensorDirectory& dir, const ModelConfig& c, const quant::QuantRecipe& recipe,
                                       int64_t i) {
  const int64_t h = c.hidden_size, f = c.intermediate_size;
  const int64_t q_out = c.num_heads * c.head_dim, kv_out = c.num_kv_heads * c.head_dim;
  const int64_t rows[7] = {q_out, kv_out, kv_out, h, f, f, h};
  const int64_t ks[7] = {h, h, h, q_out, h, h, f};
  LayerWeights L;
  ATOMSERVE_ASSIGN_OR_RETURN(L.input_norm, dir.GetFloat(LinearName(i, "input_layernorm.weight"), {h}));
  ATOMSERVE_ASSIGN_OR_RETURN(L.post_norm, dir.GetFloat(LinearName(i, "post_attention_layernorm.weight"), {h}));
  const auto linears = Linears(L);
  for (int j = 0; j < 7; ++j) {
    ATOMSERVE_ASSIGN_OR_RETURN(linears[j]->packed, ReadMatrix(dir, LinearName(i, kLinearNames[j]), rows[j], ks[j],
                                                              recipe));
  }
  const int64_t widths[3] = {h, q_out, h};
  for (int s = 0; s < 3; ++s) {
    const std::string name = absl::StrCat(LinearName(i, SiteName(kPermSites[s])), ".perm");
    ATOMSERVE_ASSIGN_OR_RETURN(L.perms[static_cast<int>(kPermSites[s])], dir.Get<int32_t>(name, "i32", {widths[s]}));
  }
  return L;
}

absl::Status ReadTokenizer(TensorDirectory& dir, TokenizerSpec* t) {
  ATOMSERVE_ASSIGN_OR_RETURN(t->tokens, dir.GetStrings("tokenizer.tokens"));
  ATOMSERVE_ASSIGN_OR_RETURN(t->merges, dir.GetStrings("tokenizer.merges"));
  ATOMSERVE_ASSIGN_OR_RETURN(std::vector<std::string> tmpl, dir.GetStrings("tokenizer.chat_template"));
  if (tmpl.size() != 1) return dir.Corrupt("tokenizer.chat_template must hold one string");
  t->chat_template = std::move(tmpl[0]);
  const int64_t n = static_cast<int64_t>(t->tokens.size());
  ATOMSERVE_ASSIGN_OR_RETURN(std::vector<int32_t> types, dir.Get<int32_t>("tokenizer.token_types", "i32", {n}));
  for (int32_t v : types) t->token_types.push_back(static_cast<TokenType>(v));
  ATOMSERVE_ASSIGN_OR_RETURN(t->extra_eos_ids, dir.GetVector<int32_t>("tokenizer.extra_eos_ids", "i32"));
  return absl::OkStatus();
}

absl::Status ReadWeights(TensorDirectory& dir, AtomCheckpoint* ck) {
  const ModelConfig& c = ck->config;
  ModelWeights& w = ck->weights;
  ATOMSERVE_ASSIGN_OR_RETURN(w.embed, dir.GetFloat("model.embed_tokens.weight", {c.vocab_size, c.hidden_size}));
  ATOMSERVE_ASSIGN_OR_RETURN(w.final_norm, dir.GetFloat("model.norm.weight", {c.hidden_size}));
  if (!c.tie_word_embeddings) {
    ATOMSERVE_ASSIGN_OR_RETURN(w.lm_head, dir.GetFloat("lm_head.weight", {c.vocab_size, c.hidden_size}));
  }
  for (int64_t i = 0; i < c.num_layers; ++i) {
    ATOMSERVE_ASSIGN_OR_RETURN(LayerWeights L, ReadLayer(dir, c, ck->recipe, i));
    w.layers.push_back(std::move(L));
  }
  return absl::OkStatus();
}

bool SameRecipe(const quant::QuantRecipe& a, const quant::QuantRecipe& b) {
  return a.group_size == b.group_size && a.keeper == b.keeper && a.weight_clip == b.weight_clip &&
         a.act_clip == b.act_clip && a.gptq == b.gptq && (!a.gptq || (a.gptq_damp == b.gptq_damp &&
                                                                        a.gptq_block == b.gptq_block));
}

struct Prelude {
  uint32_t version = 0, flags = 0;
  uint64_t header_bytes = 0, payload_bytes = 0, checksum = 0;
};

absl::StatusOr<Prelude> ReadPrelude(ByteReader& r, const std::string& path, uint64_t file_size) {
  // Order matters: a foreign file is "bad magic", a newer one is refused
  // before its sizes are trusted, and sizes are checked before hashing.
  absl::StatusOr<std::string_view> magic = r.ReadBytes(sizeof(kAtomMagic));
  if (!magic.ok() || std::memcmp(magic->data(), kAtomMagic, sizeof(kAtomMagic)) != 0) {
    return absl::DataLossError(absl::StrCat(path, ": not an atomserve W4A4 checkpoint (bad magic)"));
  }
  Prelude p;
  ATOMSERVE_ASSIGN_OR_RETURN(p.version, r.Read<uint32_t>());
  if (p.version > kAtomFormatVersion) {
    return absl::FailedPreconditionError(absl::StrCat(path, ": format version ", p.version,
                                                      " is newer than this atomserve reads (", kAtomFormatVersion,
                                                      "); upgrade atomserve or re-quantize"));
  }
  if (p.version == 0) return absl::DataLossError(absl::StrCat(path, ": format version 0 is invalid"));
  ATOMSERVE_ASSIGN_OR_RETURN(p.flags, r.Read<uint32_t>());
  ATOMSERVE_ASSIGN_OR_RETURN(p.header_bytes, r.Read<uint64_t>());
  ATOMSERVE_ASSIGN_OR_RETURN(p.payload_bytes, r.Read<uint64_t>());
  ATOMSERVE_ASSIGN_OR_RETURN(p.checksum, r.Read<uint64_t>());
  if (p.flags != 0) return absl::DataLossError(absl::StrCat(path, ": unknown flags ", p.flags));
  if (p.header_bytes > kMaxHeaderBytes || p.payload_bytes > (uint64_t{1} << 48)) {
    return absl::DataLossError(absl::StrCat(path, ": implausible section sizes (header ", p.header_bytes,
                                            ", payload ", p.payload_bytes, " bytes)"));
  }
  const uint64_t expected = AlignUp(kAtomPreludeBytes + p.header_bytes) + p.payload_bytes;
  if (file_size < expected) {
    return absl::DataLossError(absl::StrCat(path, ": truncated: ", file_size, " bytes, the header announces ",
                                            expected));
  }
  if (file_size > expected) {
    return absl::DataLossError(absl::StrCat(path, ": ", file_size - expected, " unexpected trailing bytes"));
  }
  return p;
}

absl::StatusOr<AtomCheckpoint> ParseAtom(const MappedFile& f, const AtomLoadOptions& options) {
  const std::string& path = f.path();
  ByteReader r(f.data(), f.size(), path);
  ATOMSERVE_ASSIGN_OR_RETURN(Prelude p, ReadPrelude(r, path, f.size()));
  const uint64_t payload_at = AlignUp(kAtomPreludeBytes + p.header_bytes);
  const uint64_t computed = Fnv1a64(f.data() + kAtomPreludeBytes, f.size() - kAtomPreludeBytes);
  if (computed != p.checksum) {
    return absl::DataLossError(absl::StrCat(path, ": checksum mismatch (file corrupt): stored ", Hex(p.checksum),
                                            ", computed ", Hex(computed)));
  }
  ATOMSERVE_ASSIGN_OR_RETURN(std::string_view header_text, r.ReadBytes(p.header_bytes));
  json header = json::parse(header_text.begin(), header_text.end(), nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object())
    return absl::DataLossError(absl::StrCat(path, ": the header is not valid JSON"));
  AtomCheckpoint ck;
  ck.path = path;
  TensorDirectory dir(path, f.data() + payload_at, p.payload_bytes);
  try {
    ReadHeaderScalars(header, &ck);
    ATOMSERVE_RETURN_IF_ERROR(dir.Parse(header.at("tensors")));
  } catch (const std::exception& e) {
    return absl::DataLossError(absl::StrCat(path, ": malformed header: ", e.what()));
  }
  if (absl::Status st = ck.recipe.Validate(); !st.ok())
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", st.message()));
  if (absl::Status st = ck.config.Validate(path); !st.ok()) return st;
  if (options.expect_recipe && !SameRecipe(*options.expect_recipe, ck.recipe)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": recipe mismatch: the file was quantized with ",
                                                   RecipeString(ck.recipe), ", expected ",
                                                   RecipeString(*options.expect_recipe)));
  }
  ATOMSERVE_RETURN_IF_ERROR(ReadTokenizer(dir, &ck.tokenizer));
  ATOMSERVE_RETURN_IF_ERROR(ReadWeights(dir, &ck));
  ATOMSERVE_RETURN_IF_ERROR(dir.CheckAllUsed());
  if (absl::Status st = ValidateModelWeights(ck.config, ck.weights, ck.recipe); !st.ok())
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", st.message()));
  return ck;
}

}  // namespace

uint64_t Fnv1a64(const void* data, size_t size, uint64_t seed) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  uint64_t h = seed;
  for (size_t i = 0; i < size; ++i) {
    h ^= p[i];
    h *= kFnvPrime;
  }
  return h;
}

uint64_t HashModelWeights(const ModelWeights& w) {
  uint64_t h = kFnv1a64Offset;
  auto add = [&h](const HostTensor& t) {
    for (int64_t d : t.shape) h = Fnv1a64(&d, sizeof(d), h);
    h = Fnv1a64(t.data.data(), t.data.size() * sizeof(float), h);
  };
  add(w.embed);
  add(w.final_norm);
  add(w.lm_head);
  for (const LayerWeights& L : w.layers) {
    add(L.input_norm);
    add(L.post_norm);
    for (const LinearWeight* lin : Linears(L)) add(lin->dense);
  }
  return h;
}

absl::StatusOr<uint64_t> PathBytes(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    uint64_t total = 0;
    for (const auto& e : std::filesystem::directory_iterator(path, ec)) {
      if (e.is_regular_file()) total += e.file_size();
    }
    return total;
  }
  const uint64_t size = std::filesystem::file_size(path, ec);
  if (ec) return absl::NotFoundError(absl::StrCat(path, ": ", ec.message()));
  return size;
}

std::string RecipeString(const quant::QuantRecipe& r) {
  std::string s = absl::StrCat("keeper=", r.keeper, " weight_clip=", r.weight_clip, " act_clip=", r.act_clip,
                               " gptq=", r.gptq ? "on" : "off");
  if (r.gptq) absl::StrAppend(&s, " damp=", r.gptq_damp, " block=", r.gptq_block);
  return s;
}

absl::Status SaveAtomCheckpoint(const AtomCheckpoint& ck, const std::string& path) {
  if (absl::Status st = ValidateModelWeights(ck.config, ck.weights, ck.recipe); !st.ok())
    return absl::InvalidArgumentError(absl::StrCat("cannot save ", path, ": ", st.message()));
  PayloadBuilder payload;
  AddWeights(ck, payload);
  const TokenizerSpec& t = ck.tokenizer;
  const std::vector<int32_t> token_types = TokenTypesAsInts(t);
  payload.AddStrings("tokenizer.tokens", t.tokens);
  payload.AddStrings("tokenizer.merges", t.merges);
  payload.AddStrings("tokenizer.chat_template", {t.chat_template});
  payload.Add("tokenizer.token_types", "i32", {static_cast<int64_t>(token_types.size())}, token_types);
  payload.Add("tokenizer.extra_eos_ids", "i32", {static_cast<int64_t>(t.extra_eos_ids.size())}, t.extra_eos_ids);
  const uint64_t payload_bytes = payload.Layout();
  const std::string header = HeaderJson(ck, payload).dump(-1, ' ', false, json::error_handler_t::replace);

  const std::string tmp = path + ".tmp";
  std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
  if (!out) return absl::InternalError(absl::StrCat(tmp, ": cannot open for writing"));
  WritePrelude(out, header.size(), payload_bytes, 0);
  HashingWriter w(out);
  w.Write(header.data(), header.size());
  const uint64_t payload_at = AlignUp(kAtomPreludeBytes + header.size()) - kAtomPreludeBytes;
  w.PadTo(payload_at);
  for (const OutTensor& tensor : payload.tensors()) {
    w.PadTo(payload_at + tensor.offset);
    w.Write(tensor.data, tensor.bytes);
  }
  out.seekp(0);
  WritePrelude(out, header.size(), payload_bytes, w.hash());
  out.close();
  if (!out) return absl::InternalError(absl::StrCat(tmp, ": write failed"));
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot rename ", tmp, " to ", path, ": ", ec.message()));
  return absl::OkStatus();
}

absl::StatusOr<AtomCheckpoint> LoadAtomCheckpoint(const std::string& path, const AtomLoadOptions& options) {
  ATOMSERVE_ASSIGN_OR_RETURN(MappedFile f, MappedFile::Open(path));
  return ParseAtom(f, options);
}

absl::StatusOr<bool> IsAtomCheckpoint(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return absl::NotFoundError(absl::StrCat(path, ": no such file"));
  if (std::filesystem::is_directory(path, ec)) return false;
  std::ifstream in(path, std::ios::binary);
  char magic[sizeof(kAtomMagic)] = {};
  in.read(magic, sizeof(magic));
  return in.gcount() == sizeof(magic) && std::memcmp(magic, kAtomMagic, sizeof(magic)) == 0;
}

}  // namespace atomserve
