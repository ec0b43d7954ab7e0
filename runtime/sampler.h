// Token sampling: greedy, temperature, top-k, top-p, seeded.
//
// Order of operations (as in common serving stacks): temperature == 0 means
// greedy (argmax, lowest id on ties); otherwise logits / temperature ->
// top-k filter -> softmax -> top-p (nucleus) filter -> draw. top_k <= 0 and
// top_p >= 1 disable those filters. The same seed and logits give the same
// token on every machine (std::mt19937_64 and an explicit uniform draw).
#pragma once

#include <cstdint>
#include <random>
#include <span>

#include "absl/status/status.h"

namespace atomserve {

struct SamplingParams {
  float temperature = 0.0f;
  int32_t top_k = 0;
  float top_p = 1.0f;
  uint64_t seed = 0;

  // kInvalidArgument for temperature < 0 (or NaN) or top_p outside (0, 1].
  absl::Status Validate() const;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  int32_t Sample(std::span<const float> logits);

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
};

int32_t Argmax(std::span<const float> logits);

}  // namespace atomserve
