// Flash-attention kernels in Highway, compiled for every x86 / ARM target and
// picked at run time: the tile kernel (prefill, many rows per KV head) and
// the decode kernel (few rows per KV head, memory-bound).
//
// Tile kernel layout (one KV-head group, Br flattened query rows):
//   Q^T  (Dp, Br)   packed once per tile; S = Q K^T is vectorised over query
//                   rows, so K is read row by row with broadcasts and never
//                   transposed, and the online softmax needs no horizontal
//                   reductions (the row maxima of Br rows are Br/N vectors).
//   K, V (Bc, Dp)   fp32 copies of the block (converted, paged rows gathered).
//   S^T  (Bc, Br)   scores, then probabilities P in place.
//   O    (Br, Dp)   fp32 accumulator, rescaled while P V is accumulated.

// Scalable-vector targets cannot hold the register tiles (arrays of vectors);
// NEON serves ARM. SSSE3 adds compile time for CPUs that AVX2 predates by a
// decade, and falls back to the baseline target.
#ifndef HWY_DISABLED_TARGETS
#define HWY_DISABLED_TARGETS (HWY_SSSE3 | HWY_SVE | HWY_SVE2 | HWY_SVE_256 | HWY_SVE2_128 | HWY_RVV)
#endif

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "cpu/flash_tile_hwy.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>
#include <hwy/contrib/math/math-inl.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "cpu/flash_tile.h"

HWY_BEFORE_NAMESPACE();
namespace fastattn::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;
// Head dimensions are multiples of 8: a full-vector loop plus at most one
// 8-lane tail covers any of them without reading past a row.
using DF8 = hn::CappedTag<float, 8>;

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// N consecutive elements of dtype kT at base[idx], as fp32.
template <DType kT, class D>
HWY_INLINE hn::Vec<D> load_f32(D d, const void* base, int64_t idx) {
  if constexpr (kT == DType::kFloat32) {
    return hn::LoadU(d, static_cast<const float*>(base) + idx);
  } else if constexpr (kT == DType::kBFloat16) {
    const hn::Rebind<uint16_t, D> du16;
    const hn::Rebind<uint32_t, D> du32;
    const auto bits = hn::PromoteTo(du32, hn::LoadU(du16, static_cast<const uint16_t*>(base) + idx));
    return hn::BitCast(d, hn::ShiftLeft<16>(bits));
  } else {
    const hn::Rebind<hwy::float16_t, D> dh;
    const auto* h = reinterpret_cast<const hwy::float16_t*>(static_cast<const uint16_t*>(base) + idx);
    return hn::PromoteTo(d, hn::LoadU(dh, h));
  }
}

// Row src[0, dim) converted to fp32 into dst[0, dp), zero-padded.
template <DType kT>
HWY_INLINE void convert_row(const void* src, int64_t src_off, int64_t dim, int64_t dp, float* dst) {
  const DF df;
  const DF8 d8;
  const int64_t n = static_cast<int64_t>(hn::Lanes(df));
  const int64_t n8 = static_cast<int64_t>(hn::Lanes(d8));
  int64_t x = 0;
  for (; x + n <= dim; x += n) hn::StoreU(load_f32<kT>(df, src, src_off + x), df, dst + x);
  for (; x + n8 <= dim; x += n8) hn::StoreU(load_f32<kT>(d8, src, src_off + x), d8, dst + x);
  for (; x < dp; ++x) dst[x] = 0.0f;
}

