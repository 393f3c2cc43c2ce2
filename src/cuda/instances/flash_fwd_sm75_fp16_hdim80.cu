// Forward, sm75 mainloop (mma m16n8k8, register-staged loads), fp16, head dim 80.
#include "cuda/flash_launch.h"
#include "cuda/fwd/m16n8_kernel.cuh"

namespace fastattn::cuda {

template <>
cudaError_t run_flash_fwd<FwdPath::kSm75, __half, 80>(const FwdParams& p, cudaStream_t stream) {
  return launch_m16n8<FwdPath::kSm75, __half, 80>(p, stream);
}

}  // namespace fastattn::cuda
