// Plain parameter structs handed from the validated API to the backends.
// Kernels never see fa_tensor or the C ABI: only raw pointers, int64 strides
// (in elements) and sizes that were already checked.
#pragma once

#include <cstdint>
#include <limits>

#include "api/block_mask_view.h"

namespace fastattn {

enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

inline int dtype_size(DType t) { return t == DType::kFloat32 ? 4 : 2; }

// Every built-in mask is normalised to a window on the key axis:
// query row i of a sequence with Lq queries and Lk keys, at position
// d = i + (Lk - Lq), sees keys j with
//   d - left <= j <= d + right,
// where kUnbounded on a side removes that bound (no mask: both unbounded;
// causal: left unbounded, right 0), widened to every j < prefix (prefix-LM;
// left is then unbounded) and narrowed to the chunk of d (chunk > 0). Each
// of these keeps a row's keys one interval whose ends never move left as i
// grows, which is what lets a tile of rows find its key tiles from its
// first and last rows. Documents (segment ids) narrow it further, per
// sequence (AttentionParams::key_range); a block mask removes pairs inside
// the interval.
struct MaskParams {
  static constexpr int64_t kUnbounded = std::numeric_limits<int64_t>::max() / 4;
  int64_t left = kUnbounded;
  int64_t right = kUnbounded;
  int64_t prefix = 0;  // keys j < prefix are seen by every row
  int64_t chunk = 0;   // > 0: j and d in the same chunk of this many positions
  // Documents: int32 segment id per token, non-decreasing within each
  // sequence; padded batch [B, Lq] / [B, Lk], varlen indexed like the packed
  // rows of q / k. Host memory for the CPU backends, device memory for CUDA.
  const int32_t* q_segments = nullptr;
  const int32_t* k_segments = nullptr;
  const BlockMaskView* block = nullptr;  // compressed mask or nullptr

  bool is_none() const {
    return left >= kUnbounded && right >= kUnbounded && prefix == 0 && chunk == 0 &&
           q_segments == nullptr && block == nullptr;
  }
  // First and one-past-last key of query row i allowed by the window, the
  // prefix and the chunk, clamped to [0, Lk].
  void key_range(int64_t i, int64_t lq, int64_t lk, int64_t* begin, int64_t* end) const {
    const int64_t diag = i + lk - lq;
    int64_t b = left >= kUnbounded ? 0 : diag - left;
    int64_t e = right >= kUnbounded ? lk : diag + right + 1;
    if (prefix > e) e = prefix;
    if (chunk > 0) {
      const int64_t q = diag >= 0 ? diag / chunk : -((-diag + chunk - 1) / chunk);
      if (q * chunk > b) b = q * chunk;
      if (q * chunk + chunk < e) e = q * chunk + chunk;
    }
    b = b < 0 ? 0 : (b > lk ? lk : b);
    e = e < b ? b : (e > lk ? lk : e);
    *begin = b;
    *end = e;
  }
};

// Where the keys and values of a sequence live.
// Contiguous: row j of sequence b at base + b * batch_stride + j * row_stride
// (varlen: base + (cu_seqlens_k[b] + j) * row_stride).
// Paged: row j at base + page_table[b * page_table_stride + j / page_size] *
// page_stride + (j % page_size) * row_stride.
struct KVLayout {
  const void* k = nullptr;
  const void* v = nullptr;
  int64_t k_batch_stride = 0, k_row_stride = 0, k_head_stride = 0;
  int64_t v_batch_stride = 0, v_row_stride = 0, v_head_stride = 0;
  // Paging (page_table == nullptr: contiguous).
  const int32_t* page_table = nullptr;
  int64_t page_table_stride = 0;
  int64_t page_size = 0;
  int64_t k_page_stride = 0, v_page_stride = 0;
  int64_t num_pages = 0;  // pages in the k and v caches
};

struct AttentionParams {
  DType dtype = DType::kFloat32;
  int64_t batch = 0;      // sequences
  int64_t seqlen_q = 0;   // padded batch: Lq; varlen: max over sequences
  int64_t seqlen_k = 0;   // padded batch: Lk; varlen/paged: max over sequences
  int64_t heads_q = 0;
  int64_t heads_kv = 0;
  int64_t head_dim = 0;

