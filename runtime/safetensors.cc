// Hugging Face model directory loader: config.json, model.safetensors (or
// shards listed in model.safetensors.index.json), tokenizer.json and
// tokenizer_config.json.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <set>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/mapped_file.h"
#include "common/status.h"
#include "runtime/checkpoint.h"
#include "runtime/dequant.h"
#include "runtime/gguf_internal.h"
#include "runtime/tokenizer_json.h"

namespace atomserve {
namespace {

using nlohmann::json;

// ---------------------------------------------------------------- config.json

absl::Status BadKey(const std::string& source, const std::string& key, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": key '", key, "' ", what));
}

absl::StatusOr<json> ParseJsonFile(const std::string& path) {
  ATOMSERVE_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object())
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a valid JSON object"));
  return doc;
}

// Absent and null both mean "use the default" in HF configs.
bool Has(const json& obj, const char* key) { return obj.contains(key) && !obj[key].is_null(); }

absl::StatusOr<int64_t> Int(const json& obj, const char* key, const std::string& source,
                            const std::string& prefix = "") {
  if (!Has(obj, key)) return BadKey(source, prefix + key, "is missing");
  const json& v = obj[key];
  if (v.is_number_integer()) return v.get<int64_t>();
  // Some exporters write integral floats ("max_position_embeddings": 8192.0).
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (std::fabs(d) < 0x1p62 && d == std::floor(d)) return static_cast<int64_t>(d);
  }
  return BadKey(source, prefix + key, "must be an integer");
}

absl::StatusOr<int64_t> IntOr(const json& obj, const char* key, int64_t def, const std::string& source) {
  return Has(obj, key) ? Int(obj, key, source) : def;
}

absl::StatusOr<float> Float(const json& obj, const char* key, const std::string& source,
                            const std::string& prefix = "") {
  if (!Has(obj, key)) return BadKey(source, prefix + key, "is missing");
  if (!obj[key].is_number()) return BadKey(source, prefix + key, "must be a number");
  return obj[key].get<float>();
}

absl::StatusOr<float> FloatOr(const json& obj, const char* key, float def, const std::string& source) {
  return Has(obj, key) ? Float(obj, key, source) : def;
}

absl::StatusOr<bool> BoolOr(const json& obj, const char* key, bool def, const std::string& source) {
  if (!Has(obj, key)) return def;
  if (!obj[key].is_boolean()) return BadKey(source, key, "must be true or false");
  return obj[key].get<bool>();
}

absl::Status CheckArchitecture(const json& cfg, const std::string& source) {
  static const std::set<std::string> kArchs = {"LlamaForCausalLM", "MistralForCausalLM"};
  static const std::set<std::string> kTypes = {"llama", "mistral"};
  if (cfg.contains("architectures") && cfg["architectures"].is_array()) {
    for (const json& a : cfg["architectures"])
      if (a.is_string() && kArchs.count(a.get<std::string>())) return absl::OkStatus();
  }
  if (cfg.contains("model_type") && cfg["model_type"].is_string() &&
      kTypes.count(cfg["model_type"].get<std::string>()))
    return absl::OkStatus();
  return BadKey(source, "architectures",
                absl::StrCat("'", cfg.value("architectures", json()).dump(), "' (model_type '",
                             cfg.value("model_type", json()).dump(),
                             "') is not a supported Llama-family model (LlamaForCausalLM, MistralForCausalLM)"));
}

