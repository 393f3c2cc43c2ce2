// Hopper forward kernel (sm90a): the two-level tiling of FastAttention on a
// warp-specialized block.
//   First level: (kBlockN, d) K/V tiles moved by the copy engine (TMA) into a
//     kStages-deep shared-memory ring, issued by one producer warp and
//     handed over through mbarriers (full: bytes landed; empty: consumers done).
//   Second level: two or three consumer warpgroups, 64 query rows each, run S = Q K^T
//     (wgmma, both operands in shared memory) and O += P V (wgmma, P from
//     registers, V read N-major straight from its [key][dim] tile), with the
//     online softmax on the CUDA cores in between.
// The tensor cores and the CUDA cores overlap at two levels, each a compile-
// time switch so that its worth can be measured:
//   kOverlap (within a warpgroup): Q K^T of tile i+1 and P V of tile i are
//     issued together, and P V runs while the softmax of tile i+1 does
//     (see kPackLate);
//   kPingPong (between warpgroups): named barriers let one warpgroup issue its
//     MMAs while the other runs its softmax, so the tensor cores stay fed.
// Key tiles are visited from the last to the first, so the masked tiles at
// the diagonal come first and the rest run without mask instructions.
// The grid is persistent: one block per SM walks query tiles longest-first
// (under a causal mask the last query tiles see the most keys), and the
// producer loads the next tile's Q and K/V while the consumers finish the
// current one, whose O leaves through a TMA store.
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/common/mask.cuh"
#include "cuda/common/mma.cuh"
#include "cuda/common/ptx.cuh"
#include "cuda/common/sm90.cuh"
#include "cuda/common/wgmma_ops.cuh"
#include "cuda/flash_params.h"
#include "cuda/fwd/kernel_common.cuh"
#include "cuda/fwd/tile_config.h"

