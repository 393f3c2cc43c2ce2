// Split-KV decode attention on tensor cores (mma.sync m16n8k16, sm80 and
// newer).
//
// A block = one (sequence, KV head, chunk of 16 query rows, key split). The
// rows are the (new token, query head) pairs that share the KV head (GQA
// packing: K and V are read once for all of them), padded to the 16 rows of
// one MMA tile. Padding costs nothing that matters: decoding is bound by the
// cache read, and one m16n8k16 does the dot products of 16 rows with 8 keys
// over 16 dims in one instruction, so a 16-key tile costs about 9 warp
// instructions a key whatever the row count (the CUDA-core kernel spends
// about 19 a key a row).
//
// Each warp streams its own 16-key K/V tiles (every kWarps-th tile of the
// split) through a private cp.async ring and keeps its own online softmax
// state, so the mainloop has no block barrier; the warps' states are merged
// through shared memory at the end. With several splits each block writes a
// float32 partial (O, LSE) that decode_combine_kernel merges, or, on sm90
// with up to kMaxClusterSplits splits, the splits form a cluster and merge
// through distributed shared memory (cluster_merge_splits).
#pragma once

#include <cfloat>
#include <cstdint>

#include <cooperative_groups.h>

#include "cuda/common/mma.cuh"
#include "cuda/common/ptx.cuh"
#include "cuda/common/swizzle.cuh"
#include "cuda/decode/decode_kernel.cuh"
#include "cuda/decode/decode_params.h"
#include "cuda/decode/elem.cuh"
#include "cuda/decode/rotary.cuh"

