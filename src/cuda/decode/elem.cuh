// Conversions between the 16-bit storage types and float for the CUDA-core
// decode kernels: 8 elements move as one 16-byte vector.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace fastattn::cuda {

__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_float(float x) { return x; }

template <typename Elem>
__device__ __forceinline__ Elem from_float(float x);
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }

// Rounds through the storage type: what a value becomes once stored.
template <typename Elem>
__device__ __forceinline__ float round_to(float x) {
  return to_float(from_float<Elem>(x));
}

template <typename Elem>
__device__ __forceinline__ void unpack8(const uint4& raw, float (&f)[8]) {
  const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float2 two;
    if constexpr (sizeof(Elem) == 2 && __is_same(Elem, __half)) {
      two = __half22float2(*reinterpret_cast<const __half2*>(&w[i]));
    } else {
      two = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&w[i]));
    }
    f[2 * i] = two.x;
    f[2 * i + 1] = two.y;
  }
}

template <typename Elem>
__device__ __forceinline__ uint4 pack8(const float (&f)[8]) {
  uint32_t w[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    if constexpr (__is_same(Elem, __half)) {
      const __half2 h = __floats2half2_rn(f[2 * i], f[2 * i + 1]);
      w[i] = *reinterpret_cast<const uint32_t*>(&h);
    } else {
      const __nv_bfloat162 h = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
      w[i] = *reinterpret_cast<const uint32_t*>(&h);
    }
  }
  return make_uint4(w[0], w[1], w[2], w[3]);
}

// Read-only, streaming 16-byte load: the cache is read once per call, so it
// should not evict what the next kernel wants from L1.
__device__ __forceinline__ uint4 load_stream_16(const void* ptr) {
  uint4 r;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(ptr));
  return r;
}

}  // namespace fastattn::cuda

namespace fastattn::cuda {

// A 16-byte copy global -> shared that the calling thread itself will read
// back: cp.async on sm80 and newer (zero-filled when !valid, nothing read),
// a plain load and store before sm80, where the commit/wait below are no-ops.
__device__ __forceinline__ void copy_16_async(uint4* dst, const void* src, bool valid) {
#if __CUDA_ARCH__ >= 800
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(addr), "l"(src),
               "r"(valid ? 16 : 0)
               : "memory");
#else
  *dst = valid ? load_stream_16(src) : make_uint4(0, 0, 0, 0);
#endif
}

__device__ __forceinline__ void async_commit() {
#if __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

// Waits until at most n of this thread's committed copy groups are pending.
template <int n>
__device__ __forceinline__ void async_wait() {
#if __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(n) : "memory");
#endif
}

}  // namespace fastattn::cuda