namespace fastattn::cuda {

// What a launch adds to FwdParams: the tensor maps (built on the host, see
// host/tma_desc.h), 4-d (head dim, rows, heads, sequences) views of Q, K, V
// and O (varlen batches store O without its map: a box would spill into the
// next sequence), and the tile order's section width (see TileOrder).
struct Sm90Args {
  CUtensorMap q, k, v, o;
  int section_heads;
};

template <typename Elem_, int kHeadDim_, int kBlockN_, int kStages_, bool kOverlap_,
          bool kPingPong_, int kConsumers_ = 2, int kBlocksPerSm_ = 1, bool kDescribed_ = false>
struct Sm90Traits {
  using Elem = Elem_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockN = kBlockN_;
  static constexpr int kStages = kStages_;
  static constexpr bool kOverlap = kOverlap_;
  static constexpr bool kPingPong = kPingPong_;
  static constexpr int kConsumers = kConsumers_;  // warpgroups of 64 query rows
  static constexpr int kBlocksPerSm = kBlocksPerSm_;
  static constexpr int kBlockM = 64 * kConsumers;
  // The short-rows kernels: the producer works out each query tile a tile
  // ahead and hands it to the consumers in shared memory (producer_described),
  // and Q has two buffers where shared memory holds them beside O.
  static constexpr bool kDescribed = kDescribed_;
  // Where the overlapped mainloop turns the softmaxed S into P (kOverlap):
  // packed right after the softmax, P lands in the registers that the P V in
  // flight reads, and ptxas then hoists the wait for that P V above the
  // softmax (to interleave the packs with the exponentials), so the softmax
  // never runs beside P V. Packed late, at the start of the next step, the
  // softmax does: +1-3% at d = 128 from 2K tokens against the early pack
  // (interleaved A/B runs on an H100). Three consumers (d = 64) measured 1-4%
  // faster with the early pack.
  static constexpr bool kPackLate = kConsumers == 2;
  // Lazy rescaling: a row's running maximum is kept until the new one
  // exceeds it by more than 8 (log2), so P stays <= 2^8 and O is rescaled
  // only in the tiles where some row of the warp moved it, which after the
  // first tile is rare. It saves 64 multiplies a key tile per thread at
  // d = 128 (+0.5-1.5% at 1K-4K tokens, interleaved A/B on an H100) and 128
  // at d = 256 (+1.5-4%); at d = 64 the 32 it saves did not pay for the vote
  // and the branch (0.3-1% slower). d = 96 is not measured.
  static constexpr bool kLazyRescale = kHeadDim >= 128;
  static constexpr int kThreads = 128 * (kConsumers + 1);
  // Shared tiles are stored as column blocks of 64 elements (128-byte rows,
  // the widest TMA / wgmma swizzle); d = 96 leaves half of its second block
  // zero-filled by the copy engine.
  static constexpr int kColBlocks = (kHeadDim + 63) / 64;
  static constexpr int kQBlockBytes = kBlockM * 128;
  static constexpr int kKVBlockBytes = kBlockN * 128;
  static constexpr int kQBytes = kColBlocks * kQBlockBytes;
  static constexpr int kKVTileBytes = kColBlocks * kKVBlockBytes;
  // A block's share of the SM's 228 KiB, less 1 KiB reserved per block.
  static constexpr int kSmemLimit =
      kBlocksPerSm == 1 ? 227 * 1024 : 228 * 1024 / kBlocksPerSm - 1024;
  // Barriers: a full and an empty one per Q buffer and per K and V stage;
  // kDescribed adds two tile descriptors with theirs.
  static constexpr int kDescriptorBytes = 96;  // Sm90Block::kDescWords x 16
  static constexpr int kRingBarrierBytes =
      8 * 4 * kStages + (kDescribed ? 2 * (16 + kDescriptorBytes) : 0);
  // Q buffers: two (kDescribed) where they fit beside the K/V ring, the
  // barriers and a separate O buffer.
  static constexpr int kQBuffers = kDescribed && 3 * kQBytes + 2 * kStages * kKVTileBytes +
                                                         16 * 2 + kRingBarrierBytes + 1024 <=
                                                     kSmemLimit
                                       ? 2
                                       : 1;
  static constexpr int kBarrierBytes = 16 * kQBuffers + kRingBarrierBytes;
  // O is staged for its store in a buffer of its own where shared memory
  // allows (then the next tile's Q can land during the epilogue), else in
  // the Q tile.
  static constexpr int kRingBytes =
      kQBuffers * kQBytes + 2 * kStages * kKVTileBytes + kBarrierBytes + 1024;
  static constexpr bool kSeparateO = kRingBytes + kQBytes <= kSmemLimit;
  // + 1 KiB to align the tiles to the swizzle's 1024-byte atoms.
  static constexpr int kSmemBytes = kRingBytes + (kSeparateO ? kQBytes : 0);
  // Registers per thread after setmaxnreg. The block is launched with 65536
  // / (threads x blocks per SM), rounded down to 8 (168 for two consumers,
  // 128 for three, 80 for two consumers and two blocks), and may only
  // redistribute those: 128 x 24 + 256 x 240 <= 384 x 168, 128 x 24 + 384 x
  // 160 <= 512 x 128, 128 x 24 + 256 x 104 <= 384 x 80. Asking for more
  // leaves the consumers waiting in setmaxnreg.inc for registers that never
  // come.
  static constexpr int kLaunchRegs = 65536 / kBlocksPerSm / kThreads / 8 * 8;
  static constexpr int kProducerRegs = 24;
  static constexpr int kConsumerRegs = kBlocksPerSm == 2 ? 104 : kConsumers == 2 ? 240 : 160;
  static_assert(kConsumers == 2 || kConsumers == 3);
  static_assert(kBlocksPerSm == 1 || (kBlocksPerSm == 2 && kConsumers == 2));
  static_assert(128 * kProducerRegs + 128 * kConsumers * kConsumerRegs <= kThreads * kLaunchRegs);
  static_assert(kBlockN % 16 == 0 && kHeadDim % 16 == 0);
  static_assert(kSmemBytes <= kSmemLimit, "a block's share of a Hopper SM's shared memory");
  // Timestamps of a query tile's steps (Sm90Event): a tracing build
  // (bench/cuda/sm90_trace.cu) derives traits whose record() stores them;
  // here every hook compiles away.
  static constexpr bool kTrace = false;
  static __device__ __forceinline__ void record(int /*role*/, int /*n*/, int /*event*/) {}
};

// The steps a tracing build timestamps, by the producer thread (role 0) and
// thread 0 of each consumer warpgroup (role 1 + consumer index).
enum Sm90Event : int {
  kEvTileBegin,     // consumer: a query tile starts
  kEvQReady,        // consumer: its Q has landed
  kEvKReady,        // consumer: a K tile has landed
  kEvTurn,          // consumer: its ping-pong turn came
  kEvIssued,        // consumer: MMAs issued, turn passed on
  kEvScores,        // consumer: S = Q K^T complete
  kEvSoftmax,       // consumer: softmax done
  kEvPv,            // consumer: O += P V complete
  kEvEpilogue,      // consumer: O stored (TMA store issued)
  kEvOBufferFree,   // consumer: epilogue, the O buffer is free (previous store read)
  kEvOStaged,       // consumer: epilogue, O normalised and staged in shared memory
  kEvProducerQ,     // producer: the Q buffer is free, Q issued
  kEvProducerK,     // producer: a K slot is free, K issued
  kEvProducerV,     // producer: a V slot is free, V issued
  kEvCount
};

// The shipped configuration of a head dim and table: the table's shape (a
// consumer warpgroup per 64 query rows), ping-pong on, and the
// intra-warpgroup overlap where registers hold it (not at d = 256, nor with
// two blocks per SM).
enum class Sm90Table { kPlain, kVariant, kShortRows };
template <typename Elem, int kHeadDim, Sm90Table kTable>
struct DefaultSm90 {
  static constexpr FwdTileConfig c =
      kTable == Sm90Table::kVariant     ? fwd_variant_tile_config(FwdPath::kSm90, kHeadDim)
      : kTable == Sm90Table::kShortRows ? sm90_short_rows_tile_config(kHeadDim)
                                        : sm90_tile_config(kHeadDim);
  using type = Sm90Traits<Elem, kHeadDim, c.block_n, c.stages,
                          kHeadDim < 256 && c.blocks_per_sm == 1, true, c.block_m / 64,
                          c.blocks_per_sm, kTable == Sm90Table::kShortRows>;
};
// The plain kernel's traits, the softcap and block-mask kernels'
// (fwd_variant_tile_config), and the plain kernel's for short rows.
template <typename Elem, int kHeadDim>
using DefaultSm90Traits = typename DefaultSm90<Elem, kHeadDim, Sm90Table::kPlain>::type;
template <typename Elem, int kHeadDim>
using DefaultSm90VariantTraits = typename DefaultSm90<Elem, kHeadDim, Sm90Table::kVariant>::type;
template <typename Elem, int kHeadDim>
using DefaultSm90ShortRowsTraits =
    typename DefaultSm90<Elem, kHeadDim, Sm90Table::kShortRows>::type;

namespace sm90_detail {

// Named barriers (0 is __syncthreads): the ping-pong turn of each consumer
// warpgroup, and each warpgroup's own epilogue barrier (3 consumers at most).
constexpr int kTurnBarrier = 1;      // + consumer index
constexpr int kEpilogueBarrier = 4;  // + consumer index

template <class T>
struct Smem {
  uint32_t q, o, k, v, bar;
  __device__ __forceinline__ explicit Smem(unsigned char* raw) {
    const uint32_t base = (smem_addr(raw) + 1023u) & ~1023u;
    q = base;
    o = T::kSeparateO ? q + T::kQBuffers * T::kQBytes : q;
    k = q + (T::kQBuffers + (T::kSeparateO ? 1 : 0)) * T::kQBytes;
    v = k + T::kStages * T::kKVTileBytes;
    bar = v + T::kStages * T::kKVTileBytes;
  }
  static constexpr int kQB = 2 * T::kQBuffers;
  __device__ __forceinline__ uint32_t q_tile(int i) const { return q + i * T::kQBytes; }
  __device__ __forceinline__ uint32_t q_full(int i) const { return bar + 16 * i; }
  __device__ __forceinline__ uint32_t q_empty(int i) const { return bar + 16 * i + 8; }
  __device__ __forceinline__ uint32_t k_full(int s) const { return bar + 8 * (kQB + s); }
  __device__ __forceinline__ uint32_t v_full(int s) const { return bar + 8 * (kQB + T::kStages + s); }
  __device__ __forceinline__ uint32_t k_empty(int s) const {
    return bar + 8 * (kQB + 2 * T::kStages + s);
  }
  __device__ __forceinline__ uint32_t v_empty(int s) const {
    return bar + 8 * (kQB + 3 * T::kStages + s);
  }
  // The two tile descriptors and their barriers.
  __device__ __forceinline__ uint32_t desc_full(int i) const {
    return bar + 8 * (kQB + 4 * T::kStages + i);
  }
  __device__ __forceinline__ uint32_t desc_empty(int i) const {
    return bar + 8 * (kQB + 4 * T::kStages + 2 + i);
  }
  __device__ __forceinline__ uint32_t desc(int i) const {
    return bar + 8 * (kQB + 4 * T::kStages + 4) + T::kDescriptorBytes * i;
  }
  __device__ __forceinline__ uint32_t k_tile(int s) const { return k + s * T::kKVTileBytes; }
  __device__ __forceinline__ uint32_t v_tile(int s) const { return v + s * T::kKVTileBytes; }
};

// The persistent grid's work list. Query tiles come in pairs, m and
// tiles_m - 1 - m of one (head, sequence): under a causal mask their key
// tiles add up to the same count for every pair, so dealing pairs round-
// robin to the blocks gives each about the same work without a global
// queue (the longer tile of a pair runs first). (head, sequence) pairs form
// sections of `section` heads (chosen on the host: persistent_grid); within
// a section the pairs go rank by rank, so the blocks running at once share
// the K/V of a few heads instead of streaming one each.
struct TileOrder {
  int tiles_m, pairs_m, heads_batch, section;
  __device__ __forceinline__ TileOrder(const FwdParams& p, int block_m, int section_heads)
      : tiles_m((p.seqlen_q + block_m - 1) / block_m),
        pairs_m((tiles_m + 1) / 2),
        heads_batch(p.heads_q * p.batch),
        section(section_heads) {}

