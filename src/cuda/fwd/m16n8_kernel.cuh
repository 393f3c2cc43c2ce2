// FlashAttention-2 forward on the m16n8 tensor-core fragments, two paths:
//   sm80 and newer: mma.sync m16n8k16, K/V through a kStages-deep cp.async
//     ring (fp16 and bf16);
//   sm75 (Turing): the same product as two m16n8k8, and no cp.async: the next
//     K or V tile waits in registers while the current one is used, with one
//     shared buffer each for K and V (fp16 only: Turing has no bf16 MMA).
// One block per (query tile, head, sequence); each warp owns kWarpRows query
// rows, keeps Q in shared memory and its S / P / O fragments in registers.
// Paper notation: Br = kBlockM, Bc = kBlockN, m_i = row_max, l_i = row_sum.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "cuda/common/mask.cuh"
#include "cuda/common/mma.cuh"
#include "cuda/common/ptx.cuh"
#include "cuda/common/swizzle.cuh"
#include "cuda/flash_params.h"
#include "cuda/fwd/kernel_common.cuh"
#include "cuda/fwd/launch.cuh"
#include "cuda/fwd/tile_config.h"

namespace fastattn::cuda {

template <FwdPath kPath_, typename Elem_, int kHeadDim_, int kBlockM_, int kBlockN_, int kWarps_,
          int kStages_, bool kRescaleAfterP_>
struct FwdTraits {
  static constexpr FwdPath kPath = kPath_;
  static constexpr bool kAsyncCopy = kPath == FwdPath::kSm80;  // else register-staged
  using Elem = Elem_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = kBlockM_;
  static constexpr int kBlockN = kBlockN_;
  static constexpr int kWarps = kWarps_;
  static constexpr int kStages = kStages_;
  static constexpr bool kRescaleAfterP = kRescaleAfterP_;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kWarpRows = kBlockM / kWarps;
  static constexpr int kMTiles = kWarpRows / 16;  // 16-row MMA tiles per warp
  static constexpr int kChunks = kHeadDim / 8;    // 16-byte chunks that hold data
  // Shared rows span whole 128-byte swizzle atoms; d = 80, 96 leave the tail
  // of the second atom unused (never read).
  static constexpr int kRowChunks = (kHeadDim + 63) / 64 * 8;
  static constexpr int kQBytes = kBlockM * kRowChunks * 16;       // (kBlockM, kHeadDim)
  static constexpr int kKVTileBytes = kBlockN * kRowChunks * 16;  // (kBlockN, kHeadDim)
  // sm80: each row's allowed keys, worked out once per block into shared
  // memory (documents cost a search): computed in the mainloop's masking
  // they kept enough registers live to spill. The register-staged paths
  // size shared memory to Turing's 64 KiB and compute them in place.
  static constexpr bool kRowTable = kAsyncCopy;
  // int2 per row, then the parked pointers (see the kernel).
  static constexpr int kRowTableBytes = kRowTable ? kBlockM * 8 + 40 : 0;
  static constexpr int kSmemBytes = kQBytes + 2 * kStages * kKVTileBytes + kRowTableBytes;
  // sm80 block-mask kernels add, per stage, each row's mask bits over the
  // stage's key tile (kBlockN / 8 bytes a row) and the tile and its class
  // (int2): see the kernel.
  static constexpr int kRowBitsBytes = kBlockN / 8;
  static constexpr int kBlockSmemBytes =
      kSmemBytes + (kRowTable ? kStages * (8 + kBlockM * kRowBitsBytes) : 0);
  static_assert(kWarpRows % 16 == 0 && kHeadDim % 16 == 0 && kBlockN % 16 == 0);
  static_assert(!kAsyncCopy || kStages >= 2, "the ring prefetches kStages - 1 tiles ahead");
  static_assert(kAsyncCopy || kStages == 1, "register staging keeps one buffer each");
  static_assert(kPath != FwdPath::kSm75 || std::is_same_v<Elem, __half>,
                "sm75 tensor cores take fp16, not bf16");
  // The register-staged copy of one (kBlockN, kHeadDim) tile, and of Q.
  using StagedKV = StagedTile<Elem, kBlockN, kRowChunks, kChunks, kThreads>;
  using StagedQ = StagedTile<Elem, kBlockM, kRowChunks, kChunks, kThreads>;
};

// The shipped shapes: the tile table's for the plain kernels, the variant
// table's for the softcap and block-mask ones (see tile_config.h).
template <FwdPath kPath, typename Elem, int kHeadDim, bool kVariant>
struct DefaultFwd {
  static constexpr FwdTileConfig c = kVariant ? fwd_variant_tile_config(kPath, kHeadDim)
                                              : fwd_tile_config(kPath, kHeadDim);
  using type = FwdTraits<kPath, Elem, kHeadDim, c.block_m, c.block_n, c.warps, c.stages,
                         c.rescale_after_p>;
};
template <FwdPath kPath, typename Elem, int kHeadDim>
using DefaultFwdTraits = typename DefaultFwd<kPath, Elem, kHeadDim, false>::type;
template <FwdPath kPath, typename Elem, int kHeadDim>
using DefaultFwdVariantTraits = typename DefaultFwd<kPath, Elem, kHeadDim, true>::type;

template <class T>
__device__ __forceinline__ void mma_k16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                        uint32_t b1) {
  if constexpr (T::kPath == FwdPath::kSm75) {
    mma_16816_as_two_1688(d, a, b0, b1);
  } else {
    mma_16816<typename T::Elem>(d, a, b0, b1);
  }
}

