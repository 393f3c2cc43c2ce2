#include "check/harness.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <sstream>

#include "check/device_copy.h"
#include "check/mask_inputs.h"
#include "check/problem.h"
#include "common/scalar_convert.h"

namespace fastattn::check {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// A host buffer of one dtype, poisoned with NaN, that remembers which
// elements a tensor view covers so writes outside the view can be caught.
class Buffer {
 public:
  Buffer(fa_dtype dtype, int64_t elements)
      : dtype_(dtype), size_(dtype == FA_DTYPE_FLOAT32 ? 4 : 2),
        bytes_(std::max<int64_t>(elements, 1) * size_, 0xff), in_view_(std::max<int64_t>(elements, 1)) {}

  void* data() { return bytes_.data(); }
  size_t bytes() const { return bytes_.size(); }
  int64_t elements() const { return int64_t(in_view_.size()); }
  void set(int64_t i, float x) {
    in_view_[i] = true;
    store_from_float(bytes_.data(), i, dtype(), x);
  }
  void mark(int64_t i) { in_view_[i] = true; }
  float get(int64_t i) const { return load_as_float(bytes_.data(), i, dtype()); }
  // Elements outside the view must still hold the poison.
  int64_t first_write_outside_view() const {
    for (int64_t i = 0; i < elements(); ++i) {
      if (in_view_[i]) continue;
      for (int b = 0; b < size_; ++b) {
        if (bytes_[i * size_ + b] != 0xff) return i;
      }
    }
    return -1;
  }

 private:
  DType dtype() const { return static_cast<DType>(static_cast<int>(dtype_)); }
  fa_dtype dtype_;
  int size_;
  std::vector<unsigned char> bytes_;
  std::vector<bool> in_view_;
};

fa_tensor view(Buffer& buf, fa_dtype dtype, std::initializer_list<int64_t> shape,
               std::initializer_list<int64_t> strides) {
  fa_tensor t{};
  t.data = buf.data();
  t.dtype = dtype;
  t.ndim = int32_t(shape.size());
  std::copy(shape.begin(), shape.end(), t.shape);
  std::copy(strides.begin(), strides.end(), t.strides);
  return t;
}

// Offsets of logical rows (sequence b, row i, head h) in the tensors under
// test; each layout fills these.
struct Layout {
  std::vector<int64_t> q_row_base;    // per (b, i): offset of row i of sequence b, head 0
  int64_t q_head_stride = 0;
  std::vector<int64_t> lse_row_base;  // per (b, i): offset of head 0
  int64_t lse_head_stride = 0;
};

std::vector<int64_t> prefix_rows(const Problem& p) {
  std::vector<int64_t> first(p.seqs.size() + 1, 0);
  for (size_t b = 0; b < p.seqs.size(); ++b) first[b + 1] = first[b] + p.seqs[b].lq;
  return first;
}

const char* block_mask_name(BlockMaskKind k) {
  switch (k) {
    case BlockMaskKind::kNone: return "none";
    case BlockMaskKind::kBlocks: return "blocks";
    case BlockMaskKind::kDense: return "dense";
    case BlockMaskKind::kStaircase: return "staircase";
  }
  return "?";
}

std::string at(int64_t b, int64_t i, int64_t h, int64_t e = -1) {
  std::ostringstream s;
  s << "(seq " << b << ", row " << i << ", head " << h;
  if (e >= 0) s << ", dim " << e;
  s << ")";
  return s.str();
}

}  // namespace

