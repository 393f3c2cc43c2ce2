#include "api/build_params.h"

#include <cmath>
#include <sstream>
#include <string>

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

Status build_mask_params(const fa_mask& mask, MaskParams* out) {
  for (int i = 0; i < 6; ++i) {
    if (mask.reserved[i] != 0) return Status::invalid("mask.reserved: must be zero");
  }
  for (int i = 0; i < 4; ++i) {
    if (mask.reserved_ptr[i] != nullptr) return Status::invalid("mask.reserved_ptr: must be NULL");
  }
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
    default: {
      std::ostringstream s;
      s << "mask.kind: " << static_cast<int>(mask.kind)
        << " is unknown; allowed: FA_MASK_NONE, FA_MASK_CAUSAL, FA_MASK_SLIDING_WINDOW";
      return Status::invalid(str(s));
    }
  }
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
  FA_RETURN_IF_ERROR(build_mask_params(a.mask, &p.mask));
  FA_RETURN_IF_ERROR(check_scale_and_softcap(a.softmax_scale, a.softcap, p.head_dim, &p));
  *out = p;
  return Status::ok();
}

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
  const int64_t num_pages = a.k_cache.shape[0], page_size = a.k_cache.shape[1];
  const int64_t hkv = a.k_cache.shape[2];
  if (b < 1 || lq < 1) {
    std::ostringstream m;
    m << "q: shape " << shape_string(a.q) << " needs B >= 1 and Lq >= 1";
    return Status::invalid(str(m));
  }
  FA_RETURN_IF_ERROR(check_head_dim("q", d));
  if (num_pages < 1 || page_size < 1) {
    std::ostringstream m;
    m << "k_cache: shape " << shape_string(a.k_cache)
      << " needs num_pages >= 1 and page_size >= 1";
    return Status::invalid(str(m));
  }
  FA_RETURN_IF_ERROR(check_shape("k_cache", a.k_cache, {num_pages, page_size, hkv, d},
                                 "[num_pages, page_size, Hkv, D]"));
  FA_RETURN_IF_ERROR(check_shape("v_cache", a.v_cache, {num_pages, page_size, hkv, d},
                                 "[num_pages, page_size, Hkv, D] (like k_cache)"));
  FA_RETURN_IF_ERROR(check_shape("out", a.out, {b, lq, hq, d}, "[B, Lq, Hq, D] (like q)"));
  FA_RETURN_IF_ERROR(check_heads(hq, hkv));
  FA_RETURN_IF_ERROR(take_lse(a.lse, {b, hq, lq}, "[B, Hq, Lq]", &p));
  if (a.page_table == nullptr) return Status::invalid("page_table: is NULL; a page table is required");
  if (a.seq_lens_k == nullptr) return Status::invalid("seq_lens_k: is NULL; key counts are required");
  if (a.max_pages_per_seq < 1 || a.page_table_stride < a.max_pages_per_seq) {
    std::ostringstream m;
    m << "max_pages_per_seq = " << a.max_pages_per_seq << ", page_table_stride = "
      << a.page_table_stride << ": need max_pages_per_seq >= 1 and page_table_stride >= "
      << "max_pages_per_seq";
    return Status::invalid(str(m));
  }
  int64_t max_k = 0;
  for (int64_t s = 0; s < b; ++s) {
    const int64_t len = a.seq_lens_k[s];
    if (len < 0 || len > a.max_pages_per_seq * page_size) {
      std::ostringstream m;
      m << "seq_lens_k[" << s << "] = " << len << "; allowed: 0 to max_pages_per_seq * page_size = "
        << a.max_pages_per_seq * page_size;
      return Status::invalid(str(m));
    }
    const int64_t used_pages = (len + page_size - 1) / page_size;
    for (int64_t pg = 0; pg < used_pages; ++pg) {
      const int64_t entry = a.page_table[s * a.page_table_stride + pg];
      if (entry < 0 || entry >= num_pages) {
        std::ostringstream m;
        m << "page_table[" << s << "][" << pg << "] = " << entry << "; allowed: 0 to "
          << num_pages - 1 << " (k_cache has " << num_pages << " pages)";
        return Status::invalid(str(m));
      }
    }
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
  p.kv.k = a.k_cache.data;
  p.kv.v = a.v_cache.data;
  p.kv.k_page_stride = a.k_cache.strides[0];
  p.kv.k_row_stride = a.k_cache.strides[1];
  p.kv.k_head_stride = a.k_cache.strides[2];
  p.kv.v_page_stride = a.v_cache.strides[0];
  p.kv.v_row_stride = a.v_cache.strides[1];
  p.kv.v_head_stride = a.v_cache.strides[2];
  p.kv.page_table = a.page_table;
  p.kv.page_table_stride = a.page_table_stride;
  p.kv.page_size = page_size;
  p.seqlens_k = a.seq_lens_k;
  FA_RETURN_IF_ERROR(build_mask_params(a.mask, &p.mask));
  FA_RETURN_IF_ERROR(check_scale_and_softcap(a.softmax_scale, a.softcap, d, &p));
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

}  // namespace fastattn
