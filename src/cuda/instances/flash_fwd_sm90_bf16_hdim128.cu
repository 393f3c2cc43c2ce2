// Forward, sm90 mainloop (TMA + wgmma, warp-specialized), bf16, head dim 128.
#include "cuda/flash_launch.h"
#include "cuda/fwd/launch_sm90.cuh"

namespace fastattn::cuda {

template <>
cudaError_t run_flash_fwd<FwdPath::kSm90, __nv_bfloat16, 128>(const FwdParams& p, cudaStream_t stream) {
  using T = DefaultSm90Traits<__nv_bfloat16, 128>;
  using TV = DefaultSm90VariantTraits<__nv_bfloat16, 128>;
  using TS = DefaultSm90ShortRowsTraits<__nv_bfloat16, 128>;
  return launch_fwd_sm90<T, TV, TS>(&flash_fwd_sm90_kernel<T, false>,
                                    &flash_fwd_sm90_kernel<TS, false>,
                                    &flash_fwd_sm90_kernel<TV, true>, p, stream,
                                    &flash_fwd_sm90_kernel<TV, false, true>,
                                    &flash_fwd_sm90_kernel<TV, true, true>);
}

}  // namespace fastattn::cuda
