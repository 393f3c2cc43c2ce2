// Launch of one forward instantiation; included only by src/cuda/instances/.
#pragma once

#include <cuda_runtime.h>

#include "cuda/sm80/flash_fwd_kernel.cuh"

namespace fastattn::cuda {

template <class T, bool kSoftcap>
cudaError_t launch_flash_fwd_sm80(const FwdParams& p, cudaStream_t stream) {
  auto* kernel = &flash_fwd_sm80_kernel<T, kSoftcap>;
  // Above 48 KiB of dynamic shared memory a kernel must opt in. The call is a
  // host-side attribute write: no synchronisation, cheap next to a prefill.
  if (T::kSmemBytes > 48 * 1024) {
    const cudaError_t err = cudaFuncSetAttribute(
        kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, T::kSmemBytes);
    if (err != cudaSuccess) return err;
  }
  const dim3 grid((p.seqlen_q + T::kBlockM - 1) / T::kBlockM, p.heads_q, p.batch);
  kernel<<<grid, T::kThreads, T::kSmemBytes, stream>>>(p);
  return cudaGetLastError();
}

template <class T>
cudaError_t launch_flash_fwd_sm80(const FwdParams& p, cudaStream_t stream) {
  return p.softcap > 0.f ? launch_flash_fwd_sm80<T, true>(p, stream)
                         : launch_flash_fwd_sm80<T, false>(p, stream);
}

}  // namespace fastattn::cuda
