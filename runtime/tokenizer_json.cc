#include "runtime/tokenizer_json.h"

#include <algorithm>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace atomserve {
namespace {

using nlohmann::json;

absl::Status Bad(const std::string& source, const std::string& key, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": key '", key, "': ", what));
}

// Typed reads that never throw: nlohmann's value() throws on a type mismatch,
// and files come from outside.
const json* Find(const json& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  return it == obj.end() || it->is_null() ? nullptr : &*it;
}

std::string StringOr(const json& obj, const char* key, const std::string& fallback = "") {
  const json* v = Find(obj, key);
  return v && v->is_string() ? v->get<std::string>() : fallback;
}

bool BoolOr(const json& obj, const char* key, bool fallback) {
  const json* v = Find(obj, key);
  return v && v->is_boolean() ? v->get<bool>() : fallback;
}

// The Llama-3 (tiktoken cl100k-style) split pattern.
constexpr const char* kLlama3Pattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// Names one pre-tokenizer step in the vocabulary of the known pipelines, or
// returns an error for anything the Tokenizer would not reproduce exactly.
absl::StatusOr<std::string> StepName(const json& step, const std::string& source) {
  const std::string type = StringOr(step, "type");
  if (type == "ByteLevel") {
    if (BoolOr(step, "add_prefix_space", false))
      return Bad(source, "pre_tokenizer ByteLevel.add_prefix_space", "true is not supported");
    return std::string(BoolOr(step, "use_regex", true) ? "bytelevel" : "bytelevel-noregex");
  }
  if (type == "Digits") {
    if (!BoolOr(step, "individual_digits", false))
      return Bad(source, "pre_tokenizer Digits.individual_digits", "false is not supported");
    return std::string("digits");
  }
  if (type == "Split") {
    const json* pattern = Find(step, "pattern");
    std::string regex = pattern ? StringOr(*pattern, "Regex") : "";
    if (regex != kLlama3Pattern)
      return Bad(source, "pre_tokenizer Split.pattern",
                 absl::StrCat("unsupported split pattern '", regex.substr(0, 80), "'"));
    if (StringOr(step, "behavior", "Isolated") != "Isolated" || BoolOr(step, "invert", false))
      return Bad(source, "pre_tokenizer Split.behavior", "only Isolated, not inverted, is supported");
    return std::string("split-llama3");
  }
  return Bad(source, "pre_tokenizer.type", absl::StrCat("unsupported '", type, "'"));
}

// Maps the pre_tokenizer section onto a pre-tokenizer family name.
absl::StatusOr<std::string> PreFamily(const json& doc, const std::string& source) {
  const json* pre = Find(doc, "pre_tokenizer");
  if (!pre) return Bad(source, "pre_tokenizer", "missing; byte-level BPE needs ByteLevel");
  std::vector<std::string> steps;
  if (StringOr(*pre, "type") == "Sequence") {
    const json* list = Find(*pre, "pretokenizers");
    if (!list || !list->is_array()) return Bad(source, "pre_tokenizer.pretokenizers", "missing");
    for (const json& step : *list) {
      ATOMSERVE_ASSIGN_OR_RETURN(std::string name, StepName(step, source));
      steps.push_back(name);
    }
  } else {
    ATOMSERVE_ASSIGN_OR_RETURN(std::string name, StepName(*pre, source));
    steps.push_back(name);
  }
  using Steps = std::vector<std::string>;
  if (steps == Steps{"bytelevel"}) return std::string("gpt2");
  if (steps == Steps{"digits", "bytelevel"}) return std::string("smollm");
  if (steps == Steps{"split-llama3", "bytelevel-noregex"}) return std::string("llama3");
  std::string joined;
  for (const std::string& s : steps) absl::StrAppend(&joined, joined.empty() ? "" : ", ", s);
  return Bad(source, "pre_tokenizer", absl::StrCat("unsupported pipeline [", joined, "]"));
}