  // Pair i of the order: its rank (its tiles are rank and tiles_m - 1 -
  // rank) and its (head, sequence) index hb.
  __device__ __forceinline__ void pair(int i, int* rank, int* hb) const {
    const int first = i / (pairs_m * section) * section;
    const int within = i - first * pairs_m;
    const int width = min(section, heads_batch - first);
    *rank = within / width;
    *hb = first + within % width;
  }

  // The same order one tile at a time: the pair index (first blockIdx.x)
  // and the tile within the pair.
  struct Cursor {
    int i, j;
  };
  __device__ __forceinline__ bool next(Cursor& c, int heads, int* m_block, int* h, int* b) const {
    const int count = pairs_m * heads_batch;
#pragma unroll 1
    for (; c.i < count; c.i += gridDim.x, c.j = 0) {
      int rank, hb;
      pair(c.i, &rank, &hb);
      const int last = tiles_m - 1 - rank;
      if (c.j < (rank == last ? 1 : 2)) {
        *m_block = c.j == 0 ? last : rank;
        *h = hb % heads;
        *b = hb / heads;
        ++c.j;
        return true;
      }
    }
    return false;
  }

  // Calls f(m_block, h, b) for each query tile of this block, in order.
  template <class F>
  __device__ __forceinline__ void for_each_tile(int heads, F&& f) const {
    const int count = pairs_m * heads_batch;
    for (int i = blockIdx.x; i < count; i += gridDim.x) {
      int rank, hb;
      pair(i, &rank, &hb);
      // One call site, so that the tile's code is inlined once: two (one
      // per tile of the pair) doubled the kernel to 137 KB, and the second
      // copy's tile starts and epilogues stalled on instruction fetch.
      const int last = tiles_m - 1 - rank;
#pragma unroll 1
      for (int j = 0, n = rank == last ? 1 : 2; j < n; ++j)
        f(j == 0 ? last : rank, hb % heads, hb / heads);
    }
  }
};

// The block mask as the kernel sees it: none in the kernels compiled
// without block masks (kBlockMask false: then every block-mask instruction
// folds away; held as a runtime check, the class lookups and the tile list
// cost the plain kernels up to 25% at 1K tokens) and where the key tile is
// not a power of two wide (d = 256's 80 keys; the kernel choice sends block
// masks elsewhere).
template <bool kBlockMask>
__device__ __forceinline__ BlockMaskView block_mask_of(const FwdParams& p, int block_n) {
  return kBlockMask && log2_of(block_n) >= 0 ? p.block : BlockMaskView{};
}

// What one query tile covers: lengths, first rows in the tensor maps, key
// tiles. The documents of the tile's first and last rows are searched by
// the calling thread alone (the producer) or by its whole warp (a
// consumer warp, which waits on the search: 3 round trips to L2 for 16K
// keys against 14).
template <bool kBlockMask>
struct Sm90Block {
  int lq, lk, m0;
  int q_row, k_row;  // row coordinates of (query m0, key 0) in the maps
  int map_b;         // sequence coordinate in the maps (0 for varlen)
  RowMask mask;
  KeyTiles tiles;
  TileSeq seq;       // the key tiles visited, ascending (walked backwards)
  int h, b;

  __device__ __forceinline__ Sm90Block(const FwdParams& p, int m_block, int block_m, int block_n,
                                       int h_, int b_, bool warp_search)
      : lq(seq_len(p.cu_seqlens_q, b_, p.seqlen_q)),
        lk(seq_len(p.cu_seqlens_k, b_, p.seqlen_k)),
        m0(m_block * block_m),
        q_row((p.cu_seqlens_q ? p.cu_seqlens_q[b_] : 0) + m0),
        k_row(p.cu_seqlens_k ? p.cu_seqlens_k[b_] : 0),
        map_b(p.cu_seqlens_q ? 0 : b_),
        mask(p, b_),
        tiles(mask, m0, block_m, lq, lk, block_n, warp_search),
        seq(tiles, block_mask_of<kBlockMask>(p, block_n),
            block_row(block_mask_of<kBlockMask>(p, block_n), b_, h_, m0),
            log2_of(block_n)),
        h(h_),
        b(b_) {}

  // As a tile descriptor (producer_described): six 16-byte words at `at`
  // in shared memory, with the KV head hk; count < 0 marks the end.
  static constexpr int kDescWords = 6;
  __device__ __forceinline__ void describe(uint32_t at, int hk) const {
    st_shared_v4(at, int4{q_row, k_row, map_b, h});
    st_shared_v4(at + 16, int4{hk, b, m0, seq.count});
    st_shared_v4(at + 32, int4{seq.offset, lq, lk, tiles.begin});
    st_shared_v4(at + 48, int4{tiles.end, tiles.full_begin, tiles.full_end, tiles.first_doc.id});
    st_shared_v4(at + 64,
                 int4{tiles.first_doc.lo, tiles.first_doc.hi, tiles.last_doc.id, tiles.last_doc.lo});
    st_shared_v4(at + 80, int4{tiles.last_doc.hi, 0, 0, 0});
  }
  static __device__ __forceinline__ void describe_end(uint32_t at) {
    st_shared_v4(at + 16, int4{0, 0, 0, -1});
  }
  static __device__ __forceinline__ int descriptor_count(const int4 (&d)[kDescWords]) {
    return d[1].w;
  }
  static __device__ __forceinline__ int descriptor_hk(const int4 (&d)[kDescWords]) {
    return d[1].x;
  }
  __device__ __forceinline__ Sm90Block(const FwdParams& p, const int4 (&d)[kDescWords])
      : lq(d[2].y), lk(d[2].z), m0(d[1].z), q_row(d[0].x), k_row(d[0].y), map_b(d[0].z),
        mask(p, d[1].y), h(d[0].w), b(d[1].y) {
    tiles.begin = d[2].w;
    tiles.end = d[3].x;
    tiles.full_begin = d[3].y;
    tiles.full_end = d[3].z;
    tiles.first_doc = SegmentSpan{d[3].w, d[4].x, d[4].y};
    tiles.last_doc = SegmentSpan{d[4].z, d[4].w, d[5].x};
    seq.count = d[1].w;
    seq.offset = d[2].x;
  }

