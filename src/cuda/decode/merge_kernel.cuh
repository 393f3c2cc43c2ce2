// fa_merge_states on the GPU: the exact merge of partial (O, LSE) states
// over disjoint key sets, one warp per (sequence, row, head).
#pragma once

#include <cstdint>

#include "cuda/decode/elem.cuh"

namespace fastattn::cuda {

// Passed by value (about 4.5 KB: kernel parameters may take 32 KB from
// CUDA 12.1 on Volta and newer), so a merge needs no device-side table.
struct MergeKernelParams {
  static constexpr int kMaxStates = 64;
  int num_states = 0;
  int batch = 0, seqlen = 0, heads = 0, head_dim = 0;
  int out_dtype = 0;  // DType value: 0 float32, 1 float16, 2 bfloat16
  const void* o[kMaxStates] = {};
  int o_dtype[kMaxStates] = {};
  int64_t o_strides[kMaxStates][3] = {};  // batch, row, head
  const float* lse[kMaxStates] = {};
  int64_t lse_strides[kMaxStates][3] = {};  // batch, head, row
  void* out = nullptr;
  int64_t out_strides[3] = {};
  float* out_lse = nullptr;  // optional
  int64_t out_lse_strides[3] = {};
};

__device__ __forceinline__ float load_as_float(const void* base, int dtype, int64_t i) {
  if (dtype == 1) return __half2float(static_cast<const __half*>(base)[i]);
  if (dtype == 2) return __bfloat162float(static_cast<const __nv_bfloat16*>(base)[i]);
  return static_cast<const float*>(base)[i];
}

__device__ __forceinline__ void store_from_float(void* base, int dtype, int64_t i, float x) {
  if (dtype == 1) {
    static_cast<__half*>(base)[i] = __float2half_rn(x);
  } else if (dtype == 2) {
    static_cast<__nv_bfloat16*>(base)[i] = __float2bfloat16_rn(x);
  } else {
    static_cast<float*>(base)[i] = x;
  }
}

__global__ void __launch_bounds__(128) merge_states_kernel(const MergeKernelParams p) {
  constexpr int kWarps = 4;
  __shared__ float s_weight[kWarps][MergeKernelParams::kMaxStates];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t rows = int64_t(p.batch) * p.seqlen * p.heads;
  const int64_t row = int64_t(blockIdx.x) * kWarps + warp;
  if (row >= rows) return;
  const int64_t h = row % p.heads;
  const int64_t l = (row / p.heads) % p.seqlen;
  const int64_t b = row / (int64_t(p.heads) * p.seqlen);
  auto lse_at = [&](int s) {
    return p.lse[s][b * p.lse_strides[s][0] + h * p.lse_strides[s][1] + l * p.lse_strides[s][2]];
  };
  float row_max = -INFINITY;
  for (int s = lane; s < p.num_states; s += 32) row_max = fmaxf(row_max, lse_at(s));
#pragma unroll
  for (int off = 16; off > 0; off /= 2) row_max = fmaxf(row_max, __shfl_xor_sync(~0u, row_max, off));
  const float ref = row_max == -INFINITY ? 0.f : row_max;
  float sum = 0.f;
  for (int s = lane; s < p.num_states; s += 32) {
    const float w = expf(lse_at(s) - ref);
    s_weight[warp][s] = w;
    sum += w;
  }
#pragma unroll
  for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(~0u, sum, off);
  __syncwarp();
  const float inv = sum > 0.f ? 1.f / sum : 0.f;
  const int64_t out_row = b * p.out_strides[0] + l * p.out_strides[1] + h * p.out_strides[2];
  for (int d = lane; d < p.head_dim; d += 32) {
    float acc = 0.f;
    for (int s = 0; s < p.num_states; ++s) {
      const float w = s_weight[warp][s];
      if (w == 0.f) continue;  // a state without keys adds nothing, whatever its O holds
      const int64_t at = b * p.o_strides[s][0] + l * p.o_strides[s][1] + h * p.o_strides[s][2] + d;
      acc = fmaf(w, load_as_float(p.o[s], p.o_dtype[s], at), acc);
    }
    store_from_float(p.out, p.out_dtype, out_row + d, acc * inv);
  }
  if (lane == 0 && p.out_lse != nullptr) {
    p.out_lse[b * p.out_lse_strides[0] + h * p.out_lse_strides[1] + l * p.out_lse_strides[2]] =
        sum > 0.f ? ref + logf(sum) : -INFINITY;
  }
}

}  // namespace fastattn::cuda
