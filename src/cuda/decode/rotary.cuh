// Rotary embedding of one element of a row, and the kernel that appends the
// new tokens' K/V to the cache (rotating k). Both read the element's rotary
// partner directly: the rows are a few hundred bytes, so no staging pays.
#pragma once

#include "cuda/decode/decode_params.h"
#include "cuda/decode/elem.cuh"

namespace fastattn::cuda {

enum : int { kRotaryNone = 0, kRotaryHalf = 1, kRotaryInterleaved = 2 };

// Element d of `row` after rotation at the position whose cos/sin rows are
// given: pairs (x1, x2) become (x1 c - x2 s, x2 c + x1 s); kRotaryHalf pairs
// (x[i], x[i + dim/2]), kRotaryInterleaved pairs (x[2i], x[2i+1]); elements
// from `dim` on are unchanged. Computed in float, as the CPU backend does.
template <typename Elem>
__device__ __forceinline__ float rotary_element(const Elem* row, int d, int style, int dim,
                                                const float* cos_row, const float* sin_row) {
  const float x = to_float(row[d]);
  if (style == kRotaryNone || d >= dim) return x;
  int pair, partner;
  bool first;
  if (style == kRotaryHalf) {
    const int half = dim / 2;
    first = d < half;
    pair = first ? d : d - half;
    partner = first ? d + half : d - half;
  } else {
    first = (d & 1) == 0;
    pair = d / 2;
    partner = first ? d + 1 : d - 1;
  }
  const float c = cos_row[pair], s = sin_row[pair];
  const float y = to_float(row[partner]);
  return first ? x * c - y * s : x * c + y * s;
}

// Where key j of sequence b lives: row `row` of page `page` (a contiguous
// cache is one page per sequence).
struct CacheSlot {
  int64_t page;
  int row;
};

__device__ __forceinline__ CacheSlot cache_slot(const DecodeKernelParams& p, int b, int j) {
  if (p.page_table == nullptr) return {b, j};
  const uint32_t idx = p.page_size.div(static_cast<uint32_t>(j));
  const int row = j - static_cast<int>(idx * p.page_size.divisor);
  return {p.page_table[int64_t(b) * p.page_table_stride + idx], row};
}

// Grid: (Lq, B); block: threads over (KV head, element). Writes k (rotated)
// and v of new token i of sequence b at position cache_seqlens[b] + i.
template <typename Elem>
__global__ void __launch_bounds__(256) decode_append_kernel(const DecodeKernelParams p) {
  const int i = blockIdx.x, b = blockIdx.y;
  const int pos = p.cache_seqlens[b] + i;
  const float* cos_row = p.rotary_cos + int64_t(pos) * p.cos_row_stride;
  const float* sin_row = p.rotary_sin + int64_t(pos) * p.sin_row_stride;
  Elem* kc = static_cast<Elem*>(const_cast<void*>(p.k));
  Elem* vc = static_cast<Elem*>(const_cast<void*>(p.v));
  const Elem* kn = static_cast<const Elem*>(p.k_new);
  const Elem* vn = static_cast<const Elem*>(p.v_new);
  for (int e = threadIdx.x; e < p.heads_kv * p.head_dim; e += blockDim.x) {
    const int h = e / p.head_dim, d = e % p.head_dim;
    const Elem* krow = kn + int64_t(b) * p.k_new_batch_stride + int64_t(i) * p.k_new_row_stride +
                       int64_t(h) * p.k_new_head_stride;
    const Elem* vrow = vn + int64_t(b) * p.v_new_batch_stride + int64_t(i) * p.v_new_row_stride +
                       int64_t(h) * p.v_new_head_stride;
    const float k = rotary_element(krow, d, p.rotary_style, p.rotary_dim, cos_row, sin_row);
    const CacheSlot slot = cache_slot(p, b, pos);
    kc[slot.page * p.k_page_stride + int64_t(slot.row) * p.k_row_stride +
       int64_t(h) * p.k_head_stride + d] = from_float<Elem>(k);
    vc[slot.page * p.v_page_stride + int64_t(slot.row) * p.v_row_stride +
       int64_t(h) * p.v_head_stride + d] = vrow[d];
  }
}

}  // namespace fastattn::cuda
