// fastattn C++ API: value types and builders over the C ABI (one
// implementation, two front doors). Nothing here throws; every call returns a
// Status that carries the library's message.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <vector>

#include "fastattn/fastattn.h"

namespace fastattn {

class [[nodiscard]] Result {
 public:
  Result() = default;
  explicit Result(fa_status code) : code_(code), message_(code ? fa_last_error() : "") {}
  bool ok() const { return code_ == FA_STATUS_OK; }
  explicit operator bool() const { return ok(); }
  fa_status code() const { return code_; }
  const std::string& message() const { return message_; }

 private:
  fa_status code_ = FA_STATUS_OK;
  std::string message_;
};

// A tensor view. Strides are in elements; the default is row-major.
inline fa_tensor tensor(void* data, fa_dtype dtype, std::initializer_list<int64_t> shape) {
  fa_tensor t{};
  t.data = data;
  t.dtype = dtype;
  t.ndim = static_cast<int32_t>(shape.size());
  int i = 0;
  for (int64_t s : shape) t.shape[i++] = s;
  int64_t stride = 1;
  for (int d = t.ndim - 1; d >= 0; --d) {
    t.strides[d] = stride;
    stride *= t.shape[d];
  }
  return t;
}

inline fa_tensor tensor(void* data, fa_dtype dtype, std::initializer_list<int64_t> shape,
                        std::initializer_list<int64_t> strides) {
  fa_tensor t = tensor(data, dtype, shape);
  int i = 0;
  for (int64_t s : strides) t.strides[i++] = s;
  return t;
}

namespace mask {
inline fa_mask none() { return fa_mask{}; }
inline fa_mask causal() {
  fa_mask m{};
  m.kind = FA_MASK_CAUSAL;
  return m;
}
// Keys within `left` before and `right` after the (bottom-right aligned)
// diagonal; a negative bound is unbounded.
inline fa_mask sliding_window(int64_t left, int64_t right) {
  fa_mask m{};
  m.kind = FA_MASK_SLIDING_WINDOW;
  m.window_left = left;
  m.window_right = right;
  return m;
}
// Causal after a bidirectional prefix: keys j < prefix_len are seen by every query.
inline fa_mask prefix_lm(int64_t prefix_len) {
  fa_mask m{};
  m.kind = FA_MASK_PREFIX_LM;
  m.prefix_len = prefix_len;
  return m;
}
// Query and key in the same chunk of chunk_size positions; causal inside it
// by default (Llama 4's chunked local attention).
inline fa_mask chunked(int64_t chunk_size, bool causal = true) {
  fa_mask m{};
  m.kind = causal ? FA_MASK_CAUSAL : FA_MASK_NONE;
  m.chunk_size = chunk_size;
  return m;
}
// Documents packed into one sequence: int32 segment ids per token
// ([B, Lq] / [B, Lk], or packed like q / k rows for varlen), non-decreasing.
inline fa_mask documents(const int32_t* q_ids, const int32_t* k_ids, bool causal = true) {
  fa_mask m{};
  m.kind = causal ? FA_MASK_CAUSAL : FA_MASK_NONE;
  m.q_segment_ids = q_ids;
  m.k_segment_ids = k_ids;
  return m;
}
// `m` with the pairs outside a compressed mask removed as well.
inline fa_mask with_block_mask(fa_mask m, const fa_block_mask* block) {
  m.block_mask = block;
  return m;
}
}  // namespace mask

struct RunOptions {
  fa_backend backend = FA_BACKEND_AUTO;
  int num_threads = 0;
  void* cuda_stream = nullptr;
  int cuda_path = 0;  // an fa_cuda_path; 0 = chosen by device capability

  fa_run_options to_c() const {
    fa_run_options o{};
    o.backend = backend;
    o.num_threads = num_threads;
    o.cuda_stream = cuda_stream;
    o.cuda_path = cuda_path;
    return o;
  }
};

// Owner of an fa_block_mask (fa_block_mask_create / _destroy). Move-only.
//
//   fastattn::BlockMask bm;
//   if (auto r = fastattn::BlockMask::from_dense(dense, &bm); !r) ...
//   attention.mask(fastattn::mask::with_block_mask(fastattn::mask::causal(), bm.get()));
class BlockMask {
 public:
  BlockMask() = default;
  BlockMask(const BlockMask&) = delete;
  BlockMask& operator=(const BlockMask&) = delete;
  BlockMask(BlockMask&& other) noexcept : mask_(other.mask_) { other.mask_ = nullptr; }
  BlockMask& operator=(BlockMask&& other) noexcept {
    if (this != &other) {
      fa_block_mask_destroy(mask_);
      mask_ = other.mask_;
      other.mask_ = nullptr;
    }
    return *this;
  }
  ~BlockMask() { fa_block_mask_destroy(mask_); }