// Rejects normalizers and BPE options the Tokenizer does not implement, so a
// file is either tokenized exactly as HF does or refused.
absl::Status CheckUnsupported(const json& doc, const json& model, const std::string& family,
                              const std::string& source) {
  if (const json* norm = Find(doc, "normalizer")) {
    const json* list = Find(*norm, "normalizers");
    bool empty_sequence = StringOr(*norm, "type") == "Sequence" && list && list->is_array() && list->empty();
    if (!empty_sequence)
      return Bad(source, "normalizer", absl::StrCat("'", StringOr(*norm, "type"), "' is not supported"));
  }
  if (const json* v = Find(model, "dropout"); v && !(v->is_number() && v->get<double>() == 0.0))
    return Bad(source, "model.dropout", "BPE dropout is not supported");
  if (BoolOr(model, "byte_fallback", false)) return Bad(source, "model.byte_fallback", "not supported");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (!StringOr(model, key).empty()) return Bad(source, absl::StrCat("model.", key), "not supported");
  // The Tokenizer applies ignore_merges exactly for the llama3 family (as
  // llama.cpp does); TokenizerSpec has no field to carry it otherwise.
  bool ignore_merges = BoolOr(model, "ignore_merges", false);
  if (ignore_merges != (family == "llama3"))
    return Bad(source, "model.ignore_merges",
               absl::StrCat(ignore_merges ? "true" : "false", " is not supported with pre-tokenizer '",
                            family, "'"));
  return absl::OkStatus();
}

absl::Status ReadVocab(const json& model, const json& added, TokenizerSpec* spec, const std::string& source) {
  const json* vocab = Find(model, "vocab");
  if (!vocab || !vocab->is_object() || vocab->empty()) return Bad(source, "model.vocab", "missing or empty");
  constexpr int64_t kMaxId = 1 << 24;
  int64_t max_id = -1;
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    if (!it.value().is_number_integer()) return Bad(source, "model.vocab", "ids must be integers");
    int64_t id = it.value().get<int64_t>();
    if (id < 0 || id >= kMaxId) return Bad(source, "model.vocab", absl::StrCat("id ", id, " out of range"));
    max_id = std::max(max_id, id);
  }
  for (const json& a : added) {
    const json* id = Find(a, "id");
    const json* content = Find(a, "content");
    if (!id || !id->is_number_integer() || id->get<int64_t>() < 0 || id->get<int64_t>() >= kMaxId)
      return Bad(source, "added_tokens[].id", "missing or out of range");
    if (!content || !content->is_string()) return Bad(source, "added_tokens[].content", "missing");
    max_id = std::max(max_id, id->get<int64_t>());
  }
  // Ids not named anywhere stay as empty, unused tokens.
  spec->tokens.assign(max_id + 1, "");
  spec->token_types.assign(max_id + 1, TokenType::kUnused);
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    int64_t id = it.value().get<int64_t>();
    spec->tokens[id] = it.key();
    spec->token_types[id] = TokenType::kNormal;
  }
  for (const json& a : added) {
    int64_t id = a["id"].get<int64_t>();
    spec->tokens[id] = a["content"].get<std::string>();
    spec->token_types[id] = BoolOr(a, "special", false) ? TokenType::kControl : TokenType::kUserDefined;
  }
  return absl::OkStatus();
}

absl::Status ReadMerges(const json& model, TokenizerSpec* spec, const std::string& source) {
  const json* merges = Find(model, "merges");
  if (!merges) return absl::OkStatus();
  if (!merges->is_array()) return Bad(source, "model.merges", "must be a list");
  spec->merges.reserve(merges->size());
  for (const json& m : *merges) {
    if (m.is_string()) {
      spec->merges.push_back(m.get<std::string>());
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      spec->merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
    } else {
      return Bad(source, "model.merges", "entries must be \"a b\" or [a, b]");
    }
  }
  return absl::OkStatus();
}

// First special token of TemplateProcessing's "single" template (Llama-3's
// <|begin_of_text|>): the BOS the HF tokenizer adds. Empty when none.
std::string TemplateBos(const json& doc) {
  const json* post = Find(doc, "post_processor");
  if (!post) return "";
  std::vector<const json*> procs{post};
  if (const json* list = Find(*post, "processors"); list && list->is_array())
    for (const json& p : *list) procs.push_back(&p);
  for (const json* p : procs) {
    if (StringOr(*p, "type") != "TemplateProcessing") continue;
    const json* single = Find(*p, "single");
    if (!single || !single->is_array() || single->empty()) return "";
    const json* special = Find((*single)[0], "SpecialToken");
    return special ? StringOr(*special, "id") : "";
  }
  return "";
}