// cp.async of rows [0, kRows) of a (kRows, kHeadDim) tile; rows >= rows_valid
// and chunks >= chunks_valid are zero-filled. A thread keeps one chunk column
// and steps down by a multiple of 8 rows, so its swizzled offset only grows
// by an immediate and few registers stay live (the flat index -> (row, chunk)
// form kept every step's address in registers and spilled at d = 80).
template <class T, int kRows>
__device__ __forceinline__ void load_tile(uint32_t smem, const typename T::Elem* g,
                                          int64_t row_stride, int rows_valid, int chunks_valid,
                                          int tid) {
  constexpr int kRowStep = T::kThreads / T::kRowChunks;
  static_assert(kRowStep % 8 == 0 && kRows % kRowStep == 0);
  const int c = tid % T::kRowChunks, r0 = tid / T::kRowChunks;
  if (T::kChunks < T::kRowChunks && c >= T::kChunks) return;  // shared padding, never read
  const uint32_t dst = smem + swizzled_offset<T::kRowChunks>(r0, c);
  const bool c_ok = c < chunks_valid;
  const typename T::Elem* src = g + r0 * row_stride + c * 8;
#pragma unroll
  for (int it = 0; it < kRows / kRowStep; ++it) {
    const bool ok = c_ok && r0 + it * kRowStep < rows_valid;
    cp_async_16(dst + it * kRowStep * T::kRowChunks * 16, ok ? src : g, ok);
    src += kRowStep * row_stride;
  }
}

// Blocks per SM the tile shapes are sized for (see tile_config.h).
template <class T>
constexpr int m16n8_min_blocks() {
  return T::kPath == FwdPath::kSm75 && T::kHeadDim == 64 ? 2 : 1;
}

