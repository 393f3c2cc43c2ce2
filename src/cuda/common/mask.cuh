// The keys a query row may see, as MaskParams::key_range and
// AttentionParams::key_range on the host: queries and keys aligned
// bottom-right, d = i + Lk - Lq; the window [d - left, d + right], widened
// to every key below `prefix`, narrowed to the chunk of d and to the row's
// document; clamped to [0, Lk). Causal is (unbounded, 0). Every part keeps
// a row's keys one interval whose ends never move left as i grows.
#pragma once

#include <cstdint>

#include "cuda/flash_params.h"

namespace fastattn::cuda {

// floor(a / b) for b > 0 and any sign of a.
__device__ __forceinline__ int floor_div(int a, int b) {
  return a >= 0 ? a / b : -((-a + b - 1) / b);
}

// Lower and upper bound of s in the non-decreasing ids[0, n), searched in
// lockstep so that the two chains of dependent loads overlap.
__device__ __forceinline__ void segment_bounds(const int32_t* ids, int n, int32_t s, int* lo,
                                               int* hi) {
  int a = 0, a_len = n, c = 0, c_len = n;
  while (a_len > 0 || c_len > 0) {
    const int ah = a_len >> 1, ch = c_len >> 1;
    const bool a_live = a_len > 0, c_live = c_len > 0;
    const int32_t va = a_live ? __ldg(ids + a + ah) : 0;
    const int32_t vc = c_live ? __ldg(ids + c + ch) : 0;
    if (a_live) {
      if (va < s) { a += ah + 1; a_len -= ah + 1; } else { a_len = ah; }
    }
    if (c_live) {
      if (vc <= s) { c += ch + 1; c_len -= ch + 1; } else { c_len = ch; }
    }
  }
  *lo = a;
  *hi = c;
}

// Holds only a reference to the kernel parameters (constant memory) and
// the sequence: mask fields copied into registers stay live through the
// mainloop and made the older paths' kernels spill.
struct RowMask {
  const FwdParams& p;
  int b;

  __device__ __forceinline__ RowMask(const FwdParams& p_, int b_) : p(p_), b(b_) {}

  // [*begin, *end) of row i; *begin == *end when the row sees no key.
  __device__ __forceinline__ void range(int i, int lq, int lk, int* begin, int* end) const {
    const int diag = i + lk - lq;
    int b0 = p.window_left < 0 ? 0 : diag - p.window_left;
    int e = p.window_right < 0 ? lk : diag + p.window_right + 1;
    e = max(e, p.prefix);
    if (p.chunk > 0) {
      const int c0 = floor_div(diag, p.chunk) * p.chunk;
      b0 = max(b0, c0);
      e = min(e, c0 + p.chunk);
    }
    if (p.q_segments != nullptr) {
      // This sequence's ids, located like the rows of q and k.
      const int32_t* q_ids =
          p.q_segments + (p.cu_seqlens_q ? p.cu_seqlens_q[b] : int64_t{b} * p.seqlen_q);
      const int32_t* k_ids =
          p.k_segments + (p.cu_seqlens_k ? p.cu_seqlens_k[b] : int64_t{b} * p.seqlen_k);
      int lo, hi;
      segment_bounds(k_ids, lk, __ldg(q_ids + min(i, lq - 1)), &lo, &hi);
      b0 = max(b0, lo);
      e = min(e, hi);
    }
    b0 = min(max(b0, 0), lk);
    e = max(min(e, lk), b0);
    *begin = b0;
    *end = e;
  }
};

}  // namespace fastattn::cuda
