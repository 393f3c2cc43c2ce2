// Forward, sm90 mainloop (TMA + wgmma, warp-specialized), fp16, head dim 64.
#include "cuda/flash_launch.h"
#include "cuda/fwd/launch_sm90.cuh"

namespace fastattn::cuda {

template <>
cudaError_t run_flash_fwd<FwdPath::kSm90, __half, 64>(const FwdParams& p, cudaStream_t stream) {
  using T = DefaultSm90Traits<__half, 64>;
  using TV = DefaultSm90VariantTraits<__half, 64>;
  using TS = DefaultSm90ShortRowsTraits<__half, 64>;
  return launch_fwd_sm90<T, TV, TS>(&flash_fwd_sm90_kernel<T, false>,
                                    &flash_fwd_sm90_kernel<TS, false>,
                                    &flash_fwd_sm90_kernel<TV, true>, p, stream,
                                    &flash_fwd_sm90_kernel<TV, false, true>,
                                    &flash_fwd_sm90_kernel<TV, true, true>);
}

}  // namespace fastattn::cuda
