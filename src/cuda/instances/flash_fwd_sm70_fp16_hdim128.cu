// Forward, sm70 mainloop (mma m8n8k4), fp16, head dim 128.
#include "cuda/flash_launch.h"
#include "cuda/fwd/launch.cuh"
#include "cuda/fwd/m8n8k4_kernel.cuh"

namespace fastattn::cuda {

template <>
cudaError_t run_flash_fwd<FwdPath::kSm70, __half, 128>(const FwdParams& p, cudaStream_t stream) {
  using T = VoltaFwdTraits<__half, 128>;
  return launch_fwd<T>(&flash_fwd_m8n8k4_kernel<T, false>, &flash_fwd_m8n8k4_kernel<T, true>, p,
                       stream, &flash_fwd_m8n8k4_kernel<T, false, true>,
                       &flash_fwd_m8n8k4_kernel<T, true, true>);
}

}  // namespace fastattn::cuda
