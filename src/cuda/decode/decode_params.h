// What the decode kernels read: raw pointers, int64 element strides and int
// sizes, filled from the validated DecodeParams by decode_launch.cu.
#pragma once

#include <cstdint>

namespace fastattn::cuda {

// n / d and n % d for 0 <= n < 2^31 with one wide multiply (page lookups
// divide every key index by the runtime page size): m = ceil(2^s / d) with
// s = 31 + ceil(log2 d) keeps n * (m d - 2^s) < 2^s, so the quotient is exact.
struct FastDivmod {
  uint32_t divisor = 1;
  uint64_t multiplier = uint64_t{1} << 31;
  uint32_t shift = 31;

  FastDivmod() = default;
  explicit FastDivmod(uint32_t d) : divisor(d) {
    uint32_t log2_ceil = 0;
    while ((uint64_t{1} << log2_ceil) < d) ++log2_ceil;
    shift = 31 + log2_ceil;
    multiplier = ((uint64_t{1} << shift) + d - 1) / d;
  }
#ifdef __CUDACC__
  __host__ __device__
#endif
  uint32_t div(uint32_t n) const {
    return static_cast<uint32_t>((uint64_t(n) * multiplier) >> shift);
  }
};

struct DecodeKernelParams {
  // Queries [B, Lq, Hq, D] and outputs like them.
  const void* q = nullptr;
  int64_t q_batch_stride = 0, q_row_stride = 0, q_head_stride = 0;
  void* out = nullptr;
  int64_t out_batch_stride = 0, out_row_stride = 0, out_head_stride = 0;
  float* lse = nullptr;  // optional [B, Hq, Lq]
  int64_t lse_batch_stride = 0, lse_head_stride = 0, lse_row_stride = 0;

  // The cache. Paged: row j of sequence b is row j % page_size of page
  // page_table[b * page_table_stride + j / page_size]. Contiguous
  // (page_table == nullptr): row j of "page" b, page strides = batch strides.
  const void* k = nullptr;
  const void* v = nullptr;
  int64_t k_page_stride = 0, k_row_stride = 0, k_head_stride = 0;
  int64_t v_page_stride = 0, v_row_stride = 0, v_head_stride = 0;
  const int32_t* page_table = nullptr;
  int64_t page_table_stride = 0;
  FastDivmod page_size;

  // Sequence b has cache_seqlens[b] + new_tokens keys.
  const int32_t* cache_seqlens = nullptr;
  int new_tokens = 0;

  // Append: new rows [B, Lq, Hkv, D] written at cache_seqlens[b] + i.
  const void* k_new = nullptr;
  const void* v_new = nullptr;
  int64_t k_new_batch_stride = 0, k_new_row_stride = 0, k_new_head_stride = 0;
  int64_t v_new_batch_stride = 0, v_new_row_stride = 0, v_new_head_stride = 0;

  // Rotary of the new q and k (style 0: none; 1: half; 2: interleaved).
  int rotary_style = 0, rotary_dim = 0;
  const float* rotary_cos = nullptr;
  const float* rotary_sin = nullptr;
  int64_t cos_row_stride = 0, sin_row_stride = 0;

  // Split partial states (num_splits > 1), in the workspace:
  // o [split][b][i][hq][head_dim] and lse [split][b][hq][i], float32.
  float* partial_o = nullptr;
  float* partial_lse = nullptr;

  int batch = 0, seqlen_q = 0, heads_q = 0, heads_kv = 0, group_size = 1, head_dim = 0;
  int num_splits = 1;
  // 1 (sm90, tensor-core kernel): the splits of one (sequence, KV head, row
  // chunk) run as one thread-block cluster, x = chunk * num_splits + split,
  // and merge through distributed shared memory; no partials, no merge kernel.
  int cluster_merge = 0;
  // > 0: every row's keys start at key 0 (no left window, no chunk), the
  // cache is contiguous or in pages of 16k keys, and a sequence can hold
  // this many keys, the length the splits were planned for: the first tiles
  // are copied for it before the sequence's own length is read.
  int early_copy_keys = 0;
  int num_pages = 0;  // paged: pages in the cache (an early copy's page is clamped to it)
  int window_left = -1, window_right = -1;  // < 0: unbounded
  int prefix = 0;  // keys below it are seen by every query (prefix-LM)
  int chunk = 0;   // > 0: keys in the query position's chunk only
  // Scores in base 2: s * scale_log2 (no softcap), or with a softcap
  // log2(e) * cap * tanh(s * softcap_inv_scale).
  float scale_log2 = 0.f;
  float softcap = 0.f;
  float softcap_inv_scale = 0.f;
};

}  // namespace fastattn::cuda