  static __device__ __forceinline__ int seq_len(const int32_t* cu, int b, int fixed) {
    return cu ? cu[b + 1] - cu[b] : fixed;
  }
  // Varlen: a query tile past its sequence's end, skipped by every role.
  __device__ __forceinline__ bool empty() const { return m0 >= lq; }
  __device__ __forceinline__ int key_tiles() const { return seq.count; }
  // The it-th key tile in visiting order: from the diagonal back, so that the
  // tiles needing the mask come first.
  __device__ __forceinline__ int tile(int it, const FwdParams& p, int block_n) const {
    const BlockMaskView bm = block_mask_of<kBlockMask>(p, block_n);
    return seq.at(seq.count - 1 - it, bm, block_row(bm, b, h, m0), log2_of(block_n));
  }
};

// The producer's copies. Q of a query tile into its buffer, once the
// consumers' last Q K^T of the tile that used the buffer before has ended
// (`use` counts the query tiles loaded so far).
template <class T, class Mark>
__device__ __forceinline__ void issue_q(const Smem<T>& sm, const Sm90Args& args, int use, int row,
                                        int h, int map_b, Mark&& mark) {
  const int qb = use % T::kQBuffers;
  sm90::mbarrier_wait(sm.q_empty(qb), ((use / T::kQBuffers) & 1) ^ 1);
  mark(kEvProducerQ);
  sm90::mbarrier_arrive_expect_tx(sm.q_full(qb), T::kQBytes);
#pragma unroll
  for (int c = 0; c < T::kColBlocks; ++c)
    sm90::tma_load_4d(sm.q_tile(qb) + c * T::kQBlockBytes, &args.q, sm.q_full(qb), 64 * c, row, h,
                      map_b);
}

// The kv-th K/V tile (counted over all query tiles, which fixes ring stage
// and phase), from key row `row` of KV head hk, once its slots are free.
// K and V stay two written-out blocks: folded into one helper (with Q's
// copy, as a lambda, or as a loop over the two) the d = 256 producer's 24
// registers spilled 20 bytes.
template <class T, class Mark>
__device__ __forceinline__ void issue_kv(const Smem<T>& sm, const Sm90Args& args, int kv, int row,
                                         int hk, int map_b, Mark&& mark) {
  const int stage = kv % T::kStages;
  const uint32_t parity = ((kv / T::kStages) & 1) ^ 1;
  sm90::mbarrier_wait(sm.k_empty(stage), parity);
  mark(kEvProducerK);
  sm90::mbarrier_arrive_expect_tx(sm.k_full(stage), T::kKVTileBytes);
#pragma unroll
  for (int c = 0; c < T::kColBlocks; ++c)
    sm90::tma_load_4d(sm.k_tile(stage) + c * T::kKVBlockBytes, &args.k, sm.k_full(stage), 64 * c,
                      row, hk, map_b);
  sm90::mbarrier_wait(sm.v_empty(stage), parity);
  mark(kEvProducerV);
  sm90::mbarrier_arrive_expect_tx(sm.v_full(stage), T::kKVTileBytes);
#pragma unroll
  for (int c = 0; c < T::kColBlocks; ++c)
    sm90::tma_load_4d(sm.v_tile(stage) + c * T::kKVBlockBytes, &args.v, sm.v_full(stage), 64 * c,
                      row, hk, map_b);
}

// The producer: one thread issues every copy.
template <class T, bool kBlockMask>
__device__ __forceinline__ void producer(const FwdParams& p, const Sm90Args& args,
                                         const Smem<T>& sm) {
  const TileOrder order(p, T::kBlockM, args.section_heads);
  int kv = 0, done = 0, trace_n = 0;
  const auto mark = [&](Sm90Event e) {
    if constexpr (T::kTrace) T::record(0, trace_n++, e);
  };
  order.for_each_tile(p.heads_q, [&](int m_block, int h, int b) {
    const Sm90Block<kBlockMask> blk(p, m_block, T::kBlockM, T::kBlockN, h, b, false);
    if (blk.empty()) return;
    const int hk = h / p.group_size;
    issue_q(sm, args, done, blk.q_row, h, blk.map_b, mark);
    const int n_tiles = blk.key_tiles();
    for (int it = 0; it < n_tiles; ++it, ++kv) {
      const int nb = blk.tile(it, p, T::kBlockN);
      issue_kv(sm, args, kv, blk.k_row + nb * T::kBlockN, hk, blk.map_b, mark);
    }
    ++done;
  });
}

// The producer of the short-rows kernels (kDescribed): as producer, with
// each query tile worked out a tile ahead (describe), while the producer
// waits for ring slots, and kept in one of two descriptors in shared memory
// (the producer has 24 registers), which the consumers read too. Without
// it, about 2,000 cycles of integer work sat between the last copy of one
// tile and the first of the next.
template <class T, bool kBlockMask>
__device__ __forceinline__ void producer_described(const FwdParams& p, const Sm90Args& args,
                                                   const Smem<T>& sm) {
  static_assert(16 * Sm90Block<kBlockMask>::kDescWords == T::kDescriptorBytes);
  const TileOrder order(p, T::kBlockM, args.section_heads);
  int kv = 0, trace_n = 0;
  const auto mark = [&](Sm90Event e) {
    if constexpr (T::kTrace) T::record(0, trace_n++, e);
  };
  // Writes the next non-empty tile's descriptor, the n-th, into slot n % 2
  // once the consumers have read the one before last there.
  TileOrder::Cursor cursor{static_cast<int>(blockIdx.x), 0};
  const auto describe = [&](int n) {
    const int slot = n & 1;
    const uint32_t at = sm.desc(slot);
    sm90::mbarrier_wait(sm.desc_empty(slot), ((n >> 1) & 1) ^ 1);
    int m_block, h, b;
    bool found = false;
    while (!found && order.next(cursor, p.heads_q, &m_block, &h, &b)) {
      const Sm90Block<kBlockMask> blk(p, m_block, T::kBlockM, T::kBlockN, h, b, false);
      if (blk.empty()) continue;
      found = true;
      blk.describe(at, h / p.group_size);
    }
    if (!found) Sm90Block<kBlockMask>::describe_end(at);
    sm90::mbarrier_arrive(sm.desc_full(slot));
  };
  describe(0);
  for (int done = 0;; ++done) {
    int4 d[Sm90Block<kBlockMask>::kDescWords];
#pragma unroll
    for (int k = 0; k < Sm90Block<kBlockMask>::kDescWords; ++k)
      d[k] = ld_shared_v4(sm.desc(done & 1) + 16 * k);
    if (Sm90Block<kBlockMask>::descriptor_count(d) < 0) break;
    const Sm90Block<kBlockMask> blk(p, d);
    const int n_tiles = blk.key_tiles(), hk = Sm90Block<kBlockMask>::descriptor_hk(d);
    // (Q of the tile before last: with two buffers, Q waits one tile less.)
    issue_q(sm, args, done, blk.q_row, blk.h, blk.map_b, mark);
    if (n_tiles == 0) describe(done + 1);
    for (int it = 0; it < n_tiles; ++it, ++kv) {
      const int nb = blk.tile(it, p, T::kBlockN);
      issue_kv(sm, args, kv, blk.k_row + nb * T::kBlockN, hk, blk.map_b, mark);
      // The next tile, worked out while this one's later slots are awaited.
      if (it == 0) describe(done + 1);
    }
  }
}

// One consumer warpgroup: 64 query rows of each query tile, against all of
// the tile's key tiles.
template <class T, bool kSoftcap, bool kBlockMask>
struct Consumer {
  using Block = Sm90Block<kBlockMask>;
  using Elem = typename T::Elem;
  using MmaS = sm90::Wgmma<Elem, T::kBlockN>;
  using MmaO = sm90::Wgmma<Elem, T::kHeadDim>;
  static constexpr int kS = T::kBlockN / 2;   // S accumulator floats per thread
  static constexpr int kO = T::kHeadDim / 2;  // O accumulator floats per thread
  // How far (log2) a row's maximum may rise before it is taken (kLazyRescale):
  // P <= 2^8, far inside fp16's range, with its relative precision unchanged.
  static constexpr float kLazyRescaleLog2 = 8.f;
  static constexpr int kPV = T::kBlockN / 16; // k-steps of P V

