// Forward, sm75 mainloop (mma m16n8k8, register-staged loads), fp16, head dim 64.
#include "cuda/flash_launch.h"
#include "cuda/fwd/launch.cuh"
#include "cuda/fwd/m16n8_kernel.cuh"

namespace fastattn::cuda {

template <>
cudaError_t run_flash_fwd<FwdPath::kSm75, __half, 64>(const FwdParams& p, cudaStream_t stream) {
  using T = DefaultFwdTraits<FwdPath::kSm75, __half, 64>;
  return launch_fwd<T>(&flash_fwd_m16n8_kernel<T, false>, &flash_fwd_m16n8_kernel<T, true>, p,
                       stream, &flash_fwd_m16n8_kernel<T, false, true>,
                       &flash_fwd_m16n8_kernel<T, true, true>);
}

}  // namespace fastattn::cuda