namespace fastattn::cuda {

template <typename Elem_, int kHeadDim_, int kWarps_, int kStages_, int kMinBlocks_ = 1>
struct DecodeMmaTraits {
  using Elem = Elem_;
  static constexpr int kHeadDim = kHeadDim_;  // padded; the problem's may be smaller
  static constexpr int kWarps = kWarps_;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kStages = kStages_;
  static constexpr int kMinBlocks = kMinBlocks_;  // resident blocks per SM the registers allow
  static constexpr int kRows = 16;      // query rows of a block: one MMA tile
  static constexpr int kTileKeys = 16;  // keys a warp moves and computes per step
  static constexpr int kRowChunks = kHeadDim / 8;            // 16-byte chunks in a row
  static constexpr int kCopyRowsPerPass = 32 / kRowChunks;   // rows a warp copies at once
  static constexpr int kCopyPasses = kTileKeys / kCopyRowsPerPass;
  static constexpr int kTileBytes = kTileKeys * kHeadDim * 2;
  static constexpr int kStageBytes = 2 * kTileBytes;  // K tile, then V tile
  static constexpr int kQBytes = kRows * kHeadDim * 2;
  static constexpr int kRingBytes = kWarps * kStages * kStageBytes;
  // Q in registers for the whole loop up to D = 128; at D = 256 its 64
  // registers would not fit beside the 128 of O, so it is re-read from
  // shared memory each tile (16 ldmatrix a tile, cheap beside the copy).
  static constexpr bool kQInRegisters = kHeadDim <= 128;
  // After the loop the ring is reused to merge the warps' states.
  // Floats per row of O: the +8 spreads the fragments' float2 stores of
  // rows g and g + 1 over different banks.
  static constexpr int kMergeStride = kHeadDim + 8;
  static constexpr int kMergeBytes = (kWarps * kRows * kMergeStride + 2 * kWarps * kRows) * 4;
  // The block's finished split state, read by the other blocks of its
  // cluster (cluster merge): O [kRows][kHeadDim] and LSE [kRows], float32.
  static constexpr int kSplitStateBytes = (kRows * kHeadDim + kRows) * 4;
  static constexpr int kAfterLoopBytes = kMergeBytes + kSplitStateBytes;
  static constexpr int kSmemBytes =
      kQBytes + (kRingBytes > kAfterLoopBytes ? kRingBytes : kAfterLoopBytes);
  static_assert(kHeadDim == 64 || kHeadDim == 128 || kHeadDim == 256, "head dim 64, 128 or 256");
};

namespace decode_mma {

// Base-2 score of a raw dot product: s * scale_log2, or with a softcap
// log2(e) * cap * tanh(s * scale / cap), cap * tanh(x) = cap - 2 cap / (1 + e^{2x}).
__device__ __forceinline__ float score_log2(const DecodeKernelParams& p, float s) {
  if (p.softcap > 0.f) {
    const float x = s * p.softcap_inv_scale;
    return (p.softcap - 2.f * p.softcap * rcp(1.f + ex2(x * 2.8853900817779268f))) *
           1.4426950408889634f;
  }
  return s * p.scale_log2;
}

// acc[e] += c * x[e] for 8 floats held as two float4s.
__device__ __forceinline__ void add_scaled8(float (&acc)[8], float c, const float4& x0,
                                            const float4& x1) {
  acc[0] = fmaf(c, x0.x, acc[0]);
  acc[1] = fmaf(c, x0.y, acc[1]);
  acc[2] = fmaf(c, x0.z, acc[2]);
  acc[3] = fmaf(c, x0.w, acc[3]);
  acc[4] = fmaf(c, x1.x, acc[4]);
  acc[5] = fmaf(c, x1.y, acc[5]);
  acc[6] = fmaf(c, x1.z, acc[6]);
  acc[7] = fmaf(c, x1.w, acc[7]);
}

// The same for 8 floats at a 16-byte aligned address in shared memory.
__device__ __forceinline__ void add_scaled8(float (&acc)[8], float c, const float* src) {
  add_scaled8(acc, c, *reinterpret_cast<const float4*>(src),
              *reinterpret_cast<const float4*>(src + 4));
}

}  // namespace decode_mma

// The cluster merge: the num_splits blocks of a cluster have each left their
// split's finished state (O normalised over the split's keys, and its LSE)
// in `state`; block `rank` finishes the rows r with r % num_splits == rank,
// reading every block's state through distributed shared memory. The second
// barrier keeps each block's shared memory alive until the others are done.
// A read of another block's shared memory takes about 0.3 us on an H100, so
// every split's O goes out before any is used: one round trip after the
// LSEs', not one a split (batch 1, 8 KV heads, 8 splits: the merge 1.7
// instead of 2.7 us, the call 0.8-0.9 us shorter at 1K-32K keys).
template <typename Traits>
__device__ __forceinline__ void cluster_merge_splits(const DecodeKernelParams& p, float* state,
                                                     int b, int h_kv, int chunk, int rows_total) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  using Elem = typename Traits::Elem;
  constexpr int kRows = Traits::kRows, kRowChunks = Traits::kRowChunks;
  constexpr int kHeadDim = Traits::kHeadDim;
  namespace cg = cooperative_groups;
  cg::cluster_group cluster = cg::this_cluster();
  cluster.sync();  // every split's state is written
  const int splits = p.num_splits, rank = static_cast<int>(cluster.block_rank());
  const int my_rows = (kRows - rank + splits - 1) / splits;
  for (int task = threadIdx.x; task < my_rows * kRowChunks; task += Traits::kThreads) {
    const int r = rank + (task / kRowChunks) * splits, dv = (task % kRowChunks) * 8;
    const int row = chunk * kRows + r;
    if (row >= rows_total || dv >= p.head_dim) continue;
    float lse[8], row_max = -INFINITY;  // splits <= 8 (kMaxClusterSplits)
#pragma unroll
    for (int s = 0; s < 8; ++s) {
      lse[s] = s < splits ? *cluster.map_shared_rank(state + kRows * kHeadDim + r, s) : -INFINITY;
      row_max = fmaxf(row_max, lse[s]);
    }
    float4 o_lo[8], o_hi[8];  // dims dv..dv+3 and dv+4..dv+7 of each split
#pragma unroll
    for (int s = 0; s < 8; ++s) {
      if (s < splits) {
        const float* src = cluster.map_shared_rank(state + r * kHeadDim + dv, s);
        o_lo[s] = *reinterpret_cast<const float4*>(src);
        o_hi[s] = *reinterpret_cast<const float4*>(src + 4);
      }
    }
    const float ref = row_max == -INFINITY ? 0.f : row_max;
    float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f}, sum = 0.f;
#pragma unroll
    for (int s = 0; s < 8; ++s) {
      if (s >= splits) break;
      const float w = __expf(lse[s] - ref);  // 0 for a split without keys
      sum += w;
      // A split without keys left an O that is never finished: skip it.
      if (w != 0.f) decode_mma::add_scaled8(acc, w, o_lo[s], o_hi[s]);
    }
    const float inv = sum > 0.f ? 1.f / sum : 0.f;
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[e] *= inv;
    const int tok = row / p.group_size, hq = h_kv * p.group_size + row % p.group_size;
    store_out_chunk<Elem>(p, b, tok, hq, dv, acc);
    if (dv == 0) store_out_lse(p, b, tok, hq, sum > 0.f ? ref + __logf(sum) : -INFINITY);
  }
  cluster.sync();
