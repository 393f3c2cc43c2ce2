// FlashAttention-2 forward for Volta (sm70): mma.sync m8n8k4, fp16 in, fp32
// accumulate. docs/volta-layout.md explains the layouts; in short:
//
// A warp's m8n8k4 is four independent 8x8x4 products, one per quad-pair
// (lanes 4p..4p+3 with 16+4p..16+4p+3). Each warp owns 16 query rows and works
// on groups of 16 keys; quad-pair qp = (lane >> 2) & 3 takes the 8x8 block
// (rb, cb) = (qp & 1, qp >> 1) of S = Q K^T, rows rb * 8.., keys cb * 8.. of
// the group. For O += P V the same quad-pair takes rows rb * 8.. and every
// other 16 head dims (16-dim pairs of n-tiles 2i + cb) over all 16 keys.
//
// Operands come straight from shared memory with 16-byte loads (no ldmatrix
// on Volta): a thread's A row of Q, B column of K (a row of K) and B row of V
// are each 8 contiguous bytes in row-major tiles, so one 16-byte load feeds
// two k-steps (Q, K) or two n-tiles (V). Tiles are swizzled so that each
// quarter-warp's eight 16-byte loads hit eight distinct bank groups: K and V
// by row % 8 as on newer GPUs; Q by (row & 3) | ((row >> 1) & 4), because the
// quad-pairs of one quarter-warp read Q rows r and r + 8 (plain row % 8 would
// put them on the same banks).
//
// P reaches the A layout of the second product through two shuffles per 8x8
// block: the accumulator gives a thread 2 rows x 4 keys, the A fragment wants
// 1 row x 4 keys. A thread's own row is one of its two, with the keys
// {0,1,4,5} or {2,3,6,7} of the block; its partner (lane ^ 2) holds the other
// four keys of that row. The k-steps of P V take the keys in that order
// ({0,1,4,5}, then {2,3,6,7}), and the 8 keys of the other quad-pair on the
// same rows (lane ^ 8) come with four more shuffles. Summing over keys in any
// order is exact arithmetic on the same terms, so only V's rows follow.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "cuda/common/mask.cuh"
#include "cuda/common/mma.cuh"
#include "cuda/common/ptx.cuh"
#include "cuda/flash_params.h"
#include "cuda/fwd/kernel_common.cuh"
#include "cuda/fwd/tile_config.h"

namespace fastattn::cuda {

template <typename Elem_, int kHeadDim_>
struct VoltaFwdTraits {
  using Elem = Elem_;
  static_assert(std::is_same_v<Elem, __half>, "Volta tensor cores take fp16");
  static constexpr FwdPath kPath = FwdPath::kSm70;
  static constexpr FwdTileConfig c = fwd_tile_config(kPath, kHeadDim_);
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = c.block_m;
  static constexpr int kBlockN = c.block_n;
  static constexpr int kWarps = c.warps;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kGroups = kBlockN / 16;    // 16-key groups per tile
  static constexpr int kChunks = kHeadDim / 8;    // 16-byte chunks that hold data
  static constexpr int kRowChunks = (kHeadDim + 63) / 64 * 8;
  static constexpr int kQBytes = kBlockM * kRowChunks * 16;
  static constexpr int kKVTileBytes = kBlockN * kRowChunks * 16;
  static constexpr int kSmemBytes = kQBytes + 2 * kKVTileBytes;
  static constexpr int kBlockSmemBytes = kSmemBytes;  // block masks need no more here
  // 16-dim pairs of n-tiles per quad-pair in P V (the pairs alternate
  // between cb = 0 and 1; at d = 80 the last one of cb = 1 is past the end).
  static constexpr int kDimPairs = (kHeadDim / 16 + 1) / 2;
  static constexpr int kMinBlocks = 1;
  static_assert(kBlockM == 16 * kWarps && kBlockN % 16 == 0 && kHeadDim % 16 == 0);
  using StagedKV = StagedTile<Elem, kBlockN, kRowChunks, kChunks, kThreads>;
  using StagedQ = StagedTile<Elem, kBlockM, kRowChunks, kChunks, kThreads>;
};

// Q tiles: the quarter-warps read rows {r..r+3, r+8..r+11} at one chunk.
template <int kRowChunks>
struct VoltaQSwizzle {
  static __device__ __forceinline__ uint32_t offset(int r, int c) {
    static_assert(kRowChunks % 8 == 0);
    return static_cast<uint32_t>((r * kRowChunks + (c ^ ((r & 3) | ((r >> 1) & 4)))) * 16);
  }
};

// D (8x8 per quad-pair, fp32) += A (8x4, row-major) * B (4x8); B is
// column-major (a thread holds a column: keys of K) or row-major (a row: V).
template <bool kBRowMajor>
__device__ __forceinline__ void mma_884(float (&d)[8], uint32_t a0, uint32_t a1, uint32_t b0,
                                        uint32_t b1) {
  if constexpr (kBRowMajor) {
    asm("mma.sync.aligned.m8n8k4.row.row.f32.f16.f16.f32 {%0, %1, %2, %3, %4, %5, %6, %7}, "
        "{%8, %9}, {%10, %11}, {%0, %1, %2, %3, %4, %5, %6, %7};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
          "+f"(d[7])
        : "r"(a0), "r"(a1), "r"(b0), "r"(b1));
  } else {
    asm("mma.sync.aligned.m8n8k4.row.col.f32.f16.f16.f32 {%0, %1, %2, %3, %4, %5, %6, %7}, "
        "{%8, %9}, {%10, %11}, {%0, %1, %2, %3, %4, %5, %6, %7};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
          "+f"(d[7])
        : "r"(a0), "r"(a1), "r"(b0), "r"(b1));
  }
}

__device__ __forceinline__ uint4 lds128(uint32_t addr) {
  uint4 v;
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "r"(addr));
  return v;
}

