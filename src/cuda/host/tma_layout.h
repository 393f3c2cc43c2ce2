// What the copy engine (TMA) can read: a pure check, shared by the kernel
// choice (which runs without a GPU) and the tensor-map builder.
#pragma once

#include <cstdint>

namespace fastattn::cuda {

// A (head_dim, rows, heads, seqs) view of a tensor of 2-byte elements with
// the given element strides (rows: the tensor's rows, the total over all
// sequences for varlen batches, which then have seqs = 1).
struct TmaOperand {
  const void* base;
  int64_t head_dim, rows, heads, seqs;
  int64_t row_stride, head_stride, seq_stride;  // elements
};

// The base and the strides of dimensions longer than 1 must be positive
// multiples of 16 bytes below 2^40.
inline bool tma_layout_ok(const TmaOperand& t) {
  constexpr int64_t kMaxStrideBytes = int64_t{1} << 40;
  auto ok = [](int64_t size, int64_t stride) {
    return size <= 1 || (stride > 0 && stride * 2 % 16 == 0 && stride * 2 < kMaxStrideBytes);
  };
  return reinterpret_cast<uintptr_t>(t.base) % 16 == 0 && ok(t.rows, t.row_stride) &&
         ok(t.heads, t.head_stride) && ok(t.seqs, t.seq_stride);
}

}  // namespace fastattn::cuda