#else
  __trap();  // clusters exist from sm90 on; the host never asks for a cluster merge below
#endif
}

template <typename Traits>
__global__ void __launch_bounds__(Traits::kThreads, Traits::kMinBlocks)
    decode_mma_kernel(const DecodeKernelParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // mma.sync m16n8k16 and cp.async: the planner never picks this kernel below sm80
#else
  using Elem = typename Traits::Elem;
  constexpr int kRows = Traits::kRows, kTileKeys = Traits::kTileKeys;
  constexpr int kWarps = Traits::kWarps, kStages = Traits::kStages;
  constexpr int kRowChunks = Traits::kRowChunks, kKSteps = Traits::kHeadDim / 16;
  constexpr int kNTiles = Traits::kHeadDim / 8;  // n8 tiles of O
  constexpr float kNegInf = -INFINITY;

  extern __shared__ __align__(16) unsigned char smem[];
  const uint32_t q_smem = smem_addr(smem);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const uint32_t ring = q_smem + Traits::kQBytes + warp * kStages * Traits::kStageBytes;

  // Grid: x = (split, row chunk) with the chunk fastest, so the blocks that
  // read the same keys run together and share them through L2.
  // A cluster merge needs a cluster's blocks, the splits of one chunk, at
  // consecutive x.
  const int row_chunks = (p.group_size * p.seqlen_q + kRows - 1) / kRows;
  const int chunk = p.cluster_merge ? blockIdx.x / p.num_splits : blockIdx.x % row_chunks;
  const int split = p.cluster_merge ? blockIdx.x % p.num_splits : blockIdx.x / row_chunks;
  const int h_kv = blockIdx.y;
  const int b = blockIdx.z;
  // The merge kernel that follows may be scheduled now: it waits for this
  // grid's completion before reading anything, and its launch latency then
  // overlaps the last wave.
  allow_dependent_launch();
  const int cached_keys = p.cache_seqlens[b];  // in flight during the early copies below
  const int rows_total = p.group_size * p.seqlen_q;

  // The queries' loads go out beside the length's (without rotary, whose
  // angle depends on the length), so Q arrives with it, not a round trip
  // later. Task = (row, 16-byte chunk); padding rows and dims are zeros.
  constexpr int kQTasks = (kRows * kRowChunks + Traits::kThreads - 1) / Traits::kThreads;
  auto q_chunk = [&](int task) -> const Elem* {  // nullptr: padding
    const int r = task / kRowChunks, c = task % kRowChunks;
    const int row = chunk * kRows + r;
    if (task >= kRows * kRowChunks || row >= rows_total || c * 8 >= p.head_dim) return nullptr;
    const int token = row / p.group_size;
    const int head = h_kv * p.group_size + row % p.group_size;
    return static_cast<const Elem*>(p.q) + int64_t(b) * p.q_batch_stride +
           int64_t(token) * p.q_row_stride + int64_t(head) * p.q_head_stride + c * 8;
  };
  uint4 q_early[kQTasks];
#pragma unroll
  for (int k = 0; k < kQTasks; ++k) {
    const Elem* src = q_chunk(threadIdx.x + k * Traits::kThreads);
    q_early[k] = src != nullptr && p.rotary_style == kRotaryNone
                     ? *reinterpret_cast<const uint4*>(src)
                     : make_uint4(0, 0, 0, 0);
  }

  // Copies: lane -> (chunk, rows lane / kRowChunks + pass * kCopyRowsPerPass).
  const int copy_chunk = lane % kRowChunks;
  const int copy_row0 = lane / kRowChunks;
  const bool chunk_live = copy_chunk * 8 < p.head_dim;  // head-dim padding stays zero
  const Elem* k_base = static_cast<const Elem*>(p.k) + int64_t(h_kv) * p.k_head_stride + copy_chunk * 8;
  const Elem* v_base = static_cast<const Elem*>(p.v) + int64_t(h_kv) * p.v_head_stride + copy_chunk * 8;
  const int64_t k_step = int64_t(kWarps * kTileKeys) * p.k_row_stride;
  const int64_t v_step = int64_t(kWarps * kTileKeys) * p.v_row_stride;
  const int64_t k_pass = int64_t(Traits::kCopyRowsPerPass) * p.k_row_stride;
  const int64_t v_pass = int64_t(Traits::kCopyRowsPerPass) * p.v_row_stride;
  // A whole tile: its lane's rows from one base pointer in fixed steps.
  auto copy_whole_tile = [&](uint32_t stage, const Elem* k_src, const Elem* v_src) {
#pragma unroll
    for (int pass = 0; pass < Traits::kCopyPasses; ++pass) {
      const uint32_t at =
          swizzled_offset<kRowChunks>(copy_row0 + pass * Traits::kCopyRowsPerPass, copy_chunk);
      cp_async_16(stage + at, k_src + pass * k_pass, true);
      cp_async_16(stage + Traits::kTileBytes + at, v_src + pass * v_pass, true);
    }
  };
  // The same, for a tile whose first row is `row` of cache page `page` (a
  // contiguous cache's page is the sequence).
  auto copy_whole_tile_at = [&](uint32_t stage, int64_t page, int64_t row) {
    copy_whole_tile(stage, k_base + page * p.k_page_stride + row * p.k_row_stride,
                    v_base + page * p.v_page_stride + row * p.v_row_stride);
  };
  // This split's tiles of the block's keys [begin, end): tiles sit at
  // multiples of kTileKeys (so a page of 16k keys never straddles one), an
  // equal share in whole rounds of kWarps.
  auto split_tiles = [&](int begin, int end, int& first_tile, int& end_tile) {
    first_tile = end_tile = 0;
    if (begin < end) {
      const int first = begin / kTileKeys;
      const int count = (end + kTileKeys - 1) / kTileKeys - first;
      int per_split = (count + p.num_splits - 1) / p.num_splits;
      per_split = (per_split + kWarps - 1) / kWarps * kWarps;
      first_tile = min(first + count, first + split * per_split);
      end_tile = min(first + count, first_tile + per_split);
    }
  };
  // The first tiles' copies go out before the sequence's length arrives
  // from cache_seqlens (a memory round trip at the kernel's start), for the
  // length the planner assumed (early_copy_keys; the host sets it when every
  // row's keys start at key 0), from a contiguous cache or pages of 16k
  // keys. Once the length is known they are checked, and copied again where
  // they were not this split's whole tiles; a length a little short of the
  // assumed one mostly leaves the split's tiles where they were. The wait
  // for the length then overlaps the first copies (-0.5 to -1.4 us a call
  // at 1K-4K keys on an H100). With pages, a tile's page comes from the
  // table, whose entries past the sequence's length may hold anything:
  // clamped into the cache, such a copy reads some page and is discarded.
  const bool tile_pages = p.page_table != nullptr && p.page_size.divisor % kTileKeys == 0;
  const int32_t* seq_pages =
      p.page_table != nullptr ? p.page_table + int64_t(b) * p.page_table_stride : nullptr;
  const bool early = p.early_copy_keys > 0 && p.head_dim == Traits::kHeadDim &&
                     (p.page_table == nullptr || tile_pages);
  int early_begin = 0, early_end = 0;
  uint32_t early_copied = 0;  // bit i: the warp's tile i was copied
  // Pages of whole tiles (pages of 16k keys; tiles never straddle them):
  // lane l holds the page of this warp's tile 32 k + l in batch k, two
  // batches in registers and each loaded 32 tiles before its first use, so
  // a tile's page is one shuffle, never a wait on the page table. The first
  // two are loaded here for the planned length, and again below if the
  // split's tiles turn out to lie elsewhere.
  auto batch_of = [&](int first_tile, int end_tile, int k) {
    const int tile = first_tile + warp + (32 * k + lane) * kWarps;
    return tile_pages && tile < end_tile ? seq_pages[p.page_size.div(tile * kTileKeys)] : 0;
  };
  int batch_even = 0, batch_odd = 0;
  if (early) {
    split_tiles(0, p.early_copy_keys, early_begin, early_end);
    batch_even = batch_of(early_begin, early_end, 0);
    batch_odd = batch_of(early_begin, early_end, 1);
#pragma unroll
    for (int i = 0; i < kStages - 1; ++i) {
      const int tile = early_begin + warp + i * kWarps;
      const int key0 = tile * kTileKeys;
      if (tile < early_end && key0 + kTileKeys <= p.early_copy_keys) {
        int64_t page = b, row = key0 + copy_row0;
        if (p.page_table != nullptr) {
          const uint32_t in_seq = p.page_size.div(key0);
          page = min(static_cast<uint32_t>(seq_pages[in_seq]), static_cast<uint32_t>(p.num_pages - 1));
          row -= int64_t(in_seq) * p.page_size.divisor;
        }
        copy_whole_tile_at(ring + i * Traits::kStageBytes, page, row);
        early_copied |= 1u << i;
      }
      cp_async_commit();
    }
  }
  const int keys = cached_keys + p.new_tokens;

  // The block's key range is the union of its rows' ranges; `full` is their
  // intersection: tiles inside it need no per-row mask. A thread's own two
  // rows are g and g + 8 of the MMA fragments.
  int block_begin = keys, block_end = 0, full_begin = 0, full_end = keys;
  if (p.seqlen_q == 1) {  // every row is the same token
    const RowRange rr = row_keys(p, 0, keys);
    block_begin = full_begin = rr.begin;
    block_end = full_end = rr.end;
  } else {
    for (int r = 0; r < kRows; ++r) {
      const int row = chunk * kRows + r;
      if (row >= rows_total) break;
      const RowRange rr = row_keys(p, row / p.group_size, keys);
      if (rr.begin < rr.end) {
        block_begin = min(block_begin, rr.begin);
        block_end = max(block_end, rr.end);
      }
      full_begin = max(full_begin, rr.begin);
      full_end = min(full_end, rr.end);
    }
  }
  const int g = lane / 4, t = lane % 4;
  RowRange own[2];
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int row = chunk * kRows + g + 8 * half;
    own[half] = row < rows_total ? row_keys(p, row / p.group_size, keys) : RowRange{0, 0};
  }

  int tile_begin = 0, tile_end = 0;
  split_tiles(block_begin, block_end, tile_begin, tile_end);
  const int my_tiles = tile_begin + warp < tile_end ? (tile_end - tile_begin - warp + kWarps - 1) / kWarps : 0;
  auto tile_of = [&](int i) { return tile_begin + warp + i * kWarps; };

  auto load_batch = [&](int k) { return batch_of(tile_begin, tile_end, k); };
  if (!(early && tile_begin == early_begin && tile_end <= early_end)) {
    batch_even = load_batch(0);
    batch_odd = load_batch(1);
  }
  // Page of each key this lane copies in the next tile, looked up one issue
  // ahead (per key for other page sizes) so the page-table loads are in
  // flight during a tile's math.
  int next_page[Traits::kCopyPasses];
  auto look_up = [&](int i) {
    if (p.page_table == nullptr) {
#pragma unroll
      for (int pass = 0; pass < Traits::kCopyPasses; ++pass) next_page[pass] = b;
    } else if (tile_pages) {
      if (i % 32 == 0 && i >= 32) {  // batch i / 32 starts: fetch the one after it
        if ((i / 32) % 2 == 1) {
          batch_even = load_batch(i / 32 + 1);
        } else {
          batch_odd = load_batch(i / 32 + 1);
        }
      }
      const int page = __shfl_sync(0xffffffffu, (i / 32) % 2 == 1 ? batch_odd : batch_even, i % 32);
#pragma unroll
      for (int pass = 0; pass < Traits::kCopyPasses; ++pass) next_page[pass] = page;
    } else {
      const int key0 = tile_of(i) * kTileKeys;
#pragma unroll
      for (int pass = 0; pass < Traits::kCopyPasses; ++pass) {
        const int key = key0 + copy_row0 + pass * Traits::kCopyRowsPerPass;
        next_page[pass] = key < block_end ? seq_pages[p.page_size.div(key)] : 0;
      }
    }
  };
  // A whole tile inside the block's keys, from a contiguous cache or from
  // one page (pages of 16k keys), is a base pointer and steps of
  // kCopyRowsPerPass rows, with no per-row page, bounds or address
  // arithmetic. That arithmetic was a third of the kernel's instructions
  // (ncu at B = 16, Hkv = 8, 32K keys: 187 M executed, 64 M of them IMAD,
  // against cuDNN's 74 M); without it the long rows ran 1-2.5% faster and
  // batch 1 with 4K keys 6% on an H100.
  // Tiles are issued in order, kWarps tiles apart: a contiguous cache's next
  // tile is one fixed step on.
  const int64_t first_row = int64_t(tile_of(0)) * kTileKeys + copy_row0;
  const Elem* k_next = k_base + int64_t(b) * p.k_page_stride + first_row * p.k_row_stride;
  const Elem* v_next = v_base + int64_t(b) * p.v_page_stride + first_row * p.v_row_stride;
  const bool whole_tiles = chunk_live && (p.page_table == nullptr || tile_pages);
  auto issue = [&](int i) {
    const int tile = tile_of(i);
    const uint32_t stage = ring + (i % kStages) * Traits::kStageBytes;
    const int key0 = tile * kTileKeys;
    if (whole_tiles && key0 >= block_begin && key0 + kTileKeys <= block_end) {
      if (p.page_table != nullptr) {
        const int row0 = key0 + copy_row0 - int(p.page_size.div(key0) * p.page_size.divisor);
        copy_whole_tile_at(stage, next_page[0], row0);
      } else {
        copy_whole_tile(stage, k_next, v_next);
      }
    } else {
#pragma unroll
      for (int pass = 0; pass < Traits::kCopyPasses; ++pass) {
        const int r = copy_row0 + pass * Traits::kCopyRowsPerPass;
        const int key = key0 + r;
        const bool valid = chunk_live && key >= block_begin && key < block_end;
        const int row =
            p.page_table == nullptr ? key : key - int(p.page_size.div(key) * p.page_size.divisor);
        const Elem* k_src = k_base;
        const Elem* v_src = v_base;
        if (valid) {
          k_src += int64_t(next_page[pass]) * p.k_page_stride + int64_t(row) * p.k_row_stride;
          v_src += int64_t(next_page[pass]) * p.v_page_stride + int64_t(row) * p.v_row_stride;
        }
        const uint32_t at = swizzled_offset<kRowChunks>(r, copy_chunk);
        cp_async_16(stage + at, k_src, valid);
        cp_async_16(stage + Traits::kTileBytes + at, v_src, valid);
      }
    }
    k_next += k_step;
    v_next += v_step;
    // A contiguous cache's page is the sequence, set once by look_up(0).
    if (p.page_table != nullptr && i + 1 < my_tiles) look_up(i + 1);
  };
  // The early copies were right if this split's tiles start where they
  // were assumed to and each one the warp uses was copied and is whole (its
  // keys all inside the block's range, which starts at 0).
  bool early_right = early && tile_begin == early_begin;