// Accumulator element i of a quad-pair's 8x8 block sits at row
// (lane & 1) + (i & 2) + 4 * (lane >> 4) and column (i & 4) + (lane & 2) +
// (i & 1): a thread holds rows {x, x + 2} and, of each, columns
// {y, y + 1, y + 4, y + 5} with y = lane & 2.
// kBlockMask: the variant that reads a block mask (the plain kernels carry
// none of its instructions).
template <class T, bool kSoftcap, bool kBlockMask = false>
__global__ void __launch_bounds__(T::kThreads, T::kMinBlocks)
    flash_fwd_m8n8k4_kernel(const FwdParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 700
  __trap();  // mma.sync m8n8k4 needs sm70; the host never launches this there
#else
  using Elem = typename T::Elem;
  constexpr int kBlockM = T::kBlockM, kBlockN = T::kBlockN, kRC = T::kRowChunks;
  constexpr int kGroups = T::kGroups;
  constexpr int kDimPairs = T::kDimPairs;

  extern __shared__ __align__(128) unsigned char smem[];
  const uint32_t q_smem = smem_addr(smem);
  const uint32_t k_smem = q_smem + T::kQBytes;
  const uint32_t v_smem = k_smem + T::kKVTileBytes;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int m_block = gridDim.x - 1 - blockIdx.x;  // longest causal tiles first
  const int h = blockIdx.y, b = blockIdx.z;

  FwdBlock<Elem> blk;
  if (!blk.locate(p, m_block, kBlockM, h, b)) return;
  const int lq = blk.lq, lk = blk.lk, m0 = blk.m0;
  const RowMask mask(p, b);
  const KeyTiles tiles(mask, m0, kBlockM, lq, lk, kBlockN);
  constexpr int kBlockNLog2 = log2_of(kBlockN);
  const BlockMaskView no_block;
  const BlockMaskView& bm = kBlockMask ? p.block : no_block;
  const TileSeq seq(tiles, bm, block_row(bm, b, h, m0), kBlockNLog2);
  auto tile_at = [&](int it) { return seq.at(it, bm, block_row(bm, b, h, m0), kBlockNLog2); };
  const int chunks_valid = p.head_dim / 8;
  using QSwizzle = VoltaQSwizzle<kRC>;
  using KVSwizzle = RowXorSwizzle<kRC>;

  typename T::StagedKV staged;
  {
    typename T::StagedQ q_staged;
    q_staged.load(blk.q, p.q_row_stride, lq - m0, chunks_valid, tid);
    q_staged.template store<QSwizzle>(smem, tid);
  }
  if (seq.count > 0) {
    const int row0 = tile_at(0) * kBlockN;
    staged.load(blk.k + row0 * p.k_row_stride, p.k_row_stride, lk - row0, chunks_valid, tid);
    staged.template store<KVSwizzle>(smem + T::kQBytes, tid);
  }
  __syncthreads();

  // Lane roles (see the file comment).
  const int qp = (lane >> 2) & 3, rb = qp & 1, cb = qp >> 1, hi = lane >> 4, quad = lane & 3;
  const bool odd_pair = (lane & 2) != 0;  // this thread's row is x + 2, its keys {2,3,6,7}
  // Q: this thread's A row; K: its B column (key) within a 16-key group.
  const int q_row = warp * 16 + rb * 8 + hi * 4 + quad;
  const int k_row = cb * 8 + hi * 4 + quad;
  // This thread's V row (B row quad) in the k-steps of a group: keys
  // {0,1,4,5}[quad] of the own block, then {2,3,6,7}[quad], then the same
  // two of the other block.
  const int v_key = (quad & 1) + 4 * (quad >> 1);
  uint32_t q_off[8], k_off[8];  // swizzled offsets of chunks j and j + 8, ...
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    q_off[j] = q_smem + QSwizzle::offset(q_row, j);
    k_off[j] = KVSwizzle::offset(k_row, j);
  }
  constexpr uint32_t kAtomBytes = 128;  // chunks j and j + 8 differ by one atom

  const float scale_log2 = p.scale_log2;
  constexpr float k2Log2e = 2.8853900817779268f;  // 2 log2(e)
  const float softcap_k = p.softcap_inv_scale * k2Log2e;
  // O: rows rb * 8 + (lane & 1) + 2 r + 4 hi, n-tiles of this quad-pair's dims.
  float acc_o[2 * kDimPairs][8];
  float row_max[2], row_sum[2];
