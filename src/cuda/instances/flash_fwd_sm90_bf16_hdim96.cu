// Forward, sm90 mainloop (TMA + wgmma, warp-specialized), bf16, head dim 96.
#include "cuda/flash_launch.h"
#include "cuda/fwd/launch_sm90.cuh"

namespace fastattn::cuda {

template <>
cudaError_t run_flash_fwd<FwdPath::kSm90, __nv_bfloat16, 96>(const FwdParams& p, cudaStream_t stream) {
  return launch_default_sm90<__nv_bfloat16, 96>(p, stream);
}

}  // namespace fastattn::cuda
