// Seeded random data for tests: the same seed gives the same values on every
// machine that runs the same standard library.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace atomserve::testing_util {

inline std::vector<float> RandomNormal(int64_t n, uint32_t seed, float stddev = 1.0f, float mean = 0.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(mean, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

}  // namespace atomserve::testing_util
