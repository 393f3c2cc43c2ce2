// Row bookkeeping and the epilogue shared by every flash-attention kernel.
#include <cmath>
#include <cstring>
#include <limits>

#include "cpu/flash_tile.h"

namespace fastattn::cpu {

void prepare_rows(const AttentionParams& p, const TileTask& t, int max_rows, TileRows* rows) {
  int64_t first = 0, lq = 0;
  p.q_span(t.b, &first, &lq);
  const int64_t lk = p.k_len(t.b);
  const int64_t g = p.group_size();
  const int64_t total = lq * g;
  const int64_t n = total - t.row0 < max_rows ? total - t.row0 : max_rows;
  rows->rows = static_cast<int>(n < 0 ? 0 : n);
  rows->key_begin = std::numeric_limits<int64_t>::max();
  rows->key_end = std::numeric_limits<int64_t>::min();
  rows->max_begin = std::numeric_limits<int64_t>::min();
  rows->min_end = std::numeric_limits<int64_t>::max();
  rows->block = p.mask.block;
  for (int tr = 0; tr < rows->rows; ++tr) {
    const int64_t r = t.row0 + tr;
    const int64_t i = r / g, h = t.hk * g + r % g;
    int64_t b = 0, e = 0;
    p.key_range(t.b, i, lq, lk, &b, &e);
    b = b < t.key_begin ? t.key_begin : b;
    e = e > t.key_end ? t.key_end : e;
    if (e < b) e = b;
    rows->begin[tr] = static_cast<int32_t>(b);
    rows->end[tr] = static_cast<int32_t>(e);
    rows->q_off[tr] = q_offset(p, t.b, i, h);
    rows->out_off[tr] = out_offset(p, t.b, i, h);
    rows->lse_off[tr] = p.lse ? lse_offset(p, t.b, i, h) : 0;
    if (rows->block) {
      const BlockMaskView& v = *rows->block;
      rows->cls_off[tr] = v.row(t.b, h, i >> v.block_q_log2) * v.blocks_k;
      rows->bit_row[tr] = static_cast<int32_t>(i & ((int64_t{1} << v.block_q_log2) - 1));
    }
    if (b < e) {
      rows->key_begin = b < rows->key_begin ? b : rows->key_begin;
      rows->key_end = e > rows->key_end ? e : rows->key_end;
    }
    rows->max_begin = b > rows->max_begin ? b : rows->max_begin;
    rows->min_end = e < rows->min_end ? e : rows->min_end;
  }
  // Rows past the end stay empty so a masked block never admits them.
  for (int tr = rows->rows; tr < kBr; ++tr) rows->begin[tr] = rows->end[tr] = 0;
  if (rows->key_begin >= rows->key_end) rows->key_begin = rows->key_end = 0;
}

KeyBlockUse classify_key_block(const TileRows& rows, int64_t j0, int nb) {
  const int64_t j1 = j0 + nb;
  bool full = false, empty = false;
  for (int tr = 0; tr < rows.rows; ++tr) {
    if (rows.begin[tr] >= j1 || rows.end[tr] <= j0) continue;
    if (rows.block == nullptr) return KeyBlockUse::kRange;
    const int32_t c = rows.block->cls[rows.cls_off[tr] + (j0 >> rows.block->block_k_log2)];
    if (c == BlockMaskView::kEmpty) {
      empty = true;
    } else if (c == BlockMaskView::kFull) {
      full = true;
    } else {
      return KeyBlockUse::kBits;
    }
  }
  // FULL rows beside EMPTY ones (heads or query blocks of one tile) still
  // need the per-row bits.
  if (!full) return KeyBlockUse::kSkip;
  return empty ? KeyBlockUse::kBits : KeyBlockUse::kRange;
}

void fill_block_allow(const TileRows& rows, int64_t j0, int nb, int32_t* allow) {
  const BlockMaskView& v = *rows.block;
  const int64_t col0 = j0 & ((int64_t{1} << v.block_k_log2) - 1);
  const int64_t words = v.words_per_row();
  for (int tr = 0; tr < kBr; ++tr) {
    const int32_t c = tr < rows.rows ? v.cls[rows.cls_off[tr] + (j0 >> v.block_k_log2)]
                                     : BlockMaskView::kEmpty;
    if (c == BlockMaskView::kFull || c == BlockMaskView::kEmpty) {
      const int32_t x = c == BlockMaskView::kFull ? -1 : 0;
      for (int j = 0; j < nb; ++j) allow[j * kBr + tr] = x;
      continue;
    }
    const uint32_t* w = v.bits + (int64_t{c} * (int64_t{1} << v.block_q_log2) + rows.bit_row[tr]) * words;
    for (int j = 0; j < nb; ++j) {
      const int64_t col = col0 + j;
      allow[j * kBr + tr] = (w[col / 32] >> (col % 32)) & 1u ? -1 : 0;
    }
  }
}

void finish_rows(const AttentionParams& p, const TileTask& t, const TileRows& rows, const float* o,
                 int64_t o_stride, const float* m2, const float* l, const float* m_natural) {
  const int64_t d = p.head_dim;
  const int64_t dp = padded_head_dim(d);
  constexpr double kLn2 = 0.693147180559945309;
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  for (int tr = 0; tr < rows.rows; ++tr) {
    const float* src = o + tr * o_stride;
    // A row that saw no key has l == 0: output 0, LSE -inf (never 0/0).
    const float inv = l[tr] > 0.0f ? 1.0f / l[tr] : 0.0f;
    // Combined in double: in float the two roundings of the sum and the
    // change of base cost ~3 ulps of LSE, more than an unfused fp32 loses.
    const float lse =
        l[tr] <= 0.0f ? kNegInf
        : m_natural   ? float(double(m_natural[tr]) + std::log(double(l[tr])))
                      : float((double(m2[tr]) + std::log2(double(l[tr]))) * kLn2);
    if (t.split_o) {
      float* dst = t.split_o + tr * dp;
      for (int64_t x = 0; x < d; ++x) dst[x] = src[x] * inv;
      t.split_lse[tr] = lse;
      continue;
    }
    switch (p.dtype) {
      case DType::kFloat32: {
        float* dst = static_cast<float*>(p.out) + rows.out_off[tr];
        for (int64_t x = 0; x < d; ++x) dst[x] = src[x] * inv;
        break;
      }
      case DType::kFloat16: {
        uint16_t* dst = static_cast<uint16_t*>(p.out) + rows.out_off[tr];
        for (int64_t x = 0; x < d; ++x) dst[x] = float_to_fp16(src[x] * inv);
        break;
      }
      case DType::kBFloat16: {
        uint16_t* dst = static_cast<uint16_t*>(p.out) + rows.out_off[tr];
        for (int64_t x = 0; x < d; ++x) dst[x] = float_to_bf16(src[x] * inv);
        break;
      }
    }
    if (p.lse) p.lse[rows.lse_off[tr]] = lse;
  }
}

}  // namespace fastattn::cpu
