// Hyper-parameters of a Llama-family model (Llama-2/3, Mistral, SmolLM2).
//
// Filled by the checkpoint loaders from GGUF metadata or HF config.json and
// validated by Validate(), which names the offending key.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace atomserve {

// RoPE frequency scaling variants found in Llama-family configs.
enum class RopeScalingType { kNone, kLinear, kLlama3 };

struct RopeScaling {
  RopeScalingType type = RopeScalingType::kNone;
  float factor = 1.0f;
  // Llama-3 style only.
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  int64_t original_max_position = 8192;
};

struct ModelConfig {
  std::string architecture = "llama";
  std::string name;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;  // hidden_size / num_heads unless the config says otherwise
  int64_t max_position = 2048;
  float rope_theta = 10000.0f;
  RopeScaling rope_scaling;
  float rms_norm_eps = 1e-5f;
  bool tie_word_embeddings = false;

  // Checks shapes and ratios (heads divide hidden, kv heads divide heads, ...).
  // `source` names the file the values came from, for the error message; a
  // source ending in ".json" gets Hugging Face key names in messages, anything
  // else GGUF key names. head_dim == 0 means "hidden_size / num_heads" (the
  // loaders fill it in after validating).
  absl::Status Validate(const std::string& source) const;
};

}  // namespace atomserve
