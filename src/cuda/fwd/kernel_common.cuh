// What the forward kernels of every family share: where a block reads and
// writes, which key tiles it visits, the softcap, and the register-staged
// tile copy of the GPUs without cp.async (sm70, sm75).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/common/mask.cuh"
#include "cuda/common/ptx.cuh"
#include "cuda/common/swizzle.cuh"
#include "cuda/flash_params.h"

namespace fastattn::cuda {

// cap * tanh(x * inv_scale) with k = 2 log2(e) * inv_scale, as
// cap - 2 cap / (1 + 2^(k x)): one ex2.approx and one rcp.approx, 5
// instructions a score against about 17 for tanhf's polynomial, range split
// and selects. Absolute error of the tanh, summed worst cases: ex2 (relative
// 2^-22) at most 2^-23, the rounding of k and k x (which 2^(k x) amplifies
// by |k x| ln 2, damped by tanh' = 1 - tanh^2) under 6e-8, the rounding of
// 1 + 2^(k x) 1.2e-7, rcp (1 ulp) 2.4e-7, the final FMA 6e-8: under 6e-7 in
// all, against tanhf's 1-2 ulp; it is not relative near 0, where the
// subtraction cancels. Limits come out exact: 2^(k x) = +inf gives
// rcp = 0 and +cap, 2^(k x) = 0 (ftz included) gives -cap; NaN stays NaN.
__device__ __forceinline__ float softcap(float x, float cap, float k) {
  return fmaf(-2.f * cap, rcp(1.f + ex2(x * k)), cap);
}

// The end of a row's online softmax from its quad-summed l and its maximum
// m: the factor that normalises O (0 when no key was allowed, so O = 0) and
// the natural-log LSE (-inf then).
// Each part on its own too, for a kernel that stores the LSE only on request.
__device__ __forceinline__ float row_inverse(float l) { return l > 0.f ? 1.f / l : 0.f; }
__device__ __forceinline__ float row_lse(float l, float m, float scale_log2) {
  constexpr float kLn2 = 0.6931471805599453f;
  return l > 0.f ? (m * scale_log2 + log2f(l)) * kLn2 : -INFINITY;
}
struct RowEnd {
  float inv, lse;
};
__device__ __forceinline__ RowEnd finish_row(float l, float m, float scale_log2) {
  return {row_inverse(l), row_lse(l, m, scale_log2)};
}

// Where the block of query rows [m0, m0 + block_m) of head h, sequence b
// reads and writes; varlen sequences are located through cu_seqlens.
template <typename Elem>
struct FwdBlock {
  int lq = 0, lk = 0;  // this sequence's lengths
  int m0 = 0;          // the block's first query row
  const Elem* q = nullptr;  // row m0
  const Elem* k = nullptr;  // key 0 of the KV head serving h
  const Elem* v = nullptr;

  // False when the block lies past the end of its sequence (varlen).
  __device__ __forceinline__ bool locate(const FwdParams& p, int m_block, int block_m, int h,
                                         int b) {
    lq = p.seqlen_q;
    lk = p.seqlen_k;
    int64_t q_first = 0, k_first = 0;
    if (p.cu_seqlens_q) {
      q_first = p.cu_seqlens_q[b];
      lq = p.cu_seqlens_q[b + 1] - p.cu_seqlens_q[b];
      k_first = p.cu_seqlens_k[b];
      lk = p.cu_seqlens_k[b + 1] - p.cu_seqlens_k[b];
    }
    m0 = m_block * block_m;
    if (m0 >= lq) return false;
    const int64_t bb = p.cu_seqlens_q ? 0 : b;  // varlen rows are absolute
    const int hk = h / p.group_size;
    q = static_cast<const Elem*>(p.q) + bb * p.q_batch_stride + (q_first + m0) * p.q_row_stride +
        h * p.q_head_stride;
    k = static_cast<const Elem*>(p.k) + bb * p.k_batch_stride + k_first * p.k_row_stride +
        hk * p.k_head_stride;
    v = static_cast<const Elem*>(p.v) + bb * p.v_batch_stride + k_first * p.v_row_stride +
        hk * p.v_head_stride;
    return true;
  }

