// Random normal test data, never zeros.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace fastattn::testing_data {

inline std::vector<float> random_normal(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(n);
  for (float& e : x) e = normal(rng);
  return x;
}

inline double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = a[i] > b[i] ? a[i] - b[i] : b[i] - a[i];
    if (!(d <= m)) m = d;  // NaN propagates as the maximum
  }
  return m;
}

}  // namespace fastattn::testing_data
