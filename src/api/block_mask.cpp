// fa_block_mask_create on the host: argument checks, and the compression of
// a host source into the EMPTY / FULL / PARTIAL form of BlockMaskView.
#include "api/block_mask.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "api/gpu_bridge.h"

namespace fastattn {
namespace {

std::string str(const std::ostringstream& s) { return s.str(); }

Status check_block_size(const char* name, int64_t size, int* log2) {
  switch (size) {
    case 0:
    case 128: *log2 = 7; return Status::ok();
    case 64: *log2 = 6; return Status::ok();
    case 256: *log2 = 8; return Status::ok();
  }
  std::ostringstream m;
  m << name << ": " << size << " is not supported; allowed: 64, 128, 256 (0 = 128)";
  return Status::invalid(str(m));
}

// The bool source: 4 dims, sizes >= 1, strides >= 0, last dim contiguous,
// byte offsets that fit in int64.
Status check_source(const char* name, const fa_tensor& t, const char* dims) {
  std::ostringstream m;
  if (t.dtype != FA_DTYPE_BOOL) {
    m << name << ": dtype " << static_cast<int>(t.dtype)
      << " is not allowed; a mask source is FA_DTYPE_BOOL (one byte, nonzero = true)";
    return Status::invalid(str(m));
  }
  if (t.ndim != 4) {
    m << name << ": ndim is " << t.ndim << "; expected 4, " << dims;
    return Status::invalid(str(m));
  }
  int64_t max_offset = 0;
  for (int i = 0; i < 4; ++i) {
    if (t.shape[i] < 1) {
      m << name << ": shape[" << i << "] is " << t.shape[i] << "; every size of " << dims
        << " must be >= 1";
      return Status::invalid(str(m));
    }
    if (t.strides[i] < 0) {
      m << name << ": strides[" << i << "] is " << t.strides[i] << "; strides must be >= 0";
      return Status::invalid(str(m));
    }
    int64_t extent = 0;
    if (__builtin_mul_overflow(t.shape[i] - 1, t.strides[i], &extent) ||
        __builtin_add_overflow(max_offset, extent, &max_offset)) {
      m << name << ": shape with its strides reaches past int64 offsets";
      return Status::invalid(str(m));
    }
  }
  if (t.strides[3] != 1) {
    m << name << ": strides[3] is " << t.strides[3] << "; the last dimension must be contiguous "
      << "(stride 1)";
    return Status::invalid(str(m));
  }
  return Status::ok();
}

Status check_seqlen(const char* name, int64_t len) {
  if (len >= 1 && len <= INT32_MAX) return Status::ok();
  std::ostringstream m;
  m << name << ": " << len << "; a blocks-form mask needs the plane it covers: allowed 1 to "
    << INT32_MAX;
  return Status::invalid(str(m));
}

// Fills the view's arrays from the per-block classes and the bits.
void finish_mask(const BlockMaskShape& s, fa_block_mask* out) {
  BlockMaskView& v = out->view;
  const int64_t rows = s.batch * s.heads * s.blocks_q(), nk = s.blocks_k();
  out->host_list.assign(rows * nk, 0);
  out->host_count.assign(rows, 0);
  out->empty_blocks = out->full_blocks = out->partial_blocks = 0;
  for (int64_t r = 0; r < rows; ++r) {
    int32_t n = 0;
    for (int64_t kb = 0; kb < nk; ++kb) {
      const int32_t c = out->host_cls[r * nk + kb];
      if (c == BlockMaskView::kEmpty) {
        ++out->empty_blocks;
        continue;
      }
      if (c == BlockMaskView::kFull) ++out->full_blocks; else ++out->partial_blocks;
      out->host_list[r * nk + n++] = static_cast<int32_t>(kb);
    }
    out->host_count[r] = n;
  }
  v.batch = s.batch;
  v.heads = s.heads;
  v.seqlen_q = s.seqlen_q;
  v.seqlen_k = s.seqlen_k;
  v.block_q_log2 = s.block_q_log2;
  v.block_k_log2 = s.block_k_log2;
  v.blocks_q = s.blocks_q();
  v.blocks_k = nk;
  v.cls = out->host_cls.data();
  v.kv_list = out->host_list.data();
  v.kv_count = out->host_count.data();
  v.bits = out->host_bits.empty() ? nullptr : out->host_bits.data();
  out->state_bytes = (out->host_cls.size() + out->host_list.size() + out->host_count.size()) *
                         sizeof(int32_t) +
                     out->host_bits.size() * sizeof(uint32_t);
  out->on_device = false;
  out->device = -1;
}

// Dense source: one query block row of the plane at a time, its bits
// gathered per key block while the source rows are read in order.
void compress_dense(const fa_tensor& t, const BlockMaskShape& s, fa_block_mask* out) {
  const int64_t bq = int64_t{1} << s.block_q_log2, bk = int64_t{1} << s.block_k_log2;
  const int64_t nq = s.blocks_q(), nk = s.blocks_k(), words = bk / 32;
  const unsigned char* base = static_cast<const unsigned char*>(t.data);
  out->host_cls.assign(s.batch * s.heads * nq * nk, BlockMaskView::kEmpty);
  out->host_bits.clear();
  std::vector<uint32_t> bits(nk * bq * words);  // (key block, row, word)
  std::vector<int64_t> allowed(nk);
  for (int64_t b = 0; b < s.batch; ++b) {
    for (int64_t h = 0; h < s.heads; ++h) {
      for (int64_t qb = 0; qb < nq; ++qb) {
        std::fill(bits.begin(), bits.end(), 0u);
        std::fill(allowed.begin(), allowed.end(), 0);
        const int64_t i0 = qb * bq, i1 = std::min(s.seqlen_q, i0 + bq);
        for (int64_t i = i0; i < i1; ++i) {
          const unsigned char* row = base + b * t.strides[0] + h * t.strides[1] + i * t.strides[2];
          for (int64_t j = 0; j < s.seqlen_k; ++j) {
            if (row[j] == 0) continue;
            const int64_t kb = j >> s.block_k_log2, c = j & (bk - 1);
            bits[(kb * bq + (i - i0)) * words + c / 32] |= 1u << (c % 32);
            ++allowed[kb];
          }
        }
        int32_t* cls = out->host_cls.data() + ((b * s.heads + h) * nq + qb) * nk;
        for (int64_t kb = 0; kb < nk; ++kb) {
          // Pairs past Lq / Lk at the ragged edge are not part of the plane.
          const int64_t pairs = (i1 - i0) * (std::min(s.seqlen_k, (kb + 1) * bk) - kb * bk);
          if (allowed[kb] == 0) continue;
          if (allowed[kb] == pairs) {
            cls[kb] = BlockMaskView::kFull;
            continue;
          }
          cls[kb] = static_cast<int32_t>(out->host_bits.size() / (bq * words));
          const uint32_t* src = bits.data() + kb * bq * words;
          out->host_bits.insert(out->host_bits.end(), src, src + bq * words);
        }
      }
    }
  }
}

void compress_blocks(const fa_tensor& t, const BlockMaskShape& s, fa_block_mask* out) {
  const int64_t nq = s.blocks_q(), nk = s.blocks_k();
  const unsigned char* base = static_cast<const unsigned char*>(t.data);
  out->host_cls.assign(s.batch * s.heads * nq * nk, BlockMaskView::kEmpty);
  out->host_bits.clear();
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < s.heads; ++h)
      for (int64_t qb = 0; qb < nq; ++qb) {
        const unsigned char* row = base + b * t.strides[0] + h * t.strides[1] + qb * t.strides[2];
        int32_t* cls = out->host_cls.data() + ((b * s.heads + h) * nq + qb) * nk;
        for (int64_t kb = 0; kb < nk; ++kb) {
          if (row[kb] != 0) cls[kb] = BlockMaskView::kFull;
        }
      }
}

}  // namespace

