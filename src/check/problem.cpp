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

namespace {

int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

}  // namespace

bool mask_allows(const Problem& p, int64_t b, int64_t h, int64_t i, int64_t j) {
  const Case& c = p.c;
  const Sequence& s = p.seqs[b];
  const int64_t diag = i + s.lk - s.lq;
  switch (c.mask) {
    case FA_MASK_NONE: break;
    case FA_MASK_CAUSAL:
      if (j > diag) return false;
      break;
    case FA_MASK_SLIDING_WINDOW:
      if (c.window_left >= 0 && j < diag - c.window_left) return false;
      if (c.window_right >= 0 && j > diag + c.window_right) return false;
      break;
    case FA_MASK_PREFIX_LM:
      if (j > diag && j >= c.prefix_len) return false;
      break;
  }
  if (c.chunk_size > 0 && floor_div(j, c.chunk_size) != floor_div(diag, c.chunk_size)) return false;
  if (c.documents.mean_length > 0 && s.q_ids[i] != s.k_ids[j]) return false;
  if (p.block_mask.present() && !p.block_mask.allows(b, h, i, j)) return false;
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
    if (c.documents.mean_length > 0) make_segment_ids(c.documents, b, s.lq, s.lk, &s.q_ids, &s.k_ids);
  }
  p.block_mask = make_mask_source(c);
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
  // Block masks cover padded batches only, where every sequence has the
  // case's lengths: the same buffers then read as [B, L, H, D].
  const bool padded = p.block_mask.present();
  auto as_padded = [&](fa_tensor x, int64_t len) {
    x.ndim = 4;
    x.shape[3] = x.shape[2];
    x.shape[2] = x.shape[1];
    x.shape[1] = len;
    x.shape[0] = nb;
    x.strides[3] = 1;
    x.strides[2] = x.shape[3];
    x.strides[1] = x.shape[2] * x.shape[3];
    x.strides[0] = len * x.strides[1];
    return x;
  };
  fa_attention_args a{};
  a.q = packed(q.data(), tq, hq, d);
  a.k = packed(k.data(), tk, hkv, d);
  a.v = packed(v.data(), tk, hkv, d);
  a.out = packed(o.data(), tq, hq, d);
  a.lse.data = lse.data();
  a.lse.dtype = FA_DTYPE_FLOAT32;
  if (padded) {
    a.q = as_padded(a.q, c.seqlen_q);
    a.k = as_padded(a.k, c.seqlen_k);
    a.v = as_padded(a.v, c.seqlen_k);
    a.out = as_padded(a.out, c.seqlen_q);
    a.lse.ndim = 3;
    a.lse.shape[0] = nb;
    a.lse.shape[1] = hq;
    a.lse.shape[2] = c.seqlen_q;
    a.lse.strides[0] = hq * c.seqlen_q;
    a.lse.strides[1] = c.seqlen_q;
    a.lse.strides[2] = 1;
  } else {
    a.lse.ndim = 2;
    a.lse.shape[0] = hq;
    a.lse.shape[1] = tq;
    a.lse.strides[0] = tq;
    a.lse.strides[1] = 1;
    a.cu_seqlens_q = cu_q.data();
    a.cu_seqlens_k = cu_k.data();
    a.num_seqs = nb;
  }
  a.mask.kind = c.mask;
  a.mask.window_left = c.window_left;
  a.mask.window_right = c.window_right;
  a.mask.prefix_len = c.prefix_len;
  a.mask.chunk_size = c.chunk_size;
  // Segment ids packed like the rows: [B, L] for the padded form too.
  std::vector<int32_t> q_ids(tq + 1, 0), k_ids(tk + 1, 0);
  if (c.documents.mean_length > 0) {
    for (int64_t b = 0; b < nb; ++b) {
      std::copy(p.seqs[b].q_ids.begin(), p.seqs[b].q_ids.end(), q_ids.begin() + cu_q[b]);
      std::copy(p.seqs[b].k_ids.begin(), p.seqs[b].k_ids.end(), k_ids.begin() + cu_k[b]);
    }
    a.mask.q_segment_ids = q_ids.data();
    a.mask.k_segment_ids = k_ids.data();
  }
  a.softmax_scale = p.scale;
  a.softcap = c.softcap;
  fa_run_options opt{};
  opt.backend = FA_BACKEND_CPU_REFERENCE;
  OwnedBlockMask host_mask;
  if (padded) {
    if (host_mask.create(p.block_mask, p.block_mask.data.data(), opt) != FA_STATUS_OK) {
      *error = std::string("host block mask for the reference: ") + fa_last_error();
      return false;
    }
    a.mask.block_mask = host_mask.get();
  }
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
      for (int64_t i = 0; i < lq; ++i) {
        out->lse[b][h * lq + i] = padded ? lse[(b * hq + h) * lq + i] : lse[h * tq + cu_q[b] + i];
      }
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
          if (!mask_allows(p, b, h, i, j)) {
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
