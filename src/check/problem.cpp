#include "check/problem.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "common/scalar_convert.h"

namespace fastattn::check {

float round_to_dtype(float x, fa_dtype t) {
  return round_to(x, static_cast<DType>(static_cast<int>(t)));
}

bool mask_allows(const Case& c, int64_t i, int64_t j, int64_t lq, int64_t lk) {
  const int64_t diag = i + lk - lq;
  switch (c.mask) {
    case FA_MASK_NONE: return true;
    case FA_MASK_CAUSAL: return j <= diag;
    case FA_MASK_SLIDING_WINDOW:
      if (c.window_left >= 0 && j < diag - c.window_left) return false;
      if (c.window_right >= 0 && j > diag + c.window_right) return false;
      return true;
  }
  return true;
}

Problem make_problem(const Case& c, std::mt19937_64& rng) {
  Problem p;
  p.c = c;
  p.scale = c.softmax_scale != 0 ? c.softmax_scale : float(1.0 / std::sqrt(double(c.head_dim)));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const bool varied = c.varlen || c.page_size > 0;
  p.seqs.resize(c.batch);
  for (int64_t b = 0; b < c.batch; ++b) {
    Sequence& s = p.seqs[b];
    s.lq = c.seqlen_q;
    s.lk = c.seqlen_k;
    if (varied && b > 0) {  // the first sequence keeps the maxima
      if (c.varlen) s.lq = std::uniform_int_distribution<int64_t>(0, c.seqlen_q)(rng);
      s.lk = std::uniform_int_distribution<int64_t>(0, c.seqlen_k)(rng);
    }
    auto fill = [&](std::vector<float>& x, int64_t n) {
      x.resize(n);
      for (float& e : x) e = round_to_dtype(normal(rng), c.dtype);
    };
    fill(s.q, s.lq * c.heads_q * c.head_dim);
    fill(s.k, s.lk * c.heads_kv * c.head_dim);
    fill(s.v, s.lk * c.heads_kv * c.head_dim);
  }
  return p;
}

bool reference_result(const Problem& p, Result* out, std::string* error) {
  const Case& c = p.c;
  const int64_t nb = c.batch, hq = c.heads_q, hkv = c.heads_kv, d = c.head_dim;
  std::vector<int32_t> cu_q(nb + 1, 0), cu_k(nb + 1, 0);
  for (int64_t b = 0; b < nb; ++b) {
    cu_q[b + 1] = cu_q[b] + int32_t(p.seqs[b].lq);
    cu_k[b + 1] = cu_k[b] + int32_t(p.seqs[b].lk);
  }
  const int64_t tq = cu_q[nb], tk = cu_k[nb];
  // One extra row keeps data pointers non-null when every sequence is empty.
  std::vector<float> q((tq + 1) * hq * d), k((tk + 1) * hkv * d), v((tk + 1) * hkv * d);
  std::vector<float> o((tq + 1) * hq * d), lse((tq + 1) * hq);
  for (int64_t b = 0; b < nb; ++b) {
    const Sequence& s = p.seqs[b];
    std::copy(s.q.begin(), s.q.end(), q.begin() + cu_q[b] * hq * d);
    std::copy(s.k.begin(), s.k.end(), k.begin() + cu_k[b] * hkv * d);
    std::copy(s.v.begin(), s.v.end(), v.begin() + cu_k[b] * hkv * d);
  }
  auto packed = [](float* data, int64_t t, int64_t h, int64_t dim) {
    fa_tensor x{};
    x.data = data;
    x.dtype = FA_DTYPE_FLOAT32;
    x.ndim = 3;
    x.shape[0] = t;
    x.shape[1] = h;
    x.shape[2] = dim;
    x.strides[0] = h * dim;
    x.strides[1] = dim;
    x.strides[2] = 1;
    return x;
  };
  fa_attention_args a{};
  a.q = packed(q.data(), tq, hq, d);
  a.k = packed(k.data(), tk, hkv, d);
  a.v = packed(v.data(), tk, hkv, d);
  a.out = packed(o.data(), tq, hq, d);
  a.lse.data = lse.data();
  a.lse.dtype = FA_DTYPE_FLOAT32;
  a.lse.ndim = 2;
  a.lse.shape[0] = hq;
  a.lse.shape[1] = tq;
  a.lse.strides[0] = tq;
  a.lse.strides[1] = 1;
  a.cu_seqlens_q = cu_q.data();
  a.cu_seqlens_k = cu_k.data();
  a.num_seqs = nb;
  a.mask.kind = c.mask;
  a.mask.window_left = c.window_left;
  a.mask.window_right = c.window_right;
  a.softmax_scale = p.scale;
  a.softcap = c.softcap;
  fa_run_options opt{};
  opt.backend = FA_BACKEND_CPU_REFERENCE;
  if (fa_attention_forward(&a, &opt) != FA_STATUS_OK) {
    *error = std::string("reference refused the problem: ") + fa_last_error();
    return false;
  }
  out->out.assign(nb, {});
  out->lse.assign(nb, {});
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t lq = p.seqs[b].lq;
    out->out[b].assign(o.begin() + cu_q[b] * hq * d, o.begin() + cu_q[b + 1] * hq * d);
    out->lse[b].resize(hq * lq);
    for (int64_t h = 0; h < hq; ++h) {
      for (int64_t i = 0; i < lq; ++i) out->lse[b][h * lq + i] = lse[h * tq + cu_q[b] + i];
    }
  }
  return true;
}