  // From a bool [Bm, Hm, Lq, Lk] tensor; nonzero = allowed.
  static Result from_dense(fa_tensor dense, BlockMask* out, int64_t block_q = 0,
                           int64_t block_k = 0, const RunOptions& options = {}) {
    fa_block_mask_args a{};
    a.dense = dense;
    a.block_q = block_q;
    a.block_k = block_k;
    return create(a, options, out);
  }
  // From a bool [Bm, Hm, ceil(Lq / block_q), ceil(Lk / block_k)] tensor of
  // whole blocks; nonzero = FULL, 0 = EMPTY.
  static Result from_blocks(fa_tensor blocks, int64_t seqlen_q, int64_t seqlen_k, BlockMask* out,
                            int64_t block_q = 0, int64_t block_k = 0,
                            const RunOptions& options = {}) {
    fa_block_mask_args a{};
    a.blocks = blocks;
    a.seqlen_q = seqlen_q;
    a.seqlen_k = seqlen_k;
    a.block_q = block_q;
    a.block_k = block_k;
    return create(a, options, out);
  }

  const fa_block_mask* get() const { return mask_; }
  explicit operator bool() const { return mask_ != nullptr; }
  // Shape, block counts and memory; all zero for an empty BlockMask.
  fa_block_mask_info info() const {
    fa_block_mask_info i{};
    if (mask_ != nullptr) (void)fa_block_mask_get_info(mask_, &i);
    return i;
  }

 private:
  // `out` changes only on success.
  static Result create(const fa_block_mask_args& a, const RunOptions& options, BlockMask* out) {
    const fa_run_options o = options.to_c();
    fa_block_mask* m = nullptr;
    const fa_status s = fa_block_mask_create(&a, &o, out ? &m : nullptr);
    if (s == FA_STATUS_OK) {
      fa_block_mask_destroy(out->mask_);
      out->mask_ = m;
    }
    return Result(s);
  }

  fa_block_mask* mask_ = nullptr;
};

// O = softmax(scale * Q K^T, mask) V. See fastattn.h for shapes.
class Attention {
 public:
  Attention(fa_tensor q, fa_tensor k, fa_tensor v, fa_tensor out) {
    args_.q = q;
    args_.k = k;
    args_.v = v;
    args_.out = out;
  }
  Attention& lse(fa_tensor t) { args_.lse = t; return *this; }
  Attention& mask(fa_mask m) { args_.mask = m; return *this; }
  Attention& scale(float s) { args_.softmax_scale = s; return *this; }
  Attention& softcap(float c) { args_.softcap = c; return *this; }
  Attention& varlen(const int32_t* cu_seqlens_q, const int32_t* cu_seqlens_k, int64_t num_seqs) {
    args_.cu_seqlens_q = cu_seqlens_q;
    args_.cu_seqlens_k = cu_seqlens_k;
    args_.num_seqs = num_seqs;
    return *this;
  }
  const fa_attention_args& args() const { return args_; }

  Result run(const RunOptions& options = {}) const {
    const fa_run_options o = options.to_c();
    return Result(fa_attention_forward(&args_, &o));
  }
  Result supported(const RunOptions& options = {}) const {
    const fa_run_options o = options.to_c();
    return Result(fa_attention_supported(&args_, &o));
  }

 private:
  fa_attention_args args_{};
};

// New queries against a paged KV cache. See fastattn.h for shapes.
class PagedAttention {
 public:
  PagedAttention(fa_tensor q, fa_tensor k_cache, fa_tensor v_cache, fa_tensor out) {
    args_.q = q;
    args_.k_cache = k_cache;
    args_.v_cache = v_cache;
    args_.out = out;
  }
  PagedAttention& pages(const int32_t* page_table, int64_t max_pages_per_seq,
                        int64_t page_table_stride, const int32_t* seq_lens_k) {
    args_.page_table = page_table;
    args_.max_pages_per_seq = max_pages_per_seq;
    args_.page_table_stride = page_table_stride;
    args_.seq_lens_k = seq_lens_k;
    return *this;
  }
  PagedAttention& lse(fa_tensor t) { args_.lse = t; return *this; }
  PagedAttention& mask(fa_mask m) { args_.mask = m; return *this; }
  PagedAttention& scale(float s) { args_.softmax_scale = s; return *this; }
  PagedAttention& softcap(float c) { args_.softcap = c; return *this; }
  const fa_paged_attention_args& args() const { return args_; }

