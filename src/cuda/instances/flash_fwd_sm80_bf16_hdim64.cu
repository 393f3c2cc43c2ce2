// Forward, sm80 mainloop, bf16, head dim 64.
#include "cuda/flash_launch.h"
#include "cuda/sm80/flash_fwd_launch.cuh"

namespace fastattn::cuda {

template <>
cudaError_t run_flash_fwd_sm80<__nv_bfloat16, 64>(const FwdParams& p, cudaStream_t stream) {
  return launch_flash_fwd_sm80<DefaultFwdTraits<__nv_bfloat16, 64>>(p, stream);
}

}  // namespace fastattn::cuda