#pragma unroll
  for (int i = 0; i < kStages - 1; ++i) {
    if (i < my_tiles && (!(early_copied >> i & 1u) || (tile_of(i) + 1) * kTileKeys > block_end)) {
      early_right = false;
    }
  }
  if (my_tiles > 0) look_up(0);  // also sets a contiguous cache's page, for edge tiles
  if (early_right) {
    k_next += (kStages - 1) * k_step;
    v_next += (kStages - 1) * v_step;
    // What the skipped issue(kStages - 2) would have done last: the next
    // tile's page.
    if (p.page_table != nullptr && kStages - 1 < my_tiles) look_up(kStages - 1);
    if (kStages - 1 < my_tiles) issue(kStages - 1);
    cp_async_commit();
  } else {
    if (early) cp_async_wait<0>();  // before its stages are written again
#pragma unroll
    for (int i = 0; i < kStages; ++i) {
      if (i < my_tiles) issue(i);
      cp_async_commit();
    }
  }

  // Queries into shared memory while the first tiles are in flight: rotated
  // (and rounded to the dtype, as a stored rotated q would be) when the call
  // appends with rotary.
#pragma unroll
  for (int k = 0; k < kQTasks; ++k) {
    const int task = threadIdx.x + k * Traits::kThreads;
    if (task >= kRows * kRowChunks) break;
    const int r = task / kRowChunks, c = task % kRowChunks;
    uint4 packed = q_early[k];
    const Elem* src = p.rotary_style != kRotaryNone ? q_chunk(task) : nullptr;
    if (src != nullptr) {
      const Elem* qrow = src - c * 8;
      const int pos = cached_keys + (chunk * kRows + r) / p.group_size;
      const float* cos_row = p.rotary_cos + int64_t(pos) * p.cos_row_stride;
      const float* sin_row = p.rotary_sin + int64_t(pos) * p.sin_row_stride;
      float f[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        f[e] = rotary_element(qrow, c * 8 + e, p.rotary_style, p.rotary_dim, cos_row, sin_row);
      }
      packed = pack8<Elem>(f);
    }
    *reinterpret_cast<uint4*>(smem + swizzled_offset<kRowChunks>(r, c)) = packed;
  }
  __syncthreads();

  // A fragments of Q, k-step kk: rows lane % 16, chunk 2 kk + lane / 16.
  auto load_q = [&](uint32_t (&qa)[4], int kk) {
    ldmatrix_x4(qa, q_smem + swizzled_offset<kRowChunks>(lane % 16, 2 * kk + lane / 16));
  };
  uint32_t q_frag[Traits::kQInRegisters ? kKSteps : 1][4];
  if constexpr (Traits::kQInRegisters) {
#pragma unroll
    for (int kk = 0; kk < kKSteps; ++kk) load_q(q_frag[kk], kk);
  }

  float o[kNTiles][4];