// 2^x for x <= 0 (Cephes exp2f polynomial on [-0.5, 0.5], rel. error
// ~2e-7). x <= -127, masked -inf scores included, gives exactly 0: the
// exponent field is then 0, so fully masked rows keep l = 0.
HWY_INLINE VF exp2_nonpositive(DF df, VF x) {
  const hn::RebindToSigned<DF> di;
  x = hn::Max(x, hn::Set(df, -127.0f));
  const VF n = hn::Round(x);
  const VF f = hn::Sub(x, n);
  VF poly = hn::Set(df, 1.535336188319500e-4f);
  poly = hn::MulAdd(poly, f, hn::Set(df, 1.339887440266574e-3f));
  poly = hn::MulAdd(poly, f, hn::Set(df, 9.618437357674640e-3f));
  poly = hn::MulAdd(poly, f, hn::Set(df, 5.550332471162809e-2f));
  poly = hn::MulAdd(poly, f, hn::Set(df, 2.402264791363012e-1f));
  poly = hn::MulAdd(poly, f, hn::Set(df, 6.931472028550421e-1f));
  poly = hn::MulAdd(poly, f, hn::Set(df, 1.0f));
  const auto e = hn::ShiftLeft<23>(hn::Add(hn::ConvertTo(di, n), hn::Set(di, 127)));
  return hn::Mul(poly, hn::BitCast(df, e));
}

// Scores in the log2 domain after the softcap: cap * log2(e) * tanh(s * scale / cap).
HWY_INLINE VF softcap_log2(DF df, VF s, float scale, float cap) {
  const VF t = hn::Tanh(df, hn::Mul(s, hn::Set(df, scale / cap)));
  return hn::Mul(t, hn::Set(df, cap * kLog2e));
}

// ---------------------------------------------------------------- tile kernel

// S^T[j][rows] = K[j] . Q^T[:, rows] for kQV query vectors starting at qv0
// and keys [0, nkeys), nkeys a multiple of 4. (4 keys x kQV vectors) of
// accumulators: with kQV = 4 that is 16 FMAs per 4 loads and 4 broadcasts.
template <int kQV>
HWY_INLINE void scores_tile(const float* qt, const float* k, float* s, int64_t dim, int64_t dp,
                            int qv0, int nkeys) {
  const DF df;
  const size_t n = hn::Lanes(df);
  for (int j = 0; j < nkeys; j += 4) {
    VF acc[kQV][4];
    for (int a = 0; a < kQV; ++a)
      for (int c = 0; c < 4; ++c) acc[a][c] = hn::Zero(df);
    const float* k0 = k + j * dp;
    for (int64_t x = 0; x < dim; ++x) {
      const float* q = qt + x * kBr + qv0 * n;
      VF qv[kQV];
      for (int a = 0; a < kQV; ++a) qv[a] = hn::Load(df, q + a * n);
      for (int c = 0; c < 4; ++c) {
        const VF kb = hn::Set(df, k0[c * dp + x]);
        for (int a = 0; a < kQV; ++a) acc[a][c] = hn::MulAdd(qv[a], kb, acc[a][c]);
      }
    }
    for (int c = 0; c < 4; ++c)
      for (int a = 0; a < kQV; ++a) hn::Store(acc[a][c], df, s + (j + c) * kBr + (qv0 + a) * n);
  }
}

// O[rows tr0..tr0+4][vectors dv0..dv0+kDV] = alpha * O + P V over nb keys.
template <int kDV>
HWY_INLINE void pv_tile(const float* p, const float* v, float* o, const float* alpha, int tr0,
                        int64_t dv0, int nb, int64_t dp) {
  const DF df;
  const size_t n = hn::Lanes(df);
  VF acc[4][kDV];
  for (int r = 0; r < 4; ++r) {
    const VF a = hn::Set(df, alpha[tr0 + r]);
    for (int x = 0; x < kDV; ++x)
      acc[r][x] = hn::Mul(hn::Load(df, o + (tr0 + r) * dp + (dv0 + x) * n), a);
  }
  for (int j = 0; j < nb; ++j) {
    const float* pj = p + j * kBr + tr0;
    VF vv[kDV];
    for (int x = 0; x < kDV; ++x) vv[x] = hn::Load(df, v + j * dp + (dv0 + x) * n);
    for (int r = 0; r < 4; ++r) {
      const VF pb = hn::Set(df, pj[r]);
      for (int x = 0; x < kDV; ++x) acc[r][x] = hn::MulAdd(pb, vv[x], acc[r][x]);
    }
  }
  for (int r = 0; r < 4; ++r)
    for (int x = 0; x < kDV; ++x) hn::Store(acc[r][x], df, o + (tr0 + r) * dp + (dv0 + x) * n);
}

