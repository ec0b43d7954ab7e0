// RoPE frequency table shared by the CPU and GPU kernels.
//
// inv_freq[i] for i in [0, head_dim/2), after the config's scaling (none,
// linear, Llama-3 smooth interpolation). A token at position p rotates the pair
// (d, d + head_dim/2) by angle p * inv_freq[d].
#pragma once

#include <cstdint>
#include <vector>

namespace atomserve {

struct RopeParams {
  int64_t head_dim = 0;
  float theta = 10000.0f;
  // 0 = none, 1 = linear (positions divided by factor), 2 = Llama-3.
  int scaling_type = 0;
  float factor = 1.0f;
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  int64_t original_max_position = 8192;
};

struct RopeTable {
  int64_t head_dim = 0;
  std::vector<float> inv_freq;  // head_dim / 2 entries

  static RopeTable Build(const RopeParams& p);
};

}  // namespace atomserve