  const FwdParams& p;
  const Smem<T>& sm;
  const int wg;    // consumer index, 0 to kConsumers - 1
  const int row0;  // this thread's first row within the block (second: + 8)
  const int t;     // lane % 4: column pair within each 8-column block
  int kv = 0;      // K/V tiles consumed so far (ring stage and phase)
  int qb = 0;      // the current query tile's Q buffer
  bool stored = false;  // a TMA store of O may still be reading the O buffer
  int trace_n = 0;      // timestamps recorded (tracing builds)

  float o[kO];
  float row_max[2], row_sum[2];
  bool rescale_pending = true;  // kLazyRescale: the last softmax moved a maximum of the warp
  // The key intervals of the thread's two rows, worked out once per query
  // tile (documents cost a search) where registers allow: d = 256's output
  // accumulator leaves no room, it spilled 1.4 KB holding them.
  static constexpr bool kRowKeysHeld = T::kHeadDim <= 128;
  int key_begin[kRowKeysHeld ? 2 : 1], key_end[kRowKeysHeld ? 2 : 1];

  __device__ __forceinline__ Consumer(const FwdParams& p_, const Smem<T>& sm_, int wg_, int wtid)
      : p(p_), sm(sm_), wg(wg_), row0(wg_ * 64 + (wtid >> 5) * 16 + ((wtid & 31) >> 2)),
        t(wtid & 3) {}

  __device__ __forceinline__ void mark(Sm90Event e) {
    if constexpr (T::kTrace) {
      if ((threadIdx.x & 127) == 0) T::record(1 + wg, trace_n++, e);
    }
  }

  __device__ __forceinline__ void reset() {
#pragma unroll
    for (int i = 0; i < kO; ++i) o[i] = 0.f;
    row_max[0] = row_max[1] = -INFINITY;
    row_sum[0] = row_sum[1] = 0.f;
  }

  // Ping-pong turns: wait for this warpgroup's turn to issue MMAs, and hand
  // the turn to the next warpgroup, round robin, once they are issued. Every
  // consumer takes as many turns as the block has key tiles (+ 1 a query
  // tile), so the turns alternate strictly and no barrier sees an arrival
  // before the previous one was waited for.
  __device__ __forceinline__ void take_turn() const {
    if constexpr (T::kPingPong) sm90::named_barrier_sync(sm90_detail::kTurnBarrier + wg, 256);
  }
  __device__ __forceinline__ void pass_turn() const {
    if constexpr (T::kPingPong) {
      const int next = wg + 1 == T::kConsumers ? 0 : wg + 1;
      sm90::named_barrier_arrive(sm90_detail::kTurnBarrier + next, 256);
    }
  }

  // Each warp's lane 0 arrives once its share of the MMAs reading a buffer
  // has completed; the empty barriers count 4 warps x kConsumers warpgroups.
  __device__ __forceinline__ void release(uint32_t bar) const {
    __syncwarp();
    if ((threadIdx.x & 31) == 0) sm90::mbarrier_arrive(bar);
  }
  // Q is released after the last Q K^T, unless O is staged in it.
  __device__ __forceinline__ void release_q_after_mma() const {
    if constexpr (T::kSeparateO) release(sm.q_empty(qb));
  }

  __device__ __forceinline__ void issue_qk(float (&s)[kS], int stage) const {
    const uint32_t q = sm.q_tile(qb) + wg * 64 * 128;
    const uint32_t k = sm.k_tile(stage);
    const uint64_t dq = sm90::smem_desc_sw128(q, 16, 1024);
    const uint64_t dk = sm90::smem_desc_sw128(k, 16, 1024);
#pragma unroll
    for (int kk = 0; kk < T::kHeadDim / 16; ++kk) {
      const uint32_t at_q = (kk / 4) * T::kQBlockBytes + (kk % 4) * 32;  // k16 step
      const uint32_t at_k = (kk / 4) * T::kKVBlockBytes + (kk % 4) * 32;
      // The short-rows kernels step one descriptor along (+2-2.5% at d = 64
      // up to 1K keys); the others build each one, 1.3-1.6% faster there from
      // 4K keys (interleaved A/B runs on an H100).
      if constexpr (T::kDescribed) {
        MmaS::ss(s, sm90::smem_desc_advance(dq, at_q), sm90::smem_desc_advance(dk, at_k), kk > 0);
      } else {
        MmaS::ss(s, sm90::smem_desc_sw128(q + at_q, 16, 1024),
                 sm90::smem_desc_sw128(k + at_k, 16, 1024), kk > 0);
      }
    }
  }

  __device__ __forceinline__ void issue_pv(const uint32_t (&pa)[kPV][4], int stage) {
    const uint32_t v = sm.v_tile(stage);
    const uint64_t dv = sm90::smem_desc_sw128(v, T::kKVBlockBytes, 1024);
#pragma unroll
    for (int kk = 0; kk < kPV; ++kk) {
      if constexpr (T::kDescribed) {
        MmaO::rs(o, pa[kk], sm90::smem_desc_advance(dv, kk * 16 * 128), 1);
      } else {
        MmaO::rs(o, pa[kk], sm90::smem_desc_sw128(v + kk * 16 * 128, T::kKVBlockBytes, 1024), 1);
      }
    }
  }