  // The output pointers, recomputed for the epilogue rather than held in
  // registers through the mainloop: row m0 of O, and row 0 of (b, h) of the
  // LSE (nullptr when not requested).
  __device__ __forceinline__ Elem* out_row0(const FwdParams& p, int h, int b) const {
    const int64_t q_first = p.cu_seqlens_q ? p.cu_seqlens_q[b] : 0;
    const int64_t bb = p.cu_seqlens_q ? 0 : b;
    return static_cast<Elem*>(p.out) + bb * p.out_batch_stride + (q_first + m0) * p.out_row_stride +
           h * p.out_head_stride;
  }
  __device__ __forceinline__ float* lse_row0(const FwdParams& p, int h, int b) const {
    if (p.lse == nullptr) return nullptr;
    const int64_t q_first = p.cu_seqlens_q ? p.cu_seqlens_q[b] : 0;
    const int64_t bb = p.cu_seqlens_q ? 0 : b;
    return p.lse + bb * p.lse_batch_stride + h * p.lse_head_stride + q_first * p.lse_row_stride;
  }
};

// log2 of a power of two; -1 otherwise (such tile widths never meet a block
// mask: the kernel choice sends those calls elsewhere).
constexpr int log2_of(int x) {
  int r = 0;
  while ((1 << r) < x) ++r;
  return (1 << r) == x ? r : -1;
}

// Key tiles [begin, end) a query tile touches, and within them the "full"
// ones [full_begin, full_end), inside every row's key interval, which skip
// the per-element mask. Intervals only move right as the row grows, so the
// first and last rows bound the union.
struct KeyTiles {
  int begin, end, full_begin, full_end;
  SegmentSpan first_doc, last_doc;  // documents of the first and last rows

  KeyTiles() = default;  // filled in field by field (a tile descriptor)

  // warp_search: the whole calling warp, converged, searches the documents
  // (see warp_segment_bounds2) instead of each thread on its own.
  __device__ __forceinline__ KeyTiles(const RowMask& mask, int m0, int block_m, int lq, int lk,
                                      int block_n, bool warp_search = false) {
    const int last = min(m0 + block_m, lq) - 1;
    SegmentSpan first{0, 0, 0}, final{0, 0, 0};
    if (mask.has_documents()) {
      if (warp_search) {
        mask.warp_spans(m0, last, lq, lk, &first, &final);
      } else {
        mask.spans(m0, last, lq, lk, &first, &final);
      }
    }
    *this = KeyTiles(mask, m0, block_m, lq, lk, block_n, first, final);
  }
  // With the documents of the first and last rows already found.
  __device__ __forceinline__ KeyTiles(const RowMask& mask, int m0, int block_m, int lq, int lk,
                                      int block_n, const SegmentSpan& first,
                                      const SegmentSpan& final)
      : first_doc(first), last_doc(final) {
    const int last = min(m0 + block_m, lq) - 1;
    int first_begin, first_end, last_begin, last_end;
    mask.range_in(m0, lq, lk, first_doc, &first_begin, &first_end);
    mask.range_in(last, lq, lk, last_doc, &last_begin, &last_end);
    begin = first_begin / block_n;
    end = last_end > first_begin ? (last_end + block_n - 1) / block_n : begin;
    full_begin = (last_begin + block_n - 1) / block_n;
    full_end = first_end / block_n;
  }
};

// The key tiles a query tile visits, ascending: KeyTiles' [begin, end)
// less the tiles a block mask leaves EMPTY. A mask block is 2^sub key tiles
// wide (sub = block_k_log2 - log2 of the tile width) and the query tile lies
// in one mask block row (the kernel choice checks both), whose non-empty
// blocks its kv_list row names; only the first and last listed blocks can
// be cut by [begin, end). The list and classes are re-read from the kernel
// parameters where used, rather than held in registers.
struct TileSeq {
  int count = 0;
  // Without a block mask the first tile; with one, (index of the first
  // listed block used) * 2^sub + (tiles of that block before `begin`).
  int offset = 0;