absl::Status ReadRopeScaling(const json& cfg, const std::string& source, RopeScaling* r) {
  if (!Has(cfg, "rope_scaling")) return absl::OkStatus();
  const json& rs = cfg["rope_scaling"];
  if (!rs.is_object()) return BadKey(source, "rope_scaling", "must be an object");
  const char* type_key = Has(rs, "rope_type") ? "rope_type" : "type";
  if (!Has(rs, type_key) || !rs[type_key].is_string())
    return BadKey(source, "rope_scaling.type", "is missing or not a string");
  const std::string type = rs[type_key].get<std::string>();
  const std::string p = "rope_scaling.";
  if (type == "default") return absl::OkStatus();
  if (type == "linear") {
    r->type = RopeScalingType::kLinear;
    ATOMSERVE_ASSIGN_OR_RETURN(r->factor, Float(rs, "factor", source, p));
    return absl::OkStatus();
  }
  if (type != "llama3")
    return BadKey(source, p + type_key, absl::StrCat("'", type, "' is not supported (linear, llama3)"));
  r->type = RopeScalingType::kLlama3;
  ATOMSERVE_ASSIGN_OR_RETURN(r->factor, Float(rs, "factor", source, p));
  ATOMSERVE_ASSIGN_OR_RETURN(r->low_freq_factor, Float(rs, "low_freq_factor", source, p));
  ATOMSERVE_ASSIGN_OR_RETURN(r->high_freq_factor, Float(rs, "high_freq_factor", source, p));
  ATOMSERVE_ASSIGN_OR_RETURN(r->original_max_position, Int(rs, "original_max_position_embeddings", source, p));
  return absl::OkStatus();
}

// Biases change the model; refuse rather than silently drop them.
absl::Status CheckNoBiases(const json& cfg, const std::string& source) {
  for (const char* key : {"attention_bias", "mlp_bias"}) {
    ATOMSERVE_ASSIGN_OR_RETURN(bool on, BoolOr(cfg, key, false, source));
    if (on) return BadKey(source, key, "=true is not supported");
  }
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> ConfigFromJson(const json& cfg, const std::string& source) {
  ATOMSERVE_RETURN_IF_ERROR(CheckArchitecture(cfg, source));
  ATOMSERVE_RETURN_IF_ERROR(CheckNoBiases(cfg, source));
  ModelConfig c;
  if (cfg.contains("_name_or_path") && cfg["_name_or_path"].is_string())
    c.name = cfg["_name_or_path"].get<std::string>();
  ATOMSERVE_ASSIGN_OR_RETURN(c.vocab_size, Int(cfg, "vocab_size", source));
  ATOMSERVE_ASSIGN_OR_RETURN(c.hidden_size, Int(cfg, "hidden_size", source));
  ATOMSERVE_ASSIGN_OR_RETURN(c.intermediate_size, Int(cfg, "intermediate_size", source));
  ATOMSERVE_ASSIGN_OR_RETURN(c.num_layers, Int(cfg, "num_hidden_layers", source));
  ATOMSERVE_ASSIGN_OR_RETURN(c.num_heads, Int(cfg, "num_attention_heads", source));
  ATOMSERVE_ASSIGN_OR_RETURN(c.num_kv_heads, IntOr(cfg, "num_key_value_heads", c.num_heads, source));
  ATOMSERVE_ASSIGN_OR_RETURN(c.head_dim, IntOr(cfg, "head_dim", 0, source));
  ATOMSERVE_ASSIGN_OR_RETURN(c.max_position, IntOr(cfg, "max_position_embeddings", c.max_position, source));
  ATOMSERVE_ASSIGN_OR_RETURN(c.rope_theta, FloatOr(cfg, "rope_theta", 10000.0f, source));
  // HF LlamaConfig's defaults.
  ATOMSERVE_ASSIGN_OR_RETURN(c.rms_norm_eps, FloatOr(cfg, "rms_norm_eps", 1e-6f, source));
  ATOMSERVE_ASSIGN_OR_RETURN(c.tie_word_embeddings, BoolOr(cfg, "tie_word_embeddings", false, source));
  ATOMSERVE_RETURN_IF_ERROR(ReadRopeScaling(cfg, source, &c.rope_scaling));
  ATOMSERVE_RETURN_IF_ERROR(c.Validate(source));
  if (c.head_dim == 0) c.head_dim = c.hidden_size / c.num_heads;
  return c;
}

// ---------------------------------------------------------------- tokenizer

// config.json's bos/eos ids fill in what tokenizer_config.json left unset;
// a list of eos ids (Llama-3.1) adds the rest as extra end markers.
absl::Status MergeConfigTokenIds(const json& cfg, const std::string& source, TokenizerSpec* spec) {
  const int64_t n = static_cast<int64_t>(spec->tokens.size());
  auto check = [&](const char* key, const json& v) -> absl::StatusOr<int32_t> {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= n)
      return BadKey(source, key, absl::StrCat("must be a token id below ", n));
    return static_cast<int32_t>(v.get<int64_t>());
  };
  if (spec->bos_id < 0 && Has(cfg, "bos_token_id")) {
    ATOMSERVE_ASSIGN_OR_RETURN(spec->bos_id, check("bos_token_id", cfg["bos_token_id"]));
  }
  if (!Has(cfg, "eos_token_id")) return absl::OkStatus();
  const json& eos = cfg["eos_token_id"];
  std::vector<int32_t> ids;
  for (const json& v : eos.is_array() ? eos : json::array({eos})) {
    ATOMSERVE_ASSIGN_OR_RETURN(int32_t id, check("eos_token_id", v));
    ids.push_back(id);
  }
  if (spec->eos_id < 0 && !ids.empty()) spec->eos_id = ids[0];
  auto& extra = spec->extra_eos_ids;
  for (int32_t id : ids)
    if (std::find(extra.begin(), extra.end(), id) == extra.end()) extra.push_back(id);
  // The tokenizer may have listed the eos token as an extra marker before
  // eos was known; keep it in one place only.
  std::erase(extra, spec->eos_id);
  return absl::OkStatus();
}

