// Float64 reference attention: the oracle every backend is tested against.
// Row by row, no tiling and no online softmax, so that it is easy to trust.
#include <cmath>
#include <limits>
#include <vector>

#include <omp.h>

#include "common/scalar_convert.h"
#include "cpu/backend.h"

namespace fastattn::cpu {
namespace {

void reference_row(const AttentionParams& p, int64_t b, int64_t h, int64_t i, int64_t lq,
                   int64_t lk, std::vector<double>& q, std::vector<double>& scores,
                   std::vector<double>& acc) {
  const int64_t d = p.head_dim;
  const int64_t hk = h / p.group_size();
  const int64_t qo = q_offset(p, b, i, h);
  for (int64_t c = 0; c < d; ++c) q[c] = load_as_float(p.q, qo + c, p.dtype);

  int64_t begin = 0, end = 0;
  p.key_range(b, i, lq, lk, &begin, &end);
  const BlockMaskView* block = p.mask.block;
  constexpr double kNegInf = -std::numeric_limits<double>::infinity();
  double row_max = kNegInf;
  for (int64_t j = begin; j < end; ++j) {
    if (block != nullptr && !block->allowed(b, h, i, j)) {
      scores[j - begin] = kNegInf;
      continue;
    }
    const int64_t ko = k_offset(p.kv, p.cu_seqlens_k, b, j, hk);
    double s = 0;
    for (int64_t c = 0; c < d; ++c) s += q[c] * double(load_as_float(p.kv.k, ko + c, p.dtype));
    s *= double(p.scale);
    if (p.softcap > 0) s = double(p.softcap) * std::tanh(s / double(p.softcap));
    scores[j - begin] = s;
    row_max = std::max(row_max, s);
  }
  std::fill(acc.begin(), acc.end(), 0.0);
  double sum = 0;
  for (int64_t j = begin; j < end && row_max > kNegInf; ++j) {
    if (scores[j - begin] == kNegInf) continue;
    const double e = std::exp(scores[j - begin] - row_max);
    sum += e;
    const int64_t vo = v_offset(p.kv, p.cu_seqlens_k, b, j, hk);
    for (int64_t c = 0; c < d; ++c) acc[c] += e * double(load_as_float(p.kv.v, vo + c, p.dtype));
  }
  const int64_t oo = out_offset(p, b, i, h);
  for (int64_t c = 0; c < d; ++c) {
    store_from_float(p.out, oo + c, p.dtype, sum > 0 ? float(acc[c] / sum) : 0.0f);
  }
  if (p.lse) {
    p.lse[lse_offset(p, b, i, h)] =
        sum > 0 ? float(row_max + std::log(sum)) : -std::numeric_limits<float>::infinity();
  }
}

}  // namespace

void reference_attention(const AttentionParams& p) {
  const int64_t work = p.batch * p.heads_q;
#pragma omp parallel num_threads(p.num_threads > 0 ? p.num_threads : omp_get_max_threads())
  {
    std::vector<double> q(p.head_dim), acc(p.head_dim), scores(std::max<int64_t>(p.seqlen_k, 1));
#pragma omp for schedule(dynamic)
    for (int64_t w = 0; w < work; ++w) {
      const int64_t b = w / p.heads_q, h = w % p.heads_q;
      int64_t first = 0, lq = 0;
      p.q_span(b, &first, &lq);
      const int64_t lk = p.k_len(b);
      for (int64_t i = 0; i < lq; ++i) reference_row(p, b, h, i, lq, lk, q, scores, acc);
    }
  }
}

}  // namespace fastattn::cpu