  // The first index in [a, n) of the ascending list whose block is >= kb.
  static __device__ __forceinline__ int first_listed(const int32_t* list, int a, int n, int kb) {
    for (int len = n - a; len > 0;) {
      const int half = len >> 1;
      if (__ldg(list + a + half) < kb) {
        a += half + 1;
        len -= half + 1;
      } else {
        len = half;
      }
    }
    return a;
  }

  TileSeq() = default;
  __device__ __forceinline__ TileSeq(const KeyTiles& tiles, const BlockMaskView& bm, int64_t row,
                                     int tile_log2) {
    offset = tiles.begin;
    count = max(tiles.end - tiles.begin, 0);
    if (bm.cls == nullptr || count == 0) return;
    const int sub = bm.block_k_log2 - tile_log2;
    const int32_t* list = bm.kv_list + row * bm.blocks_k;
    const int n = __ldg(bm.kv_count + row);
    const int kb_lo = tiles.begin >> sub, kb_hi = (tiles.end - 1) >> sub;
    // The listed blocks in [kb_lo, kb_hi]: list[lo, hi).
    const int lo = first_listed(list, 0, n, kb_lo), hi = first_listed(list, lo, n, kb_hi + 1);
    if (lo == hi) {
      count = 0;
      return;
    }
    const int first_tile = __ldg(list + lo) << sub;
    const int last_end = (__ldg(list + hi - 1) + 1) << sub;
    const int skip = max(tiles.begin - first_tile, 0);
    offset = (lo << sub) + skip;
    count = ((hi - lo) << sub) - skip - max(last_end - tiles.end, 0);
  }

  // The it-th tile, 0 <= it < count.
  __device__ __forceinline__ int at(int it, const BlockMaskView& bm, int64_t row,
                                    int tile_log2) const {
    if (bm.cls == nullptr) return offset + it;
    const int sub = bm.block_k_log2 - tile_log2;
    const int t = it + offset;
    const int kb = __ldg(bm.kv_list + row * bm.blocks_k + (t >> sub));
    return (kb << sub) + (t & ((1 << sub) - 1));
  }
};

// The block-mask row of the query tile starting at m0 (0 without a mask).
__device__ __forceinline__ int64_t block_row(const BlockMaskView& bm, int b, int h, int m0) {
  return bm.cls == nullptr ? 0 : bm.row(b, h, m0 >> bm.block_q_log2);
}

// Key tile nb's class: kFull, or the PARTIAL block's index (tiles the
// sequence visits are never EMPTY); kFull without a block mask.
__device__ __forceinline__ int32_t tile_class(const BlockMaskView& bm, int64_t row, int nb,
                                              int tile_log2) {
  if (bm.cls == nullptr) return BlockMaskView::kFull;
  return __ldg(bm.cls + row * bm.blocks_k + (nb >> (bm.block_k_log2 - tile_log2)));
}

// One query row's bits over a key tile of a PARTIAL block, loaded once per
// row and tile: looking each key up on its own kept addresses live across
// the softmax and made the m16n8 kernels spill. Word x holds the tile's
// columns 32x .. 32x + 31 shifted right by `shift`, so that with the shift
// set to a thread's own column offset its columns sit at compile-time bits.
template <int kBlockN>
struct TileRowBits {
  static constexpr int kWords = kBlockN >= 32 ? kBlockN / 32 : 1;
  uint32_t w[kWords];