absl::StatusOr<TokenizerSpec> ReadTokenizer(const std::string& dir, const json& cfg, int64_t vocab_size) {
  const std::string path = dir + "/tokenizer.json";
  if (!std::filesystem::exists(path)) return absl::NotFoundError(absl::StrCat(path, ": no such file"));
  ATOMSERVE_ASSIGN_OR_RETURN(std::string tok_json, ReadFileToString(path));
  std::string tok_config;
  if (std::filesystem::exists(dir + "/tokenizer_config.json")) {
    ATOMSERVE_ASSIGN_OR_RETURN(tok_config, ReadFileToString(dir + "/tokenizer_config.json"));
  }
  absl::StatusOr<TokenizerSpec> spec;
  // TokenizerSpecFromJson reports errors as Status, but nlohmann's value()
  // throws on a mistyped field; keep exceptions from escaping the loader.
  try {
    spec = TokenizerSpecFromJson(tok_json, tok_config, path);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", e.what()));
  }
  if (!spec.ok()) return spec.status();
  ATOMSERVE_RETURN_IF_ERROR(MergeConfigTokenIds(cfg, dir + "/config.json", &*spec));
  if (static_cast<int64_t>(spec->tokens.size()) > vocab_size)
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", spec->tokens.size(),
                                                   " tokens exceed config.json vocab_size=", vocab_size));
  return spec;
}

// ---------------------------------------------------------------- safetensors

struct Entry {
  const MappedFile* file = nullptr;
  std::string dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // absolute offsets in the file
  uint64_t end = 0;
};

absl::StatusOr<std::vector<int64_t>> ParseShape(const json& v, const std::string& where) {
  if (!v.is_array() || v.size() > 8) return absl::DataLossError(absl::StrCat(where, ": bad 'shape'"));
  std::vector<int64_t> shape;
  for (const json& d : v) {
    if (!d.is_number_unsigned() || d.get<uint64_t>() > (uint64_t{1} << 40))
      return absl::DataLossError(absl::StrCat(where, ": bad 'shape'"));
    shape.push_back(d.get<int64_t>());
  }
  return shape;
}

