// What the forward kernels read: raw pointers, int64 element strides and
// int sizes, filled from the validated AttentionParams by flash_launch.cu.
#pragma once

#include <cstdint>

#include "api/block_mask_view.h"

namespace fastattn::cuda {

struct FwdParams {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* out = nullptr;
  float* lse = nullptr;  // optional
  int64_t q_batch_stride = 0, q_row_stride = 0, q_head_stride = 0;
  int64_t k_batch_stride = 0, k_row_stride = 0, k_head_stride = 0;
  int64_t v_batch_stride = 0, v_row_stride = 0, v_head_stride = 0;
  int64_t out_batch_stride = 0, out_row_stride = 0, out_head_stride = 0;
  int64_t lse_batch_stride = 0, lse_head_stride = 0, lse_row_stride = 0;
  // Varlen: device arrays of batch + 1 offsets (batch strides then unused).
  const int32_t* cu_seqlens_q = nullptr;
  const int32_t* cu_seqlens_k = nullptr;

  int batch = 0, heads_q = 0, group_size = 1;
  int seqlen_q = 0, seqlen_k = 0;  // varlen: maxima, used for the grid only
  // Rows of the q/out and k/v tensors along their row axis: seqlen_q and
  // seqlen_k, or for varlen the totals (the sm90 kernel's tensor maps).
  int64_t rows_q = 0, rows_k = 0;
  int head_dim = 0;                // actual; the kernel's kHeadDim may be larger
  int window_left = -1, window_right = -1;  // < 0: unbounded
  int prefix = 0;  // keys below it are seen by every row (prefix-LM)
  int chunk = 0;   // > 0: the key in the query position's chunk
  // Documents: segment ids, padded batch [B, Lq] / [B, Lk], varlen packed
  // like the rows of q / k; or nullptr.
  const int32_t* q_segments = nullptr;
  const int32_t* k_segments = nullptr;
  BlockMaskView block;  // block.cls == nullptr: no block mask
  // Scores enter exp2 as s * scale_log2 - m * scale_log2 (one FMA): log2(e) *
  // softmax scale, or log2(e) alone with a softcap, whose tanh already scaled.
  float scale_log2 = 0.f;
  float softcap = 0.f;           // 0 = off
  float softcap_inv_scale = 0.f;  // softmax scale / softcap
  // Host side only: FwdChoice::variant_tiles, read by the launch.
  bool variant_tiles = false;
};

}  // namespace fastattn::cuda