  // The first word of row i's bits over key tile nb (of PARTIAL block c);
  // the row's words over the tile follow it. A tile never straddles a
  // word boundary it does not start on: it is 32 keys or more wide, or
  // lies within one word.
  static __device__ __forceinline__ const uint32_t* row_words(const BlockMaskView& bm, int32_t c,
                                                              int i, int nb, int tile_log2) {
    const int64_t words = int64_t{1} << (bm.block_k_log2 - 5);
    const int col0 = (nb & ((1 << (bm.block_k_log2 - tile_log2)) - 1)) << tile_log2;
    return bm.bits +
           ((int64_t(c) << bm.block_q_log2) | (i & ((1 << bm.block_q_log2) - 1))) * words +
           (col0 >> 5);
  }
  __device__ __forceinline__ void load(const BlockMaskView& bm, int32_t c, int i, int nb,
                                       int tile_log2, int shift) {
    const uint32_t* row = row_words(bm, c, i, nb, tile_log2);
    const int col0 = (nb & ((1 << (bm.block_k_log2 - tile_log2)) - 1)) << tile_log2;
#pragma unroll
    for (int x = 0; x < kWords; ++x) w[x] = __ldg(row + x) >> ((col0 & 31) + shift);
  }
  // The same words, copied (whole, unshifted) into shared memory at `addr`:
  // tiles of 32 keys or more start on a word.
  __device__ __forceinline__ void load_shared(uint32_t addr, int shift) {
    static_assert(kBlockN >= 32, "a narrower tile's bits sit inside a word");
#pragma unroll
    for (int x = 0; x < kWords; ++x) {
      uint32_t v;
      asm volatile("ld.shared.u32 %0, [%1];\n" : "=r"(v) : "r"(addr + 4 * x));
      w[x] = v >> shift;
    }
  }
  __device__ __forceinline__ bool get(int word, int bit) const { return (w[word] >> bit) & 1u; }
};

// The swizzle of the m16n8 kernels (see cuda/common/swizzle.cuh).
template <int kRowChunks>
struct RowXorSwizzle {
  static __device__ __forceinline__ uint32_t offset(int r, int c) {
    return swizzled_offset<kRowChunks>(r, c);
  }
};

// A (kRows, kChunks * 8) tile on its way from global to shared memory
// through registers, for GPUs without cp.async: load() issues the 16-byte
// global reads and returns at once, store() (after other work has hidden
// their latency) writes the tile into a swizzled buffer. Thread tid moves
// chunk tid % kRowChunks of every kRowStep-th row; rows >= rows_valid and
// chunks >= chunks_valid are zero-filled (masked probabilities times stale
// NaN bits would still make NaN), chunks >= kChunks are shared padding,
// never read.
template <typename Elem, int kRows, int kRowChunks, int kChunks, int kThreads>
struct StagedTile {
  static constexpr int kRowStep = kThreads / kRowChunks;
  static constexpr int kPasses = kRows / kRowStep;
  static_assert(kThreads % kRowChunks == 0 && kRows % kRowStep == 0);
  uint4 part[kPasses];

  __device__ __forceinline__ void load(const Elem* g, int64_t row_stride, int rows_valid,
                                       int chunks_valid, int tid) {
    const int c = tid % kRowChunks, r0 = tid / kRowChunks;
    const bool c_ok = c < chunks_valid;
#pragma unroll
    for (int i = 0; i < kPasses; ++i) {
      const int r = r0 + i * kRowStep;
      part[i] = c_ok && r < rows_valid
                    ? __ldg(reinterpret_cast<const uint4*>(g + r * row_stride + c * 8))
                    : make_uint4(0, 0, 0, 0);
    }
  }

  template <class Swizzle>
  __device__ __forceinline__ void store(unsigned char* smem, int tid) const {
    const int c = tid % kRowChunks, r0 = tid / kRowChunks;
    if (kChunks < kRowChunks && c >= kChunks) return;
#pragma unroll
    for (int i = 0; i < kPasses; ++i)
      *reinterpret_cast<uint4*>(smem + Swizzle::offset(r0 + i * kRowStep, c)) = part[i];
  }
};

}  // namespace fastattn::cuda
