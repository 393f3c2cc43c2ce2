#include "api/build_params.h"

#include <cmath>
#include <sstream>
#include <string>

#include "api/block_mask.h"
#include "api/gpu_bridge.h"
#include "api/tensor_checks.h"

namespace fastattn {
namespace {

std::string str(const std::ostringstream& s) { return s.str(); }

Status check_head_dim(const char* name, int64_t d) {
  if (d >= 8 && d <= FA_MAX_HEAD_DIM && d % 8 == 0) return Status::ok();
  std::ostringstream m;
  m << name << ": head dim D = " << d << " is not supported; allowed: multiples of 8 from 8 to "
    << FA_MAX_HEAD_DIM;
  return Status::invalid(str(m));
}

Status check_heads(int64_t hq, int64_t hkv) {
  if (hq >= 1 && hkv >= 1 && hq % hkv == 0) return Status::ok();
  std::ostringstream m;
  m << "k/v: number of KV heads Hkv = " << hkv << " must be >= 1 and divide the number of query "
    << "heads Hq = " << hq << " (MHA: Hkv = Hq; GQA: Hq % Hkv == 0; MQA: Hkv = 1)";
  return Status::invalid(str(m));
}

Status check_scale_and_softcap(float scale, float softcap, int64_t head_dim, AttentionParams* p) {
  if (!std::isfinite(scale)) {
    return Status::invalid("softmax_scale: must be finite (0 selects 1/sqrt(D))");
  }
  if (!std::isfinite(softcap) || softcap < 0.0f) {
    std::ostringstream m;
    m << "softcap: " << softcap << " is not allowed; use 0 (off) or a finite value > 0";
    return Status::invalid(str(m));
  }
  p->scale = scale != 0.0f ? scale : static_cast<float>(1.0 / std::sqrt(double(head_dim)));
  p->softcap = softcap;
  return Status::ok();
}

Status check_same_dtype(const fa_tensor& q, const fa_tensor& t, const char* name) {
  if (t.dtype == q.dtype) return Status::ok();
  std::ostringstream m;
  m << name << ": dtype is " << dtype_name(t.dtype) << " but q is " << dtype_name(q.dtype)
    << "; q, k, v and out must share one dtype";
  return Status::invalid(str(m));
}

// Fills the LSE pointer and strides when the optional tensor is present.
Status take_lse(const fa_tensor& lse, std::initializer_list<int64_t> shape, const char* dims,
                AttentionParams* p) {
  if (lse.data == nullptr) return Status::ok();
  FA_RETURN_IF_ERROR(check_tensor("lse", lse, static_cast<int>(shape.size())));
  FA_RETURN_IF_ERROR(check_dtype("lse", lse, FA_DTYPE_FLOAT32));
  FA_RETURN_IF_ERROR(check_shape("lse", lse, shape, dims));
  p->lse = static_cast<float*>(lse.data);
  if (shape.size() == 3) {
    p->lse_batch_stride = lse.strides[0];
    p->lse_head_stride = lse.strides[1];
    p->lse_row_stride = lse.strides[2];
  } else {
    p->lse_head_stride = lse.strides[0];
    p->lse_row_stride = lse.strides[1];
  }
  return Status::ok();
}

Status check_cu_seqlens(const char* name, const int32_t* cu, int64_t num_seqs, int64_t total,
                        int64_t* max_len) {
  *max_len = 0;
  if (cu[0] != 0) {
    std::ostringstream m;
    m << name << "[0] is " << cu[0] << "; cumulative offsets must start at 0";
    return Status::invalid(str(m));
  }
  for (int64_t i = 0; i < num_seqs; ++i) {
    const int64_t len = int64_t(cu[i + 1]) - cu[i];
    if (len < 0) {
      std::ostringstream m;
      m << name << " must be non-decreasing; " << name << "[" << i + 1 << "] = " << cu[i + 1]
        << " < " << name << "[" << i << "] = " << cu[i];
      return Status::invalid(str(m));
    }
    if (len > *max_len) *max_len = len;
  }
  if (cu[num_seqs] > total) {
    std::ostringstream m;
    m << name << "[num_seqs] = " << cu[num_seqs] << " exceeds the " << total
      << " packed rows of the tensor";
    return Status::invalid(str(m));
  }
  return Status::ok();
}

}  // namespace

Status build_mask_params(const fa_mask& mask, MaskUse use, MaskParams* out) {
  for (int i = 0; i < 4; ++i) {
    if (mask.reserved[i] != 0) return Status::invalid("mask.reserved: must be zero");
  }
  if (mask.reserved_ptr[0] != nullptr) return Status::invalid("mask.reserved_ptr: must be NULL");
  MaskParams m;
  switch (mask.kind) {
    case FA_MASK_NONE:
      break;
    case FA_MASK_CAUSAL:
      m.right = 0;
      break;
    case FA_MASK_SLIDING_WINDOW:
      m.left = mask.window_left < 0 ? MaskParams::kUnbounded : mask.window_left;
      m.right = mask.window_right < 0 ? MaskParams::kUnbounded : mask.window_right;
      if (m.left > MaskParams::kUnbounded) m.left = MaskParams::kUnbounded;
      if (m.right > MaskParams::kUnbounded) m.right = MaskParams::kUnbounded;
      break;
    case FA_MASK_PREFIX_LM:
      if (mask.prefix_len < 0 || mask.prefix_len > INT32_MAX) {
        std::ostringstream s;
        s << "mask.prefix_len: " << mask.prefix_len << "; allowed: 0 to " << INT32_MAX;
        return Status::invalid(str(s));
      }
      m.right = 0;
      m.prefix = mask.prefix_len;
      break;
    default: {
      std::ostringstream s;
      s << "mask.kind: " << static_cast<int>(mask.kind)
        << " is unknown; allowed: FA_MASK_NONE, FA_MASK_CAUSAL, FA_MASK_SLIDING_WINDOW, "
           "FA_MASK_PREFIX_LM";
      return Status::invalid(str(s));
    }
  }
  if (mask.kind != FA_MASK_PREFIX_LM && mask.prefix_len != 0) {
    return Status::invalid("mask.prefix_len: must be 0 unless mask.kind is FA_MASK_PREFIX_LM");
  }
  if (mask.chunk_size < 0 || mask.chunk_size > INT32_MAX) {
    std::ostringstream s;
    s << "mask.chunk_size: " << mask.chunk_size << "; allowed: 0 (off) or 1 to " << INT32_MAX;
    return Status::invalid(str(s));
  }
  m.chunk = mask.chunk_size;
  if ((mask.q_segment_ids == nullptr) != (mask.k_segment_ids == nullptr)) {
    return Status::invalid(
        "mask.q_segment_ids / mask.k_segment_ids: documents need both (or neither)");
  }
  if (use == MaskUse::kCache && mask.q_segment_ids != nullptr) {
    return Status::invalid("mask.q_segment_ids: documents are not supported over a KV cache "
                           "(paged attention, decode); allowed: NULL");
  }
  if (use == MaskUse::kCache && mask.block_mask != nullptr) {
    return Status::invalid("mask.block_mask: block masks are not supported over a KV cache "
                           "(paged attention, decode); allowed: NULL");
  }
  m.q_segments = mask.q_segment_ids;
  m.k_segments = mask.k_segment_ids;
  if (mask.block_mask != nullptr) m.block = &block_mask_view(mask.block_mask);
  *out = m;
  return Status::ok();
}

namespace {

// Varlen maxima: required where offsets are read on the device (they size the
// grid), else checked against what the offsets say.
Status check_max_seqlen(const char* name, int64_t given, int64_t actual, OffsetsAccess offsets) {
  if (offsets == OffsetsAccess::kDevice) {
    if (given >= 1 && given <= INT32_MAX) return Status::ok();
    std::ostringstream m;
    m << name << ": " << given << "; the CUDA backend reads cu_seqlens on the GPU and needs the "
      << "longest sequence: allowed 1 to " << INT32_MAX;
    return Status::invalid(str(m));
  }
  if (given == 0 || given >= actual) return Status::ok();
  std::ostringstream m;
  m << name << ": " << given << " is less than the longest sequence in cu_seqlens (" << actual
    << "); allowed: 0 (computed) or at least " << actual;
  return Status::invalid(str(m));
}

}  // namespace

namespace {

// Segment ids (read here when they are on the host) and a block mask's
// plane and side, against the validated shapes.
Status check_mask_inputs(const fa_mask& mask, OffsetsAccess offsets, const AttentionParams& p) {
  if (mask.q_segment_ids != nullptr && offsets == OffsetsAccess::kHost) {
    for (const int32_t* ids : {mask.q_segment_ids, mask.k_segment_ids}) {
      if (gpu::locate(ids).kind != gpu::MemoryKind::kDevice) continue;
      return Status::invalid(std::string(ids == mask.q_segment_ids ? "mask.q_segment_ids"
                                                                    : "mask.k_segment_ids") +
                             ": is in GPU memory; the CPU backends read host memory");
    }
    for (int64_t b = 0; b < p.batch; ++b) {
      int64_t first = 0, lq = 0;
      p.q_span(b, &first, &lq);
      const int64_t lk = p.k_len(b);
      const int32_t* qs = mask.q_segment_ids + (p.cu_seqlens_q ? first : b * p.seqlen_q);
      const int32_t* ks = mask.k_segment_ids + (p.cu_seqlens_k ? p.cu_seqlens_k[b] : b * p.seqlen_k);
      for (int side = 0; side < 2; ++side) {
        const int32_t* ids = side == 0 ? qs : ks;
        const int64_t n = side == 0 ? lq : lk;
        for (int64_t i = 1; i < n; ++i) {
          if (ids[i] >= ids[i - 1]) continue;
          std::ostringstream m;
          m << (side == 0 ? "mask.q_segment_ids" : "mask.k_segment_ids") << ": sequence " << b
            << " decreases at token " << i << " (" << ids[i - 1] << " then " << ids[i]
            << "); segment ids must be non-decreasing within each sequence";
          return Status::invalid(str(m));
        }
      }
    }
  }
  if (mask.block_mask == nullptr) return Status::ok();
  const fa_block_mask* bm = mask.block_mask;
  const BlockMaskView& v = bm->view;
  if (p.cu_seqlens_q != nullptr) {
    return Status::invalid("mask.block_mask: not supported with cu_seqlens (varlen); block masks "
                           "cover padded batches");
  }
  if ((v.batch != 1 && v.batch != p.batch) || (v.heads != 1 && v.heads != p.heads_q) ||
      v.seqlen_q != p.seqlen_q || v.seqlen_k != p.seqlen_k) {
    std::ostringstream m;
    m << "mask.block_mask: covers [" << v.batch << ", " << v.heads << ", " << v.seqlen_q << ", "
      << v.seqlen_k << "]; this call needs [1 or " << p.batch << ", 1 or " << p.heads_q << ", "
      << p.seqlen_q << ", " << p.seqlen_k << "] ([B, Hq, Lq, Lk], 1 = broadcast)";
    return Status::invalid(str(m));
  }
  const bool device_run = offsets == OffsetsAccess::kDevice;
  if (bm->on_device != device_run) {
    return Status::invalid(bm->on_device
                               ? "mask.block_mask: lives on a GPU; a CPU backend needs one built "
                                 "from a host tensor"
                               : "mask.block_mask: lives in host memory; the CUDA backend needs "
                                 "one built from a device tensor");
  }
  if (device_run && gpu::locate(p.q).device != bm->device) {
    std::ostringstream m;
    m << "mask.block_mask: lives on GPU " << bm->device << "; q is on GPU "
      << gpu::locate(p.q).device << "; build the mask on the GPU that runs the call";
    return Status::invalid(str(m));
  }
  return Status::ok();
}

}  // namespace

Status build_attention_params(const fa_attention_args& a, OffsetsAccess offsets,
                              AttentionParams* out) {
  AttentionParams p;
  const bool varlen = a.cu_seqlens_q != nullptr || a.cu_seqlens_k != nullptr;
  if (varlen && (a.cu_seqlens_q == nullptr || a.cu_seqlens_k == nullptr)) {
    return Status::invalid(
        "cu_seqlens_q / cu_seqlens_k: variable-length batches need both (or neither)");
  }
  const int ndim = varlen ? 3 : 4;
  FA_RETURN_IF_ERROR(check_tensor("q", a.q, ndim));
  FA_RETURN_IF_ERROR(check_tensor("k", a.k, ndim));
  FA_RETURN_IF_ERROR(check_tensor("v", a.v, ndim));
  FA_RETURN_IF_ERROR(check_tensor("out", a.out, ndim));
  FA_RETURN_IF_ERROR(check_same_dtype(a.q, a.k, "k"));
  FA_RETURN_IF_ERROR(check_same_dtype(a.q, a.v, "v"));
  FA_RETURN_IF_ERROR(check_same_dtype(a.q, a.out, "out"));
  p.dtype = to_dtype(a.q.dtype);

  if (!varlen) {
    const int64_t b = a.q.shape[0], lq = a.q.shape[1], hq = a.q.shape[2], d = a.q.shape[3];
    const int64_t lk = a.k.shape[1], hkv = a.k.shape[2];
    if (b < 1 || lq < 1) {
      std::ostringstream m;
      m << "q: shape " << shape_string(a.q) << " needs B >= 1 and Lq >= 1";
      return Status::invalid(str(m));
    }
    FA_RETURN_IF_ERROR(check_head_dim("q", d));
    if (lq > INT32_MAX || lk > INT32_MAX) {
      std::ostringstream m;
      m << "q/k: sequence lengths Lq = " << lq << ", Lk = " << lk << " must be at most "
        << INT32_MAX << " (positions are 32-bit, as in cu_seqlens)";
      return Status::invalid(str(m));
    }
    FA_RETURN_IF_ERROR(check_shape("k", a.k, {b, lk, hkv, d}, "[B, Lk, Hkv, D]"));
    FA_RETURN_IF_ERROR(check_shape("v", a.v, {b, lk, hkv, d}, "[B, Lk, Hkv, D] (like k)"));
    FA_RETURN_IF_ERROR(check_shape("out", a.out, {b, lq, hq, d}, "[B, Lq, Hq, D] (like q)"));
    FA_RETURN_IF_ERROR(check_heads(hq, hkv));
    FA_RETURN_IF_ERROR(take_lse(a.lse, {b, hq, lq}, "[B, Hq, Lq]", &p));
    p.batch = b;
    p.seqlen_q = lq;
    p.seqlen_k = lk;
    p.heads_q = hq;
    p.heads_kv = hkv;
    p.head_dim = d;
    p.q_batch_stride = a.q.strides[0];
    p.out_batch_stride = a.out.strides[0];
    p.kv.k_batch_stride = a.k.strides[0];
    p.kv.v_batch_stride = a.v.strides[0];
  } else {
    if (a.num_seqs < 1) {
      std::ostringstream m;
      m << "num_seqs: " << a.num_seqs << "; variable-length batches need num_seqs >= 1";
      return Status::invalid(str(m));
    }
    const int64_t total_q = a.q.shape[0], hq = a.q.shape[1], d = a.q.shape[2];
    const int64_t total_k = a.k.shape[0], hkv = a.k.shape[1];
    FA_RETURN_IF_ERROR(check_head_dim("q", d));
    FA_RETURN_IF_ERROR(check_shape("k", a.k, {total_k, hkv, d}, "[total_k, Hkv, D]"));
    FA_RETURN_IF_ERROR(check_shape("v", a.v, {total_k, hkv, d}, "[total_k, Hkv, D] (like k)"));
    FA_RETURN_IF_ERROR(check_shape("out", a.out, {total_q, hq, d}, "[total_q, Hq, D] (like q)"));
    FA_RETURN_IF_ERROR(check_heads(hq, hkv));
    int64_t max_q = a.max_seqlen_q, max_k = a.max_seqlen_k;
    if (offsets == OffsetsAccess::kHost) {
      FA_RETURN_IF_ERROR(check_cu_seqlens("cu_seqlens_q", a.cu_seqlens_q, a.num_seqs, total_q, &max_q));
      FA_RETURN_IF_ERROR(check_cu_seqlens("cu_seqlens_k", a.cu_seqlens_k, a.num_seqs, total_k, &max_k));
    }
    FA_RETURN_IF_ERROR(check_max_seqlen("max_seqlen_q", a.max_seqlen_q, max_q, offsets));
    FA_RETURN_IF_ERROR(check_max_seqlen("max_seqlen_k", a.max_seqlen_k, max_k, offsets));
    FA_RETURN_IF_ERROR(take_lse(a.lse, {hq, total_q}, "[Hq, total_q]", &p));
    p.batch = a.num_seqs;
    p.seqlen_q = max_q;
    p.seqlen_k = max_k;
    p.heads_q = hq;
    p.heads_kv = hkv;
    p.head_dim = d;
    p.cu_seqlens_q = a.cu_seqlens_q;
    p.cu_seqlens_k = a.cu_seqlens_k;
    p.total_q = total_q;
    p.total_k = total_k;
  }
  const int r = ndim - 3;  // index of the row dim
  p.q = a.q.data;
  p.q_row_stride = a.q.strides[r];
  p.q_head_stride = a.q.strides[r + 1];
  p.out = a.out.data;
  p.out_row_stride = a.out.strides[r];
  p.out_head_stride = a.out.strides[r + 1];
  p.kv.k = a.k.data;
  p.kv.k_row_stride = a.k.strides[r];
  p.kv.k_head_stride = a.k.strides[r + 1];
  p.kv.v = a.v.data;
  p.kv.v_row_stride = a.v.strides[r];
  p.kv.v_head_stride = a.v.strides[r + 1];
  FA_RETURN_IF_ERROR(build_mask_params(a.mask, MaskUse::kAttention, &p.mask));
  FA_RETURN_IF_ERROR(check_mask_inputs(a.mask, offsets, p));
  FA_RETURN_IF_ERROR(check_scale_and_softcap(a.softmax_scale, a.softcap, p.head_dim, &p));
  *out = p;
  return Status::ok();
}

Status build_merge_params(const fa_merge_args& a, MergeParams* out) {
  if (a.num_states < 1 || a.num_states > MergeParams::kMaxStates) {
    std::ostringstream m;
    m << "num_states: " << a.num_states << "; allowed: 1 to " << MergeParams::kMaxStates;
    return Status::invalid(str(m));
  }
  if (a.outs == nullptr || a.lses == nullptr) {
    return Status::invalid("outs / lses: arrays of num_states tensors are required (NULL given)");
  }
  FA_RETURN_IF_ERROR(check_tensor("out", a.out, 4));
  const int64_t b = a.out.shape[0], l = a.out.shape[1], h = a.out.shape[2], d = a.out.shape[3];
  MergeParams p;
  p.num_states = a.num_states;
  p.batch = b;
  p.seqlen = l;
  p.heads = h;
  p.head_dim = d;
  for (int i = 0; i < a.num_states; ++i) {
    const std::string o_name = "outs[" + std::to_string(i) + "]";
    const std::string l_name = "lses[" + std::to_string(i) + "]";
    FA_RETURN_IF_ERROR(check_tensor(o_name.c_str(), a.outs[i], 4));
    FA_RETURN_IF_ERROR(check_shape(o_name.c_str(), a.outs[i], {b, l, h, d}, "[B, L, H, D] (like out)"));
    FA_RETURN_IF_ERROR(check_tensor(l_name.c_str(), a.lses[i], 3));
    FA_RETURN_IF_ERROR(check_dtype(l_name.c_str(), a.lses[i], FA_DTYPE_FLOAT32));
    FA_RETURN_IF_ERROR(check_shape(l_name.c_str(), a.lses[i], {b, h, l}, "[B, H, L]"));
    p.o[i] = a.outs[i].data;
    p.o_dtype[i] = to_dtype(a.outs[i].dtype);
    for (int k = 0; k < 3; ++k) {
      p.o_strides[i][k] = a.outs[i].strides[k];
      p.lse_strides[i][k] = a.lses[i].strides[k];
    }
    p.lse[i] = static_cast<const float*>(a.lses[i].data);
  }
  p.out = a.out.data;
  p.out_dtype = to_dtype(a.out.dtype);
  for (int k = 0; k < 3; ++k) p.out_strides[k] = a.out.strides[k];
  if (a.lse.data != nullptr) {
    FA_RETURN_IF_ERROR(check_tensor("lse", a.lse, 3));
    FA_RETURN_IF_ERROR(check_dtype("lse", a.lse, FA_DTYPE_FLOAT32));
    FA_RETURN_IF_ERROR(check_shape("lse", a.lse, {b, h, l}, "[B, H, L]"));
    p.out_lse = static_cast<float*>(a.lse.data);
    for (int k = 0; k < 3; ++k) p.out_lse_strides[k] = a.lse.strides[k];
  }
  *out = p;
  return Status::ok();
}

namespace {

// Positions and key counts are int32 (cache_seqlens), so is a cache's capacity.
Status check_capacity(const char* what, int64_t capacity, bool overflowed) {
  if (!overflowed && capacity <= INT32_MAX) return Status::ok();
  std::ostringstream m;
  m << what << ": a sequence's cache would hold more than " << INT32_MAX
    << " keys; positions are 32-bit, as in cache_seqlens";
  return Status::invalid(str(m));
}

// Paged cache: k_cache, v_cache [num_pages, page_size, Hkv, D] behind a page
// table of max_pages_per_seq entries per sequence (row stride
// page_table_stride). Fills the layout and the keys one sequence can hold.
Status take_paged_layout(const fa_tensor& k_cache, const fa_tensor& v_cache,
                         const int32_t* page_table, int64_t page_table_stride,
                         int64_t max_pages_per_seq, int64_t batch, int64_t d, KVLayout* kv,
                         int64_t* capacity) {
  const int64_t num_pages = k_cache.shape[0], page_size = k_cache.shape[1];
  const int64_t hkv = k_cache.shape[2];
  if (num_pages < 1 || page_size < 1) {
    std::ostringstream m;
    m << "k_cache: shape " << shape_string(k_cache) << " needs num_pages >= 1 and page_size >= 1";
    return Status::invalid(str(m));
  }
  FA_RETURN_IF_ERROR(check_shape("k_cache", k_cache, {num_pages, page_size, hkv, d},
                                 "[num_pages, page_size, Hkv, D] (paged: page_table is set)"));
  FA_RETURN_IF_ERROR(check_shape("v_cache", v_cache, {num_pages, page_size, hkv, d},
                                 "[num_pages, page_size, Hkv, D] (like k_cache)"));
  int64_t table_extent = 0;
  if (max_pages_per_seq < 1 || page_table_stride < max_pages_per_seq ||
      __builtin_mul_overflow(batch - 1, page_table_stride, &table_extent)) {
    std::ostringstream m;
    m << "max_pages_per_seq = " << max_pages_per_seq << ", page_table_stride = "
      << page_table_stride << ": need max_pages_per_seq >= 1 and page_table_stride >= "
      << "max_pages_per_seq (and the table of B rows within int64 offsets)";
    return Status::invalid(str(m));
  }
  const bool overflowed = __builtin_mul_overflow(max_pages_per_seq, page_size, capacity);
  FA_RETURN_IF_ERROR(check_capacity("max_pages_per_seq * page_size", *capacity, overflowed));
  kv->k = k_cache.data;
  kv->v = v_cache.data;
  kv->k_page_stride = k_cache.strides[0];
  kv->k_row_stride = k_cache.strides[1];
  kv->k_head_stride = k_cache.strides[2];
  kv->v_page_stride = v_cache.strides[0];
  kv->v_row_stride = v_cache.strides[1];
  kv->v_head_stride = v_cache.strides[2];
  kv->page_table = page_table;
  kv->page_table_stride = page_table_stride;
  kv->page_size = page_size;
  kv->num_pages = num_pages;
  return Status::ok();
}

// The page-table entries sequence b uses for `keys` keys all name a page of
// the cache (checked where the table is read on the host).
Status check_pages_used(const KVLayout& kv, int64_t b, int64_t keys, int64_t num_pages) {
  const int64_t used_pages = (keys + kv.page_size - 1) / kv.page_size;
  for (int64_t pg = 0; pg < used_pages; ++pg) {
    const int64_t entry = kv.page_table[b * kv.page_table_stride + pg];
    if (entry < 0 || entry >= num_pages) {
      std::ostringstream m;
      m << "page_table[" << b << "][" << pg << "] = " << entry << "; allowed: 0 to "
        << num_pages - 1 << " (k_cache has " << num_pages << " pages; sequence " << b
        << " uses " << used_pages << ")";
      return Status::invalid(str(m));
    }
  }
  return Status::ok();
}

// Contiguous cache: k_cache, v_cache [B, capacity, Hkv, D].
Status take_contiguous_cache(const fa_decode_args& a, int64_t batch, int64_t d, DecodeParams* p) {
  if (a.max_pages_per_seq != 0 || a.page_table_stride != 0) {
    std::ostringstream m;
    m << "max_pages_per_seq = " << a.max_pages_per_seq << ", page_table_stride = "
      << a.page_table_stride << " but page_table is NULL (a contiguous cache): set page_table "
      << "for a paged cache, or leave both 0";
    return Status::invalid(str(m));
  }
  const int64_t capacity = a.k_cache.shape[1], hkv = a.k_cache.shape[2];
  FA_RETURN_IF_ERROR(check_shape("k_cache", a.k_cache, {batch, capacity, hkv, d},
                                 "[B, capacity, Hkv, D] (contiguous: page_table is NULL)"));
  FA_RETURN_IF_ERROR(check_shape("v_cache", a.v_cache, {batch, capacity, hkv, d},
                                 "[B, capacity, Hkv, D] (like k_cache)"));
  if (capacity < 1) {
    std::ostringstream m;
    m << "k_cache: shape " << shape_string(a.k_cache) << " needs capacity >= 1";
    return Status::invalid(str(m));
  }
  FA_RETURN_IF_ERROR(check_capacity("k_cache", capacity, false));
  p->capacity = capacity;
  KVLayout& kv = p->attn.kv;
  kv.k_batch_stride = a.k_cache.strides[0];
  kv.k_row_stride = a.k_cache.strides[1];
  kv.k_head_stride = a.k_cache.strides[2];
  kv.v_batch_stride = a.v_cache.strides[0];
  kv.v_row_stride = a.v_cache.strides[1];
  kv.v_head_stride = a.v_cache.strides[2];
  return Status::ok();
}

// k_new, v_new [B, Lq, Hkv, D], both or neither.
Status take_append(const fa_decode_args& a, DecodeParams* p) {
  if (a.k_new.data == nullptr && a.v_new.data == nullptr) return Status::ok();
  if (a.k_new.data == nullptr || a.v_new.data == nullptr) {
    return Status::invalid(
        "k_new / v_new: appending new tokens needs both the keys and the values (or neither)");
  }
  const AttentionParams& at = p->attn;
  const int64_t b = at.batch, lq = at.seqlen_q, hkv = at.heads_kv, d = at.head_dim;
  FA_RETURN_IF_ERROR(check_tensor("k_new", a.k_new, 4));
  FA_RETURN_IF_ERROR(check_tensor("v_new", a.v_new, 4));
  FA_RETURN_IF_ERROR(check_same_dtype(a.q, a.k_new, "k_new"));
  FA_RETURN_IF_ERROR(check_same_dtype(a.q, a.v_new, "v_new"));
  FA_RETURN_IF_ERROR(check_shape("k_new", a.k_new, {b, lq, hkv, d}, "[B, Lq, Hkv, D]"));
  FA_RETURN_IF_ERROR(check_shape("v_new", a.v_new, {b, lq, hkv, d}, "[B, Lq, Hkv, D] (like k_new)"));
  if (lq > p->capacity) {
    std::ostringstream m;
    m << "k_new: Lq = " << lq << " new tokens do not fit a cache of capacity " << p->capacity
      << " keys per sequence";
    return Status::invalid(str(m));
  }
  p->new_tokens = lq;
  p->k_new = a.k_new.data;
  p->k_new_batch_stride = a.k_new.strides[0];
  p->k_new_row_stride = a.k_new.strides[1];
  p->k_new_head_stride = a.k_new.strides[2];
  p->v_new = a.v_new.data;
  p->v_new_batch_stride = a.v_new.strides[0];
  p->v_new_row_stride = a.v_new.strides[1];
  p->v_new_head_stride = a.v_new.strides[2];
  return Status::ok();
}

// Rotary embedding of q and k_new: tables float32 [max_position, rotary_dim / 2].
Status take_rotary(const fa_decode_args& a, DecodeParams* p) {
  switch (a.rotary_style) {
    case FA_ROTARY_NONE:
    case FA_ROTARY_HALF:
    case FA_ROTARY_INTERLEAVED:
      break;
    default: {
      std::ostringstream m;
      m << "rotary_style: " << a.rotary_style << " is unknown; allowed: FA_ROTARY_NONE (0), "
        << "FA_ROTARY_HALF (1), FA_ROTARY_INTERLEAVED (2)";
      return Status::invalid(str(m));
    }
  }
  if (a.rotary_style == FA_ROTARY_NONE) {
    if (a.rotary_dim == 0 && a.rotary_cos.data == nullptr && a.rotary_sin.data == nullptr) {
      return Status::ok();
    }
    std::ostringstream m;
    m << "rotary_dim / rotary_cos / rotary_sin: set (rotary_dim = " << a.rotary_dim
      << ") while rotary_style is FA_ROTARY_NONE; choose FA_ROTARY_HALF or "
      << "FA_ROTARY_INTERLEAVED, or leave them 0 / NULL";
    return Status::invalid(str(m));
  }
  if (p->k_new == nullptr) {
    return Status::invalid(
        "rotary_style: rotary embedding needs k_new and v_new (q and the appended keys are "
        "rotated at positions cache_seqlens[b] + i; keys already in the cache stay as stored)");
  }
  const int64_t d = p->attn.head_dim, dim = a.rotary_dim;
  if (dim < 2 || dim > d || dim % 2 != 0) {
    std::ostringstream m;
    m << "rotary_dim: " << dim << "; allowed: even, from 2 to the head dim D = " << d;
    return Status::invalid(str(m));
  }
  const int64_t max_position = a.rotary_cos.shape[0];
  FA_RETURN_IF_ERROR(check_tensor("rotary_cos", a.rotary_cos, 2));
  FA_RETURN_IF_ERROR(check_dtype("rotary_cos", a.rotary_cos, FA_DTYPE_FLOAT32));
  FA_RETURN_IF_ERROR(check_shape("rotary_cos", a.rotary_cos, {max_position, dim / 2},
                                 "[max_position, rotary_dim / 2]"));
  if (max_position < 1) {
    return Status::invalid("rotary_cos: max_position (shape[0]) is 0; the table needs a row per "
                           "position, at least 1");
  }
  FA_RETURN_IF_ERROR(check_tensor("rotary_sin", a.rotary_sin, 2));
  FA_RETURN_IF_ERROR(check_dtype("rotary_sin", a.rotary_sin, FA_DTYPE_FLOAT32));
  FA_RETURN_IF_ERROR(check_shape("rotary_sin", a.rotary_sin, {max_position, dim / 2},
                                 "[max_position, rotary_dim / 2] (like rotary_cos)"));
  RotaryParams& r = p->rotary;
  r.style = a.rotary_style == FA_ROTARY_HALF ? RotaryStyle::kHalf : RotaryStyle::kInterleaved;
  r.dim = dim;
  r.cos = static_cast<const float*>(a.rotary_cos.data);
  r.sin = static_cast<const float*>(a.rotary_sin.data);
  r.cos_row_stride = a.rotary_cos.strides[0];
  r.sin_row_stride = a.rotary_sin.strides[0];
  r.max_position = max_position;
  return Status::ok();
}

// What cache_seqlens and page_table say, where the backend reads them on the
// host: every sequence fits its cache, every page it uses exists, and every
// rotated position has a row in the tables.
Status check_decode_contents(const DecodeParams& p, int64_t num_pages) {
  const KVLayout& kv = p.attn.kv;
  const char* capacity_is = kv.page_table ? "max_pages_per_seq * page_size" : "k_cache.shape[1]";
  for (int64_t b = 0; b < p.attn.batch; ++b) {
    const int64_t len = p.cache_seqlens[b];
    if (len < 0 || len + p.new_tokens > p.capacity) {
      std::ostringstream m;
      m << "cache_seqlens[" << b << "] = " << len;
      if (p.new_tokens > 0) m << " with Lq = " << p.new_tokens << " new tokens";
      if (len < 0) {
        m << " is negative";
      } else {
        m << " exceeds the cache capacity " << p.capacity << " (" << capacity_is << ")";
      }
      m << "; allowed: 0 to " << p.capacity - p.new_tokens;
      return Status::invalid(str(m));
    }
    if (kv.page_table) FA_RETURN_IF_ERROR(check_pages_used(kv, b, len + p.new_tokens, num_pages));
    if (p.rotary.style != RotaryStyle::kNone && len + p.new_tokens > p.rotary.max_position) {
      std::ostringstream m;
      m << "cache_seqlens[" << b << "] = " << len << " with Lq = " << p.new_tokens
        << " new tokens rotates positions up to " << len + p.new_tokens - 1
        << ", but rotary_cos / rotary_sin have max_position = " << p.rotary.max_position
        << " rows";
      return Status::invalid(str(m));
    }
  }
  return Status::ok();
}

}  // namespace

Status build_paged_attention_params(const fa_paged_attention_args& a, AttentionParams* out) {
  AttentionParams p;
  FA_RETURN_IF_ERROR(check_tensor("q", a.q, 4));
  FA_RETURN_IF_ERROR(check_tensor("k_cache", a.k_cache, 4));
  FA_RETURN_IF_ERROR(check_tensor("v_cache", a.v_cache, 4));
  FA_RETURN_IF_ERROR(check_tensor("out", a.out, 4));
  FA_RETURN_IF_ERROR(check_same_dtype(a.q, a.k_cache, "k_cache"));
  FA_RETURN_IF_ERROR(check_same_dtype(a.q, a.v_cache, "v_cache"));
  FA_RETURN_IF_ERROR(check_same_dtype(a.q, a.out, "out"));
  const int64_t b = a.q.shape[0], lq = a.q.shape[1], hq = a.q.shape[2], d = a.q.shape[3];
  const int64_t hkv = a.k_cache.shape[2];
  if (b < 1 || lq < 1) {
    std::ostringstream m;
    m << "q: shape " << shape_string(a.q) << " needs B >= 1 and Lq >= 1";
    return Status::invalid(str(m));
  }
  FA_RETURN_IF_ERROR(check_head_dim("q", d));
  if (a.page_table == nullptr) return Status::invalid("page_table: is NULL; a page table is required");
  if (a.seq_lens_k == nullptr) return Status::invalid("seq_lens_k: is NULL; key counts are required");
  int64_t capacity = 0;
  FA_RETURN_IF_ERROR(take_paged_layout(a.k_cache, a.v_cache, a.page_table, a.page_table_stride,
                                       a.max_pages_per_seq, b, d, &p.kv, &capacity));
  FA_RETURN_IF_ERROR(check_shape("out", a.out, {b, lq, hq, d}, "[B, Lq, Hq, D] (like q)"));
  FA_RETURN_IF_ERROR(check_heads(hq, hkv));
  FA_RETURN_IF_ERROR(take_lse(a.lse, {b, hq, lq}, "[B, Hq, Lq]", &p));
  const int64_t num_pages = a.k_cache.shape[0];
  int64_t max_k = 0;
  for (int64_t s = 0; s < b; ++s) {
    const int64_t len = a.seq_lens_k[s];
    if (len < 0 || len > capacity) {
      std::ostringstream m;
      m << "seq_lens_k[" << s << "] = " << len << "; allowed: 0 to max_pages_per_seq * page_size = "
        << capacity;
      return Status::invalid(str(m));
    }
    FA_RETURN_IF_ERROR(check_pages_used(p.kv, s, len, num_pages));
    if (len > max_k) max_k = len;
  }
  p.dtype = to_dtype(a.q.dtype);
  p.batch = b;
  p.seqlen_q = lq;
  p.seqlen_k = max_k;
  p.heads_q = hq;
  p.heads_kv = hkv;
  p.head_dim = d;
  p.q = a.q.data;
  p.q_batch_stride = a.q.strides[0];
  p.q_row_stride = a.q.strides[1];
  p.q_head_stride = a.q.strides[2];
  p.out = a.out.data;
  p.out_batch_stride = a.out.strides[0];
  p.out_row_stride = a.out.strides[1];
  p.out_head_stride = a.out.strides[2];
  p.seqlens_k = a.seq_lens_k;
  FA_RETURN_IF_ERROR(build_mask_params(a.mask, MaskUse::kCache, &p.mask));
  FA_RETURN_IF_ERROR(check_scale_and_softcap(a.softmax_scale, a.softcap, d, &p));
  *out = p;
  return Status::ok();
}

Status build_decode_params(const fa_decode_args& a, OffsetsAccess offsets, DecodeParams* out) {
  DecodeParams p;
  AttentionParams& at = p.attn;
  FA_RETURN_IF_ERROR(check_tensor("q", a.q, 4));
  FA_RETURN_IF_ERROR(check_tensor("k_cache", a.k_cache, 4));
  FA_RETURN_IF_ERROR(check_tensor("v_cache", a.v_cache, 4));
  FA_RETURN_IF_ERROR(check_tensor("out", a.out, 4));
  FA_RETURN_IF_ERROR(check_same_dtype(a.q, a.k_cache, "k_cache"));
  FA_RETURN_IF_ERROR(check_same_dtype(a.q, a.v_cache, "v_cache"));
  FA_RETURN_IF_ERROR(check_same_dtype(a.q, a.out, "out"));
  const int64_t b = a.q.shape[0], lq = a.q.shape[1], hq = a.q.shape[2], d = a.q.shape[3];
  const int64_t hkv = a.k_cache.shape[2];
  if (b < 1 || lq < 1) {
    std::ostringstream m;
    m << "q: shape " << shape_string(a.q) << " needs B >= 1 and Lq >= 1";
    return Status::invalid(str(m));
  }
  FA_RETURN_IF_ERROR(check_head_dim("q", d));
  if (lq > INT32_MAX) {
    std::ostringstream m;
    m << "q: Lq = " << lq << " must be at most " << INT32_MAX << " (positions are 32-bit)";
    return Status::invalid(str(m));
  }
  if (a.page_table != nullptr) {
    FA_RETURN_IF_ERROR(take_paged_layout(a.k_cache, a.v_cache, a.page_table,
                                         a.page_table_stride, a.max_pages_per_seq, b, d,
                                         &p.attn.kv, &p.capacity));
  } else {
    FA_RETURN_IF_ERROR(take_contiguous_cache(a, b, d, &p));
  }
  FA_RETURN_IF_ERROR(check_heads(hq, hkv));
  FA_RETURN_IF_ERROR(check_shape("out", a.out, {b, lq, hq, d}, "[B, Lq, Hq, D] (like q)"));
  FA_RETURN_IF_ERROR(take_lse(a.lse, {b, hq, lq}, "[B, Hq, Lq]", &at));
  if (a.cache_seqlens == nullptr) {
    return Status::invalid("cache_seqlens: is NULL; the key count of each sequence's cache "
                           "(int32 [B]) is required");
  }
  at.dtype = to_dtype(a.q.dtype);
  at.batch = b;
  at.seqlen_q = lq;
  at.heads_q = hq;
  at.heads_kv = hkv;
  at.head_dim = d;
  FA_RETURN_IF_ERROR(take_append(a, &p));
  FA_RETURN_IF_ERROR(take_rotary(a, &p));
  FA_RETURN_IF_ERROR(build_mask_params(a.mask, MaskUse::kCache, &at.mask));
  FA_RETURN_IF_ERROR(check_scale_and_softcap(a.softmax_scale, a.softcap, d, &at));
  if (a.num_splits < 0 || a.num_splits > FA_MAX_DECODE_SPLITS) {
    std::ostringstream m;
    m << "num_splits: " << a.num_splits << "; allowed: 0 (the planner chooses) or 1 to "
      << FA_MAX_DECODE_SPLITS;
    return Status::invalid(str(m));
  }
  if (a.max_seqlen_k < 0 || a.max_seqlen_k > p.capacity) {
    std::ostringstream m;
    m << "max_seqlen_k: " << a.max_seqlen_k << "; allowed: 0 (the cache capacity) to the "
      << "capacity " << p.capacity;
    return Status::invalid(str(m));
  }
  p.cache_seqlens = a.cache_seqlens;
  p.num_splits = a.num_splits;
  at.seqlen_k = a.max_seqlen_k > 0 ? a.max_seqlen_k : p.capacity;
  at.q = a.q.data;
  at.q_batch_stride = a.q.strides[0];
  at.q_row_stride = a.q.strides[1];
  at.q_head_stride = a.q.strides[2];
  at.out = a.out.data;
  at.out_batch_stride = a.out.strides[0];
  at.out_row_stride = a.out.strides[1];
  at.out_head_stride = a.out.strides[2];
  at.kv.k = a.k_cache.data;
  at.kv.v = a.v_cache.data;
  if (offsets == OffsetsAccess::kHost) {
    FA_RETURN_IF_ERROR(check_decode_contents(p, a.k_cache.shape[0]));
  }
  *out = p;
  return Status::ok();
}

}  // namespace fastattn