Status check_block_mask_args(const fa_block_mask_args& a, BlockMaskShape* shape, bool* dense,
                             bool* on_device) {
  const bool has_dense = a.dense.data != nullptr, has_blocks = a.blocks.data != nullptr;
  if (has_dense == has_blocks) {
    return Status::invalid(has_dense ? "dense / blocks: both are set; give exactly one source "
                                       "(dense [Bm, Hm, Lq, Lk] or blocks [Bm, Hm, ceil(Lq / "
                                       "block_q), ceil(Lk / block_k)])"
                                     : "dense / blocks: both are NULL; give exactly one source "
                                       "(dense [Bm, Hm, Lq, Lk] or blocks [Bm, Hm, ceil(Lq / "
                                       "block_q), ceil(Lk / block_k)])");
  }
  for (int i = 0; i < 4; ++i) {
    if (a.reserved[i] != 0) return Status::invalid("reserved: must be zero");
  }
  BlockMaskShape s;
  FA_RETURN_IF_ERROR(check_block_size("block_q", a.block_q, &s.block_q_log2));
  FA_RETURN_IF_ERROR(check_block_size("block_k", a.block_k, &s.block_k_log2));
  const fa_tensor& t = has_dense ? a.dense : a.blocks;
  if (has_dense) {
    FA_RETURN_IF_ERROR(check_source("dense", t, "[Bm, Hm, Lq, Lk]"));
    for (int side = 0; side < 2; ++side) {
      const int64_t given = side == 0 ? a.seqlen_q : a.seqlen_k;
      const int64_t actual = t.shape[2 + side];
      const char* name = side == 0 ? "seqlen_q" : "seqlen_k";
      if (actual > INT32_MAX) {
        std::ostringstream m;
        m << "dense: shape[" << 2 + side << "] = " << actual << "; sequence lengths are at most "
          << INT32_MAX;
        return Status::invalid(str(m));
      }
      if (given != 0 && given != actual) {
        std::ostringstream m;
        m << name << ": " << given << " disagrees with the dense mask's shape[" << 2 + side
          << "] = " << actual << "; allowed: 0 (taken from dense) or " << actual;
        return Status::invalid(str(m));
      }
    }
    s.seqlen_q = t.shape[2];
    s.seqlen_k = t.shape[3];
  } else {
    FA_RETURN_IF_ERROR(check_seqlen("seqlen_q", a.seqlen_q));
    FA_RETURN_IF_ERROR(check_seqlen("seqlen_k", a.seqlen_k));
    s.seqlen_q = a.seqlen_q;
    s.seqlen_k = a.seqlen_k;
    FA_RETURN_IF_ERROR(
        check_source("blocks", t, "[Bm, Hm, ceil(Lq / block_q), ceil(Lk / block_k)]"));
    if (t.shape[2] != s.blocks_q() || t.shape[3] != s.blocks_k()) {
      std::ostringstream m;
      m << "blocks: shape is [" << t.shape[0] << ", " << t.shape[1] << ", " << t.shape[2] << ", "
        << t.shape[3] << "]; expected [Bm, Hm, ceil(Lq / block_q), ceil(Lk / block_k)] = ["
        << t.shape[0] << ", " << t.shape[1] << ", " << s.blocks_q() << ", " << s.blocks_k()
        << "] for seqlen_q = " << s.seqlen_q << ", seqlen_k = " << s.seqlen_k << ", block_q = "
        << (int64_t{1} << s.block_q_log2) << ", block_k = " << (int64_t{1} << s.block_k_log2);
      return Status::invalid(str(m));
    }
  }
  s.batch = t.shape[0];
  s.heads = t.shape[1];
  // Block classes index the PARTIAL blocks with int32.
  if (s.batch * s.heads > INT32_MAX / (s.blocks_q() * s.blocks_k())) {
    std::ostringstream m;
    m << (has_dense ? "dense" : "blocks") << ": " << s.batch << " x " << s.heads << " x "
      << s.blocks_q() << " x " << s.blocks_k() << " blocks; at most " << INT32_MAX
      << " blocks are allowed (choose larger block_q / block_k)";
    return Status::invalid(str(m));
  }
  const gpu::Location where = gpu::locate(t.data);
  *on_device = where.kind == gpu::MemoryKind::kDevice;
  *dense = has_dense;
  *shape = s;
  return Status::ok();
}

