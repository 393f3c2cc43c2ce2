// Forward, sm90 mainloop (TMA + wgmma, warp-specialized), fp16, head dim 256.
#include "cuda/flash_launch.h"
#include "cuda/fwd/launch_sm90.cuh"

namespace fastattn::cuda {

template <>
cudaError_t run_flash_fwd<FwdPath::kSm90, __half, 256>(const FwdParams& p, cudaStream_t stream) {
  return launch_default_sm90<__half, 256>(p, stream);
}

}  // namespace fastattn::cuda
