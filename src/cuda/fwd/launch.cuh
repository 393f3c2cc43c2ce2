// Launch of one forward instantiation; included only by src/cuda/instances/.
#pragma once

#include <cuda_runtime.h>

#include "cuda/flash_params.h"

namespace fastattn::cuda {

using FwdKernel = void (*)(FwdParams);

// Launches `plain`, or `capped` (the same kernel with the softcap compiled
// in) when the problem has a softcap, or with a block mask their block-mask
// variants, with T's block shape and shared memory.
template <class T>
cudaError_t launch_fwd(FwdKernel plain, FwdKernel capped, const FwdParams& p,
                       cudaStream_t stream, FwdKernel block_plain = nullptr,
                       FwdKernel block_capped = nullptr) {
  const bool block = p.block.cls != nullptr;
  const FwdKernel kernel = p.softcap > 0.f ? (block ? block_capped : capped)
                                           : (block ? block_plain : plain);
  if (kernel == nullptr) return cudaErrorNotSupported;
  // Above 48 KiB of dynamic shared memory a kernel must opt in. The call is a
  // host-side attribute write: no synchronisation, cheap next to a prefill.
  const int smem_bytes = block ? T::kBlockSmemBytes : T::kSmemBytes;
  if (smem_bytes > 48 * 1024) {
    const cudaError_t err = cudaFuncSetAttribute(
        kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes);
    if (err != cudaSuccess) return err;
  }
  const dim3 grid((p.seqlen_q + T::kBlockM - 1) / T::kBlockM, p.heads_q, p.batch);
  kernel<<<grid, T::kThreads, smem_bytes, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace fastattn::cuda
