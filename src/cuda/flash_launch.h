// Launch side of the CUDA forward path: every kernel family (sm70, sm75,
// sm80) behind one entry point.
#pragma once

#include <cuda_runtime.h>

#include "api/params.h"
#include "cuda/flash_params.h"
#include "cuda/fwd/tile_config.h"
#include "cuda/host/fwd_select.h"

namespace fastattn::cuda {

// The params the kernels read, from params already validated and accepted by
// choose_fwd_kernel. Pointers are device pointers, cu_seqlens included.
FwdParams make_fwd_params(const AttentionParams& p);

// Launches the chosen kernel on `stream`: allocates nothing, never
// synchronises the host; returns the launch's error.
cudaError_t launch_forward(const FwdChoice& choice, const AttentionParams& p,
                           cudaStream_t stream);

// choose_fwd_kernel for an sm80 device, then launch_forward;
// cudaErrorNotSupported where the choice refuses. For drivers and tests that
// bypass the API layer.
cudaError_t flash_attention_sm80(const AttentionParams& p, cudaStream_t stream);

// One instantiation per (path, dtype, padded head dim), each in its own file
// under src/cuda/instances/ to keep nvcc processes small. sm70 and sm75 exist
// for fp16 only.
template <FwdPath kPath, typename Elem, int kHeadDim>
cudaError_t run_flash_fwd(const FwdParams& p, cudaStream_t stream);

}  // namespace fastattn::cuda