  // Softcap and mask of tile nb, then the online softmax: S becomes P (in
  // place, unnormalised) and the returned factors rescale O.
  __device__ __forceinline__ void softmax(float (&s)[kS], const Block& blk, int nb,
                                          float (&corr)[2]) {
    if constexpr (kSoftcap) {
      constexpr float k2Log2e = 2.8853900817779268f;
      const float k = p.softcap_inv_scale * k2Log2e;
#pragma unroll
      for (int i = 0; i < kS; ++i) s[i] = softcap(s[i], p.softcap, k);
    }
    const BlockMaskView bm = block_mask_of<kBlockMask>(p, T::kBlockN);
    const int32_t cls = tile_class(bm, block_row(bm, blk.b, blk.h, blk.m0), nb, log2_of(T::kBlockN));
    if (nb < blk.tiles.full_begin || nb >= blk.tiles.full_end || cls != BlockMaskView::kFull) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        int kb, ke;
        if constexpr (kRowKeysHeld) {
          kb = key_begin[r];
          ke = key_end[r];
        } else {
          blk.mask.range(min(blk.m0 + row0 + 8 * r, blk.lq - 1), blk.lq, blk.lk, &kb, &ke);
        }
        kb -= nb * T::kBlockN + 2 * t;
        ke -= nb * T::kBlockN + 2 * t;
#pragma unroll
        for (int i = 0; i < kS; ++i) {
          if (((i >> 1) & 1) != r) continue;
          const int j = 8 * (i >> 2) + (i & 1);
          if (j < kb || j >= ke) s[i] = -INFINITY;
        }
      }
      if (cls != BlockMaskView::kFull) apply_bits(s, blk, nb, cls);
    }
    const float scale_log2 = p.scale_log2;
    bool moved = false;  // some row's maximum (kLazyRescale)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      // The row maximum in four independent chains: one chain of 32
      // dependent max instructions stalled on each one's latency.
      constexpr int kChains = 4;
      static_assert(kS / 4 >= kChains);
      float m[kChains];
#pragma unroll
      for (int c = 0; c < kChains; ++c) m[c] = fmaxf(s[4 * c + 2 * r], s[4 * c + 2 * r + 1]);
#pragma unroll
      for (int k = kChains; k < kS / 4; ++k)
        m[k % kChains] = fmaxf(fmaxf(m[k % kChains], s[4 * k + 2 * r]), s[4 * k + 2 * r + 1]);
      float mx = fmaxf(fmaxf(row_max[r], fmaxf(m[0], m[1])), fmaxf(m[2], m[3]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      if constexpr (T::kLazyRescale) {
        // A row's first keys always move it: inf (row_max = -inf) fails the
        // test, as does NaN (still no key: both -inf, and mx stays -inf).
        if ((mx - row_max[r]) * scale_log2 <= kLazyRescaleLog2) mx = row_max[r];
        moved = moved || mx != row_max[r];
      }
      // A row with no key so far keeps m = -inf; its exponents use offset 0
      // so that exp2(-inf - -inf) never makes a NaN.
      const float m_scaled = mx == -INFINITY ? 0.f : mx * scale_log2;
      corr[r] = ex2(row_max[r] * scale_log2 - m_scaled);
      row_max[r] = mx;
      float sum = 0.f;  // this tile's, added to the running sum once
#pragma unroll
      for (int i = 0; i < kS; ++i)
        if (((i >> 1) & 1) == r) {
          s[i] = ex2(fmaf(s[i], scale_log2, -m_scaled));
          sum += s[i];
        }
      row_sum[r] = fmaf(row_sum[r], corr[r], sum);
    }
    if constexpr (T::kLazyRescale) rescale_pending = __any_sync(0xffffffffu, moved);
  }

  // Per query tile: the key intervals of this thread's rows (documents cost
  // a search, so once per tile, not per key tile).
  __device__ __forceinline__ void start_tile(const Block& blk) {
    if constexpr (kRowKeysHeld) {
      SegmentSpan doc[2] = {blk.tiles.first_doc, blk.tiles.first_doc};
      if (blk.mask.has_documents()) find_docs(blk, doc);
#pragma unroll
      for (int r = 0; r < 2; ++r)
        blk.mask.range_in(min(blk.m0 + row0 + 8 * r, blk.lq - 1), blk.lq, blk.lk, doc[r],
                          &key_begin[r], &key_end[r]);
    }
  }

  // The documents of this thread's rows. Those of the tile's first and last
  // rows are known; the warp searches any other (a tile over more than two
  // documents) together, one id a round. A search per thread instead, even
  // never run, cost the plain kernels 15-20% at 1K tokens (d = 64): its
  // registers and code sat beside the mainloop.
  __device__ __forceinline__ void find_docs(const Block& blk, SegmentSpan (&doc)[2]) const {
    const SegmentSpan& first = blk.tiles.first_doc;
    const SegmentSpan& last = blk.tiles.last_doc;
    int32_t id[2];
    bool need[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      id[r] = blk.mask.q_id(blk.m0 + row0 + 8 * r, blk.lq);
      doc[r] = id[r] == last.id ? last : first;
      need[r] = id[r] != first.id && id[r] != last.id;
    }
    for (unsigned pending = __ballot_sync(0xffffffffu, need[0] || need[1]); pending != 0;
         pending = __ballot_sync(0xffffffffu, need[0] || need[1])) {
      const int lane = __ffs(pending) - 1;
      const int32_t s = __shfl_sync(0xffffffffu, need[0] ? id[0] : id[1], lane);
      SegmentSpan span, same;
      warp_segment_bounds2(blk.mask.k_ids(), blk.lk, s, s, &span, &same);
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        if (need[r] && id[r] == s) {
          doc[r] = span;
          need[r] = false;
        }
      }
    }
  }

