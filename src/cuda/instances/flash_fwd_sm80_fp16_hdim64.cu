// Forward, sm80 mainloop (mma m16n8k16, cp.async), fp16, head dim 64.
#include "cuda/flash_launch.h"
#include "cuda/fwd/m16n8_kernel.cuh"

namespace fastattn::cuda {

template <>
cudaError_t run_flash_fwd<FwdPath::kSm80, __half, 64>(const FwdParams& p, cudaStream_t stream) {
  return launch_m16n8<FwdPath::kSm80, __half, 64>(p, stream);
}

}  // namespace fastattn::cuda
