// Forward, sm90 mainloop (TMA + wgmma, warp-specialized), fp16, head dim 256.
#include "cuda/flash_launch.h"
#include "cuda/fwd/launch_sm90.cuh"

namespace fastattn::cuda {

template <>
cudaError_t run_flash_fwd<FwdPath::kSm90, __half, 256>(const FwdParams& p, cudaStream_t stream) {
  using T = DefaultSm90Traits<__half, 256>;
  return launch_fwd_sm90<T>(&flash_fwd_sm90_kernel<T, false>, &flash_fwd_sm90_kernel<T, false>,
                            &flash_fwd_sm90_kernel<T, true>, p, stream);
}

}  // namespace fastattn::cuda