#pragma unroll
  for (int n = 0; n < kNTiles; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  float m[2] = {kNegInf, kNegInf}, l[2] = {0.f, 0.f};

  const bool softcap = p.softcap > 0.f;
  const float scale_log2 = p.scale_log2;
  for (int i = 0; i < my_tiles; ++i) {
    // The next copy goes into the stage tile i - 1 used, so it is issued as
    // soon as every lane is done reading that, before waiting for tile i:
    // kStages tiles stay in flight while the warp waits. Iteration 0's went
    // out before the loop, into the stage no tile had used.
    if (i > 0) {
      __syncwarp();
      if (i + kStages - 1 < my_tiles) issue(i + kStages - 1);
      cp_async_commit();
    }
    cp_async_wait<kStages - 1>();  // this lane's copies of tile i landed
    __syncwarp();                  // and every other lane's (ldmatrix reads them all)
    const uint32_t k_tile = ring + (i % kStages) * Traits::kStageBytes;
    const uint32_t v_tile = k_tile + Traits::kTileBytes;
    const int key0 = tile_of(i) * kTileKeys;

    // S = Q K^T for 16 keys: n-tile j holds keys 8j..8j+7. ldmatrix matrix
    // lane/8 = (keys (lane/16)*8.., chunk 2kk + (lane/8)%2).
    float s[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
#pragma unroll
    for (int kk = 0; kk < kKSteps; ++kk) {
      uint32_t kb[4];
      ldmatrix_x4(kb, k_tile + swizzled_offset<kRowChunks>((lane / 16) * 8 + lane % 8,
                                                           2 * kk + (lane / 8) % 2));
      if constexpr (Traits::kQInRegisters) {
        mma_16816<Elem>(s[0], q_frag[kk], kb[0], kb[1]);
        mma_16816<Elem>(s[1], q_frag[kk], kb[2], kb[3]);
      } else {
        uint32_t qa[4];
        load_q(qa, kk);
        mma_16816<Elem>(s[0], qa, kb[0], kb[1]);
        mma_16816<Elem>(s[1], qa, kb[2], kb[3]);
      }
    }

    // Online softmax in base 2. Element e of n-tile j is key 8j + 2t + e%2
    // of row g (e < 2) or g + 8.
    // The softcap test stays out of the per-score code (one branch a tile).
    if (softcap) {
#pragma unroll
      for (int j = 0; j < 2; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[j][e] = decode_mma::score_log2(p, s[j][e]);
    } else {
#pragma unroll
      for (int j = 0; j < 2; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[j][e] *= scale_log2;
    }
    // Only the tiles at a row's ends are masked: a branch, not predicated
    // code in every tile.
    if (__builtin_expect(key0 < full_begin || key0 + kTileKeys > full_end, 0)) {
#pragma unroll
      for (int j = 0; j < 2; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = key0 + 8 * j + 2 * t + e % 2;
          if (key < own[e / 2].begin || key >= own[e / 2].end) s[j][e] = kNegInf;
        }
      }
    }
    float row_max[2] = {m[0], m[1]};
#pragma unroll
    for (int j = 0; j < 2; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) row_max[e / 2] = fmaxf(row_max[e / 2], s[j][e]);
    }
    float alpha[2];
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      row_max[half] = fmaxf(row_max[half], __shfl_xor_sync(0xffffffffu, row_max[half], 1));
      row_max[half] = fmaxf(row_max[half], __shfl_xor_sync(0xffffffffu, row_max[half], 2));
      const float ref = row_max[half] == kNegInf ? 0.f : row_max[half];
      alpha[half] = ex2(m[half] - ref);
      m[half] = row_max[half];
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        s[j][2 * half] = ex2(s[j][2 * half] - ref);
        s[j][2 * half + 1] = ex2(s[j][2 * half + 1] - ref);
      }
      l[half] = l[half] * alpha[half] + (s[0][2 * half] + s[0][2 * half + 1]) +
                (s[1][2 * half] + s[1][2 * half + 1]);
    }
    // O only needs rescaling when some row's maximum moved, which after the
    // first tiles is rare.
    if (__any_sync(0xffffffffu, alpha[0] != 1.f || alpha[1] != 1.f)) {
#pragma unroll
      for (int n = 0; n < kNTiles; ++n) {
        o[n][0] *= alpha[0];
        o[n][1] *= alpha[0];
        o[n][2] *= alpha[1];
        o[n][3] *= alpha[1];
      }
    }

    // O += P V: P's C fragments are the A fragment of one k16 step.
    const uint32_t pa[4] = {pack2<Elem>(s[0][0], s[0][1]), pack2<Elem>(s[0][2], s[0][3]),
                            pack2<Elem>(s[1][0], s[1][1]), pack2<Elem>(s[1][2], s[1][3])};
#pragma unroll
    for (int n2 = 0; n2 < kNTiles / 2; ++n2) {
      uint32_t vb[4];
      ldmatrix_x4_trans(vb, v_tile + swizzled_offset<kRowChunks>(((lane / 8) % 2) * 8 + lane % 8,
                                                                 2 * n2 + lane / 16));
      mma_16816<Elem>(o[2 * n2], pa, vb[0], vb[1]);
      mma_16816<Elem>(o[2 * n2 + 1], pa, vb[2], vb[3]);
    }
  }

  // Merge the warps' states through the ring's memory.
  cp_async_wait<0>();
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    l[half] += __shfl_xor_sync(0xffffffffu, l[half], 1);
    l[half] += __shfl_xor_sync(0xffffffffu, l[half], 2);
  }
  __syncthreads();
  float* merge = reinterpret_cast<float*>(smem + Traits::kQBytes);
  auto s_o = reinterpret_cast<float(*)[kRows][Traits::kMergeStride]>(merge);
  float* s_m = merge + kWarps * kRows * Traits::kMergeStride;  // [kWarps][kRows]
  float* s_l = s_m + kWarps * kRows;
  float* s_state = s_l + kWarps * kRows;  // [kRows][kHeadDim], then the LSE [kRows]
  float* s_state_lse = s_state + kRows * Traits::kHeadDim;
