// Tensor maps (TMA descriptors) for the Hopper forward kernel, encoded on the
// host through the driver's cuTensorMapEncodeTiled, reached through the
// runtime's entry-point query so that the library needs no link against
// libcuda (machines without a GPU load it too).
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/host/tma_layout.h"

namespace fastattn::cuda {

// Encodes `t` (see tma_layout.h) for reads in boxes of (64, box_rows, 1, 1)
// into 128-byte-swizzled shared memory; reads outside the tensor (rows past
// the end, columns past head_dim) fill zeros.
// cudaErrorNotSupported when the driver lacks the entry point;
// cudaErrorInvalidValue when the driver refuses the layout.
cudaError_t make_tensor_map(const TmaOperand& t, bool bf16, int box_rows, CUtensorMap* map);

}  // namespace fastattn::cuda
