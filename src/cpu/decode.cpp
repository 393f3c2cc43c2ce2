// A decoding step on the CPU: the append (with rotary embedding) writes the
// cache, then the attention of the Lq new queries over each sequence's keys
// is an ordinary paged or contiguous attention with per-sequence key counts.
//
// Rotations are computed in double and rounded once to the dtype: the
// products of two floats are exact in double, so the result is the correctly
// rounded x1*c - x2*s (as a float64 reference of the same rotation gets).
#include <algorithm>
#include <cstring>
#include <vector>

#include "common/scalar_convert.h"
#include "cpu/backend.h"

namespace fastattn::cpu {
namespace {

// Rotates row x[0, rotary.dim) at `position` in place (elements beyond
// rotary.dim keep their values).
void rotate(const RotaryParams& r, int64_t position, double* x) {
  const int64_t half = r.dim / 2;
  const float* cos = r.cos + position * r.cos_row_stride;
  const float* sin = r.sin + position * r.sin_row_stride;
  for (int64_t i = 0; i < half; ++i) {
    const int64_t i1 = r.style == RotaryStyle::kHalf ? i : 2 * i;
    const int64_t i2 = r.style == RotaryStyle::kHalf ? i + half : 2 * i + 1;
    const double c = cos[i], s = sin[i], x1 = x[i1], x2 = x[i2];
    x[i1] = x1 * c - x2 * s;
    x[i2] = x2 * c + x1 * s;
  }
}

// dst[dst_off + e] = rotate(src[src_off + e]) for e < D, in the dtype.
void copy_row(const RotaryParams& r, DType t, int64_t d, int64_t position, const void* src,
              int64_t src_off, void* dst, int64_t dst_off, std::vector<double>& row) {
  const int es = dtype_size(t);
  if (r.style == RotaryStyle::kNone) {
    std::memcpy(static_cast<char*>(dst) + dst_off * es,
                static_cast<const char*>(src) + src_off * es, d * es);
    return;
  }
  for (int64_t e = 0; e < d; ++e) row[e] = load_as_float(src, src_off + e, t);
  rotate(r, position, row.data());
  for (int64_t e = 0; e < d; ++e) store_from_float(dst, dst_off + e, t, float(row[e]));
}

// k_new / v_new rows to cache positions cache_seqlens[b] + i.
void append(const DecodeParams& p) {
  const AttentionParams& a = p.attn;
  void* k_cache = const_cast<void*>(a.kv.k);
  void* v_cache = const_cast<void*>(a.kv.v);
  const RotaryParams no_rotation;
  std::vector<double> row(a.head_dim);
  for (int64_t b = 0; b < a.batch; ++b) {
    for (int64_t i = 0; i < p.new_tokens; ++i) {
      const int64_t pos = int64_t(p.cache_seqlens[b]) + i;
      for (int64_t h = 0; h < a.heads_kv; ++h) {
        const int64_t kn = b * p.k_new_batch_stride + i * p.k_new_row_stride + h * p.k_new_head_stride;
        const int64_t vn = b * p.v_new_batch_stride + i * p.v_new_row_stride + h * p.v_new_head_stride;
        copy_row(p.rotary, a.dtype, a.head_dim, pos, p.k_new, kn, k_cache,
                 k_offset(a.kv, nullptr, b, pos, h), row);
        copy_row(no_rotation, a.dtype, a.head_dim, pos, p.v_new, vn, v_cache,
                 v_offset(a.kv, nullptr, b, pos, h), row);
      }
    }
  }
}

// q rotated at positions cache_seqlens[b] + i into `buffer`, contiguous
// [B, Lq, Hq, D]; `a` is pointed at it.
void rotate_queries(const DecodeParams& p, std::vector<unsigned char>* buffer, AttentionParams* a) {
  const int64_t b_count = a->batch, lq = a->seqlen_q, hq = a->heads_q, d = a->head_dim;
  buffer->resize(b_count * lq * hq * d * dtype_size(a->dtype));
  std::vector<double> row(d);
  for (int64_t b = 0; b < b_count; ++b) {
    for (int64_t i = 0; i < lq; ++i) {
      for (int64_t h = 0; h < hq; ++h) {
        copy_row(p.rotary, a->dtype, d, int64_t(p.cache_seqlens[b]) + i, a->q,
                 q_offset(*a, b, i, h), buffer->data(), ((b * lq + i) * hq + h) * d, row);
      }
    }
  }
  a->q = buffer->data();
  a->q_batch_stride = lq * hq * d;
  a->q_row_stride = hq * d;
  a->q_head_stride = d;
}

}  // namespace

void decode(const DecodeParams& p, bool reference) {
  if (p.k_new) append(p);
  AttentionParams a = p.attn;
  std::vector<unsigned char> rotated_q;
  if (p.rotary.style != RotaryStyle::kNone) rotate_queries(p, &rotated_q, &a);
  // Key counts after the append; seqlen_k becomes the true maximum (the
  // planning bound in p.attn may be smaller: runs stay exact beyond it).
  std::vector<int32_t> keys(a.batch);
  int64_t longest = 0;
  for (int64_t b = 0; b < a.batch; ++b) {
    keys[b] = static_cast<int32_t>(p.keys(b));
    longest = std::max<int64_t>(longest, keys[b]);
  }
  a.seqlens_k = keys.data();
  a.seqlen_k = longest;
  if (reference) {
    reference_attention(a);
  } else {
    flash_attention(a);
  }
}

}  // namespace fastattn::cpu
