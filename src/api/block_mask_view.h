// The compressed form of a boolean mask that every backend reads (built by
// fa_block_mask_create), and the document-segment lookup. Plain data and
// inline functions only, so the CUDA kernels share the definitions.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define FA_HOST_DEVICE __host__ __device__
#else
#define FA_HOST_DEVICE
#endif

namespace fastattn {

// The (Lq, Lk) plane cut into blocks of 2^block_q_log2 x 2^block_k_log2.
// Row r = (bm * heads + hm) * blocks_q + qb holds the blocks of query block
// qb for mask batch bm and head hm (0 where the mask is broadcast).
struct BlockMaskView {
  static constexpr int32_t kEmpty = -1;
  static constexpr int32_t kFull = -2;
  int64_t batch = 1, heads = 1;  // 1: the same for every sequence / head
  int64_t seqlen_q = 0, seqlen_k = 0;
  int block_q_log2 = 7, block_k_log2 = 7;
  int64_t blocks_q = 0, blocks_k = 0;
  // [rows, blocks_k]: kEmpty, kFull, or the index of the block's bits.
  const int32_t* cls = nullptr;
  // [rows, blocks_k]: the row's non-empty key blocks, ascending; the first
  // kv_count[r] entries are used.
  const int32_t* kv_list = nullptr;
  const int32_t* kv_count = nullptr;  // [rows]
  // [partial blocks, block_q, block_k / 32]: pair (r, c) of a PARTIAL block
  // is bit c % 32 of word c / 32 of its row r.
  const uint32_t* bits = nullptr;

  FA_HOST_DEVICE int64_t row(int64_t b, int64_t h, int64_t qb) const {
    return ((batch == 1 ? 0 : b) * heads + (heads == 1 ? 0 : h)) * blocks_q + qb;
  }
  FA_HOST_DEVICE int64_t words_per_row() const { return (int64_t{1} << block_k_log2) / 32; }
  // Whether the pair (i, j) of sequence b, query head h survives the mask.
  FA_HOST_DEVICE bool allowed(int64_t b, int64_t h, int64_t i, int64_t j) const {
    const int32_t c = cls[row(b, h, i >> block_q_log2) * blocks_k + (j >> block_k_log2)];
    if (c == kFull) return true;
    if (c == kEmpty) return false;
    const int64_t r = i & ((int64_t{1} << block_q_log2) - 1);
    const int64_t col = j & ((int64_t{1} << block_k_log2) - 1);
    const uint32_t w = bits[(c * (int64_t{1} << block_q_log2) + r) * words_per_row() + col / 32];
    return (w >> (col % 32)) & 1u;
  }
};

// [*lo, *hi): the keys of segment s in the non-decreasing ids ks[0, n).
FA_HOST_DEVICE inline void segment_span(const int32_t* ks, int64_t n, int32_t s, int64_t* lo,
                                        int64_t* hi) {
  int64_t a = 0, c = n;  // lower bound
  while (a < c) {
    const int64_t m = (a + c) / 2;
    if (ks[m] < s) a = m + 1; else c = m;
  }
  int64_t d = a, e = n;  // upper bound
  while (d < e) {
    const int64_t m = (d + e) / 2;
    if (ks[m] <= s) d = m + 1; else e = m;
  }
  *lo = a;
  *hi = d;
}

}  // namespace fastattn