// tokenizer_config.json token fields are a string or {"content": ...}.
std::string ConfigToken(const json& cfg, const char* key) {
  const json* v = Find(cfg, key);
  if (!v) return "";
  if (v->is_string()) return v->get<std::string>();
  return StringOr(*v, "content");
}

// chat_template is a string, or a list of {name, template} (take "default").
std::string ChatTemplate(const json& cfg) {
  const json* v = Find(cfg, "chat_template");
  if (!v) return "";
  if (v->is_string()) return v->get<std::string>();
  if (v->is_array())
    for (const json& t : *v)
      if (StringOr(t, "name") == "default") return StringOr(t, "template");
  return "";
}

}  // namespace

absl::StatusOr<TokenizerSpec> TokenizerSpecFromJson(const std::string& tokenizer_json,
                                                    const std::string& tokenizer_config_json,
                                                    const std::string& source) {
  json doc = json::parse(tokenizer_json, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object())
    return absl::InvalidArgumentError(absl::StrCat(source, ": not valid JSON"));
  TokenizerSpec spec;
  const json* model = Find(doc, "model");
  if (!model || !model->is_object()) return Bad(source, "model", "missing");
  std::string type = StringOr(*model, "type");
  if (type != "BPE") return Bad(source, "model.type", absl::StrCat("'", type, "' is not supported (BPE only)"));
  ATOMSERVE_ASSIGN_OR_RETURN(spec.pre, PreFamily(doc, source));
  ATOMSERVE_RETURN_IF_ERROR(CheckUnsupported(doc, *model, spec.pre, source));
  const json* added = Find(doc, "added_tokens");
  if (added && !added->is_array()) return Bad(source, "added_tokens", "must be a list");
  ATOMSERVE_RETURN_IF_ERROR(ReadVocab(*model, added ? *added : json::array(), &spec, source));
  ATOMSERVE_RETURN_IF_ERROR(ReadMerges(*model, &spec, source));

  std::unordered_map<std::string, int32_t> ids;
  for (size_t i = 0; i < spec.tokens.size(); ++i)
    if (!spec.tokens[i].empty()) ids.try_emplace(spec.tokens[i], static_cast<int32_t>(i));
  auto id_of = [&](const std::string& tok) -> int32_t {
    auto it = ids.find(tok);
    return it == ids.end() ? -1 : it->second;
  };
  // Without tokenizer_config.json, BOS comes from the post-processor template.
  std::string template_bos = TemplateBos(doc);
  if (!template_bos.empty()) {
    spec.bos_id = id_of(template_bos);
    spec.add_bos = spec.bos_id >= 0;
  }
  if (!tokenizer_config_json.empty()) {
    json cfg = json::parse(tokenizer_config_json, nullptr, /*allow_exceptions=*/false);
    if (cfg.is_discarded() || !cfg.is_object())
      return absl::InvalidArgumentError(absl::StrCat(source, ": tokenizer_config.json is not valid JSON"));
    if (auto t = ConfigToken(cfg, "bos_token"); !t.empty()) spec.bos_id = id_of(t);
    if (auto t = ConfigToken(cfg, "eos_token"); !t.empty()) spec.eos_id = id_of(t);
    if (auto t = ConfigToken(cfg, "unk_token"); !t.empty()) spec.unk_id = id_of(t);
    if (auto t = ConfigToken(cfg, "pad_token"); !t.empty()) spec.pad_id = id_of(t);
    spec.chat_template = ChatTemplate(cfg);
    spec.add_bos = BoolOr(cfg, "add_bos_token", spec.add_bos) && spec.bos_id >= 0;
  }
  // End-of-turn markers of the chat formats this project knows.
  for (const char* t : {"<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>"}) {
    int32_t id = id_of(t);
    if (id >= 0 && id != spec.eos_id) spec.extra_eos_ids.push_back(id);
  }
  return spec;
}

}  // namespace atomserve
