// Byte-level BPE tokenizer (GPT-2 family: SmolLM2, Llama-3, Mistral-Nemo, ...).
//
// Built from a TokenizerSpec (GGUF metadata or tokenizer.json). Encoding
// splits out special/added tokens first (when allow_special), then
// pre-tokenizes with the spec's pre-tokenizer (Unicode-aware, no std::regex),
// maps bytes to the GPT-2 byte alphabet and applies merges by rank. Output ids
// are identical to the HF `tokenizers` library for the same tokenizer.json.
//
// Decode is the exact inverse on bytes; DecodeToken gives the raw bytes of one
// token (which may be an incomplete UTF-8 sequence; streaming callers buffer).
//
// Thread safety: const methods are safe to call concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/checkpoint.h"

namespace atomserve {

class Tokenizer {
 public:
  // Errors: kInvalidArgument for an unsupported model/pre-tokenizer, a merge
  // naming unknown tokens, or an empty vocabulary.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Create(const TokenizerSpec& spec);
  ~Tokenizer();

  std::vector<int32_t> Encode(std::string_view text, bool allow_special = true) const;
  // Concatenated bytes of the tokens; ids outside the vocabulary are skipped
  // (callers that take ids from the network validate them first).
  std::string Decode(const std::vector<int32_t>& ids, bool skip_special = false) const;
  std::string DecodeToken(int32_t id) const;

  int32_t vocab_size() const;
  int32_t bos_id() const;
  int32_t eos_id() const;
  bool add_bos() const;
  // eos plus the spec's extra end-of-turn ids.
  const std::vector<int32_t>& stop_ids() const;
  bool IsSpecial(int32_t id) const;
  // Id of an exact token string, or -1.
  int32_t TokenId(std::string_view token) const;

  class Impl;

 private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace atomserve