template <class T, bool kSoftcap, bool kBlockMask>
__device__ __forceinline__ void flash_fwd_m16n8_body(const FwdParams p) {
  using Elem = typename T::Elem;
  constexpr int kBlockM = T::kBlockM, kBlockN = T::kBlockN, kStages = T::kStages;
  constexpr int kRC = T::kRowChunks, kMT = T::kMTiles;
  constexpr int kNT = kBlockN / 8;      // n-tiles of S = Q K^T
  constexpr int kDT = T::kHeadDim / 8;  // n-tiles of O
  constexpr int kQK = T::kHeadDim / 16; // k-steps of Q K^T
  constexpr int kPV = kBlockN / 16;     // k-steps of P V

  extern __shared__ __align__(128) unsigned char smem[];
  const uint32_t q_smem = smem_addr(smem);
  const uint32_t k_smem = q_smem + T::kQBytes;
  const uint32_t v_smem = k_smem + kStages * T::kKVTileBytes;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  // Last query tiles first: under a causal mask they have the most key tiles,
  // and starting them early shortens the tail of the grid.
  const int m_block = gridDim.x - 1 - blockIdx.x;
  const int h = blockIdx.y, b = blockIdx.z;

  FwdBlock<Elem> blk;
  if (!blk.locate(p, m_block, kBlockM, h, b)) return;
  const int lq = blk.lq, lk = blk.lk, m0 = blk.m0;
  const Elem* k_g = blk.k;
  const Elem* v_g = blk.v;
  const RowMask mask(p, b);
  const KeyTiles tiles(mask, m0, kBlockM, lq, lk, kBlockN);
  constexpr int kBlockNLog2 = log2_of(kBlockN);
  // Without kBlockMask the view is a compile-time empty one and every
  // block-mask instruction folds away.
  const BlockMaskView no_block;
  const BlockMaskView& bm = kBlockMask ? p.block : no_block;
  const int64_t mask_row = block_row(bm, b, h, m0);
  const TileSeq seq(tiles, bm, mask_row, kBlockNLog2);
  // The register-staged paths use this, which recomputes the row from the
  // block indices rather than reading mask_row: holding mask_row through
  // their mainloop made the sm75 d = 128 block-mask kernels spill more.
  auto tile_at = [&](int it) { return seq.at(it, bm, block_row(bm, b, h, m0), kBlockNLog2); };
  // Each row's [begin, end) of keys, int2 per row (see kRowTable).
  const uint32_t row_keys = q_smem + T::kQBytes + 2 * kStages * T::kKVTileBytes;
  // sm80 with a block mask: the thread that copies a stage's K/V also looks
  // up the tile and its class, and copies each row's mask bits over it
  // (cp.async, in K's commit group); the mainloop reads them from shared
  // memory. Looked up there from the mask tables instead, the table loads
  // and addresses, beside S and O, made the d = 96 and d = 128 kernels spill.
  constexpr bool kStagedMask = kBlockMask && T::kRowTable;
  constexpr int kRowBits = T::kRowBitsBytes;
  static_assert(!kStagedMask || kRowBits == 4 || kRowBits == 8 || kRowBits == 16);
  // sm80: values the mainloop's copies need, parked in shared memory (by
  // thread 0, before the first barrier) and re-read there: K's and V's first
  // key, the block-mask row, Lk and the first tile, the full tiles. Held in
  // registers through the loop beside S and O, they made the d = 96 and
  // d = 128 kernels spill.
  const uint32_t parked = row_keys + kBlockM * 8;
  if constexpr (T::kAsyncCopy) {
    if (tid == 0) {
      st_shared_u64(parked, reinterpret_cast<uint64_t>(k_g));
      st_shared_u64(parked + 8, reinterpret_cast<uint64_t>(v_g));
      st_shared_u64(parked + 16, static_cast<uint64_t>(mask_row));
      st_shared_v2(parked + 24, make_int2(lk, seq.offset));
      st_shared_v2(parked + 32, make_int2(tiles.full_begin, tiles.full_end));
    }
  }
  const uint32_t row_bits = parked + 40;  // kRowBits per row per stage
  // Per stage: (2 * tile + cut, class), cut = 1 when some row's key range
  // cuts the tile (the mainloop then reads the row table; else it skips it).
  const uint32_t tile_slots = row_bits + kStages * kBlockM * kRowBits;
  const int n_tiles = seq.count;
  const int full_begin = tiles.full_begin, full_end = tiles.full_end;
  if constexpr (T::kRowTable) {
    // Read after the mainloop's first barrier.
    for (int r = tid; r < kBlockM; r += T::kThreads) {
      int kb, ke;
      mask.range(min(m0 + r, lq - 1), lq, lk, &kb, &ke);
      st_shared_v2(row_keys + 8 * r, make_int2(kb, ke));
    }
  }

  const int chunks_valid = p.head_dim / 8;
  using Swizzle = RowXorSwizzle<kRC>;
  // sm80: K and V of a tile are separate commit groups, so Q K^T starts once
  // K has landed while V is still in flight. sm75: the tile after the current
  // one waits in `staged` (V during Q K^T, then the next K during P V).
  // kParked: called from the mainloop, where the parked values are read back.
  auto load_kv = [&](int it, int stage, auto parked_tag) {
    if constexpr (T::kAsyncCopy) {
      constexpr bool kParked = decltype(parked_tag)::value;
      const Elem* k_src = kParked ? reinterpret_cast<const Elem*>(ld_shared_u64(parked)) : k_g;
      const Elem* v_src =
          kParked ? reinterpret_cast<const Elem*>(ld_shared_u64(parked + 8)) : v_g;
      const int64_t row = kBlockMask && kParked ? static_cast<int64_t>(ld_shared_u64(parked + 16))
                                                : mask_row;
      const int2 lk_offset = kParked ? ld_shared_v2(parked + 24) : make_int2(lk, seq.offset);
      TileSeq at = seq;
      at.offset = lk_offset.y;
      const int keys = lk_offset.x;
      const bool live = it < n_tiles;
      const int nb = live ? at.at(it, bm, row, kBlockNLog2) : 0;
      const int row0 = nb * kBlockN;
      if constexpr (kStagedMask) {
        if (live) {
          const int32_t cls = tile_class(bm, row, nb, kBlockNLog2);
          // A FULL block that a row's range cuts is stored as kEmpty (never
          // the class of a visited tile), so that `class != kFull` alone
          // tells the mainloop the tile needs masking.
          const int2 full = kParked ? ld_shared_v2(parked + 32) : make_int2(full_begin, full_end);
          const bool cut = nb < full.x || nb >= full.y;
          if (tid == 0)
            st_shared_v2(tile_slots + 8 * stage,
                         make_int2(nb * 2 + cut, cut && cls == BlockMaskView::kFull ? BlockMaskView::kEmpty
                                                                           : cls));
          if (cls != BlockMaskView::kFull && tid < kBlockM)
            cp_async_small<kRowBits>(row_bits + (stage * kBlockM + tid) * kRowBits,
                                     TileRowBits<kBlockN>::row_words(bm, cls, m0 + tid, nb,
                                                                     kBlockNLog2));
        }
      }
      if (live)
        load_tile<T, kBlockN>(k_smem + stage * T::kKVTileBytes, k_src + row0 * p.k_row_stride,
                              p.k_row_stride, keys - row0, chunks_valid, tid);
      cp_async_commit();
      if (live)
        load_tile<T, kBlockN>(v_smem + stage * T::kKVTileBytes, v_src + row0 * p.v_row_stride,
                              p.v_row_stride, keys - row0, chunks_valid, tid);
      cp_async_commit();
    }
  };
  typename T::StagedKV staged;
  if constexpr (T::kAsyncCopy) {
    load_tile<T, kBlockM>(q_smem, blk.q, p.q_row_stride, lq - m0, chunks_valid, tid);
    cp_async_commit();
#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) load_kv(s, s, std::false_type{});
  } else {
    {
      typename T::StagedQ q_staged;
      q_staged.load(blk.q, p.q_row_stride, lq - m0, chunks_valid, tid);
      q_staged.template store<Swizzle>(smem, tid);
    }
    if (n_tiles > 0) {
      const int row0 = tile_at(0) * kBlockN;
      staged.load(k_g + row0 * p.k_row_stride, p.k_row_stride, lk - row0, chunks_valid, tid);
      staged.template store<Swizzle>(smem + T::kQBytes, tid);
    }
    __syncthreads();
  }

  // ldmatrix lane addresses. Q (A operand) and V (B, transposed) take
  // matrix m from rows (m & 1) * 8 + lane % 8 and chunk 2c + m / 2 of a
  // 16-row slice; K (B, rows are keys) from rows (m / 2) * 8 + lane % 8 and
  // chunk 2c + m % 2, so that each n-tile's two B registers come out
  // adjacent, as the MMA takes them (sharing V's order cost 4-9% in register
  // moves). A lane's row is congruent to lane % 8 modulo 8 in every slice,
  // so chunk 2c of its row sits at (c / 4) * 128 + ((2 (c % 4)) ^ sw) * 16
  // bytes with a per-lane sw: four offsets per order, the rest immediates or
  // the warp's Q base. (Left to itself the compiler kept every (tile,
  // k-step) address live across the mainloop and spilled.)
  const int xr = lane & 7;
  const int qv_row = lane & 15, qv_sw = (lane >> 4) ^ xr;
  const int k_row = xr + ((lane >> 4) << 3), k_sw = ((lane >> 3) & 1) ^ xr;
  uint32_t qv_off[4], k_off[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    qv_off[j] = (qv_row * kRC + ((2 * j) ^ qv_sw)) * 16;
    k_off[j] = (k_row * kRC + ((2 * j) ^ k_sw)) * 16;
  }
  const uint32_t q_warp = q_smem + warp * T::kWarpRows * kRC * 16;
  constexpr uint32_t kRow16Bytes = 16 * kRC * 16;  // 16 shared rows

  const int g = lane >> 2, t = lane & 3;
  const float scale_log2 = p.scale_log2;
  constexpr float k2Log2e = 2.8853900817779268f;  // 2 log2(e)
  const float softcap_k = p.softcap_inv_scale * k2Log2e;
  float acc_o[kMT][kDT][4];
  float row_max[kMT][2], row_sum[kMT][2];
#pragma unroll
  for (int mi = 0; mi < kMT; ++mi) {
#pragma unroll
    for (int dt = 0; dt < kDT; ++dt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc_o[mi][dt][e] = 0.f;
    row_max[mi][0] = row_max[mi][1] = -INFINITY;
    row_sum[mi][0] = row_sum[mi][1] = 0.f;
  }

  for (int it = 0; it < n_tiles; ++it) {
    const int stage = it % kStages;
    int nb = kStagedMask ? 0 : tile_at(it);
    int32_t cls = BlockMaskView::kFull;
    bool cut_tile = true;
    if constexpr (T::kAsyncCopy) {
      cp_async_wait<2 * kStages - 3>();  // K of this tile (and Q) landed
      // Also: every warp is done with the stage the prefetch below overwrites.
      __syncthreads();
      if constexpr (kStagedMask) {
        const int2 slot = ld_shared_v2(tile_slots + 8 * stage);
        nb = slot.x >> 1;
        cls = slot.y;
        cut_tile = slot.x & 1;
      }
      load_kv(it + kStages - 1, (it + kStages - 1) % kStages, std::true_type{});
    } else {
      const int row0 = nb * kBlockN;
      staged.load(v_g + row0 * p.v_row_stride, p.v_row_stride, lk - row0, chunks_valid, tid);
    }
    const uint32_t k_st = k_smem + stage * T::kKVTileBytes;
    const uint32_t v_st = v_smem + stage * T::kKVTileBytes;

    float s[kMT][kNT][4];  // (kWarpRows, kBlockN) scores
#pragma unroll
    for (int mi = 0; mi < kMT; ++mi)
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[mi][nt][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < kQK; ++kk) {
      uint32_t qa[kMT][4];
#pragma unroll
      for (int mi = 0; mi < kMT; ++mi)
        ldmatrix_x4(qa[mi], q_warp + qv_off[kk % 4] + mi * kRow16Bytes + (kk / 4) * 128);
#pragma unroll
      for (int np = 0; np < kNT / 2; ++np) {
        uint32_t kb[4];
        ldmatrix_x4(kb, k_st + k_off[kk % 4] + np * kRow16Bytes + (kk / 4) * 128);
#pragma unroll
        for (int mi = 0; mi < kMT; ++mi) {
          mma_k16<T>(s[mi][2 * np], qa[mi], kb[0], kb[1]);
          mma_k16<T>(s[mi][2 * np + 1], qa[mi], kb[2], kb[3]);
        }
      }
    }

    if constexpr (!T::kAsyncCopy) {
      // V lands in its buffer, which every warp finished reading at the end of
      // the last step; the barrier publishes it and ends all reads of K, whose
      // next tile is then fetched while the softmax and P V run.
      staged.template store<Swizzle>(smem + T::kQBytes + T::kKVTileBytes, tid);
      __syncthreads();
      if (it + 1 < n_tiles) {
        const int next0 = tile_at(it + 1) * kBlockN;
        staged.load(k_g + next0 * p.k_row_stride, p.k_row_stride, lk - next0, chunks_valid, tid);
      }
    }

    if constexpr (kSoftcap) {
#pragma unroll
      for (int mi = 0; mi < kMT; ++mi)
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) s[mi][nt][e] = softcap(s[mi][nt][e], p.softcap, softcap_k);
    }

    if constexpr (!kStagedMask) cls = tile_class(bm, block_row(bm, b, h, m0), nb, kBlockNLog2);
    // sm80: the full-tile range is re-read from its parked copy (a plain
    // load, which the barrier above keeps in the loop while leaving ptxas
    // free to schedule it; held in registers it spilled d = 64 and d = 128).
    const int2 full = T::kAsyncCopy ? *reinterpret_cast<const int2*>(smem + (parked + 32 - q_smem))
                                    : make_int2(full_begin, full_end);
    const bool masked = kStagedMask ? cls != BlockMaskView::kFull
                                    : nb < full.x || nb >= full.y || cls != BlockMaskView::kFull;
    if (masked) {
#pragma unroll
      for (int mi = 0; mi < kMT; ++mi)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int row = warp * T::kWarpRows + mi * 16 + g + 8 * r;  // in the block
          const int i = m0 + row;
          int kb_begin, kb_end;
          if constexpr (T::kRowTable) {
            const int2 keys = cut_tile ? ld_shared_v2(row_keys + 8 * row) : make_int2(0, 0x7fffffff);
            kb_begin = keys.x;
            kb_end = keys.y;
          } else if (T::kHeadDim <= 128 && !mask.has_documents()) {
            // Arithmetic on the kernel parameters alone: with the document
            // search inlined beside it (below), sm75 d = 128 spilled (and
            // d = 256 spills with this branch).
            mask.range_in(i, lq, lk, SegmentSpan{0, 0, 0}, &kb_begin, &kb_end);
          } else {
            mask.range(i, lq, lk, &kb_begin, &kb_end);
          }
#pragma unroll
          for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
            for (int c = 0; c < 2; ++c) {
              const int j = nb * kBlockN + nt * 8 + 2 * t + c;
              if (j < kb_begin || j >= kb_end) s[mi][nt][2 * r + c] = -INFINITY;
            }
          if (cls >= 0) {  // a PARTIAL block
            TileRowBits<kBlockN> bits;
            if constexpr (kStagedMask) {
              bits.load_shared(row_bits + (stage * kBlockM + row) * kRowBits, 2 * t);
            } else {
              bits.load(bm, cls, i, nb, kBlockNLog2, 2 * t);
            }
#pragma unroll
            for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
              for (int c = 0; c < 2; ++c)
                if (!bits.get(nt >> 2, 8 * (nt & 3) + c)) s[mi][nt][2 * r + c] = -INFINITY;
          }
        }
    }

    // Two orders of the online softmax, chosen per head dim by the tile
    // table (rescale_after_p): see FwdTileConfig.
    uint32_t pa[kMT][kPV][4];  // P as A fragments
    if constexpr (!T::kRescaleAfterP) {
      // Online softmax; a row's 4 owning lanes are one quad. Each row's O is
      // rescaled as soon as its correction is known, so ptxas can overlap
      // the exponentials with the tail of the previous P V.
#pragma unroll
      for (int mi = 0; mi < kMT; ++mi)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          float mx = row_max[mi][r];
#pragma unroll
          for (int nt = 0; nt < kNT; ++nt)
            mx = fmaxf(mx, fmaxf(s[mi][nt][2 * r], s[mi][nt][2 * r + 1]));
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
          // A row with no key so far keeps m = -inf; exponents then use 0 as
          // the offset so that exp2(-inf - -inf) never makes a NaN.
          const float m_scaled = mx == -INFINITY ? 0.f : mx * scale_log2;
          const float corr = ex2(row_max[mi][r] * scale_log2 - m_scaled);
          row_max[mi][r] = mx;
          float sum = 0.f;  // this tile's; see row_sum below
#pragma unroll
          for (int dt = 0; dt < kDT; ++dt) {
            acc_o[mi][dt][2 * r] *= corr;
            acc_o[mi][dt][2 * r + 1] *= corr;
          }
#pragma unroll
          for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
            for (int c = 0; c < 2; ++c) {
              const float pv = ex2(fmaf(s[mi][nt][2 * r + c], scale_log2, -m_scaled));
              s[mi][nt][2 * r + c] = pv;
              sum += pv;
            }
          // Per-lane partial, quad-reduced once at the end. The tile's terms
          // are summed apart and added once: one long chain of additions over
          // every key loses about sqrt(keys) roundings (an LSE 1.6x past
          // FlashAttention's rule at 20000 keys), a chain of tile sums far less.
          row_sum[mi][r] = fmaf(row_sum[mi][r], corr, sum);
        }
#pragma unroll
      for (int mi = 0; mi < kMT; ++mi)
#pragma unroll
        for (int kk = 0; kk < kPV; ++kk) {
          pa[mi][kk][0] = pack2<Elem>(s[mi][2 * kk][0], s[mi][2 * kk][1]);
          pa[mi][kk][1] = pack2<Elem>(s[mi][2 * kk][2], s[mi][2 * kk][3]);
          pa[mi][kk][2] = pack2<Elem>(s[mi][2 * kk + 1][0], s[mi][2 * kk + 1][1]);
          pa[mi][kk][3] = pack2<Elem>(s[mi][2 * kk + 1][2], s[mi][2 * kk + 1][3]);
        }
    } else {
      // Online softmax; a row's 4 owning lanes are one quad. The maxima of all
      // of this thread's rows go first, so that their shuffles overlap.
      float mx[kMT][2], m_scaled[kMT][2], corr[kMT][2];
#pragma unroll
      for (int mi = 0; mi < kMT; ++mi)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          mx[mi][r] = row_max[mi][r];
#pragma unroll
          for (int nt = 0; nt < kNT; ++nt)
            mx[mi][r] = fmaxf(mx[mi][r], fmaxf(s[mi][nt][2 * r], s[mi][nt][2 * r + 1]));
        }
