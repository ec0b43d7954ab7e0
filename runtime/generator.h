// Single-request text generation: prefill, then decode token by token, with
// stop conditions and UTF-8-safe streaming.
//
// Stop conditions, checked after each token: a stop token id (the
// tokenizer's end-of-sequence/turn ids plus GenerateOptions::stop_token_ids)
// -> "stop"; a stop string appearing in the generated text -> "stop" (the
// text is cut before it); max_tokens generated or the context full ->
// "length". Streaming never splits a UTF-8 character and never emits text that
// could still turn out to be the start of a stop string.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/llama_model.h"
#include "runtime/sampler.h"
#include "runtime/stop_matcher.h"
#include "runtime/tokenizer.h"

namespace atomserve {

struct GenerateOptions {
  int64_t max_tokens = 128;
  SamplingParams sampling;
  std::vector<std::string> stop;
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  int64_t context_length = 0;  // 0 = the model's max_position
  int64_t prefill_chunk = 256; // tokens per prefill forward call
};

struct GenerateResult {
  std::vector<int32_t> tokens;   // generated ids (stop token excluded)
  std::string text;              // generated text (stop string excluded)
  std::string finish_reason;     // "stop" or "length"
  int64_t prompt_tokens = 0;
  double prefill_seconds = 0.0;
  double decode_seconds = 0.0;
};

// Receives each piece of text as soon as it is safe to show.
using TextCallback = std::function<void(const std::string& piece)>;

// Errors: kInvalidArgument (empty prompt, bad sampling params, prompt longer
// than the context), plus model errors.
absl::StatusOr<GenerateResult> Generate(const LlamaModel& model, const Tokenizer& tokenizer,
                                        const std::vector<int32_t>& prompt,
                                        const GenerateOptions& options,
                                        const TextCallback& on_text = nullptr);

// CompleteUtf8Prefix() (declared in runtime/stop_matcher.h, included above).

}  // namespace atomserve