  const void* q = nullptr;
  int64_t q_batch_stride = 0, q_row_stride = 0, q_head_stride = 0;
  void* out = nullptr;
  int64_t out_batch_stride = 0, out_row_stride = 0, out_head_stride = 0;
  // Optional float32 log-sum-exp, natural log.
  float* lse = nullptr;
  int64_t lse_batch_stride = 0, lse_head_stride = 0, lse_row_stride = 0;

  KVLayout kv;

  // Varlen (host arrays of batch + 1 offsets) or nullptr.
  const int32_t* cu_seqlens_q = nullptr;
  const int32_t* cu_seqlens_k = nullptr;
  // Varlen: the rows of q/out and of k/v (their tensors' first dim); else 0.
  int64_t total_q = 0, total_k = 0;
  // Per-sequence key counts (paged cache) or nullptr.
  const int32_t* seqlens_k = nullptr;

  MaskParams mask;
  float scale = 1.0f;
  float softcap = 0.0f;  // 0 = off

  int num_threads = 0;  // CPU only; 0 = all

  bool is_varlen() const { return cu_seqlens_q != nullptr; }

  // Query offset (in rows of q/out) and length of sequence b.
  void q_span(int64_t b, int64_t* first_row, int64_t* len) const {
    if (cu_seqlens_q) {
      *first_row = cu_seqlens_q[b];
      *len = cu_seqlens_q[b + 1] - cu_seqlens_q[b];
    } else {
      *first_row = 0;
      *len = seqlen_q;
    }
  }
  int64_t k_len(int64_t b) const {
    if (cu_seqlens_k) return cu_seqlens_k[b + 1] - cu_seqlens_k[b];
    if (seqlens_k) return seqlens_k[b];
    return seqlen_k;
  }
  int64_t group_size() const { return heads_q / heads_kv; }