// Online softmax of one block for query vectors [0, nqv): masks, updates the
// running max m (score units) and sum l, leaves P in s and the rescale
// factor of each row in alpha. c maps scores to the log2 domain.
// `allow` (nullable, (nb, kBr), -1 / 0) removes the pairs a block mask
// excludes; it comes with masked = true.
HWY_INLINE void softmax_block(const AttentionParams& p, const TileRows& rows, Workspace* ws,
                              int nqv, int64_t j0, int nb, bool masked, const int32_t* allow,
                              float c) {
  const DF df;
  const hn::RebindToSigned<DF> di;
  const size_t n = hn::Lanes(df);
  const bool capped = p.softcap > 0.0f;
  const VF neg_inf = hn::Set(df, kNegInf);
  const VF vc = hn::Set(df, c);
  for (int qv = 0; qv < nqv; ++qv) {
    float* col = ws->s + qv * n;
    const VF m_old = hn::Load(df, ws->m + qv * n);
    VF mx = m_old;
    const auto beg = hn::LoadU(di, rows.begin + qv * n);
    const auto end = hn::LoadU(di, rows.end + qv * n);
    for (int j = 0; j < nb; ++j) {
      VF x = hn::Load(df, col + j * kBr);
      if (capped) x = softcap_log2(df, x, p.scale, p.softcap);
      if (masked) {
        const auto jv = hn::Set(di, static_cast<int32_t>(j0 + j));
        auto allowed = hn::AndNot(hn::Lt(jv, beg), hn::Lt(jv, end));
        if (allow != nullptr) {
          const auto bits = hn::LoadU(di, allow + j * kBr + qv * n);
          allowed = hn::And(allowed, hn::Ne(bits, hn::Zero(di)));
        }
        x = hn::IfThenElse(hn::RebindMask(df, allowed), x, neg_inf);
      }
      if (capped || masked) hn::Store(x, df, col + j * kBr);
      mx = hn::Max(mx, x);
    }
    // A row with no admitted key so far keeps max -inf; its offset is 0 so
    // exp2(-inf - 0) = 0 instead of NaN.
    const VF m_use = hn::IfThenZeroElse(hn::Eq(mx, neg_inf), hn::Mul(mx, vc));
    // Rescale from the offset the earlier blocks really used, round(m_old * c),
    // so an unchanged maximum gives alpha = 1 exactly. The library builds with
    // -ffp-contract=off for this: fused into an FMA, this line gave
    // alpha = 1 - 1.8e-7 at every block, a drift of l and O linear in Lk.
    const VF alpha = exp2_nonpositive(df, hn::Sub(hn::Mul(m_old, vc), m_use));
    // The block's sum starts from 0 and joins l once: a two-level sum whose
    // rounding grows with sqrt(block) + sqrt(blocks), not sqrt(Lk) (a single
    // running sum made fp32 LSE at Lk = 4224 less accurate than a plain loop).
    VF block_sum = hn::Zero(df);
    for (int j = 0; j < nb; ++j) {
      const VF pj = exp2_nonpositive(df, hn::MulSub(hn::Load(df, col + j * kBr), vc, m_use));
      block_sum = hn::Add(block_sum, pj);
      hn::Store(pj, df, col + j * kBr);
    }
    const VF l = hn::MulAdd(hn::Load(df, ws->l + qv * n), alpha, block_sum);
    hn::Store(mx, df, ws->m + qv * n);
    hn::Store(l, df, ws->l + qv * n);
    hn::Store(alpha, df, ws->alpha + qv * n);
  }
}