#pragma unroll
      for (int mi = 0; mi < kMT; ++mi)
#pragma unroll
        for (int r = 0; r < 2; ++r)
          mx[mi][r] = fmaxf(mx[mi][r], __shfl_xor_sync(0xffffffffu, mx[mi][r], 1));
#pragma unroll
      for (int mi = 0; mi < kMT; ++mi)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          mx[mi][r] = fmaxf(mx[mi][r], __shfl_xor_sync(0xffffffffu, mx[mi][r], 2));
          // A row with no key so far keeps m = -inf; exponents then use 0 as the
          // offset so that exp2(-inf - -inf) never makes a NaN.
          m_scaled[mi][r] = mx[mi][r] == -INFINITY ? 0.f : mx[mi][r] * scale_log2;
          corr[mi][r] = ex2(row_max[mi][r] * scale_log2 - m_scaled[mi][r]);
          row_max[mi][r] = mx[mi][r];
        }

      // P goes straight into A fragments: scores (row g + 8r, n-tile nt) make
      // register 2 (nt % 2) + r of k-step nt / 2, so a pair of scores dies as
      // soon as it is exponentiated. Each tile still sums in key order.
#pragma unroll
      for (int mi = 0; mi < kMT; ++mi) {
        float sum[2] = {0.f, 0.f};  // this tile's, as in the other order
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            const float p0 = ex2(fmaf(s[mi][nt][2 * r], scale_log2, -m_scaled[mi][r]));
            const float p1 = ex2(fmaf(s[mi][nt][2 * r + 1], scale_log2, -m_scaled[mi][r]));
            sum[r] += p0;
            sum[r] += p1;
            pa[mi][nt / 2][2 * (nt % 2) + r] = pack2<Elem>(p0, p1);
          }
        // Per-lane partials; quad-reduced once at the end.
        row_sum[mi][0] = fmaf(row_sum[mi][0], corr[mi][0], sum[0]);
        row_sum[mi][1] = fmaf(row_sum[mi][1], corr[mi][1], sum[1]);
      }

      // O is rescaled after P, behind a warp-uniform branch. The branch skips
      // the kMT * kDT * 4 multiplies (128 at d = 128) when no row maximum of
      // the warp moved: every corr is then exactly 1 and the product would not
      // change a bit, which gets common as the running maxima settle on long
      // rows. It also ends the basic block, which keeps ptxas from hoisting the
      // V fragment loads and P V MMAs in among the exponentials: so overlapped,
      // S, P, early V fragments and O overflowed 255 registers at d = 128 (4
      // bytes spilled, 36 with the softcap).
      bool rescale = false;