  // A PARTIAL block's bits: the thread's columns of row r are
  // 8 (i / 4) + 2t + (i % 2), all in word i / 16 of the tile's 128 columns.
  __device__ __forceinline__ void apply_bits(float (&s)[kS], const Block& blk, int nb,
                                             int32_t cls) const {
    if constexpr (log2_of(T::kBlockN) >= 5) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        TileRowBits<T::kBlockN> bits;
        bits.load(p.block, cls, blk.m0 + row0 + 8 * r, nb, log2_of(T::kBlockN), 2 * t);
#pragma unroll
        for (int i = 0; i < kS; ++i) {
          if (((i >> 1) & 1) != r) continue;
          if (!bits.get(i >> 4, 8 * ((i >> 2) & 3) + (i & 1))) s[i] = -INFINITY;
        }
      }
    } else {
      __trap();  // the kernel choice keeps block masks off such tile widths
    }
  }

  __device__ __forceinline__ void rescale_o(const float (&corr)[2]) {
    if constexpr (T::kLazyRescale) {
      if (!rescale_pending) return;  // every factor is 1
    }
#pragma unroll
    for (int i = 0; i < kO; ++i) o[i] *= corr[(i >> 1) & 1];
  }

  // P as the A fragments of P V: k-step kk covers n8 blocks 2kk and 2kk + 1.
  static __device__ __forceinline__ void pack_p(const float (&s)[kS], uint32_t (&pa)[kPV][4]) {
#pragma unroll
    for (int kk = 0; kk < kPV; ++kk)
#pragma unroll
      for (int r = 0; r < 4; ++r) pa[kk][r] = pack2<Elem>(s[8 * kk + 2 * r], s[8 * kk + 2 * r + 1]);
  }

  __device__ __forceinline__ int stage_of(int it) const { return (kv + it) % T::kStages; }
  __device__ __forceinline__ uint32_t parity_of(int it) const {
    return ((kv + it) / T::kStages) & 1;
  }

  // kPackLate: the P V issued a step ago (key tile `done`, -1 for none) has
  // ended, so its V slot and the P registers are free and O can take the
  // new scale; then the softmaxed S becomes the next P.
  __device__ __forceinline__ void finish_pv_and_pack(const float (&s)[kS], uint32_t (&pa)[kPV][4],
                                                     const float (&corr)[2], int done) {
    sm90::wgmma_wait<0>();
    sm90::fence_registers(o);
    mark(kEvPv);
    if (done >= 0) release(sm.v_empty(stage_of(done)));
    rescale_o(corr);
    pack_p(s, pa);
  }

  __device__ __forceinline__ void mainloop(const Block& blk) {
    const int n_tiles = blk.key_tiles();
    if (n_tiles == 0) {
      release_q_after_mma();
      return;
    }
    float s[kS];
    uint32_t pa[kPV][4];
    float corr[2];
    if constexpr (T::kOverlap) {
      // Tile 0: S alone.
      sm90::mbarrier_wait(sm.k_full(stage_of(0)), parity_of(0));
      mark(kEvKReady);
      take_turn();
      mark(kEvTurn);
      sm90::wgmma_fence();
      issue_qk(s, stage_of(0));
      sm90::wgmma_commit();
      pass_turn();
      mark(kEvIssued);
      sm90::wgmma_wait<0>();
      sm90::fence_registers(s);
      mark(kEvScores);
      release(sm.k_empty(stage_of(0)));
      if (n_tiles == 1) release_q_after_mma();
      softmax(s, blk, blk.tile(0, p, T::kBlockN), corr);
      if constexpr (!T::kPackLate) pack_p(s, pa);
      mark(kEvSoftmax);
      for (int it = 1; it < n_tiles; ++it) {
        const int stage = stage_of(it), prev = stage_of(it - 1);
        if constexpr (T::kPackLate) finish_pv_and_pack(s, pa, corr, it - 2);
        sm90::mbarrier_wait(sm.k_full(stage), parity_of(it));
        mark(kEvKReady);
        take_turn();
        mark(kEvTurn);
        sm90::wgmma_fence();
        issue_qk(s, stage);
        sm90::wgmma_commit();
        // O takes the new scale while Q K^T runs, before P V accumulates.
        if constexpr (!T::kPackLate) rescale_o(corr);
        sm90::mbarrier_wait(sm.v_full(prev), parity_of(it - 1));
        sm90::wgmma_fence();  // P and O were last written by ordinary code
        issue_pv(pa, prev);
        sm90::wgmma_commit();
        pass_turn();
        mark(kEvIssued);
        sm90::wgmma_wait<1>();
        sm90::fence_registers(s);
        mark(kEvScores);
        release(sm.k_empty(stage));
        if (it == n_tiles - 1) release_q_after_mma();
        softmax(s, blk, blk.tile(it, p, T::kBlockN), corr);
        mark(kEvSoftmax);
        if constexpr (!T::kPackLate) {
          sm90::wgmma_wait<0>();
          sm90::fence_registers(o);
          mark(kEvPv);
          release(sm.v_empty(prev));
          pack_p(s, pa);
        }
      }
      if constexpr (T::kPackLate) finish_pv_and_pack(s, pa, corr, n_tiles - 2);
      const int last = stage_of(n_tiles - 1);
      sm90::mbarrier_wait(sm.v_full(last), parity_of(n_tiles - 1));
      take_turn();
      mark(kEvTurn);
      if constexpr (!T::kPackLate) rescale_o(corr);
      sm90::wgmma_fence();
      issue_pv(pa, last);
      sm90::wgmma_commit();
      pass_turn();
      mark(kEvIssued);
      sm90::wgmma_wait<0>();
      sm90::fence_registers(o);
      mark(kEvPv);
      release(sm.v_empty(last));
    } else {
      for (int it = 0; it < n_tiles; ++it) {
        const int stage = stage_of(it);
        sm90::mbarrier_wait(sm.k_full(stage), parity_of(it));
        take_turn();
        sm90::wgmma_fence();
        issue_qk(s, stage);
        sm90::wgmma_commit();
        pass_turn();
        sm90::wgmma_wait<0>();
        sm90::fence_registers(s);
        release(sm.k_empty(stage));
        if (it == n_tiles - 1) release_q_after_mma();
        softmax(s, blk, blk.tile(it, p, T::kBlockN), corr);
        rescale_o(corr);
        pack_p(s, pa);
        sm90::mbarrier_wait(sm.v_full(stage), parity_of(it));
        sm90::wgmma_fence();
        issue_pv(pa, stage);
        sm90::wgmma_commit();
        sm90::wgmma_wait<0>();
        sm90::fence_registers(o);
        release(sm.v_empty(stage));
      }
    }
    kv += n_tiles;
  }

  __device__ __forceinline__ void epilogue_barrier() const {
    sm90::named_barrier_sync(sm90_detail::kEpilogueBarrier + wg, 128);
  }

  // Normalise, stage O in the O buffer (this warpgroup's 64 rows) and store
  // it: by TMA (rows and columns past the tensor are clipped by the copy
  // engine), or for varlen batches by 16-byte stores of the valid rows.
  __device__ __forceinline__ void epilogue(const Sm90Args& args, const Block& blk, int h,
                                           int b) {
    const int wtid = threadIdx.x & 127;
    const bool tma_store = p.cu_seqlens_q == nullptr;
    // row_sum becomes the whole row's sum, then its inverse; the LSE (a
    // logarithm) is worked out only where it is stored.
    float sum[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float l = row_sum[r];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      sum[r] = l;
      row_sum[r] = row_inverse(l);
    }
    // The previous tile's O has left the buffer: its TMA store has read it
    // (the issuing thread waits), or every thread has copied its part out.
    if (stored && wtid == 0) sm90::tma_store_wait_read();
    epilogue_barrier();
    mark(kEvOBufferFree);
#pragma unroll
    for (int i = 0; i < kO; i += 2) {
      const int r = (i >> 1) & 1, row = row0 + 8 * r, col = 8 * (i >> 2) + 2 * t;
      const uint32_t addr = sm.o + (col >> 6) * T::kQBlockBytes + row * 128 +
                            ((((col & 63) >> 3) ^ (row & 7)) << 4) + (col & 7) * 2;
      const uint32_t v = pack2<Elem>(o[i] * row_sum[r], o[i + 1] * row_sum[r]);
      asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(addr), "r"(v) : "memory");
    }
    if (tma_store) sm90::fence_proxy_async_shared();
    epilogue_barrier();
    mark(kEvOStaged);

    if (tma_store) {
      if (wtid == 0) {
#pragma unroll
        for (int c = 0; c < T::kColBlocks; ++c)
          sm90::tma_store_4d(&args.o, sm.o + c * T::kQBlockBytes + wg * 64 * 128, 64 * c,
                             blk.m0 + wg * 64, h, b);
        sm90::tma_store_commit();
      }
      stored = true;
    } else {
      const int64_t q_first = p.cu_seqlens_q[b];
      Elem* o_g = static_cast<Elem*>(p.out) + (q_first + blk.m0 + wg * 64) * p.out_row_stride +
                  h * p.out_head_stride;
      const int chunks = p.head_dim / 8;  // 16-byte chunks per row
      const int rows_valid = min(64, blk.lq - blk.m0 - wg * 64);
      for (int idx = wtid; idx < 64 * chunks; idx += 128) {
        const int row = idx / chunks, c = idx % chunks;
        if (row >= rows_valid) break;
        const int srow = wg * 64 + row;
        const uint32_t addr =
            sm.o + (c >> 3) * T::kQBlockBytes + srow * 128 + (((c & 7) ^ (srow & 7)) << 4);
        uint4 val;
        asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];\n"
                     : "=r"(val.x), "=r"(val.y), "=r"(val.z), "=r"(val.w)
                     : "r"(addr));
        *reinterpret_cast<uint4*>(o_g + row * p.out_row_stride + c * 8) = val;
      }
    }
    if constexpr (!T::kSeparateO) {
      // O was staged in the Q tile: the next Q may land once it has left.
      if (tma_store && wtid == 0) sm90::tma_store_wait_read();
      epilogue_barrier();
      release(sm.q_empty(qb));
    }

    if (p.lse != nullptr && t == 0) {
      const int64_t q_first = p.cu_seqlens_q ? p.cu_seqlens_q[b] : 0;
      const int64_t bb = p.cu_seqlens_q ? 0 : b;
      float* lse_g = p.lse + bb * p.lse_batch_stride + h * p.lse_head_stride +
                     q_first * p.lse_row_stride;
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int row = blk.m0 + row0 + 8 * r;
        if (row < blk.lq)
          lse_g[row * p.lse_row_stride] = row_lse(sum[r], row_max[r], p.scale_log2);
      }
    }
  }

  // Before the block exits: shared memory must outlive the last store's reads.
  __device__ __forceinline__ void finish() const {
    if (stored && (threadIdx.x & 127) == 0) sm90::tma_store_wait_read();
  }
};

