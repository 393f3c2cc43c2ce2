// The key window of a query row, as MaskParams::key_range on the host:
// queries and keys aligned bottom-right, diag = i + Lk - Lq, keys
// [diag - left, diag + right] clamped to [0, Lk). Causal is (unbounded, 0).
#pragma once

namespace fastattn::cuda {

struct KeyWindow {
  int left;   // < 0: unbounded
  int right;  // < 0: unbounded

  // [*begin, *end) of row i; *begin == *end when the row sees no key.
  __device__ __forceinline__ void range(int i, int lq, int lk, int* begin, int* end) const {
    const int diag = i + lk - lq;
    int b = left < 0 ? 0 : diag - left;
    int e = right < 0 ? lk : diag + right + 1;
    b = min(max(b, 0), lk);
    e = max(min(e, lk), b);
    *begin = b;
    *end = e;
  }
};

}  // namespace fastattn::cuda
