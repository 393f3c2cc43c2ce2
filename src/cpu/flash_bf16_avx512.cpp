// Tile kernel for bf16 inputs on CPUs with AVX512_BF16 (Zen 4, Cooper Lake,
// Sapphire Rapids): VDPBF16PS multiplies pairs of bf16 and accumulates in
// fp32, so both matrix products run on bf16 operands directly, with half the
// instructions of converting to fp32 first. Highway 1.0.3 has no such op,
// hence intrinsics under a target attribute, chosen at run time.
//
// Same tiling as the Highway kernel (see flash_tile_hwy.cpp), with operands
// in bf16 pairs, 32-bit lanes each holding two consecutive elements along
// the reduction axis:
//   Q^T pairs (Dp/2, Br)  lane tr of row x/2: q[tr][x], q[tr][x+1]
//   K         in place    a broadcast 32-bit load is the pair k[j][x..x+1]
//   P pairs   (Bc/2, Br)  p[tr][j], p[tr][j+1], rounded to bf16 as GPUs do
//   V pairs   (Bc/2, Dp)  v[j][x], v[j+1][x]
// Softcap runs on the Highway kernel (this one has no vector tanh).
#include <cstdint>
#include <cstring>
#include <limits>

#include "cpu/flash_tile.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

// GCC 12 reports the _mm512_undefined_* placeholders inside the intrinsics
// as maybe-uninitialized once they are inlined here; they are never read.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#define FA_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma")))

namespace fastattn::cpu {
namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// 2^x for x <= 0; x <= -127 (masked scores) gives exactly 0. Same
// polynomial as exp2_nonpositive in flash_tile_hwy.cpp.
FA_BF16_TARGET inline __m512 exp2_nonpositive(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-127.0f));
  const __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(x, n);
  __m512 poly = _mm512_set1_ps(1.535336188319500e-4f);
  poly = _mm512_fmadd_ps(poly, f, _mm512_set1_ps(1.339887440266574e-3f));
  poly = _mm512_fmadd_ps(poly, f, _mm512_set1_ps(9.618437357674640e-3f));
  poly = _mm512_fmadd_ps(poly, f, _mm512_set1_ps(5.550332471162809e-2f));
  poly = _mm512_fmadd_ps(poly, f, _mm512_set1_ps(2.402264791363012e-1f));
  poly = _mm512_fmadd_ps(poly, f, _mm512_set1_ps(6.931472028550421e-1f));
  poly = _mm512_fmadd_ps(poly, f, _mm512_set1_ps(1.0f));
  const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(poly, _mm512_castsi512_ps(e));
}

// fp32 -> bf16 bits in the low 16 of each lane, round to nearest even.
FA_BF16_TARGET inline __m512i round_bf16(__m512 x) {
  const __m512i u = _mm512_castps_si512(x);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  return _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF)));
}

// S^T rows [j, j+4) for query vectors [qv0, qv0 + kQV): 4 x kQV accumulators,
// each VDPBF16PS doing two steps of the head dimension.
template <int kQV>
FA_BF16_TARGET inline void scores_tile(const uint32_t* qt2, const uint16_t* const* krow, float* s,
                                       int64_t pairs, int qv0, int j) {
  __m512 acc[kQV][4];
  for (int a = 0; a < kQV; ++a)
    for (int c = 0; c < 4; ++c) acc[a][c] = _mm512_setzero_ps();
  const uint16_t* k0 = krow[j];
  const uint16_t* k1 = krow[j + 1];
  const uint16_t* k2 = krow[j + 2];
  const uint16_t* k3 = krow[j + 3];
  for (int64_t x = 0; x < pairs; ++x) {
    const uint32_t* q = qt2 + x * kBr + qv0 * 16;
    __m512bh qv[kQV];
    for (int a = 0; a < kQV; ++a) qv[a] = (__m512bh)_mm512_load_si512(q + a * 16);
    uint32_t kp[4];
    std::memcpy(&kp[0], k0 + 2 * x, 4);
    std::memcpy(&kp[1], k1 + 2 * x, 4);
    std::memcpy(&kp[2], k2 + 2 * x, 4);
    std::memcpy(&kp[3], k3 + 2 * x, 4);
    for (int c = 0; c < 4; ++c) {
      const __m512bh kb = (__m512bh)_mm512_set1_epi32(static_cast<int>(kp[c]));
      for (int a = 0; a < kQV; ++a) acc[a][c] = _mm512_dpbf16_ps(acc[a][c], qv[a], kb);
    }
  }
  for (int c = 0; c < 4; ++c)
    for (int a = 0; a < kQV; ++a) _mm512_store_ps(s + (j + c) * kBr + (qv0 + a) * 16, acc[a][c]);
}