template <class T, bool kSoftcap, bool kBlockMask>
__device__ __forceinline__ void flash_fwd_sm90_body(const FwdParams& p, const Sm90Args& args) {
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  const Smem<T> sm(smem_raw);
  const int warp = threadIdx.x >> 5;
  if (threadIdx.x == 0) {
    for (int i = 0; i < T::kQBuffers; ++i) {
      sm90::mbarrier_init(sm.q_full(i), 1);
      sm90::mbarrier_init(sm.q_empty(i), 4 * T::kConsumers);
    }
    for (int i = 0; T::kDescribed && i < 2; ++i) {
      sm90::mbarrier_init(sm.desc_full(i), 1);
      sm90::mbarrier_init(sm.desc_empty(i), 4 * T::kConsumers);
    }
    for (int s = 0; s < T::kStages; ++s) {
      sm90::mbarrier_init(sm.k_full(s), 1);
      sm90::mbarrier_init(sm.v_full(s), 1);
      sm90::mbarrier_init(sm.k_empty(s), 4 * T::kConsumers);
      sm90::mbarrier_init(sm.v_empty(s), 4 * T::kConsumers);
    }
    sm90::fence_barrier_init();
  }
  __syncthreads();

  if (warp < 4) {
    sm90::setmaxnreg_dec<T::kProducerRegs>();
    if (warp == 0 && sm90::elect_one()) {
      sm90::prefetch_tensor_map(&args.q);
      sm90::prefetch_tensor_map(&args.k);
      sm90::prefetch_tensor_map(&args.v);
      if constexpr (T::kDescribed) {
        producer_described<T, kBlockMask>(p, args, sm);
      } else {
        producer<T, kBlockMask>(p, args, sm);
      }
    }
  } else {
    sm90::setmaxnreg_inc<T::kConsumerRegs>();
    const int wg = (threadIdx.x >> 7) - 1;
    Consumer<T, kSoftcap, kBlockMask> c(p, sm, wg, threadIdx.x & 127);
    // Warpgroup 0 takes the first turn, handed to it by the last warpgroup;
    // the matching last turn is taken after the loop so that every barrier
    // phase completes.
    if constexpr (T::kPingPong) {
      if (wg == T::kConsumers - 1) sm90::named_barrier_arrive(sm90_detail::kTurnBarrier, 256);
    }
    const auto run_tile = [&](const Sm90Block<kBlockMask>& blk, int done) {
      c.mark(kEvTileBegin);
      c.reset();
      c.start_tile(blk);
      c.qb = done % T::kQBuffers;
      sm90::mbarrier_wait(sm.q_full(c.qb), (done / T::kQBuffers) & 1);
      c.mark(kEvQReady);
      c.mainloop(blk);
      c.epilogue(args, blk, blk.h, blk.b);
      c.mark(kEvEpilogue);
    };
    if constexpr (T::kDescribed) {
      // The query tiles as the producer describes them, a tile ahead.
#pragma unroll 1
      for (int done = 0;; ++done) {
        const int slot = done & 1;
        sm90::mbarrier_wait(sm.desc_full(slot), (done >> 1) & 1);
        // Lane 0 of each warp reads the descriptor and releases the slot (a
        // release covers the arriving thread's own reads), then hands the
        // fields to its warp.
        int4 d[Sm90Block<kBlockMask>::kDescWords] = {};
        if ((threadIdx.x & 31) == 0) {
#pragma unroll
          for (int k = 0; k < Sm90Block<kBlockMask>::kDescWords; ++k)
            d[k] = ld_shared_v4(sm.desc(slot) + 16 * k);
          sm90::mbarrier_arrive(sm.desc_empty(slot));
        }
#pragma unroll
        for (int k = 0; k < Sm90Block<kBlockMask>::kDescWords; ++k) {
          d[k].x = __shfl_sync(0xffffffffu, d[k].x, 0);
          d[k].y = __shfl_sync(0xffffffffu, d[k].y, 0);
          d[k].z = __shfl_sync(0xffffffffu, d[k].z, 0);
          d[k].w = __shfl_sync(0xffffffffu, d[k].w, 0);
        }
        if (Sm90Block<kBlockMask>::descriptor_count(d) < 0) break;
        run_tile(Sm90Block<kBlockMask>(p, d), done);
      }
    } else {
      const TileOrder order(p, T::kBlockM, args.section_heads);
      int done = 0;
      order.for_each_tile(p.heads_q, [&](int m_block, int h, int b) {
        const Sm90Block<kBlockMask> blk(p, m_block, T::kBlockM, T::kBlockN, h, b, true);
        if (blk.empty()) return;
        run_tile(blk, done++);
      });
    }
    if constexpr (T::kPingPong) {
      if (wg == 0) sm90::named_barrier_sync(sm90_detail::kTurnBarrier, 256);
    }
    c.finish();
  }
}

}  // namespace sm90_detail

// Compiled for sm90a only (wgmma and setmaxnreg exist nowhere else); other
// targets get a body that traps, which the host never launches. kBlockMask:
// the variant that reads a block mask (see block_mask_of).
template <class T, bool kSoftcap, bool kBlockMask = false>
__global__ void __launch_bounds__(T::kThreads, T::kBlocksPerSm)
    flash_fwd_sm90_kernel(const __grid_constant__ FwdParams p,
                          const __grid_constant__ Sm90Args args) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  sm90_detail::flash_fwd_sm90_body<T, kSoftcap, kBlockMask>(p, args);
#elif defined(__CUDA_ARCH__)
  __trap();
#endif
}

}  // namespace fastattn::cuda
