#include "runtime/model_config.h"

#include <cmath>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"

namespace atomserve {
namespace {

// Spelling of each field in the two file formats, so that an error names the
// key the user can find in the file.
struct KeyNames {
  const char* vocab;
  const char* hidden;
  const char* intermediate;
  const char* layers;
  const char* heads;
  const char* kv_heads;
  const char* head_dim;
  const char* max_position;
  const char* rope_theta;
  const char* rms_eps;
  const char* rope_factor;
  const char* rope_low;
  const char* rope_high;
  const char* rope_original;
};

constexpr KeyNames kHfKeys = {
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "max_position_embeddings", "rope_theta", "rms_norm_eps",
    "rope_scaling.factor", "rope_scaling.low_freq_factor", "rope_scaling.high_freq_factor",
    "rope_scaling.original_max_position_embeddings"};

constexpr KeyNames kGgufKeys = {
    "llama.vocab_size", "llama.embedding_length", "llama.feed_forward_length",
    "llama.block_count", "llama.attention.head_count", "llama.attention.head_count_kv",
    "llama.rope.dimension_count", "llama.context_length", "llama.rope.freq_base",
    "llama.attention.layer_norm_rms_epsilon", "llama.rope.scaling.factor",
    "rope low_freq_factor", "rope high_freq_factor", "llama.rope.scaling.original_context_length"};

// Caps far above any real Llama but low enough that shape products and
// per-layer loops cannot overflow or run away on a crafted file.
constexpr int64_t kMaxDim = int64_t{1} << 24;
constexpr int64_t kMaxLayers = 4096;

absl::Status Bad(const std::string& source, const char* key, int64_t value, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": ", key, "=", value, " ", why));
}

absl::Status CheckRange(const std::string& source, const char* key, int64_t value, int64_t max) {
  if (value <= 0) return Bad(source, key, value, "must be positive");
  if (value > max) return Bad(source, key, value, absl::StrCat("is larger than the supported ", max));
  return absl::OkStatus();
}

absl::Status CheckPositiveFloat(const std::string& source, const char* key, float value) {
  if (std::isfinite(value) && value > 0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(source, ": ", key, "=", value, " must be positive"));
}

absl::Status ValidateRope(const ModelConfig& c, const KeyNames& k, const std::string& source) {
  if (auto st = CheckPositiveFloat(source, k.rope_theta, c.rope_theta); !st.ok()) return st;
  const RopeScaling& r = c.rope_scaling;
  if (r.type == RopeScalingType::kNone) return absl::OkStatus();
  if (auto st = CheckPositiveFloat(source, k.rope_factor, r.factor); !st.ok()) return st;
  if (r.type != RopeScalingType::kLlama3) return absl::OkStatus();
  if (auto st = CheckPositiveFloat(source, k.rope_low, r.low_freq_factor); !st.ok()) return st;
  if (!(r.high_freq_factor > r.low_freq_factor))
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", k.rope_high, "=", r.high_freq_factor,
                                                   " must exceed ", k.rope_low, "=", r.low_freq_factor));
  return CheckRange(source, k.rope_original, r.original_max_position, kMaxDim);
}

}  // namespace

absl::Status ModelConfig::Validate(const std::string& source) const {
  const bool hf = absl::EndsWith(source, ".json");
  const KeyNames& k = hf ? kHfKeys : kGgufKeys;
  for (auto [key, value, max] : {std::tuple{k.vocab, vocab_size, kMaxDim},
                                 std::tuple{k.hidden, hidden_size, kMaxDim},
                                 std::tuple{k.intermediate, intermediate_size, kMaxDim},
                                 std::tuple{k.layers, num_layers, kMaxLayers},
                                 std::tuple{k.heads, num_heads, kMaxDim},
                                 std::tuple{k.kv_heads, num_kv_heads, kMaxDim},
                                 std::tuple{k.max_position, max_position, int64_t{1} << 40}}) {
    if (auto st = CheckRange(source, key, value, max); !st.ok()) return st;
  }
  int64_t hd = head_dim;
  if (hd == 0) {
    if (hidden_size % num_heads != 0)
      return Bad(source, k.heads, num_heads,
                 absl::StrCat("does not divide ", k.hidden, "=", hidden_size));
    hd = hidden_size / num_heads;
  } else if (auto st = CheckRange(source, k.head_dim, hd, kMaxDim); !st.ok()) {
    return st;
  }
  if (num_heads % num_kv_heads != 0)
    return Bad(source, k.kv_heads, num_kv_heads,
               absl::StrCat("does not divide ", k.heads, "=", num_heads));
  if (hd % 2 != 0) return Bad(source, k.head_dim, hd, "must be even (RoPE rotates pairs)");
  if (auto st = CheckPositiveFloat(source, k.rms_eps, rms_norm_eps); !st.ok()) return st;
  return ValidateRope(*this, k, source);
}

}  // namespace atomserve
