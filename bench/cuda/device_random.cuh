// Standard normal fp16/bf16 inputs generated on the GPU (a hash and
// Box-Muller), so that large benchmark inputs cost no host time. Shared by
// the benchmark drivers under bench/cuda/.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

namespace fastattn::bench {

__device__ inline uint32_t hash32(uint32_t x) {
  x ^= x >> 16; x *= 0x7feb352dU; x ^= x >> 15; x *= 0x846ca68bU; x ^= x >> 16;
  return x;
}

template <typename T>
__global__ void fill_normal(T* p, int64_t n, uint32_t seed) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const uint32_t a = hash32(uint32_t(i) * 2u + seed * 0x9e3779b9u + uint32_t(i >> 32));
    const uint32_t b = hash32(a ^ 0x5bd1e995u);
    const float u1 = (a >> 8) * (1.f / 16777216.f) + 1e-7f, u2 = (b >> 8) * (1.f / 16777216.f);
    const float z = sqrtf(-2.f * logf(u1)) * cospif(2.f * u2);
    if constexpr (std::is_same_v<T, __half>) p[i] = __float2half_rn(z);
    else p[i] = __float2bfloat16_rn(z);
  }
}

}  // namespace fastattn::bench