#pragma unroll
  for (int t = 0; t < 2 * kDimPairs; ++t)
#pragma unroll
    for (int e = 0; e < 8; ++e) acc_o[t][e] = 0.f;
  row_max[0] = row_max[1] = -INFINITY;
  row_sum[0] = row_sum[1] = 0.f;

  for (int it = 0; it < seq.count; ++it) {
    const int nb = tile_at(it);
    const int row0 = nb * kBlockN;
    staged.load(blk.v + row0 * p.v_row_stride, p.v_row_stride, lk - row0, chunks_valid, tid);

    float s[kGroups][8];
#pragma unroll
    for (int g = 0; g < kGroups; ++g)
#pragma unroll
      for (int e = 0; e < 8; ++e) s[g][e] = 0.f;
#pragma unroll
    for (int j = 0; j < T::kChunks; ++j) {  // head dims 8j..8j+7: two k-steps
      const uint4 qa = lds128(q_off[j % 8] + (j / 8) * kAtomBytes);
#pragma unroll
      for (int g = 0; g < kGroups; ++g) {
        const uint4 kb =
            lds128(k_smem + k_off[j % 8] + g * 16 * kRC * 16 + (j / 8) * kAtomBytes);
        mma_884<false>(s[g], qa.x, qa.y, kb.x, kb.y);
        mma_884<false>(s[g], qa.z, qa.w, kb.z, kb.w);
      }
    }

    // V lands in its buffer, which every warp finished reading at the end of
    // the last step; the barrier publishes it and ends all reads of K, whose
    // next tile is then fetched while the softmax and P V run.
    staged.template store<KVSwizzle>(smem + T::kQBytes + T::kKVTileBytes, tid);
    __syncthreads();
    if (it + 1 < seq.count) {
      const int next0 = tile_at(it + 1) * kBlockN;
      staged.load(blk.k + next0 * p.k_row_stride, p.k_row_stride, lk - next0, chunks_valid, tid);
    }

    if constexpr (kSoftcap) {
#pragma unroll
      for (int g = 0; g < kGroups; ++g)
#pragma unroll
        for (int e = 0; e < 8; ++e) s[g][e] = softcap(s[g][e], p.softcap, softcap_k);
    }
    const int32_t cls = tile_class(bm, block_row(bm, b, h, m0), nb, kBlockNLog2);
    if (nb < tiles.full_begin || nb >= tiles.full_end || cls != BlockMaskView::kFull) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int i = m0 + warp * 16 + rb * 8 + hi * 4 + (lane & 1) + 2 * r;
        int kb_begin, kb_end;
        mask.range(i, lq, lk, &kb_begin, &kb_end);
#pragma unroll
        for (int g = 0; g < kGroups; ++g)
#pragma unroll
          for (int e = 0; e < 8; ++e) {
            if ((e & 2) != 2 * r) continue;
            const int key = row0 + g * 16 + cb * 8 + (e & 4) + (lane & 2) + (e & 1);
            if (key < kb_begin || key >= kb_end) s[g][e] = -INFINITY;
          }
        if (cls != BlockMaskView::kFull) {
          // The thread's keys of group g are g * 16 + cb * 8 + (lane & 2) +
          // {0, 1, 4, 5}: with that offset as the shift, word g / 2, bits
          // (g % 2) * 16 + {0, 1, 4, 5} (at most 31 with the shift's 10).
          TileRowBits<kBlockN> bits;
          bits.load(bm, cls, i, nb, kBlockNLog2, cb * 8 + (lane & 2));
#pragma unroll
          for (int g = 0; g < kGroups; ++g)
#pragma unroll
            for (int e = 0; e < 8; ++e) {
              if ((e & 2) != 2 * r) continue;
              if (!bits.get(g >> 1, (g & 1) * 16 + (e & 4) + (e & 1))) s[g][e] = -INFINITY;
            }
        }
      }
    }

    // Online softmax. A row lives in the 4 lanes x, x ^ 2, x ^ 8, x ^ 10.
    float m_scaled[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mx = row_max[r];
#pragma unroll
      for (int g = 0; g < kGroups; ++g)
        mx = fmaxf(mx, fmaxf(fmaxf(s[g][2 * r], s[g][2 * r + 1]),
                             fmaxf(s[g][2 * r + 4], s[g][2 * r + 5])));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 8));
      // A row with no key so far keeps m = -inf; exponents then use 0 as the
      // offset so that exp2(-inf - -inf) never makes a NaN.
      m_scaled[r] = mx == -INFINITY ? 0.f : mx * scale_log2;
      const float corr = ex2(row_max[r] * scale_log2 - m_scaled[r]);
      row_max[r] = mx;
      float sum = 0.f;  // this tile's, added once (see the m16n8 kernel)
