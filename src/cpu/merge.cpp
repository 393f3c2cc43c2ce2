// Exact merge of partial attention states: the log-sum-exp of the parts is
// the LSE of the union, and each part's output is weighted by its share.
#include <cmath>
#include <limits>

#include <omp.h>

#include "common/scalar_convert.h"
#include "cpu/backend.h"

namespace fastattn::cpu {

void merge_states(const MergeParams& p) {
  const int64_t rows = p.batch * p.seqlen * p.heads;
  const int n = p.num_states;
#pragma omp parallel for schedule(static) \
    num_threads(p.num_threads > 0 ? p.num_threads : omp_get_max_threads())
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t b = r / (p.seqlen * p.heads);
    const int64_t l = (r / p.heads) % p.seqlen;
    const int64_t h = r % p.heads;
    double lse[MergeParams::kMaxStates];
    double max_lse = -std::numeric_limits<double>::infinity();
    for (int i = 0; i < n; ++i) {
      const auto& s = p.lse_strides[i];
      lse[i] = p.lse[i][b * s[0] + h * s[1] + l * s[2]];
      max_lse = std::max(max_lse, lse[i]);
    }
    // All parts empty (or the max is +inf/NaN, which no valid state has):
    // the union is empty too.
    const bool empty = !std::isfinite(max_lse);
    double weight[MergeParams::kMaxStates];
    double total = 0;
    for (int i = 0; i < n; ++i) {
      weight[i] = empty ? 0.0 : std::exp(lse[i] - max_lse);
      total += weight[i];
    }
    const int64_t oo = b * p.out_strides[0] + l * p.out_strides[1] + h * p.out_strides[2];
    for (int64_t c = 0; c < p.head_dim; ++c) {
      double acc = 0;
      for (int i = 0; i < n; ++i) {
        if (weight[i] == 0.0) continue;
        const auto& s = p.o_strides[i];
        acc += weight[i] * load_as_float(p.o[i], b * s[0] + l * s[1] + h * s[2] + c, p.o_dtype[i]);
      }
      store_from_float(p.out, oo + c, p.out_dtype, empty ? 0.0f : float(acc / total));
    }
    if (p.out_lse) {
      const auto& s = p.out_lse_strides;
      p.out_lse[b * s[0] + h * s[1] + l * s[2]] =
          empty ? -std::numeric_limits<float>::infinity() : float(max_lse + std::log(total));
    }
  }
}

}  // namespace fastattn::cpu
