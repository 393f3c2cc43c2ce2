// Pieces shared by the flash-attention kernels (Highway and AVX512-BF16):
// the unit of work, per-row bookkeeping and the scalar epilogue.
//
// A KV-head group (the g = Hq / Hkv query heads that read one KV head) is
// processed together, so every K/V row is loaded once per group. Its query
// rows are flattened as r = i * g + hh (query row i, head hk * g + hh): rows
// of one query position are adjacent and share one key range.
#pragma once

#include <cstdint>

#include "api/params.h"
#include "common/scalar_convert.h"

namespace fastattn::cpu {

// Paper notation: Br query rows per tile, Bc keys per block.
inline constexpr int kBr = 64;
inline constexpr int kBc = 64;
// Mask blocks are 64, 128 or 256 keys wide: an aligned key block lies in one.
static_assert(64 % kBc == 0, "kBc must divide the smallest mask block");
// Above this many rows per group a tile kernel (vectorised over queries)
// beats the decode kernel (vectorised over the head dimension).
inline constexpr int kDecodeMaxRows = 8;

// One task: a tile of flattened rows of (b, hk), over keys [key_begin, key_end).
struct TileTask {
  int64_t b = 0, hk = 0;
  int64_t row0 = 0;                 // first flattened row
  int64_t key_begin = 0, key_end = 0;
  // Split tasks write fp32 partial states here (rows x padded head dim and
  // rows of LSE); null: write the final output.
  float* split_o = nullptr;
  float* split_lse = nullptr;
};

// Key ranges and buffer offsets of the rows of one tile.
struct TileRows {
  int rows = 0;                     // live rows (<= kBr)
  int32_t begin[kBr], end[kBr];     // allowed keys of each row, within the task
  int64_t q_off[kBr], out_off[kBr], lse_off[kBr];
  int64_t key_begin = 0, key_end = 0;  // union of the non-empty ranges
  int64_t max_begin = 0, min_end = 0;  // a block inside both needs no mask
  // Block mask (p.mask.block) or nullptr. Per row: where its row of block
  // classes starts in block->cls, and its row inside the mask's query block.
  // Both depend on the query head, which differs between adjacent rows.
  const BlockMaskView* block = nullptr;
  int64_t cls_off[kBr];
  int32_t bit_row[kBr];
};

void prepare_rows(const AttentionParams& p, const TileTask& t, int max_rows, TileRows* rows);

// How a tile runs the keys [j0, j0 + nb) (with a block mask, inside one
// column of mask blocks): skipped when no row admits any of them (K/V never
// loaded; an all-masked block would leave m, l and O exactly unchanged),
// with the per-row key ranges only, or with a PARTIAL block's bits as well.
enum class KeyBlockUse { kSkip, kRange, kBits };
KeyBlockUse classify_key_block(const TileRows& rows, int64_t j0, int nb);

// The block mask of keys [j0, j0 + nb) for every row of the tile, laid out
// like the scores (nb, kBr): -1 where the pair is allowed, 0 where not (and
// for rows past the end).
void fill_block_allow(const TileRows& rows, int64_t j0, int nb, int32_t* allow);

// First key of the tile's block loop. With a block mask the blocks are
// aligned to kBc so that each lies in one column of mask blocks (those are
// multiples of 64 = kBc keys wide); without, they start at the first key,
// which needs one block fewer on a ragged range.
inline int64_t first_block_start(const TileRows& rows) {
  return rows.block ? rows.key_begin / kBc * kBc : rows.key_begin;
}

// Row r of the tile is o[r * o_stride ...] / l[r], with the row maximum m2[r]
// already in the log2 domain (scale folded in). Writes out / lse, or the
// split buffers of the task. `m_natural` (optional) gives the row maxima in
// the natural-log domain instead, as merged split states have them.
void finish_rows(const AttentionParams& p, const TileTask& t, const TileRows& rows, const float* o,
                 int64_t o_stride, const float* m2, const float* l,
                 const float* m_natural = nullptr);

// Starts loading K and V rows [j0, j1) of the task's sequence and KV head
// into the cache, so the next block's packing does not wait on L3 or DRAM:
// rows of one head lie H * D elements apart, which defeats the hardware
// prefetchers (24% of the fp32 tile kernel's time was the packing before).
inline void prefetch_kv_rows(const AttentionParams& p, const TileTask& t, int64_t j0, int64_t j1) {
  const int64_t bytes = p.head_dim * dtype_size(p.dtype);
  const int es = dtype_size(p.dtype);
  for (int64_t j = j0; j < j1; ++j) {
    const char* k = static_cast<const char*>(p.kv.k) + k_offset(p.kv, p.cu_seqlens_k, t.b, j, t.hk) * es;
    const char* v = static_cast<const char*>(p.kv.v) + v_offset(p.kv, p.cu_seqlens_k, t.b, j, t.hk) * es;
    for (int64_t x = 0; x < bytes; x += 64) {
      __builtin_prefetch(k + x);
      __builtin_prefetch(v + x);
    }
  }
}

// Head dimension padded to a whole number of 16-float vectors, the widest
// the kernels use, so buffers need no tail handling.
inline int64_t padded_head_dim(int64_t d) { return (d + 15) / 16 * 16; }

// Per-thread scratch of the kernels, sized for the padded head dimension.
struct Workspace {
  float* qt = nullptr;   // (Dp, kBr) Q transposed, or (rows, Dp) for decode
  float* k = nullptr;    // (kBc, Dp)
  float* v = nullptr;    // (kBc, Dp)
  float* s = nullptr;    // (kBc, kBr) scores, then probabilities
  float* o = nullptr;    // (kBr, Dp) output accumulator
  int32_t* allow = nullptr;  // (kBc, kBr) block-mask bits of a PARTIAL block
  alignas(64) float m[kBr];
  alignas(64) float l[kBr];
  alignas(64) float alpha[kBr];
};

// Kernels. The Highway ones dispatch on the CPU at run time.
void tile_kernel(const AttentionParams& p, const TileTask& t, Workspace* ws);
// All KV heads of sequence b over keys [key_begin, key_end) for groups of at
// most kDecodeMaxRows rows; state buffers sized by decode_state_floats.
void decode_kernel(const AttentionParams& p, int64_t b, int64_t key_begin, int64_t key_end,
                   float* state, float* split_o, float* split_lse);
int64_t decode_state_floats(const AttentionParams& p);
const char* hwy_target_name();

// AVX512-BF16 tile kernel for bf16 inputs; false where the CPU lacks it.
bool bf16_dot_available();
void tile_kernel_bf16_dot(const AttentionParams& p, const TileTask& t, Workspace* ws);

}  // namespace fastattn::cpu