#pragma unroll
      for (int t = 0; t < 2 * kDimPairs; ++t)
#pragma unroll
        for (int e = 0; e < 8; ++e)
          if ((e & 2) == 2 * r) acc_o[t][e] *= corr;
#pragma unroll
      for (int g = 0; g < kGroups; ++g)
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          if ((e & 2) != 2 * r) continue;
          const float pv = ex2(fmaf(s[g][e], scale_log2, -m_scaled[r]));
          s[g][e] = pv;
          sum += pv;
        }
      row_sum[r] = fmaf(row_sum[r], corr, sum);  // per-lane partial; reduced at the end
    }

    // P as A fragments, per group: pa[g][step] for the 4 k-steps (keys of the
    // own block {0,1,4,5}, {2,3,6,7}, then the other block's).
    uint32_t pa[kGroups][4][2];
#pragma unroll
    for (int g = 0; g < kGroups; ++g) {
      const uint32_t p01 = pack2<Elem>(s[g][0], s[g][1]);  // row x, keys y, y + 1
      const uint32_t p45 = pack2<Elem>(s[g][4], s[g][5]);  // row x, keys y + 4, y + 5
      const uint32_t p23 = pack2<Elem>(s[g][2], s[g][3]);  // row x + 2
      const uint32_t p67 = pack2<Elem>(s[g][6], s[g][7]);
      // Send the row that is the partner's, receive the rest of this one.
      const uint32_t r0 = __shfl_xor_sync(0xffffffffu, odd_pair ? p01 : p23, 2);
      const uint32_t r1 = __shfl_xor_sync(0xffffffffu, odd_pair ? p45 : p67, 2);
      pa[g][0][0] = odd_pair ? r0 : p01;  // keys {0, 1, 4, 5}
      pa[g][0][1] = odd_pair ? r1 : p45;
      pa[g][1][0] = odd_pair ? p23 : r0;  // keys {2, 3, 6, 7}
      pa[g][1][1] = odd_pair ? p67 : r1;
#pragma unroll
      for (int st = 0; st < 2; ++st)
#pragma unroll
        for (int w = 0; w < 2; ++w)
          pa[g][2 + st][w] = __shfl_xor_sync(0xffffffffu, pa[g][st][w], 8);
    }

