// Launch of one forward instantiation; included only by src/cuda/instances/.
#pragma once

#include <cuda_runtime.h>

#include "cuda/flash_params.h"

namespace fastattn::cuda {

using FwdKernel = void (*)(FwdParams);

// Launches `plain` (built on T), or one of its variants (built on TV: the
// same query tile and threads, key tiles that may differ): `capped`, the
// same kernel with the softcap compiled in, when the problem has a softcap,
// and with a block mask the block-mask variants of both.
template <class T, class TV = T>
cudaError_t launch_fwd(FwdKernel plain, FwdKernel capped, const FwdParams& p,
                       cudaStream_t stream, FwdKernel block_plain = nullptr,
                       FwdKernel block_capped = nullptr) {
  static_assert(TV::kBlockM == T::kBlockM && TV::kThreads == T::kThreads,
                "one grid and block shape for every variant");
  const bool block = p.block.cls != nullptr;
  const FwdKernel kernel = p.softcap > 0.f ? (block ? block_capped : capped)
                                           : (block ? block_plain : plain);
  if (kernel == nullptr) return cudaErrorNotSupported;
  // Above 48 KiB of dynamic shared memory a kernel must opt in. The call is a
  // host-side attribute write: no synchronisation, cheap next to a prefill.
  const int smem_bytes = block              ? TV::kBlockSmemBytes
                         : p.softcap > 0.f ? TV::kSmemBytes
                                           : T::kSmemBytes;
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