  // Keys [*begin, *end) that query row i of sequence b may see: the mask's
  // interval, narrowed to the row's document when there are segment ids
  // (a block mask may still remove keys inside it).
  void key_range(int64_t b, int64_t i, int64_t lq, int64_t lk, int64_t* begin,
                 int64_t* end) const {
    mask.key_range(i, lq, lk, begin, end);
    if (mask.q_segments == nullptr) return;
    const int32_t* qs = mask.q_segments + (cu_seqlens_q ? cu_seqlens_q[b] : b * seqlen_q);
    const int32_t* ks = mask.k_segments + (cu_seqlens_k ? cu_seqlens_k[b] : b * seqlen_k);
    int64_t lo = 0, hi = 0;
    segment_span(ks, lk, qs[i], &lo, &hi);
    if (lo > *begin) *begin = lo;
    if (hi < *end) *end = hi;
    if (*end < *begin) *end = *begin;
  }
};

// Element offsets into the q / out / lse buffers.
inline int64_t q_offset(const AttentionParams& p, int64_t b, int64_t row, int64_t h) {
  int64_t first = 0, len = 0;
  p.q_span(b, &first, &len);
  return (p.cu_seqlens_q ? 0 : b * p.q_batch_stride) + (first + row) * p.q_row_stride +
         h * p.q_head_stride;
}
inline int64_t out_offset(const AttentionParams& p, int64_t b, int64_t row, int64_t h) {
  int64_t first = 0, len = 0;
  p.q_span(b, &first, &len);
  return (p.cu_seqlens_q ? 0 : b * p.out_batch_stride) + (first + row) * p.out_row_stride +
         h * p.out_head_stride;
}
inline int64_t lse_offset(const AttentionParams& p, int64_t b, int64_t row, int64_t h) {
  int64_t first = 0, len = 0;
  p.q_span(b, &first, &len);
  return (p.cu_seqlens_q ? 0 : b * p.lse_batch_stride) + h * p.lse_head_stride +
         (first + row) * p.lse_row_stride;
}

// Element offset of row j of sequence b, KV head h, in a K or V buffer with
// the given strides (see KVLayout).
inline int64_t kv_row_offset(const KVLayout& kv, const int32_t* cu_seqlens_k, int64_t b, int64_t j,
                             int64_t h, int64_t page_stride, int64_t batch_stride,
                             int64_t row_stride, int64_t head_stride) {
  if (kv.page_table) {
    const int64_t page = kv.page_table[b * kv.page_table_stride + j / kv.page_size];
    return page * page_stride + (j % kv.page_size) * row_stride + h * head_stride;
  }
  if (cu_seqlens_k) return (cu_seqlens_k[b] + j) * row_stride + h * head_stride;
  return b * batch_stride + j * row_stride + h * head_stride;
}
inline int64_t k_offset(const KVLayout& kv, const int32_t* cu_seqlens_k, int64_t b, int64_t j,
                        int64_t h) {
  return kv_row_offset(kv, cu_seqlens_k, b, j, h, kv.k_page_stride, kv.k_batch_stride,
                       kv.k_row_stride, kv.k_head_stride);
}
inline int64_t v_offset(const KVLayout& kv, const int32_t* cu_seqlens_k, int64_t b, int64_t j,
                        int64_t h) {
  return kv_row_offset(kv, cu_seqlens_k, b, j, h, kv.v_page_stride, kv.v_batch_stride,
                       kv.v_row_stride, kv.v_head_stride);
}

// Rotary embedding of the new tokens: pairs (x[i], x[i + dim/2]) (kHalf) or
// (x[2i], x[2i+1]) (kInterleaved) of the first `dim` elements, rotated by the
// angle whose cos/sin are row `position` column i of the tables.
enum class RotaryStyle : int { kNone = 0, kHalf = 1, kInterleaved = 2 };

struct RotaryParams {
  RotaryStyle style = RotaryStyle::kNone;
  int64_t dim = 0;  // even, 2..D
  const float* cos = nullptr;  // [max_position, dim / 2]
  const float* sin = nullptr;
  int64_t cos_row_stride = 0, sin_row_stride = 0;
  int64_t max_position = 0;
};

// One decoding step: `attn` describes q, out, lse, the cache (paged or
// contiguous with batch strides), mask, scale and softcap, with
// seqlen_q = Lq and seqlen_k = the planning bound on keys per sequence.
// attn.seqlens_k is unused: sequence b has cache_seqlens[b] + new_tokens keys.
struct DecodeParams {
  AttentionParams attn;
  const int32_t* cache_seqlens = nullptr;  // [B], keys before the append
  int64_t capacity = 0;  // keys one sequence's cache can hold

  // Append (k_new == nullptr: none): new_tokens = Lq rows of [B, Lq, Hkv, D].
  int64_t new_tokens = 0;
  const void* k_new = nullptr;
  const void* v_new = nullptr;
  int64_t k_new_batch_stride = 0, k_new_row_stride = 0, k_new_head_stride = 0;
  int64_t v_new_batch_stride = 0, v_new_row_stride = 0, v_new_head_stride = 0;
  RotaryParams rotary;

  int num_splits = 0;  // requested; 0 = planner

  int64_t keys(int64_t b) const { return int64_t(cache_seqlens[b]) + new_tokens; }
};

// A set of partial states to merge: n states of rows x heads x head_dim.
struct MergeParams {
  int num_states = 0;
  DType out_dtype = DType::kFloat32;
  int64_t batch = 0, seqlen = 0, heads = 0, head_dim = 0;
  // Per state: data, dtype and strides (batch, row, head) of O; strides
  // (batch, head, row) of LSE.
  static constexpr int kMaxStates = 64;
  const void* o[kMaxStates] = {};
  DType o_dtype[kMaxStates] = {};
  int64_t o_strides[kMaxStates][3] = {};
  const float* lse[kMaxStates] = {};
  int64_t lse_strides[kMaxStates][3] = {};
  void* out = nullptr;
  int64_t out_strides[3] = {};
  float* out_lse = nullptr;
  int64_t out_lse_strides[3] = {};
  int num_threads = 0;
};

}  // namespace fastattn