Result low_precision_result(const Problem& p, fa_dtype rounding) {
  const Case& c = p.c;
  const int64_t hq = c.heads_q, d = c.head_dim, group = c.heads_q / c.heads_kv;
  Result r;
  r.out.resize(c.batch);
  r.lse.resize(c.batch);
  std::vector<float> scores;
  for (int64_t b = 0; b < c.batch; ++b) {
    const Sequence& s = p.seqs[b];
    r.out[b].assign(s.lq * hq * d, 0.0f);
    r.lse[b].assign(hq * s.lq, -std::numeric_limits<float>::infinity());
    scores.resize(s.lk);
    for (int64_t h = 0; h < hq; ++h) {
      const int64_t hk = h / group;
      for (int64_t i = 0; i < s.lq; ++i) {
        const float* q = &s.q[(i * hq + h) * d];
        float row_max = -std::numeric_limits<float>::infinity();
        for (int64_t j = 0; j < s.lk; ++j) {
          if (!mask_allows(c, i, j, s.lq, s.lk)) {
            scores[j] = -std::numeric_limits<float>::infinity();
            continue;
          }
          const float* k = &s.k[(j * c.heads_kv + hk) * d];
          float dot = 0;
          for (int64_t e = 0; e < d; ++e) dot += q[e] * k[e];
          float sc = dot * p.scale;
          if (c.softcap > 0) sc = c.softcap * std::tanh(sc / c.softcap);
          scores[j] = round_to_dtype(sc, rounding);
          row_max = std::max(row_max, scores[j]);
        }
        if (row_max == -std::numeric_limits<float>::infinity()) continue;  // fully masked
        float sum = 0;
        for (int64_t j = 0; j < s.lk; ++j) {
          scores[j] = std::exp(scores[j] - row_max);
          sum += scores[j];
        }
        r.lse[b][h * s.lq + i] = row_max + std::log(sum);
        float* o = &r.out[b][(i * hq + h) * d];
        for (int64_t j = 0; j < s.lk; ++j) {
          const float pj = round_to_dtype(scores[j] / sum, rounding);
          if (pj == 0.0f) continue;
          const float* v = &s.v[(j * c.heads_kv + hk) * d];
          for (int64_t e = 0; e < d; ++e) o[e] += pj * v[e];
        }
        for (int64_t e = 0; e < d; ++e) o[e] = round_to_dtype(o[e], rounding);
      }
    }
  }
  return r;
}

double max_abs_diff(const Result& a, const Result& b, bool lse) {
  double m = 0;
  const auto& x = lse ? a.lse : a.out;
  const auto& y = lse ? b.lse : b.out;
  for (size_t s = 0; s < x.size(); ++s) {
    for (size_t i = 0; i < x[s].size(); ++i) {
      if (std::isinf(y[s][i])) continue;  // fully masked row, checked exactly elsewhere
      m = std::max(m, double(std::fabs(x[s][i] - y[s][i])));
      if (std::isnan(x[s][i])) return std::numeric_limits<double>::infinity();
    }
  }
  return m;
}

// FlashAttention's slack for the dtype's rounding near the values: computed
// in float32, as the rule's reference output is.
double rounding_atol(const Result& ref, bool lse) {
  double m = 0;
  for (const auto& seq : lse ? ref.lse : ref.out) {
    for (float x : seq) {
      if (std::isinf(x)) continue;
      volatile float y = x + 0.3f;
      y = y - 0.3f;
      m = std::max(m, double(std::fabs(y - x)));
    }
  }
  return 2 * m;
}

}  // namespace fastattn::check
