#include "kernels/rope.h"

#include <cmath>

namespace atomserve {

RopeTable RopeTable::Build(const RopeParams& p) {
  RopeTable t;
  t.head_dim = p.head_dim;
  const int64_t half = p.head_dim / 2;
  t.inv_freq.resize(half);
  for (int64_t i = 0; i < half; ++i) {
    double f = 1.0 / std::pow(static_cast<double>(p.theta), (2.0 * i) / static_cast<double>(p.head_dim));
    if (p.scaling_type == 1) {
      f /= p.factor;
    } else if (p.scaling_type == 2) {
      // Llama-3.1 frequency-dependent interpolation.
      const double low_wavelen = p.original_max_position / p.low_freq_factor;
      const double high_wavelen = p.original_max_position / p.high_freq_factor;
      const double wavelen = 2.0 * M_PI / f;
      if (wavelen > low_wavelen) {
        f /= p.factor;
      } else if (wavelen >= high_wavelen) {
        double smooth = (p.original_max_position / wavelen - p.low_freq_factor) /
                        (p.high_freq_factor - p.low_freq_factor);
        f = (1.0 - smooth) * f / p.factor + smooth * f;
      }
    }
    t.inv_freq[i] = static_cast<float>(f);
  }
  return t;
}

}  // namespace atomserve