absl::StatusOr<Entry> ParseEntry(const json& v, const std::string& where, uint64_t data_start,
                                 uint64_t data_size) {
  if (!v.is_object() || !v.contains("dtype") || !v["dtype"].is_string())
    return absl::DataLossError(absl::StrCat(where, ": missing 'dtype'"));
  Entry e;
  e.dtype = v["dtype"].get<std::string>();
  ATOMSERVE_ASSIGN_OR_RETURN(e.shape, ParseShape(v.value("shape", json()), where));
  const json& off = v.value("data_offsets", json());
  if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
    return absl::DataLossError(absl::StrCat(where, ": bad 'data_offsets'"));
  const uint64_t b = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
  if (b > end || end > data_size)
    return absl::DataLossError(absl::StrCat(where, ": data_offsets [", b, ", ", end,
                                            "] lie outside the data section (", data_size, " bytes)"));
  e.begin = data_start + b;
  e.end = data_start + end;
  return e;
}

// Reads one file's header into `entries` (name -> entry).
absl::Status ReadHeader(const MappedFile& file, std::map<std::string, Entry>* entries) {
  const std::string& path = file.path();
  ByteReader r(file.data(), file.size(), path);
  ATOMSERVE_ASSIGN_OR_RETURN(uint64_t len, r.Read<uint64_t>());
  if (len > r.remaining())
    return absl::DataLossError(absl::StrCat(path, ": header length ", len, " exceeds the file size ", file.size()));
  ATOMSERVE_ASSIGN_OR_RETURN(std::string_view text, r.ReadBytes(len));
  json header = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object())
    return absl::DataLossError(absl::StrCat(path, ": header is not a valid JSON object"));
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    const std::string where = absl::StrCat(path, ": tensor '", it.key(), "'");
    ATOMSERVE_ASSIGN_OR_RETURN(Entry e, ParseEntry(it.value(), where, r.offset(), r.remaining()));
    e.file = &file;
    if (!entries->emplace(it.key(), std::move(e)).second)
      return absl::DataLossError(absl::StrCat(where, " appears in more than one shard"));
  }
  return absl::OkStatus();
}

// Shard file names: from the index when present, else model.safetensors.
absl::StatusOr<std::vector<std::string>> ShardFiles(const std::string& dir) {
  const std::string index = dir + "/model.safetensors.index.json";
  if (!std::filesystem::exists(index)) {
    if (!std::filesystem::exists(dir + "/model.safetensors"))
      return absl::NotFoundError(absl::StrCat(dir, ": no model.safetensors or model.safetensors.index.json"));
    return std::vector<std::string>{"model.safetensors"};
  }
  ATOMSERVE_ASSIGN_OR_RETURN(json doc, ParseJsonFile(index));
  if (!doc.contains("weight_map") || !doc["weight_map"].is_object())
    return BadKey(index, "weight_map", "is missing or not an object");
  std::vector<std::string> files;
  for (const json& f : doc["weight_map"]) {
    if (!f.is_string()) return BadKey(index, "weight_map", "values must be file names");
    const std::string name = f.get<std::string>();
    // Shards must sit next to the index; no paths out of the directory.
    if (name.empty() || name[0] == '.' || name.find('/') != std::string::npos)
      return BadKey(index, "weight_map", absl::StrCat("names a bad shard file '", name, "'"));
    if (std::find(files.begin(), files.end(), name) == files.end()) files.push_back(name);
  }
  return files;
}

int64_t DtypeSize(const std::string& dtype) {
  if (dtype == "F32") return 4;
  if (dtype == "F16" || dtype == "BF16") return 2;
  return 0;
}