std::string describe(const Case& c) {
  std::ostringstream s;
  if (!c.label.empty()) s << c.label << ": ";
  const char* dt = c.dtype == FA_DTYPE_FLOAT32 ? "fp32" : c.dtype == FA_DTYPE_FLOAT16 ? "fp16" : "bf16";
  s << dt << " B=" << c.batch << " Lq=" << c.seqlen_q << " Lk=" << c.seqlen_k << " Hq=" << c.heads_q
    << " Hkv=" << c.heads_kv << " D=" << c.head_dim;
  if (c.mask == FA_MASK_CAUSAL) s << " causal";
  if (c.mask == FA_MASK_SLIDING_WINDOW) s << " window(" << c.window_left << "," << c.window_right << ")";
  if (c.mask == FA_MASK_PREFIX_LM) s << " prefix-lm(" << c.prefix_len << ")";
  if (c.chunk_size > 0) s << " chunk=" << c.chunk_size;
  if (const Documents& dc = c.documents; dc.mean_length > 0) {
    s << " docs(" << (dc.fixed_length ? "len=" : "mean=") << dc.mean_length
      << (dc.unmatched_queries ? ",unmatched" : "") << ",seed=" << dc.seed << ")";
  }
  if (const BlockMaskSpec& bm = c.block_mask; bm.kind != BlockMaskKind::kNone) {
    s << " block-mask(" << block_mask_name(bm.kind);
    if (bm.kind != BlockMaskKind::kStaircase) s << " density=" << bm.density;
    s << " " << bm.block_q << "x" << bm.block_k << (bm.per_batch ? " per-batch" : "")
      << (bm.per_head ? " per-head" : "") << (!bm.per_batch && !bm.per_head ? " broadcast" : "")
      << (bm.empty_block_row ? " empty-row" : "") << " seed=" << bm.seed << ")";
  }
  if (c.softcap > 0) s << " softcap=" << c.softcap;
  if (c.softmax_scale != 0) s << " scale=" << c.softmax_scale;
  if (c.varlen) s << " varlen";
  if (c.page_size > 0) s << " paged(page_size=" << c.page_size << ")";
  if (c.noncontiguous) s << " strided";
  if (!c.with_lse) s << " no-lse";
  return s.str();
}