template <DType kT>
void tile_kernel_t(const AttentionParams& p, const TileTask& t, Workspace* ws) {
  const DF df;
  const int n = static_cast<int>(hn::Lanes(df));
  TileRows rows;
  prepare_rows(p, t, kBr, &rows);
  if (rows.rows == 0) return;
  const int64_t dim = p.head_dim, dp = padded_head_dim(dim);
  const int nqv = (rows.rows + n - 1) / n;
  const int nrows4 = (rows.rows + 3) / 4 * 4;

  // Q^T (Dp, Br), via O as a row buffer; rows past the end are zero.
  for (int tr = 0; tr < kBr; ++tr) {
    float* row = ws->o + tr * dp;
    if (tr < rows.rows) {
      convert_row<kT>(p.q, rows.q_off[tr], dim, dp, row);
    } else {
      std::memset(row, 0, sizeof(float) * dp);
    }
  }
  for (int64_t x = 0; x < dp; ++x)
    for (int tr = 0; tr < kBr; ++tr) ws->qt[x * kBr + tr] = ws->o[tr * dp + x];
  std::memset(ws->o, 0, sizeof(float) * kBr * dp);
  for (int tr = 0; tr < kBr; ++tr) {
    ws->m[tr] = kNegInf;
    ws->l[tr] = 0.0f;
  }

  const float c = p.softcap > 0.0f ? 1.0f : p.scale * kLog2e;
  const int64_t nvec = dp / n;
  for (int64_t a = first_block_start(rows); a < rows.key_end; a += kBc) {
    const int64_t j0 = a > rows.key_begin ? a : rows.key_begin;
    const int nb = static_cast<int>((rows.key_end - a < kBc ? rows.key_end : a + kBc) - j0);
    // Blocks inside every row's range run without the per-element mask.
    bool masked = !(rows.max_begin <= j0 && rows.min_end >= j0 + nb);
    const KeyBlockUse use =
        masked || rows.block ? classify_key_block(rows, j0, nb) : KeyBlockUse::kRange;
    if (use == KeyBlockUse::kSkip) continue;
    const int32_t* allow = nullptr;
    if (use == KeyBlockUse::kBits) {
      fill_block_allow(rows, j0, nb, ws->allow);
      allow = ws->allow;
      masked = true;
    }
    const int nb4 = (nb + 3) / 4 * 4;
    for (int j = 0; j < nb; ++j) {
      convert_row<kT>(p.kv.k, k_offset(p.kv, p.cu_seqlens_k, t.b, j0 + j, t.hk), dim, dp,
                      ws->k + j * dp);
      convert_row<kT>(p.kv.v, v_offset(p.kv, p.cu_seqlens_k, t.b, j0 + j, t.hk), dim, dp,
                      ws->v + j * dp);
    }
    for (int j = nb; j < nb4; ++j) std::memset(ws->k + j * dp, 0, sizeof(float) * dp);
    const int64_t next_end = a + kBc + kBc < rows.key_end ? a + kBc + kBc : rows.key_end;
    prefetch_kv_rows(p, t, a + kBc, next_end);

    int qv = 0;
    for (; qv + 4 <= nqv; qv += 4) scores_tile<4>(ws->qt, ws->k, ws->s, dim, dp, qv, nb4);
    for (; qv < nqv; ++qv) scores_tile<1>(ws->qt, ws->k, ws->s, dim, dp, qv, nb4);

    softmax_block(p, rows, ws, nqv, j0, nb, masked, allow, c);

    for (int tr = 0; tr < nrows4; tr += 4) {
      int64_t dv = 0;
      for (; dv + 4 <= nvec; dv += 4) pv_tile<4>(ws->s, ws->v, ws->o, ws->alpha, tr, dv, nb, dp);
      for (; dv < nvec; ++dv) pv_tile<1>(ws->s, ws->v, ws->o, ws->alpha, tr, dv, nb, dp);
    }
  }

  float m2[kBr];
  for (int tr = 0; tr < rows.rows; ++tr) m2[tr] = ws->m[tr] == kNegInf ? 0.0f : ws->m[tr] * c;
  finish_rows(p, t, rows, ws->o, dp, m2, ws->l);
}

void tile_kernel_any(const AttentionParams& p, const TileTask& t, Workspace* ws) {
  switch (p.dtype) {
    case DType::kFloat32: return tile_kernel_t<DType::kFloat32>(p, t, ws);
    case DType::kFloat16: return tile_kernel_t<DType::kFloat16>(p, t, ws);
    case DType::kBFloat16: return tile_kernel_t<DType::kBFloat16>(p, t, ws);
  }
}

