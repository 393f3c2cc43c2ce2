// The keys a query row may see, as MaskParams::key_range and
// AttentionParams::key_range on the host: queries and keys aligned
// bottom-right, d = i + Lk - Lq; the window [d - left, d + right], widened
// to every key below `prefix`, narrowed to the chunk of d and to the row's
// document; clamped to [0, Lk). Causal is (unbounded, 0). Every part keeps
// a row's keys one interval whose ends never move left as i grows.
#pragma once

#include <cstdint>

#include "cuda/common/segment_search.cuh"
#include "cuda/flash_params.h"

namespace fastattn::cuda {

// floor(a / b) for b > 0 and any sign of a.
__device__ __forceinline__ int floor_div(int a, int b) {
  return a >= 0 ? a / b : -((-a + b - 1) / b);
}

// Holds only a reference to the kernel parameters (constant memory) and
// the sequence: mask fields copied into registers stay live through the
// mainloop and made the older paths' kernels spill.
struct RowMask {
  const FwdParams& p;
  int b;

  __device__ __forceinline__ RowMask(const FwdParams& p_, int b_) : p(p_), b(b_) {}

  __device__ __forceinline__ bool has_documents() const { return p.q_segments != nullptr; }
  // This sequence's segment ids, located like the rows of q and k.
  __device__ __forceinline__ const int32_t* q_ids() const {
    return p.q_segments + (p.cu_seqlens_q ? p.cu_seqlens_q[b] : int64_t{b} * p.seqlen_q);
  }
  __device__ __forceinline__ const int32_t* k_ids() const {
    return p.k_segments + (p.cu_seqlens_k ? p.cu_seqlens_k[b] : int64_t{b} * p.seqlen_k);
  }
  __device__ __forceinline__ int32_t q_id(int i, int lq) const {
    return __ldg(q_ids() + min(i, lq - 1));
  }
  // The documents of rows i0 and i1 (one search when they share one).
  __device__ __forceinline__ void spans(int i0, int i1, int lq, int lk, SegmentSpan* a,
                                        SegmentSpan* c) const {
    segment_bounds2(k_ids(), lk, q_id(i0, lq), q_id(i1, lq), a, c);
  }
  // The same, searched by the whole calling warp.
  __device__ __forceinline__ void warp_spans(int i0, int i1, int lq, int lk, SegmentSpan* a,
                                             SegmentSpan* c) const {
    warp_segment_bounds2(k_ids(), lk, q_id(i0, lq), q_id(i1, lq), a, c);
  }

  // [*begin, *end) of row i without its document: window, prefix, chunk.
  __device__ __forceinline__ void window_range(int i, int lq, int lk, int* begin,
                                               int* end) const {
    const int diag = i + lk - lq;
    int b0 = p.window_left < 0 ? 0 : diag - p.window_left;
    int e = p.window_right < 0 ? lk : diag + p.window_right + 1;
    e = max(e, p.prefix);
    if (p.chunk > 0) {
      const int c0 = floor_div(diag, p.chunk) * p.chunk;
      b0 = max(b0, c0);
      e = min(e, c0 + p.chunk);
    }
    *begin = b0;
    *end = e;
  }
  // [*begin, *end) of row i, its document given; clamped to [0, Lk).
  __device__ __forceinline__ void range_in(int i, int lq, int lk, const SegmentSpan& doc,
                                           int* begin, int* end) const {
    int b0, e;
    window_range(i, lq, lk, &b0, &e);
    if (has_documents()) {
      b0 = max(b0, doc.lo);
      e = min(e, doc.hi);
    }
    b0 = min(max(b0, 0), lk);
    *begin = b0;
    *end = max(min(e, lk), b0);
  }
  // [*begin, *end) of row i; *begin == *end when the row sees no key.
  __device__ __forceinline__ void range(int i, int lq, int lk, int* begin, int* end) const {
    SegmentSpan doc{0, 0, 0};
    if (has_documents()) spans(i, i, lq, lk, &doc, &doc);
    range_in(i, lq, lk, doc, begin, end);
  }
};

}  // namespace fastattn::cuda
