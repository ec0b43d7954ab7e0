#include "runtime/perplexity.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"

namespace atomserve {

double TokenNll(std::span<const float> logits, int32_t target) {
  float max = logits[0];
  for (float v : logits) max = std::max(max, v);
  double sum = 0.0;
  for (float v : logits) sum += std::exp(static_cast<double>(v) - max);
  return std::log(sum) - (static_cast<double>(logits[target]) - max);
}

absl::StatusOr<PerplexityResult> EvaluatePerplexity(const LlamaModel& model, std::span<const int32_t> ids,
                                                    const PerplexityOptions& options, const ProgressFn& progress) {
  if (options.ctx < 2) return absl::InvalidArgumentError("perplexity: ctx must be >= 2");
  if (options.max_tokens < 0) return absl::InvalidArgumentError("perplexity: max_tokens must be >= 0");
  int64_t total = static_cast<int64_t>(ids.size());
  if (options.max_tokens > 0) total = std::min(total, options.max_tokens);
  if (total < 2) return absl::InvalidArgumentError(absl::StrCat("perplexity: ", total, " tokens are too few"));
  const int64_t windows = std::max<int64_t>(1, total / options.ctx);
  const int64_t window_len = std::min(options.ctx, total);

  const auto start = std::chrono::steady_clock::now();
  PerplexityResult r;
  const int64_t vocab = model.config().vocab_size;
  DenseKvCache cache = model.NewCache(window_len);
  std::vector<float> logits;
  for (int64_t w = 0; w < windows; ++w) {
    std::span<const int32_t> window = ids.subspan(w * window_len, window_len);
    cache.Truncate(0);
    ATOMSERVE_RETURN_IF_ERROR(model.Forward(window, cache, &logits, /*all_logits=*/true));
    for (int64_t t = 0; t + 1 < window_len; ++t) {
      r.nll_sum += TokenNll(std::span<const float>(logits).subspan(t * vocab, vocab), window[t + 1]);
    }
    r.scored_tokens += window_len - 1;
    r.windows += 1;
    r.tokens_used += window_len;
    if (progress) {
      progress(w + 1, windows, absl::StrFormat("window %d/%d ppl %.3f", w + 1, windows,
                                               std::exp(r.nll_sum / r.scored_tokens)));
    }
  }
  r.perplexity = std::exp(r.nll_sum / r.scored_tokens);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return r;
}

}  // namespace atomserve
