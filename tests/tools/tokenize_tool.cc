// Encodes lines of text with the atomserve Tokenizer, for the parity tests.
//
//   tokenize_tool (--gguf FILE | --tokenizer-json FILE [--tokenizer-config FILE])
//                 [--no-special] [--skip-special] [--pretokenize] < input.jsonl > output.jsonl
//
// Each input line is a JSON string. Each output line is
//   {"ids": [...], "decoded": "..."}
// where decoded = Decode(ids); when that is not valid UTF-8 the object has
// "decoded_hex" (lowercase hex of the bytes) instead. --no-special encodes
// special tokens as plain text; --skip-special drops them when decoding.
// --pretokenize prints {"pieces": [...]} instead: the pre-tokens of the whole
// line under the spec's pre-tokenizer family (no special-token splitting).
// A line that is not a JSON string yields {"error": "..."}.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "runtime/checkpoint.h"
#include "runtime/tokenizer.h"
#include "runtime/tokenizer_json.h"
#include "runtime/unicode.h"

namespace {

using nlohmann::json;

struct Options {
  std::string gguf, tokenizer_json, tokenizer_config;
  bool allow_special = true;
  bool skip_special = false;
  bool pretokenize = false;
};

bool ParseArgs(int argc, char** argv, Options* opt) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](std::string* out) {
      if (i + 1 >= argc) return false;
      *out = argv[++i];
      return true;
    };
    if (a == "--gguf") {
      if (!value(&opt->gguf)) return false;
    } else if (a == "--tokenizer-json") {
      if (!value(&opt->tokenizer_json)) return false;
    } else if (a == "--tokenizer-config") {
      if (!value(&opt->tokenizer_config)) return false;
    } else if (a == "--no-special") {
      opt->allow_special = false;
    } else if (a == "--skip-special") {
      opt->skip_special = true;
    } else if (a == "--pretokenize") {
      opt->pretokenize = true;
    } else {
      return false;
    }
  }
  return opt->gguf.empty() != opt->tokenizer_json.empty();
}

bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return true;
}

absl::StatusOr<atomserve::TokenizerSpec> LoadSpec(const Options& opt) {
  if (!opt.gguf.empty()) {
    // Loads (and dequantizes) the weights too; fine for a test tool.
    absl::StatusOr<atomserve::Checkpoint> ckpt = atomserve::LoadGguf(opt.gguf);
    if (!ckpt.ok()) return ckpt.status();
    return std::move(ckpt->tokenizer);
  }
  std::string tj, cfg;
  if (!ReadFile(opt.tokenizer_json, &tj)) return absl::NotFoundError("cannot read " + opt.tokenizer_json);
  if (!opt.tokenizer_config.empty() && !ReadFile(opt.tokenizer_config, &cfg))
    return absl::NotFoundError("cannot read " + opt.tokenizer_config);
  return atomserve::TokenizerSpecFromJson(tj, cfg, opt.tokenizer_json);
}

std::string Hex(const std::string& bytes) {
  static const char* kDigits = "0123456789abcdef";
  std::string out;
  for (unsigned char b : bytes) {
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 15]);
  }
  return out;
}

json PreTokenizeLine(atomserve::unicode::PreTokenizer family, const std::string& text) {
  json pieces = json::array();
  for (std::string_view piece : atomserve::unicode::PreTokenize(family, text)) {
    std::string p(piece);
    pieces.push_back(atomserve::unicode::IsValidUtf8(p) ? p : "hex:" + Hex(p));
  }
  return json{{"pieces", pieces}};
}

json EncodeLine(const atomserve::Tokenizer& tok, const atomserve::TokenizerSpec& spec,
                const std::string& line, const Options& opt) {
  json in = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (in.is_discarded() || !in.is_string()) return json{{"error", "input line is not a JSON string"}};
  if (opt.pretokenize) return PreTokenizeLine(*atomserve::unicode::ParsePreTokenizer(spec.pre), in.get<std::string>());
  std::vector<int32_t> ids = tok.Encode(in.get<std::string>(), opt.allow_special);
  std::string decoded = tok.Decode(ids, opt.skip_special);
  json out = {{"ids", ids}};
  if (atomserve::unicode::IsValidUtf8(decoded)) {
    out["decoded"] = decoded;
  } else {
    out["decoded_hex"] = Hex(decoded);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  if (!ParseArgs(argc, argv, &opt)) {
    std::fprintf(stderr,
                 "usage: %s (--gguf FILE | --tokenizer-json FILE [--tokenizer-config FILE]) "
                 "[--no-special] [--skip-special] < in.jsonl > out.jsonl\n",
                 argv[0]);
    return 2;
  }
  absl::StatusOr<atomserve::TokenizerSpec> spec = LoadSpec(opt);
  if (!spec.ok()) {
    std::fprintf(stderr, "tokenize_tool: %s\n", spec.status().ToString().c_str());
    return 1;
  }
  absl::StatusOr<std::unique_ptr<atomserve::Tokenizer>> tok = atomserve::Tokenizer::Create(*spec);
  if (!tok.ok()) {
    std::fprintf(stderr, "tokenize_tool: %s\n", tok.status().ToString().c_str());
    return 1;
  }
  std::ios::sync_with_stdio(false);
  std::string line;
  while (std::getline(std::cin, line)) std::cout << EncodeLine(**tok, *spec, line, opt).dump() << '\n';
  std::cout.flush();
  return std::cout ? 0 : 1;
}