Status build_block_mask_host(const fa_block_mask_args& a, const BlockMaskShape& shape, bool dense,
                             fa_block_mask* out) {
  if (dense) {
    compress_dense(a.dense, shape, out);
  } else {
    compress_blocks(a.blocks, shape, out);
  }
  finish_mask(shape, out);
  return Status::ok();
}

Status create_block_mask(const fa_block_mask_args* args, const fa_run_options* options,
                         fa_block_mask** mask) {
  if (args == nullptr) return Status::invalid("args: is NULL");
  if (mask == nullptr) {
    return Status::invalid("mask: is NULL; the address of an fa_block_mask* to receive the new "
                           "mask is required");
  }
  BlockMaskShape shape;
  bool dense = false, on_device = false;
  FA_RETURN_IF_ERROR(check_block_mask_args(*args, &shape, &dense, &on_device));
  auto m = std::make_unique<fa_block_mask>();
  if (on_device) {
    const void* data = dense ? args->dense.data : args->blocks.data;
    const int device = gpu::locate(data).device;
    FA_RETURN_IF_ERROR(gpu::build_block_mask(*args, shape, dense, device, options, m.get()));
  } else {
    FA_RETURN_IF_ERROR(build_block_mask_host(*args, shape, dense, m.get()));
  }
  *mask = m.release();
  return Status::ok();
}

Status block_mask_info(const fa_block_mask* mask, fa_block_mask_info* info) {
  if (mask == nullptr) return Status::invalid("mask: is NULL; pass a mask from fa_block_mask_create");
  if (info == nullptr) return Status::invalid("info: is NULL; an fa_block_mask_info to fill is required");
  const BlockMaskView& v = mask->view;
  fa_block_mask_info r{};
  r.batch = v.batch;
  r.heads = v.heads;
  r.seqlen_q = v.seqlen_q;
  r.seqlen_k = v.seqlen_k;
  r.block_q = int64_t{1} << v.block_q_log2;
  r.block_k = int64_t{1} << v.block_k_log2;
  r.empty_blocks = mask->empty_blocks;
  r.full_blocks = mask->full_blocks;
  r.partial_blocks = mask->partial_blocks;
  r.state_bytes = mask->state_bytes;
  r.on_device = mask->on_device ? 1 : 0;
  r.device = mask->device;
  *info = r;
  return Status::ok();
}

}  // namespace fastattn