#pragma unroll
      for (int mi = 0; mi < kMT; ++mi) rescale |= corr[mi][0] != 1.f || corr[mi][1] != 1.f;
      if (__any_sync(0xffffffffu, rescale)) {
#pragma unroll
        for (int mi = 0; mi < kMT; ++mi)
#pragma unroll
          for (int dt = 0; dt < kDT; ++dt)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc_o[mi][dt][e] *= corr[mi][e / 2];
      }
    }

    if constexpr (T::kAsyncCopy) {
      cp_async_wait<2 * kStages - 2>();  // V of this tile landed
      __syncthreads();
    }
#pragma unroll
    for (int kk = 0; kk < kPV; ++kk)
#pragma unroll
      for (int dp = 0; dp < kDT / 2; ++dp) {
        uint32_t vb[4];
        ldmatrix_x4_trans(vb, v_st + qv_off[dp % 4] + kk * kRow16Bytes + (dp / 4) * 128);
#pragma unroll
        for (int mi = 0; mi < kMT; ++mi) {
          mma_k16<T>(acc_o[mi][2 * dp], pa[mi][kk], vb[0], vb[1]);
          mma_k16<T>(acc_o[mi][2 * dp + 1], pa[mi][kk], vb[2], vb[3]);
        }
      }
    if constexpr (!T::kAsyncCopy) {
      // Every warp is done with K (last barrier) and, after this one, with V.
      if (it + 1 < n_tiles) staged.template store<Swizzle>(smem + T::kQBytes, tid);
      __syncthreads();
    }
  }

  // Epilogue: normalise, stage O through this warp's rows of the Q buffer and
  // write whole 16-byte chunks. The barrier covers a tile with no key, where
  // Q copies issued by other threads may still be landing in those rows.
  if constexpr (T::kAsyncCopy) cp_async_wait<0>();
  __syncthreads();
  float lse[kMT][2];