// -------------------------------------------------------------- decode kernel
//
// Few rows per KV head: vectorised over the head dimension instead. All KV
// heads of the sequence advance together through a block of keys, so K and
// V are read in memory order (row j of every head, then row j + 1), which
// keeps the hardware prefetchers streaming. State per (head, row) is small.

constexpr int kDecodeBlock = 16;  // keys per softmax block

template <DType kT>
HWY_INLINE float dot_row(const float* q, const void* k, int64_t k_off, int64_t dim) {
  const DF df;
  const DF8 d8;
  const int64_t n = static_cast<int64_t>(hn::Lanes(df));
  const int64_t n8 = static_cast<int64_t>(hn::Lanes(d8));
  VF a0 = hn::Zero(df), a1 = hn::Zero(df);
  int64_t x = 0;
  for (; x + 2 * n <= dim; x += 2 * n) {
    a0 = hn::MulAdd(hn::LoadU(df, q + x), load_f32<kT>(df, k, k_off + x), a0);
    a1 = hn::MulAdd(hn::LoadU(df, q + x + n), load_f32<kT>(df, k, k_off + x + n), a1);
  }
  for (; x + n <= dim; x += n) a0 = hn::MulAdd(hn::LoadU(df, q + x), load_f32<kT>(df, k, k_off + x), a0);
  float sum = hn::GetLane(hn::SumOfLanes(df, hn::Add(a0, a1)));
  if (x < dim) {
    auto t = hn::Zero(d8);
    for (; x + n8 <= dim; x += n8) t = hn::MulAdd(hn::LoadU(d8, q + x), load_f32<kT>(d8, k, k_off + x), t);
    sum += hn::GetLane(hn::SumOfLanes(d8, t));
  }
  return sum;
}

// o[0, dim) += w * v_row
template <DType kT>
HWY_INLINE void axpy_row(float w, const void* v, int64_t v_off, int64_t dim, float* o) {
  const DF df;
  const DF8 d8;
  const int64_t n = static_cast<int64_t>(hn::Lanes(df));
  const int64_t n8 = static_cast<int64_t>(hn::Lanes(d8));
  const VF wv = hn::Set(df, w);
  int64_t x = 0;
  for (; x + n <= dim; x += n)
    hn::StoreU(hn::MulAdd(wv, load_f32<kT>(df, v, v_off + x), hn::LoadU(df, o + x)), df, o + x);
  const auto w8 = hn::Set(d8, w);
  for (; x + n8 <= dim; x += n8)
    hn::StoreU(hn::MulAdd(w8, load_f32<kT>(d8, v, v_off + x), hn::LoadU(d8, o + x)), d8, o + x);
}

int64_t decode_state_floats_impl(const AttentionParams& p) {
  const int64_t states = p.heads_kv * kDecodeMaxRows;
  return states * (2 * padded_head_dim(p.head_dim) + 2 + kDecodeBlock);
}

// Whether any (KV head, row) of sequence b admits a key of [j0, j0 + nb)
// under the block mask (rows flattened as in the tile: r = i * g + hh).
HWY_INLINE bool decode_keys_admitted(const BlockMaskView& v, const TileRows& rows, int64_t b,
                                     int64_t g, int64_t hkv, int64_t j0, int nb) {
  const int64_t c0 = j0 >> v.block_k_log2, c1 = (j0 + nb - 1) >> v.block_k_log2;
  for (int r = 0; r < rows.rows; ++r) {
    if (rows.begin[r] >= j0 + nb || rows.end[r] <= j0) continue;
    const int64_t i = r / g;
    for (int64_t hk = 0; hk < hkv; ++hk) {
      const int64_t base = v.row(b, hk * g + r % g, i >> v.block_q_log2) * v.blocks_k;
      for (int64_t c = c0; c <= c1; ++c) {
        if (v.cls[base + c] != BlockMaskView::kEmpty) return true;
      }
    }
  }
  return false;
}

