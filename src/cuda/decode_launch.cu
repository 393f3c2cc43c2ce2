#include "cuda/decode_launch.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>

#include "cuda/decode/decode_kernel.cuh"
#include "cuda/decode/merge_kernel.cuh"
#include "cuda/decode/rotary.cuh"
#include "cuda/host/kernel_scalars.h"

namespace fastattn::cuda {
namespace {

DecodeKernelParams make_decode_params(const DecodeParams& d, const DecodeChoice& c,
                                      void* workspace) {
  const AttentionParams& a = d.attn;
  DecodeKernelParams p;
  p.q = a.q;
  p.q_batch_stride = a.q_batch_stride;
  p.q_row_stride = a.q_row_stride;
  p.q_head_stride = a.q_head_stride;
  p.out = a.out;
  p.out_batch_stride = a.out_batch_stride;
  p.out_row_stride = a.out_row_stride;
  p.out_head_stride = a.out_head_stride;
  p.lse = a.lse;
  p.lse_batch_stride = a.lse_batch_stride;
  p.lse_head_stride = a.lse_head_stride;
  p.lse_row_stride = a.lse_row_stride;
  const KVLayout& kv = a.kv;
  p.k = kv.k;
  p.v = kv.v;
  p.page_table = kv.page_table;
  if (kv.page_table != nullptr) {
    p.k_page_stride = kv.k_page_stride;
    p.v_page_stride = kv.v_page_stride;
    p.page_table_stride = kv.page_table_stride;
    p.page_size = FastDivmod(static_cast<uint32_t>(kv.page_size));
    p.num_pages = static_cast<int>(std::min<int64_t>(kv.num_pages, INT32_MAX));
  } else {
    p.k_page_stride = kv.k_batch_stride;
    p.v_page_stride = kv.v_batch_stride;
  }
  p.k_row_stride = kv.k_row_stride;
  p.k_head_stride = kv.k_head_stride;
  p.v_row_stride = kv.v_row_stride;
  p.v_head_stride = kv.v_head_stride;
  p.cache_seqlens = d.cache_seqlens;
  p.new_tokens = static_cast<int>(d.new_tokens);
  p.k_new = d.k_new;
  p.v_new = d.v_new;
  p.k_new_batch_stride = d.k_new_batch_stride;
  p.k_new_row_stride = d.k_new_row_stride;
  p.k_new_head_stride = d.k_new_head_stride;
  p.v_new_batch_stride = d.v_new_batch_stride;
  p.v_new_row_stride = d.v_new_row_stride;
  p.v_new_head_stride = d.v_new_head_stride;
  p.rotary_style = static_cast<int>(d.rotary.style);
  p.rotary_dim = static_cast<int>(d.rotary.dim);
  p.rotary_cos = d.rotary.cos;
  p.rotary_sin = d.rotary.sin;
  p.cos_row_stride = d.rotary.cos_row_stride;
  p.sin_row_stride = d.rotary.sin_row_stride;
  p.num_splits = c.num_splits;
  p.cluster_merge = c.cluster_merge ? 1 : 0;
  if (c.num_splits > 1 && !c.cluster_merge) {
    auto* base = static_cast<unsigned char*>(workspace);
    p.partial_o = reinterpret_cast<float*>(base);
    p.partial_lse = reinterpret_cast<float*>(base + decode_workspace_lse_offset(d, c.num_splits));
  }
  p.batch = static_cast<int>(a.batch);
  p.seqlen_q = static_cast<int>(a.seqlen_q);
  p.heads_q = static_cast<int>(a.heads_q);
  p.heads_kv = static_cast<int>(a.heads_kv);
  p.group_size = static_cast<int>(a.group_size());
  p.head_dim = static_cast<int>(a.head_dim);
  set_mask_and_scale(a, &p);
  if (p.window_left < 0 && p.chunk == 0) {
    // The planning bound: max_seqlen_k, else the capacity (<= INT32_MAX, checked).
    p.early_copy_keys = static_cast<int>(std::min<int64_t>(a.seqlen_k, d.capacity));
  }
  return p;
}

template <typename Elem>
cudaError_t launch_typed(const DecodeChoice& c, const DecodeParams& d, const DecodeKernelParams& p,
                         cudaStream_t stream) {
  if (d.k_new != nullptr) {
    decode_append_kernel<Elem><<<dim3(p.seqlen_q, p.batch), 256, 0, stream>>>(p);
    if (cudaError_t err = cudaGetLastError(); err != cudaSuccess) return err;
  }
  cudaError_t err = cudaErrorInvalidValue;
  switch (c.head_dim) {
    case 64: err = run_decode_attention<Elem, 64>(p, c, stream); break;
    case 128: err = run_decode_attention<Elem, 128>(p, c, stream); break;
    case 256: err = run_decode_attention<Elem, 256>(p, c, stream); break;
  }
  if (err != cudaSuccess || c.num_splits == 1 || c.cluster_merge) return err;
  return launch_decode_merge(p, d.attn.dtype, c.early_merge_launch, stream);
}

template <typename Elem>
cudaError_t occupancy_typed(const DecodeChoice& c, int* blocks) {
  switch (c.head_dim) {
    case 64: return decode_attention_occupancy<Elem, 64>(c, blocks);
    case 128: return decode_attention_occupancy<Elem, 128>(c, blocks);
    case 256: return decode_attention_occupancy<Elem, 256>(c, blocks);
  }
  return cudaErrorInvalidValue;
}

template <typename Elem>
cudaError_t clusters_typed(const DecodeChoice& c, int cluster_size, int* clusters) {
  switch (c.head_dim) {
    case 64: return decode_attention_clusters<Elem, 64>(c, cluster_size, clusters);
    case 128: return decode_attention_clusters<Elem, 128>(c, cluster_size, clusters);
    case 256: return decode_attention_clusters<Elem, 256>(c, cluster_size, clusters);
  }
  return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t decode_max_active_clusters(DType dtype, const DecodeChoice& choice, int cluster_size,
                                       int* clusters) {
  return dtype == DType::kBFloat16 ? clusters_typed<__nv_bfloat16>(choice, cluster_size, clusters)
                                   : clusters_typed<__half>(choice, cluster_size, clusters);
}

cudaError_t launch_decode_merge(const DecodeKernelParams& p, DType dtype, bool early,
                                cudaStream_t stream) {
  const int64_t rows = int64_t(p.batch) * p.seqlen_q * p.heads_q;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(static_cast<unsigned>((rows + 3) / 4));
  config.blockDim = dim3(128);
  config.stream = stream;
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute[0].val.programmaticStreamSerializationAllowed = 1;
  config.attrs = attribute;
  config.numAttrs = early ? 1 : 0;
  return dtype == DType::kBFloat16
             ? cudaLaunchKernelEx(&config, decode_combine_kernel<__nv_bfloat16>, p)
             : cudaLaunchKernelEx(&config, decode_combine_kernel<__half>, p);
}

cudaError_t decode_blocks_per_sm(DType dtype, const DecodeChoice& choice, int* blocks) {
  return dtype == DType::kBFloat16 ? occupancy_typed<__nv_bfloat16>(choice, blocks)
                                   : occupancy_typed<__half>(choice, blocks);
}

cudaError_t launch_decode(const DecodeChoice& choice, const DecodeParams& d, void* workspace,
                          cudaStream_t stream) {
  const DecodeKernelParams p = make_decode_params(d, choice, workspace);
  if (p.batch == 0) return cudaSuccess;
  if (d.attn.dtype == DType::kFloat16) return launch_typed<__half>(choice, d, p, stream);
  if (d.attn.dtype == DType::kBFloat16) return launch_typed<__nv_bfloat16>(choice, d, p, stream);
  return cudaErrorNotSupported;
}

cudaError_t launch_merge(const MergeParams& m, cudaStream_t stream) {
  MergeKernelParams p;
  p.num_states = m.num_states;
  p.batch = static_cast<int>(m.batch);
  p.seqlen = static_cast<int>(m.seqlen);
  p.heads = static_cast<int>(m.heads);
  p.head_dim = static_cast<int>(m.head_dim);
  p.out_dtype = static_cast<int>(m.out_dtype);
  for (int s = 0; s < m.num_states; ++s) {
    p.o[s] = m.o[s];
    p.o_dtype[s] = static_cast<int>(m.o_dtype[s]);
    p.lse[s] = m.lse[s];
    for (int k = 0; k < 3; ++k) {
      p.o_strides[s][k] = m.o_strides[s][k];
      p.lse_strides[s][k] = m.lse_strides[s][k];
    }
  }
  p.out = m.out;
  p.out_lse = m.out_lse;
  for (int k = 0; k < 3; ++k) {
    p.out_strides[k] = m.out_strides[k];
    p.out_lse_strides[k] = m.out_lse_strides[k];
  }
  const int64_t rows = m.batch * m.seqlen * m.heads;
  if (rows == 0) return cudaSuccess;
  merge_states_kernel<<<static_cast<unsigned>((rows + 3) / 4), 128, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace fastattn::cuda