#pragma unroll
  for (int mi = 0; mi < kMT; ++mi)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float l = row_sum[mi][r];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      const RowEnd end = finish_row(l, row_max[mi][r], scale_log2);
      const float inv = end.inv;
      lse[mi][r] = end.lse;
#pragma unroll
      for (int dt = 0; dt < kDT; ++dt) {
        acc_o[mi][dt][2 * r] *= inv;
        acc_o[mi][dt][2 * r + 1] *= inv;
      }
    }
#pragma unroll
  for (int mi = 0; mi < kMT; ++mi)
#pragma unroll
    for (int dt = 0; dt < kDT; ++dt)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int row = warp * T::kWarpRows + mi * 16 + g + 8 * r;
        *reinterpret_cast<uint32_t*>(smem + swizzled_offset<kRC>(row, dt) + 4 * t) =
            pack2<Elem>(acc_o[mi][dt][2 * r], acc_o[mi][dt][2 * r + 1]);
      }
  __syncwarp();

  Elem* o_g = blk.out_row0(p, blockIdx.y, blockIdx.z);
  constexpr int kWarpChunks = T::kWarpRows * T::kChunks;
#pragma unroll
  for (int i = 0; i < (kWarpChunks + 31) / 32; ++i) {
    const int idx = lane + 32 * i;
    const int row = warp * T::kWarpRows + idx / T::kChunks, c = idx % T::kChunks;
    if ((kWarpChunks % 32 == 0 || idx < kWarpChunks) && m0 + row < lq && c < chunks_valid) {
      const uint4 val = *reinterpret_cast<const uint4*>(smem + swizzled_offset<kRC>(row, c));
      *reinterpret_cast<uint4*>(o_g + row * p.out_row_stride + c * 8) = val;
    }
  }

  float* lse_g = blk.lse_row0(p, blockIdx.y, blockIdx.z);
  if (lse_g != nullptr && t == 0) {
#pragma unroll
    for (int mi = 0; mi < kMT; ++mi)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int row = m0 + warp * T::kWarpRows + mi * 16 + g + 8 * r;
        if (row < lq) lse_g[row * p.lse_row_stride] = lse[mi][r];
      }
  }
}