// O[tr0, tr0+4)[vectors dv0, dv0+kDV) = alpha * O + P V over key pairs.
template <int kDV>
FA_BF16_TARGET inline void pv_tile(const uint32_t* p2, const uint32_t* v2, float* o,
                                   const float* alpha, int tr0, int64_t dv0, int npairs, int64_t dp) {
  __m512 acc[4][kDV];
  for (int r = 0; r < 4; ++r) {
    const __m512 a = _mm512_set1_ps(alpha[tr0 + r]);
    for (int x = 0; x < kDV; ++x)
      acc[r][x] = _mm512_mul_ps(_mm512_load_ps(o + (tr0 + r) * dp + (dv0 + x) * 16), a);
  }
  for (int jp = 0; jp < npairs; ++jp) {
    __m512bh vv[kDV];
    for (int x = 0; x < kDV; ++x) vv[x] = (__m512bh)_mm512_load_si512(v2 + jp * dp + (dv0 + x) * 16);
    const uint32_t* pj = p2 + jp * kBr + tr0;
    for (int r = 0; r < 4; ++r) {
      const __m512bh pb = (__m512bh)_mm512_set1_epi32(static_cast<int>(pj[r]));
      for (int x = 0; x < kDV; ++x) acc[r][x] = _mm512_dpbf16_ps(acc[r][x], pb, vv[x]);
    }
  }
  for (int r = 0; r < 4; ++r)
    for (int x = 0; x < kDV; ++x) _mm512_store_ps(o + (tr0 + r) * dp + (dv0 + x) * 16, acc[r][x]);
}

// Online softmax of the block (see softmax_block in flash_tile_hwy.cpp),
// then P rounded to bf16 pairs into p2; the row sums use fp32 P.
// `allow` (nullable): the block mask's pairs, as in flash_tile_hwy.cpp.
FA_BF16_TARGET void softmax_block(const TileRows& rows, Workspace* ws, uint32_t* p2, int nqv,
                                  int64_t j0, int nb, bool masked, const int32_t* allow, float c) {
  const __m512 neg_inf = _mm512_set1_ps(kNegInf);
  const __m512 vc = _mm512_set1_ps(c);
  const int nb2 = (nb + 1) / 2 * 2;
  for (int qv = 0; qv < nqv; ++qv) {
    float* col = ws->s + qv * 16;
    const __m512 m_old = _mm512_load_ps(ws->m + qv * 16);
    __m512 mx = m_old;
    const __m512i beg = _mm512_loadu_si512(rows.begin + qv * 16);
    const __m512i end = _mm512_loadu_si512(rows.end + qv * 16);
    for (int j = 0; j < nb; ++j) {
      __m512 x = _mm512_load_ps(col + j * kBr);
      if (masked) {
        const __m512i jv = _mm512_set1_epi32(static_cast<int32_t>(j0 + j));
        __mmask16 ok = _mm512_cmpge_epi32_mask(jv, beg) & _mm512_cmplt_epi32_mask(jv, end);
        if (allow != nullptr) {
          ok &= _mm512_test_epi32_mask(_mm512_loadu_si512(allow + j * kBr + qv * 16),
                                       _mm512_set1_epi32(-1));
        }
        x = _mm512_mask_blend_ps(ok, neg_inf, x);
        _mm512_store_ps(col + j * kBr, x);
      }
      mx = _mm512_max_ps(mx, x);
    }
    const __mmask16 empty = _mm512_cmp_ps_mask(mx, neg_inf, _CMP_EQ_OQ);
    const __m512 m_use = _mm512_maskz_mul_ps(static_cast<__mmask16>(~empty), mx, vc);
    const __m512 alpha = exp2_nonpositive(_mm512_sub_ps(_mm512_mul_ps(m_old, vc), m_use));
    // Two-level sum, as in the fp32 tile kernel: the block's sum joins l once.
    __m512 block_sum = _mm512_setzero_ps();
    for (int j = 0; j < nb2; j += 2) {
      const __m512 p0 = exp2_nonpositive(_mm512_fmsub_ps(_mm512_load_ps(col + j * kBr), vc, m_use));
      // The pad key of an odd block gets probability 0.
      const __m512 p1 = j + 1 < nb
                            ? exp2_nonpositive(_mm512_fmsub_ps(_mm512_load_ps(col + (j + 1) * kBr), vc, m_use))
                            : _mm512_setzero_ps();
      block_sum = _mm512_add_ps(block_sum, _mm512_add_ps(p0, p1));
      const __m512i lo = _mm512_srli_epi32(round_bf16(p0), 16);
      const __m512i hi = _mm512_and_si512(round_bf16(p1), _mm512_set1_epi32(static_cast<int>(0xFFFF0000u)));
      _mm512_store_si512(p2 + (j / 2) * kBr + qv * 16, _mm512_or_si512(lo, hi));
    }
    const __m512 l = _mm512_fmadd_ps(_mm512_load_ps(ws->l + qv * 16), alpha, block_sum);
    _mm512_store_ps(ws->m + qv * 16, mx);
    _mm512_store_ps(ws->l + qv * 16, l);
    _mm512_store_ps(ws->alpha + qv * 16, alpha);
  }
}

