#include "cuda/flash_launch.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "cuda/host/kernel_scalars.h"

namespace fastattn::cuda {
namespace {

template <int kHeadDim>
cudaError_t run_path(FwdPath path, const AttentionParams& a, const FwdParams& p,
                     cudaStream_t stream) {
  const bool fp16 = a.dtype == DType::kFloat16;
  switch (path) {
    case FwdPath::kSm90:
      if constexpr (kHeadDim == 80) {
        return cudaErrorNotSupported;  // runs as 96 (fwd_padded_head_dim)
      } else {
        return fp16 ? run_flash_fwd<FwdPath::kSm90, __half, kHeadDim>(p, stream)
                    : run_flash_fwd<FwdPath::kSm90, __nv_bfloat16, kHeadDim>(p, stream);
      }
    case FwdPath::kSm80:
      return fp16 ? run_flash_fwd<FwdPath::kSm80, __half, kHeadDim>(p, stream)
                  : run_flash_fwd<FwdPath::kSm80, __nv_bfloat16, kHeadDim>(p, stream);
    case FwdPath::kSm75:
      return fp16 ? run_flash_fwd<FwdPath::kSm75, __half, kHeadDim>(p, stream)
                  : cudaErrorNotSupported;
    case FwdPath::kSm70:
      return fp16 ? run_flash_fwd<FwdPath::kSm70, __half, kHeadDim>(p, stream)
                  : cudaErrorNotSupported;
  }
  return cudaErrorNotSupported;
}

}  // namespace

FwdParams make_fwd_params(const AttentionParams& a) {
  FwdParams p;
  p.q = a.q;
  p.k = a.kv.k;
  p.v = a.kv.v;
  p.out = a.out;
  p.lse = a.lse;
  p.q_batch_stride = a.q_batch_stride;
  p.q_row_stride = a.q_row_stride;
  p.q_head_stride = a.q_head_stride;
  p.k_batch_stride = a.kv.k_batch_stride;
  p.k_row_stride = a.kv.k_row_stride;
  p.k_head_stride = a.kv.k_head_stride;
  p.v_batch_stride = a.kv.v_batch_stride;
  p.v_row_stride = a.kv.v_row_stride;
  p.v_head_stride = a.kv.v_head_stride;
  p.out_batch_stride = a.out_batch_stride;
  p.out_row_stride = a.out_row_stride;
  p.out_head_stride = a.out_head_stride;
  p.lse_batch_stride = a.lse_batch_stride;
  p.lse_head_stride = a.lse_head_stride;
  p.lse_row_stride = a.lse_row_stride;
  p.cu_seqlens_q = a.cu_seqlens_q;
  p.cu_seqlens_k = a.cu_seqlens_k;
  p.batch = static_cast<int>(a.batch);
  p.heads_q = static_cast<int>(a.heads_q);
  p.group_size = static_cast<int>(a.group_size());
  p.seqlen_q = static_cast<int>(a.seqlen_q);
  p.seqlen_k = static_cast<int>(a.seqlen_k);
  p.rows_q = a.is_varlen() ? a.total_q : a.seqlen_q;
  p.rows_k = a.is_varlen() ? a.total_k : a.seqlen_k;
  p.head_dim = static_cast<int>(a.head_dim);
  set_mask_and_scale(a, &p);
  p.q_segments = a.mask.q_segments;
  p.k_segments = a.mask.k_segments;
  if (a.mask.block != nullptr) p.block = *a.mask.block;
  return p;
}

cudaError_t launch_forward(const FwdChoice& choice, const AttentionParams& a,
                           cudaStream_t stream) {
  FwdParams p = make_fwd_params(a);
  p.variant_tiles = choice.variant_tiles;
  if (p.batch == 0 || p.heads_q == 0 || p.seqlen_q == 0) return cudaSuccess;
  switch (choice.head_dim) {
    case 64: return run_path<64>(choice.path, a, p, stream);
    case 80: return run_path<80>(choice.path, a, p, stream);
    case 96: return run_path<96>(choice.path, a, p, stream);
    case 128: return run_path<128>(choice.path, a, p, stream);
    case 256: return run_path<256>(choice.path, a, p, stream);
    default: return cudaErrorNotSupported;
  }
}

cudaError_t flash_attention_sm80(const AttentionParams& a, cudaStream_t stream) {
  FwdChoice choice;
  if (!choose_fwd_kernel(80, 0, a, &choice, false).is_ok()) return cudaErrorNotSupported;
  return launch_forward(choice, a, stream);
}

}  // namespace fastattn::cuda