template <DType kT>
void decode_kernel_t(const AttentionParams& p, int64_t b, int64_t key_begin, int64_t key_end,
                     float* state, float* split_o, float* split_lse) {
  const DF df;
  const int64_t n = static_cast<int64_t>(hn::Lanes(df));
  const int64_t dim = p.head_dim, dp = padded_head_dim(dim);
  const int64_t hkv = p.heads_kv;
  TileTask t;
  t.b = b;
  t.key_begin = key_begin;
  t.key_end = key_end;
  TileRows rows;  // key ranges are the same for every KV head
  prepare_rows(p, t, kDecodeMaxRows, &rows);
  const int nr = rows.rows;
  if (nr == 0) return;
  const int64_t ns = hkv * nr;  // states, index hk * nr + r
  float* q = state;
  float* o = q + ns * dp;
  float* m = o + ns * dp;
  float* l = m + ns;
  float* s = l + ns;  // (ns, kDecodeBlock)

  for (int64_t hk = 0; hk < hkv; ++hk) {
    t.hk = hk;
    TileRows hr;
    prepare_rows(p, t, kDecodeMaxRows, &hr);
    for (int r = 0; r < nr; ++r) convert_row<kT>(p.q, hr.q_off[r], dim, dp, q + (hk * nr + r) * dp);
  }
  std::memset(o, 0, sizeof(float) * ns * dp);
  for (int64_t i = 0; i < ns; ++i) {
    m[i] = kNegInf;
    l[i] = 0.0f;
  }
  const bool capped = p.softcap > 0.0f;
  const float c = capped ? 1.0f : p.scale * kLog2e;
  int64_t k_offs[kDecodeBlock], v_offs[kDecodeBlock];

  const BlockMaskView* block = p.mask.block;
  const int64_t g = p.group_size();
  for (int64_t j0 = rows.key_begin; j0 < rows.key_end; j0 += kDecodeBlock) {
    const int nb = static_cast<int>(rows.key_end - j0 < kDecodeBlock ? rows.key_end - j0 : kDecodeBlock);
    // A block mask: keys no (head, row) admits are never loaded; the others
    // are checked pair by pair (few rows: cheaper than the tile's classes).
    if (block != nullptr && !decode_keys_admitted(*block, rows, b, g, hkv, j0, nb)) continue;
    for (int j = 0; j < nb; ++j) {
      k_offs[j] = k_offset(p.kv, p.cu_seqlens_k, b, j0 + j, 0);
      v_offs[j] = v_offset(p.kv, p.cu_seqlens_k, b, j0 + j, 0);
    }
    for (int j = 0; j < nb; ++j)
      for (int64_t hk = 0; hk < hkv; ++hk) {
        const int64_t off = k_offs[j] + hk * p.kv.k_head_stride;
        for (int r = 0; r < nr; ++r)
          s[(hk * nr + r) * kDecodeBlock + j] = dot_row<kT>(q + (hk * nr + r) * dp, p.kv.k, off, dim);
      }
    const bool masked = !(rows.max_begin <= j0 && rows.min_end >= j0 + nb);
    for (int64_t st = 0; st < ns; ++st) {
      const int r = static_cast<int>(st % nr);
      const int64_t h = st / nr * g + r % g, i = r / g;
      float* sr = s + st * kDecodeBlock;
      for (int j = 0; j < kDecodeBlock; ++j) {
        float x = sr[j];
        if (j >= nb || (masked && (j0 + j < rows.begin[r] || j0 + j >= rows.end[r])) ||
            (block != nullptr && !block->allowed(b, h, i, j0 + j))) {
          x = kNegInf;
        } else if (capped) {
          x = p.softcap * kLog2e * std::tanh(x * p.scale / p.softcap);
        }
        sr[j] = x;
      }
      VF mv = hn::Set(df, m[st]);
      for (int j = 0; j < kDecodeBlock; j += n) mv = hn::Max(mv, hn::LoadU(df, sr + j));
      const float mx = hn::GetLane(hn::MaxOfLanes(df, mv));
      const float m_use = mx == kNegInf ? 0.0f : mx * c;
      const float alpha = m[st] == kNegInf ? 0.0f : std::exp2(m[st] * c - m_use);
      VF lsum = hn::Zero(df);
      const VF vc = hn::Set(df, c), vm = hn::Set(df, m_use);
      for (int j = 0; j < kDecodeBlock; j += n) {
        const VF pj = exp2_nonpositive(df, hn::MulSub(hn::LoadU(df, sr + j), vc, vm));
        lsum = hn::Add(lsum, pj);
        hn::StoreU(pj, df, sr + j);
      }
      l[st] = l[st] * alpha + hn::GetLane(hn::SumOfLanes(df, lsum));
      m[st] = mx;
      if (alpha != 1.0f) {
        float* os = o + st * dp;
        const VF va = hn::Set(df, alpha);
        for (int64_t x = 0; x < dp; x += n) hn::Store(hn::Mul(hn::Load(df, os + x), va), df, os + x);
      }
    }
    for (int j = 0; j < nb; ++j)
      for (int64_t hk = 0; hk < hkv; ++hk) {
        const int64_t off = v_offs[j] + hk * p.kv.v_head_stride;
        for (int r = 0; r < nr; ++r) {
          const int64_t st = hk * nr + r;
          axpy_row<kT>(s[st * kDecodeBlock + j], p.kv.v, off, dim, o + st * dp);
        }
      }
  }

  float m2[kDecodeMaxRows];
  for (int64_t hk = 0; hk < hkv; ++hk) {
    t.hk = hk;
    t.split_o = split_o ? split_o + hk * nr * dp : nullptr;
    t.split_lse = split_lse ? split_lse + hk * nr : nullptr;
    TileRows hr;
    prepare_rows(p, t, kDecodeMaxRows, &hr);
    for (int r = 0; r < nr; ++r) {
      const float mm = m[hk * nr + r];
      m2[r] = mm == kNegInf ? 0.0f : mm * c;
    }
    finish_rows(p, t, hr, o + hk * nr * dp, dp, m2, l + hk * nr);
  }
}