#pragma unroll
    for (int g = 0; g < kGroups; ++g)
#pragma unroll
      for (int st = 0; st < 4; ++st) {
        const int block = st < 2 ? cb : 1 - cb;
        const int key = g * 16 + block * 8 + v_key + 2 * (st & 1);
#pragma unroll
        for (int dp = 0; dp < kDimPairs; ++dp) {
          // Dims 16 (2 dp + cb) + 8 hi ..+7: n-tile 2 dp takes the first four,
          // 2 dp + 1 the last. A pair past the head dim reads a valid chunk
          // and its products are never stored.
          const int chunk = min(2 * (2 * dp + cb) + hi, T::kChunks - 1);
          const uint4 vb = lds128(v_smem + KVSwizzle::offset(key, chunk));
          mma_884<true>(acc_o[2 * dp], pa[g][st][0], pa[g][st][1], vb.x, vb.y);
          mma_884<true>(acc_o[2 * dp + 1], pa[g][st][0], pa[g][st][1], vb.z, vb.w);
        }
      }

    // Every warp is done with K (last barrier) and, after this one, with V.
    if (it + 1 < seq.count) staged.template store<KVSwizzle>(smem + T::kQBytes, tid);
    __syncthreads();
  }

  // Epilogue: normalise, stage O through this warp's rows of the Q buffer,
  // write whole 16-byte chunks.
  float lse[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = row_sum[r];
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    l += __shfl_xor_sync(0xffffffffu, l, 8);
    const RowEnd end = finish_row(l, row_max[r], scale_log2);
    const float inv = end.inv;
    lse[r] = end.lse;
#pragma unroll
    for (int t = 0; t < 2 * kDimPairs; ++t)
#pragma unroll
      for (int e = 0; e < 8; ++e)
        if ((e & 2) == 2 * r) acc_o[t][e] *= inv;
  }
  // n-tile t, column n: head dim 16 (2 (t / 2) + cb) + 4 (t % 2) + (n % 4) +
  // 8 (n / 4), as loaded from V.
#pragma unroll
  for (int t = 0; t < 2 * kDimPairs; ++t)
#pragma unroll
    for (int e = 0; e < 8; e += 2) {
      const int row = warp * 16 + rb * 8 + hi * 4 + (lane & 1) + (e & 2);
      const int n = (e & 4) + (lane & 2);
      const int dim = 16 * (2 * (t / 2) + cb) + 4 * (t % 2) + (n % 4) + 8 * (n / 4);
      if (dim < T::kHeadDim)
        *reinterpret_cast<uint32_t*>(smem + QSwizzle::offset(row, dim / 8) + 2 * (dim % 8)) =
            pack2<Elem>(acc_o[t][e], acc_o[t][e + 1]);
    }
  __syncwarp();

  Elem* o_g = blk.out_row0(p, blockIdx.y, blockIdx.z);
  constexpr int kWarpChunks = 16 * T::kChunks;
#pragma unroll
  for (int i = 0; i < (kWarpChunks + 31) / 32; ++i) {
    const int idx = lane + 32 * i;
    const int row = warp * 16 + idx / T::kChunks, c = idx % T::kChunks;
    if ((kWarpChunks % 32 == 0 || idx < kWarpChunks) && m0 + row < lq && c < chunks_valid) {
      const uint4 val = *reinterpret_cast<const uint4*>(smem + QSwizzle::offset(row, c));
      *reinterpret_cast<uint4*>(o_g + row * p.out_row_stride + c * 8) = val;
    }
  }

  float* lse_g = blk.lse_row0(p, blockIdx.y, blockIdx.z);
  if (lse_g != nullptr && (lane & 2) == 0 && cb == 0) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = m0 + warp * 16 + rb * 8 + hi * 4 + (lane & 1) + 2 * r;
      if (row < lq) lse_g[row * p.lse_row_stride] = lse[r];
    }
  }
#endif
}

}  // namespace fastattn::cuda
