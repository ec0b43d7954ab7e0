// Perplexity of a model over a token stream.
//
// Method (as in GPTQ's and Atom's WikiText-2 evaluation): the stream is cut
// into consecutive non-overlapping windows of `ctx` tokens; each window runs
// from an empty cache with no BOS added, and every position but the last
// predicts the next token of the same window, so a window of n tokens scores
// n - 1 tokens (the first token of each window is never predicted). A final
// window shorter than ctx is dropped unless it is the only one.
// ppl = exp(Σ NLL / scored tokens), with the log-softmax in double.
//
//   ATOMSERVE_ASSIGN_OR_RETURN(PerplexityResult r,
//                              EvaluatePerplexity(*model, ids, {.ctx = 512}, progress));
//
// Thread safety: runs Forward() on the model (see llama_model.h).
#pragma once

#include <cstdint>
#include <span>

#include "absl/status/statusor.h"
#include "common/progress.h"
#include "runtime/llama_model.h"

namespace atomserve {

struct PerplexityOptions {
  int64_t ctx = 512;         // window length in tokens
  int64_t max_tokens = 0;    // use at most this many tokens of the stream; 0 = all
};

struct PerplexityResult {
  double perplexity = 0.0;
  double nll_sum = 0.0;        // natural log
  int64_t scored_tokens = 0;
  int64_t windows = 0;
  int64_t tokens_used = 0;     // tokens fed to the model
  double seconds = 0.0;
};

// Errors: kInvalidArgument for ctx < 2, max_tokens < 0, or fewer than 2
// tokens to evaluate; model errors.
absl::StatusOr<PerplexityResult> EvaluatePerplexity(const LlamaModel& model, std::span<const int32_t> ids,
                                                    const PerplexityOptions& options,
                                                    const ProgressFn& progress = nullptr);

// -log softmax(logits)[target], computed in double.
double TokenNll(std::span<const float> logits, int32_t target);

}  // namespace atomserve