  Result run(const RunOptions& options = {}) const {
    const fa_run_options o = options.to_c();
    return Result(fa_paged_attention(&args_, &o));
  }

 private:
  fa_paged_attention_args args_{};
};

// One decoding step over a KV cache (contiguous unless paged()), planned once
// and run many times. See fastattn.h for shapes.
//
//   fastattn::Decode step(q, k_cache, v_cache, out);
//   step.cache_seqlens(lens).paged(table, max_pages, max_pages).append(k_new, v_new);
//   fa_decode_plan plan;
//   if (auto r = step.plan(&plan); !r) ...
//   step.run(plan, workspace, plan.workspace_bytes);   // every step
class Decode {
 public:
  Decode(fa_tensor q, fa_tensor k_cache, fa_tensor v_cache, fa_tensor out) {
    args_.q = q;
    args_.k_cache = k_cache;
    args_.v_cache = v_cache;
    args_.out = out;
  }
  // k_cache / v_cache are pages [num_pages, page_size, Hkv, D] behind
  // `page_table` [B, max_pages_per_seq] (row stride page_table_stride).
  Decode& paged(const int32_t* page_table, int64_t max_pages_per_seq, int64_t page_table_stride) {
    args_.page_table = page_table;
    args_.max_pages_per_seq = max_pages_per_seq;
    args_.page_table_stride = page_table_stride;
    return *this;
  }
  // Keys already in each sequence's cache, int32 [B].
  Decode& cache_seqlens(const int32_t* lens) { args_.cache_seqlens = lens; return *this; }
  // K/V of the Lq new tokens, written to the cache before attention.
  Decode& append(fa_tensor k_new, fa_tensor v_new) {
    args_.k_new = k_new;
    args_.v_new = v_new;
    return *this;
  }
  // Rotary embedding of q and k_new: tables float32 [max_position, dim / 2].
  Decode& rotary(fa_rotary_style style, int32_t dim, fa_tensor cos, fa_tensor sin) {
    args_.rotary_style = style;
    args_.rotary_dim = dim;
    args_.rotary_cos = cos;
    args_.rotary_sin = sin;
    return *this;
  }
  Decode& lse(fa_tensor t) { args_.lse = t; return *this; }
  Decode& mask(fa_mask m) { args_.mask = m; return *this; }
  Decode& scale(float s) { args_.softmax_scale = s; return *this; }
  Decode& softcap(float c) { args_.softcap = c; return *this; }
  Decode& max_seqlen_k(int64_t n) { args_.max_seqlen_k = n; return *this; }
  Decode& num_splits(int32_t n) { args_.num_splits = n; return *this; }
  const fa_decode_args& args() const { return args_; }

  Result plan(fa_decode_plan* plan, const RunOptions& options = {}) const {
    const fa_run_options o = options.to_c();
    return Result(fa_plan_decode(&args_, &o, plan));
  }
  Result run(const fa_decode_plan& plan, void* workspace = nullptr, uint64_t workspace_bytes = 0,
             const RunOptions& options = {}) const {
    const fa_run_options o = options.to_c();
    return Result(fa_run_decode(&args_, &plan, workspace, workspace_bytes, &o));
  }

 private:
  fa_decode_args args_{};
};

// Exact merge of partial states over disjoint key sets.
inline Result merge_states(std::span<const fa_tensor> outs, std::span<const fa_tensor> lses,
                           fa_tensor out, fa_tensor lse = {}, const RunOptions& options = {}) {
  fa_merge_args a{};
  a.num_states = static_cast<int32_t>(outs.size() == lses.size() ? outs.size() : 0);
  a.outs = outs.data();
  a.lses = lses.data();
  a.out = out;
  a.lse = lse;
  const fa_run_options o = options.to_c();
  return Result(fa_merge_states(&a, &o));
}

inline std::string version() { return fa_version_string(); }
inline bool backend_available(fa_backend b) { return fa_backend_available(b) != 0; }

}  // namespace fastattn
