// Entry point of the CUDA forward path for sm80 and newer (A100, H100).
#pragma once

#include <cuda_runtime.h>

#include "api/params.h"
#include "cuda/flash_params.h"

namespace fastattn::cuda {

// Runs O = softmax(scale * Q K^T, masked) V on `stream` for validated params.
// Pointers in `p` are device pointers, cu_seqlens_q / cu_seqlens_k included
// (the host-side API hands host arrays to the CPU backends; the CUDA path
// needs device copies). Allocates nothing, never synchronises the host.
// Returns cudaErrorNotSupported for what this path does not run (paged KV,
// pointers not 16-byte aligned or strides not multiples of 8 elements, head
// dim > 256, float32 data) and cudaErrorInvalidValue for sizes past the grid.
cudaError_t flash_attention_sm80(const AttentionParams& p, cudaStream_t stream);

// The params the kernels read, or cudaErrorNotSupported as above.
cudaError_t make_fwd_params(const AttentionParams& p, FwdParams* out);

// One instantiation per (dtype, padded head dim), each in its own file under
// src/cuda/instances/ to keep nvcc processes small.
template <typename Elem, int kHeadDim>
cudaError_t run_flash_fwd_sm80(const FwdParams& p, cudaStream_t stream);

}  // namespace fastattn::cuda