void decode_kernel_any(const AttentionParams& p, int64_t b, int64_t key_begin, int64_t key_end,
                       float* state, float* split_o, float* split_lse) {
  switch (p.dtype) {
    case DType::kFloat32:
      return decode_kernel_t<DType::kFloat32>(p, b, key_begin, key_end, state, split_o, split_lse);
    case DType::kFloat16:
      return decode_kernel_t<DType::kFloat16>(p, b, key_begin, key_end, state, split_o, split_lse);
    case DType::kBFloat16:
      return decode_kernel_t<DType::kBFloat16>(p, b, key_begin, key_end, state, split_o, split_lse);
  }
}

const char* target_name_impl() { return hwy::TargetName(HWY_TARGET); }

}  // namespace HWY_NAMESPACE
}  // namespace fastattn::cpu
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace fastattn::cpu {

HWY_EXPORT(tile_kernel_any);
HWY_EXPORT(decode_kernel_any);
HWY_EXPORT(decode_state_floats_impl);
HWY_EXPORT(target_name_impl);

void tile_kernel(const AttentionParams& p, const TileTask& t, Workspace* ws) {
  HWY_DYNAMIC_DISPATCH(tile_kernel_any)(p, t, ws);
}
void decode_kernel(const AttentionParams& p, int64_t b, int64_t key_begin, int64_t key_end,
                   float* state, float* split_o, float* split_lse) {
  HWY_DYNAMIC_DISPATCH(decode_kernel_any)(p, b, key_begin, key_end, state, split_o, split_lse);
}
int64_t decode_state_floats(const AttentionParams& p) {
  return HWY_DYNAMIC_DISPATCH(decode_state_floats_impl)(p);
}
const char* hwy_target_name() { return HWY_DYNAMIC_DISPATCH(target_name_impl)(); }

}  // namespace fastattn::cpu
#endif  // HWY_ONCE