// kSoftcap and kBlockMask are template flags so that the plain kernel
// carries none of their instructions or registers (the block mask's made
// the sm80 d = 128 kernel spill). The body is instantiated only for
// architectures that have its instructions
// (sm75 path: sm75 and newer; sm80 path: sm80 and newer). A build that also
// targets older GPUs gets a kernel that traps there, which the host never
// launches; should it be launched anyway, it fails loudly.
template <class T, bool kSoftcap, bool kBlockMask = false>
__global__ void __launch_bounds__(T::kThreads, m16n8_min_blocks<T>())
    flash_fwd_m16n8_kernel(const FwdParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 750
  __trap();
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  if constexpr (T::kAsyncCopy) {
    __trap();
  } else {
    flash_fwd_m16n8_body<T, kSoftcap, kBlockMask>(p);
  }
#else
  flash_fwd_m16n8_body<T, kSoftcap, kBlockMask>(p);
#endif
}

// One head dim's kernels behind launch_fwd: the plain one with the tile
// table's shape, the softcap and block-mask variants with the variant table's;
// on the sm80 path, where p.variant_tiles asks for it, the plain one too.
template <FwdPath kPath, typename Elem, int kHeadDim>
cudaError_t launch_m16n8(const FwdParams& p, cudaStream_t stream) {
  using T = DefaultFwdTraits<kPath, Elem, kHeadDim>;
  using TV = DefaultFwdVariantTraits<kPath, Elem, kHeadDim>;
  if constexpr (kPath == FwdPath::kSm80 && !std::is_same_v<T, TV>) {
    if (p.variant_tiles) {
      return launch_fwd<TV>(&flash_fwd_m16n8_kernel<TV, false>, &flash_fwd_m16n8_kernel<TV, true>,
                            p, stream, &flash_fwd_m16n8_kernel<TV, false, true>,
                            &flash_fwd_m16n8_kernel<TV, true, true>);
    }
  }
  return launch_fwd<T, TV>(&flash_fwd_m16n8_kernel<T, false>, &flash_fwd_m16n8_kernel<TV, true>,
                           p, stream, &flash_fwd_m16n8_kernel<TV, false, true>,
                           &flash_fwd_m16n8_kernel<TV, true, true>);
}

}  // namespace fastattn::cuda