Outcome run_case(const Case& c, const fa_run_options& options, uint64_t seed) {
  Outcome outcome;
  std::mt19937_64 rng(seed);
  const Problem p = make_problem(c, rng);
  const int64_t nb = c.batch, hq = c.heads_q, hkv = c.heads_kv, d = c.head_dim;
  const int64_t pad = c.noncontiguous ? 8 : 0, dp = d + pad;
  const fa_dtype dt = c.dtype;
  const std::vector<int64_t> first = prefix_rows(p);
  const int64_t total_q = first[nb];

  // Queries and outputs: padded [B, Lq, Hq, D], or packed [total_q, Hq, D].
  // Strided layouts store heads outermost with padded rows.
  const bool packed = c.varlen;
  const int64_t q_rows = packed ? total_q : nb * c.seqlen_q;
  const int64_t q_elems = q_rows * hq * dp + (c.noncontiguous ? 8 * hq + 24 * nb : 0);
  Buffer qb(dt, q_elems), ob(dt, q_elems);
  Layout lay;
  int64_t q_batch_stride = 0, q_row_stride = 0;
  if (!c.noncontiguous) {
    q_row_stride = hq * d;
    lay.q_head_stride = d;
    q_batch_stride = c.seqlen_q * hq * d;
  } else if (packed) {
    q_row_stride = dp;
    lay.q_head_stride = total_q * dp + 8;
  } else {
    q_row_stride = dp;
    lay.q_head_stride = c.seqlen_q * dp;
    q_batch_stride = hq * c.seqlen_q * dp + 24;
  }
  for (int64_t b = 0; b < nb; ++b) {
    for (int64_t i = 0; i < p.seqs[b].lq; ++i) {
      lay.q_row_base.push_back(packed ? (first[b] + i) * q_row_stride
                                      : b * q_batch_stride + i * q_row_stride);
    }
  }
  for (int64_t b = 0, r = 0; b < nb; ++b) {
    for (int64_t i = 0; i < p.seqs[b].lq; ++i, ++r) {
      for (int64_t h = 0; h < hq; ++h) {
        for (int64_t e = 0; e < d; ++e) {
          const int64_t off = lay.q_row_base[r] + h * lay.q_head_stride + e;
          qb.set(off, p.seqs[b].q[(i * hq + h) * d + e]);
          ob.mark(off);
        }
      }
    }
  }
  // LSE: [B, Hq, Lq] or [Hq, total_q]; strided adds row padding.
  const int64_t lse_pad = c.noncontiguous ? 3 : 0;
  const int64_t lse_rows = packed ? total_q : c.seqlen_q;
  const int64_t lse_head_stride = lse_rows + lse_pad;
  const int64_t lse_batch_stride = hq * lse_head_stride + (c.noncontiguous ? 5 : 0);
  Buffer lb(FA_DTYPE_FLOAT32, packed ? hq * lse_head_stride : nb * lse_batch_stride);
  for (int64_t b = 0; b < nb; ++b) {
    for (int64_t i = 0; i < p.seqs[b].lq; ++i) {
      for (int64_t h = 0; h < hq; ++h) {
        lb.mark(packed ? h * lse_head_stride + first[b] + i
                       : b * lse_batch_stride + h * lse_head_stride + i);
      }
    }
  }
  auto lse_at = [&](int64_t b, int64_t i, int64_t h) {
    return packed ? h * lse_head_stride + first[b] + i
                  : b * lse_batch_stride + h * lse_head_stride + i;
  };

  // Keys and values.
  std::vector<int32_t> cu_q(nb + 1), cu_k(nb + 1, 0), seq_lens(nb), page_table;
  for (int64_t b = 0; b < nb; ++b) {
    cu_q[b + 1] = int32_t(first[b + 1]);
    cu_k[b + 1] = cu_k[b] + int32_t(p.seqs[b].lk);
    seq_lens[b] = int32_t(p.seqs[b].lk);
  }
  const int64_t total_k = cu_k[nb];
  int64_t kv_elems = 0, k_row_stride = hkv * dp, k_head_stride = dp, k_batch_stride = 0;
  int64_t num_pages = 0, max_pages = 0, page_table_stride = 0;
  std::vector<int64_t> k_row_base;  // per (b, j): offset of KV head 0
  if (c.page_size > 0) {
    const int64_t ps = c.page_size;
    max_pages = std::max<int64_t>((c.seqlen_k + ps - 1) / ps, 1);
    page_table_stride = max_pages + 1;
    num_pages = nb * max_pages + 3;  // spare pages that no sequence uses
    std::vector<int32_t> ids(num_pages);
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    page_table.assign(nb * page_table_stride, -1);  // unused entries must never be read
    for (int64_t b = 0, next = 0; b < nb; ++b) {
      for (int64_t pg = 0; pg < (p.seqs[b].lk + ps - 1) / ps; ++pg) {
        page_table[b * page_table_stride + pg] = ids[next++];
      }
    }
    kv_elems = num_pages * ps * hkv * dp;
    for (int64_t b = 0; b < nb; ++b) {
      for (int64_t j = 0; j < p.seqs[b].lk; ++j) {
        const int64_t page = page_table[b * page_table_stride + j / ps];
        k_row_base.push_back((page * ps + j % ps) * k_row_stride);
      }
    }
  } else if (packed) {
    kv_elems = total_k * hkv * dp;
    for (int64_t j = 0; j < total_k; ++j) k_row_base.push_back(j * k_row_stride);
  } else {
    k_batch_stride = c.seqlen_k * hkv * dp + (c.noncontiguous ? 40 : 0);
    kv_elems = nb * k_batch_stride;
    for (int64_t b = 0; b < nb; ++b) {
      for (int64_t j = 0; j < c.seqlen_k; ++j) k_row_base.push_back(b * k_batch_stride + j * k_row_stride);
    }
  }
  Buffer kb(dt, kv_elems), vb(dt, kv_elems);
  for (int64_t b = 0, r = 0; b < nb; ++b) {
    for (int64_t j = 0; j < p.seqs[b].lk; ++j, ++r) {
      for (int64_t h = 0; h < hkv; ++h) {
        for (int64_t e = 0; e < d; ++e) {
          kb.set(k_row_base[r] + h * k_head_stride + e, p.seqs[b].k[(j * hkv + h) * d + e]);
          vb.set(k_row_base[r] + h * k_head_stride + e, p.seqs[b].v[(j * hkv + h) * d + e]);
        }
      }
    }
  }

  fa_tensor q, out, lse{};
  if (packed) {
    q = view(qb, dt, {total_q, hq, d}, {q_row_stride, lay.q_head_stride, 1});
    out = view(ob, dt, {total_q, hq, d}, {q_row_stride, lay.q_head_stride, 1});
    if (c.with_lse) lse = view(lb, FA_DTYPE_FLOAT32, {hq, total_q}, {lse_head_stride, 1});
  } else {
    q = view(qb, dt, {nb, c.seqlen_q, hq, d}, {q_batch_stride, q_row_stride, lay.q_head_stride, 1});
    out = view(ob, dt, {nb, c.seqlen_q, hq, d}, {q_batch_stride, q_row_stride, lay.q_head_stride, 1});
    if (c.with_lse) {
      lse = view(lb, FA_DTYPE_FLOAT32, {nb, hq, c.seqlen_q}, {lse_batch_stride, lse_head_stride, 1});
    }
  }
  // FA_BACKEND_CUDA: the same buffers, poison included, copied to the GPU;
  // outputs come back whole so writes outside the views are still caught.
  const bool on_gpu = options.backend == FA_BACKEND_CUDA;
  std::vector<std::unique_ptr<DeviceCopy>> gpu_copies;
  auto gpu_copy = [&](const void* host, size_t bytes) -> void* {
    gpu_copies.push_back(std::make_unique<DeviceCopy>(host, bytes));
    return gpu_copies.back()->ok() ? gpu_copies.back()->data() : nullptr;
  };
  void* q_data = qb.data();
  void* o_data = ob.data();
  void* l_data = lb.data();
  void* k_data = kb.data();
  void* v_data = vb.data();
  const int32_t* cu_q_data = cu_q.data();
  const int32_t* cu_k_data = cu_k.data();
  // Segment ids packed like the rows of q and k ([B, L] when padded); one
  // spare entry keeps the pointers non-null when every sequence is empty.
  const bool documents = c.documents.mean_length > 0;
  std::vector<int32_t> q_ids(total_q + 1, 0), k_ids(total_k + 1, 0);
  for (int64_t b = 0; b < nb && documents; ++b) {
    std::copy(p.seqs[b].q_ids.begin(), p.seqs[b].q_ids.end(), q_ids.begin() + first[b]);
    std::copy(p.seqs[b].k_ids.begin(), p.seqs[b].k_ids.end(), k_ids.begin() + cu_k[b]);
  }
  const int32_t* q_ids_data = q_ids.data();
  const int32_t* k_ids_data = k_ids.data();
  const void* mask_source_data = p.block_mask.data.data();
  DeviceCopy* o_copy = nullptr;
  DeviceCopy* l_copy = nullptr;
  if (on_gpu) {
    q_data = gpu_copy(qb.data(), qb.bytes());
    k_data = gpu_copy(kb.data(), kb.bytes());
    v_data = gpu_copy(vb.data(), vb.bytes());
    o_data = gpu_copy(ob.data(), ob.bytes());
    o_copy = gpu_copies.back().get();
    l_data = gpu_copy(lb.data(), lb.bytes());
    l_copy = gpu_copies.back().get();
    cu_q_data = static_cast<const int32_t*>(gpu_copy(cu_q.data(), cu_q.size() * sizeof(int32_t)));
    cu_k_data = static_cast<const int32_t*>(gpu_copy(cu_k.data(), cu_k.size() * sizeof(int32_t)));
    if (documents) {
      q_ids_data = static_cast<const int32_t*>(gpu_copy(q_ids.data(), q_ids.size() * sizeof(int32_t)));
      k_ids_data = static_cast<const int32_t*>(gpu_copy(k_ids.data(), k_ids.size() * sizeof(int32_t)));
    }
    // The GPU compresses its own mask from a device copy of the source.
    if (p.block_mask.present()) mask_source_data = gpu_copy(p.block_mask.data.data(), p.block_mask.data.size());
    for (const auto& g : gpu_copies) {
      if (!g->ok()) {
        outcome.detail = g->error();
        return outcome;
      }
    }
    q.data = q_data;
    out.data = o_data;
    if (c.with_lse) lse.data = l_data;
  }
  int64_t max_lq = 0, max_lk = 0;
  for (const Sequence& sq : p.seqs) {
    max_lq = std::max(max_lq, sq.lq);
    max_lk = std::max(max_lk, sq.lk);
  }

  fa_mask mask{};
  mask.kind = c.mask;
  mask.window_left = c.window_left;
  mask.window_right = c.window_right;
  mask.prefix_len = c.prefix_len;
  mask.chunk_size = c.chunk_size;
  if (documents) {
    mask.q_segment_ids = q_ids_data;
    mask.k_segment_ids = k_ids_data;
  }
  // Only a forced CUDA path may refuse, and only a case that says it may.
  auto refused = [&](fa_status s, const char* what) {
    if (s != FA_STATUS_UNSUPPORTED || !c.forced_path_may_refuse || !on_gpu ||
        options.cuda_path == FA_CUDA_PATH_AUTO) {
      return false;
    }
    outcome.skipped = true;
    outcome.detail = "skipped: path sm" + std::to_string(options.cuda_path) + " refuses " + what + ": " +
                     fa_last_error();
    return true;
  };
  // Built on the side of the backend under test; destroyed with the case
  // (after the copy back has waited for the device).
  OwnedBlockMask block_mask;
  if (p.block_mask.present()) {
    const fa_status bs = block_mask.create(p.block_mask, mask_source_data, options);
    if (bs != FA_STATUS_OK) {
      if (refused(bs, "the block mask")) return outcome;
      outcome.detail = std::string("fa_block_mask_create failed: ") + fa_status_string(bs) + ": " + fa_last_error();
      return outcome;
    }
    mask.block_mask = block_mask.get();
  }
  fa_status st;
  if (c.page_size > 0) {
    fa_paged_attention_args a{};
    a.q = q;
    a.k_cache = view(kb, dt, {num_pages, c.page_size, hkv, d}, {c.page_size * k_row_stride, k_row_stride, k_head_stride, 1});
    a.v_cache = view(vb, dt, {num_pages, c.page_size, hkv, d}, {c.page_size * k_row_stride, k_row_stride, k_head_stride, 1});
    a.page_table = page_table.data();
    a.page_table_stride = page_table_stride;
    a.max_pages_per_seq = max_pages;
    a.seq_lens_k = seq_lens.data();
    a.out = out;
    a.lse = lse;
    a.mask = mask;
    a.softmax_scale = c.softmax_scale;
    a.softcap = c.softcap;
    st = fa_paged_attention(&a, &options);
  } else {
    fa_attention_args a{};
    a.q = q;
    a.out = out;
    a.lse = lse;
    if (packed) {
      a.k = view(kb, dt, {total_k, hkv, d}, {k_row_stride, k_head_stride, 1});
      a.v = view(vb, dt, {total_k, hkv, d}, {k_row_stride, k_head_stride, 1});
      a.cu_seqlens_q = cu_q_data;
      a.cu_seqlens_k = cu_k_data;
      a.num_seqs = nb;
      a.max_seqlen_q = max_lq;
      a.max_seqlen_k = max_lk;
    } else {
      a.k = view(kb, dt, {nb, c.seqlen_k, hkv, d}, {k_batch_stride, k_row_stride, k_head_stride, 1});
      a.v = view(vb, dt, {nb, c.seqlen_k, hkv, d}, {k_batch_stride, k_row_stride, k_head_stride, 1});
    }
    a.k.data = k_data;
    a.v.data = v_data;
    a.mask = mask;
    a.softmax_scale = c.softmax_scale;
    a.softcap = c.softcap;
    st = fa_attention_forward(&a, &options);
  }
  if (st == FA_STATUS_OK && on_gpu) {
    if (!o_copy->copy_back(ob.data()) || !l_copy->copy_back(lb.data())) {
      outcome.detail = o_copy->ok() ? l_copy->error() : o_copy->error();
      return outcome;
    }
  }
  if (refused(st, "the call")) return outcome;
  if (st != FA_STATUS_OK) {
    outcome.detail = std::string("call failed: ") + fa_status_string(st) + ": " + fa_last_error();
    return outcome;
  }

  // Read back what the kernel wrote, in logical order.
  Result got;
  got.out.resize(nb);
  got.lse.resize(nb);
  for (int64_t b = 0, r = 0; b < nb; ++b) {
    const int64_t lq = p.seqs[b].lq;
    got.out[b].resize(lq * hq * d);
    got.lse[b].assign(hq * lq, -kInf);
    for (int64_t i = 0; i < lq; ++i, ++r) {
      for (int64_t h = 0; h < hq; ++h) {
        for (int64_t e = 0; e < d; ++e) {
          const float x = ob.get(lay.q_row_base[r] + h * lay.q_head_stride + e);
          if (std::isnan(x)) {
            outcome.detail = "output is NaN or was never written at " + at(b, i, h, e);
            return outcome;
          }
          got.out[b][(i * hq + h) * d + e] = x;
        }
        if (c.with_lse) {
          const float l = lb.get(lse_at(b, i, h));
          if (std::isnan(l)) {
            outcome.detail = "LSE is NaN or was never written at " + at(b, i, h);
            return outcome;
          }
          got.lse[b][h * lq + i] = l;
        }
      }
    }
  }
  if (int64_t w = ob.first_write_outside_view(); w >= 0) {
    outcome.detail = "out: element " + std::to_string(w) + " outside the view was written";
    return outcome;
  }
  if (int64_t w = lb.first_write_outside_view(); w >= 0) {
    outcome.detail = "lse: element " + std::to_string(w) + " outside the view was written";
    return outcome;
  }

  Result ref;
  if (!reference_result(p, &ref, &outcome.detail)) return outcome;
  const Result lp = low_precision_result(p, c.dtype);

  // Fully masked rows: exactly 0 and -inf.
  for (int64_t b = 0; b < nb; ++b) {
    for (int64_t h = 0; h < hq; ++h) {
      for (int64_t i = 0; i < p.seqs[b].lq; ++i) {
        if (!std::isinf(ref.lse[b][h * p.seqs[b].lq + i])) continue;
        for (int64_t e = 0; e < d; ++e) {
          if (got.out[b][(i * hq + h) * d + e] != 0.0f) {
            outcome.detail = "fully masked row is not 0 at " + at(b, i, h, e);
            return outcome;
          }
        }
        if (c.with_lse && got.lse[b][h * p.seqs[b].lq + i] != -kInf) {
          outcome.detail = "fully masked row has LSE != -inf at " + at(b, i, h);
          return outcome;
        }
      }
    }
  }

  // The reference's logic (masks, layouts) checked against an independent
  // plain loop in float32, where only rounding separates the two.
  const Result plain = low_precision_result(p, FA_DTYPE_FLOAT32);
  for (int64_t b = 0; b < nb; ++b) {
    for (size_t r = 0; r < ref.lse[b].size(); ++r) {
      if (std::isinf(ref.lse[b][r]) == std::isinf(plain.lse[b][r])) continue;
      const int64_t lq = p.seqs[b].lq;
      outcome.detail = "the reference and the plain float32 implementation disagree on whether a row "
                       "sees any key at " + at(b, int64_t(r) % lq, int64_t(r) / lq);
      return outcome;
    }
  }
  const double plain_err = max_abs_diff(plain, ref, false);
  if (plain_err > 1e-4) {
    std::ostringstream s;
    s << "the reference and the plain float32 implementation disagree by " << plain_err;
    outcome.detail = s.str();
    return outcome;
  }
  const double lp_err = max_abs_diff(lp, ref, false);
  outcome.max_error = max_abs_diff(got, ref, false);
  outcome.tolerance = 2 * lp_err + rounding_atol(ref, false);
  bool ok = outcome.max_error <= outcome.tolerance;
  if (c.with_lse) {
    outcome.lse_max_error = max_abs_diff(got, ref, true);
    outcome.lse_tolerance = 2 * max_abs_diff(lp, ref, true) + rounding_atol(ref, true);
    ok = ok && outcome.lse_max_error <= outcome.lse_tolerance;
  }
  std::ostringstream s;
  s << "max|O-ref| " << outcome.max_error << " (tol " << outcome.tolerance << ")";
  if (c.with_lse) s << ", max|LSE-ref| " << outcome.lse_max_error << " (tol " << outcome.lse_tolerance << ")";
  outcome.detail = s.str();
  outcome.passed = ok;
  return outcome;
}

}  // namespace fastattn::check