#pragma unroll
  for (int n = 0; n < kNTiles; ++n) {
    *reinterpret_cast<float2*>(&s_o[warp][g][8 * n + 2 * t]) = make_float2(o[n][0], o[n][1]);
    *reinterpret_cast<float2*>(&s_o[warp][g + 8][8 * n + 2 * t]) = make_float2(o[n][2], o[n][3]);
  }
  if (t == 0) {
    s_m[warp * kRows + g] = m[0];
    s_m[warp * kRows + g + 8] = m[1];
    s_l[warp * kRows + g] = l[0];
    s_l[warp * kRows + g + 8] = l[1];
  }
  __syncthreads();

  // Each thread finishes 8 dims of one row: the warps' weights recomputed
  // from the row's maxima (kWarps values, cheaper than another barrier).
  auto row_of = [&](int r) { return chunk * kRows + r; };
  for (int task = threadIdx.x; task < kRows * kRowChunks; task += Traits::kThreads) {
    const int r = task / kRowChunks, dv = (task % kRowChunks) * 8;
    if (row_of(r) >= rows_total) continue;
    float row_max = kNegInf;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) row_max = fmaxf(row_max, s_m[w * kRows + r]);
    const float ref = row_max == kNegInf ? 0.f : row_max;
    float weight[kWarps], sum = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      weight[w] = ex2(s_m[w * kRows + r] - ref);
      sum += s_l[w * kRows + r] * weight[w];
    }
    const float inv = sum > 0.f ? 1.f / sum : 0.f;
    const int tok = row_of(r) / p.group_size;
    const int hq = h_kv * p.group_size + row_of(r) % p.group_size;
    // Natural-log LSE of the row's scores over this split's keys.
    const float lse = sum > 0.f ? (ref + __log2f(sum)) * 0.6931471805599453f : kNegInf;
    if (dv < p.head_dim) {
      float acc[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[e] = 0.f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) {
        decode_mma::add_scaled8(acc, weight[w] * inv, &s_o[w][r][dv]);
      }
      if (p.cluster_merge) {
        float* mine = s_state + r * Traits::kHeadDim + dv;
        *reinterpret_cast<float4*>(mine) = make_float4(acc[0], acc[1], acc[2], acc[3]);
        *reinterpret_cast<float4*>(mine + 4) = make_float4(acc[4], acc[5], acc[6], acc[7]);
      } else {
        store_row_chunk<Elem>(p, split, b, tok, hq, dv, acc);
      }
    }
    if (dv == 0) {
      if (p.cluster_merge) {
        s_state_lse[r] = lse;
      } else {
        store_row_lse(p, split, b, tok, hq, lse);
      }
    }
  }
  if (p.cluster_merge) cluster_merge_splits<Traits>(p, s_state, b, h_kv, chunk, rows_total);
#endif
}

}  // namespace fastattn::cuda
