#include "runtime/generator.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "runtime/stop_matcher.h"

namespace atomserve {
namespace {

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

}  // namespace

absl::StatusOr<GenerateResult> Generate(const LlamaModel& model, const Tokenizer& tokenizer,
                                        const std::vector<int32_t>& prompt,
                                        const GenerateOptions& options, const TextCallback& on_text) {
  if (prompt.empty()) return absl::InvalidArgumentError("the prompt has no tokens");
  ATOMSERVE_RETURN_IF_ERROR(options.sampling.Validate());
  if (options.max_tokens < 0) return absl::InvalidArgumentError("max_tokens must be >= 0");
  const int64_t context = options.context_length > 0 ? options.context_length : model.config().max_position;
  if (static_cast<int64_t>(prompt.size()) >= context)
    return absl::InvalidArgumentError(absl::StrCat("the prompt has ", prompt.size(),
                                                   " tokens; the context holds ", context));
  std::vector<int32_t> stop_ids = options.stop_token_ids;
  if (!options.ignore_eos) stop_ids.insert(stop_ids.end(), tokenizer.stop_ids().begin(), tokenizer.stop_ids().end());

  GenerateResult result;
  result.prompt_tokens = static_cast<int64_t>(prompt.size());
  const int64_t capacity = std::min<int64_t>(context, prompt.size() + options.max_tokens);
  DenseKvCache cache = model.NewCache(capacity);
  std::vector<float> logits;

  auto t0 = std::chrono::steady_clock::now();
  const int64_t chunk = std::max<int64_t>(1, options.prefill_chunk);
  for (size_t begin = 0; begin < prompt.size(); begin += chunk) {
    size_t end = std::min(prompt.size(), begin + chunk);
    ATOMSERVE_RETURN_IF_ERROR(model.Forward(std::span(prompt).subspan(begin, end - begin), cache, &logits));
  }
  result.prefill_seconds = Seconds(t0);

  auto t1 = std::chrono::steady_clock::now();
  Sampler sampler(options.sampling);
  StopMatcher matcher(options.stop, on_text);
  result.finish_reason = "length";
  while (static_cast<int64_t>(result.tokens.size()) < options.max_tokens) {
    const int32_t next = sampler.Sample(logits);
    if (std::find(stop_ids.begin(), stop_ids.end(), next) != stop_ids.end()) {
      result.finish_reason = "stop";
      break;
    }
    result.tokens.push_back(next);
    if (matcher.Append(tokenizer.DecodeToken(next))) {
      result.finish_reason = "stop";
      break;
    }
    if (static_cast<int64_t>(result.tokens.size()) >= options.max_tokens || cache.length() >= capacity) break;
    const int32_t one[1] = {next};
    ATOMSERVE_RETURN_IF_ERROR(model.Forward(one, cache, &logits));
  }
  matcher.Finish();
  result.text = matcher.text();
  result.decode_seconds = Seconds(t1);
  return result;
}

}  // namespace atomserve