// V rows j, j+1 -> one row of pairs; a missing second row is zero.
FA_BF16_TARGET void pack_v_pair(const uint16_t* v0, const uint16_t* v1, int64_t dim, int64_t dp,
                                uint32_t* dst) {
  int64_t x = 0;
  for (; x + 16 <= dim; x += 16) {
    const __m512i a = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(v0 + x)));
    const __m512i b = v1 ? _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(v1 + x)))
                         : _mm512_setzero_si512();
    _mm512_storeu_si512(dst + x, _mm512_or_si512(a, _mm512_slli_epi32(b, 16)));
  }
  for (; x < dim; ++x) dst[x] = static_cast<uint32_t>(v0[x]) | (v1 ? static_cast<uint32_t>(v1[x]) << 16 : 0u);
  for (; x < dp; ++x) dst[x] = 0;
}

FA_BF16_TARGET void tile_kernel_impl(const AttentionParams& p, const TileTask& t, Workspace* ws) {
  TileRows rows;
  prepare_rows(p, t, kBr, &rows);
  if (rows.rows == 0) return;
  const int64_t dim = p.head_dim, dp = padded_head_dim(dim), pairs = dp / 2;
  const int nqv = (rows.rows + 15) / 16;
  const int nrows4 = (rows.rows + 3) / 4 * 4;
  const uint16_t* q = static_cast<const uint16_t*>(p.q);
  const uint16_t* k = static_cast<const uint16_t*>(p.kv.k);
  const uint16_t* v = static_cast<const uint16_t*>(p.kv.v);

  // Workspace reuse (fp32-sized buffers hold the half-sized pair layouts):
  // qt -> Q^T pairs, v -> V pairs, k -> a zero K row. P pairs overwrite S in
  // place: pair row j/2 is written after S rows j and j + 1 were read.
  uint32_t* qt2 = reinterpret_cast<uint32_t*>(ws->qt);
  uint32_t* v2 = reinterpret_cast<uint32_t*>(ws->v);
  uint32_t* p2 = reinterpret_cast<uint32_t*>(ws->s);
  uint16_t* zero_row = reinterpret_cast<uint16_t*>(ws->k);
  std::memset(zero_row, 0, sizeof(uint16_t) * dp);
  for (int64_t x = 0; x < pairs; ++x) {
    for (int tr = 0; tr < kBr; ++tr) {
      uint32_t pair = 0;
      if (tr < rows.rows && 2 * x < dim) {
        const uint16_t* qr = q + rows.q_off[tr] + 2 * x;
        pair = static_cast<uint32_t>(qr[0]) | static_cast<uint32_t>(qr[1]) << 16;
      }
      qt2[x * kBr + tr] = pair;
    }
  }
  std::memset(ws->o, 0, sizeof(float) * kBr * dp);
  for (int tr = 0; tr < kBr; ++tr) {
    ws->m[tr] = kNegInf;
    ws->l[tr] = 0.0f;
  }
  const float c = p.scale * kLog2e;
  const int64_t nvec = dp / 16;
  const int64_t kpairs = dim / 2;  // K is read in place: only real elements
  const uint16_t* krow[kBc + 4];

  for (int64_t a = first_block_start(rows); a < rows.key_end; a += kBc) {
    const int64_t j0 = a > rows.key_begin ? a : rows.key_begin;
    const int nb = static_cast<int>((rows.key_end - a < kBc ? rows.key_end : a + kBc) - j0);
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
    for (int j = 0; j < nb4; ++j)
      krow[j] = j < nb ? k + k_offset(p.kv, p.cu_seqlens_k, t.b, j0 + j, t.hk) : zero_row;
    for (int j = 0; j < nb; j += 2) {
      const uint16_t* v0 = v + v_offset(p.kv, p.cu_seqlens_k, t.b, j0 + j, t.hk);
      const uint16_t* v1 = j + 1 < nb ? v + v_offset(p.kv, p.cu_seqlens_k, t.b, j0 + j + 1, t.hk) : nullptr;
      pack_v_pair(v0, v1, dim, dp, v2 + (j / 2) * dp);
    }
    const int64_t next_end = a + kBc + kBc < rows.key_end ? a + kBc + kBc : rows.key_end;
    prefetch_kv_rows(p, t, a + kBc, next_end);

    for (int j = 0; j < nb4; j += 4) {
      int qv = 0;
      for (; qv + 4 <= nqv; qv += 4) scores_tile<4>(qt2, krow, ws->s, kpairs, qv, j);
      for (; qv < nqv; ++qv) scores_tile<1>(qt2, krow, ws->s, kpairs, qv, j);
    }
    softmax_block(rows, ws, p2, nqv, j0, nb, masked, allow, c);

    const int npairs = (nb + 1) / 2;
    for (int tr = 0; tr < nrows4; tr += 4) {
      int64_t dv = 0;
      for (; dv + 4 <= nvec; dv += 4) pv_tile<4>(p2, v2, ws->o, ws->alpha, tr, dv, npairs, dp);
      for (; dv < nvec; ++dv) pv_tile<1>(p2, v2, ws->o, ws->alpha, tr, dv, npairs, dp);
    }
  }

  float m2[kBr];
  for (int tr = 0; tr < rows.rows; ++tr) m2[tr] = ws->m[tr] == kNegInf ? 0.0f : ws->m[tr] * c;
  finish_rows(p, t, rows, ws->o, dp, m2, ws->l);
}

}  // namespace

bool bf16_dot_available() {
  static const bool available = __builtin_cpu_supports("avx512f") &&
                                __builtin_cpu_supports("avx512bw") &&
                                __builtin_cpu_supports("avx512vl") &&
                                __builtin_cpu_supports("avx512bf16");
  return available;
}

void tile_kernel_bf16_dot(const AttentionParams& p, const TileTask& t, Workspace* ws) {
  if (p.softcap > 0.0f) {
    tile_kernel(p, t, ws);
    return;
  }
  tile_kernel_impl(p, t, ws);
}

}  // namespace fastattn::cpu

#else  // not x86-64 GCC/Clang: no AVX512_BF16 path

namespace fastattn::cpu {
bool bf16_dot_available() { return false; }
void tile_kernel_bf16_dot(const AttentionParams& p, const TileTask& t, Workspace* ws) {
  tile_kernel(p, t, ws);
}
}  // namespace fastattn::cpu

#endif