// Checks dtype, byte size and shape of every tensor the model needs.
absl::Status CheckEntries(const std::map<std::string, Entry>& entries,
                          const std::map<std::string, std::vector<int64_t>>& expected,
                          const std::string& dir) {
  for (const auto& [name, shape] : expected) {
    auto it = entries.find(name);
    if (it == entries.end()) return absl::NotFoundError(absl::StrCat(dir, ": missing tensor '", name, "'"));
    const Entry& e = it->second;
    const std::string where = absl::StrCat(e.file->path(), ": tensor '", name, "'");
    const int64_t size = DtypeSize(e.dtype);
    if (size == 0)
      return absl::InvalidArgumentError(
          absl::StrCat(where, " has unsupported dtype ", e.dtype, " (F32, F16, BF16 are)"));
    const int64_t numel = loader_internal::CheckedNumel(e.shape);
    int64_t bytes = 0;
    if (numel < 0 || __builtin_mul_overflow(numel, size, &bytes) ||
        static_cast<uint64_t>(bytes) != e.end - e.begin)
      return absl::DataLossError(absl::StrCat(where, ": data_offsets span ", e.end - e.begin, " bytes but shape ",
                                              loader_internal::ShapeToString(e.shape), " of ", e.dtype,
                                              " needs ", bytes));
    ATOMSERVE_RETURN_IF_ERROR(loader_internal::CheckTensorShape(e.file->path(), name, e.shape, shape));
  }
  return absl::OkStatus();
}

GgmlType DtypeToGgml(const std::string& dtype) {
  if (dtype == "F16") return GgmlType::kF16;
  if (dtype == "BF16") return GgmlType::kBF16;
  return GgmlType::kF32;
}

absl::Status LoadTensors(const std::string& dir, const ModelConfig& config, const ProgressFn& progress,
                         std::map<std::string, HostTensor>* out) {
  ATOMSERVE_ASSIGN_OR_RETURN(std::vector<std::string> names, ShardFiles(dir));
  std::vector<MappedFile> files;
  files.reserve(names.size());  // entries point into this vector
  std::map<std::string, Entry> entries;
  for (const std::string& name : names) {
    ATOMSERVE_ASSIGN_OR_RETURN(MappedFile f, MappedFile::Open(dir + "/" + name));
    files.push_back(std::move(f));
    ATOMSERVE_RETURN_IF_ERROR(ReadHeader(files.back(), &entries));
  }
  // Other tensors (e.g. rotary_emb.inv_freq buffers, a tied lm_head copy)
  // are not needed and are skipped.
  const auto expected = loader_internal::ExpectedTensorShapes(config);
  ATOMSERVE_RETURN_IF_ERROR(CheckEntries(entries, expected, dir));
  uint64_t total = 0, done = 0;
  for (const auto& [name, shape] : expected) total += entries[name].end - entries[name].begin;
  for (const auto& [name, shape] : expected) {
    const Entry& e = entries[name];
    HostTensor t;
    t.shape = e.shape;
    t.data.resize(static_cast<size_t>(t.numel()));
    Dequantize(DtypeToGgml(e.dtype), e.file->data() + e.begin, t.numel(), t.data.data());
    (*out)[name] = std::move(t);
    done += e.end - e.begin;
    if (progress) progress(done, total, name);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Checkpoint> LoadSafetensors(const std::string& dir, const ProgressFn& progress) {
  if (!std::filesystem::is_directory(dir))
    return absl::NotFoundError(absl::StrCat(dir, ": not a directory"));
  const std::string config_path = dir + "/config.json";
  if (!std::filesystem::exists(config_path))
    return absl::NotFoundError(absl::StrCat(config_path, ": no such file"));
  ATOMSERVE_ASSIGN_OR_RETURN(json cfg, ParseJsonFile(config_path));
  Checkpoint ckpt;
  ckpt.path = dir;
  ckpt.format = "safetensors";
  ATOMSERVE_ASSIGN_OR_RETURN(ckpt.config, ConfigFromJson(cfg, config_path));
  ATOMSERVE_ASSIGN_OR_RETURN(ckpt.tokenizer, ReadTokenizer(dir, cfg, ckpt.config.vocab_size));
  ATOMSERVE_RETURN_IF_ERROR(LoadTensors(dir, ckpt.config, progress, &ckpt.tensors));
  return ckpt;
}

}  // namespace atomserve
