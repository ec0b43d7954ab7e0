#include "runtime/tokenizer_json.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace atomserve {
namespace {

using nlohmann::json;

absl::Status Bad(const std::string& source, const std::string& key, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": key '", key, "': ", what));
}

// The Llama-3 (tiktoken cl100k-style) split pattern.
constexpr const char* kLlama3Pattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// Maps the pre_tokenizer section onto a pre-tokenizer family name.
absl::StatusOr<std::string> PreFamily(const json& pre, const std::string& source) {
  if (pre.is_null()) return Bad(source, "pre_tokenizer", "missing; byte-level BPE needs ByteLevel");
  std::string type = pre.value("type", "");
  if (type == "ByteLevel") {
    if (pre.value("add_prefix_space", false))
      return Bad(source, "pre_tokenizer.add_prefix_space", "true is not supported");
    return std::string("gpt2");
  }
  if (type == "Sequence") {
    const json& list = pre.value("pretokenizers", json::array());
    bool digits = false, byte_level = false, llama3 = false;
    for (const json& p : list) {
      std::string t = p.value("type", "");
      if (t == "Digits" && p.value("individual_digits", false)) {
        digits = true;
      } else if (t == "ByteLevel") {
        if (p.value("add_prefix_space", false))
          return Bad(source, "pre_tokenizer.pretokenizers[].add_prefix_space", "true is not supported");
        byte_level = true;
      } else if (t == "Split") {
        std::string pattern;
        if (p.contains("pattern") && p["pattern"].is_object())
          pattern = p["pattern"].value("Regex", p["pattern"].value("String", ""));
        if (pattern == kLlama3Pattern) {
          llama3 = true;
        } else {
          return Bad(source, "pre_tokenizer.pretokenizers[].pattern",
                     absl::StrCat("unsupported split pattern '", pattern.substr(0, 80), "'"));
        }
      } else {
        return Bad(source, "pre_tokenizer.pretokenizers[].type", absl::StrCat("unsupported '", t, "'"));
      }
    }
    if (!byte_level) return Bad(source, "pre_tokenizer", "no ByteLevel step");
    if (llama3 && !digits) return std::string("llama3");
    if (digits && !llama3) return std::string("smollm");
    if (!digits && !llama3) return std::string("gpt2");
    return Bad(source, "pre_tokenizer", "unsupported combination of Digits and Split");
  }
  return Bad(source, "pre_tokenizer.type", absl::StrCat("unsupported '", type, "'"));
}

}  // namespace

absl::StatusOr<TokenizerSpec> TokenizerSpecFromJson(const std::string& tokenizer_json,
                                                    const std::string& tokenizer_config_json,
                                                    const std::string& source) {
  json doc = json::parse(tokenizer_json, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object())
    return absl::InvalidArgumentError(absl::StrCat(source, ": not valid JSON"));
  TokenizerSpec spec;
  const json& model = doc.value("model", json::object());
  std::string type = model.value("type", "");
  if (type != "BPE") return Bad(source, "model.type", absl::StrCat("'", type, "' is not supported (BPE only)"));
  ATOMSERVE_ASSIGN_OR_RETURN(spec.pre, PreFamily(doc.value("pre_tokenizer", json()), source));

  const json& vocab = model.value("vocab", json::object());
  if (!vocab.is_object() || vocab.empty()) return Bad(source, "model.vocab", "missing or empty");
  int64_t max_id = -1;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer()) return Bad(source, "model.vocab", "ids must be integers");
    max_id = std::max<int64_t>(max_id, it.value().get<int64_t>());
  }
  const json& added = doc.value("added_tokens", json::array());
  for (const json& a : added) max_id = std::max<int64_t>(max_id, a.value("id", int64_t{-1}));
  if (max_id < 0 || max_id > (1 << 24)) return Bad(source, "model.vocab", "ids out of range");
  spec.tokens.assign(max_id + 1, "");
  spec.token_types.assign(max_id + 1, TokenType::kUnused);
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    int64_t id = it.value().get<int64_t>();
    if (id < 0) return Bad(source, "model.vocab", "negative id");
    spec.tokens[id] = it.key();
    spec.token_types[id] = TokenType::kNormal;
  }
  for (const json& a : added) {
    int64_t id = a.value("id", int64_t{-1});
    if (id < 0) return Bad(source, "added_tokens[].id", "missing or negative");
    spec.tokens[id] = a.value("content", "");
    spec.token_types[id] = a.value("special", false) ? TokenType::kControl : TokenType::kUserDefined;
  }
  const json& merges = model.value("merges", json::array());
  spec.merges.reserve(merges.size());
  for (const json& m : merges) {
    if (m.is_string()) {
      spec.merges.push_back(m.get<std::string>());
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      spec.merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
    } else {
      return Bad(source, "model.merges", "entries must be \"a b\" or [a, b]");
    }
  }

  auto id_of = [&](const std::string& tok) -> int32_t {
    for (size_t i = 0; i < spec.tokens.size(); ++i)
      if (spec.tokens[i] == tok) return static_cast<int32_t>(i);
    return -1;
  };
  if (!tokenizer_config_json.empty()) {
    json cfg = json::parse(tokenizer_config_json, nullptr, false);
    if (cfg.is_discarded() || !cfg.is_object())
      return absl::InvalidArgumentError(absl::StrCat(source, ": tokenizer_config.json is not valid JSON"));
    auto token_field = [&](const char* key) -> std::string {
      if (!cfg.contains(key)) return "";
      const json& v = cfg[key];
      if (v.is_string()) return v.get<std::string>();
      if (v.is_object()) return v.value("content", "");
      return "";
    };
    if (auto t = token_field("bos_token"); !t.empty()) spec.bos_id = id_of(t);
    if (auto t = token_field("eos_token"); !t.empty()) spec.eos_id = id_of(t);
    if (auto t = token_field("unk_token"); !t.empty()) spec.unk_id = id_of(t);
    if (auto t = token_field("pad_token"); !t.empty()) spec.pad_id = id_of(t);
    if (cfg.contains("chat_template") && cfg["chat_template"].is_string())
      spec.chat_template = cfg["chat_template"].get<std::string>();
    spec.add_bos = cfg.value("add_bos_token", false);
  }
  // End-of-turn markers of the chat formats this project knows.
  for (const char* t : {"<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>"}) {
    int32_t id = id_of(t);
    if (id >= 0 && id != spec.eos_id) spec.extra_eos_ids.push_back(id);
  }
  return spec;
}

}  // namespace atomserve
